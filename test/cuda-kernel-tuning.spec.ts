/**
 * The CUDA kernels' throughput paths, run on the CPU by test/cuda-emulator.ts against the float64 reference:
 * several output rows per thread (1D, split and ranges kernels, rows past the end of the last block), the KMin
 * group test (`can_skip` over several pairs) with values arriving in decreasing order and with ties, the
 * LogSumExp hot fold with ±inf and NaN terms, and the launch geometry that goes with them. Needs g++.
 */
import { expect } from 'chai';
import { buildRangesLookup, planCudaLaunch } from '../lib/backend/cuda/launch';
import { planReduction } from '../lib/backend/plan';
import { type CudaDtype, type CudaSumScheme, generateCudaKernels } from '../lib/codegen/cuda';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseReductionWithVariables } from '../lib/formula/index';
import { type Ranges, referenceReduction } from '../lib/reference';
import { KeOpsError } from '../lib/errors';
import { useCudaEmulator } from './cuda-emulator';
import { expectClose, randArray, rng } from './util';

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)', 'c = Vj(1)'];
const M = 29;
const N = 41;
const BLOCK = 4;

function parse(text: string) {
  const parsed = parseReductionWithVariables(text, ALIASES);
  const positions: ArgPosition[] = ALIASES.map(() => ({ dim: 1, cat: 2 }));
  for (const v of parsed.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
  return { ...parsed, positions };
}

/** Rows of a variable: M for i-variables, N for j-variables (whatever the tag), 1 for parameters. */
const rowsOf = (p: ArgPosition): number => (p.cat === 2 ? 1 : p.cat === 0 ? M : N);

describe('CUDA kernels: several rows per thread, KMin group test, LogSumExp hot fold (emulated)', function () {
  this.timeout(300_000);
  const emulator = useCudaEmulator();

  async function check(
    text: string,
    dtype: CudaDtype,
    sumScheme: CudaSumScheme,
    rowsPerThread: number,
    data: (pos: number, p: ArgPosition, tag: number) => Float64Array,
    ranges?: Ranges,
  ): Promise<void> {
    const c = parse(text);
    const tag = c.reduction.tag;
    const kernels = generateCudaKernels(c.reduction, {
      dtype,
      sumScheme,
      positions: c.positions,
      rowsPerThread,
    });
    expect(kernels.rowsPerThread).to.equal(rowsPerThread);
    const exe = await emulator.compile(kernels);
    const raw = c.positions.map((p, pos) => data(pos, p, tag));
    const args = raw.map((a) => (dtype === 'float32' ? Float32Array.from(a) : a));
    const expected = referenceReduction(
      c.reduction,
      c.positions.map((p, pos) => ({ data: Float64Array.from(args[pos]), cat: p.cat, dim: p.dim })),
      ranges === undefined ? {} : { ranges },
    );
    const [nx, ny] = tag === 0 ? [M, N] : [N, M];
    const launches =
      ranges === undefined
        ? [
            { scheme: '1d' as const, nx, ny, blockSize: BLOCK, args },
            {
              scheme: 'split' as const,
              nx,
              ny,
              blockSize: BLOCK,
              splits: Math.ceil(ny / 12),
              slice: 12,
              args,
            },
          ]
        : [
            {
              scheme: 'ranges' as const,
              nx,
              ny,
              blockSize: BLOCK,
              lookup: buildRangesLookup(
                planReduction(raw, c.variables, c.positions.length, tag, ranges).blocks,
                BLOCK * rowsPerThread,
              ),
              intervals: [...planReduction(raw, c.variables, c.positions.length, tag, ranges).intervals],
              args,
            },
          ];
    for (const launch of launches) {
      const got = await emulator.run(exe, kernels, launch);
      const what = `${text} ${dtype} R=${rowsPerThread} ${launch.scheme}`;
      const special = (v: number): string => (Number.isFinite(v) ? 'finite' : String(v));
      expect([...got.val].map(special), `${what}: inf/NaN placement`).to.deep.equal(
        [...expected.val].map(special),
      );
      const finite = (a: Float64Array): Float64Array => a.map((v) => (Number.isFinite(v) ? v : 0));
      const [rtol, atol] = dtype === 'float32' ? [2e-4, 2e-5] : [1e-11, 1e-13];
      expectClose(finite(got.val), finite(expected.val), rtol, atol, what);
      expect([...got.idx], `${what} indices`).to.deep.equal([...expected.idx]);
    }
  }

  const random =
    (seed: number) =>
    (pos: number, p: ArgPosition): Float64Array =>
      randArray(rng(seed + pos), rowsOf(p) * p.dim);

  for (const rows of [1, 2, 3]) {
    it(`Gaussian sum, float32 block_sum and float64 kahan_scheme, ${rows} row(s) per thread, both tags`, async () => {
      for (const tag of [0, 1]) {
        await check(`Sum_Reduction(Exp(-SqDist(x,y))*b,${tag})`, 'float32', 'block_sum', rows, random(1));
        await check(`Sum_Reduction(Exp(-SqDist(x,y))*b,${tag})`, 'float64', 'kahan_scheme', rows, random(2));
      }
    });
  }

  it('ArgKMin / KMin_ArgKMin: values in decreasing order (every pair inserts), ties keep the first index', async () => {
    // y_j on a line, moving towards x: distances decrease with j; c makes exact ties (the same value every 3 j).
    const decreasing = (pos: number, p: ArgPosition, tag: number): Float64Array => {
      const n = rowsOf(p);
      if (p.cat === 2) return Float64Array.from([0]);
      if (p.cat === tag) return randArray(rng(3 + pos), n * p.dim, -0.1, 0.1);
      const out = new Float64Array(n * p.dim);
      for (let j = 0; j < n; j++)
        for (let k = 0; k < p.dim; k++) out[j * p.dim + k] = 5 - 0.1 * Math.floor(j / 3);
      return out;
    };
    for (const rows of [1, 2]) {
      await check('ArgKMin_Reduction(SqDist(x,y),5,0)', 'float32', 'direct_sum', rows, decreasing);
      await check('KMin_ArgKMin_Reduction(Sum(y)*b,7,0)', 'float64', 'direct_sum', rows, decreasing);
      await check('ArgKMin_Reduction(SqDist(x,y),4,1)', 'float64', 'direct_sum', rows, random(4));
    }
  });

  it('KMin group test on the minimum of the group: NaN, ±inf, all-NaN groups and ties give the reference', async () => {
    // f = SqDist(x,y) + b: NaN in a whole group of 4 (j = 4..7: a tile of 4 is one group), NaN last in a group
    // whose other values enter (j = 3, 27: a minimum that let NaN through would skip them), NaN beside finite
    // values, -inf (enters first), +inf (never below the threshold), and an exact tie (b equal, y equal).
    const special = (pos: number, p: ArgPosition, tag: number): Float64Array => {
      const a = randArray(rng(11 + pos), rowsOf(p) * p.dim, 0, 0.1);
      if (p.cat === tag || p.cat === 2) return a;
      if (pos === 1) a.copyWithin(3 * 21, 3 * 20, 3 * 21); // y_21 = y_20
      if (pos === 2) {
        a[3] = NaN;
        a.fill(NaN, 4, 8);
        a[25] = -0.5;
        a[27] = NaN;
        a[9] = NaN;
        a[13] = -Infinity;
        a[17] = Infinity;
        a[18] = Infinity;
        a[21] = a[20];
        a[30] = NaN;
        a[31] = -Infinity;
      }
      return a;
    };
    for (const rows of [1, 2]) {
      await check('KMin_ArgKMin_Reduction(SqDist(x,y)+b,5,0)', 'float32', 'direct_sum', rows, special);
      await check('ArgKMin_Reduction(SqDist(x,y)+b,3,0)', 'float64', 'direct_sum', rows, special);
    }
    await check('Min_ArgMin_Reduction(SqDist(x,y)+b,0)', 'float32', 'direct_sum', 2, special);
  });

  it('K above the unrolled insertion (loop form) and K > N (missing ranks stay at the neutral entry)', async () => {
    await check('KMin_ArgKMin_Reduction(SqDist(x,y),20,0)', 'float64', 'direct_sum', 1, random(5));
    await check('KMin_ArgKMin_Reduction(SqDist(x,y),35,1)', 'float32', 'direct_sum', 1, random(6));
  });

  it('LogSumExp hot fold: -inf, +inf and NaN terms give what the full fold gives', async () => {
    // f = Log(b) * c: b = 0 gives -inf, b = inf +inf, b = NaN NaN; rows of x decide nothing here.
    const special = (pos: number, p: ArgPosition): Float64Array => {
      const a = randArray(rng(7 + pos), rowsOf(p) * p.dim, 0.5, 2);
      if (pos === 2) {
        a[3] = 0;
        a[4] = 0;
        a[10] = Infinity;
        a[20] = NaN;
        a[33] = Infinity;
      }
      return a;
    };
    await check('Max_SumShiftExp_Reduction(Log(b)+Sum(x),0)', 'float32', 'block_sum', 2, special);
    await check(
      'Max_SumShiftExpWeight_Reduction(Log(b)-SqDist(x,y),0,c)',
      'float64',
      'direct_sum',
      1,
      special,
    );
    // Only -inf terms in the rows before the first finite one (m stays -inf, then jumps).
    const zeros = (pos: number, p: ArgPosition): Float64Array => {
      const a = randArray(rng(9 + pos), rowsOf(p) * p.dim, 0.5, 2);
      if (pos === 2) a.fill(0, 0, 17);
      return a;
    };
    await check('Max_SumShiftExpWeight_Reduction(Log(b)-SqDist(x,y),0,c)', 'float32', 'block_sum', 2, zeros);
  });

  it('block-sparse ranges with several rows per thread: entries of up to blockSize × rows rows', async () => {
    const ranges: Ranges = [
      [0, 13, 16, 29],
      [0, 2],
      [0, 9, 20, 41, 5, 30],
      [0, 41],
      [0, 1],
      [0, 29],
    ];
    await check('Min_ArgMin_Reduction(SqDist(x,y)-b,0)', 'float64', 'direct_sum', 2, random(8), ranges);
  });

  it('rejects a rowsPerThread outside 1..8', () => {
    const c = parse('Sum_Reduction(Exp(-SqDist(x,y))*b,0)');
    for (const bad of [0, 9, 1.5]) {
      expect(() =>
        generateCudaKernels(c.reduction, {
          dtype: 'float32',
          sumScheme: 'block_sum',
          positions: c.positions,
          rowsPerThread: bad,
        }),
      )
        .to.throw(KeOpsError)
        .with.property('code', 'ERR_INVALID_ARGUMENT');
    }
  });

  it('chooses 3 or 2 rows per thread for small float32 rows, 1 for KMin, float64 and wide rows', () => {
    const rowsFor = (text: string, aliases: string[], dtype: CudaDtype): number => {
      const parsed = parseReductionWithVariables(text, aliases);
      const positions = parsed.variables.map((v) => ({ dim: v.dim, cat: v.cat }));
      const scheme = parsed.reduction.def.sumType ? 'block_sum' : 'direct_sum';
      return generateCudaKernels(parsed.reduction, { dtype, sumScheme: scheme, positions }).rowsPerThread;
    };
    const d3 = ['x = Vi(0,3)', 'y = Vj(1,3)', 'b = Vj(2,1)'];
    expect(rowsFor('Sum_Reduction(Exp(-SqDist(x,y))*b,0)', d3, 'float32')).to.equal(3);
    expect(rowsFor('Max_SumShiftExp_Reduction(-SqDist(x,y),0)', d3, 'float32')).to.equal(2);
    expect(rowsFor('Sum_Reduction(Exp(-SqDist(x,y))*b,0)', d3, 'float64')).to.equal(1);
    expect(rowsFor('ArgKMin_Reduction(SqDist(x,y),10,0)', d3, 'float32')).to.equal(1);
    const d64 = ['x = Vi(0,64)', 'y = Vj(1,64)'];
    expect(rowsFor('Sum_Reduction(Exp(-SqDist(x,y)),0)', d64, 'float32')).to.equal(1);
  });
});

describe('CUDA launch geometry with several rows per thread', () => {
  const h100 = {
    multiprocessors: 132,
    maxThreadsPerBlock: 1024,
    sharedMemoryPerBlock: 48 * 1024,
    sharedMemoryPerBlockOptin: 227 * 1024,
  };
  const kernel = {
    sharedBytesPerThread: 16,
    partialSlots: { val: 1, idx: 1 },
    dtypeAcc: 'float32' as const,
    rowsPerThread: 2,
  };

  it('covers blockSize × rowsPerThread rows per block; the merge kernel one row per thread', () => {
    const plan = planCudaLaunch({ nx: 1_000_000, ny: 1_000_000, batches: 1 }, kernel, h100);
    expect(plan.scheme).to.equal('1d');
    expect(plan.grid[0]).to.equal(Math.ceil(1e6 / 384));
    expect(plan.mergeBlocks).to.equal(Math.ceil(1e6 / 192));
  });

  it('splits j until every multiprocessor has several blocks, from the device SM count', () => {
    // 1e5 rows: 261 blocks of 384 rows, under 4 per SM on 132 SMs: split; on 8 SMs they fill it.
    const big = planCudaLaunch({ nx: 100_000, ny: 1_000_000, batches: 1 }, kernel, h100);
    expect(big.scheme).to.equal('split');
    expect(big.grid[0] * big.grid[1]).to.be.at.least(4 * 132);
    expect(big.mergeBlocks).to.equal(Math.ceil(1e5 / 192));
    const small = planCudaLaunch({ nx: 100_000, ny: 1_000_000, batches: 1 }, kernel, {
      ...h100,
      multiprocessors: 8,
    });
    expect(small.scheme).to.equal('1d');
    // Too few tiles to share: one split would get under 4 tiles.
    expect(planCudaLaunch({ nx: 100, ny: 7 * 192, batches: 1 }, kernel, h100).scheme).to.equal('1d');
    const few = planCudaLaunch({ nx: 100, ny: 40 * 192, batches: 1 }, kernel, h100);
    expect(few.scheme).to.equal('split');
    expect(few.slice / few.blockSize).to.be.at.least(4);
  });
});

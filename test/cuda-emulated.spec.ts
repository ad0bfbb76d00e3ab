/**
 * The generated CUDA kernels, run on the CPU by test/cuda-emulator.ts (one thread per CUDA thread, real
 * barriers), against the float64 reference: 1D and split schemes, block-sparse ranges (rows outside every range
 * get the neutral value), batch offsets, every sum scheme, both tags, value and index reductions. Small sizes
 * that are not multiples of the block size, so that partial tiles, partial blocks and uneven slices all occur.
 * Needs g++ (skipped otherwise); no GPU, no NVRTC.
 */
import { expect } from 'chai';
import { buildRangesLookup } from '../lib/backend/cuda/launch';
import { planReduction } from '../lib/backend/plan';
import {
  type CudaDtype,
  type CudaKernels,
  type CudaSumScheme,
  generateCudaKernels,
} from '../lib/codegen/cuda';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseReductionWithVariables } from '../lib/formula/index';
import type { FormulaVariable } from '../lib/formula/aliases';
import type { Reduction } from '../lib/formula/reduction';
import { type Ranges, referenceReduction, type ReferenceInput } from '../lib/reference';
import { type EmulatedLaunch, useCudaEmulator } from './cuda-emulator';
import { expectClose, randArray, rng } from './util';

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)', 's = Pm(1)', 'u = Vi(2)'];
const M = 37;
const N = 53;
const BLOCK = 8;

interface Case {
  readonly reduction: Reduction;
  readonly variables: readonly FormulaVariable[];
  readonly positions: ArgPosition[];
}

function parseCase(text: string): Case {
  const parsed = parseReductionWithVariables(text, ALIASES);
  const positions: ArgPosition[] = ALIASES.map(() => ({ dim: 1, cat: 2 }));
  for (const v of parsed.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
  return { reduction: parsed.reduction, variables: parsed.variables, positions };
}

/** Random float64 data for every position: M rows for Vi, N for Vj, one for Pm (positive parameters). */
function randomData(positions: readonly ArgPosition[], seed: number, batch = 1): Float64Array[] {
  const r = rng(seed);
  return positions.map((p) =>
    p.cat === 2 ? randArray(r, batch * p.dim, 0.5, 1.5) : randArray(r, batch * p.dim * (p.cat === 0 ? M : N)),
  );
}

const cast = (a: Float64Array, dtype: CudaDtype): Float32Array | Float64Array =>
  dtype === 'float32' ? Float32Array.from(a) : a;

function referenceOf(c: Case, data: readonly Float64Array[], dtype: CudaDtype, ranges?: Ranges) {
  // The reference sees the data the kernel sees (float32 inputs rounded), computed in float64.
  const inputs: ReferenceInput[] = c.positions.map((p, pos) => ({
    data: Float64Array.from(cast(data[pos], dtype)),
    cat: p.cat,
    dim: p.dim,
  }));
  return referenceReduction(c.reduction, inputs, ranges === undefined ? {} : { ranges });
}

function tolerance(dtype: CudaDtype): [number, number] {
  return dtype === 'float32' ? [2e-4, 2e-5] : [1e-11, 1e-13];
}

describe('CUDA kernels emulated on the CPU', function () {
  this.timeout(300_000);
  const emulator = useCudaEmulator();

  const sizes = (c: Case): { nx: number; ny: number } =>
    c.reduction.tag === 0 ? { nx: M, ny: N } : { nx: N, ny: M };

  /** Compiles the case's kernels, runs them in 1D and split mode and compares with the reference. */
  async function checkOneDAndSplit(text: string, dtype: CudaDtype, sumScheme: CudaSumScheme, seed: number) {
    const c = parseCase(text);
    const kernels = generateCudaKernels(c.reduction, { dtype, sumScheme, positions: c.positions });
    const exe = await emulator.compile(kernels);
    const data = randomData(c.positions, seed);
    const expected = referenceOf(c, data, dtype);
    const { nx, ny } = sizes(c);
    const args = data.map((a) => cast(a, dtype));
    const launches: EmulatedLaunch[] = [
      { scheme: '1d', nx, ny, blockSize: BLOCK, args },
      { scheme: 'split', nx, ny, blockSize: BLOCK, splits: Math.ceil(ny / 16), slice: 16, args },
    ];
    for (const launch of launches) {
      const got = await emulator.run(exe, kernels, launch);
      const what = `${text} ${dtype} ${sumScheme} ${launch.scheme}`;
      const [rtol, atol] = tolerance(dtype);
      expectClose(got.val, expected.val, rtol, atol, what);
      expect([...got.idx], `${what} indices`).to.deep.equal([...expected.idx]);
    }
    return kernels;
  }

  for (const dtype of ['float32', 'float64'] as const) {
    for (const sumScheme of ['direct_sum', 'block_sum', 'kahan_scheme'] as const) {
      for (const tag of [0, 1]) {
        it(`Sum of a Gaussian kernel, ${dtype}, ${sumScheme}, tag ${tag}: 1D and split`, async () => {
          await checkOneDAndSplit(`Sum_Reduction(Exp(-SqDist(x,y)*s)*b,${tag})`, dtype, sumScheme, 1 + tag);
        });
      }
    }
  }

  const valueAndIndex: readonly [string, CudaSumScheme][] = [
    ['ArgKMin_Reduction(SqDist(x,y),3,0)', 'direct_sum'],
    ['KMin_ArgKMin_Reduction(SqDist(x,y)+Sum(u),4,1)', 'direct_sum'],
    ['Min_ArgMin_Reduction(SqDist(x,y)*s,0)', 'direct_sum'],
    ['Max_ArgMax_Reduction(Sin(x|y),1)', 'direct_sum'],
    ['Max_SumShiftExpWeight_Reduction(-SqDist(x,y),0,b)', 'block_sum'],
    ['Max_SumShiftExp_Reduction(-SqDist(x,y),1)', 'kahan_scheme'],
    ['Zero_Reduction(x*y,0)', 'direct_sum'],
    // No reduced-index variable: empty shared-memory records, the tiles still count j.
    ['Sum_Reduction(x*s,0)', 'block_sum'],
    ['ArgMin_Reduction(Sum(u)*s,1)', 'direct_sum'],
    // A long formula (dynamic programming over both vectors) through the shared formula body.
    ['Sum_Reduction(SoftDTW_SqDist(x,y,s)*b,0)', 'kahan_scheme'],
    // Sub-formulas that read no inner variable, computed once per row by the formula's prologue.
    ['Sum_Reduction(Exp(s-Exp(s)*SqDist(x,y))*(Cos(u)+b)*Sqrt(Sum(x*x)),0)', 'block_sum'],
    ['Max_SumShiftExpWeight_Reduction(-Exp(s)*SqDist(x,y),1,b*Exp(s))', 'kahan_scheme'],
  ];
  for (const [text, sumScheme] of valueAndIndex) {
    for (const dtype of ['float32', 'float64'] as const) {
      it(`${text}, ${dtype}, ${sumScheme}: 1D and split`, async () => {
        await checkOneDAndSplit(text, dtype, sumScheme, 7);
      });
    }
  }

  for (const tag of [0, 1] as const) {
    it(`block-sparse ranges, tag ${tag}: neutral rows outside every range, intervals folded in order`, async () => {
      const c = parseCase(`Min_ArgMin_Reduction(SqDist(x,y)-Sum(b),${tag})`);
      const dtype = 'float64';
      const kernels = generateCudaKernels(c.reduction, {
        dtype,
        sumScheme: 'direct_sum',
        positions: c.positions,
      });
      const exe = await emulator.compile(kernels);
      const data = randomData(c.positions, 11);
      // i-blocks [0, 20) -> j in [0, 5) ∪ [9, 14) ∪ [40, 53); [25, 37) -> [3, 30); rows [20, 25) in no block.
      // j-blocks [0, 10) -> i in [2, 7); [30, 53) -> [0, 37); j-rows [10, 30) in no block.
      const ranges: Ranges = [
        [0, 20, 25, 37],
        [3, 4],
        [0, 5, 9, 14, 40, 53, 3, 30],
        [0, 10, 30, 53],
        [1, 2],
        [2, 7, 0, 37],
      ];
      const expected = referenceOf(c, data, dtype, ranges);
      const plan = planReduction(data, c.variables, c.positions.length, tag, ranges);
      const { nx, ny } = sizes(c);
      const got = await emulator.run(exe, kernels, {
        scheme: 'ranges',
        nx,
        ny,
        blockSize: BLOCK,
        lookup: buildRangesLookup(plan.blocks, BLOCK),
        intervals: [...plan.intervals],
        args: data,
      });
      expectClose(got.val, expected.val, 1e-12, 0, 'ranges values');
      expect([...got.idx]).to.deep.equal([...expected.idx]);
      const neutralRows = tag === 0 ? [20, 24] : [10, 29];
      for (const row of neutralRows) expect(got.val[row]).to.equal(Infinity);
    });
  }

  it('batch entries through per-entry offsets, with a broadcast input', async () => {
    const c = parseCase('Sum_Reduction(Exp(-SqDist(x,y)*s)*b,0)');
    const dtype = 'float64';
    const kernels: CudaKernels = generateCudaKernels(c.reduction, {
      dtype,
      sumScheme: 'block_sum',
      positions: c.positions,
    });
    const exe = await emulator.compile(kernels);
    const batches = 3;
    // x: [3, M, 3], y: [1, N, 3] (broadcast), b: [3, N, 2], s: [3, 1], u: unused.
    const ownBatch = [batches, 1, batches, batches, 1];
    const r = rng(5);
    const data = c.positions.map((p, pos) =>
      p.cat === 2
        ? randArray(r, ownBatch[pos] * p.dim, 0.5, 1.5)
        : randArray(r, ownBatch[pos] * p.dim * (p.cat === 0 ? M : N)),
    );
    const inputs: ReferenceInput[] = c.positions.map((p, pos) => ({
      data: data[pos],
      cat: p.cat,
      shape: p.cat === 2 ? [ownBatch[pos], p.dim] : [ownBatch[pos], p.cat === 0 ? M : N, p.dim],
    }));
    const expected = referenceReduction(c.reduction, inputs);
    const rowsOf = (p: ArgPosition): number => (p.cat === 0 ? M : p.cat === 1 ? N : 1);
    const offsets: number[] = [];
    for (let entry = 0; entry < batches; entry++) {
      c.positions.forEach((p, pos) => offsets.push(ownBatch[pos] === 1 ? 0 : entry * rowsOf(p) * p.dim));
      offsets.push(entry * M * kernels.layout.dimVal, entry * M * kernels.layout.dimIdx);
    }
    for (const scheme of ['1d', 'split'] as const) {
      const got = await emulator.run(exe, kernels, {
        scheme,
        nx: M,
        ny: N,
        batches,
        blockSize: BLOCK,
        splits: 4,
        slice: 16,
        batchOffsets: offsets,
        args: data,
      });
      expectClose(got.val, expected.val, 1e-12, 1e-14, `batch ${scheme}`);
    }
  });
});

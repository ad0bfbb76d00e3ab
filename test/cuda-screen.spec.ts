/**
 * The screened k-nearest-neighbour kernels (lib/codegen/cuda-screen.ts) on the emulated GPU
 * (test/cuda-emulator.ts): for KMin / ArgKMin / KMin_ArgKMin over a wide SqDist, the screened kernels must return
 * exactly (bit for bit, values and indices) what the same kernels without screening return, on data where the
 * screening prunes (uniform rows), where it cannot (a common offset of 2^20, where the expanded form has no
 * correct digit), with near-duplicates and exact ties, NaN and infinite coordinates, K > N, both tags, and the
 * 1D, split and ranges kernels; and the 16-byte tile copies those wide rows use. Needs g++.
 */
import { expect } from 'chai';
import { buildRangesLookup } from '../lib/backend/cuda/launch';
import { planReduction } from '../lib/backend/plan';
import { generateCudaKernels } from '../lib/codegen/cuda';
import { cLiteral } from '../lib/codegen/names';
import { cudaSqDistScreen, MIN_SCREEN_DIM } from '../lib/codegen/cuda-screen';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseReductionWithVariables } from '../lib/formula/index';
import { type Ranges, referenceReduction } from '../lib/reference';
import { Genred } from '../lib/genred';
import { useCudaEmulator, type EmulatedLaunch } from './cuda-emulator';
import { useCudaTarget, useFakeCudaDevices } from './cuda-target';
import { randArray, rng, useTestKernelCache } from './util';

const M = 29;
const N = 45;
const DEFAULT_BLOCK = 8;

function parse(text: string, dim: number) {
  const parsed = parseReductionWithVariables(text, [`x = Vi(0,${dim})`, `y = Vj(1,${dim})`]);
  const positions: ArgPosition[] = parsed.variables.map((v) => ({ dim: v.dim, cat: v.cat }));
  return { ...parsed, positions };
}

type Data = (rows: number, dim: number, seed: number) => Float64Array;

const uniform: Data = (rows, dim, seed) => randArray(rng(seed), rows * dim, 0, 1);
const offset: Data = (rows, dim, seed) => uniform(rows, dim, seed).map((v) => 2 ** 20 + Math.round(v * 8));
/** Few distinct rows (exact ties) plus copies moved by one float32 ulp (near-duplicates). */
const duplicates: Data = (rows, dim, seed) => {
  const base = uniform(3, dim, seed);
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < dim; k++) {
      const v = Math.fround(base[(r % 3) * dim + k]);
      out[r * dim + k] = r % 2 === 0 ? v : v * (1 + 2 ** -23);
    }
  }
  return out;
};
/** Rows of unit length with coordinates of both signs (cosine distances). */
const normalized: Data = (rows, dim, seed) => {
  const out = randArray(rng(seed), rows * dim, -1, 1);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let k = 0; k < dim; k++) s += out[r * dim + k] ** 2;
    for (let k = 0; k < dim; k++) out[r * dim + k] /= Math.sqrt(s);
  }
  return out;
};
const specials: Data = (rows, dim, seed) => {
  const out = uniform(rows, dim, seed);
  out[3 * dim + 1] = NaN;
  out[5 * dim] = Infinity;
  out[7 * dim + 2] = -Infinity;
  out[11 * dim + 3] = 3e38; // the expanded form overflows
  return out;
};

describe('CUDA kernels: screened k-nearest-neighbour search (emulated)', function () {
  this.timeout(600_000);
  const emulator = useCudaEmulator();

  it('applies to float32 KMin- and Min-family SqDist(x,y) of dimension >= 32, and only there', () => {
    const at = (text: string, dim: number): boolean => {
      const c = parse(text, dim);
      return cudaSqDistScreen(c.reduction, c.positions) !== undefined;
    };
    expect(at('ArgKMin_Reduction(SqDist(x,y),10,0)', MIN_SCREEN_DIM)).to.equal(true);
    expect(at('KMin_ArgKMin_Reduction(SqDist(y,x),3,1)', 128)).to.equal(true);
    expect(at('ArgKMin_Reduction(SqDist(x,y),10,0)', MIN_SCREEN_DIM - 1)).to.equal(false);
    expect(at('ArgKMin_Reduction(SqDist(x,y)+1,10,0)', 64)).to.equal(false);
    expect(at('ArgMin_Reduction(SqDist(x,y),0)', 64)).to.equal(true);
    expect(at('Max_ArgMax_Reduction(SqDist(x,y),0)', 64)).to.equal(false);
    expect(at('Sum_Reduction(SqDist(x,y),0)', 64)).to.equal(false);
    const c = parse('ArgKMin_Reduction(SqDist(x,y),10,0)', 64);
    const opts = { sumScheme: 'direct_sum' as const, positions: c.positions };
    const f32 = generateCudaKernels(c.reduction, { ...opts, dtype: 'float32' });
    expect(f32.body).to.include('constexpr bool kScreen = true;');
    expect(f32.sharedBytesPerThread).to.equal(65 * 4); // the record and |y|^2
    const f64 = generateCudaKernels(c.reduction, { ...opts, dtype: 'float64' });
    expect(f64.body).to.include('constexpr bool kScreen = false;');
    expect(f64.sharedBytesPerThread).to.equal(64 * 8);
    // Dot-product rankings are screened on tensor cores only; other shapes of (x|y) not at all.
    const dotKernels = (text: string, tensorCores: boolean) => {
      const p = parse(text, 64);
      return generateCudaKernels(p.reduction, {
        dtype: 'float32',
        sumScheme: 'direct_sum',
        positions: p.positions,
        tensorCores,
      });
    };
    for (const text of [
      'KMin_ArgKMin_Reduction(-(x|y),5,0)',
      'ArgKMin_Reduction(1-(x|y),5,0)',
      'ArgMin_Reduction((x|y),0)',
    ]) {
      expect(dotKernels(text, false).body, text).to.include('constexpr bool kScreen = false;');
      expect(dotKernels(text, true).body, text).to.include('#define KEOPS_SCREEN_DOT 1');
    }
    for (const text of [
      'ArgKMin_Reduction(2*(x|y),5,0)',
      'ArgKMin_Reduction(1-(x|y)*(x|y),5,0)',
      'Sum_Reduction(-(x|y),0)',
    ]) {
      expect(dotKernels(text, true).tensorCores, text).to.equal(false);
    }
  });

  interface Variant {
    readonly rowsPerThread?: number;
    /** Screen on (emulated) tensor cores; blocks of `block` threads (whole warps). */
    readonly tensorCores?: boolean;
    readonly block?: number;
    /** Output rows and reduced rows (tag 0; default M and N); other sizes run the 1D and split kernels only. */
    readonly m?: number;
    readonly n?: number;
  }

  async function same(
    text: string,
    dim: number,
    data: Data,
    seed: number,
    variant: Variant = {},
  ): Promise<void> {
    const c = parse(text, dim);
    const tag = c.reduction.tag;
    const BLOCK = variant.block ?? DEFAULT_BLOCK;
    const base = {
      dtype: 'float32' as const,
      sumScheme: 'direct_sum' as const,
      positions: c.positions,
      rowsPerThread: variant.rowsPerThread,
    };
    const screened = generateCudaKernels(c.reduction, { ...base, tensorCores: variant.tensorCores });
    const exact = generateCudaKernels(c.reduction, { ...base, screen: false });
    expect(screened.body).to.include('kScreen = true');
    expect(screened.tensorCores).to.equal(variant.tensorCores === true);
    const m = variant.m ?? M;
    const n = variant.n ?? N;
    const rowsOf = (p: ArgPosition): number => (p.cat === 0 ? m : n);
    const raw = c.positions.map((p, pos) => data(rowsOf(p), p.dim, seed + pos));
    const args = raw.map((a) => Float32Array.from(a));
    const [nx, ny] = tag === 0 ? [m, n] : [n, m];
    const launches: EmulatedLaunch[] = [
      { scheme: '1d', nx, ny, blockSize: BLOCK, args },
      { scheme: 'split', nx, ny, blockSize: BLOCK, splits: Math.ceil(ny / 20), slice: 20, args },
    ];
    if (tag === 0 && m === M && n === N) {
      // Two row blocks (rows 13..15 in none), the second over three j intervals, one of them overlapping.
      const ranges: Ranges = [
        [0, 13, 16, M],
        [0, 2],
        [0, 9, 20, N, 5, 30],
        [0, N],
        [0, 1],
        [0, M],
      ];
      const plan = planReduction(raw, c.variables, c.positions.length, tag, ranges);
      launches.push({
        scheme: 'ranges',
        nx,
        ny,
        blockSize: BLOCK,
        lookup: buildRangesLookup(plan.blocks, BLOCK * screened.rowsPerThread),
        intervals: [...plan.intervals],
        args,
      });
    }
    const [exeScreened, exeExact] = await Promise.all([emulator.compile(screened), emulator.compile(exact)]);
    for (const launch of launches) {
      const got = await emulator.run(exeScreened, screened, launch);
      const want = await emulator.run(exeExact, exact, launch);
      const what = `${text} D=${dim} ${launch.scheme}`;
      expect([...got.idx], `${what}: indices`).to.deep.equal([...want.idx]);
      expect([...got.val].map(String), `${what}: values`).to.deep.equal([...want.val].map(String));
    }
    if (data === uniform) {
      // Well-separated distances: the indices are those of the float64 reference too.
      const expected = referenceReduction(
        c.reduction,
        c.positions.map((p, pos) => ({ data: Float64Array.from(args[pos]), cat: p.cat, dim: p.dim })),
        {},
      );
      const got = await emulator.run(exeScreened, screened, launches[0]);
      expect([...got.idx]).to.deep.equal([...expected.idx]);
    }
  }

  it('uniform rows (the screening prunes): ArgKMin, KMin, KMin_ArgKMin, K = 1, 5, 10, D = 32, 48', async () => {
    await same('ArgKMin_Reduction(SqDist(x,y),10,0)', 48, uniform, 1);
    await same('KMin_Reduction(SqDist(x,y),5,0)', 32, uniform, 2);
    await same('KMin_ArgKMin_Reduction(SqDist(y,x),1,0)', 32, uniform, 3);
    await same('ArgKMin_Reduction(SqDist(x,y),3,0)', 32, uniform, 14, { rowsPerThread: 2 }); // two rows per thread
  });

  it('the Min family (K = 1 by another fold): ArgMin, Min, Min_ArgMin', async () => {
    await same('ArgMin_Reduction(SqDist(x,y),0)', 32, uniform, 10);
    await same('Min_Reduction(SqDist(x,y),1)', 40, uniform, 11);
    await same('Min_ArgMin_Reduction(SqDist(x,y),0)', 36, duplicates, 12);
    await same('Min_ArgMin_Reduction(SqDist(x,y),0)', 32, specials, 13);
  });

  it('a common offset of 2^20 (no pruning possible), both tags', async () => {
    await same('ArgKMin_Reduction(SqDist(x,y),4,0)', 40, offset, 4);
    await same('KMin_ArgKMin_Reduction(SqDist(x,y),6,1)', 33, offset, 5);
  });

  it('exact ties and near-duplicates keep the first index', async () => {
    await same('ArgKMin_Reduction(SqDist(x,y),7,0)', 36, duplicates, 6);
    await same('KMin_ArgKMin_Reduction(SqDist(x,y),3,1)', 32, duplicates, 7);
  });

  it('stages j rows by 16-byte chunks when aligned, value by value when not (float32 and float64)', async () => {
    // x of width 3 first: y starts 29 * 3 values into the emulator's argument buffer (not 16-byte aligned).
    for (const [xDim, yDim] of [
      [4, 8],
      [3, 8],
      [3, 4],
    ]) {
      for (const dtype of ['float32', 'float64'] as const) {
        const parsed = parseReductionWithVariables('Sum_Reduction(Sum(x)*Exp(-Sum(y)),0)', [
          `x = Vi(0,${xDim})`,
          `y = Vj(1,${yDim})`,
        ]);
        const positions: ArgPosition[] = parsed.variables.map((v) => ({ dim: v.dim, cat: v.cat }));
        const kernels = generateCudaKernels(parsed.reduction, { dtype, sumScheme: 'block_sum', positions });
        expect(kernels.body).to.include('keops_chunk*');
        const data = positions.map((p, pos) => randArray(rng(60 + pos), (p.cat === 0 ? M : N) * p.dim));
        const args = data.map((a) => (dtype === 'float32' ? Float32Array.from(a) : a));
        const expected = referenceReduction(
          parsed.reduction,
          positions.map((p, pos) => ({ data: Float64Array.from(args[pos]), cat: p.cat, dim: p.dim })),
          {},
        );
        const got = await emulator.run(await emulator.compile(kernels), kernels, {
          scheme: '1d',
          nx: M,
          ny: N,
          blockSize: DEFAULT_BLOCK,
          args,
        });
        const tol = dtype === 'float32' ? 1e-5 : 1e-12;
        got.val.forEach((v, i) =>
          expect(Math.abs(v - expected.val[i])).to.be.at.most(tol * Math.abs(expected.val[i]) + tol),
        );
      }
    }
  });

  describe('on tensor cores (emulated mma.sync: TF32 operands truncated, sums rounded toward zero)', () => {
    const tc = (block: number): Variant => ({ tensorCores: true, block });

    it('uniform rows: ArgKMin, KMin, KMin_ArgKMin, Min family, D = 32, 40, 48, 128; blocks of 1 and 2 warps', async () => {
      await same('ArgKMin_Reduction(SqDist(x,y),10,0)', 48, uniform, 21, tc(32));
      await same('KMin_Reduction(SqDist(x,y),5,0)', 40, uniform, 22, tc(64)); // D = 40: 5 mma steps, no padding
      await same('KMin_ArgKMin_Reduction(SqDist(y,x),1,0)', 36, uniform, 23, tc(32)); // D = 36: padded to 40
      await same('ArgMin_Reduction(SqDist(x,y),0)', 32, uniform, 24, tc(32));
      await same('KMin_ArgKMin_Reduction(SqDist(x,y),4,1)', 128, uniform, 25, tc(64));
    });

    it('beyond 64 dimensions by chunks: several chunks (padded), several tiles, blocks of 1 to 3 warps', async () => {
      // D = 200: 25 steps in 2 chunks of 13 (the last one padded); 150 reduced rows: 3 tiles of 64, the last short.
      await same('ArgKMin_Reduction(SqDist(x,y),10,0)', 200, uniform, 31, { ...tc(96), m: 70, n: 150 });
      // D = 300: 38 steps in 3 chunks of 13; both tags.
      await same('KMin_ArgKMin_Reduction(SqDist(x,y),5,1)', 300, uniform, 32, { ...tc(32), m: 40, n: 100 });
      await same('Min_ArgMin_Reduction(SqDist(x,y),0)', 72, duplicates, 33, { ...tc(64), m: 65, n: 129 });
    });

    it('dot-product rankings: -(x|y), 1-(x|y) on unit rows, (x|y); the Min family; both tags', async () => {
      await same('KMin_ArgKMin_Reduction(-(x|y),10,0)', 48, uniform, 51, tc(32));
      await same('ArgKMin_Reduction(1-(x|y),5,0)', 128, normalized, 52, { ...tc(64), m: 70, n: 150 });
      await same('KMin_Reduction((x|y),3,1)', 40, normalized, 53, tc(32));
      await same('Min_ArgMin_Reduction(-(x|y),0)', 200, normalized, 54, { ...tc(96), m: 40, n: 100 });
    });

    it('dot-product rankings: large offsets, ties, NaN / inf / overflow, K > N', async () => {
      await same('KMin_ArgKMin_Reduction(-(x|y),4,0)', 40, offset, 55, tc(32));
      await same('KMin_ArgKMin_Reduction(1-(x|y),3,0)', 36, duplicates, 56, tc(64));
      await same('KMin_ArgKMin_Reduction(-(x|y),5,0)', 33, specials, 57, tc(32));
      await same('KMin_ArgKMin_Reduction(-(x|y),50,0)', 32, uniform, 58, tc(32));
    });

    it("needs its wider bound: with the FMA dot products' bound, the emulated tensor cores change results", async () => {
      // The emulation reads operands at their worst (truncated to TF32): a bound that ignores that skips pairs
      // that belong to the k smallest. This is what the tests above would catch if the bound were too tight.
      const c = parse('KMin_ArgKMin_Reduction(SqDist(x,y),5,0)', 40);
      const opts = { dtype: 'float32' as const, sumScheme: 'direct_sum' as const, positions: c.positions };
      const tensor = generateCudaKernels(c.reduction, { ...opts, tensorCores: true });
      const exact = generateCudaKernels(c.reduction, { ...opts, screen: false });
      const fmaBeta = cudaSqDistScreen(c.reduction, c.positions)?.beta as number;
      const tightBeta = `keops_screen_beta() { return ${cLiteral(fmaBeta, 'keops_acc_t')}; }`;
      const tight = {
        ...tensor,
        source: tensor.source.replace(/keops_screen_beta\(\) \{ return [^;]+; \}/, tightBeta),
      };
      expect(tight.source).to.include(tightBeta);
      const args = [uniform(200, 40, 41), uniform(300, 40, 42)].map((a) => Float32Array.from(a));
      const launch: EmulatedLaunch = { scheme: '1d', nx: 200, ny: 300, blockSize: 64, args };
      const [exeTight, exeTensor, exeExact] = await Promise.all([
        emulator.compile(tight),
        emulator.compile(tensor),
        emulator.compile(exact),
      ]);
      const want = await emulator.run(exeExact, exact, launch);
      const got = await emulator.run(exeTensor, tensor, launch);
      const wrong = await emulator.run(exeTight, tight, launch);
      expect([...got.idx]).to.deep.equal([...want.idx]);
      expect([...wrong.idx]).to.not.deep.equal([...want.idx]);
    });

    it('a common offset of 2^20, exact ties and near-duplicates, NaN / inf / overflow, K > N', async () => {
      await same('ArgKMin_Reduction(SqDist(x,y),4,0)', 40, offset, 26, tc(32));
      await same('ArgKMin_Reduction(SqDist(x,y),7,0)', 36, duplicates, 27, tc(32));
      await same('KMin_ArgKMin_Reduction(SqDist(x,y),3,1)', 32, duplicates, 28, tc(64));
      await same('KMin_ArgKMin_Reduction(SqDist(x,y),5,0)', 33, specials, 29, tc(32));
      await same('KMin_ArgKMin_Reduction(SqDist(x,y),50,0)', 32, uniform, 30, tc(32));
    });
  });

  it('NaN, infinite and overflowing coordinates; K > N leaves the neutral ranks', async () => {
    await same('KMin_ArgKMin_Reduction(SqDist(x,y),5,0)', 32, specials, 8);
    await same('KMin_ArgKMin_Reduction(SqDist(x,y),50,0)', 32, uniform, 9);
  });
});

describe('screened k-NN through Genred on the CUDA backend (emulated device)', function () {
  this.timeout(300_000);
  useTestKernelCache();
  useFakeCudaDevices(1);
  const target = useCudaTarget();

  it('ArgKMin K=6 over SqDist at D=40, float32: the indices of the CPU backend', async function () {
    target.require(this);
    const [m, n, d] = [37, 301, 40];
    const x = Float32Array.from(randArray(rng(70), m * d));
    const y = Float32Array.from(randArray(rng(71), n * d));
    const aliases = [`x = Vi(${d})`, `y = Vj(${d})`];
    const options = { axis: 1 as const, reduction: 'ArgKMin' as const, k: 6 };
    const cuda = new Genred('SqDist(x,y)', aliases, { ...options, backend: 'cuda' });
    const cpu = new Genred('SqDist(x,y)', aliases, { ...options, backend: 'cpu' });
    const got = (await cuda.call([x, y])) as Int32Array;
    const want = (await cpu.call([x, y])) as Int32Array;
    expect(got.length).to.equal(m * 6);
    expect([...got]).to.deep.equal([...want]);
    // The emulated devices are of compute capability 9.0: the screening ran on (emulated) tensor cores.
    expect(cuda.kernelInfo('float32', 'cuda')?.tensorCores).to.equal(true);
  });

  it('cosine and inner-product k-NN (1-(x|y), -(x|y)) at D=96: the indices of the CPU backend', async function () {
    target.require(this);
    const [m, n, d] = [45, 257, 96];
    const unit = (seed: number, rows: number): Float32Array => {
      const v = randArray(rng(seed), rows * d, -1, 1);
      for (let r = 0; r < rows; r++) {
        const norm = Math.hypot(...v.subarray(r * d, (r + 1) * d));
        for (let k = 0; k < d; k++) v[r * d + k] /= norm;
      }
      return Float32Array.from(v);
    };
    const x = unit(72, m);
    const y = unit(73, n);
    for (const formula of ['1-(x|y)', '-(x|y)']) {
      const aliases = [`x = Vi(${d})`, `y = Vj(${d})`];
      const options = { axis: 1 as const, reduction: 'ArgKMin' as const, k: 7 };
      const cuda = new Genred(formula, aliases, { ...options, backend: 'cuda' });
      const cpu = new Genred(formula, aliases, { ...options, backend: 'cpu' });
      const got = (await cuda.call([x, y])) as Int32Array;
      const want = (await cpu.call([x, y])) as Int32Array;
      expect([...got], formula).to.deep.equal([...want]);
      expect(cuda.kernelInfo('float32', 'cuda')?.tensorCores, formula).to.equal(true);
    }
  });
});

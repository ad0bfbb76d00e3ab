/**
 * Genred on each backend against the float64 reference (lib/reference.ts): every reduction on both axes in
 * float32 and float64, ranges, batch broadcasting, summation schemes and the event loop; validation errors once.
 * The CUDA suite runs on the GPU when there is one, else on the emulated GPU (test/cuda-target.ts): the same
 * generated kernels, launched through the same device runtime, executed on CPU threads.
 * The ~60 kernels per backend are compiled up front, all at once, into a test-only cache under
 * node_modules/.cache (never the user's cache) that later runs reuse: a cold run compiles for ~30 s per backend
 * on 2 cores, a warm one loads in ~1 s. The cache itself is tested in cache.spec.ts. Data stays small.
 */
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import { parseFormula } from '../lib/formula';
import type { GenredResult } from '../lib/formula/genred-reductions';
import { Genred, type GenredArg, type GenredRanges } from '../lib/genred';
import type { ReductionName } from '../lib/genred-types';
import { type ReferenceInput, referenceGenred } from '../lib/reference';
import { runtimeInfo } from '../lib/backend/cuda/runtime';
import { useCudaTarget } from './cuda-target';
import { expectBackendResult, randArray, rejection, rng, useTestKernelCache } from './util';

type Dtype = 'float32' | 'float64';
const DTYPES: readonly Dtype[] = ['float32', 'float64'];
const AXES: readonly (0 | 1)[] = [0, 1];

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)', 'p = Pm(1)'];
const CATEGORIES: readonly (0 | 1 | 2)[] = [0, 1, 1, 2];
const DIMS = [3, 3, 2, 1];
const M = 9;
const N = 13;

interface Case {
  reduction: string;
  formula: string;
  k?: number;
  formula2?: string;
  /** 'grid': small integers, so that float32 and float64 agree exactly and ties are frequent. */
  data: 'smooth' | 'grid';
}

const CASES: readonly Case[] = [
  { reduction: 'Sum', formula: 'Exp(-p*SqDist(x,y))*b', data: 'smooth' },
  { reduction: 'LogSumExp', formula: '-p*SqDist(x,y)', data: 'smooth' },
  { reduction: 'LogSumExpWeight', formula: '-p*SqDist(x,y)', formula2: 'b', data: 'smooth' },
  { reduction: 'SumSoftMaxWeight', formula: '-p*SqDist(x,y)', formula2: 'b', data: 'smooth' },
  { reduction: 'Max_SumShiftExp', formula: '-p*SqDist(x,y)', data: 'smooth' },
  { reduction: 'Max_SumShiftExpWeight', formula: '-p*SqDist(x,y)', formula2: 'b', data: 'smooth' },
  { reduction: 'Min', formula: 'x-y', data: 'grid' },
  { reduction: 'Max', formula: 'x-y', data: 'grid' },
  { reduction: 'ArgMin', formula: 'x-y', data: 'grid' },
  { reduction: 'ArgMax', formula: 'x-y', data: 'grid' },
  { reduction: 'Min_ArgMin', formula: 'SqDist(x,y)', data: 'grid' },
  { reduction: 'Max_ArgMax', formula: 'SqDist(x,y)', data: 'grid' },
  { reduction: 'KMin', formula: 'SqDist(x,y)', k: 3, data: 'grid' },
  { reduction: 'ArgKMin', formula: 'x-y', k: 3, data: 'grid' },
  { reduction: 'KMin_ArgKMin', formula: 'SqDist(x,y)', k: 3, data: 'grid' },
];

function makeData(kind: Case['data'], dtype: Dtype, rows: readonly number[] = [M, N, N, 1]): GenredArg[] {
  const r = rng(kind === 'grid' ? 7 : 11);
  const arrays = DIMS.map((dim, pos) => {
    const n = rows[pos] * dim;
    if (pos === 3) return Float64Array.of(0.5);
    return kind === 'grid'
      ? Float64Array.from({ length: n }, () => Math.floor(r() * 5) - 2)
      : randArray(r, n);
  });
  return arrays.map((a) => (dtype === 'float32' ? Float32Array.from(a) : a));
}

function referenceInputs(args: readonly GenredArg[]): ReferenceInput[] {
  return args.map((arg, pos) =>
    ArrayBuffer.isView(arg)
      ? { data: arg, cat: CATEGORIES[pos], dim: DIMS[pos] }
      : { data: arg.data, cat: CATEGORIES[pos], shape: arg.shape },
  );
}

function reference(c: Case, axis: 0 | 1, args: readonly GenredArg[], ranges?: GenredRanges): GenredResult {
  return referenceGenred(c.reduction, parseFormula(c.formula, ALIASES).node, referenceInputs(args), {
    axis,
    k: c.k,
    formula2: c.formula2 === undefined ? undefined : parseFormula(c.formula2, ALIASES).node,
    ranges,
  });
}

type BackendName = 'cpu' | 'cuda';

function genredFor(c: Case, axis: 0 | 1, backend: BackendName): Genred {
  return new Genred(c.formula, ALIASES, {
    reduction: c.reduction as ReductionName,
    axis,
    k: c.k,
    formula2: c.formula2,
    backend,
  });
}

const label = (c: Case, axis: 0 | 1): string => `${c.reduction}(${c.formula}) axis ${axis}`;

for (const backend of ['cpu', 'cuda'] as const) {
  describe(`Genred (${backend === 'cpu' ? 'CPU' : 'CUDA'} backend)`, function () {
    this.timeout(300_000);
    useTestKernelCache();
    const target = backend === 'cuda' ? useCudaTarget() : undefined;
    beforeEach(function () {
      target?.require(this);
    });
    const genreds = new Map<string, Genred>();

    before(async function () {
      if (target !== undefined && target.kind === undefined) return;
      // Compile every kernel at once: the cache bounds how many compilers run in parallel.
      const firstCalls: Promise<unknown>[] = [];
      for (const c of CASES) {
        for (const axis of AXES) {
          const g = genredFor(c, axis, backend);
          genreds.set(label(c, axis), g);
          for (const dtype of DTYPES) firstCalls.push(g.call(makeData(c.data, dtype)));
        }
      }
      await Promise.all(firstCalls);
    });

    for (const c of CASES) {
      for (const axis of AXES) {
        for (const dtype of DTYPES) {
          it(`${label(c, axis)} ${dtype} matches the reference`, async function () {
            const g = genreds.get(label(c, axis)) as Genred;
            const args = makeData(c.data, dtype);
            const expected = reference(c, axis, args);
            expectBackendResult(await g.call(args), expected, dtype, `${label(c, axis)} ${dtype}`);
            expectBackendResult(g.callSync(args), expected, dtype, `${label(c, axis)} ${dtype} (sync)`);
          });
        }
      }
    }

    it('returns +inf and index -1 for the ranks beyond N (K > N)', async function () {
      const g = new Genred('SqDist(x,y)', ALIASES, { reduction: 'KMin_ArgKMin', axis: 1, k: 5, backend });
      const args = makeData('grid', 'float64', [2, 3, 3, 1]);
      const out = (await g.call(args)) as { values: Float64Array; indices: Int32Array };
      expect(Array.from(out.values.subarray(3, 5))).to.deep.equal([Infinity, Infinity]);
      expect(Array.from(out.indices.subarray(3, 5))).to.deep.equal([-1, -1]);
      expectBackendResult(out, reference({ ...CASES[14], k: 5 }, 1, args), 'float64', 'K > N');
    });

    it('handles empty inputs: no output rows, or nothing to reduce over', async function () {
      const sum = genreds.get(label(CASES[0], 1)) as Genred;
      const min = genreds.get(label(CASES[6], 1)) as Genred;
      const noJ = makeData('smooth', 'float64', [M, 0, 0, 1]);
      expect(Array.from((await sum.call(noJ)) as Float64Array)).to.deep.equal(new Array(2 * M).fill(0));
      expect(Array.from(min.callSync(noJ) as Float64Array)).to.deep.equal(new Array(3 * M).fill(Infinity));
      const noI = makeData('smooth', 'float32', [0, N, N, 1]);
      const out = await sum.call(noI);
      expect(out).to.be.instanceOf(Float32Array);
      expect((out as Float32Array).length).to.equal(0);
    });

    it('breaks ties by the smallest index', async function () {
      const g = genreds.get(label(CASES[8], 1)) as Genred; // ArgMin(x-y), axis 1
      const args = makeData('grid', 'float64');
      (args[1] as Float64Array).fill(1); // every j ties
      expect(Array.from((await g.call(args)) as Int32Array).every((i) => i === 0)).to.equal(true);
    });

    describe('ranges', function () {
      // axis 1: rows [0,3) reduce over j in [0,4) ∪ [6,13); rows [5,9) over [2,5); rows 3 and 4 over nothing.
      // axis 0: columns [0,6) reduce over i in [0,9); columns [6,13) over [3,5).
      const ranges: GenredRanges = [
        Int32Array.of(0, 3, 5, 9),
        Int32Array.of(2, 3),
        Int32Array.of(0, 4, 6, 13, 2, 5),
        Int32Array.of(0, 6, 6, 13),
        Int32Array.of(1, 2),
        Int32Array.of(0, 9, 3, 5),
      ];
      for (const index of [0, 6, 13]) {
        for (const axis of AXES) {
          const c = CASES[index];
          it(`${label(c, axis)} with ranges matches the reference (uncovered rows neutral)`, async function () {
            const g = genreds.get(label(c, axis)) as Genred;
            for (const dtype of DTYPES) {
              const args = makeData(c.data, dtype);
              expectBackendResult(
                await g.call(args, { ranges }),
                reference(c, axis, args, ranges),
                dtype,
                `${label(c, axis)} ranges`,
              );
            }
          });
        }
      }

      it('gives the neutral value to rows outside every block', async function () {
        const g = genreds.get(label(CASES[6], 1)) as Genred; // Min(x-y), axis 1
        const out = (await g.call(makeData('grid', 'float64'), { ranges })) as Float64Array;
        expect(Array.from(out.subarray(9, 15))).to.deep.equal(new Array(6).fill(Infinity));
        const sum = (await (genreds.get(label(CASES[0], 1)) as Genred).call(makeData('smooth', 'float64'), {
          ranges,
        })) as Float64Array;
        expect(Array.from(sum.subarray(6, 10))).to.deep.equal([0, 0, 0, 0]);
      });
    });

    describe('batch dimensions', function () {
      function batched(kind: Case['data'], dtype: Dtype): GenredArg[] {
        const [x, y, b] = makeData(kind, dtype, [2 * M, 3 * N, N, 1]) as Float64Array[];
        const p = dtype === 'float32' ? Float32Array.of(0.5, 1.5) : Float64Array.of(0.5, 1.5);
        return [
          { data: x, shape: [2, 1, M, 3] },
          { data: y, shape: [1, 3, N, 3] },
          b, // no batch dims: shared by every batch entry
          { data: p, shape: [2, 1, 1] },
        ];
      }
      for (const index of [0, 8, 14]) {
        for (const axis of AXES) {
          const c = CASES[index];
          it(`${label(c, axis)} broadcasts batch dims like the reference`, async function () {
            const g = genreds.get(label(c, axis)) as Genred;
            for (const dtype of DTYPES) {
              const args = batched(c.data, dtype);
              const expected = reference(c, axis, args);
              const actual = await g.call(args);
              const rows = 6 * (axis === 1 ? M : N);
              const length = ArrayBuffer.isView(actual) ? actual.length : actual.indices.length;
              expect(length % rows).to.equal(0);
              expectBackendResult(actual, expected, dtype, `${label(c, axis)} batched`);
            }
          });
        }
      }
    });

    describe('summation schemes (float32, 200,000 terms)', function () {
      const ny = 200_000;
      const nx = 4;
      const r = rng(3);
      const x = Float32Array.from(randArray(r, nx, 0, 1));
      const y = Float32Array.from(randArray(r, ny, 0, 1));
      const exact = Array.from(x, (xi) => {
        let s = 0;
        for (let j = 0; j < ny; j++) s += Math.exp(-((xi - y[j]) ** 2));
        return s;
      });
      const relativeError = (out: Float32Array): number =>
        Math.max(...Array.from(out, (v, i) => Math.abs(v - exact[i]) / exact[i]));
      const run = async (options: {
        sumScheme?: 'direct_sum' | 'block_sum' | 'kahan_scheme';
        dtypeAcc?: 'float64';
      }) => {
        const g = new Genred('Exp(-SqDist(x,y))', ['x = Vi(1)', 'y = Vj(1)'], {
          axis: 1,
          backend,
          ...options,
        });
        return relativeError((await g.call([x, y])) as Float32Array);
      };

      it('block_sum (the default) stays within 1e-5', async function () {
        expect(await run({})).to.be.at.most(1e-5);
        expect(await run({ sumScheme: 'block_sum' })).to.be.at.most(1e-5);
      });
      it('kahan_scheme stays within 1e-6', async function () {
        expect(await run({ sumScheme: 'kahan_scheme' })).to.be.at.most(1e-6);
      });
      it('float64 accumulation stays within 1e-6', async function () {
        expect(await run({ dtypeAcc: 'float64', sumScheme: 'direct_sum' })).to.be.at.most(1e-6);
      });
      it('direct_sum runs (and is the least accurate)', async function () {
        expect(await run({ sumScheme: 'direct_sum' })).to.be.below(1e-2);
      });
    });

    it('gives the same result on 1 thread and on many', async function () {
      if (backend !== 'cpu') this.skip();
      const g = genreds.get(label(CASES[0], 1)) as Genred;
      const args = makeData('smooth', 'float64', [500, 700, 700, 1]);
      const one = (await g.call(args, { threads: 1 })) as Float64Array;
      const many = (await g.call(args, { threads: 8 })) as Float64Array;
      expect(Array.from(many)).to.deep.equal(Array.from(one));
    });

    it('keeps the event loop ticking during a long call', async function () {
      const g = genreds.get(label(CASES[0], 1)) as Genred;
      // CPU: 2.25e8 pairs on one thread, about half a second. The emulated GPU is far slower per pair.
      const size = backend === 'cpu' || target?.kind === 'gpu' ? 15_000 : 2_000;
      const args = makeData('smooth', 'float64', [size, size, size, 1]);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      const started = performance.now();
      const ticksBefore = ticks;
      const pending = g.call(args, backend === 'cpu' ? { threads: 1 } : {});
      await pending;
      const elapsed = performance.now() - started;
      clearInterval(timer);
      // A blocked loop would fire the interval at most once, after the call. (An H100 is too fast to measure.)
      if (target?.kind === 'gpu') return;
      expect(elapsed).to.be.greaterThan(100);
      expect(ticks - ticksBefore).to.be.greaterThan(Math.min(10, elapsed / 20));
    });
  });
}

describe('Genred (validation, before any native work)', function () {
  describe('validation (before any native work)', function () {
    const g = () => new Genred('Exp(-p*SqDist(x,y))*b', ALIASES, { axis: 1 });
    const good = () => makeData('smooth', 'float64');
    const expectCode = async (code: string, args: unknown, options?: object) => {
      const fresh = g();
      const error = await rejection(fresh.call(args as GenredArg[], options));
      expect(error.code, error.message).to.equal(code);
      expect(() => fresh.callSync(args as GenredArg[], options))
        .to.throw(KeOpsError)
        .with.property('code', code);
      expect(fresh.kernelInfo('float64')).to.equal(undefined); // nothing was compiled
    };

    it('ERR_ARG_COUNT: wrong number of arguments', async function () {
      await expectCode('ERR_ARG_COUNT', good().slice(0, 3));
      await expectCode('ERR_ARG_COUNT', [...good(), new Float64Array(1)]);
    });
    it('ERR_ARG_TYPE: an argument that is not a typed array', async function () {
      const args: unknown[] = good();
      args[1] = [1, 2, 3];
      await expectCode('ERR_ARG_TYPE', args);
      args[1] = { shape: [N, 3] };
      await expectCode('ERR_ARG_TYPE', args);
    });
    it('ERR_ARG_DTYPE: mixed float32/float64, or integer arrays', async function () {
      const args: unknown[] = good();
      args[0] = Float32Array.from(args[0] as Float64Array);
      await expectCode('ERR_ARG_DTYPE', args);
      args[0] = new Int32Array(3 * M);
      await expectCode('ERR_ARG_DTYPE', args);
    });
    it('ERR_ARG_SHAPE: lengths, row counts, parameters and batch shapes', async function () {
      const args: unknown[] = good();
      args[0] = new Float64Array(3 * M + 1); // not a multiple of dim 3
      await expectCode('ERR_ARG_SHAPE', args);
      const jRows: unknown[] = good();
      jRows[2] = new Float64Array(2 * (N + 1)); // b has N+1 rows, y has N
      await expectCode('ERR_ARG_SHAPE', jRows);
      const param: unknown[] = good();
      param[3] = Float64Array.of(1, 2);
      await expectCode('ERR_ARG_SHAPE', param);
      const batch: unknown[] = good();
      batch[0] = { data: new Float64Array(2 * M * 3), shape: [2, M, 3] };
      batch[1] = { data: new Float64Array(3 * N * 3), shape: [3, N, 3] };
      await expectCode('ERR_ARG_SHAPE', batch);
      const shape: unknown[] = good();
      shape[0] = { data: new Float64Array(M * 3), shape: [M, 4] };
      await expectCode('ERR_ARG_SHAPE', shape);
      // Two i-variables with different row counts.
      const two = new Genred('x+z', ['x = Vi(1)', 'z = Vi(1)'], { axis: 1 });
      const error = await rejection(two.call([new Float64Array(3), new Float64Array(4)]));
      expect(error.code).to.equal('ERR_ARG_SHAPE');
    });
    it('ERR_RANGES: malformed ranges, or ranges with batch dims', async function () {
      const ok: GenredRanges = [
        Int32Array.of(0, M),
        Int32Array.of(1),
        Int32Array.of(0, N),
        Int32Array.of(0, N),
        Int32Array.of(1),
        Int32Array.of(0, M),
      ];
      const withRanges = (ranges: unknown) => expectCode('ERR_RANGES', good(), { ranges });
      await withRanges(ok.slice(0, 5));
      await withRanges([Int32Array.of(0, M + 1), ...ok.slice(1)]); // row block out of bounds
      await withRanges([ok[0], ok[1], Int32Array.of(0, N + 1), ...ok.slice(3)]); // interval out of bounds
      await withRanges([Int32Array.of(0, 5, 3, 9), Int32Array.of(1, 2), ok[2], ...ok.slice(3)]); // overlapping blocks
      await withRanges([Int32Array.of(0, 4, 4, 9), Int32Array.of(1, 0), ok[2], ...ok.slice(3)]); // slices decrease
      await withRanges([Int32Array.of(0, M), Int32Array.of(2), ok[2], ...ok.slice(3)]); // slice past the end
      await withRanges([Int32Array.of(5, 2), ok[1], ok[2], ...ok.slice(3)]); // start > end
      await withRanges(['0,9', ...ok.slice(1)]);
      const batch: unknown[] = good();
      batch[0] = { data: batch[0], shape: [1, M, 3] };
      await expectCode('ERR_RANGES', batch, { ranges: ok });
    });
    it('ERR_REDUCTION: unknown reduction, bad or missing K, bad axis', function () {
      const code = (f: () => unknown) =>
        expect(f).to.throw(KeOpsError).with.property('code', 'ERR_REDUCTION');
      code(() => new Genred('x', ['x = Vi(1)'], { reduction: 'Summ' as never }));
      code(() => new Genred('x', ['x = Vi(1)'], { reduction: 'KMin', k: 0 }));
      code(() => new Genred('x', ['x = Vi(1)'], { reduction: 'KMin' }));
      code(() => new Genred('x', ['x = Vi(1)'], { reduction: 'Sum', axis: 2 as 0 }));
    });
    it('ERR_NO_GPU: the CUDA backend', async function () {
      if ((await runtimeInfo()).backend === 'cuda') this.skip();
      await expectCode('ERR_NO_GPU', good(), { backend: 'cuda' });
    });
    it('ERR_INVALID_ARGUMENT: options that do not apply', async function () {
      const code = (f: () => unknown) =>
        expect(f).to.throw(KeOpsError).with.property('code', 'ERR_INVALID_ARGUMENT');
      code(() => new Genred('x', ['x = Vi(1)'], { reduction: 'Min', sumScheme: 'kahan_scheme' }));
      code(() => new Genred('x', ['x = Vi(1)'], { reduction: 'Min', dtypeAcc: 'float64' }));
      code(() => new Genred('x', ['x = Vi(1)'], { sumScheme: 'pairwise' as 'auto' }));
      code(() => new Genred('x', ['x = Vi(1)'], { threads: 0 }));
      await expectCode('ERR_INVALID_ARGUMENT', good(), { threads: -1 });
    });
  });
});

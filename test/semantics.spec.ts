/**
 * Regression tests of the guarantees of docs/semantics.md that once differed between backends (issue 9, item 3):
 * NaN propagation through LogSumExp / SumSoftMaxWeight for every N and both dtypes, missing k-NN ranks as
 * index -1 with value +inf, and overlapping reduction intervals counted twice. Each on the CPU backend and on
 * the CUDA kernels emulated on the CPU, against the float64 reference evaluator.
 */
import { expect } from 'chai';
import { Genred } from '../lib/genred';
import { generateCudaKernels } from '../lib/codegen/cuda';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseFormula, parseReductionWithVariables } from '../lib/formula/index';
import { buildRangesLookup } from '../lib/backend/cuda/launch';
import { planReduction } from '../lib/backend/plan';
import { referenceGenred, referenceReduction, type Ranges } from '../lib/reference';
import { type CudaEmulator, useCudaEmulator } from './cuda-emulator';
import { expectClose, randArray, rng } from './util';

const DTYPES = [Float32Array, Float64Array] as const;
/** x: one row per i, y: N rows per j with a NaN at `nanAt` (or none when undefined). */
function lseData(
  dtype: (typeof DTYPES)[number],
  N: number,
  nanAt: number | undefined,
): [Float32Array | Float64Array, Float32Array | Float64Array, Float32Array | Float64Array] {
  const r = rng(100 + N);
  const x = dtype.from(randArray(r, 3));
  const y = dtype.from(randArray(r, N));
  const w = dtype.from(randArray(r, N, 0.5, 1.5));
  if (nanAt !== undefined) y[nanAt] = NaN;
  return [x, y, w];
}

describe('semantics: NaN in LogSumExp and SumSoftMaxWeight (CPU)', function () {
  this.timeout(120_000);
  const aliases = ['x = Vi(1)', 'y = Vj(1)', 'w = Vj(1)'];
  const lse = new Genred('x*y', aliases.slice(0, 2), { reduction: 'LogSumExp', axis: 1, backend: 'cpu' });
  const softmax = new Genred('x*y', aliases, {
    reduction: 'SumSoftMaxWeight',
    formula2: 'w',
    axis: 1,
    backend: 'cpu',
  });
  const f = parseFormula('x*y', aliases).node;
  const wNode = parseFormula('w', aliases).node;

  for (const dtype of DTYPES) {
    it(`a NaN term makes the result NaN for every N, ${dtype.name}`, () => {
      for (const N of [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64]) {
        for (const nanAt of [0, N - 1, Math.floor(N / 2)]) {
          const [x, y, w] = lseData(dtype, N, nanAt);
          const got = lse.callSync([x, y]) as Float32Array | Float64Array;
          const want = referenceGenred(
            'LogSumExp',
            f,
            [
              { data: x, cat: 0, dim: 1 },
              { data: y, cat: 1, dim: 1 },
            ],
            { axis: 1 },
          ) as Float64Array;
          expect(Array.from(want).every(Number.isNaN), 'the reference propagates NaN').to.equal(true);
          expectClose(got, want, 0, 0, `LogSumExp N=${N} NaN at ${nanAt}`);
          const soft = softmax.callSync([x, y, w]) as Float32Array | Float64Array;
          expect(Array.from(soft).every(Number.isNaN), `SumSoftMaxWeight N=${N} NaN at ${nanAt}`).to.equal(
            true,
          );
        }
      }
      // Without NaN the values are unchanged (and finite).
      const [x, y, w] = lseData(dtype, 16, undefined);
      const want = referenceGenred(
        'SumSoftMaxWeight',
        f,
        [
          { data: x, cat: 0, dim: 1 },
          { data: y, cat: 1, dim: 1 },
          { data: w, cat: 1, dim: 1 },
        ],
        { axis: 1, formula2: wNode },
      ) as Float64Array;
      expectClose(softmax.callSync([x, y, w]) as Float64Array, want, dtype === Float32Array ? 1e-5 : 1e-12);
    });
  }
});

describe('semantics: missing k-NN ranks are index -1 with value +inf (CPU)', function () {
  this.timeout(120_000);
  const aliases = ['x = Vi(2)', 'y = Vj(2)'];
  it('K > N, and an empty reduction, for ArgKMin, KMin_ArgKMin, ArgMin and Min_ArgMin', () => {
    const x = Float64Array.of(0, 0, 1, 1);
    const y = Float64Array.of(5, 5, 0.5, 0.5);
    const kmin = new Genred('SqDist(x,y)', aliases, {
      reduction: 'KMin_ArgKMin',
      k: 4,
      axis: 1,
      backend: 'cpu',
    });
    const out = kmin.callSync([x, y]) as { values: Float64Array; indices: Int32Array };
    expect(Array.from(out.indices)).to.deep.equal([1, 0, -1, -1, 1, 0, -1, -1]);
    expect(Array.from(out.values.subarray(2, 4))).to.deep.equal([Infinity, Infinity]);
    const argk = new Genred('SqDist(x,y)', aliases, { reduction: 'ArgKMin', k: 3, axis: 1, backend: 'cpu' });
    expect(Array.from(argk.callSync([x, new Float64Array(0)]) as Int32Array)).to.deep.equal([
      -1, -1, -1, -1, -1, -1,
    ]);
    const argmin = new Genred('SqDist(x,y)', aliases, { reduction: 'Min_ArgMin', axis: 1, backend: 'cpu' });
    const empty = argmin.callSync([x, new Float64Array(0)]) as { values: Float64Array; indices: Int32Array };
    expect(Array.from(empty.indices)).to.deep.equal([-1, -1]);
    expect(Array.from(empty.values)).to.deep.equal([Infinity, Infinity]);
    // Index 0 is a real neighbour.
    const found = argmin.callSync([x, y]) as { values: Float64Array; indices: Int32Array };
    expect(Array.from(found.indices)).to.deep.equal([1, 1]);
    const argmin0 = new Genred('SqDist(x,y)', aliases, { reduction: 'ArgMin', axis: 1, backend: 'cpu' });
    expect(Array.from(argmin0.callSync([x, Float64Array.of(0, 0)]) as Int32Array)).to.deep.equal([0, 0]);
  });
});

describe('semantics: overlapping reduction intervals count twice (CPU)', function () {
  this.timeout(120_000);
  it('redranges [0,3) and [1,4) over b = 1, 10, 100, 1000 sum to 1221, on both axes', () => {
    const b = Float64Array.of(1, 10, 100, 1000);
    const x = Float64Array.of(1, 1, 1);
    const overAxis1 = new Genred('x*b', ['x = Vi(1)', 'b = Vj(1)'], { axis: 1, backend: 'cpu' });
    const rangesJ: Ranges = [[0, 3], [2], [0, 3, 1, 4], [], [], []];
    const sums = overAxis1.callSync([x, b], { ranges: rangesJ as never }) as Float64Array;
    expect(Array.from(sums)).to.deep.equal([1221, 1221, 1221]);
    const overAxis0 = new Genred('x*b', ['x = Vj(1)', 'b = Vi(1)'], { axis: 0, backend: 'cpu' });
    const rangesI: Ranges = [[], [], [], [0, 3], [2], [0, 3, 1, 4]];
    expect(
      Array.from(overAxis0.callSync([x, b], { ranges: rangesI as never }) as Float64Array),
    ).to.deep.equal([1221, 1221, 1221]);
    const f = parseFormula('x*b', ['x = Vi(1)', 'b = Vj(1)']).node;
    const ref = referenceGenred(
      'Sum',
      f,
      [
        { data: x, cat: 0, dim: 1 },
        { data: b, cat: 1, dim: 1 },
      ],
      { axis: 1, ranges: rangesJ },
    ) as Float64Array;
    expect(Array.from(ref)).to.deep.equal([1221, 1221, 1221]);
  });
});

describe('semantics: the same guarantees from the CUDA kernels (emulated)', function () {
  this.timeout(300_000);
  const emulator = useCudaEmulator();
  const compiled = new Map<string, Awaited<ReturnType<CudaEmulator['compile']>>>();

  async function run(
    text: string,
    aliases: string[],
    dtype: 'float32' | 'float64',
    data: Float64Array[],
    ny: number,
    nx: number,
    ranges?: Ranges,
  ) {
    const parsed = parseReductionWithVariables(text, aliases);
    const positions: ArgPosition[] = aliases.map(() => ({ dim: 1, cat: 2 }));
    for (const v of parsed.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
    const kernels = generateCudaKernels(parsed.reduction, {
      dtype,
      sumScheme: parsed.reduction.def.sumType ? 'block_sum' : 'direct_sum',
      positions,
    });
    const key = `${text}|${dtype}`;
    // One compilation per formula and dtype, however many sizes run it.
    let exe = compiled.get(key);
    if (exe === undefined) {
      exe = await emulator.compile(kernels);
      compiled.set(key, exe);
    }
    const args = data.map((a) => (dtype === 'float32' ? Float32Array.from(a) : a));
    const expected = referenceReduction(
      parsed.reduction,
      positions.map((p, pos) => ({ data: Float64Array.from(args[pos]), cat: p.cat, dim: p.dim })),
      ranges === undefined ? {} : { ranges },
    );
    const results = [];
    if (ranges !== undefined) {
      const plan = planReduction(args, parsed.variables, positions.length, parsed.reduction.tag, ranges);
      results.push(
        await emulator.run(exe, kernels, {
          scheme: 'ranges',
          nx,
          ny,
          blockSize: 8,
          lookup: buildRangesLookup(plan.blocks, 8),
          intervals: [...plan.intervals],
          args,
        }),
      );
    } else {
      results.push(await emulator.run(exe, kernels, { scheme: '1d', nx, ny, blockSize: 8, args }));
      if (ny > 0) {
        results.push(
          await emulator.run(exe, kernels, {
            scheme: 'split',
            nx,
            ny,
            blockSize: 8,
            splits: Math.ceil(ny / 4),
            slice: 4,
            args,
          }),
        );
      }
    }
    return { results, expected };
  }

  for (const dtype of ['float32', 'float64'] as const) {
    it(`LogSumExp and SumSoftMaxWeight propagate NaN for every N, ${dtype}`, async () => {
      for (const N of [1, 5, 8, 16, 33]) {
        const r = rng(N);
        const x = randArray(r, 3);
        const y = randArray(r, N);
        const w = randArray(r, N, 0.5, 1.5);
        y[N - 1] = NaN;
        for (const text of ['Max_SumShiftExp_Reduction(x*y,0)', 'Max_SumShiftExpWeight_Reduction(x*y,0,w)']) {
          const { results, expected } = await run(
            text,
            ['x = Vi(1)', 'y = Vj(1)', 'w = Vj(1)'],
            dtype,
            [x, y, w],
            N,
            3,
          );
          expect(Array.from(expected.val).every(Number.isNaN), `${text}: the reference is NaN`).to.equal(
            true,
          );
          for (const got of results) expectClose(got.val, expected.val, 0, 0, `${text} N=${N}`);
        }
      }
    });
  }

  it('missing ranks are index -1 with value +inf (K > N), overlapping intervals count twice', async () => {
    const x = Float64Array.of(0, 0.4, 3);
    const y = Float64Array.of(1, 0.5);
    const { results, expected } = await run(
      'KMin_ArgKMin_Reduction(SqDist(x,y),3,0)',
      ['x = Vi(1)', 'y = Vj(1)'],
      'float64',
      [x, y],
      2,
      3,
    );
    expect(Array.from(expected.idx)).to.deep.equal([1, 0, -1, 1, 0, -1, 0, 1, -1]);
    for (const got of results) {
      expect(Array.from(got.idx)).to.deep.equal(Array.from(expected.idx));
      expectClose(got.val, expected.val, 1e-15);
    }
    const b = Float64Array.of(1, 10, 100, 1000);
    const ones = Float64Array.of(1, 1, 1);
    const ranged = await run('Sum_Reduction(x*b,0)', ['x = Vi(1)', 'b = Vj(1)'], 'float64', [ones, b], 4, 3, [
      [0, 3],
      [2],
      [0, 3, 1, 4],
      [],
      [],
      [],
    ]);
    expect(Array.from(ranged.expected.val)).to.deep.equal([1221, 1221, 1221]);
    expect(Array.from(ranged.results[0].val)).to.deep.equal([1221, 1221, 1221]);
  });
});

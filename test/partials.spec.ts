/**
 * Partial results (lib/jobs/partial.ts): for every Genred reduction, partials over random slices of the reduced
 * axis, merged in different orders, finalise to the single call's result (indices exactly, values within
 * rounding); serialised partials round-trip, and corrupt, truncated or incompatible ones are typed errors.
 * Indices are global (offset by the slice start), int64 past 2^31, and -1 for slots no row reached.
 */
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import { REDUCTIONS, partialStateReduction, makeReduction } from '../lib/formula/reductions';
import { builder as b } from '../lib/formula/builder';
import { Genred } from '../lib/genred';
import type { ReductionName } from '../lib/genred-types';
import { type ChunkedResult, PartialReducer, type PartialResult } from '../lib/jobs/partial';
import { expectClose, expectKeOpsError, expectRelative, randArray, rng, useTestKernelCache } from './util';

type F = Float32Array | Float64Array;

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];

interface Case {
  readonly reduction: ReductionName;
  readonly formula: string;
  readonly k?: number;
  readonly formula2?: string;
}

const CASES: readonly Case[] = [
  { reduction: 'Sum', formula: 'Exp(-SqDist(x,y))*b' },
  { reduction: 'LogSumExp', formula: '-SqDist(x,y)*4' },
  { reduction: 'LogSumExp', formula: '-SqDist(x,y)', formula2: 'Exp(b)' },
  { reduction: 'SumSoftMaxWeight', formula: '-SqDist(x,y)', formula2: 'b' },
  { reduction: 'Max_SumShiftExp', formula: '-SqDist(x,y)' },
  { reduction: 'Min', formula: 'SqDist(x,y)' },
  { reduction: 'Max', formula: 'x*y' },
  { reduction: 'ArgMin', formula: 'SqDist(x,y)' },
  { reduction: 'ArgMax', formula: 'x*y' },
  { reduction: 'Min_ArgMin', formula: 'SqDist(x,y)' },
  { reduction: 'Max_ArgMax', formula: 'x*y' },
  { reduction: 'KMin', formula: 'SqDist(x,y)', k: 4 },
  { reduction: 'ArgKMin', formula: 'SqDist(x,y)', k: 4 },
  { reduction: 'KMin_ArgKMin', formula: 'x-y', k: 3 },
];

const genred = (c: Case) =>
  new Genred(c.formula, ALIASES, {
    reduction: c.reduction,
    axis: 1,
    backend: 'cpu',
    ...(c.k === undefined ? {} : { k: c.k }),
    ...(c.formula2 === undefined ? {} : { formula2: c.formula2 }),
  });

function data(M: number, N: number, seed: number, dtype: 'float32' | 'float64'): F[] {
  const r = rng(seed);
  const cast = (a: Float64Array): F => (dtype === 'float32' ? Float32Array.from(a) : a);
  return [cast(randArray(r, 3 * M)), cast(randArray(r, 3 * N)), cast(randArray(r, 2 * N))];
}

/** Random cut points of [0, n): 1-row slices included. */
function randomCuts(n: number, pieces: number, r: () => number): number[] {
  const cuts = new Set<number>([0, n, 1]);
  while (cuts.size < pieces + 1) cuts.add(Math.floor(r() * n));
  return [...cuts].filter((c) => c <= n).sort((p, q) => p - q);
}

async function partialsOf(reducer: PartialReducer, args: F[], cuts: number[]): Promise<PartialResult[]> {
  const out: PartialResult[] = [];
  for (let s = 0; s + 1 < cuts.length; s++) {
    const [a, z] = [cuts[s], cuts[s + 1]];
    out.push(
      await reducer.compute([args[0], args[1].subarray(3 * a, 3 * z), args[2].subarray(2 * a, 2 * z)], {
        start: a,
      }),
    );
  }
  return out;
}

function expectSameResult(actual: ChunkedResult, expected: ChunkedResult, rtol: number, what: string): void {
  const same = (a: unknown, e: unknown, part: string) => {
    if (e instanceof Int32Array) {
      expect(a, `${what} ${part}`).to.be.instanceOf(Int32Array);
      expect(Array.from(a as Int32Array), `${what} ${part}`).to.deep.equal(Array.from(e));
    } else {
      expect((a as F).constructor, `${what} ${part} type`).to.equal((e as F).constructor);
      // Norm-wise: sums of terms of both signs make small entries ill-conditioned.
      if (rtol > 0) expectRelative(a as F, e as F, rtol, `${what} ${part}`);
      else expectClose(a as F, e as F, 0, 0, `${what} ${part}`);
    }
  };
  if (ArrayBuffer.isView(expected)) same(actual, expected, 'result');
  else {
    const pair = actual as { values: F; indices: Int32Array };
    same(pair.values, expected.values, 'values');
    same(pair.indices, expected.indices, 'indices');
  }
}

const shuffle = <T>(items: readonly T[], r: () => number): T[] => {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
};

describe('partial results', function () {
  this.timeout(600_000);
  useTestKernelCache();

  it('every engine reduction declares a partial state with its accumulator, output whole', function () {
    const f = b.variable(0, 2, 0);
    for (const def of REDUCTIONS.values()) {
      const formula =
        def.name === 'Zero_Reduction'
          ? b.zero(2)
          : def.name.includes('SumShiftExp')
            ? b.variable(0, 1, 0)
            : f;
      const red = makeReduction(def.name, formula, {
        tag: 0,
        k: def.syntax === 'k_tag' ? 3 : undefined,
        formula2: def.syntax === 'tag_formula2' ? f : undefined,
      });
      const state = partialStateReduction(red);
      expect(state.layout.dimVal, def.name).to.equal(red.layout.dimredVal);
      expect(state.layout.dimIdx, def.name).to.equal(red.layout.dimredIdx);
      expect(state.layout.dimredVal, def.name).to.equal(red.layout.dimredVal);
    }
  });

  for (const dtype of ['float64', 'float32'] as const) {
    const cases =
      dtype === 'float64'
        ? CASES
        : CASES.filter((c) => ['Sum', 'LogSumExp', 'ArgKMin'].includes(c.reduction));
    for (const c of cases) {
      it(`${c.reduction}(${c.formula}${c.formula2 ? `, ${c.formula2}` : ''}) ${dtype}: merged partials = one call, any order`, async function () {
        const g = genred(c);
        const reducer = new PartialReducer(g);
        const r = rng(c.reduction.length * 31 + c.formula.length);
        const M = 23;
        const N = 97;
        const args = data(M, N, 7 + c.formula.length, dtype);
        const whole = await g.call(args);
        const cuts = randomCuts(N, 7, r);
        const parts = await partialsOf(reducer, args, cuts);
        const rtol = dtype === 'float32' ? 1e-6 : 1e-12;
        const forward = reducer.finalize(reducer.merge(parts));
        expectSameResult(forward, whole, rtol, 'in order');
        const shuffled = reducer.finalize(reducer.merge(shuffle(parts, r)));
        expectSameResult(shuffled, forward, rtol, 'shuffled');
        // Pairwise tree merges in another order: same again.
        let level = shuffle(parts, r);
        while (level.length > 1) {
          const next: PartialResult[] = [];
          for (let i = 0; i < level.length; i += 2)
            next.push(i + 1 < level.length ? reducer.merge([level[i + 1], level[i]]) : level[i]);
          level = next;
        }
        expect(level[0].slices).to.deep.equal([[0, N]]);
        expectSameResult(reducer.finalize(level[0]), forward, rtol, 'tree');
      });
    }
  }

  describe('serialisation', function () {
    const c: Case = { reduction: 'KMin_ArgKMin', formula: 'SqDist(x,y)', k: 3 };
    let reducer: PartialReducer;
    let partial: PartialResult;
    before(async () => {
      reducer = new PartialReducer(genred(c));
      const args = data(11, 20, 3, 'float32');
      partial = await reducer.compute([args[0], args[1], args[2]], { start: 40 });
    });

    it('round-trips every field and the finalised result', function () {
      const back = reducer.fromBytes(partial.toBytes());
      expect(back.reduction).to.equal(partial.reduction);
      expect(back.dtype).to.equal('float32');
      expect(back.rows).to.equal(11);
      expect(back.slices).to.deep.equal([[40, 60]]);
      expect(Array.from(back.val)).to.deep.equal(Array.from(partial.val));
      expect(Array.from(back.idx)).to.deep.equal(Array.from(partial.idx));
      const result = reducer.finalize(back) as { values: Float32Array; indices: Int32Array };
      expect(result.values).to.be.instanceOf(Float32Array);
      expect(Math.min(...result.indices)).to.be.at.least(40);
      expect(Math.max(...result.indices)).to.be.below(60);
    });

    it('rejects truncated, corrupted, foreign and future-version bytes with ERR_PARTIAL_FORMAT', function () {
      const bytes = partial.toBytes();
      expectKeOpsError(() => reducer.fromBytes(bytes.subarray(0, bytes.length - 1)), 'ERR_PARTIAL_FORMAT');
      expectKeOpsError(() => reducer.fromBytes(bytes.subarray(0, 40)), 'ERR_PARTIAL_FORMAT', 'shorter');
      for (const at of [0, 9, 50, 80, bytes.length - 100, bytes.length - 1]) {
        const bad = bytes.slice();
        bad[at] ^= 0x10;
        expectKeOpsError(() => reducer.fromBytes(bad), 'ERR_PARTIAL_FORMAT');
      }
      expectKeOpsError(() => reducer.fromBytes(new Uint8Array(200)), 'ERR_PARTIAL_FORMAT', 'magic');
      const future = bytes.slice();
      new DataView(future.buffer).setUint32(8, 2, true);
      expectKeOpsError(() => reducer.fromBytes(future), 'ERR_PARTIAL_FORMAT', 'version 2');
    });

    it('merging partials of another reduction, dtype or row count, or overlapping slices, is ERR_PARTIAL_MISMATCH', async function () {
      const other = new PartialReducer(genred({ ...c, k: 4 }));
      const args = data(11, 20, 4, 'float32');
      const foreign = await other.compute(args);
      expectKeOpsError(() => reducer.merge([partial, foreign]), 'ERR_PARTIAL_MISMATCH', 'another reduction');
      expectKeOpsError(() => reducer.fromBytes(foreign.toBytes()), 'ERR_PARTIAL_MISMATCH');
      const f64 = await reducer.compute(data(11, 5, 5, 'float64'));
      expectKeOpsError(() => reducer.merge([partial, f64]), 'ERR_PARTIAL_MISMATCH', 'float64');
      const fewer = await reducer.compute([args[0].subarray(0, 30), args[1], args[2]], { start: 0 });
      expectKeOpsError(() => reducer.merge([partial, fewer]), 'ERR_PARTIAL_MISMATCH', 'output rows');
      const overlapping = await reducer.compute([args[0], args[1].subarray(0, 9), args[2].subarray(0, 6)], {
        start: 55,
      });
      expectKeOpsError(() => reducer.merge([partial, overlapping]), 'ERR_PARTIAL_MISMATCH', 'overlap');
      expect(() => reducer.merge([])).to.throw(KeOpsError);
    });
  });

  describe('indices', function () {
    it('are global and int64 (BigInt64Array) past 2^31, without allocating 2^31 rows', async function () {
      const g = genred({ reduction: 'Min_ArgMin', formula: 'SqDist(x,y)' });
      const reducer = new PartialReducer(g);
      const args = data(5, 10, 9, 'float64');
      const far = 2 ** 31 + 7;
      const low = await reducer.compute([args[0], args[1].subarray(0, 15), args[2].subarray(0, 10)], {
        start: 0,
      });
      const high = await reducer.compute([args[0], args[1].subarray(15), args[2].subarray(10)], {
        start: far,
      });
      const whole = (await g.call(args)) as { values: Float64Array; indices: Int32Array };
      const merged = reducer.finalize(reducer.merge([high, low])) as {
        values: Float64Array;
        indices: BigInt64Array;
      };
      expect(merged.indices).to.be.instanceOf(BigInt64Array);
      const expected = Array.from(whole.indices, (i) => BigInt(i < 5 ? i : i - 5 + far));
      expect(Array.from(merged.indices)).to.deep.equal(expected);
      expectClose(merged.values, whole.values, 0, 0, 'values');
      // Below the limit the same partials stay int32.
      expect(reducer.finalize(low)).to.satisfy((r: { indices: unknown }) => r.indices instanceof Int32Array);
    });

    it('slots no row reached are index -1 / +inf and sort after real neighbours when merged', async function () {
      const g = genred({ reduction: 'KMin_ArgKMin', formula: 'SqDist(x,y)', k: 4 });
      const reducer = new PartialReducer(g);
      const args = data(3, 3, 11, 'float64');
      const first = await reducer.compute([args[0], args[1].subarray(0, 3), args[2].subarray(0, 2)], {
        start: 100,
      });
      const alone = reducer.finalize(first) as { values: Float64Array; indices: Int32Array };
      for (let row = 0; row < 3; row++) {
        expect(alone.indices.slice(row * 4 + 1, row * 4 + 4).every((i) => i === -1)).to.equal(true);
        expect(alone.values[row * 4 + 1]).to.equal(Infinity);
      }
      const rest = await reducer.compute([args[0], args[1].subarray(3), args[2].subarray(2)], { start: 101 });
      const merged = reducer.finalize(reducer.merge([rest, first])) as {
        values: Float64Array;
        indices: Int32Array;
      };
      for (let row = 0; row < 3; row++) {
        const ranks = Array.from(merged.indices.slice(row * 4, row * 4 + 4));
        expect(ranks.slice(0, 3).sort()).to.deep.equal([100, 101, 102]);
        expect(ranks[3]).to.equal(-1);
      }
    });
  });
});

import { expect } from 'chai';
import { builder as b } from '../lib/formula/builder';
import {
  GENRED_REDUCTION_NAMES,
  type GenredResult,
  resolveGenredReduction,
} from '../lib/formula/genred-reductions';
import type { Node } from '../lib/formula/node';
import { makeReduction } from '../lib/formula/reductions';
import {
  type Ranges,
  referenceGenred,
  referenceGenredGradient,
  referenceReduction,
  type ReferenceInput,
} from '../lib/reference';
import { expectClose, expectKeOpsError, randArray, rng } from './util';

// Variables: x_i (3), y_j (3), w_j (2, positive), p (param), a_i (2, positive).
const M = 5;
const N = 7;
const x = b.variable(0, 3, 0);
const y = b.variable(1, 3, 1);
const w = b.variable(2, 2, 1);
const p = b.variable(3, 1, 2);
const a = b.variable(4, 2, 0);

const sqDist = (u: Node, v: Node) => b.sum(b.call('Square', [b.sub(u, v)]));
/** f_ij = -p |x_i - y_j|², h_ij = x_i - y_j, g_ij = w_j + a_i. */
const f = b.mul(b.neg(p), sqDist(x, y));
const h = b.sub(x, y);
const g = b.add(w, a);

interface Data {
  x: Float64Array;
  y: Float64Array;
  w: Float64Array;
  p: Float64Array;
  a: Float64Array;
}

function randomData(r: () => number, levels = 0): Data {
  const q = (arr: Float64Array) => (levels > 0 ? arr.map((v) => Math.round(v * levels) / levels) : arr);
  return {
    x: q(randArray(r, M * 3)),
    y: q(randArray(r, N * 3)),
    w: randArray(r, N * 2, 0.5, 2),
    p: Float64Array.of(0.8),
    a: randArray(r, M * 2, 0.5, 2),
  };
}

const inputsOf = (d: Data): ReferenceInput[] => [
  { data: d.x, dim: 3, cat: 0 },
  { data: d.y, dim: 3, cat: 1 },
  { data: d.w, dim: 2, cat: 1 },
  { data: d.p, dim: 1, cat: 2 },
  { data: d.a, dim: 2, cat: 0 },
];

// Direct dense values, written independently of the formula machinery.
const F = (d: Data, i: number, j: number) => {
  let s = 0;
  for (let k = 0; k < 3; k++) s += (d.x[3 * i + k] - d.y[3 * j + k]) ** 2;
  return -d.p[0] * s;
};
const H = (d: Data, i: number, j: number) => [0, 1, 2].map((k) => d.x[3 * i + k] - d.y[3 * j + k]);
const Gw = (d: Data, i: number, j: number) => [0, 1].map((k) => d.w[2 * j + k] + d.a[2 * i + k]);

/** For each output row, the list of (i, j) pairs reduced, in increasing reduced index. */
function pairsByRow(axis: 0 | 1): Array<Array<[number, number]>> {
  const rows = axis === 1 ? M : N;
  const red = axis === 1 ? N : M;
  return Array.from({ length: rows }, (_, r) =>
    Array.from({ length: red }, (_, t) => (axis === 1 ? [r, t] : [t, r]) as [number, number]),
  );
}

/** Per row: the row's values for each reduced index (a matrix rows × reduced × dim), then reduce. */
function perRow<T>(
  axis: 0 | 1,
  value: (i: number, j: number) => number[],
  reduce: (vals: number[][]) => T[],
): T[] {
  return pairsByRow(axis).flatMap((pairs) => reduce(pairs.map(([i, j]) => value(i, j))));
}

const col = (vals: number[][], k: number) => vals.map((v) => v[k]);
const argBest = (c: number[], dir: 'min' | 'max') =>
  c.indexOf(dir === 'min' ? Math.min(...c) : Math.max(...c));
function kSmallest(c: number[], K: number): Array<{ v: number; t: number }> {
  const sorted = c.map((v, t) => ({ v, t })).sort((u, v) => u.v - v.v || u.t - v.t);
  return Array.from({ length: K }, (_, r) => sorted[r] ?? { v: Infinity, t: 0 });
}

interface Expectation {
  formula: Node;
  k?: number;
  formula2?: Node;
  values?: (d: Data, axis: 0 | 1) => number[];
  indices?: (d: Data, axis: 0 | 1) => number[];
}

const K = 3;
const kminValues = (d: Data, axis: 0 | 1) =>
  perRow(
    axis,
    (i, j) => H(d, i, j),
    (vals) => {
      const out = new Array<number>(K * 3);
      for (let l = 0; l < 3; l++) kSmallest(col(vals, l), K).forEach((e, r) => (out[r * 3 + l] = e.v));
      return out;
    },
  );
const kminIndices = (d: Data, axis: 0 | 1) =>
  perRow(
    axis,
    (i, j) => H(d, i, j),
    (vals) => {
      const out = new Array<number>(K * 3);
      for (let l = 0; l < 3; l++) kSmallest(col(vals, l), K).forEach((e, r) => (out[r * 3 + l] = e.t));
      return out;
    },
  );
const extremum = (dir: 'min' | 'max') => (d: Data, axis: 0 | 1) =>
  perRow(
    axis,
    (i, j) => H(d, i, j),
    (vals) => [0, 1, 2].map((l) => (dir === 'min' ? Math.min : Math.max)(...col(vals, l))),
  );
const argExtremum = (dir: 'min' | 'max') => (d: Data, axis: 0 | 1) =>
  perRow(
    axis,
    (i, j) => H(d, i, j),
    (vals) => [0, 1, 2].map((l) => argBest(col(vals, l), dir)),
  );
const logSumExpWeighted = (d: Data, axis: 0 | 1) =>
  perRow(
    axis,
    (i, j) => [F(d, i, j), ...Gw(d, i, j)],
    (vals) => [1, 2].map((k) => Math.log(vals.reduce((s, v) => s + Math.exp(v[0]) * v[k], 0))),
  );
const softMax = (d: Data, axis: 0 | 1) =>
  perRow(
    axis,
    (i, j) => [F(d, i, j), ...Gw(d, i, j)],
    (vals) => {
      const z = vals.reduce((s, v) => s + Math.exp(v[0]), 0);
      return [1, 2].map((k) => vals.reduce((s, v) => s + Math.exp(v[0]) * v[k], 0) / z);
    },
  );

const EXPECTATIONS: Record<string, Expectation> = {
  Sum: {
    formula: b.mul(b.call('Exp', [f]), g),
    values: (d, axis) =>
      perRow(
        axis,
        (i, j) => Gw(d, i, j).map((v) => Math.exp(F(d, i, j)) * v),
        (vals) => [0, 1].map((k) => col(vals, k).reduce((s, v) => s + v, 0)),
      ),
  },
  LogSumExp: {
    formula: f,
    values: (d, axis) =>
      perRow(
        axis,
        (i, j) => [F(d, i, j)],
        (vals) => [Math.log(vals.reduce((s, v) => s + Math.exp(v[0]), 0))],
      ),
  },
  LogSumExpWeight: { formula: f, formula2: g, values: logSumExpWeighted },
  SumSoftMaxWeight: { formula: f, formula2: g, values: softMax },
  SoftMax: { formula: f, formula2: g, values: softMax },
  Max_SumShiftExp: {
    formula: f,
    values: (d, axis) =>
      perRow(
        axis,
        (i, j) => [F(d, i, j)],
        (vals) => {
          const m = Math.max(...col(vals, 0));
          return [m, vals.reduce((s, v) => s + Math.exp(v[0] - m), 0)];
        },
      ),
  },
  Max_SumShiftExpWeight: {
    formula: f,
    formula2: g,
    values: (d, axis) =>
      perRow(
        axis,
        (i, j) => [F(d, i, j), ...Gw(d, i, j)],
        (vals) => {
          const m = Math.max(...col(vals, 0));
          return [m, ...[1, 2].map((k) => vals.reduce((s, v) => s + Math.exp(v[0] - m) * v[k], 0))];
        },
      ),
  },
  Min: { formula: h, values: extremum('min') },
  Max: { formula: h, values: extremum('max') },
  ArgMin: { formula: h, indices: argExtremum('min') },
  ArgMax: { formula: h, indices: argExtremum('max') },
  Min_ArgMin: { formula: h, values: extremum('min'), indices: argExtremum('min') },
  MinArgMin: { formula: h, values: extremum('min'), indices: argExtremum('min') },
  Max_ArgMax: { formula: h, values: extremum('max'), indices: argExtremum('max') },
  MaxArgMax: { formula: h, values: extremum('max'), indices: argExtremum('max') },
  KMin: { formula: h, k: K, values: kminValues },
  ArgKMin: { formula: h, k: K, indices: kminIndices },
  KMin_ArgKMin: { formula: h, k: K, values: kminValues, indices: kminIndices },
  KMinArgKMin: { formula: h, k: K, values: kminValues, indices: kminIndices },
};

function checkResult(result: GenredResult, e: Expectation, d: Data, axis: 0 | 1, what: string) {
  if (e.values && e.indices) {
    expect(result).to.have.property('values');
    const pair = result as { values: Float64Array; indices: Int32Array };
    expect(pair.values).to.be.instanceOf(Float64Array);
    expect(pair.indices).to.be.instanceOf(Int32Array);
    expectClose(pair.values, e.values(d, axis), 1e-12, 1e-14, what);
    expect(Array.from(pair.indices), what).to.deep.equal(e.indices(d, axis));
  } else if (e.indices) {
    expect(result).to.be.instanceOf(Int32Array);
    expect(Array.from(result as Int32Array), what).to.deep.equal(e.indices(d, axis));
  } else {
    expect(result).to.be.instanceOf(Float64Array);
    expectClose(
      result as Float64Array,
      (e.values as (d: Data, axis: 0 | 1) => number[])(d, axis),
      1e-12,
      1e-14,
      what,
    );
  }
}

describe('reference: every Genred reduction name against dense computations', () => {
  it('covers every name', () => {
    expect([...GENRED_REDUCTION_NAMES].sort()).to.deep.equal(Object.keys(EXPECTATIONS).sort());
  });

  for (const name of Object.keys(EXPECTATIONS)) {
    for (const axis of [0, 1] as const) {
      it(`${name}, axis ${axis}`, () => {
        const e = EXPECTATIONS[name];
        const r = rng(100 + axis);
        // Quantised coordinates for the min/max families make ties frequent.
        const d = randomData(r, e.formula === h ? 2 : 0);
        if (e.formula === h) {
          // The quantised data must really produce ties along the reduced axis.
          const column = pairsByRow(axis)[0].map(([i, j]) => H(d, i, j)[0]);
          expect(new Set(column).size).to.be.below(column.length);
        }
        const result = referenceGenred(name, e.formula, inputsOf(d), { axis, k: e.k, formula2: e.formula2 });
        checkResult(result, e, d, axis, `${name} axis ${axis}`);
        const resolved = resolveGenredReduction(name, e.formula, { axis, k: e.k, formula2: e.formula2 });
        expect(resolved.reduction.tag).to.equal(axis === 1 ? 0 : 1);
      });
    }
  }

  it('LogSumExp accepts formula2 (weighted) and stays finite for huge exponents', () => {
    const r = rng(7);
    const d = randomData(r);
    checkResult(
      referenceGenred('LogSumExp', f, inputsOf(d), { axis: 1, formula2: g }),
      { formula: f, formula2: g, values: logSumExpWeighted },
      d,
      1,
      'LogSumExp+formula2',
    );
    const huge = b.add(b.int(1000), f);
    const out = referenceGenred('LogSumExp', huge, inputsOf(d), { axis: 1 }) as Float64Array;
    const expected = perRow(
      1,
      (i, j) => [F(d, i, j)],
      (vals) => [1000 + Math.log(vals.reduce((s, v) => s + Math.exp(v[0]), 0))],
    );
    expectClose(out, expected, 1e-13);
  });

  it('shapes: rowShape and dimOut, KMin with K > N fills +inf / -1', () => {
    const kmin = resolveGenredReduction('KMin_ArgKMin', h, { axis: 1, k: 2 });
    expect(kmin.dimOut).to.equal(6);
    expect(kmin.rowShape).to.deep.equal([2, 3]);
    expect(kmin.outputKind).to.equal('values+indices');
    expect(resolveGenredReduction('KMin', f, { axis: 1, k: 4 }).rowShape).to.deep.equal([4]);
    expect(resolveGenredReduction('ArgMin', h, { axis: 0 }).outputKind).to.equal('indices');
    expect(resolveGenredReduction('SoftMax', f, { axis: 0, formula2: g }).dimOut).to.equal(2);
    expect(resolveGenredReduction('Max_SumShiftExpWeight', f, { axis: 0, formula2: g }).dimOut).to.equal(3);
    const r = rng(8);
    const d = randomData(r);
    const res = referenceGenred('KMin_ArgKMin', f, inputsOf(d), { axis: 0, k: M + 2 }) as {
      values: Float64Array;
      indices: Int32Array;
    };
    for (let j = 0; j < N; j++) {
      const sorted = Array.from({ length: M }, (_, i) => F(d, i, j)).sort((u, v) => u - v);
      expectClose(res.values.subarray(j * (M + 2), (j + 1) * (M + 2)), [...sorted, Infinity, Infinity]);
      expect(Array.from(res.indices.subarray(j * (M + 2) + M, (j + 1) * (M + 2)))).to.deep.equal([-1, -1]);
    }
  });

  it('postprocess keeps the dtype of the raw values and validates sizes', () => {
    const lse = resolveGenredReduction('LogSumExp', f, { axis: 1 });
    const out = lse.postprocess({ val: Float32Array.of(1, Math.E, 0, 1), idx: new Int32Array(0), rows: 2 });
    expect(out).to.be.instanceOf(Float32Array);
    expectClose(out as Float32Array, [2, 0], 1e-6);
    const sm = resolveGenredReduction('SoftMax', f, { axis: 1, formula2: w });
    const soft = sm.postprocess({ val: Float32Array.of(0, 2, 4, 6), idx: new Int32Array(0), rows: 1 });
    expect(soft).to.be.instanceOf(Float32Array);
    expectClose(soft as Float32Array, [2, 3]);
    const arg = resolveGenredReduction('Min_ArgMin', h, { axis: 1 });
    const pair = arg.postprocess({ val: new Float32Array(3), idx: Int32Array.of(1, 2, 3), rows: 1 }) as {
      values: Float32Array;
      indices: Int32Array;
    };
    expect(pair.values).to.be.instanceOf(Float32Array);
    expect(Array.from(pair.indices)).to.deep.equal([1, 2, 3]);
    expectKeOpsError(
      () => lse.postprocess({ val: new Float64Array(3), idx: new Int32Array(0), rows: 2 }),
      'ERR_INVALID_ARGUMENT',
    );
    expectKeOpsError(
      () => arg.postprocess({ val: new Float64Array(3), idx: new Int32Array(2), rows: 1 }),
      'ERR_INVALID_ARGUMENT',
    );
  });

  it('rejects unknown names (with a suggestion), bad axis, K and formula2', () => {
    expectKeOpsError(
      () => resolveGenredReduction('LogSumExpp', f, { axis: 1 }),
      'ERR_REDUCTION',
      /did you mean 'LogSumExp'/,
    );
    expectKeOpsError(() => resolveGenredReduction('Softmax', f, { axis: 1 }), 'ERR_REDUCTION', /'SoftMax'/);
    expectKeOpsError(
      () => resolveGenredReduction('argkmin', f, { axis: 1, k: 2 }),
      'ERR_REDUCTION',
      /'ArgKMin'/,
    );
    expectKeOpsError(() => resolveGenredReduction('Sum', f, { axis: 2 as 0 }), 'ERR_REDUCTION', /axis/);
    expectKeOpsError(() => resolveGenredReduction('KMin', f, { axis: 1 }), 'ERR_REDUCTION', /K/);
    expectKeOpsError(() => resolveGenredReduction('KMin', f, { axis: 1, k: 0 }), 'ERR_REDUCTION', /K/);
    expectKeOpsError(() => resolveGenredReduction('Sum', f, { axis: 1, k: 2 }), 'ERR_REDUCTION', /K/);
    expectKeOpsError(
      () => resolveGenredReduction('Sum', f, { axis: 1, formula2: g }),
      'ERR_REDUCTION',
      /formula2/,
    );
    expectKeOpsError(() => resolveGenredReduction('SoftMax', f, { axis: 1 }), 'ERR_REDUCTION', /formula2/);
    expectKeOpsError(
      () => resolveGenredReduction('LogSumExpWeight', f, { axis: 1 }),
      'ERR_REDUCTION',
      /formula2/,
    );
    expectKeOpsError(() => resolveGenredReduction('LogSumExp', h, { axis: 1 }), 'ERR_FORMULA_DIM', /scalar/);
  });
});

describe('reference: sizes and input validation', () => {
  const r = rng(9);
  const d = randomData(r);

  it('a formula without j variables reduces over N = 1 (Genred("x", Vi(3), axis=1) returns x)', () => {
    expectClose(referenceGenred('Sum', x, [{ data: d.x, dim: 3, cat: 0 }], { axis: 1 }) as Float64Array, d.x);
    // axis 0 with no j variable: one output row, the sum over i.
    const s = [0, 1, 2].map((k) =>
      Array.from({ length: M }, (_, i) => d.x[3 * i + k]).reduce((u, v) => u + v, 0),
    );
    expectClose(
      referenceGenred('Sum', x, [{ data: d.x, dim: 3, cat: 0 }], { axis: 0 }) as Float64Array,
      s,
      1e-14,
    );
  });

  it('given but unused inputs still set M and N; empty reductions give the neutral value', () => {
    const onlyP = referenceGenred('Sum', p, inputsOf(d), { axis: 1 }) as Float64Array;
    expectClose(onlyP, new Array(M).fill(N * d.p[0]), 1e-14);
    const emptyY: ReferenceInput[] = [
      { data: d.x, dim: 3, cat: 0 },
      { data: new Float64Array(0), dim: 3, cat: 1 },
    ];
    expect(Array.from(referenceGenred('Sum', h, emptyY, { axis: 1 }) as Float64Array)).to.deep.equal(
      new Array(M * 3).fill(0),
    );
    expect(
      Array.from(referenceGenred('LogSumExp', sqDist(x, y), emptyY, { axis: 1 }) as Float64Array),
    ).to.deep.equal(new Array(M).fill(-Infinity));
    expect((referenceGenred('Sum', h, emptyY, { axis: 0 }) as Float64Array).length).to.equal(0);
  });

  it('accepts Float32Array inputs (computed in float64)', () => {
    const out = referenceGenred('Sum', x, [{ data: Float32Array.of(0.5, 1.5, 2.5), dim: 3, cat: 0 }], {
      axis: 1,
    });
    expect(out).to.be.instanceOf(Float64Array);
    expectClose(out as Float64Array, [0.5, 1.5, 2.5]);
  });

  it('rejects bad inputs with ERR_INVALID_ARGUMENT', () => {
    const red = makeReduction('Sum_Reduction', h, { tag: 0 });
    const bad = (inputs: (ReferenceInput | undefined)[], ...patterns: RegExp[]) =>
      expectKeOpsError(() => referenceReduction(red, inputs), 'ERR_INVALID_ARGUMENT', ...patterns);
    bad([{ data: d.x, dim: 3, cat: 0 }], /no input for variable/);
    bad([{ data: d.x, dim: 3, cat: 0 }, undefined], /position 1/);
    bad(
      [
        { data: d.x, dim: 3, cat: 0 },
        { data: d.y, dim: 3, cat: 0 },
      ],
      /cat/,
    );
    bad(
      [
        { data: d.x, dim: 3, cat: 0 },
        { data: d.a, dim: 2, cat: 1 },
      ],
      /dim/,
    );
    bad(
      [
        { data: d.x, dim: 3, cat: 0 },
        { data: d.y, dim: 3, cat: 1 },
        { data: d.a.subarray(0, 4), dim: 2, cat: 0 },
      ],
      /same number of rows/,
    );
    bad(
      [
        { data: d.x, dim: 3, cat: 0 },
        { data: d.y.subarray(0, 4), dim: 3, cat: 1 },
      ],
      /multiple/,
    );
    bad(
      [
        { data: d.x, dim: 3, cat: 0 },
        { data: d.y, dim: 3, cat: 1 },
        { data: d.a, dim: 2, cat: 2 },
      ],
      /parameter/,
    );
    bad(
      [
        { data: d.x, dim: 0, cat: 0 },
        { data: d.y, dim: 3, cat: 1 },
      ],
      /dim/,
    );
    bad(
      [
        { data: [1, 2, 3] as unknown as Float64Array, dim: 3, cat: 0 },
        { data: d.y, dim: 3, cat: 1 },
      ],
      /Float64Array/,
    );
    bad(
      [
        { data: d.x, dim: 3, cat: 5 as 0 },
        { data: d.y, dim: 3, cat: 1 },
      ],
      /cat/,
    );
    bad(
      [
        { data: d.x, shape: [M, 4], cat: 0 },
        { data: d.y, dim: 3, cat: 1 },
      ],
      /shape/,
    );
  });
});

describe('reference: ranges (block-sparse reductions)', () => {
  const r = rng(10);
  const d = randomData(r);
  const sumRed = (tag: 0 | 1) => makeReduction('Sum_Reduction', b.mul(b.call('Exp', [f]), g), { tag });
  const dense = (i: number, j: number) => Gw(d, i, j).map((v) => Math.exp(F(d, i, j)) * v);
  const i32 = (...v: number[]) => Int32Array.from(v);
  const none = i32();

  it('axis 1: rows reduce over each of their block intervals (overlaps count twice); uncovered rows get the neutral value', () => {
    // Block 0: rows [0,2) over [1,4), [3,6) and [1,2): j = 1 and 3 count twice; block 1: rows [3,5) over
    // [6,7); row 2 untouched.
    const ranges: Ranges = [i32(0, 2, 3, 5), i32(3, 4), i32(1, 4, 3, 6, 1, 2, 6, 7), none, none, none];
    const out = referenceReduction(sumRed(0), inputsOf(d), { ranges }).val;
    const expected: number[] = [];
    for (let i = 0; i < M; i++) {
      const js = i < 2 ? [1, 1, 2, 3, 3, 4, 5] : i >= 3 ? [6] : [];
      const s = [0, 0];
      for (const j of js) dense(i, j).forEach((v, k) => (s[k] += v));
      expected.push(...s);
    }
    expectClose(out, expected, 1e-13, 1e-15);
    const mins = referenceGenred('Min_ArgMin', h, inputsOf(d), { axis: 1, ranges }) as {
      values: Float64Array;
      indices: Int32Array;
    };
    expect(Array.from(mins.values.subarray(6, 9))).to.deep.equal([Infinity, Infinity, Infinity]);
    expect(Array.from(mins.indices.subarray(6, 9))).to.deep.equal([-1, -1, -1]);
    const lse = referenceGenred('LogSumExp', f, inputsOf(d), { axis: 1, ranges }) as Float64Array;
    expect(lse[2]).to.equal(-Infinity);
    expectClose(
      [lse[0]],
      [Math.log([1, 1, 2, 3, 3, 4, 5].reduce((s, j) => s + Math.exp(F(d, 0, j)), 0))],
      1e-13,
    );
    // Argmin over a block only sees the block's j's.
    const am = referenceGenred('ArgMin', f, inputsOf(d), { axis: 1, ranges }) as Int32Array;
    expect([1, 2, 3, 4, 5]).to.include(am[0]);
    expect(am[3]).to.equal(6);
  });

  it('axis 0 uses (ranges_j, slices_j, redranges_i)', () => {
    const ranges: Ranges = [none, none, none, i32(0, 3, 5, 7), i32(1, 3), i32(0, 2, 2, 3, 4, 5)];
    const out = referenceReduction(sumRed(1), inputsOf(d), { ranges }).val;
    const expected: number[] = [];
    for (let j = 0; j < N; j++) {
      const is = j < 3 ? [0, 1] : j >= 5 ? [2, 4] : [];
      const s = [0, 0];
      for (const i of is) dense(i, j).forEach((v, k) => (s[k] += v));
      expected.push(...s);
    }
    expectClose(out, expected, 1e-13, 1e-15);
  });

  it('rejects malformed ranges', () => {
    const bad = (ranges: unknown, pattern: RegExp) =>
      expectKeOpsError(
        () => referenceReduction(sumRed(0), inputsOf(d), { ranges: ranges as Ranges }),
        'ERR_INVALID_ARGUMENT',
        pattern,
      );
    bad([i32(0, 3, 2, 5), i32(1, 2), i32(0, 1, 1, 2), none, none, none], /overlap/);
    bad([i32(0, 6), i32(1), i32(0, 1), none, none, none], /row block/);
    bad([i32(0, 2), i32(1), i32(0, 8), none, none, none], /reduction interval/);
    bad([i32(0, 2), i32(2), i32(0, 1), none, none, none], /slices/);
    bad([i32(0, 2), i32(1, 1), i32(0, 1), none, none, none], /slices/);
    bad([i32(0, 2, 3), i32(1), i32(0, 1), none, none, none], /even/);
    bad([i32(0, 2), i32(1), i32(3, 1), none, none, none], /reduction interval/);
    bad([i32(0, 2), i32(1)], /6-tuple/);
  });
});

describe('reference: batch dimensions', () => {
  const r = rng(12);
  // Batch shape (2, 3): x is (2, 1, M, 3), y is (1, 3, N, 3), p is (2, 3, 1), w and a have no batch dims.
  const B = [2, 3];
  const xb = randArray(r, 2 * M * 3);
  const yb = randArray(r, 3 * N * 3);
  const pb = randArray(r, 6, 0.5, 1);
  const wd = randArray(r, N * 2, 0.5, 2);
  const ad = randArray(r, M * 2, 0.5, 2);
  const batched: ReferenceInput[] = [
    { data: xb, shape: [2, 1, M, 3], cat: 0 },
    { data: yb, shape: [1, 3, N, 3], cat: 1 },
    { data: wd, shape: [N, 2], cat: 1 },
    { data: pb, shape: [2, 3, 1], cat: 2 },
    { data: ad, dim: 2, cat: 0 },
  ];
  const sliceFor = (b0: number, b1: number): ReferenceInput[] => [
    { data: xb.subarray(b0 * M * 3, (b0 + 1) * M * 3), dim: 3, cat: 0 },
    { data: yb.subarray(b1 * N * 3, (b1 + 1) * N * 3), dim: 3, cat: 1 },
    { data: wd, dim: 2, cat: 1 },
    { data: pb.subarray(b0 * 3 + b1, b0 * 3 + b1 + 1), dim: 1, cat: 2 },
    { data: ad, dim: 2, cat: 0 },
  ];

  for (const [name, formula, opts] of [
    ['Sum', b.mul(b.call('Exp', [f]), g), {}],
    ['SoftMax', f, { formula2: g }],
    ['ArgKMin', h, { k: 2 }],
  ] as Array<[string, Node, { k?: number; formula2?: Node }]>) {
    for (const axis of [0, 1] as const) {
      it(`${name}, axis ${axis}: broadcast batches, batch dims first, equal to per-batch calls`, () => {
        const resolved = resolveGenredReduction(name, formula, { axis, ...opts });
        const raw = referenceReduction(resolved.reduction, batched);
        expect(raw.batchShape).to.deep.equal(B);
        expect(raw.rowsPerBatch).to.equal(axis === 1 ? M : N);
        expect(raw.rows).to.equal(6 * raw.rowsPerBatch);
        const all = referenceGenred(name, formula, batched, { axis, ...opts }) as Float64Array | Int32Array;
        const per = resolved.dimOut * raw.rowsPerBatch;
        expect(all.length).to.equal(6 * per);
        for (let b0 = 0; b0 < 2; b0++) {
          for (let b1 = 0; b1 < 3; b1++) {
            const one = referenceGenred(name, formula, sliceFor(b0, b1), { axis, ...opts }) as
              Float64Array | Int32Array;
            const flat = b0 * 3 + b1;
            expect(Array.from(all.subarray(flat * per, (flat + 1) * per))).to.deep.equal(Array.from(one));
          }
        }
      });
    }
  }

  it('rejects incompatible batch dims, and ranges with batch dims', () => {
    const red = makeReduction('Sum_Reduction', h, { tag: 0 });
    expectKeOpsError(
      () =>
        referenceReduction(red, [
          { data: new Float64Array(2 * M * 3), shape: [2, M, 3], cat: 0 },
          { data: new Float64Array(3 * N * 3), shape: [3, N, 3], cat: 1 },
        ]),
      'ERR_INVALID_ARGUMENT',
      /batch dimension 0/,
    );
    const i32 = (...v: number[]) => Int32Array.from(v);
    expectKeOpsError(
      () => referenceReduction(red, batched, { ranges: [i32(0, 1), i32(1), i32(0, 1), i32(), i32(), i32()] }),
      'ERR_INVALID_ARGUMENT',
      /batch/,
    );
    expectKeOpsError(
      () => referenceReduction(red, [{ data: new Float64Array(5), shape: [2, 2, 1], cat: 0 }, batched[1]]),
      'ERR_INVALID_ARGUMENT',
      /needs 4 values/,
    );
  });
});

describe('reference: Genred gradients (cotangent + reductionGradient) against finite differences', () => {
  /** Σ G · result, with input `pos` replaced. */
  const objective = (
    name: string,
    formula: Node,
    inputs: ReferenceInput[],
    opts: { axis: 0 | 1; formula2?: Node; ranges?: Ranges },
    G: Float64Array,
  ) => {
    const out = referenceGenred(name, formula, inputs, opts) as Float64Array;
    return out.reduce((s, v, k) => s + v * G[k], 0);
  };
  function numeric(
    name: string,
    formula: Node,
    inputs: ReferenceInput[],
    opts: { axis: 0 | 1; formula2?: Node; ranges?: Ranges },
    G: Float64Array,
    pos: number,
  ): Float64Array {
    const base = inputs[pos].data as Float64Array;
    const out = new Float64Array(base.length);
    for (let k = 0; k < base.length; k++) {
      const at = (delta: number) => {
        const moved = Float64Array.from(base);
        moved[k] += delta;
        const copy = inputs.slice();
        copy[pos] = { ...inputs[pos], data: moved } as ReferenceInput;
        return objective(name, formula, copy, opts, G);
      };
      out[k] = (at(1e-6) - at(-1e-6)) / 2e-6;
    }
    return out;
  }

  const cases: Array<[string, Node, Node | undefined]> = [
    ['Sum', b.mul(b.call('Exp', [f]), g), undefined],
    ['LogSumExp', f, undefined],
    ['LogSumExp', f, g],
    ['SoftMax', f, g],
  ];
  for (const [name, formula, formula2] of cases) {
    for (const axis of [0, 1] as const) {
      it(`${name}${formula2 ? ' (weighted)' : ''}, axis ${axis}: every input`, () => {
        const r = rng(200 + axis);
        const d = randomData(r);
        const inputs = inputsOf(d);
        const opts = { axis, formula2 };
        const rows = axis === 1 ? M : N;
        const dimOut = resolveGenredReduction(name, formula, opts).dimOut;
        const G = randArray(r, rows * dimOut);
        for (let pos = 0; pos < inputs.length; pos++) {
          const symbolic = referenceGenredGradient(name, formula, inputs, { ...opts, wrt: pos, G });
          expectClose(
            symbolic,
            numeric(name, formula, inputs, opts, G, pos),
            1e-6,
            1e-8,
            `${name} d/d input ${pos}`,
          );
        }
      });
    }
  }

  it('ArgMin and ArgKMin have zero gradients; Min is not differentiable', () => {
    const r = rng(210);
    const d = randomData(r);
    const zero = referenceGenredGradient('ArgKMin', h, inputsOf(d), {
      axis: 1,
      k: 2,
      wrt: 1,
      G: new Float64Array(0),
    });
    expect(Array.from(zero)).to.deep.equal(new Array(N * 3).fill(0));
    expectKeOpsError(
      () => referenceGenredGradient('Min', h, inputsOf(d), { axis: 1, wrt: 0, G: new Float64Array(M * 3) }),
      'ERR_NOT_DIFFERENTIABLE',
    );
  });

  it('with ranges and with broadcast batch dims', () => {
    const r = rng(220);
    const d = randomData(r);
    const i32 = (...v: number[]) => Int32Array.from(v);
    // The same sparsity pattern in both directions: i-block [0,3) x j [1,6), i-block [3,5) x j [6,7)
    // (every row reduces over something, so the LSE is finite; y_0 is never used).
    const ranges: Ranges = [
      i32(0, 3, 3, 5),
      i32(1, 2),
      i32(1, 6, 6, 7),
      i32(1, 6, 6, 7),
      i32(1, 2),
      i32(0, 3, 3, 5),
    ];
    const G = randArray(r, M);
    for (const pos of [0, 1, 3]) {
      const opts = { axis: 1 as const, ranges };
      expectClose(
        referenceGenredGradient('LogSumExp', f, inputsOf(d), { ...opts, wrt: pos, G }),
        numeric('LogSumExp', f, inputsOf(d), opts, G, pos),
        1e-6,
        1e-8,
        `ranges d/d input ${pos}`,
      );
    }
    const batched: ReferenceInput[] = [
      { data: randArray(r, 2 * M * 3), shape: [2, M, 3], cat: 0 },
      { data: randArray(r, N * 3), shape: [1, N, 3], cat: 1 },
      { data: d.w, dim: 2, cat: 1 },
      { data: randArray(r, 2, 0.5, 1), shape: [2, 1], cat: 2 },
      { data: d.a, dim: 2, cat: 0 },
    ];
    const Gb = randArray(r, 2 * N * 2);
    for (let pos = 0; pos < batched.length; pos++) {
      const opts = { axis: 0 as const, formula2: g };
      expectClose(
        referenceGenredGradient('SoftMax', f, batched, { ...opts, wrt: pos, G: Gb }),
        numeric('SoftMax', f, batched, opts, Gb, pos),
        1e-6,
        1e-8,
        `batched d/d input ${pos}`,
      );
    }
  });
});

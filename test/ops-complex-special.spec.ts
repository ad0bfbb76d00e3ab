import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { KeOpsErrorCode } from '../lib/errors';
import { builder as b } from '../lib/formula/builder';
import type { Node, ParamValue } from '../lib/formula/node';
import type { EmitContext } from '../lib/formula/opdef';
import { evaluateFormula } from '../lib/formula/evaluate';
import { OPS } from '../lib/formula/registry';
import { ratToNumber } from '../lib/formula/rational';
import { checkGradient, evalWith, expectClose, expectKeOpsError, randArray, rng } from './util';

// ---- a tiny complex arithmetic, independent of the code under test ----------------------------------

type C = readonly [number, number];
const cx = {
  add: ([a, b]: C, [c, d]: C): C => [a + c, b + d],
  sub: ([a, b]: C, [c, d]: C): C => [a - c, b - d],
  mul: ([a, b]: C, [c, d]: C): C => [a * c - b * d, a * d + b * c],
  conj: ([a, b]: C): C => [a, -b],
  abs2: ([a, b]: C): number => a * a + b * b,
  div: (z: C, w: C): C => {
    const [p, q] = cx.mul(z, cx.conj(w));
    const n = cx.abs2(w);
    return [p / n, q / n];
  },
  exp: ([a, b]: C): C => [Math.exp(a) * Math.cos(b), Math.exp(a) * Math.sin(b)],
};
/** The complex entries of an interleaved array (a dim-2 array is one complex scalar). */
const unpack = (a: Float64Array): C[] =>
  Array.from({ length: a.length / 2 }, (_, k) => [a[2 * k], a[2 * k + 1]]);
const pack = (zs: readonly C[]): Float64Array => Float64Array.from(zs.flatMap((z) => [...z]));
/** Entry k of a complex operand, broadcasting a complex scalar. */
const entry = (zs: readonly C[], k: number): C => (zs.length === 1 ? zs[0] : zs[k]);
const elementwise = (f: (z: C, w: C) => C) => (a: Float64Array, c: Float64Array) => {
  const za = unpack(a);
  const zc = unpack(c);
  const n = Math.max(za.length, zc.length);
  return pack(Array.from({ length: n }, (_, k) => f(entry(za, k), entry(zc, k))));
};

/** Variables of the given dims, at positions 0, 1, ... with categories cycling through i, j, parameter. */
const varsFor = (dims: readonly number[]): Node[] => dims.map((d, k) => b.variable(k, d, k % 3));

function pointFor(vars: readonly Node[], r: () => number): Map<Node, Float64Array> {
  return new Map(vars.map((v) => [v, randArray(r, v.dim)]));
}

/** A mock emission context with hygienic names, as the code generator provides. */
function mockEmitContext(node: Node): EmitContext {
  let counter = 0;
  return {
    node,
    out: 'out',
    args: node.children.map((_, k) => `arg${k}`),
    argDims: node.children.map((c) => c.dim),
    dim: node.dim,
    params: node.params,
    T: 'T',
    lit: (v) => `T(${typeof v === 'number' ? v : ratToNumber(v)})`,
    fresh: (hint) => `${hint}_${counter++}`,
  };
}

// ---- (f) complex numbers -------------------------------------------------------------------------------

interface ComplexCase {
  name: string;
  dims: number[];
  params?: ParamValue[];
  outDim: number;
  expected: (...args: Float64Array[]) => Float64Array;
}

const realPart = (a: Float64Array) => Float64Array.from(unpack(a), ([re]) => re);
const imagPart = (a: Float64Array) => Float64Array.from(unpack(a), ([, im]) => im);

const COMPLEX_CASES: ComplexCase[] = [
  { name: 'ComplexReal', dims: [6], outDim: 3, expected: realPart },
  { name: 'ComplexImag', dims: [6], outDim: 3, expected: imagPart },
  { name: 'Real2Complex', dims: [3], outDim: 6, expected: (a) => pack(Array.from(a, (x): C => [x, 0])) },
  { name: 'Imag2Complex', dims: [3], outDim: 6, expected: (a) => pack(Array.from(a, (x): C => [0, x])) },
  { name: 'Conj', dims: [6], outDim: 6, expected: (a) => pack(unpack(a).map(cx.conj)) },
  { name: 'ComplexAdd', dims: [6, 6], outDim: 6, expected: elementwise(cx.add) },
  { name: 'ComplexAdd', dims: [2, 6], outDim: 6, expected: elementwise(cx.add) },
  { name: 'ComplexSubtract', dims: [6, 6], outDim: 6, expected: elementwise(cx.sub) },
  { name: 'ComplexSubtract', dims: [6, 2], outDim: 6, expected: elementwise(cx.sub) },
  { name: 'ComplexMult', dims: [6, 6], outDim: 6, expected: elementwise(cx.mul) },
  { name: 'ComplexMult', dims: [2, 6], outDim: 6, expected: elementwise(cx.mul) },
  { name: 'ComplexMult', dims: [6, 2], outDim: 6, expected: elementwise(cx.mul) },
  { name: 'ComplexMult', dims: [2, 2], outDim: 2, expected: elementwise(cx.mul) },
  {
    name: 'ComplexRealScal',
    dims: [1, 6],
    outDim: 6,
    expected: (s, z) => pack(unpack(z).map((w) => cx.mul([s[0], 0], w))),
  },
  {
    name: 'ComplexRealScal',
    dims: [4, 1],
    outDim: 4,
    expected: (z, s) => pack(unpack(z).map((w) => cx.mul([s[0], 0], w))),
  },
  { name: 'ComplexDivide', dims: [6, 6], outDim: 6, expected: elementwise(cx.div) },
  { name: 'ComplexDivide', dims: [2, 6], outDim: 6, expected: elementwise(cx.div) },
  { name: 'ComplexDivide', dims: [6, 2], outDim: 6, expected: elementwise(cx.div) },
  { name: 'ComplexSquareAbs', dims: [6], outDim: 3, expected: (a) => Float64Array.from(unpack(a), cx.abs2) },
  {
    name: 'ComplexAbs',
    dims: [6],
    outDim: 3,
    expected: (a) => Float64Array.from(unpack(a), (z) => Math.sqrt(cx.abs2(z))),
  },
  {
    name: 'ComplexAngle',
    dims: [6],
    outDim: 3,
    expected: (a) => Float64Array.from(unpack(a), ([x, y]) => Math.atan2(y, x)),
  },
  { name: 'ComplexExp', dims: [6], outDim: 6, expected: (a) => pack(unpack(a).map(cx.exp)) },
  { name: 'ComplexExp1j', dims: [3], outDim: 6, expected: (a) => pack(Array.from(a, (t) => cx.exp([0, t]))) },
  { name: 'ComplexSum', dims: [8], outDim: 2, expected: (a) => pack([unpack(a).reduce(cx.add, [0, 0])]) },
  {
    name: 'ComplexSumT',
    dims: [2],
    params: [6],
    outDim: 6,
    expected: (a) => pack([0, 1, 2].map(() => unpack(a)[0])),
  },
];

const caseTitle = (c: { name: string; dims: number[]; params?: ParamValue[] }): string =>
  `${c.name}(dims ${c.dims.join(',')}${c.params ? `; ${c.params.join(',')}` : ''})`;

describe('ops: complex numbers (1.5 f)', () => {
  describe('dimensions and reference values', () => {
    for (const c of COMPLEX_CASES) {
      it(`${caseTitle(c)} has dim ${c.outDim} and matches direct complex arithmetic`, () => {
        const r = rng(11);
        const vars = varsFor(c.dims);
        const f = b.call(c.name, vars, c.params ?? []);
        expect(f.dim).to.equal(c.outDim);
        const point = pointFor(vars, r);
        expectClose(
          evalWith(f, point),
          c.expected(...vars.map((v) => point.get(v) as Float64Array)),
          1e-13,
          1e-15,
        );
      });
    }

    it('evaluates exp(iπ) = −1 and |3+4i| = 5 exactly enough', () => {
      const t = b.variable(0, 1, 2);
      const z = b.variable(1, 2, 2);
      const point = new Map([
        [t, Float64Array.of(Math.PI)],
        [z, Float64Array.of(3, 4)],
      ]);
      expectClose(evalWith(b.call('ComplexExp1j', [t]), point), [-1, 0], 1e-15, 1e-15);
      expectClose(evalWith(b.call('ComplexAbs', [z]), point), [5]);
      expectClose(evalWith(b.call('ComplexAngle', [z]), point), [Math.atan2(4, 3)]);
    });
  });

  describe('dimension errors', () => {
    const bad: Array<[string, number[], ParamValue[], KeOpsErrorCode]> = [
      ['ComplexReal', [3], [], 'ERR_FORMULA_DIM'],
      ['ComplexImag', [1], [], 'ERR_FORMULA_DIM'],
      ['Conj', [5], [], 'ERR_FORMULA_DIM'],
      ['ComplexAdd', [4, 6], [], 'ERR_FORMULA_DIM'],
      ['ComplexAdd', [3, 6], [], 'ERR_FORMULA_DIM'],
      ['ComplexSubtract', [1, 6], [], 'ERR_FORMULA_DIM'],
      ['ComplexMult', [6, 5], [], 'ERR_FORMULA_DIM'],
      ['ComplexMult', [4, 8], [], 'ERR_FORMULA_DIM'],
      ['ComplexDivide', [2, 3], [], 'ERR_FORMULA_DIM'],
      ['ComplexRealScal', [2, 6], [], 'ERR_FORMULA_DIM'],
      ['ComplexRealScal', [1, 1], [], 'ERR_FORMULA_DIM'],
      ['ComplexRealScal', [1, 3], [], 'ERR_FORMULA_DIM'],
      ['ComplexSquareAbs', [7], [], 'ERR_FORMULA_DIM'],
      ['ComplexAbs', [3], [], 'ERR_FORMULA_DIM'],
      ['ComplexAngle', [1], [], 'ERR_FORMULA_DIM'],
      ['ComplexExp', [3], [], 'ERR_FORMULA_DIM'],
      ['ComplexSum', [5], [], 'ERR_FORMULA_DIM'],
      ['ComplexSumT', [4], [8], 'ERR_FORMULA_DIM'],
      ['ComplexSumT', [2], [5], 'ERR_FORMULA_PARAM'],
      ['ComplexSumT', [2], [0], 'ERR_FORMULA_PARAM'],
      ['ComplexSumT', [2], [], 'ERR_FORMULA_PARAM'],
      ['ComplexMult', [2], [], 'ERR_FORMULA_ARITY'],
    ];
    for (const [name, dims, params, code] of bad) {
      it(`${caseTitle({ name, dims, params })} → ${code}`, () => {
        expectKeOpsError(() => b.call(name, varsFor(dims), params), code, name);
      });
    }

    it('names the operand dims in the message', () => {
      expectKeOpsError(() => b.call('ComplexAdd', varsFor([4, 6])), 'ERR_FORMULA_DIM', '4 and 6');
      expectKeOpsError(() => b.call('ComplexReal', varsFor([3])), 'ERR_FORMULA_DIM', 'even dim');
    });
  });

  describe('gradients (finite differences, w.r.t. each child)', () => {
    for (const c of COMPLEX_CASES) {
      it(`${caseTitle(c)}`, () => {
        const r = rng(23);
        const vars = varsFor(c.dims);
        const f = b.call(c.name, vars, c.params ?? []);
        const point = pointFor(vars, r);
        for (const v of vars) checkGradient(f, v, point, r);
      });
    }

    it('second order: the derivative formulas are differentiable too', () => {
      const r = rng(43);
      for (const c of COMPLEX_CASES) {
        const vars = varsFor(c.dims);
        const f = b.call(c.name, vars, c.params ?? []);
        const G = b.variable(vars.length, f.dim, 0);
        const point = pointFor([...vars, G], r);
        for (const v of vars) {
          const g = b.grad(f, v, G);
          for (const w of [...vars, G]) checkGradient(g, w, point, r);
        }
      }
    });

    it('through a composite: Re(Σ exp(i x)·z / w), with the same variable in several places', () => {
      const r = rng(5);
      const x = b.variable(0, 3, 0);
      const z = b.variable(1, 6, 1);
      const w = b.variable(2, 2, 2);
      const quotient = b.call('ComplexDivide', [b.call('ComplexMult', [b.call('ComplexExp1j', [x]), z]), w]);
      const f = b.call('ComplexReal', [
        b.call('ComplexSum', [b.call('ComplexAdd', [quotient, b.call('Conj', [z])])]),
      ]);
      const point = pointFor([x, z, w], r);
      for (const v of [x, z, w]) checkGradient(f, v, point, r);
    });
  });

  it('declares linearity for the real-linear ops', () => {
    for (const name of ['ComplexReal', 'ComplexImag', 'Real2Complex', 'Imag2Complex', 'Conj', 'ComplexSum']) {
      expect(OPS.get(name)?.linearity, name).to.equal('all');
    }
    expect(OPS.get('ComplexMult')?.linearity).to.equal('one');
    expect(OPS.get('ComplexDivide')?.linearity).to.equal('first');
    expect(OPS.get('ComplexExp')?.linearity).to.equal(undefined);
  });
});

// ---- (g) BSpline ---------------------------------------------------------------------------------------

describe('ops: BSpline (1.5 g)', () => {
  const bspline = (knots: number[], x: number, order: number): Float64Array => {
    const t = b.variable(0, knots.length, 2);
    const xv = b.variable(1, 1, 0);
    const f = b.call('BSpline', [t, xv], [order]);
    expect(f.dim).to.equal(knots.length - order - 1);
    return evalWith(
      f,
      new Map([
        [t, Float64Array.from(knots)],
        [xv, Float64Array.of(x)],
      ]),
    );
  };
  const uniform = [0, 1, 2, 3, 4, 5];

  it('order 0 is the indicator of the knot interval [t_i, t_{i+1})', () => {
    expectClose(bspline(uniform, 2.5, 0), [0, 0, 1, 0, 0]);
    expectClose(bspline(uniform, 2, 0), [0, 0, 1, 0, 0]);
    expectClose(bspline(uniform, 5, 0), [0, 0, 0, 0, 0]);
    expectClose(bspline(uniform, -1, 0), [0, 0, 0, 0, 0]);
  });

  it('order 1 gives hat functions, order 2 uniform quadratics (hand-computed)', () => {
    expectClose(bspline(uniform, 2.5, 1), [0, 0.5, 0.5, 0]);
    expectClose(bspline(uniform, 1.25, 1), [0.75, 0.25, 0, 0]);
    // u = x − 2 = 0.5 on [2, 3]: (1−u)²/2, (−2u²+2u+1)/2, u²/2.
    expectClose(bspline(uniform, 2.5, 2), [0.125, 0.75, 0.125]);
    expectClose(bspline(uniform, 3.25, 2), [0, 0.28125, 0.6875]);
  });

  it('uses ω = 0 on repeated knots', () => {
    expectClose(bspline([0, 1, 1, 2], 0.5, 1), [0.5, 0]);
    expectClose(bspline([0, 1, 1, 2], 1.5, 1), [0, 0.5]);
    // Double knot at 0: B²_0 = x·(1−x) + (2−x)/2·x, B²_1 = x²/2 on [0, 1].
    expectClose(bspline([0, 0, 1, 2, 2], 0.5, 2), [0.625, 0.125]);
  });

  it('is a partition of unity inside the knot span [t_k, t_{K−1−k}), for random sorted knots', () => {
    const r = rng(3);
    for (const order of [0, 1, 2, 3, 4]) {
      const knots = Array.from(randArray(r, 10, 0, 10)).sort((p, q) => p - q);
      for (let trial = 0; trial < 20; trial++) {
        const x = knots[order] + (knots[knots.length - 1 - order] - knots[order]) * r() * 0.999;
        const values = bspline(knots, x, order);
        expect(values.reduce((s, v) => s + v, 0)).to.be.closeTo(1, 1e-12);
        for (const v of values) expect(v).to.be.at.least(-1e-15);
      }
    }
  });

  it('rejects bad orders, vector x and too few knots', () => {
    const t = b.variable(0, 5, 2);
    expectKeOpsError(() => b.call('BSpline', [t, b.variable(1, 1, 0)], [-1]), 'ERR_FORMULA_PARAM', 'order');
    expectKeOpsError(() => b.call('BSpline', [t, b.variable(1, 2, 0)], [1]), 'ERR_FORMULA_DIM', 'dim 2');
    expectKeOpsError(
      () => b.call('BSpline', [t, b.variable(1, 1, 0)], [4]),
      'ERR_FORMULA_DIM',
      'at least 6 knots',
    );
    expectKeOpsError(() => b.call('BSpline', [t, b.variable(1, 1, 0)], []), 'ERR_FORMULA_PARAM');
  });

  it('is not differentiable: Grad raises ERR_NOT_DIFFERENTIABLE', () => {
    const t = b.variable(0, 5, 2);
    const x = b.variable(1, 1, 0);
    const f = b.call('BSpline', [t, x], [2]);
    expectKeOpsError(() => b.grad(f, x, b.variable(2, f.dim, 0)), 'ERR_NOT_DIFFERENTIABLE', 'BSpline');
    expectKeOpsError(() => b.grad(f, t, b.variable(2, f.dim, 0)), 'ERR_NOT_DIFFERENTIABLE', 'BSpline');
  });
});

// ---- (g) SoftDTW_SqDist ----------------------------------------------------------------------------------

/**
 * Independent soft-DTW (Cuturi & Blondel's formulation: R padded with R(−1,−1) = 0 and +∞ elsewhere, a
 * log-sum-exp softmin), which equals KeOps' definition with plain cumulative sums on the first row/column.
 */
function softDtwByPadding(x: ArrayLike<number>, y: ArrayLike<number>, gamma: number): number {
  const n = x.length;
  const m = y.length;
  const R: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(Infinity));
  R[0][0] = 0;
  const softmin = (vals: number[]): number => {
    const lo = Math.min(...vals);
    return lo - gamma * Math.log(vals.reduce((s, v) => s + Math.exp(-(v - lo) / gamma), 0));
  };
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= m; j++) {
      R[i][j] = (x[i - 1] - y[j - 1]) ** 2 + softmin([R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]]);
    }
  }
  return R[n][m];
}

/** Plain dynamic time warping with squared costs, by memoised recursion. */
function dtw(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const memo = new Map<string, number>();
  const cost = (i: number, j: number): number => {
    const key = `${i},${j}`;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    const c = (x[i] - y[j]) ** 2;
    let v: number;
    if (i === 0 && j === 0) v = c;
    else if (i === 0) v = c + cost(0, j - 1);
    else if (j === 0) v = c + cost(i - 1, 0);
    else v = c + Math.min(cost(i - 1, j - 1), cost(i - 1, j), cost(i, j - 1));
    memo.set(key, v);
    return v;
  };
  return cost(x.length - 1, y.length - 1);
}

describe('ops: SoftDTW_SqDist (1.5 g)', () => {
  const setup = (n: number, m: number) => {
    const x = b.variable(0, n, 0);
    const y = b.variable(1, m, 1);
    const gamma = b.variable(2, 1, 2);
    return { x, y, gamma, f: b.call('SoftDTW_SqDist', [x, y, gamma]) };
  };

  it('matches an independent DP for various lengths and gammas', () => {
    const r = rng(17);
    for (const [n, m] of [
      [1, 1],
      [1, 4],
      [5, 1],
      [3, 3],
      [6, 4],
      [7, 9],
    ]) {
      const { x, y, gamma, f } = setup(n, m);
      expect(f.dim).to.equal(1);
      for (const g of [0.1, 1, 3]) {
        const point = new Map([
          [x, randArray(r, n, -2, 2)],
          [y, randArray(r, m, -2, 2)],
          [gamma, Float64Array.of(g)],
        ]);
        const want = softDtwByPadding(point.get(x) as Float64Array, point.get(y) as Float64Array, g);
        expectClose(evalWith(f, point), [want], 1e-12, 1e-14, `n=${n} m=${m} gamma=${g}`);
      }
    }
  });

  it('tends to plain DTW as gamma → 0 (within (n+m)·γ·log 3)', () => {
    const r = rng(19);
    const { x, y, gamma, f } = setup(8, 6);
    for (let trial = 0; trial < 5; trial++) {
      const xs = randArray(r, 8, -2, 2);
      const ys = randArray(r, 6, -2, 2);
      const g = 1e-6;
      const point = new Map([
        [x, xs],
        [y, ys],
        [gamma, Float64Array.of(g)],
      ]);
      const value = evalWith(f, point)[0];
      const exact = dtw(xs, ys);
      expect(value).to.be.at.most(exact + 1e-12);
      expect(value).to.be.at.least(exact - 14 * g * Math.log(3) - 1e-12);
    }
  });

  it('has exact finite-difference gradients w.r.t. x and y', () => {
    const r = rng(29);
    for (const [n, m] of [
      [1, 1],
      [1, 3],
      [4, 1],
      [5, 4],
      [6, 7],
    ]) {
      const { x, y, gamma, f } = setup(n, m);
      for (const g of [0.2, 1.5]) {
        const point = new Map([
          [x, randArray(r, n, -2, 2)],
          [y, randArray(r, m, -2, 2)],
          [gamma, Float64Array.of(g)],
        ]);
        checkGradient(f, x, point, r);
        checkGradient(f, y, point, r);
      }
    }
  });

  it('differentiates SoftDTW(x, x + c): the gradient sums both sides', () => {
    const r = rng(31);
    const x = b.variable(0, 5, 0);
    const c = b.variable(1, 5, 1);
    const gamma = b.variable(2, 1, 2);
    const f = b.mul(
      b.call('SoftDTW_SqDist', [x, b.add(x, c), gamma]),
      b.call('SoftDTW_SqDist', [c, x, gamma]),
    );
    const point = new Map([
      [x, randArray(r, 5)],
      [c, randArray(r, 5)],
      [gamma, Float64Array.of(0.7)],
    ]);
    checkGradient(f, x, point, r);
    checkGradient(f, c, point, r);
  });

  it('has no gradient with respect to gamma, nor second derivatives', () => {
    const { x, gamma, f } = setup(4, 3);
    expectKeOpsError(() => b.grad(f, gamma, b.variable(3, 1, 0)), 'ERR_NOT_DIFFERENTIABLE', 'gamma');
    const g1 = b.grad(f, x, b.variable(3, 1, 0));
    expectKeOpsError(
      () => b.grad(b.sum(g1), x, b.variable(4, 1, 0)),
      'ERR_NOT_DIFFERENTIABLE',
      'GradSoftDTW_SqDist',
    );
  });

  it('GradSoftDTW_SqDist has dim n+m and matches the vjp of SoftDTW_SqDist', () => {
    const r = rng(37);
    const { x, y, gamma, f } = setup(4, 3);
    const grad = b.call('GradSoftDTW_SqDist', [x, y, gamma]);
    expect(grad.dim).to.equal(7);
    const point = new Map([
      [x, randArray(r, 4)],
      [y, randArray(r, 3)],
      [gamma, Float64Array.of(0.5)],
    ]);
    const one = b.variable(3, 1, 2);
    point.set(one, Float64Array.of(1));
    const full = evalWith(grad, point);
    expectClose(evalWith(b.grad(f, x, one), point), full.slice(0, 4), 1e-14, 1e-15);
    expectClose(evalWith(b.grad(f, y, one), point), full.slice(4), 1e-14, 1e-15);
    // The gradient of R(n−1,m−1) w.r.t. all of (x, y) sums to 0: shifting both sequences changes no cost.
    expect(full.reduce((s, v) => s + v, 0)).to.be.closeTo(0, 1e-12);
  });

  it('rejects a non-scalar gamma and gradient tables too large for a kernel thread', () => {
    expectKeOpsError(
      () => b.call('SoftDTW_SqDist', [b.variable(0, 3, 0), b.variable(1, 3, 1), b.variable(2, 2, 2)]),
      'ERR_FORMULA_DIM',
      'gamma',
    );
    expectKeOpsError(
      () => b.call('GradSoftDTW_SqDist', [b.variable(0, 3, 0), b.variable(1, 3, 1), b.variable(2, 3, 2)]),
      'ERR_FORMULA_DIM',
      'gamma',
    );
    const big = setup(300, 300);
    expect(big.f.dim).to.equal(1);
    expectKeOpsError(() => b.grad(big.f, big.x, b.variable(3, 1, 0)), 'ERR_FORMULA_TOO_LARGE', '300×300');
  });
});

// ---- emission ------------------------------------------------------------------------------------------

describe('ops: complex and special emit C++', () => {
  /** One node per case, on variables 0, 1, ... with fixed random inputs (BSpline and SoftDTW get valid ones). */
  const emitCases = (): Array<{ node: Node; inputs: Float64Array[] }> => {
    const r = rng(41);
    const cases = COMPLEX_CASES.map((c) => {
      const node = b.call(c.name, varsFor(c.dims), c.params ?? []);
      return { node, inputs: c.dims.map((d) => randArray(r, d)) };
    });
    const knots = Float64Array.of(0, 0.5, 1, 1, 2, 3.5, 4);
    for (const [order, x] of [
      [0, 1.7],
      [2, 1.7],
      [3, 0.75],
      [3, 4],
    ]) {
      cases.push({ node: b.call('BSpline', varsFor([7, 1]), [order]), inputs: [knots, Float64Array.of(x)] });
    }
    for (const name of ['SoftDTW_SqDist', 'GradSoftDTW_SqDist']) {
      for (const [n, m] of [
        [1, 1],
        [1, 3],
        [4, 1],
        [5, 4],
      ]) {
        const inputs = [randArray(r, n, -2, 2), randArray(r, m, -2, 2), Float64Array.of(0.3)];
        cases.push({ node: b.call(name, varsFor([n, m, 1])), inputs });
      }
    }
    return cases;
  };

  it('every op emits non-empty code that writes its output and uses only context names', () => {
    for (const { node } of emitCases()) {
      const code = node.op.emit(mockEmitContext(node));
      expect(code.length, node.op.name).to.be.greaterThan(0);
      expect(code, node.op.name).to.contain('out[');
      for (const [open, close] of [
        ['{', '}'],
        ['(', ')'],
        ['[', ']'],
      ]) {
        expect(code.split(open).length, `${node.op.name} ${open}${close}`).to.equal(code.split(close).length);
      }
      // Generic in the scalar type: no hard-coded float/double or float-only functions (KeOps quirks 9.3, 9.4).
      expect(code, node.op.name).to.not.match(/\b(float|double|fminf|expf|logf|std::)\b/);
    }
  });

  it('compiles with g++ (no shadowing) and agrees with the reference in float and double', function () {
    try {
      execFileSync('g++', ['--version'], { stdio: 'ignore' });
    } catch {
      this.skip();
    }
    const cases = emitCases();
    // The prelude is included as a system header: the strict warnings below are about the ops' code only.
    const templates = path.resolve(__dirname, '../cuda-templates');
    const lines = ['#include "keops_prelude.h"', '#include <stdio.h>'];
    cases.forEach(({ node }, k) => {
      const params = node.children.map((_, c) => `const T* arg${c}`).join(', ');
      lines.push(
        `template <typename T> void case${k}(${params}, T* out) { ${node.op.emit(mockEmitContext(node))} }`,
      );
    });
    lines.push('template <typename T> void runAll() {');
    cases.forEach(({ node, inputs }, k) => {
      const decls = inputs.map(
        (v, c) => `T in${c}[] = { ${Array.from(v, (t) => t.toPrecision(17)).join(', ')} };`,
      );
      lines.push(
        `  { ${decls.join(' ')} T out[${node.dim}]; case${k}<T>(${inputs.map((_, c) => `in${c}`).join(', ')}, out); ` +
          `for (int q = 0; q < ${node.dim}; q++) printf("%.17g ", (double)out[q]); printf("\\n"); }`,
      );
    });
    lines.push('}', 'int main() { runAll<double>(); runAll<float>(); return 0; }');
    const dir = mkdtempSync(path.join(tmpdir(), 'keops-cs-'));
    try {
      const src = path.join(dir, 'ops.cpp');
      const exe = path.join(dir, 'ops');
      writeFileSync(src, lines.join('\n'));
      execFileSync('g++', [
        '-std=c++17',
        '-O1',
        '-Wall',
        '-Wextra',
        '-Wshadow',
        '-Werror',
        '-isystem',
        templates,
        src,
        '-o',
        exe,
      ]);
      const rows = execFileSync(exe, { encoding: 'utf8' }).trim().split('\n');
      expect(rows.length).to.equal(2 * cases.length);
      const parse = (row: string): number[] => row.trim().split(/\s+/).map(Number);
      cases.forEach(({ node, inputs }, k) => {
        const values = new Map(node.children.map((c, q) => [c, inputs[q]]));
        const expected = evaluateFormula(node, (v) => values.get(v) as Float64Array);
        expectClose(parse(rows[k]), expected, 1e-12, 1e-13, `${node} (double)`);
        expectClose(parse(rows[cases.length + k]), expected, 1e-4, 1e-5, `${node} (float)`);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

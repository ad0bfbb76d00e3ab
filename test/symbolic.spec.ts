/**
 * Symbolic operators (docs/semantics.md 1.5 h, 3.4): Grad, Diff, GradMatrix, Divergence, Laplacian,
 * TraceOperator, AdjointOperator, SumLinOperator, Factorize, AutoFactorize, and linearity detection, checked
 * against finite differences or direct computation.
 */
import { expect } from 'chai';
import { isKeOpsError, type KeOpsErrorCode } from '../lib/errors';
import { builder as b } from '../lib/formula/builder';
import { varsOf } from '../lib/formula/diff';
import { parseFormula } from '../lib/formula/index';
import { isLinear } from '../lib/formula/linear';
import type { Node } from '../lib/formula/node';
import { MACROS } from '../lib/formula/registry';
import { evalWith, expectClose, randArray, rng } from './util';

const x = b.variable(0, 3, 0);
const y = b.variable(1, 3, 1);
const w = b.variable(2, 2, 1);
const p = b.variable(3, 1, 2);
const A = b.variable(4, 9, 2); // 3×3 matrix
const B = b.variable(5, 6, 2); // 2×3 matrix

const macro = (name: string, ...args: Node[]): Node => {
  const m = MACROS.get(name);
  if (m === undefined) throw new Error(`no macro ${name}`);
  return m.expand(args, [], b);
};
const call = (name: string, ...kids: Node[]): Node => b.call(name, kids);
const exp = (a: Node): Node => call('Exp', a);
const sq = (a: Node): Node => call('Square', a);
const matVec = (M: Node, v: Node): Node => call('MatVecMult', M, v);
/** Exp(-|x-y|²), the Gaussian kernel. */
const gaussian = exp(b.neg(b.sum(sq(b.sub(x, y)))));

function codeOf(fn: () => unknown): KeOpsErrorCode | undefined {
  try {
    fn();
  } catch (e) {
    if (isKeOpsError(e)) return e.code;
    throw e;
  }
  return undefined;
}

function randomPoint(r: () => number, ...formulas: Node[]): Map<Node, Float64Array> {
  const point = new Map<Node, Float64Array>();
  for (const f of formulas) for (const v of varsOf(f)) if (!point.has(v)) point.set(v, randArray(r, v.dim));
  return point;
}

/** J[i][k] = ∂f_i/∂v_k at the point, by central differences. */
function numericJacobian(f: Node, v: Node, point: ReadonlyMap<Node, Float64Array>): number[][] {
  const x0 = point.get(v) as Float64Array;
  const J = Array.from({ length: f.dim }, () => new Array<number>(v.dim).fill(0));
  for (let k = 0; k < v.dim; k++) {
    const h = 1e-5 * Math.max(1, Math.abs(x0[k]));
    const at = (delta: number) => {
      const moved = Float64Array.from(x0);
      moved[k] += delta;
      return evalWith(f, new Map(point).set(v, moved));
    };
    const [plus, minus] = [at(h), at(-h)];
    for (let i = 0; i < f.dim; i++) J[i][k] = (plus[i] - minus[i]) / (2 * h);
  }
  return J;
}

const FD_TOL = 1e-7;

describe('Grad', () => {
  const r = rng(11);
  const f = b.mul(gaussian, b.call('Extract', [x], [0, 2])); // dim 2
  const e = b.variable(6, 2, 0);

  it('equals Jᵀe by finite differences', () => {
    const g = macro('Grad', f, x, e);
    expect(g.dim).to.equal(3);
    const point = randomPoint(r, f, e);
    const J = numericJacobian(f, x, point);
    const E = point.get(e) as Float64Array;
    const want = [0, 1, 2].map((k) => J[0][k] * E[0] + J[1][k] * E[1]);
    expectClose(evalWith(g, point), want, FD_TOL, FD_TOL);
  });

  it('with e omitted, uses a new variable of dim d(f) at the next position, indexed like the other index', () => {
    expect(macro('Grad', f, x)).to.equal(b.grad(f, x, b.variable(2, 2, 1)));
    const fy = b.mul(gaussian, w);
    expect(macro('Grad', fy, y)).to.equal(b.grad(fy, y, b.variable(3, 2, 0)));
  });

  it('with respect to a parameter without e is a clear error', () => {
    expect(codeOf(() => macro('Grad', b.mul(p, x), p))).to.equal('ERR_FORMULA_ARITY');
    expect(macro('Grad', b.mul(p, x), p, b.variable(6, 3, 0)).dim).to.equal(1);
  });

  it('with respect to something other than a variable is an error', () => {
    expect(codeOf(() => macro('Grad', gaussian, b.add(x, y), b.int(1)))).to.equal('ERR_FORMULA_PARAM');
  });

  it('parses, as KeOps writes it', () => {
    const parsed = parseFormula('Grad(Exp(-SqDist(x,y))*b, x, e)', [
      'x=Vi(3)',
      'y=Vj(3)',
      'b=Vj(2)',
      'e=Vi(2)',
    ]);
    const expected = b.grad(b.mul(gaussian, w), x, b.variable(3, 2, 0));
    expect(parsed.node).to.equal(expected);
  });
});

describe('derivative size guard', () => {
  it('refuses nested Grad levels whose formula grows past the limit, quickly', () => {
    const aliases = ['x = Vi(3)', 's = Pm(1)'];
    const start = performance.now();
    const text = 'Grad('.repeat(16) + '-x**2+Sqrt(x)*s' + ',x)'.repeat(16);
    expect(codeOf(() => parseFormula(text, aliases))).to.equal('ERR_FORMULA_TOO_LARGE');
    expect(performance.now() - start).to.be.below(10_000);
    expect(parseFormula('Grad('.repeat(6) + '-x**2+Sqrt(x)*s' + ',x)'.repeat(6), aliases).dim).to.equal(3);
  });

  it('bounds the work of one-gradient-per-component operators (Divergence, GradMatrix)', () => {
    const big = b.variable(0, 60_000, 0);
    expect(codeOf(() => macro('Divergence', big, big))).to.equal('ERR_FORMULA_TOO_LARGE');
    expect(codeOf(() => macro('GradMatrix', b.mul(big, b.variable(1, 1, 1)), b.variable(1, 1, 1)))).to.equal(
      'ERR_FORMULA_TOO_LARGE',
    );
    expect(macro('Divergence', b.variable(0, 1000, 0), b.variable(0, 1000, 0)).toString()).to.equal('1000');
  });
});

describe('Diff', () => {
  const r = rng(12);
  const u = b.variable(6, 3, 0);

  it('equals J·u by finite differences, without the dummy variable', () => {
    for (const f of [b.mul(gaussian, b.mul(x, y)), gaussian, matVec(B, sq(x))]) {
      const d = macro('Diff', f, x, u);
      expect(d.dim).to.equal(f.dim);
      for (const v of varsOf(d)) expect(v.params[2], `${d}`).to.not.equal(-1);
      const point = randomPoint(r, f, u);
      const J = numericJacobian(f, x, point);
      const U = point.get(u) as Float64Array;
      const want = J.map((row) => row.reduce((acc, jk, k) => acc + jk * U[k], 0));
      expectClose(evalWith(d, point), want, FD_TOL, FD_TOL, `${f}`);
    }
  });

  it('of a formula independent of v is Zero(d(f))', () => {
    expect(macro('Diff', b.mul(y, p), x, u).toString()).to.equal('Zero(3)');
  });

  it('requires d(u) = d(v)', () => {
    expect(codeOf(() => macro('Diff', gaussian, x, p))).to.equal('ERR_FORMULA_DIM');
  });
});

describe('GradMatrix', () => {
  it('is the transposed Jacobian: block k is the gradient of f_k (finite differences)', () => {
    const r = rng(13);
    const f = b.mul(matVec(B, sq(x)), gaussian); // dim 2
    const G = macro('GradMatrix', f, x);
    expect(G.dim).to.equal(6);
    const point = randomPoint(r, f);
    const J = numericJacobian(f, x, point);
    const want: number[] = [];
    for (let k = 0; k < 2; k++) for (let l = 0; l < 3; l++) want.push(J[k][l]);
    expectClose(evalWith(G, point), want, FD_TOL, FD_TOL);
  });

  it('of a scalar formula is its gradient', () => {
    expect(macro('GradMatrix', gaussian, x)).to.equal(b.grad(gaussian, x, b.int(1)));
  });
});

describe('Divergence and Laplacian', () => {
  it('Divergence of a linear map is its trace', () => {
    const r = rng(14);
    const div = macro('Divergence', matVec(A, x), x);
    expect(varsOf(div).has(x)).to.equal(false);
    const point = randomPoint(r, matVec(A, x));
    const M = point.get(A) as Float64Array;
    expectClose(evalWith(div, point), [M[0] + M[4] + M[8]], 1e-14);
  });

  it('Divergence of a non-linear field is the trace of its Jacobian (finite differences)', () => {
    const r = rng(15);
    const f = b.mul(b.mul(x, gaussian), b.add(y, sq(x)));
    const point = randomPoint(r, f);
    const J = numericJacobian(f, x, point);
    expectClose(evalWith(macro('Divergence', f, x), point), [J[0][0] + J[1][1] + J[2][2]], FD_TOL, FD_TOL);
  });

  it('Divergence requires d(f) = d(v)', () => {
    expect(codeOf(() => macro('Divergence', gaussian, x))).to.equal('ERR_FORMULA_DIM');
  });

  it('Laplacian of Exp(-|x-y|²) in d=3 is (-6+4|x-y|²) Exp(-|x-y|²)', () => {
    const r = rng(16);
    const lap = macro('Laplacian', gaussian, x);
    expect(lap.dim).to.equal(1);
    for (let trial = 0; trial < 5; trial++) {
      const point = randomPoint(r, gaussian);
      const [X, Y] = [point.get(x) as Float64Array, point.get(y) as Float64Array];
      const r2 = X.reduce((acc, xk, k) => acc + (xk - Y[k]) ** 2, 0);
      expectClose(evalWith(lap, point), [(-6 + 4 * r2) * Math.exp(-r2)], 1e-13, 1e-15);
    }
  });

  it('Laplacian parses, as KeOps writes it', () => {
    const parsed = parseFormula('Laplacian(Exp(-SqDist(x,y)),x)', ['x=Vi(3)', 'y=Vj(3)']);
    const point = randomPoint(rng(17), gaussian);
    expectClose(evalWith(parsed.node, point), evalWith(macro('Laplacian', gaussian, x), point), 1e-14);
  });

  it('Laplacian of a quadratic form x·Ax is the trace of A + Aᵀ', () => {
    const r = rng(18);
    const f = call('Scalprod', x, matVec(A, x));
    const point = randomPoint(r, f);
    const M = point.get(A) as Float64Array;
    expectClose(evalWith(macro('Laplacian', f, x), point), [2 * (M[0] + M[4] + M[8])], 1e-13);
  });

  it('Laplacian requires a scalar formula', () => {
    expect(codeOf(() => macro('Laplacian', x, x))).to.equal('ERR_FORMULA_DIM');
  });
});

describe('linear operators', () => {
  const r = rng(19);
  const linearF = b.add(matVec(A, x), b.mul(b.int(2), x));

  it('TraceOperator of a linear map is its trace, optionally weighted', () => {
    const tr = macro('TraceOperator', linearF, x);
    const point = randomPoint(r, linearF);
    const M = point.get(A) as Float64Array;
    const diag = [M[0] + 2, M[4] + 2, M[8] + 2];
    expectClose(evalWith(tr, point), [diag[0] + diag[1] + diag[2]], 1e-14);
    const v3 = b.variable(6, 3, 1);
    point.set(v3, randArray(r, 3));
    const W = point.get(v3) as Float64Array;
    expectClose(
      evalWith(macro('TraceOperator', linearF, x, v3), point),
      [W[0] * diag[0] + W[1] * diag[1] + W[2] * diag[2]],
      1e-14,
    );
    point.set(p, randArray(r, 1));
    expectClose(
      evalWith(macro('TraceOperator', linearF, x, p), point),
      [(point.get(p) as Float64Array)[0] * (diag[0] + diag[1] + diag[2])],
      1e-14,
    );
  });

  it('TraceOperator(Exp(-p)*x, x) is 3*Exp(-p) (KeOps observed)', () => {
    const tr = macro('TraceOperator', b.mul(exp(b.neg(p)), x), x);
    expectClose(evalWith(tr, new Map([[p, Float64Array.of(0.3)]])), [3 * Math.exp(-0.3)], 1e-14);
  });

  it('AdjointOperator of a linear map is its adjoint: <f(x), u> = <x, f*(u)>', () => {
    const f = matVec(B, x); // dim 2
    const u = b.variable(6, 2, 1);
    const adj = macro('AdjointOperator', f, x, u);
    expect(adj.dim).to.equal(3);
    expect(varsOf(adj).has(x)).to.equal(false);
    const point = randomPoint(r, f, u);
    const [F, U, X, ADJ] = [
      evalWith(f, point),
      point.get(u),
      point.get(x),
      evalWith(adj, point),
    ] as Float64Array[];
    const lhs = F[0] * U[0] + F[1] * U[1];
    const rhs = X[0] * ADJ[0] + X[1] * ADJ[1] + X[2] * ADJ[2];
    expectClose([lhs], [rhs], 1e-13);
  });

  it('SumLinOperator sums the entries of the matrix, weighted left and right', () => {
    const f = matVec(B, x);
    const [wl, wr] = [b.variable(6, 2, 1), b.variable(7, 3, 1)];
    const point = randomPoint(r, f, wl, wr);
    const M = point.get(B) as Float64Array;
    const [WL, WR] = [point.get(wl), point.get(wr)] as Float64Array[];
    let plain = 0;
    let weighted = 0;
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) {
        plain += M[i * 3 + j];
        weighted += WL[i] * M[i * 3 + j] * WR[j];
      }
    }
    expectClose(evalWith(macro('SumLinOperator', f, x), point), [plain], 1e-14);
    expectClose(evalWith(macro('SumLinOperator', f, x, wl, wr), point), [weighted], 1e-14);
  });

  it('reject non-linear and affine formulas with ERR_NOT_LINEAR', () => {
    const u3 = b.variable(6, 3, 1);
    for (const f of [sq(x), b.mul(x, gaussian), b.add(x, y), b.add(x, b.int(1)), y]) {
      expect(
        codeOf(() => macro('TraceOperator', f, x)),
        `${f}`,
      ).to.equal('ERR_NOT_LINEAR');
      expect(
        codeOf(() => macro('AdjointOperator', f, x, u3)),
        `${f}`,
      ).to.equal('ERR_NOT_LINEAR');
      expect(
        codeOf(() => macro('SumLinOperator', f, x)),
        `${f}`,
      ).to.equal('ERR_NOT_LINEAR');
    }
  });

  it('check dimensions', () => {
    expect(codeOf(() => macro('TraceOperator', matVec(B, x), x))).to.equal('ERR_FORMULA_DIM');
    expect(codeOf(() => macro('AdjointOperator', matVec(B, x), x, x))).to.equal('ERR_FORMULA_DIM');
    expect(codeOf(() => macro('SumLinOperator', matVec(B, x), x, x))).to.equal('ERR_FORMULA_DIM');
  });
});

describe('isLinear', () => {
  const cases: Array<[string, Node, boolean]> = [
    ['x', x, true],
    ['2*x', b.mul(b.int(2), x), true],
    ['x*y', b.mul(x, y), true],
    ['x*Exp(-p)', b.mul(x, exp(b.neg(p))), true],
    ['x/y', b.div(x, y), true],
    ['y/x', b.div(y, x), false],
    ['A·x - x', b.sub(matVec(A, x), x), true],
    ['Sum(x)', b.sum(x), true],
    ['(x|y)', call('Scalprod', x, y), true],
    ['Elem(x,1)', b.call('Elem', [x], [1]), true],
    ['Concat(x, Zero(2))', call('Concat', x, b.zero(2)), true],
    ['Concat(x, y)', call('Concat', x, y), false],
    ['x*x', b.mul(x, x), false],
    ['Exp(x)', exp(x), false],
    ['x+1', b.add(x, b.int(1)), false],
    ['y (independent, non-zero)', y, false],
    ['Zero(3)', b.zero(3), true],
    [
      'Factorize(Concat(A·x, A·x), A·x)',
      b.call('Factorize', [call('Concat', matVec(A, x), matVec(A, x)), matVec(A, x)]),
      true,
    ],
    ['Factorize(Concat(x*x, x*x), x*x)', b.call('Factorize', [call('Concat', sq(x), sq(x)), sq(x)]), false],
  ];
  for (const [text, f, want] of cases) it(`${text}: ${want}`, () => expect(isLinear(f, x)).to.equal(want));
});

describe('Factorize and AutoFactorize', () => {
  const r = rng(20);
  const g = b.sub(x, y);
  const f = b.mul(exp(b.neg(b.sum(sq(g)))), g); // g used twice

  it('Factorize(f,g) keeps the value and gradient of f', () => {
    const fact = b.call('Factorize', [f, g]);
    expect(fact.op.name).to.equal('Factorize');
    expect(fact.dim).to.equal(3);
    const point = randomPoint(r, f);
    expectClose(evalWith(fact, point), evalWith(f, point), 0);
    const e = b.variable(6, 3, 0);
    point.set(e, randArray(r, 3));
    expectClose(evalWith(b.grad(fact, x, e), point), evalWith(b.grad(f, x, e), point), 1e-15);
  });

  it('Factorize(f,g) prints and re-parses to the same node', () => {
    const fact = b.call('Factorize', [f, g]);
    expect(parseFormula(fact.toString()).node).to.equal(fact);
  });

  it('Factorize is a no-op for a leaf or a sub-formula used once', () => {
    expect(b.call('Factorize', [f, x])).to.equal(f);
    expect(b.call('Factorize', [f, sq(g)])).to.equal(f);
    expect(b.call('Factorize', [f, exp(y)])).to.equal(f);
  });

  it('AutoFactorize marks the largest shared sub-formulas, keeping the value', () => {
    expect(macro('AutoFactorize', f)).to.equal(b.call('Factorize', [f, g]));
    // h = Exp(-|g|²) is used twice, and g is used inside it and once more: both are factorized, h first.
    const h = exp(b.neg(b.sum(sq(g))));
    const f2 = b.add(b.mul(h, g), b.mul(h, y));
    const auto = macro('AutoFactorize', f2);
    expect(auto).to.equal(b.call('Factorize', [b.call('Factorize', [f2, h]), g]));
    const point = randomPoint(r, f2);
    expectClose(evalWith(auto, point), evalWith(f2, point), 0);
    expect(macro('AutoFactorize', gaussian)).to.equal(gaussian);
  });

  it('AutoFactorize of a large derivative is quick, bounded and keeps the value', () => {
    const aliases = ['x = Vi(3)', 's = Pm(1)'];
    const text = 'Grad('.repeat(8) + '-x**2+Sqrt(x)*s' + ',x)'.repeat(8);
    const plain = parseFormula(text, aliases).node;
    const auto = parseFormula(`AutoFactorize(${text})`, aliases).node;
    let depth = 0;
    for (let n = auto; n.op.name === 'Factorize'; n = n.children[0]) depth++;
    expect(depth).to.be.within(2, 100);
    const point = randomPoint(rng(21), plain);
    for (const [v, value] of point)
      point.set(
        v,
        value.map((t) => Math.abs(t) + 0.5),
      );
    expectClose(evalWith(auto, point), evalWith(plain, point), 0);
  });

  it('Factorize emits a copy of f', () => {
    const fact = b.call('Factorize', [f, g]);
    let n = 0;
    const code = fact.op.emit({
      node: fact,
      out: 'out',
      args: ['a0', 'a1'],
      argDims: [3, 3],
      dim: 3,
      params: [],
      T: 'double',
      lit: (v) => String(v),
      fresh: (hint) => `${hint}_${n++}`,
    });
    expect(code).to.contain('out[k_0] = a0[k_0]');
  });
});

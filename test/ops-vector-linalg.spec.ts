/** Vector ops (1.5 c), norm macros (1.5 d), small linear algebra (1.5 e): dims, errors, values, gradients. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';
import { builder as b } from '../lib/formula/builder';
import type { Node, ParamValue } from '../lib/formula/node';
import type { EmitContext, MacroDef } from '../lib/formula/opdef';
import { ratToNumber, type Rational } from '../lib/formula/rational';
import { OPS } from '../lib/formula/registry';
import * as norms from '../lib/formula/macros/norms';
import { checkGradient, evalWith, expectClose, expectKeOpsError, randArray, rng } from './util';

// ---------------------------------------------------------------------------------------------------------
// Helpers

const call = (name: string, children: readonly Node[], params: readonly ParamValue[] = []): Node =>
  b.call(name, children, params);

/** Distinct variables x0, x1, ... of the given dims (category i), with random values. */
function vars(r: () => number, ...dims: number[]): { vs: Node[]; point: Map<Node, Float64Array> } {
  const vs = dims.map((d, k) => b.variable(k, d, 0));
  const point = new Map(vs.map((v) => [v, randArray(r, v.dim)] as [Node, Float64Array]));
  return { vs, point };
}

function valueOf(f: Node, values: readonly (readonly number[] | Float64Array)[]): Float64Array {
  const point = new Map<Node, Float64Array>();
  values.forEach((v, k) => point.set(b.variable(k, v.length, 0), Float64Array.from(v)));
  return evalWith(f, point);
}

/** Checks the symbolic gradient of f with respect to every one of its variables. */
function checkAllGradients(
  f: Node,
  vs: readonly Node[],
  point: Map<Node, Float64Array>,
  r: () => number,
): void {
  for (const v of vs) checkGradient(f, v, point, r);
}

/** Row-major multi-indices of a shape, last axis fastest. */
function* multiIndices(shape: readonly number[]): Generator<number[]> {
  const idx = new Array<number>(shape.length).fill(0);
  if (shape.some((s) => s === 0)) return;
  for (;;) {
    yield idx.slice();
    let ax = shape.length - 1;
    while (ax >= 0 && ++idx[ax] === shape[ax]) idx[ax--] = 0;
    if (ax < 0) return;
  }
}

const flatIndex = (idx: readonly number[], shape: readonly number[]): number =>
  idx.reduce((acc, i, k) => acc * shape[k] + i, 0);

/**
 * numpy.tensordot(A.reshape(dimsA), B.reshape(dimsB), (contA, contB)) followed by the KeOps permutation
 * (result axis j goes to output axis perm[j]), by brute force over output and contracted multi-indices.
 */
function naiveTensorDot(
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  dimsA: number[],
  dimsB: number[],
  contA: number[],
  contB: number[],
  perm?: number[],
): number[] {
  const keptA = dimsA.map((_, a) => a).filter((a) => !contA.includes(a));
  const keptB = dimsB.map((_, a) => a).filter((a) => !contB.includes(a));
  const resShape = [...keptA.map((a) => dimsA[a]), ...keptB.map((a) => dimsB[a])];
  const P = perm ?? resShape.map((_, j) => j);
  const outShape: number[] = [];
  P.forEach((p, j) => (outShape[p] = resShape[j]));
  const out: number[] = [];
  for (const o of multiIndices(outShape)) {
    const res = P.map((p) => o[p]);
    let s = 0;
    for (const c of multiIndices(contA.map((a) => dimsA[a]))) {
      const ia: number[] = [];
      const ib: number[] = [];
      keptA.forEach((a, q) => (ia[a] = res[q]));
      keptB.forEach((a, q) => (ib[a] = res[keptA.length + q]));
      contA.forEach((a, t) => (ia[a] = c[t]));
      contB.forEach((a, t) => (ib[a] = c[t]));
      s += A[flatIndex(ia, dimsA)] * B[flatIndex(ib, dimsB)];
    }
    out.push(s);
  }
  return out;
}

const iota = (n: number, start = 0): number[] => Array.from({ length: n }, (_, k) => start + k);

// ---------------------------------------------------------------------------------------------------------
// (c) Max, Min, ArgMax, ArgMin

describe('ops 1.5 (c): Max, Min, ArgMax, ArgMin', () => {
  it('have dim 1 and take the first extremum (strict comparison)', () => {
    const x = b.variable(0, 5, 0);
    for (const name of ['Max', 'Min', 'ArgMax', 'ArgMin']) expect(call(name, [x]).dim).to.equal(1);
    const v = [3, -1, 7, 7, -1];
    expect(Array.from(valueOf(call('Max', [x]), [v]))).to.deep.equal([7]);
    expect(Array.from(valueOf(call('Min', [x]), [v]))).to.deep.equal([-1]);
    expect(Array.from(valueOf(call('ArgMax', [x]), [v]))).to.deep.equal([2]);
    expect(Array.from(valueOf(call('ArgMin', [x]), [v]))).to.deep.equal([1]);
    expect(Array.from(valueOf(call('ArgMax', [x]), [[4, 4, 4, 4, 4]]))).to.deep.equal([0]);
    const s = b.variable(0, 1, 0);
    expect(Array.from(valueOf(call('ArgMin', [s]), [[-2]]))).to.deep.equal([0]);
    expect(Array.from(valueOf(call('Max', [s]), [[-2]]))).to.deep.equal([-2]);
  });

  it('match a direct computation on random vectors', () => {
    const r = rng(11);
    const x = b.variable(0, 9, 0);
    for (let trial = 0; trial < 20; trial++) {
      const v = Array.from(randArray(r, 9));
      const mx = Math.max(...v);
      const mn = Math.min(...v);
      expect(valueOf(call('Max', [x]), [v])[0]).to.equal(mx);
      expect(valueOf(call('Min', [x]), [v])[0]).to.equal(mn);
      expect(valueOf(call('ArgMax', [x]), [v])[0]).to.equal(v.indexOf(mx));
      expect(valueOf(call('ArgMin', [x]), [v])[0]).to.equal(v.indexOf(mn));
    }
  });

  it('have the right gradients: Max/Min through their argument, ArgMax/ArgMin zero', () => {
    const r = rng(12);
    const { vs, point } = vars(r, 6, 6);
    const [x, y] = vs;
    for (const name of ['Max', 'Min']) {
      checkAllGradients(call(name, [x]), [x], point, r);
      checkAllGradients(call(name, [b.mul(x, y)]), [x, y], point, r);
    }
    for (const name of ['ArgMax', 'ArgMin']) {
      const g = b.grad(call(name, [x]), x, b.variable(5, 1, 0));
      point.set(b.variable(5, 1, 0), Float64Array.of(1.5));
      expect(Array.from(evalWith(g, point))).to.deep.equal(new Array(6).fill(0));
    }
  });

  it('send the gradient of Max to the first maximum on ties', () => {
    const x = b.variable(0, 4, 0);
    const e = b.variable(1, 1, 0);
    const g = b.grad(call('Max', [x]), x, e);
    expect(Array.from(valueOf(g, [[1, 5, 5, 2], [3]]))).to.deep.equal([0, 3, 0, 0]);
  });

  it('reject parameters and wrong arity', () => {
    const x = b.variable(0, 3, 0);
    expectKeOpsError(() => call('Max', [x], [1]), 'ERR_FORMULA_PARAM', 'Max');
    expectKeOpsError(() => call('ArgMin', [x, x]), 'ERR_FORMULA_ARITY', 'ArgMin');
  });
});

// ---------------------------------------------------------------------------------------------------------
// (c) Elem, ElemT, Extract, ExtractT, Concat, OneHot

describe('ops 1.5 (c): Elem, ElemT, Extract, ExtractT, Concat', () => {
  it('compute the right dims and values', () => {
    const x = b.variable(0, 5, 0);
    const s = b.variable(0, 1, 0);
    const v = [10, 11, 12, 13, 14];
    expect(call('Elem', [x], [3]).dim).to.equal(1);
    expect(Array.from(valueOf(call('Elem', [x], [3]), [v]))).to.deep.equal([13]);
    expect(Array.from(valueOf(call('Elem', [x], [0]), [v]))).to.deep.equal([10]);
    expect(call('ElemT', [s], [4, 2]).dim).to.equal(4);
    expect(Array.from(valueOf(call('ElemT', [s], [4, 2]), [[7]]))).to.deep.equal([0, 0, 7, 0]);
    expect(call('Extract', [x], [1, 3]).dim).to.equal(3);
    expect(Array.from(valueOf(call('Extract', [x], [1, 3]), [v]))).to.deep.equal([11, 12, 13]);
    expect(Array.from(valueOf(call('Extract', [x], [0, 5]), [v]))).to.deep.equal(v);
    expect(Array.from(valueOf(call('Extract', [x], [4, 1]), [v]))).to.deep.equal([14]);
    expect(call('ExtractT', [x], [2, 8]).dim).to.equal(8);
    expect(Array.from(valueOf(call('ExtractT', [x], [2, 8]), [v]))).to.deep.equal([
      0, 0, 10, 11, 12, 13, 14, 0,
    ]);
    const y = b.variable(1, 2, 1);
    const point = new Map([
      [x, Float64Array.from(v)],
      [y, Float64Array.of(-1, -2)],
    ]);
    expect(call('Concat', [x, y]).dim).to.equal(7);
    expect(Array.from(evalWith(call('Concat', [x, y]), point))).to.deep.equal([...v, -1, -2]);
    expect(Array.from(evalWith(call('Concat', [y, x]), point))).to.deep.equal([-1, -2, ...v]);
  });

  it('reject bad indices (ERR_FORMULA_PARAM) and non-scalar operands (ERR_FORMULA_DIM)', () => {
    const x = b.variable(0, 5, 0);
    const s = b.variable(0, 1, 0);
    expectKeOpsError(() => call('Elem', [x], [5]), 'ERR_FORMULA_PARAM', 'Elem', '5');
    expectKeOpsError(() => call('Elem', [x], [-1]), 'ERR_FORMULA_PARAM', 'Elem');
    expectKeOpsError(() => call('Elem', [x], []), 'ERR_FORMULA_PARAM', 'Elem');
    expectKeOpsError(() => call('ElemT', [x], [5, 1]), 'ERR_FORMULA_DIM', 'ElemT', 'scalar');
    expectKeOpsError(() => call('ElemT', [s], [3, 3]), 'ERR_FORMULA_PARAM', 'ElemT');
    expectKeOpsError(() => call('ElemT', [s], [0, 0]), 'ERR_FORMULA_PARAM', 'ElemT');
    expectKeOpsError(() => call('Extract', [x], [3, 3]), 'ERR_FORMULA_PARAM', 'Extract', 'dim 5');
    expectKeOpsError(() => call('Extract', [x], [-1, 2]), 'ERR_FORMULA_PARAM', 'Extract');
    expectKeOpsError(() => call('Extract', [x], [0, 0]), 'ERR_FORMULA_PARAM', 'Extract');
    expectKeOpsError(() => call('ExtractT', [x], [4, 8]), 'ERR_FORMULA_PARAM', 'ExtractT', 'dim 5');
    expectKeOpsError(() => call('ExtractT', [x], [-1, 8]), 'ERR_FORMULA_PARAM', 'ExtractT');
    expectKeOpsError(() => call('ExtractT', [x], [0, 0]), 'ERR_FORMULA_PARAM', 'ExtractT');
    expectKeOpsError(() => call('Concat', [x]), 'ERR_FORMULA_ARITY', 'Concat');
    expectKeOpsError(() => call('Concat', [x, b.variable(1, 2 ** 20, 0)]), 'ERR_FORMULA_DIM', 'Concat');
  });

  it('have gradients matching finite differences, with respect to each child', () => {
    const r = rng(13);
    const { vs, point } = vars(r, 5, 1, 3, 5);
    const [x, s, y, z] = vs;
    checkAllGradients(call('Elem', [b.mul(x, z)], [2]), [x, z], point, r);
    checkAllGradients(call('ElemT', [b.mul(s, call('Elem', [y], [1]))], [4, 3]), [s, y], point, r);
    checkAllGradients(call('Extract', [b.mul(x, z)], [1, 3]), [x, z], point, r);
    checkAllGradients(call('ExtractT', [b.mul(y, s)], [1, 6]), [y, s], point, r);
    checkAllGradients(call('Concat', [b.mul(x, z), b.mul(y, s)]), [x, y, z, s], point, r);
    checkAllGradients(call('Concat', [y, y]), [y], point, r);
  });

  it('are linear in all their children', () => {
    for (const name of ['Elem', 'ElemT', 'Extract', 'ExtractT', 'Concat']) {
      expect(OPS.get(name)?.linearity, name).to.equal('all');
    }
  });
});

describe('ops 1.5 (c): OneHot', () => {
  const s = b.variable(0, 1, 0);
  const oneHot = (f: number, D: number): number[] => Array.from(valueOf(call('OneHot', [s], [D]), [[f]]));

  it('is the unit vector at the rounded index', () => {
    expect(call('OneHot', [s], [4]).dim).to.equal(4);
    expect(oneHot(0, 4)).to.deep.equal([1, 0, 0, 0]);
    expect(oneHot(2, 4)).to.deep.equal([0, 0, 1, 0]);
    expect(oneHot(2.4, 4)).to.deep.equal([0, 0, 1, 0]);
    expect(oneHot(1.5, 4)).to.deep.equal([0, 0, 1, 0]); // round half up, as KeOps' (int)(f+.5)
    expect(oneHot(3.49, 4)).to.deep.equal([0, 0, 0, 1]);
    expect(oneHot(-0.4, 4)).to.deep.equal([1, 0, 0, 0]);
  });

  it('is the zero vector for an index outside [0, D) (KeOps writes out of bounds)', () => {
    for (const f of [-1, -0.7, 4, 3.5, 100, -1e30, 1e30, NaN, Infinity, -Infinity]) {
      expect(oneHot(f, 4), String(f)).to.deep.equal([0, 0, 0, 0]);
    }
  });

  it('has zero gradient and checks its operand and D', () => {
    const e = b.variable(1, 3, 0);
    const g = b.grad(call('OneHot', [s], [3]), s, e);
    expect(Array.from(valueOf(g, [[1], [1, 2, 3]]))).to.deep.equal([0]);
    expectKeOpsError(() => call('OneHot', [b.variable(0, 2, 0)], [3]), 'ERR_FORMULA_DIM', 'OneHot', 'scalar');
    expectKeOpsError(() => call('OneHot', [s], [0]), 'ERR_FORMULA_PARAM', 'OneHot');
    expectKeOpsError(() => call('OneHot', [s], []), 'ERR_FORMULA_PARAM', 'OneHot');
  });
});

// ---------------------------------------------------------------------------------------------------------
// (e) MatVecMult, VecMatMult, TensorProd

describe('ops 1.5 (e): MatVecMult, VecMatMult, TensorProd (row-major)', () => {
  const A = [1, 2, 3, 4, 5, 6]; // [[1,2,3],[4,5,6]] as 2×3, or [[1,2],[3,4],[5,6]] as 3×2

  it('compute row-major products', () => {
    const a = b.variable(0, 6, 0);
    const v3 = b.variable(1, 3, 0);
    const v2 = b.variable(1, 2, 0);
    expect(call('MatVecMult', [a, v3]).dim).to.equal(2);
    expect(Array.from(valueOf(call('MatVecMult', [a, v3]), [A, [1, 0, -1]]))).to.deep.equal([-2, -2]);
    expect(call('MatVecMult', [a, v2]).dim).to.equal(3);
    expect(Array.from(valueOf(call('MatVecMult', [a, v2]), [A, [1, 1]]))).to.deep.equal([3, 7, 11]);
    expect(call('VecMatMult', [v2, a]).dim).to.equal(3);
    expect(Array.from(valueOf(call('VecMatMult', [v2, a]), [A, [1, -1]]))).to.deep.equal([-3, -3, -3]);
    expect(call('VecMatMult', [v3, a]).dim).to.equal(2);
    expect(Array.from(valueOf(call('VecMatMult', [v3, a]), [A, [1, 0, 2]]))).to.deep.equal([11, 14]);
    const f = b.variable(0, 2, 0);
    const g = b.variable(1, 3, 0);
    expect(call('TensorProd', [f, g]).dim).to.equal(6);
    expect(
      Array.from(
        valueOf(call('TensorProd', [f, g]), [
          [1, 2],
          [3, 4, 5],
        ]),
      ),
    ).to.deep.equal([3, 4, 5, 6, 8, 10]);
  });

  it('match direct loops on random inputs', () => {
    const r = rng(21);
    const [n, p] = [4, 3];
    const Av = randArray(r, n * p);
    const u = randArray(r, p);
    const w = randArray(r, n);
    const mv = iota(n).map((i) => iota(p).reduce((s, k) => s + Av[i * p + k] * u[k], 0));
    const vm = iota(p).map((j) => iota(n).reduce((s, k) => s + w[k] * Av[k * p + j], 0));
    const a = b.variable(0, n * p, 0);
    expectClose(valueOf(call('MatVecMult', [a, b.variable(1, p, 0)]), [Av, u]), mv);
    expectClose(valueOf(call('VecMatMult', [b.variable(1, n, 0), a]), [Av, w]), vm);
  });

  it('reject incompatible dims', () => {
    const a = b.variable(0, 7, 0);
    const v = b.variable(1, 3, 0);
    expectKeOpsError(() => call('MatVecMult', [a, v]), 'ERR_FORMULA_DIM', 'MatVecMult', '7', '3');
    expectKeOpsError(() => call('VecMatMult', [v, a]), 'ERR_FORMULA_DIM', 'VecMatMult', '7', '3');
    const big = b.variable(2, 2 ** 11, 0);
    expectKeOpsError(() => call('TensorProd', [big, big]), 'ERR_FORMULA_DIM', 'TensorProd');
  });

  it('have gradients matching finite differences, with respect to each child', () => {
    const r = rng(22);
    const { vs, point } = vars(r, 12, 3, 4, 3);
    const [a, u, w, z] = vs;
    checkAllGradients(call('MatVecMult', [a, u]), [a, u], point, r);
    checkAllGradients(call('MatVecMult', [a, b.mul(u, z)]), [a, u, z], point, r);
    checkAllGradients(call('VecMatMult', [w, a]), [w, a], point, r);
    checkAllGradients(call('TensorProd', [w, u]), [w, u], point, r);
    checkAllGradients(call('TensorProd', [u, u]), [u], point, r);
    checkAllGradients(call('MatVecMult', [call('TensorProd', [w, z]), u]), [w, z, u], point, r);
  });

  it('are linear in one child', () => {
    for (const name of ['MatVecMult', 'VecMatMult', 'TensorProd', 'TensorDot', 'Kron']) {
      expect(OPS.get(name)?.linearity, name).to.equal('one');
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// (e) TensorDot and Kron

interface TensorDotCase {
  dimsA: number[];
  dimsB: number[];
  contA: number[];
  contB: number[];
  perm?: number[];
}

const TENSORDOT_CASES: TensorDotCase[] = [
  { dimsA: [2, 3], dimsB: [3, 4], contA: [1], contB: [0] }, // matrix product
  { dimsA: [2, 3], dimsB: [3, 4], contA: [1], contB: [0], perm: [1, 0] }, // its transpose
  { dimsA: [3], dimsB: [3], contA: [0], contB: [0] }, // dot product (scalar result)
  { dimsA: [2, 3], dimsB: [4], contA: [], contB: [] }, // outer product
  { dimsA: [2, 3], dimsB: [4], contA: [], contB: [], perm: [2, 0, 1] },
  { dimsA: [2, 3, 4], dimsB: [4, 3, 5], contA: [2, 1], contB: [0, 1] },
  { dimsA: [2, 3, 4], dimsB: [3, 2, 5], contA: [1, 0], contB: [0, 1], perm: [1, 0] },
  { dimsA: [2, 2, 2], dimsB: [2, 2], contA: [2], contB: [0] },
  { dimsA: [3, 1, 2], dimsB: [2, 1], contA: [2], contB: [0], perm: [2, 0, 1] },
  // The case from KeOps' own test (shapes (2,3,2,2,4) and (2,4,2,3,2,3), three contractions, a permutation).
  {
    dimsA: [2, 3, 2, 2, 4],
    dimsB: [2, 4, 2, 3, 2, 3],
    contA: [4, 0, 2],
    contB: [1, 4, 2],
    perm: [4, 3, 2, 0, 1],
  },
];

const describeCase = (c: TensorDotCase): string =>
  `dims ${JSON.stringify(c.dimsA)}·${JSON.stringify(c.dimsB)} cont ${JSON.stringify(c.contA)}/` +
  `${JSON.stringify(c.contB)}${c.perm ? ` perm ${JSON.stringify(c.perm)}` : ''}`;

function tensorDotNode(x: Node, y: Node, c: TensorDotCase): Node {
  const params: ParamValue[] = [c.dimsA, c.dimsB, c.contA, c.contB];
  if (c.perm) params.push(c.perm);
  return call('TensorDot', [x, y], params);
}

const prod = (xs: readonly number[]): number => xs.reduce((p, x) => p * x, 1);

describe('ops 1.5 (e): TensorDot', () => {
  it('reproduces the numpy.tensordot documentation example', () => {
    // a = arange(60).reshape(3,4,5), b = arange(24).reshape(4,3,2), tensordot(a, b, ([1,0],[0,1])).
    const x = b.variable(0, 60, 0);
    const y = b.variable(1, 24, 0);
    const f = call(
      'TensorDot',
      [x, y],
      [
        [3, 4, 5],
        [4, 3, 2],
        [1, 0],
        [0, 1],
      ],
    );
    expect(f.dim).to.equal(10);
    const expected = [4400, 4730, 4532, 4874, 4664, 5018, 4796, 5162, 4928, 5306];
    expect(Array.from(valueOf(f, [iota(60), iota(24)]))).to.deep.equal(expected);
  });

  it('is a matrix product, and its transpose with permute [1,0]', () => {
    const x = b.variable(0, 4, 0);
    const y = b.variable(1, 4, 0);
    const X = [1, 2, 3, 4]; // [[1,2],[3,4]]
    const Y = [5, 6, 7, 8]; // [[5,6],[7,8]]
    const XY = [19, 22, 43, 50];
    expect(Array.from(valueOf(call('TensorDot', [x, y], [[2, 2], [2, 2], [1], [0]]), [X, Y]))).to.deep.equal(
      XY,
    );
    const t = call('TensorDot', [x, y], [[2, 2], [2, 2], [1], [0], [1, 0]]);
    expect(Array.from(valueOf(t, [X, Y]))).to.deep.equal([19, 43, 22, 50]);
    const id = call('TensorDot', [x, y], [[2, 2], [2, 2], [1], [0], [0, 1]]);
    expect(Array.from(valueOf(id, [X, Y]))).to.deep.equal(XY);
  });

  it('matches a brute-force tensordot on random inputs, with and without permutation', () => {
    const r = rng(31);
    for (const c of TENSORDOT_CASES) {
      const [da, db] = [prod(c.dimsA), prod(c.dimsB)];
      const x = b.variable(0, da, 0);
      const y = b.variable(1, db, 0);
      const f = tensorDotNode(x, y, c);
      const A = randArray(r, da);
      const B = randArray(r, db);
      const expected = naiveTensorDot(A, B, c.dimsA, c.dimsB, c.contA, c.contB, c.perm);
      expect(f.dim, describeCase(c)).to.equal(expected.length);
      expectClose(valueOf(f, [A, B]), expected, 1e-12, 1e-14, describeCase(c));
    }
  });

  it('has gradients matching finite differences, with respect to each operand', () => {
    const r = rng(32);
    for (const c of TENSORDOT_CASES) {
      const { vs, point } = vars(r, prod(c.dimsA), prod(c.dimsB));
      const f = tensorDotNode(vs[0], vs[1], c);
      checkAllGradients(f, vs, point, r);
    }
    // Same operand on both sides, and a composite operand.
    const { vs, point } = vars(r, 6, 6);
    const [x, z] = vs;
    checkAllGradients(call('TensorDot', [x, x], [[2, 3], [3, 2], [1], [0], [1, 0]]), [x], point, r);
    checkAllGradients(call('TensorDot', [b.mul(x, z), x], [[2, 3], [2, 3], [0], [0]]), [x, z], point, r);
  });

  it('has second derivatives matching finite differences (the adjoint of the adjoint)', () => {
    const r = rng(33);
    const { vs, point } = vars(r, 12, 6);
    const [x, y] = vs;
    // f(x,y) = TensorDot over shapes (2,3,2)·(3,2), contract axis 1 with 0, permuted; then <grad_x f, e'>.
    const f = call('TensorDot', [x, y], [[2, 3, 2], [3, 2], [1], [0], [2, 0, 1]]);
    const gx = b.grad(f, x, b.variable(3, f.dim, 0));
    point.set(b.variable(3, f.dim, 0), randArray(r, f.dim));
    checkAllGradients(gx, [y], point, r);
  });

  it('rejects bad parameter lists (ERR_FORMULA_PARAM) and mismatched dims (ERR_FORMULA_DIM)', () => {
    const x = b.variable(0, 6, 0);
    const y = b.variable(1, 12, 0);
    const td = (...params: ParamValue[]): Node => call('TensorDot', [x, y], params);
    expect(td([2, 3], [3, 4], [1], [0]).dim).to.equal(8);
    expectKeOpsError(() => td([2, 4], [3, 4], [1], [0]), 'ERR_FORMULA_DIM', 'dimsf', 'dim 6');
    expectKeOpsError(() => td([2, 3], [3, 5], [1], [0]), 'ERR_FORMULA_DIM', 'dimsg', 'dim 12');
    expectKeOpsError(() => td([2, 3], [4, 3], [1], [0]), 'ERR_FORMULA_DIM', 'different sizes');
    expectKeOpsError(() => td([2, 3], [3, 4], [2], [0]), 'ERR_FORMULA_PARAM', 'contf', 'out of range');
    expectKeOpsError(() => td([2, 3], [3, 4], [1], [-1]), 'ERR_FORMULA_PARAM', 'contg');
    expectKeOpsError(() => td([2, 3], [3, 4], [1, 1], [0, 0]), 'ERR_FORMULA_PARAM', 'twice');
    expectKeOpsError(() => td([2, 3], [3, 4], [1], []), 'ERR_FORMULA_PARAM', 'same length');
    expectKeOpsError(() => td([2, 3], [3, 4], [1], [0], [0, 0]), 'ERR_FORMULA_PARAM', 'permutation');
    expectKeOpsError(() => td([2, 3], [3, 4], [1], [0], [0, 1, 2]), 'ERR_FORMULA_PARAM', 'permutation');
    expectKeOpsError(() => td([2, 3], [3, 4], [1], [0], [1, 2]), 'ERR_FORMULA_PARAM', 'permutation');
    expectKeOpsError(() => td([6, 0], [3, 4], [], []), 'ERR_FORMULA_PARAM', 'at least 1');
    expectKeOpsError(() => td([-2, -3], [3, 4], [], []), 'ERR_FORMULA_PARAM', 'at least 1');
    expectKeOpsError(() => td([2, 3], [3, 4], [1]), 'ERR_FORMULA_PARAM', 'TensorDot');
    expectKeOpsError(() => td([2, 3], [3, 4], 1, [0]), 'ERR_FORMULA_PARAM', 'TensorDot');
    expectKeOpsError(() => td(new Array(20).fill(1).concat([6]), [12], [], []), 'ERR_FORMULA_PARAM', 'axes');
    const big = b.variable(2, 2 ** 11, 0);
    expectKeOpsError(
      () => call('TensorDot', [big, big], [[2 ** 11], [2 ** 11], [], []]),
      'ERR_FORMULA_DIM',
      'limit',
    );
  });
});

describe('ops 1.5 (e): Kron', () => {
  it('is np.kron of the reshaped operands', () => {
    const x = b.variable(0, 4, 0);
    const y = b.variable(1, 4, 0);
    const k = call(
      'Kron',
      [x, y],
      [
        [2, 2],
        [2, 2],
      ],
    );
    expect(k.dim).to.equal(16);
    // np.kron([[1,2],[3,4]], [[0,5],[6,7]])
    const expected = [0, 5, 0, 10, 6, 7, 12, 14, 0, 15, 0, 20, 18, 21, 24, 28];
    expect(
      Array.from(
        valueOf(k, [
          [1, 2, 3, 4],
          [0, 5, 6, 7],
        ]),
      ),
    ).to.deep.equal(expected);
    // 1-D: np.kron([1,10,100], [1,2]) = [1,2,10,20,100,200]
    const u = b.variable(0, 3, 0);
    const v = b.variable(1, 2, 0);
    expect(
      Array.from(
        valueOf(call('Kron', [u, v], [[3], [2]]), [
          [1, 10, 100],
          [1, 2],
        ]),
      ),
    ).to.deep.equal([1, 2, 10, 20, 100, 200]);
    // Different ranks, as numpy (leading 1s): np.kron([1,2], [[1,2],[3,4]]) = [[1,2,2,4],[3,4,6,8]]
    const m = b.variable(1, 4, 0);
    const w = b.variable(0, 2, 0);
    expect(
      Array.from(
        valueOf(call('Kron', [w, m], [[2], [2, 2]]), [
          [1, 2],
          [1, 2, 3, 4],
        ]),
      ),
    ).to.deep.equal([1, 2, 2, 4, 3, 4, 6, 8]);
  });

  it('matches a direct Kronecker product of 3-D tensors', () => {
    const r = rng(41);
    const [da, db] = [
      [2, 1, 3],
      [2, 3, 2],
    ];
    const A = randArray(r, prod(da));
    const B = randArray(r, prod(db));
    const outShape = da.map((s, k) => s * db[k]);
    const expected = new Array<number>(prod(outShape)).fill(0);
    for (const ia of multiIndices(da)) {
      for (const ib of multiIndices(db)) {
        const io = ia.map((i, k) => i * db[k] + ib[k]);
        expected[flatIndex(io, outShape)] = A[flatIndex(ia, da)] * B[flatIndex(ib, db)];
      }
    }
    const k = call('Kron', [b.variable(0, A.length, 0), b.variable(1, B.length, 0)], [da, db]);
    expectClose(valueOf(k, [A, B]), expected);
  });

  it('has gradients matching finite differences', () => {
    const r = rng(42);
    const { vs, point } = vars(r, 6, 4, 2);
    const [x, y, z] = vs;
    checkAllGradients(
      call(
        'Kron',
        [x, y],
        [
          [2, 3],
          [2, 2],
        ],
      ),
      [x, y],
      point,
      r,
    );
    checkAllGradients(call('Kron', [z, y], [[2], [2, 2]]), [z, y], point, r);
    checkAllGradients(
      call(
        'Kron',
        [x, x],
        [
          [3, 2],
          [2, 3],
        ],
      ),
      [x],
      point,
      r,
    );
  });

  it('rejects bad shapes', () => {
    const x = b.variable(0, 4, 0);
    expectKeOpsError(
      () =>
        call(
          'Kron',
          [x, x],
          [
            [2, 3],
            [2, 2],
          ],
        ),
      'ERR_FORMULA_DIM',
      'Kron',
      'dim 4',
    );
    expectKeOpsError(() => call('Kron', [x, x], [[], [4]]), 'ERR_FORMULA_PARAM', 'Kron');
    expectKeOpsError(() => call('Kron', [x, x], [[4, 0], [4]]), 'ERR_FORMULA_PARAM', 'Kron');
    expectKeOpsError(() => call('Kron', [x, x], [[4]]), 'ERR_FORMULA_PARAM', 'Kron');
  });
});

// ---------------------------------------------------------------------------------------------------------
// (d) Norm macros

describe('macros 1.5 (d): norms and distances', () => {
  const expand = (m: MacroDef, args: Node[]): Node => m.expand(args, [], b);
  const r = rng(51);
  const x = b.variable(0, 3, 0);
  const y = b.variable(1, 3, 1);
  const s = b.variable(2, 1, 2);
  const d = b.variable(3, 3, 2);
  const A = b.variable(4, 9, 2);
  const point = new Map<Node, Float64Array>([
    [x, randArray(r, 3)],
    [y, randArray(r, 3)],
    [s, randArray(r, 1, 0.5, 2)],
    [d, randArray(r, 3, 0.5, 2)],
    [A, randArray(r, 9)],
  ]);
  const X = point.get(x) as Float64Array;
  const Y = point.get(y) as Float64Array;
  const S = (point.get(s) as Float64Array)[0];
  const Dg = point.get(d) as Float64Array;
  const Am = point.get(A) as Float64Array;
  const sq = (v: ArrayLike<number>): number => Array.from(v).reduce((acc, t) => acc + t * t, 0);
  const diff = Array.from(X).map((t, k) => t - Y[k]);
  const quad = (M: ArrayLike<number>, v: number[]): number =>
    iota(3).reduce((acc, k) => acc + iota(3).reduce((a2, l) => a2 + M[k * 3 + l] * v[k] * v[l], 0), 0);

  it('expand exactly as KeOps does', () => {
    const sqNorm2 = (f: Node): Node => b.sum(call('Square', [f]));
    expect(expand(norms.SqNorm2, [x])).to.equal(sqNorm2(x));
    expect(expand(norms.Norm2, [x])).to.equal(call('Sqrt', [call('Scalprod', [x, x])]));
    expect(expand(norms.Normalize, [x])).to.equal(b.mul(call('Rsqrt', [sqNorm2(x)]), x));
    expect(expand(norms.SqDist, [x, y])).to.equal(sqNorm2(b.sub(x, y)));
    expect(expand(norms.SqNormIso, [s, x])).to.equal(b.mul(s, sqNorm2(x)));
    expect(expand(norms.SqNormDiag, [d, x])).to.equal(b.sum(b.mul(d, call('Square', [x]))));
    expect(expand(norms.SymSqNorm, [A, x])).to.equal(b.sum(b.mul(A, call('TensorProd', [x, x]))));
    expect(expand(norms.WeightedSqNorm, [s, x])).to.equal(expand(norms.SqNormIso, [s, x]));
    expect(expand(norms.WeightedSqNorm, [d, x])).to.equal(expand(norms.SqNormDiag, [d, x]));
    expect(expand(norms.WeightedSqNorm, [A, x])).to.equal(expand(norms.SymSqNorm, [A, x]));
    const xy = b.sub(x, y);
    expect(expand(norms.WeightedSqDist, [A, x, y])).to.equal(expand(norms.WeightedSqNorm, [A, xy]));
    expect(expand(norms.WeightedSqDist, [d, x, y])).to.equal(expand(norms.SqNormDiag, [d, xy]));
    expect(expand(norms.WeightedSqDist, [s, x, y])).to.equal(expand(norms.SqNormIso, [s, xy]));
  });

  it('compute the right values', () => {
    const val = (m: MacroDef, args: Node[]): Float64Array => evalWith(expand(m, args), point);
    expectClose(val(norms.SqNorm2, [x]), [sq(X)]);
    expectClose(val(norms.Norm2, [x]), [Math.sqrt(sq(X))]);
    expectClose(
      val(norms.Normalize, [x]),
      Array.from(X).map((t) => t / Math.sqrt(sq(X))),
    );
    expectClose(val(norms.SqDist, [x, y]), [sq(diff)]);
    expectClose(val(norms.SqNormIso, [s, x]), [S * sq(X)]);
    expectClose(val(norms.SqNormDiag, [d, x]), [iota(3).reduce((a, k) => a + Dg[k] * X[k] * X[k], 0)]);
    expectClose(val(norms.SymSqNorm, [A, x]), [quad(Am, Array.from(X))]);
    expectClose(val(norms.WeightedSqNorm, [A, x]), [quad(Am, Array.from(X))]);
    expectClose(val(norms.WeightedSqDist, [A, x, y]), [quad(Am, diff)]);
    expectClose(val(norms.WeightedSqDist, [d, x, y]), [
      iota(3).reduce((a, k) => a + Dg[k] * diff[k] ** 2, 0),
    ]);
    expectClose(val(norms.WeightedSqDist, [s, x, y]), [S * sq(diff)]);
    // Normalize(0) = 0 (Rsqrt(0) = 0), never NaN.
    const z = b.variable(0, 3, 0);
    expect(Array.from(valueOf(expand(norms.Normalize, [z]), [[0, 0, 0]]))).to.deep.equal([0, 0, 0]);
  });

  it('have gradients matching finite differences', () => {
    const g = rng(52);
    for (const [m, args] of [
      [norms.SqNorm2, [x]],
      [norms.Norm2, [x]],
      [norms.Normalize, [x]],
      [norms.SqDist, [x, y]],
      [norms.SqNormIso, [s, x]],
      [norms.SqNormDiag, [d, x]],
      [norms.SymSqNorm, [A, x]],
      [norms.WeightedSqDist, [A, x, y]],
      [norms.WeightedSqDist, [d, x, y]],
    ] as Array<[MacroDef, Node[]]>) {
      checkAllGradients(expand(m, args), args, point, g);
    }
  });

  it('reject incompatible dims with a message naming the function', () => {
    const v2 = b.variable(5, 2, 0);
    const v4 = b.variable(6, 4, 0);
    expectKeOpsError(() => expand(norms.SqDist, [x, v2]), 'ERR_FORMULA_DIM', 'SqDist', '3', '2');
    expectKeOpsError(() => expand(norms.SqNormIso, [d, x]), 'ERR_FORMULA_DIM', 'SqNormIso', 'scalar');
    expectKeOpsError(() => expand(norms.SqNormDiag, [v2, x]), 'ERR_FORMULA_DIM', 'SqNormDiag', 'dim 2');
    expectKeOpsError(() => expand(norms.SymSqNorm, [v4, x]), 'ERR_FORMULA_DIM', 'SymSqNorm', '9', 'dim 4');
    expectKeOpsError(
      () => expand(norms.WeightedSqNorm, [v4, x]),
      'ERR_FORMULA_DIM',
      'WeightedSqNorm',
      'dim 4',
      '9',
    );
    expectKeOpsError(
      () => expand(norms.WeightedSqDist, [v2, x, y]),
      'ERR_FORMULA_DIM',
      'WeightedSqDist',
      'dim 2',
    );
    expectKeOpsError(
      () => expand(norms.WeightedSqDist, [s, x, v2]),
      'ERR_FORMULA_DIM',
      'WeightedSqDist',
      '3',
      '2',
    );
  });

  it('are all registered with consistent arities', () => {
    expect(norms.NORM_MACROS.map((m) => m.name)).to.deep.equal([
      'SqNorm2',
      'Norm2',
      'Normalize',
      'SqDist',
      'SqNormIso',
      'SqNormDiag',
      'SymSqNorm',
      'WeightedSqNorm',
      'WeightedSqDist',
    ]);
    for (const m of norms.NORM_MACROS) expect(m.doc.length).to.be.greaterThan(10);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Emitted C++: non-empty for every op, and (where g++ is available) compiled for float and double and
// compared with the float64 reference.

interface EmitCase {
  node: Node;
  inputs: Float64Array[];
}

function fakeContext(node: Node, T: string): EmitContext {
  let counter = 0;
  return {
    node,
    out: 'out',
    args: node.children.map((_, k) => `arg${k}`),
    argDims: node.children.map((c) => c.dim),
    dim: node.dim,
    params: node.params,
    T,
    lit: (v: number | Rational) => {
      const x = typeof v === 'number' ? v : ratToNumber(v);
      return `((${T})${x.toPrecision(17)})`;
    },
    fresh: (hint: string) => `${hint}_${++counter}`,
  };
}

function emitCases(): EmitCase[] {
  const r = rng(61);
  const cases: EmitCase[] = [];
  const add = (name: string, dims: number[], params: ParamValue[] = [], inputs?: number[][]): void => {
    const children = dims.map((d, k) => b.variable(k, d, 0));
    cases.push({
      node: call(name, children, params),
      inputs: inputs ? inputs.map((v) => Float64Array.from(v)) : dims.map((d) => randArray(r, d)),
    });
  };
  add('Sum', [4]);
  add('SumT', [1], [3]);
  add('Max', [5]);
  add('Min', [5]);
  add('ArgMax', [5], [], [[1, 3, 2, 3, 0]]);
  add('ArgMin', [5], [], [[1, -3, 2, -3, 0]]);
  add('Max', [1]);
  add('Elem', [4], [2]);
  add('ElemT', [1], [4, 1]);
  add('Extract', [6], [2, 3]);
  add('ExtractT', [3], [1, 6]);
  add('Concat', [2, 3]);
  for (const f of [-1, -0.4, 0, 1.5, 2.49, 3, 3.6, 1e30]) add('OneHot', [1], [4], [[f]]);
  add('MatVecMult', [6, 3]);
  add('VecMatMult', [2, 6]);
  add('TensorProd', [2, 3]);
  for (const c of TENSORDOT_CASES) {
    const children = [b.variable(0, prod(c.dimsA), 0), b.variable(1, prod(c.dimsB), 0)];
    cases.push({
      node: tensorDotNode(children[0], children[1], c),
      inputs: children.map((v) => randArray(r, v.dim)),
    });
  }
  add(
    'Kron',
    [4, 6],
    [
      [2, 2],
      [3, 2],
    ],
  );
  add('Kron', [2, 4], [[2], [2, 2]]);
  return cases;
}

describe('ops 1.5 (c), (e): emitted C++', function () {
  this.timeout(30000);

  it('is a non-empty block for every op', () => {
    for (const { node } of emitCases()) {
      const code = node.op.emit(fakeContext(node, 'double'));
      expect(code.trim().length, node.op.name).to.be.greaterThan(0);
      expect(code).to.contain('out');
    }
  });

  it('compiles with g++ and agrees with the reference in float and double', function () {
    try {
      execFileSync('g++', ['--version'], { stdio: 'ignore' });
    } catch {
      this.skip();
    }
    const cases = emitCases();
    const prelude = path.resolve(__dirname, '../cuda-templates/keops_prelude.h');
    const lines: string[] = [`#include "${prelude}"`, '#include <stdio.h>'];
    cases.forEach(({ node }, k) => {
      const params = node.children.map((_, c) => `const T* arg${c}`).join(', ');
      lines.push(
        `template <typename T> void case${k}(${params}, T* out) { ${node.op.emit(fakeContext(node, 'T'))} }`,
      );
    });
    lines.push('template <typename T> void runAll() {');
    cases.forEach(({ node, inputs }, k) => {
      inputs.forEach((v, c) =>
        lines.push(`  { T in${k}_${c}[] = { ${Array.from(v, (t) => t.toPrecision(17)).join(', ')} };`),
      );
      lines.push(`  T out${k}[${node.dim}];`);
      lines.push(`  case${k}<T>(${inputs.map((_, c) => `in${k}_${c}`).join(', ')}, out${k});`);
      lines.push(`  for (int q = 0; q < ${node.dim}; q++) printf("%.17g ", (double)out${k}[q]);`);
      lines.push('  printf("\\n");');
      lines.push('  ' + '}'.repeat(inputs.length));
    });
    lines.push('}');
    lines.push('int main() { runAll<double>(); runAll<float>(); return 0; }');
    const dir = mkdtempSync(path.join(tmpdir(), 'keops-vl-'));
    try {
      const src = path.join(dir, 'ops.cpp');
      const exe = path.join(dir, 'ops');
      writeFileSync(src, lines.join('\n'));
      execFileSync('g++', ['-std=c++11', '-O1', '-Wall', '-Werror', '-Wno-unused-variable', src, '-o', exe]);
      const rows = execFileSync(exe, { encoding: 'utf8' }).trim().split('\n');
      expect(rows.length).to.equal(2 * cases.length);
      cases.forEach(({ node, inputs }, k) => {
        const expected = evaluateNode(node, inputs);
        const parse = (row: string): number[] => row.trim().split(/\s+/).map(Number);
        expectClose(parse(rows[k]), expected, 1e-13, 1e-13, `${node} (double)`);
        expectClose(parse(rows[cases.length + k]), expected, 1e-5, 1e-5, `${node} (float)`);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function evaluateNode(node: Node, inputs: Float64Array[]): Float64Array {
  const point = new Map<Node, Float64Array>();
  node.children.forEach((c, k) => point.set(c, inputs[k]));
  return evalWith(node, point);
}

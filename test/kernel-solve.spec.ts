/**
 * KernelSolve against a dense float64 solve of (αI + K) a = b with a Gaussian kernel (M = 50, α = 0.1): the
 * solution, its gradients (with respect to b, the points and the parameter) against dense formulas and finite
 * differences, the iteration bound and the linearity and symmetry checks.
 */
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import { parseFormula } from '../lib/formula';
import { Genred } from '../lib/genred';
import { KernelSolve, NodeKernelSolve } from '../lib/kernel-solve';
import {
  denseSolve,
  expectRelative,
  gaussianSystem,
  randArray,
  rejection,
  rng,
  useTestKernelCache,
} from './util';

const FORMULA = 'Exp(-g*SqDist(x,y))*b';
const ALIASES = ['x = Vi(2)', 'y = Vj(2)', 'b = Vj(2)', 'g = Pm(1)'];
const M = 50;
const D = 2;
const ALPHA = 0.1;
const EPS = 1e-12;

const denseMatrix = (x: Float64Array, y: Float64Array, g: number): Float64Array =>
  gaussianSystem(x, y, M, D, g, ALPHA);

const solveDense = (matrix: Float64Array, rhs: ArrayLike<number>): Float64Array =>
  denseSolve(matrix, rhs, M, D);

const dot = (u: ArrayLike<number>, v: ArrayLike<number>): number => {
  let s = 0;
  for (let k = 0; k < u.length; k++) s += u[k] * v[k];
  return s;
};

/** Central differences of the scalar function s at each entry of `at`. */
function finiteDifferences(s: (perturbed: Float64Array) => number, at: Float64Array): Float64Array {
  const h = 1e-6;
  return Float64Array.from(at, (_, k) => {
    const plus = at.slice();
    const minus = at.slice();
    plus[k] += h;
    minus[k] -= h;
    return (s(plus) - s(minus)) / (2 * h);
  });
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(KeOpsError);
    return (e as KeOpsError).code;
  }
  return undefined;
}

describe('KernelSolve', function () {
  this.timeout(300_000);
  useTestKernelCache();
  const r = rng(21);
  const x = randArray(r, M * D);
  const b = randArray(r, M * D);
  const G = randArray(r, M * D);
  const g = Float64Array.of(2);
  const solver = new KernelSolve(FORMULA, ALIASES, 'b', { axis: 1 });
  const options = { alpha: ALPHA, eps: EPS };

  before(async function () {
    // Compile the kernels at once: the solve (float64, float32) and the gradients with respect to x, y and g.
    const args = [x, x, b, g];
    await Promise.all([
      solver.solve(args, options),
      solver.solve(
        args.map((a) => Float32Array.from(a)),
        { alpha: ALPHA },
      ),
      ...['x', 'y', 'g'].map((wrt) => solver.solveGrad(args, { ...options, wrt, cotangent: G })),
    ]);
  });

  it('matches a dense solve (float64, async and sync)', async function () {
    const expected = solveDense(denseMatrix(x, x, g[0]), b);
    const a = await solver.solve([x, x, b, g], options);
    expect(a).to.be.instanceOf(Float64Array);
    expectRelative(a, expected, 1e-8, 'solution');
    expectRelative(solver.solveSync([x, x, b, g], options), expected, 1e-8, 'solution (sync)');
  });

  it('matches a dense solve (float32, default eps)', async function () {
    const expected = solveDense(denseMatrix(x, x, g[0]), b);
    const args = [x, x, b, g].map((a) => Float32Array.from(a));
    const a = await solver.solve(args, { alpha: ALPHA });
    expect(a).to.be.instanceOf(Float32Array);
    expectRelative(a, expected, 1e-4, 'float32 solution');
  });

  it('differentiates with respect to b: (αI + K)⁻¹G', async function () {
    const expected = solveDense(denseMatrix(x, x, g[0]), G);
    expectRelative(
      await solver.solveGrad([x, x, b, g], { ...options, wrt: 'b', cotangent: G }),
      expected,
      1e-8,
      'd/db',
    );
  });

  it('differentiates with respect to x, y and g like finite differences of the dense solve', async function () {
    const loss = (xi: Float64Array, yj: Float64Array, gamma: number) =>
      dot(G, solveDense(denseMatrix(xi, yj, gamma), b));
    const args = [x, x, b, g];
    const dx = await solver.solveGrad(args, { ...options, wrt: 'x', cotangent: G });
    expectRelative(
      dx,
      finiteDifferences((p) => loss(p, x, g[0]), x),
      1e-6,
      'd/dx',
    );
    const dy = solver.solveGradSync(args, { ...options, wrt: 1, cotangent: G });
    expectRelative(
      dy,
      finiteDifferences((p) => loss(x, p, g[0]), x),
      1e-6,
      'd/dy',
    );
    const dg = await solver.solveGrad(args, { ...options, wrt: 'g', cotangent: G });
    expectRelative(
      dg,
      finiteDifferences((p) => loss(x, x, p[0]), g),
      1e-6,
      'd/dg',
    );
  });

  it('moving the shared points: d/dx + d/dy like finite differences of KernelSolve itself', async function () {
    const args = [x, x, b, g];
    const dx = await solver.solveGrad(args, { ...options, wrt: 'x', cotangent: G });
    const dy = await solver.solveGrad(args, { ...options, wrt: 'y', cotangent: G });
    const h = 1e-5;
    for (const k of [0, 7, 61]) {
      const moved = (delta: number) => {
        const p = x.slice();
        p[k] += delta;
        return dot(G, solver.solveSync([p, p, b, g], options));
      };
      const numeric = (moved(h) - moved(-h)) / (2 * h);
      expect(Math.abs(dx[k] + dy[k] - numeric), `entry ${k}`).to.be.below(
        1e-6 * Math.max(1, Math.abs(numeric)),
      );
    }
  });

  it("NodeKernelSolve: the same solver from a formula node and the unknown's position", async function () {
    const parsed = parseFormula(FORMULA, ALIASES);
    const nodeSolver = new NodeKernelSolve(parsed.node, { pos: 2 }, { axis: 1, variables: parsed.variables });
    expect(nodeSolver).not.to.be.instanceOf(KernelSolve);
    expect(solver).to.be.instanceOf(NodeKernelSolve);
    expect(nodeSolver.formulaNode).to.equal(solver.formulaNode);
    expect(nodeSolver.unknown).to.deep.equal(solver.unknown);
    const expected = solveDense(denseMatrix(x, x, g[0]), b);
    expectRelative(await nodeSolver.solve([x, x, b, g], options), expected, 1e-8, 'node solution');
    expectRelative(
      nodeSolver.solveGradSync([x, x, b, g], { ...options, wrt: 'b', cotangent: G }),
      solveDense(denseMatrix(x, x, g[0]), G),
      1e-8,
      'node d/db',
    );
    expect(codeOf(() => new NodeKernelSolve(parsed.node, { pos: 7 }, { axis: 1 }))).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    expect(codeOf(() => new NodeKernelSolve(parsed.node, { pos: 0 }, { axis: 1 }))).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    const max = new Genred(FORMULA, ALIASES, { reduction: 'Max', axis: 1 });
    expect(codeOf(() => new NodeKernelSolve(max, { pos: 2 }, { axis: 1 }))).to.equal('ERR_REDUCTION');
    expect(codeOf(() => new NodeKernelSolve(solver.operator, { pos: 2 }, { axis: 0 }))).to.equal(
      'ERR_REDUCTION',
    );
  });

  it('throws ERR_NOT_CONVERGED at maxIter, with the residual', async function () {
    const e = await rejection(solver.solve([x, x, b, g], { ...options, maxIter: 2 }));
    expect(e.code).to.equal('ERR_NOT_CONVERGED');
    expect(e.message).to.match(/after 2 iterations: residual ‖r‖ = \d/);
    // A zero right-hand side needs no iteration at all.
    expect(Array.from(solver.solveSync([x, x, new Float64Array(M * D), g], { maxIter: 0 }))).to.deep.equal(
      new Array(M * D).fill(0),
    );
  });

  it('rejects non-linear, affine and non-symmetric formulas and bad arguments', async function () {
    const make =
      (formula: string, unknown = 'b', extra: object = {}) =>
      () =>
        new KernelSolve(formula, ALIASES, unknown, { axis: 1, ...extra });
    expect(codeOf(make('Exp(-g*SqDist(x,y))*b*b'))).to.equal('ERR_NOT_LINEAR');
    expect(codeOf(make('Exp(-g*SqDist(x,y))*b+1'))).to.equal('ERR_NOT_LINEAR');
    expect(codeOf(make('Exp(-g*SqDist(x,y))*Sum(x)*b'))).to.equal('ERR_NOT_SYMMETRIC');
    expect(codeOf(make('Exp(-g*SqDist(x,y))*Sum(x)*b', 'b', { symmetry: 'assume' }))).to.equal(undefined);
    expect(codeOf(make('Exp(-g*SqDist(x,y))*b', 'x'))).to.equal('ERR_INVALID_ARGUMENT');
    expect(codeOf(make('Exp(-g*SqDist(x,y))*b', 'z'))).to.equal('ERR_INVALID_ARGUMENT');
    expect(codeOf(make('Exp(-g*SqDist(x,y))', 'b'))).to.equal('ERR_FORMULA_DIM');
    // Different points on the two sides make K non-symmetric; a non-square system is rejected too.
    const other = randArray(r, M * D);
    expect((await rejection(solver.solve([x, other, b, g], options))).code).to.equal('ERR_NOT_SYMMETRIC');
    expect(codeOf(() => solver.solveSync([x.subarray(2), x, b, g], options))).to.equal('ERR_ARG_SHAPE');
    expect(codeOf(() => solver.solveSync([x, x, b], options))).to.equal('ERR_ARG_COUNT');
    expect(codeOf(() => solver.solveSync([x, x, b, g], { alpha: -1 }))).to.equal('ERR_INVALID_ARGUMENT');
    expect(codeOf(() => solver.solveSync([x, x, b, g], { maxIter: 1.5 }))).to.equal('ERR_INVALID_ARGUMENT');
    const bad = { ...options, wrt: 'b', cotangent: G.subarray(1) };
    expect((await rejection(solver.solveGrad([x, x, b, g], bad))).code).to.equal('ERR_INVALID_ARGUMENT');
  });
});

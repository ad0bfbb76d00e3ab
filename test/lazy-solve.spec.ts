/**
 * LazyTensor.solve (pykeops' `K.solve(b)`) against a dense float64 solve of (αI + K) a = b with a Gaussian
 * kernel (M = 40, α = 0.1): both categories of b, sync and async, `call: false`, gradients, and the errors.
 * Three kernels (the solve for a Vj and for a Vi right-hand side, the gradient with respect to the parameter),
 * compiled up front into the test-only cache (see genred.spec.ts).
 */
import { expect } from 'chai';
import { NodeKernelSolve } from '../lib/kernel-solve';
import { LazySolve, type LazyTensor, Pm, Vi, Vj } from '../lib/lazy-tensor';
import { builder } from '../lib/formula/builder';
import {
  denseSolve,
  expectRelative,
  gaussianSystem,
  randArray,
  rejection,
  rng,
  thrown,
  useTestKernelCache,
} from './util';

const M = 40;
const D = 2;
const E = 2;
const ALPHA = 0.1;
const OPTIONS = { alpha: ALPHA, eps: 1e-12 };

const denseMatrix = (x: Float64Array, g: number): Float64Array => gaussianSystem(x, x, M, D, g, ALPHA);

const solveDense = (matrix: Float64Array, rhs: ArrayLike<number>): Float64Array =>
  denseSolve(matrix, rhs, M, E);

describe('LazyTensor.solve', function () {
  this.timeout(300_000);
  useTestKernelCache();
  const r = rng(4242);
  const x = randArray(r, M * D);
  const bData = randArray(r, M * E);
  const G = randArray(r, M * E);
  const g = Float64Array.of(2);
  const gamma = Pm(g);
  const x_i = Vi(x, D);
  const x_j = Vj(x, D);
  const K_ij: LazyTensor = x_i.sqdist(x_j).mul(gamma).neg().exp();
  const b_j = Vj(bData, E);
  const b_i = Vi(bData, E);
  const expected = solveDense(denseMatrix(x, g[0]), bData);

  before(async function () {
    await Promise.all([
      K_ij.solve(b_j, OPTIONS),
      K_ij.solve(b_i, OPTIONS),
      K_ij.solve(b_j, { ...OPTIONS, call: false }).grad(gamma, G),
    ]);
  });

  it('matches a dense float64 solve for a Vj right-hand side, async and sync', async function () {
    const a = await K_ij.solve(b_j, OPTIONS);
    expect(a).to.be.instanceOf(Float64Array);
    expectRelative(a, expected, 1e-8, 'solution');
    expectRelative(K_ij.solveSync(b_j, { ...OPTIONS, axis: -2 }), expected, 1e-8, 'solution (sync)');
  });

  it('solves over i for a Vi right-hand side (K is symmetric: same solution)', async function () {
    expectRelative(await K_ij.solve(b_i, { ...OPTIONS, axis: 0 }), expected, 1e-8, 'solution over i');
    expectRelative(K_ij.solveSync(b_i, OPTIONS), expected, 1e-8, 'solution over i (sync)');
  });

  it('builds the KernelSolve of K * var with var a fresh variable of b', function () {
    const solve = K_ij.solve(b_j, { ...OPTIONS, call: false });
    expect(solve).to.be.instanceOf(LazySolve);
    expect(solve.axis).to.equal(1);
    expect(solve.unknownPos).to.equal(K_ij.variables.length);
    const unknown = builder.variable(solve.unknownPos, E, 1);
    expect(solve.formula).to.equal(builder.mul(K_ij.node, unknown));
    const engine = solve.engine(undefined);
    expect(engine).to.be.instanceOf(NodeKernelSolve);
    expect(engine.unknown).to.deep.include({ pos: solve.unknownPos, dim: E, cat: 1 });
    // b gets its own position even when K reads the same array in the same category.
    const shared = Vj(x, D);
    expect(K_ij.solve(shared, { call: false }).unknownPos).to.equal(K_ij.variables.length);
  });

  it('call: false returns a LazySolve whose options can be overridden per call', async function () {
    const solve = K_ij.solve(b_j, { alpha: ALPHA, eps: 1e-12, call: false });
    expectRelative(await solve.call(), expected, 1e-8, 'call()');
    expectRelative(solve.callSync(), expected, 1e-8, 'callSync()');
    const e = await rejection(solve.call({ maxIter: 2 }));
    expect(e.code).to.equal('ERR_NOT_CONVERGED');
  });

  it('differentiates with respect to b and to the kernel parameter', async function () {
    const solve = K_ij.solve(b_j, { ...OPTIONS, call: false });
    expectRelative(await solve.grad(b_j, G), solveDense(denseMatrix(x, g[0]), G), 1e-8, 'd/db');
    // d⟨G, a⟩/dg = −⟨(αI+K)⁻¹G, (dK/dg) a⟩ with dK/dg = −|x_i − x_j|² K.
    const adjoint = solveDense(denseMatrix(x, g[0]), G);
    let dg = 0;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < M; j++) {
        let d2 = 0;
        for (let k = 0; k < D; k++) d2 += (x[i * D + k] - x[j * D + k]) ** 2;
        const dK = -d2 * Math.exp(-g[0] * d2);
        for (let k = 0; k < E; k++) dg -= adjoint[i * E + k] * dK * expected[j * E + k];
      }
    }
    expectRelative(solve.gradSync(gamma, G), [dg], 1e-7, 'd/dg');
  });

  it('rejects a non-scalar kernel, a bad right-hand side, a non-square or non-symmetric K', async function () {
    const code = (f: () => unknown) => thrown(f).code;
    expect(code(() => x_i.sub(x_j).solveSync(b_j))).to.equal('ERR_FORMULA_DIM');
    expect((await rejection(x_i.sub(x_j).solve(b_j))).code).to.equal('ERR_FORMULA_DIM');
    const complexKernel = K_ij.real2complex();
    expect(code(() => complexKernel.solveSync(b_j))).to.equal('ERR_FORMULA_DIM');
    expect(code(() => K_ij.solveSync(gamma))).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => K_ij.solveSync(b_j.mul(2)))).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => K_ij.solveSync(bData as unknown as LazyTensor))).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => K_ij.solveSync(Vj(bData, E, { complex: true })))).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => K_ij.solveSync(b_j, { axis: 0 }))).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => K_ij.solveSync(Vj(bData.subarray(E), E)))).to.equal('ERR_ARG_SHAPE');
    expect(code(() => K_ij.solveSync(Vj(Float32Array.from(bData), E)))).to.equal('ERR_ARG_DTYPE');
    const y_j = Vj(randArray(r, (M - 1) * D), D);
    expect(
      code(() =>
        x_i
          .sqdist(y_j)
          .neg()
          .exp()
          .solveSync(Vj(bData.subarray(E), E)),
      ),
    ).to.equal('ERR_ARG_SHAPE');
    // A formula that is not symmetric, and a symmetric one on different points.
    expect(code(() => K_ij.mul(x_i.sum(-1)).solveSync(b_j))).to.equal('ERR_NOT_SYMMETRIC');
    const other = Vj(randArray(r, M * D), D);
    const notSymmetric = x_i.sqdist(other).mul(gamma).neg().exp();
    expect((await rejection(notSymmetric.solve(b_j, OPTIONS))).code).to.equal('ERR_NOT_SYMMETRIC');
    expect(code(() => K_ij.solveSync(b_j, { alpha: -1 }))).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => K_ij.solveSync(b_j, { ...OPTIONS, maxIter: 2 }))).to.equal('ERR_NOT_CONVERGED');
    const solve = K_ij.solve(b_j, { call: false });
    expect((await rejection(solve.grad(b_j.mul(2), G))).code).to.equal('ERR_INVALID_ARGUMENT');
    expect(code(() => solve.gradSync(b_j, G.subarray(1)))).to.equal('ERR_INVALID_ARGUMENT');
  });
});

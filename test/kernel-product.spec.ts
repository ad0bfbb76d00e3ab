/**
 * kernelProduct and lazyKernel: every KeOps 1.x mode on both axes against a dense float64 oracle written from
 * the 1.x definitions (through the float64 reference evaluator, which is cheap), a few of them through the CPU
 * backend, and gradients against finite differences of the oracle and against the reference gradient.
 * Kernels go to the shared test cache.
 */
import { expect } from 'chai';
import { Pm, Vi, Vj } from '../lib/lazy-tensor';
import { lazyKernel } from '../lib/kernels/lazy';
import { parseKernel } from '../lib/kernels/language';
import {
  KERNEL_PRODUCT_MODES,
  type KernelArray,
  type KernelProductMode,
  type KernelProductParams,
  type KernelScale,
  kernelProduct,
  kernelProductGrad,
  kernelProductGradSync,
  kernelProductPlan,
  kernelProductSync,
} from '../lib/kernels/product';
import { type ReferenceInput, referenceGenred, referenceGenredGradient } from '../lib/reference';
import { ATOM, rowOf, spdMatrix } from './kernel-oracle';
import { expectKeOpsError, randArray, rejection, rng, useTestKernelCache } from './util';

const M = 6;
const N = 7;
const r = rng(5);
const x: KernelArray = { data: randArray(r, M * 3), shape: [M, 3] };
const u: KernelArray = { data: randArray(r, M * 2), shape: [M, 2] };
const y: KernelArray = { data: randArray(r, N * 3), shape: [N, 3] };
const v: KernelArray = { data: randArray(r, N * 2), shape: [N, 2] };
const fullMatrix = spdMatrix(r, 3);
const diagonal = randArray(r, 3, 0.3, 1.2);
const perJ = randArray(r, N, 0.2, 1);

/** A kernel with a plain form (for 'sum'): a full-matrix Gaussian times a polynomial of a linear kernel. */
const POLY: KernelProductParams = {
  kernel: 'gaussian(x,y) * (1 + linear(u,v)**2)',
  gamma: [fullMatrix, null],
};
const polyValue = (i: number, j: number): number =>
  ATOM.gaussian(fullMatrix, rowOf(x.data, i, 3), rowOf(y.data, j, 3)) *
  (1 + ATOM.linear([], rowOf(u.data, i, 2), rowOf(v.data, j, 2)) ** 2);

/** A positive kernel (its log form is exactly log k): scalar, diagonal and j-varying scales. */
const MIX: KernelProductParams = {
  kernel: 'cauchy(x,y) + gaussian(x,y) * laplacian(u,v)',
  gamma: [0.7, diagonal, { data: perJ, shape: [N, 1] }],
};
const mixValue = (i: number, j: number): number => {
  const [xi, yj, ui, vj] = [
    rowOf(x.data, i, 3),
    rowOf(y.data, j, 3),
    rowOf(u.data, i, 2),
    rowOf(v.data, j, 2),
  ];
  return ATOM.cauchy([0.7], xi, yj) + ATOM.gaussian(diagonal, xi, yj) * ATOM.laplacian([perJ[j]], ui, vj);
};

/** Inputs of each mode, by side ('reduced': indexed like the summation, 'output': like the result). */
function modeInputs(mode: KernelProductMode, axis: 0 | 1, seed: number): Float64Array[] {
  const rr = rng(seed);
  const rows = (side: string) => ((side === 'reduced') === (axis === 1) ? N : M);
  return KERNEL_PRODUCT_MODES[mode].inputs.map((side, k) =>
    randArray(
      rr,
      rows(side) *
        (k === 0 && KERNEL_PRODUCT_MODES[mode].reduction === 'Sum' && !mode.startsWith('sinkhorn') ? 2 : 1),
    ),
  );
}

/**
 * The 1.x definitions, written out: with c = log k, o the output index and s the summed one,
 * sum Σ k b, lse log Σ exp(c + b), log_scaled Σ exp(c + α + β) b, log_scaled_lse log Σ exp(c + α + β + b),
 * log_scaled_barycenter Σ exp(c + α + β)(b − b2), lse_mult_i log Σ exp(s c + b),
 * sinkhorn_primal Σ (u + v − 1) exp(c + α + β), sinkhorn_cost Σ −c exp(c + α + β).
 */
function dense(
  mode: KernelProductMode,
  axis: 0 | 1,
  k: (i: number, j: number) => number,
  bs: Float64Array[],
): Float64Array {
  const [outRows, sumRows] = axis === 1 ? [M, N] : [N, M];
  const width = bs[0].length / (KERNEL_PRODUCT_MODES[mode].inputs[0] === 'reduced' ? sumRows : outRows);
  const E = mode === 'sinkhorn_primal' || mode === 'sinkhorn_cost' ? 1 : width;
  const out = new Float64Array(outRows * E);
  for (let o = 0; o < outRows; o++) {
    for (let e = 0; e < E; e++) {
      const terms: number[] = [];
      for (let s = 0; s < sumRows; s++) {
        const [i, j] = axis === 1 ? [o, s] : [s, o];
        const c = Math.log(k(i, j));
        const at = (n: number, w = 1): number => {
          const row = KERNEL_PRODUCT_MODES[mode].inputs[n] === 'reduced' ? s : o;
          return bs[n][row * w + (w === 1 ? 0 : e)];
        };
        const B = (n: number) => at(n, n === 0 ? E : 1);
        switch (mode) {
          case 'sum':
            terms.push(k(i, j) * B(0));
            break;
          case 'lse':
            terms.push(c + B(0));
            break;
          case 'log_scaled':
            terms.push(Math.exp(c + B(1) + B(2)) * B(0));
            break;
          case 'log_scaled_lse':
            terms.push(c + B(1) + B(2) + B(0));
            break;
          case 'log_scaled_barycenter':
            terms.push(Math.exp(c + B(1) + B(2)) * (B(0) - B(3)));
            break;
          case 'lse_mult_i':
            terms.push(B(1) * c + B(0));
            break;
          case 'sinkhorn_primal':
            terms.push((at(2) + at(3) - 1) * Math.exp(c + at(0) + at(1)));
            break;
          case 'sinkhorn_cost':
            terms.push(-c * Math.exp(c + at(0) + at(1)));
            break;
        }
      }
      const lse = KERNEL_PRODUCT_MODES[mode].reduction === 'LogSumExp';
      const max = Math.max(...terms);
      out[o * E + e] = lse
        ? max + Math.log(terms.reduce((acc, t) => acc + Math.exp(t - max), 0))
        : terms.reduce((acc, t) => acc + t, 0);
    }
  }
  return out;
}

function expectNear(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  expect(actual.length, `${what}: length`).to.equal(expected.length);
  let scale = 1;
  for (let k = 0; k < expected.length; k++) scale = Math.max(scale, Math.abs(expected[k]));
  for (let k = 0; k < expected.length; k++) {
    expect(Math.abs(actual[k] - expected[k]), `${what}[${k}]: ${actual[k]} vs ${expected[k]}`).to.be.at.most(
      tol * scale,
    );
  }
}

function referenceOf(params: KernelProductParams, bs: Float64Array[], mode: KernelProductMode, axis: 0 | 1) {
  const { spec, args } = kernelProductPlan({ ...params, mode }, [x, u], [y, v], bs, { axis });
  const inputs: ReferenceInput[] = args.map((a, pos) => ({
    data: a as Float64Array,
    cat: spec.variables[pos].cat,
    dim: spec.variables[pos].dim,
  }));
  return { spec, args, inputs };
}

describe('kernelProduct: every mode on both axes (float64 reference vs the KeOps 1.x definitions)', () => {
  for (const mode of Object.keys(KERNEL_PRODUCT_MODES) as KernelProductMode[]) {
    for (const axis of [0, 1] as const) {
      it(`${mode}, axis ${axis}`, () => {
        const [params, k] = mode === 'sum' ? [POLY, polyValue] : [MIX, mixValue];
        const bs = modeInputs(mode, axis, 10 + axis);
        const { spec, inputs } = referenceOf(params, bs, mode, axis);
        const got = referenceGenred(spec.reduction, spec.formula, inputs, { axis });
        expectNear(got as Float64Array, dense(mode, axis, k, bs), 1e-12, `${mode} axis ${axis}`);
      });
    }
  }
});

describe('kernelProduct: scales varying with i', () => {
  it('reads { data, shape, per: "i" } as an i-variable (diagonal per point)', () => {
    const perI = randArray(rng(12), M * 3, 0.2, 1);
    const b = modeInputs('sum', 1, 11)[0];
    const params: KernelProductParams = {
      kernel: 'gaussian(x,y)',
      gamma: { data: perI, shape: [M, 3], per: 'i' },
    };
    const { spec, args } = kernelProductPlan(params, x, y, b);
    expect(spec.variables[0].cat).to.equal(0);
    const inputs: ReferenceInput[] = args.map((a, pos) => ({
      data: a as Float64Array,
      cat: spec.variables[pos].cat,
      dim: spec.variables[pos].dim,
    }));
    const got = referenceGenred('Sum', spec.formula, inputs, { axis: 1 });
    const k = (i: number, j: number) =>
      ATOM.gaussian(rowOf(perI, i, 3), rowOf(x.data, i, 3), rowOf(y.data, j, 3));
    expectNear(got as Float64Array, dense('sum', 1, k, [b]), 1e-12, 'per-i scale');
  });
});

describe('kernelProduct: CPU backend and gradients', function () {
  this.timeout(600_000);
  useTestKernelCache();

  it('sum (full-matrix Gaussian × polynomial), lse and log_scaled_barycenter match the dense oracle', async () => {
    const sum = await kernelProduct(POLY, [x, u], [y, v], modeInputs('sum', 1, 11)[0]);
    expectNear(sum, dense('sum', 1, polyValue, modeInputs('sum', 1, 11)), 1e-10, 'sum');
    const lseInputs = modeInputs('lse', 0, 10);
    const lse = kernelProductSync({ ...MIX, mode: 'lse' }, [x, u], [y, v], lseInputs, { axis: 0 });
    expectNear(lse, dense('lse', 0, mixValue, lseInputs), 1e-10, 'lse axis 0');
    const bary = modeInputs('log_scaled_barycenter', 1, 11);
    const got = await kernelProduct({ ...MIX, mode: 'log_scaled_barycenter' }, [x, u], [y, v], bary);
    expectNear(got, dense('log_scaled_barycenter', 1, mixValue, bary), 1e-10, 'log_scaled_barycenter');
  });

  it('float32 data gives float32 results within 1e-5', async () => {
    const f32 = (a: KernelArray): KernelArray => ({ data: Float32Array.from(a.data), shape: a.shape });
    const b = modeInputs('sum', 1, 11)[0];
    const params = { ...POLY, gamma: [Float32Array.from(fullMatrix), null] };
    const got = await kernelProduct(params, [f32(x), f32(u)], [f32(y), f32(v)], Float32Array.from(b));
    expect(got).to.be.instanceOf(Float32Array);
    expectNear(got, dense('sum', 1, polyValue, [b]), 1e-5, 'float32 sum');
  });

  /** Central finite differences of ⟨G, dense(...)⟩ with respect to the entries of `target`. */
  function finiteDifferences(target: Float64Array, f: () => Float64Array, G: Float64Array): Float64Array {
    const grad = new Float64Array(target.length);
    for (let k = 0; k < target.length; k++) {
      const saved = target[k];
      const h = 1e-6 * Math.max(1, Math.abs(saved));
      const at = (delta: number) => {
        target[k] = saved + delta;
        return f().reduce((s, value, t) => s + G[t] * value, 0);
      };
      grad[k] = (at(h) - at(-h)) / (2 * h);
      target[k] = saved;
    }
    return grad;
  }

  it('gradients w.r.t. x and the full-matrix scale (sum) and y (lse, axis 0) match finite differences and the reference', async () => {
    const bSum = modeInputs('sum', 1, 11);
    const G = randArray(rng(7), M * 2);
    const cases: Array<{
      wrt: 'x' | 'gamma' | 'y';
      target: Float64Array;
      mode: KernelProductMode;
      axis: 0 | 1;
    }> = [
      { wrt: 'x', target: x.data as Float64Array, mode: 'sum', axis: 1 },
      { wrt: 'gamma', target: fullMatrix, mode: 'sum', axis: 1 },
    ];
    for (const c of cases) {
      const got = await kernelProductGrad(POLY, [x, u], [y, v], bSum[0], { wrt: c.wrt, cotangent: G });
      const numeric = finiteDifferences(c.target, () => dense('sum', 1, polyValue, bSum), G);
      expectNear(got, numeric, 1e-6, `d/d${c.wrt} (finite differences)`);
      const { spec, inputs } = referenceOf(POLY, bSum, 'sum', 1);
      const wrt = spec.positions[c.wrt][0] as number;
      const reference = referenceGenredGradient('Sum', spec.formula, inputs, { axis: 1, wrt, G });
      expectNear(got, reference, 1e-10, `d/d${c.wrt} (reference)`);
    }
    const bLse = modeInputs('lse', 0, 10);
    const G0 = randArray(rng(8), N);
    const got = kernelProductGradSync({ ...MIX, mode: 'lse' }, [x, u], [y, v], bLse, {
      axis: 0,
      wrt: 'y',
      cotangent: G0,
    });
    const numeric = finiteDifferences(y.data as Float64Array, () => dense('lse', 0, mixValue, bLse), G0);
    expectNear(got, numeric, 1e-6, 'lse d/dy (finite differences)');
  });

  it('lazyKernel builds the same kernel from LazyTensors', () => {
    const b = modeInputs('sum', 1, 11)[0];
    const K = lazyKernel(
      'gaussian(x,y) * (1 + linear(u,v)**2)',
      { x: Vi(x.data, 3), y: Vj(y.data, 3), u: Vi(u.data, 2), v: Vj(v.data, 2) },
      [Pm(fullMatrix), null],
    );
    const got = K.mul(Vj(b, 2)).sumSync(1);
    expectNear(got, dense('sum', 1, polyValue, [b]), 1e-10, 'lazyKernel');
  });

  it("gives the README's worked example", async () => {
    const px: KernelArray = { data: Float64Array.of(0, 0, 1, 0), shape: [2, 2] };
    const py: KernelArray = { data: Float64Array.of(0, 0, 0, 1, 2, 0), shape: [3, 2] };
    const pb = Float64Array.of(1, 2, 3);
    const a = await kernelProduct({ kernel: 'gaussian(x,y)', gamma: 1 }, px, py, pb);
    const e = Math.exp;
    expectNear(a, [1 + 2 * e(-1) + 3 * e(-4), e(-1) + 2 * e(-2) + 3 * e(-1)], 1e-12, 'README a');
    expect(Array.from(a, (t) => t.toFixed(6))).to.deep.equal(['1.790706', '1.742188']);
    const at = await kernelProduct({ kernel: 'gaussian(x,y)', gamma: 1 }, px, py, Float64Array.of(1, 1), {
      axis: 0,
    });
    expectNear(at, [1 + e(-1), e(-1) + e(-2), e(-4) + e(-1)], 1e-12, 'README axis 0');
    const K = lazyKernel('gaussian(x,y)', { x: Vi(px.data, 2), y: Vj(py.data, 2) }, Pm(1));
    expectNear(await K.matvec(pb), a, 1e-12, 'README lazyKernel');
    const logK = lazyKernel('gaussian(x,y)', { x: Vi(px.data, 2), y: Vj(py.data, 2) }, Pm(1), {
      domain: 'log',
    });
    expectNear(
      logK.logsumexpSync(1),
      [Math.log(1 + e(-1) + e(-4)), Math.log(2 * e(-1) + e(-2))],
      1e-12,
      'log domain',
    );
  });

  it('rejects bad inputs with typed errors', async () => {
    const b = modeInputs('sum', 1, 11)[0];
    expectKeOpsError(
      () => kernelProductSync({ ...POLY, gamma: [fullMatrix] }, [x, u], [y, v], b),
      'ERR_INVALID_ARGUMENT',
      '2 scale(s)',
    );
    expectKeOpsError(
      () => kernelProductSync({ ...POLY, gamma: [fullMatrix, fullMatrix] }, [x, u], [y, v], b),
      'ERR_INVALID_ARGUMENT',
      'takes no scale',
    );
    const e = expectKeOpsError(
      () => kernelProductSync({ ...POLY, gamma: [Float64Array.of(1, 2), null] }, [x, u], [y, v], b),
      'ERR_FORMULA_DIM',
      'gaussian(x,y)',
    );
    expect(e.position).to.equal(0);
    expectKeOpsError(() => kernelProductSync(POLY, [x], [y], b), 'ERR_INVALID_ARGUMENT', '2 pair(s)');
    expectKeOpsError(() => kernelProductSync(POLY, [x, u], [y, x], b), 'ERR_ARG_SHAPE', 'one dimension');
    expectKeOpsError(
      () => kernelProductSync({ ...POLY, mode: 'nope' as KernelProductMode }, [x, u], [y, v], b),
      'ERR_INVALID_ARGUMENT',
      'log_scaled',
    );
    expectKeOpsError(
      () => kernelProductSync({ ...MIX, mode: 'log_scaled' }, [x, u], [y, v], b),
      'ERR_INVALID_ARGUMENT',
      '3 array(s)',
    );
    expectKeOpsError(
      () => kernelProductSync(POLY, [x, u], [y, v], b, { axis: 2 as 0 }),
      'ERR_REDUCTION',
      'axis',
    );
    expectKeOpsError(
      () => kernelProductSync(POLY, [{ data: x.data, shape: [M, 4] }, u], [y, v], b),
      'ERR_ARG_SHAPE',
      'rows',
    );
    expectKeOpsError(
      () => kernelProductSync(POLY, [x, u], [y, v], b.subarray(1)),
      'ERR_ARG_SHAPE',
      'whole number of rows',
    );
    expectKeOpsError(
      () => kernelProductSync({ kernel: 'gausian(x,y)' }, x, y, b),
      'ERR_FORMULA_NAME',
      'did you mean gaussian',
    );
    const scale: KernelScale = { data: perJ, shape: [N, 1], per: 'k' as 'i' };
    expectKeOpsError(
      () => kernelProductSync({ kernel: 'cauchy(x,y)', gamma: scale }, x, y, b),
      'ERR_INVALID_ARGUMENT',
      "per must be 'i' or 'j'",
    );
    const rejected = await rejection(
      kernelProductGrad(POLY, [x, u], [y, v], b, {
        wrt: 'gamma',
        index: 1,
        cotangent: new Float64Array(M * 2),
      }),
    );
    expect(rejected.code).to.equal('ERR_INVALID_ARGUMENT');
    expect(parseKernel('linear(x,y)').atoms).to.have.length(1);
  });
});

/** Shared test helpers: seeded randomness, closeness checks and finite-difference gradient checks. */
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { KeOpsError, type KeOpsErrorCode } from '../lib/errors';
import type { GenredResult } from '../lib/formula/genred-reductions';
import { builder as b } from '../lib/formula/builder';
import { evaluateFormula } from '../lib/formula/evaluate';
import type { Node } from '../lib/formula/node';
import { varsOf } from '../lib/formula/diff';

/** mulberry32: small, fast, deterministic. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randArray(r: () => number, n: number, lo = -1, hi = 1): Float64Array {
  const a = new Float64Array(n);
  for (let k = 0; k < n; k++) a[k] = lo + (hi - lo) * r();
  return a;
}

/** |a-e| <= atol + rtol*|e| componentwise (NaN matches NaN, infinities must be equal). */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol = 1e-12,
  atol = 0,
  what = '',
): void {
  expect(actual.length, `${what} length`).to.equal(expected.length);
  for (let k = 0; k < expected.length; k++) {
    const a = actual[k];
    const e = expected[k];
    if (Number.isNaN(e)) {
      expect(Number.isNaN(a), `${what}[${k}]: expected NaN, got ${a}`).to.equal(true);
      continue;
    }
    if (!Number.isFinite(e)) {
      expect(a, `${what}[${k}]`).to.equal(e);
      continue;
    }
    const ok = Math.abs(a - e) <= atol + rtol * Math.abs(e);
    expect(ok, `${what}[${k}]: got ${a}, expected ${e} (rtol ${rtol}, atol ${atol})`).to.equal(true);
  }
}

/** max|a-e| / max|e| below `tol`: a norm-wise relative error, for solver outputs whose small entries are noisy. */
export function expectRelative(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  expect(actual.length, `${what} length`).to.equal(expected.length);
  let error = 0;
  let norm = 0;
  for (let k = 0; k < expected.length; k++) {
    error = Math.max(error, Math.abs(actual[k] - expected[k]));
    norm = Math.max(norm, Math.abs(expected[k]));
  }
  expect(error / norm, `${what}: max error ${error}, scale ${norm}`).to.be.below(tol);
}

/** Evaluates f with the given values for its Var nodes. */
export function evalWith(f: Node, values: ReadonlyMap<Node, Float64Array>): Float64Array {
  return evaluateFormula(f, (v) => {
    const x = values.get(v);
    if (x === undefined) throw new Error(`no value for ${v}`);
    return x;
  });
}

/**
 * Checks the symbolic gradient of f with respect to v against central finite differences of <G, f>, at the
 * given point and with a random cotangent G. Returns the relative error (also asserted < tol).
 */
export function checkGradient(
  f: Node,
  v: Node,
  point: ReadonlyMap<Node, Float64Array>,
  r: () => number,
  tol = 1e-6,
): number {
  const used = Math.max(-1, ...[...varsOf(f)].map((x) => x.params[0] as number));
  const gVar = b.variable(used + 1, f.dim, 0);
  const gradF = b.grad(f, v, gVar);
  const G = randArray(r, f.dim);
  const values = new Map(point);
  values.set(gVar, G);
  const symbolic = evalWith(gradF, values);
  const x0 = point.get(v) as Float64Array;
  const numeric = new Float64Array(v.dim);
  for (let k = 0; k < v.dim; k++) {
    const h = 1e-6 * Math.max(1, Math.abs(x0[k]));
    const val = (delta: number): number => {
      const x = Float64Array.from(x0);
      x[k] += delta;
      const m = new Map(point);
      m.set(v, x);
      const y = evalWith(f, m);
      let s = 0;
      for (let t = 0; t < y.length; t++) s += G[t] * y[t];
      return s;
    };
    numeric[k] = (val(h) - val(-h)) / (2 * h);
  }
  let num = 0;
  let den = 0;
  for (let k = 0; k < v.dim; k++) {
    num += (symbolic[k] - numeric[k]) ** 2;
    den += numeric[k] ** 2;
  }
  const rel = Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-8);
  expect(
    rel,
    `gradient of ${f} w.r.t. ${v}: symbolic ${Array.from(symbolic)} vs numeric ${Array.from(numeric)}`,
  ).to.be.below(tol);
  return rel;
}

/** The KeOpsError a promise rejects with (fails the test when it resolves or rejects with something else). */
export async function rejection(promise: Promise<unknown>): Promise<KeOpsError> {
  try {
    await promise;
  } catch (e) {
    expect(e).to.be.instanceOf(KeOpsError);
    return e as KeOpsError;
  }
  throw new Error('expected a rejection');
}

/** The KeOpsError a function throws (fails the test when it returns or throws something else). */
export function thrown(f: () => unknown): KeOpsError {
  try {
    f();
  } catch (e) {
    expect(e).to.be.instanceOf(KeOpsError);
    return e as KeOpsError;
  }
  throw new Error('expected a KeOpsError');
}

/**
 * Expects `fn` to throw a KeOpsError with `code` whose message contains every string and matches every RegExp
 * of `mentions`; returns the error.
 */
export function expectKeOpsError(
  fn: () => unknown,
  code: KeOpsErrorCode,
  ...mentions: (string | RegExp)[]
): KeOpsError {
  const e = thrown(fn);
  expect(e.code, e.message).to.equal(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(e.message).to.contain(m);
    else expect(e.message).to.match(m);
  }
  return e;
}

/**
 * The kernel cache shared by the backend test files: kept across runs (in node_modules/.cache, so a fresh clone
 * starts empty) because compiling every test kernel from scratch costs about a minute on 2 cores.
 */
export const TEST_KERNEL_CACHE = join(resolve(__dirname, '..'), 'node_modules', '.cache', 'keops-node-test');

/** Solves A X = B by Gaussian elimination with partial pivoting (A: n×n, B: n×cols, row-major): a test oracle. */
export function denseSolve(
  matrix: ArrayLike<number>,
  rhs: ArrayLike<number>,
  n: number,
  cols: number,
): Float64Array {
  const A = Float64Array.from(matrix);
  const X = Float64Array.from(rhs);
  for (let c = 0; c < n; c++) {
    let pivot = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(A[r * n + c]) > Math.abs(A[pivot * n + c])) pivot = r;
    for (let k = 0; k < n; k++) [A[c * n + k], A[pivot * n + k]] = [A[pivot * n + k], A[c * n + k]];
    for (let k = 0; k < cols; k++)
      [X[c * cols + k], X[pivot * cols + k]] = [X[pivot * cols + k], X[c * cols + k]];
    for (let r = c + 1; r < n; r++) {
      const f = A[r * n + c] / A[c * n + c];
      for (let k = c; k < n; k++) A[r * n + k] -= f * A[c * n + k];
      for (let k = 0; k < cols; k++) X[r * cols + k] -= f * X[c * cols + k];
    }
  }
  for (let c = n - 1; c >= 0; c--) {
    for (let k = 0; k < cols; k++) {
      let s = X[c * cols + k];
      for (let t = c + 1; t < n; t++) s -= A[c * n + t] * X[t * cols + k];
      X[c * cols + k] = s / A[c * n + c];
    }
  }
  return X;
}

/** The standards' tolerances against the float64 reference: block-summed float32 and float64 results. */
export const BACKEND_TOLERANCE = { float32: 1e-5, float64: 1e-10 } as const;

/**
 * Compares a backend result with the reference: values within BACKEND_TOLERANCE of their dtype (and of that
 * dtype's array type), indices exactly, `{ values, indices }` pairs both ways.
 */
export function expectBackendResult(
  actual: GenredResult,
  expected: GenredResult,
  dtype: 'float32' | 'float64',
  what: string,
): void {
  const tol = BACKEND_TOLERANCE[dtype];
  if (expected instanceof Int32Array) {
    expect(actual, what).to.be.instanceOf(Int32Array);
    expect(Array.from(actual as Int32Array), what).to.deep.equal(Array.from(expected));
  } else if (ArrayBuffer.isView(expected)) {
    expect(actual, what).to.be.instanceOf(dtype === 'float32' ? Float32Array : Float64Array);
    expectClose(actual as Float64Array, expected, tol, tol, what);
  } else {
    const pair = actual as { values: Float64Array; indices: Int32Array };
    expectClose(pair.values, expected.values, tol, tol, `${what} values`);
    expect(Array.from(pair.indices), `${what} indices`).to.deep.equal(Array.from(expected.indices));
  }
}

/**
 * Points the kernel cache at TEST_KERNEL_CACHE for the enclosing describe block, restoring the previous value
 * after it. Registers mocha hooks: call it first in the block, so later `before` hooks compile into that cache.
 */
export function useTestKernelCache(): void {
  const previous = process.env.KEOPS_CACHE_DIR;
  before(() => {
    process.env.KEOPS_CACHE_DIR = TEST_KERNEL_CACHE;
  });
  after(() => {
    if (previous === undefined) delete process.env.KEOPS_CACHE_DIR;
    else process.env.KEOPS_CACHE_DIR = previous;
  });
}

/** αI + K with K_ij = exp(−g|x_i − y_j|²) for n points of dimension dim, row-major: a dense test oracle. */
export function gaussianSystem(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  n: number,
  dim: number,
  g: number,
  alpha: number,
): Float64Array {
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let d2 = 0;
      for (let k = 0; k < dim; k++) d2 += (x[i * dim + k] - y[j * dim + k]) ** 2;
      A[i * n + j] = Math.exp(-g * d2) + (i === j ? alpha : 0);
    }
  }
  return A;
}

/** Sets environment variables (undefined = unset); returns a function that restores what they were. */
function setEnv(vars: Readonly<Record<string, string | undefined>>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (values: Readonly<Record<string, string | undefined>>): void => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  apply(vars);
  return () => apply(saved);
}

/** Runs `body` with the environment variables `vars` set (undefined = unset), restoring them afterwards. */
export function withEnv<T>(vars: Readonly<Record<string, string | undefined>>, body: () => T): T {
  const restore = setEnv(vars);
  try {
    return body();
  } finally {
    restore();
  }
}

/** `withEnv` for an asynchronous body: the variables stay set until its promise settles. */
export async function withEnvAsync<T>(
  vars: Readonly<Record<string, string | undefined>>,
  body: () => T | Promise<T>,
): Promise<T> {
  const restore = setEnv(vars);
  try {
    return await body();
  } finally {
    restore();
  }
}

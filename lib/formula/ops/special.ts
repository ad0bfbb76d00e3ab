/**
 * (g) Special operations (docs/semantics.md 1.5 g): B-spline bases and the soft-DTW discrepancy between two
 * scalar sequences, with its gradient as an internal op. Unlike KeOps, the emitted C++ is written for the
 * scalar type in scope (float or double) and uses hygienic local names (KeOps' SoftDTW shadows the CPU
 * loader's `i`/`j` and uses `fminf` for doubles; its BSpline hard-codes float: docs/semantics.md 9.3, 9.4).
 */
import { KeOpsError } from '../../errors';
import { dimError, type EmitContext, type OpDef, paramError } from '../opdef';
import { intParam } from './helpers';

// ---- BSpline -------------------------------------------------------------------------------------------

/**
 * De Boor's recursion for the B-spline basis functions of order `order` on the knots t_0..t_{K-1} at x:
 *   B⁰_i(x) = 1 if t_i ≤ x < t_{i+1} else 0                                   (i < K−1)
 *   Bᵏ_i(x) = ω_{i,k} Bᵏ⁻¹_i(x) + (1 − ω_{i+1,k}) Bᵏ⁻¹_{i+1}(x)                (i < K−1−k)
 *   ω_{i,k} = (x − t_i) / (t_{i+k} − t_i) if t_i < t_{i+k}, else 0 (repeated knots; as KeOps)
 * The result is B^order_0..B^order_{K−order−2}. The update is done in place with i ascending, so B[i+1] still
 * holds the previous order when B[i] is updated.
 */
function bsplineReference(t: Float64Array, x: number, order: number): Float64Array {
  const K = t.length;
  const omega = (i: number, k: number): number => (t[i] < t[i + k] ? (x - t[i]) / (t[i + k] - t[i]) : 0);
  const B = new Float64Array(K - 1);
  for (let i = 0; i < K - 1; i++) B[i] = t[i] <= x && x < t[i + 1] ? 1 : 0;
  for (let k = 1; k <= order; k++) {
    for (let i = 0; i < K - 1 - k; i++) B[i] = omega(i, k) * B[i] + (1 - omega(i + 1, k)) * B[i + 1];
  }
  return B.slice(0, K - order - 1);
}

export const BSpline: OpDef = {
  name: 'BSpline',
  doc: 'BSpline(knots,x,order): the d(knots)−order−1 B-spline basis functions of the given order at the scalar x (not differentiable)',
  arity: 2,
  params: ['int'],
  dim: ([dKnots, dx], params) => {
    const order = intParam(params, 0);
    if (order < 0) throw paramError(`BSpline: the order must be >= 0, got ${order}`);
    if (dx !== 1) throw dimError(`BSpline: x must be a scalar (dim 1), got dim ${dx}`);
    if (dKnots < order + 2) {
      throw dimError(
        `BSpline: order ${order} needs at least ${order + 2} knots, got a knot vector of dim ${dKnots}`,
      );
    }
    return dKnots - order - 1;
  },
  evaluate: ([knots, x], params) => bsplineReference(knots, x[0], intParam(params, 0)),
  vjp: 'none',
  emit: (ctx) => {
    const [t, xArg] = ctx.args;
    const K = ctx.argDims[0];
    const order = intParam(ctx.params, 0);
    const [x, buf, i, k, w0, w1] = ['x', 'bspline', 'i', 'k', 'omega', 'omega_next'].map((h) => ctx.fresh(h));
    const zero = ctx.lit(0);
    const one = ctx.lit(1);
    const omega = (name: string, a: string): string =>
      `${ctx.T} ${name} = ${t}[${a}] < ${t}[${a} + ${k}] ? (${x} - ${t}[${a}]) / (${t}[${a} + ${k}] - ${t}[${a}]) : ${zero};`;
    return (
      `{ ${ctx.T} ${x} = ${xArg}[0]; ${ctx.T} ${buf}[${K - 1}]; ` +
      `for (int ${i} = 0; ${i} < ${K - 1}; ${i}++) ` +
      `${buf}[${i}] = (${t}[${i}] <= ${x} && ${x} < ${t}[${i} + 1]) ? ${one} : ${zero}; ` +
      `for (int ${k} = 1; ${k} <= ${order}; ${k}++) { for (int ${i} = 0; ${i} < ${K - 1} - ${k}; ${i}++) { ` +
      `${omega(w0, i)} ${omega(w1, `${i} + 1`)} ` +
      `${buf}[${i}] = ${w0} * ${buf}[${i}] + (${one} - ${w1}) * ${buf}[${i} + 1]; } } ` +
      `for (int ${i} = 0; ${i} < ${ctx.dim}; ${i}++) ${ctx.out}[${i}] = ${buf}[${i}]; }`
    );
  },
};

// ---- SoftDTW_SqDist ------------------------------------------------------------------------------------

/**
 * Soft-DTW between the scalar sequences x (length n) and y (length m) with cost c(i,j) = (x_i − y_j)²:
 *   R(0,0) = c(0,0);  R(i,0) = c(i,0) + R(i−1,0);  R(0,j) = c(0,j) + R(0,j−1)     (plain cumulative sums)
 *   R(i,j) = c(i,j) + softmin_γ(R(i−1,j−1), R(i−1,j), R(i,j−1))                   (i, j ≥ 1)
 *   softmin_γ(a,b,c) = μ − γ log(e^{(μ−a)/γ} + e^{(μ−b)/γ} + e^{(μ−c)/γ}),  μ = min(a,b,c)
 * and SoftDTW_SqDist = R(n−1,m−1). This equals Cuturi & Blondel's soft-DTW with R(−1,−1) = 0 and
 * R(−1,·) = R(·,−1) = +∞. γ must be > 0 (γ = 0 gives NaN).
 *
 * Gradient: E(i,j) = ∂R(n−1,m−1)/∂R(i,j) by the backward DP E(n−1,m−1) = 1,
 *   E(p) = Σ over successors s of p (right, down, diagonal, inside the grid) of E(s)·w(p→s),
 * where w(p→s) = 1 when s is on the first row or column (its only predecessor is p) and otherwise the softmin
 * weight e^{(R(s) − c(s) − R(p))/γ} = e^{(μ_s − R(p))/γ} / Σ_q e^{(μ_s − R(q))/γ}. Then
 *   ∂/∂x_i = Σ_j 2(x_i − y_j) E(i,j),   ∂/∂y_j = −Σ_i 2(x_i − y_j) E(i,j).
 */
function softmin(gamma: number, a: number, b: number, c: number): number {
  const mu = Math.min(a, b, c);
  return (
    mu -
    gamma * Math.log(Math.exp((mu - a) / gamma) + Math.exp((mu - b) / gamma) + Math.exp((mu - c) / gamma))
  );
}

/** The full DP table R (R[i][j]), by the recursion above. */
function softDtwTable(x: Float64Array, y: Float64Array, gamma: number): Float64Array[] {
  const n = x.length;
  const m = y.length;
  const R = Array.from({ length: n }, () => new Float64Array(m));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      const cost = (x[i] - y[j]) ** 2;
      if (i === 0 && j === 0) R[i][j] = cost;
      else if (j === 0) R[i][j] = cost + R[i - 1][0];
      else if (i === 0) R[i][j] = cost + R[0][j - 1];
      else R[i][j] = cost + softmin(gamma, R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]);
    }
  }
  return R;
}

/** [∂/∂x, ∂/∂y] of R(n−1,m−1), by pushing E(s) to the predecessors of each cell s in reverse order. */
function softDtwGradient(x: Float64Array, y: Float64Array, gamma: number): Float64Array {
  const n = x.length;
  const m = y.length;
  const R = softDtwTable(x, y, gamma);
  const E = Array.from({ length: n }, () => new Float64Array(m));
  E[n - 1][m - 1] = 1;
  const out = new Float64Array(n + m);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      const e = E[i][j];
      const d = 2 * (x[i] - y[j]);
      out[i] += d * e;
      out[n + j] -= d * e;
      if (i > 0 && j > 0) {
        const preds: Array<[number, number]> = [
          [i - 1, j - 1],
          [i - 1, j],
          [i, j - 1],
        ];
        const mu = Math.min(...preds.map(([a, b]) => R[a][b]));
        const ws = preds.map(([a, b]) => Math.exp((mu - R[a][b]) / gamma));
        const total = ws[0] + ws[1] + ws[2];
        preds.forEach(([a, b], k) => (E[a][b] += (e * ws[k]) / total));
      } else if (i > 0) E[i - 1][j] += e;
      else if (j > 0) E[i][j - 1] += e;
    }
  }
  return out;
}

/** Checks the operands (x: n, y: m, gamma: 1) of the soft-DTW ops. */
function softDtwDims(name: string, [, , dGamma]: readonly number[]): void {
  if (dGamma !== 1) throw dimError(`${name}: gamma must be a scalar (dim 1), got dim ${dGamma}`);
}

/**
 * Most DP cells the gradient may keep (its table is a per-thread local array): 2^15 cells are 256 KiB in
 * double precision, within CUDA's per-thread local memory and a CPU thread's stack.
 */
export const MAX_SOFTDTW_GRADIENT_CELLS = 1 << 15;

/** C++ for one forward pass; `cell(i, j)` is the lvalue holding R(i,j), and all names come from `ctx`. */
function emitSoftDtwForward(
  ctx: EmitContext,
  cell: (i: string, j: string) => string,
  [i, j, d, mu, a, b, c]: readonly string[],
): string {
  const [x, y, g] = ctx.args;
  const n = ctx.argDims[0];
  const m = ctx.argDims[1];
  const T = ctx.T;
  return (
    `${T} ${d} = ${x}[0] - ${y}[0]; ${cell('0', '0')} = ${d} * ${d}; ` +
    `for (int ${i} = 1; ${i} < ${n}; ${i}++) { ${d} = ${x}[${i}] - ${y}[0]; ` +
    `${cell(i, '0')} = ${d} * ${d} + ${cell(`${i} - 1`, '0')}; } ` +
    `for (int ${j} = 1; ${j} < ${m}; ${j}++) { ` +
    `${d} = ${x}[0] - ${y}[${j}]; ${cell('0', j)} = ${d} * ${d} + ${cell('0', `${j} - 1`)}; ` +
    `for (int ${i} = 1; ${i} < ${n}; ${i}++) { ` +
    `${T} ${a} = ${cell(`${i} - 1`, `${j} - 1`)}; ${T} ${b} = ${cell(`${i} - 1`, j)}; ${T} ${c} = ${cell(i, `${j} - 1`)}; ` +
    `${T} ${mu} = keops_min(keops_min(${a}, ${b}), ${c}); ${d} = ${x}[${i}] - ${y}[${j}]; ` +
    `${cell(i, j)} = ${d} * ${d} + ${mu} - ${g}[0] * keops_log(keops_exp((${mu} - ${a}) / ${g}[0]) + ` +
    `keops_exp((${mu} - ${b}) / ${g}[0]) + keops_exp((${mu} - ${c}) / ${g}[0])); } } `
  );
}

export const SoftDTW_SqDist: OpDef = {
  name: 'SoftDTW_SqDist',
  doc: 'SoftDTW_SqDist(x,y,gamma): soft-DTW between the scalar sequences x and y with cost (x_i−y_j)², gamma > 0 (dim 1; no gradient in gamma)',
  arity: 3,
  params: [],
  dim: (dims) => {
    softDtwDims('SoftDTW_SqDist', dims);
    return 1;
  },
  evaluate: ([x, y, g]) => {
    const R = softDtwTable(x, y, g[0]);
    return Float64Array.of(R[x.length - 1][y.length - 1]);
  },
  // No derivative with respect to gamma (as KeOps): asking for one is an error, not a silent zero.
  vjp: ({ children: [x, y, gamma], G, b, needs }) => {
    if (needs[2]) {
      throw new KeOpsError(
        'ERR_NOT_DIFFERENTIABLE',
        `SoftDTW_SqDist has no derivative with respect to its gamma argument ${gamma}`,
      );
    }
    const grad = b.call('GradSoftDTW_SqDist', [x, y, gamma]);
    return [
      needs[0] ? b.mul(G, b.call('Extract', [grad], [0, x.dim])) : undefined,
      needs[1] ? b.mul(G, b.call('Extract', [grad], [x.dim, y.dim])) : undefined,
    ];
  },
  // Only the current column R(·, j) is kept: col[i] holds R(i,j) once updated and R(i,j−1) before.
  emit: (ctx) => {
    const n = ctx.argDims[0];
    const [col, i, j, d, mu, a, b, c] = ['col', 'i', 'j', 'd', 'mu', 'a', 'b', 'c'].map((h) => ctx.fresh(h));
    // R(i−1, j−1) was overwritten by R(i−1, j); keep it in a register, read before the update.
    const diag = ctx.fresh('diag');
    const [x, y, g] = ctx.args;
    const m = ctx.argDims[1];
    const T = ctx.T;
    return (
      `{ ${T} ${col}[${n}]; ${T} ${d} = ${x}[0] - ${y}[0]; ${col}[0] = ${d} * ${d}; ` +
      `for (int ${i} = 1; ${i} < ${n}; ${i}++) { ${d} = ${x}[${i}] - ${y}[0]; ${col}[${i}] = ${d} * ${d} + ${col}[${i} - 1]; } ` +
      `for (int ${j} = 1; ${j} < ${m}; ${j}++) { ` +
      `${T} ${diag} = ${col}[0]; ${d} = ${x}[0] - ${y}[${j}]; ${col}[0] = ${d} * ${d} + ${col}[0]; ` +
      `for (int ${i} = 1; ${i} < ${n}; ${i}++) { ` +
      `${T} ${a} = ${diag}; ${T} ${b} = ${col}[${i} - 1]; ${T} ${c} = ${col}[${i}]; ${diag} = ${c}; ` +
      `${T} ${mu} = keops_min(keops_min(${a}, ${b}), ${c}); ${d} = ${x}[${i}] - ${y}[${j}]; ` +
      `${col}[${i}] = ${d} * ${d} + ${mu} - ${g}[0] * keops_log(keops_exp((${mu} - ${a}) / ${g}[0]) + ` +
      `keops_exp((${mu} - ${b}) / ${g}[0]) + keops_exp((${mu} - ${c}) / ${g}[0])); } } ` +
      `${ctx.out}[0] = ${col}[${n - 1}]; }`
    );
  },
};

export const GradSoftDTW_SqDist: OpDef = {
  name: 'GradSoftDTW_SqDist',
  doc: 'GradSoftDTW_SqDist(x,y,gamma): internal, the gradient of SoftDTW_SqDist with respect to [x, y] (dim n+m)',
  arity: 3,
  params: [],
  dim: (dims) => {
    softDtwDims('GradSoftDTW_SqDist', dims);
    const [n, m] = dims;
    if (n * m > MAX_SOFTDTW_GRADIENT_CELLS) {
      throw new KeOpsError(
        'ERR_FORMULA_TOO_LARGE',
        `GradSoftDTW_SqDist: the gradient of soft-DTW between sequences of lengths ${n} and ${m} needs a ` +
          `${n}×${m} table, more than the ${MAX_SOFTDTW_GRADIENT_CELLS} cells a kernel thread can hold`,
      );
    }
    return n + m;
  },
  evaluate: ([x, y, g]) => softDtwGradient(x, y, g[0]),
  vjp: 'none',
  /**
   * Forward pass into r[j·n + i] = R(i,j), then the backward pass in the "pull" form, column by column from
   * the last: E(i,j) = Σ_s E(s) w((i,j)→s) with the columns E(·,j) in `ecur` and E(·,j+1) in `enext`.
   */
  emit: (ctx) => {
    const [x, y, g] = ctx.args;
    const n = ctx.argDims[0];
    const m = ctx.argDims[1];
    const T = ctx.T;
    const names = ['r', 'i', 'j', 'd', 'mu', 'a', 'b', 'c', 'ecur', 'enext', 'e', 'k'].map((h) =>
      ctx.fresh(h),
    );
    const [r, i, j, d, mu, a, b, c, ecur, enext, e, k] = names;
    const cell = (ci: string, cj: string): string => `${r}[(${cj}) * ${n} + (${ci})]`;
    const cost = (ci: string, cj: string): string =>
      `(${x}[${ci}] - ${y}[${cj}]) * (${x}[${ci}] - ${y}[${cj}])`;
    // Softmin weight of (i,j) in the interior successor s = (si, sj).
    const weight = (si: string, sj: string): string =>
      `keops_exp((${cell(si, sj)} - ${cost(si, sj)} - ${cell(i, j)}) / ${g}[0])`;
    const two = ctx.lit(2);
    return (
      `{ ${T} ${r}[${n * m}]; ` +
      emitSoftDtwForward(ctx, cell, [i, j, d, mu, a, b, c]) +
      `for (int ${k} = 0; ${k} < ${n + m}; ${k}++) ${ctx.out}[${k}] = ${ctx.lit(0)}; ` +
      `${T} ${ecur}[${n}]; ${T} ${enext}[${n}]; ` +
      `for (int ${k} = 0; ${k} < ${n}; ${k}++) { ${ecur}[${k}] = ${ctx.lit(0)}; ${enext}[${k}] = ${ctx.lit(0)}; } ` +
      `for (int ${j} = ${m - 1}; ${j} >= 0; ${j}--) { for (int ${i} = ${n - 1}; ${i} >= 0; ${i}--) { ` +
      `${T} ${e} = ${ctx.lit(0)}; ` +
      `if (${i} == ${n - 1} && ${j} == ${m - 1}) ${e} = ${ctx.lit(1)}; ` +
      // Successor (i+1, j): on the first column (j = 0) its only predecessor is (i, j).
      `if (${i} + 1 < ${n}) ${e} += ${ecur}[${i} + 1] * (${j} == 0 ? ${ctx.lit(1)} : ${weight(`${i} + 1`, j)}); ` +
      // Successor (i, j+1): on the first row (i = 0) its only predecessor is (i, j).
      `if (${j} + 1 < ${m}) ${e} += ${enext}[${i}] * (${i} == 0 ? ${ctx.lit(1)} : ${weight(i, `${j} + 1`)}); ` +
      `if (${i} + 1 < ${n} && ${j} + 1 < ${m}) ${e} += ${enext}[${i} + 1] * ${weight(`${i} + 1`, `${j} + 1`)}; ` +
      `${ecur}[${i}] = ${e}; ${d} = ${two} * (${x}[${i}] - ${y}[${j}]) * ${e}; ` +
      `${ctx.out}[${i}] += ${d}; ${ctx.out}[${n} + ${j}] -= ${d}; } ` +
      `for (int ${k} = 0; ${k} < ${n}; ${k}++) ${enext}[${k}] = ${ecur}[${k}]; } }`
    );
  },
};

export const SPECIAL_OPS: readonly OpDef[] = [BSpline, SoftDTW_SqDist, GradSoftDTW_SqDist];

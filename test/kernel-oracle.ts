/**
 * Independent float64 oracles for the kernel language: KeOps 1.x's kernel definitions written out by hand
 * (no parser, no formula nodes), for the kernel-language and kernelProduct tests.
 */
export type Vec = ArrayLike<number>;

/** ⟨x−y, G(x−y)⟩ with G a scalar (1 value), a diagonal (D values) or a full D×D matrix (D² values). */
export function weightedSqDist(g: Vec, x: Vec, y: Vec): number {
  const D = x.length;
  let s = 0;
  if (g.length === 1) {
    for (let k = 0; k < D; k++) s += g[0] * (x[k] - y[k]) ** 2;
  } else if (g.length === D) {
    for (let k = 0; k < D; k++) s += g[k] * (x[k] - y[k]) ** 2;
  } else {
    for (let k = 0; k < D; k++) for (let l = 0; l < D; l++) s += (x[k] - y[k]) * g[k * D + l] * (x[l] - y[l]);
  }
  return s;
}

export function dot(x: Vec, y: Vec): number {
  let s = 0;
  for (let k = 0; k < x.length; k++) s += x[k] * y[k];
  return s;
}

/** k(x,y) of each atom (γ unused for linear). */
export const ATOM: Record<string, (g: Vec, x: Vec, y: Vec) => number> = {
  gaussian: (g, x, y) => Math.exp(-weightedSqDist(g, x, y)),
  laplacian: (g, x, y) => Math.exp(-Math.sqrt(weightedSqDist(g, x, y))),
  cauchy: (g, x, y) => 1 / (1 + weightedSqDist(g, x, y)),
  inverse_multiquadric: (g, x, y) => 1 / Math.sqrt(1 + weightedSqDist(g, x, y)),
  distance: (g, x, y) => Math.sqrt(weightedSqDist(g, x, y)),
  linear: (_g, x, y) => dot(x, y),
};

/** log k(x,y) as KeOps 1.x's log-domain formulas define it (ε = 1e-8 where the kernel may vanish). */
export const ATOM_LOG: Record<string, (g: Vec, x: Vec, y: Vec) => number> = {
  gaussian: (g, x, y) => -weightedSqDist(g, x, y),
  laplacian: (g, x, y) => -Math.sqrt(weightedSqDist(g, x, y)),
  cauchy: (g, x, y) => -Math.log(1 + weightedSqDist(g, x, y)),
  inverse_multiquadric: (g, x, y) => -0.5 * Math.log(1 + weightedSqDist(g, x, y)),
  distance: (g, x, y) => 0.5 * Math.log(weightedSqDist(g, x, y) + 1e-8),
  linear: (_g, x, y) => 0.5 * Math.log(dot(x, y) ** 2 + 1e-8),
};

/** Row `row` of a row-major array of width `dim`. */
export function rowOf(a: Vec, row: number, dim: number): Float64Array {
  return Float64Array.from({ length: dim }, (_, k) => a[row * dim + k]);
}

/** A random symmetric positive definite D×D matrix (row-major D² values): L Lᵀ + I with small entries. */
export function spdMatrix(r: () => number, D: number): Float64Array {
  const L = Float64Array.from({ length: D * D }, () => r() - 0.5);
  const A = new Float64Array(D * D);
  for (let k = 0; k < D; k++) {
    for (let l = 0; l < D; l++) {
      let s = k === l ? 1 : 0;
      for (let m = 0; m < D; m++) s += L[k * D + m] * L[l * D + m];
      A[k * D + l] = s;
    }
  }
  return A;
}

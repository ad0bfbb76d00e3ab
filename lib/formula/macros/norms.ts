/**
 * (d) Norms and distances (docs/semantics.md 1.5 d): parse-time functions that expand into ordinary nodes,
 * exactly as KeOps expands them. Dimensions are checked here, so errors name the function the user wrote.
 */
import type { Node } from '../node';
import { type Builder, dimError, type MacroDef } from '../opdef';

/** Rule 1.4 for the operands of a difference f-g: equal dims, or one of them a scalar. */
function checkDifference(name: string, f: Node, g: Node): void {
  if (f.dim !== g.dim && f.dim !== 1 && g.dim !== 1) {
    throw dimError(
      `${name}: the two points must have the same dim (or one be a scalar), got ${f.dim} and ${g.dim}`,
    );
  }
}

/** SqNorm2(f) = Sum(f**2). */
const sqNorm2 = (b: Builder, f: Node): Node => b.sum(b.call('Square', [f]));

/** SqNormIso(s,f) = s*SqNorm2(f), s a scalar. */
function sqNormIso(b: Builder, s: Node, f: Node, name = 'SqNormIso'): Node {
  if (s.dim !== 1) throw dimError(`${name}: the weight s must be a scalar (dim 1), got dim ${s.dim}`);
  return b.mul(s, sqNorm2(b, f));
}

/** SqNormDiag(s,f) = Sum(s*Square(f)), s of dim d(f) (or 1). */
function sqNormDiag(b: Builder, s: Node, f: Node, name = 'SqNormDiag'): Node {
  if (s.dim !== f.dim && s.dim !== 1) {
    throw dimError(`${name}: the diagonal weights s must have the dim of f (${f.dim}), got dim ${s.dim}`);
  }
  return b.sum(b.mul(s, b.call('Square', [f])));
}

/** SymSqNorm(A,f) = Sum(A*TensorProd(f,f)) = Σ_{k,l} A[k·d(f)+l] f_k f_l, A of dim d(f)² (or 1). */
function symSqNorm(b: Builder, A: Node, f: Node, name = 'SymSqNorm'): Node {
  if (A.dim !== f.dim * f.dim && A.dim !== 1) {
    throw dimError(
      `${name}: the matrix A must have dim d(f)² = ${f.dim * f.dim} (a ${f.dim}×${f.dim} matrix), ` +
        `got dim ${A.dim}`,
    );
  }
  return b.sum(b.mul(A, b.call('TensorProd', [f, f])));
}

/** WeightedSqNorm(s,f): isotropic, diagonal or full quadratic form, chosen by d(s) (1, d(f) or d(f)²). */
function weightedSqNorm(b: Builder, s: Node, f: Node, name = 'WeightedSqNorm'): Node {
  if (s.dim === 1) return sqNormIso(b, s, f, name);
  if (s.dim === f.dim) return sqNormDiag(b, s, f, name);
  if (s.dim === f.dim * f.dim) return symSqNorm(b, s, f, name);
  throw dimError(
    `${name}: the weights s must have dim 1 (isotropic), d(f) = ${f.dim} (diagonal) ` +
      `or d(f)² = ${f.dim * f.dim} ` +
      `(full matrix), got dim ${s.dim}`,
  );
}

export const SqNorm2: MacroDef = {
  name: 'SqNorm2',
  doc: 'SqNorm2(f): squared Euclidean norm, Sum(f**2) (dim 1)',
  arity: 1,
  params: [],
  expand: ([f], _p, b) => sqNorm2(b, f),
};

export const Norm2: MacroDef = {
  name: 'Norm2',
  doc: 'Norm2(f): Euclidean norm, Sqrt(f|f) (dim 1)',
  arity: 1,
  params: [],
  expand: ([f], _p, b) => b.call('Sqrt', [b.call('Scalprod', [f, f])]),
};

export const Normalize: MacroDef = {
  name: 'Normalize',
  doc: 'Normalize(f): f divided by its norm, Rsqrt(SqNorm2(f))*f (0 when f = 0)',
  arity: 1,
  params: [],
  expand: ([f], _p, b) => b.mul(b.call('Rsqrt', [sqNorm2(b, f)]), f),
};

export const SqDist: MacroDef = {
  name: 'SqDist',
  doc: 'SqDist(f,g): squared Euclidean distance, SqNorm2(f-g) (dim 1)',
  arity: 2,
  params: [],
  expand: ([f, g], _p, b) => {
    checkDifference('SqDist', f, g);
    return sqNorm2(b, b.sub(f, g));
  },
};

export const SqNormIso: MacroDef = {
  name: 'SqNormIso',
  doc: 'SqNormIso(s,f): isotropic weighted squared norm s*SqNorm2(f), s a scalar (dim 1)',
  arity: 2,
  params: [],
  expand: ([s, f], _p, b) => sqNormIso(b, s, f),
};

export const SqNormDiag: MacroDef = {
  name: 'SqNormDiag',
  doc: 'SqNormDiag(s,f): diagonal weighted squared norm Sum(s*Square(f)), d(s) = d(f) (dim 1)',
  arity: 2,
  params: [],
  expand: ([s, f], _p, b) => sqNormDiag(b, s, f),
};

export const SymSqNorm: MacroDef = {
  name: 'SymSqNorm',
  doc: 'SymSqNorm(A,f): quadratic form Σ A[k·d+l] f_k f_l, Sum(A*TensorProd(f,f)), d(A) = d(f)² (dim 1)',
  arity: 2,
  params: [],
  expand: ([A, f], _p, b) => symSqNorm(b, A, f),
};

export const WeightedSqNorm: MacroDef = {
  name: 'WeightedSqNorm',
  doc: 'WeightedSqNorm(s,f): SqNormIso, SqNormDiag or SymSqNorm as d(s) is 1, d(f) or d(f)² (dim 1)',
  arity: 2,
  params: [],
  expand: ([s, f], _p, b) => weightedSqNorm(b, s, f),
};

export const WeightedSqDist: MacroDef = {
  name: 'WeightedSqDist',
  doc: 'WeightedSqDist(s,f,g): WeightedSqNorm(s, f-g) (dim 1)',
  arity: 3,
  params: [],
  expand: ([s, f, g], _p, b) => {
    checkDifference('WeightedSqDist', f, g);
    return weightedSqNorm(b, s, b.sub(f, g), 'WeightedSqDist');
  },
};

export const NORM_MACROS: readonly MacroDef[] = [
  SqNorm2,
  Norm2,
  Normalize,
  SqDist,
  SqNormIso,
  SqNormDiag,
  SymSqNorm,
  WeightedSqNorm,
  WeightedSqDist,
];

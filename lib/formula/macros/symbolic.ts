/**
 * Symbolic operators (docs/semantics.md 1.5 h and 3.4), expanded at parse time into ordinary formulas:
 * Grad, Diff, GradMatrix, Divergence, Laplacian, the linear-operator constructions TraceOperator,
 * AdjointOperator and SumLinOperator, and AutoFactorize.
 *
 * Everything is built from reverse-mode gradients (diff.ts): a forward derivative J·u is the gradient, with
 * respect to a dummy cotangent e, of Jᵀe; Jacobian diagonals come from gradients against unit vectors, which
 * the simplification rules keep scalar (ElemT products).
 */
import { KeOpsError } from '../../errors';
import { isVar, MAX_GRADIENT_NODES, varsOf } from '../diff';
import { isLinear } from '../linear';
import { type Node, topoOrder } from '../node';
import { type Builder, dimError, type MacroDef, paramError } from '../opdef';
import { briefText } from '../rules';
import { CAT_DUMMY, CAT_I, CAT_J } from '../ops/leaves';

const position = (v: Node): number => v.params[0] as number;
const category = (v: Node): number => v.params[2] as number;

/** The first variable position after every variable used in the given formulas. */
function nextFreePosition(...formulas: readonly Node[]): number {
  let max = -1;
  for (const f of formulas) for (const v of varsOf(f)) max = Math.max(max, position(v));
  return max + 1;
}

function requireVar(what: string, v: Node): void {
  if (!isVar(v))
    throw paramError(`${what}: the variable argument must be a variable (Var or alias), got ${briefText(v)}`);
}

function requireDim(what: string, role: string, n: Node, dims: readonly number[]): void {
  if (!dims.includes(n.dim)) {
    const want =
      dims.length === 1 ? `${dims[0]}` : `${dims.slice(0, -1).join(', ')} or ${dims[dims.length - 1]}`;
    throw dimError(`${what}: ${role} must have dim ${want}, got ${briefText(n)} of dim ${n.dim}`);
  }
}

function requireLinear(what: string, f: Node, v: Node): void {
  if (!isLinear(f, v))
    throw new KeOpsError('ERR_NOT_LINEAR', `${what}: ${briefText(f)} is not a linear function of ${v}`);
}

/**
 * Operators taking one gradient per component (GradMatrix, Divergence, Laplacian, TraceOperator) bound the
 * total work, (distinct nodes of the formula) × (number of gradients), like a single gradient (diff.ts).
 */
function checkDerivativeWork(what: string, f: Node, gradients: number): void {
  const nodes = topoOrder(f).length;
  if (nodes * gradients > MAX_GRADIENT_NODES) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `${what}: ${gradients} gradients of a formula of ${nodes} distinct nodes exceed the limit of ` +
        `${MAX_GRADIENT_NODES} nodes differentiated`,
    );
  }
}

/** The k-th unit vector of dim d (the scalar 1 when d = 1). */
const unitVector = (b: Builder, d: number, k: number): Node =>
  d === 1 ? b.int(1) : b.call('ElemT', [b.int(1)], [d, k]);

/** Combines terms pairwise, so that the result is nested log2(n) deep rather than n deep. */
function balanced(terms: readonly Node[], combine: (x: Node, y: Node) => Node): Node {
  let level = terms.slice();
  while (level.length > 1) {
    const next: Node[] = [];
    for (let k = 0; k + 1 < level.length; k += 2) next.push(combine(level[k], level[k + 1]));
    if (level.length % 2 === 1) next.push(level[level.length - 1]);
    level = next;
  }
  return level[0];
}

/** Σ_k w_k ∂f_k/∂v_k (w = undefined means weights 1): the (weighted) trace of the Jacobian of f. */
function jacobianTrace(what: string, b: Builder, f: Node, v: Node, w?: Node): Node {
  const d = v.dim;
  checkDerivativeWork(what, f, d);
  const terms: Node[] = [];
  for (let k = 0; k < d; k++) {
    const diagonal =
      d === 1 ? b.grad(f, v, b.int(1)) : b.call('Elem', [b.grad(f, v, unitVector(b, d, k))], [k]);
    terms.push(w === undefined || w.dim === 1 ? diagonal : b.mul(b.call('Elem', [w], [k]), diagonal));
  }
  const trace = balanced(terms, (x, y) => b.add(x, y));
  return w !== undefined && w.dim === 1 ? b.mul(w, trace) : trace;
}

/** Grad(f, v[, e]) = (∂f/∂v)ᵀ·e; without e, a new input variable of dim d(f) indexed like the other index. */
function grad(b: Builder, f: Node, v: Node, e?: Node): Node {
  requireVar('Grad', v);
  if (e === undefined) {
    const cat = category(v);
    if (cat !== CAT_I && cat !== CAT_J) {
      throw new KeOpsError(
        'ERR_FORMULA_ARITY',
        `Grad: the gradient input must be given, as in Grad(f, v, e), when v = ${v} is not an i- or j-variable`,
      );
    }
    e = b.variable(nextFreePosition(f, v), f.dim, 1 - cat);
  }
  return b.grad(f, v, e);
}

/** Diff(f, v, u) = (∂f/∂v)·u, the gradient with respect to a dummy e of (∂f/∂v)ᵀ·e. */
function forwardDiff(b: Builder, f: Node, v: Node, u: Node): Node {
  requireVar('Diff', v);
  requireDim('Diff', 'the direction u', u, [v.dim]);
  const e = b.variable(nextFreePosition(f, v, u), f.dim, CAT_DUMMY);
  const result = b.grad(b.grad(f, v, e), e, u);
  if (varsOf(result).has(e))
    throw new KeOpsError('ERR_INTERNAL', `Diff: the dummy variable survived in ${briefText(result)}`);
  return result;
}

/**
 * At most this many sub-formulas are marked by AutoFactorize (the largest ones). The marks are nominal: code
 * generation computes every distinct sub-formula once anyway, and nesting thousands of Factorize nodes would
 * only exceed the depth limit.
 */
export const MAX_AUTO_FACTORS = 100;

/**
 * AutoFactorize (KeOps): factorize the largest sub-formula used at least twice, then repeat, a factorized
 * sub-formula counting once. Marking a node only changes the use counts of smaller nodes (its descendants),
 * so one pass by decreasing size, parents before children, chooses the same factors as the repetition.
 */
export function autoFactorize(b: Builder, f: Node): Node {
  const bySize = topoOrder(f).reverse(); // parents before children
  bySize.sort((p, q) => q.treeSize - p.treeSize); // stable: ties keep that order
  const uses = new Map<Node, number>([[f, 1]]);
  const factors: Node[] = [];
  for (const n of bySize) {
    let count = uses.get(n) ?? 0;
    if (count >= 2 && n.children.length > 0 && factors.length < MAX_AUTO_FACTORS) {
      factors.push(n);
      count = 1;
    }
    for (const c of n.children) uses.set(c, Math.min(2, (uses.get(c) ?? 0) + count));
  }
  return factors.reduce((acc, g) => b.call('Factorize', [acc, g]), f);
}

export const GradMacro: MacroDef = {
  name: 'Grad',
  doc: 'Grad(f,v,e): gradient (∂f/∂v)ᵀe of f w.r.t. the variable v (dim d(v)); e defaults to a new input variable',
  arity: [2, 3],
  params: [],
  expand: ([f, v, e], _p, b) => grad(b, f, v, e),
};

export const DiffMacro: MacroDef = {
  name: 'Diff',
  doc: 'Diff(f,v,u): forward derivative (∂f/∂v)·u of f w.r.t. v in the direction u (dim d(f))',
  arity: 3,
  params: [],
  expand: ([f, v, u], _p, b) => forwardDiff(b, f, v, u),
};

export const GradMatrixMacro: MacroDef = {
  name: 'GradMatrix',
  doc: 'GradMatrix(f,v): transposed Jacobian of f w.r.t. v, block k = gradient of f_k (dim d(f)·d(v))',
  arity: 2,
  params: [],
  expand: ([f, v], _p, b) => {
    requireVar('GradMatrix', v);
    checkDerivativeWork('GradMatrix', f, f.dim);
    const blocks: Node[] = [];
    for (let k = 0; k < f.dim; k++) blocks.push(b.grad(f, v, unitVector(b, f.dim, k)));
    return balanced(blocks, (x, y) => b.call('Concat', [x, y]));
  },
};

export const DivergenceMacro: MacroDef = {
  name: 'Divergence',
  doc: 'Divergence(f,v): Σ_k ∂f_k/∂v_k, the trace of the Jacobian (d(f) = d(v); dim 1)',
  arity: 2,
  params: [],
  expand: ([f, v], _p, b) => {
    requireVar('Divergence', v);
    requireDim('Divergence', 'the formula', f, [v.dim]);
    return jacobianTrace('Divergence', b, f, v);
  },
};

export const LaplacianMacro: MacroDef = {
  name: 'Laplacian',
  doc: 'Laplacian(f,v): Σ_k ∂²f/∂v_k², the divergence of the gradient of the scalar f (dim 1)',
  arity: 2,
  params: [],
  expand: ([f, v], _p, b) => {
    requireVar('Laplacian', v);
    requireDim('Laplacian', 'the formula', f, [1]);
    return jacobianTrace('Laplacian', b, b.grad(f, v, b.int(1)), v);
  },
};

export const TraceOperatorMacro: MacroDef = {
  name: 'TraceOperator',
  doc: 'TraceOperator(f,v,w): trace of the linear map v ↦ f (d(f) = d(v)), weighted by w if given (dim 1)',
  arity: [2, 3],
  params: [],
  expand: ([f, v, w], _p, b) => {
    requireVar('TraceOperator', v);
    requireLinear('TraceOperator', f, v);
    requireDim('TraceOperator', 'the formula', f, [v.dim]);
    if (w !== undefined) requireDim('TraceOperator', 'the weight w', w, [1, v.dim]);
    return jacobianTrace('TraceOperator', b, f, v, w);
  },
};

export const AdjointOperatorMacro: MacroDef = {
  name: 'AdjointOperator',
  doc: 'AdjointOperator(f,v,u): the adjoint of the linear map v ↦ f applied to u (dim d(v))',
  arity: 3,
  params: [],
  expand: ([f, v, u], _p, b) => {
    requireVar('AdjointOperator', v);
    requireLinear('AdjointOperator', f, v);
    requireDim('AdjointOperator', 'the argument u', u, [f.dim]);
    return b.grad(f, v, u);
  },
};

export const SumLinOperatorMacro: MacroDef = {
  name: 'SumLinOperator',
  doc: 'SumLinOperator(f,v,wl,wr): Σ_ij wl_i M_ij wr_j for the matrix M of the linear map v ↦ f (dim 1)',
  arity: [2, 4],
  params: [],
  expand: ([f, v, wl, wr], _p, b) => {
    requireVar('SumLinOperator', v);
    requireLinear('SumLinOperator', f, v);
    const left = wl ?? b.int(1);
    const right = wr ?? b.int(1);
    requireDim('SumLinOperator', 'the left weight wl', left, [1, f.dim]);
    requireDim('SumLinOperator', 'the right weight wr', right, [1, v.dim]);
    // wlᵀ M wr = <Mᵀ wl, wr>, and Mᵀ wl is the gradient of f against wl.
    return b.sum(b.mul(b.grad(f, v, left), right));
  },
};

export const AutoFactorizeMacro: MacroDef = {
  name: 'AutoFactorize',
  doc: 'AutoFactorize(f): f with every sub-formula used more than once marked for single evaluation (Factorize)',
  arity: 1,
  params: [],
  expand: ([f], _p, b) => autoFactorize(b, f),
};

export const SYMBOLIC_MACROS: readonly MacroDef[] = [
  GradMacro,
  DiffMacro,
  GradMatrixMacro,
  DivergenceMacro,
  LaplacianMacro,
  TraceOperatorMacro,
  AdjointOperatorMacro,
  SumLinOperatorMacro,
  AutoFactorizeMacro,
];

/**
 * Base-2 exponentials for the float32 CUDA kernels.
 *
 *   foldExpScale(root, positions, tag) -> Node
 *
 * Under NVRTC's fast math, expf(u) is ex2.approx(u · log2 e): a multiply and a MUFU per value. When u ends in a
 * product (or a quotient, a negation, a sum of such terms) whose other factor the kernel computes once per
 * output row (a parameter, an outer variable, a sub-formula of those, a constant), log2 e can join that factor:
 * Exp(-g*SqDist(x,y)) becomes 2^(SqDist(x,y) · (-g · log2 e)), where the formula prologue (formula.ts) computes
 * `-g · log2 e` once per row and the compiler folds constants. One multiply per pair fewer; the result differs
 * by the rounding of the scale (a few float32 ulp, as fast math already does). Exponents with no such factor
 * (Exp(-SqDist(x,y))) are left as they are: the multiply by log2 e would move, not vanish.
 *
 * The rewritten formula uses two operations that only this code generator builds (they are not in the formula
 * language): 2^f and the constants ±log2 e. Nodes are built as written (no simplification rules).
 */
import { KeOpsError } from '../errors';
import { varsOf } from '../formula/diff';
import { intern, type Node, topoOrder } from '../formula/node';
import type { OpDef } from '../formula/opdef';
import { vso } from '../formula/ops/helpers';
import { OPS } from '../formula/registry';
import { type ArgPosition, roleOf } from './formula';

const codegenOnly = (): never => {
  throw new KeOpsError('ERR_INTERNAL', 'base-2 exponentials are built by the CUDA code generator only');
};

/** 2^f, component-wise. */
const Exp2: OpDef = vso({
  name: 'KeOpsCudaExp2',
  doc: 'internal (CUDA code generation): 2^f',
  arity: 1,
  fn: (x) => 2 ** x,
  cexpr: (a) => `keops_exp2(${a})`,
  vjp: codegenOnly,
});

/** ±log2(e) = ±1 / ln 2 (a negative scale is a constant of its own: no negation left per pair). */
const log2eConstant = (sign: 1 | -1): OpDef => ({
  name: sign > 0 ? 'KeOpsCudaLog2E' : 'KeOpsCudaMinusLog2E',
  doc: `internal (CUDA code generation): ${sign > 0 ? '' : '-'}log2(e)`,
  arity: 0,
  params: [],
  dim: () => 1,
  evaluate: () => Float64Array.of(sign * Math.LOG2E),
  vjp: codegenOnly,
  emit: (ctx) => `${ctx.out}[0] = ${ctx.lit(sign * Math.LOG2E)};`,
});
const LOG2E: Readonly<Record<1 | -1, OpDef>> = { 1: log2eConstant(1), [-1]: log2eConstant(-1) };

/**
 * A node as written, without the builder's simplification rules (they would pull the scale's sign or constant
 * out of the factor that absorbs it, back into the per-pair code).
 */
function node(op: OpDef, children: readonly Node[]): Node {
  return intern(
    op,
    children,
    [],
    op.dim(
      children.map((c) => c.dim),
      [],
    ),
  );
}

const op = (name: string): OpDef => OPS.get(name) as OpDef;

export function foldExpScale(root: Node, positions: readonly ArgPosition[], tag: 0 | 1): Node {
  const readsInner = (n: Node): boolean => {
    for (const v of varsOf(n)) {
      const declared = positions[v.params[0] as number];
      if (declared !== undefined && roleOf(declared.cat, tag) === 'inner') return true;
    }
    return false;
  };
  /** n · (sign · log2 e) with the scale absorbed by a factor that reads no inner variable, or undefined. */
  // Memoised by (node, sign): shared sub-formulas are visited once (a DAG can be exponentially larger as a tree).
  const memo = new Map<string, Node | undefined>();
  const scaled = (n: Node, sign: 1 | -1): Node | undefined => {
    const key = `${n.id}:${sign}`;
    if (memo.has(key)) return memo.get(key);
    const result = scaledUncached(n, sign);
    memo.set(key, result);
    return result;
  };
  const scaledUncached = (n: Node, sign: 1 | -1): Node | undefined => {
    if (!readsInner(n)) return node(op('Mult'), [n, node(LOG2E[sign], [])]);
    const [a, b] = n.children;
    switch (n.op.name) {
      case 'Minus':
        return scaled(a, sign > 0 ? -1 : 1);
      case 'Mult': {
        // The factor that reads no inner variable takes the scale; else whichever can.
        if (!readsInner(a)) return node(n.op, [scaled(a, sign) as Node, b]);
        if (!readsInner(b)) return node(n.op, [a, scaled(b, sign) as Node]);
        const a2 = scaled(a, sign);
        if (a2 !== undefined) return node(n.op, [a2, b]);
        const b2 = scaled(b, sign);
        return b2 === undefined ? undefined : node(n.op, [a, b2]);
      }
      case 'Divide': {
        const a2 = scaled(a, sign);
        if (a2 !== undefined) return node(n.op, [a2, b]);
        if (readsInner(b)) return undefined;
        return node(n.op, [a, node(op('Divide'), [b, node(LOG2E[sign], [])])]);
      }
      case 'Add':
      case 'Subtract': {
        const a2 = scaled(a, sign);
        const b2 = a2 === undefined ? undefined : scaled(b, sign);
        return b2 === undefined ? undefined : node(n.op, [a2 as Node, b2]);
      }
      default:
        return undefined;
    }
  };

  const rebuilt = new Map<Node, Node>();
  for (const n of topoOrder(root)) {
    const children = n.children.map((c) => rebuilt.get(c) ?? c);
    if (n.op.name === 'Exp' && readsInner(n)) {
      const exponent = scaled(children[0], 1);
      if (exponent !== undefined) {
        rebuilt.set(n, node(Exp2, [exponent]));
        continue;
      }
    }
    if (children.some((c, k) => c !== n.children[k])) rebuilt.set(n, intern(n.op, children, n.params, n.dim));
  }
  return rebuilt.get(root) ?? root;
}

/**
 * Factorize(f, g): the value of f, with the promise that the sub-formula g of f is computed once
 * (docs/semantics.md 1.5 h). Code generation already emits each distinct DAG node once, so the node only
 * records the intent; it is kept so that printed formulas round-trip and match KeOps' spelling.
 */
import { type Node, topoOrder } from '../node';
import type { OpDef } from '../opdef';

const LEAVES = new Set(['Var', 'Zero', 'IntCst', 'RatCst']);

/** How many times each node occurs in f seen as a tree, capped at 2 ("shared"). */
export function occurrenceCounts(f: Node): Map<Node, number> {
  const counts = new Map<Node, number>([[f, 1]]);
  const order = topoOrder(f);
  // Reverse topological order visits every parent before its children, so each count is final when used.
  for (let k = order.length - 1; k >= 0; k--) {
    const n = order[k];
    const m = counts.get(n) ?? 0;
    for (const c of n.children) counts.set(c, Math.min(2, (counts.get(c) ?? 0) + m));
  }
  return counts;
}

/** Factorize(f, g) is pointless when g is a leaf or occurs at most once in f (KeOps 3.5). */
export function isFactorizationTrivial(f: Node, g: Node): boolean {
  if (LEAVES.has(g.op.name)) return true;
  return (occurrenceCounts(f).get(g) ?? 0) < 2;
}

export const Factorize: OpDef = {
  name: 'Factorize',
  doc: 'Factorize(f,g): f, with its sub-formula g computed once',
  arity: 2,
  params: [],
  dim: ([df]) => df,
  evaluate: ([f]) => Float64Array.from(f),
  // f contains g, so the whole derivative flows through f.
  vjp: ({ G }) => [G, undefined],
  emit: (ctx) => {
    const k = ctx.fresh('k');
    return `for (int ${k} = 0; ${k} < ${ctx.dim}; ${k}++) ${ctx.out}[${k}] = ${ctx.args[0]}[${k}];`;
  },
};

export const FACTORIZE_OPS: readonly OpDef[] = [Factorize];

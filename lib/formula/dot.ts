/**
 * Graphviz rendering of formulas and reductions: one box per distinct node of the DAG (shared subformulas
 * appear once), labelled with the operation, its parameters and its dimension; arrows go from operands to the
 * operation that reads them (numbered when an operation has several), so the result sits at the top.
 *
 *     dot -Tsvg f.dot > f.svg
 */
import type { VariableCategory } from './aliases';
import { isRational, type Node, printParam, topoOrder } from './node';
import { ratToString } from './rational';
import type { Reduction } from './reduction';

/** Names of variables by position (alias names, or descriptions of bound data). */
export type DotNames = ReadonlyMap<number, string>;

export interface DotRoot {
  readonly node: Node;
  /** Label of the arrow from this formula to the reduction that reads it, if any. */
  readonly role?: string;
}

const CATEGORY = ['Vi', 'Vj', 'Pm'] as const;
const CATEGORY_COLOR = ['lightblue', 'lightsalmon', 'lightgrey'] as const;

/** A DOT string literal: every character but `"` and `\` is safe inside quotes; newlines become `\n`. */
export function dotString(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r?\n/g, '\\n')}"`;
}

function nodeLabel(n: Node, names: DotNames | undefined): { label: string; attrs: string } {
  const params = n.params as readonly number[];
  switch (n.op.name) {
    case 'Var': {
      const [pos, dim, cat] = params;
      const kind = cat >= 0 && cat <= 2 ? `${CATEGORY[cat]} #${pos}` : `Var #${pos}, cat ${cat}`;
      const name = names?.get(pos);
      const label = name === undefined ? `${kind}\ndim ${dim}` : `${name}\n${kind}, dim ${dim}`;
      const color = cat >= 0 && cat <= 2 ? CATEGORY_COLOR[cat as VariableCategory] : 'white';
      return { label, attrs: `shape=ellipse, style=filled, fillcolor=${color}` };
    }
    case 'IntCst':
      return { label: String(params[0]), attrs: 'shape=plaintext' };
    case 'RatCst': {
      const r = n.params[0];
      return { label: isRational(r) ? ratToString(r) : printParam(r), attrs: 'shape=plaintext' };
    }
    default: {
      const shown = n.params.length === 0 ? '' : ` ${n.params.map(printParam).join(', ')}`;
      return { label: `${n.op.name}${shown}\ndim ${n.dim}`, attrs: 'shape=box' };
    }
  }
}

/**
 * DOT text for formula DAGs, optionally under a top node (a reduction): `top.label` is its label and each root
 * an arrow into it.
 */
export function graphToDot(
  roots: readonly DotRoot[],
  names?: DotNames,
  top?: { readonly label: string },
  title = 'formula',
): string {
  const ids = new Map<Node, string>();
  const lines = [
    `digraph ${dotString(title)} {`,
    '  rankdir=BT;',
    '  node [fontname="Helvetica", fontsize=11];',
    '  edge [fontname="Helvetica", fontsize=9];',
  ];
  for (const root of roots) {
    for (const n of topoOrder(root.node)) {
      if (ids.has(n)) continue;
      const id = `n${ids.size}`;
      ids.set(n, id);
      const { label, attrs } = nodeLabel(n, names);
      lines.push(`  ${id} [label=${dotString(label)}, ${attrs}];`);
      n.children.forEach((c, k) => {
        const edgeLabel = n.children.length > 1 ? ` [label=${dotString(String(k))}]` : '';
        lines.push(`  ${ids.get(c)} -> ${id}${edgeLabel};`);
      });
    }
  }
  if (top !== undefined) {
    lines.push(`  top [label=${dotString(top.label)}, shape=doubleoctagon, style=filled, fillcolor=khaki];`);
    for (const root of roots) {
      const edgeLabel = root.role === undefined ? '' : ` [label=${dotString(root.role)}]`;
      lines.push(`  ${ids.get(root.node)} -> top${edgeLabel};`);
    }
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/** DOT text of a formula. */
export function formulaToDot(node: Node, names?: DotNames): string {
  return graphToDot([{ node }], names);
}

/** DOT text of a reduction: its formula(s) under a node naming the reduction, its axis and output width. */
export function reductionToDot(red: Reduction, names?: DotNames): string {
  const over = red.tag === 0 ? 'j (one row per i)' : 'i (one row per j)';
  const k = red.k === undefined ? '' : `, K = ${red.k}`;
  const roots: DotRoot[] = [{ node: red.formula, role: red.formula2 === undefined ? undefined : 'formula' }];
  if (red.formula2 !== undefined) roots.push({ node: red.formula2, role: 'weight' });
  const label = `${red.def.name}${k}\nreduce over ${over}\noutput dim ${red.layout.dimVal + red.layout.dimIdx}`;
  return graphToDot(roots, names, { label }, 'reduction');
}

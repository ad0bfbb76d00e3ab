/**
 * `keops-node graph FORMULA [--aliases ALIASES]... [--grad NAME] [--kernel]`: prints the Graphviz DOT text of a
 * formula, of a reduction string (`Sum_Reduction(...,0)`) or of a high-level kernel (`--kernel`), or of its
 * gradient with respect to the alias NAME.
 *
 *     keops-node graph 'Exp(-SqDist(x,y))*b' -a 'x=Vi(3), y=Vj(3), b=Vj(1)' --grad x > f.dot
 *     dot -Tsvg f.dot > f.svg
 */
import { parseArgs } from 'node:util';
import { KeOpsError } from '../errors';
import { builder as b } from '../formula/builder';
import type { FormulaVariable } from '../formula/aliases';
import { formulaToDot } from '../formula/dot';
import { namesOf, parseFormula, parseReductionWithVariables } from '../formula/index';
import type { Node } from '../formula/node';
import { outputDim, reductionGradient, REDUCTIONS } from '../formula/reductions';
import { parseKernel } from '../kernels/language';
import { NODE_ALGEBRA } from '../kernels/product';

export const GRAPH_USAGE = `usage: keops-node graph FORMULA [--aliases ALIASES]... [--grad NAME] [--kernel]

Prints the Graphviz DOT text of FORMULA (a formula, or a reduction such as Sum_Reduction(f,0)); render it
with: dot -Tsvg f.dot > f.svg

  -a, --aliases ALIASES  variable declarations, separated by commas or semicolons (repeatable):
                         -a 'x = Vi(3), y = Vj(3), b = Vj(1)'
  -g, --grad NAME        draw the gradient with respect to the variable NAME instead: for a formula,
                         (df/dNAME)^T eta with a new input eta; for a reduction, its gradient reduction
  -k, --kernel           FORMULA is a high-level kernel such as 'gaussian(x,y) * linear(u,v)**2'; the
                         scale of atom k is the alias gammak (default: a new scalar parameter)
  -h, --help             this text`;

/** Where the command writes (the real streams, or a test's buffers). */
export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
}

/** Splits `x = Vi(3), y = Vj(0,3); b = Vj(1)` at the commas and semicolons outside parentheses. */
export function splitAliases(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    if (c === '(' || c === '[') depth++;
    else if (c === ')' || c === ']') depth = Math.max(0, depth - 1);
    else if ((c === ',' || c === ';') && depth === 0) {
      parts.push(text.slice(start, k));
      start = k + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

/** Whether the text is a reduction call: its first identifier names a reduction. */
function isReductionText(text: string): boolean {
  const head = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(/.exec(text);
  return head !== null && REDUCTIONS.has(head[1]);
}

function variableNamed(variables: readonly FormulaVariable[], name: string): FormulaVariable {
  const v = variables.find((w) => w.name === name);
  if (v === undefined) {
    const known = variables.flatMap((w) => (w.name === undefined ? [] : [w.name]));
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `--grad ${name}: no variable named '${name}' (declared: ${known.length > 0 ? known.join(', ') : 'none'})`,
    );
  }
  return v;
}

/** A name for a new input that no declared variable has. */
function freshName(variables: readonly FormulaVariable[], base: string): string {
  let name = base;
  for (let k = 1; variables.some((v) => v.name === name); k++) name = `${base}${k}`;
  return name;
}

/** The DOT text the command prints (exported for tests and other front ends). */
export function graphDot(text: string, aliases: readonly string[], grad?: string, kernel = false): string {
  if (!kernel && isReductionText(text)) {
    const { reduction, variables } = parseReductionWithVariables(text, aliases);
    if (grad === undefined) return reduction.toDot(namesOf(variables));
    const v = variableNamed(variables, grad);
    const next = Math.max(-1, ...variables.map((w) => w.pos)) + 1;
    const names = namesOf(variables);
    const eta = b.variable(next, outputDim(reduction), reduction.tag);
    names.set(next, freshName(variables, 'eta'));
    let saved: Node | undefined;
    if (reduction.layout.dimVal > 0) {
      saved = b.variable(next + 1, reduction.layout.dimVal, reduction.tag);
      names.set(next + 1, freshName(variables, 'saved'));
    }
    return reductionGradient(reduction, b.variable(v.pos, v.dim, v.cat), eta, saved).toDot(names);
  }
  const { node, variables } = kernel ? kernelFormula(text, aliases) : parseFormula(text, aliases);
  const names = namesOf(variables);
  if (grad === undefined) return formulaToDot(node, names);
  const v = variableNamed(variables, grad);
  const next = Math.max(-1, ...variables.map((w) => w.pos)) + 1;
  // As Grad(f, v) does: the new input is indexed like the other index.
  const eta = b.variable(next, node.dim, v.cat === 0 ? 1 : 0);
  names.set(next, freshName(variables, 'eta'));
  return formulaToDot(b.grad(node, b.variable(v.pos, v.dim, v.cat), eta), names);
}

/**
 * A high-level kernel as a formula: its variables are aliases, and the scale of atom k is the alias `gammak`
 * when declared, else a new scalar parameter of that name.
 */
export function kernelFormula(
  text: string,
  aliases: readonly string[],
): { node: Node; variables: FormulaVariable[] } {
  const kernel = parseKernel(text);
  const declared = parseFormula('0', aliases).variables;
  const variables = [...declared];
  const lookup = (name: string): Node => {
    const v = variables.find((w) => w.name === name);
    if (v === undefined) {
      throw new KeOpsError(
        'ERR_FORMULA_NAME',
        `the kernel uses '${name}': declare it with an alias such as '${name} = Vi(3)'`,
      );
    }
    return b.variable(v.pos, v.dim, v.cat);
  };
  const scales = kernel.atoms.map((atom, k) => {
    if (atom.name === 'linear') return undefined;
    const name = `gamma${k}`;
    if (!variables.some((w) => w.name === name)) {
      const pos = Math.max(-1, ...variables.map((w) => w.pos)) + 1;
      variables.push({ name, pos, dim: 1, cat: 2 });
    }
    return lookup(name);
  });
  const node = kernel.lower(NODE_ALGEBRA, {
    pair: (p) => ({ x: lookup(kernel.pairs[p].x), y: lookup(kernel.pairs[p].y) }),
    scale: (a) => scales[a],
  });
  return { node, variables };
}

/** Runs `keops-node graph ...` (argv after `graph`); returns the exit code. */
export function graphCommand(argv: readonly string[], io: CommandIO): number {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        aliases: { type: 'string', short: 'a', multiple: true },
        grad: { type: 'string', short: 'g' },
        kernel: { type: 'boolean', short: 'k' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    io.err(`${e instanceof Error ? e.message : String(e)}\n${GRAPH_USAGE}\n`);
    return 2;
  }
  if (parsed.values.help === true) {
    io.out(`${GRAPH_USAGE}\n`);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    io.err(`expected one FORMULA, got ${parsed.positionals.length}\n${GRAPH_USAGE}\n`);
    return 2;
  }
  const aliases = (parsed.values.aliases ?? []).flatMap(splitAliases);
  try {
    io.out(graphDot(parsed.positionals[0], aliases, parsed.values.grad, parsed.values.kernel === true));
    return 0;
  } catch (e) {
    if (!(e instanceof KeOpsError)) throw e;
    io.err(`${e.code}: ${e.message}\n`);
    return 1;
  }
}

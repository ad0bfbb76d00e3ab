/**
 * Public formula API: parse KeOps formula and reduction strings (with aliases) into hash-consed nodes.
 * The syntax is documented in docs/formula-syntax.md.
 */
import { KeOpsError } from '../errors';
import { type FormulaVariable, parseAliases, VARIABLE_FUNCTION_NAMES, VariableTable } from './aliases';
import { varsOf } from './diff';
import { formulaToDot } from './dot';
import { Node } from './node';
import { parseText, type ReductionTable } from './parser';
import type { Reduction } from './reduction';
import { makeReduction, REDUCTIONS } from './reductions';
import { MACROS, OPS } from './registry';

export type { FormulaVariable, VariableCategory } from './aliases';
export { MAX_FORMULA_LENGTH, MAX_NESTING } from './parser';

const REDUCTION_TABLE: ReductionTable = { defs: REDUCTIONS, make: makeReduction };

/** A parsed formula: its node (canonical, hash-consed), output dimension and input variables. */
export class Formula {
  readonly dim: number;
  /** Every input variable by increasing position: aliases (named), inline Var/Vi/Vj/Pm, and variables used. */
  readonly variables: ReadonlyArray<FormulaVariable>;

  constructor(
    readonly node: Node,
    variables: readonly FormulaVariable[],
  ) {
    if (!(node instanceof Node) || !Array.isArray(variables)) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        'new Formula(node, variables) takes a formula node and its variables; use parseFormula(text, aliases)',
      );
    }
    this.dim = node.dim;
    this.variables = Object.freeze(variables.map((v) => Object.freeze({ ...v })));
    Object.freeze(this);
  }

  /** The formula of a node built directly with the builder (its variables are those the node uses). */
  static fromNode(node: Node): Formula {
    const table = new VariableTable();
    for (const v of varsOf(node)) {
      const [pos, dim, cat] = v.params as readonly number[];
      if (cat !== 0 && cat !== 1 && cat !== 2) {
        throw new KeOpsError('ERR_INVALID_ARGUMENT', `the formula contains the internal variable ${v}`);
      }
      const conflict = table.declare({ pos, dim, cat }, `${v}`);
      if (conflict !== undefined) throw new KeOpsError('ERR_ALIAS', conflict);
    }
    return new Formula(node, table.list());
  }

  /** Canonical text (`Var(pos,dim,cat)` for variables): `parseFormula(f.toString()).node === f.node`. */
  toString(): string {
    return this.node.toString();
  }

  /** Stable content hash (hex SHA-256 of the canonical text). */
  get hash(): string {
    return this.node.hash;
  }

  /** Graphviz DOT text of the formula's DAG, variables labelled with their alias names. */
  toDot(): string {
    return formulaToDot(this.node, namesOf(this.variables));
  }
}

/** Alias names by position, for rendering. */
export function namesOf(variables: readonly FormulaVariable[]): Map<number, string> {
  return new Map(variables.flatMap((v) => (v.name === undefined ? [] : [[v.pos, v.name] as const])));
}

function isReservedName(name: string): boolean {
  return MACROS.has(name) || OPS.has(name) || REDUCTIONS.has(name) || VARIABLE_FUNCTION_NAMES.includes(name);
}

function checkArguments(fn: string, text: unknown, aliases: unknown): readonly string[] {
  if (typeof text !== 'string') {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${fn}: the formula must be a string, got ${describe(text)}`,
    );
  }
  if (aliases === undefined) return [];
  if (!Array.isArray(aliases)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${fn}: aliases must be an array of strings, got ${describe(aliases)}`,
    );
  }
  aliases.forEach((a: unknown, k) => {
    if (typeof a !== 'string') {
      throw new KeOpsError('ERR_INVALID_ARGUMENT', `${fn}: alias ${k} must be a string, got ${describe(a)}`);
    }
  });
  return aliases as readonly string[];
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}

/** Anything but a KeOpsError escaping the parser or the operations it calls is a bug: report it as one. */
function guarded<T>(run: () => T): T {
  try {
    return run();
  } catch (e) {
    if (e instanceof KeOpsError) throw e;
    const message = e instanceof Error ? e.message : String(e);
    throw new KeOpsError('ERR_INTERNAL', `unexpected error while parsing: ${message}`, { cause: e });
  }
}

/**
 * Parses a formula such as `Exp(-SqDist(x,y))*b` with aliases such as `['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)']`.
 * Throws KeOpsError (ERR_FORMULA_SYNTAX with `position`, ERR_FORMULA_NAME, ERR_FORMULA_DIM, ERR_ALIAS...).
 */
export function parseFormula(text: string, aliases?: readonly string[]): Formula {
  const list = checkArguments('parseFormula', text, aliases);
  return guarded(() => {
    const variables = parseAliases(list, isReservedName);
    const result = parseText(text, { expect: 'formula', variables, reductions: REDUCTION_TABLE });
    if (result.kind !== 'formula') throw new KeOpsError('ERR_INTERNAL', 'parser returned a reduction');
    return new Formula(result.node, result.variables);
  });
}

/** A parsed reduction with the input variables of its formulas (aliases, inline and used), by position. */
export interface ParsedReduction {
  readonly reduction: Reduction;
  readonly variables: ReadonlyArray<FormulaVariable>;
}

/**
 * Parses a reduction string such as `Sum_Reduction(Exp(-SqDist(x,y))*b,0)`, `KMin_ArgKMin_Reduction(F,5,0)` or
 * `Max_SumShiftExpWeight_Reduction(f,0,g)`, and returns it with its variables (what a call must supply).
 */
export function parseReductionWithVariables(text: string, aliases?: readonly string[]): ParsedReduction {
  const list = checkArguments('parseReduction', text, aliases);
  return guarded(() => {
    const variables = parseAliases(list, isReservedName);
    const result = parseText(text, { expect: 'reduction', variables, reductions: REDUCTION_TABLE });
    if (result.kind !== 'reduction') throw new KeOpsError('ERR_INTERNAL', 'parser returned a formula');
    return Object.freeze({
      reduction: result.reduction,
      variables: Object.freeze(result.variables.map((v) => Object.freeze({ ...v }))),
    });
  });
}

/**
 * Parses a reduction string such as `Sum_Reduction(Exp(-SqDist(x,y))*b,0)`. The tag is the category of the
 * output index (0: one output row per i, reducing over j; 1: one row per j). `toString()` re-parses to it.
 */
export function parseReduction(text: string, aliases?: readonly string[]): Reduction {
  return parseReductionWithVariables(text, aliases).reduction;
}

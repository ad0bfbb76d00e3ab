/**
 * Variable aliases (docs/semantics.md 1.2): `x = Vi(3)`, `y = Vj(1,3)`, `p = Pm(1)`, `x = Var(0,3,0)`,
 * legacy `Vx`/`Vy` (= Vi/Vj), and name-less `Var(pos,dim,cat)` / `Vi(pos,dim)`. Spaces are ignored.
 * Parsed with the formula lexer (no regular expressions), and every declaration, alias or inline, goes
 * through one `VariableTable` so that a position always means one (dim, category).
 */
import { KeOpsError } from '../errors';
import { Lexer, type Token } from './lexer';
import { MAX_DIM, MAX_POSITION } from './ops/leaves';

export type VariableCategory = 0 | 1 | 2;

/** One input of a formula: its position in the argument list, dimension and category (0 = i, 1 = j, 2 = parameter). */
export interface FormulaVariable {
  readonly name?: string;
  readonly pos: number;
  readonly dim: number;
  readonly cat: VariableCategory;
}

/** Alias kinds and their category; `Vx`/`Vy` are the legacy spellings of `Vi`/`Vj`. */
const ALIAS_KINDS: ReadonlyMap<string, VariableCategory> = new Map<string, VariableCategory>([
  ['Vi', 0],
  ['Vj', 1],
  ['Pm', 2],
  ['Vx', 0],
  ['Vy', 1],
]);

/** Names with a meaning of their own in formulas and aliases, which an alias must not take. */
export const VARIABLE_FUNCTION_NAMES: readonly string[] = ['Var', 'Vi', 'Vj', 'Pm', 'Vx', 'Vy'];

/** Longest alias string we read: aliases are short declarations, never generated text. */
const MAX_ALIAS_LENGTH = 1000;

/** How a variable is written for people: `Vi(0,3)`, `Vj(1,2)`, `Pm(2,1)`. */
export function describeVariable(v: { pos: number; dim: number; cat: number }): string {
  const kind = v.cat === 0 ? 'Vi' : v.cat === 1 ? 'Vj' : v.cat === 2 ? 'Pm' : 'Var';
  return kind === 'Var' ? `Var(${v.pos},${v.dim},${v.cat})` : `${kind}(${v.pos},${v.dim})`;
}

interface Declaration extends FormulaVariable {
  /** Where it was declared, for conflict messages: "alias 0 ('x=Vi(3)')", "Var(0,2,1) at position 7". */
  readonly origin: string;
}

/** The variables of one formula, by position and by alias name. One table per parse: never shared. */
export class VariableTable {
  private readonly byPosition = new Map<number, Declaration>();
  private readonly byName = new Map<string, FormulaVariable>();

  /**
   * Records that position `v.pos` holds a variable of dim `v.dim` and category `v.cat`. Returns a description
   * of the conflict when the position was already declared differently (the caller raises the error).
   */
  declare(v: FormulaVariable, origin: string): string | undefined {
    const previous = this.byPosition.get(v.pos);
    if (previous !== undefined) {
      if (previous.dim !== v.dim || previous.cat !== v.cat) {
        return (
          `${origin} declares position ${v.pos} as ${describeVariable(v)}, ` +
          `but ${previous.origin} declared it as ${describeVariable(previous)}`
        );
      }
      if (previous.name === undefined && v.name !== undefined) {
        this.byPosition.set(v.pos, { ...previous, name: v.name });
      }
    } else {
      this.byPosition.set(v.pos, { ...v, origin });
    }
    if (v.name !== undefined) this.byName.set(v.name, { name: v.name, pos: v.pos, dim: v.dim, cat: v.cat });
    return undefined;
  }

  lookup(name: string): FormulaVariable | undefined {
    return this.byName.get(name);
  }

  /** Whether some variable already holds position `pos`. */
  isDeclared(pos: number): boolean {
    return this.byPosition.has(pos);
  }

  /** The first position after every declared one. */
  nextFreePosition(): number {
    let next = 0;
    for (const pos of this.byPosition.keys()) next = Math.max(next, pos + 1);
    return next;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /** Every declared variable, by increasing position. */
  list(): FormulaVariable[] {
    return [...this.byPosition.values()]
      .sort((a, b) => a.pos - b.pos)
      .map(({ name, pos, dim, cat }) => (name === undefined ? { pos, dim, cat } : { name, pos, dim, cat }));
  }
}

function aliasError(index: number, alias: string, message: string): KeOpsError {
  const shown = alias.length > 80 ? `${alias.slice(0, 77)}...` : alias;
  return new KeOpsError('ERR_ALIAS', `alias ${index} ('${shown}'): ${message}`);
}

/**
 * Parses one alias: `[name =] Kind(args)`. `isReservedName` tells which names belong to functions.
 * Returns the declared variable (with its name when there is one).
 */
export function parseAlias(
  alias: string,
  index: number,
  isReservedName: (name: string) => boolean,
): FormulaVariable {
  const fail = (message: string): KeOpsError => aliasError(index, alias, message);
  if (alias.length > MAX_ALIAS_LENGTH)
    throw fail(`an alias must be at most ${MAX_ALIAS_LENGTH} characters long`);
  const lexer = new Lexer(alias);
  const expected =
    "expected 'name = Vi(dim)', 'name = Vj(pos,dim)', 'name = Pm(dim)' or 'name = Var(pos,dim,cat)'";
  const take = (): Token => {
    try {
      return lexer.next();
    } catch (e) {
      throw fail(`malformed alias (${(e as Error).message.split('\n')[0]}); ${expected}`);
    }
  };
  const peekOp = (text: string, ahead = 0): boolean => {
    try {
      const t = lexer.peek(ahead);
      return t.kind === 'op' && t.text === text;
    } catch {
      return false;
    }
  };

  let name: string | undefined;
  if (peekOp('=', 1)) {
    const nameToken = take();
    take(); // '='
    if (nameToken.kind !== 'ident')
      throw fail(`the alias name must be an identifier such as x or y_1; ${expected}`);
    name = nameToken.text;
    if (ALIAS_KINDS.has(name) || VARIABLE_FUNCTION_NAMES.includes(name) || isReservedName(name)) {
      throw fail(`'${name}' is the name of a function and cannot be used as a variable name`);
    }
  }
  const kindToken = take();
  if (kindToken.kind !== 'ident' || !(kindToken.text === 'Var' || ALIAS_KINDS.has(kindToken.text))) {
    throw fail(`malformed alias; ${expected}`);
  }
  const kind = kindToken.text;
  if (!peekOp('(')) throw fail(`malformed alias: '(' expected after ${kind}; ${expected}`);
  take();
  const numbers: number[] = [];
  for (;;) {
    const t = take();
    if (t.kind !== 'int') {
      throw fail(`malformed alias: the arguments of ${kind} must be non-negative integers; ${expected}`);
    }
    const value = t.text.length > 15 ? Number.POSITIVE_INFINITY : Number(t.text);
    numbers.push(value);
    const sep = take();
    if (sep.kind === 'op' && sep.text === ')') break;
    if (!(sep.kind === 'op' && sep.text === ','))
      throw fail(`malformed alias: ',' or ')' expected; ${expected}`);
  }
  if (take().kind !== 'eof') throw fail(`unexpected text after the closing parenthesis; ${expected}`);

  let pos: number;
  let dim: number;
  let cat: number;
  if (kind === 'Var') {
    if (numbers.length !== 3) throw fail(`Var takes 3 integers (pos,dim,cat), got ${numbers.length}`);
    [pos, dim, cat] = numbers;
    if (cat !== 0 && cat !== 1 && cat !== 2) {
      throw fail(`the category must be 0 (i), 1 (j) or 2 (parameter), got ${cat}`);
    }
  } else {
    if (numbers.length !== 1 && numbers.length !== 2) {
      throw fail(`${kind} takes 1 integer (dim) or 2 (pos,dim), got ${numbers.length}`);
    }
    [pos, dim] = numbers.length === 1 ? [index, numbers[0]] : numbers;
    cat = ALIAS_KINDS.get(kind) as VariableCategory;
  }
  if (!(pos < MAX_POSITION)) throw fail(`the position must be at most ${MAX_POSITION - 1}, got ${pos}`);
  if (!(dim >= 1 && dim <= MAX_DIM)) throw fail(`the dimension must be between 1 and ${MAX_DIM}, got ${dim}`);
  const v = { pos, dim, cat: cat as VariableCategory };
  return name === undefined ? v : { name, ...v };
}

/** Parses an alias list into a fresh variable table (duplicate names and conflicting positions are errors). */
export function parseAliases(
  aliases: readonly string[],
  isReservedName: (name: string) => boolean,
): VariableTable {
  const table = new VariableTable();
  if (aliases.length > MAX_POSITION) {
    throw new KeOpsError('ERR_ALIAS', `at most ${MAX_POSITION} aliases are allowed, got ${aliases.length}`);
  }
  const seen = new Map<string, number>();
  aliases.forEach((alias, index) => {
    const v = parseAlias(alias, index, isReservedName);
    if (v.name !== undefined) {
      const first = seen.get(v.name);
      if (first !== undefined) {
        throw aliasError(
          index,
          alias,
          `the name '${v.name}' is already declared by alias ${first} ('${aliases[first]}')`,
        );
      }
      seen.set(v.name, index);
    }
    const conflict = table.declare(v, `alias ${index} ('${alias}')`);
    if (conflict !== undefined) throw aliasError(index, alias, conflict);
  });
  return table;
}

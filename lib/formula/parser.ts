/**
 * The formula parser: KeOps' Python expression syntax (docs/semantics.md 1.1-1.3) without `eval`.
 *
 * An operator-precedence (shunting-yard) parser with explicit operand and operator stacks, so nesting depth
 * costs heap, never call stack: no input can overflow the stack. Nodes are built bottom-up as soon as an
 * operator or call is complete, so every error can name the position of the operator or call that failed.
 *
 * Precedence, low to high (Python's): comparisons (non-associative) < `|` < `+ -` < `* /` < unary `- +` < `**`
 * (right-associative; `-x**2` is `-(x**2)` and the exponent may be signed: `x**-0.5`).
 */
import { KeOpsError, type KeOpsErrorCode } from '../errors';
import {
  type FormulaVariable,
  VARIABLE_FUNCTION_NAMES,
  type VariableCategory,
  type VariableTable,
} from './aliases';
import { builder, buildOp, checkParams, MAX_DEPTH } from './builder';
import { varsOf } from './diff';
import { excerpt, Lexer, type Token } from './lexer';
import { type Node, type ParamValue, topoOrder } from './node';
import { arityRange, type MacroDef, type OpDef, type ParamKind } from './opdef';
import { parseDecimal, type Rational, ratEq, rational, ratNeg } from './rational';
import type { Reduction, ReductionDef } from './reduction';
import { knownFunctionNames, MACROS, OPS } from './registry';

/**
 * Longest formula text accepted: far beyond hand-written formulas, and it bounds the parse time (building is
 * linear but not free). Big derived formulas (gradients) travel as Formula/Node objects, not as text.
 */
export const MAX_FORMULA_LENGTH = 100_000;
/** Deepest nesting of parentheses, calls and unary/power chains: the builder's depth limit plus some slack. */
export const MAX_NESTING = MAX_DEPTH + 50;
/** Longest number literal: more digits than any double or int64 needs, few enough to keep bigints cheap. */
const MAX_NUMBER_LENGTH = 400;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The reductions the parser may build (injected, so the parser does not depend on the reduction table). */
export interface ReductionTable {
  readonly defs: ReadonlyMap<string, ReductionDef>;
  make(name: string, formula: Node, opts: { tag: number; k?: number; formula2?: Node }): Reduction;
}

export interface ParseOptions {
  /** What the whole text must be: a formula, or a reduction call such as `Sum_Reduction(F,0)`. */
  readonly expect: 'formula' | 'reduction';
  readonly variables: VariableTable;
  readonly reductions?: ReductionTable;
}

export type ParseResult =
  | { readonly kind: 'formula'; readonly node: Node; readonly variables: FormulaVariable[] }
  | { readonly kind: 'reduction'; readonly reduction: Reduction; readonly variables: FormulaVariable[] };

/** A value on the operand stack. Number literals stay symbolic so that `-2`, `x**-0.5` and params fold exactly. */
type Operand =
  | { readonly kind: 'node'; readonly node: Node; readonly pos: number }
  /** `integer`: written as an integer literal (possibly signed), as parameters require. */
  | { readonly kind: 'number'; readonly value: Rational; readonly integer: boolean; readonly pos: number }
  | { readonly kind: 'list'; readonly values: readonly number[]; readonly pos: number }
  | { readonly kind: 'reduction'; readonly reduction: Reduction; readonly pos: number };

interface BinarySpec {
  readonly prec: number;
  readonly rightAssoc?: boolean;
  readonly comparison?: boolean;
}

const BINARY: ReadonlyMap<string, BinarySpec> = new Map<string, BinarySpec>([
  ['<', { prec: 1, comparison: true }],
  ['<=', { prec: 1, comparison: true }],
  ['>', { prec: 1, comparison: true }],
  ['>=', { prec: 1, comparison: true }],
  ['==', { prec: 1, comparison: true }],
  ['!=', { prec: 1, comparison: true }],
  ['|', { prec: 2 }],
  ['+', { prec: 3 }],
  ['-', { prec: 3 }],
  ['*', { prec: 4 }],
  ['/', { prec: 4 }],
  ['**', { prec: 6, rightAssoc: true }],
]);
const UNARY_PREC = 5;

/** Binary operators that map directly to an operation: [operation, swap operands]. */
const BINARY_OPS: ReadonlyMap<string, readonly [string, boolean]> = new Map<
  string,
  readonly [string, boolean]
>([
  ['+', ['Add', false]],
  ['-', ['Subtract', false]],
  ['*', ['Mult', false]],
  ['/', ['Divide', false]],
  ['|', ['Scalprod', false]],
  ['<', ['LessThan', false]],
  ['>', ['LessThan', true]],
  ['<=', ['LessOrEqual', false]],
  ['>=', ['LessOrEqual', true]],
  ['==', ['Equal', false]],
  ['!=', ['NotEqual', false]],
]);

/** Names people try that do not exist, with what to write instead (docs/semantics.md 1.5 i). */
const NAME_HINTS: ReadonlyMap<string, string> = new Map([
  ['Ind', 'Ind(...) is KeOps v1 syntax: write integer lists as [0,1]'],
  ['ComplexScal', 'ComplexScal does not exist: use ComplexRealScal(f,g) or ComplexMult(f,g)'],
  ['MinArgMin', 'MinArgMin is not a formula function: use Min_ArgMin_Reduction(f,tag)'],
  ['MaxArgMax', 'MaxArgMax is not a formula function: use Max_ArgMax_Reduction(f,tag)'],
  ['pow', 'write powers as x**y, Pow(x,n) or Powf(x,y)'],
]);

type Frame =
  | { readonly kind: 'binary'; readonly op: string; readonly spec: BinarySpec; readonly pos: number }
  | { readonly kind: 'unary'; readonly op: string; readonly pos: number }
  | { readonly kind: 'group'; readonly pos: number }
  | { readonly kind: 'call'; readonly name: string; readonly pos: number; readonly args: Operand[] };

type FunctionDef =
  { readonly macro: false; readonly def: OpDef } | { readonly macro: true; readonly def: MacroDef };

/** Edit distance, for "did you mean" suggestions (inputs are short names). */
function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, k) => k);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost);
    }
    previous = current;
  }
  return previous[b.length];
}

/** The closest candidate to `name` (case-insensitive), if it is close enough to be a plausible typo. */
export function closestName(name: string, candidates: readonly string[]): string | undefined {
  if (name.length > 64) return undefined;
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const c = candidate.toLowerCase();
    if (c === lower) return candidate;
    if (Math.abs(c.length - lower.length) > 2) continue;
    const d = levenshtein(lower, c);
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  const tolerance = Math.max(1, Math.min(2, Math.floor(name.length / 3)));
  return bestDistance <= tolerance && bestDistance < name.length ? best : undefined;
}

const KIND_TEXT: Readonly<Record<ParamKind, string>> = { int: 'int', intlist: 'list', rational: 'number' };

/** `Round(formula, int)`, `TensorDot(formula, formula, list, list, list, list[, list])`. */
export function signatureOf(def: OpDef | MacroDef): string {
  const [amin, amax] = arityRange(def.arity);
  const parts: Array<readonly [string, boolean]> = [];
  for (let k = 0; k < amax; k++) parts.push(['formula', k >= amin]);
  const firstOptional = def.params.length - (def.optionalParams ?? 0);
  def.params.forEach((kind, k) => parts.push([KIND_TEXT[kind], k >= firstOptional]));
  const text = parts
    .map(([part, optional], k) => {
      const separated = k === 0 ? part : `, ${part}`;
      return optional ? `[${separated}]` : separated;
    })
    .join('');
  return `${def.name}(${text})`;
}

function tokenText(t: Token): string {
  return t.kind === 'eof' ? 'the end of the formula' : `'${t.text}'`;
}

class Parser {
  private readonly lexer: Lexer;
  private readonly operands: Operand[] = [];
  private readonly frames: Frame[] = [];
  private firstTokenPos = -1;

  constructor(
    private readonly text: string,
    private readonly options: ParseOptions,
  ) {
    this.lexer = new Lexer(text);
  }

  // ---- errors -------------------------------------------------------------------------------------------

  private fail(code: KeOpsErrorCode, pos: number, message: string): KeOpsError {
    return new KeOpsError(code, `${message} (at position ${pos})${excerpt(this.text, pos)}`, {
      position: pos,
    });
  }

  private syntax(pos: number, message: string): KeOpsError {
    return this.fail('ERR_FORMULA_SYNTAX', pos, message);
  }

  /** Runs a build step, giving its errors (dims, params...) the position of the operator or call. */
  private at<T>(pos: number, build: () => T): T {
    try {
      return build();
    } catch (e) {
      if (e instanceof KeOpsError && e.position === undefined) {
        throw new KeOpsError(e.code, `${e.message} (at position ${pos})${excerpt(this.text, pos)}`, {
          position: pos,
          cause: e,
        });
      }
      throw e;
    }
  }

  // ---- main loop ----------------------------------------------------------------------------------------

  run(): ParseResult {
    let expectOperand = true;
    for (;;) {
      const t = this.lexer.next();
      if (this.firstTokenPos < 0) this.firstTokenPos = t.pos;
      if (expectOperand) {
        expectOperand = this.operand(t);
        continue;
      }
      if (t.kind === 'eof') break;
      if (t.kind === 'op' && BINARY.has(t.text)) {
        this.binary(t);
        expectOperand = true;
      } else if (t.kind === 'op' && t.text === ')') {
        this.closeParen(t);
      } else if (t.kind === 'op' && t.text === ',') {
        this.comma(t);
        expectOperand = true;
      } else if (t.kind === 'op' && t.text === '=') {
        throw this.syntax(
          t.pos,
          "unexpected '=': compare with == (aliases such as x=Vi(3) go in the alias list)",
        );
      } else {
        throw this.syntax(
          t.pos,
          `unexpected ${tokenText(t)}: an operator (+, -, *, /, ...) or ')' is missing before it`,
        );
      }
    }
    this.reduceOperators();
    const unclosed = this.frames[this.frames.length - 1];
    if (unclosed !== undefined) {
      const what = unclosed.kind === 'call' ? `the '(' of ${unclosed.name}` : "'('";
      throw this.syntax(unclosed.pos, `${what} is never closed`);
    }
    return this.result(this.operands[0]);
  }

  /** Handles a token where an operand is expected; returns whether an operand is still expected. */
  private operand(t: Token): boolean {
    if (t.kind === 'int' || t.kind === 'decimal') {
      this.operands.push(this.number(t));
      return false;
    }
    if (t.kind === 'ident') {
      const after = this.lexer.peek();
      if (after.kind === 'op' && after.text === '(') {
        this.lexer.next();
        this.pushFrame({ kind: 'call', name: t.text, pos: t.pos, args: [] }, t.pos);
        const close = this.lexer.peek();
        if (close.kind === 'op' && close.text === ')') {
          this.lexer.next();
          this.finishCall(this.frames.pop() as Frame & { kind: 'call' });
          return false;
        }
        return true;
      }
      this.operands.push(this.variable(t));
      return false;
    }
    if (t.kind === 'op') {
      switch (t.text) {
        case '(':
          this.pushFrame({ kind: 'group', pos: t.pos }, t.pos);
          return true;
        case '-':
        case '+':
          this.pushFrame({ kind: 'unary', op: t.text, pos: t.pos }, t.pos);
          return true;
        case '[':
          this.operands.push(this.list(t));
          return false;
      }
    }
    throw this.missingOperand(t);
  }

  private missingOperand(t: Token): KeOpsError {
    const top = this.frames[this.frames.length - 1];
    if (top === undefined && this.operands.length === 0 && t.kind === 'eof') {
      return this.syntax(t.pos, 'empty formula');
    }
    let wanted: string;
    if (top === undefined) wanted = 'a formula';
    else if (top.kind === 'binary') wanted = `an operand after '${top.op}'`;
    else if (top.kind === 'unary') wanted = `an operand after the sign '${top.op}'`;
    else if (top.kind === 'group') wanted = "an expression after '('";
    else wanted = `an argument of ${top.name} after ','`;
    if (t.kind === 'op' && t.text === '=') return this.syntax(t.pos, "unexpected '=': compare with ==");
    return this.syntax(t.pos, `expected ${wanted}, found ${tokenText(t)}`);
  }

  private pushFrame(frame: Frame, pos: number): void {
    if (this.frames.length >= MAX_NESTING) {
      throw this.fail(
        'ERR_FORMULA_TOO_LARGE',
        pos,
        `the formula is nested more than ${MAX_NESTING} levels deep`,
      );
    }
    this.frames.push(frame);
  }

  private binary(t: Token): void {
    const spec = BINARY.get(t.text) as BinarySpec;
    for (;;) {
      const top = this.frames[this.frames.length - 1];
      if (top === undefined) break;
      const topPrec = top.kind === 'binary' ? top.spec.prec : top.kind === 'unary' ? UNARY_PREC : -1;
      if (topPrec < 0) break;
      const sameLevelReduces = topPrec === spec.prec && !spec.rightAssoc && !spec.comparison;
      if (topPrec > spec.prec || sameLevelReduces) this.reduceTop();
      else break;
    }
    const top = this.frames[this.frames.length - 1];
    if (spec.comparison && top?.kind === 'binary' && top.spec.comparison) {
      throw this.syntax(
        t.pos,
        `chained comparison: '${top.op}' then '${t.text}' (write each comparison separately, e.g. (a<b)*(b<c))`,
      );
    }
    this.pushFrame({ kind: 'binary', op: t.text, spec, pos: t.pos }, t.pos);
  }

  private reduceOperators(): void {
    for (;;) {
      const top = this.frames[this.frames.length - 1];
      if (top === undefined || (top.kind !== 'binary' && top.kind !== 'unary')) return;
      this.reduceTop();
    }
  }

  private reduceTop(): void {
    const frame = this.frames.pop() as Frame;
    if (frame.kind === 'binary') {
      const right = this.operands.pop() as Operand;
      const left = this.operands.pop() as Operand;
      this.operands.push(this.applyBinary(frame.op, left, right, frame.pos));
    } else if (frame.kind === 'unary') {
      this.operands.push(this.applyUnary(frame.op, this.operands.pop() as Operand, frame.pos));
    }
  }

  private closeParen(t: Token): void {
    this.reduceOperators();
    const frame = this.frames.pop();
    if (frame === undefined) throw this.syntax(t.pos, "unmatched ')'");
    if (frame.kind === 'call') {
      frame.args.push(this.operands.pop() as Operand);
      this.finishCall(frame);
    }
    // A group leaves its operand in place: parentheses only group.
  }

  private comma(t: Token): void {
    this.reduceOperators();
    const frame = this.frames[this.frames.length - 1];
    if (frame === undefined || frame.kind !== 'call') {
      throw this.syntax(
        t.pos,
        "unexpected ',' outside the arguments of a function call (tuples are not supported)",
      );
    }
    frame.args.push(this.operands.pop() as Operand);
  }

  // ---- operands -----------------------------------------------------------------------------------------

  private number(t: Token): Operand {
    if (t.text.length > MAX_NUMBER_LENGTH) {
      throw this.fail(
        'ERR_FORMULA_PARAM',
        t.pos,
        `number literal longer than ${MAX_NUMBER_LENGTH} characters`,
      );
    }
    if (t.kind === 'int')
      return { kind: 'number', value: rational(BigInt(t.text)), integer: true, pos: t.pos };
    const value = parseDecimal(t.text);
    if (value === undefined) {
      throw this.fail('ERR_FORMULA_PARAM', t.pos, `number literal '${t.text}' is out of range`);
    }
    return { kind: 'number', value, integer: false, pos: t.pos };
  }

  /** A list literal `[1,-2,3]` of integers (only meaningful as a parameter, e.g. of TensorDot). */
  private list(open: Token): Operand {
    const values: number[] = [];
    const first = this.lexer.peek();
    if (first.kind === 'op' && first.text === ']') {
      this.lexer.next();
      return { kind: 'list', values, pos: open.pos };
    }
    for (;;) {
      let negative = false;
      let t = this.lexer.next();
      while (t.kind === 'op' && (t.text === '-' || t.text === '+')) {
        if (t.text === '-') negative = !negative;
        t = this.lexer.next();
      }
      if (t.kind === 'eof') throw this.syntax(open.pos, "the list opened here is never closed with ']'");
      if (t.kind !== 'int') {
        throw this.fail(
          'ERR_FORMULA_PARAM',
          t.pos,
          `list elements must be integer literals, found ${tokenText(t)}`,
        );
      }
      const value = t.text.length > 20 ? MAX_SAFE + 1n : BigInt(t.text);
      if (value > MAX_SAFE)
        throw this.fail('ERR_FORMULA_PARAM', t.pos, `list element ${t.text} is too large`);
      values.push(negative ? 0 - Number(value) : Number(value));
      const sep = this.lexer.next();
      if (sep.kind === 'eof') throw this.syntax(open.pos, "the list opened here is never closed with ']'");
      if (sep.kind === 'op' && sep.text === ']') break;
      if (!(sep.kind === 'op' && sep.text === ',')) {
        throw this.syntax(sep.pos, `expected ',' or ']' in the list, found ${tokenText(sep)}`);
      }
    }
    return { kind: 'list', values, pos: open.pos };
  }

  /** A bare identifier: an alias. */
  private variable(t: Token): Operand {
    const name = t.text;
    const v = this.options.variables.lookup(name);
    if (v !== undefined) {
      return { kind: 'node', node: this.at(t.pos, () => builder.variable(v.pos, v.dim, v.cat)), pos: t.pos };
    }
    if (this.isFunctionName(name)) {
      throw this.fail('ERR_FORMULA_NAME', t.pos, `'${name}' is a function: call it as ${name}(...)`);
    }
    const names = this.options.variables.names();
    const suggestion = closestName(name, names);
    const hint =
      suggestion !== undefined
        ? `: did you mean ${suggestion}?`
        : names.length === 0
          ? `: declare it with an alias such as '${name} = Vi(3)', or write Var(pos,dim,cat)`
          : ` (declared variables: ${names.slice(0, 10).join(', ')})`;
    throw this.fail('ERR_FORMULA_NAME', t.pos, `unknown variable '${name}'${hint}`);
  }

  private isFunctionName(name: string): boolean {
    return (
      MACROS.has(name) ||
      OPS.has(name) ||
      VARIABLE_FUNCTION_NAMES.includes(name) ||
      (this.options.reductions?.defs.has(name) ?? false)
    );
  }

  /** Builds the node of a number literal: IntCst for safe integers, an exact RatCst otherwise. */
  private literalNode(n: Operand & { kind: 'number' }): Node {
    const { p, q } = n.value;
    if (q === 1n && p <= MAX_SAFE && p >= -MAX_SAFE) return this.at(n.pos, () => builder.int(Number(p)));
    if (q === 1n && n.integer) {
      throw this.fail(
        'ERR_FORMULA_PARAM',
        n.pos,
        `integer literal ${p} is beyond ±(2^53-1); write it as a decimal such as 1e20 if you mean a real number`,
      );
    }
    return this.at(n.pos, () => builder.rat(n.value));
  }

  private toNode(operand: Operand): Node {
    switch (operand.kind) {
      case 'node':
        return operand.node;
      case 'number':
        return this.literalNode(operand);
      case 'list':
        throw this.fail(
          'ERR_FORMULA_SYNTAX',
          operand.pos,
          'a list such as [0,1] can only be a parameter of a function (e.g. of TensorDot), not a formula',
        );
      case 'reduction':
        throw this.fail(
          'ERR_REDUCTION',
          operand.pos,
          `${operand.reduction.def.name} is a reduction: it can only be the whole reduction string, not part of a formula`,
        );
    }
  }

  private applyUnary(op: string, operand: Operand, pos: number): Operand {
    if (operand.kind === 'number') {
      // Signs of literals fold exactly: -2 is IntCst(-2), -0.5 is RatCst(-1,2), as parameters need.
      return { ...operand, value: op === '-' ? ratNeg(operand.value) : operand.value, pos };
    }
    const node = this.toNode(operand);
    if (op === '+') return { kind: 'node', node, pos };
    return { kind: 'node', node: this.at(pos, () => builder.neg(node)), pos };
  }

  private applyBinary(op: string, left: Operand, right: Operand, pos: number): Operand {
    const l = this.toNode(left);
    if (op === '**') return { kind: 'node', node: this.power(l, right, pos), pos: left.pos };
    const r = this.toNode(right);
    const [name, swap] = BINARY_OPS.get(op) as readonly [string, boolean];
    const node = this.at(pos, () => builder.call(name, swap ? [r, l] : [l, r]));
    return { kind: 'node', node, pos: left.pos };
  }

  /** `x**2` Square, `x**n` Pow, `x**0.5` Sqrt, `x**-0.5` Rsqrt, other literal Powf(x, RatCst), else Powf(x, y). */
  private power(base: Node, exponent: Operand, pos: number): Node {
    if (exponent.kind !== 'number') {
      const e = this.toNode(exponent);
      return this.at(pos, () => builder.call('Powf', [base, e]));
    }
    const { p, q } = exponent.value;
    if (q === 1n) {
      if (p === 2n) return this.at(pos, () => builder.call('Square', [base]));
      if (p > MAX_SAFE || p < -MAX_SAFE) {
        throw this.fail('ERR_FORMULA_PARAM', exponent.pos, `the exponent ${p} is too large`);
      }
      return this.at(pos, () => builder.call('Pow', [base], [Number(p)]));
    }
    if (ratEq(exponent.value, rational(1, 2))) return this.at(pos, () => builder.call('Sqrt', [base]));
    if (ratEq(exponent.value, rational(-1, 2))) return this.at(pos, () => builder.call('Rsqrt', [base]));
    const e = this.literalNode(exponent);
    return this.at(pos, () => builder.call('Powf', [base, e]));
  }

  // ---- calls --------------------------------------------------------------------------------------------

  private finishCall(frame: Frame & { kind: 'call' }): void {
    const { name, pos, args } = frame;
    let result: Operand;
    if (VARIABLE_FUNCTION_NAMES.includes(name)) {
      result = { kind: 'node', node: this.inlineVariable(name, args, pos), pos };
    } else if (this.options.reductions?.defs.has(name)) {
      result = { kind: 'reduction', reduction: this.reduction(frame), pos };
    } else if (
      name === 'RatCst' &&
      args.length === 2 &&
      args.every((a) => a.kind === 'number' && a.integer)
    ) {
      result = { kind: 'node', node: this.rationalConstant(args, pos), pos };
    } else {
      result = { kind: 'node', node: this.call(name, args, pos), pos };
    }
    this.operands.push(result);
  }

  private lookupFunction(name: string, pos: number): FunctionDef {
    const macro = MACROS.get(name);
    if (macro !== undefined) return { macro: true, def: macro };
    const op = OPS.get(name);
    if (op !== undefined) return { macro: false, def: op };
    if (this.options.variables.lookup(name) !== undefined) {
      throw this.fail(
        'ERR_FORMULA_NAME',
        pos,
        `'${name}' is a variable, not a function (write ${name}*(...) to multiply)`,
      );
    }
    const hint = NAME_HINTS.get(name);
    if (hint !== undefined) throw this.fail('ERR_FORMULA_NAME', pos, `unknown function '${name}': ${hint}`);
    const reductionNames = [...(this.options.reductions?.defs.keys() ?? [])];
    const suggestion = closestName(name, [
      ...knownFunctionNames(),
      ...VARIABLE_FUNCTION_NAMES,
      ...reductionNames,
    ]);
    const looksLikeReduction =
      name.includes('Reduction') || (suggestion !== undefined && reductionNames.includes(suggestion));
    const code: KeOpsErrorCode = looksLikeReduction ? 'ERR_REDUCTION' : 'ERR_FORMULA_NAME';
    const what = looksLikeReduction ? 'reduction' : 'function';
    throw this.fail(
      code,
      pos,
      `unknown ${what} '${name}'${suggestion ? `: did you mean ${suggestion}?` : ''}`,
    );
  }

  private call(name: string, args: readonly Operand[], pos: number): Node {
    const fn = this.lookupFunction(name, pos);
    const def = fn.def;
    const childCount = this.splitArguments(def, args, pos);
    const children = args.slice(0, childCount).map((a, k) => {
      if (a.kind === 'list') {
        throw this.fail(
          'ERR_FORMULA_ARITY',
          a.pos,
          `${name}: argument ${k + 1} must be a formula, not a list; expected ${signatureOf(def)}`,
        );
      }
      return this.toNode(a);
    });
    const params = args.slice(childCount).map((a, k) => this.param(def, k, a));
    if (fn.macro) {
      const macro = fn.def;
      const expanded = this.at(pos, () => {
        checkParams(macro, params);
        return macro.expand(children, params, builder);
      });
      return this.at(pos, () => this.placeIntroducedVariables(macro.name, expanded, children, pos));
    }
    const op = fn.def;
    return this.at(pos, () => buildOp(op, children, params));
  }

  /**
   * Variables a macro introduces (Grad(f,x) without its gradient input creates one, at KeOps' "first position
   * after the variables of f") must not land on a position the aliases or the rest of the formula already use:
   * KeOps silently reuses it (e.g. a declared but unused `b`). Such variables move to the first free position.
   */
  private placeIntroducedVariables(name: string, expanded: Node, inputs: readonly Node[], pos: number): Node {
    const known = new Set<Node>();
    for (const input of inputs) for (const v of varsOf(input)) known.add(v);
    const introduced = [...varsOf(expanded)].filter((v) => !known.has(v) && (v.params[2] as number) >= 0);
    if (introduced.length === 0) return expanded;
    const table = this.options.variables;
    let next = Math.max(table.nextFreePosition(), ...introduced.map((v) => (v.params[0] as number) + 1));
    const moved = new Map<Node, Node>();
    for (const v of introduced) {
      const [position, dim, cat] = v.params as readonly number[];
      if (table.isDeclared(position)) moved.set(v, builder.variable(next++, dim, cat));
    }
    const result = moved.size === 0 ? expanded : substitute(expanded, moved);
    for (const v of introduced) {
      const [position, dim, cat] = (moved.get(v) ?? v).params as readonly number[];
      this.declare(
        { pos: position, dim, cat: cat as VariableCategory },
        `${moved.get(v) ?? v} (made by ${name})`,
        pos,
      );
    }
    return result;
  }

  /**
   * How many of the arguments are formulas (the rest are parameters). With optional arguments and optional
   * parameters both possible, trailing literals are taken as parameters.
   */
  private splitArguments(def: OpDef | MacroDef, args: readonly Operand[], pos: number): number {
    const [amin, amax] = arityRange(def.arity);
    const pmax = def.params.length;
    const pmin = pmax - (def.optionalParams ?? 0);
    let best: number | undefined;
    let fallback: number | undefined;
    for (let c = Math.min(amax, args.length); c >= amin; c--) {
      const p = args.length - c;
      if (p < pmin || p > pmax) continue;
      fallback ??= c;
      if (args.slice(c).every((a, k) => this.fitsParam(def.params[k], a))) best = c;
    }
    const chosen = best ?? fallback;
    if (chosen === undefined) {
      const min = amin + pmin;
      const max = amax + pmax;
      const want = min === max ? `${min}` : `${min} to ${max}`;
      throw this.fail(
        'ERR_FORMULA_ARITY',
        pos,
        `${def.name} takes ${want} argument(s), got ${args.length}: expected ${signatureOf(def)}`,
      );
    }
    return chosen;
  }

  private fitsParam(kind: ParamKind, a: Operand): boolean {
    if (kind === 'intlist') return a.kind === 'list';
    if (kind === 'int') return a.kind === 'number' && a.integer;
    return a.kind === 'number';
  }

  private param(def: OpDef | MacroDef, k: number, a: Operand): ParamValue {
    const kind = def.params[k];
    if (this.fitsParam(kind, a)) {
      if (a.kind === 'list') return a.values;
      if (a.kind === 'number' && kind === 'rational') return a.value;
      if (a.kind === 'number') {
        const { p } = a.value;
        if (p <= MAX_SAFE && p >= -MAX_SAFE) return Number(p);
        throw this.fail('ERR_FORMULA_PARAM', a.pos, `${def.name}: parameter ${k + 1} (${p}) is too large`);
      }
    }
    const wanted =
      kind === 'int'
        ? 'an integer literal such as 2 or -1'
        : kind === 'intlist'
          ? 'a list of integers such as [0,1]'
          : 'a number literal';
    throw this.fail(
      'ERR_FORMULA_PARAM',
      a.pos,
      `${def.name}: parameter ${k + 1} must be ${wanted}; expected ${signatureOf(def)}`,
    );
  }

  /** `RatCst(p,q)` with integer literals of any size (canonical text of exact constants). */
  private rationalConstant(args: readonly Operand[], pos: number): Node {
    const [p, q] = args.map((a) => (a as Operand & { kind: 'number' }).value.p);
    if (q === 0n) throw this.fail('ERR_FORMULA_PARAM', args[1].pos, 'RatCst: the denominator must not be 0');
    return this.at(pos, () => builder.rat(rational(p, q)));
  }

  /** Inline `Var(pos,dim,cat)`, `Vi(pos,dim)`, `Vj(pos,dim)`, `Pm(pos,dim)` (and legacy `Vx`, `Vy`). */
  private inlineVariable(name: string, args: readonly Operand[], pos: number): Node {
    const count = name === 'Var' ? 3 : 2;
    const signature = name === 'Var' ? 'Var(pos, dim, cat)' : `${name}(pos, dim)`;
    if (args.length !== count) {
      const oneArg =
        name !== 'Var' && args.length === 1 ? ` (the form ${name}(dim) only exists in aliases)` : '';
      throw this.fail(
        'ERR_FORMULA_ARITY',
        pos,
        `${name} takes ${count} integers, got ${args.length}${oneArg}: expected ${signature}`,
      );
    }
    const ints = args.map((a, k) => {
      if (a.kind !== 'number' || !a.integer) {
        throw this.fail(
          'ERR_FORMULA_PARAM',
          a.pos,
          `${name}: argument ${k + 1} must be an integer literal; expected ${signature}`,
        );
      }
      const { p } = a.value;
      return p <= MAX_SAFE && p >= -MAX_SAFE ? Number(p) : Number.POSITIVE_INFINITY;
    });
    const cat =
      name === 'Var' ? ints[2] : name === 'Vi' || name === 'Vx' ? 0 : name === 'Vj' || name === 'Vy' ? 1 : 2;
    if (cat !== 0 && cat !== 1 && cat !== 2) {
      throw this.fail(
        'ERR_FORMULA_PARAM',
        args[2].pos,
        `Var: the category must be 0 (i), 1 (j) or 2 (parameter), got ${cat}`,
      );
    }
    const [position, dim] = ints;
    const node = this.at(pos, () => builder.variable(position, dim, cat));
    this.declare({ pos: position, dim, cat }, `${name}(${ints.join(',')}) at position ${pos}`, pos);
    return node;
  }

  private declare(v: FormulaVariable, origin: string, pos?: number): void {
    const conflict = this.options.variables.declare(v, origin);
    if (conflict === undefined) return;
    if (pos === undefined) throw new KeOpsError('ERR_ALIAS', conflict);
    throw this.fail('ERR_ALIAS', pos, conflict);
  }

  // ---- reductions ---------------------------------------------------------------------------------------

  private reduction(frame: Frame & { kind: 'call' }): Reduction {
    const { name, pos, args } = frame;
    const table = this.options.reductions as ReductionTable;
    const def = table.defs.get(name) as ReductionDef;
    const outermost =
      this.options.expect === 'reduction' && this.frames.length === 0 && pos === this.firstTokenPos;
    if (!outermost) {
      const where =
        this.options.expect === 'reduction'
          ? 'it can only be the outermost call of the reduction string'
          : 'a formula cannot contain one: parse the whole string with parseReduction';
      throw this.fail('ERR_REDUCTION', pos, `${name} is a reduction: ${where}`);
    }
    const signature =
      def.syntax === 'tag'
        ? `${name}(formula, tag)`
        : def.syntax === 'k_tag'
          ? `${name}(formula, K, tag)`
          : `${name}(formula, tag, formula2)`;
    if (args.length !== (def.syntax === 'tag' ? 2 : 3)) {
      throw this.fail(
        'ERR_FORMULA_ARITY',
        pos,
        `${name} takes ${def.syntax === 'tag' ? 2 : 3} arguments, got ${args.length}: expected ${signature}`,
      );
    }
    const integer = (a: Operand, what: string): number => {
      if (a.kind === 'number' && a.integer && a.value.p <= MAX_SAFE && a.value.p >= -MAX_SAFE)
        return Number(a.value.p);
      throw this.fail(
        'ERR_REDUCTION',
        a.pos,
        `${name}: ${what} must be an integer literal; expected ${signature}`,
      );
    };
    const formula = this.toNode(args[0]);
    const tagIndex = def.syntax === 'k_tag' ? 2 : 1;
    const tag = integer(args[tagIndex], 'the tag (0: reduce over j, 1: over i)');
    const k = def.syntax === 'k_tag' ? integer(args[1], 'K') : undefined;
    const formula2 = def.syntax === 'tag_formula2' ? this.toNode(args[2]) : undefined;
    return this.at(pos, () => table.make(name, formula, { tag, k, formula2 }));
  }

  // ---- result -------------------------------------------------------------------------------------------

  private result(top: Operand): ParseResult {
    if (this.options.expect === 'reduction') {
      if (top.kind !== 'reduction') {
        throw this.fail('ERR_REDUCTION', top.pos, 'expected a reduction such as Sum_Reduction(formula, 0)');
      }
      const r = top.reduction;
      this.declareUsed(r.formula);
      if (r.formula2 !== undefined) this.declareUsed(r.formula2);
      return { kind: 'reduction', reduction: r, variables: this.options.variables.list() };
    }
    const node = this.toNode(top);
    this.declareUsed(node);
    return { kind: 'formula', node, variables: this.options.variables.list() };
  }

  /** Variables that macros introduced (e.g. Grad's implicit gradient input) must agree with the declared ones. */
  private declareUsed(node: Node): void {
    for (const v of varsOf(node)) {
      const [pos, dim, cat] = v.params as readonly number[];
      if (cat !== 0 && cat !== 1 && cat !== 2) {
        throw new KeOpsError('ERR_INTERNAL', `the formula contains the internal variable ${v}`);
      }
      this.declare({ pos, dim, cat: cat as VariableCategory }, `${v} (used by the formula)`);
    }
  }
}

/** `root` with some variables replaced, rebuilt through the builder (so it stays simplified and interned). */
export function substitute(root: Node, replacements: ReadonlyMap<Node, Node>): Node {
  const done = new Map<Node, Node>(replacements);
  for (const n of topoOrder(root)) {
    if (done.has(n)) continue;
    const children = n.children.map((c) => done.get(c) ?? c);
    const changed = children.some((c, k) => c !== n.children[k]);
    done.set(n, changed ? buildOp(n.op, children, n.params) : n);
  }
  return done.get(root) as Node;
}

/** Parses `text` as a formula or a reduction, with the variables of `options.variables` (aliases) in scope. */
export function parseText(text: string, options: ParseOptions): ParseResult {
  if (text.length > MAX_FORMULA_LENGTH) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `the formula is ${text.length} characters long; at most ${MAX_FORMULA_LENGTH} are accepted`,
    );
  }
  return new Parser(text, options).run();
}

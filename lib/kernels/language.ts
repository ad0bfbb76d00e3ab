/**
 * The high-level kernel language of KeOps 1.x (`Kernel("gaussian(x,y) * (1 + linear(u,v)**2)")`), parsed
 * without eval and lowered to ordinary formula nodes, so that gradients and every backend come for free.
 *
 * Grammar (precedence as in Python):
 *
 *     kernel  := product ('+' product)*
 *     product := power ('*' power)*
 *     power   := primary ['**' integer]
 *     primary := number | atom '(' name ',' name ')' | '(' kernel ')'
 *
 * Atoms (D = ⟨x−y, G(x−y)⟩ = WeightedSqDist(G,x,y), G the atom's scale γ: a scalar, a diagonal or a full
 * symmetric D×D matrix given by its D² entries; they are KeOps 1.x's definitions):
 *
 *     gaussian             exp(−D)              log form  −D
 *     laplacian            exp(−√D)                       −√D
 *     cauchy               1/(1+D)                        −log(1+D)
 *     inverse_multiquadric 1/√(1+D)                       −½·log(1+D)
 *     distance             √D                             ½·log(D+ε)
 *     linear               ⟨x,y⟩ (no scale)               ½·log(⟨x,y⟩²+ε)      ε = 1e-8, as in KeOps 1.x
 *
 * The log form (for the log-domain modes of kernelProduct) of a product is the sum of the log forms, of k**n
 * n times that of k, of a constant c log(c), and of a sum log(sum of the plain forms).
 *
 * Each atom occurrence has its own scale (gaussian(x,y) + cauchy(x,y) takes two), numbered in order of
 * appearance; variable pairs are numbered in order of first appearance. A name belongs to one pair only, on
 * one side: `gaussian(x,y) + cauchy(y,z)` is rejected, as in KeOps 1.x.
 */
import { KeOpsError, type KeOpsErrorCode } from '../errors';
import { excerpt, isIdentifier, Lexer, type Token } from '../formula/lexer';
import type { ParamValue } from '../formula/node';
import { closestName } from '../formula/parser';
import { parseDecimal, type Rational, rational } from '../formula/rational';

/** Longest kernel text accepted (kernels are short; this bounds parse time and formula size). */
export const MAX_KERNEL_LENGTH = 10_000;
/** Deepest parenthesis nesting accepted (the parser and the lowering recurse once per level). */
export const MAX_KERNEL_NESTING = 100;

export type KernelAtomName =
  'gaussian' | 'laplacian' | 'cauchy' | 'inverse_multiquadric' | 'distance' | 'linear';

/** What the lowering needs from a formula representation: constants and named operations. */
export interface KernelAlgebra<T> {
  constant(value: Rational): T;
  /** An operation or parse-time function of the formula registry, e.g. `call('WeightedSqDist', [g, x, y])`. */
  call(name: string, args: readonly T[], params?: readonly ParamValue[]): T;
}

/** The plain (`sum`) and log-domain (`log`) forms of an atom, from D = WeightedSqDist(G,x,y) or ⟨x,y⟩. */
interface AtomDef {
  readonly scaled: boolean;
  readonly formula: string;
  sum<T>(alg: KernelAlgebra<T>, value: T): T;
  log<T>(alg: KernelAlgebra<T>, value: T): T;
}

const HALF = rational(1, 2);
const EPSILON = rational(1, 100_000_000);

const neg = <T>(a: KernelAlgebra<T>, x: T): T => a.call('Minus', [x]);
const onePlus = <T>(a: KernelAlgebra<T>, x: T): T => a.call('Add', [a.constant(rational(1)), x]);
const half = <T>(a: KernelAlgebra<T>, x: T): T => a.call('Mult', [a.constant(HALF), x]);
const plusEpsilon = <T>(a: KernelAlgebra<T>, x: T): T => a.call('Add', [x, a.constant(EPSILON)]);

/** Every atom, declared once with its two forms (the table of the module comment). */
export const KERNEL_ATOMS: ReadonlyMap<KernelAtomName, AtomDef> = new Map<KernelAtomName, AtomDef>([
  [
    'gaussian',
    {
      scaled: true,
      formula: 'exp(-D)',
      sum: (a, d) => a.call('Exp', [neg(a, d)]),
      log: (a, d) => neg(a, d),
    },
  ],
  [
    'laplacian',
    {
      scaled: true,
      formula: 'exp(-sqrt(D))',
      sum: (a, d) => a.call('Exp', [neg(a, a.call('Sqrt', [d]))]),
      log: (a, d) => neg(a, a.call('Sqrt', [d])),
    },
  ],
  [
    'cauchy',
    {
      scaled: true,
      formula: '1/(1+D)',
      sum: (a, d) => a.call('Inv', [onePlus(a, d)]),
      log: (a, d) => neg(a, a.call('Log', [onePlus(a, d)])),
    },
  ],
  [
    'inverse_multiquadric',
    {
      scaled: true,
      formula: '1/sqrt(1+D)',
      sum: (a, d) => a.call('Rsqrt', [onePlus(a, d)]),
      log: (a, d) => neg(a, half(a, a.call('Log', [onePlus(a, d)]))),
    },
  ],
  [
    'distance',
    {
      scaled: true,
      formula: 'sqrt(D)',
      sum: (a, d) => a.call('Sqrt', [d]),
      log: (a, d) => half(a, a.call('Log', [plusEpsilon(a, d)])),
    },
  ],
  [
    'linear',
    {
      scaled: false,
      formula: '<x,y>',
      sum: (_a, s) => s,
      log: (a, s) => half(a, a.call('Log', [plusEpsilon(a, a.call('Square', [s]))])),
    },
  ],
]);

/** The exact decimal spelling of a non-negative decimal literal's value (its denominator is 2^a·5^b). */
function decimalText(value: Rational): string {
  let { p, q } = value;
  let digits = 0;
  while (q !== 1n) {
    if (q % 10n === 0n) q /= 10n;
    else if (q % 2n === 0n) {
      q /= 2n;
      p *= 5n;
    } else {
      q /= 5n;
      p *= 2n;
    }
    digits++;
  }
  if (digits === 0) return String(p);
  const text = String(p).padStart(digits + 1, '0');
  return `${text.slice(0, -digits)}.${text.slice(-digits)}`;
}

/** A pair of variable names, as written: `x` is read at i, `y` at j. */
export interface KernelPair {
  readonly x: string;
  readonly y: string;
}

/** One atom occurrence: its kind, its pair (index into `pairs`) and where it was written. */
export interface KernelAtom {
  readonly name: KernelAtomName;
  readonly pair: number;
  readonly pos: number;
}

/** The syntax tree. Sums and products are n-ary, so its depth is bounded by the parenthesis nesting. */
export type KernelTerm =
  | { readonly kind: 'atom'; readonly atom: number; readonly pos: number }
  | { readonly kind: 'constant'; readonly value: Rational; readonly pos: number }
  | { readonly kind: 'sum' | 'product'; readonly terms: readonly KernelTerm[]; readonly pos: number }
  | { readonly kind: 'power'; readonly base: KernelTerm; readonly exponent: number; readonly pos: number };

/** The inputs of a lowering: the variables of each pair and the scale of each atom (undefined for linear). */
export interface KernelBindings<T> {
  pair(index: number): { readonly x: T; readonly y: T };
  scale(atom: number): T | undefined;
}

/** A parsed kernel: `parseKernel('gaussian(x,y) * linear(u,v)**2')`. Immutable. */
export class KernelExpression {
  constructor(
    /** The text as given. */
    readonly text: string,
    readonly root: KernelTerm,
    /** Variable pairs, in order of first appearance. */
    readonly pairs: readonly KernelPair[],
    /** Atom occurrences, in order of appearance: atom k takes scale k. */
    readonly atoms: readonly KernelAtom[],
  ) {
    Object.freeze(this.pairs);
    Object.freeze(this.atoms);
    Object.freeze(this);
  }

  /** Canonical text: parentheses only where precedence needs them, exact decimal constants; re-parses alike. */
  toString(): string {
    const print = (t: KernelTerm, context: 'top' | 'product' | 'base'): string => {
      switch (t.kind) {
        case 'atom': {
          const a = this.atoms[t.atom];
          const p = this.pairs[a.pair];
          return `${a.name}(${p.x},${p.y})`;
        }
        case 'constant':
          return decimalText(t.value);
        case 'power': {
          const text = `${print(t.base, 'base')}**${t.exponent}`;
          return context === 'base' ? `(${text})` : text;
        }
        case 'product': {
          const text = t.terms.map((u) => print(u, 'product')).join(' * ');
          return context === 'base' ? `(${text})` : text;
        }
        case 'sum': {
          const text = t.terms.map((u) => print(u, 'top')).join(' + ');
          return context === 'top' ? text : `(${text})`;
        }
      }
    };
    return print(this.root, 'top');
  }

  /**
   * The kernel as a formula of `alg` (formula nodes, LazyTensors...): `domain: 'sum'` gives k(x,y), `'log'` its
   * logarithm in the stable form of the module comment. Dimension errors name the atom and its position.
   */
  lower<T>(alg: KernelAlgebra<T>, inputs: KernelBindings<T>, domain: 'sum' | 'log' = 'sum'): T {
    const atomValue = new Map<number, T>();
    const valueOf = (k: number): T => {
      let v = atomValue.get(k);
      if (v === undefined) {
        const atom = this.atoms[k];
        const { x, y } = inputs.pair(atom.pair);
        const scale = inputs.scale(k);
        const def = KERNEL_ATOMS.get(atom.name) as AtomDef;
        const where = `${atom.name}(${this.pairs[atom.pair].x},${this.pairs[atom.pair].y})`;
        if (def.scaled && scale === undefined) {
          throw this.error('ERR_INVALID_ARGUMENT', atom.pos, `${where} (atom ${k}) needs a scale γ`);
        }
        if (!def.scaled && scale !== undefined) {
          throw this.error(
            'ERR_INVALID_ARGUMENT',
            atom.pos,
            `${where} (atom ${k}) takes no scale: give null for it`,
          );
        }
        v = this.at(atom.pos, `${where}: `, () =>
          def.scaled ? alg.call('WeightedSqDist', [scale as T, x, y]) : alg.call('Scalprod', [x, y]),
        );
        atomValue.set(k, v);
      }
      return v;
    };
    const balanced = (name: string, values: T[]): T => {
      // Pairwise folding keeps the formula's depth logarithmic in the number of terms.
      while (values.length > 1) {
        const next: T[] = [];
        for (let k = 0; k + 1 < values.length; k += 2) next.push(alg.call(name, [values[k], values[k + 1]]));
        if (values.length % 2 === 1) next.push(values[values.length - 1]);
        values = next;
      }
      return values[0];
    };
    const plain = (t: KernelTerm): T => {
      switch (t.kind) {
        case 'atom': {
          const def = KERNEL_ATOMS.get(this.atoms[t.atom].name) as AtomDef;
          return this.at(t.pos, '', () => def.sum(alg, valueOf(t.atom)));
        }
        case 'constant':
          return alg.constant(t.value);
        case 'power':
          return this.at(t.pos, '', () =>
            t.exponent === 2
              ? alg.call('Square', [plain(t.base)])
              : alg.call('Pow', [plain(t.base)], [t.exponent]),
          );
        default:
          return this.at(t.pos, '', () => balanced(t.kind === 'sum' ? 'Add' : 'Mult', t.terms.map(plain)));
      }
    };
    const log = (t: KernelTerm): T => {
      switch (t.kind) {
        case 'atom': {
          const def = KERNEL_ATOMS.get(this.atoms[t.atom].name) as AtomDef;
          return this.at(t.pos, '', () => def.log(alg, valueOf(t.atom)));
        }
        case 'constant':
          return alg.call('Log', [alg.constant(t.value)]);
        case 'power':
          return this.at(t.pos, '', () =>
            alg.call('Mult', [alg.constant(rational(t.exponent)), log(t.base)]),
          );
        case 'product':
          return this.at(t.pos, '', () => balanced('Add', t.terms.map(log)));
        case 'sum':
          return this.at(t.pos, '', () => alg.call('Log', [plain(t)]));
      }
    };
    return domain === 'log' ? log(this.root) : plain(this.root);
  }

  private error(code: KeOpsErrorCode, pos: number, message: string): KeOpsError {
    return new KeOpsError(code, `${message} (at position ${pos})${excerpt(this.text, pos)}`, {
      position: pos,
    });
  }

  /** Runs a lowering step, giving its errors (dimensions...) the position of the atom or operator. */
  private at<T>(pos: number, prefix: string, build: () => T): T {
    try {
      return build();
    } catch (e) {
      if (e instanceof KeOpsError && e.position === undefined) {
        throw new KeOpsError(e.code, `${prefix}${e.message} (at position ${pos})${excerpt(this.text, pos)}`, {
          position: pos,
          cause: e,
        });
      }
      throw e;
    }
  }
}

const ATOM_NAMES = [...KERNEL_ATOMS.keys()];

function tokenText(t: Token): string {
  return t.kind === 'eof' ? 'the end of the kernel' : `'${t.text}'`;
}

/** Recursive descent over the formula lexer's tokens; recursion depth is bounded by MAX_KERNEL_NESTING. */
class KernelParser {
  private readonly lexer: Lexer;
  private readonly pairs: KernelPair[] = [];
  private readonly atoms: KernelAtom[] = [];
  /** Each variable name: its pair and side. */
  private readonly names = new Map<string, { pair: number; side: 'x' | 'y' }>();
  private depth = 0;

  constructor(private readonly text: string) {
    this.lexer = new Lexer(text);
  }

  parse(): KernelExpression {
    const root = this.sum();
    const t = this.lexer.next();
    if (t.kind !== 'eof') {
      const hint =
        t.kind === 'op' && t.text === ')'
          ? "unmatched ')'"
          : `unexpected ${tokenText(t)}: an operator (+, * or **) is missing before it`;
      throw this.fail('ERR_FORMULA_SYNTAX', t.pos, hint);
    }
    if (this.atoms.length === 0) {
      throw this.fail(
        'ERR_FORMULA_SYNTAX',
        root.pos,
        'a kernel needs at least one atom, such as gaussian(x,y)',
      );
    }
    return new KernelExpression(this.text, root, this.pairs, this.atoms);
  }

  private fail(code: KeOpsErrorCode, pos: number, message: string): KeOpsError {
    return new KeOpsError(code, `${message} (at position ${pos})${excerpt(this.text, pos)}`, {
      position: pos,
    });
  }

  private isOp(t: Token, text: string): boolean {
    return t.kind === 'op' && t.text === text;
  }

  private sum(): KernelTerm {
    return this.chain('+', 'sum', () => this.product());
  }

  private product(): KernelTerm {
    return this.chain('*', 'product', () => this.power());
  }

  /** `operand (op operand)*` as one n-ary node (balanced when lowered, so long chains stay shallow). */
  private chain(op: '+' | '*', kind: 'sum' | 'product', operand: () => KernelTerm): KernelTerm {
    const first = operand();
    const terms = [first];
    while (this.isOp(this.lexer.peek(), op)) {
      this.lexer.next();
      terms.push(operand());
    }
    this.rejectMinus();
    return terms.length === 1 ? first : { kind, terms, pos: first.pos };
  }

  private rejectMinus(): void {
    const t = this.lexer.peek();
    if (this.isOp(t, '-') || this.isOp(t, '/')) {
      throw this.fail(
        'ERR_FORMULA_SYNTAX',
        t.pos,
        `'${t.text}' is not part of the kernel language: kernels combine with +, *, **k and non-negative constants`,
      );
    }
  }

  private power(): KernelTerm {
    const base = this.primary();
    const t = this.lexer.peek();
    if (!this.isOp(t, '**')) return base;
    this.lexer.next();
    const e = this.lexer.next();
    if (e.kind !== 'int') {
      throw this.fail(
        'ERR_FORMULA_PARAM',
        e.pos,
        `the exponent after '**' must be a non-negative integer literal, found ${tokenText(e)}`,
      );
    }
    const exponent = e.text.length > 10 ? Number.POSITIVE_INFINITY : Number(e.text);
    if (exponent > 2 ** 31 - 1) {
      throw this.fail('ERR_FORMULA_PARAM', e.pos, `the exponent ${e.text} is too large`);
    }
    if (this.isOp(this.lexer.peek(), '**')) {
      throw this.fail(
        'ERR_FORMULA_SYNTAX',
        this.lexer.peek().pos,
        'chained powers: write (k**a)**b, or the product of the exponents',
      );
    }
    return { kind: 'power', base, exponent, pos: t.pos };
  }

  private primary(): KernelTerm {
    const t = this.lexer.next();
    if (t.kind === 'int' || t.kind === 'decimal') {
      const value = t.text.length > 400 ? undefined : parseDecimal(t.text);
      if (value === undefined) {
        throw this.fail(
          'ERR_FORMULA_PARAM',
          t.pos,
          `number literal '${t.text.slice(0, 40)}' is out of range`,
        );
      }
      return { kind: 'constant', value, pos: t.pos };
    }
    if (this.isOp(t, '(')) {
      if (++this.depth > MAX_KERNEL_NESTING) {
        throw this.fail(
          'ERR_FORMULA_TOO_LARGE',
          t.pos,
          `the kernel is nested more than ${MAX_KERNEL_NESTING} levels deep`,
        );
      }
      const inner = this.sum();
      const close = this.lexer.next();
      if (!this.isOp(close, ')')) {
        if (close.kind === 'eof') throw this.fail('ERR_FORMULA_SYNTAX', t.pos, "'(' is never closed");
        throw this.fail(
          'ERR_FORMULA_SYNTAX',
          close.pos,
          `expected ')' or an operator, found ${tokenText(close)}`,
        );
      }
      this.depth--;
      return inner;
    }
    if (t.kind === 'ident') return this.atom(t);
    if (this.isOp(t, '-')) {
      throw this.fail(
        'ERR_FORMULA_SYNTAX',
        t.pos,
        'negative terms are not part of the kernel language: kernels combine with +, *, **k and non-negative constants',
      );
    }
    const wanted = t.kind === 'eof' && this.atoms.length === 0 && t.pos === 0 ? 'empty kernel' : undefined;
    throw this.fail(
      'ERR_FORMULA_SYNTAX',
      t.pos,
      wanted ?? `expected an atom such as gaussian(x,y), a number or '(', found ${tokenText(t)}`,
    );
  }

  private atom(t: Token): KernelTerm {
    if (!(ATOM_NAMES as string[]).includes(t.text)) {
      const suggestion = closestName(t.text, ATOM_NAMES);
      const hint =
        suggestion !== undefined ? `: did you mean ${suggestion}?` : ` (atoms: ${ATOM_NAMES.join(', ')})`;
      throw this.fail('ERR_FORMULA_NAME', t.pos, `unknown kernel '${t.text}'${hint}`);
    }
    const name = t.text as KernelAtomName;
    const signature = `${name}(x,y): a pair of variable names`;
    const expect = (text: string): Token => {
      const u = this.lexer.next();
      if (!this.isOp(u, text)) {
        throw this.fail(
          'ERR_FORMULA_SYNTAX',
          u.pos,
          `expected '${text}' in ${signature}, found ${tokenText(u)}`,
        );
      }
      return u;
    };
    const variable = (): Token => {
      const u = this.lexer.next();
      if (u.kind !== 'ident' || !isIdentifier(u.text)) {
        throw this.fail(
          'ERR_FORMULA_SYNTAX',
          u.pos,
          `expected a variable name in ${signature}, found ${tokenText(u)}`,
        );
      }
      if ((ATOM_NAMES as string[]).includes(u.text)) {
        throw this.fail('ERR_FORMULA_NAME', u.pos, `'${u.text}' is a kernel, not a variable name`);
      }
      return u;
    };
    expect('(');
    const x = variable();
    expect(',');
    const y = variable();
    const close = this.lexer.next();
    if (close.kind === 'eof')
      throw this.fail('ERR_FORMULA_SYNTAX', t.pos, `the '(' of ${name} is never closed`);
    if (!this.isOp(close, ')')) {
      const what = this.isOp(close, ',')
        ? `${name} takes two variables; its scale γ is given to kernelProduct, not written here`
        : `expected ')' in ${signature}, found ${tokenText(close)}`;
      throw this.fail('ERR_FORMULA_ARITY', close.pos, what);
    }
    if (x.text === y.text) {
      throw this.fail(
        'ERR_FORMULA_NAME',
        y.pos,
        `${name}(${x.text},${y.text}): the two variables must differ`,
      );
    }
    const pair = this.pairOf(x, y);
    this.atoms.push({ name, pair, pos: t.pos });
    return { kind: 'atom', atom: this.atoms.length - 1, pos: t.pos };
  }

  /** The pair (x,y), declared on first use; a name keeps its pair and side. */
  private pairOf(x: Token, y: Token): number {
    const known = this.names.get(x.text);
    if (known !== undefined) {
      const p = this.pairs[known.pair];
      if (known.side === 'x' && p.y === y.text) return known.pair;
      throw this.conflict(x, known);
    }
    const other = this.names.get(y.text);
    if (other !== undefined) throw this.conflict(y, other);
    this.pairs.push({ x: x.text, y: y.text });
    const pair = this.pairs.length - 1;
    this.names.set(x.text, { pair, side: 'x' });
    this.names.set(y.text, { pair, side: 'y' });
    return pair;
  }

  private conflict(t: Token, known: { pair: number; side: 'x' | 'y' }): KeOpsError {
    const p = this.pairs[known.pair];
    return this.fail(
      'ERR_FORMULA_NAME',
      t.pos,
      `'${t.text}' already belongs to the pair (${p.x},${p.y}): each variable belongs to one pair, always in the same place`,
    );
  }
}

/**
 * Parses a kernel of the high-level language (module comment). Throws KeOpsError with the `position` of the
 * problem: ERR_FORMULA_SYNTAX, ERR_FORMULA_NAME (unknown atom, inconsistent pairs), ERR_FORMULA_PARAM (bad
 * exponent), ERR_FORMULA_TOO_LARGE.
 */
export function parseKernel(text: string): KernelExpression {
  if (typeof text !== 'string') {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `parseKernel: the kernel must be a string, got ${typeof text}`,
    );
  }
  if (text.length > MAX_KERNEL_LENGTH) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `the kernel is ${text.length} characters long; at most ${MAX_KERNEL_LENGTH} are accepted`,
    );
  }
  return new KernelParser(text).parse();
}

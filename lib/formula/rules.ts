/**
 * Simplification as a table of rewrite rules over hash-consed nodes (docs/semantics.md 3.5), applied by the
 * builder whenever a node is constructed, so every node in existence is in simplified form.
 *
 * A rule sees the candidate (operation, simplified children, parameters, dim) and returns an equivalent node
 * of the same dim, or undefined. Rules must make formulas strictly simpler so that rewriting terminates.
 *
 * Canonical forms the rules maintain (and rely on, to avoid rewriting in circles):
 * - scalar constants (IntCst / RatCst) are the left operand of Add and Mult, and float to the top of products;
 * - signs float out of products, quotients, sums and dot products;
 * - Exp factors sit at the right end of products;
 * - a scalar broadcast (SumT) is kept scalar as long as possible.
 */
import { KeOpsError } from '../errors';
import { isRational, type Node, type ParamValue } from './node';
import { type Builder, type OpDef, paramError } from './opdef';
import { isFactorizationTrivial } from './ops/factorize';
import { type Rational, ratAdd, ratDiv, ratMul, ratNeg, ratSub, rational } from './rational';

export interface Candidate {
  readonly op: OpDef;
  readonly children: readonly Node[];
  readonly params: readonly ParamValue[];
  readonly dim: number;
}

export interface Rule {
  /** Unique, descriptive name, e.g. 'Add: x + 0 -> x'. Tests cover every rule by name. */
  readonly name: string;
  /** The operation whose construction triggers this rule. */
  readonly op: string;
  apply(c: Candidate, b: Builder): Node | undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Small predicates and constructors shared by the rules.

const is = (n: Node, name: string): boolean => n.op.name === name;
const isZero = (n: Node): boolean => is(n, 'Zero');
const isConst = (n: Node): boolean => is(n, 'IntCst') || is(n, 'RatCst');
const intOf = (n: Node, k = 0): number => n.params[k] as number;

/** The exact value of a scalar constant node, or undefined. */
function constValue(n: Node): Rational | undefined {
  if (is(n, 'IntCst')) return rational(intOf(n));
  if (is(n, 'RatCst')) return n.params[0] as Rational;
  return undefined;
}

const constEquals = (n: Node, v: number): boolean => {
  const c = constValue(n);
  return c !== undefined && c.q === 1n && c.p === BigInt(v);
};

/** The node of an exact constant (the RatCst rules turn it into IntCst or Zero(1) where they apply). */
const cst = (b: Builder, r: Rational): Node => b.rat(r);

/** x seen at dim D: x itself, or the scalar x broadcast (KeOps' internal Broadcast). */
const broadcast = (b: Builder, x: Node, D: number): Node => (x.dim === D ? x : b.sumT(x, D));

/** Text of a formula for error messages: the canonical text when short (printing a large DAG as a tree is not). */
export function briefText(n: Node): string {
  return n.treeSize <= 100
    ? n.toString()
    : `${n.op.name}(...) (a formula of dim ${n.dim}, ${n.treeSize} nodes as a tree)`;
}

const divisionByZero = (what: string): KeOpsError => paramError(`division by zero in ${what}`);

/** A product c*g with a constant left factor, as [c, g]. */
function scaled(n: Node): [Rational, Node] | undefined {
  if (!is(n, 'Mult')) return undefined;
  const c = constValue(n.children[0]);
  return c === undefined ? undefined : [c, n.children[1]];
}

type Apply = (c: Candidate, b: Builder) => Node | undefined;
const rule = (op: string, name: string, apply: Apply): Rule => ({ op, name: `${op}: ${name}`, apply });

/** Rules on binary operations, with the two children destructured. */
const rule2 = (
  op: string,
  name: string,
  apply: (x: Node, y: Node, b: Builder, c: Candidate) => Node | undefined,
) => rule(op, name, (c, b) => apply(c.children[0], c.children[1], b, c));
const rule1 = (op: string, name: string, apply: (x: Node, b: Builder, c: Candidate) => Node | undefined) =>
  rule(op, name, (c, b) => apply(c.children[0], b, c));

const SYMBOL = { Add: '+', Subtract: '-', Mult: '*', Divide: '/' } as const;

/** The operation `op` applied to (x, y), by name (Add, Subtract, Mult, Divide). */
const binary = (b: Builder, op: string, x: Node, y: Node): Node => b.call(op, [x, y]);

/** One step of a push-down rewrite: the child to descend into, and how to rebuild the parent around it. */
type Step = [next: Node, rebuild: (inner: Node) => Node];

/**
 * Pushes an operation down a path of the formula (Sum through scalar factors, Elem through sums...) in a
 * loop rather than by nested rule applications, so that the builder's rule nesting stays bounded whatever
 * the depth of the formula: `step` descends one level or says stop; `base` handles where it stops.
 */
function pushDown(start: Node, step: (n: Node) => Step | undefined, base: (n: Node) => Node): Node {
  const rebuilds: Array<(inner: Node) => Node> = [];
  let n = start;
  for (let next = step(n); next !== undefined; next = step(n)) {
    rebuilds.push(next[1]);
    n = next[0];
  }
  let result = base(n);
  for (let k = rebuilds.length - 1; k >= 0; k--) result = rebuilds[k](result);
  return result;
}

/**
 * Peels signs and scalar factors off a vector, one level: Minus(a), and s*g or g*s with s scalar and g a
 * vector. `side` says where a factor goes back: to the left or right of the result, or where it was.
 */
function scalarPeel(b: Builder, side: 'left' | 'right' | 'same'): (n: Node) => Step | undefined {
  const put = (s: Node, wasLeft: boolean) => (inner: Node) =>
    side === 'left' || (side === 'same' && wasLeft) ? b.mul(s, inner) : b.mul(inner, s);
  return (n) => {
    if (n.dim === 1) return undefined;
    if (is(n, 'Minus')) return [n.children[0], (inner) => b.neg(inner)];
    if (!is(n, 'Mult')) return undefined;
    const [f, g] = n.children;
    if (f.dim === 1) return [g, put(f, true)];
    if (g.dim === 1) return [f, put(g, false)];
    return undefined;
  };
}

/**
 * Rules shared by the broadcasting binary operations: a SumT operand is kept scalar as long as possible
 * (F(SumT(f), SumT(g)) -> SumT(F(f, g)), F(s, SumT(g)) -> SumT(F(s, g))) and dropped where broadcasting
 * makes it redundant (F(SumT(f), g) -> F(f, g) when g has the full dim).
 */
function sumTRules(op: 'Add' | 'Subtract' | 'Mult' | 'Divide'): Rule[] {
  const sumT = (n: Node): boolean => is(n, 'SumT');
  const o = SYMBOL[op];
  return [
    rule2(op, `SumT(f,d) ${o} SumT(g,d) -> SumT(f${o}g,d)`, (x, y, b, c) =>
      sumT(x) && sumT(y) ? b.sumT(binary(b, op, x.children[0], y.children[0]), c.dim) : undefined,
    ),
    rule2(op, `s ${o} SumT(g,d) with s scalar -> SumT(s${o}g,d)`, (x, y, b, c) =>
      x.dim === 1 && sumT(y) ? b.sumT(binary(b, op, x, y.children[0]), c.dim) : undefined,
    ),
    rule2(op, `SumT(f,d) ${o} s with s scalar -> SumT(f${o}s,d)`, (x, y, b, c) =>
      sumT(x) && y.dim === 1 ? b.sumT(binary(b, op, x.children[0], y), c.dim) : undefined,
    ),
    rule2(op, `SumT(f,d) ${o} g with g of dim d -> f${o}g`, (x, y, b) =>
      sumT(x) && y.dim === x.dim ? binary(b, op, x.children[0], y) : undefined,
    ),
    rule2(op, `g ${o} SumT(f,d) with g of dim d -> g${o}f`, (x, y, b) =>
      sumT(y) && x.dim === y.dim ? binary(b, op, x, y.children[0]) : undefined,
    ),
  ];
}

/**
 * Shared factors: a*b ± a*d -> a*(b±d), in the four positions of the shared factor. The factor keeps the side
 * it had in the first term. Dims stay valid: every operand has dim 1 or the output dim.
 */
function sharedFactorRules(op: 'Add' | 'Subtract'): Rule[] {
  const sign = SYMBOL[op];
  const positions: Array<[number, number, string]> = [
    [0, 0, `a*b ${sign} a*d -> a*(b${sign}d)`],
    [0, 1, `a*b ${sign} d*a -> a*(b${sign}d)`],
    [1, 0, `b*a ${sign} a*d -> (b${sign}d)*a`],
    [1, 1, `b*a ${sign} d*a -> (b${sign}d)*a`],
  ];
  return positions.map(([i, j, name]) =>
    rule2(op, name, (x, y, b) => {
      if (!is(x, 'Mult') || !is(y, 'Mult') || x.children[i] !== y.children[j]) return undefined;
      const shared = x.children[i];
      const rest = binary(b, op, x.children[1 - i], y.children[1 - j]);
      return i === 0 ? b.mul(shared, rest) : b.mul(rest, shared);
    }),
  );
}

/** Constant re-association for Add / Subtract: (c1 ± (c2 ± g)) and ((c1 ± g) ± c2) fold c1 and c2. */
function reassociationRules(): Rule[] {
  type Shape = 'c+g' | 'c-g' | 'g-c';
  const shapeOf = (n: Node): [Shape, Rational, Node] | undefined => {
    if (is(n, 'Add')) {
      const c = constValue(n.children[0]);
      if (c !== undefined) return ['c+g', c, n.children[1]];
    }
    if (is(n, 'Subtract')) {
      const c0 = constValue(n.children[0]);
      if (c0 !== undefined) return ['c-g', c0, n.children[1]];
      const c1 = constValue(n.children[1]);
      if (c1 !== undefined) return ['g-c', c1, n.children[0]];
    }
    return undefined;
  };
  // Each case: the outer op, whether the outer constant c1 is its left operand, the inner shape, and the
  // result as a form (k+g, k-g or g-k) with its folded constant k.
  type Result = (c1: Rational, c2: Rational) => ['k+g' | 'k-g' | 'g-k', Rational];
  const cases: Array<
    [op: 'Add' | 'Subtract', constLeft: boolean, inner: Shape, name: string, result: Result]
  > = [
    ['Add', true, 'c+g', 'c1 + (c2 + g) -> (c1+c2) + g', (a, c) => ['k+g', ratAdd(a, c)]],
    ['Add', true, 'c-g', 'c1 + (c2 - g) -> (c1+c2) - g', (a, c) => ['k-g', ratAdd(a, c)]],
    ['Add', true, 'g-c', 'c1 + (g - c2) -> (c1-c2) + g', (a, c) => ['k+g', ratSub(a, c)]],
    ['Subtract', true, 'c+g', 'c1 - (c2 + g) -> (c1-c2) - g', (a, c) => ['k-g', ratSub(a, c)]],
    ['Subtract', true, 'c-g', 'c1 - (c2 - g) -> (c1-c2) + g', (a, c) => ['k+g', ratSub(a, c)]],
    ['Subtract', true, 'g-c', 'c1 - (g - c2) -> (c1+c2) - g', (a, c) => ['k-g', ratAdd(a, c)]],
    ['Subtract', false, 'c+g', '(c2 + g) - c1 -> (c2-c1) + g', (a, c) => ['k+g', ratSub(c, a)]],
    ['Subtract', false, 'c-g', '(c2 - g) - c1 -> (c2-c1) - g', (a, c) => ['k-g', ratSub(c, a)]],
    ['Subtract', false, 'g-c', '(g - c2) - c1 -> g - (c1+c2)', (a, c) => ['g-k', ratAdd(a, c)]],
  ];
  return cases.map(([op, constLeft, inner, name, result]) =>
    rule2(op, name, (x, y, b) => {
      const c1 = constValue(constLeft ? x : y);
      const shape = shapeOf(constLeft ? y : x);
      if (c1 === undefined || shape === undefined || shape[0] !== inner) return undefined;
      const [form, k] = result(c1, shape[1]);
      const g = shape[2];
      if (form === 'k+g') return b.add(cst(b, k), g);
      if (form === 'k-g') return b.sub(cst(b, k), g);
      return b.sub(g, cst(b, k));
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------
// Constants.

const constantRules: Rule[] = [
  rule('IntCst', 'IntCst(0) -> Zero(1)', (c, b) => (c.params[0] === 0 ? b.zero(1) : undefined)),
  rule('RatCst', 'RatCst(p,q) not in lowest terms -> reduced', (c, b) => {
    const r = c.params[0];
    if (!isRational(r)) return undefined;
    if (typeof r.p !== 'bigint' || typeof r.q !== 'bigint') {
      throw paramError(
        `RatCst: numerator and denominator must be integers, got ${String(r.p)} and ${String(r.q)}`,
      );
    }
    if (r.q === 0n) throw divisionByZero(`RatCst(${r.p},${r.q})`);
    const reduced = rational(r.p, r.q);
    return reduced.p === r.p && reduced.q === r.q ? undefined : b.rat(reduced);
  }),
  rule('RatCst', 'RatCst(0,q) -> Zero(1)', (c, b) =>
    (c.params[0] as Rational).p === 0n ? b.zero(1) : undefined,
  ),
  rule('RatCst', 'RatCst(p,1) -> IntCst(p)', (c, b) => {
    const r = c.params[0] as Rational;
    // Integers beyond 2^53 stay rationals: IntCst holds a safe integer.
    return r.q === 1n && Number.isSafeInteger(Number(r.p)) ? b.int(Number(r.p)) : undefined;
  }),
];

// ---------------------------------------------------------------------------------------------------------
// Add, Subtract, Minus.

const addRules: Rule[] = [
  rule2('Add', '0 + b -> b', (x, y, b, c) => (isZero(x) ? broadcast(b, y, c.dim) : undefined)),
  rule2('Add', 'a + 0 -> a', (x, y, b, c) => (isZero(y) ? broadcast(b, x, c.dim) : undefined)),
  rule2('Add', 'c1 + c2 -> constant', (x, y, b) => {
    const [p, q] = [constValue(x), constValue(y)];
    return p !== undefined && q !== undefined ? cst(b, ratAdd(p, q)) : undefined;
  }),
  rule2('Add', 'g + c -> c + g', (x, y, b) => (isConst(y) && !isConst(x) ? b.add(y, x) : undefined)),
  ...reassociationRules().filter((r) => r.op === 'Add'),
  rule2('Add', 'a + a -> 2*a', (x, y, b) => (x === y ? b.mul(b.int(2), x) : undefined)),
  rule2('Add', '(-a) + (-b) -> -(a+b)', (x, y, b) =>
    is(x, 'Minus') && is(y, 'Minus') ? b.neg(b.add(x.children[0], y.children[0])) : undefined,
  ),
  rule2('Add', 'a + (-b) -> a - b', (x, y, b) => (is(y, 'Minus') ? b.sub(x, y.children[0]) : undefined)),
  rule2('Add', '(-a) + b -> b - a', (x, y, b) => (is(x, 'Minus') ? b.sub(y, x.children[0]) : undefined)),
  rule2('Add', 'n*a + a -> (n+1)*a', (x, y, b) => {
    const s = scaled(x);
    return s !== undefined && s[1] === y ? b.mul(cst(b, ratAdd(s[0], rational(1))), y) : undefined;
  }),
  rule2('Add', 'a + n*a -> (1+n)*a', (x, y, b) => {
    const s = scaled(y);
    return s !== undefined && s[1] === x ? b.mul(cst(b, ratAdd(rational(1), s[0])), x) : undefined;
  }),
  ...sharedFactorRules('Add'),
  ...sumTRules('Add'),
];

const subtractRules: Rule[] = [
  rule2('Subtract', '0 - b -> -b', (x, y, b, c) => (isZero(x) ? b.neg(broadcast(b, y, c.dim)) : undefined)),
  rule2('Subtract', 'a - 0 -> a', (x, y, b, c) => (isZero(y) ? broadcast(b, x, c.dim) : undefined)),
  rule2('Subtract', 'a - a -> 0', (x, y, b, c) => (x === y ? b.zero(c.dim) : undefined)),
  rule2('Subtract', 'c1 - c2 -> constant', (x, y, b) => {
    const [p, q] = [constValue(x), constValue(y)];
    return p !== undefined && q !== undefined ? cst(b, ratSub(p, q)) : undefined;
  }),
  ...reassociationRules().filter((r) => r.op === 'Subtract'),
  rule2('Subtract', 'a - (-b) -> a + b', (x, y, b) => (is(y, 'Minus') ? b.add(x, y.children[0]) : undefined)),
  rule2('Subtract', '(-a) - b -> -(a+b)', (x, y, b) =>
    is(x, 'Minus') ? b.neg(b.add(x.children[0], y)) : undefined,
  ),
  rule2('Subtract', 'n*a - a -> (n-1)*a', (x, y, b) => {
    const s = scaled(x);
    return s !== undefined && s[1] === y ? b.mul(cst(b, ratSub(s[0], rational(1))), y) : undefined;
  }),
  rule2('Subtract', 'a - n*a -> (1-n)*a', (x, y, b) => {
    const s = scaled(y);
    return s !== undefined && s[1] === x ? b.mul(cst(b, ratSub(rational(1), s[0])), x) : undefined;
  }),
  ...sharedFactorRules('Subtract'),
  ...sumTRules('Subtract'),
];

const minusRules: Rule[] = [
  rule1('Minus', '-0 -> 0', (x) => (isZero(x) ? x : undefined)),
  rule1('Minus', '-(-a) -> a', (x) => (is(x, 'Minus') ? x.children[0] : undefined)),
  rule1('Minus', '-c -> constant', (x, b) => {
    const v = constValue(x);
    return v === undefined ? undefined : cst(b, ratNeg(v));
  }),
  rule1('Minus', '-(c*g) -> (-c)*g', (x, b) => {
    const s = scaled(x);
    return s === undefined ? undefined : b.mul(cst(b, ratNeg(s[0])), s[1]);
  }),
  rule1('Minus', '-(a-b) -> b-a', (x, b) =>
    is(x, 'Subtract') ? b.sub(x.children[1], x.children[0]) : undefined,
  ),
  rule1('Minus', '-SumT(f,d) -> SumT(-f,d)', (x, b) =>
    is(x, 'SumT') ? b.sumT(b.neg(x.children[0]), x.dim) : undefined,
  ),
];

// ---------------------------------------------------------------------------------------------------------
// Mult, Divide.

/** A product u*Exp(a) whose right factor is an exponential (u is not a constant: constants float up). */
const endsWithExp = (n: Node): boolean =>
  is(n, 'Mult') && is(n.children[1], 'Exp') && !isConst(n.children[0]);

/** ElemT(f,n,m) * g -> ElemT(f * g_m, n, m): a product with a unit-vector-like operand stays scalar. */
function elemTProduct(b: Builder, e: Node, g: Node): Node {
  const [n, m] = [intOf(e, 0), intOf(e, 1)];
  const gm = g.dim === 1 ? g : b.call('Elem', [g], [m]);
  return b.call('ElemT', [b.mul(e.children[0], gm)], [n, m]);
}

const multRules: Rule[] = [
  rule2('Mult', '0 * b -> 0', (x, _y, b, c) => (isZero(x) ? b.zero(c.dim) : undefined)),
  rule2('Mult', 'a * 0 -> 0', (_x, y, b, c) => (isZero(y) ? b.zero(c.dim) : undefined)),
  rule2('Mult', 'c1 * c2 -> constant', (x, y, b) => {
    const [p, q] = [constValue(x), constValue(y)];
    return p !== undefined && q !== undefined ? cst(b, ratMul(p, q)) : undefined;
  }),
  rule2('Mult', 'g * c -> c * g', (x, y, b) => (isConst(y) && !isConst(x) ? b.mul(y, x) : undefined)),
  rule2('Mult', '1 * b -> b', (x, y, b, c) => (constEquals(x, 1) ? broadcast(b, y, c.dim) : undefined)),
  rule2('Mult', '(-1) * b -> -b', (x, y, b, c) =>
    constEquals(x, -1) ? b.neg(broadcast(b, y, c.dim)) : undefined,
  ),
  rule2('Mult', 'c1 * (c2 * g) -> (c1 c2) * g', (x, y, b) => {
    const c1 = constValue(x);
    const s = scaled(y);
    return c1 !== undefined && s !== undefined ? b.mul(cst(b, ratMul(c1, s[0])), s[1]) : undefined;
  }),
  rule2('Mult', '(-a) * (-b) -> a * b', (x, y, b) =>
    is(x, 'Minus') && is(y, 'Minus') ? b.mul(x.children[0], y.children[0]) : undefined,
  ),
  rule2('Mult', 'c * (-b) -> (-c) * b', (x, y, b) => {
    const v = constValue(x);
    return v !== undefined && is(y, 'Minus') ? b.mul(cst(b, ratNeg(v)), y.children[0]) : undefined;
  }),
  rule2('Mult', '(-a) * b -> -(a * b)', (x, y, b) =>
    is(x, 'Minus') ? b.neg(b.mul(x.children[0], y)) : undefined,
  ),
  rule2('Mult', 'a * (-b) -> -(a * b)', (x, y, b) =>
    is(y, 'Minus') ? b.neg(b.mul(x, y.children[0])) : undefined,
  ),
  rule2('Mult', 'a * a -> Square(a)', (x, y, b) => (x === y ? b.call('Square', [x]) : undefined)),
  rule2('Mult', '(c*g) * h -> c * (g*h)', (x, y, b) => {
    const s = scaled(x);
    return s !== undefined ? b.mul(cst(b, s[0]), b.mul(s[1], y)) : undefined;
  }),
  rule2('Mult', 'g * (c*h) -> c * (g*h)', (x, y, b) => {
    const s = scaled(y);
    return s !== undefined && !isConst(x) ? b.mul(cst(b, s[0]), b.mul(x, s[1])) : undefined;
  }),
  rule2('Mult', 'ElemT(f,n,m) * g -> ElemT(f*g_m,n,m)', (x, y, b) =>
    is(x, 'ElemT') ? elemTProduct(b, x, y) : undefined,
  ),
  rule2('Mult', 'g * ElemT(f,n,m) -> ElemT(f*g_m,n,m)', (x, y, b) =>
    is(y, 'ElemT') ? elemTProduct(b, y, x) : undefined,
  ),
  ...sumTRules('Mult'),
  rule2('Mult', 'Exp(a) * Exp(b) -> Exp(a+b)', (x, y, b) =>
    is(x, 'Exp') && is(y, 'Exp') ? b.call('Exp', [b.add(x.children[0], y.children[0])]) : undefined,
  ),
  rule2('Mult', '(u*Exp(a)) * Exp(b) -> u * Exp(a+b)', (x, y, b) =>
    endsWithExp(x) && is(y, 'Exp')
      ? b.mul(x.children[0], b.call('Exp', [b.add(x.children[1].children[0], y.children[0])]))
      : undefined,
  ),
  rule2('Mult', 'Exp(a) * g -> g * Exp(a)', (x, y, b) =>
    is(x, 'Exp') && !is(y, 'Exp') && !isConst(y) ? b.mul(y, x) : undefined,
  ),
  rule2('Mult', '(u*Exp(a)) * v -> (u*v) * Exp(a)', (x, y, b) =>
    endsWithExp(x) && !is(y, 'Exp') ? b.mul(b.mul(x.children[0], y), x.children[1]) : undefined,
  ),
  rule2('Mult', 'u * (v*Exp(a)) -> (u*v) * Exp(a)', (x, y, b) =>
    endsWithExp(y) && !isConst(x) && !is(x, 'Exp')
      ? b.mul(b.mul(x, y.children[0]), y.children[1])
      : undefined,
  ),
];

const divideRules: Rule[] = [
  rule2('Divide', 'a / 0 -> error (division by zero)', (x, y) => {
    if (isZero(y)) throw divisionByZero(`${briefText(x)} / ${briefText(y)}`);
    return undefined;
  }),
  rule2('Divide', '0 / b -> 0', (x, _y, b, c) => (isZero(x) ? b.zero(c.dim) : undefined)),
  rule2('Divide', 'c1 / c2 -> constant', (x, y, b) => {
    const [p, q] = [constValue(x), constValue(y)];
    return p !== undefined && q !== undefined ? cst(b, ratDiv(p, q)) : undefined;
  }),
  rule2('Divide', 'a / IntCst(n) -> RatCst(1,n) * a', (x, y, b) =>
    is(y, 'IntCst') ? b.mul(b.rat(rational(1, intOf(y))), x) : undefined,
  ),
  rule2('Divide', 'a / RatCst(p,q) -> RatCst(q,p) * a', (x, y, b) => {
    const r = is(y, 'RatCst') ? (y.params[0] as Rational) : undefined;
    return r === undefined ? undefined : b.mul(b.rat(rational(r.q, r.p)), x);
  }),
  rule2('Divide', '1 / f -> Inv(f)', (x, y, b) => (constEquals(x, 1) ? b.call('Inv', [y]) : undefined)),
  rule2('Divide', '(-a) / b -> -(a / b)', (x, y, b) =>
    is(x, 'Minus') ? b.neg(b.div(x.children[0], y)) : undefined,
  ),
  rule2('Divide', 'a / (-b) -> -(a / b)', (x, y, b) =>
    is(y, 'Minus') ? b.neg(b.div(x, y.children[0])) : undefined,
  ),
  ...sumTRules('Divide'),
];

// ---------------------------------------------------------------------------------------------------------
// Sum, SumT, Scalprod, Elem, ElemT.

/** Sum of a vector with its signs and scalar factors taken out, each where it was (s*g -> s*Sum(g)). */
const sumOfPeeled = (b: Builder, x: Node): Node => pushDown(x, scalarPeel(b, 'same'), (core) => b.sum(core));

const sumRules: Rule[] = [
  rule1('Sum', 'Sum(a) of dim 1 -> a', (x) => (x.dim === 1 ? x : undefined)),
  rule1('Sum', 'Sum(Zero(d)) -> 0', (x, b) => (isZero(x) ? b.zero(1) : undefined)),
  rule1('Sum', 'Sum(SumT(s,d)) -> d*s', (x, b) =>
    is(x, 'SumT') ? b.mul(b.int(x.dim), x.children[0]) : undefined,
  ),
  rule1('Sum', 'Sum(ElemT(s,n,m)) -> s', (x) => (is(x, 'ElemT') ? x.children[0] : undefined)),
  rule1('Sum', 'Sum(-a) -> -Sum(a)', (x, b) => (is(x, 'Minus') ? sumOfPeeled(b, x) : undefined)),
  rule1('Sum', 'Sum(s*g) with s scalar -> s*Sum(g)', (x, b) =>
    is(x, 'Mult') && x.children[0].dim === 1 ? sumOfPeeled(b, x) : undefined,
  ),
  rule1('Sum', 'Sum(g*s) with s scalar -> Sum(g)*s', (x, b) =>
    is(x, 'Mult') && x.children[1].dim === 1 ? sumOfPeeled(b, x) : undefined,
  ),
  rule1('Sum', 'Sum(f*g) -> f|g', (x, b) =>
    is(x, 'Mult') && x.children[0].dim === x.children[1].dim ? b.call('Scalprod', x.children) : undefined,
  ),
];

const sumTRulesOwn: Rule[] = [
  rule('SumT', 'SumT(Zero(1),d) -> Zero(d)', (c, b) => (isZero(c.children[0]) ? b.zero(c.dim) : undefined)),
  rule('SumT', 'SumT(f,1) -> f', (c) => (c.dim === 1 ? c.children[0] : undefined)),
];

/** (a|b) with the signs and scalar factors of both operands taken out: (s*f)|g -> s*(f|g), g|(s*f) -> (g|f)*s. */
function scalprodOfPeeled(b: Builder, x: Node, y: Node): Node {
  const right = (core: Node) =>
    pushDown(y, scalarPeel(b, 'right'), (coreY) => b.call('Scalprod', [core, coreY]));
  return pushDown(x, scalarPeel(b, 'left'), right);
}

const hasScalarFactor = (n: Node, side: 0 | 1): boolean =>
  is(n, 'Mult') && n.children[side].dim === 1 && n.children[1 - side].dim !== 1;

const scalprodRules: Rule[] = [
  rule2('Scalprod', '0 | b -> 0', (x, _y, b) => (isZero(x) ? b.zero(1) : undefined)),
  rule2('Scalprod', 'a | 0 -> 0', (_x, y, b) => (isZero(y) ? b.zero(1) : undefined)),
  rule2('Scalprod', 'scalar a | b -> a*Sum(b)', (x, y, b) => (x.dim === 1 ? b.mul(x, b.sum(y)) : undefined)),
  rule2('Scalprod', 'a | scalar b -> Sum(a)*b', (x, y, b) => (y.dim === 1 ? b.mul(b.sum(x), y) : undefined)),
  rule2('Scalprod', 'a | a -> Sum(Square(a))', (x, y, b) =>
    x === y ? b.sum(b.call('Square', [x])) : undefined,
  ),
  rule2('Scalprod', '(-a) | b -> -(a|b)', (x, y, b) =>
    is(x, 'Minus') ? scalprodOfPeeled(b, x, y) : undefined,
  ),
  rule2('Scalprod', 'a | (-b) -> -(a|b)', (x, y, b) =>
    is(y, 'Minus') ? scalprodOfPeeled(b, x, y) : undefined,
  ),
  rule2('Scalprod', 'SumT(s,d) | g -> s*Sum(g)', (x, y, b) =>
    is(x, 'SumT') ? b.mul(x.children[0], b.sum(y)) : undefined,
  ),
  rule2('Scalprod', 'f | SumT(s,d) -> Sum(f)*s', (x, y, b) =>
    is(y, 'SumT') ? b.mul(b.sum(x), y.children[0]) : undefined,
  ),
  ...([0, 1] as const).flatMap((side) => {
    const factor = side === 0 ? 's*f' : 'f*s';
    return [
      rule2('Scalprod', `(${factor}) | g -> s*(f|g) with s scalar`, (x, y, b) =>
        hasScalarFactor(x, side) ? scalprodOfPeeled(b, x, y) : undefined,
      ),
      rule2('Scalprod', `g | (${factor}) -> (g|f)*s with s scalar`, (x, y, b) =>
        hasScalarFactor(y, side) ? scalprodOfPeeled(b, x, y) : undefined,
      ),
    ];
  }),
];

/** Component m of x, where x may be a broadcast scalar. */
const component = (b: Builder, x: Node, m: number): Node => (x.dim === 1 ? x : b.call('Elem', [x], [m]));

/** Operands whose component m is simpler than themselves: scalars, broadcasts and unit-vector-like ElemT. */
const cheapComponent = (x: Node): boolean => x.dim === 1 || is(x, 'SumT') || is(x, 'ElemT');

/**
 * Elem(a op b, m) -> a_m op b_m when that simplifies an operand, and Elem(-a, m) -> -a_m: keeps Jacobian
 * diagonals (Divergence, Laplacian) scalar. Elem moves down the one operand that is not cheap.
 */
function elemPushed(b: Builder, x: Node, m: number): Node {
  const step = (n: Node): Step | undefined => {
    if (is(n, 'Minus')) return [n.children[0], (inner) => b.neg(inner)];
    const op = n.op.name;
    if (!Object.hasOwn(SYMBOL, op) || !n.children.some(cheapComponent)) return undefined;
    const [f, g] = n.children;
    if (cheapComponent(f)) return [g, (inner) => binary(b, op, component(b, f, m), inner)];
    return [f, (inner) => binary(b, op, inner, component(b, g, m))];
  };
  return pushDown(x, step, (core) => component(b, core, m));
}

const elemPushRules: Rule[] = (['Add', 'Subtract', 'Mult', 'Divide'] as const).map((op) =>
  rule1(
    'Elem',
    `Elem(a ${SYMBOL[op]} b,m) with a or b scalar, SumT or ElemT -> a_m ${SYMBOL[op]} b_m`,
    (x, b, c) =>
      is(x, op) && x.children.some(cheapComponent) ? elemPushed(b, x, c.params[0] as number) : undefined,
  ),
);

const elemRules: Rule[] = [
  rule1('Elem', 'Elem(f,0) of dim 1 -> f', (x) => (x.dim === 1 ? x : undefined)),
  rule1('Elem', 'Elem(Zero(d),m) -> 0', (x, b) => (isZero(x) ? b.zero(1) : undefined)),
  rule1('Elem', 'Elem(SumT(s,d),m) -> s', (x) => (is(x, 'SumT') ? x.children[0] : undefined)),
  rule1('Elem', 'Elem(ElemT(f,n,m),m) -> f', (x, _b, c) =>
    is(x, 'ElemT') && intOf(x, 1) === c.params[0] ? x.children[0] : undefined,
  ),
  rule1('Elem', 'Elem(ElemT(f,n,k),m) with k != m -> 0', (x, b, c) =>
    is(x, 'ElemT') && intOf(x, 1) !== c.params[0] ? b.zero(1) : undefined,
  ),
  rule1('Elem', 'Elem(-a,m) -> -Elem(a,m)', (x, b, c) =>
    is(x, 'Minus') ? elemPushed(b, x, c.params[0] as number) : undefined,
  ),
  ...elemPushRules,
];

const elemTRules: Rule[] = [
  rule1('ElemT', 'ElemT(Zero(1),n,m) -> Zero(n)', (x, b, c) => (isZero(x) ? b.zero(c.dim) : undefined)),
  rule1('ElemT', 'ElemT(f,1,0) -> f', (x, _b, c) => (c.dim === 1 ? x : undefined)),
];

// ---------------------------------------------------------------------------------------------------------
// Square, Pow, Inv, Exp, Factorize.

/** c^m exactly, or undefined when it would divide by zero. */
function ratPow(c: Rational, m: number): Rational | undefined {
  if (m < 0 && c.p === 0n) return undefined;
  const e = BigInt(Math.abs(m));
  const r = rational(c.p ** e, c.q ** e);
  return m < 0 ? rational(r.q, r.p) : r;
}

/** Exponents small enough that the folded constant stays a reasonable size. */
const MAX_FOLDED_EXPONENT = 64;

const powerRules: Rule[] = [
  rule1('Square', 'Square(Zero) -> Zero', (x) => (isZero(x) ? x : undefined)),
  rule1('Square', 'Square(c) -> constant', (x, b) => {
    const v = constValue(x);
    return v === undefined ? undefined : cst(b, ratMul(v, v));
  }),
  rule1('Square', 'Square(-a) -> Square(a)', (x, b) =>
    is(x, 'Minus') ? b.call('Square', [x.children[0]]) : undefined,
  ),
  rule1('Pow', 'Pow(f,1) -> f', (x, _b, c) => (c.params[0] === 1 ? x : undefined)),
  rule1('Pow', 'Pow(f,0) -> 1', (_x, b, c) =>
    c.params[0] === 0 ? broadcast(b, b.int(1), c.dim) : undefined,
  ),
  rule1('Pow', 'Pow(f,2) -> Square(f)', (x, b, c) => (c.params[0] === 2 ? b.call('Square', [x]) : undefined)),
  rule1('Pow', 'Pow(f,-1) -> Inv(f)', (x, b, c) => (c.params[0] === -1 ? b.call('Inv', [x]) : undefined)),
  rule1('Pow', 'Pow(Zero,m) with m > 0 -> Zero', (x, _b, c) =>
    isZero(x) && (c.params[0] as number) > 0 ? x : undefined,
  ),
  rule1('Pow', 'Pow(Zero,m) with m < 0 -> error (division by zero)', (x, _b, c) => {
    if (isZero(x) && (c.params[0] as number) < 0) throw divisionByZero(`Pow(${briefText(x)},${c.params[0]})`);
    return undefined;
  }),
  rule1('Pow', 'Pow(c,m) -> constant', (x, b, c) => {
    const v = constValue(x);
    const m = c.params[0] as number;
    if (v === undefined || Math.abs(m) > MAX_FOLDED_EXPONENT) return undefined;
    const r = ratPow(v, m);
    return r === undefined ? undefined : cst(b, r);
  }),
  rule1('Inv', 'Inv(Zero) -> error (division by zero)', (x) => {
    if (isZero(x)) throw divisionByZero(`Inv(${briefText(x)})`);
    return undefined;
  }),
  rule1('Inv', 'Inv(c) -> constant', (x, b) => {
    const v = constValue(x);
    return v === undefined ? undefined : cst(b, rational(v.q, v.p));
  }),
  rule1('Inv', 'Inv(Inv(f)) -> f', (x) => (is(x, 'Inv') ? x.children[0] : undefined)),
  rule1('Exp', 'Exp(Zero(d)) -> 1', (x, b) => (isZero(x) ? broadcast(b, b.int(1), x.dim) : undefined)),
  rule2('Factorize', 'Factorize(f,g) with g a leaf or used at most once -> f', (f, g) =>
    isFactorizationTrivial(f, g) ? f : undefined,
  ),
];

export const RULES: readonly Rule[] = [
  ...constantRules,
  ...addRules,
  ...subtractRules,
  ...minusRules,
  ...multRules,
  ...divideRules,
  ...sumRules,
  ...sumTRulesOwn,
  ...scalprodRules,
  ...elemRules,
  ...elemTRules,
  ...powerRules,
];

/** Rules by operation name, in table order. */
export const RULES_BY_OP: ReadonlyMap<string, readonly Rule[]> = (() => {
  const m = new Map<string, Rule[]>();
  for (const r of RULES) {
    if (m.get(r.op)?.some((other) => other.name === r.name)) throw new Error(`duplicate rule name ${r.name}`);
    const list = m.get(r.op) ?? [];
    list.push(r);
    m.set(r.op, list);
  }
  return m;
})();

/**
 * The simplification rule table (docs/semantics.md 3.5): every rule fires on at least one case, keeps the
 * dim, gives the expected canonical form, and preserves the value (compared with a direct evaluation of the
 * unsimplified operation on the values of its children). Plus property and termination checks.
 */
import { expect } from 'chai';
import { isKeOpsError, type KeOpsErrorCode } from '../lib/errors';
import { builder as b } from '../lib/formula/builder';
import { varsOf } from '../lib/formula/diff';
import type { Node, ParamValue } from '../lib/formula/node';
import { ratAdd, rational, type Rational, ratSub } from '../lib/formula/rational';
import { OPS } from '../lib/formula/registry';
import { type Candidate, RULES } from '../lib/formula/rules';
import { checkGradient, evalWith, expectClose, randArray, rng } from './util';

const x = b.variable(0, 3, 0);
const y = b.variable(1, 3, 1);
const z = b.variable(2, 3, 2);
const s = b.variable(3, 1, 0);
const t = b.variable(4, 1, 1);
const NAMES = new Map<string, string>([
  [x.toString(), 'x'],
  [y.toString(), 'y'],
  [z.toString(), 'z'],
  [s.toString(), 's'],
  [t.toString(), 't'],
]);

/** Canonical text with the test variables shown by name (for readable expectations). */
function show(n: Node): string {
  let text = n.toString();
  for (const [full, short] of NAMES) text = text.split(full).join(short);
  return text;
}

const C = (n: number): Node => b.int(n);
const R = (p: number, q: number): Node => b.rat(rational(p, q));
const Z = (d: number): Node => b.zero(d);
const call = (name: string, ...kids: Node[]): Node => b.call(name, kids);
const exp = (a: Node): Node => call('Exp', a);
const elemT = (f: Node, n: number, m: number): Node => b.call('ElemT', [f], [n, m]);
const rawRational = (p: bigint, q: bigint): Rational => Object.freeze({ p, q });

interface Case {
  rule: string;
  op: string;
  args: readonly Node[];
  params?: readonly ParamValue[];
  /** The simplified form built by the builder (variables shown by name), or the error it throws. */
  expected: string | { throws: KeOpsErrorCode };
}

const addLike = (op: 'Add' | 'Subtract' | 'Mult' | 'Divide', o: string, sym: string): Case[] => [
  {
    rule: `${op}: SumT(f,d) ${o} SumT(g,d) -> SumT(f${o}g,d)`,
    op,
    args: [b.sumT(s, 3), b.sumT(t, 3)],
    expected: `SumT(${sym}(s,t),3)`,
  },
  {
    rule: `${op}: s ${o} SumT(g,d) with s scalar -> SumT(s${o}g,d)`,
    op,
    args: [s, b.sumT(t, 3)],
    expected: `SumT(${sym}(s,t),3)`,
  },
  {
    rule: `${op}: SumT(f,d) ${o} s with s scalar -> SumT(f${o}s,d)`,
    op,
    args: [b.sumT(s, 3), t],
    expected: `SumT(${sym}(s,t),3)`,
  },
  {
    rule: `${op}: SumT(f,d) ${o} g with g of dim d -> f${o}g`,
    op,
    args: [b.sumT(s, 3), x],
    expected: `${sym}(s,x)`,
  },
  {
    rule: `${op}: g ${o} SumT(f,d) with g of dim d -> g${o}f`,
    op,
    args: [x, b.sumT(s, 3)],
    expected: `${sym}(x,s)`,
  },
];

const CASES: Case[] = [
  // Constants.
  { rule: 'IntCst: IntCst(0) -> Zero(1)', op: 'IntCst', args: [], params: [0], expected: 'Zero(1)' },
  {
    rule: 'RatCst: RatCst(p,q) not in lowest terms -> reduced',
    op: 'RatCst',
    args: [],
    params: [rawRational(2n, 4n)],
    expected: 'RatCst(1,2)',
  },
  {
    rule: 'RatCst: RatCst(p,q) not in lowest terms -> reduced',
    op: 'RatCst',
    args: [],
    params: [rawRational(3n, -6n)],
    expected: 'RatCst(-1,2)',
  },
  {
    rule: 'RatCst: RatCst(p,q) not in lowest terms -> reduced',
    op: 'RatCst',
    args: [],
    params: [rawRational(1n, 0n)],
    expected: { throws: 'ERR_FORMULA_PARAM' },
  },
  {
    rule: 'RatCst: RatCst(0,q) -> Zero(1)',
    op: 'RatCst',
    args: [],
    params: [rational(0, 5)],
    expected: 'Zero(1)',
  },
  {
    rule: 'RatCst: RatCst(p,1) -> IntCst(p)',
    op: 'RatCst',
    args: [],
    params: [rational(-7)],
    expected: '-7',
  },

  // Add.
  { rule: 'Add: 0 + b -> b', op: 'Add', args: [Z(3), x], expected: 'x' },
  { rule: 'Add: 0 + b -> b', op: 'Add', args: [Z(3), s], expected: 'SumT(s,3)' },
  { rule: 'Add: a + 0 -> a', op: 'Add', args: [x, Z(1)], expected: 'x' },
  { rule: 'Add: c1 + c2 -> constant', op: 'Add', args: [C(2), R(1, 3)], expected: 'RatCst(7,3)' },
  { rule: 'Add: c1 + c2 -> constant', op: 'Add', args: [C(2), C(-2)], expected: 'Zero(1)' },
  { rule: 'Add: g + c -> c + g', op: 'Add', args: [x, C(2)], expected: 'Add(2,x)' },
  {
    rule: 'Add: c1 + (c2 + g) -> (c1+c2) + g',
    op: 'Add',
    args: [C(1), b.add(C(2), x)],
    expected: 'Add(3,x)',
  },
  {
    rule: 'Add: c1 + (c2 - g) -> (c1+c2) - g',
    op: 'Add',
    args: [C(1), b.sub(C(2), x)],
    expected: 'Subtract(3,x)',
  },
  {
    rule: 'Add: c1 + (g - c2) -> (c1-c2) + g',
    op: 'Add',
    args: [C(1), b.sub(x, C(2))],
    expected: 'Add(-1,x)',
  },
  { rule: 'Add: c1 + (g - c2) -> (c1-c2) + g', op: 'Add', args: [C(2), b.sub(x, C(2))], expected: 'x' },
  { rule: 'Add: a + a -> 2*a', op: 'Add', args: [x, x], expected: 'Mult(2,x)' },
  { rule: 'Add: (-a) + (-b) -> -(a+b)', op: 'Add', args: [b.neg(x), b.neg(y)], expected: 'Minus(Add(x,y))' },
  { rule: 'Add: a + (-b) -> a - b', op: 'Add', args: [x, b.neg(y)], expected: 'Subtract(x,y)' },
  { rule: 'Add: (-a) + b -> b - a', op: 'Add', args: [b.neg(x), y], expected: 'Subtract(y,x)' },
  { rule: 'Add: n*a + a -> (n+1)*a', op: 'Add', args: [b.mul(C(3), x), x], expected: 'Mult(4,x)' },
  {
    rule: 'Add: n*a + a -> (n+1)*a',
    op: 'Add',
    args: [b.mul(R(-1, 2), x), x],
    expected: 'Mult(RatCst(1,2),x)',
  },
  {
    rule: 'Add: a + n*a -> (1+n)*a',
    op: 'Add',
    args: [x, b.mul(R(1, 2), x)],
    expected: 'Mult(RatCst(3,2),x)',
  },
  {
    rule: 'Add: a*b + a*d -> a*(b+d)',
    op: 'Add',
    args: [b.mul(x, y), b.mul(x, z)],
    expected: 'Mult(x,Add(y,z))',
  },
  {
    rule: 'Add: a*b + d*a -> a*(b+d)',
    op: 'Add',
    args: [b.mul(x, y), b.mul(z, x)],
    expected: 'Mult(x,Add(y,z))',
  },
  {
    rule: 'Add: b*a + a*d -> (b+d)*a',
    op: 'Add',
    args: [b.mul(y, x), b.mul(x, z)],
    expected: 'Mult(Add(y,z),x)',
  },
  {
    rule: 'Add: b*a + d*a -> (b+d)*a',
    op: 'Add',
    args: [b.mul(y, x), b.mul(z, x)],
    expected: 'Mult(Add(y,z),x)',
  },
  {
    rule: 'Add: b*a + d*a -> (b+d)*a',
    op: 'Add',
    args: [b.mul(C(2), x), b.mul(C(3), x)],
    expected: 'Mult(5,x)',
  },
  {
    rule: 'Add: a*b + a*d -> a*(b+d)',
    op: 'Add',
    args: [b.mul(s, x), b.mul(s, t)],
    expected: 'Mult(s,Add(x,t))',
  },
  ...addLike('Add', '+', 'Add'),

  // Subtract.
  { rule: 'Subtract: 0 - b -> -b', op: 'Subtract', args: [Z(3), x], expected: 'Minus(x)' },
  { rule: 'Subtract: 0 - b -> -b', op: 'Subtract', args: [Z(3), s], expected: 'SumT(Minus(s),3)' },
  { rule: 'Subtract: a - 0 -> a', op: 'Subtract', args: [x, Z(3)], expected: 'x' },
  { rule: 'Subtract: a - a -> 0', op: 'Subtract', args: [x, x], expected: 'Zero(3)' },
  { rule: 'Subtract: c1 - c2 -> constant', op: 'Subtract', args: [C(1), R(1, 2)], expected: 'RatCst(1,2)' },
  {
    rule: 'Subtract: c1 - (c2 + g) -> (c1-c2) - g',
    op: 'Subtract',
    args: [C(5), b.add(C(2), x)],
    expected: 'Subtract(3,x)',
  },
  {
    rule: 'Subtract: c1 - (c2 - g) -> (c1-c2) + g',
    op: 'Subtract',
    args: [C(5), b.sub(C(2), x)],
    expected: 'Add(3,x)',
  },
  {
    rule: 'Subtract: c1 - (g - c2) -> (c1+c2) - g',
    op: 'Subtract',
    args: [C(5), b.sub(x, C(2))],
    expected: 'Subtract(7,x)',
  },
  {
    rule: 'Subtract: (c2 + g) - c1 -> (c2-c1) + g',
    op: 'Subtract',
    args: [b.add(C(2), x), C(5)],
    expected: 'Add(-3,x)',
  },
  {
    rule: 'Subtract: (c2 - g) - c1 -> (c2-c1) - g',
    op: 'Subtract',
    args: [b.sub(C(2), x), C(5)],
    expected: 'Subtract(-3,x)',
  },
  {
    rule: 'Subtract: (g - c2) - c1 -> g - (c1+c2)',
    op: 'Subtract',
    args: [b.sub(x, C(2)), C(5)],
    expected: 'Subtract(x,7)',
  },
  { rule: 'Subtract: a - (-b) -> a + b', op: 'Subtract', args: [x, b.neg(y)], expected: 'Add(x,y)' },
  { rule: 'Subtract: (-a) - b -> -(a+b)', op: 'Subtract', args: [b.neg(x), y], expected: 'Minus(Add(x,y))' },
  { rule: 'Subtract: n*a - a -> (n-1)*a', op: 'Subtract', args: [b.mul(C(3), x), x], expected: 'Mult(2,x)' },
  { rule: 'Subtract: n*a - a -> (n-1)*a', op: 'Subtract', args: [b.mul(C(2), x), x], expected: 'x' },
  { rule: 'Subtract: a - n*a -> (1-n)*a', op: 'Subtract', args: [x, b.mul(C(3), x)], expected: 'Mult(-2,x)' },
  {
    rule: 'Subtract: a*b - a*d -> a*(b-d)',
    op: 'Subtract',
    args: [b.mul(x, y), b.mul(x, z)],
    expected: 'Mult(x,Subtract(y,z))',
  },
  {
    rule: 'Subtract: a*b - d*a -> a*(b-d)',
    op: 'Subtract',
    args: [b.mul(x, y), b.mul(z, x)],
    expected: 'Mult(x,Subtract(y,z))',
  },
  {
    rule: 'Subtract: b*a - a*d -> (b-d)*a',
    op: 'Subtract',
    args: [b.mul(y, x), b.mul(x, z)],
    expected: 'Mult(Subtract(y,z),x)',
  },
  {
    rule: 'Subtract: b*a - d*a -> (b-d)*a',
    op: 'Subtract',
    args: [b.mul(y, x), b.mul(z, x)],
    expected: 'Mult(Subtract(y,z),x)',
  },
  ...addLike('Subtract', '-', 'Subtract'),

  // Minus.
  { rule: 'Minus: -0 -> 0', op: 'Minus', args: [Z(3)], expected: 'Zero(3)' },
  { rule: 'Minus: -(-a) -> a', op: 'Minus', args: [b.neg(x)], expected: 'x' },
  { rule: 'Minus: -c -> constant', op: 'Minus', args: [R(2, 3)], expected: 'RatCst(-2,3)' },
  { rule: 'Minus: -(c*g) -> (-c)*g', op: 'Minus', args: [b.mul(C(3), x)], expected: 'Mult(-3,x)' },
  { rule: 'Minus: -(a-b) -> b-a', op: 'Minus', args: [b.sub(x, y)], expected: 'Subtract(y,x)' },
  {
    rule: 'Minus: -SumT(f,d) -> SumT(-f,d)',
    op: 'Minus',
    args: [b.sumT(s, 3)],
    expected: 'SumT(Minus(s),3)',
  },

  // Mult.
  { rule: 'Mult: 0 * b -> 0', op: 'Mult', args: [Z(1), x], expected: 'Zero(3)' },
  { rule: 'Mult: a * 0 -> 0', op: 'Mult', args: [x, Z(3)], expected: 'Zero(3)' },
  { rule: 'Mult: c1 * c2 -> constant', op: 'Mult', args: [R(2, 3), C(3)], expected: '2' },
  { rule: 'Mult: g * c -> c * g', op: 'Mult', args: [x, C(3)], expected: 'Mult(3,x)' },
  { rule: 'Mult: 1 * b -> b', op: 'Mult', args: [C(1), x], expected: 'x' },
  { rule: 'Mult: (-1) * b -> -b', op: 'Mult', args: [C(-1), x], expected: 'Minus(x)' },
  {
    rule: 'Mult: c1 * (c2 * g) -> (c1 c2) * g',
    op: 'Mult',
    args: [C(2), b.mul(C(3), x)],
    expected: 'Mult(6,x)',
  },
  {
    rule: 'Mult: c1 * (c2 * g) -> (c1 c2) * g',
    op: 'Mult',
    args: [R(1, 3), b.mul(C(3), x)],
    expected: 'x',
  },
  { rule: 'Mult: (-a) * (-b) -> a * b', op: 'Mult', args: [b.neg(x), b.neg(y)], expected: 'Mult(x,y)' },
  { rule: 'Mult: c * (-b) -> (-c) * b', op: 'Mult', args: [C(2), b.neg(x)], expected: 'Mult(-2,x)' },
  { rule: 'Mult: (-a) * b -> -(a * b)', op: 'Mult', args: [b.neg(x), y], expected: 'Minus(Mult(x,y))' },
  { rule: 'Mult: a * (-b) -> -(a * b)', op: 'Mult', args: [x, b.neg(y)], expected: 'Minus(Mult(x,y))' },
  { rule: 'Mult: a * a -> Square(a)', op: 'Mult', args: [x, x], expected: 'Square(x)' },
  {
    rule: 'Mult: (c*g) * h -> c * (g*h)',
    op: 'Mult',
    args: [b.mul(C(2), x), y],
    expected: 'Mult(2,Mult(x,y))',
  },
  {
    rule: 'Mult: g * (c*h) -> c * (g*h)',
    op: 'Mult',
    args: [x, b.mul(C(2), y)],
    expected: 'Mult(2,Mult(x,y))',
  },
  {
    rule: 'Mult: g * (c*h) -> c * (g*h)',
    op: 'Mult',
    args: [b.mul(C(3), x), b.mul(C(2), y)],
    expected: 'Mult(6,Mult(x,y))',
  },
  {
    rule: 'Mult: ElemT(f,n,m) * g -> ElemT(f*g_m,n,m)',
    op: 'Mult',
    args: [elemT(s, 3, 1), x],
    expected: 'ElemT(Mult(s,Elem(x,1)),3,1)',
  },
  {
    rule: 'Mult: ElemT(f,n,m) * g -> ElemT(f*g_m,n,m)',
    op: 'Mult',
    args: [elemT(s, 3, 1), t],
    expected: 'ElemT(Mult(s,t),3,1)',
  },
  {
    rule: 'Mult: g * ElemT(f,n,m) -> ElemT(f*g_m,n,m)',
    op: 'Mult',
    args: [x, elemT(s, 3, 1)],
    expected: 'ElemT(Mult(s,Elem(x,1)),3,1)',
  },
  {
    rule: 'Mult: g * ElemT(f,n,m) -> ElemT(f*g_m,n,m)',
    op: 'Mult',
    args: [C(2), elemT(s, 3, 2)],
    expected: 'ElemT(Mult(2,s),3,2)',
  },
  ...addLike('Mult', '*', 'Mult'),
  {
    rule: 'Mult: Exp(a) * Exp(b) -> Exp(a+b)',
    op: 'Mult',
    args: [exp(x), exp(y)],
    expected: 'Exp(Add(x,y))',
  },
  {
    rule: 'Mult: (u*Exp(a)) * Exp(b) -> u * Exp(a+b)',
    op: 'Mult',
    args: [b.mul(y, exp(x)), exp(s)],
    expected: 'Mult(y,Exp(Add(x,s)))',
  },
  { rule: 'Mult: Exp(a) * g -> g * Exp(a)', op: 'Mult', args: [exp(s), x], expected: 'Mult(x,Exp(s))' },
  {
    rule: 'Mult: (u*Exp(a)) * v -> (u*v) * Exp(a)',
    op: 'Mult',
    args: [b.mul(y, exp(s)), x],
    expected: 'Mult(Mult(y,x),Exp(s))',
  },
  {
    rule: 'Mult: u * (v*Exp(a)) -> (u*v) * Exp(a)',
    op: 'Mult',
    args: [x, b.mul(y, exp(s))],
    expected: 'Mult(Mult(x,y),Exp(s))',
  },
  {
    rule: 'Mult: u * (v*Exp(a)) -> (u*v) * Exp(a)',
    op: 'Mult',
    args: [b.mul(x, exp(t)), b.mul(y, exp(s))],
    expected: 'Mult(Mult(x,y),Exp(Add(s,t)))',
  },

  // Divide.
  {
    rule: 'Divide: a / 0 -> error (division by zero)',
    op: 'Divide',
    args: [x, Z(1)],
    expected: { throws: 'ERR_FORMULA_PARAM' },
  },
  {
    rule: 'Divide: a / 0 -> error (division by zero)',
    op: 'Divide',
    args: [Z(3), Z(3)],
    expected: { throws: 'ERR_FORMULA_PARAM' },
  },
  { rule: 'Divide: 0 / b -> 0', op: 'Divide', args: [Z(1), x], expected: 'Zero(3)' },
  { rule: 'Divide: c1 / c2 -> constant', op: 'Divide', args: [C(2), C(4)], expected: 'RatCst(1,2)' },
  { rule: 'Divide: c1 / c2 -> constant', op: 'Divide', args: [R(1, 3), R(-2, 3)], expected: 'RatCst(-1,2)' },
  { rule: 'Divide: c1 / c2 -> constant', op: 'Divide', args: [C(6), C(3)], expected: '2' },
  {
    rule: 'Divide: a / IntCst(n) -> RatCst(1,n) * a',
    op: 'Divide',
    args: [x, C(2)],
    expected: 'Mult(RatCst(1,2),x)',
  },
  { rule: 'Divide: a / IntCst(n) -> RatCst(1,n) * a', op: 'Divide', args: [x, C(-1)], expected: 'Minus(x)' },
  {
    rule: 'Divide: a / RatCst(p,q) -> RatCst(q,p) * a',
    op: 'Divide',
    args: [x, R(2, 3)],
    expected: 'Mult(RatCst(3,2),x)',
  },
  {
    rule: 'Divide: a / RatCst(p,q) -> RatCst(q,p) * a',
    op: 'Divide',
    args: [x, R(1, 3)],
    expected: 'Mult(3,x)',
  },
  { rule: 'Divide: 1 / f -> Inv(f)', op: 'Divide', args: [C(1), x], expected: 'Inv(x)' },
  { rule: 'Divide: (-a) / b -> -(a / b)', op: 'Divide', args: [b.neg(x), y], expected: 'Minus(Divide(x,y))' },
  { rule: 'Divide: a / (-b) -> -(a / b)', op: 'Divide', args: [x, b.neg(y)], expected: 'Minus(Divide(x,y))' },
  ...addLike('Divide', '/', 'Divide'),

  // Sum.
  { rule: 'Sum: Sum(a) of dim 1 -> a', op: 'Sum', args: [s], expected: 's' },
  { rule: 'Sum: Sum(Zero(d)) -> 0', op: 'Sum', args: [Z(3)], expected: 'Zero(1)' },
  { rule: 'Sum: Sum(SumT(s,d)) -> d*s', op: 'Sum', args: [b.sumT(s, 3)], expected: 'Mult(3,s)' },
  { rule: 'Sum: Sum(ElemT(s,n,m)) -> s', op: 'Sum', args: [elemT(s, 3, 2)], expected: 's' },
  { rule: 'Sum: Sum(-a) -> -Sum(a)', op: 'Sum', args: [b.neg(x)], expected: 'Minus(Sum(x))' },
  {
    rule: 'Sum: Sum(s*g) with s scalar -> s*Sum(g)',
    op: 'Sum',
    args: [b.mul(s, x)],
    expected: 'Mult(s,Sum(x))',
  },
  {
    rule: 'Sum: Sum(s*g) with s scalar -> s*Sum(g)',
    op: 'Sum',
    args: [b.mul(C(2), x)],
    expected: 'Mult(2,Sum(x))',
  },
  {
    rule: 'Sum: Sum(g*s) with s scalar -> Sum(g)*s',
    op: 'Sum',
    args: [b.mul(x, s)],
    expected: 'Mult(Sum(x),s)',
  },
  { rule: 'Sum: Sum(f*g) -> f|g', op: 'Sum', args: [b.mul(x, y)], expected: 'Scalprod(x,y)' },

  // SumT.
  { rule: 'SumT: SumT(Zero(1),d) -> Zero(d)', op: 'SumT', args: [Z(1)], params: [3], expected: 'Zero(3)' },
  { rule: 'SumT: SumT(f,1) -> f', op: 'SumT', args: [s], params: [1], expected: 's' },

  // Scalprod.
  { rule: 'Scalprod: 0 | b -> 0', op: 'Scalprod', args: [Z(3), x], expected: 'Zero(1)' },
  { rule: 'Scalprod: a | 0 -> 0', op: 'Scalprod', args: [x, Z(3)], expected: 'Zero(1)' },
  { rule: 'Scalprod: scalar a | b -> a*Sum(b)', op: 'Scalprod', args: [s, x], expected: 'Mult(s,Sum(x))' },
  { rule: 'Scalprod: scalar a | b -> a*Sum(b)', op: 'Scalprod', args: [s, t], expected: 'Mult(s,t)' },
  { rule: 'Scalprod: a | scalar b -> Sum(a)*b', op: 'Scalprod', args: [x, s], expected: 'Mult(Sum(x),s)' },
  { rule: 'Scalprod: a | a -> Sum(Square(a))', op: 'Scalprod', args: [x, x], expected: 'Sum(Square(x))' },
  {
    rule: 'Scalprod: (-a) | b -> -(a|b)',
    op: 'Scalprod',
    args: [b.neg(x), y],
    expected: 'Minus(Scalprod(x,y))',
  },
  {
    rule: 'Scalprod: a | (-b) -> -(a|b)',
    op: 'Scalprod',
    args: [x, b.neg(y)],
    expected: 'Minus(Scalprod(x,y))',
  },
  {
    rule: 'Scalprod: SumT(s,d) | g -> s*Sum(g)',
    op: 'Scalprod',
    args: [b.sumT(s, 3), x],
    expected: 'Mult(s,Sum(x))',
  },
  {
    rule: 'Scalprod: f | SumT(s,d) -> Sum(f)*s',
    op: 'Scalprod',
    args: [x, b.sumT(s, 3)],
    expected: 'Mult(Sum(x),s)',
  },
  {
    rule: 'Scalprod: (s*f) | g -> s*(f|g) with s scalar',
    op: 'Scalprod',
    args: [b.mul(s, x), y],
    expected: 'Mult(s,Scalprod(x,y))',
  },
  {
    rule: 'Scalprod: (s*f) | g -> s*(f|g) with s scalar',
    op: 'Scalprod',
    args: [b.mul(C(2), x), y],
    expected: 'Mult(2,Scalprod(x,y))',
  },
  {
    rule: 'Scalprod: g | (s*f) -> (g|f)*s with s scalar',
    op: 'Scalprod',
    args: [y, b.mul(s, x)],
    expected: 'Mult(Scalprod(y,x),s)',
  },
  {
    rule: 'Scalprod: (f*s) | g -> s*(f|g) with s scalar',
    op: 'Scalprod',
    args: [b.mul(x, s), y],
    expected: 'Mult(s,Scalprod(x,y))',
  },
  {
    rule: 'Scalprod: g | (f*s) -> (g|f)*s with s scalar',
    op: 'Scalprod',
    args: [y, b.mul(x, s)],
    expected: 'Mult(Scalprod(y,x),s)',
  },

  // Elem, ElemT.
  { rule: 'Elem: Elem(f,0) of dim 1 -> f', op: 'Elem', args: [s], params: [0], expected: 's' },
  { rule: 'Elem: Elem(Zero(d),m) -> 0', op: 'Elem', args: [Z(3)], params: [1], expected: 'Zero(1)' },
  { rule: 'Elem: Elem(SumT(s,d),m) -> s', op: 'Elem', args: [b.sumT(s, 3)], params: [2], expected: 's' },
  { rule: 'Elem: Elem(ElemT(f,n,m),m) -> f', op: 'Elem', args: [elemT(s, 3, 1)], params: [1], expected: 's' },
  {
    rule: 'Elem: Elem(ElemT(f,n,k),m) with k != m -> 0',
    op: 'Elem',
    args: [elemT(s, 3, 1)],
    params: [2],
    expected: 'Zero(1)',
  },
  {
    rule: 'Elem: Elem(-a,m) -> -Elem(a,m)',
    op: 'Elem',
    args: [b.neg(x)],
    params: [1],
    expected: 'Minus(Elem(x,1))',
  },
  {
    rule: 'Elem: Elem(a + b,m) with a or b scalar, SumT or ElemT -> a_m + b_m',
    op: 'Elem',
    args: [b.add(elemT(s, 3, 1), x)],
    params: [1],
    expected: 'Add(s,Elem(x,1))',
  },
  {
    rule: 'Elem: Elem(a - b,m) with a or b scalar, SumT or ElemT -> a_m - b_m',
    op: 'Elem',
    args: [b.sub(x, s)],
    params: [2],
    expected: 'Subtract(Elem(x,2),s)',
  },
  {
    rule: 'Elem: Elem(a * b,m) with a or b scalar, SumT or ElemT -> a_m * b_m',
    op: 'Elem',
    args: [b.mul(b.mul(b.call('Elem', [y], [1]), x), exp(s))],
    params: [1],
    expected: 'Mult(Mult(Elem(y,1),Elem(x,1)),Exp(s))',
  },
  {
    rule: 'Elem: Elem(a / b,m) with a or b scalar, SumT or ElemT -> a_m / b_m',
    op: 'Elem',
    args: [b.div(x, s)],
    params: [0],
    expected: 'Divide(Elem(x,0),s)',
  },
  {
    rule: 'ElemT: ElemT(Zero(1),n,m) -> Zero(n)',
    op: 'ElemT',
    args: [Z(1)],
    params: [3, 1],
    expected: 'Zero(3)',
  },
  { rule: 'ElemT: ElemT(f,1,0) -> f', op: 'ElemT', args: [s], params: [1, 0], expected: 's' },

  // Square, Pow, Inv, Exp.
  { rule: 'Square: Square(Zero) -> Zero', op: 'Square', args: [Z(3)], expected: 'Zero(3)' },
  { rule: 'Square: Square(c) -> constant', op: 'Square', args: [R(-2, 3)], expected: 'RatCst(4,9)' },
  { rule: 'Square: Square(-a) -> Square(a)', op: 'Square', args: [b.neg(x)], expected: 'Square(x)' },
  { rule: 'Pow: Pow(f,1) -> f', op: 'Pow', args: [x], params: [1], expected: 'x' },
  { rule: 'Pow: Pow(f,0) -> 1', op: 'Pow', args: [x], params: [0], expected: 'SumT(1,3)' },
  { rule: 'Pow: Pow(f,0) -> 1', op: 'Pow', args: [s], params: [0], expected: '1' },
  { rule: 'Pow: Pow(f,2) -> Square(f)', op: 'Pow', args: [x], params: [2], expected: 'Square(x)' },
  { rule: 'Pow: Pow(f,-1) -> Inv(f)', op: 'Pow', args: [x], params: [-1], expected: 'Inv(x)' },
  { rule: 'Pow: Pow(Zero,m) with m > 0 -> Zero', op: 'Pow', args: [Z(3)], params: [3], expected: 'Zero(3)' },
  {
    rule: 'Pow: Pow(Zero,m) with m < 0 -> error (division by zero)',
    op: 'Pow',
    args: [Z(3)],
    params: [-2],
    expected: { throws: 'ERR_FORMULA_PARAM' },
  },
  { rule: 'Pow: Pow(c,m) -> constant', op: 'Pow', args: [R(2, 3)], params: [3], expected: 'RatCst(8,27)' },
  { rule: 'Pow: Pow(c,m) -> constant', op: 'Pow', args: [C(-2)], params: [-3], expected: 'RatCst(-1,8)' },
  {
    rule: 'Inv: Inv(Zero) -> error (division by zero)',
    op: 'Inv',
    args: [Z(3)],
    expected: { throws: 'ERR_FORMULA_PARAM' },
  },
  { rule: 'Inv: Inv(c) -> constant', op: 'Inv', args: [R(-2, 3)], expected: 'RatCst(-3,2)' },
  { rule: 'Inv: Inv(Inv(f)) -> f', op: 'Inv', args: [call('Inv', x)], expected: 'x' },
  { rule: 'Exp: Exp(Zero(d)) -> 1', op: 'Exp', args: [Z(3)], expected: 'SumT(1,3)' },
  { rule: 'Exp: Exp(Zero(d)) -> 1', op: 'Exp', args: [Z(1)], expected: '1' },

  // Factorize.
  {
    rule: 'Factorize: Factorize(f,g) with g a leaf or used at most once -> f',
    op: 'Factorize',
    args: [b.mul(x, exp(s)), x],
    expected: 'Mult(x,Exp(s))',
  },
  {
    rule: 'Factorize: Factorize(f,g) with g a leaf or used at most once -> f',
    op: 'Factorize',
    args: [b.mul(x, exp(s)), exp(s)],
    expected: 'Mult(x,Exp(s))',
  },
  {
    rule: 'Factorize: Factorize(f,g) with g a leaf or used at most once -> f',
    op: 'Factorize',
    args: [b.mul(x, exp(s)), exp(t)],
    expected: 'Mult(x,Exp(s))',
  },
];

/** Random values for every variable of the given formulas. */
function randomPoint(r: () => number, formulas: readonly Node[]): Map<Node, Float64Array> {
  const point = new Map<Node, Float64Array>();
  for (const f of formulas)
    for (const v of varsOf(f)) if (!point.has(v)) point.set(v, randArray(r, v.dim, 0.5, 1.5));
  return point;
}

function codeOf(fn: () => unknown): KeOpsErrorCode | undefined {
  try {
    fn();
  } catch (e) {
    if (isKeOpsError(e)) return e.code;
    throw e;
  }
  return undefined;
}

describe('simplification rules (3.5)', () => {
  it('have unique names, each with at least one test case', () => {
    const names = RULES.map((r) => r.name);
    expect(new Set(names).size, 'duplicate rule names').to.equal(names.length);
    const tested = new Set(CASES.map((c) => c.rule));
    const untested = names.filter((n) => !tested.has(n));
    expect(untested, 'rules without a test case').to.deep.equal([]);
    const unknown = [...tested].filter((n) => !names.includes(n));
    expect(unknown, 'test cases naming no rule').to.deep.equal([]);
  });

  const r = rng(35);
  for (const c of CASES) {
    const expectedText = typeof c.expected === 'string' ? c.expected : `throws ${c.expected.throws}`;
    const argsText = c.args.map(show).join(', ');
    it(`${c.rule}  [${c.op}(${argsText}${c.params ? `; ${c.params.map(String).join(',')}` : ''}) -> ${expectedText}]`, () => {
      const rule = RULES.find((x) => x.name === c.rule);
      expect(rule, c.rule).to.not.equal(undefined);
      const op = OPS.get(c.op);
      expect(op, c.op).to.not.equal(undefined);
      if (op === undefined || rule === undefined) return;
      const params = c.params ?? [];
      const dim = op.dim(
        c.args.map((a) => a.dim),
        params,
      );
      const candidate: Candidate = { op, children: c.args, params, dim };

      if (typeof c.expected !== 'string') {
        expect(codeOf(() => rule.apply(candidate, b))).to.equal(c.expected.throws);
        expect(codeOf(() => b.call(c.op, c.args, params))).to.equal(c.expected.throws);
        return;
      }
      const rewritten = rule.apply(candidate, b);
      expect(rewritten, 'the rule does not fire').to.not.equal(undefined);
      if (rewritten === undefined) return;
      expect(rewritten.dim, 'dim').to.equal(dim);
      const built = b.call(c.op, c.args, params);
      expect(show(built)).to.equal(c.expected);

      // Value of the unsimplified operation, from its children's values, vs the simplified formula's.
      for (let trial = 0; trial < 3; trial++) {
        const point = randomPoint(r, [...c.args, built, rewritten]);
        const kids = c.args.map((a) => evalWith(a, point));
        const direct = op.evaluate(kids, params, { dim } as Node);
        expectClose(evalWith(built, point), direct, 1e-13, 1e-15, show(built));
        expectClose(evalWith(rewritten, point), direct, 1e-13, 1e-15, show(rewritten));
      }
    });
  }
});

describe('simplification: required outcomes (KeOps observed)', () => {
  const X = b.variable(0, 3, 0);
  it('x - x is Zero(3)', () => expect(b.sub(X, X).toString()).to.equal('Zero(3)'));
  it('x + x is 2*x', () => expect(b.add(X, X).toString()).to.equal('Mult(2,Var(0,3,0))'));
  it('x / 2 is RatCst(1,2)*x', () =>
    expect(b.div(X, b.int(2)).toString()).to.equal('Mult(RatCst(1,2),Var(0,3,0))'));
  it('x * 0 is Zero(3)', () => expect(b.mul(X, b.int(0)).toString()).to.equal('Zero(3)'));
  it('(x|y)*2 is 2*(x|y)', () => {
    const Y = b.variable(1, 3, 1);
    const dot = b.call('Scalprod', [X, Y]);
    expect(b.mul(dot, b.int(2))).to.equal(b.mul(b.int(2), dot));
    expect(show(b.mul(dot, b.int(2)))).to.equal('Mult(2,Scalprod(x,y))');
  });
  it('Grad(Grad(x + Var(1,3,1), x, Var(2,3,0)), x, Var(3,3,0)) is Zero(3)', () => {
    const g1 = b.grad(b.add(X, b.variable(1, 3, 1)), X, b.variable(2, 3, 0));
    expect(b.grad(g1, X, b.variable(3, 3, 0)).toString()).to.equal('Zero(3)');
  });
  it('x / 0 and x / (1 - 1) are division-by-zero errors', () => {
    expect(codeOf(() => b.div(X, b.int(0)))).to.equal('ERR_FORMULA_PARAM');
    expect(codeOf(() => b.div(X, b.sub(b.int(1), b.int(1))))).to.equal('ERR_FORMULA_PARAM');
  });
});

/**
 * A random formula over + - * / Minus Square Exp Sum Scalprod, built through the builder (simplified) and, in
 * parallel, as a direct float64 evaluation of the unsimplified expression.
 */
interface Built {
  node: Node;
  /** The unsimplified expression, for failure messages. */
  text: string;
  value: (p: ReadonlyMap<Node, Float64Array>) => Float64Array;
}

function randomFormula(r: () => number, depth: number, dim: number): Built {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const vars = [b.variable(0, 3, 0), b.variable(1, 3, 1), b.variable(2, 1, 0), b.variable(3, 1, 2)];
  const map2 = (u: Float64Array, v: Float64Array, f: (a: number, c: number) => number) => {
    const n = Math.max(u.length, v.length);
    const out = new Float64Array(n);
    for (let k = 0; k < n; k++) out[k] = f(u.length === 1 ? u[0] : u[k], v.length === 1 ? v[0] : v[k]);
    return out;
  };
  const leaf = (): Built => {
    if (r() < 0.4) {
      const c = pick([0, 1, -1, 2, 3]);
      const q = pick([1, 1, 2, 3]);
      const node = c === 0 ? b.zero(dim) : b.rat(rational(c, q));
      const val = c / q;
      const d = node.dim;
      return { node, text: `${c}/${q}`, value: () => new Float64Array(d).fill(val) };
    }
    const v = pick(vars.filter((u) => u.dim === dim || u.dim === 1));
    return { node: v, text: show(v), value: (p) => p.get(v) as Float64Array };
  };
  if (depth === 0) return leaf();
  const sub = (d: number) => randomFormula(r, depth - 1, d);
  const anyDim = () => (dim === 1 ? 1 : pick([1, dim, dim]));
  switch (pick(['add', 'sub', 'mul', 'div', 'neg', 'square', 'exp', 'sum', 'dot', 'elem', 'pow', 'leaf'])) {
    case 'add':
    case 'sub':
    case 'mul': {
      const kind = pick(['add', 'sub', 'mul']);
      const u = sub(anyDim());
      const v = sub(u.node.dim === dim ? anyDim() : dim);
      const node =
        kind === 'add'
          ? b.add(u.node, v.node)
          : kind === 'sub'
            ? b.sub(u.node, v.node)
            : b.mul(u.node, v.node);
      const f =
        kind === 'add'
          ? (a: number, c: number) => a + c
          : kind === 'sub'
            ? (a: number, c: number) => a - c
            : (a: number, c: number) => a * c;
      return { node, text: `${kind}(${u.text}, ${v.text})`, value: (p) => map2(u.value(p), v.value(p), f) };
    }
    case 'div': {
      // Denominators never vanish: 2 + Square(.) or a nonzero constant.
      const u = sub(dim);
      const v = sub(1);
      const den = b.add(b.int(2), b.call('Square', [v.node]));
      return {
        node: b.div(u.node, den),
        text: `(${u.text}) / (2 + (${v.text})^2)`,
        value: (p) => {
          const d = v.value(p)[0];
          return map2(u.value(p), Float64Array.of(2 + d * d), (a, c) => a / c);
        },
      };
    }
    case 'neg': {
      const u = sub(dim);
      return { node: b.neg(u.node), text: `-(${u.text})`, value: (p) => u.value(p).map((a) => -a) };
    }
    case 'square': {
      const u = sub(dim);
      return {
        node: b.call('Square', [u.node]),
        text: `sq(${u.text})`,
        value: (p) => u.value(p).map((a) => a * a),
      };
    }
    case 'exp': {
      const u = sub(dim);
      return {
        node: b.call('Exp', [u.node]),
        text: `exp(${u.text})`,
        value: (p) => u.value(p).map(Math.exp),
      };
    }
    case 'sum': {
      if (dim !== 1) return sub(dim);
      const u = sub(3);
      return {
        node: b.sum(u.node),
        text: `sum(${u.text})`,
        value: (p) => Float64Array.of(u.value(p).reduce((a, c) => a + c, 0)),
      };
    }
    case 'dot': {
      if (dim !== 1) return sub(dim);
      const u = sub(3);
      const v = sub(3);
      return {
        node: b.call('Scalprod', [u.node, v.node]),
        text: `(${u.text} | ${v.text})`,
        value: (p) => {
          const [a, c] = [u.value(p), v.value(p)];
          let acc = 0;
          for (let k = 0; k < Math.max(a.length, c.length); k++)
            acc += (a.length === 1 ? a[0] : a[k]) * (c.length === 1 ? c[0] : c[k]);
          return Float64Array.of(acc);
        },
      };
    }
    case 'elem': {
      // Elem of a vector for scalars; ElemT or SumT of a scalar for vectors.
      const k = pick([0, 1, 2]);
      if (dim === 1) {
        const u = sub(3);
        const node = u.node.dim === 1 ? u.node : b.call('Elem', [u.node], [k]);
        return {
          node,
          text: `elem(${u.text},${k})`,
          value: (p) => Float64Array.of(u.value(p)[u.node.dim === 1 ? 0 : k]),
        };
      }
      const u = sub(1);
      if (r() < 0.5) {
        return {
          node: b.sumT(u.node, 3),
          text: `sumT(${u.text})`,
          value: (p) => new Float64Array(3).fill(u.value(p)[0]),
        };
      }
      return {
        node: b.call('ElemT', [u.node], [3, k]),
        text: `elemT(${u.text},${k})`,
        value: (p) => {
          const out = new Float64Array(3);
          out[k] = u.value(p)[0];
          return out;
        },
      };
    }
    case 'pow': {
      const m = pick([0, 1, 2, 3]);
      const u = sub(dim);
      return {
        node: b.call('Pow', [u.node], [m]),
        text: `pow(${u.text},${m})`,
        value: (p) => u.value(p).map((a) => a ** m),
      };
    }
    default:
      return leaf();
  }
}

describe('simplification: properties', () => {
  it('preserves the value of 300 random formulas (+ - * / Minus Square Pow Exp Sum Scalprod Elem ElemT SumT)', function () {
    const r = rng(2024);
    let checked = 0;
    for (let trial = 0; trial < 300; trial++) {
      const dim = trial % 2 === 0 ? 3 : 1;
      const f = randomFormula(r, 4, dim);
      expect(f.node.dim, show(f.node)).to.be.oneOf([1, dim]);
      const point = new Map<Node, Float64Array>();
      for (const v of [b.variable(0, 3, 0), b.variable(1, 3, 1), b.variable(2, 1, 0), b.variable(3, 1, 2)]) {
        point.set(v, randArray(r, v.dim, -0.7, 0.7));
      }
      const want = f.value(point);
      const got = evalWith(f.node, point);
      const scale = Math.max(1, ...Array.from(want, Math.abs));
      expectClose(
        got.length === want.length ? got : new Float64Array(want.length).fill(got[0]),
        want,
        1e-10,
        1e-10 * scale,
        `${f.text} simplified to ${show(f.node)}`,
      );
      checked++;
    }
    expect(checked).to.equal(300);
  });

  it('keeps gradients right: symbolic gradients of 100 random formulas match finite differences', () => {
    const r = rng(99);
    const vars = [b.variable(0, 3, 0), b.variable(1, 3, 1), b.variable(2, 1, 0), b.variable(3, 1, 2)];
    let checked = 0;
    for (let trial = 0; trial < 100; trial++) {
      const f = randomFormula(r, 3, trial % 2 === 0 ? 3 : 1).node;
      const point = new Map<Node, Float64Array>();
      for (const v of vars) point.set(v, randArray(r, v.dim, -0.7, 0.7));
      for (const v of vars) {
        if (!varsOf(f).has(v)) continue;
        checkGradient(f, v, point, r, 1e-6);
        checked++;
      }
    }
    expect(checked).to.be.above(60);
  });

  it('is idempotent: rebuilding a simplified formula from its parts gives the same node', () => {
    const r = rng(7);
    for (let trial = 0; trial < 100; trial++) {
      const f = randomFormula(r, 4, trial % 2 === 0 ? 3 : 1).node;
      const rebuilt = f.children.length === 0 ? f : b.call(f.op.name, f.children, f.params);
      expect(rebuilt, show(f)).to.equal(f);
    }
  });
});

describe('simplification: termination on adversarial formulas', () => {
  const X = b.variable(0, 3, 0);
  const N = 1500;
  it('folds a deep left-nested sum of constants', () => {
    let f = b.int(1);
    for (let k = 1; k < N; k++) f = b.add(f, b.int(1));
    expect(f.toString()).to.equal(String(N));
  });
  it('folds a deep right-nested sum and difference of rationals', () => {
    let f: Node = b.rat(rational(1, 3));
    for (let k = 1; k < N; k++)
      f = k % 2 === 0 ? b.add(b.rat(rational(1, 3)), f) : b.sub(b.rat(rational(1, 3)), f);
    let exact = rational(1, 3);
    for (let k = 1; k < N; k++)
      exact = k % 2 === 0 ? ratAdd(rational(1, 3), exact) : ratSub(rational(1, 3), exact);
    expect(f).to.equal(b.rat(exact));
  });
  it('collects x + 1 + 1 + ... into one constant and x', () => {
    let f: Node = X;
    for (let k = 0; k < N; k++) f = b.add(f, b.int(1));
    expect(show(f)).to.equal(`Add(${N},x)`);
  });
  it('collects x + x + ... + x into n*x', () => {
    let f: Node = X;
    for (let k = 1; k < N; k++) f = b.add(f, X);
    expect(show(f)).to.equal(`Mult(${N},x)`);
  });
  it('cancels (((x - 1) + 1) - 1) + ... and nested negations', () => {
    let f: Node = X;
    for (let k = 0; k < N; k++) f = k % 2 === 0 ? b.sub(f, b.int(1)) : b.add(f, b.int(1));
    expect(show(f)).to.equal('x');
    let g: Node = X;
    for (let k = 0; k < N; k++) g = b.neg(g);
    expect(show(g)).to.equal('x');
  });
  it('pushes Sum, Elem and Scalprod through deep chains of scalar factors and sums (no nested rule blow-up)', () => {
    const ps = Array.from({ length: N }, (_, k) => b.variable(k + 1, 1, 2));
    let chain: Node = X;
    let mixed: Node = X;
    for (let k = N - 1; k >= 0; k--) {
      chain = k % 3 === 0 ? b.neg(b.mul(ps[k], chain)) : b.mul(chain, ps[k]);
      mixed = k % 2 === 0 ? b.add(ps[k], mixed) : b.sub(mixed, b.sumT(ps[k], 3));
    }
    const point = new Map<Node, Float64Array>([[X, Float64Array.of(0.5, -1, 2)]]);
    ps.forEach((p, k) => point.set(p, Float64Array.of(k % 2 === 0 ? 1 : -1)));
    const [c, m] = [evalWith(chain, point), evalWith(mixed, point)];
    expectClose(evalWith(b.sum(chain), point), [c[0] + c[1] + c[2]], 1e-14);
    expectClose(evalWith(b.call('Elem', [chain], [2]), point), [c[2]], 1e-14);
    expectClose(evalWith(b.call('Elem', [mixed], [1]), point), [m[1]], 1e-14);
    expectClose(evalWith(b.call('Scalprod', [chain, X]), point), [c[0] * 0.5 - c[1] + 2 * c[2]], 1e-14);
    expect(b.sum(chain).depth).to.be.below(N + 10);
  });

  it('collects a long sum of products with a shared factor', () => {
    const vs = Array.from({ length: N }, (_, k) => b.variable(k + 1, 3, 2));
    let f = b.mul(X, vs[0]);
    for (let k = 1; k < N; k++) f = b.add(f, b.mul(X, vs[k]));
    expect(f.op.name).to.equal('Mult');
    expect(f.children[0]).to.equal(X);
  });

  it('merges deep products of constants and exponentials', () => {
    let f: Node = X;
    for (let k = 0; k < 200; k++)
      f = k % 2 === 0 ? b.mul(b.int(2), f) : b.mul(f, b.call('Exp', [b.variable(1, 1, 1)]));
    expect(f.depth).to.be.below(10);
    const point = new Map([
      [X, Float64Array.of(0.5, -1, 2)],
      [b.variable(1, 1, 1), Float64Array.of(0.01)],
    ]);
    const want = [0.5, -1, 2].map((v) => v * 2 ** 100 * Math.exp(0.01 * 100));
    expectClose(evalWith(f, point), want, 1e-12);
  });
});

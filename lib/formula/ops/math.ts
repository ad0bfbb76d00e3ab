/** (b) Transcendental and piecewise operations (docs/semantics.md 1.5 b), all component-wise. */
import type { Node, ParamValue } from '../node';
import { type Builder, type OpDef, paramError } from '../opdef';
import { intParam, unbroadcast, vso } from './helpers';
import { typedVso, unaryWithParams } from './arithmetic';

/** 1 - f² (the radicand of the arcsine / arccosine derivatives). */
const oneMinusSquare = (b: Builder, f: Node): Node => b.sub(b.int(1), b.call('Square', [f]));

export const Exp = vso({
  name: 'Exp',
  doc: 'Exp(f): exponential',
  arity: 1,
  fn: Math.exp,
  cexpr: (a) => `keops_exp(${a})`,
  partials: ([f], b) => [b.call('Exp', [f])],
});

export const Log = vso({
  name: 'Log',
  doc: 'Log(f): natural logarithm',
  arity: 1,
  fn: Math.log,
  cexpr: (a) => `keops_log(${a})`,
  partials: ([f], b) => [b.call('Inv', [f])],
});

export const XLogX = typedVso({
  name: 'XLogX',
  doc: 'XLogX(f): f*log(f), and 0 where f = 0',
  arity: 1,
  fn: (x) => (x === 0 ? 0 : x * Math.log(x)),
  cexpr: (ctx, a) => `(${a} == ${ctx.lit(0)} ? ${ctx.lit(0)} : ${a} * keops_log(${a}))`,
  partials: ([f], b) => [b.add(b.call('Log', [f]), b.int(1))],
});

export const Sin = vso({
  name: 'Sin',
  doc: 'Sin(f): sine',
  arity: 1,
  fn: Math.sin,
  cexpr: (a) => `keops_sin(${a})`,
  partials: ([f], b) => [b.call('Cos', [f])],
});

export const Cos = vso({
  name: 'Cos',
  doc: 'Cos(f): cosine',
  arity: 1,
  fn: Math.cos,
  cexpr: (a) => `keops_cos(${a})`,
  partials: ([f], b) => [b.neg(b.call('Sin', [f]))],
});

export const SinXDivX = typedVso({
  name: 'SinXDivX',
  doc: 'SinXDivX(f): sin(f)/f, and 1 where f = 0',
  arity: 1,
  fn: (x) => (x === 0 ? 1 : Math.sin(x) / x),
  cexpr: (ctx, a) => `(${a} == ${ctx.lit(0)} ? ${ctx.lit(1)} : keops_sin(${a}) / ${a})`,
  // (Cos(f) - SinXDivX(f))/f = cos/f - sin/f², with 1/f written Sign(f)·Rsqrt(f²) so that the derivative is
  // its true value 0 at f = 0 (KeOps' cos/f - sin/f² gives NaN there, e.g. on the diagonal of SinXDivX(x-y)).
  partials: ([f], b) => [
    b.mul(
      b.sub(b.call('Cos', [f]), b.call('SinXDivX', [f])),
      b.mul(b.call('Sign', [f]), b.call('Rsqrt', [b.call('Square', [f])])),
    ),
  ],
});

export const Asin = vso({
  name: 'Asin',
  doc: 'Asin(f): arcsine',
  arity: 1,
  fn: Math.asin,
  cexpr: (a) => `keops_asin(${a})`,
  partials: ([f], b) => [b.call('Rsqrt', [oneMinusSquare(b, f)])],
});

export const Acos = vso({
  name: 'Acos',
  doc: 'Acos(f): arccosine',
  arity: 1,
  fn: Math.acos,
  cexpr: (a) => `keops_acos(${a})`,
  partials: ([f], b) => [b.neg(b.call('Rsqrt', [oneMinusSquare(b, f)]))],
});

export const Atan = vso({
  name: 'Atan',
  doc: 'Atan(f): arctangent',
  arity: 1,
  fn: Math.atan,
  cexpr: (a) => `keops_atan(${a})`,
  partials: ([f], b) => [b.call('Inv', [b.add(b.int(1), b.call('Square', [f]))])],
});

export const Atan2 = vso({
  name: 'Atan2',
  doc: 'Atan2(f,g): angle of the point (x=g, y=f), atan2(f,g) (broadcast rule 1.4)',
  arity: 2,
  fn: Math.atan2,
  cexpr: (y, x) => `keops_atan2(${y}, ${x})`,
  // (g/r², -f/r²) with r² = f² + g²
  partials: ([f, g], b) => {
    const invR2 = b.call('Inv', [b.add(b.call('Square', [f]), b.call('Square', [g]))]);
    return [b.mul(g, invR2), b.neg(b.mul(f, invR2))];
  },
});

export const Abs = vso({
  name: 'Abs',
  doc: 'Abs(f): absolute value',
  arity: 1,
  fn: Math.abs,
  cexpr: (a) => `keops_abs(${a})`,
  partials: ([f], b) => [b.call('Sign', [f])],
});

export const Sign = vso({
  name: 'Sign',
  doc: 'Sign(f): -1, 0 or 1 (0 where f = 0; zero gradient)',
  arity: 1,
  // As keops_sign: NaN gives 0.
  fn: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0),
  cexpr: (a) => `keops_sign(${a})`,
});

export const Step = typedVso({
  name: 'Step',
  doc: 'Step(f): 1 where f >= 0, else 0 (zero gradient)',
  arity: 1,
  fn: (x) => (x >= 0 ? 1 : 0),
  cexpr: (ctx, a) => `(${a} >= ${ctx.lit(0)} ? ${ctx.lit(1)} : ${ctx.lit(0)})`,
});

export const ReLU = typedVso({
  name: 'ReLU',
  doc: 'ReLU(f): f where f >= 0, else 0',
  arity: 1,
  // Written `f < 0 ? 0 : f` so that NaN propagates.
  fn: (x) => (x < 0 ? 0 : x),
  cexpr: (ctx, a) => `(${a} < ${ctx.lit(0)} ? ${ctx.lit(0)} : ${a})`,
  partials: ([f], b) => [b.call('Step', [f])],
});

export const Floor = vso({
  name: 'Floor',
  doc: 'Floor(f): largest integer <= f (zero gradient)',
  arity: 1,
  fn: Math.floor,
  cexpr: (a) => `keops_floor(${a})`,
});

/** C `round`: to the nearest integer, ties away from zero (Math.round sends ties up). */
export function roundHalfAway(x: number): number {
  const t = Math.trunc(x);
  return Math.abs(x - t) >= 0.5 ? t + Math.sign(x) : t;
}

/** 10^|d| must be exact in double precision (and finite in single). */
const MAX_ROUND_DECIMALS = 22;
/** From 2^52 on, every double is an integer: rounding f·10^d would change nothing (and might overflow). */
const INTEGRAL_FROM = 2 ** 52;

export const Round = unaryWithParams({
  name: 'Round',
  doc: 'Round(f,d): f rounded to d decimals (ties away from zero; d < 0 rounds to tens, hundreds...)',
  params: ['int'],
  check: (params) => {
    const d = intParam(params, 0);
    if (Math.abs(d) > MAX_ROUND_DECIMALS) {
      throw paramError(
        `Round: the number of decimals must be between ${-MAX_ROUND_DECIMALS} and ${MAX_ROUND_DECIMALS}, got ${d}`,
      );
    }
  },
  fn: (x, params) => {
    const d = intParam(params, 0);
    if (d === 0) return roundHalfAway(x);
    const scale = 10 ** Math.abs(d);
    if (d < 0) return roundHalfAway(x / scale) * scale;
    const y = x * scale;
    return Math.abs(y) < INTEGRAL_FROM ? roundHalfAway(y) / scale : x;
  },
  cexpr: (ctx, x) => {
    const d = intParam(ctx.params, 0);
    if (d === 0) return `keops_round(${x})`;
    const scale = ctx.lit(10 ** Math.abs(d));
    if (d < 0) return `(keops_round(${x} / ${scale}) * ${scale})`;
    const y = `(${x} * ${scale})`;
    return `(keops_abs(${y}) < ${ctx.lit(INTEGRAL_FROM)} ? keops_round(${y}) / ${scale} : ${x})`;
  },
});

export const Mod = vso({
  name: 'Mod',
  doc: 'Mod(f,n,o): f - n*Floor((f-o)/n), i.e. f modulo n into [o, o+n) (broadcast rule 1.4)',
  arity: 3,
  fn: (f, n, o) => f - n * Math.floor((f - o) / n),
  cexpr: (f, n, o) => `(${f} - ${n} * keops_floor((${f} - ${o}) / ${n}))`,
  // Floor has zero gradient: G to f, -Floor((f-o)/n)·G to n, nothing to o.
  vjp: ({ children: [f, n, o], G, b, needs }) => [
    needs[0] ? unbroadcast(b, G, f.dim) : undefined,
    needs[1] ? unbroadcast(b, b.mul(G, b.neg(b.call('Floor', [b.div(b.sub(f, o), n)]))), n.dim) : undefined,
    undefined,
  ],
});

const clamp = (x: number, lo: number, hi: number): number => (x < lo ? lo : x > hi ? hi : x);

export const Clamp = typedVso({
  name: 'Clamp',
  doc: 'Clamp(f,a,b): a where f < a, b where f > b, else f (broadcast rule 1.4)',
  arity: 3,
  fn: clamp,
  cexpr: (_ctx, f, a, c) => `(${f} < ${a} ? ${a} : (${f} > ${c} ? ${c} : ${f}))`,
  // The gradient goes to whichever of f, a, b the value was taken from (masks that partition every case,
  // even a > b): a where f < a; b where a <= f and f > b; f where a <= f <= b.
  partials: ([f, a, c], b) => {
    const aboveA = b.call('LessOrEqual', [a, f]);
    return [
      b.mul(aboveA, b.call('LessOrEqual', [f, c])),
      b.call('LessThan', [f, a]),
      b.mul(aboveA, b.call('LessThan', [c, f])),
    ];
  },
});

const intBounds = (params: readonly ParamValue[]): [number, number] => [
  intParam(params, 0),
  intParam(params, 1),
];

export const ClampInt = unaryWithParams({
  name: 'ClampInt',
  doc: 'ClampInt(f,a,b): f clamped to the integers [a, b]',
  params: ['int', 'int'],
  fn: (x, params) => clamp(x, ...intBounds(params)),
  cexpr: (ctx, x) => {
    const [lo, hi] = intBounds(ctx.params).map((v) => ctx.lit(v));
    return `(${x} < ${lo} ? ${lo} : (${x} > ${hi} ? ${hi} : ${x}))`;
  },
  vjp: ({ children: [f], params, G, b }) => b.mul(G, b.call('DiffClampInt', [f], params)),
});

export const DiffClampInt = unaryWithParams({
  name: 'DiffClampInt',
  doc: 'DiffClampInt(f,a,b): 1 where a <= f <= b, else 0 (derivative of ClampInt; zero gradient)',
  params: ['int', 'int'],
  fn: (x, params) => {
    const [lo, hi] = intBounds(params);
    return x >= lo && x <= hi ? 1 : 0;
  },
  cexpr: (ctx, x) => {
    const [lo, hi] = intBounds(ctx.params).map((v) => ctx.lit(v));
    return `(${x} >= ${lo} && ${x} <= ${hi} ? ${ctx.lit(1)} : ${ctx.lit(0)})`;
  },
});

export const IfElse = typedVso({
  name: 'IfElse',
  doc: 'IfElse(f,a,b): a where f >= 0, else b (broadcast rule 1.4)',
  arity: 3,
  fn: (f, a, c) => (f >= 0 ? a : c),
  cexpr: (ctx, f, a, c) => `(${f} >= ${ctx.lit(0)} ? ${a} : ${c})`,
  // The selected branch gets G; nothing flows into the condition.
  vjp: ({ children: [f, a, c], G, b, needs }) => [
    undefined,
    needs[1] ? unbroadcast(b, b.call('IfElse', [f, G, b.zero(1)]), a.dim) : undefined,
    needs[2] ? unbroadcast(b, b.call('IfElse', [f, b.zero(1), G]), c.dim) : undefined,
  ],
});

/** A comparison giving 1.0 or 0.0 per component (zero gradient). */
function comparison(name: string, symbol: string, test: (a: number, b: number) => boolean): OpDef {
  return typedVso({
    name,
    doc: `${name}(f,g): 1 where f ${symbol} g, else 0 (broadcast rule 1.4; zero gradient)`,
    arity: 2,
    fn: (a, c) => (test(a, c) ? 1 : 0),
    cexpr: (ctx, a, c) => `(${a} ${symbol} ${c} ? ${ctx.lit(1)} : ${ctx.lit(0)})`,
  });
}

export const Equal = comparison('Equal', '==', (a, c) => a === c);
export const NotEqual = comparison('NotEqual', '!=', (a, c) => a !== c);
export const LessThan = comparison('LessThan', '<', (a, c) => a < c);
export const LessOrEqual = comparison('LessOrEqual', '<=', (a, c) => a <= c);

export const MATH_OPS: readonly OpDef[] = [
  Exp,
  Log,
  XLogX,
  Sin,
  Cos,
  SinXDivX,
  Asin,
  Acos,
  Atan,
  Atan2,
  Abs,
  Sign,
  Step,
  ReLU,
  Floor,
  Round,
  Mod,
  Clamp,
  ClampInt,
  DiffClampInt,
  IfElse,
  Equal,
  NotEqual,
  LessThan,
  LessOrEqual,
];

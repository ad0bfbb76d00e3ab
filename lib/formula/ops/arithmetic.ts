/** (a) Arithmetic operations (docs/semantics.md 1.5 a). */
import { KeOpsError } from '../../errors';
import type { Node, ParamValue } from '../node';
import { type Builder, dimError, type EmitContext, type OpDef, paramError, type VjpContext } from '../opdef';
import { emitVso, evalVso, intParam, unbroadcast, vso, type VsoSpec } from './helpers';

/** A vectorised scalar op whose C++ expression needs the emit context (typed literals via `ctx.lit`). */
export type TypedVsoSpec = Omit<VsoSpec, 'cexpr'> & { cexpr: (ctx: EmitContext, ...x: string[]) => string };

export function typedVso(spec: TypedVsoSpec): OpDef {
  const { cexpr, ...rest } = spec;
  const untyped = vso({
    ...rest,
    cexpr: () => {
      throw new KeOpsError('ERR_INTERNAL', `${spec.name}: emitted through its typed emitter only`);
    },
  });
  return { ...untyped, emit: (ctx) => emitVso(ctx, (...x) => cexpr(ctx, ...x)) };
}

export interface UnaryParamSpec {
  name: string;
  doc: string;
  params: OpDef['params'];
  /** Validates the parameters (throws ERR_FORMULA_PARAM); the output dim is the operand's. */
  check?: (params: readonly ParamValue[]) => void;
  /** float64 reference of one component. */
  fn: (x: number, params: readonly ParamValue[]) => number;
  /** C++ expression of one component. */
  cexpr: (ctx: EmitContext, x: string) => string;
  /** Cotangent to the operand; omitted for piecewise-constant ops (zero gradient). */
  vjp?: (ctx: VjpContext) => Node | undefined;
}

/** A component-wise op of one operand and compile-time integer parameters (Pow, Round, ClampInt...). */
export function unaryWithParams(spec: UnaryParamSpec): OpDef {
  const { name, fn, cexpr, check, vjp } = spec;
  return {
    name,
    doc: spec.doc,
    arity: 1,
    params: spec.params,
    dim: ([d], params) => {
      check?.(params);
      return d;
    },
    evaluate: (args, params, node) => evalVso(node.dim, args, (x) => fn(x, params)),
    vjp: vjp === undefined ? () => [] : (ctx) => [vjp(ctx)],
    emit: (ctx) => emitVso(ctx, (x) => cexpr(ctx, x)),
  };
}

/** Sends a cotangent to a child of dim `dim`: summed if the child is a scalar, copied if the cotangent is. */
function fitTo(b: Builder, cot: Node, dim: number): Node {
  if (cot.dim === dim) return cot;
  return dim === 1 ? b.sum(cot) : b.sumT(cot, dim);
}

export const Add = vso({
  name: 'Add',
  doc: 'f+g, Add(f,g): sum (broadcast rule 1.4)',
  arity: 2,
  fn: (a, b) => a + b,
  cexpr: (a, b) => `(${a} + ${b})`,
  linearity: 'all',
  vjp: ({ children, G, b, needs }) =>
    children.map((c, k) => (needs[k] ? unbroadcast(b, G, c.dim) : undefined)),
});

export const Subtract = vso({
  name: 'Subtract',
  doc: 'f-g, Subtract(f,g): difference (broadcast rule 1.4)',
  arity: 2,
  fn: (a, b) => a - b,
  cexpr: (a, b) => `(${a} - ${b})`,
  linearity: 'all',
  vjp: ({ children: [f, g], G, b, needs }) => [
    needs[0] ? unbroadcast(b, G, f.dim) : undefined,
    needs[1] ? unbroadcast(b, b.neg(G), g.dim) : undefined,
  ],
});

export const Minus = vso({
  name: 'Minus',
  doc: '-f, Minus(f): opposite',
  arity: 1,
  fn: (a) => -a,
  cexpr: (a) => `(-${a})`,
  linearity: 'all',
  vjp: ({ G, b }) => [b.neg(G)],
});

export const Mult = vso({
  name: 'Mult',
  doc: 'f*g, Mult(f,g): product (broadcast rule 1.4)',
  arity: 2,
  fn: (a, b) => a * b,
  cexpr: (a, b) => `(${a} * ${b})`,
  partials: ([f, g]) => [g, f],
  linearity: 'one',
});

export const Divide = vso({
  name: 'Divide',
  doc: 'f/g, Divide(f,g): quotient (broadcast rule 1.4)',
  arity: 2,
  fn: (a, b) => a / b,
  cexpr: (a, b) => `(${a} / ${b})`,
  // d/df = 1/g ; d/dg = -f/g²
  partials: ([f, g], b) => [b.call('Inv', [g]), b.neg(b.div(f, b.call('Square', [g])))],
  linearity: 'first',
});

export const Inv = typedVso({
  name: 'Inv',
  doc: '1/f, Inv(f): inverse',
  arity: 1,
  fn: (a) => 1 / a,
  cexpr: (ctx, a) => `(${ctx.lit(1)} / ${a})`,
  // -1/f², written -(Inv(f))² to share Inv(f) with the forward pass.
  partials: ([f], b) => [b.neg(b.call('Square', [b.call('Inv', [f])]))],
});

export const Scalprod: OpDef = {
  name: 'Scalprod',
  doc: '(f|g), Scalprod(f,g): dot product (dim 1); a scalar operand multiplies the sum of the other',
  arity: 2,
  params: [],
  linearity: 'one',
  dim: ([df, dg]) => {
    if (df !== dg && df !== 1 && dg !== 1) {
      throw dimError(
        `Scalprod: operands must have the same dimension (or one of them dim 1), got ${df} and ${dg}`,
      );
    }
    return 1;
  },
  evaluate: ([f, g]) => {
    const D = Math.max(f.length, g.length);
    let s = 0;
    for (let k = 0; k < D; k++) s += (f.length === 1 ? f[0] : f[k]) * (g.length === 1 ? g[0] : g[k]);
    return Float64Array.of(s);
  },
  vjp: ({ children: [f, g], G, b, needs }) => [
    needs[0] ? fitTo(b, b.mul(G, g), f.dim) : undefined,
    needs[1] ? fitTo(b, b.mul(G, f), g.dim) : undefined,
  ],
  emit: (ctx) => {
    const k = ctx.fresh('k');
    const D = Math.max(...ctx.argDims);
    const [a, c] = ctx.args.map((name, i) => (ctx.argDims[i] === 1 ? `${name}[0]` : `${name}[${k}]`));
    return (
      `{ ${ctx.out}[0] = ${ctx.lit(0)}; ` +
      `for (int ${k} = 0; ${k} < ${D}; ${k}++) ${ctx.out}[0] += ${a} * ${c}; }`
    );
  },
};

export const Square = vso({
  name: 'Square',
  doc: 'f**2, Square(f): square',
  arity: 1,
  fn: (a) => a * a,
  cexpr: (a) => `(${a} * ${a})`,
  partials: ([f], b) => [b.mul(b.int(2), f)],
});

/** keops_powi takes a C int. */
const MAX_POW_EXPONENT = 2 ** 31 - 1;

export const Pow = unaryWithParams({
  name: 'Pow',
  doc: 'f**m, Pow(f,m): integer power (m may be 0 or negative)',
  params: ['int'],
  check: (params) => {
    const m = intParam(params, 0);
    if (Math.abs(m) > MAX_POW_EXPONENT) {
      throw paramError(
        `Pow: the exponent must be between ${-MAX_POW_EXPONENT} and ${MAX_POW_EXPONENT}, got ${m}`,
      );
    }
  },
  fn: (x, params) => Math.pow(x, intParam(params, 0)),
  cexpr: (ctx, x) => `keops_powi(${x}, ${intParam(ctx.params, 0)})`,
  // m·f^(m-1)·G
  vjp: ({ children: [f], params, G, b }) => {
    const m = intParam(params, 0);
    if (m === 0) return undefined;
    if (m === 1) return G;
    const power = m === 2 ? f : b.call('Pow', [f], [m - 1]);
    return b.mul(G, b.mul(b.int(m), power));
  },
});

export const Powf = vso({
  name: 'Powf',
  doc: 'Powf(f,g): real power f^g (broadcast rule 1.4)',
  arity: 2,
  fn: (a, b) => Math.pow(a, b),
  // keops_pow is overloaded: pow in double, powf in float (KeOps uses powf for every type, §9.2).
  cexpr: (a, b) => `keops_pow(${a}, ${b})`,
  // d/df = g·f^(g-1) ; d/dg = log(f)·f^g
  partials: ([f, g], b) => [
    b.mul(g, b.call('Powf', [f, b.sub(g, b.int(1))])),
    b.mul(b.call('Log', [f]), b.call('Powf', [f, g])),
  ],
});

export const Sqrt = vso({
  name: 'Sqrt',
  doc: 'Sqrt(f): square root',
  arity: 1,
  fn: (a) => Math.sqrt(a),
  cexpr: (a) => `keops_sqrt(${a})`,
  // ½·Rsqrt(f)
  partials: ([f], b) => [b.mul(b.rat({ p: 1n, q: 2n }), b.call('Rsqrt', [f]))],
});

/** 1/√x, and 0 at x = 0 (KeOps convention, as keops_rsqrt): keeps gradients of norms finite at 0. */
export const rsqrt = (x: number): number => (x === 0 ? 0 : 1 / Math.sqrt(x));

export const Rsqrt = vso({
  name: 'Rsqrt',
  doc: 'Rsqrt(f): 1/sqrt(f), and 0 where f = 0',
  arity: 1,
  fn: rsqrt,
  cexpr: (a) => `keops_rsqrt(${a})`,
  // -½·Rsqrt(f)³
  partials: ([f], b) => [b.mul(b.rat({ p: -1n, q: 2n }), b.call('Pow', [b.call('Rsqrt', [f])], [3]))],
});

export const ARITHMETIC_OPS: readonly OpDef[] = [
  Add,
  Subtract,
  Minus,
  Mult,
  Divide,
  Inv,
  Scalprod,
  Square,
  Pow,
  Powf,
  Sqrt,
  Rsqrt,
];

/**
 * (f) Complex numbers (docs/semantics.md 1.5 f). A complex vector of length n is a real vector of length 2n,
 * interleaved [re0, im0, re1, im1, ...]. Element-wise binary ops accept dims {2n, 2n} or {2, 2n}: a dim-2
 * operand is a complex scalar, broadcast.
 *
 * Derivatives: each rule is the adjoint (real-linear transpose, for the real inner product of R^2n) of the
 * op's differential. For complex multiplication by a fixed w, the adjoint is multiplication by conj(w), so
 * holomorphic ops (Mult, Divide, Exp) send conj(f'(z))·G to their child.
 */
import type { Node, ParamValue } from '../node';
import { type Builder, dimError, type EmitContext, type OpDef, paramError } from '../opdef';
import { intParam } from './helpers';
import { checkDimParam } from './leaves';

/** Checks that a child of `name` is a complex vector (even, positive dim). */
function complexDim(name: string, d: number, what = 'the operand'): number {
  if (d % 2 !== 0) {
    throw dimError(`${name}: ${what} must be a complex vector (even dim: interleaved re, im), got dim ${d}`);
  }
  return d;
}

/** Complex broadcast rule: every operand is complex, and dims are {D} or {2, D}; the output dim is D. */
function complexBroadcastDim(name: string, dims: readonly number[]): number {
  dims.forEach((d, k) => complexDim(name, d, `operand ${k + 1}`));
  const D = Math.max(...dims);
  for (const d of dims) {
    if (d !== 2 && d !== D) {
      throw dimError(
        `${name}: incompatible complex dimensions ${dims.join(' and ')} ` +
          `(each operand must have dim 2, a complex scalar, or ${D})`,
      );
    }
  }
  return D;
}

/** A complex cotangent flowing into a child that may have been broadcast (dim 2): sum it then. */
function complexUnbroadcast(b: Builder, cot: Node, childDim: number): Node {
  return childDim === 2 && cot.dim !== 2 ? b.call('ComplexSum', [cot]) : cot;
}

const cmul = (b: Builder, f: Node, g: Node): Node => b.call('ComplexMult', [f, g]);
const conj = (b: Builder, f: Node): Node => b.call('Conj', [f]);

// ---- float64 reference helpers -------------------------------------------------------------------------

/** Real and imaginary parts of complex entry k of a (possibly broadcast, dim-2) operand. */
const re = (a: Float64Array, k: number): number => (a.length === 2 ? a[0] : a[2 * k]);
const im = (a: Float64Array, k: number): number => (a.length === 2 ? a[1] : a[2 * k + 1]);

/** Evaluates a complex element-wise op: `fn` maps the operands' (re, im) pairs of entry k to a pair. */
function evalComplexWise(
  dim: number,
  args: readonly Float64Array[],
  fn: (...parts: number[]) => readonly [number, number],
): Float64Array {
  const out = new Float64Array(dim);
  for (let k = 0; k < dim / 2; k++) {
    const parts = args.flatMap((a) => [re(a, k), im(a, k)]);
    const [r, i] = fn(...parts);
    out[2 * k] = r;
    out[2 * k + 1] = i;
  }
  return out;
}

/** Applies `fn` to each complex entry of a, giving one real number per entry. */
function evalComplexToReal(a: Float64Array, fn: (r: number, i: number) => number): Float64Array {
  const out = new Float64Array(a.length / 2);
  for (let k = 0; k < out.length; k++) out[k] = fn(a[2 * k], a[2 * k + 1]);
  return out;
}

// ---- C++ emission helpers ------------------------------------------------------------------------------

/**
 * Emits a loop over the complex entries k of the output: `body` gets the C expressions of each operand's
 * real and imaginary parts (broadcast operands read entry 0) and returns the C expressions of the result's
 * parts; `local(hint, expr)` declares a loop-local temporary and returns its name. The result goes through
 * locals, so the output may safely alias an input.
 */
function emitComplexWise(
  ctx: EmitContext,
  body: (parts: string[], local: (hint: string, expr: string) => string) => readonly [string, string],
): string {
  const k = ctx.fresh('k');
  const parts = ctx.args.flatMap((a, c) =>
    ctx.argDims[c] === 2 ? [`${a}[0]`, `${a}[1]`] : [`${a}[2 * ${k}]`, `${a}[2 * ${k} + 1]`],
  );
  const decls: string[] = [];
  const local = (hint: string, expr: string): string => {
    const name = ctx.fresh(hint);
    decls.push(`${ctx.T} ${name} = ${expr};`);
    return name;
  };
  const [rExpr, iExpr] = body(parts, local);
  const r = local('re', rExpr);
  const i = local('im', iExpr);
  return (
    `for (int ${k} = 0; ${k} < ${ctx.dim / 2}; ${k}++) { ${decls.join(' ')} ` +
    `${ctx.out}[2 * ${k}] = ${r}; ${ctx.out}[2 * ${k} + 1] = ${i}; }`
  );
}

/** Emits `out[k] = expr(re_k, im_k)` for each complex entry k of the single operand. */
function emitComplexToReal(ctx: EmitContext, expr: (r: string, i: string) => string): string {
  const k = ctx.fresh('k');
  const a = ctx.args[0];
  return `for (int ${k} = 0; ${k} < ${ctx.dim}; ${k}++) ${ctx.out}[${k}] = ${expr(`${a}[2 * ${k}]`, `${a}[2 * ${k} + 1]`)};`;
}

/** Emits out[2k] = re(a[k]), out[2k+1] = im(a[k]) for a real operand a of dim n. */
function emitRealToComplex(
  ctx: EmitContext,
  reExpr: (x: string) => string,
  imExpr: (x: string) => string,
): string {
  const k = ctx.fresh('k');
  const x = ctx.fresh('x');
  return (
    `for (int ${k} = 0; ${k} < ${ctx.argDims[0]}; ${k}++) { ${ctx.T} ${x} = ${ctx.args[0]}[${k}]; ` +
    `${ctx.out}[2 * ${k}] = ${reExpr(x)}; ${ctx.out}[2 * ${k} + 1] = ${imExpr(x)}; }`
  );
}

// ---- parts and conversions -----------------------------------------------------------------------------

export const ComplexReal: OpDef = {
  name: 'ComplexReal',
  doc: 'ComplexReal(f): real parts of the complex vector f (dim 2n -> n)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: ([d]) => complexDim('ComplexReal', d) / 2,
  evaluate: ([a]) => evalComplexToReal(a, (r) => r),
  vjp: ({ G, b }) => [b.call('Real2Complex', [G])],
  emit: (ctx) => emitComplexToReal(ctx, (r) => r),
};

export const ComplexImag: OpDef = {
  name: 'ComplexImag',
  doc: 'ComplexImag(f): imaginary parts of the complex vector f (dim 2n -> n)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: ([d]) => complexDim('ComplexImag', d) / 2,
  evaluate: ([a]) => evalComplexToReal(a, (_r, i) => i),
  vjp: ({ G, b }) => [b.call('Imag2Complex', [G])],
  emit: (ctx) => emitComplexToReal(ctx, (_r, i) => i),
};

export const Real2Complex: OpDef = {
  name: 'Real2Complex',
  doc: 'Real2Complex(f): the complex vector f + 0i (dim n -> 2n)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: ([d]) => 2 * d,
  evaluate: ([a]) => {
    const out = new Float64Array(2 * a.length);
    a.forEach((x, k) => (out[2 * k] = x));
    return out;
  },
  vjp: ({ G, b }) => [b.call('ComplexReal', [G])],
  emit: (ctx) =>
    emitRealToComplex(
      ctx,
      (x) => x,
      () => ctx.lit(0),
    ),
};

export const Imag2Complex: OpDef = {
  name: 'Imag2Complex',
  doc: 'Imag2Complex(f): the complex vector 0 + f i (dim n -> 2n)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: ([d]) => 2 * d,
  evaluate: ([a]) => {
    const out = new Float64Array(2 * a.length);
    a.forEach((x, k) => (out[2 * k + 1] = x));
    return out;
  },
  vjp: ({ G, b }) => [b.call('ComplexImag', [G])],
  emit: (ctx) =>
    emitRealToComplex(
      ctx,
      () => ctx.lit(0),
      (x) => x,
    ),
};

export const Conj: OpDef = {
  name: 'Conj',
  doc: 'Conj(f): complex conjugate (dim 2n -> 2n)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: ([d]) => complexDim('Conj', d),
  evaluate: (args, _p, node) => evalComplexWise(node.dim, args, (r, i) => [r, -i]),
  // Conjugation is a real-linear involution that is its own transpose.
  vjp: ({ G, b }) => [conj(b, G)],
  emit: (ctx) => emitComplexWise(ctx, ([r, i]) => [r, `(-${i})`]),
};

// ---- element-wise arithmetic ---------------------------------------------------------------------------

export const ComplexAdd: OpDef = {
  name: 'ComplexAdd',
  doc: 'ComplexAdd(f,g): complex sum (dims {2n,2n} or {2,2n}: a dim-2 operand is broadcast)',
  arity: 2,
  params: [],
  linearity: 'all',
  dim: (dims) => complexBroadcastDim('ComplexAdd', dims),
  evaluate: (args, _p, node) => evalComplexWise(node.dim, args, (a, b, c, d) => [a + c, b + d]),
  vjp: ({ children, G, b, needs }) =>
    children.map((c, k) => (needs[k] ? complexUnbroadcast(b, G, c.dim) : undefined)),
  emit: (ctx) => emitComplexWise(ctx, ([a, b, c, d]) => [`(${a} + ${c})`, `(${b} + ${d})`]),
};

export const ComplexSubtract: OpDef = {
  name: 'ComplexSubtract',
  doc: 'ComplexSubtract(f,g): complex difference (dims {2n,2n} or {2,2n}: a dim-2 operand is broadcast)',
  arity: 2,
  params: [],
  linearity: 'all',
  dim: (dims) => complexBroadcastDim('ComplexSubtract', dims),
  evaluate: (args, _p, node) => evalComplexWise(node.dim, args, (a, b, c, d) => [a - c, b - d]),
  vjp: ({ children: [f, g], G, b, needs }) => [
    needs[0] ? complexUnbroadcast(b, G, f.dim) : undefined,
    needs[1] ? complexUnbroadcast(b, b.neg(G), g.dim) : undefined,
  ],
  emit: (ctx) => emitComplexWise(ctx, ([a, b, c, d]) => [`(${a} - ${c})`, `(${b} - ${d})`]),
};

export const ComplexMult: OpDef = {
  name: 'ComplexMult',
  doc: 'ComplexMult(f,g): complex product (dims {2n,2n} or {2,2n}: a dim-2 operand is broadcast)',
  arity: 2,
  params: [],
  linearity: 'one',
  dim: (dims) => complexBroadcastDim('ComplexMult', dims),
  evaluate: (args, _p, node) =>
    evalComplexWise(node.dim, args, (a, b, c, d) => [a * c - b * d, a * d + b * c]),
  // d(fg) = g df + f dg; the adjoint of multiplication by w is multiplication by conj(w).
  vjp: ({ children: [f, g], G, b, needs }) => [
    needs[0] ? complexUnbroadcast(b, cmul(b, conj(b, g), G), f.dim) : undefined,
    needs[1] ? complexUnbroadcast(b, cmul(b, conj(b, f), G), g.dim) : undefined,
  ],
  emit: (ctx) =>
    emitComplexWise(ctx, ([a, b, c, d]) => [`(${a} * ${c} - ${b} * ${d})`, `(${a} * ${d} + ${b} * ${c})`]),
};

/** Index of the real-scalar operand of ComplexRealScal (dims already validated). */
const realScalarIndex = (children: readonly Node[]): number => (children[0].dim === 1 ? 0 : 1);

export const ComplexRealScal: OpDef = {
  name: 'ComplexRealScal',
  doc: 'ComplexRealScal(f,g): product of a real scalar (dim 1) and a complex vector (dim 2n), in either order',
  arity: 2,
  params: [],
  linearity: 'one',
  dim: ([df, dg]) => {
    if (df === 1 && dg % 2 === 0) return dg;
    if (dg === 1 && df % 2 === 0) return df;
    throw dimError(
      `ComplexRealScal: expects a real scalar (dim 1) and a complex vector (even dim), in either order; ` +
        `got dims ${df} and ${dg}`,
    );
  },
  evaluate: ([f, g]) => {
    const [s, z] = f.length === 1 ? [f[0], g] : [g[0], f];
    return z.map((x) => s * x);
  },
  // Scaling by a real s is real multiplication component-wise: s·G to the complex side, <z, G> to s.
  vjp: ({ children, G, b, needs }) => {
    const si = realScalarIndex(children);
    const s = children[si];
    const z = children[1 - si];
    const out: (Node | undefined)[] = [undefined, undefined];
    if (needs[si]) out[si] = b.sum(b.mul(z, G));
    if (needs[1 - si]) out[1 - si] = b.mul(s, G);
    return out;
  },
  emit: (ctx) => {
    const si = ctx.argDims[0] === 1 ? 0 : 1;
    const k = ctx.fresh('k');
    return `for (int ${k} = 0; ${k} < ${ctx.dim}; ${k}++) ${ctx.out}[${k}] = ${ctx.args[si]}[0] * ${ctx.args[1 - si]}[${k}];`;
  },
};

export const ComplexDivide: OpDef = {
  name: 'ComplexDivide',
  doc: 'ComplexDivide(f,g): complex quotient f/g (dims {2n,2n} or {2,2n}: a dim-2 operand is broadcast)',
  arity: 2,
  params: [],
  linearity: 'first',
  dim: (dims) => complexBroadcastDim('ComplexDivide', dims),
  evaluate: (args, _p, node) =>
    evalComplexWise(node.dim, args, (a, b, c, d) => {
      const den = c * c + d * d;
      return [(a * c + b * d) / den, (b * c - a * d) / den];
    }),
  // w = f/g: dw = df/g − (w/g) dg, so the cotangents are G/conj(g) and −conj(w)·G/conj(g).
  vjp: ({ node, children: [f, g], G, b, needs }) => {
    const gOverConjG = b.call('ComplexDivide', [G, conj(b, g)]);
    return [
      needs[0] ? complexUnbroadcast(b, gOverConjG, f.dim) : undefined,
      needs[1] ? complexUnbroadcast(b, b.neg(cmul(b, conj(b, node), gOverConjG)), g.dim) : undefined,
    ];
  },
  emit: (ctx) =>
    emitComplexWise(ctx, ([a, b, c, d], local) => {
      const den = local('den', `${c} * ${c} + ${d} * ${d}`);
      return [`(${a} * ${c} + ${b} * ${d}) / ${den}`, `(${b} * ${c} - ${a} * ${d}) / ${den}`];
    }),
};

// ---- modulus, argument, exponentials ------------------------------------------------------------------

export const ComplexSquareAbs: OpDef = {
  name: 'ComplexSquareAbs',
  doc: 'ComplexSquareAbs(f): squared moduli |z|² of the complex entries of f (dim 2n -> n)',
  arity: 1,
  params: [],
  dim: ([d]) => complexDim('ComplexSquareAbs', d) / 2,
  evaluate: ([a]) => evalComplexToReal(a, (r, i) => r * r + i * i),
  // d|z|² = 2 (a da + b db): the cotangent is 2 G_k z_k.
  vjp: ({ children: [z], G, b }) => [b.mul(b.int(2), cmul(b, b.call('Real2Complex', [G]), z))],
  emit: (ctx) => emitComplexToReal(ctx, (r, i) => `(${r} * ${r} + ${i} * ${i})`),
};

export const ComplexAbs: OpDef = {
  name: 'ComplexAbs',
  doc: 'ComplexAbs(f): moduli |z| of the complex entries of f (dim 2n -> n)',
  arity: 1,
  params: [],
  dim: ([d]) => complexDim('ComplexAbs', d) / 2,
  evaluate: ([a]) => evalComplexToReal(a, (r, i) => Math.sqrt(r * r + i * i)),
  // d|z| = (a da + b db)/|z|: the cotangent is (G_k/|z_k|) z_k (undefined at z = 0, like KeOps).
  vjp: ({ node, children: [z], G, b }) => [cmul(b, b.call('Real2Complex', [b.div(G, node)]), z)],
  emit: (ctx) => emitComplexToReal(ctx, (r, i) => `keops_sqrt(${r} * ${r} + ${i} * ${i})`),
};

export const ComplexAngle: OpDef = {
  name: 'ComplexAngle',
  doc: 'ComplexAngle(f): arguments atan2(im, re) of the complex entries of f (dim 2n -> n)',
  arity: 1,
  params: [],
  dim: ([d]) => complexDim('ComplexAngle', d) / 2,
  evaluate: ([a]) => evalComplexToReal(a, (r, i) => Math.atan2(i, r)),
  // d atan2(b, a) = (a db − b da)/|z|²: the cotangent (−b, a) G/|z|² is i·z scaled by G/|z|².
  vjp: ({ children: [z], G, b }) => [
    cmul(b, b.call('Imag2Complex', [b.div(G, b.call('ComplexSquareAbs', [z]))]), z),
  ],
  emit: (ctx) => emitComplexToReal(ctx, (r, i) => `keops_atan2(${i}, ${r})`),
};

export const ComplexExp: OpDef = {
  name: 'ComplexExp',
  doc: 'ComplexExp(f): complex exponential e^a (cos b + i sin b) of each entry a + ib (dim 2n -> 2n)',
  arity: 1,
  params: [],
  dim: ([d]) => complexDim('ComplexExp', d),
  evaluate: (args, _p, node) =>
    evalComplexWise(node.dim, args, (a, b) => {
      const e = Math.exp(a);
      return [e * Math.cos(b), e * Math.sin(b)];
    }),
  // Holomorphic with derivative exp(z) itself: the cotangent is conj(exp z)·G.
  vjp: ({ node, G, b }) => [cmul(b, conj(b, node), G)],
  emit: (ctx) =>
    emitComplexWise(ctx, ([a, b], local) => {
      const e = local('e', `keops_exp(${a})`);
      return [`${e} * keops_cos(${b})`, `${e} * keops_sin(${b})`];
    }),
};

export const ComplexExp1j: OpDef = {
  name: 'ComplexExp1j',
  doc: 'ComplexExp1j(f): e^{i f} = cos f + i sin f for a real vector f (dim n -> 2n)',
  arity: 1,
  params: [],
  dim: ([d]) => 2 * d,
  evaluate: ([a]) => {
    const out = new Float64Array(2 * a.length);
    a.forEach((x, k) => {
      out[2 * k] = Math.cos(x);
      out[2 * k + 1] = Math.sin(x);
    });
    return out;
  },
  // d e^{if} = i e^{if} df: the cotangent is Re(conj(i e^{if}) G) = Im(conj(e^{if}) G).
  vjp: ({ node, G, b }) => [b.call('ComplexImag', [cmul(b, conj(b, node), G)])],
  emit: (ctx) =>
    emitRealToComplex(
      ctx,
      (x) => `keops_cos(${x})`,
      (x) => `keops_sin(${x})`,
    ),
};

// ---- sums ----------------------------------------------------------------------------------------------

export const ComplexSum: OpDef = {
  name: 'ComplexSum',
  doc: 'ComplexSum(f): sum of the complex entries of f (dim 2n -> 2)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: ([d]) => {
    complexDim('ComplexSum', d);
    return 2;
  },
  evaluate: ([a]) => {
    const out = new Float64Array(2);
    for (let k = 0; k < a.length; k += 2) {
      out[0] += a[k];
      out[1] += a[k + 1];
    }
    return out;
  },
  vjp: ({ children: [f], G, b }) => [b.call('ComplexSumT', [G], [f.dim])],
  emit: (ctx) => {
    const k = ctx.fresh('k');
    const r = ctx.fresh('re');
    const i = ctx.fresh('im');
    const [a] = ctx.args;
    return (
      `{ ${ctx.T} ${r} = ${ctx.lit(0)}; ${ctx.T} ${i} = ${ctx.lit(0)}; ` +
      `for (int ${k} = 0; ${k} < ${ctx.argDims[0] / 2}; ${k}++) { ${r} += ${a}[2 * ${k}]; ${i} += ${a}[2 * ${k} + 1]; } ` +
      `${ctx.out}[0] = ${r}; ${ctx.out}[1] = ${i}; }`
    );
  },
};

export const ComplexSumT: OpDef = {
  name: 'ComplexSumT',
  doc: 'ComplexSumT(f,d): the complex scalar f (dim 2) repeated to a complex vector of dim d (d even; adjoint of ComplexSum)',
  arity: 1,
  params: ['int'],
  linearity: 'all',
  dim: ([df], params: readonly ParamValue[]) => {
    if (df !== 2) throw dimError(`ComplexSumT: the operand must be a complex scalar (dim 2), got dim ${df}`);
    const d = intParam(params, 0);
    checkDimParam('ComplexSumT', d);
    if (d % 2 !== 0)
      throw paramError(`ComplexSumT: the output dim must be even (a complex vector), got ${d}`);
    return d;
  },
  evaluate: ([a], params) => {
    const out = new Float64Array(intParam(params, 0));
    for (let k = 0; k < out.length; k += 2) {
      out[k] = a[0];
      out[k + 1] = a[1];
    }
    return out;
  },
  vjp: ({ G, b }) => [b.call('ComplexSum', [G])],
  emit: (ctx) => emitComplexWise(ctx, ([r, i]) => [r, i]),
};

export const COMPLEX_OPS: readonly OpDef[] = [
  ComplexReal,
  ComplexImag,
  Real2Complex,
  Imag2Complex,
  Conj,
  ComplexAdd,
  ComplexSubtract,
  ComplexMult,
  ComplexRealScal,
  ComplexDivide,
  ComplexSquareAbs,
  ComplexAbs,
  ComplexAngle,
  ComplexExp,
  ComplexExp1j,
  ComplexSum,
  ComplexSumT,
];

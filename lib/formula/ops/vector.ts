/** (c) Vector reductions, indexing, padding (docs/semantics.md 1.5 c). */
import type { EmitContext, OpDef } from '../opdef';
import { dimError, paramError } from '../opdef';
import { checkDimParam, MAX_DIM } from './leaves';
import { intParam } from './helpers';

export const Sum: OpDef = {
  name: 'Sum',
  doc: 'Sum(f): sum of the components of f (dim 1)',
  arity: 1,
  params: [],
  linearity: 'all',
  dim: () => 1,
  evaluate: ([a]) => Float64Array.of(a.reduce((s, x) => s + x, 0)),
  vjp: ({ children: [f], G, b }) => [b.sumT(G, f.dim)],
  emit: (ctx) => {
    const k = ctx.fresh('k');
    const [a] = ctx.args;
    const loop = `for (int ${k} = 0; ${k} < ${ctx.argDims[0]}; ${k}++) ${ctx.out}[0] += ${a}[${k}];`;
    return `{ ${ctx.out}[0] = ${ctx.lit(0)}; ${loop} }`;
  },
};

export const SumT: OpDef = {
  name: 'SumT',
  doc: 'SumT(f,d): d copies of the scalar f (adjoint of Sum)',
  arity: 1,
  params: ['int'],
  linearity: 'all',
  dim: ([d], params) => {
    if (d !== 1) throw dimError(`SumT: the operand must be a scalar (dim 1), got dim ${d}`);
    checkDimParam('SumT', intParam(params, 0));
    return intParam(params, 0);
  },
  evaluate: ([a], params) => new Float64Array(intParam(params, 0)).fill(a[0]),
  vjp: ({ G, b }) => [b.sum(G)],
  emit: (ctx) => {
    const k = ctx.fresh('k');
    return `for (int ${k} = 0; ${k} < ${ctx.dim}; ${k}++) ${ctx.out}[${k}] = ${ctx.args[0]}[0];`;
  },
};

// ---------------------------------------------------------------------------------------------------------
// Max, Min, ArgMax, ArgMin: one scan, keeping the FIRST extremum (strict comparison), as KeOps does.

/** Index of the first component that beats every earlier one under `better` (strict), starting at 0. */
function firstExtremum(a: Float64Array, better: (x: number, best: number) => boolean): number {
  let best = a[0];
  let idx = 0;
  for (let k = 1; k < a.length; k++) {
    if (better(a[k], best)) {
      best = a[k];
      idx = k;
    }
  }
  return idx;
}

/** C++ for the same scan; `cmp` is `>` or `<`. Fills out[0] with the extremal value or its index (as T). */
function emitExtremum(ctx: EmitContext, cmp: '>' | '<', want: 'value' | 'index'): string {
  const [a] = ctx.args;
  const best = ctx.fresh('best');
  const k = ctx.fresh('k');
  const loop = `for (int ${k} = 1; ${k} < ${ctx.argDims[0]}; ${k}++)`;
  if (want === 'value') {
    const scan = `${loop} if (${a}[${k}] ${cmp} ${best}) ${best} = ${a}[${k}];`;
    return `{ ${ctx.T} ${best} = ${a}[0]; ${scan} ${ctx.out}[0] = ${best}; }`;
  }
  const idx = ctx.fresh('idx');
  return (
    `{ ${ctx.T} ${best} = ${a}[0]; int ${idx} = 0; ` +
    `${loop} if (${a}[${k}] ${cmp} ${best}) { ${best} = ${a}[${k}]; ${idx} = ${k}; } ` +
    `${ctx.out}[0] = (${ctx.T})${idx}; }`
  );
}

const greater = (x: number, best: number): boolean => x > best;
const less = (x: number, best: number): boolean => x < best;

function extremumOp(name: string, doc: string, cmp: '>' | '<', argName: string): OpDef {
  const better = cmp === '>' ? greater : less;
  return {
    name,
    doc,
    arity: 1,
    params: [],
    dim: () => 1,
    evaluate: ([a]) => Float64Array.of(a[firstExtremum(a, better)]),
    // The gradient flows to the first extremal component: OneHot(ArgMax(f), d(f)) * G.
    vjp: ({ children: [f], G, b }) => [b.mul(b.call('OneHot', [b.call(argName, [f])], [f.dim]), G)],
    emit: (ctx) => emitExtremum(ctx, cmp, 'value'),
  };
}

function argExtremumOp(name: string, doc: string, cmp: '>' | '<'): OpDef {
  const better = cmp === '>' ? greater : less;
  return {
    name,
    doc,
    arity: 1,
    params: [],
    dim: () => 1,
    evaluate: ([a]) => Float64Array.of(firstExtremum(a, better)),
    vjp: () => [], // piecewise constant: zero gradient
    emit: (ctx) => emitExtremum(ctx, cmp, 'index'),
  };
}

export const Max = extremumOp('Max', 'Max(f): largest component of f (dim 1)', '>', 'ArgMax');
export const Min = extremumOp('Min', 'Min(f): smallest component of f (dim 1)', '<', 'ArgMin');
export const ArgMax = argExtremumOp(
  'ArgMax',
  'ArgMax(f): index (as a number) of the first largest component of f (dim 1; zero gradient)',
  '>',
);
export const ArgMin = argExtremumOp(
  'ArgMin',
  'ArgMin(f): index (as a number) of the first smallest component of f (dim 1; zero gradient)',
  '<',
);

// ---------------------------------------------------------------------------------------------------------
// Indexing and padding: Elem / ElemT and Extract / ExtractT are adjoint pairs; Concat's adjoint is two
// Extracts.

function checkIndex(what: string, m: number, size: number): void {
  if (!(m >= 0 && m < size)) throw paramError(`${what}: index ${m} is out of range for dimension ${size}`);
}

function requireScalar(what: string, d: number): void {
  if (d !== 1) throw dimError(`${what}: the operand must be a scalar (dim 1), got dim ${d}`);
}

/** Zero-fills `out` (length `n`) as a C++ loop. */
function emitZeroFill(ctx: EmitContext, n: number): string {
  const k = ctx.fresh('k');
  return `for (int ${k} = 0; ${k} < ${n}; ${k}++) ${ctx.out}[${k}] = ${ctx.lit(0)};`;
}

/** Copies `count` values `src[srcOffset + k]` to `out[outOffset + k]` as a C++ loop. */
function emitCopy(
  ctx: EmitContext,
  src: string,
  srcOffset: number,
  outOffset: number,
  count: number,
): string {
  const k = ctx.fresh('k');
  const head = `for (int ${k} = 0; ${k} < ${count}; ${k}++)`;
  return `${head} ${ctx.out}[${outOffset} + ${k}] = ${src}[${srcOffset} + ${k}];`;
}

export const Elem: OpDef = {
  name: 'Elem',
  doc: 'Elem(f,m): component m of f (0-based, dim 1)',
  arity: 1,
  params: ['int'],
  linearity: 'all',
  dim: ([d], params) => {
    checkIndex('Elem', intParam(params, 0), d);
    return 1;
  },
  evaluate: ([a], params) => Float64Array.of(a[intParam(params, 0)]),
  vjp: ({ children: [f], params, G, b }) => [b.call('ElemT', [G], [f.dim, intParam(params, 0)])],
  emit: (ctx) => `${ctx.out}[0] = ${ctx.args[0]}[${intParam(ctx.params, 0)}];`,
};

export const ElemT: OpDef = {
  name: 'ElemT',
  doc: 'ElemT(f,n,m): the vector of dim n that is f at index m and 0 elsewhere (adjoint of Elem)',
  arity: 1,
  params: ['int', 'int'],
  linearity: 'all',
  dim: ([d], params) => {
    requireScalar('ElemT', d);
    const n = intParam(params, 0);
    checkDimParam('ElemT', n);
    checkIndex('ElemT', intParam(params, 1), n);
    return n;
  },
  evaluate: ([a], params) => {
    const out = new Float64Array(intParam(params, 0));
    out[intParam(params, 1)] = a[0];
    return out;
  },
  vjp: ({ params, G, b }) => [b.call('Elem', [G], [intParam(params, 1)])],
  emit: (ctx) =>
    `{ ${emitZeroFill(ctx, ctx.dim)} ${ctx.out}[${intParam(ctx.params, 1)}] = ${ctx.args[0]}[0]; }`,
};

export const Extract: OpDef = {
  name: 'Extract',
  doc: 'Extract(f,s,d): the d components f[s], ..., f[s+d-1]',
  arity: 1,
  params: ['int', 'int'],
  linearity: 'all',
  dim: ([df], params) => {
    const s = intParam(params, 0);
    const d = intParam(params, 1);
    checkDimParam('Extract', d);
    if (!(s >= 0 && s + d <= df)) {
      throw paramError(`Extract: the slice [${s}, ${s + d}) does not fit in an operand of dim ${df}`);
    }
    return d;
  },
  evaluate: ([a], params) => a.slice(intParam(params, 0), intParam(params, 0) + intParam(params, 1)),
  vjp: ({ children: [f], params, G, b }) => [b.call('ExtractT', [G], [intParam(params, 0), f.dim])],
  emit: (ctx) => emitCopy(ctx, ctx.args[0], intParam(ctx.params, 0), 0, ctx.dim),
};

export const ExtractT: OpDef = {
  name: 'ExtractT',
  doc: 'ExtractT(f,s,D): the vector of dim D that is f at [s, s+d(f)) and 0 elsewhere (adjoint of Extract)',
  arity: 1,
  params: ['int', 'int'],
  linearity: 'all',
  dim: ([df], params) => {
    const s = intParam(params, 0);
    const D = intParam(params, 1);
    checkDimParam('ExtractT', D);
    if (!(s >= 0 && s + df <= D)) {
      throw paramError(`ExtractT: an operand of dim ${df} placed at offset ${s} does not fit in dim ${D}`);
    }
    return D;
  },
  evaluate: ([a], params) => {
    const out = new Float64Array(intParam(params, 1));
    out.set(a, intParam(params, 0));
    return out;
  },
  vjp: ({ children: [f], params, G, b }) => [b.call('Extract', [G], [intParam(params, 0), f.dim])],
  emit: (ctx) => {
    const copy = emitCopy(ctx, ctx.args[0], 0, intParam(ctx.params, 0), ctx.argDims[0]);
    return `{ ${emitZeroFill(ctx, ctx.dim)} ${copy} }`;
  },
};

export const Concat: OpDef = {
  name: 'Concat',
  doc: 'Concat(f,g): the vector [f, g] of dim d(f)+d(g)',
  arity: 2,
  params: [],
  linearity: 'all',
  dim: ([df, dg]) => {
    if (df + dg > MAX_DIM) throw dimError(`Concat: dimension ${df}+${dg} exceeds the limit ${MAX_DIM}`);
    return df + dg;
  },
  evaluate: ([a, c]) => {
    const out = new Float64Array(a.length + c.length);
    out.set(a, 0);
    out.set(c, a.length);
    return out;
  },
  vjp: ({ children: [f, g], G, b, needs }) => [
    needs[0] ? b.call('Extract', [G], [0, f.dim]) : undefined,
    needs[1] ? b.call('Extract', [G], [f.dim, g.dim]) : undefined,
  ],
  emit: (ctx) => {
    const [df, dg] = ctx.argDims;
    return `{ ${emitCopy(ctx, ctx.args[0], 0, 0, df)} ${emitCopy(ctx, ctx.args[1], 0, df, dg)} }`;
  },
};

/**
 * The index OneHot selects: round half up, floor(f + 1/2). Unlike KeOps (no bounds check, memory corruption),
 * an index outside [0, D), and NaN, select nothing: the result is the zero vector.
 */
const oneHotIndex = (f: number): number => Math.floor(f + 0.5);

export const OneHot: OpDef = {
  name: 'OneHot',
  doc: 'OneHot(f,D): the unit vector e_round(f) of dim D (the zero vector when round(f) is not in [0, D))',
  arity: 1,
  params: ['int'],
  dim: ([d], params) => {
    requireScalar('OneHot', d);
    checkDimParam('OneHot', intParam(params, 0));
    return intParam(params, 0);
  },
  evaluate: ([a], params) => {
    const D = intParam(params, 0);
    const out = new Float64Array(D);
    const idx = oneHotIndex(a[0]);
    if (idx >= 0 && idx < D) out[idx] = 1;
    return out;
  },
  vjp: () => [], // piecewise constant: zero gradient
  emit: (ctx) => {
    // Compare in floating point (no cast to int), so out-of-range values and NaN give all zeros, with no UB.
    const idx = ctx.fresh('idx');
    const k = ctx.fresh('k');
    return (
      `{ ${ctx.T} ${idx} = keops_floor(${ctx.args[0]}[0] + ${ctx.lit(0.5)}); ` +
      `for (int ${k} = 0; ${k} < ${ctx.dim}; ${k}++) ` +
      `${ctx.out}[${k}] = ${idx} == (${ctx.T})${k} ? ${ctx.lit(1)} : ${ctx.lit(0)}; }`
    );
  },
};

export const VECTOR_OPS: readonly OpDef[] = [
  Sum,
  SumT,
  Max,
  Min,
  ArgMax,
  ArgMin,
  Elem,
  ElemT,
  Extract,
  ExtractT,
  Concat,
  OneHot,
];

/**
 * (e) Small linear algebra on flattened row-major tensors (docs/semantics.md 1.5 e): MatVecMult, VecMatMult,
 * TensorProd, TensorDot and Kron. All are bilinear, hence linear in one operand at a time ('one').
 */
import type { Node, ParamValue } from '../node';
import { dimError, type EmitContext, type OpDef, paramError, type VjpContext } from '../opdef';
import { listParam } from './helpers';
import { MAX_DIM } from './leaves';

/** Most axes a TensorDot / Kron operand may be reshaped into (keeps loops and generated code small). */
export const MAX_TENSOR_RANK = 16;

function checkNoOverflow(name: string, dim: number): number {
  if (dim > MAX_DIM) throw dimError(`${name}: the result dimension ${dim} exceeds the limit ${MAX_DIM}`);
  return dim;
}

// ---------------------------------------------------------------------------------------------------------
// Matrix-vector products and the tensor (outer) product.

export const MatVecMult: OpDef = {
  name: 'MatVecMult',
  doc: 'MatVecMult(A,b): the n×p row-major matrix A times the vector b (d(A) = n·d(b), dim n)',
  arity: 2,
  params: [],
  linearity: 'one',
  dim: ([dA, db]) => {
    if (dA % db !== 0) {
      throw dimError(`MatVecMult: d(A) = ${dA} must be a multiple of d(b) = ${db} (A is an n×d(b) matrix)`);
    }
    return dA / db;
  },
  evaluate: ([A, v]) => {
    const p = v.length;
    const out = new Float64Array(A.length / p);
    for (let i = 0; i < out.length; i++) {
      let s = 0;
      for (let k = 0; k < p; k++) s += A[i * p + k] * v[k];
      out[i] = s;
    }
    return out;
  },
  // d/dA = G ⊗ b (an n×p matrix); d/db = Gᵀ A.
  vjp: ({ children: [A, v], G, b, needs }) => [
    needs[0] ? b.call('TensorProd', [G, v]) : undefined,
    needs[1] ? b.call('VecMatMult', [G, A]) : undefined,
  ],
  emit: (ctx) => {
    const [A, v] = ctx.args;
    const p = ctx.argDims[1];
    const [i, k, s] = [ctx.fresh('i'), ctx.fresh('k'), ctx.fresh('s')];
    return (
      `for (int ${i} = 0; ${i} < ${ctx.dim}; ${i}++) { ${ctx.T} ${s} = ${ctx.lit(0)}; ` +
      `for (int ${k} = 0; ${k} < ${p}; ${k}++) ${s} += ${A}[${i} * ${p} + ${k}] * ${v}[${k}]; ` +
      `${ctx.out}[${i}] = ${s}; }`
    );
  },
};

export const VecMatMult: OpDef = {
  name: 'VecMatMult',
  doc: 'VecMatMult(b,A): the vector b times the d(b)×p row-major matrix A (d(A) = d(b)·p, dim p)',
  arity: 2,
  params: [],
  linearity: 'one',
  dim: ([db, dA]) => {
    if (dA % db !== 0) {
      throw dimError(`VecMatMult: d(A) = ${dA} must be a multiple of d(b) = ${db} (A is a d(b)×p matrix)`);
    }
    return dA / db;
  },
  evaluate: ([v, A]) => {
    const n = v.length;
    const p = A.length / n;
    const out = new Float64Array(p);
    for (let j = 0; j < p; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += v[k] * A[k * p + j];
      out[j] = s;
    }
    return out;
  },
  // d/db = A G; d/dA = b ⊗ G.
  vjp: ({ children: [v, A], G, b, needs }) => [
    needs[0] ? b.call('MatVecMult', [A, G]) : undefined,
    needs[1] ? b.call('TensorProd', [v, G]) : undefined,
  ],
  emit: (ctx) => {
    const [v, A] = ctx.args;
    const n = ctx.argDims[0];
    const p = ctx.dim;
    const [j, k, s] = [ctx.fresh('j'), ctx.fresh('k'), ctx.fresh('s')];
    return (
      `for (int ${j} = 0; ${j} < ${p}; ${j}++) { ${ctx.T} ${s} = ${ctx.lit(0)}; ` +
      `for (int ${k} = 0; ${k} < ${n}; ${k}++) ${s} += ${v}[${k}] * ${A}[${k} * ${p} + ${j}]; ` +
      `${ctx.out}[${j}] = ${s}; }`
    );
  },
};

export const TensorProd: OpDef = {
  name: 'TensorProd',
  doc: 'TensorProd(f,g): the outer product, out[k·d(g)+l] = f[k]·g[l] (dim d(f)·d(g))',
  arity: 2,
  params: [],
  linearity: 'one',
  dim: ([df, dg]) => checkNoOverflow('TensorProd', df * dg),
  evaluate: ([f, g]) => {
    const out = new Float64Array(f.length * g.length);
    for (let k = 0; k < f.length; k++) for (let l = 0; l < g.length; l++) out[k * g.length + l] = f[k] * g[l];
    return out;
  },
  // G is a d(f)×d(g) matrix: d/df = G g; d/dg = fᵀ G.
  vjp: ({ children: [f, g], G, b, needs }) => [
    needs[0] ? b.call('MatVecMult', [G, g]) : undefined,
    needs[1] ? b.call('VecMatMult', [f, G]) : undefined,
  ],
  emit: (ctx) => {
    const [f, g] = ctx.args;
    const [df, dg] = ctx.argDims;
    const [k, l] = [ctx.fresh('k'), ctx.fresh('l')];
    return (
      `for (int ${k} = 0; ${k} < ${df}; ${k}++) for (int ${l} = 0; ${l} < ${dg}; ${l}++) ` +
      `${ctx.out}[${k} * ${dg} + ${l}] = ${f}[${k}] * ${g}[${l}];`
    );
  },
};

// ---------------------------------------------------------------------------------------------------------
// TensorDot: numpy.tensordot of the reshaped operands, then an axis permutation (KeOps convention: kept
// axis j, counting the kept axes of f then those of g, becomes output axis permute[j]).

/** A validated TensorDot: shapes, contracted axis pairs, and where each kept axis goes. */
interface TensorDotSpec {
  readonly dimsA: readonly number[];
  readonly dimsB: readonly number[];
  readonly contA: readonly number[];
  readonly contB: readonly number[];
  /** Kept axes of A, then of B, ascending: the axes of numpy.tensordot's result. */
  readonly keptA: readonly number[];
  readonly keptB: readonly number[];
  /** Result axis j becomes output axis perm[j]. */
  readonly perm: readonly number[];
  /** Shape of the output tensor (after permutation), flattened row-major. */
  readonly outShape: readonly number[];
  readonly outDim: number;
}

const product = (xs: readonly number[]): number => xs.reduce((p, x) => p * x, 1);
const range = (n: number): number[] => Array.from({ length: n }, (_, k) => k);
const isIdentity = (perm: readonly number[]): boolean => perm.every((p, k) => p === k);
const showList = (xs: readonly number[]): string => `[${xs.join(',')}]`;

/** Row-major strides of a shape. */
function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    s[k] = acc;
    acc *= shape[k];
  }
  return s;
}

function checkShape(
  name: string,
  which: string,
  shape: readonly number[],
  dim: number,
  operand: string,
): void {
  if (shape.length > MAX_TENSOR_RANK) {
    throw paramError(`${name}: ${which} has ${shape.length} axes, more than the limit ${MAX_TENSOR_RANK}`);
  }
  let p = 1;
  for (const s of shape) {
    if (!(s >= 1)) throw paramError(`${name}: every size in ${which} ${showList(shape)} must be at least 1`);
    p *= s;
    if (p > dim) break; // avoids overflow; the mismatch is reported below
  }
  if (p !== dim) {
    const message = `${name}: ${which} ${showList(shape)} has product ${product(shape)}`;
    throw dimError(`${message}, but the ${operand} has dim ${dim}`);
  }
}

function checkAxes(name: string, which: string, axes: readonly number[], rank: number): void {
  const seen = new Set<number>();
  for (const a of axes) {
    if (!(a >= 0 && a < rank)) {
      throw paramError(`${name}: axis ${a} in ${which} ${showList(axes)} is out of range for ${rank} axes`);
    }
    if (seen.has(a)) throw paramError(`${name}: axis ${a} appears twice in ${which} ${showList(axes)}`);
    seen.add(a);
  }
}

function checkPermutation(name: string, perm: readonly number[], rank: number): void {
  const seen = new Set(perm);
  if (perm.length !== rank || seen.size !== rank || perm.some((p) => !(p >= 0 && p < rank))) {
    throw paramError(
      `${name}: permute ${showList(perm)} must be a permutation of 0..${rank - 1} (the ${rank} kept axes)`,
    );
  }
}

/** Validates TensorDot parameters against the operands' dims (throws KeOpsError) and returns the spec. */
function tensorDotSpec(
  name: string,
  dA: number,
  dB: number,
  dimsA: readonly number[],
  dimsB: readonly number[],
  contA: readonly number[],
  contB: readonly number[],
  permute: readonly number[] | undefined,
): TensorDotSpec {
  checkShape(name, 'dimsf', dimsA, dA, 'first operand');
  checkShape(name, 'dimsg', dimsB, dB, 'second operand');
  checkAxes(name, 'contf', contA, dimsA.length);
  checkAxes(name, 'contg', contB, dimsB.length);
  if (contA.length !== contB.length) {
    throw paramError(
      `${name}: contf ${showList(contA)} and contg ${showList(contB)} must have the same length`,
    );
  }
  contA.forEach((a, t) => {
    if (dimsA[a] !== dimsB[contB[t]]) {
      throw dimError(
        `${name}: contracted axes have different sizes: axis ${a} of f has size ${dimsA[a]}, ` +
          `axis ${contB[t]} of g has size ${dimsB[contB[t]]}`,
      );
    }
  });
  const keptA = range(dimsA.length).filter((a) => !contA.includes(a));
  const keptB = range(dimsB.length).filter((a) => !contB.includes(a));
  const resShape = [...keptA.map((a) => dimsA[a]), ...keptB.map((a) => dimsB[a])];
  const perm = permute ?? range(resShape.length);
  checkPermutation(name, perm, resShape.length);
  const outShape = new Array<number>(resShape.length);
  perm.forEach((p, j) => (outShape[p] = resShape[j]));
  const outDim = checkNoOverflow(name, product(resShape));
  return { dimsA, dimsB, contA, contB, keptA, keptB, perm, outShape, outDim };
}

/** One loop of the contraction: its extent and the flat-index strides it contributes to out, A and B. */
interface Loop {
  readonly size: number;
  readonly strideOut: number;
  readonly strideA: number;
  readonly strideB: number;
}

/** The loop nest computing out[...] += A[...]·B[...]: kept axes (outer), then contracted axes (inner). */
function loopsOf(s: TensorDotSpec): Loop[] {
  const stA = stridesOf(s.dimsA);
  const stB = stridesOf(s.dimsB);
  const stOut = stridesOf(s.outShape);
  const nA = s.keptA.length;
  const loops: Loop[] = [
    ...s.keptA.map((a, j) => ({
      size: s.dimsA[a],
      strideOut: stOut[s.perm[j]],
      strideA: stA[a],
      strideB: 0,
    })),
    ...s.keptB.map((a, t) => ({
      size: s.dimsB[a],
      strideOut: stOut[s.perm[nA + t]],
      strideA: 0,
      strideB: stB[a],
    })),
    ...s.contA.map((a, t) => ({ size: s.dimsA[a], strideOut: 0, strideA: stA[a], strideB: stB[s.contB[t]] })),
  ];
  return loops.filter((l) => l.size > 1); // size-1 axes index nothing
}

function evaluateTensorDot(s: TensorDotSpec, A: Float64Array, B: Float64Array): Float64Array {
  const out = new Float64Array(s.outDim);
  const loops = loopsOf(s);
  const counter = new Array<number>(loops.length).fill(0);
  let [io, ia, ib] = [0, 0, 0];
  for (;;) {
    out[io] += A[ia] * B[ib];
    // Odometer increment, innermost loop last.
    let ax = loops.length - 1;
    for (; ax >= 0; ax--) {
      const l = loops[ax];
      io += l.strideOut;
      ia += l.strideA;
      ib += l.strideB;
      if (++counter[ax] < l.size) break;
      io -= l.size * l.strideOut;
      ia -= l.size * l.strideA;
      ib -= l.size * l.strideB;
      counter[ax] = 0;
    }
    if (ax < 0) return out;
  }
}

function emitTensorDot(ctx: EmitContext, s: TensorDotSpec): string {
  const [A, B] = ctx.args;
  const loops = loopsOf(s);
  const vars = loops.map(() => ctx.fresh('t'));
  const index = (stride: (l: Loop) => number): string => {
    const terms = loops.flatMap((l, k) => (stride(l) === 0 ? [] : [`${vars[k]} * ${stride(l)}`]));
    return terms.length === 0 ? '0' : terms.join(' + ');
  };
  const k = ctx.fresh('k');
  const heads = loops
    .map((l, n) => `for (int ${vars[n]} = 0; ${vars[n]} < ${l.size}; ${vars[n]}++) `)
    .join('');
  const body =
    `${ctx.out}[${index((l) => l.strideOut)}] += ` +
    `${A}[${index((l) => l.strideA)}] * ${B}[${index((l) => l.strideB)}];`;
  const zero = `for (int ${k} = 0; ${k} < ${s.outDim}; ${k}++) ${ctx.out}[${k}] = ${ctx.lit(0)};`;
  return `{ ${zero} ${heads}${body} }`;
}

/** The inverse permutation: inv[perm[j]] = j. */
function inverse(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, j) => (inv[p] = j));
  return inv;
}

/**
 * The adjoint of TensorDot with respect to one operand X (the other being Y) is again a TensorDot, of the
 * cotangent G (shape outShape) with Y: contract G's axes that came from Y's kept axes with those axes of Y.
 * The result's axes are G's remaining axes (ascending), which came from X's kept axes, then Y's remaining
 * axes (ascending: Y's contracted axes), each paired with an X axis; the permutation puts each where its X
 * axis is. `first` says whether X is the first operand (A) of the spec.
 */
function adjointParams(s: TensorDotSpec, first: boolean): ParamValue[] {
  const inv = inverse(s.perm);
  const nA = s.keptA.length;
  const dimsY = first ? s.dimsB : s.dimsA;
  const [keptX, keptY] = first ? [s.keptA, s.keptB] : [s.keptB, s.keptA];
  const [contX, contY] = first ? [s.contA, s.contB] : [s.contB, s.contA];
  // Y's kept axis t was result axis nA + t (Y = B) or t (Y = A), then output axis perm[...] of G.
  const contG = keptY.map((_, t) => s.perm[first ? nA + t : t]);
  const keptG = range(s.outShape.length).filter((o) => !contG.includes(o));
  // G's output axis o was result axis inv[o], i.e. one of X's kept axes.
  const xAxisOfG = (o: number): number => keptX[first ? inv[o] : inv[o] - nA];
  // Y's axes left after contracting its kept ones are its contracted axes, each paired with one of X's.
  const remainingY = range(dimsY.length).filter((a) => !keptY.includes(a));
  const xAxisOfY = (a: number): number => contX[contY.indexOf(a)];
  const perm = [...keptG.map(xAxisOfG), ...remainingY.map(xAxisOfY)];
  const params: ParamValue[] = [s.outShape, dimsY, contG, keptY];
  if (!isIdentity(perm)) params.push(perm);
  return params;
}

function tensorDotVjp(s: TensorDotSpec, { children: [f, g], G, b, needs }: VjpContext): (Node | undefined)[] {
  return [
    needs[0] ? b.call('TensorDot', [G, g], adjointParams(s, true)) : undefined,
    needs[1] ? b.call('TensorDot', [G, f], adjointParams(s, false)) : undefined,
  ];
}

function specOfTensorDot(dims: readonly number[], params: readonly ParamValue[]): TensorDotSpec {
  const permute = params.length > 4 ? listParam(params, 4) : undefined;
  return tensorDotSpec(
    'TensorDot',
    dims[0],
    dims[1],
    listParam(params, 0),
    listParam(params, 1),
    listParam(params, 2),
    listParam(params, 3),
    permute,
  );
}

export const TensorDot: OpDef = {
  name: 'TensorDot',
  doc:
    'TensorDot(f,g,dimsf,dimsg,contf,contg[,permute]): numpy.tensordot(f.reshape(dimsf), g.reshape(dimsg), ' +
    '(contf,contg)), kept axis j moved to position permute[j], flattened row-major',
  arity: 2,
  params: ['intlist', 'intlist', 'intlist', 'intlist', 'intlist'],
  optionalParams: 1,
  linearity: 'one',
  dim: (dims, params) => specOfTensorDot(dims, params).outDim,
  evaluate: ([A, B], params) => evaluateTensorDot(specOfTensorDot([A.length, B.length], params), A, B),
  vjp: (ctx) => tensorDotVjp(specOfTensorDot([ctx.children[0].dim, ctx.children[1].dim], ctx.params), ctx),
  emit: (ctx) => emitTensorDot(ctx, specOfTensorDot(ctx.argDims, ctx.params)),
};

// ---------------------------------------------------------------------------------------------------------
// Kron: np.kron(f.reshape(dimsf), g.reshape(dimsg)).ravel(), i.e. an uncontracted TensorDot whose axes are
// interleaved (f0, g0, f1, g1, ...). As in numpy, the shorter shape is padded with leading 1s.

function specOfKron(dims: readonly number[], params: readonly ParamValue[]): TensorDotSpec {
  const dimsf = listParam(params, 0);
  const dimsg = listParam(params, 1);
  for (const [which, shape] of [
    ['dimsf', dimsf],
    ['dimsg', dimsg],
  ] as const) {
    if (shape.length === 0) throw paramError(`Kron: ${which} must list at least one size`);
  }
  const n = Math.max(dimsf.length, dimsg.length);
  const pad = (s: readonly number[]): number[] => [...new Array<number>(n - s.length).fill(1), ...s];
  const perm = [...range(n).map((t) => 2 * t), ...range(n).map((t) => 2 * t + 1)];
  return tensorDotSpec('Kron', dims[0], dims[1], pad(dimsf), pad(dimsg), [], [], perm);
}

export const Kron: OpDef = {
  name: 'Kron',
  doc: 'Kron(f,g,dimsf,dimsg): Kronecker product np.kron(f.reshape(dimsf), g.reshape(dimsg)), flattened',
  arity: 2,
  params: ['intlist', 'intlist'],
  linearity: 'one',
  dim: (dims, params) => specOfKron(dims, params).outDim,
  evaluate: ([A, B], params) => evaluateTensorDot(specOfKron([A.length, B.length], params), A, B),
  vjp: (ctx) => tensorDotVjp(specOfKron([ctx.children[0].dim, ctx.children[1].dim], ctx.params), ctx),
  emit: (ctx) => emitTensorDot(ctx, specOfKron(ctx.argDims, ctx.params)),
};

export const LINALG_OPS: readonly OpDef[] = [MatVecMult, VecMatMult, TensorProd, TensorDot, Kron];

/**
 * `kernelProduct`: KeOps 1.x's `kernel_product(params, x, y, *bs, mode=...)` on top of the kernel language.
 *
 *     const a = await kernelProduct(
 *       { kernel: 'gaussian(x,y) * linear(u,v)**2', gamma: [Float64Array.of(4), null] },
 *       [x, u], [y, v],                 // { data, shape: [rows, dim] } each, pairs in order of appearance
 *       b,                              // N × E
 *     );                                // a_i = Σ_j k(x_i,y_j; u_i,v_j) b_j, M × E
 *
 * The kernel is lowered to one formula (`kernelProductFormula`) and reduced by `NodeGenred`, so the result and
 * its gradients (`kernelProductGrad`) run on every backend. Inputs are ordered as in KeOps 1.x: the scales that
 * are not null, then the x's, the y's and the b's of the mode.
 */
import { KeOpsError } from '../errors';
import type { Backend, DtypeAcc, RunOptions, SumScheme } from '../backend/runner';
import type { GenredArg } from '../backend/plan';
import { builder as b } from '../formula/builder';
import type { FormulaVariable, VariableCategory } from '../formula/aliases';
import type { Node } from '../formula/node';
import { ratToNumber } from '../formula/rational';
import { MACROS } from '../formula/registry';
import { NodeGenred } from '../genred';
import { type KernelAlgebra, KernelExpression, parseKernel } from './language';

type FloatArray = Float32Array | Float64Array;

/** The formula-node representation of the kernel language (through the builder: simplified, interned). */
export const NODE_ALGEBRA: KernelAlgebra<Node> = {
  constant: (value) => (value.q === 1n ? b.int(ratToNumber(value)) : b.rat(value)),
  call: (name, args, params = []) => {
    const macro = MACROS.get(name);
    return macro !== undefined ? macro.expand(args, params, b) : b.call(name, args, params);
  },
};

/** Which side of the reduction a mode's extra input lives on: the reduced index, or the output index. */
type Side = 'reduced' | 'output';

interface ModeDef {
  readonly reduction: 'Sum' | 'LogSumExp';
  /** Whether the mode reads the kernel k or its log form c = log k. */
  readonly domain: 'sum' | 'log';
  /** Side of each of the mode's inputs b_0, b_1, ... */
  readonly inputs: readonly Side[];
  formula(kernel: Node, bs: readonly Node[]): Node;
}

const add = (...xs: Node[]): Node => xs.reduce((s, x) => b.add(s, x));
const exp = (x: Node): Node => b.call('Exp', [x]);

/** KeOps 1.x's modes (kernel_product/features_kernels.py), with axis 1: output per i, b_0 a j-variable. */
export const KERNEL_PRODUCT_MODES = {
  /** a_i = Σ_j k_ij b_j */
  sum: { reduction: 'Sum', domain: 'sum', inputs: ['reduced'], formula: (k, [b0]) => b.mul(k, b0) },
  /** a_i = log Σ_j exp(c_ij + b_j) */
  lse: { reduction: 'LogSumExp', domain: 'log', inputs: ['reduced'], formula: (c, [b0]) => add(c, b0) },
  /** a_i = Σ_j exp(c_ij + α_i + β_j) b_j, with (b, α, β) */
  log_scaled: {
    reduction: 'Sum',
    domain: 'log',
    inputs: ['reduced', 'output', 'reduced'],
    formula: (c, [b0, alpha, beta]) => b.mul(exp(add(c, alpha, beta)), b0),
  },
  /** a_i = log Σ_j exp(c_ij + α_i + β_j + b_j), with (b, α, β) */
  log_scaled_lse: {
    reduction: 'LogSumExp',
    domain: 'log',
    inputs: ['reduced', 'output', 'reduced'],
    formula: (c, [b0, alpha, beta]) => add(c, alpha, beta, b0),
  },
  /** a_i = Σ_j exp(c_ij + α_i + β_j) (b_j − b2_i), with (b, α, β, b2) */
  log_scaled_barycenter: {
    reduction: 'Sum',
    domain: 'log',
    inputs: ['reduced', 'output', 'reduced', 'output'],
    formula: (c, [b0, alpha, beta, b3]) => b.mul(exp(add(c, alpha, beta)), b.sub(b0, b3)),
  },
  /** a_i = log Σ_j exp(s_i c_ij + b_j), with (b, s) */
  lse_mult_i: {
    reduction: 'LogSumExp',
    domain: 'log',
    inputs: ['reduced', 'output'],
    formula: (c, [b0, s]) => add(b.mul(s, c), b0),
  },
  /** a_i = Σ_j (u_i + v_j − 1) exp(c_ij + α_i + β_j), with (α, β, u, v) */
  sinkhorn_primal: {
    reduction: 'Sum',
    domain: 'log',
    inputs: ['output', 'reduced', 'output', 'reduced'],
    formula: (c, [alpha, beta, u, v]) => b.mul(b.sub(add(u, v), b.int(1)), exp(add(c, alpha, beta))),
  },
  /** a_i = Σ_j −c_ij exp(c_ij + α_i + β_j), with (α, β) */
  sinkhorn_cost: {
    reduction: 'Sum',
    domain: 'log',
    inputs: ['output', 'reduced'],
    formula: (c, [alpha, beta]) => b.mul(b.neg(c), exp(add(c, alpha, beta))),
  },
} as const satisfies Record<string, ModeDef>;

export type KernelProductMode = keyof typeof KERNEL_PRODUCT_MODES;

/** A 2-d array: `rows × dim` values, row-major. */
export interface KernelArray {
  readonly data: FloatArray;
  readonly shape: readonly [number, number] | readonly number[];
}

/**
 * The scale γ of one atom: a number (scalar), a typed array of 1, D or D² values (scalar, diagonal or full
 * symmetric matrix: a parameter), or a `{ data, shape: [rows, 1|D|D²] }` array varying with j (`per: 'j'`,
 * the default, as KeOps 1.x read 2-d scales) or with i (`per: 'i'`). null for `linear`, which has none.
 */
export type KernelScale = number | FloatArray | (KernelArray & { readonly per?: 'i' | 'j' }) | null;

export interface KernelProductParams {
  /** The kernel text (or an already parsed one). */
  readonly kernel: string | KernelExpression;
  /** One scale per atom, in order of appearance (a JS array); a single scale when there is a single atom. */
  readonly gamma?: KernelScale | readonly KernelScale[];
  /** Default 'sum'. */
  readonly mode?: KernelProductMode;
}

export interface KernelProductOptions {
  /** 1 (default, as KeOps 1.x): one output row per i, summing over j. 0: one row per j, summing over i. */
  readonly axis?: 0 | 1;
  readonly backend?: Backend;
  readonly threads?: number;
  readonly dtypeAcc?: DtypeAcc;
  readonly sumScheme?: SumScheme;
}

export interface KernelProductGradOptions extends KernelProductOptions {
  /** The input to differentiate with respect to. */
  readonly wrt: 'x' | 'y' | 'gamma' | 'b';
  /** Which one of them (pair, atom or mode input number); default 0. */
  readonly index?: number;
  /** Cotangent of the result (its size). */
  readonly cotangent: FloatArray;
}

/** A formula for `kernelProduct`'s inputs, with its variables (positions, names) and reduction. */
export interface KernelProductFormula {
  readonly formula: Node;
  readonly reduction: 'Sum' | 'LogSumExp';
  /** 0 or 1, as Genred's axis. */
  readonly axis: 0 | 1;
  readonly variables: readonly FormulaVariable[];
  /** Position of each scale (undefined for null ones), x, y and b. */
  readonly positions: {
    readonly gamma: readonly (number | undefined)[];
    readonly x: readonly number[];
    readonly y: readonly number[];
    readonly b: readonly number[];
  };
}

/** The shape of one input of the formula: its dim and category. */
interface InputShape {
  readonly dim: number;
  readonly cat: VariableCategory;
}

const invalid = (message: string): KeOpsError => new KeOpsError('ERR_INVALID_ARGUMENT', message);

function modeOf(mode: unknown): (typeof KERNEL_PRODUCT_MODES)[KernelProductMode] {
  const m = mode ?? 'sum';
  if (typeof m !== 'string' || !Object.hasOwn(KERNEL_PRODUCT_MODES, m)) {
    throw invalid(
      `kernelProduct: unknown mode ${JSON.stringify(m)}; the modes are ${Object.keys(KERNEL_PRODUCT_MODES).join(', ')}`,
    );
  }
  return KERNEL_PRODUCT_MODES[m as KernelProductMode];
}

function axisOf(axis: unknown): 0 | 1 {
  const a = axis ?? 1;
  if (a !== 0 && a !== 1)
    throw new KeOpsError('ERR_REDUCTION', `kernelProduct: axis must be 0 or 1, got ${String(a)}`);
  return a;
}

export function kernelOf(kernel: unknown): KernelExpression {
  if (typeof kernel === 'string') return parseKernel(kernel);
  if (kernel instanceof KernelExpression) return kernel;
  throw invalid('kernelProduct: params.kernel must be a kernel string such as "gaussian(x,y)"');
}

/** The list of scales, one per atom. */
export function scaleList<S>(
  gamma: S | readonly S[] | undefined,
  kernel: KernelExpression,
): readonly (S | null)[] {
  const atoms = kernel.atoms.length;
  const list: readonly (S | null | undefined)[] = Array.isArray(gamma) ? gamma : [gamma as S | undefined];
  if (list.length !== atoms) {
    throw invalid(
      `the kernel ${kernel.text} has ${atoms} atom(s), so gamma needs ${atoms} scale(s) (null for linear), got ${list.length}`,
    );
  }
  return list.map((g) => (g === undefined ? null : g));
}

/**
 * The formula of a kernel product for inputs of the given dims and categories (no data needed): the kernel
 * (or its log form) combined with the mode's inputs, and the positions of every input.
 */
export function kernelProductFormula(
  kernelText: string | KernelExpression,
  shapes: {
    readonly gamma: readonly (InputShape | null)[];
    readonly x: readonly number[];
    readonly y: readonly number[];
    readonly b: readonly number[];
  },
  options: { readonly mode?: KernelProductMode; readonly axis?: 0 | 1 } = {},
): KernelProductFormula {
  const kernel = kernelOf(kernelText);
  const mode = modeOf(options.mode);
  const axis = axisOf(options.axis);
  const pairs = kernel.pairs.length;
  if (shapes.x.length !== pairs || shapes.y.length !== pairs) {
    throw invalid(
      `the kernel ${kernel.text} uses ${pairs} pair(s) of variables (${kernel.pairs.map((p) => `(${p.x},${p.y})`).join(', ')}), ` +
        `so x and y need ${pairs} array(s) each; got ${shapes.x.length} and ${shapes.y.length}`,
    );
  }
  if (shapes.gamma.length !== kernel.atoms.length) {
    throw invalid(
      `the kernel ${kernel.text} has ${kernel.atoms.length} atom(s), got ${shapes.gamma.length} scale(s)`,
    );
  }
  if (shapes.b.length !== mode.inputs.length) {
    throw invalid(
      `mode '${options.mode ?? 'sum'}' takes ${mode.inputs.length} array(s) b (${mode.inputs.length === 1 ? 'b' : 'a list'}), got ${shapes.b.length}`,
    );
  }
  shapes.x.forEach((dim, k) => {
    if (shapes.y[k] !== dim) {
      const { x, y } = kernel.pairs[k];
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `the pair (${x},${y}) needs points of one dimension: x[${k}] has dim ${dim}, y[${k}] dim ${shapes.y[k]}`,
      );
    }
  });
  const variables: FormulaVariable[] = [];
  const declare = (name: string, dim: number, cat: VariableCategory): number => {
    const pos = variables.length;
    variables.push({ name, pos, dim, cat });
    return pos;
  };
  const gamma = shapes.gamma.map((g, k) => (g === null ? undefined : declare(`gamma${k}`, g.dim, g.cat)));
  const x = shapes.x.map((dim, k) => declare(kernel.pairs[k].x, dim, 0));
  const y = shapes.y.map((dim, k) => declare(kernel.pairs[k].y, dim, 1));
  // Axis 1 reduces over j: the mode's 'reduced' inputs are j-variables; axis 0 swaps them.
  const catOf = (side: Side): VariableCategory => ((side === 'reduced') === (axis === 1) ? 1 : 0);
  const bPos = shapes.b.map((dim, k) => declare(`b${k}`, dim, catOf(mode.inputs[k])));
  const node = (pos: number): Node => b.variable(pos, variables[pos].dim, variables[pos].cat);
  const k = kernel.lower(
    NODE_ALGEBRA,
    {
      pair: (p) => ({ x: node(x[p]), y: node(y[p]) }),
      scale: (a) => (gamma[a] === undefined ? undefined : node(gamma[a] as number)),
    },
    mode.domain,
  );
  if (k.dim !== 1) throw new KeOpsError('ERR_INTERNAL', `the kernel ${kernel.text} has dim ${k.dim}`);
  const formula = mode.formula(k, bPos.map(node));
  if (mode.reduction === 'LogSumExp' && formula.dim !== 1) {
    throw new KeOpsError(
      'ERR_ARG_SHAPE',
      `mode '${options.mode}' reduces in the log domain: its arrays b must have one column, got widths ${shapes.b.join(', ')}`,
    );
  }
  return {
    formula,
    reduction: mode.reduction,
    axis,
    variables,
    positions: { gamma, x, y, b: bPos },
  };
}

// ---- the data front end ----------------------------------------------------------------------------------

function isFloatArray(a: unknown): a is FloatArray {
  return a instanceof Float32Array || a instanceof Float64Array;
}

function checkArray(a: unknown, what: string): KernelArray {
  const shaped = a as KernelArray;
  if (typeof a !== 'object' || a === null || !isFloatArray(shaped.data) || !Array.isArray(shaped.shape)) {
    throw new KeOpsError(
      'ERR_ARG_TYPE',
      `${what}: expected { data: Float32Array | Float64Array, shape: [rows, dim] }`,
    );
  }
  const [rows, dim] = shaped.shape;
  if (
    shaped.shape.length !== 2 ||
    !Number.isSafeInteger(rows) ||
    !Number.isSafeInteger(dim) ||
    rows < 0 ||
    dim < 1 ||
    rows * dim !== shaped.data.length
  ) {
    throw new KeOpsError(
      'ERR_ARG_SHAPE',
      `${what}: shape must be [rows, dim] with rows·dim = ${shaped.data.length} values, got ${JSON.stringify(shaped.shape)}`,
    );
  }
  return shaped;
}

const listOf = <T>(a: T | readonly T[]): readonly T[] => (Array.isArray(a) ? a : [a as T]);

/** What `kernelProduct` runs: the formula for the data's shapes, and the arguments by position. */
export interface KernelProductPlan {
  readonly spec: KernelProductFormula;
  readonly args: GenredArg[];
}

/** Validates the data, builds the formula for its shapes and orders the arguments (see KernelProductPlan). */
export function kernelProductPlan(
  params: KernelProductParams,
  x: unknown,
  y: unknown,
  bs: unknown,
  options: KernelProductOptions = {},
): KernelProductPlan {
  if (typeof params !== 'object' || params === null)
    throw invalid('kernelProduct: params must be { kernel, gamma, mode }');
  if (typeof options !== 'object' || options === null)
    throw invalid('kernelProduct: options must be an object');
  const kernel = kernelOf(params.kernel);
  const axis = axisOf(options.axis);
  const xs = listOf(x as KernelArray).map((a, k) => checkArray(a, `x[${k}]`));
  const ys = listOf(y as KernelArray).map((a, k) => checkArray(a, `y[${k}]`));
  const dtype = xs[0]?.data instanceof Float32Array ? 'float32' : 'float64';
  const typed = (values: readonly number[]): FloatArray =>
    dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values);
  const scales = scaleList(params.gamma as KernelScale | readonly KernelScale[] | undefined, kernel).map(
    (g, k) => {
      const what = `gamma[${k}]`;
      if (g === null) return null;
      if (typeof g === 'number') {
        if (!Number.isFinite(g)) throw invalid(`${what}: a scale must be finite, got ${g}`);
        return { arg: typed([g]) as GenredArg, shape: { dim: 1, cat: 2 as VariableCategory } };
      }
      if (isFloatArray(g)) {
        if (g.length === 0) throw new KeOpsError('ERR_ARG_SHAPE', `${what}: a scale needs 1, D or D² values`);
        return { arg: g as GenredArg, shape: { dim: g.length, cat: 2 as VariableCategory } };
      }
      const a = checkArray(g, what);
      const per = (g as { per?: unknown }).per ?? 'j';
      if (per !== 'i' && per !== 'j') throw invalid(`${what}: per must be 'i' or 'j', got ${String(per)}`);
      return {
        arg: a.data as GenredArg,
        shape: { dim: a.shape[1], cat: (per === 'i' ? 0 : 1) as VariableCategory },
      };
    },
  );
  // The mode's inputs: plain typed arrays take their width from the row count of their side.
  const mode = modeOf(params.mode);
  const rowsOf = (cat: 0 | 1): number | undefined => (cat === 0 ? xs[0] : ys[0])?.shape[0];
  const bList = listOf(bs as KernelArray);
  if (bList.length !== mode.inputs.length) {
    throw invalid(
      `mode '${params.mode ?? 'sum'}' takes ${mode.inputs.length} array(s) b, got ${bList.length}` +
        (mode.inputs.length > 1 ? ' (give them as a list)' : ''),
    );
  }
  const bArrays = bList.map((a, k) => {
    if (!isFloatArray(a)) return checkArray(a, `b[${k}]`);
    const side = mode.inputs[k];
    const rows = rowsOf((side === 'reduced') === (axis === 1) ? 1 : 0);
    if (rows === undefined || rows === 0 || a.length % rows !== 0 || a.length === 0) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `b[${k}]: ${a.length} values are not a whole number of rows of ${rows ?? '?'}; give { data, shape }`,
      );
    }
    return { data: a, shape: [rows, a.length / rows] } as KernelArray;
  });
  const spec = kernelProductFormula(
    kernel,
    {
      gamma: scales.map((s) => (s === null ? null : s.shape)),
      x: xs.map((a) => a.shape[1]),
      y: ys.map((a) => a.shape[1]),
      b: bArrays.map((a) => a.shape[1]),
    },
    { mode: params.mode, axis },
  );
  const args: GenredArg[] = [
    ...scales.filter((s) => s !== null).map((s) => s.arg),
    ...xs.map((a) => a.data),
    ...ys.map((a) => a.data),
    ...bArrays.map((a) => a.data),
  ];
  return { spec, args };
}

function engineOf(spec: KernelProductFormula, options: KernelProductOptions): NodeGenred {
  return new NodeGenred(spec.formula, {
    reduction: spec.reduction,
    axis: spec.axis,
    variables: spec.variables,
    backend: options.backend,
    threads: options.threads,
    dtypeAcc: options.dtypeAcc,
    sumScheme: options.sumScheme,
  });
}

function runOptions(options: KernelProductOptions): RunOptions {
  return { backend: options.backend, threads: options.threads };
}

/**
 * The kernel product of KeOps 1.x (module comment): x and y are a `{ data, shape }` array or a list of them
 * (one per pair), `b` the mode's input (a list for modes with several). Resolves to rows × E values.
 */
export async function kernelProduct(
  params: KernelProductParams,
  x: KernelArray | readonly KernelArray[],
  y: KernelArray | readonly KernelArray[],
  b: KernelArray | FloatArray | readonly (KernelArray | FloatArray)[],
  options: KernelProductOptions = {},
): Promise<FloatArray> {
  const { spec, args } = kernelProductPlan(params, x, y, b, options);
  return (await engineOf(spec, options).call(args, runOptions(options))) as FloatArray;
}

/** Like `kernelProduct`, but blocks the thread (compilation included). */
export function kernelProductSync(
  params: KernelProductParams,
  x: KernelArray | readonly KernelArray[],
  y: KernelArray | readonly KernelArray[],
  b: KernelArray | FloatArray | readonly (KernelArray | FloatArray)[],
  options: KernelProductOptions = {},
): FloatArray {
  const { spec, args } = kernelProductPlan(params, x, y, b, options);
  return engineOf(spec, options).callSync(args, runOptions(options)) as FloatArray;
}

function gradPosition(spec: KernelProductFormula, options: KernelProductGradOptions): number {
  const index = options.index ?? 0;
  const list =
    options.wrt === 'x' || options.wrt === 'y' || options.wrt === 'gamma' || options.wrt === 'b'
      ? spec.positions[options.wrt]
      : undefined;
  if (list === undefined)
    throw invalid(`kernelProductGrad: wrt must be 'x', 'y', 'gamma' or 'b', got ${String(options.wrt)}`);
  const pos = Number.isSafeInteger(index) ? list[index] : undefined;
  if (pos === undefined) {
    throw invalid(
      `kernelProductGrad: ${options.wrt}[${String(index)}] is not an input (there are ${list.length}; null scales have no gradient)`,
    );
  }
  return pos;
}

/** What both gradient entry points run: the engine, its arguments and the grad options. */
function gradRequest(
  params: KernelProductParams,
  x: KernelArray | readonly KernelArray[],
  y: KernelArray | readonly KernelArray[],
  b: KernelArray | FloatArray | readonly (KernelArray | FloatArray)[],
  options: KernelProductGradOptions,
) {
  if (typeof options !== 'object' || options === null) {
    throw invalid('kernelProductGrad: options need { wrt, cotangent }');
  }
  const { spec, args } = kernelProductPlan(params, x, y, b, options);
  const gradOptions = {
    ...runOptions(options),
    wrt: gradPosition(spec, options),
    cotangent: options.cotangent,
  };
  return { engine: engineOf(spec, options), args, gradOptions };
}

/**
 * The gradient of ⟨cotangent, kernelProduct(...)⟩ with respect to one input (`wrt`, `index`), in that input's
 * size (a scale given as a number gets a 1-value array).
 */
export function kernelProductGrad(
  params: KernelProductParams,
  x: KernelArray | readonly KernelArray[],
  y: KernelArray | readonly KernelArray[],
  b: KernelArray | FloatArray | readonly (KernelArray | FloatArray)[],
  options: KernelProductGradOptions,
): Promise<FloatArray> {
  try {
    const { engine, args, gradOptions } = gradRequest(params, x, y, b, options);
    return engine.grad(args, gradOptions);
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Like `kernelProductGrad`, but blocks the thread. */
export function kernelProductGradSync(
  params: KernelProductParams,
  x: KernelArray | readonly KernelArray[],
  y: KernelArray | readonly KernelArray[],
  b: KernelArray | FloatArray | readonly (KernelArray | FloatArray)[],
  options: KernelProductGradOptions,
): FloatArray {
  const { engine, args, gradOptions } = gradRequest(params, x, y, b, options);
  return engine.gradSync(args, gradOptions);
}

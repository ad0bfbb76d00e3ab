/**
 * `LazyTensor`: pykeops' symbolic M×N tensors (docs/semantics.md 4.2), built directly as typed formula trees.
 *
 *     const x_i = Vi(x, 3);            // x: Float64Array of M×3 values
 *     const y_j = Vj(y, 3);
 *     const K_ij = x_i.sqdist(y_j).neg().exp();
 *     const a_i = await K_ij.matvec(b);            // Σ_j K_ij b_j, computed without storing K
 *     const m_i = K_ij.sumSync(1);                 // blocking variant
 *     const c = await K_ij.solve(Vj(b, 1), { alpha: 0.1 }); // (αI + K) c = b, by KernelSolve
 *
 * A LazyTensor is an immutable formula node plus the data bound to each of its variables: variable position
 * k of the node reads `variables[k]`. Combining LazyTensors merges their variable lists in the order they
 * were combined (receiver first, then the arguments; the same array with the same category and dim is one
 * variable) and renumbers the positions of the other operands' nodes accordingly, so that a LazyTensor built
 * from `Vi(x,3)`, `Vj(y,3)` has exactly the node `parseFormula('...', ['x = Vi(3)', 'y = Vj(3)'])` has.
 * Nothing is computed until a reduction runs; reductions go through the same engine (`ReductionRunner`)
 * and kernel cache as Genred.
 *
 * Plain numbers are accepted wherever a LazyTensor is: integers become `IntCst`, other numbers the exact
 * decimal constant of their shortest round-trip spelling (0.1 → 1/10), exactly as in a formula string. Each
 * distinct constant is a distinct kernel: use `Pm(value)` for a value that changes from call to call.
 */
import { KeOpsError } from './errors';
import type { Backend, DtypeAcc, RunOptions, SumScheme } from './backend/runner';
import type { Dtype, GenredArg, GenredRanges } from './backend/plan';
import { swapAxes } from './cluster';
import { builder as b, checkParams } from './formula/builder';
import { varsOf } from './formula/diff';
import { formulaToDot } from './formula/dot';
import type { GenredResult, GenredValues } from './formula/genred-reductions';
import { type GenredGradOptions, NodeGenred } from './genred';
import { type KernelSolveCallOptions, type KernelSolveGradOptions, NodeKernelSolve } from './kernel-solve';
import type { Node, ParamValue } from './formula/node';
import { Node as NodeClass } from './formula/node';
import { LAZY_REDUCTION_OPTION_KEYS, readOptions } from './validate';
import type { MacroDef, OpDef } from './formula/opdef';
import { substitute } from './formula/parser';
import { parseDecimal, ratNeg } from './formula/rational';
import { closestName } from './formula/reductions';
import { knownFunctionNames, MACROS, OPS } from './formula/registry';
import { broadcastBatchShape } from './reference';

export type { GenredRanges } from './backend/plan';
export type { Backend, DtypeAcc, SumScheme } from './backend/runner';

/** Data of one variable: a typed array, or numbers materialised in the common dtype when a reduction runs. */
export type LazyData = Float32Array | Float64Array | readonly number[];
/** Data with its full shape: [...batch, rows, dim] for Vi/Vj, [...batch, dim] for Pm. */
export interface ShapedLazyData {
  readonly data: LazyData;
  readonly shape: readonly number[];
}
/** What the operations accept: a LazyTensor or a plain number (a compile-time constant). */
export type Operand = LazyTensor | number;
export type VariableCategory = 0 | 1 | 2;

export interface VariableOptions {
  /**
   * The data holds complex numbers, interleaved [re0, im0, re1, im1, ...]: `dim` then counts complex
   * numbers (and a shape's last entry the real width 2·dim). The result is a complex LazyTensor.
   */
  readonly complex?: boolean;
}

/** One variable of a LazyTensor: its data, category (0: i, 1: j, 2: parameter), real width and sizes. */
export interface LazyVariable {
  readonly data: LazyData;
  readonly cat: VariableCategory;
  /** Real width of one row (2n for n complex numbers). */
  readonly dim: number;
  /** Rows (ni or nj); 1 for parameters. */
  readonly rows: number;
  readonly batch: readonly number[];
  /** The shape given by the caller, when batch dims were declared ({ data, shape }). */
  readonly shape?: readonly number[];
}

/**
 * Reduction axis, as in pykeops without batch dims: 0 (or -3) reduces over i and returns one row per j;
 * 1 (or -2) reduces over j and returns one row per i. Batch dims do not shift it (unlike pykeops).
 */
export type ReductionAxis = 0 | 1 | -3 | -2;

/** Options of a reduction call, forwarded to the engine (as Genred's). */
export interface LazyReductionOptions {
  /** Block-sparse ranges for this call; default: the LazyTensor's `ranges`. */
  readonly ranges?: GenredRanges;
  readonly backend?: Backend;
  /** CPU worker threads (default: one per core). */
  readonly threads?: number;
  /** Aborts the call (ERR_ABORTED); a running CPU kernel stops within a tile of work. */
  readonly signal?: AbortSignal;
  /** Accumulator type; 'auto' = the data dtype; 'float64' for float32 data is for sum-type reductions. */
  readonly dtypeAcc?: DtypeAcc;
  /** 'auto': block_sum for sum-type reductions, direct_sum otherwise. */
  readonly sumScheme?: SumScheme;
}

export type FloatResult = Float32Array | Float64Array;
export interface ValuesAndIndices {
  readonly values: FloatResult;
  readonly indices: Int32Array;
}

const invalid = (message: string): KeOpsError => new KeOpsError('ERR_INVALID_ARGUMENT', message);

const CATEGORY_NAMES = ['Vi', 'Vj', 'Pm'] as const;

// ---- complex numbers: which operations produce, consume or keep the interleaved complex layout ------------

/** Operations whose result is complex. */
const COMPLEX_RESULT = new Set([
  'Real2Complex',
  'Imag2Complex',
  'ComplexExp1j',
  'ComplexAdd',
  'ComplexSubtract',
  'ComplexMult',
  'ComplexRealScal',
  'ComplexDivide',
  'Conj',
  'ComplexExp',
  'ComplexSum',
  'ComplexSumT',
]);
/** Operations from complex to real. */
const COMPLEX_TO_REAL = new Set([
  'ComplexReal',
  'ComplexImag',
  'ComplexSquareAbs',
  'ComplexAbs',
  'ComplexAngle',
]);
/** Real operations that keep the meaning of an interleaved complex operand (the result stays complex). */
const LAYOUT_PRESERVING = new Set(['Minus', 'Concat', 'Factorize', 'AutoFactorize']);
/** Operations that read their operands as real numbers only. */
const REAL_INPUT = new Set(['Real2Complex', 'Imag2Complex', 'ComplexExp1j']);

// ---- numbers -----------------------------------------------------------------------------------------------

/** The node of a plain number: IntCst for safe integers, else the exact decimal of its shortest spelling. */
function constantNode(x: number): Node {
  if (typeof x !== 'number' || !Number.isFinite(x)) {
    throw invalid(`a constant must be a finite number, got ${String(x)}`);
  }
  if (Number.isSafeInteger(x)) return b.int(x === 0 ? 0 : x);
  const magnitude = parseDecimal(String(Math.abs(x)));
  if (magnitude === undefined) throw new KeOpsError('ERR_INTERNAL', `cannot read ${x} as a decimal`);
  return b.rat(x < 0 ? ratNeg(magnitude) : magnitude);
}

// ---- variables -----------------------------------------------------------------------------------------------

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

function dtypeOfData(data: LazyData): Dtype | undefined {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  return undefined;
}

function checkData(data: unknown, what: string): LazyData {
  if (data instanceof Float32Array || data instanceof Float64Array) return data;
  if (ArrayBuffer.isView(data)) {
    throw new KeOpsError(
      'ERR_ARG_DTYPE',
      `${what}: a ${data.constructor.name} is not supported; use a Float32Array or a Float64Array`,
    );
  }
  if (Array.isArray(data) && data.every((v) => typeof v === 'number')) return data as readonly number[];
  throw new KeOpsError(
    'ERR_ARG_TYPE',
    `${what}: expected a Float32Array, a Float64Array, an array of numbers or { data, shape }`,
  );
}

function makeVariable(
  cat: VariableCategory,
  input: unknown,
  dimArg: number | undefined,
  options: VariableOptions,
): { variable: LazyVariable; complex: boolean } {
  const kind = CATEGORY_NAMES[cat];
  if (typeof options !== 'object' || options === null) throw invalid(`${kind}: options must be an object`);
  const complex = options.complex === true;
  const factor = complex ? 2 : 1;
  if (dimArg !== undefined && (!isCount(dimArg) || dimArg < 1)) {
    throw invalid(`${kind}: dim must be an integer >= 1, got ${String(dimArg)}`);
  }
  const shaped =
    typeof input === 'object' && input !== null && !ArrayBuffer.isView(input) && !Array.isArray(input);
  if (shaped) {
    const { data: rawData, shape } = input as { data?: unknown; shape?: unknown };
    const data = checkData(rawData, kind);
    const minRank = cat === 2 ? 1 : 2;
    if (!Array.isArray(shape) || shape.length < minRank || !shape.every(isCount)) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${kind}: shape must be [...batch, ${cat === 2 ? '' : 'rows, '}dim] of integers >= 0, got ${JSON.stringify(shape)}`,
      );
    }
    const size = shape.reduce((p: number, s: number) => p * s, 1);
    if (size !== data.length) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${kind}: shape [${shape}] needs ${size} values, got ${data.length}`,
      );
    }
    const dim = shape[shape.length - 1] as number;
    if (dim < 1 || dim % factor !== 0) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${kind}: the last entry of shape [${shape}] must be a positive ${complex ? 'even ' : ''}dim`,
      );
    }
    if (dimArg !== undefined && dimArg * factor !== dim) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${kind}: dim ${dimArg}${complex ? ' (complex)' : ''} does not match the last entry of shape [${shape}]`,
      );
    }
    const rows = cat === 2 ? 1 : (shape[shape.length - 2] as number);
    const batch = (shape as number[]).slice(0, shape.length - minRank);
    return {
      variable: Object.freeze({
        data,
        cat,
        dim,
        rows,
        batch: Object.freeze(batch),
        shape: Object.freeze([...shape]),
      }),
      complex,
    };
  }
  const data = checkData(typeof input === 'number' ? [input] : input, kind);
  let dim: number;
  if (cat === 2) {
    dim = data.length;
    if (dim === 0) throw new KeOpsError('ERR_ARG_SHAPE', 'Pm: a parameter needs at least one value');
    if (dimArg !== undefined && dimArg * factor !== dim) {
      throw new KeOpsError('ERR_ARG_SHAPE', `Pm: dim ${dimArg} does not match the ${dim} values given`);
    }
    if (dim % factor !== 0)
      throw new KeOpsError('ERR_ARG_SHAPE', `Pm: a complex parameter needs an even number of values`);
  } else {
    if (dimArg === undefined) {
      throw invalid(`${kind}: give the dim of a row, as in ${kind}(x, 3), or { data, shape }`);
    }
    dim = dimArg * factor;
    if (data.length % dim !== 0) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${kind}: ${data.length} values is not a multiple of the dim ${dimArg}${complex ? ' complex numbers' : ''}`,
      );
    }
  }
  const rows = cat === 2 ? 1 : data.length / dim;
  return { variable: Object.freeze({ data, cat, dim, rows, batch: Object.freeze([]) }), complex };
}

const sameVariable = (u: LazyVariable, v: LazyVariable): boolean =>
  u.data === v.data && u.cat === v.cat && u.dim === v.dim;

function describeVariable(v: LazyVariable): string {
  const size = v.cat === 2 ? `${v.dim}` : `${v.rows} rows × ${v.dim}`;
  return `${CATEGORY_NAMES[v.cat]}(${size})`;
}

/** Checks that variables can be used together: one dtype, one ni, one nj, broadcastable batch dims. */
function checkCompatible(variables: readonly LazyVariable[], what: string): void {
  let dtypeWitness: LazyVariable | undefined;
  const rowWitness: (LazyVariable | undefined)[] = [undefined, undefined];
  for (const v of variables) {
    const dtype = dtypeOfData(v.data);
    if (dtype !== undefined) {
      if (dtypeWitness !== undefined && dtypeOfData(dtypeWitness.data) !== dtype) {
        throw new KeOpsError(
          'ERR_ARG_DTYPE',
          `${what}: cannot mix float32 and float64 data (${describeVariable(dtypeWitness)} is ` +
            `${dtypeOfData(dtypeWitness.data)}, ${describeVariable(v)} is ${dtype})`,
        );
      }
      dtypeWitness = v;
    }
    if (v.cat === 2) continue;
    const seen = rowWitness[v.cat];
    if (seen !== undefined && seen.rows !== v.rows) {
      const n = v.cat === 0 ? 'ni' : 'nj';
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${what}: incompatible ${n}: ${describeVariable(seen)} has ${seen.rows} rows, ${describeVariable(v)} has ${v.rows}`,
      );
    }
    rowWitness[v.cat] = v;
  }
  try {
    broadcastBatchShape(variables.map((v) => v.batch));
  } catch (e) {
    throw new KeOpsError('ERR_ARG_SHAPE', `${what}: ${(e as Error).message}`);
  }
}

function rangesEqual(a: GenredRanges | undefined, c: GenredRanges | undefined): boolean {
  return a === c || (a !== undefined && c !== undefined && a.every((r, k) => r === c[k]));
}

function checkRangesValue(ranges: unknown): GenredRanges | undefined {
  if (ranges === undefined || ranges === null) return undefined;
  if (!Array.isArray(ranges) || ranges.length !== 6) {
    throw new KeOpsError(
      'ERR_RANGES',
      'ranges must be the 6-tuple [ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i]',
    );
  }
  return Object.freeze([...ranges]) as unknown as GenredRanges;
}

interface Combined {
  readonly nodes: Node[];
  readonly variables: readonly LazyVariable[];
  readonly ranges?: GenredRanges;
}

/**
 * Puts LazyTensors on one variable list: the first keeps its positions, the variables of the others are
 * appended in order unless already present (same data, category and dim), and their nodes renumbered.
 */
function combine(operands: readonly LazyTensor[], what: string): Combined {
  const variables: LazyVariable[] = [];
  const nodes: Node[] = [];
  let ranges: GenredRanges | undefined;
  for (const operand of operands) {
    const renumbered = new Map<Node, Node>();
    operand.variables.forEach((v, pos) => {
      let at = variables.findIndex((w) => sameVariable(v, w));
      if (at < 0) {
        at = variables.length;
        variables.push(v);
      }
      if (at !== pos) renumbered.set(b.variable(pos, v.dim, v.cat), b.variable(at, v.dim, v.cat));
    });
    const used = varsOf(operand.node);
    for (const from of [...renumbered.keys()]) if (!used.has(from)) renumbered.delete(from);
    // One simultaneous substitution, so that swapped positions cannot collide.
    nodes.push(renumbered.size === 0 ? operand.node : substitute(operand.node, renumbered));
    if (operand.ranges !== undefined) {
      if (ranges !== undefined && !rangesEqual(ranges, operand.ranges)) {
        throw new KeOpsError('ERR_RANGES', `${what}: the operands carry different ranges`);
      }
      ranges = operand.ranges;
    }
  }
  checkCompatible(variables, what);
  return { nodes, variables, ranges };
}

// ---- the class -----------------------------------------------------------------------------------------------

/** How `LazyTensor.op` finds an operation or parse-time function of the registry. */
type Callable =
  { readonly macro: false; readonly def: OpDef } | { readonly macro: true; readonly def: MacroDef };

function lookupCallable(name: string): Callable {
  const macro = MACROS.get(name);
  if (macro !== undefined) return { macro: true, def: macro };
  const op = OPS.get(name);
  if (op !== undefined && op.name !== 'Var') return { macro: false, def: op };
  throw new KeOpsError(
    'ERR_FORMULA_NAME',
    `unknown operation '${name}'; did you mean '${closestName(name, knownFunctionNames())}'?`,
  );
}

function toLazy(x: Operand, what: string): LazyTensor {
  if (x instanceof LazyTensor) return x;
  if (typeof x === 'number') return LazyTensor.constant(x);
  throw invalid(`${what}: expected a LazyTensor or a number, got ${x === null ? 'null' : typeof x}`);
}

/** Reductions that also exist over the inner dim (axis -1: a LazyTensor, not a reduction). */
const INNER_TOO = new Set(['Sum', 'Min', 'Max', 'ArgMin', 'ArgMax']);

function normalizeAxis(axis: unknown, what: string): 0 | 1 {
  if (axis === 0 || axis === -3) return 0;
  if (axis === 1 || axis === -2) return 1;
  const inner = INNER_TOO.has(what) ? '; -1 (the inner dim) is not a reduction' : '';
  throw new KeOpsError(
    'ERR_REDUCTION',
    `${what}: axis must be 0 (or -3) to reduce over i, or 1 (or -2) to reduce over j${inner}; got ${String(axis)}`,
  );
}

/** Runs `f`, turning a synchronous throw into a rejection: async methods never throw. */
function promised<T>(f: () => Promise<T>): Promise<T> {
  try {
    return f();
  } catch (e) {
    return Promise.reject(e);
  }
}

export class LazyTensor {
  /** The formula; variable position k reads `variables[k]`. */
  readonly node: Node;
  readonly variables: readonly LazyVariable[];
  /** The formula computes interleaved complex numbers ([re, im] pairs). */
  readonly isComplex: boolean;
  private rangesValue: GenredRanges | undefined;

  private constructor(
    node: Node,
    variables: readonly LazyVariable[],
    isComplex: boolean,
    ranges?: GenredRanges,
  ) {
    if (!(node instanceof NodeClass) || !Array.isArray(variables)) {
      throw invalid('LazyTensor has no public constructor: use Vi, Vj, Pm or LazyTensor.variable / constant');
    }
    if (isComplex && node.dim % 2 !== 0) {
      throw new KeOpsError('ERR_INTERNAL', `a complex LazyTensor has the odd real dim ${node.dim}`);
    }
    this.node = node;
    this.variables = Object.freeze([...variables]);
    this.isComplex = isComplex;
    this.rangesValue = ranges;
  }

  // ---- construction ----------------------------------------------------------------------------------------

  /** A variable of category `cat` (0: Vi, 1: Vj, 2: Pm) bound to `data`. */
  static variable(
    cat: VariableCategory,
    data: LazyData | ShapedLazyData | number,
    dim?: number,
    options: VariableOptions = {},
  ): LazyTensor {
    if (cat !== 0 && cat !== 1 && cat !== 2)
      throw invalid(`the category must be 0, 1 or 2, got ${String(cat)}`);
    const { variable, complex } = makeVariable(cat, data, dim, options);
    return new LazyTensor(b.variable(0, variable.dim, cat), [variable], complex);
  }

  /** A compile-time constant (see the module comment). */
  static constant(x: number): LazyTensor {
    return new LazyTensor(constantNode(x), [], false);
  }

  /** Concat of several LazyTensors along the inner dim (pykeops' `LazyTensor.concatenate`). */
  static concatenate(parts: readonly Operand[]): LazyTensor {
    if (!Array.isArray(parts) || parts.length === 0) throw invalid('concatenate: expects a non-empty array');
    const [first, ...rest] = parts.map((p) => toLazy(p, 'concatenate'));
    return rest.reduce((acc, p) => acc.concat(p), first);
  }

  // ---- attributes ------------------------------------------------------------------------------------------

  /** Block-sparse ranges used by this LazyTensor's reductions (settable, as in pykeops). */
  get ranges(): GenredRanges | undefined {
    return this.rangesValue;
  }
  set ranges(value: GenredRanges | undefined) {
    this.rangesValue = checkRangesValue(value);
  }

  /** A copy with other ranges (undefined: none). */
  withRanges(ranges: GenredRanges | undefined): LazyTensor {
    return new LazyTensor(this.node, this.variables, this.isComplex, checkRangesValue(ranges));
  }

  /** Number of rows of the i-variables (1 when there are none). */
  get ni(): number {
    return this.variables.find((v) => v.cat === 0)?.rows ?? 1;
  }
  /** Number of rows of the j-variables (1 when there are none). */
  get nj(): number {
    return this.variables.find((v) => v.cat === 1)?.rows ?? 1;
  }
  /** Inner dim: the formula's dim, counted in complex numbers for a complex LazyTensor. */
  get ndim(): number {
    return this.isComplex ? this.node.dim / 2 : this.node.dim;
  }
  /** Broadcast batch dims of the variables ([] without). */
  get batchdims(): number[] {
    return broadcastBatchShape(this.variables.map((v) => v.batch));
  }
  /** [...batchdims, ni, nj, ndim] (pykeops drops a trailing 1; we do not). */
  get shape(): number[] {
    return [...this.batchdims, this.ni, this.nj, this.ndim];
  }
  /** The dtype of the typed data ('float64' when every variable holds plain numbers). */
  get dtype(): Dtype {
    for (const v of this.variables) {
      const d = dtypeOfData(v.data);
      if (d !== undefined) return d;
    }
    return 'float64';
  }
  /** Canonical formula text, with variables written `Var(pos,dim,cat)`. */
  toString(): string {
    return this.node.toString();
  }

  /** Graphviz DOT text of the formula; `names[k]` labels variable k (default: its category and position). */
  toDot(names: readonly string[] = []): string {
    return formulaToDot(this.node, dotNames(names));
  }

  // ---- the generic operation -------------------------------------------------------------------------------

  /**
   * Applies any operation or parse-time function of the registry (lib/formula/registry.ts) by name, with
   * this LazyTensor as first argument: `x.op('Atan2', [y])`, `x.op('Round', [], [2])`. The named methods
   * below are typed wrappers of it.
   */
  op(name: string, others: readonly Operand[] = [], params: readonly ParamValue[] = []): LazyTensor {
    if (typeof name !== 'string')
      throw invalid(`op: the operation name must be a string, got ${typeof name}`);
    if (!Array.isArray(others) || !Array.isArray(params)) {
      throw invalid(`op(${name}): the other operands and the parameters must be arrays`);
    }
    const callable = lookupCallable(name);
    const operands = [this, ...others.map((o) => toLazy(o, name))];
    return LazyTensor.apply(callable, name, operands, operands, params);
  }

  /**
   * Applies an operation whose children are `children` (in the operation's argument order) while the
   * variables are merged in the order of `operands` (receiver first): both lists hold the same LazyTensors.
   */
  private static apply(
    callable: Callable,
    name: string,
    operands: readonly LazyTensor[],
    children: readonly LazyTensor[],
    params: readonly ParamValue[],
  ): LazyTensor {
    const canonical = callable.def.name;
    const complexIn = children.some((c) => c.isComplex);
    if (complexIn) {
      if (REAL_INPUT.has(canonical)) {
        throw invalid(`${name}: expects a real LazyTensor, got a complex one`);
      }
      if (
        !COMPLEX_RESULT.has(canonical) &&
        !COMPLEX_TO_REAL.has(canonical) &&
        !LAYOUT_PRESERVING.has(canonical)
      ) {
        throw invalid(
          `${name} is not defined on complex LazyTensors; use real(), imag(), abs() or angle() first`,
        );
      }
    }
    const { nodes, variables, ranges } = combine(operands, name);
    const nodeOf = new Map(operands.map((o, k) => [o, nodes[k]]));
    const kids = children.map((c) => nodeOf.get(c) as Node);
    let node: Node;
    if (callable.macro) {
      checkParams(callable.def, params);
      node = callable.def.expand(kids, params, b);
    } else {
      node = b.call(canonical, kids, params);
    }
    const complexOut =
      COMPLEX_RESULT.has(canonical) ||
      (complexIn && LAYOUT_PRESERVING.has(canonical) && children[0].isComplex);
    return new LazyTensor(node, variables, complexOut, ranges);
  }

  /** `op` with a permuted argument order: the operation sees `children`, the variables merge as `operands`. */
  private opOrdered(
    name: string,
    operands: readonly Operand[],
    childOrder: readonly number[],
    params: readonly ParamValue[] = [],
  ): LazyTensor {
    const lazy = operands.map((o) => toLazy(o, name));
    const all = [this, ...lazy];
    return LazyTensor.apply(
      lookupCallable(name),
      name,
      all,
      childOrder.map((k) => all[k]),
      params,
    );
  }

  // ---- arithmetic (complex-aware) ----------------------------------------------------------------------------

  /** Makes a real operand complex for a complex binary operation (pykeops promotes the same way). */
  private complexBinary(
    name: 'ComplexAdd' | 'ComplexSubtract' | 'ComplexMult' | 'ComplexDivide',
    other: Operand,
  ): LazyTensor {
    const o = toLazy(other, name);
    if (name === 'ComplexMult' && this.isComplex !== o.isComplex) {
      const real = this.isComplex ? o : this;
      if (real.node.dim === 1) return this.opOrdered('ComplexRealScal', [o], [0, 1]);
    }
    const promote = (t: LazyTensor): LazyTensor => (t.isComplex ? t : t.real2complex());
    const [x, y] = [promote(this), promote(o)];
    return x.op(name, [y]);
  }

  add(other: Operand): LazyTensor {
    return this.isComplex || (other instanceof LazyTensor && other.isComplex)
      ? this.complexBinary('ComplexAdd', other)
      : this.op('Add', [other]);
  }
  sub(other: Operand): LazyTensor {
    return this.isComplex || (other instanceof LazyTensor && other.isComplex)
      ? this.complexBinary('ComplexSubtract', other)
      : this.op('Subtract', [other]);
  }
  mul(other: Operand): LazyTensor {
    return this.isComplex || (other instanceof LazyTensor && other.isComplex)
      ? this.complexBinary('ComplexMult', other)
      : this.op('Mult', [other]);
  }
  div(other: Operand): LazyTensor {
    return this.isComplex || (other instanceof LazyTensor && other.isComplex)
      ? this.complexBinary('ComplexDivide', other)
      : this.op('Divide', [other]);
  }
  neg(): LazyTensor {
    return this.op('Minus');
  }
  /** Scalar product (x|y): dims must match. */
  scalprod(other: Operand): LazyTensor {
    return this.op('Scalprod', [other]);
  }
  /** 2 → Square, 0.5 → Sqrt, -0.5 → Rsqrt, other integer → Pow, other number or a LazyTensor → Powf. */
  pow(exponent: Operand): LazyTensor {
    if (exponent instanceof LazyTensor) return this.op('Powf', [exponent]);
    if (typeof exponent !== 'number' || !Number.isFinite(exponent)) {
      throw invalid(`pow: the exponent must be a finite number or a LazyTensor, got ${String(exponent)}`);
    }
    if (exponent === 2) return this.op('Square');
    if (exponent === 0.5) return this.op('Sqrt');
    if (exponent === -0.5) return this.op('Rsqrt');
    if (Number.isSafeInteger(exponent)) return this.op('Pow', [], [exponent]);
    return this.op('Powf', [exponent]);
  }
  square(): LazyTensor {
    return this.op('Square');
  }
  sqrt(): LazyTensor {
    return this.op('Sqrt');
  }
  rsqrt(): LazyTensor {
    return this.op('Rsqrt');
  }
  inv(): LazyTensor {
    return this.op('Inv');
  }

  // ---- math ------------------------------------------------------------------------------------------------

  /** |x|; the modulus (ComplexAbs, real) of a complex LazyTensor. */
  abs(): LazyTensor {
    return this.op(this.isComplex ? 'ComplexAbs' : 'Abs');
  }
  /** e^x; the complex exponential of a complex LazyTensor. */
  exp(): LazyTensor {
    return this.op(this.isComplex ? 'ComplexExp' : 'Exp');
  }
  log(): LazyTensor {
    return this.op('Log');
  }
  xlogx(): LazyTensor {
    return this.op('XLogX');
  }
  sin(): LazyTensor {
    return this.op('Sin');
  }
  cos(): LazyTensor {
    return this.op('Cos');
  }
  sinxdivx(): LazyTensor {
    return this.op('SinXDivX');
  }
  /** sin(πx)/(πx), as pykeops: SinXDivX(π·x) with π the exact decimal 3.141592653589793. */
  sinc(): LazyTensor {
    return LazyTensor.constant(Math.PI).mul(this).sinxdivx();
  }
  asin(): LazyTensor {
    return this.op('Asin');
  }
  acos(): LazyTensor {
    return this.op('Acos');
  }
  atan(): LazyTensor {
    return this.op('Atan');
  }
  /** atan2(this, x): this is "y". */
  atan2(x: Operand): LazyTensor {
    return this.op('Atan2', [x]);
  }
  sign(): LazyTensor {
    return this.op('Sign');
  }
  step(): LazyTensor {
    return this.op('Step');
  }
  relu(): LazyTensor {
    return this.op('ReLU');
  }
  floor(): LazyTensor {
    return this.op('Floor');
  }
  /** Rounded to d decimals (ties away from zero). */
  round(decimals = 0): LazyTensor {
    return this.op('Round', [], [decimals]);
  }
  /** this − modulus·⌊(this − offset)/modulus⌋, in [offset, offset + modulus). */
  mod(modulus: Operand, offset: Operand = 0): LazyTensor {
    return this.op('Mod', [modulus, offset]);
  }
  /** Clamped to [a, b]: ClampInt when both are integers, else Clamp. */
  clamp(a: Operand, c: Operand): LazyTensor {
    if (
      typeof a === 'number' &&
      typeof c === 'number' &&
      Number.isSafeInteger(a) &&
      Number.isSafeInteger(c)
    ) {
      return this.op('ClampInt', [], [a, c]);
    }
    return this.op('Clamp', [a, c]);
  }
  /** a where this >= 0, else c. */
  ifelse(a: Operand, c: Operand): LazyTensor {
    return this.op('IfElse', [a, c]);
  }
  equal(other: Operand): LazyTensor {
    return this.op('Equal', [other]);
  }
  notEqual(other: Operand): LazyTensor {
    return this.op('NotEqual', [other]);
  }
  lessThan(other: Operand): LazyTensor {
    return this.op('LessThan', [other]);
  }
  lessOrEqual(other: Operand): LazyTensor {
    return this.op('LessOrEqual', [other]);
  }
  /** this > other, i.e. LessThan(other, this) (as the formula parser writes it). */
  greaterThan(other: Operand): LazyTensor {
    return this.opOrdered('LessThan', [other], [1, 0]);
  }
  greaterOrEqual(other: Operand): LazyTensor {
    return this.opOrdered('LessOrEqual', [other], [1, 0]);
  }

  // ---- vectors -----------------------------------------------------------------------------------------------

  sqnorm2(): LazyTensor {
    return this.op('SqNorm2');
  }
  norm2(): LazyTensor {
    return this.op('Norm2');
  }
  /** The Euclidean norm over the inner dim (the only axis: -1). */
  norm(axis: -1 = -1): LazyTensor {
    if (axis !== -1)
      throw new KeOpsError(
        'ERR_REDUCTION',
        `norm: only the inner dim (-1) is supported, got ${String(axis)}`,
      );
    return this.norm2();
  }
  normalize(): LazyTensor {
    return this.op('Normalize');
  }
  sqdist(other: Operand): LazyTensor {
    return this.op('SqDist', [other]);
  }
  /** WeightedSqNorm(s, this): s of dim 1, d or d². */
  weightedsqnorm(s: Operand): LazyTensor {
    return this.opOrdered('WeightedSqNorm', [s], [1, 0]);
  }
  /** WeightedSqDist(s, this, other). */
  weightedsqdist(other: Operand, s: Operand): LazyTensor {
    return this.opOrdered('WeightedSqDist', [other, s], [2, 0, 1]);
  }
  elem(index: number): LazyTensor {
    return this.op('Elem', [], [index]);
  }
  extract(start: number, dim: number): LazyTensor {
    return this.op('Extract', [], [start, dim]);
  }
  concat(other: Operand): LazyTensor {
    const o = toLazy(other, 'concat');
    if (this.isComplex !== o.isComplex)
      throw invalid('concat: cannot concatenate a complex and a real LazyTensor');
    return this.op('Concat', [o]);
  }
  oneHot(dim: number): LazyTensor {
    return this.op('OneHot', [], [dim]);
  }
  /** MatVecMult(this, v): this a row-major matrix of d(v) columns. */
  matvecmult(v: Operand): LazyTensor {
    return this.op('MatVecMult', [v]);
  }
  /** VecMatMult(this, A): this a vector, A a row-major matrix of d(this) rows. */
  vecmatmult(A: Operand): LazyTensor {
    return this.op('VecMatMult', [A]);
  }
  tensorprod(other: Operand): LazyTensor {
    return this.op('TensorProd', [other]);
  }
  /** numpy.tensordot(this.reshape(dimsThis), other.reshape(dimsOther), (contThis, contOther)), then permute. */
  tensordot(
    other: Operand,
    dimsThis: readonly number[],
    dimsOther: readonly number[],
    contThis: readonly number[],
    contOther: readonly number[],
    permute?: readonly number[],
  ): LazyTensor {
    const params = [dimsThis, dimsOther, contThis, contOther, ...(permute === undefined ? [] : [permute])];
    return this.op('TensorDot', [other], params);
  }
  /** np.kron(this.reshape(dimsThis), other.reshape(dimsOther)), flattened. */
  kron(other: Operand, dimsThis: readonly number[], dimsOther: readonly number[]): LazyTensor {
    return this.op('Kron', [other], [dimsThis, dimsOther]);
  }
  /** B-spline basis functions of the given order at the scalar x, with this LazyTensor as the knots. */
  bspline(x: Operand, order = 0): LazyTensor {
    return this.op('BSpline', [x], [order]);
  }
  /** Soft-DTW discrepancy between the scalar sequences this and other, with cost (x_i − y_j)². */
  softdtwSqdist(other: Operand, gamma: Operand): LazyTensor {
    return this.op('SoftDTW_SqDist', [other, gamma]);
  }

  // ---- complex numbers ---------------------------------------------------------------------------------------

  real2complex(): LazyTensor {
    return this.op('Real2Complex');
  }
  imag2complex(): LazyTensor {
    return this.op('Imag2Complex');
  }
  /** e^{i·this} for a real LazyTensor. */
  exp1j(): LazyTensor {
    return this.op('ComplexExp1j');
  }
  private requireComplex(what: string): void {
    if (!this.isComplex)
      throw invalid(`${what}: expects a complex LazyTensor (see Vi(z, n, { complex: true }))`);
  }
  conj(): LazyTensor {
    this.requireComplex('conj');
    return this.op('Conj');
  }
  real(): LazyTensor {
    this.requireComplex('real');
    return this.op('ComplexReal');
  }
  imag(): LazyTensor {
    this.requireComplex('imag');
    return this.op('ComplexImag');
  }
  angle(): LazyTensor {
    this.requireComplex('angle');
    return this.op('ComplexAngle');
  }

  // ---- symbolic calculus ----------------------------------------------------------------------------------

  private requireVariable(what: string, v: LazyTensor): void {
    if (!(v instanceof LazyTensor) || v.node.name !== 'Var') {
      throw invalid(`${what}: differentiate with respect to a variable (Vi, Vj or Pm), not a formula`);
    }
  }
  /** (∂this/∂v)ᵀ·e, of dim d(v); e has the dim of this (or 1). */
  grad(v: LazyTensor, e: Operand): LazyTensor {
    this.requireVariable('grad', v);
    return this.op('Grad', [v, e]);
  }
  /** (∂this/∂v)·u, of dim d(this). */
  diff(v: LazyTensor, u: Operand): LazyTensor {
    this.requireVariable('diff', v);
    return this.op('Diff', [v, u]);
  }
  gradMatrix(v: LazyTensor): LazyTensor {
    this.requireVariable('gradMatrix', v);
    return this.op('GradMatrix', [v]);
  }
  divergence(v: LazyTensor): LazyTensor {
    this.requireVariable('divergence', v);
    return this.op('Divergence', [v]);
  }
  laplacian(v: LazyTensor): LazyTensor {
    this.requireVariable('laplacian', v);
    return this.op('Laplacian', [v]);
  }
  /** Trace of the linear map v ↦ this (weighted by w if given). */
  traceOperator(v: LazyTensor, w?: Operand): LazyTensor {
    this.requireVariable('traceOperator', v);
    return this.op('TraceOperator', w === undefined ? [v] : [v, w]);
  }
  /** This formula with the sub-formula g computed once. */
  factorize(g: LazyTensor): LazyTensor {
    return this.op('Factorize', [g]);
  }
  autoFactorize(): LazyTensor {
    return this.op('AutoFactorize');
  }

  /** The transpose: i-variables become j-variables and conversely; the ranges are swapped. */
  t(): LazyTensor {
    const swap = new Map<Node, Node>();
    const variables = this.variables.map((v, pos) => {
      if (v.cat === 2) return v;
      const cat: VariableCategory = v.cat === 0 ? 1 : 0;
      swap.set(b.variable(pos, v.dim, v.cat), b.variable(pos, v.dim, cat));
      return Object.freeze({ ...v, cat });
    });
    const used = varsOf(this.node);
    for (const from of [...swap.keys()]) if (!used.has(from)) swap.delete(from);
    const node = swap.size === 0 ? this.node : substitute(this.node, swap);
    const ranges = this.rangesValue === undefined ? undefined : swapAxes(this.rangesValue);
    return new LazyTensor(node, variables, this.isComplex, ranges);
  }

  // ---- reductions ------------------------------------------------------------------------------------------

  /**
   * A reduction, not run yet: `K.reduction('Sum', { axis: 1 }).call()`; it can also be differentiated
   * (`.grad(x, G)`). `name` is a Genred reduction name (Sum, LogSumExp, SumSoftMaxWeight, Min, ArgKMin...).
   */
  reduction(name: string, spec: { axis: ReductionAxis; k?: number; weight?: Operand }): LazyReduction {
    if (typeof spec !== 'object' || spec === null) throw invalid('reduction: expects { axis, k?, weight? }');
    return new LazyReduction(this, name, normalizeAxis(spec.axis, name), spec.k, spec.weight);
  }

  private reduce(
    name: string,
    axis: unknown,
    options: LazyReductionOptions | undefined,
    extra: { k?: number; weight?: Operand } = {},
  ): Promise<GenredResult> {
    return promised(() => this.reduction(name, { axis: axis as ReductionAxis, ...extra }).call(options));
  }
  private reduceSync(
    name: string,
    axis: unknown,
    options: LazyReductionOptions | undefined,
    extra: { k?: number; weight?: Operand } = {},
  ): GenredResult {
    return this.reduction(name, { axis: axis as ReductionAxis, ...extra }).callSync(options);
  }

  /** sum(-1): Σ over the inner dim (a LazyTensor of dim 1; ComplexSum for complex). sum(0|1): the reduction. */
  sum(axis: -1): LazyTensor;
  sum(axis: ReductionAxis, options?: LazyReductionOptions): Promise<FloatResult>;
  sum(axis: ReductionAxis | -1, options?: LazyReductionOptions): LazyTensor | Promise<FloatResult> {
    if (axis === -1) return this.op(this.isComplex ? 'ComplexSum' : 'Sum');
    return this.reduce('Sum', axis, options) as Promise<FloatResult>;
  }
  sumSync(axis: ReductionAxis, options?: LazyReductionOptions): FloatResult {
    return this.reduceSync('Sum', axis, options) as FloatResult;
  }
  /** log Σ exp(this) (times weight, if given: log Σ e^f·w). */
  logsumexp(axis: ReductionAxis, weight?: Operand, options?: LazyReductionOptions): Promise<FloatResult> {
    return this.reduce('LogSumExp', axis, options, { weight }) as Promise<FloatResult>;
  }
  logsumexpSync(axis: ReductionAxis, weight?: Operand, options?: LazyReductionOptions): FloatResult {
    return this.reduceSync('LogSumExp', axis, options, { weight }) as FloatResult;
  }
  /** Σ e^this·weight / Σ e^this. */
  sumsoftmaxweight(
    weight: Operand,
    axis: ReductionAxis,
    options?: LazyReductionOptions,
  ): Promise<FloatResult> {
    return this.reduce('SumSoftMaxWeight', axis, options, { weight }) as Promise<FloatResult>;
  }
  sumsoftmaxweightSync(weight: Operand, axis: ReductionAxis, options?: LazyReductionOptions): FloatResult {
    return this.reduceSync('SumSoftMaxWeight', axis, options, { weight }) as FloatResult;
  }
  /** min(-1): smallest component (a LazyTensor of dim 1). min(0|1): the reduction. */
  min(axis: -1): LazyTensor;
  min(axis: ReductionAxis, options?: LazyReductionOptions): Promise<FloatResult>;
  min(axis: ReductionAxis | -1, options?: LazyReductionOptions): LazyTensor | Promise<FloatResult> {
    if (axis === -1) return this.op('Min');
    return this.reduce('Min', axis, options) as Promise<FloatResult>;
  }
  minSync(axis: ReductionAxis, options?: LazyReductionOptions): FloatResult {
    return this.reduceSync('Min', axis, options) as FloatResult;
  }
  max(axis: -1): LazyTensor;
  max(axis: ReductionAxis, options?: LazyReductionOptions): Promise<FloatResult>;
  max(axis: ReductionAxis | -1, options?: LazyReductionOptions): LazyTensor | Promise<FloatResult> {
    if (axis === -1) return this.op('Max');
    return this.reduce('Max', axis, options) as Promise<FloatResult>;
  }
  maxSync(axis: ReductionAxis, options?: LazyReductionOptions): FloatResult {
    return this.reduceSync('Max', axis, options) as FloatResult;
  }
  argmin(axis: -1): LazyTensor;
  argmin(axis: ReductionAxis, options?: LazyReductionOptions): Promise<Int32Array>;
  argmin(axis: ReductionAxis | -1, options?: LazyReductionOptions): LazyTensor | Promise<Int32Array> {
    if (axis === -1) return this.op('ArgMin');
    return this.reduce('ArgMin', axis, options) as Promise<Int32Array>;
  }
  argminSync(axis: ReductionAxis, options?: LazyReductionOptions): Int32Array {
    return this.reduceSync('ArgMin', axis, options) as Int32Array;
  }
  argmax(axis: -1): LazyTensor;
  argmax(axis: ReductionAxis, options?: LazyReductionOptions): Promise<Int32Array>;
  argmax(axis: ReductionAxis | -1, options?: LazyReductionOptions): LazyTensor | Promise<Int32Array> {
    if (axis === -1) return this.op('ArgMax');
    return this.reduce('ArgMax', axis, options) as Promise<Int32Array>;
  }
  argmaxSync(axis: ReductionAxis, options?: LazyReductionOptions): Int32Array {
    return this.reduceSync('ArgMax', axis, options) as Int32Array;
  }
  minArgmin(axis: ReductionAxis, options?: LazyReductionOptions): Promise<ValuesAndIndices> {
    return this.reduce('Min_ArgMin', axis, options) as Promise<ValuesAndIndices>;
  }
  minArgminSync(axis: ReductionAxis, options?: LazyReductionOptions): ValuesAndIndices {
    return this.reduceSync('Min_ArgMin', axis, options) as ValuesAndIndices;
  }
  maxArgmax(axis: ReductionAxis, options?: LazyReductionOptions): Promise<ValuesAndIndices> {
    return this.reduce('Max_ArgMax', axis, options) as Promise<ValuesAndIndices>;
  }
  maxArgmaxSync(axis: ReductionAxis, options?: LazyReductionOptions): ValuesAndIndices {
    return this.reduceSync('Max_ArgMax', axis, options) as ValuesAndIndices;
  }
  /** The K smallest values, per component, in increasing order: rows × K × ndim. */
  kmin(K: number, axis: ReductionAxis, options?: LazyReductionOptions): Promise<FloatResult> {
    return this.reduce('KMin', axis, options, { k: K }) as Promise<FloatResult>;
  }
  kminSync(K: number, axis: ReductionAxis, options?: LazyReductionOptions): FloatResult {
    return this.reduceSync('KMin', axis, options, { k: K }) as FloatResult;
  }
  argKmin(K: number, axis: ReductionAxis, options?: LazyReductionOptions): Promise<Int32Array> {
    return this.reduce('ArgKMin', axis, options, { k: K }) as Promise<Int32Array>;
  }
  argKminSync(K: number, axis: ReductionAxis, options?: LazyReductionOptions): Int32Array {
    return this.reduceSync('ArgKMin', axis, options, { k: K }) as Int32Array;
  }
  kminArgkmin(K: number, axis: ReductionAxis, options?: LazyReductionOptions): Promise<ValuesAndIndices> {
    return this.reduce('KMin_ArgKMin', axis, options, { k: K }) as Promise<ValuesAndIndices>;
  }
  kminArgkminSync(K: number, axis: ReductionAxis, options?: LazyReductionOptions): ValuesAndIndices {
    return this.reduceSync('KMin_ArgKMin', axis, options, { k: K }) as ValuesAndIndices;
  }

  // ---- linear-operator sugar --------------------------------------------------------------------------------

  /** The j-variable holding v (nj rows of v.length / nj values) for K @ v. */
  private operandFor(v: LazyData, cat: 0 | 1, what: string): LazyTensor {
    if (v instanceof LazyTensor) throw invalid(`${what}: expects the data of the vector, not a LazyTensor`);
    const data = checkData(v, what);
    const rows = cat === 0 ? this.ni : this.nj;
    if (!this.variables.some((w) => w.cat === cat)) {
      throw new KeOpsError(
        'ERR_REDUCTION',
        `${what}: this LazyTensor has no ${cat === 0 ? 'i' : 'j'}-variable to multiply with`,
      );
    }
    if (rows === 0 || data.length % rows !== 0 || data.length === 0) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${what}: the vector must have ${cat === 0 ? 'ni' : 'nj'} = ${rows} rows, got ${data.length} values`,
      );
    }
    return LazyTensor.variable(cat, data, data.length / rows);
  }
  private checkScalarKernel(what: string): void {
    if (this.node.dim !== 1 || this.isComplex) {
      throw new KeOpsError(
        'ERR_FORMULA_DIM',
        `${what}: K must be a real LazyTensor of inner dim 1, got dim ${this.node.dim}`,
      );
    }
  }
  /** K @ v = (K · Vj(v)).sum(1): ni rows of v's width. */
  matvec(v: LazyData, options?: LazyReductionOptions): Promise<FloatResult> {
    return promised(() => {
      this.checkScalarKernel('matvec');
      return this.mul(this.operandFor(v, 1, 'matvec')).sum(1, options);
    });
  }
  matvecSync(v: LazyData, options?: LazyReductionOptions): FloatResult {
    this.checkScalarKernel('matvec');
    return this.mul(this.operandFor(v, 1, 'matvec')).sumSync(1, options);
  }
  /** Kᵀ @ u = (K · Vi(u)).sum(0): nj rows of u's width. */
  rmatvec(u: LazyData, options?: LazyReductionOptions): Promise<FloatResult> {
    return promised(() => {
      this.checkScalarKernel('rmatvec');
      return this.mul(this.operandFor(u, 0, 'rmatvec')).sum(0, options);
    });
  }
  rmatvecSync(u: LazyData, options?: LazyReductionOptions): FloatResult {
    this.checkScalarKernel('rmatvec');
    return this.mul(this.operandFor(u, 0, 'rmatvec')).sumSync(0, options);
  }
  /**
   * The solution a of (αI + K) a = b by conjugate gradient, K being this kernel (real, inner dim 1, symmetric)
   * and b a Vj (Σ_j K_ij a_j + α a_i = b_i) or a Vi variable (sum over i): pykeops' `K.solve(b)`. See
   * `LazySolve`; `{ call: false }` returns it without running.
   */
  solve(b: LazyTensor, options: LazySolveOptions & { readonly call: false }): LazySolve;
  solve(b: LazyTensor, options?: LazySolveOptions & { readonly call?: true }): Promise<FloatResult>;
  solve(b: LazyTensor, options: LazySolveOptions = {}): LazySolve | Promise<FloatResult> {
    if (typeof options === 'object' && options !== null && options.call === false) {
      return new LazySolve(this, b, options);
    }
    return promised(() => new LazySolve(this, b, options).call());
  }
  solveSync(b: LazyTensor, options?: Omit<LazySolveOptions, 'call'>): FloatResult {
    return new LazySolve(this, b, options).callSync();
  }
}

// ---- reductions --------------------------------------------------------------------------------------------

/** Options of a gradient call: those of the forward call it runs first. */
export type LazyGradOptions = LazyReductionOptions;

/** The arrays of a call for `variables`, by position, in one dtype (plain numbers become that dtype). */
function argumentsOf(variables: readonly LazyVariable[]): GenredArg[] {
  const dtype = variables.map((v) => dtypeOfData(v.data)).find((d) => d !== undefined) ?? 'float64';
  return variables.map((v) => {
    const data =
      dtypeOfData(v.data) !== undefined
        ? (v.data as GenredValues)
        : dtype === 'float32'
          ? Float32Array.from(v.data)
          : Float64Array.from(v.data);
    return v.shape === undefined ? data : { data, shape: v.shape };
  });
}

/** Variable labels by position, for `toDot`. */
function dotNames(names: readonly string[]): Map<number, string> {
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
    throw invalid('toDot: names must be an array of strings');
  }
  return new Map(names.map((n, k) => [k, n] as const));
}

/** The position of the variable LazyTensor `wrt` in `variables`, for gradients. */
function positionOf(variables: readonly LazyVariable[], wrt: LazyTensor, what: string): number {
  if (!(wrt instanceof LazyTensor) || wrt.node.name !== 'Var' || wrt.variables.length !== 1) {
    throw invalid(`${what}: differentiate with respect to a variable (Vi, Vj or Pm), not a formula`);
  }
  const pos = variables.findIndex((v) => sameVariable(v, wrt.variables[0]));
  if (pos < 0)
    throw invalid(`${what}: ${describeVariable(wrt.variables[0])} is not an input of this reduction`);
  return pos;
}

/** A cotangent as a typed array (undefined stays undefined). */
function cotangentArray(
  G: ArrayLike<number> | undefined,
  what: string,
): Float32Array | Float64Array | undefined {
  if (G === undefined || G instanceof Float32Array || G instanceof Float64Array) return G;
  if (Array.isArray(G)) return Float64Array.from(G as readonly number[]);
  throw new KeOpsError('ERR_ARG_TYPE', `${what}: the cotangent must be an array of numbers`);
}

/**
 * A reduction of a LazyTensor (and weight), ready to run or to differentiate: the formula nodes, the data of
 * each variable position, and one engine reduction (`NodeGenred`) per (sumScheme, dtypeAcc), made on first use
 * and reused by every later call.
 */
export class LazyReduction {
  readonly name: string;
  /** 0: reduce over i (one row per j); 1: reduce over j (one row per i). */
  readonly axis: 0 | 1;
  readonly k?: number;
  readonly formula: Node;
  readonly formula2?: Node;
  /** The data of each variable position. */
  readonly variables: readonly LazyVariable[];
  readonly ranges?: GenredRanges;
  private readonly engines = new Map<string, NodeGenred>();

  constructor(source: LazyTensor, name: string, axis: 0 | 1, k?: number, weight?: Operand) {
    if (!(source instanceof LazyTensor)) {
      throw invalid(
        'new LazyReduction(source, ...) needs a LazyTensor; use its methods (sum, logsumexp, argKmin...)',
      );
    }
    if (typeof name !== 'string')
      throw new KeOpsError('ERR_REDUCTION', 'the reduction name must be a string');
    const operands = weight === undefined ? [source] : [source, toLazy(weight, name)];
    if (operands.some((o) => o.isComplex) && name !== 'Sum') {
      throw invalid(
        `${name}: complex LazyTensors only support the Sum reduction; take real(), imag() or abs() first`,
      );
    }
    const { nodes, variables, ranges } = combine(operands, name);
    const reduced = axis === 0 ? 0 : 1;
    if (!variables.some((v) => v.cat === reduced)) {
      const letter = reduced === 0 ? 'i' : 'j';
      throw new KeOpsError(
        'ERR_REDUCTION',
        `${name} over axis ${axis} reduces over ${letter}, but the LazyTensor has no ${letter}-variable ` +
          `(V${letter}), so the number of ${letter}'s is unknown`,
      );
    }
    this.name = name;
    this.axis = axis;
    this.k = k;
    this.formula = nodes[0];
    this.formula2 = nodes[1];
    this.variables = variables;
    this.ranges = ranges;
    this.engine(undefined); // validates the reduction name, K, the weight and the dims now
  }

  /** Runs the reduction off the JS thread. Rejects with a KeOpsError. */
  call(options?: LazyReductionOptions): Promise<GenredResult> {
    return promised(() => this.engine(options).call(this.arguments(), this.runOptions(options)));
  }

  /** Like `call`, but blocks the thread (compilation included). */
  callSync(options?: LazyReductionOptions): GenredResult {
    return this.engine(options).callSync(this.arguments(), this.runOptions(options));
  }

  /**
   * The gradient of ⟨G, result⟩ with respect to the variable LazyTensor `wrt` (Vi, Vj or Pm), in the data
   * dtype and the size of wrt (rows × dim, or dim for a parameter). G has the size of the result (of its
   * values, for value+index results; ignored for index results). Min, Max and KMin have no gradient
   * (ERR_NOT_DIFFERENTIABLE).
   */
  grad(wrt: LazyTensor, G: ArrayLike<number> | undefined, options?: LazyGradOptions): Promise<FloatResult> {
    return promised(() => this.engine(options).grad(this.arguments(), this.gradOptions(wrt, G, options)));
  }

  gradSync(wrt: LazyTensor, G: ArrayLike<number> | undefined, options?: LazyGradOptions): FloatResult {
    return this.engine(options).gradSync(this.arguments(), this.gradOptions(wrt, G, options));
  }

  /** The engine reduction for these options (sumScheme and dtypeAcc select the kernel). */
  engine(options: LazyReductionOptions | undefined): NodeGenred {
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw invalid(`${this.name}: options must be an object`);
    }
    if (options !== undefined) readOptions(this.name, options, LAZY_REDUCTION_OPTION_KEYS);
    const key = `${options?.sumScheme ?? 'auto'}|${options?.dtypeAcc ?? 'auto'}`;
    let engine = this.engines.get(key);
    if (engine === undefined) {
      engine = new NodeGenred(this.formula, {
        reduction: this.name,
        axis: this.axis,
        k: this.k,
        formula2: this.formula2,
        // Every variable, even one the formula lost to simplification, so that ni and nj still hold.
        variables: this.variables.map((v, pos) => ({ pos, dim: v.dim, cat: v.cat })),
        sumScheme: options?.sumScheme,
        dtypeAcc: options?.dtypeAcc,
      });
      this.engines.set(key, engine);
    }
    return engine;
  }

  /** The arrays of a call, by position, in one dtype (plain numbers become that dtype). */
  arguments(): GenredArg[] {
    return argumentsOf(this.variables);
  }

  /** Graphviz DOT text of the reduction; `names[k]` labels variable k. */
  toDot(names: readonly string[] = []): string {
    return this.engine(undefined).reduction.toDot(dotNames(names));
  }

  private runOptions(options: LazyReductionOptions | undefined): RunOptions {
    return {
      ranges: options?.ranges ?? this.ranges,
      backend: options?.backend,
      threads: options?.threads,
      signal: options?.signal,
    };
  }

  private gradOptions(
    wrt: LazyTensor,
    G: ArrayLike<number> | undefined,
    options: LazyGradOptions | undefined,
  ): GenredGradOptions {
    const what = `grad of ${this.name}`;
    const pos = positionOf(this.variables, wrt, what);
    return { ...this.runOptions(options), wrt: pos, cotangent: cotangentArray(G, what) };
  }
}

// ---- linear solves -------------------------------------------------------------------------------------------

/** Per-call options of a solve: KernelSolve's (alpha, eps, maxIter) and the engine's. */
export interface LazySolveCallOptions extends LazyReductionOptions {
  /** Ridge α ≥ 0 (default 1e-10, as in KeOps). */
  readonly alpha?: number;
  /** Stop when ‖r‖² < size(b)·eps² (default 1e-6). */
  readonly eps?: number;
  /** Most applications of K (default 10 × size(b)); reaching it throws ERR_NOT_CONVERGED. */
  readonly maxIter?: number;
}

/** Options of `LazyTensor.solve`. */
export interface LazySolveOptions extends LazySolveCallOptions {
  /** The summation axis: that of b's category (1 or −2 for a Vj, 0 or −3 for a Vi), the default. */
  readonly axis?: ReductionAxis;
  /** 'check' (default): verify that K is symmetric, as KernelSolve does; 'assume': trust the caller. */
  readonly symmetry?: 'check' | 'assume';
  /** false: return the `LazySolve` without running it (pykeops' `call=False`). */
  readonly call?: boolean;
}

/**
 * A linear solve (αI + K) a = b not yet run (pykeops' `K.solve(b)`: KernelSolve of `K * var` with `var`
 * a fresh variable of b's category and dim, summed over that category): the formula, the data of each variable
 * position (K's, then b at `unknownPos`) and one engine (`NodeKernelSolve`) per (sumScheme, dtypeAcc).
 */
export class LazySolve {
  /** 0: K sums over i and b is a Vi; 1: over j, b a Vj. */
  readonly axis: 0 | 1;
  /** K times the unknown. */
  readonly formula: Node;
  /** The data of each variable position; the unknown's holds b. */
  readonly variables: readonly LazyVariable[];
  readonly unknownPos: number;
  readonly ranges?: GenredRanges;
  private readonly defaults: LazySolveCallOptions;
  private readonly symmetry: 'check' | 'assume' | undefined;
  private readonly engines = new Map<string, NodeKernelSolve>();

  constructor(kernel: LazyTensor, rhs: LazyTensor, options: LazySolveOptions = {}) {
    if (typeof options !== 'object' || options === null) throw invalid('solve: options must be an object');
    if (!(kernel instanceof LazyTensor)) throw invalid('solve: the kernel must be a LazyTensor');
    if (kernel.node.dim !== 1 || kernel.isComplex) {
      throw new KeOpsError(
        'ERR_FORMULA_DIM',
        `solve: K must be a real LazyTensor of inner dim 1, got ${kernel.isComplex ? 'a complex one' : `dim ${kernel.node.dim}`}`,
      );
    }
    const isVariable = rhs instanceof LazyTensor && rhs.node.name === 'Var' && rhs.variables.length === 1;
    if (!isVariable || rhs.variables[0].cat === 2 || rhs.isComplex) {
      throw invalid('solve: the right-hand side must be a real Vi or Vj variable, as in K.solve(Vj(b, dim))');
    }
    const rhsVariable = rhs.variables[0];
    const axis: 0 | 1 = rhsVariable.cat === 0 ? 0 : 1;
    if (options.axis !== undefined && normalizeAxis(options.axis, 'solve') !== axis) {
      throw invalid(
        `solve: a ${CATEGORY_NAMES[axis]} right-hand side sums over ${axis === 0 ? 'i' : 'j'} (axis ${axis}), ` +
          `not axis ${String(options.axis)}`,
      );
    }
    // b always gets a position of its own, even when a variable of K holds the same data.
    const variables = [...kernel.variables, rhsVariable];
    checkCompatible(variables, 'solve');
    const rows = (cat: VariableCategory) => variables.find((v) => v.cat === cat)?.rows;
    const [ni, nj] = [rows(0), rows(1)];
    if (ni !== undefined && nj !== undefined && ni !== nj) {
      throw new KeOpsError('ERR_ARG_SHAPE', `solve: K must be square, got ni = ${ni} and nj = ${nj}`);
    }
    this.axis = axis;
    this.unknownPos = kernel.variables.length;
    this.formula = b.mul(kernel.node, b.variable(this.unknownPos, rhsVariable.dim, rhsVariable.cat));
    this.variables = Object.freeze(variables);
    this.ranges = kernel.ranges;
    this.symmetry = options.symmetry;
    this.defaults = { alpha: options.alpha, eps: options.eps, maxIter: options.maxIter };
    this.engine(options); // checks linearity and symmetry now
  }

  /** The solution a (b's size, in the data dtype), off the JS thread. Rejects with a KeOpsError. */
  call(options?: LazySolveCallOptions): Promise<FloatResult> {
    return promised(() => this.engine(options).solve(this.arguments(), this.callOptions(options)));
  }

  /** Like `call`, but blocks the thread (compilation included). */
  callSync(options?: LazySolveCallOptions): FloatResult {
    return this.engine(options).solveSync(this.arguments(), this.callOptions(options));
  }

  /**
   * The gradient of ⟨G, a⟩ with respect to the variable LazyTensor `wrt`: b itself, or a variable of K
   * (KernelSolve's gradients). G has b's size.
   */
  grad(wrt: LazyTensor, G: ArrayLike<number>, options?: LazySolveCallOptions): Promise<FloatResult> {
    return promised(() =>
      this.engine(options).solveGrad(this.arguments(), this.gradOptions(wrt, G, options)),
    );
  }

  gradSync(wrt: LazyTensor, G: ArrayLike<number>, options?: LazySolveCallOptions): FloatResult {
    return this.engine(options).solveGradSync(this.arguments(), this.gradOptions(wrt, G, options));
  }

  /** The engine for these options (sumScheme and dtypeAcc select the kernel). */
  engine(options: LazySolveCallOptions | undefined): NodeKernelSolve {
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw invalid('solve: options must be an object');
    }
    const key = `${options?.sumScheme ?? 'auto'}|${options?.dtypeAcc ?? 'auto'}`;
    let engine = this.engines.get(key);
    if (engine === undefined) {
      engine = new NodeKernelSolve(
        this.formula,
        { pos: this.unknownPos },
        {
          axis: this.axis,
          symmetry: this.symmetry,
          // Every variable, even one the formula lost to simplification, so that ni and nj still hold.
          variables: this.variables.map((v, pos) => ({ pos, dim: v.dim, cat: v.cat })),
          sumScheme: options?.sumScheme,
          dtypeAcc: options?.dtypeAcc,
        },
      );
      this.engines.set(key, engine);
    }
    return engine;
  }

  /** The arrays of a call, by position, in one dtype; b at `unknownPos`. */
  arguments(): GenredArg[] {
    return argumentsOf(this.variables);
  }

  private callOptions(options: LazySolveCallOptions | undefined): KernelSolveCallOptions {
    return {
      alpha: options?.alpha ?? this.defaults.alpha,
      eps: options?.eps ?? this.defaults.eps,
      maxIter: options?.maxIter ?? this.defaults.maxIter,
      ranges: options?.ranges ?? this.ranges,
      backend: options?.backend,
      threads: options?.threads,
      signal: options?.signal,
    };
  }

  private gradOptions(
    wrt: LazyTensor,
    G: ArrayLike<number>,
    options: LazySolveCallOptions | undefined,
  ): KernelSolveGradOptions {
    const what = 'grad of solve';
    const isRhs =
      wrt instanceof LazyTensor &&
      wrt.node.name === 'Var' &&
      wrt.variables.length === 1 &&
      sameVariable(wrt.variables[0], this.variables[this.unknownPos]);
    const pos = isRhs ? this.unknownPos : positionOf(this.variables.slice(0, this.unknownPos), wrt, what);
    const cotangent = cotangentArray(G, what);
    if (cotangent === undefined) throw invalid(`${what}: the cotangent of the solution is required`);
    return { ...this.callOptions(options), wrt: pos, cotangent };
  }
}

// ---- pykeops-style constructors ------------------------------------------------------------------------------

/** An i-variable: `Vi(x, 3)` with x of M×3 values, or `Vi({ data, shape: [...batch, M, 3] })`. */
export function Vi(x: LazyData | ShapedLazyData, dim?: number, options?: VariableOptions): LazyTensor {
  return LazyTensor.variable(0, x, dim, options);
}

/** A j-variable: `Vj(y, 3)` with y of N×3 values, or `Vj({ data, shape: [...batch, N, 3] })`. */
export function Vj(y: LazyData | ShapedLazyData, dim?: number, options?: VariableOptions): LazyTensor {
  return LazyTensor.variable(1, y, dim, options);
}

/** A parameter: `Pm(0.5)`, `Pm([1, 2])`, `Pm(Float32Array.of(1, 2))`, `Pm({ data, shape: [...batch, d] })`. */
export function Pm(p: LazyData | ShapedLazyData | number, options?: VariableOptions): LazyTensor {
  return LazyTensor.variable(2, p, undefined, options);
}

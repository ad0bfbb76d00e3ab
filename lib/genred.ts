/**
 * `Genred`: a reduction of a formula over i or j, compiled on first use (per dtype) and run natively
 * (docs/semantics.md 4.1). Semantics follow KeOps: `axis: 0` (the default) reduces over i and returns one row
 * per j; `axis: 1` reduces over j and returns one row per i.
 *
 *     const g = new Genred('Exp(-SqDist(x,y))*b', ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'], { reduction: 'Sum', axis: 1 });
 *     const out = await g.call([x, y, b]); // never blocks the event loop
 *     const same = g.callSync([x, y, b]);
 *     const dx = await g.grad([x, y, b], { wrt: 'x', cotangent: G }); // ∂⟨G, out⟩/∂x, M × 3, by the backend
 *
 * Everything about a call is validated before any native work; every failure is a KeOpsError with a `code`.
 *
 * Gradients (docs/semantics.md 3.2): `grad` runs the forward reduction (keeping its raw output), maps the
 * cotangent of the result to that of the raw output (`GenredReduction.cotangent`), then runs the gradient
 * reduction — `reductionGradient` with eta and the saved raw values appended as extra inputs, compiled like any
 * formula — and finally sums the rows of a parameter and the broadcast batch axes of the input. `gradient(wrt)`
 * exposes that gradient reduction as a `GenredGradient`, itself a `NodeGenred`, so it can be differentiated
 * again. `Genred` is the text front end of `NodeGenred`, which takes formula nodes.
 */
import { KeOpsError } from './errors';
import { DeviceArray } from './backend/cuda/device-array';
import {
  type Backend,
  type DtypeAcc,
  type GenredDeviceResult,
  type GenredKernelInfo,
  mergeVariables,
  type RawRun,
  ReductionRunner,
  type RunOptions,
  type SumScheme,
} from './backend/runner';
import type { CallArg, Dtype, FloatArray, GenredArg } from './backend/plan';
import { type FormulaVariable, Formula, namesOf, parseFormula } from './formula';
import { builder as b } from './formula/builder';
import { varsOf } from './formula/diff';
import { type GenredResult, resolveGenredReduction } from './formula/genred-reductions';
import { Node as NodeClass } from './formula/node';
import type { Node } from './formula/node';
import type { Reduction } from './formula/reduction';
import { outputDim, reductionGradient } from './formula/reductions';
import type { GenredDeviceOutput, GenredOutput, ReductionName, ValuesOf } from './genred-types';
import { batchOffset } from './reference';
import {
  CALL_OPTION_KEYS,
  describeValue,
  GENRED_OPTION_KEYS,
  GRAD_OPTION_KEYS,
  NODE_GENRED_OPTION_KEYS,
  readOptions,
} from './validate';

export type { CallArg, GenredArg, GenredRanges } from './backend/plan';
export type { GenredResult } from './formula/genred-reductions';
export type {
  Backend,
  DtypeAcc,
  GenredDeviceResult,
  GenredKernelInfo,
  RawRun,
  SumScheme,
} from './backend/runner';

export interface GenredOptions<R extends ReductionName = ReductionName> {
  /** Sum (default), LogSumExp, LogSumExpWeight, SumSoftMaxWeight, Min, Max, ArgMin, ArgMax, Min_ArgMin, Max_ArgMax,
   * KMin, ArgKMin, KMin_ArgKMin, Max_SumShiftExp, Max_SumShiftExpWeight. */
  reduction?: R;
  /** 0 (default, as in KeOps): reduce over i, one output row per j. 1: reduce over j, one row per i. */
  axis?: 0 | 1;
  /** K, for KMin, ArgKMin and KMin_ArgKMin. */
  k?: number;
  /** Weight formula, for LogSumExp(Weight), SumSoftMaxWeight and Max_SumShiftExpWeight. */
  formula2?: string;
  /** 'auto': block_sum for sum-type reductions, direct_sum otherwise. */
  sumScheme?: SumScheme;
  /** Accumulator type; 'auto' = the data dtype. float64 accumulation of float32 data is for sum-type reductions. */
  dtypeAcc?: DtypeAcc;
  /** 'auto' (default): the GPU when one works (runtimeInfo()), else the CPU. 'cuda' without a GPU: ERR_NO_GPU. */
  backend?: Backend;
  /** Worker threads for the CPU backend; default: one per core. */
  threads?: number;
}

/** The options of a reduction built from formula nodes (`NodeGenred`). */
export interface NodeGenredOptions extends Omit<GenredOptions, 'formula2' | 'reduction'> {
  /** A reduction name of `GenredOptions` (checked when the reduction is built). */
  reduction?: string;
  /** Weight formula, for LogSumExp(Weight), SumSoftMaxWeight and Max_SumShiftExpWeight. */
  formula2?: Node;
  /**
   * The inputs by position (names allow `wrt` by name); default: the variables the formulas read. Declaring
   * more makes every call validate those arguments too and count their rows for M and N.
   */
  variables?: readonly FormulaVariable[];
  /** Number of arguments a call takes; default: the highest declared position + 1. */
  argCount?: number;
}

/**
 * Block-sparse `ranges` (KeOps' 6-tuple; rows outside every block get the neutral value), backend, threads,
 * device (GPU ordinal), and `output: 'device'` to keep the result on the GPU as DeviceArrays.
 */
export interface GenredCallOptions extends RunOptions {
  /** 'host' (default): typed arrays. 'device': DeviceArrays on the call's GPU (runs there; needs CUDA). */
  readonly output?: 'host' | 'device';
}

/** `output: 'device'` calls. */
export type GenredDeviceCallOptions = GenredCallOptions & { readonly output: 'device' };

function checkOutput(options: GenredCallOptions): 'host' | 'device' {
  const output = options.output ?? 'host';
  if (output !== 'host' && output !== 'device') {
    throw invalid(`output must be 'host' or 'device', got ${describeValue(output)}`);
  }
  return output;
}

export interface GenredGradOptions extends GenredCallOptions {
  /** The input to differentiate with respect to: its position, or its alias name. */
  wrt: number | string;
  /**
   * Cotangent G of the forward result (rows × dimOut, batch dims first, like the result; for value+index
   * results, of the values). The gradient is that of ⟨G, result⟩. Ignored (may be omitted) for index results.
   */
  cotangent?: Float32Array | Float64Array;
}

function invalid(message: string): KeOpsError {
  return new KeOpsError('ERR_INVALID_ARGUMENT', message);
}

/** The settings a gradient reduction inherits from its forward reduction. */
interface InheritedSettings {
  readonly sumScheme?: SumScheme;
  readonly dtypeAcc?: DtypeAcc;
  readonly backend?: Backend;
  readonly threads?: number;
}

/** A Genred reduction of formula nodes: call it, differentiate it (`grad`), or get its gradient reduction. */
export class NodeGenred {
  readonly formulaNode: Node;
  readonly formula2Node: Node | undefined;
  readonly reductionName: string;
  readonly axis: 0 | 1;
  /** The engine reduction, e.g. `Sum_Reduction(...,0)`. */
  readonly reduction: Reduction;
  /** Width of one output row (of each part, for value+index reductions). */
  readonly dimOut: number;
  /** The engine that validates, compiles and runs calls. */
  readonly runner: ReductionRunner;

  private readonly settings: InheritedSettings;
  /** Gradient reductions by input position, built on first use. */
  private readonly gradients = new Map<number, GenredGradientReduction>();

  constructor(formula: Node, options: NodeGenredOptions = {}) {
    options = readOptions('Genred', options, NODE_GENRED_OPTION_KEYS);
    if (!(formula instanceof NodeClass)) {
      throw invalid(`NodeGenred needs a formula node (from parseFormula), got ${describeValue(formula)}`);
    }
    const reductionName = options.reduction ?? 'Sum';
    if (typeof reductionName !== 'string') {
      throw new KeOpsError(
        'ERR_REDUCTION',
        `reduction must be a string, got ${describeValue(reductionName)}`,
      );
    }
    const axis = options.axis ?? 0;
    if (axis !== 0 && axis !== 1) {
      throw new KeOpsError('ERR_REDUCTION', `axis must be 0 or 1, got ${describeValue(axis)}`);
    }
    if (options.k !== undefined && (!Number.isSafeInteger(options.k) || options.k < 1)) {
      throw new KeOpsError('ERR_REDUCTION', `K must be an integer >= 1, got ${describeValue(options.k)}`);
    }
    if (options.formula2 !== undefined && !(options.formula2 instanceof NodeClass)) {
      throw invalid(`formula2 must be a formula node, got ${describeValue(options.formula2)}`);
    }
    const resolved = resolveGenredReduction(reductionName, formula, {
      axis,
      k: options.k,
      formula2: options.formula2,
    });
    const read = [formula, ...(options.formula2 === undefined ? [] : [options.formula2])];
    const variables = mergeVariables([
      ...(options.variables === undefined ? [] : [options.variables]),
      ...read.map((f) => Formula.fromNode(f).variables),
    ]);
    this.settings = {
      sumScheme: options.sumScheme,
      dtypeAcc: options.dtypeAcc,
      backend: options.backend,
      threads: options.threads,
    };
    this.runner = new ReductionRunner({
      resolved,
      variables,
      argCount: options.argCount,
      ...this.settings,
      label: reductionName,
    });
    this.formulaNode = formula;
    this.formula2Node = options.formula2;
    this.reductionName = reductionName;
    this.axis = axis;
    this.reduction = resolved.reduction;
    this.dimOut = resolved.dimOut;
  }

  /** Every input by increasing position (with its alias name where it has one). */
  get variables(): readonly FormulaVariable[] {
    return this.runner.variables;
  }

  /** Number of arguments a call takes. */
  get argCount(): number {
    return this.runner.argCount;
  }

  /** Graphviz DOT text of the reduction (of a gradient reduction too), inputs labelled with their names. */
  toDot(): string {
    return this.reduction.toDot(namesOf(this.variables));
  }

  /**
   * Runs the reduction off the JS thread (compiling first if needed). Rejects with a KeOpsError. Arguments may
   * be DeviceArrays (the call then runs on their GPU); `output: 'device'` resolves to DeviceArrays.
   */
  call(args: readonly CallArg[], options: GenredDeviceCallOptions): Promise<GenredDeviceResult>;
  call(args: readonly CallArg[], options?: GenredCallOptions): Promise<GenredResult>;
  call(
    args: readonly CallArg[],
    options: GenredCallOptions = {},
  ): Promise<GenredResult | GenredDeviceResult> {
    try {
      options = readOptions('call', options, CALL_OPTION_KEYS);
      if (checkOutput(options) === 'device') return this.runner.callToDevice(args, options);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.runner.call(args, options);
  }

  /** Like `call`, but blocks the thread, compilation included: for scripts (host output only). */
  callSync(args: readonly CallArg[], options: GenredCallOptions = {}): GenredResult {
    options = readOptions('callSync', options, CALL_OPTION_KEYS);
    if (checkOutput(options) === 'device') {
      throw invalid("callSync returns host arrays; use call() for output: 'device'");
    }
    return this.runner.callSync(args, options);
  }

  /**
   * How this reduction obtained its kernel for `dtype` (undefined before the first call with that dtype on that
   * backend): the CPU kernel, or with `backend: 'cuda'` the CUDA image of GPU `device` (default 0).
   */
  kernelInfo(dtype: Dtype, backend: 'cpu' | 'cuda' = 'cpu', device = 0): GenredKernelInfo | undefined {
    return this.runner.kernelInfo(dtype, backend, device);
  }

  /**
   * The gradient reduction with respect to the input `wrt` (position or alias name): a Sum reduction whose
   * inputs are this one's followed by eta (the cotangent of the RAW output) and, for the LogSumExp /
   * SumSoftMaxWeight family, the saved raw values. Throws ERR_NOT_DIFFERENTIABLE for Min, Max, KMin and their
   * value+index variants.
   */
  gradient(wrt: number | string): GenredGradientReduction {
    const v = this.input(wrt);
    let g = this.gradients.get(v.pos);
    if (g === undefined) {
      g = new GenredGradientReduction(this, v, this.settings);
      this.gradients.set(v.pos, g);
    }
    return g;
  }

  /**
   * The gradient of ⟨cotangent, this(args)⟩ with respect to the input `wrt`, computed by the backend, in the
   * input's dtype and size (rows × dim, or dim for a parameter; batch dims as given, broadcast ones summed).
   * Same `ranges` as the forward call (the tuple holds both directions).
   */
  async grad(args: readonly GenredArg[], options: GenredGradOptions): Promise<FloatArray> {
    options = readGradOptions(options);
    const { gradient, runOptions, target } = this.prepareGrad(args, options);
    const raw = await this.runner.callRaw(args, runOptions);
    if (gradient.isZero) return zerosLike(target, raw.dtype);
    const gradArgs = gradient.argumentsFor(
      args,
      raw,
      this.runner.resolved.cotangent(raw, cotangentOf(options)),
    );
    return gradient.sumIntoInput(await gradient.runner.callRaw(gradArgs, runOptions), target);
  }

  /** Like `grad`, but blocks the thread, compilation included. */
  gradSync(args: readonly GenredArg[], options: GenredGradOptions): FloatArray {
    options = readGradOptions(options);
    const { gradient, runOptions, target } = this.prepareGrad(args, options);
    const raw = this.runner.callRawSync(args, runOptions);
    if (gradient.isZero) return zerosLike(target, raw.dtype);
    const gradArgs = gradient.argumentsFor(
      args,
      raw,
      this.runner.resolved.cotangent(raw, cotangentOf(options)),
    );
    return gradient.sumIntoInput(gradient.runner.callRawSync(gradArgs, runOptions), target);
  }

  /** The declared input at `wrt` (a position or an alias name). */
  private input(wrt: number | string): FormulaVariable {
    const found =
      typeof wrt === 'string'
        ? this.variables.find((v) => v.name === wrt)
        : this.variables.find((v) => v.pos === wrt);
    if (found === undefined) {
      const known = this.variables.map((v) => (v.name === undefined ? `${v.pos}` : `${v.pos} (${v.name})`));
      throw invalid(
        `wrt: no input ${JSON.stringify(wrt)}; the inputs are ${known.length > 0 ? known.join(', ') : 'none'}`,
      );
    }
    return found;
  }

  private prepareGrad(
    args: readonly GenredArg[],
    options: GenredGradOptions,
  ): { gradient: GenredGradientReduction; runOptions: RunOptions; target: GenredArg } {
    if (typeof options !== 'object' || options === null) throw invalid('grad options need at least { wrt }');
    const gradient = this.gradient(options.wrt);
    const { cotangent } = options;
    if (
      cotangent !== undefined &&
      !(cotangent instanceof Float32Array || cotangent instanceof Float64Array)
    ) {
      throw new KeOpsError('ERR_ARG_TYPE', 'cotangent must be a Float32Array or a Float64Array');
    }
    if (cotangent === undefined && this.runner.resolved.outputKind !== 'indices') {
      throw invalid(`grad of ${this.reductionName}: the cotangent of the result is required`);
    }
    if (!Array.isArray(args)) throw new KeOpsError('ERR_ARG_COUNT', 'args must be an array');
    const onDevice = args.findIndex(
      (a) => a instanceof DeviceArray || (a as { data?: unknown })?.data instanceof DeviceArray,
    );
    if (onDevice >= 0) {
      throw new KeOpsError(
        'ERR_ARG_TYPE',
        `grad takes host arrays (argument ${onDevice} is a DeviceArray): read it with toHost(); the gradient still runs on the GPU`,
      );
    }
    const runOptions: RunOptions = {
      ranges: options.ranges,
      backend: options.backend,
      threads: options.threads,
      signal: options.signal,
    };
    return { gradient, runOptions, target: args[gradient.wrt.pos] };
  }
}

const cotangentOf = (options: GenredGradOptions): ArrayLike<number> => options.cotangent ?? [];

function readGradOptions(options: GenredGradOptions): GenredGradOptions {
  if (typeof options !== 'object' || options === null) throw invalid('grad options need at least { wrt }');
  return readOptions('grad', options, GRAD_OPTION_KEYS);
}

function zerosLike(arg: GenredArg, dtype: Dtype): FloatArray {
  const n = (ArrayBuffer.isView(arg) ? arg : arg.data).length;
  return dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
}

/**
 * The gradient reduction of a `NodeGenred` with respect to one input `wrt` (docs/semantics.md 3.2), as a Sum
 * `NodeGenred` of its own. Its arguments are the forward ones, then eta at `etaPosition` (the cotangent of the
 * forward RAW output, `GenredReduction.cotangent`, indexed like the forward output), then — when
 * `savedPosition` is defined — the forward raw values. It returns one row per i for an i-variable, per j for a
 * j-variable, and per i for a parameter (rows NOT summed: `NodeGenred.grad` does that). Differentiating it again
 * treats eta and the saved values as independent inputs: exact for Sum; for the LogSumExp family, the saved
 * maximum is held constant.
 */
export class GenredGradientReduction extends NodeGenred {
  /** The input differentiated with respect to. */
  readonly wrt: FormulaVariable;
  readonly etaPosition: number;
  readonly etaDim: number;
  /** Position of the saved raw forward values, or undefined when the gradient does not read them. */
  readonly savedPosition: number | undefined;
  readonly savedDim: number;
  /** Whether the gradient is identically zero (Arg-type reductions, or a formula that ignores `wrt`). */
  readonly isZero: boolean;

  constructor(forward: NodeGenred, wrt: FormulaVariable, settings: InheritedSettings) {
    if (!(forward instanceof NodeGenred) || typeof wrt !== 'object' || wrt === null) {
      throw invalid('GenredGradientReduction is made by genred.gradient(wrt), not directly');
    }
    const red = forward.reduction;
    const etaPosition = forward.argCount;
    const etaDim = outputDim(red);
    const dimVal = red.layout.dimVal;
    const eta = b.variable(etaPosition, etaDim, red.tag);
    const saved = dimVal > 0 ? b.variable(etaPosition + 1, dimVal, red.tag) : undefined;
    let gradRed: Reduction;
    try {
      gradRed = reductionGradient(red, b.variable(wrt.pos, wrt.dim, wrt.cat), eta, saved);
    } catch (e) {
      if (e instanceof KeOpsError && e.code === 'ERR_NOT_DIFFERENTIABLE') {
        throw new KeOpsError('ERR_NOT_DIFFERENTIABLE', `${forward.reductionName}: ${e.message}`, {
          cause: e,
        });
      }
      throw e;
    }
    const readsSaved = saved !== undefined && varsOf(gradRed.formula).has(saved);
    const extra: FormulaVariable[] = [{ pos: etaPosition, dim: etaDim, cat: red.tag }];
    if (readsSaved) extra.push({ pos: etaPosition + 1, dim: dimVal, cat: red.tag });
    super(gradRed.formula, {
      reduction: 'Sum',
      axis: gradRed.tag === 0 ? 1 : 0,
      variables: [...forward.variables, ...extra],
      ...settings,
    });
    this.wrt = wrt;
    this.etaPosition = etaPosition;
    this.etaDim = etaDim;
    this.savedPosition = readsSaved ? etaPosition + 1 : undefined;
    this.savedDim = dimVal;
    this.isZero = gradRed.def.name === 'Zero_Reduction' || gradRed.formula.op.name === 'Zero';
  }

  /** The arguments of this reduction for a forward call: the forward ones, eta (any dtype) and the saved values. */
  argumentsFor(forwardArgs: readonly GenredArg[], raw: RawRun, eta: ArrayLike<number>): GenredArg[] {
    const asRows = (data: FloatArray, dim: number): GenredArg =>
      raw.batchShape.length === 0 ? data : { data, shape: [...raw.batchShape, raw.nx, dim] };
    const etaData = raw.dtype === 'float32' ? Float32Array.from(eta) : Float64Array.from(eta);
    const args = [...forwardArgs.slice(0, this.etaPosition), asRows(etaData, this.etaDim)];
    if (this.savedPosition !== undefined) args.push(asRows(raw.val, this.savedDim));
    return args;
  }

  /**
   * Sums the raw gradient rows into the shape of the input `target`: over the rows of a parameter and over the
   * batch axes along which the input was broadcast. Accumulates in float64; returns the data dtype.
   */
  sumIntoInput(raw: RawRun, target: GenredArg): FloatArray {
    const { dim, cat } = this.wrt;
    const shaped = !ArrayBuffer.isView(target);
    const data = shaped ? target.data : target;
    const ownBatch = shaped ? target.shape.slice(0, target.shape.length - (cat === 2 ? 1 : 2)) : [];
    const perBatch =
      data.length /
      Math.max(
        1,
        ownBatch.reduce((p, n) => p * n, 1),
      );
    const sum = new Float64Array(data.length);
    const batches = raw.batchShape.reduce((p, n) => p * n, 1);
    for (let batch = 0; batch < batches; batch++) {
      const base = batchOffset(batch, raw.batchShape, ownBatch) * perBatch;
      for (let row = 0; row < raw.nx; row++) {
        const to = base + (cat === 2 ? 0 : row * dim);
        const from = (batch * raw.nx + row) * dim;
        for (let k = 0; k < dim; k++) sum[to + k] += raw.val[from + k];
      }
    }
    return raw.dtype === 'float32' ? Float32Array.from(sum) : sum;
  }
}

/** The text front end: a formula string and its aliases (`x = Vi(3)`, ...), as in pykeops. */
export class Genred<R extends ReductionName = ReductionName> extends NodeGenred {
  readonly formula: string;
  readonly aliases: readonly string[];

  /** `R`, the reduction, is inferred from `options.reduction`: it types the results of `call` and `callSync`. */
  constructor(formula: string, aliases: readonly string[], options: GenredOptions<R> = {}) {
    options = readOptions('Genred', options, GENRED_OPTION_KEYS);
    const parsed = parseFormula(formula, aliases);
    const parsed2 = options.formula2 === undefined ? undefined : parseFormula(options.formula2, aliases);
    super(parsed.node, {
      ...options,
      formula2: parsed2?.node,
      variables: mergeVariables([parsed.variables, parsed2?.variables ?? []]),
    });
    this.formula = formula;
    this.aliases = Object.freeze([...aliases]);
  }

  /**
   * Runs the reduction off the JS thread. The result's type follows the reduction (values, Int32Array indices,
   * or `{ values, indices }`) and the arguments' dtype (Float32Array in, Float32Array out).
   */
  override call<A extends readonly CallArg[]>(
    args: A,
    options: GenredDeviceCallOptions,
  ): Promise<GenredDeviceOutput<R>>;
  override call<A extends readonly CallArg[]>(
    args: A,
    options?: GenredCallOptions,
  ): Promise<GenredOutput<R, ValuesOf<A>>>;
  override call(
    args: readonly CallArg[],
    options?: GenredCallOptions,
  ): Promise<GenredResult | GenredDeviceResult> {
    return super.call(args, options);
  }

  /** Like `call`, but blocks the thread; typed likewise. */
  override callSync<A extends readonly CallArg[]>(
    args: A,
    options?: GenredCallOptions,
  ): GenredOutput<R, ValuesOf<A>> {
    return super.callSync(args, options) as GenredOutput<R, ValuesOf<A>>;
  }
}

/**
 * `ReductionRunner`: the engine behind Genred, for a reduction that is already built (a `GenredReduction` and
 * the input variables it reads), whatever built it: formula text (Genred), LazyTensor, or a symbolic gradient.
 * It validates a call, plans it, picks the backend (DeviceArray arguments and device outputs need the GPU;
 * `auto` takes the GPU when runtimeInfo() says CUDA works), compiles (or loads) the kernel once per dtype (and
 * GPU) and runs it.
 *
 * Exported API:
 *
 *     type SumScheme = 'auto' | 'direct_sum' | 'block_sum' | 'kahan_scheme';
 *     type DtypeAcc = 'auto' | 'float32' | 'float64';
 *     type Backend = 'auto' | 'cpu' | 'cuda';
 *     interface ReductionRunnerSpec {
 *       resolved: GenredReduction;              // from resolveGenredReduction (lib/formula/genred-reductions.ts)
 *       variables: readonly FormulaVariable[];  // every input the formula reads, any order, no duplicates
 *       argCount?: number;                      // default: highest position + 1 (more = ignored trailing args)
 *       sumScheme?: SumScheme; dtypeAcc?: DtypeAcc; backend?: Backend; threads?: number;
 *       label?: string;                         // names the reduction in error messages, e.g. 'Sum'
 *     }
 *     interface RunOptions {
 *       ranges?: GenredRanges; backend?: Backend; threads?: number; device?: number;
 *       signal?: AbortSignal;                   // aborts the call (ERR_ABORTED); a CPU kernel stops within a tile
 *     }
 *     interface RawRun extends RawReductionOutput {   // { val, idx, rows } + how the call was planned
 *       dtype: Dtype; nx: number; ny: number; batchShape: readonly number[];
 *     }
 *     class ReductionRunner {
 *       constructor(spec: ReductionRunnerSpec);
 *       readonly resolved: GenredReduction; readonly reduction: Reduction; readonly dimOut: number;
 *       readonly variables: readonly FormulaVariable[]; readonly argCount: number;
 *       readonly sumScheme: 'direct_sum' | 'block_sum' | 'kahan_scheme'; readonly dtypeAcc: DtypeAcc;
 *       readonly backend: Backend; readonly threads: number;   // 0 = one per core
 *       call(args: readonly CallArg[], options?: RunOptions): Promise<GenredResult>;
 *       callSync(args: readonly CallArg[], options?: RunOptions): GenredResult;
 *       callToDevice(args: readonly CallArg[], options?: RunOptions): Promise<GenredDeviceResult>;
 *       callRaw(args: readonly CallArg[], options?: RunOptions): Promise<RawRun>;  // before postprocess
 *       callRawSync(args: readonly CallArg[], options?: RunOptions): RawRun;
 *       kernelInfo(dtype: Dtype, backend?: 'cpu' | 'cuda', device?: number): GenredKernelInfo | undefined;
 *     }
 *     function mergeVariables(lists: readonly (readonly FormulaVariable[])[]): FormulaVariable[];
 */
import { generateCpuKernel } from '../codegen/cpu';
import { type CudaKernels, generateCudaKernels } from '../codegen/cuda';
import { KeOpsError } from '../errors';
import type { FormulaVariable } from '../formula/aliases';
import type { GenredReduction, GenredResult, RawReductionOutput } from '../formula/genred-reductions';
import type { Reduction } from '../formula/reduction';
import { type AcquiredCpuKernel, acquireCpuKernel, acquireCpuKernelSync, type CpuKernelSpec } from './cache';
import { runCpuReduction, runCpuReductionSync, throwIfAborted } from './cpu/run';
import {
  type CallArg,
  type Dtype,
  type GenredRanges,
  planReduction,
  type ReductionPlan,
  snapshotPlan,
} from './plan';
import { describeValue } from '../validate';
import { checkIndexRange, checkOutputSize } from './limits';
import {
  type CudaDevice,
  cudaUsable,
  cudaUsableSync,
  openCudaDevice,
  openCudaDeviceSync,
} from './cuda/device';
import { DeviceArray } from './cuda/device-array';
import { knownRuntimeInfo } from './cuda/runtime';
import { type AcquiredCudaKernels, acquireCudaKernels, acquireCudaKernelsSync } from './cuda/kernels';
import { WARP_SIZE } from './cuda/launch';
import { type CudaDeviceOutput, runCudaReduction, runCudaReductionSync } from './cuda/run';

export type SumScheme = 'auto' | 'direct_sum' | 'block_sum' | 'kahan_scheme';
export type DtypeAcc = 'auto' | 'float32' | 'float64';
export type Backend = 'auto' | 'cpu' | 'cuda';

export interface ReductionRunnerSpec {
  readonly resolved: GenredReduction;
  /** Every input variable the reduction reads (any order; one entry per position). */
  readonly variables: readonly FormulaVariable[];
  /** Number of arguments a call takes; default: the highest variable position + 1. */
  readonly argCount?: number;
  /** 'auto': block_sum for sum-type reductions, direct_sum otherwise. */
  readonly sumScheme?: SumScheme;
  /** Accumulator type; 'auto' = the data dtype. float64 accumulation of float32 data: sum-type only. */
  readonly dtypeAcc?: DtypeAcc;
  /** 'auto' (default): the GPU when one works (runtimeInfo()), else the CPU. 'cuda' without a GPU: ERR_NO_GPU. */
  readonly backend?: Backend;
  /** Worker threads for the CPU backend; default: one per core. */
  readonly threads?: number;
  /** How error messages name the reduction (default: the engine reduction). */
  readonly label?: string;
}

export interface RunOptions {
  /** Block-sparse ranges (KeOps' 6-tuple); rows outside every block get the neutral value. */
  readonly ranges?: GenredRanges;
  readonly backend?: Backend;
  readonly threads?: number;
  /** GPU ordinal for the CUDA backend (default: that of the DeviceArray arguments, else 0). */
  readonly device?: number;
  /**
   * Aborts the call with ERR_ABORTED: checked before planning, compiling and running; a running CPU kernel
   * stops within about one tile of work and frees what it holds. (A CUDA launch runs to its end.)
   */
  readonly signal?: AbortSignal;
}

/** A result kept on the GPU (`output: 'device'`): the shapes of GenredResult, with DeviceArrays. */
export type GenredDeviceResult = DeviceArray | { values: DeviceArray; indices: DeviceArray };

/** The raw engine output of a call with how it was planned (needed to backpropagate through it). */
export interface RawRun extends RawReductionOutput {
  readonly dtype: Dtype;
  /** Output rows per batch entry and reduced rows. */
  readonly nx: number;
  readonly ny: number;
  readonly batchShape: readonly number[];
}

/** How a kernel was obtained, for diagnostics and tests. */
export interface GenredKernelInfo {
  readonly dtype: Dtype;
  readonly backend: 'cpu' | 'cuda';
  readonly key: string;
  /** The CPU kernel's cache entry ('' for CUDA images). */
  readonly path: string;
  readonly origin: AcquiredCpuKernel['origin'];
  readonly compileMs: number;
  /**
   * CUDA: whether the kernels use tensor cores (the screening of float32 k-NN searches over SqDist, D >= 32, on
   * compute capability 8.0 and later; the results are those of the exact kernels). false on the CPU.
   */
  readonly tensorCores: boolean;
}

interface Prepared {
  readonly plan: ReductionPlan;
  readonly threads: number;
}

/** Where a call runs. */
type Target = { readonly backend: 'cpu' } | { readonly backend: 'cuda'; readonly ordinal: number };

const SUM_SCHEMES: readonly SumScheme[] = ['auto', 'direct_sum', 'block_sum', 'kahan_scheme'];
const DTYPE_ACCS: readonly DtypeAcc[] = ['auto', 'float32', 'float64'];
const BACKENDS: readonly Backend[] = ['auto', 'cpu', 'cuda'];

function invalid(message: string): KeOpsError {
  return new KeOpsError('ERR_INVALID_ARGUMENT', message);
}

function checkChoice<T extends string>(what: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw invalid(
      `${what} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describeValue(value)}`,
    );
  }
  return value as T;
}

/** undefined → 0 (one thread per core). */
function checkThreads(value: unknown): number {
  if (value === undefined) return 0;
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw invalid(`threads must be an integer >= 1, got ${describeValue(value)}`);
  }
  return value as number;
}

/**
 * Merges variable lists (e.g. of a formula and its weight formula) into one per position, sorted; a position
 * declared with two different dims or categories is an ERR_ALIAS. A named declaration wins over an unnamed one.
 */
export function mergeVariables(lists: readonly (readonly FormulaVariable[])[]): FormulaVariable[] {
  const byPos = new Map<number, FormulaVariable>();
  for (const v of lists.flat()) {
    const seen = byPos.get(v.pos);
    if (seen !== undefined && (seen.dim !== v.dim || seen.cat !== v.cat)) {
      throw new KeOpsError('ERR_ALIAS', `position ${v.pos} is declared twice, differently`);
    }
    if (seen === undefined || (seen.name === undefined && v.name !== undefined)) byPos.set(v.pos, v);
  }
  return [...byPos.values()].sort((a, b) => a.pos - b.pos);
}

export class ReductionRunner {
  readonly resolved: GenredReduction;
  /** The engine reduction, e.g. `Sum_Reduction(...,0)`. */
  readonly reduction: Reduction;
  /** Width of one output row (of each part, for value+index reductions). */
  readonly dimOut: number;
  readonly variables: readonly FormulaVariable[];
  readonly argCount: number;
  readonly sumScheme: Exclude<SumScheme, 'auto'>;
  readonly dtypeAcc: DtypeAcc;
  readonly backend: Backend;
  /** 0 = one per core. */
  readonly threads: number;

  /** Kernels by dtype, compiled on first use; a failed compilation is forgotten so that a later call retries. */
  private readonly pendingKernels = new Map<Dtype, Promise<AcquiredCpuKernel>>();
  private readonly readyKernels = new Map<Dtype, AcquiredCpuKernel>();
  private readonly kernelSpecs = new Map<Dtype, CpuKernelSpec>();
  /** CUDA kernels by dtype and GPU, likewise. */
  private readonly pendingCudaKernels = new Map<string, Promise<AcquiredCudaKernels>>();
  private readonly readyCudaKernels = new Map<string, AcquiredCudaKernels>();
  /** Generated CUDA sources by dtype and tensor-core use (`float32/tc`). */
  private readonly cudaSources = new Map<string, CudaKernels>();

  constructor(spec: ReductionRunnerSpec) {
    if (typeof spec !== 'object' || spec === null) throw invalid('ReductionRunner needs a spec object');
    if (typeof spec.resolved?.postprocess !== 'function' || !Array.isArray(spec.variables)) {
      throw invalid('ReductionRunner needs { resolved, variables } (see resolveGenredReduction)');
    }
    this.resolved = spec.resolved;
    this.reduction = spec.resolved.reduction;
    this.dimOut = spec.resolved.dimOut;
    this.variables = Object.freeze(mergeVariables([spec.variables]));
    const needed = this.variables.length === 0 ? 0 : this.variables[this.variables.length - 1].pos + 1;
    const argCount = spec.argCount ?? needed;
    if (!Number.isSafeInteger(argCount) || argCount < needed) {
      throw invalid(`argCount must be an integer >= ${needed} (the variables' positions), got ${argCount}`);
    }
    this.argCount = argCount;

    const label = spec.label ?? String(this.reduction);
    const sumType = this.reduction.def.sumType;
    const scheme = checkChoice('sumScheme', spec.sumScheme ?? 'auto', SUM_SCHEMES);
    if (!sumType && (scheme === 'block_sum' || scheme === 'kahan_scheme')) {
      throw invalid(`sumScheme '${scheme}' applies to sum-type reductions only, not to ${label}`);
    }
    this.sumScheme = scheme === 'auto' ? (sumType ? 'block_sum' : 'direct_sum') : scheme;
    this.dtypeAcc = checkChoice('dtypeAcc', spec.dtypeAcc ?? 'auto', DTYPE_ACCS);
    if (!sumType && this.dtypeAcc === 'float64') {
      throw invalid(`dtypeAcc 'float64' applies to sum-type reductions only, not to ${label}`);
    }
    this.backend = checkChoice('backend', spec.backend ?? 'auto', BACKENDS);
    this.threads = checkThreads(spec.threads);
  }

  /** Runs the reduction off the JS thread (compiling first if needed). Rejects with a KeOpsError. */
  async call(args: readonly CallArg[], options: RunOptions = {}): Promise<GenredResult> {
    return this.resolved.postprocess(await this.callRaw(args, options));
  }

  /** Like `call`, but blocks the thread, compilation included: for scripts. */
  callSync(args: readonly CallArg[], options: RunOptions = {}): GenredResult {
    return this.resolved.postprocess(this.callRawSync(args, options));
  }

  /**
   * Runs on a GPU and keeps the result there. Reductions whose result is the raw output (Sum, Min, ArgKMin...)
   * never copy it to the host; the others (LogSumExp, SoftMax) finish on the host and upload the result.
   */
  async callToDevice(args: readonly CallArg[], options: RunOptions = {}): Promise<GenredDeviceResult> {
    const prepared = snapshot(this.prepare(args, options));
    const release = holdDeviceInputs(prepared.plan);
    try {
      return await this.runToDevice(prepared, options);
    } finally {
      release();
    }
  }

  private async runToDevice(prepared: Prepared, options: RunOptions): Promise<GenredDeviceResult> {
    const { plan, target } = await this.withTarget(prepared, options, true);
    throwIfAborted(options.signal);
    if (target.backend !== 'cuda') throw new KeOpsError('ERR_INTERNAL', 'device output planned on the CPU');
    const device = await openCudaDevice(target.ordinal);
    const acquired = await this.acquireCuda(plan.dtype, device);
    if (this.resolved.rawIsResult) {
      const out = await runCudaReduction(device, acquired, plan, {
        output: 'device',
        ranged: isRanged(options),
      });
      return this.deviceResult(out, plan, device);
    }
    const raw = await runCudaReduction(device, acquired, plan, { output: 'host', ranged: isRanged(options) });
    const result = this.resolved.postprocess(raw);
    if (result instanceof Float32Array || result instanceof Float64Array || result instanceof Int32Array) {
      return DeviceArray.from(result, { device: device.ordinal });
    }
    return {
      values: await DeviceArray.from(result.values, { device: device.ordinal }),
      indices: await DeviceArray.from(result.indices, { device: device.ordinal }),
    };
  }

  /** The raw engine output (before `resolved.postprocess`), e.g. to backpropagate through the reduction. */
  async callRaw(args: readonly CallArg[], options: RunOptions = {}): Promise<RawRun> {
    const direct = this.prepare(args, options);
    // The usual server case: the addon takes its copy of the inputs before this call returns.
    const started = this.startCpuRunNow(direct, options);
    if (started !== undefined) return withPlan(await started, direct.plan);
    const prepared = snapshot(direct);
    const release = holdDeviceInputs(prepared.plan);
    try {
      return await this.runRaw(prepared, options);
    } finally {
      release();
    }
  }

  private async runRaw(prepared: Prepared, options: RunOptions): Promise<RawRun> {
    const { plan, threads, target } = await this.withTarget(prepared, options, false);
    throwIfAborted(options.signal);
    if (target.backend === 'cuda') {
      const device = await openCudaDevice(target.ordinal);
      const acquired = await this.acquireCuda(plan.dtype, device);
      return withPlan(
        await runCudaReduction(device, acquired, plan, { output: 'host', ranged: isRanged(options) }),
        plan,
      );
    }
    const { kernel } = this.readyKernels.get(plan.dtype) ?? (await this.acquire(plan.dtype));
    return withPlan(
      await runCpuReduction(kernel, plan, this.reduction.layout, threads, options.signal),
      plan,
    );
  }

  callRawSync(args: readonly CallArg[], options: RunOptions = {}): RawRun {
    const { plan, threads } = this.prepare(args, options);
    const target = this.targetSync(plan, options, false);
    if (target.backend === 'cuda') {
      const device = openCudaDeviceSync(target.ordinal);
      const key = `${plan.dtype}/${device.ordinal}`;
      let acquired = this.readyCudaKernels.get(key);
      if (acquired === undefined) {
        acquired = acquireCudaKernelsSync(this.cudaSource(plan.dtype, device), device);
        this.readyCudaKernels.set(key, acquired);
      }
      return withPlan(
        runCudaReductionSync(device, acquired, plan, { output: 'host', ranged: isRanged(options) }),
        plan,
      );
    }
    let acquired = this.readyKernels.get(plan.dtype);
    if (acquired === undefined) {
      acquired = acquireCpuKernelSync(this.kernelSpec(plan.dtype));
      this.readyKernels.set(plan.dtype, acquired);
    }
    return withPlan(runCpuReductionSync(acquired.kernel, plan, this.reduction.layout, threads), plan);
  }

  /**
   * How this runner obtained its kernel for `dtype` (undefined before the first call with that dtype); the CPU
   * kernel unless `backend` says 'cuda' (GPU 0 unless `device`).
   */
  kernelInfo(dtype: Dtype, backend: 'cpu' | 'cuda' = 'cpu', device = 0): GenredKernelInfo | undefined {
    if (backend === 'cuda') {
      const k = this.readyCudaKernels.get(`${dtype}/${device}`);
      return (
        k && {
          dtype,
          backend,
          key: k.key,
          path: '',
          origin: k.origin,
          compileMs: k.compileMs,
          tensorCores: k.kernels.tensorCores,
        }
      );
    }
    const k = this.readyKernels.get(dtype);
    return (
      k && {
        dtype,
        backend,
        key: k.key,
        path: k.path,
        origin: k.origin,
        compileMs: k.compileMs,
        tensorCores: false,
      }
    );
  }

  private deviceResult(out: CudaDeviceOutput, plan: ReductionPlan, device: CudaDevice): GenredDeviceResult {
    const { dimVal, dimIdx } = this.reduction.layout;
    const rows = out.rows;
    const empty = (dtype: 'float32' | 'float64' | 'int32', length: number): DeviceArray =>
      // Zero rows: an empty array still has a handle (uploading nothing allocates nothing).
      DeviceArray.wrap(
        device,
        device.uploadSync(
          dtype === 'int32'
            ? new Int32Array(length)
            : dtype === 'float32'
              ? new Float32Array(length)
              : new Float64Array(length),
        ),
        dtype,
        length,
      );
    const values = () => out.val ?? empty(plan.dtype, rows * dimVal);
    const indices = () => out.idx ?? empty('int32', rows * dimIdx);
    switch (this.resolved.outputKind) {
      case 'values':
        return values();
      case 'indices':
        return indices();
      default:
        return { values: values(), indices: indices() };
    }
  }

  private acquireCuda(dtype: Dtype, device: CudaDevice): Promise<AcquiredCudaKernels> | AcquiredCudaKernels {
    const key = `${dtype}/${device.ordinal}`;
    const ready = this.readyCudaKernels.get(key);
    if (ready !== undefined) return ready;
    let pending = this.pendingCudaKernels.get(key);
    if (pending === undefined) {
      pending = acquireCudaKernels(this.cudaSource(dtype, device), device)
        .then((k) => {
          if (!this.readyCudaKernels.has(key)) this.readyCudaKernels.set(key, k);
          return k;
        })
        .finally(() => this.pendingCudaKernels.delete(key));
      this.pendingCudaKernels.set(key, pending);
    }
    return pending;
  }

  /**
   * The kernels for `device`: with tensor cores on compute capability 8.0 and later (mma.sync with TF32 operands,
   * used only where they leave the results unchanged: the screening of k-NN searches), when a block of one warp
   * fits the device's shared memory.
   */
  private cudaSource(dtype: Dtype, device: CudaDevice): CudaKernels {
    const { computeCapability, sharedMemoryPerBlock, sharedMemoryPerBlockOptin } = device.info;
    const generate = (tensorCores: boolean): CudaKernels => {
      const key = `${dtype}/${tensorCores ? 'tc' : 'fma'}`;
      let kernels = this.cudaSources.get(key);
      if (kernels === undefined) {
        kernels = generateCudaKernels(this.reduction, {
          dtype,
          dtypeAcc: this.dtypeAcc === 'auto' ? dtype : this.dtypeAcc,
          sumScheme: this.sumScheme,
          positions: this.positions(),
          tensorCores,
        });
        this.cudaSources.set(key, kernels);
      }
      return kernels;
    };
    if (computeCapability[0] < 8) return generate(false);
    const kernels = generate(true);
    const warpBytes = WARP_SIZE * kernels.sharedBytesPerThread + kernels.sharedBytesPerBlock;
    return kernels.warpBlocks && warpBytes > Math.max(sharedMemoryPerBlock, sharedMemoryPerBlockOptin)
      ? generate(false)
      : kernels;
  }

  /** One compilation per dtype however many calls wait for it; a failure is forgotten so a later call retries. */
  private acquire(dtype: Dtype): Promise<AcquiredCpuKernel> {
    let pending = this.pendingKernels.get(dtype);
    if (pending === undefined) {
      pending = acquireCpuKernel(this.kernelSpec(dtype))
        .then((k) => {
          if (!this.readyKernels.has(dtype)) this.readyKernels.set(dtype, k);
          return k;
        })
        .finally(() => this.pendingKernels.delete(dtype));
      this.pendingKernels.set(dtype, pending);
    }
    return pending;
  }

  /**
   * Starts the CPU run at once when nothing has to be awaited first (CPU target known, kernel loaded), so that
   * the addon copies the inputs before control returns to the caller; undefined otherwise.
   */
  private startCpuRunNow(prepared: Prepared, options: RunOptions): Promise<RawReductionOutput> | undefined {
    const { plan, threads } = prepared;
    if (plan.device !== undefined) return undefined;
    const backend = options.backend ?? this.backend;
    if (backend === 'cuda') return undefined;
    if (backend === 'auto') {
      const known = knownRuntimeInfo();
      if (known === undefined || (known.backend === 'cuda' && known.devices.length > 0)) return undefined;
    }
    const ready = this.readyKernels.get(plan.dtype);
    if (ready === undefined) return undefined;
    return runCpuReduction(ready.kernel, plan, this.reduction.layout, threads, options.signal);
  }

  private prepare(args: readonly CallArg[], options: RunOptions): Prepared {
    if (typeof options !== 'object' || options === null) throw invalid('call options must be an object');
    checkChoice('backend', options.backend ?? this.backend, BACKENDS);
    if (options.device !== undefined && (!Number.isSafeInteger(options.device) || options.device < 0)) {
      throw invalid(`device must be an integer >= 0, got ${describeValue(options.device)}`);
    }
    const threads = options.threads === undefined ? this.threads : checkThreads(options.threads);
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
      throw invalid('signal must be an AbortSignal');
    }
    throwIfAborted(options.signal);
    const plan = planReduction(args, this.variables, this.argCount, this.reduction.tag, options.ranges);
    if (this.dtypeAcc === 'float32' && plan.dtype === 'float64') {
      throw invalid("dtypeAcc 'float32' cannot accumulate float64 data");
    }
    const layout = this.reduction.layout;
    checkIndexRange(plan.ny, layout, this.reduction.def.name);
    checkOutputSize(plan.jobs.length * plan.nx, layout, plan.dtype === 'float32' ? 4 : 8);
    return { plan, threads };
  }

  private async withTarget(
    prepared: Prepared,
    options: RunOptions,
    deviceOutput: boolean,
  ): Promise<Prepared & { target: Target }> {
    const ordinal = targetOrdinal(prepared.plan, options);
    const backend = options.backend ?? this.backend;
    const gpu =
      backend === 'auto' && prepared.plan.device === undefined && !deviceOutput
        ? await cudaUsable(ordinal)
        : true;
    return { ...prepared, target: chooseTarget(prepared.plan, backend, gpu, ordinal, deviceOutput) };
  }

  private targetSync(plan: ReductionPlan, options: RunOptions, deviceOutput: boolean): Target {
    const ordinal = targetOrdinal(plan, options);
    const backend = options.backend ?? this.backend;
    const gpu =
      backend === 'auto' && plan.device === undefined && !deviceOutput ? cudaUsableSync(ordinal) : true;
    return chooseTarget(plan, backend, gpu, ordinal, deviceOutput);
  }

  /** Every argument position's declaration; a position no variable declares is read by nobody. */
  private positions(): { dim: number; cat: 0 | 1 | 2 }[] {
    const declared = new Map(this.variables.map((v) => [v.pos, v]));
    return Array.from({ length: this.argCount }, (_, pos) => {
      const v = declared.get(pos);
      return v === undefined ? { dim: 1, cat: 2 } : { dim: v.dim, cat: v.cat };
    });
  }

  private kernelSpec(dtype: Dtype): CpuKernelSpec {
    const known = this.kernelSpecs.get(dtype);
    if (known !== undefined) return known;
    const dtypeAcc: Dtype = this.dtypeAcc === 'auto' ? dtype : this.dtypeAcc;
    const generated = generateCpuKernel(this.reduction, {
      dtype,
      dtypeAcc,
      sumScheme: this.sumScheme,
      positions: this.positions(),
    });
    const spec: CpuKernelSpec = {
      source: generated.source,
      compilerFlags: generated.compilerFlags,
      description: JSON.stringify({
        reduction: this.reduction.hash,
        dtype,
        dtypeAcc,
        sumScheme: this.sumScheme,
        argCount: this.argCount,
      }),
    };
    this.kernelSpecs.set(dtype, spec);
    return spec;
  }
}

/**
 * An asynchronous call that must await something (compilation, the GPU probe) before its kernel starts works on
 * copies of its host inputs taken now, so that what the caller does with the arrays meanwhile (overwrite,
 * transfer, shrink) cannot change or break it.
 */
function snapshot(prepared: Prepared): Prepared {
  return { ...prepared, plan: snapshotPlan(prepared.plan) };
}

/** Holds the DeviceArray inputs of a call from its submission to its end (see DeviceArray.retain). */
function holdDeviceInputs(plan: ReductionPlan): () => void {
  if (plan.device === undefined) return () => undefined;
  const releases = plan.inputs
    .filter((i): i is DeviceArray => i instanceof DeviceArray)
    .map((a) => a.retain());
  return () => releases.forEach((release) => release());
}

function isRanged(options: RunOptions): boolean {
  return options.ranges !== undefined && options.ranges !== null;
}

/** The GPU of a call: its DeviceArrays', which `device` must match, else `device`, else 0. */
function targetOrdinal(plan: ReductionPlan, options: RunOptions): number {
  if (plan.device !== undefined && options.device !== undefined && options.device !== plan.device) {
    throw new KeOpsError(
      'ERR_DEVICE_MISMATCH',
      `the DeviceArray arguments live on GPU ${plan.device}, but the call asks for device ${options.device}`,
    );
  }
  return plan.device ?? options.device ?? 0;
}

/**
 * cpu, or cuda: DeviceArray arguments and device outputs need the GPU (`backend: 'cpu'` is then an error);
 * `auto` uses the GPU when `gpuUsable` (runtimeInfo() says CUDA works).
 */
function chooseTarget(
  plan: ReductionPlan,
  backend: Backend,
  gpuUsable: boolean,
  ordinal: number,
  deviceOutput: boolean,
): Target {
  const needsGpu = plan.device !== undefined || deviceOutput;
  if (backend === 'cpu') {
    if (needsGpu) {
      throw invalid(
        plan.device !== undefined
          ? "DeviceArray arguments need backend 'cuda' or 'auto', not 'cpu'"
          : "output: 'device' needs backend 'cuda' or 'auto', not 'cpu'",
      );
    }
    return { backend: 'cpu' };
  }
  if (backend === 'cuda' || needsGpu || gpuUsable) return { backend: 'cuda', ordinal };
  return { backend: 'cpu' };
}

function withPlan(raw: RawReductionOutput, plan: ReductionPlan): RawRun {
  return { ...raw, dtype: plan.dtype, nx: plan.nx, ny: plan.ny, batchShape: plan.batchShape };
}

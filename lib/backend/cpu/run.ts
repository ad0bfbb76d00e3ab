/**
 * Runs a planned reduction with a loaded CPU kernel: allocates the raw output (values in the data dtype, int32
 * indices), points every job at its slice of it, and makes one coarse native call. The async variant runs on
 * the addon's own thread pool, on copies of the inputs, and can be cancelled with an AbortSignal; the sync one
 * blocks (for scripts and tiny inputs).
 */
import type { ReductionLayout } from '../../formula/reduction';
import type { RawReductionOutput } from '../../formula/genred-reductions';
import { KeOpsError } from '../../errors';
import {
  type CpuKernelHandle,
  type CpuRunControl,
  type NativeCpuJob,
  nativeAddon,
  toKeOpsError,
} from '../native';
import { allocateOutput } from '../limits';
import type { ReductionPlan } from '../plan';

interface PreparedCpuRun {
  jobs: NativeCpuJob[];
  raw: RawReductionOutput;
}

function prepare(plan: ReductionPlan, layout: ReductionLayout): PreparedCpuRun {
  const { dimVal, dimIdx } = layout;
  const rows = plan.jobs.length * plan.nx;
  const { val, idx } = allocateOutput('the output', () => ({
    val: plan.dtype === 'float32' ? new Float32Array(rows * dimVal) : new Float64Array(rows * dimVal),
    idx: new Int32Array(rows * dimIdx),
  }));
  const jobs = plan.jobs.map((job, b): NativeCpuJob => ({
    args: job.args,
    outVal: dimVal > 0 ? val.subarray(b * plan.nx * dimVal, (b + 1) * plan.nx * dimVal) : null,
    outIdx: dimIdx > 0 ? idx.subarray(b * plan.nx * dimIdx, (b + 1) * plan.nx * dimIdx) : null,
    nx: plan.nx,
    ny: plan.ny,
    blocks: plan.blocks,
    intervals: plan.intervals,
    argElements: plan.argElements,
  }));
  return { jobs: rows > 0 ? jobs : [], raw: { val, idx, rows } };
}

/**
 * Calls this small run inline rather than on a worker: handing work to another thread and back costs ~100 µs,
 * far more than a few thousand pairs take to evaluate (microseconds), so the event loop waits less this way.
 */
const INLINE_PAIR_LIMIT = 4096;

/** ERR_ABORTED for a call whose signal fired, with the signal's reason as the cause. */
export function abortedError(signal: AbortSignal): KeOpsError {
  return new KeOpsError('ERR_ABORTED', 'the call was aborted by its AbortSignal', { cause: signal.reason });
}

/** Throws ERR_ABORTED if `signal` has fired: checked before each stage of a call (planning, compiling, running). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(signal);
}

/** `threads`: 0 = one per core. A `signal` that fires stops the kernel within about one tile of work. */
export async function runCpuReduction(
  kernel: CpuKernelHandle,
  plan: ReductionPlan,
  layout: ReductionLayout,
  threads: number,
  signal?: AbortSignal,
): Promise<RawReductionOutput> {
  throwIfAborted(signal);
  const { jobs, raw } = prepare(plan, layout);
  if (jobs.length === 0) return raw;
  if (plan.pairCount <= INLINE_PAIR_LIMIT) {
    try {
      nativeAddon().runCpuSync(kernel, jobs, threads);
    } catch (e) {
      throw toKeOpsError(e, 'running the CPU kernel');
    }
    return raw;
  }
  const control: CpuRunControl = {};
  const cancel = (): void => control.cancel?.();
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    await nativeAddon().runCpu(kernel, jobs, threads, control);
  } catch (e) {
    if (signal?.aborted) throw abortedError(signal);
    throw toKeOpsError(e, 'running the CPU kernel');
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
  return raw;
}

export function runCpuReductionSync(
  kernel: CpuKernelHandle,
  plan: ReductionPlan,
  layout: ReductionLayout,
  threads: number,
): RawReductionOutput {
  const { jobs, raw } = prepare(plan, layout);
  if (jobs.length > 0) {
    try {
      nativeAddon().runCpuSync(kernel, jobs, threads);
    } catch (e) {
      throw toKeOpsError(e, 'running the CPU kernel');
    }
  }
  return raw;
}

/**
 * One reduction call on a GPU: from a plan (lib/backend/plan.ts) and the loaded kernels to one coarse native
 * request — the buffers (arguments uploaded or already on the device, scratch, outputs), the launches with their
 * geometry (launch.ts) and parameters in the order of the kernels' signatures (lib/codegen/cuda.ts, "Launch
 * contract") — and back to typed arrays or DeviceArrays.
 */
import type { GenredValues } from '../../formula/genred-reductions';
import { KeOpsError } from '../../errors';
import type { ReductionPlan } from '../plan';
import type {
  NativeDeviceBuffer,
  NativeRunBuffer,
  NativeRunLaunch,
  NativeRunParam,
  NativeRunRequest,
} from './bindings';
import type { CudaDevice } from './device';
import { DeviceArray } from './device-array';
import type { AcquiredCudaKernels } from './kernels';
import {
  buildRangesLookup,
  chooseBlockSize,
  type CudaLaunchKernel,
  MAX_GRID_YZ,
  planCudaLaunch,
} from './launch';

export interface CudaRunOptions {
  /** Where the raw outputs go: host typed arrays, or DeviceArrays on the call's GPU. */
  readonly output: 'host' | 'device';
  /** Block-sparse call: the ranges kernel with the plan's row blocks. */
  readonly ranged: boolean;
  /** Budget of the split scheme's partial accumulators (bytes). */
  readonly maxPartialBytes?: number;
}

export interface CudaHostOutput {
  readonly val: GenredValues;
  readonly idx: Int32Array;
  readonly rows: number;
}

export interface CudaDeviceOutput {
  /** Absent when the reduction has no values (or no indices), or there are no output rows. */
  readonly val?: DeviceArray;
  readonly idx?: DeviceArray;
  readonly rows: number;
}

interface BuiltRequest {
  readonly request: NativeRunRequest;
  /** Index in the native result of each output, or -1. */
  readonly valResult: number;
  readonly idxResult: number;
}

const ptr = (buffer: number): NativeRunParam => (buffer < 0 ? null : { buffer });

export function buildCudaRequest(
  plan: ReductionPlan,
  acquired: AcquiredCudaKernels,
  device: CudaDevice,
  opts: CudaRunOptions,
): BuiltRequest {
  const { kernels, module } = acquired;
  const { dimVal, dimIdx } = kernels.layout;
  const batches = plan.jobs.length;
  const rows = batches * plan.nx;
  const bytes = plan.dtype === 'float32' ? 4 : 8;
  const buffers: NativeRunBuffer[] = [];
  const add = (buffer: NativeRunBuffer): number => buffers.push(buffer) - 1;

  const argBuffers = Array.from({ length: kernels.argSlots }, (_, k): number => {
    if (k >= plan.inputs.length || !plan.declared[k]) return -1; // a position no formula reads
    const input = plan.inputs[k];
    if (input instanceof DeviceArray) {
      if (input.device !== device.ordinal) {
        throw new KeOpsError(
          'ERR_DEVICE_MISMATCH',
          `argument ${k} lives on GPU ${input.device}, but this call runs on GPU ${device.ordinal}`,
        );
      }
      return add({ kind: 'existing', buffer: input.buffer });
    }
    return add({ kind: 'upload', data: input });
  });
  let valResult = -1;
  let idxResult = -1;
  let results = 0;
  const onDevice = opts.output === 'device';
  const outVal =
    dimVal > 0 && rows > 0 ? add({ kind: 'output', bytes: rows * dimVal * bytes, device: onDevice }) : -1;
  if (outVal >= 0) valResult = results++;
  const outIdx =
    dimIdx > 0 && rows > 0 ? add({ kind: 'output', bytes: rows * dimIdx * 4, device: onDevice }) : -1;
  if (outIdx >= 0) idxResult = results++;
  const launches: NativeRunLaunch[] = [];
  if (rows === 0) return { request: { buffers, launches }, valResult, idxResult };

  // Batch entries: element offsets of every argument, then of the outputs (see cuda_kernels.tpl).
  let offsets = -1;
  if (batches > 1) {
    const width = kernels.argSlots + 2;
    const table = new BigInt64Array(batches * width);
    plan.jobs.forEach((job, b) => {
      for (let k = 0; k < kernels.argSlots; k++) table[b * width + k] = BigInt(job.offsets[k] ?? 0);
      table[b * width + kernels.argSlots] = BigInt(b * plan.nx * dimVal);
      table[b * width + kernels.argSlots + 1] = BigInt(b * plan.nx * dimIdx);
    });
    offsets = add({ kind: 'upload', data: table });
  }

  const fn = (name: string) => {
    const f = module.functions.get(name);
    if (f === undefined) throw new KeOpsError('ERR_INTERNAL', `the CUDA module has no function ${name}`);
    return f;
  };
  const { oneD, split, splitMerge, ranges } = kernels.entries;
  const launchKernel: CudaLaunchKernel = {
    sharedBytesPerThread: kernels.sharedBytesPerThread,
    sharedBytesPerBlock: kernels.sharedBytesPerBlock,
    partialSlots: kernels.partialSlots,
    dtypeAcc: kernels.dtypeAcc,
    maxThreadsPerBlock: Math.min(...[oneD, split, splitMerge, ranges].map((n) => fn(n).maxThreadsPerBlock)),
    rowsPerThread: kernels.rowsPerThread,
    warpBlocks: kernels.warpBlocks,
  };
  const args: NativeRunParam = { struct: argBuffers };

  if (opts.ranged) {
    const block = chooseBlockSize(launchKernel, device.info);
    // An entry holds up to blockSize * rowsPerThread rows (kRows per thread, see the template).
    const lookup = buildRangesLookup(plan.blocks, block.blockSize * kernels.rowsPerThread);
    const entries = lookup.length / 4;
    const lookupBuffer = add({ kind: 'upload', data: lookup });
    const intervals = add({ kind: 'upload', data: BigInt64Array.from(plan.intervals, (x) => BigInt(x)) });
    launches.push({
      fn: fn(ranges).index,
      grid: [entries, 1, 1],
      block: block.blockSize,
      shared: block.sharedBytes,
      params: [
        plan.nx,
        plan.ny,
        args,
        ptr(outVal),
        ptr(outIdx),
        ptr(lookupBuffer),
        ptr(intervals),
        ptr(offsets),
        0,
      ],
    });
    return { request: { buffers, launches }, valResult, idxResult };
  }

  const geometry = planCudaLaunch(
    { nx: plan.nx, ny: plan.ny, batches },
    launchKernel,
    device.info,
    opts.maxPartialBytes === undefined ? {} : { maxPartialBytes: opts.maxPartialBytes },
  );
  const partialVal =
    geometry.scheme === 'split' ? add({ kind: 'scratch', bytes: geometry.partialValBytes }) : -1;
  const partialIdx =
    geometry.scheme === 'split' ? add({ kind: 'scratch', bytes: geometry.partialIdxBytes }) : -1;
  for (let chunk = 0; chunk < geometry.batchChunks; chunk++) {
    const begin = chunk * MAX_GRID_YZ;
    const z = Math.min(MAX_GRID_YZ, batches - begin);
    if (geometry.scheme === '1d') {
      launches.push({
        fn: fn(oneD).index,
        grid: [geometry.grid[0], 1, z],
        block: geometry.blockSize,
        shared: geometry.sharedBytes,
        params: [plan.nx, plan.ny, args, ptr(outVal), ptr(outIdx), ptr(offsets), begin],
      });
    } else {
      launches.push({
        fn: fn(split).index,
        grid: [geometry.grid[0], geometry.splits, z],
        block: geometry.blockSize,
        shared: geometry.sharedBytes,
        params: [
          plan.nx,
          plan.ny,
          args,
          geometry.slice,
          ptr(partialVal),
          ptr(partialIdx),
          ptr(offsets),
          begin,
        ],
      });
      launches.push({
        fn: fn(splitMerge).index,
        grid: [geometry.mergeBlocks, 1, z],
        block: geometry.blockSize,
        shared: 0,
        params: [
          plan.nx,
          geometry.splits,
          ptr(partialVal),
          ptr(partialIdx),
          ptr(outVal),
          ptr(outIdx),
          ptr(offsets),
          begin,
        ],
      });
    }
  }
  return { request: { buffers, launches }, valResult, idxResult };
}

function hostOutput(
  plan: ReductionPlan,
  built: BuiltRequest,
  results: readonly unknown[],
  acquired: AcquiredCudaKernels,
): CudaHostOutput {
  const { dimVal, dimIdx } = acquired.kernels.layout;
  const rows = plan.jobs.length * plan.nx;
  const valBuffer = built.valResult >= 0 ? (results[built.valResult] as ArrayBuffer) : undefined;
  const idxBuffer = built.idxResult >= 0 ? (results[built.idxResult] as ArrayBuffer) : undefined;
  const valLength = valBuffer === undefined ? 0 : rows * dimVal;
  const val =
    plan.dtype === 'float32'
      ? new Float32Array(valBuffer ?? new ArrayBuffer(0), 0, valLength)
      : new Float64Array(valBuffer ?? new ArrayBuffer(0), 0, valLength);
  const idx = new Int32Array(idxBuffer ?? new ArrayBuffer(0), 0, idxBuffer === undefined ? 0 : rows * dimIdx);
  return { val, idx, rows };
}

function deviceOutput(
  plan: ReductionPlan,
  built: BuiltRequest,
  results: readonly unknown[],
  acquired: AcquiredCudaKernels,
  device: CudaDevice,
): CudaDeviceOutput {
  const { dimVal, dimIdx } = acquired.kernels.layout;
  const rows = plan.jobs.length * plan.nx;
  return {
    rows,
    ...(built.valResult >= 0
      ? {
          val: DeviceArray.wrap(
            device,
            results[built.valResult] as NativeDeviceBuffer,
            plan.dtype,
            rows * dimVal,
          ),
        }
      : {}),
    ...(built.idxResult >= 0
      ? {
          idx: DeviceArray.wrap(
            device,
            results[built.idxResult] as NativeDeviceBuffer,
            'int32',
            rows * dimIdx,
          ),
        }
      : {}),
  };
}

export async function runCudaReduction(
  device: CudaDevice,
  acquired: AcquiredCudaKernels,
  plan: ReductionPlan,
  opts: CudaRunOptions & { output: 'host' },
): Promise<CudaHostOutput>;
export async function runCudaReduction(
  device: CudaDevice,
  acquired: AcquiredCudaKernels,
  plan: ReductionPlan,
  opts: CudaRunOptions & { output: 'device' },
): Promise<CudaDeviceOutput>;
export async function runCudaReduction(
  device: CudaDevice,
  acquired: AcquiredCudaKernels,
  plan: ReductionPlan,
  opts: CudaRunOptions,
): Promise<CudaHostOutput | CudaDeviceOutput> {
  const built = buildCudaRequest(plan, acquired, device, opts);
  const results =
    built.request.launches.length === 0 && built.valResult < 0 && built.idxResult < 0
      ? []
      : await device.run(acquired.module, built.request);
  return opts.output === 'host'
    ? hostOutput(plan, built, results, acquired)
    : deviceOutput(plan, built, results, acquired, device);
}

export function runCudaReductionSync(
  device: CudaDevice,
  acquired: AcquiredCudaKernels,
  plan: ReductionPlan,
  opts: CudaRunOptions & { output: 'host' },
): CudaHostOutput {
  const built = buildCudaRequest(plan, acquired, device, opts);
  const results =
    built.request.launches.length === 0 && built.valResult < 0 && built.idxResult < 0
      ? []
      : device.runSync(acquired.module, built.request);
  return hostOutput(plan, built, results, acquired);
}

/**
 * Launch geometry of the kernels of lib/codegen/cuda.ts (pure functions, testable without a GPU):
 *
 * - `chooseBlockSize`: KeOps' rule, min(192, maxThreadsPerBlock of the device and of the compiled kernel, shared
 *   memory / bytes per inner record), in whole warps when it can; records too wide for the default 48 KiB use the
 *   opt-in maximum (the runner must then raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
 * - `planCudaLaunch`: the 1D scheme, or the split scheme when the 1D grid gives the device's multiprocessors fewer
 *   than BLOCKS_PER_SM_TARGET blocks each (few output rows, many reduced rows: 10k rows make 27 blocks of
 *   2 × 192 rows for 132 SMs); the splits bring the grid to that target. Each split
 *   reduces a j-slice (a multiple of the block size) into partial accumulators that the merge kernel folds in a
 *   fixed order, so the result does not depend on scheduling.
 * - `buildRangesLookup`: the ranges kernel's table, one (row_begin, row_end, first_interval, interval_count)
 *   entry per block, from the plan's row blocks (lib/backend/plan.ts), which cover every output row: rows outside
 *   every range are blocks with no interval, and get the neutral value.
 * Batch entries are blockIdx.z, at most 65535 per launch (`batchChunks` launches with batch_begin).
 */
import { KeOpsError } from '../../errors';

/** KeOps' default block size (CUDA_BLOCK_SIZE). */
export const CUDA_BLOCK_SIZE = 192;
/** gridDim.z (and gridDim.y) limit. */
export const MAX_GRID_YZ = 65535;
/** Threads per warp. */
export const WARP_SIZE = 32;
const WARP = WARP_SIZE;
/**
 * Largest block of the kernels with a per-block tile: their warps share the tile, so more warps per block mean
 * more resident warps per SM (8 on an H100 at D = 128 instead of 5 with blocks of one warp and their own tile).
 */
const MAX_TILED_BLOCK = 256;
/** Blocks per multiprocessor the split scheme aims for (latency hiding needs a few resident blocks per SM). */
const BLOCKS_PER_SM_TARGET = 4;
/** Fewest j tiles a split reduces. */
const MIN_TILES_PER_SPLIT = 4;
/** Default budget for the split scheme's partial accumulators. */
const DEFAULT_MAX_PARTIAL_BYTES = 256 << 20;

export interface CudaLaunchDevice {
  readonly multiprocessors: number;
  readonly maxThreadsPerBlock: number;
  readonly sharedMemoryPerBlock: number;
  readonly sharedMemoryPerBlockOptin: number;
}

/** The parts of `CudaKernels` (lib/codegen/cuda.ts) that the geometry depends on. */
export interface CudaLaunchKernel {
  readonly sharedBytesPerThread: number;
  /**
   * Bytes of dynamic shared memory per block on top of the per-thread ones (a tile of fixed size: the tensor-core
   * kernels beyond D = 64); default 0. Such kernels get as many whole warps as fit, up to MAX_TILED_BLOCK threads.
   */
  readonly sharedBytesPerBlock?: number;
  readonly partialSlots: { readonly val: number; readonly idx: number };
  readonly dtypeAcc: 'float32' | 'float64';
  /**
   * CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK of the loaded kernel, when known: register-heavy formulas (wide
   * variables kept in registers, up to 255 per thread) cannot run 1024 threads per block.
   */
  readonly maxThreadsPerBlock?: number;
  /** Output rows per thread of the row kernels (1D, split, ranges); default 1. The merge kernel takes one. */
  readonly rowsPerThread?: number;
  /** Blocks must be whole warps (tensor-core kernels: mma.sync involves every lane of a warp). */
  readonly warpBlocks?: boolean;
}

export interface CudaBlockSize {
  readonly blockSize: number;
  /** Dynamic shared memory per block, bytes. */
  readonly sharedBytes: number;
  /** Whether `sharedBytes` exceeds the default per-block limit (the kernel attribute must be raised). */
  readonly sharedOptIn: boolean;
}

export function chooseBlockSize(kernel: CudaLaunchKernel, device: CudaLaunchDevice): CudaBlockSize {
  const perThread = kernel.sharedBytesPerThread;
  const perBlock = kernel.sharedBytesPerBlock ?? 0;
  if (perBlock > 0) return chooseTiledBlockSize(kernel, device, perThread, perBlock);
  const cap = Math.min(CUDA_BLOCK_SIZE, device.maxThreadsPerBlock, kernel.maxThreadsPerBlock ?? Infinity);
  const fit = (limit: number): number =>
    perThread === 0 ? cap : Math.min(cap, Math.floor(limit / perThread));
  const inWarps = (n: number): number => (n >= WARP ? n - (n % WARP) : n);
  let blockSize = inWarps(fit(device.sharedMemoryPerBlock));
  let sharedOptIn = false;
  if (blockSize < WARP && device.sharedMemoryPerBlockOptin > device.sharedMemoryPerBlock) {
    const larger = inWarps(fit(device.sharedMemoryPerBlockOptin));
    if (larger > blockSize) {
      blockSize = larger;
      sharedOptIn = blockSize * perThread > device.sharedMemoryPerBlock;
    }
  }
  if (kernel.warpBlocks === true && blockSize < WARP) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `these tensor-core kernels need blocks of ${WARP} threads, and this GPU or kernel allows ${blockSize} ` +
        `(${perThread} bytes of shared memory per thread, at most ${cap} threads per block)`,
    );
  }
  if (blockSize < 1) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `the reduced-index variables need ${perThread} bytes per row of shared memory, more than this GPU's ` +
        `${Math.max(device.sharedMemoryPerBlock, device.sharedMemoryPerBlockOptin)} bytes per block`,
    );
  }
  return { blockSize, sharedBytes: blockSize * perThread, sharedOptIn };
}

/** Kernels with a per-block tile: whole warps, as many as the opt-in shared memory takes, up to MAX_TILED_BLOCK. */
function chooseTiledBlockSize(
  kernel: CudaLaunchKernel,
  device: CudaLaunchDevice,
  perThread: number,
  perBlock: number,
): CudaBlockSize {
  const cap = Math.min(MAX_TILED_BLOCK, device.maxThreadsPerBlock, kernel.maxThreadsPerBlock ?? Infinity);
  const limit = Math.max(device.sharedMemoryPerBlock, device.sharedMemoryPerBlockOptin);
  const fit = perThread === 0 ? cap : Math.floor((limit - perBlock) / perThread);
  const threads = Math.min(cap, fit);
  const blockSize = threads - (threads % WARP);
  if (blockSize < WARP) {
    throw new KeOpsError(
      'ERR_FORMULA_TOO_LARGE',
      `these kernels need blocks of ${WARP} threads (${perBlock} bytes of shared memory per block and ${perThread} ` +
        `per thread), and this GPU or kernel allows ${Math.max(0, threads)} (${limit} bytes per block, at most ` +
        `${cap} threads)`,
    );
  }
  const sharedBytes = blockSize * perThread + perBlock;
  return { blockSize, sharedBytes, sharedOptIn: sharedBytes > device.sharedMemoryPerBlock };
}

export interface CudaLaunchSizes {
  /** Output rows and reduced rows per batch entry. */
  readonly nx: number;
  readonly ny: number;
  readonly batches: number;
}

export interface CudaLaunchPlan extends CudaBlockSize {
  readonly scheme: '1d' | 'split';
  /** Grid of the main kernel (x: row blocks, y: splits, z: batch entries of one launch). */
  readonly grid: readonly [number, number, number];
  /** Row blocks of the split scheme's merge kernel (one row per thread). */
  readonly mergeBlocks: number;
  /** Number of j-slices and their width (1 and ny for the 1D scheme). */
  readonly splits: number;
  readonly slice: number;
  /** Bytes of the partial accumulators (values, then indices) the split scheme needs; 0 for 1D. */
  readonly partialValBytes: number;
  readonly partialIdxBytes: number;
  /** Launches needed for all batch entries (gridDim.z <= 65535 each). */
  readonly batchChunks: number;
}

export function planCudaLaunch(
  sizes: CudaLaunchSizes,
  kernel: CudaLaunchKernel,
  device: CudaLaunchDevice,
  options: { readonly maxPartialBytes?: number } = {},
): CudaLaunchPlan {
  const { nx, ny, batches } = sizes;
  for (const [what, n] of Object.entries(sizes)) {
    if (!Number.isSafeInteger(n) || n < 0)
      throw new KeOpsError('ERR_INTERNAL', `planCudaLaunch: bad ${what} ${n}`);
  }
  const block = chooseBlockSize(kernel, device);
  const rowBlocks = Math.max(1, Math.ceil(nx / (block.blockSize * (kernel.rowsPerThread ?? 1))));
  const mergeBlocks = Math.max(1, Math.ceil(nx / block.blockSize));
  const zPerLaunch = Math.max(1, Math.min(batches, MAX_GRID_YZ));
  const batchChunks = Math.max(1, Math.ceil(batches / MAX_GRID_YZ));
  const oneD: CudaLaunchPlan = {
    ...block,
    scheme: '1d',
    grid: [rowBlocks, 1, zPerLaunch],
    mergeBlocks,
    splits: 1,
    slice: ny,
    partialValBytes: 0,
    partialIdxBytes: 0,
    batchChunks,
  };
  const blocks1d = rowBlocks * Math.max(1, batches);
  const target = BLOCKS_PER_SM_TARGET * device.multiprocessors;
  const tiles = Math.ceil(ny / block.blockSize);
  // Enough row blocks to give every multiprocessor several: the 1D scheme. Otherwise split j, keeping a few tiles
  // per split so the prologue and the partials stay a small part of each block's work.
  if (nx === 0 || blocks1d >= target || tiles < 2 * MIN_TILES_PER_SPLIT) return oneD;

  const accBytes = kernel.dtypeAcc === 'float64' ? 8 : 4;
  const bytesPerSplit =
    Math.max(1, batches) * nx * (kernel.partialSlots.val * accBytes + kernel.partialSlots.idx * 4);
  const budget = options.maxPartialBytes ?? DEFAULT_MAX_PARTIAL_BYTES;
  let splits = Math.min(
    Math.ceil(target / blocks1d),
    Math.floor(tiles / MIN_TILES_PER_SPLIT),
    MAX_GRID_YZ,
    Math.floor(budget / bytesPerSplit),
  );
  if (splits < 2) return oneD;
  // Slices are whole tiles; recount so that no split is empty.
  const slice = Math.ceil(tiles / splits) * block.blockSize;
  splits = Math.ceil(ny / slice);
  if (splits < 2) return oneD;
  return {
    ...block,
    scheme: 'split',
    grid: [rowBlocks, splits, zPerLaunch],
    mergeBlocks,
    splits,
    slice,
    partialValBytes: Math.max(1, batches) * splits * nx * kernel.partialSlots.val * accBytes,
    partialIdxBytes: Math.max(1, batches) * splits * nx * kernel.partialSlots.idx * 4,
    batchChunks,
  };
}

/**
 * The ranges kernel's lookup table from row blocks given as quads (rowBegin, rowEnd, firstInterval,
 * intervalCount), as in ReductionPlan.blocks: every block of more than `blockSize` rows is cut into several
 * entries sharing its intervals. One entry per CUDA block, 4 int64 each.
 */
export function buildRangesLookup(blocks: Float64Array, blockSize: number): BigInt64Array {
  if (blocks.length % 4 !== 0 || !Number.isSafeInteger(blockSize) || blockSize < 1) {
    throw new KeOpsError('ERR_INTERNAL', 'buildRangesLookup: blocks must be quads and blockSize >= 1');
  }
  const entries: bigint[] = [];
  for (let q = 0; q < blocks.length; q += 4) {
    const [rowBegin, rowEnd, first, count] = [blocks[q], blocks[q + 1], blocks[q + 2], blocks[q + 3]];
    for (let row = rowBegin; row < rowEnd; row += blockSize) {
      entries.push(BigInt(row), BigInt(Math.min(row + blockSize, rowEnd)), BigInt(first), BigInt(count));
    }
  }
  return BigInt64Array.from(entries);
}

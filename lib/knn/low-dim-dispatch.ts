/**
 * When `knn()` answers with the pruned low-dimensional search (prune.ts) instead of brute force: rows in memory
 * as Float32Array / Float64Array in the compute dtype, metric 'l2' or 'l1', a shape `lowDimKnnApplies` accepts,
 * finite values (brute force has its own answer for NaN: such rows are never ranked), and none of the options
 * that only the chunked brute force honours (excludeSelf, devices, chunkRows) or a memoryLimit below what the
 * pruned search holds. Both give the same ids and distance bytes, so the choice changes only the time.
 */
import type { Dtype, FloatArray } from '../backend/plan';
import type { KnnInput, KnnOptions, KnnResult } from './knn';
import { knnLowDim, lowDimKnnApplies } from './prune';

/** The rows of an in-memory input of the compute dtype, or undefined. */
function rowsInMemory(input: KnnInput, dtype: Dtype): FloatArray | undefined {
  if (!('data' in input)) return undefined;
  const { data } = input;
  if (dtype === 'float32' && data instanceof Float32Array && (input.dtype ?? 'float32') === 'float32')
    return data;
  if (dtype === 'float64' && data instanceof Float64Array && (input.dtype ?? 'float64') === 'float64')
    return data;
  return undefined;
}

function allFinite(data: FloatArray): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] - data[i] !== 0) return false;
  return true;
}

/**
 * The neighbours by the pruned search when it applies (see the file comment), else undefined. `dim`, `dtype`
 * and the options have been validated by `knn`.
 */
export async function knnLowDimIfWorthIt(
  queries: KnnInput,
  base: KnnInput,
  dim: number,
  dtype: Dtype,
  options: KnnOptions,
): Promise<KnnResult | undefined> {
  const metric = options.metric ?? 'l2';
  if (metric !== 'l2' && metric !== 'l1') return undefined;
  if (options.excludeSelf === true || options.devices !== undefined || options.chunkRows !== undefined) {
    return undefined;
  }
  const x = rowsInMemory(queries, dtype);
  const y = rowsInMemory(base, dtype);
  if (x === undefined || y === undefined) return undefined;
  const m = x.length / dim;
  const n = y.length / dim;
  const { k } = options;
  if (!lowDimKnnApplies({ dim, queries: m, base: n, k, metric })) return undefined;
  // Held at once: both clouds reordered, two kernel outputs of k + 1 ranks, the result, the trees.
  const bytes = dtype === 'float32' ? 4 : 8;
  const held = 2 * (m + n) * dim * bytes + 3 * m * (k + 1) * (bytes + 4) + 48 * (m + n);
  if (options.memoryLimit !== undefined && held > options.memoryLimit) return undefined;
  if (!allFinite(x) || !allFinite(y)) return undefined;
  const started = performance.now();
  const { ids, distances } = await knnLowDim(x, y, dim, k, {
    metric,
    threads: options.threads,
    signal: options.signal,
    backend: options.backend,
  });
  options.onProgress?.({ pairsDone: m * n, pairsTotal: m * n, elapsedMs: performance.now() - started });
  return { ids, distances, rows: m, k };
}

/**
 * Exact k-nearest neighbours: `knn(queries, base, { k, metric, ... })` → ids and distances, each row sorted by
 * (distance, id) — for 'ip' by decreasing inner product, then id. Runs on the chunked executor (any sizes,
 * bounded memory, inputs converted chunk by chunk), as the merge of partials over base chunks (plan.ts): the
 * result is the same bytes whatever the threads, chunk sizes and devices, and the same as merging the partials
 * of shards that other processes or machines computed.
 */
import { KeOpsError } from '../errors';
import type { Dtype, FloatArray } from '../backend/plan';
import { performance } from 'node:perf_hooks';
import {
  CHUNKED_OPTION_KEYS,
  type ChunkedOptions,
  DEFAULT_MEMORY_LIMIT,
  reduceChunked,
} from '../jobs/chunked';
import { INT32_INDEX_LIMIT } from '../jobs/partial';
import {
  allocateFloat,
  type StorageArray,
  type StorageDtype,
  type VectorSource,
  vectorsFromArray,
  STORAGE_DTYPES,
} from '../io/vector-source';
import type { KnnMetric } from './metric';
import { knnLowDimIfWorthIt } from './low-dim-dispatch';
import { KnnSearch, type KnnRows } from './plan';

/** Vectors: a VectorSource (files, lib/io), or rows in memory (`dtype` says 'bfloat16' for a Uint16Array of bfloat16). */
export type KnnInput =
  VectorSource | { readonly data: StorageArray; readonly dim: number; readonly dtype?: StorageDtype };

/** How a search runs: the chunked executor's settings (the base is the reduced axis, split over `devices`). */
export interface KnnRunOptions extends Pick<
  ChunkedOptions,
  'memoryLimit' | 'onProgress' | 'signal' | 'devices' | 'backend' | 'threads'
> {
  /** Upper bounds on the query-block and base-chunk rows the memory limit gives (tuning, tests). */
  readonly chunkRows?: { readonly queries?: number; readonly base?: number };
}

export interface KnnOptions extends KnnRunOptions {
  /** Neighbours per query, an integer >= 1 (ranks past the base's rows: id -1, distance +Infinity). */
  readonly k: number;
  /**
   * 'l2' (squared Euclidean distance, the default), 'euclidean', 'ip' (inner product, largest first), 'cosine'
   * (1 − cosine similarity), 'l1', or { formula } over x (query row) and y (base row), smallest = nearest.
   */
  readonly metric?: KnnMetric;
  /** k-NN graph: queries are the base rows and a query's own index is excluded (equal rows are kept). */
  readonly excludeSelf?: boolean;
  /** Compute dtype: default float32, float64 when an input is float64. */
  readonly dtype?: Dtype;
}

/** The neighbours of every query: `rows` × `k` ids and distances, row-major. */
export type KnnResult = KnnRows;

const SEARCH_KEYS = ['k', 'metric', 'excludeSelf', 'dtype'] as const;
const OPTION_KEYS: ReadonlySet<string> = new Set<string>([...SEARCH_KEYS, ...CHUNKED_OPTION_KEYS]);

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

/**
 * `input` as a VectorSource (in-memory arrays wrapped without copying, keeping `data`); `name` is used in
 * messages.
 */
export function vectorSourceOf(input: KnnInput, name: string): VectorSource {
  if (typeof input !== 'object' || input === null) {
    throw new KeOpsError('ERR_ARG_TYPE', `${name} must be a VectorSource or { data, dim, dtype? }`);
  }
  if ('data' in input) {
    // In memory: the rows stay visible as `data`, which the kernels read as they are when they need no conversion.
    const inMemory: VectorSource & { readonly data: StorageArray } = {
      ...vectorsFromArray(input.data, input.dim, { dtype: input.dtype, name }),
      data: input.data,
    };
    return inMemory;
  }
  const s = input as Partial<VectorSource>;
  if (
    typeof s.read !== 'function' ||
    !Number.isSafeInteger(s.rows) ||
    (s.rows as number) < 0 ||
    !Number.isSafeInteger(s.dim) ||
    (s.dim as number) < 1 ||
    !STORAGE_DTYPES.includes(s.dtype as StorageDtype)
  ) {
    throw new KeOpsError(
      'ERR_ARG_TYPE',
      `${name} must be a VectorSource ({ rows, dim, dtype, read(start, end) }) or { data, dim, dtype? }`,
    );
  }
  return input as VectorSource;
}

/** Exact k nearest neighbours in `base` of every row of `queries`. */
export async function knn(queries: KnnInput, base: KnnInput, options: KnnOptions): Promise<KnnResult> {
  if (typeof options !== 'object' || options === null) throw invalid('knn needs options, at least { k }');
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key))
      throw invalid(`unknown knn option '${key}' (known: ${[...OPTION_KEYS].join(', ')})`);
  }
  const q = vectorSourceOf(queries, 'queries');
  const b = vectorSourceOf(base, 'base');
  if (q.dim !== b.dim) {
    throw new KeOpsError('ERR_ARG_SHAPE', `queries have dim ${q.dim}, base rows dim ${b.dim}`);
  }
  if (options.excludeSelf === true && q.rows !== b.rows) {
    throw new KeOpsError(
      'ERR_ARG_SHAPE',
      `excludeSelf needs the queries to be the base rows: ${q.rows} queries, ${b.rows} base rows`,
    );
  }
  const search = new KnnSearch({
    dim: q.dim,
    k: options.k,
    metric: options.metric,
    excludeSelf: options.excludeSelf,
    dtype: options.dtype ?? (q.dtype === 'float64' || b.dtype === 'float64' ? 'float64' : 'float32'),
    backend: options.backend,
    threads: options.threads,
  });
  // Strategy dispatch, the one place where other exact strategies plug in: low-dimensional pruning
  // (low-dim-dispatch.ts, same results) for small dims, else the brute-force search over all pairs.
  const pruned = await knnLowDimIfWorthIt(queries, base, q.dim, search.dtype, options);
  if (pruned !== undefined) return pruned;
  return runKnnSearch(search, q, b, options);
}

/**
 * The neighbours of query rows [queryRange[0], queryRange[1]) (default: all) by brute force on the chunked
 * executor: `search.finish` of the merged partials over base chunks.
 */
export async function runKnnSearch(
  search: KnnSearch,
  queryInput: KnnInput,
  baseInput: KnnInput,
  options: KnnRunOptions & { readonly queryRange?: readonly [number, number] } = {},
): Promise<KnnRows> {
  const queries = vectorSourceOf(queryInput, 'queries');
  const base = vectorSourceOf(baseInput, 'base');
  const [q0, q1] = options.queryRange ?? [0, queries.rows];
  if (!Number.isSafeInteger(q0) || !Number.isSafeInteger(q1) || q0 < 0 || q1 < q0 || q1 > queries.rows) {
    throw invalid(`queryRange [${q0}, ${q1}) is not within the ${queries.rows} query rows`);
  }
  if (base.rows > INT32_INDEX_LIMIT - 1) {
    throw new KeOpsError(
      'ERR_INDEX_OVERFLOW',
      `${base.rows} base rows: ids are int32 (at most 2^31 − 1 rows)`,
    );
  }
  for (const s of [queries, base]) {
    if (s.dim !== search.dim) {
      throw new KeOpsError('ERR_ARG_SHAPE', `${s.name}: dim ${s.dim}, the search is over dim ${search.dim}`);
    }
  }
  const caps = options.chunkRows;
  if (caps !== undefined && (typeof caps !== 'object' || caps === null)) {
    throw invalid('chunkRows must be { queries?, base? }');
  }
  if (options.devices === undefined) await search.prepare({ signal: options.signal });
  if (search.ranks > search.passRanks) return runMultiPass(search, queries, base, q0, q1, options);
  const chunked: ChunkedOptions = {
    memoryLimit: options.memoryLimit,
    chunkRows: caps === undefined ? undefined : { output: caps.queries, reduced: caps.base },
    onProgress: options.onProgress,
    signal: options.signal,
    devices: options.devices,
    backend: options.backend ?? search.backend,
    threads: options.threads ?? search.threads,
  };
  const result = await reduceChunked(
    search.reducer,
    [
      directRows(queryInput, search)?.subarray(q0 * search.dim, q1 * search.dim) ??
        search.rowSource(queries, q0, q1 - q0),
      directRows(baseInput, search) ?? search.rowSource(base),
    ],
    chunked,
  );
  if (ArrayBuffer.isView(result) || result.indices instanceof BigInt64Array) {
    throw new KeOpsError('ERR_INTERNAL', 'the k-NN reduction returned no int32 indices');
  }
  return search.finishState(result.values, result.indices, q1 - q0, q0);
}

/**
 * Searches whose ranks take several kernel passes (k above MAX_PASS_RANKS): query blocks × base chunks sized
 * by the memory limit, each a `partial` merged into its block's lists.
 */
async function runMultiPass(
  search: KnnSearch,
  queries: VectorSource,
  base: VectorSource,
  q0: number,
  q1: number,
  options: KnnRunOptions,
): Promise<KnnRows> {
  if (options.devices !== undefined) {
    throw invalid(`devices: k = ${search.k} takes several passes per chunk, which run on one device`);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw invalid('onProgress must be a function');
  }
  const memoryLimit = options.memoryLimit ?? DEFAULT_MEMORY_LIMIT;
  if (!Number.isSafeInteger(memoryLimit) || memoryLimit < 1) {
    throw invalid(`memoryLimit must be a number of bytes >= 1, got ${String(memoryLimit)}`);
  }
  const cap = (v: number | undefined, what: string) => {
    if (v === undefined) return Infinity;
    if (!Number.isSafeInteger(v) || v < 1) throw invalid(`chunkRows.${what} must be an integer >= 1`);
    return v;
  };
  const bytes = search.dtype === 'float32' ? 4 : 8;
  // Per query row: two lists of ranks (block state, partial), two pass outputs, the row. Per base row: the row
  // converted, and its stored and float64 forms while converting.
  const perQuery = 32 * search.ranks + 2 * search.passRanks * (bytes + 4) + search.dim * bytes;
  const perBase = search.dim * (bytes + 16);
  if (memoryLimit < perQuery + perBase) {
    throw new KeOpsError(
      'ERR_MEMORY_LIMIT',
      `memoryLimit ${memoryLimit} bytes is below the minimum of ${perQuery + perBase} bytes for k = ${search.k}`,
    );
  }
  const M = q1 - q0;
  const N = base.rows;
  const block = Math.max(
    1,
    Math.min(cap(options.chunkRows?.queries, 'queries'), Math.floor(memoryLimit / 2 / perQuery)),
  );
  const chunk = Math.max(
    1,
    Math.min(cap(options.chunkRows?.base, 'base'), Math.floor(memoryLimit / 2 / perBase)),
  );
  const ids = new Int32Array(M * search.k);
  const distances = allocateFloat(search.dtype, M * search.k);
  const started = performance.now();
  let lastReport = -Infinity;
  let pairsDone = 0;
  const report = (force: boolean) => {
    const now = performance.now();
    if (options.onProgress === undefined || (!force && now - lastReport < 100)) return;
    lastReport = now;
    options.onProgress({ pairsDone, pairsTotal: M * N, elapsedMs: now - started });
  };
  for (let i0 = q0; i0 < q1; i0 += block) {
    const i1 = Math.min(q1, i0 + block);
    const rows = await search.readRows(queries, i0, i1);
    let lists = search.empty(i1 - i0);
    for (let j0 = 0; j0 < N; j0 += chunk) {
      const j1 = Math.min(N, j0 + chunk);
      const part = await search.partial(rows, await search.readRows(base, j0, j1), j0, {
        signal: options.signal,
      });
      lists = search.merge([lists, part]);
      pairsDone += (i1 - i0) * (j1 - j0);
      report(false);
    }
    const done = search.finish(lists, i0);
    ids.set(done.ids, (i0 - q0) * search.k);
    distances.set(done.distances, (i0 - q0) * search.k);
  }
  report(true);
  return { ids, distances, rows: M, k: search.k };
}

/** Rows in memory that the kernels read as they are (the compute dtype, no normalisation), without a copy. */
function directRows(input: KnnInput, search: KnnSearch): FloatArray | undefined {
  if (!('data' in input) || search.metric.normalize) return undefined;
  const data: unknown = input.data;
  if (search.dtype === 'float32' ? data instanceof Float32Array : data instanceof Float64Array) {
    return data as FloatArray;
  }
  return undefined;
}

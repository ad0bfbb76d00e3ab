/**
 * The exact k-NN search as mergeable pieces, for single runs (knn.ts), resumable jobs and shards on other
 * machines:
 *
 *     const search = new KnnSearch({ dim: 128, k: 10, metric: 'l2' });
 *     const q = await search.readRows(queries, q0, q1);               // stored rows -> compute dtype
 *     const a = await search.partial(q, await search.readRows(base, 0, n1), 0);
 *     const b = await search.partial(q, await search.readRows(base, n1, N), n1);
 *     const { ids, distances } = search.finish(search.merge([b, a]), q0);   // = knn(...) rows [q0, q1)
 *
 * A partial holds, per query row, the best `ranks` (k, plus one with excludeSelf) candidates of its base rows,
 * ordered by (ranked value, id) — the kernel's KMin_ArgKMin state, whose folds keep the earlier index among equal
 * values and whose merges compare indices on ties, so that merging partials of any split of the base gives the
 * candidates of one pass, byte for byte. `finish` drops the query's own index (excludeSelf), keeps k ranks and
 * turns ranked values into distances. `hash` identifies everything that determines the results (not the backend
 * or thread count, which do not change them on the CPU).
 */
import { createHash } from 'node:crypto';
import { KeOpsError } from '../errors';
import type { Dtype, FloatArray } from '../backend/plan';
import type { Backend } from '../backend/runner';
import { MAX_KMIN_WIDTH } from '../formula/reductions';
import { NodeGenred } from '../genred';
import { PAIRS_PER_CALL } from '../jobs/chunked';
import { INT32_INDEX_LIMIT, PartialReducer, PartialResult } from '../jobs/partial';
import type { RangeRowSource } from '../jobs/sources';
import {
  allocateFloat,
  convertToFloat,
  STORAGE_BYTES,
  type StorageArray,
  type StorageDtype,
  type VectorSource,
} from '../io/vector-source';
import { type KnnMetric, type MetricDef, resolveMetric } from './metric';

/** Version of the search semantics, part of `hash`: bump it when results of the same inputs change. */
const KNN_SEARCH_VERSION = 1;

export interface KnnSearchSpec {
  /** Dimension of every query and base row. */
  readonly dim: number;
  /** Neighbours per query (integer >= 1; ranks beyond the base's rows are id -1, distance +Infinity). */
  readonly k: number;
  /** Default 'l2'. */
  readonly metric?: KnnMetric;
  /** Queries are the base rows: a query's own index is never its neighbour (equal rows elsewhere are). */
  readonly excludeSelf?: boolean;
  /** Compute dtype (default float32). */
  readonly dtype?: Dtype;
  readonly backend?: Backend;
  /** CPU threads per kernel call (default one per core). */
  readonly threads?: number;
}

/** k neighbours of `rows` query rows, row-major: ids (-1 past the base) and distances (+Infinity there). */
export interface KnnRows {
  readonly ids: Int32Array;
  readonly distances: FloatArray;
  readonly rows: number;
  readonly k: number;
}

export interface KnnPartialOptions {
  readonly signal?: AbortSignal;
  /** GPU ordinal (CUDA backend). */
  readonly device?: number;
}

const SPEC_KEYS: ReadonlySet<string> = new Set([
  'dim',
  'k',
  'metric',
  'excludeSelf',
  'dtype',
  'backend',
  'threads',
]);

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

/** The largest k: the kernel keeps at most MAX_KMIN_WIDTH ranks per row (one more is needed by excludeSelf). */
export const MAX_KNN_K = MAX_KMIN_WIDTH;

export class KnnSearch {
  readonly dim: number;
  readonly k: number;
  readonly metric: MetricDef;
  readonly excludeSelf: boolean;
  readonly dtype: Dtype;
  readonly backend: Backend | undefined;
  readonly threads: number | undefined;
  /** Candidates kept per query row in partials: k, plus one for the query itself with excludeSelf. */
  readonly ranks: number;
  /** Content hash (hex sha256) of what determines the results: version, dim, k, metric, excludeSelf, dtype. */
  readonly hash: string;
  /** The engine reduction (KMin_ArgKMin over the metric formula, reduced over base rows) and its partials. */
  readonly reducer: PartialReducer;

  constructor(spec: KnnSearchSpec) {
    if (typeof spec !== 'object' || spec === null) throw invalid('the k-NN search spec must be an object');
    for (const key of Object.keys(spec)) {
      if (!SPEC_KEYS.has(key)) throw invalid(`unknown k-NN option '${key}'`);
    }
    const { dim, k } = spec;
    if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 1) {
      throw new KeOpsError('ERR_ARG_SHAPE', `dim must be an integer >= 1, got ${String(dim)}`);
    }
    const excludeSelf = spec.excludeSelf ?? false;
    if (typeof excludeSelf !== 'boolean') throw invalid('excludeSelf must be a boolean');
    const limit = MAX_KNN_K - (excludeSelf ? 1 : 0);
    if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 1) {
      throw invalid(`k must be an integer >= 1, got ${String(k)}`);
    }
    if (k > limit) {
      throw invalid(`k = ${k} is above ${limit}, the most neighbours one search keeps per query`);
    }
    const dtype = spec.dtype ?? 'float32';
    if (dtype !== 'float32' && dtype !== 'float64') {
      throw new KeOpsError('ERR_ARG_DTYPE', `dtype must be 'float32' or 'float64', got ${String(dtype)}`);
    }
    const { def, formula } = resolveMetric(spec.metric ?? 'l2', dim);
    this.dim = dim;
    this.k = k;
    this.metric = def;
    this.excludeSelf = excludeSelf;
    this.dtype = dtype;
    this.backend = spec.backend;
    this.threads = spec.threads;
    this.ranks = k + (excludeSelf ? 1 : 0);
    this.reducer = new PartialReducer(
      new NodeGenred(formula.node, {
        reduction: 'KMin_ArgKMin',
        k: this.ranks,
        axis: 1,
        variables: formula.variables,
        backend: spec.backend,
        threads: spec.threads,
      }),
    );
    this.hash = createHash('sha256')
      .update(
        JSON.stringify([
          'keops-knn',
          KNN_SEARCH_VERSION,
          dim,
          k,
          def.name,
          formula.toString(),
          def.normalize,
          def.negate,
          excludeSelf,
          dtype,
          this.reducer.reductionHash,
        ]),
      )
      .digest('hex');
    Object.freeze(this);
  }

  /**
   * Stored rows (`storageDtype`, whole rows of `dim`) in the compute dtype, into `target` when given (of the
   * right length and dtype). Cosine rows are scaled to unit norm in float64 first (zero rows stay zero).
   */
  convertRows(stored: StorageArray, storageDtype: StorageDtype, target?: FloatArray): FloatArray {
    const { dim, dtype } = this;
    if (stored.length % dim !== 0) {
      throw new KeOpsError('ERR_ARG_SHAPE', `${stored.length} values are not whole rows of dim ${dim}`);
    }
    const out = target ?? allocateFloat(dtype, stored.length);
    if (out.length !== stored.length || (dtype === 'float32') !== out instanceof Float32Array) {
      throw new KeOpsError('ERR_INTERNAL', `convertRows: target of ${out.length} values is not ${dtype}`);
    }
    if (!this.metric.normalize) return convertToFloat(stored, storageDtype, out);
    const wide = convertToFloat(stored, storageDtype, new Float64Array(stored.length));
    for (let at = 0; at < wide.length; at += dim) {
      let sq = 0;
      for (let c = 0; c < dim; c++) sq += wide[at + c] * wide[at + c];
      const norm = Math.sqrt(sq);
      if (norm > 0) for (let c = 0; c < dim; c++) wide[at + c] /= norm;
    }
    out.set(wide);
    return out;
  }

  /** Rows [start, end) of `source` in the compute dtype (see convertRows). */
  async readRows(source: VectorSource, start: number, end: number, target?: FloatArray): Promise<FloatArray> {
    if (source.dim !== this.dim) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${source.name}: dim ${source.dim}, the search is over dim ${this.dim}`,
      );
    }
    let stored: StorageArray;
    try {
      stored = await source.read(start, end);
    } catch (e) {
      if (e instanceof KeOpsError) throw e;
      throw new KeOpsError(
        'ERR_SOURCE',
        `${source.name}: reading rows [${start}, ${end}) failed: ${(e as Error)?.message ?? String(e)}`,
        { cause: e },
      );
    }
    if (!ArrayBuffer.isView(stored) || stored.length !== (end - start) * this.dim) {
      throw new KeOpsError(
        'ERR_SOURCE',
        `${source.name}: rows [${start}, ${end}) came back as ${ArrayBuffer.isView(stored) ? stored.length : 'no'} values, expected ${(end - start) * this.dim}`,
      );
    }
    if (stored.byteLength !== stored.length * STORAGE_BYTES[source.dtype]) {
      throw new KeOpsError(
        'ERR_SOURCE',
        `${source.name}: rows [${start}, ${end}) are not ${source.dtype} values`,
      );
    }
    return this.convertRows(stored, source.dtype, target);
  }

  /** `source` as a row source of a chunked run (reduceChunked), converted chunk by chunk. */
  rowSource(source: VectorSource, offset = 0, rows = source.rows - offset): RangeRowSource {
    return {
      rows,
      dtype: this.dtype,
      read: (start, end, target) => this.readRows(source, offset + start, offset + end, target),
    };
  }

  /** The partial of `queryRows` rows over no base row (the identity of merge). */
  empty(queryRows: number): PartialResult {
    return this.reducer.empty(queryRows, this.dtype);
  }

  /**
   * The best `ranks` candidates of each query row among `baseRows`, which are the global base rows
   * [baseStart, baseStart + n). Both arrays are rows in the compute dtype (readRows / convertRows).
   */
  async partial(
    queryRows: FloatArray,
    baseRows: FloatArray,
    baseStart: number,
    options: KnnPartialOptions = {},
  ): Promise<PartialResult> {
    const m = this.rowCount(queryRows, 'queryRows');
    const n = this.rowCount(baseRows, 'baseRows');
    if (!Number.isSafeInteger(baseStart) || baseStart < 0) {
      throw invalid(`baseStart must be an integer >= 0, got ${String(baseStart)}`);
    }
    if (baseStart + n > INT32_INDEX_LIMIT - 1) {
      throw new KeOpsError(
        'ERR_INDEX_OVERFLOW',
        `base rows reach ${baseStart + n}; ids are int32 (< 2^31 − 1)`,
      );
    }
    if (typeof options !== 'object' || options === null) throw invalid('options must be an object');
    const { signal, device } = options;
    checkAbort(signal);
    if (n === 0) return this.empty(m);
    if (m === 0) {
      const none = new Float64Array(0);
      const ops = this.reducer.ops;
      const slices = [[baseStart, baseStart + n] as const];
      return new PartialResult(
        this.reducer.reductionHash,
        this.dtype,
        0,
        ops.dimVal,
        ops.dimIdx,
        slices,
        none,
        none,
      );
    }
    // Pieces of at most PAIRS_PER_CALL pairs: an abort is seen between them.
    const size = Math.max(1, Math.floor(PAIRS_PER_CALL / m));
    const parts: PartialResult[] = [];
    for (let a = 0; a < n; a += size) {
      checkAbort(signal);
      const z = Math.min(n, a + size);
      const raw = await this.reducer.stateRunner.callRaw(
        [queryRows, baseRows.subarray(a * this.dim, z * this.dim)],
        { backend: this.backend, threads: this.threads, device, signal },
      );
      parts.push(this.reducer.fromRaw(raw, baseStart + a));
    }
    return parts.length === 1 ? parts[0] : this.reducer.merge(parts);
  }

  /** Merges partials of the same query rows over disjoint base slices (in any order: the same bytes). */
  merge(partials: readonly PartialResult[]): PartialResult {
    return this.reducer.merge(partials);
  }

  /** Parses a serialised partial of this search (PartialResult.toBytes). */
  fromBytes(bytes: Uint8Array): PartialResult {
    return this.reducer.fromBytes(bytes);
  }

  /** The neighbours of a partial's query rows, which are the global query rows [queryStart, ...). */
  finish(partial: PartialResult, queryStart = 0): KnnRows {
    if (partial.reduction !== this.reducer.reductionHash) {
      throw new KeOpsError('ERR_PARTIAL_MISMATCH', 'the partial result belongs to another search');
    }
    if (partial.dtype !== this.dtype) {
      throw new KeOpsError(
        'ERR_PARTIAL_MISMATCH',
        `a ${partial.dtype} partial result, the search is ${this.dtype}`,
      );
    }
    return this.finishState(partial.val, partial.idx, partial.rows, queryStart);
  }

  /**
   * @internal Neighbours from KMin_ArgKMin states: `rows` rows of `ranks` values and indices each, ordered by
   * (value, index), unreached slots index -1.
   */
  finishState(
    values: ArrayLike<number>,
    indices: ArrayLike<number>,
    rows: number,
    queryStart: number,
  ): KnnRows {
    if (!Number.isSafeInteger(queryStart) || queryStart < 0) {
      throw invalid(`queryStart must be an integer >= 0, got ${String(queryStart)}`);
    }
    const { k, ranks, excludeSelf } = this;
    const negate = this.metric.negate;
    const ids = new Int32Array(rows * k);
    const distances = allocateFloat(this.dtype, rows * k);
    for (let r = 0; r < rows; r++) {
      const self = excludeSelf ? queryStart + r : -2;
      let out = r * k;
      const end = out + k;
      for (let s = r * ranks; s < (r + 1) * ranks && out < end; s++) {
        const id = indices[s];
        if (id === self) continue;
        if (id < 0) break; // unreached slots come last
        if (id >= INT32_INDEX_LIMIT) {
          throw new KeOpsError('ERR_INDEX_OVERFLOW', `base row ${id} does not fit an int32 id`);
        }
        ids[out] = id;
        distances[out] = negate ? -values[s] : values[s];
        out++;
      }
      ids.fill(-1, out, end);
      distances.fill(Infinity, out, end);
    }
    return { ids, distances, rows, k };
  }

  private rowCount(rows: unknown, what: string): number {
    const expected = this.dtype === 'float32' ? Float32Array : Float64Array;
    if (!(rows instanceof expected)) {
      throw new KeOpsError(
        'ERR_ARG_DTYPE',
        `${what} must be a ${expected.name} (the search's compute dtype)`,
      );
    }
    if (rows.length % this.dim !== 0) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${what}: length ${rows.length} is not whole rows of dim ${this.dim}`,
      );
    }
    return rows.length / this.dim;
  }
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted)
    throw new KeOpsError('ERR_ABORTED', 'the k-NN search was aborted', { cause: signal.reason });
}

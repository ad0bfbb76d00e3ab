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
 * candidates of one pass, byte for byte. More ranks than one kernel pass keeps (MAX_PASS_RANKS) take passes of
 * one kernel that admits only the pairs after a row's last rank so far. `finish` drops the query's own index (excludeSelf), keeps k ranks and
 * turns ranked values into distances. `hash` identifies everything that determines the results (not the backend
 * or thread count, which do not change them on the CPU).
 */
import { createHash } from 'node:crypto';
import { KeOpsError } from '../errors';
import type { CallArg, Dtype, FloatArray } from '../backend/plan';
import type { Backend } from '../backend/runner';
import type { FormulaVariable } from '../formula/aliases';
import { parseFormula } from '../formula/index';
import type { Node } from '../formula/node';
import { MAX_KMIN_WIDTH } from '../formula/reductions';
import { NodeGenred } from '../genred';
import { PAIRS_PER_CALL } from '../jobs/chunked';
import {
  INT32_INDEX_LIMIT,
  PartialReducer,
  PartialResult,
  type RowSlice,
  unionSlices,
} from '../jobs/partial';
import type { RangeRowSource } from '../jobs/sources';
import {
  allocateFloat,
  convertToFloat,
  STORAGE_BYTES,
  type StorageArray,
  type StorageDtype,
  type VectorSource,
} from '../io/vector-source';
import { type KnnMetric, metricAliases, type MetricDef, resolveMetric } from './metric';
import { type CandidateLists, emptyLists, listsFromKernel, mergeLists } from './state';

/** Version of the search semantics, part of `hash`: bump it when results of the same inputs change. */
const KNN_SEARCH_VERSION = 1;

/** Ranks one kernel pass keeps per row (the KMin family's bound); more take several passes. */
export const MAX_PASS_RANKS = MAX_KMIN_WIDTH;

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
  /** @internal Ranks per kernel pass (default MAX_PASS_RANKS): smaller ones exercise the multi-pass search. */
  readonly passRanks?: number;
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
  'passRanks',
]);

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

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
  /** Ranks per kernel pass: `ranks` when they fit one pass (MAX_PASS_RANKS), else several passes. */
  readonly passRanks: number;
  /** Content hash (hex sha256) of what determines the results: version, dim, k, metric, excludeSelf, dtype. */
  readonly hash: string;
  /** The first pass: KMin_ArgKMin of the metric formula over base rows, `passRanks` ranks. */
  readonly reducer: PartialReducer;
  /** Searches of several passes: the ranks after a row's last one so far, in (value, id) order. */
  private readonly after: PartialReducer | undefined;

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
    if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 1 || k >= INT32_INDEX_LIMIT - 1) {
      throw invalid(`k must be an integer >= 1, got ${String(k)}`);
    }
    const dtype = spec.dtype ?? 'float32';
    if (dtype !== 'float32' && dtype !== 'float64') {
      throw new KeOpsError('ERR_ARG_DTYPE', `dtype must be 'float32' or 'float64', got ${String(dtype)}`);
    }
    const passLimit = spec.passRanks ?? MAX_PASS_RANKS;
    if (!Number.isSafeInteger(passLimit) || passLimit < 1 || passLimit > MAX_PASS_RANKS) {
      throw invalid(`passRanks must be an integer from 1 to ${MAX_PASS_RANKS}, got ${String(passLimit)}`);
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
    this.passRanks = Math.min(this.ranks, passLimit);
    const reducerOf = (node: Node, variables: readonly FormulaVariable[]) =>
      new PartialReducer(
        new NodeGenred(node, {
          reduction: 'KMin_ArgKMin',
          k: this.passRanks,
          axis: 1,
          variables,
          backend: spec.backend,
          threads: spec.threads,
        }),
      );
    this.reducer = reducerOf(formula.node, formula.variables);
    if (this.ranks > this.passRanks) {
      // Every pass of such a search runs this one kernel (the first one from t = -inf), so that a pair's value
      // is the same in every pass: it admits the pairs after the row's last rank (t, u) in (value, id) order,
      // ids split as (jh, jl) = (j >> 16, j & 0xffff), exact in float32; +infinity is never kept by the fold.
      const aliases = [
        ...metricAliases(dim),
        't = Vi(1)',
        'uh = Vi(1)',
        'ul = Vi(1)',
        'jh = Vj(1)',
        'jl = Vj(1)',
        'infinity = Pm(1)',
      ];
      const f = `(${def.formula})`;
      const later = '((uh<jh)+(uh==jh)*(ul<jl))';
      const after = parseFormula(`IfElse((t<${f})+(${f}==t)*${later}-1,${f},infinity)`, aliases);
      this.after = reducerOf(after.node, after.variables);
    }
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
    const row = new Float64Array(dim); // one row at a time: no float64 copy of the whole chunk
    for (let at = 0; at < stored.length; at += dim) {
      convertToFloat(stored.subarray(at, at + dim) as StorageArray, storageDtype, row);
      let sq = 0;
      for (let c = 0; c < dim; c++) sq += row[c] * row[c];
      const norm = Math.sqrt(sq);
      if (norm > 0) for (let c = 0; c < dim; c++) row[c] /= norm;
      out.set(row, at);
    }
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
    const length = ArrayBuffer.isView(stored) ? stored.length : undefined;
    if (length !== (end - start) * this.dim || stored.byteLength !== length * STORAGE_BYTES[source.dtype]) {
      throw new KeOpsError(
        'ERR_SOURCE',
        `${source.name}: rows [${start}, ${end}) came back as ${length ?? 'no'} values, ` +
          `expected ${(end - start) * this.dim} ${source.dtype} values`,
      );
    }
    return this.convertRows(stored, source.dtype, target);
  }

  /** Rows [offset, offset + rows) of `source` as a row source of a chunked run, converted chunk by chunk. */
  rowSource(source: VectorSource, offset = 0, rows = source.rows - offset): RangeRowSource {
    return {
      rows,
      dtype: this.dtype,
      read: (start, end, target) => this.readRows(source, offset + start, offset + end, target),
    };
  }

  /** The partial of `queryRows` rows over no base row (the identity of merge). */
  empty(queryRows: number): PartialResult {
    return this.partialOf(emptyLists(queryRows, this.ranks), queryRows, []);
  }

  /**
   * The best `ranks` candidates of each query row among `baseRows`, which are the global base rows
   * [baseStart, baseStart + n). Both arrays are rows in the compute dtype, as readRows / convertRows give them.
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
    checkAbort(options.signal);
    const lists = emptyLists(m, this.ranks);
    if (m > 0) {
      // Pieces of at most PAIRS_PER_CALL pairs: an abort is seen between them.
      const size = Math.max(1, Math.floor(PAIRS_PER_CALL / m));
      for (let a = 0; a < n; a += size) {
        const z = Math.min(n, a + size);
        const piece = await this.searchPiece(
          queryRows,
          m,
          baseRows.subarray(a * this.dim, z * this.dim),
          z - a,
          baseStart + a,
          options,
        );
        mergeLists(lists, piece, m, this.ranks);
      }
    }
    return this.partialOf(lists, m, n > 0 ? [[baseStart, baseStart + n]] : []);
  }

  /**
   * Compiles (or loads from the kernel cache) the search's kernels with a call over one zero row each, so that
   * the first call with real data starts at once (a kernel not loaded yet makes a call copy its inputs first).
   */
  async prepare(options: KnnPartialOptions = {}): Promise<void> {
    const zero = allocateFloat(this.dtype, this.dim);
    const one = allocateFloat(this.dtype, 1);
    if (this.after === undefined) await this.call(this.reducer, [zero, zero], options);
    else
      await this.call(this.after, [zero, zero, one, one, one, one, one, one.slice().fill(Infinity)], options);
  }

  /**
   * Merges partials of the same query rows over disjoint base slices: in any order, the same bytes.
   * ERR_PARTIAL_MISMATCH for partials of another search or row count, or overlapping slices.
   */
  merge(partials: readonly PartialResult[]): PartialResult {
    if (!Array.isArray(partials) || partials.length === 0) {
      throw invalid('merge needs a non-empty array of partial results');
    }
    partials.forEach((p) => this.checkPartial(p));
    const rows = partials[0].rows;
    for (const p of partials) {
      if (p.rows !== rows) {
        throw new KeOpsError(
          'ERR_PARTIAL_MISMATCH',
          `cannot merge partial results of ${p.rows} and ${rows} query rows`,
        );
      }
    }
    const slices = unionSlices(partials.map((p) => p.slices));
    const lists = { val: partials[0].val.slice(), idx: partials[0].idx.slice() };
    for (const p of partials.slice(1)) mergeLists(lists, p, rows, this.ranks);
    return this.partialOf(lists, rows, slices);
  }

  /** Parses a serialised partial of this search (PartialResult.toBytes). */
  fromBytes(bytes: Uint8Array): PartialResult {
    const p = PartialResult.fromBytes(bytes);
    this.checkPartial(p);
    return p;
  }

  /** The neighbours of a partial's query rows, which are the global query rows [queryStart, ...). */
  finish(partial: PartialResult, queryStart = 0): KnnRows {
    this.checkPartial(partial);
    return this.finishState(partial.val, partial.idx, partial.rows, queryStart);
  }

  /**
   * @internal Neighbours from candidate lists: `rows` rows of `ranks` values and ids each, ordered by
   * (value, id), unreached slots id -1.
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

  /**
   * The best `ranks` candidates of `m` query rows among `n` base rows whose first is global row `start`: one
   * kernel pass when they fit, else passes of `passRanks` each, every pass the ranks after the row's last one,
   * until a row has its ranks or the base has no more rows for it.
   */
  private async searchPiece(
    q: FloatArray,
    m: number,
    b: FloatArray,
    n: number,
    start: number,
    options: KnnPartialOptions,
  ): Promise<CandidateLists> {
    const { ranks, passRanks: P, dim, dtype } = this;
    if (this.after === undefined) {
      return listsFromKernel(await this.call(this.reducer, [q, b], options), m, ranks, start);
    }
    const jh = allocateFloat(dtype, n);
    const jl = allocateFloat(dtype, n);
    for (let j = 0; j < n; j++) {
      jh[j] = Math.floor(j / 65536);
      jl[j] = j % 65536;
    }
    const infinity = allocateFloat(dtype, 1).fill(Infinity);
    const lists = emptyLists(m, ranks); // local ids until the end
    const count = new Int32Array(m);
    const open = new Uint8Array(m).fill(1); // rows that may have more candidates
    for (;;) {
      const active: number[] = [];
      for (let r = 0; r < m; r++) if (open[r] === 1) active.push(r);
      if (active.length === 0) break;
      checkAbort(options.signal);
      const A = active.length;
      const qa = A === m ? q : allocateFloat(dtype, A * dim);
      const [t, uh, ul] = [0, 1, 2].map(() => allocateFloat(dtype, A));
      active.forEach((r, a) => {
        if (qa !== q) qa.set(q.subarray(r * dim, (r + 1) * dim), a * dim);
        const last = r * ranks + count[r] - 1;
        const u = count[r] === 0 ? -1 : lists.idx[last];
        t[a] = count[r] === 0 ? -Infinity : lists.val[last];
        uh[a] = u < 0 ? -1 : Math.floor(u / 65536);
        ul[a] = u < 0 ? -1 : u % 65536;
      });
      const raw = await this.call(this.after, [qa, b, t, uh, ul, jh, jl, infinity], options);
      active.forEach((r, a) => {
        let got = 0;
        for (let s = a * P; s < (a + 1) * P && raw.val[s] !== Infinity; s++, got++) {
          if (count[r] === ranks) continue;
          lists.val[r * ranks + count[r]] = raw.val[s];
          lists.idx[r * ranks + count[r]] = raw.idx[s];
          count[r]++;
        }
        // Fewer than P after the last rank: the base has no more for this row.
        open[r] = got === P && count[r] < ranks ? 1 : 0;
      });
    }
    for (let s = 0; s < lists.idx.length; s++) if (lists.idx[s] >= 0) lists.idx[s] += start;
    return lists;
  }

  private async call(
    reducer: PartialReducer,
    args: CallArg[],
    options: KnnPartialOptions,
  ): Promise<{ val: FloatArray; idx: Int32Array }> {
    return reducer.stateRunner.callRaw(args, {
      backend: this.backend,
      threads: this.threads,
      device: options.device,
      signal: options.signal,
    });
  }

  private partialOf(lists: CandidateLists, rows: number, slices: readonly RowSlice[]): PartialResult {
    return new PartialResult(
      this.hash,
      this.dtype,
      rows,
      this.ranks,
      this.ranks,
      slices,
      lists.val,
      lists.idx,
    );
  }

  private checkPartial(p: PartialResult): void {
    if (!(p instanceof PartialResult)) {
      throw invalid('expected a PartialResult (use fromBytes to parse bytes)');
    }
    if (p.reduction !== this.hash) {
      throw new KeOpsError(
        'ERR_PARTIAL_MISMATCH',
        `the partial result belongs to another search (hash ${p.reduction.slice(0, 12)}…, this one is ${this.hash.slice(0, 12)}…)`,
      );
    }
    if (p.dtype !== this.dtype || p.dimVal !== this.ranks || p.dimIdx !== this.ranks) {
      throw new KeOpsError(
        'ERR_PARTIAL_MISMATCH',
        `the partial result is not a ${this.dtype} state of ${this.ranks} ranks per row`,
      );
    }
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
  if (signal?.aborted) {
    throw new KeOpsError('ERR_ABORTED', 'the k-NN search was aborted', { cause: signal.reason });
  }
}

/**
 * recall@K of k-NN results against ground truth:
 *
 *     recall@K = (1 / Q) · Σ_q |R_q ∩ T_q| / K
 *
 * over the Q queries (rows), where R_q is the set of the first K ids of result row q and T_q the set of the
 * first K ids of truth row q. Negative ids (−1: a missing rank) belong to neither set; an id repeated within a
 * row counts once. The denominator is K even when a truth row holds fewer than K valid ids. The truth may have
 * more columns than the result (K ≤ both); rows are matched by position and their counts must be equal.
 * Ties are not resolved: a neighbour at the same distance as the K-th true one but with another id is a miss.
 */
import { KeOpsError } from '../errors';
import type { StorageArray, VectorSource } from '../io/vector-source';

/** Rows of ids: a VectorSource of an integer dtype (an open .ivecs / .ibin / .npy file...), or ids in memory. */
export type IdTable =
  | VectorSource
  | {
      /** Row-major, `k` ids per row. */
      readonly ids: ArrayLike<number> | BigInt64Array;
      /** Ids per row. */
      readonly k: number;
      /** For messages. */
      readonly name?: string;
    };

export interface RecallOptions {
  /** K (default: the result's columns). */
  k?: number;
}

export interface RecallResult {
  /** The K used. */
  k: number;
  /** Number of queries (rows). */
  queries: number;
  /** Mean over the queries of |first K result ids ∩ first K truth ids| / K, in [0, 1]. */
  recall: number;
}

/** Rows read per block (bounded memory for result files of any size). */
const BLOCK_VALUES = 2 ** 20;

const ID_DTYPES = new Set(['int32', 'int64', 'uint8', 'int8']);

interface Ids {
  rows: number;
  dim: number;
  name: string;
  read(start: number, end: number): Promise<ArrayLike<number | bigint>>;
}

function asIds(table: IdTable, what: string): Ids {
  if ('ids' in table) {
    const { ids, k } = table;
    const name = table.name ?? what;
    if (!Number.isSafeInteger(k) || k < 1) {
      throw new KeOpsError('ERR_INVALID_ARGUMENT', `${name}: k must be an integer >= 1, got ${String(k)}`);
    }
    if (ids.length % k !== 0) {
      throw new KeOpsError('ERR_ARG_SHAPE', `${name}: ${ids.length} ids are not whole rows of ${k}`);
    }
    return {
      rows: ids.length / k,
      dim: k,
      name,
      read: (start, end) =>
        Promise.resolve(
          ArrayBuffer.isView(ids)
            ? (ids as unknown as StorageArray).subarray(start * k, end * k)
            : Array.prototype.slice.call(ids, start * k, end * k),
        ),
    };
  }
  if (!ID_DTYPES.has(table.dtype)) {
    throw new KeOpsError('ERR_ARG_DTYPE', `${table.name}: ids must be integers, not ${table.dtype}`);
  }
  return table;
}

/** recall@K of `result` against `truth` (see the file comment for the exact definition). */
export async function recall(
  result: IdTable,
  truth: IdTable,
  options: RecallOptions = {},
): Promise<RecallResult> {
  const r = asIds(result, 'result');
  const t = asIds(truth, 'truth');
  const k = options.k ?? r.dim;
  if (!Number.isSafeInteger(k) || k < 1) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `k must be an integer >= 1, got ${String(k)}`);
  }
  if (k > r.dim || k > t.dim) {
    const short = k > r.dim ? r : t;
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `recall@${k}: ${short.name} has ${short.dim} ids per row; K must be at most ${Math.min(r.dim, t.dim)}`,
    );
  }
  if (r.rows !== t.rows) {
    throw new KeOpsError('ERR_ARG_SHAPE', `${r.name} has ${r.rows} rows (queries), ${t.name} has ${t.rows}`);
  }
  if (r.rows === 0)
    throw new KeOpsError('ERR_ARG_SHAPE', `${r.name}: no rows (queries) to measure recall over`);
  const block = Math.max(1, Math.floor(BLOCK_VALUES / Math.max(r.dim, t.dim)));
  const truthIds = new Set<number>();
  let sum = 0;
  for (let start = 0; start < r.rows; start += block) {
    const end = Math.min(r.rows, start + block);
    const [rb, tb] = await Promise.all([r.read(start, end), t.read(start, end)]);
    for (let q = 0; q < end - start; q++) {
      truthIds.clear();
      for (let c = 0; c < k; c++) {
        const id = Number(tb[q * t.dim + c]);
        if (id >= 0) truthIds.add(id);
      }
      let hits = 0;
      for (let c = 0; c < k; c++) {
        // Deleting a hit makes a repeated result id count once.
        if (truthIds.delete(Number(rb[q * r.dim + c]))) hits++;
      }
      sum += hits / k;
    }
  }
  return { k, queries: r.rows, recall: sum / r.rows };
}

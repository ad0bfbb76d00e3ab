/**
 * Candidate lists of a k-NN search: per query row, `ranks` (value, id) slots ordered by value then id, unreached
 * slots last as (+Infinity, -1) — the state of the kernel's KMin_ArgKMin reduction, kept in float64 (exact for the
 * float32 / float64 values and the int32 ids). The merge is that reduction's: it compares ids on equal values, so
 * merging lists of disjoint base rows in any order gives the same bytes.
 */
import type { FloatArray } from '../backend/plan';

export interface CandidateLists {
  /** rows × ranks values. */
  readonly val: Float64Array;
  /** rows × ranks ids (integers; -1 for an unreached slot). */
  readonly idx: Float64Array;
}

/** `rows` empty lists. */
export function emptyLists(rows: number, ranks: number): CandidateLists {
  return { val: new Float64Array(rows * ranks).fill(Infinity), idx: new Float64Array(rows * ranks).fill(-1) };
}

/**
 * The lists of a raw kernel output (`ranks` values and local indices per row, +inf where no row reached the
 * slot), ids offset by `start`.
 */
export function listsFromKernel(
  raw: { readonly val: FloatArray; readonly idx: Int32Array },
  rows: number,
  ranks: number,
  start: number,
): CandidateLists {
  const out = emptyLists(rows, ranks);
  for (let s = 0; s < rows * ranks; s++) {
    const v = raw.val[s];
    if (v === Infinity) continue; // the fold keeps only values below +inf: a slot nothing reached
    out.val[s] = v;
    out.idx[s] = raw.idx[s] + start;
  }
  return out;
}

/** Merges `other` into `into`, row by row: the `ranks` smallest (value, id) pairs of both. */
export function mergeLists(into: CandidateLists, other: CandidateLists, rows: number, ranks: number): void {
  const val = new Float64Array(ranks);
  const idx = new Float64Array(ranks);
  for (let r = 0; r < rows; r++) {
    const base = r * ranks;
    let a = base;
    let c = base;
    for (let s = 0; s < ranks; s++) {
      const va = into.val[a];
      const vb = other.val[c];
      const ia = into.idx[a];
      const ib = other.idx[c];
      if (vb < va || (vb === va && ib < ia)) {
        val[s] = vb;
        idx[s] = ib;
        c++;
      } else {
        val[s] = va;
        idx[s] = ia;
        a++;
      }
    }
    into.val.set(val, base);
    into.idx.set(idx, base);
  }
}

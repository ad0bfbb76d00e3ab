/**
 * One direction of a ranges 6-tuple, validated and laid out for the addon in one pass over typed arrays: the
 * same checks, messages and layout as `normalizeRanges` (lib/reference.ts) followed by the row-block layout of
 * the plan, without a JS object per block or an array per interval (block-sparse k-NN passes tens of thousands
 * of intervals per call, and building those objects cost as much as a third of the kernel's time).
 *
 * Layout: `blocks` holds (start, end, first interval, interval count) per row block, the given non-empty blocks
 * sorted by start with the gaps between them as blocks reducing nothing, covering [0, outRows); `intervals` the
 * non-empty [start, end) reduction intervals of each block in turn, sorted by start (stable: so first visits are
 * in increasing index order and ties go to the smallest index), not merged (an index listed twice counts twice).
 */
export interface NativeRanges {
  readonly blocks: Float64Array;
  readonly intervals: Float64Array;
  /** Pairs (row, reduced index) the blocks evaluate. */
  readonly pairsPerJob: number;
}

/** Thrown messages are those of `normalizeRanges`; the caller wraps them in its KeOpsError. */
function counts(values: ArrayLike<number>, what: string): Float64Array {
  const out = new Float64Array(values.length);
  for (let t = 0; t < values.length; t++) {
    const v = Number(values[t]);
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`ranges: ${what} must hold integers >= 0`);
    out[t] = v;
  }
  return out;
}

/** Indices from..to-1 in increasing `key` order, stable; null when they already are (the common case). */
function sortedOrder(key: (t: number) => number, from: number, to: number): number[] | null {
  let sorted = true;
  for (let t = from + 1; t < to && sorted; t++) sorted = key(t - 1) <= key(t);
  if (sorted) return null;
  const order: number[] = [];
  for (let t = from; t < to; t++) order.push(t);
  return order.sort((a, b) => key(a) - key(b));
}

export function nativeRanges(
  rowsArr: ArrayLike<number>,
  slices: ArrayLike<number>,
  intervals: ArrayLike<number>,
  outRows: number,
  redSize: number,
): NativeRanges {
  const rowPairs = counts(rowsArr, 'row ranges');
  const sl = counts(slices, 'slices');
  const iv = counts(intervals, 'reduction ranges');
  if (rowPairs.length % 2 !== 0 || iv.length % 2 !== 0) {
    throw new Error('ranges: [start, end) pairs must have even length');
  }
  const nBlocks = rowPairs.length / 2;
  if (sl.length !== nBlocks) {
    throw new Error(`ranges: ${nBlocks} row blocks need ${nBlocks} slices, got ${sl.length}`);
  }
  // Each block's non-empty intervals, sorted by start, into `kept` (block k's at keptFrom[k]..keptFrom[k+1]).
  const kept = new Float64Array(iv.length);
  const keptFrom = new Int32Array(nBlocks + 1);
  let keptCount = 0;
  let previousSlice = 0;
  for (let k = 0; k < nBlocks; k++) {
    const start = rowPairs[2 * k];
    const end = rowPairs[2 * k + 1];
    if (start > end || end > outRows) {
      throw new Error(`ranges: row block [${start}, ${end}) is not within [0, ${outRows})`);
    }
    if (sl[k] < previousSlice || sl[k] > iv.length / 2) {
      throw new Error(
        `ranges: slices must be non-decreasing and at most ${iv.length / 2}, got ${sl[k]} at ${k}`,
      );
    }
    const first = keptCount;
    for (let t = previousSlice; t < sl[k]; t++) {
      const s = iv[2 * t];
      const e = iv[2 * t + 1];
      if (s > e || e > redSize) {
        throw new Error(`ranges: reduction interval [${s}, ${e}) is not within [0, ${redSize})`);
      }
      if (s < e) {
        kept[2 * keptCount] = s;
        kept[2 * keptCount + 1] = e;
        keptCount++;
      }
    }
    const order = sortedOrder((t) => kept[2 * t], first, keptCount);
    if (order !== null) {
      const copy = kept.slice(2 * first, 2 * keptCount);
      order.forEach((t, u) => {
        kept[2 * (first + u)] = copy[2 * (t - first)];
        kept[2 * (first + u) + 1] = copy[2 * (t - first) + 1];
      });
    }
    keptFrom[k + 1] = keptCount;
    previousSlice = sl[k];
  }
  // The non-empty blocks by start (stable), which must not overlap.
  const nonEmpty: number[] = [];
  for (let k = 0; k < nBlocks; k++) if (rowPairs[2 * k] < rowPairs[2 * k + 1]) nonEmpty.push(k);
  const order = sortedOrder((u) => rowPairs[2 * nonEmpty[u]], 0, nonEmpty.length);
  const byStart = order === null ? nonEmpty : order.map((u) => nonEmpty[u]);
  for (let u = 1; u < byStart.length; u++) {
    const [a, b] = [byStart[u - 1], byStart[u]];
    if (rowPairs[2 * b] < rowPairs[2 * a + 1]) {
      throw new Error(
        `ranges: row blocks [${rowPairs[2 * a]}, ${rowPairs[2 * a + 1]}) and [${rowPairs[2 * b]}, ${rowPairs[2 * b + 1]}) overlap`,
      );
    }
  }
  const blocks = new Float64Array(4 * (2 * byStart.length + 1));
  const out = new Float64Array(2 * keptCount);
  let quads = 0;
  let pairs = 0;
  let pairsPerJob = 0;
  let row = 0;
  const quad = (start: number, end: number, first: number, count: number): void => {
    blocks[4 * quads] = start;
    blocks[4 * quads + 1] = end;
    blocks[4 * quads + 2] = first;
    blocks[4 * quads + 3] = count;
    quads++;
  };
  for (const k of byStart) {
    const start = rowPairs[2 * k];
    const end = rowPairs[2 * k + 1];
    if (start > row) quad(row, start, 0, 0);
    quad(start, end, pairs, keptFrom[k + 1] - keptFrom[k]);
    for (let t = keptFrom[k]; t < keptFrom[k + 1]; t++) {
      out[2 * pairs] = kept[2 * t];
      out[2 * pairs + 1] = kept[2 * t + 1];
      pairsPerJob += (end - start) * (kept[2 * t + 1] - kept[2 * t]);
      pairs++;
    }
    row = end;
  }
  if (row < outRows) quad(row, outRows, 0, 0);
  return { blocks: blocks.slice(0, 4 * quads), intervals: out, pairsPerJob };
}

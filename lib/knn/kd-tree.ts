/**
 * A balanced k-d tree over a row-major point cloud, used to order points so that every node is a contiguous
 * row range of the permuted cloud with a tight bounding box (lib/knn/prune.ts turns those ranges into
 * block-sparse `ranges`). Each internal node splits its rows in two halves (by count) along the dimension of
 * largest extent (of its parent's box cut at the split), so leaves hold between ⌊leafSize / 2⌋ and leafSize rows
 * whatever the distribution (clusters, points on a line, equal points).
 *
 * Nodes are numbered in depth-first order, left subtree first: node 0 is the root and the leaves, taken in
 * increasing node number, tile [0, rows) in increasing row order.
 */
import type { FloatArray } from '../backend/plan';

export interface KdTree {
  readonly dim: number;
  /** Row r of the permuted cloud is row permutation[r] of the input. */
  readonly permutation: Int32Array;
  /** Per node: its rows [start, end) in the permuted cloud. */
  readonly start: Int32Array;
  readonly end: Int32Array;
  /** Per node: its children (−1 for a leaf). */
  readonly left: Int32Array;
  readonly right: Int32Array;
  /** Per internal node: the split dimension and value (left rows at or below it, right rows at or above). */
  readonly splitDim: Int32Array;
  readonly splitValue: Float64Array;
  /** Per node: its bounding box, component d at [node * dim + d] (exact copies of the input's values). */
  readonly lo: Float64Array;
  readonly hi: Float64Array;
  /** The leaf nodes in increasing row order. */
  readonly leaves: Int32Array;
}

/** A tree and its cloud in the tree's order (row r of `points` is row tree.permutation[r] of the input). */
export interface OrderedCloud<T extends FloatArray> {
  readonly tree: KdTree;
  readonly points: T;
}

/**
 * Builds the tree; `points` is rows × dim, row-major, all values finite (the caller checks). The rows are
 * partitioned in place in a copy, which ends up in the tree's order: reading the split coordinate is then a
 * sequential scan rather than a gather through the permutation.
 */
export function buildKdTree<T extends FloatArray>(points: T, dim: number, leafSize: number): OrderedCloud<T> {
  const rows = points.length / dim;
  const work = points.slice() as T;
  const permutation = new Int32Array(rows);
  for (let r = 0; r < rows; r++) permutation[r] = r;
  // Leaves hold at least ⌊leafSize / 2⌋ rows (halves of nodes of more than leafSize rows).
  const capacity = rows <= leafSize ? 1 : 2 * Math.ceil(rows / Math.max(1, leafSize >> 1));
  const start = new Int32Array(capacity);
  const end = new Int32Array(capacity);
  const left = new Int32Array(capacity).fill(-1);
  const right = new Int32Array(capacity).fill(-1);
  const leafList = new Int32Array(capacity);
  const splitDim = new Int32Array(capacity);
  const splitValue = new Float64Array(capacity);
  let nodes = 0;
  let leafCount = 0;
  // While splitting, a node's box is its parent's cut at the split value (no scan of its rows): it only picks
  // the split dimension. The tight boxes are computed afterwards, bottom-up.
  const cutLo = new Float64Array(dim);
  const cutHi = new Float64Array(dim);
  for (let d = 0; d < dim; d++) {
    let min = Infinity;
    let max = -Infinity;
    for (let r = 0; r < rows; r++) {
      const v = work[r * dim + d];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    cutLo[d] = min;
    cutHi[d] = max;
  }

  const build = (from: number, to: number): number => {
    const node = nodes++;
    start[node] = from;
    end[node] = to;
    if (to - from <= leafSize) {
      leafList[leafCount++] = node;
      return node;
    }
    let widest = 0;
    for (let d = 1; d < dim; d++) if (cutHi[d] - cutLo[d] > cutHi[widest] - cutLo[widest]) widest = d;
    const mid = from + ((to - from) >> 1);
    select(work, dim, widest, permutation, from, to - 1, mid);
    const split = work[mid * dim + widest];
    splitDim[node] = widest;
    splitValue[node] = split;
    const [lo, hi] = [cutLo[widest], cutHi[widest]];
    cutHi[widest] = split;
    left[node] = build(from, mid);
    cutHi[widest] = hi;
    cutLo[widest] = split;
    right[node] = build(mid, to);
    cutLo[widest] = lo;
    return node;
  };
  if (rows > 0) build(0, rows);

  const lo = new Float64Array(nodes * dim).fill(Infinity);
  const hi = new Float64Array(nodes * dim).fill(-Infinity);
  // Children have larger numbers than their parent: a backward sweep sees them first.
  for (let node = nodes - 1; node >= 0; node--) {
    const at = node * dim;
    if (left[node] < 0) {
      for (let r = start[node]; r < end[node]; r++) {
        for (let d = 0; d < dim; d++) {
          const v = work[r * dim + d];
          if (v < lo[at + d]) lo[at + d] = v;
          if (v > hi[at + d]) hi[at + d] = v;
        }
      }
      continue;
    }
    const a = left[node] * dim;
    const b = right[node] * dim;
    for (let d = 0; d < dim; d++) {
      lo[at + d] = Math.min(lo[a + d], lo[b + d]);
      hi[at + d] = Math.max(hi[a + d], hi[b + d]);
    }
  }
  const tree: KdTree = {
    dim,
    permutation,
    start: start.slice(0, nodes),
    end: end.slice(0, nodes),
    left: left.slice(0, nodes),
    right: right.slice(0, nodes),
    splitDim: splitDim.slice(0, nodes),
    splitValue: splitValue.slice(0, nodes),
    lo,
    hi,
    leaves: leafList.slice(0, leafCount),
  };
  return { tree, points: work };
}

/**
 * Reorders rows lo..hi of `points` (and `rows` alongside) so that row k has the value of rank k in coordinate
 * `axis`, with rows at or below it to its left and at or above it to its right (Hoare partition around a median
 * of three: equal keys split evenly, so a node of equal coordinates costs linear time).
 */
function select(
  points: FloatArray,
  dim: number,
  axis: number,
  rows: Int32Array,
  lo: number,
  hi: number,
  k: number,
): void {
  const key = (r: number): number => points[r * dim + axis];
  const swap = (a: number, b: number): void => {
    for (let d = 0; d < dim; d++) {
      const v = points[a * dim + d];
      points[a * dim + d] = points[b * dim + d];
      points[b * dim + d] = v;
    }
    const row = rows[a];
    rows[a] = rows[b];
    rows[b] = row;
  };
  while (hi > lo) {
    const m = lo + ((hi - lo) >> 1);
    if (key(m) < key(lo)) swap(m, lo);
    if (key(hi) < key(lo)) swap(hi, lo);
    if (key(hi) < key(m)) swap(hi, m);
    const pivot = key(m);
    let i = lo - 1;
    let j = hi + 1;
    for (;;) {
      do i++;
      while (key(i) < pivot);
      do j--;
      while (key(j) > pivot);
      if (i >= j) break;
      swap(i, j);
    }
    // key(lo..j) <= pivot <= key(j+1..hi)
    if (k <= j) hi = j;
    else lo = j + 1;
  }
}

/** Rows permutation[0], permutation[1], ... of `points`, into a new array of the same type. */
export function permutedRows<T extends FloatArray>(points: T, dim: number, permutation: Int32Array): T {
  const length = permutation.length * dim;
  const out = (points instanceof Float32Array ? new Float32Array(length) : new Float64Array(length)) as T;
  for (let r = 0; r < permutation.length; r++) {
    const src = permutation[r] * dim;
    for (let d = 0; d < dim; d++) out[r * dim + d] = points[src + d];
  }
  return out;
}

/** For each row of `points`, the leaf (its number among tree.leaves) it falls in by the tree's splits. */
export function leafOfRows(tree: KdTree, points: FloatArray, leafNumberOf: Int32Array): Int32Array {
  const { dim, left, right, splitDim, splitValue } = tree;
  const rows = points.length / dim;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let node = 0;
    while (left[node] >= 0) {
      node = points[r * dim + splitDim[node]] < splitValue[node] ? left[node] : right[node];
    }
    out[r] = leafNumberOf[node];
  }
  return out;
}

/**
 * Query rows grouped by the base leaf they fall in (`leafOfRows`), each group cut into blocks of at most
 * `blockRows` rows: a tree of leaves only (no internal nodes), with the blocks' tight boxes. Rows of a block are
 * close to one base leaf, so its pruning is as tight as that leaf's.
 */
export function blocksByLeaf(
  points: FloatArray,
  dim: number,
  leafOfRow: Int32Array,
  leafCount: number,
  blockRows: number,
): KdTree {
  const rows = leafOfRow.length;
  const offsets = new Int32Array(leafCount + 1);
  for (let r = 0; r < rows; r++) offsets[leafOfRow[r] + 1]++;
  for (let l = 0; l < leafCount; l++) offsets[l + 1] += offsets[l];
  const permutation = new Int32Array(rows);
  const next = offsets.slice(0, leafCount);
  for (let r = 0; r < rows; r++) permutation[next[leafOfRow[r]]++] = r;
  let blocks = 0;
  for (let l = 0; l < leafCount; l++) blocks += Math.ceil((offsets[l + 1] - offsets[l]) / blockRows);
  const start = new Int32Array(blocks);
  const end = new Int32Array(blocks);
  let b = 0;
  for (let l = 0; l < leafCount; l++) {
    for (let s = offsets[l]; s < offsets[l + 1]; s += blockRows) {
      start[b] = s;
      end[b] = Math.min(offsets[l + 1], s + blockRows);
      b++;
    }
  }
  const lo = new Float64Array(blocks * dim).fill(Infinity);
  const hi = new Float64Array(blocks * dim).fill(-Infinity);
  for (let block = 0; block < blocks; block++) {
    const at = block * dim;
    for (let r = start[block]; r < end[block]; r++) {
      const src = permutation[r] * dim;
      for (let d = 0; d < dim; d++) {
        const v = points[src + d];
        if (v < lo[at + d]) lo[at + d] = v;
        if (v > hi[at + d]) hi[at + d] = v;
      }
    }
  }
  const leaves = new Int32Array(blocks);
  for (let block = 0; block < blocks; block++) leaves[block] = block;
  return {
    dim,
    permutation,
    start,
    end,
    left: new Int32Array(blocks).fill(-1),
    right: new Int32Array(blocks).fill(-1),
    splitDim: new Int32Array(blocks),
    splitValue: new Float64Array(blocks),
    lo,
    hi,
    leaves,
  };
}

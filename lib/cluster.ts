/**
 * Clustering helpers that build block-sparse `ranges` (docs/semantics.md 4.4, 4.5), after pykeops' `cluster`
 * module: label points by voxel, sort them by label, get the row range and centroid of every cluster, decide
 * which cluster pairs interact, and turn that Mc×Nc decision into the ranges 6-tuple that Genred accepts.
 *
 * Conventions: point clouds are row-major Float32Array | Float64Array with an explicit `dim` (rows =
 * length / dim); labels are Int32Array (or arrays of integers) in [0, C); ranges are Int32Array of flattened
 * [start, end) pairs. Bad arguments throw KeOpsError 'ERR_INVALID_ARGUMENT', bad labels 'ERR_CLUSTER' and
 * malformed ranges 'ERR_RANGES'.
 *
 * Typical pipeline (axis 1, i.e. one output row per x_i):
 *   const sx = sortClusters(x, D, gridCluster(x, D, eps));   // same for y
 *   const cx = clusterRangesCentroids(sx.points, D, sx.labels); // same for y
 *   const keep = (i, j) => squared distance of centroids i and j < threshold²;
 *   const ranges = fromMatrix(cx.ranges, cy.ranges, keep);
 *   // reduce with sx.points / sy.points and `ranges`, then unpermuteRows(out, dimOut, sx.permutation).
 */
import type { GenredRanges } from './backend/plan';
import { KeOpsError } from './errors';

/** A row-major point cloud; its row count is length / dim. */
export type PointCloud = Float32Array | Float64Array;

/** Cluster labels, one per row: integers in [0, 2³¹). */
export type LabelArray = Int32Array | readonly number[];

/** The ranges 6-tuple built here; every entry an Int32Array, so it is also a `GenredRanges`. */
export type BlockSparseRanges = readonly [
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
  Int32Array,
];

/** Which cluster pairs interact: an Mc×Nc row-major mask (nonzero / true = keep), or a predicate. */
export type KeepMask =
  Uint8Array | readonly boolean[] | readonly number[] | ((clusterI: number, clusterJ: number) => boolean);

const INT32_MAX = 2 ** 31 - 1;
/** fromMatrix stores one byte per cluster pair; beyond this the mask alone would need gigabytes. */
const MAX_CLUSTER_PAIRS = 2 ** 30;

const invalid = (message: string): KeOpsError => new KeOpsError('ERR_INVALID_ARGUMENT', message);
const badLabels = (message: string): KeOpsError => new KeOpsError('ERR_CLUSTER', message);
const badRanges = (message: string): KeOpsError => new KeOpsError('ERR_RANGES', message);

/** Validates a point cloud and its dim; returns the row count. */
function rowsOf(x: unknown, dim: unknown, fn: string): number {
  if (!(x instanceof Float32Array || x instanceof Float64Array)) {
    throw invalid(`${fn}: points must be a Float32Array or Float64Array (row-major, rows × dim)`);
  }
  if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 1) {
    throw invalid(`${fn}: dim must be an integer >= 1, got ${String(dim)}`);
  }
  if (x.length % dim !== 0) throw invalid(`${fn}: ${x.length} values is not a multiple of dim ${dim}`);
  return x.length / dim;
}

/** A zeroed array of the same element type as `like` (so float32 data stays float32 for Genred). */
function allocateLike<T extends PointCloud>(like: T, length: number): T {
  return (like instanceof Float32Array ? new Float32Array(length) : new Float64Array(length)) as T;
}

/** Validates labels (integers in [0, 2³¹), `rows` of them when given) and returns them as an Int32Array. */
function checkLabels(labels: unknown, fn: string, rows?: number): Int32Array {
  if (!(labels instanceof Int32Array) && !Array.isArray(labels)) {
    throw invalid(`${fn}: labels must be an Int32Array (or an array of integers)`);
  }
  if (rows !== undefined && labels.length !== rows) {
    throw invalid(`${fn}: expected ${rows} labels (one per row), got ${labels.length}`);
  }
  if (labels instanceof Int32Array) {
    for (let k = 0; k < labels.length; k++) {
      if (labels[k] < 0) throw badLabels(`${fn}: labels must be >= 0, got ${labels[k]} at ${k}`);
    }
    return labels;
  }
  const out = new Int32Array(labels.length);
  for (let k = 0; k < labels.length; k++) {
    const v: unknown = labels[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > INT32_MAX) {
      throw badLabels(`${fn}: labels must be integers in [0, 2^31), got ${String(v)} at ${k}`);
    }
    out[k] = v;
  }
  return out;
}

/** The label count: `nLabels` when given (every label must be below it), else max(labels) + 1 (0 if empty). */
function labelCount(labels: Int32Array, nLabels: unknown, fn: string): number {
  let maxLabel = -1;
  for (let k = 0; k < labels.length; k++) if (labels[k] > maxLabel) maxLabel = labels[k];
  if (nLabels === undefined) return maxLabel + 1;
  if (typeof nLabels !== 'number' || !Number.isSafeInteger(nLabels) || nLabels < 0 || nLabels > INT32_MAX) {
    throw invalid(`${fn}: nLabels must be an integer in [0, 2^31), got ${String(nLabels)}`);
  }
  if (maxLabel >= nLabels) throw badLabels(`${fn}: label ${maxLabel} is out of range [0, ${nLabels})`);
  return nLabels;
}

/** Validates per-row weights: finite and >= 0, one per row. */
function checkWeights(weights: unknown, rows: number, fn: string): ArrayLike<number> {
  const isArray =
    weights instanceof Float32Array || weights instanceof Float64Array || Array.isArray(weights);
  if (!isArray) throw invalid(`${fn}: weights must be a Float32Array, Float64Array or array of numbers`);
  const w = weights as ArrayLike<unknown>;
  if (w.length !== rows) throw invalid(`${fn}: expected ${rows} weights (one per row), got ${w.length}`);
  for (let k = 0; k < rows; k++) {
    const v = w[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw invalid(`${fn}: weights must be finite numbers >= 0, got ${String(v)} at ${k}`);
    }
  }
  return w as ArrayLike<number>;
}

/** Per-dimension voxel sizes from a number or an array of `dim` numbers, all positive and finite. */
function voxelSizes(size: unknown, dim: number): Float64Array {
  const positive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
  if (typeof size === 'number') {
    if (!positive(size)) throw invalid(`gridCluster: size must be a positive finite number, got ${size}`);
    return new Float64Array(dim).fill(size);
  }
  const isArray = size instanceof Float32Array || size instanceof Float64Array || Array.isArray(size);
  if (!isArray) throw invalid('gridCluster: size must be a number or an array of one number per dimension');
  const sizes = size as ArrayLike<unknown>;
  if (sizes.length !== dim) throw invalid(`gridCluster: expected ${dim} voxel sizes, got ${sizes.length}`);
  const out = new Float64Array(dim);
  for (let d = 0; d < dim; d++) {
    const v = sizes[d];
    if (!positive(v))
      throw invalid(`gridCluster: size[${d}] must be a positive finite number, got ${String(v)}`);
    out[d] = v;
  }
  return out;
}

/**
 * Voxel labels for points of any dimension (pykeops' `grid_cluster` only handles D ≤ 3). Point x falls in the
 * voxel with integer coordinates ⌊(x_d − min_d) / size_d⌋ (min over all points, as in pykeops' torch version);
 * voxels are told apart exactly, by those coordinates, never by a packed key that could collide.
 *
 * Labels are compact, in [0, C), and numbered in **sorted voxel order**: lexicographic on the coordinates,
 * first dimension most significant (the order pykeops gets from its packed key).
 *
 * @param x row-major points, rows × dim, all coordinates finite
 * @param size voxel side: one positive number, or one per dimension
 */
export function gridCluster(x: PointCloud, dim: number, size: number | ArrayLike<number>): Int32Array {
  const rows = rowsOf(x, dim, 'gridCluster');
  const sizes = voxelSizes(size, dim);
  const labels = new Int32Array(rows);
  if (rows === 0) return labels;

  const mins = new Float64Array(dim).fill(Infinity);
  for (let k = 0; k < x.length; k++) {
    const v = x[k];
    if (!Number.isFinite(v)) {
      throw invalid(`gridCluster: coordinates must be finite, got ${v} at row ${Math.floor(k / dim)}`);
    }
    const d = k % dim;
    if (v < mins[d]) mins[d] = v;
  }

  // Integer voxel coordinates, exact as long as they stay below 2^53.
  const coords = new Float64Array(x.length);
  for (let k = 0; k < x.length; k++) {
    const c = Math.floor((x[k] - mins[k % dim]) / sizes[k % dim]);
    if (!Number.isSafeInteger(c)) {
      throw invalid(
        `gridCluster: voxel size ${sizes[k % dim]} is too small for the extent of dimension ${k % dim} ` +
          '(voxel coordinates beyond 2^53)',
      );
    }
    coords[k] = c;
  }

  // Distinct voxels, each with the first row that falls in it.
  const voxelKey = (row: number): number | string =>
    dim === 1 ? coords[row] : coords.subarray(row * dim, (row + 1) * dim).join(',');
  const voxelOfKey = new Map<number | string, number>();
  const firstRowOfVoxel: number[] = [];
  const voxelOfRow = new Int32Array(rows);
  for (let row = 0; row < rows; row++) {
    const key = voxelKey(row);
    let voxel = voxelOfKey.get(key);
    if (voxel === undefined) {
      voxel = firstRowOfVoxel.length;
      voxelOfKey.set(key, voxel);
      firstRowOfVoxel.push(row);
    }
    voxelOfRow[row] = voxel;
  }

  const compareVoxels = (a: number, b: number): number => {
    const rowA = firstRowOfVoxel[a] * dim;
    const rowB = firstRowOfVoxel[b] * dim;
    for (let d = 0; d < dim; d++) {
      const diff = coords[rowA + d] - coords[rowB + d];
      if (diff !== 0) return diff;
    }
    return 0;
  };
  const sortedVoxels = Array.from(firstRowOfVoxel, (_, voxel) => voxel).sort(compareVoxels);
  const labelOfVoxel = new Int32Array(sortedVoxels.length);
  sortedVoxels.forEach((voxel, label) => (labelOfVoxel[voxel] = label));
  for (let row = 0; row < rows; row++) labels[row] = labelOfVoxel[voxelOfRow[row]];
  return labels;
}

/**
 * Sorts the rows of `x` by label (stable: rows with equal labels keep their order), as pykeops'
 * `sort_clusters`. Returns the sorted points (same element type as x), the sorted labels, and the permutation
 * with `points` row k = `x` row `permutation[k]`: use `permuteRows` to sort other per-row arrays the same way and
 * `unpermuteRows` to put the rows of a reduction's output back in the original order.
 */
export function sortClusters<T extends PointCloud>(
  x: T,
  dim: number,
  labels: LabelArray,
): { points: T; labels: Int32Array; permutation: Int32Array } {
  const rows = rowsOf(x, dim, 'sortClusters');
  const lab = checkLabels(labels, 'sortClusters', rows);
  const permutation = Int32Array.from({ length: rows }, (_, k) => k).sort(
    (a, b) => lab[a] - lab[b] || a - b, // index tie-break keeps the sort stable whatever the engine does
  );
  return {
    points: gatherRows(x, dim, permutation),
    labels: permutation.map((row) => lab[row]),
    permutation,
  };
}

/** Checks that `permutation` holds each of 0..rows-1 exactly once. */
function checkPermutation(permutation: unknown, rows: number, fn: string): Int32Array {
  if (!(permutation instanceof Int32Array)) throw invalid(`${fn}: permutation must be an Int32Array`);
  if (permutation.length !== rows) {
    throw invalid(`${fn}: permutation has ${permutation.length} entries for ${rows} rows`);
  }
  const seen = new Uint8Array(rows);
  for (const row of permutation) {
    if (row < 0 || row >= rows || seen[row] === 1) {
      throw invalid(`${fn}: permutation must hold each row index 0..${rows - 1} exactly once`);
    }
    seen[row] = 1;
  }
  return permutation;
}

function gatherRows<T extends PointCloud>(x: T, dim: number, permutation: Int32Array): T {
  const out = allocateLike(x, x.length);
  permutation.forEach((from, to) => out.set(x.subarray(from * dim, (from + 1) * dim), to * dim));
  return out;
}

/**
 * Reorders rows as `sortClusters` did: row k of the result is row `permutation[k]` of `x`. Use it for any other
 * per-point array (signals, weights) that must follow the sorted points.
 */
export function permuteRows<T extends PointCloud>(x: T, dim: number, permutation: Int32Array): T {
  const rows = rowsOf(x, dim, 'permuteRows');
  return gatherRows(x, dim, checkPermutation(permutation, rows, 'permuteRows'));
}

/** Undoes `permuteRows`: row `permutation[k]` of the result is row k of `y` (e.g. a reduction's output). */
export function unpermuteRows<T extends PointCloud>(y: T, dim: number, permutation: Int32Array): T {
  const rows = rowsOf(y, dim, 'unpermuteRows');
  checkPermutation(permutation, rows, 'unpermuteRows');
  const out = allocateLike(y, y.length);
  permutation.forEach((to, from) => out.set(y.subarray(from * dim, (from + 1) * dim), to * dim));
  return out;
}

/** Rows per label (bincount); labels already validated to lie in [0, nLabels). */
function countLabels(labels: Int32Array, nLabels: number): Int32Array {
  const counts = new Int32Array(nLabels);
  for (const label of labels) counts[label]++;
  return counts;
}

function rangesFromCounts(counts: Int32Array): Int32Array {
  const ranges = new Int32Array(2 * counts.length);
  let start = 0;
  counts.forEach((count, label) => {
    ranges[2 * label] = start;
    start += count;
    ranges[2 * label + 1] = start;
  });
  return ranges;
}

function checkSorted(labels: Int32Array, fn: string): void {
  for (let k = 1; k < labels.length; k++) {
    if (labels[k] < labels[k - 1]) {
      throw badLabels(
        `${fn}: labels must be sorted (non-decreasing), but labels[${k - 1}] = ${labels[k - 1]} > ` +
          `labels[${k}] = ${labels[k]}; sort the points first with sortClusters (the ranges index sorted rows)`,
      );
    }
  }
}

/**
 * The [start, end) row range of every cluster, flattened (length 2C), from sorted labels: label c covers rows
 * counts[0] + … + counts[c−1] up to that plus counts[c]. Labels absent from the data get empty ranges.
 *
 * @param labels sorted (non-decreasing) integers in [0, nLabels)
 * @param nLabels number of clusters C; default max(labels) + 1
 */
export function clusterRanges(labels: LabelArray, nLabels?: number): Int32Array {
  const lab = checkLabels(labels, 'clusterRanges');
  const count = labelCount(lab, nLabels, 'clusterRanges');
  checkSorted(lab, 'clusterRanges');
  return rangesFromCounts(countLabels(lab, count));
}

/** Σ weight·x and Σ weight per label, accumulated in float64. */
function weightedSums(
  x: PointCloud,
  dim: number,
  labels: Int32Array,
  nLabels: number,
  weights: ArrayLike<number> | undefined,
): { sums: Float64Array; totals: Float64Array } {
  const sums = new Float64Array(nLabels * dim);
  const totals = new Float64Array(nLabels);
  labels.forEach((label, row) => {
    const w = weights === undefined ? 1 : weights[row];
    totals[label] += w;
    for (let d = 0; d < dim; d++) sums[label * dim + d] += w * x[row * dim + d];
  });
  return { sums, totals };
}

/**
 * The (weighted) mean of every cluster's points: C×dim, row-major, same element type as x. Labels need not be
 * sorted. A cluster whose total weight is 0 (no points, or only zero weights) has no mean: its centroid is NaN,
 * which compares false with any threshold, so a `keep` test built on distances never keeps it.
 *
 * @param nLabels number of clusters C; default max(labels) + 1
 * @param weights one finite weight >= 0 per row; default 1
 */
export function clusterCentroids<T extends PointCloud>(
  x: T,
  dim: number,
  labels: LabelArray,
  nLabels?: number,
  weights?: ArrayLike<number>,
): T {
  const rows = rowsOf(x, dim, 'clusterCentroids');
  const lab = checkLabels(labels, 'clusterCentroids', rows);
  const count = labelCount(lab, nLabels, 'clusterCentroids');
  const w = weights === undefined ? undefined : checkWeights(weights, rows, 'clusterCentroids');
  const { sums, totals } = weightedSums(x, dim, lab, count, w);
  const centroids = allocateLike(x, count * dim);
  for (let k = 0; k < centroids.length; k++) centroids[k] = sums[k] / totals[Math.floor(k / dim)];
  return centroids;
}

/**
 * Ranges, centroids and total weight of every cluster at once, as pykeops' `cluster_ranges_centroids`
 * (C = max(labels) + 1). As there, centroids divide by max(total weight, minWeight), so a cluster with no weight
 * gets a zero centroid (not NaN); the returned `weights` are the raw totals (0 for such clusters).
 *
 * @param labels sorted (non-decreasing) integers >= 0, one per row: the ranges index the sorted rows
 * @param weights one finite weight >= 0 per row; default 1
 * @param minWeight positive floor on the divisor of the centroids
 */
export function clusterRangesCentroids<T extends PointCloud>(
  x: T,
  dim: number,
  labels: LabelArray,
  weights?: ArrayLike<number>,
  minWeight = 1e-9,
): { ranges: Int32Array; centroids: T; weights: Float64Array } {
  const fn = 'clusterRangesCentroids';
  const rows = rowsOf(x, dim, fn);
  const lab = checkLabels(labels, fn, rows);
  checkSorted(lab, fn);
  const w = weights === undefined ? undefined : checkWeights(weights, rows, fn);
  if (typeof minWeight !== 'number' || !Number.isFinite(minWeight) || minWeight <= 0) {
    throw invalid(`${fn}: minWeight must be a positive finite number, got ${String(minWeight)}`);
  }
  const count = labelCount(lab, undefined, fn);
  const { sums, totals } = weightedSums(x, dim, lab, count, w);
  const centroids = allocateLike(x, count * dim);
  for (let k = 0; k < centroids.length; k++) {
    centroids[k] = sums[k] / Math.max(totals[Math.floor(k / dim)], minWeight);
  }
  return { ranges: rangesFromCounts(countLabels(lab, count)), centroids, weights: totals };
}

/** Validates flattened [start, end) pairs of integers >= 0 with start <= end; returns them as an Int32Array. */
function checkRangePairs(ranges: unknown, what: string): Int32Array {
  if (!(ranges instanceof Int32Array) && !Array.isArray(ranges)) {
    throw badRanges(`${what} must be an Int32Array (or an array of integers) of [start, end) pairs`);
  }
  if (ranges.length % 2 !== 0) throw badRanges(`${what} must hold [start, end) pairs (even length)`);
  const out = new Int32Array(ranges.length);
  for (let k = 0; k < ranges.length; k += 2) {
    const [start, end]: unknown[] = [ranges[k], ranges[k + 1]];
    const isIndex = (v: unknown): v is number =>
      typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= INT32_MAX;
    if (!isIndex(start) || !isIndex(end) || start > end) {
      throw badRanges(`${what}: pair ${k / 2} is [${String(start)}, ${String(end)}), not 0 <= start <= end`);
    }
    out[k] = start;
    out[k + 1] = end;
  }
  return out;
}

/** The keep mask as one byte per cluster pair (row-major Mc×Nc), calling a predicate once per pair. */
function keepMask(keep: unknown, mc: number, nc: number): Uint8Array {
  if (mc * nc > MAX_CLUSTER_PAIRS) {
    throw invalid(`fromMatrix: ${mc}×${nc} cluster pairs is too many (at most 2^30); use larger clusters`);
  }
  const mask = new Uint8Array(mc * nc);
  if (typeof keep === 'function') {
    for (let i = 0; i < mc; i++) for (let j = 0; j < nc; j++) mask[i * nc + j] = keep(i, j) ? 1 : 0;
    return mask;
  }
  if (!(keep instanceof Uint8Array) && !Array.isArray(keep)) {
    throw invalid(
      'fromMatrix: keep must be a Uint8Array, an array of booleans, or a function (i, j) => boolean',
    );
  }
  if (keep.length !== mc * nc) {
    throw invalid(
      `fromMatrix: keep must have ${mc}×${nc} = ${mc * nc} entries (row-major), got ${keep.length}`,
    );
  }
  for (let k = 0; k < mask.length; k++) mask[k] = keep[k] ? 1 : 0;
  return mask;
}

/**
 * The ranges 6-tuple `[ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i]` from row ranges of
 * Mc i-clusters and Nc j-clusters and the Mc×Nc matrix of cluster pairs to keep, as pykeops' `from_matrix`:
 * i-cluster a reduces over the j-clusters b with keep[a, b] (in increasing b), and j-cluster b over the
 * i-clusters a with keep[a, b] (in increasing a); slices are the cumulative counts. The two range arrays are
 * copied into the tuple.
 *
 * Example: rangesI [[2,5],[7,12]], rangesJ [[1,4],[4,9],[20,30]], keep [[1,1,0],[0,1,0]] →
 * slices_i [2,3], redranges_j [[1,4],[4,9],[4,9]], slices_j [1,3,3], redranges_i [[2,5],[2,5],[7,12]].
 *
 * @param keep Mc×Nc row-major mask (nonzero / true = keep), or a predicate called once per pair, row-major
 */
export function fromMatrix(
  rangesI: Int32Array | readonly number[],
  rangesJ: Int32Array | readonly number[],
  keep: KeepMask,
): BlockSparseRanges {
  const rowsI = checkRangePairs(rangesI, 'fromMatrix: rangesI');
  const rowsJ = checkRangePairs(rangesJ, 'fromMatrix: rangesJ');
  const mc = rowsI.length / 2;
  const nc = rowsJ.length / 2;
  const mask = keepMask(keep, mc, nc);
  let kept = 0;
  for (const bit of mask) kept += bit;

  // Both directions list the same kept pairs: row-major for the i-blocks, column-major for the j-blocks.
  const slicesI = new Int32Array(mc);
  const redrangesJ = new Int32Array(2 * kept);
  let next = 0;
  for (let i = 0; i < mc; i++) {
    for (let j = 0; j < nc; j++) {
      if (mask[i * nc + j] === 0) continue;
      redrangesJ.set(rowsJ.subarray(2 * j, 2 * j + 2), 2 * next++);
    }
    slicesI[i] = next;
  }
  const slicesJ = new Int32Array(nc);
  const redrangesI = new Int32Array(2 * kept);
  next = 0;
  for (let j = 0; j < nc; j++) {
    for (let i = 0; i < mc; i++) {
      if (mask[i * nc + j] === 0) continue;
      redrangesI.set(rowsI.subarray(2 * i, 2 * i + 2), 2 * next++);
    }
    slicesJ[j] = next;
  }
  return [rowsI, slicesI, redrangesJ, rowsJ, slicesJ, redrangesI];
}

/**
 * The ranges of the transposed reduction, `[r[3], r[4], r[5], r[0], r[1], r[2]]` (pykeops' `swap_axes`); the
 * arrays themselves are shared, not copied.
 */
export function swapAxes<R extends Int32Array | readonly number[]>(
  ranges: readonly [R, R, R, R, R, R],
): readonly [R, R, R, R, R, R];
export function swapAxes(ranges: GenredRanges): GenredRanges;
export function swapAxes(ranges: GenredRanges): GenredRanges {
  if (!Array.isArray(ranges) || ranges.length !== 6) {
    throw badRanges(
      'swapAxes: ranges must be the 6-tuple [ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i]',
    );
  }
  ranges.forEach((r: unknown, k) => {
    if (!(r instanceof Int32Array) && !Array.isArray(r)) {
      throw badRanges(`swapAxes: ranges[${k}] must be an Int32Array (or an array of integers)`);
    }
  });
  return [ranges[3], ranges[4], ranges[5], ranges[0], ranges[1], ranges[2]];
}

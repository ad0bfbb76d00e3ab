/**
 * Exact k-nearest neighbours in low dimension (point clouds, D ≤ 8) with block pruning: the same ids and the
 * same distance values, bit for bit, as the engine's brute-force KMin_ArgKMin over all pairs, at a fraction of
 * the pairs.
 *
 *   const { ids, distances } = await knnLowDim(queries, base, 3, 10, { metric: 'l2' });
 *
 * How:
 *   1. The base is ordered by a balanced k-d tree (kd-tree.ts): every tree node is a contiguous row range of the
 *      permuted base with a bounding box. Queries are grouped by the base leaf they fall in (by the tree's
 *      splits), in blocks of at most 32 rows: the row blocks of the reduction.
 *   2. A pruned run takes a bound b_q per query and keeps, for each query leaf, the base leaves that may hold a
 *      point within b_q of one of its queries (box-to-box lower bound against the largest b_q, the box of the
 *      balls of radius b_q around the queries, then each query's point-to-box lower bound). Those pairs become
 *      KeOps block-sparse `ranges` on the permuted clouds (adjacent leaves joined), and
 *      KMin_ArgKMin runs once over them with K = k + 1. Ids are mapped back through the permutations.
 *   3. A row is settled when its k-th distance, widened by the rounding margin, is within b_q (then no pruned
 *      point can reach it) and its (k+1)-th candidate is farther than its k-th: its k best are then exactly the
 *      points at or below its k-th distance, and sorting them by (distance, id) gives brute force's row.
 *   4. Stage 1 guesses b_q from the base's local density. Rows it leaves unsettled go, if they are a few, to
 *      brute force, else to stage 2: a first run gives each row its k-th distance among the rows of a base node
 *      near it, a bound that settles every row of the pruned run that follows.
 *   5. Rows whose (k+1)-th candidate ties their k-th (duplicates, lattices, equal points) may have more tied
 *      points than K holds, which the permuted order cannot rank by original id: those rows are recomputed by
 *      brute force over the original order. k ≥ N, bases of a few thousand rows and clouds whose squared
 *      diameter may overflow the dtype go to brute force entirely.
 *
 * Why it is exact: the kernel evaluates the same formula per pair whatever the ranges (ranges only choose which
 * j-intervals a row block folds), so a pair's distance is the same float as in the brute-force run. Every bound
 * is compared with `≤` after widening it by a relative margin far above the formula's rounding error (at most
 * (D + 2)·2⁻²⁴ relative in float32) plus an absolute one for subnormals, so a point whose computed distance is
 * at or below a row's computed k-th distance (ties included) is never pruned.
 *
 * NaN and infinite coordinates are refused (ERR_INVALID_ARGUMENT): brute force would silently rank them last
 * (a NaN distance never enters the k best), which no bound can reproduce.
 */
import { KeOpsError } from '../errors';
import type { FloatArray, GenredRanges } from '../backend/plan';
import type { Backend } from '../backend/runner';
import { Genred } from '../genred';
import { blocksByLeaf, buildKdTree, type KdTree, leafOfRows, permutedRows } from './kd-tree';

/** Metrics the pruned search supports: squared Euclidean (as FAISS reports it) and L1. */
export type LowDimMetric = 'l2' | 'l1';

export interface KnnLowDimOptions {
  /** 'l2' (default): squared Euclidean distance. 'l1': sum of absolute differences. */
  readonly metric?: LowDimMetric;
  /** CPU worker threads (default: one per core). */
  readonly threads?: number;
  readonly signal?: AbortSignal;
  readonly backend?: Backend;
}

export interface KnnLowDimResult<T extends FloatArray> {
  /** M × k base row ids, each row sorted by (distance, id); −1 where the base has fewer than k rows. */
  readonly ids: Int32Array;
  /** M × k distances in the inputs' dtype; +Infinity where the id is −1. */
  readonly distances: T;
}

/** The formulas of the metrics: the brute-force k-NN must use the same ones for identical distances. */
export const LOW_DIM_METRIC_FORMULAS: Readonly<Record<LowDimMetric, string>> = {
  l2: 'SqDist(x,y)',
  l1: 'Sum(Abs(x-y))',
};

/** Largest dimension for which `lowDimKnnApplies` recommends pruning (beyond, boxes stop separating). */
export const LOW_DIM_MAX_DIM = 8;
/** Rows per base leaf (at most) and per query block (at most). */
const BASE_LEAF_ROWS = 32;
const QUERY_LEAF_ROWS = 32;
/** Below these sizes the pruning's fixed costs (trees, two passes) outweigh the pairs it saves. */
const MIN_BASE_ROWS = 4096;
const MIN_PAIRS = 2 ** 24;
/** KMin keeps K·dim ≤ 2^14 ranks; pruning asks for K = k + 1. */
const MAX_K = (1 << 14) - 1;
/**
 * Widening of every bound: relative (far above the kernel's rounding error in either dtype, and that of the
 * float64 box arithmetic) and absolute (rounding in the subnormal range).
 */
const RELATIVE_MARGIN = 1e-4;
const ABSOLUTE_MARGIN = { float32: 1e-36, float64: 1e-300 } as const;
/** Clouds whose squared diameter may overflow the dtype go to brute force (their distances may be +inf). */
const MAX_DIAMETER = { float32: 1e37, float64: 1e306 } as const;

/**
 * Whether `knnLowDim` is worth calling instead of a brute-force ArgKMin: low dimension, a base much larger
 * than k, and enough pairs for the pruning to pay for its trees and its second pass.
 */
export function lowDimKnnApplies(shape: {
  readonly dim: number;
  readonly queries: number;
  readonly base: number;
  readonly k: number;
  readonly metric?: string;
}): boolean {
  const { dim, queries, base, k } = shape;
  const metric = shape.metric ?? 'l2';
  return (
    (metric === 'l2' || metric === 'l1') &&
    dim >= 1 &&
    dim <= LOW_DIM_MAX_DIM &&
    k >= 1 &&
    k <= MAX_K &&
    base >= MIN_BASE_ROWS &&
    k * 16 <= base &&
    queries * base >= MIN_PAIRS
  );
}

const invalid = (message: string): KeOpsError => new KeOpsError('ERR_INVALID_ARGUMENT', message);

function checkCloud(points: unknown, dim: number, what: string): number {
  if (!(points instanceof Float32Array || points instanceof Float64Array)) {
    throw invalid(`knnLowDim: ${what} must be a Float32Array or Float64Array (row-major, rows × dim)`);
  }
  if (points.length % dim !== 0) {
    throw invalid(`knnLowDim: ${what} has ${points.length} values, not a multiple of dim ${dim}`);
  }
  for (let i = 0; i < points.length; i++) {
    const v = points[i];
    if (v - v !== 0) {
      throw invalid(
        `knnLowDim: ${what} row ${Math.floor(i / dim)} has a non-finite coordinate (${v}); ` +
          'NaN and infinite coordinates have no nearest neighbours',
      );
    }
  }
  return points.length / dim;
}

/**
 * Exact k-NN of each query row among the base rows (see the file comment): the ids and distances of the
 * engine's brute-force KMin_ArgKMin over all pairs with `LOW_DIM_METRIC_FORMULAS[metric]`, each row sorted by
 * (distance, id), ties smallest id first, missing ranks −1 / +Infinity.
 */
export async function knnLowDim<T extends FloatArray>(
  queries: T,
  base: T,
  dim: number,
  k: number,
  options: KnnLowDimOptions = {},
): Promise<KnnLowDimResult<T>> {
  if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 1) {
    throw invalid(`knnLowDim: dim must be an integer >= 1, got ${String(dim)}`);
  }
  if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 1 || k > MAX_K) {
    throw invalid(`knnLowDim: k must be an integer in [1, ${MAX_K}], got ${String(k)}`);
  }
  const metric = options.metric ?? 'l2';
  if (metric !== 'l2' && metric !== 'l1') {
    throw invalid(`knnLowDim: metric must be 'l2' or 'l1', got ${String(metric)}`);
  }
  const m = checkCloud(queries, dim, 'queries');
  const n = checkCloud(base, dim, 'base');
  if (queries.constructor !== base.constructor) {
    throw new KeOpsError('ERR_ARG_DTYPE', 'knnLowDim: queries and base must have the same dtype');
  }
  const dtype = queries instanceof Float32Array ? 'float32' : 'float64';
  const search = new KSearch(dim, k, metric, options);
  const out: KnnLowDimResult<T> = {
    ids: new Int32Array(m * k).fill(-1),
    distances: (dtype === 'float32' ? new Float32Array(m * k) : new Float64Array(m * k)).fill(Infinity) as T,
  };
  if (m === 0 || n === 0) return out;
  if (k >= n || n < MIN_BASE_ROWS) {
    await search.bruteForce(queries, base, null, out);
    return out;
  }
  const { tree: baseTree, points: orderedBase } = buildKdTree(base, dim, BASE_LEAF_ROWS);
  const index: BaseIndex = {
    tree: baseTree,
    y: orderedBase,
    leafNumberOf: leafNumbers(baseTree),
  };
  const all = new Int32Array(m);
  for (let r = 0; r < m; r++) all[r] = r;
  const batch = queryBatch(queries, dim, all, index);
  if (diameter(metric, baseTree, batch.tree) > MAX_DIAMETER[dtype]) {
    await search.bruteForce(queries, base, null, out);
    return out;
  }
  const slack = (r: number): number => (r + ABSOLUTE_MARGIN[dtype]) * (1 + RELATIVE_MARGIN);

  // Stage 1: bounds guessed from the base's local density; rows they do not certify go to stage 2.
  const guessed = guessedBounds(batch, index, k, metric);
  const first = await search.run(batch.q, index.y, prunedRanges(batch, index, guessed, metric));
  const { unsettled, ties } = settleRows(batch, index, first, guessed, k, slack, out);
  // Rows left for brute force over the original order.
  const bruteRows = ties;
  if (unsettled.length * n <= RETRY_BRUTE_FORCE_PAIRS && unsettled.length * 64 <= m) {
    // A few rows: brute force costs less than stage 2's two runs.
    for (const row of unsettled) bruteRows.push(row);
  } else if (unsettled.length > 0) {
    // Stage 2: each row's k-th distance among the rows of a base node near it bounds its k-th distance.
    const retry = queryBatch(queries, dim, Int32Array.from(unsettled), index);
    const home = await search.run(retry.q, index.y, homeRanges(retry, index, k));
    const bound = new Float64Array(retry.rows.length);
    for (let r = 0; r < bound.length; r++) bound[r] = slack(home.values[r * (k + 1) + k - 1]);
    const second = await search.run(retry.q, index.y, prunedRanges(retry, index, bound, metric));
    const again = settleRows(retry, index, second, bound, k, slack, out);
    // Stage 2's bounds certify every row (see the file comment); brute force stays the safe answer regardless.
    for (const row of again.unsettled) bruteRows.push(row);
    for (const row of again.ties) bruteRows.push(row);
  }
  if (bruteRows.length > 0) await search.bruteForce(queries, base, Int32Array.from(bruteRows), out);
  return out;
}

/** The base cloud in k-d order. */
interface BaseIndex {
  readonly tree: KdTree;
  /** The base rows in the tree's order. */
  readonly y: FloatArray;
  /** Per tree node: its number among the leaves (−1 for internal nodes). */
  readonly leafNumberOf: Int32Array;
}

/** Query rows in k-d order: row r of `q` is query row `rows[r]`. */
interface QueryBatch {
  readonly tree: KdTree;
  readonly q: FloatArray;
  readonly rows: Int32Array;
}

function queryBatch(queries: FloatArray, dim: number, rows: Int32Array, index: BaseIndex): QueryBatch {
  const subset = rows.length === queries.length / dim ? queries : permutedRows(queries, dim, rows);
  const leafOfRow = leafOfRows(index.tree, subset, index.leafNumberOf);
  const tree = blocksByLeaf(subset, dim, leafOfRow, index.tree.leaves.length, QUERY_LEAF_ROWS);
  const order = new Int32Array(rows.length);
  for (let r = 0; r < rows.length; r++) order[r] = rows[tree.permutation[r]];
  return { tree, q: permutedRows(subset, dim, tree.permutation), rows: order };
}

function leafNumbers(tree: KdTree): Int32Array {
  const out = new Int32Array(tree.start.length).fill(-1);
  tree.leaves.forEach((node, i) => (out[node] = i));
  return out;
}

/**
 * Writes the rows that a pruned run with per-row bounds `bound` answers exactly into `out`; returns the others:
 * `unsettled` (original query rows whose k-th distance, widened, exceeds their bound: points beyond the bound
 * may tie or beat it) and `ties` (rows whose (k+1)-th candidate equals their k-th: more tied points may exist
 * than the run kept, so their smallest ids are unknown).
 */
function settleRows(
  batch: QueryBatch,
  index: BaseIndex,
  result: { values: FloatArray; indices: Int32Array },
  bound: Float64Array,
  k: number,
  slack: (r: number) => number,
  out: KnnLowDimResult<FloatArray>,
): { unsettled: number[]; ties: number[] } {
  const unsettled: number[] = [];
  const ties: number[] = [];
  const val = new Float64Array(k);
  const id = new Int32Array(k);
  const { values, indices } = result;
  const { permutation } = index.tree;
  const { rows } = batch;
  const { ids, distances } = out;
  const K = k + 1;
  for (let r = 0; r < rows.length; r++) {
    const at = r * K;
    const kth = values[at + k - 1];
    if (!(slack(kth) <= bound[r])) {
      unsettled.push(rows[r]);
      continue;
    }
    if (values[at + k] === kth) {
      ties.push(rows[r]);
      continue;
    }
    for (let c = 0; c < k; c++) {
      val[c] = values[at + c];
      id[c] = permutation[indices[at + c]];
    }
    sortRow(val, id, k);
    const dst = rows[r] * k;
    for (let c = 0; c < k; c++) {
      ids[dst + c] = id[c];
      distances[dst + c] = val[c];
    }
  }
  return { unsettled, ties };
}

/** Runs KMin_ArgKMin with K = k + 1 (one kernel for every pass and for the brute-force rows). */
class KSearch {
  private readonly genred: Genred<'KMin_ArgKMin'>;

  constructor(
    private readonly dim: number,
    private readonly k: number,
    metric: LowDimMetric,
    private readonly options: KnnLowDimOptions,
  ) {
    this.genred = new Genred(LOW_DIM_METRIC_FORMULAS[metric], [`x = Vi(${dim})`, `y = Vj(${dim})`], {
      reduction: 'KMin_ArgKMin',
      axis: 1,
      k: k + 1,
    });
  }

  async run(
    x: FloatArray,
    y: FloatArray,
    ranges?: GenredRanges,
  ): Promise<{ values: FloatArray; indices: Int32Array }> {
    const { threads, signal, backend } = this.options;
    return this.genred.call([x, y], {
      ...(ranges !== undefined ? { ranges } : {}),
      ...(threads !== undefined ? { threads } : {}),
      ...(signal !== undefined ? { signal } : {}),
      ...(backend !== undefined ? { backend } : {}),
    });
  }

  /** Brute force over the original order for `rows` of the queries (null: all), written into `out`. */
  async bruteForce(
    queries: FloatArray,
    base: FloatArray,
    rows: Int32Array | null,
    out: KnnLowDimResult<FloatArray>,
  ): Promise<void> {
    const { dim, k } = this;
    const x = rows === null ? queries : permutedRows(queries, dim, rows);
    const { values, indices } = await this.run(x, base);
    const count = x.length / dim;
    for (let r = 0; r < count; r++) {
      const dst = (rows === null ? r : rows[r]) * k;
      out.ids.set(indices.subarray(r * (k + 1), r * (k + 1) + k), dst);
      out.distances.set(values.subarray(r * (k + 1), r * (k + 1) + k), dst);
    }
  }
}

/** Insertion sort of one row by (distance, id): the rows are short (k) and nearly sorted already. */
function sortRow(val: Float64Array, id: Int32Array, k: number): void {
  for (let a = 1; a < k; a++) {
    const v = val[a];
    const i = id[a];
    let b = a - 1;
    while (b >= 0 && (val[b] > v || (val[b] === v && id[b] > i))) {
      val[b + 1] = val[b];
      id[b + 1] = id[b];
      b--;
    }
    val[b + 1] = v;
    id[b + 1] = i;
  }
}

/** The largest distance between a point of the base tree's root box and one of the query blocks' boxes. */
function diameter(metric: LowDimMetric, base: KdTree, blocks: KdTree): number {
  const { dim } = base;
  let sum = 0;
  for (let d = 0; d < dim; d++) {
    let lo = base.lo[d];
    let hi = base.hi[d];
    for (const block of blocks.leaves) {
      lo = Math.min(lo, blocks.lo[block * dim + d]);
      hi = Math.max(hi, blocks.hi[block * dim + d]);
    }
    sum += metric === 'l2' ? (hi - lo) ** 2 : hi - lo;
  }
  return sum;
}

/**
 * For each query leaf, a base node near it with at least `minRows` rows: from the root, descend to the child
 * nearest the leaf's box centre while that child still holds `minRows` rows.
 */
function homeNodes(batch: QueryBatch, index: BaseIndex, minRows: number): Int32Array {
  const { tree } = batch;
  const base = index.tree;
  const { dim } = tree;
  const home = new Int32Array(tree.leaves.length);
  const centre = new Float64Array(dim);
  const gap = (node: number): number => {
    let sum = 0;
    for (let d = 0; d < dim; d++) {
      const g = Math.max(0, base.lo[node * dim + d] - centre[d], centre[d] - base.hi[node * dim + d]);
      sum += g * g;
    }
    return sum;
  };
  for (let leaf = 0; leaf < tree.leaves.length; leaf++) {
    const qNode = tree.leaves[leaf];
    for (let d = 0; d < dim; d++) centre[d] = (tree.lo[qNode * dim + d] + tree.hi[qNode * dim + d]) / 2;
    let node = 0;
    while (base.left[node] >= 0) {
      const l = base.left[node];
      const r = base.right[node];
      const next = gap(r) < gap(l) ? r : l;
      if (base.end[next] - base.start[next] < minRows) break;
      node = next;
    }
    home[leaf] = node;
  }
  return home;
}

/** Stage 2's first run: each query leaf reduces over the rows of its home node (at least k rows). */
function homeRanges(batch: QueryBatch, index: BaseIndex, k: number): GenredRanges {
  const base = index.tree;
  const pairs = new PairList();
  homeNodes(batch, index, k).forEach((node, leaf) => {
    let first = node;
    while (base.left[first] >= 0) first = base.left[first];
    let last = node;
    while (base.right[last] >= 0) last = base.right[last];
    for (let b = index.leafNumberOf[first]; b <= index.leafNumberOf[last]; b++) pairs.push(leaf, b);
  });
  return blockRanges(batch.tree, base, pairs);
}

/** Volume of the unit ball of the metric in dimension `dim`, over that of the cube [-1, 1]^dim. */
function ballFraction(metric: LowDimMetric, dim: number): number {
  let fraction = 1;
  if (metric === 'l1') {
    for (let d = 2; d <= dim; d++) fraction /= d; // 2^D / D! over 2^D
    return fraction;
  }
  // π^(D/2) / Γ(D/2 + 1) over 2^D, by the recurrence V_D = V_{D-2} · 2π / D.
  let volume = dim % 2 === 0 ? 1 : 2;
  for (let d = dim % 2 === 0 ? 2 : 3; d <= dim; d += 2) volume *= (2 * Math.PI) / d;
  return volume / 2 ** dim;
}

/** Rows stage 1 leaves unsettled are brute-forced when they are a few (pairs, and at most 1/64 of the rows). */
const RETRY_BRUTE_FORCE_PAIRS = 2 ** 25;

/** How much farther than the density estimate of the k-th distance stage 1 looks (uniform data: rarely short). */
const GUESS_FACTOR = 1.4;

/**
 * Stage 1's per-row bounds: the k-th distance estimated from the density of the row's home node (rows over its
 * box volume, dimensions of zero extent left out), widened near the cloud's faces, times GUESS_FACTOR, plus the
 * row's distance to that box.
 * Any bound is sound (rows it does not certify are redone); good ones certify most rows with few pairs.
 */
function guessedBounds(batch: QueryBatch, index: BaseIndex, k: number, metric: LowDimMetric): Float64Array {
  const { tree, q } = batch;
  const base = index.tree;
  const { dim } = tree;
  const bound = new Float64Array(batch.rows.length);
  const home = homeNodes(batch, index, 4 * k);
  const shape = ballFraction(metric, dim);
  for (let leaf = 0; leaf < tree.leaves.length; leaf++) {
    const node = home[leaf];
    const rows = base.end[node] - base.start[node];
    // Radius ρ of the metric ball holding k of the node's rows if they were spread evenly over its box:
    // rows · Π_d min(1, 2ρ / extent_d) · shape = k, solved by bisection (the left side grows with ρ).
    let widest = 0;
    for (let d = 0; d < dim; d++)
      widest = Math.max(widest, base.hi[node * dim + d] - base.lo[node * dim + d]);
    let lo = 0;
    let hi = widest;
    for (let step = 0; step < 40 && hi > 0; step++) {
      const radius = (lo + hi) / 2;
      let fraction = shape;
      for (let d = 0; d < dim; d++) {
        const extent = base.hi[node * dim + d] - base.lo[node * dim + d];
        if (extent > 0) fraction *= Math.min(1, (2 * radius) / extent);
      }
      if (rows * fraction < k) lo = radius;
      else hi = radius;
    }
    const qNode = tree.leaves[leaf];
    for (let r = tree.start[qNode]; r < tree.end[qNode]; r++) {
      let gap = 0;
      // Near the base's bounding box (node 0's), part of the row's ball lies outside the cloud and holds no
      // points: ρ grows by the inverse of the covered fraction (per dimension, at least half), so that rows near
      // faces and corners are not left unsettled.
      let covered = 1;
      let spread = 0;
      for (let d = 0; d < dim; d++) {
        const v = q[r * dim + d];
        const g = Math.max(0, base.lo[node * dim + d] - v, v - base.hi[node * dim + d]);
        gap += metric === 'l2' ? g * g : g;
        if (base.hi[d] > base.lo[d] && hi > 0) {
          const inside = Math.min(v + hi, base.hi[d]) - Math.max(v - hi, base.lo[d]);
          covered *= Math.min(1, Math.max(0.5, inside / (2 * hi)));
          spread++;
        }
      }
      const radius = GUESS_FACTOR * (spread > 0 ? hi * covered ** (-1 / spread) : hi);
      bound[r] = metric === 'l2' ? (Math.sqrt(gap) + radius) ** 2 : gap + radius;
    }
  }
  return bound;
}

/** (query leaf, base leaf) pairs, in increasing query leaf then base leaf order. */
class PairList {
  query = new Int32Array(1024);
  base = new Int32Array(1024);
  length = 0;

  push(queryLeaf: number, baseLeaf: number): void {
    if (this.length === this.query.length) {
      const query = new Int32Array(this.length * 2);
      const base = new Int32Array(this.length * 2);
      query.set(this.query);
      base.set(this.base);
      [this.query, this.base] = [query, base];
    }
    this.query[this.length] = queryLeaf;
    this.base[this.length] = baseLeaf;
    this.length++;
  }
}

/**
 * The ranges of a pruned run: for each query leaf, the base leaves that may hold a point within some row's
 * bound. A base node is entered when its box is within the leaf's largest bound (box-to-box lower bound) and
 * meets the box of the rows' balls; a base leaf is kept when one row's point-to-box lower bound is within that
 * row's own bound. Pruned points are then farther than the bound of every row of the leaf.
 */
function prunedRanges(
  batch: QueryBatch,
  index: BaseIndex,
  bound: Float64Array,
  metric: LowDimMetric,
): GenredRanges {
  const { tree, q } = batch;
  const base = index.tree;
  const { dim } = tree;
  const pairs = new PairList();
  const ballLo = new Float64Array(dim);
  const ballHi = new Float64Array(dim);
  const stack: number[] = [];

  const l2 = metric === 'l2';
  const { lo, hi, left, right } = base;
  for (let leaf = 0; leaf < tree.leaves.length; leaf++) {
    const qNode = tree.leaves[leaf];
    const from = tree.start[qNode];
    const to = tree.end[qNode];
    let largest = 0;
    ballLo.fill(Infinity);
    ballHi.fill(-Infinity);
    for (let r = from; r < to; r++) {
      const t = bound[r];
      if (t > largest) largest = t;
      // The ball of radius ρ (ρ² = t for l2, ρ = t for l1) lies in the cube of half-side ρ; the square root is
      // rounded up so that the cube never misses the ball.
      const radius = l2 ? Math.sqrt(t) * (1 + 2 ** -40) : t;
      for (let d = 0; d < dim; d++) {
        const v = q[r * dim + d];
        if (v - radius < ballLo[d]) ballLo[d] = v - radius;
        if (v + radius > ballHi[d]) ballHi[d] = v + radius;
      }
    }
    const qAt = qNode * dim;
    stack.length = 0;
    stack.push(0);
    while (stack.length > 0) {
      const node = stack.pop() as number;
      const at = node * dim;
      let meets = true;
      let gap = 0;
      for (let d = 0; d < dim; d++) {
        const nLo = lo[at + d];
        const nHi = hi[at + d];
        if (nLo > ballHi[d] || nHi < ballLo[d]) {
          meets = false;
          break;
        }
        const g = Math.max(0, nLo - tree.hi[qAt + d], tree.lo[qAt + d] - nHi);
        gap += l2 ? g * g : g;
      }
      if (!meets || gap > largest) continue;
      if (left[node] >= 0) {
        stack.push(right[node], left[node]);
        continue;
      }
      for (let r = from; r < to; r++) {
        let sum = 0;
        for (let d = 0; d < dim; d++) {
          const v = q[r * dim + d];
          const g = Math.max(0, lo[at + d] - v, v - hi[at + d]);
          sum += l2 ? g * g : g;
        }
        if (sum <= bound[r]) {
          pairs.push(leaf, index.leafNumberOf[node]);
          break;
        }
      }
    }
  }
  return blockRanges(tree, base, pairs);
}

/**
 * The ranges 6-tuple of (query leaf, base leaf) pairs on the permuted clouds: each query leaf is a row block
 * reducing over its base leaves, adjacent ones joined into one interval, in increasing order (the engine visits
 * a block's intervals by increasing start whatever their order, and checks sorted ones fastest); symmetrically
 * for the base leaves.
 */
function blockRanges(queryTree: KdTree, baseTree: KdTree, pairs: PairList): GenredRanges {
  const rowsOf = (tree: KdTree): Int32Array => {
    const out = new Int32Array(2 * tree.leaves.length);
    tree.leaves.forEach((node, i) => {
      out[2 * i] = tree.start[node];
      out[2 * i + 1] = tree.end[node];
    });
    return out;
  };
  const queryRows = rowsOf(queryTree);
  const baseRows = rowsOf(baseTree);
  const side = (
    owners: Int32Array,
    members: Int32Array,
    ownerCount: number,
    memberRows: Int32Array,
    order: Int32Array | null,
  ): [Int32Array, Int32Array] => {
    const slices = new Int32Array(ownerCount);
    const intervals = new Int32Array(2 * pairs.length);
    let count = 0;
    let p = 0;
    for (let owner = 0; owner < ownerCount; owner++) {
      const first = count;
      for (; p < pairs.length && owners[order === null ? p : order[p]] === owner; p++) {
        const pair = order === null ? p : order[p];
        const s = memberRows[2 * members[pair]];
        const e = memberRows[2 * members[pair] + 1];
        if (count > first && intervals[2 * count - 1] === s) {
          intervals[2 * count - 1] = e;
        } else {
          intervals[2 * count] = s;
          intervals[2 * count + 1] = e;
          count++;
        }
      }
      slices[owner] = count;
    }
    return [slices, intervals.slice(0, 2 * count)];
  };
  const [slicesI, redrangesJ] = side(pairs.query, pairs.base, queryTree.leaves.length, baseRows, null);
  // The same pairs by base leaf (then query leaf): a counting sort, stable, so query leaves stay increasing.
  const baseLeaves = baseTree.leaves.length;
  const offsets = new Int32Array(baseLeaves + 1);
  for (let p = 0; p < pairs.length; p++) offsets[pairs.base[p] + 1]++;
  for (let b = 0; b < baseLeaves; b++) offsets[b + 1] += offsets[b];
  const order = new Int32Array(pairs.length);
  for (let p = 0; p < pairs.length; p++) order[offsets[pairs.base[p]]++] = p;
  const [slicesJ, redrangesI] = side(pairs.base, pairs.query, baseLeaves, queryRows, order);
  return [queryRows, slicesI, redrangesJ, baseRows, slicesJ, redrangesI];
}

/**
 * Clustering helpers for block-sparse reductions (lib/cluster.ts): each helper against small hand-computed
 * examples, pykeops' `from_matrix` docstring example, voxel labels in 1 to 5 dimensions, validation errors, and
 * the whole pipeline (grid → sort → ranges/centroids → keep → fromMatrix) checked against a dense reference sum.
 */
import { expect } from 'chai';
import {
  clusterCentroids,
  clusterRanges,
  clusterRangesCentroids,
  fromMatrix,
  gridCluster,
  permuteRows,
  sortClusters,
  swapAxes,
  unpermuteRows,
} from '../lib/cluster';
import { parseFormula } from '../lib/formula';
import { normalizeRanges, type ReferenceInput, referenceGenred } from '../lib/reference';
import { expectClose, expectKeOpsError, randArray, rng } from './util';

const i32 = (...v: number[]): Int32Array => Int32Array.from(v);
const f64 = (...v: number[]): Float64Array => Float64Array.from(v);
const list = (a: ArrayLike<number>): number[] => Array.from(a);

/**
 * Checks labels against voxel coordinates computed here: same voxel ⇔ same label, labels compact in [0, C),
 * and numbered in lexicographic voxel order (first dimension most significant).
 */
function expectVoxelLabels(x: Float64Array, dim: number, size: number, labels: Int32Array): void {
  const rows = x.length / dim;
  const mins = Array.from({ length: dim }, (_, d) => Math.min(...list(x.filter((_, k) => k % dim === d))));
  const voxel = (row: number): number[] =>
    Array.from({ length: dim }, (_, d) => Math.floor((x[row * dim + d] - mins[d]) / size));
  const labelOfVoxel = new Map<string, number>();
  for (let row = 0; row < rows; row++) {
    const key = voxel(row).join(',');
    const known = labelOfVoxel.get(key);
    if (known === undefined) labelOfVoxel.set(key, labels[row]);
    else expect(labels[row], `row ${row} shares voxel ${key}`).to.equal(known);
  }
  const distinctLabels = new Set(labelOfVoxel.values());
  expect(distinctLabels.size, 'different voxels get different labels').to.equal(labelOfVoxel.size);
  expect([...distinctLabels].sort((a, b) => a - b)).to.deep.equal([...Array(labelOfVoxel.size).keys()]);
  const byLabel = [...labelOfVoxel.entries()]
    .sort((a, b) => a[1] - b[1])
    .map(([key]) => key.split(',').map(Number));
  for (let c = 1; c < byLabel.length; c++) {
    const d = byLabel[c].findIndex((v, k) => v !== byLabel[c - 1][k]);
    expect(byLabel[c][d], `voxel order at label ${c}`).to.be.greaterThan(byLabel[c - 1][d]);
  }
}

describe('cluster: gridCluster', () => {
  it('1-D: labels voxels in sorted order, relative to the minimum', () => {
    // min −0.5, voxel coordinates ⌊x + 0.5⌋ = [0, 3, 1, 1, 3, 0] → sorted voxels 0, 1, 3.
    const labels = gridCluster(f64(0.1, 2.5, 0.9, 1.2, 3.0, -0.5), 1, 1);
    expect(labels).to.be.instanceOf(Int32Array);
    expect(list(labels)).to.deep.equal([0, 2, 1, 1, 2, 0]);
  });

  it('2-D: lexicographic voxel order, first dimension most significant; per-dimension sizes', () => {
    const x = f64(0, 0, 0.5, 0.2, 1.5, 0.1, 0.2, 1.7, 1.1, 1.9, 0.9, 0.9);
    // Voxels (0,0) (0,0) (1,0) (0,1) (1,1) (0,0) → (0,0)=0, (0,1)=1, (1,0)=2, (1,1)=3.
    expect(list(gridCluster(x, 2, 1))).to.deep.equal([0, 0, 2, 1, 3, 0]);
    // Sizes [2, 0.5]: voxels (0,0) (0,0) (0,0) (0,3) (0,3) (0,1).
    expect(list(gridCluster(x, 2, [2, 0.5]))).to.deep.equal([0, 0, 0, 2, 2, 1]);
    expect(list(gridCluster(Float32Array.from(x), 2, f64(2, 0.5)))).to.deep.equal([0, 0, 0, 2, 2, 1]);
  });

  for (const dim of [1, 2, 3, 5]) {
    it(`${dim}-D random points: same voxel ⇔ same label, compact labels in voxel order`, () => {
      const r = rng(100 + dim);
      const x = randArray(r, 200 * dim, -1, 1);
      const size = dim <= 3 ? 0.6 : 1.1; // a few dozen voxels whatever the dimension
      const labels = gridCluster(x, dim, size);
      expectVoxelLabels(x, dim, size, labels);
      expect(new Set(labels).size, 'several voxels, several points per voxel').to.be.within(2, 150);
    });
  }

  it('empty input gives no labels; one point gives label 0', () => {
    expect(gridCluster(new Float64Array(0), 3, 1).length).to.equal(0);
    expect(list(gridCluster(f64(4, 5, 6), 3, 0.1))).to.deep.equal([0]);
  });
});

describe('cluster: sortClusters, permuteRows, unpermuteRows', () => {
  const x = f64(0, 0, 1, 1, 2, 2, 3, 3, 4, 4);
  const labels = i32(2, 0, 1, 0, 2);

  it('sorts rows by label, stably, and returns the permutation', () => {
    const sorted = sortClusters(x, 2, labels);
    expect(list(sorted.permutation)).to.deep.equal([1, 3, 2, 0, 4]);
    expect(list(sorted.labels)).to.deep.equal([0, 0, 1, 2, 2]);
    expect(list(sorted.points)).to.deep.equal([1, 1, 3, 3, 2, 2, 0, 0, 4, 4]);
    expect(sorted.points).to.be.instanceOf(Float64Array);
    expect(sortClusters(Float32Array.from(x), 2, [2, 0, 1, 0, 2]).points).to.be.instanceOf(Float32Array);
  });

  it('permuteRows follows the sort; unpermuteRows undoes it', () => {
    const { permutation } = sortClusters(x, 2, labels);
    const signal = f64(10, 11, 12, 13, 14);
    expect(list(permuteRows(signal, 1, permutation))).to.deep.equal([11, 13, 12, 10, 14]);
    expect(list(unpermuteRows(permuteRows(x, 2, permutation), 2, permutation))).to.deep.equal(list(x));
  });

  it('rejects mismatched labels and non-permutations', () => {
    expectKeOpsError(() => sortClusters(x, 2, i32(0, 1)), 'ERR_INVALID_ARGUMENT', /5 labels/);
    expectKeOpsError(() => sortClusters(x, 2, i32(0, 1, -1, 0, 0)), 'ERR_CLUSTER', />= 0/);
    expectKeOpsError(() => permuteRows(x, 2, i32(0, 1, 2, 3, 3)), 'ERR_INVALID_ARGUMENT', /exactly once/);
    expectKeOpsError(() => unpermuteRows(x, 2, i32(0, 1, 2)), 'ERR_INVALID_ARGUMENT', /3 entries/);
  });
});

describe('cluster: clusterRanges, clusterCentroids, clusterRangesCentroids', () => {
  it('clusterRanges: [start, end) per label from counts; absent labels get empty ranges', () => {
    expect(list(clusterRanges(i32(0, 0, 1, 3, 3, 3)))).to.deep.equal([0, 2, 2, 3, 3, 3, 3, 6]);
    expect(list(clusterRanges([0, 0, 1, 3, 3, 3], 5))).to.deep.equal([0, 2, 2, 3, 3, 3, 3, 6, 6, 6]);
    expect(list(clusterRanges(i32()))).to.deep.equal([]);
    expect(list(clusterRanges(i32(), 2))).to.deep.equal([0, 0, 0, 0]);
  });

  it('clusterCentroids: (weighted) means; clusters without weight are NaN; labels need not be sorted', () => {
    const x = f64(0, 0, 2, 0, 1, 1, 5, 5);
    const labels = i32(1, 0, 1, 3);
    expectClose(clusterCentroids(x, 2, labels), [2, 0, 0.5, 0.5, NaN, NaN, 5, 5]);
    expectClose(clusterCentroids(x, 2, labels, 4, f64(1, 2, 3, 4)), [2, 0, 0.75, 0.75, NaN, NaN, 5, 5]);
    expectClose(clusterCentroids(x, 2, labels, 5, [0, 1, 1, 1]), [2, 0, 1, 1, NaN, NaN, 5, 5, NaN, NaN]);
    const c32 = clusterCentroids(Float32Array.from(x), 2, labels);
    expect(c32).to.be.instanceOf(Float32Array);
    expectClose(c32, [2, 0, 0.5, 0.5, NaN, NaN, 5, 5]);
  });

  it('clusterRangesCentroids: ranges, centroids over max(weight, minWeight), raw weights', () => {
    const x = f64(1, 3, 4, 5, 9);
    const plain = clusterRangesCentroids(x, 1, i32(0, 0, 2, 2, 2));
    expect(list(plain.ranges)).to.deep.equal([0, 2, 2, 2, 2, 5]);
    expectClose(plain.centroids, [2, 0, 6]);
    expectClose(plain.weights, [2, 0, 3]);
    const weighted = clusterRangesCentroids(x, 1, [0, 0, 2, 2, 2], f64(1, 3, 0, 0, 2));
    expectClose(weighted.centroids, [2.5, 0, 9]);
    expectClose(weighted.weights, [4, 0, 2]);
    // A total weight below minWeight is divided by minWeight instead.
    expectClose(clusterRangesCentroids(f64(6), 1, [0], [1e-3], 0.5).centroids, [0.012]);
  });

  it('rejects bad labels (ERR_CLUSTER) and bad arguments (ERR_INVALID_ARGUMENT)', () => {
    expectKeOpsError(() => clusterRanges(i32(0, 2, 1)), 'ERR_CLUSTER', /sorted/);
    expectKeOpsError(() => clusterRanges(i32(0, 1, 3), 3), 'ERR_CLUSTER', /out of range/);
    expectKeOpsError(() => clusterRanges(i32(-1, 0)), 'ERR_CLUSTER', />= 0/);
    expectKeOpsError(() => clusterRanges([0, 0.5]), 'ERR_CLUSTER', /integers/);
    expectKeOpsError(() => clusterRanges(i32(0), -1), 'ERR_INVALID_ARGUMENT', /nLabels/);
    expectKeOpsError(() => clusterRanges(new Uint8Array(2) as never), 'ERR_INVALID_ARGUMENT', /Int32Array/);
    expectKeOpsError(() => clusterCentroids(f64(1, 2), 1, i32(0, 2), 2), 'ERR_CLUSTER', /out of range/);
    expectKeOpsError(
      () => clusterCentroids(f64(1, 2), 1, i32(0, 0), 1, [1]),
      'ERR_INVALID_ARGUMENT',
      /2 weights/,
    );
    const x = f64(1, 2, 3);
    expectKeOpsError(() => clusterRangesCentroids(x, 1, i32(1, 0, 0)), 'ERR_CLUSTER', /sortClusters/);
    expectKeOpsError(() => clusterRangesCentroids(x, 1, i32(0, 0)), 'ERR_INVALID_ARGUMENT', /3 labels/);
    expectKeOpsError(
      () => clusterRangesCentroids(x, 1, i32(0, 0, 1), [1, -1, 1]),
      'ERR_INVALID_ARGUMENT',
      />= 0/,
    );
    expectKeOpsError(() => clusterRangesCentroids(x, 1, i32(0, 0, 1), undefined, 0), 'ERR_INVALID_ARGUMENT');
  });

  it('gridCluster rejects bad dim, size and coordinates', () => {
    const x = f64(0, 1, 2, 3);
    expectKeOpsError(() => gridCluster(x, 0, 1), 'ERR_INVALID_ARGUMENT', /dim/);
    expectKeOpsError(() => gridCluster(x, 1.5, 1), 'ERR_INVALID_ARGUMENT', /dim/);
    expectKeOpsError(() => gridCluster(x, 3, 1), 'ERR_INVALID_ARGUMENT', /multiple of dim/);
    expectKeOpsError(() => gridCluster([0, 1] as never, 1, 1), 'ERR_INVALID_ARGUMENT', /Float32Array/);
    expectKeOpsError(() => gridCluster(x, 2, -1), 'ERR_INVALID_ARGUMENT', /positive/);
    expectKeOpsError(() => gridCluster(x, 2, 0), 'ERR_INVALID_ARGUMENT', /positive/);
    expectKeOpsError(() => gridCluster(x, 2, [1, -2]), 'ERR_INVALID_ARGUMENT', /size\[1\]/);
    expectKeOpsError(() => gridCluster(x, 2, [1]), 'ERR_INVALID_ARGUMENT', /2 voxel sizes/);
    expectKeOpsError(() => gridCluster(f64(0, NaN), 1, 1), 'ERR_INVALID_ARGUMENT', /finite/);
    expectKeOpsError(() => gridCluster(f64(0, 1e300), 1, 1e-300), 'ERR_INVALID_ARGUMENT', /too small/);
  });
});

describe('cluster: fromMatrix, swapAxes', () => {
  const rangesI = i32(2, 5, 7, 12);
  const rangesJ = i32(1, 4, 4, 9, 20, 30);

  it("reproduces pykeops' from_matrix docstring example", () => {
    const keep = Uint8Array.from([1, 1, 0, 0, 1, 0]);
    const [ri, slicesI, redrangesJ, rj, slicesJ, redrangesI] = fromMatrix(rangesI, rangesJ, keep);
    expect(list(ri)).to.deep.equal([2, 5, 7, 12]);
    expect(list(slicesI)).to.deep.equal([2, 3]);
    expect(list(redrangesJ)).to.deep.equal([1, 4, 4, 9, 4, 9]);
    expect(list(rj)).to.deep.equal([1, 4, 4, 9, 20, 30]);
    expect(list(slicesJ)).to.deep.equal([1, 3, 3]);
    expect(list(redrangesI)).to.deep.equal([2, 5, 2, 5, 7, 12]);
  });

  it('accepts boolean arrays and predicates, and builds the transpose that swapAxes gives', () => {
    const mask = [true, true, false, false, true, false];
    const fromMask = fromMatrix(rangesI, rangesJ, mask).map(list);
    expect(
      fromMatrix([2, 5, 7, 12], [1, 4, 4, 9, 20, 30], (i, j) => mask[i * 3 + j]).map(list),
    ).to.deep.equal(fromMask);
    const transposed = fromMatrix(rangesJ, rangesI, (j, i) => mask[i * 3 + j]);
    expect(swapAxes(transposed).map(list)).to.deep.equal(fromMask);
    const none = fromMatrix(rangesI, rangesJ, new Uint8Array(6));
    expect(none.map(list)).to.deep.equal([[2, 5, 7, 12], [0, 0], [], [1, 4, 4, 9, 20, 30], [0, 0, 0], []]);
  });

  it('swapAxes exchanges the two directions, sharing the arrays', () => {
    const r = [i32(0), i32(1), i32(2), i32(3), i32(4), i32(5)] as const;
    const swapped = swapAxes(r);
    expect(swapped.map((a) => a[0])).to.deep.equal([3, 4, 5, 0, 1, 2]);
    expect(swapped[0]).to.equal(r[3]);
    expectKeOpsError(() => swapAxes([i32()] as never), 'ERR_RANGES', /6-tuple/);
    expectKeOpsError(() => swapAxes([1, 2, 3, 4, 5, 6] as never), 'ERR_RANGES', /ranges\[0\]/);
  });

  it('rejects keep of the wrong size or type, and malformed cluster ranges', () => {
    expectKeOpsError(
      () => fromMatrix(rangesI, rangesJ, new Uint8Array(5)),
      'ERR_INVALID_ARGUMENT',
      /2×3 = 6/,
    );
    expectKeOpsError(() => fromMatrix(rangesI, rangesJ, 'all' as never), 'ERR_INVALID_ARGUMENT', /keep/);
    expectKeOpsError(() => fromMatrix(i32(2, 5, 7), rangesJ, []), 'ERR_RANGES', /pairs/);
    expectKeOpsError(() => fromMatrix(rangesI, i32(4, 1), [1, 1]), 'ERR_RANGES', /start <= end/);
    expectKeOpsError(() => fromMatrix(rangesI, [-1, 2], [1, 1]), 'ERR_RANGES', /start <= end/);
    expectKeOpsError(() => fromMatrix(null as never, rangesJ, []), 'ERR_RANGES', /Int32Array/);
  });
});

describe('cluster: block-sparse pipeline against the dense reference', () => {
  it('grid → sort → ranges/centroids → keep → fromMatrix gives valid ranges and a close Gaussian sum', () => {
    const dim = 2;
    const [M, N] = [240, 220]; // small: the reference evaluates every pair
    const sigma = 0.15;
    const voxel = 0.3;
    // A dropped pair's points are at least threshold − 2·(voxel diagonal) = 6σ apart: kernel below e^-18.
    const threshold = 6 * sigma + 2 * voxel * Math.SQRT2;
    const r = rng(7);
    const x = randArray(r, M * dim, 0, 5);
    const y = randArray(r, N * dim, 0, 5);
    const a = randArray(r, M, 0.5, 1.5);
    const bj = randArray(r, N, 0.5, 1.5);

    const sx = sortClusters(x, dim, gridCluster(x, dim, voxel));
    const sy = sortClusters(y, dim, gridCluster(y, dim, voxel));
    const cx = clusterRangesCentroids(sx.points, dim, sx.labels);
    const cy = clusterRangesCentroids(sy.points, dim, sy.labels);
    const [mc, nc] = [cx.weights.length, cy.weights.length];
    const keep = new Uint8Array(mc * nc);
    for (let i = 0; i < mc; i++) {
      for (let j = 0; j < nc; j++) {
        let sq = 0;
        for (let d = 0; d < dim; d++) sq += (cx.centroids[i * dim + d] - cy.centroids[j * dim + d]) ** 2;
        keep[i * nc + j] = sq < threshold ** 2 ? 1 : 0;
      }
    }
    const ranges = fromMatrix(cx.ranges, cy.ranges, keep);

    // The ranges are well formed in both directions, and the row blocks cover every row.
    const blocksI = normalizeRanges(ranges[0], ranges[1], ranges[2], M, N);
    const blocksJ = normalizeRanges(ranges[3], ranges[4], ranges[5], N, M);
    expect(blocksI.reduce((n, b) => n + b.end - b.start, 0)).to.equal(M);
    expect(blocksJ.reduce((n, b) => n + b.end - b.start, 0)).to.equal(N);
    const keptFraction = keep.reduce((n, k) => n + k, 0) / keep.length;
    expect(keptFraction, 'the pattern is actually sparse').to.be.below(0.6);

    const formula = parseFormula('Exp(-p * SqDist(x, y)) * a * b', [
      'x = Vi(2)',
      'y = Vj(2)',
      'a = Vi(1)',
      'b = Vj(1)',
      'p = Pm(1)',
    ]).node;
    const inputs = (
      xs: Float64Array,
      ys: Float64Array,
      as: Float64Array,
      bs: Float64Array,
    ): ReferenceInput[] => [
      { data: xs, cat: 0, dim },
      { data: ys, cat: 1, dim },
      { data: as, cat: 0, dim: 1 },
      { data: bs, cat: 1, dim: 1 },
      { data: f64(1 / (2 * sigma ** 2)), cat: 2, dim: 1 },
    ];
    const dense = inputs(x, y, a, bj);
    const sorted = inputs(
      sx.points,
      sy.points,
      permuteRows(a, 1, sx.permutation),
      permuteRows(bj, 1, sy.permutation),
    );
    const relativeL1 = (approx: ArrayLike<number>, exact: ArrayLike<number>): number => {
      let [num, den] = [0, 0];
      for (let k = 0; k < exact.length; k++) {
        num += Math.abs(approx[k] - exact[k]);
        den += Math.abs(exact[k]);
      }
      return num / den;
    };
    for (const [axis, permutation] of [
      [1, sx.permutation],
      [0, sy.permutation],
    ] as const) {
      const exact = referenceGenred('Sum', formula, dense, { axis }) as Float64Array;
      const sparse = referenceGenred('Sum', formula, sorted, { axis, ranges }) as Float64Array;
      const error = relativeL1(unpermuteRows(sparse, 1, permutation), exact);
      expect(error, `axis ${axis}: relative L1 error`).to.be.below(1e-3);
    }
  });
});

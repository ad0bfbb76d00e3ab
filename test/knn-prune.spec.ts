/**
 * Exact low-dimensional k-NN with block pruning (lib/knn/prune.ts). Every case is checked twice:
 *   - against the engine's brute-force KMin_ArgKMin over all pairs (same formula, no ranges): ids equal and
 *     distances byte-identical, in float32 and float64;
 *   - against an independent float64 brute force written here (difference form, ties by smallest id): float64
 *     distances within 1e-10 relative and ids equal; float32 distances within float32 rounding.
 * Clouds: uniform, clustered, duplicated, all equal, on a line, on an integer lattice (many exact ties), far
 * apart, in D = 1..8; k ∈ {1, 10, more than the base}; l2 and l1.
 */
import { expect } from 'chai';
import { KeOpsError, type KeOpsErrorCode } from '../lib/errors';
import { Genred } from '../lib/genred';
import { knn } from '../lib/knn/knn';
import { knnLowDimIfWorthIt } from '../lib/knn/low-dim-dispatch';
import { knnLowDim, LOW_DIM_METRIC_FORMULAS, lowDimKnnApplies, type LowDimMetric } from '../lib/knn/prune';
import { rng } from './util';

type Cloud = Float32Array | Float64Array;

function cloud(
  dtype: 'float32' | 'float64',
  rows: number,
  dim: number,
  value: (row: number, d: number) => number,
): Cloud {
  const out = dtype === 'float32' ? new Float32Array(rows * dim) : new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) for (let d = 0; d < dim; d++) out[r * dim + d] = value(r, d);
  return out;
}

/** Independent reference: float64 distances of the stored values, rows sorted by (distance, id). */
function referenceKnn(
  x: Cloud,
  y: Cloud,
  dim: number,
  k: number,
  metric: LowDimMetric,
): { ids: Int32Array; distances: Float64Array } {
  const m = x.length / dim;
  const n = y.length / dim;
  const ids = new Int32Array(m * k).fill(-1);
  const distances = new Float64Array(m * k).fill(Infinity);
  const bestD = new Float64Array(k);
  const bestI = new Int32Array(k);
  for (let i = 0; i < m; i++) {
    bestD.fill(Infinity);
    bestI.fill(-1);
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let d = 0; d < dim; d++) {
        const diff = x[i * dim + d] - y[j * dim + d];
        s += metric === 'l2' ? diff * diff : Math.abs(diff);
      }
      // Insert after equal distances: j increases, so ties keep the smallest id first.
      if (!(s < bestD[k - 1])) continue;
      let c = k - 1;
      for (; c > 0 && s < bestD[c - 1]; c--) {
        bestD[c] = bestD[c - 1];
        bestI[c] = bestI[c - 1];
      }
      bestD[c] = s;
      bestI[c] = j;
    }
    ids.set(bestI, i * k);
    distances.set(bestD, i * k);
  }
  return { ids, distances };
}

/**
 * The engine's brute force: KMin_ArgKMin over all pairs with the same formula, no ranges, with K = k, or with
 * K = k + 1 keeping the first k ranks of each row (the same ranking; the kernel knnLowDim itself compiles, so
 * the sweeps below compile half as many kernels).
 */
async function engineKnn(
  x: Cloud,
  y: Cloud,
  dim: number,
  k: number,
  metric: LowDimMetric,
  extraRank: boolean,
): Promise<{ values: Cloud; indices: Int32Array }> {
  const K = extraRank ? k + 1 : k;
  const g = new Genred(LOW_DIM_METRIC_FORMULAS[metric], [`x = Vi(${dim})`, `y = Vj(${dim})`], {
    reduction: 'KMin_ArgKMin',
    axis: 1,
    k: K,
  });
  const { values, indices } = await g.call([x, y]);
  if (!extraRank) return { values, indices };
  const m = x.length / dim;
  const keptValues = x instanceof Float32Array ? new Float32Array(m * k) : new Float64Array(m * k);
  const keptIndices = new Int32Array(m * k);
  for (let i = 0; i < m; i++) {
    keptValues.set(values.subarray(i * K, i * K + k), i * k);
    keptIndices.set(indices.subarray(i * K, i * K + k), i * k);
  }
  return { values: keptValues, indices: keptIndices };
}

function bytes(a: Cloud): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Runs knnLowDim and checks it against both brute forces. */
async function check(
  x: Cloud,
  y: Cloud,
  dim: number,
  k: number,
  metric: LowDimMetric,
  what: string,
  extraRank = false,
): Promise<void> {
  const got = await knnLowDim(x, y, dim, k, { metric });
  const m = x.length / dim;
  expect(got.ids.length, what).to.equal(m * k);
  expect(got.distances.constructor, what).to.equal(x.constructor);
  const engine = await engineKnn(x, y, dim, k, metric, extraRank);
  let idMismatch = -1;
  for (let e = 0; e < m * k && idMismatch < 0; e++) if (got.ids[e] !== engine.indices[e]) idMismatch = e;
  expect(idMismatch, `${what}: first id differing from the engine's brute force`).to.equal(-1);
  expect(Buffer.compare(bytes(got.distances), bytes(engine.values)), `${what}: distance bytes`).to.equal(0);

  const ref = referenceKnn(x, y, dim, k, metric);
  const rtol = x instanceof Float64Array ? 1e-10 : 1e-5;
  for (let e = 0; e < m * k; e++) {
    const [a, b] = [got.distances[e], ref.distances[e]];
    if (!Number.isFinite(b)) {
      expect(a, `${what}: missing rank ${e}`).to.equal(Infinity);
      expect(got.ids[e], `${what}: missing rank ${e}`).to.equal(-1);
      continue;
    }
    expect(Math.abs(a - b) <= rtol * Math.abs(b) + 1e-30, `${what}: distance ${e}: ${a} vs ${b}`).to.equal(
      true,
    );
  }
  if (x instanceof Float64Array) {
    // Float64 rounding cannot swap two distinct neighbours of these clouds: the ranking itself must match.
    for (let e = 0; e < m * k; e++) expect(got.ids[e], `${what}: id ${e}`).to.equal(ref.ids[e]);
  }
}

async function expectRejects(
  promise: Promise<unknown>,
  code: KeOpsErrorCode,
  mention?: string,
): Promise<void> {
  let error: unknown;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  expect(error).to.be.instanceOf(KeOpsError);
  expect((error as KeOpsError).code, (error as KeOpsError).message).to.equal(code);
  if (mention !== undefined) expect((error as KeOpsError).message).to.contain(mention);
}

describe('knnLowDim: exact k-NN with block pruning', function () {
  this.timeout(60_000);

  for (const dtype of ['float32', 'float64'] as const) {
    it(`uniform D=3, ${dtype}: equal to both brute forces`, async () => {
      const r = rng(dtype === 'float32' ? 1 : 2);
      const y = cloud(dtype, 5000, 3, () => r());
      const x = cloud(dtype, 1000, 3, () => r());
      if (dtype === 'float32') await check(x, y, 3, 1, 'l2', `${dtype} k=1`);
      await check(x, y, 3, 10, 'l2', `${dtype} k=10`);
    });

    it(`clustered and far-apart clouds, ${dtype}`, async () => {
      const r = rng(dtype === 'float32' ? 3 : 4);
      // Gaussian-ish clusters of very different spreads, and queries partly far outside the base.
      const centres = Array.from({ length: 12 }, () => [r() * 10, r() * 10, r() * 10]);
      const spread = centres.map((_, c) => 10 ** (-3 + (c % 4)));
      const y = cloud(dtype, 6000, 3, (row, d) => {
        const c = row % centres.length;
        return centres[c][d] + spread[c] * (r() + r() + r() - 1.5);
      });
      const x = cloud(dtype, 1200, 3, (row, d) =>
        row % 3 === 0 ? 40 + r() * 5 : centres[row % centres.length][d] + spread[row % 4] * (r() - 0.5) * 4,
      );
      await check(x, y, 3, 10, 'l2', `${dtype} clustered`);
    });
  }

  it('duplicates: every base point four times, queries on base points (ties at the k-th rank)', async () => {
    const r = rng(5);
    const distinct = cloud('float32', 1500, 3, () => r());
    const y = cloud('float32', 6000, 3, (row, d) => distinct[(row % 1500) * 3 + d]);
    const x = cloud('float32', 800, 3, (row, d) =>
      row % 2 === 0 ? distinct[((row * 7) % 1500) * 3 + d] : r(),
    );
    await check(x, y, 3, 1, 'l2', 'duplicates k=1');
    await check(x, y, 3, 10, 'l2', 'duplicates k=10');
  });

  it('groups of 40 equal points (guesses settle nothing: stage 2, then brute force for the tied rows)', async () => {
    const r = rng(6);
    const groups = cloud('float64', 150, 3, () => r());
    const y = cloud('float64', 6000, 3, (row, d) => groups[(row % 150) * 3 + d]);
    const x = cloud('float64', 600, 3, () => r());
    await check(x, y, 3, 10, 'l2', 'groups');
  });

  it('all points equal, and integer lattices (exact ties everywhere)', async () => {
    const same = cloud('float32', 5000, 3, () => 0.25);
    await check(
      cloud('float32', 200, 3, () => 0.25),
      same,
      3,
      10,
      'l2',
      'all equal',
    );
    const r = rng(7);
    const lattice = cloud('float32', 8000, 3, () => Math.floor(r() * 20));
    await check(
      cloud('float32', 700, 3, () => Math.floor(r() * 20)),
      lattice,
      3,
      10,
      'l2',
      'lattice',
    );
  });

  it('points on a line: along an axis and along a diagonal of 3-D space', async () => {
    const r = rng(8);
    const axis = cloud('float32', 5000, 3, (_, d) => (d === 1 ? r() : 0.5));
    await check(
      cloud('float32', 500, 3, (_, d) => (d === 1 ? r() : 0.5)),
      axis,
      3,
      10,
      'l2',
      'axis line',
    );
    const t = Array.from({ length: 5000 }, () => r());
    const diagonal = cloud('float64', 5000, 3, (row, d) => t[row] * (d + 1));
    const q = cloud('float64', 500, 3, (row, d) => ((row * 0.618) % 1) * (d + 1) + 0.01 * r());
    await check(q, diagonal, 3, 10, 'l2', 'diagonal line');
  });

  it('D = 1 to 8, float32 and float64, l2 and l1', async () => {
    const r = rng(9);
    for (let dim = 1; dim <= 8; dim++) {
      const dtype = dim % 2 === 0 ? 'float64' : 'float32';
      const y = cloud(dtype, 4500, dim, () => r());
      const x = cloud(dtype, 300, dim, () => r());
      await check(x, y, dim, 10, 'l2', `D=${dim} l2`, true);
      if (dim === 3 || dim === 6) await check(x, y, dim, 10, 'l1', `D=${dim} l1`, true);
    }
  });

  it('k above the base size: missing ranks are id -1 and distance +Infinity', async () => {
    const r = rng(10);
    const y = cloud('float32', 40, 3, () => r());
    const x = cloud('float32', 30, 3, () => r());
    await check(x, y, 3, 55, 'l2', 'k > N');
    const empty = await knnLowDim(x, new Float32Array(0), 3, 2);
    expect(Array.from(empty.ids.subarray(0, 4))).to.deep.equal([-1, -1, -1, -1]);
    expect(empty.distances[0]).to.equal(Infinity);
    expect((await knnLowDim(new Float32Array(0), y, 3, 2)).ids.length).to.equal(0);
  });

  it('huge coordinates (squared diameter beyond float32): same as brute force, infinities included', async () => {
    const r = rng(11);
    const y = cloud('float32', 5000, 3, () => (r() - 0.5) * 4e19);
    const x = cloud('float32', 100, 3, () => (r() - 0.5) * 4e19);
    await check(x, y, 3, 10, 'l2', 'huge');
  });

  it('refuses NaN and infinite coordinates, mixed dtypes, bad k, dim and metric with typed errors', async () => {
    const y = new Float32Array(30).fill(1);
    const x = new Float32Array(6).fill(0);
    x[4] = NaN;
    await expectRejects(knnLowDim(x, y, 3, 2), 'ERR_INVALID_ARGUMENT', 'queries row 1');
    const inf = new Float64Array(30).fill(0);
    inf[29] = -Infinity;
    await expectRejects(knnLowDim(new Float64Array(3), inf, 3, 2), 'ERR_INVALID_ARGUMENT', 'base row 9');
    await expectRejects(knnLowDim<Cloud>(new Float32Array(3), new Float64Array(3), 3, 1), 'ERR_ARG_DTYPE');
    await expectRejects(knnLowDim(y, y, 3, 0), 'ERR_INVALID_ARGUMENT', 'k must be');
    await expectRejects(knnLowDim(y, y, 3, 1.5), 'ERR_INVALID_ARGUMENT', 'k must be');
    await expectRejects(knnLowDim(y, y, 4, 1), 'ERR_INVALID_ARGUMENT', 'not a multiple');
    await expectRejects(knnLowDim(y, y, 0, 1), 'ERR_INVALID_ARGUMENT', 'dim');
    await expectRejects(
      knnLowDim(y, y, 3, 1, { metric: 'cosine' as LowDimMetric }),
      'ERR_INVALID_ARGUMENT',
      'metric',
    );
    await expectRejects(
      knnLowDim([1, 2, 3] as unknown as Float32Array, y, 3, 1),
      'ERR_INVALID_ARGUMENT',
      'Float32Array',
    );
  });

  it('stops with ERR_ABORTED when its signal has fired', async () => {
    const r = rng(12);
    const y = cloud('float32', 6000, 3, () => r());
    const controller = new AbortController();
    controller.abort();
    await expectRejects(knnLowDim(y, y, 3, 4, { signal: controller.signal }), 'ERR_ABORTED');
  });

  it('knn() takes the pruned search where it applies, with the bytes of its brute-force path', async () => {
    const r = rng(13);
    for (const [dtype, metric] of [
      ['float32', 'l2'],
      ['float64', 'l1'],
    ] as const) {
      const y = cloud(dtype, 4100, 3, () => r());
      const x = cloud(dtype, 4100, 3, () => r());
      expect(lowDimKnnApplies({ dim: 3, queries: 4100, base: 4100, k: 10, metric })).to.equal(true);
      const progress: number[] = [];
      const pruned = await knn(
        { data: x, dim: 3 },
        { data: y, dim: 3 },
        {
          k: 10,
          metric,
          onProgress: (p) => progress.push(p.pairsDone / p.pairsTotal),
        },
      );
      expect(progress).to.deep.equal([1]);
      const taken = await knnLowDimIfWorthIt({ data: x, dim: 3 }, { data: y, dim: 3 }, 3, dtype, {
        k: 10,
        metric,
      });
      expect(taken?.rows).to.equal(4100);
      // chunkRows keeps knn() on its chunked brute force.
      const brute = await knn(
        { data: x, dim: 3 },
        { data: y, dim: 3 },
        {
          k: 10,
          metric,
          chunkRows: { base: 1500 },
        },
      );
      expect(pruned.rows).to.equal(4100);
      expect(Buffer.compare(Buffer.from(pruned.ids.buffer), Buffer.from(brute.ids.buffer))).to.equal(0);
      expect(Buffer.compare(bytes(pruned.distances), bytes(brute.distances)), `${dtype} ${metric}`).to.equal(
        0,
      );
    }
  });

  it('knn() keeps its brute force for excludeSelf, devices, chunkRows, other metrics, dtypes and NaN', async () => {
    const r = rng(14);
    const y = cloud('float32', 4100, 3, () => r());
    const x = cloud('float32', 4100, 3, () => r());
    const [q, b] = [
      { data: x, dim: 3 },
      { data: y, dim: 3 },
    ];
    const skip = async (options: Parameters<typeof knn>[2], dtype: 'float32' | 'float64' = 'float32') =>
      expect(await knnLowDimIfWorthIt(q, b, 3, dtype, options)).to.equal(undefined);
    await skip({ k: 10, excludeSelf: true });
    await skip({ k: 10, devices: [0] });
    await skip({ k: 10, chunkRows: { base: 100 } });
    await skip({ k: 10, metric: 'euclidean' });
    await skip({ k: 10, memoryLimit: 1 << 16 });
    await skip({ k: 10 }, 'float64');
    await skip({ k: 1000 });
    const withNaN = Float32Array.from(x);
    withNaN[7] = NaN;
    expect(await knnLowDimIfWorthIt({ data: withNaN, dim: 3 }, b, 3, 'float32', { k: 10 })).to.equal(
      undefined,
    );
  });

  it('lowDimKnnApplies: low dimension, enough pairs, k small against the base', () => {
    const shape = { dim: 3, queries: 100_000, base: 100_000, k: 10 };
    expect(lowDimKnnApplies(shape)).to.equal(true);
    expect(lowDimKnnApplies({ ...shape, metric: 'l1' })).to.equal(true);
    expect(lowDimKnnApplies({ ...shape, dim: 8 })).to.equal(true);
    expect(lowDimKnnApplies({ ...shape, dim: 9 })).to.equal(false);
    expect(lowDimKnnApplies({ ...shape, metric: 'cosine' })).to.equal(false);
    expect(lowDimKnnApplies({ ...shape, base: 1000 })).to.equal(false);
    expect(lowDimKnnApplies({ ...shape, k: 50_000 })).to.equal(false);
    expect(lowDimKnnApplies({ ...shape, queries: 10 })).to.equal(false);
  });
});

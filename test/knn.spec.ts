/**
 * Exact k-NN (lib/knn): every metric and a custom formula against a float64 brute force written here (ids exactly,
 * ties smallest id first, also at the k-th rank), storage dtypes (uint8 at D = 784, float16, bfloat16, int8),
 * k = N and k > N, excludeSelf with duplicate rows, byte-identical results whatever the chunking and threads,
 * merged partials of any base split = knn, progress, abort, and typed errors for bad input.
 */
import { expect } from 'chai';
import { float16ToNumber } from '../lib/io/vector-source';
import {
  knn,
  type KnnInput,
  type KnnMetric,
  type KnnResult,
  KnnSearch,
  runKnnSearch,
  vectorSourceOf,
} from '../lib/knn/index';
import type { StorageArray, StorageDtype } from '../lib/io/vector-source';
import { expectKeOpsError, rejection, rng, useTestKernelCache } from './util';

type Row = Float64Array;
/** A metric of the reference: the value ranked (smallest first) and the reported distance. */
type RefMetric = (a: Row, b: Row) => { rank: number; distance: number };

const dot = (a: Row, b: Row) => a.reduce((s, v, c) => s + v * b[c], 0);
const sq = (a: Row, b: Row) => a.reduce((s, v, c) => s + (v - b[c]) ** 2, 0);
const l1 = (a: Row, b: Row) => a.reduce((s, v, c) => s + Math.abs(v - b[c]), 0);
const same =
  (f: (a: Row, b: Row) => number): RefMetric =>
  (a, b) => ({ rank: f(a, b), distance: f(a, b) });

const CUSTOM = 'SqDist(x,y) + 3*Sum(Abs(x-y))';
const REFERENCE: Record<string, RefMetric> = {
  l2: same(sq),
  euclidean: same((a, b) => Math.sqrt(sq(a, b))),
  ip: (a, b) => ({ rank: -dot(a, b), distance: dot(a, b) }),
  cosine: same((a, b) => {
    const n = Math.sqrt(dot(a, a) * dot(b, b));
    return n === 0 ? 1 : 1 - dot(a, b) / n;
  }),
  l1: same(l1),
  custom: same((a, b) => sq(a, b) + 3 * l1(a, b)),
};
const metricOf = (name: string): KnnMetric => (name === 'custom' ? { formula: CUSTOM } : (name as KnnMetric));

/** Rows of a flat array as float64 rows. */
function rows(values: ArrayLike<number>, dim: number): Row[] {
  const out: Row[] = [];
  for (let at = 0; at < values.length; at += dim)
    out.push(Float64Array.from({ length: dim }, (_, c) => values[at + c]));
  return out;
}

/** Every base row of each query, sorted by (rank, id), self dropped with excludeSelf. */
function referenceOrder(
  q: Row[],
  b: Row[],
  metric: RefMetric,
  excludeSelf = false,
): { id: number; rank: number; distance: number }[][] {
  return q.map((x, i) =>
    b
      .map((y, j) => ({ id: j, ...metric(x, y) }))
      .filter((c) => !(excludeSelf && c.id === i))
      .sort((p, r) => p.rank - r.rank || p.id - r.id),
  );
}

/**
 * The result against the reference: each row sorted by (distance, id) (ip: decreasing), distances within `tol`
 * (relative to max(1, |d|)), and ids exactly where the reference's ranked values are further apart than `tol`;
 * within groups of values closer than that, ids as sets (at the k-th rank: drawn from the group). tol = 0: ids
 * exactly, ties smallest id first.
 */
function expectNeighbours(
  result: KnnResult,
  order: ReturnType<typeof referenceOrder>,
  k: number,
  tol: number,
  descending = false,
): void {
  expect(result.rows).to.equal(order.length);
  expect(result.k).to.equal(k);
  expect(result.ids.length).to.equal(order.length * k);
  expect(result.distances.length).to.equal(order.length * k);
  order.forEach((ref, i) => {
    const ids = Array.from(result.ids.subarray(i * k, (i + 1) * k));
    const dist = Array.from(result.distances.subarray(i * k, (i + 1) * k));
    for (let r = 0; r < k; r++) {
      if (r >= ref.length) {
        expect(ids[r], `row ${i} rank ${r}`).to.equal(-1);
        expect(dist[r]).to.equal(Infinity);
        continue;
      }
      const want = ref[r].distance;
      expect(Math.abs(dist[r] - want), `row ${i} rank ${r}: ${dist[r]} vs ${want}`).to.be.at.most(
        tol * Math.max(1, Math.abs(want)) + (tol === 0 ? 0 : 1e-7),
      );
      if (r > 0 && ids[r] >= 0) {
        const key = (descending ? -1 : 1) * (dist[r] - dist[r - 1]);
        expect(key > 0 || (key === 0 && ids[r] > ids[r - 1]), `row ${i} sorted at rank ${r}`).to.equal(true);
      }
    }
    if (tol === 0) {
      expect(ids.slice(0, ref.length), `row ${i}`).to.deep.equal(ref.slice(0, k).map((c) => c.id));
      return;
    }
    // Groups of reference values closer than tol: sets inside [0, k), a subset at the boundary.
    const limit = Math.min(k, ref.length);
    for (let g0 = 0; g0 < limit;) {
      let g1 = g0 + 1;
      const near = (a: number, c: number) =>
        Math.abs(ref[a].rank - ref[c].rank) <= tol * Math.max(1, Math.abs(ref[c].rank));
      while (g1 < ref.length && near(g1, g1 - 1)) g1++;
      const group = new Set(ref.slice(g0, g1).map((c) => c.id));
      for (let r = g0; r < Math.min(g1, limit); r++)
        expect(group.has(ids[r]), `row ${i} rank ${r}`).to.equal(true);
      g0 = g1;
    }
    expect(new Set(ids.slice(0, limit)).size).to.equal(limit);
  });
}

/** Small integers (exact in float32 sums: distances and ids exactly comparable, with many genuine ties). */
function integers(r: () => number, n: number, lo: number, hi: number): Float64Array {
  return Float64Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo + 1)));
}

/** IEEE binary16 bits of a value it represents exactly. */
function toFloat16(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  const bits =
    e < -14 ? sign | Math.round(a * 2 ** 24) : sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
  if (float16ToNumber(bits) !== v) throw new Error(`${v} is not a float16`);
  return bits;
}

/** bfloat16 bits of a value it represents exactly. */
function toBfloat16(v: number): number {
  const u = new Uint32Array(Float32Array.of(v).buffer)[0];
  if ((u & 0xffff) !== 0) throw new Error(`${v} is not a bfloat16`);
  return u >>> 16;
}

const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const expectSameBytes = (a: KnnResult, b: KnnResult, what: string) => {
  expect(bytesOf(a.ids).equals(bytesOf(b.ids)), `${what}: ids`).to.equal(true);
  expect(bytesOf(a.distances).equals(bytesOf(b.distances)), `${what}: distances`).to.equal(true);
};

describe('knn', function () {
  this.timeout(120_000);
  useTestKernelCache();

  describe('against a float64 brute force', () => {
    // (M, N, D, k): k < N, k = N, k > N, D = 1 (one k and few dims: every kernel compiled costs a second).
    const SHAPES = [
      [17, 40, 3, 6],
      [6, 6, 3, 6],
      [5, 4, 3, 6],
      [12, 30, 1, 6],
    ] as const;
    for (const name of ['l2', 'euclidean', 'ip', 'l1', 'custom']) {
      it(`${name}: integer data, exact ids and distances (ties smallest id first)`, async () => {
        const r = rng(101);
        for (const [M, N, D, k] of SHAPES) {
          if (D === 1 && name !== 'l2' && name !== 'custom') continue;
          const x = integers(r, M * D, -3, 3);
          const y = integers(r, N * D, -3, 3);
          const result = await knn(
            { data: Float32Array.from(x), dim: D },
            { data: Float32Array.from(y), dim: D },
            { k, metric: metricOf(name), backend: 'cpu' },
          );
          expect(result.distances).to.be.instanceOf(Float32Array);
          const order = referenceOrder(rows(x, D), rows(y, D), REFERENCE[name]);
          if (name === 'euclidean') {
            // sqrt of exact integers, correctly rounded: compare distances in float32, ids exactly.
            for (const ref of order) for (const c of ref) c.distance = Math.fround(c.distance);
          }
          expectNeighbours(result, order, k, 0, name === 'ip');
        }
      });
    }

    it('cosine: random data, distances within float32 tolerance (rows normalised in float64)', async () => {
      const r = rng(7);
      for (const [M, N, D, k] of SHAPES.filter(([, , D]) => D > 1)) {
        const x = Float32Array.from({ length: M * D }, () => r() * 2 - 1);
        const y = Float32Array.from({ length: N * D }, () => r() * 2 - 1);
        y.fill(0, 0, D); // a zero row: distance 1 to everything
        const result = await knn({ data: x, dim: D }, { data: y, dim: D }, { k, metric: 'cosine' });
        expectNeighbours(result, referenceOrder(rows(x, D), rows(y, D), REFERENCE.cosine), k, 1e-5);
      }
    });

    it('float64 inputs compute in float64 (tolerance 1e-10)', async () => {
      const r = rng(8);
      const [M, N, D, k] = [15, 50, 3, 6];
      const x = Float64Array.from({ length: M * D }, () => r() * 2 - 1);
      const y = Float64Array.from({ length: N * D }, () => r() * 2 - 1);
      for (const name of ['l2', 'cosine']) {
        const result = await knn({ data: x, dim: D }, { data: y, dim: D }, { k, metric: metricOf(name) });
        expect(result.distances).to.be.instanceOf(Float64Array);
        expectNeighbours(result, referenceOrder(rows(x, D), rows(y, D), REFERENCE[name]), k, 1e-10);
      }
    });

    it('uint8 rows of D = 784: exact ids in float32 (sums below 2^24) and in float64 (full range)', async () => {
      const r = rng(9);
      const [M, N, D, k] = [6, 60, 784, 6];
      for (const [hi, dtype] of [
        [100, 'float32'],
        [255, 'float64'],
      ] as const) {
        const x = Uint8Array.from(integers(r, M * D, 0, hi));
        const y = Uint8Array.from(integers(r, N * D, 0, hi));
        y.set(y.subarray(5 * D, 6 * D), 9 * D); // a duplicate base row, nearest to query 0
        x.set(y.subarray(5 * D, 6 * D), 0);
        const result = await knn({ data: x, dim: D }, { data: y, dim: D }, { k, dtype });
        expect(result.distances).to.be.instanceOf(dtype === 'float32' ? Float32Array : Float64Array);
        expectNeighbours(result, referenceOrder(rows(x, D), rows(y, D), REFERENCE.l2), k, 0);
        const chunked = await knn(
          { data: x, dim: D },
          { data: y, dim: D },
          { k, dtype, chunkRows: { queries: 2, base: 7 }, threads: 1 },
        );
        expectSameBytes(chunked, result, `D = 784 ${dtype}, chunked`);
      }
    });

    it('float16, bfloat16 and int8 inputs are converted exactly', async () => {
      const r = rng(10);
      const [M, N, D, k] = [9, 40, 3, 6];
      const x = Float64Array.from(integers(r, M * D, -12, 12), (v) => v / 4);
      const y = Float64Array.from(integers(r, N * D, -12, 12), (v) => v / 4);
      const cases: [StorageArray, StorageArray, StorageDtype | undefined][] = [
        [Uint16Array.from(x, toFloat16), Uint16Array.from(y, toFloat16), undefined],
        [Uint16Array.from(x, toBfloat16), Uint16Array.from(y, toBfloat16), 'bfloat16'],
      ];
      for (const [xs, ys, dtype] of cases) {
        const result = await knn({ data: xs, dim: D, dtype }, { data: ys, dim: D, dtype }, { k });
        expectNeighbours(result, referenceOrder(rows(x, D), rows(y, D), REFERENCE.l2), k, 0);
      }
      const xi = Int8Array.from(x, (v) => v * 4);
      const yi = Int8Array.from(y, (v) => v * 4);
      const result = await knn({ data: xi, dim: D }, vectorSourceOf({ data: yi, dim: D }, 'base'), {
        k,
        metric: 'l1',
      });
      expectNeighbours(result, referenceOrder(rows(xi, D), rows(yi, D), REFERENCE.l1), k, 0);
    });

    it('k above 2048, and above one pass of the kernel (16,384 ranks)', async () => {
      const r = rng(11);
      for (const [M, N, D, k] of [
        [3, 2600, 3, 2500],
        [2, 17000, 2, 16500],
      ] as const) {
        const x = integers(r, M * D, -9, 9);
        const y = integers(r, N * D, -9, 9);
        const result = await knn(
          { data: Float32Array.from(x), dim: D },
          { data: Float32Array.from(y), dim: D },
          { k },
        );
        expectNeighbours(result, referenceOrder(rows(x, D), rows(y, D), REFERENCE.l2), k, 0);
      }
    });

    it('several passes (ties at the pass boundaries) give the single pass ranking', async () => {
      const r = rng(15);
      const [M, N, D, k] = [11, 90, 2, 30];
      const x = integers(r, M * D, -2, 2);
      const y = integers(r, N * D, -2, 2); // 25 distinct rows: every pass boundary falls inside a tie group
      const queries = { data: Float32Array.from(x), dim: D };
      const base = { data: Float32Array.from(y), dim: D };
      for (const [name, passes] of [
        ['l2', [3]],
        ['custom', [6]],
      ] as const) {
        const metric = metricOf(name);
        const single = await knn(queries, base, { k, metric });
        for (const passRanks of passes) {
          const search = new KnnSearch({ dim: D, k, metric, passRanks });
          expect(search.hash).to.equal(new KnnSearch({ dim: D, k, metric }).hash);
          let pairs = 0;
          const multi = await runKnnSearch(search, vectorSourceOf(queries, 'q'), vectorSourceOf(base, 'b'), {
            chunkRows: { queries: 5, base: 40 },
            onProgress: (p) => (pairs = p.pairsDone),
          });
          expect(pairs).to.equal(M * N);
          expectSameBytes(multi, single, `${name}, ${passRanks} ranks per pass`);
        }
        expectNeighbours(single, referenceOrder(rows(x, D), rows(y, D), REFERENCE[name]), k, 0);
      }
      // Random floats (no ties) and excludeSelf with duplicates.
      const z = Float32Array.from({ length: N * D }, () => r() * 2 - 1);
      z.set(z.subarray(0, 10 * D), 10 * D);
      const points = { data: z, dim: D };
      const graph = await knn(points, points, { k: k - 1, excludeSelf: true });
      const search = new KnnSearch({ dim: D, k: k - 1, excludeSelf: true, passRanks: 3 });
      const p = vectorSourceOf(points, 'p');
      expectSameBytes(await runKnnSearch(search, p, p, {}), graph, 'excludeSelf in passes');
      // D = 20, random floats: the register-blocked evaluation of the CPU kernel (values may differ from the
      // single pass's bfloat16-screened kernel in the last bit), the same bytes whatever the chunks.
      const w = Float32Array.from({ length: 60 * 20 }, () => r() * 2 - 1);
      const wide = vectorSourceOf({ data: w, dim: 20 }, 'w');
      const inPasses = new KnnSearch({ dim: 20, k: 12, passRanks: 5 });
      const first = await runKnnSearch(inPasses, wide, wide, {});
      expectNeighbours(first, referenceOrder(rows(w, 20), rows(w, 20), REFERENCE.l2), 12, 1e-5);
      const chunked = await runKnnSearch(inPasses, wide, wide, { chunkRows: { queries: 7, base: 11 } });
      expectSameBytes(chunked, first, 'D = 20 in passes, chunked');
    });
  });

  describe('excludeSelf (k-NN graphs)', () => {
    it('drops the query index only: duplicate rows stay neighbours at distance 0', async () => {
      const r = rng(12);
      const [N, D, k] = [30, 3, 5];
      const y = integers(r, N * D, -2, 2);
      for (let j = 0; j < 10; j++) y.set(y.subarray(j * D, (j + 1) * D), (j + 10) * D); // rows j and j + 10 equal
      for (const name of ['l2', 'ip']) {
        const data = { data: Float32Array.from(y), dim: D };
        const result = await knn(data, data, { k, excludeSelf: true, metric: metricOf(name) });
        const order = referenceOrder(rows(y, D), rows(y, D), REFERENCE[name], true);
        expectNeighbours(result, order, k, 0, name === 'ip');
        for (let i = 0; i < N; i++)
          expect(Array.from(result.ids.subarray(i * k, (i + 1) * k))).to.not.include(i);
        if (name === 'l2') for (let j = 0; j < 10; j++) expect(result.ids[j * k]).to.equal(j + 10);
      }
    });

    it('k = N: the last rank is empty', async () => {
      const y = Float32Array.of(0, 1, 3, 3, 7);
      const result = await knn({ data: y, dim: 1 }, { data: y, dim: 1 }, { k: 5, excludeSelf: true });
      const I = Infinity;
      expect(Array.from(result.ids)).to.deep.equal(
        [
          [1, 2, 3, 4, -1],
          [0, 2, 3, 4, -1],
          [3, 1, 0, 4, -1],
          [2, 1, 0, 4, -1],
          [2, 3, 1, 0, -1],
        ].flat(),
      );
      expect(Array.from(result.distances)).to.deep.equal(
        [
          [1, 9, 9, 49, I],
          [1, 4, 4, 36, I],
          [0, 4, 9, 16, I],
          [0, 4, 9, 16, I],
          [16, 16, 36, 49, I],
        ].flat(),
      );
    });
  });

  describe('determinism and partials', () => {
    const [M, N, D, k] = [40, 300, 3, 6];
    const r = rng(13);
    // Random floats with exact ties: base rows repeated, queries that are base rows.
    const y = Float32Array.from({ length: N * D }, () => r() * 2 - 1);
    for (let j = 0; j < 60; j++) y.set(y.subarray(j * 3 * D, (j * 3 + 1) * D), (j * 3 + 1) * D);
    const x = Float32Array.from({ length: M * D }, () => r() * 2 - 1);
    x.set(y.subarray(0, 10 * D));
    const queries = { data: x, dim: D };
    const base = { data: y, dim: D };

    it('byte-identical whatever the memory limit, chunk rows and threads', async () => {
      const first = await knn(queries, base, { k });
      expectNeighbours(first, referenceOrder(rows(x, D), rows(y, D), REFERENCE.l2), k, 1e-5);
      const settings = [
        { memoryLimit: 64 * 1024 },
        { chunkRows: { queries: 7, base: 13 } },
        { chunkRows: { queries: 1, base: 1 }, threads: 1 },
        { threads: 1 },
        { chunkRows: { base: 299 }, threads: 2 },
      ];
      for (const s of settings)
        expectSameBytes(await knn(queries, base, { k, ...s }), first, JSON.stringify(s));
    });

    it('finish(merge(partials)) of a random base split, in any order, is knn byte for byte (also via bytes)', async () => {
      const expected = await knn(queries, base, { k });
      const search = new KnnSearch({ dim: D, k });
      const source = vectorSourceOf(base, 'base');
      const q = await search.readRows(vectorSourceOf(queries, 'queries'), 0, M);
      for (let trial = 0; trial < 3; trial++) {
        const cuts = [0, N, ...Array.from({ length: 3 }, () => Math.floor(r() * N))].sort((a, b) => a - b);
        const partials = [];
        for (let s = 0; s + 1 < cuts.length; s++) {
          const rowsOfSlice = await search.readRows(source, cuts[s], cuts[s + 1]);
          partials.push(await search.partial(q, rowsOfSlice, cuts[s]));
        }
        partials.sort(() => r() - 0.5);
        const merged = search.merge(partials.map((p) => search.fromBytes(p.toBytes())));
        expect(merged.slices).to.deep.equal([[0, N]]);
        expectSameBytes(search.finish(merged, 0) as KnnResult, expected, `split ${cuts.join(',')}`);
      }
      // A query slice of its own: the rows of knn's result.
      const part = search.finish(
        search.merge([
          await search.partial(q.subarray(5 * D, 9 * D), await search.readRows(source, 0, N), 0),
        ]),
        5,
      );
      expect(Array.from(part.ids)).to.deep.equal(Array.from(expected.ids.subarray(5 * k, 9 * k)));
      const ranged = await runKnnSearch(search, vectorSourceOf(queries, 'q'), source, { queryRange: [5, 9] });
      expectSameBytes(ranged as KnnResult, part as KnnResult, 'queryRange');
    });

    it('excludeSelf partials exclude by global query index', async () => {
      const graph = await knn(base, base, { k: k - 1, excludeSelf: true, chunkRows: { queries: 50 } });
      const search = new KnnSearch({ dim: D, k: k - 1, excludeSelf: true });
      const source = vectorSourceOf(base, 'base');
      const all = await search.readRows(source, 0, N);
      const p = await search.partial(all.subarray(100 * D, 160 * D), all, 0);
      expectSameBytes(
        search.finish(p, 100) as KnnResult,
        {
          ids: graph.ids.subarray(100 * (k - 1), 160 * (k - 1)),
          distances: graph.distances.subarray(100 * (k - 1), 160 * (k - 1)),
          rows: 60,
          k: k - 1,
        },
        'graph rows 100..160',
      );
    });

    it('reads in-memory rows of the compute dtype as they are (no conversion)', async () => {
      const original = KnnSearch.prototype.readRows;
      let reads = 0;
      KnnSearch.prototype.readRows = function (this: KnnSearch, ...args: Parameters<typeof original>) {
        reads++;
        return original.apply(this, args);
      };
      try {
        const direct = await knn(queries, base, { k });
        expect(reads).to.equal(0);
        const converted = await knn({ data: Float64Array.from(x), dim: D }, base, { k, dtype: 'float32' });
        expect(reads).to.be.above(0);
        expectSameBytes(converted, direct, 'float64 queries converted to float32');
      } finally {
        KnnSearch.prototype.readRows = original;
      }
    });

    it('the hash names what determines the results', () => {
      const h = (spec: ConstructorParameters<typeof KnnSearch>[0]) => new KnnSearch(spec).hash;
      const base0 = h({ dim: 3, k: 4 });
      expect(h({ dim: 3, k: 4, metric: 'l2', threads: 1, backend: 'cpu' })).to.equal(base0);
      for (const other of [
        h({ dim: 3, k: 5 }),
        h({ dim: 4, k: 4 }),
        h({ dim: 3, k: 4, metric: 'l1' }),
        h({ dim: 3, k: 4, excludeSelf: true }),
        h({ dim: 3, k: 4, dtype: 'float64' }),
        h({ dim: 3, k: 4, metric: { formula: 'SqDist(y,x)' } }),
      ])
        expect(other).to.not.equal(base0);
      expect(() => new KnnSearch({ dim: 3, k: 4 }).finish(new KnnSearch({ dim: 3, k: 5 }).empty(2))).to.throw(
        /another search/,
      );
    });
  });

  describe('progress, abort and bad input', () => {
    const r = rng(14);
    const x = { data: Float32Array.from({ length: 30 }, () => r()), dim: 3 };
    const y = { data: Float32Array.from({ length: 300 }, () => r()), dim: 3 };

    it('reports progress up to every pair', async () => {
      const seen: number[] = [];
      await knn(x, y, {
        k: 6,
        chunkRows: { base: 10 },
        onProgress: (p) => {
          expect(p.pairsTotal).to.equal(10 * 100);
          seen.push(p.pairsDone);
        },
      });
      expect(seen[seen.length - 1]).to.equal(1000);
      expect(seen.every((v, s) => s === 0 || v >= seen[s - 1])).to.equal(true);
    });

    it('aborts with ERR_ABORTED (before and during a run)', async () => {
      const before = new AbortController();
      before.abort();
      expect((await rejection(knn(x, y, { k: 6, signal: before.signal }))).code).to.equal('ERR_ABORTED');
      const during = new AbortController();
      let calls = 0;
      const e = await rejection(
        knn(x, y, {
          k: 6,
          chunkRows: { base: 1 },
          signal: during.signal,
          onProgress: () => {
            if (++calls === 1) during.abort();
          },
        }),
      );
      expect(e.code).to.equal('ERR_ABORTED');
      const search = new KnnSearch({ dim: 3, k: 6 });
      expect((await rejection(search.partial(x.data, y.data, 0, { signal: before.signal }))).code).to.equal(
        'ERR_ABORTED',
      );
    });

    it('rejects bad input with typed errors', async () => {
      const code = async (p: Promise<unknown>) => (await rejection(p)).code;
      expect(await code(knn(x, y, { k: 0 }))).to.equal('ERR_INVALID_ARGUMENT');
      expect(await code(knn(x, y, { k: 2.5 }))).to.equal('ERR_INVALID_ARGUMENT');
      expect(await code(knn(x, y, { k: 2 ** 31 }))).to.equal('ERR_INVALID_ARGUMENT');
      expect(await code(knn(x, { data: y.data, dim: 2 }, { k: 6 }))).to.equal('ERR_ARG_SHAPE');
      expect(await code(knn(x, { data: y.data.subarray(1), dim: 3 }, { k: 6 }))).to.equal('ERR_ARG_SHAPE');
      expect(await code(knn(x, y, { k: 6, metric: 'hamming' as KnnMetric }))).to.equal(
        'ERR_INVALID_ARGUMENT',
      );
      expect(await code(knn(x, y, { k: 6, metric: { formula: 'SqDist(x,y' } }))).to.equal(
        'ERR_FORMULA_SYNTAX',
      );
      expect(await code(knn(x, y, { k: 6, metric: { formula: 'SqDist(x,z)' } }))).to.equal(
        'ERR_FORMULA_NAME',
      );
      expect(await code(knn(x, y, { k: 6, metric: { formula: 'x-y' } }))).to.equal('ERR_FORMULA_DIM');
      expect(await code(knn(x, y, { k: 6, metric: { formula: 'SqDist(x,Vj(2,3))' } }))).to.equal(
        'ERR_FORMULA_NAME',
      );
      expect(await code(knn(x, y, { k: 6, excludeSelf: true }))).to.equal('ERR_ARG_SHAPE');
      expect(await code(knn(x, y, { k: 6, dtype: 'float16' as 'float32' }))).to.equal('ERR_ARG_DTYPE');
      expect(await code(knn(x, y, { k: 6, kk: 2 } as { k: number }))).to.equal('ERR_INVALID_ARGUMENT');
      expect(await code(knn({ data: [1, 2, 3] as unknown as Float32Array, dim: 3 }, y, { k: 6 }))).to.equal(
        'ERR_ARG_TYPE',
      );
      expect(await code(knn(x, y, { k: 6, memoryLimit: 10 }))).to.equal('ERR_MEMORY_LIMIT');
      expect(await code(knn(x, y, { k: 20000, memoryLimit: 10 }))).to.equal('ERR_MEMORY_LIMIT');
      expect(await code(knn(x, y, { k: 20000, devices: [0] }))).to.equal('ERR_INVALID_ARGUMENT');
      // A source that returns the wrong rows, or fails.
      const short = {
        rows: 100,
        dim: 3,
        dtype: 'float32' as const,
        name: 'short',
        read: () => Promise.resolve(new Float32Array(3)),
      };
      expect(await code(knn(x, short, { k: 6 }))).to.equal('ERR_SOURCE');
      const failing = { ...short, name: 'failing', read: () => Promise.reject(new Error('disk on fire')) };
      const e = await rejection(knn(x, failing, { k: 6 }));
      expect(e.code).to.equal('ERR_SOURCE');
      expect(e.message).to.contain('disk on fire');
      expect(
        await code(knn(x, { rows: 3, dim: 3, read: short.read } as unknown as KnnInput, { k: 6 })),
      ).to.equal('ERR_ARG_TYPE');
      expectKeOpsError(() => new KnnSearch({ dim: 0, k: 1 }), 'ERR_ARG_SHAPE');
      const search = new KnnSearch({ dim: 3, k: 2 });
      expect(await code(search.partial(Float64Array.from(x.data), y.data, 0))).to.equal('ERR_ARG_DTYPE');
      expect(await code(search.partial(x.data, y.data, -1))).to.equal('ERR_INVALID_ARGUMENT');
    });
  });
});

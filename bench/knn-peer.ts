/**
 * One Node.js peer of bench/knn.ts, run in its own process so that its peak RSS is its own:
 *
 *   ts-node --transpile-only bench/knn-peer.ts PEER DIR CASE K QUERIES REPEATS THREADS
 *
 * PEER: `knn` (keops-node's knn(), which prunes in low dimension), `bruteforce` (keops-node's Genred
 * KMin_ArgKMin over all pairs), `hnswlib` (hnswlib-node BruteforceSearch, one query at a time) or `usearch`
 * (usearch exactSearch in chunks of 1,000 queries: it materialises queries × N). Reads DIR/CASE.json, .x.f32,
 * .y.f32 (and .x.u8 / .y.u8 for uint8 data, which `knn` then reads as uint8); runs on the first QUERIES
 * queries, best of REPEATS after one untimed call (kernel compilation: all queries for D ≤ 8, else 2); writes
 * DIR/CASE.PEER.K.i32 (ids) and, for the keops-node peers, DIR/CASE.PEER.K.dist (distances, float32). Prints one
 * JSON line: {"seconds", "max_rss_kib"}; the peak RSS is this process's, inputs included.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Genred } from '../lib/genred';
import { knn } from '../lib/knn/knn';

interface CaseMeta {
  readonly nx: number;
  readonly ny: number;
  readonly dim: number;
}

function readFloats(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

async function main(): Promise<void> {
  const [peer, dir, name, kText, queriesText, repeatsText, threadsText] = process.argv.slice(2);
  const [k, queries, repeats, threads] = [kText, queriesText, repeatsText, threadsText].map(Number);
  const meta = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as CaseMeta;
  const { dim } = meta;
  const x = readFloats(join(dir, `${name}.x.f32`)).subarray(0, queries * dim);
  const y = readFloats(join(dir, `${name}.y.f32`));
  const u8 = existsSync(join(dir, `${name}.y.u8`));

  let run: (q: Float32Array, rows: number) => Promise<{ ids: Int32Array; distances?: Float32Array }>;
  if (peer === 'knn') {
    const yu8 = u8 ? new Uint8Array(readFileSync(join(dir, `${name}.y.u8`))) : undefined;
    const xu8 = u8 ? new Uint8Array(readFileSync(join(dir, `${name}.x.u8`))) : undefined;
    run = async (q, rows) => {
      const queriesIn = xu8
        ? { data: xu8.subarray(0, rows * dim), dim, dtype: 'uint8' as const }
        : { data: q, dim };
      const baseIn = yu8 ? { data: yu8, dim, dtype: 'uint8' as const } : { data: y, dim };
      const r = await knn(queriesIn, baseIn, { k, threads, memoryLimit: 1 << 30 });
      return { ids: r.ids, distances: r.distances as Float32Array };
    };
  } else if (peer === 'bruteforce') {
    const g = new Genred('SqDist(x,y)', [`x = Vi(${dim})`, `y = Vj(${dim})`], {
      reduction: 'KMin_ArgKMin',
      axis: 1,
      k,
    });
    run = async (q) => {
      const r = await g.call([q, y], { threads });
      return { ids: r.indices, distances: r.values };
    };
  } else if (peer === 'hnswlib') {
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    const hnsw = require('hnswlib-node') as typeof import('hnswlib-node');
    const index = new hnsw.BruteforceSearch('l2', dim);
    index.initIndex(meta.ny);
    const point = new Array<number>(dim);
    for (let j = 0; j < meta.ny; j++) {
      for (let d = 0; d < dim; d++) point[d] = y[j * dim + d];
      index.addPoint(point, j);
    }
    run = async (q, rows) => {
      const ids = new Int32Array(rows * k);
      for (let i = 0; i < rows; i++) {
        const found = index.searchKnn(Array.from(q.subarray(i * dim, (i + 1) * dim)), k);
        // Nearest first by distance, then id (the library returns them unordered on ties).
        const order = found.neighbors
          .map((id, c) => [found.distances[c], id])
          .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        order.forEach(([, id], c) => (ids[i * k + c] = id));
      }
      return { ids };
    };
  } else if (peer === 'usearch') {
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    const usearch = require('usearch') as typeof import('usearch');
    run = async (q, rows) => {
      const ids = new Int32Array(rows * k);
      for (let start = 0; start < rows; start += 1000) {
        const end = Math.min(rows, start + 1000);
        // A copy: exactSearch reads a view from the start of its buffer, ignoring the view's offset.
        const found = usearch.exactSearch(
          y,
          q.slice(start * dim, end * dim),
          dim,
          k,
          usearch.MetricKind.L2sq,
          threads,
        );
        for (let e = 0; e < (end - start) * k; e++) ids[start * k + e] = Number(found.keys[e]);
      }
      return { ids };
    };
  } else {
    throw new Error(`unknown peer ${peer}`);
  }

  // Untimed: compiles the kernels (in low dimension the pruned search's, which 2 queries would not reach).
  if (dim <= 8) await run(x, queries);
  else await run(x.subarray(0, 2 * dim), 2);
  let best = Infinity;
  let result: { ids: Int32Array; distances?: Float32Array } = { ids: new Int32Array(0) };
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    result = await run(x, queries);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  writeFileSync(join(dir, `${name}.${peer}.${k}.i32`), result.ids);
  if (result.distances !== undefined) writeFileSync(join(dir, `${name}.${peer}.${k}.dist`), result.distances);
  console.log(JSON.stringify({ seconds: best, max_rss_kib: process.resourceUsage().maxRSS }));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

/**
 * CPU benchmark (issue "CPU backend"): Gaussian sum and LogSumExp at M=N=1e5, D=3, float32; ArgKMin K=10 at
 * D=3 and D=128 side by side with usearch `exactSearch` and hnswlib-node `BruteforceSearch`; first compile,
 * disk-cache load and per-call overhead. Prints a Markdown section and appends it to bench/RESULTS.md.
 *
 *   npm run bench            (full sizes, ~2-4 minutes on 2 cores)
 *   BENCH_SCALE=0.1 npm run bench   (quick smoke run)
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const cacheDir = mkdtempSync(join(tmpdir(), 'keops-bench-'));
process.env.KEOPS_CACHE_DIR = cacheDir; // cold cache: the first call really compiles

// Imported after KEOPS_CACHE_DIR is set (the cache folder is read per call, but keep it obvious).
import { Genred } from '../lib/genred';
import { uniform } from './data';

const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const N = Math.round(1e5 * SCALE);
const USEARCH_QUERIES = Math.round(10_000 * SCALE);

/** Best of `repeats` runs, in seconds. */
async function best(repeats: number, run: () => unknown): Promise<number> {
  let bestS = Infinity;
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await run();
    bestS = Math.min(bestS, (performance.now() - t0) / 1000);
  }
  return bestS;
}

const rows: string[] = [];
const row = (what: string, size: string, seconds: number, pairs: number, note = ''): void => {
  const line = `| ${what} | ${size} | ${seconds.toFixed(3)} s | ${(pairs / seconds / 1e9).toFixed(3)} | ${note} |`;
  rows.push(line);
  console.log(line);
};

async function gaussianAndLse(): Promise<void> {
  const x = uniform(N * 3, 1);
  const y = uniform(N * 3, 2);
  const b = uniform(N, 3);
  const aliases = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'];
  const gauss = new Genred('Exp(-SqDist(x,y)*IntInv(10))*b', aliases, { reduction: 'Sum', axis: 1 });
  const t0 = performance.now();
  await gauss.call([x.subarray(0, 3), y.subarray(0, 3), b.subarray(0, 1)]);
  const firstCompileMs = performance.now() - t0;
  const s = await best(2, () => gauss.call([x, y, b]));
  row('keops-node Gaussian sum, float32', `${N}×${N}, D=3`, s, N * N);

  // The naive approach: a plain JavaScript double loop (measured on a slice, reported as a rate).
  const m = Math.min(N, 2000);
  const naive = await best(1, () => {
    const out = new Float64Array(m);
    for (let i = 0; i < m; i++) {
      let acc = 0;
      for (let j = 0; j < N; j++) {
        const d0 = x[3 * i] - y[3 * j];
        const d1 = x[3 * i + 1] - y[3 * j + 1];
        const d2 = x[3 * i + 2] - y[3 * j + 2];
        acc += Math.exp(-(d0 * d0 + d1 * d1 + d2 * d2) / 10) * b[j];
      }
      out[i] = acc;
    }
    return out;
  });
  row('naive JavaScript loop, Gaussian sum', `${m}×${N}, D=3`, naive, m * N, 'one thread, float64 math');

  const lse = new Genred('-SqDist(x,y)*IntInv(10)', ['x = Vi(3)', 'y = Vj(3)'], {
    reduction: 'LogSumExp',
    axis: 1,
  });
  await lse.call([x.subarray(0, 3), y.subarray(0, 3)]);
  const sl = await best(2, () => lse.call([x, y]));
  row('keops-node LogSumExp, float32', `${N}×${N}, D=3`, sl, N * N);

  // Disk cache: a new process loads the kernel compiled above.
  const probe = `
    const { Genred } = require('./lib/genred');
    const g = new Genred('Exp(-SqDist(x,y)*IntInv(10))*b', ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'], { reduction: 'Sum', axis: 1 });
    const a = new Float32Array(3), c = new Float32Array(1);
    const t0 = performance.now(); g.callSync([a, a, c]); const ms = performance.now() - t0;
    console.log(JSON.stringify({ ms, origin: g.kernelInfo('float32').origin }));`;
  const out = execFileSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', probe], {
    env: { ...process.env, KEOPS_CACHE_DIR: cacheDir },
    encoding: 'utf8',
  });
  const disk = JSON.parse(out.trim().split('\n').pop() as string) as { ms: number; origin: string };

  // Per-call overhead on tiny inputs (10×10), kernel already loaded.
  const tx = x.subarray(0, 30);
  const ty = y.subarray(0, 30);
  const tb = b.subarray(0, 10);
  const calls = 2000;
  let t = performance.now();
  for (let k = 0; k < calls; k++) gauss.callSync([tx, ty, tb]);
  const syncUs = ((performance.now() - t) * 1000) / calls;
  t = performance.now();
  for (let k = 0; k < calls; k++) await gauss.call([tx, ty, tb]);
  const asyncUs = ((performance.now() - t) * 1000) / calls;

  rows.push('');
  rows.push('| latency | value | target |');
  rows.push('|---|---|---|');
  rows.push(`| first compile (Gaussian sum, cold cache) | ${firstCompileMs.toFixed(0)} ms | ≤ 1500 ms |`);
  rows.push(
    `| first call in a new process, kernel on disk (${disk.origin}) | ${disk.ms.toFixed(1)} ms | ≤ 20 ms |`,
  );
  rows.push(`| per-call overhead, 10×10, callSync | ${syncUs.toFixed(1)} µs | ≤ 100 µs |`);
  rows.push(`| per-call overhead, 10×10, call (Promise) | ${asyncUs.toFixed(1)} µs | ≤ 100 µs |`);
  rows.push('');
  console.log(rows.slice(-6).join('\n'));
}

async function knn(dim: number, queries: number, hnswQueries: number): Promise<void> {
  // Peers are optional at run time (devDependencies): a missing one is reported, not fatal.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const usearch = require('usearch') as typeof import('usearch');
  const hnsw = require('hnswlib-node') as typeof import('hnswlib-node');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const data = uniform(N * dim, 10 + dim);
  const q = uniform(queries * dim, 20 + dim);
  const K = 10;
  const g = new Genred('SqDist(x,y)', [`x = Vi(${dim})`, `y = Vj(${dim})`], {
    reduction: 'ArgKMin',
    axis: 1,
    k: K,
  });
  await g.call([q.subarray(0, dim), data.subarray(0, dim)]);
  const ours = await best(2, () => g.call([q, data]));
  row(`keops-node ArgKMin K=10, float32`, `${queries}×${N}, D=${dim}`, ours, queries * N);

  // exactSearch materialises a queries×N result matrix (std::bad_alloc at 1e5×1e5 on 24 GiB), so it runs on
  // chunks of queries, over at most USEARCH_QUERIES of them, and is reported as a rate.
  const threads = cpus().length;
  const uq = Math.min(queries, USEARCH_QUERIES);
  const chunk = 1000;
  const theirs = await best(2, () => {
    for (let start = 0; start < uq; start += chunk) {
      const end = Math.min(uq, start + chunk);
      usearch.exactSearch(data, q.subarray(start * dim, end * dim), dim, K, usearch.MetricKind.L2sq, threads);
    }
  });
  row(
    'usearch exactSearch (L2sq)',
    `${uq}×${N}, D=${dim}`,
    theirs,
    uq * N,
    `${threads} threads, chunks of ${chunk} queries`,
  );

  const bf = new hnsw.BruteforceSearch('l2', dim);
  bf.initIndex(N);
  const point = new Array<number>(dim);
  for (let j = 0; j < N; j++) {
    for (let d = 0; d < dim; d++) point[d] = data[j * dim + d];
    bf.addPoint(point, j);
  }
  const hq = Math.min(queries, hnswQueries);
  const hs = await best(1, () => {
    for (let i = 0; i < hq; i++) bf.searchKnn(Array.from(q.subarray(i * dim, (i + 1) * dim)), K);
  });
  row('hnswlib-node BruteforceSearch', `${hq}×${N}, D=${dim}`, hs, hq * N, 'one query at a time, one thread');
  const ratioU = theirs / uq / (ours / queries);
  const ratioH = hs / hq / (ours / queries);
  rows.push(
    `| speed-up at D=${dim} | | | | keops-node vs usearch: ${ratioU.toFixed(2)}×; vs hnswlib-node per query: ${ratioH.toFixed(1)}× |`,
  );
  console.log(rows[rows.length - 1]);
}

async function main(): Promise<void> {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const header = [
    `## CPU benchmark, ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Machine: ${cpu}, ${cpus().length} vCPUs, Node ${process.version}. Scale ${SCALE} (N = ${N}). Best of 2 runs.`,
    '',
    '| what | size | time | Gpairs/s | note |',
    '|---|---|---|---|---|',
  ];
  console.log(header.join('\n'));
  await gaussianAndLse();
  rows.push('| what | size | time | Gpairs/s | note |', '|---|---|---|---|---|');
  await knn(3, N, Math.round(2000 * SCALE));
  await knn(128, Math.round(10_000 * SCALE), Math.round(500 * SCALE));
  appendFileSync(join(__dirname, 'RESULTS.md'), [...header, ...rows, ''].join('\n') + '\n');
  rmSync(cacheDir, { recursive: true, force: true });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

/**
 * High-dimensional CPU benchmark (issue 10): exact k-NN (ArgKMin K=10 over SqDist, float32) side by side with
 * faiss-cpu IndexFlatL2 (bench/faiss_knn.py) at D = 128 (5,000 × 100,000 uniform) and on Fashion-MNIST (D = 784,
 * 1,000 test × 60,000 train images as float32 0..255), the Gaussian sum at D = 128, and the low-D figures (D = 3
 * Gaussian sum and ArgKMin, 100,000 × 100,000) that the register-blocked strategy must not slow down.
 *
 * Exactness: for a sample of queries, the ids of keops-node and of faiss are compared with the exact ranking
 * (float64 distances in the difference form, ties by smallest index, computed by numpy in faiss_knn.py).
 *
 *   npm run bench:highdim                 (needs `pip install faiss-cpu numpy` and the Debian package
 *                                          dataset-fashion-mnist; about 2-3 minutes on 2 cores)
 *   BENCH_SCALE=0.1 npm run bench:highdim (quick smoke run: fewer queries)
 *
 * Prints a Markdown section and appends it to bench/RESULTS.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const cacheDir = mkdtempSync(join(tmpdir(), 'keops-bench-highdim-'));
process.env.KEOPS_CACHE_DIR = cacheDir; // cold cache: first calls really compile

import { Genred } from '../lib/genred';
import { readIdxImages, uniform } from './data';
import { benchReport, loadAverage } from './report';

const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const PYTHON = process.env.BENCH_PYTHON ?? 'python3';
const FASHION_MNIST = process.env.FASHION_MNIST_DIR ?? '/usr/share/datasets/fashion-mnist';
const THREADS = cpus().length;
const K = 10;
const SAMPLE = 64;
const REPEATS = 2;

/** Fastest of `repeats` runs: wall seconds, and the CPU seconds of the whole process (every thread) in it. */
async function best(repeats: number, run: () => unknown): Promise<{ wall: number; cpu: number }> {
  let result = { wall: Infinity, cpu: 0 };
  for (let r = 0; r < repeats; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await run();
    const wall = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    if (wall < result.wall) result = { wall, cpu: (c.user + c.system) / 1e6 };
  }
  return result;
}

interface KnnCase {
  readonly name: string;
  readonly label: string;
  readonly x: Float32Array;
  readonly y: Float32Array;
  readonly nx: number;
  readonly ny: number;
  readonly dim: number;
}

const report = benchReport();
const out = report.out;

/** Rows of the sample whose K ids differ from the exact ones, and the number of differing ids. */
function mismatches(ids: Int32Array, exact: Int32Array, sample: readonly number[]): [number, number] {
  let rows = 0;
  let total = 0;
  sample.forEach((q, s) => {
    let bad = 0;
    for (let r = 0; r < K; r++) if (ids[q * K + r] !== exact[s * K + r]) bad++;
    if (bad > 0) rows++;
    total += bad;
  });
  return [rows, total];
}

async function knn(c: KnnCase, work: string): Promise<void> {
  const sample = Array.from({ length: Math.min(SAMPLE, c.nx) }, (_, s) =>
    Math.floor((s * c.nx) / Math.min(SAMPLE, c.nx)),
  );
  writeFileSync(join(work, `${c.name}.json`), JSON.stringify({ nx: c.nx, ny: c.ny, dim: c.dim, sample }));
  writeFileSync(join(work, `${c.name}.x.f32`), c.x);
  writeFileSync(join(work, `${c.name}.y.f32`), c.y);

  const g = new Genred('SqDist(x,y)', [`x = Vi(${c.dim})`, `y = Vj(${c.dim})`], {
    reduction: 'ArgKMin',
    axis: 1,
    k: K,
  });
  const t0 = performance.now();
  await g.call([c.x.subarray(0, c.dim), c.y.subarray(0, c.dim)]);
  const compileMs = performance.now() - t0;
  let ids: Int32Array = new Int32Array(0);
  const keops = await best(REPEATS, async () => {
    ids = (await g.call([c.x, c.y])) as Int32Array;
  });

  const report = execFileSync(
    PYTHON,
    [join(__dirname, 'faiss_knn.py'), work, c.name, String(K), String(THREADS), String(REPEATS)],
    { encoding: 'utf8', maxBuffer: 1 << 20, env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' } },
  );
  const faiss = JSON.parse(report.trim().split('\n').pop() as string) as {
    seconds: number;
    cpu_seconds: number;
    faiss: string;
  };
  const read = (suffix: string): Int32Array => {
    const b = readFileSync(join(work, `${c.name}.${suffix}`));
    return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };
  const exact = read('exact.i32');
  const [keopsRows, keopsIds] = mismatches(ids, exact, sample);
  const [faissRows, faissIds] = mismatches(read('faiss.i32'), exact, sample);
  const size = `${c.nx}×${c.ny}, D=${c.dim}`;
  const pairs = c.nx * c.ny;
  const rate = (s: number): string => (pairs / s / 1e9).toFixed(3);
  out(
    `| keops-node ArgKMin K=${K} | ${c.label} | ${size} | ${keops.wall.toFixed(3)} s | ${keops.cpu.toFixed(3)} s | ` +
      `${rate(keops.wall)} | ${keopsRows}/${sample.length} rows (${keopsIds} ids) | first call ${compileMs.toFixed(0)} ms |`,
  );
  out(
    `| faiss-cpu ${faiss.faiss} IndexFlatL2 | ${c.label} | ${size} | ${faiss.seconds.toFixed(3)} s | ` +
      `${faiss.cpu_seconds.toFixed(3)} s | ${rate(faiss.seconds)} | ${faissRows}/${sample.length} rows (${faissIds} ids) | ` +
      `${THREADS} threads |`,
  );
  out(
    `| **keops-node / faiss** | ${c.label} | | **${(keops.wall / faiss.seconds).toFixed(2)}×** | ` +
      `**${(keops.cpu / faiss.cpu_seconds).toFixed(2)}×** | | | time ratios |`,
  );
}

async function gaussian(dim: number, nx: number, ny: number): Promise<void> {
  const x = uniform(nx * dim, 1);
  const y = uniform(ny * dim, 2);
  const b = uniform(ny, 3);
  const g = new Genred(
    `Exp(-SqDist(x,y)*IntInv(${dim}))*b`,
    [`x = Vi(${dim})`, `y = Vj(${dim})`, 'b = Vj(1)'],
    {
      reduction: 'Sum',
      axis: 1,
    },
  );
  const t0 = performance.now();
  await g.call([x.subarray(0, dim), y.subarray(0, dim), b.subarray(0, 1)]);
  const compileMs = performance.now() - t0;
  const s = await best(REPEATS, () => g.call([x, y, b]));
  out(
    `| keops-node Gaussian sum | uniform | ${nx}×${ny}, D=${dim} | ${s.wall.toFixed(3)} s | ${s.cpu.toFixed(3)} s | ` +
      `${((nx * ny) / s.wall / 1e9).toFixed(3)} | | first call ${compileMs.toFixed(0)} ms |`,
  );
}

async function lowDimKnn(n: number): Promise<void> {
  const x = uniform(n * 3, 1);
  const y = uniform(n * 3, 2);
  const g = new Genred('SqDist(x,y)', ['x = Vi(3)', 'y = Vj(3)'], { reduction: 'ArgKMin', axis: 1, k: K });
  await g.call([x.subarray(0, 3), y.subarray(0, 3)]);
  const s = await best(REPEATS, () => g.call([x, y]));
  out(
    `| keops-node ArgKMin K=${K} | uniform | ${n}×${n}, D=3 | ${s.wall.toFixed(3)} s | ${s.cpu.toFixed(3)} s | ` +
      `${((n * n) / s.wall / 1e9).toFixed(3)} | | |`,
  );
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'keops-bench-highdim-data-'));
  try {
    const loadBefore = loadAverage();
    out(`## High-dimensional CPU benchmark (issue 10), ${new Date().toISOString().slice(0, 10)}`);
    out('');
    out(
      `Machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${THREADS} vCPUs, Node ${process.version}; ` +
        `keops-node and faiss both on ${THREADS} threads, float32, best of ${REPEATS}. Scale ${SCALE}. ` +
        `Exactness: ids of ${SAMPLE} sampled queries against the exact ranking (float64 differences, ties by ` +
        `smallest index). Load average before the run: ${loadBefore}.`,
    );
    out('');
    out('| what | data | size | wall time | CPU time | Gpairs/s (wall) | rows with ids ≠ exact | note |');
    out('| --- | --- | --- | --- | --- | --- | --- | --- |');
    const nq = Math.max(SAMPLE, Math.round(5000 * SCALE));
    await knn(
      {
        name: 'uniform128',
        label: 'uniform',
        x: uniform(nq * 128, 11),
        y: uniform(100_000 * 128, 12),
        nx: nq,
        ny: 100_000,
        dim: 128,
      },
      work,
    );
    const train = await readIdxImages(join(FASHION_MNIST, 'train-images-idx3-ubyte.gz'), 60_000);
    const test = await readIdxImages(
      join(FASHION_MNIST, 't10k-images-idx3-ubyte.gz'),
      Math.max(SAMPLE, Math.round(1000 * SCALE)),
    );
    await knn(
      {
        name: 'fmnist',
        label: 'Fashion-MNIST',
        x: Float32Array.from(test.data),
        y: Float32Array.from(train.data),
        nx: test.rows,
        ny: train.rows,
        dim: train.dim,
      },
      work,
    );
    await gaussian(128, Math.max(SAMPLE, Math.round(5000 * SCALE)), 100_000);
    await gaussian(3, Math.round(100_000 * SCALE), 100_000);
    await lowDimKnn(Math.round(100_000 * SCALE));
    report.finish();
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

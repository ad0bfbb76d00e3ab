/**
 * Exact k-NN benchmark (issue 12), every peer side by side in one run, each in its own process (so that its peak
 * RSS is its own): keops-node `knn()` (pruned in low dimension, brute force otherwise), keops-node's brute-force
 * KMin_ArgKMin over all pairs, faiss-cpu IndexFlatL2 and scikit-learn KDTree (bench/knn_peers.py), hnswlib-node
 * BruteforceSearch and usearch exactSearch (bench/knn-peer.ts), on
 *   - D = 3, 100,000 uniform queries × 100,000 uniform base points;
 *   - D = 128, 2,000 uniform queries × 100,000 base points;
 *   - Fashion-MNIST: 10,000 test images × 60,000 train images, D = 784 (uint8 for knn(), float32 for the others);
 * with k = 10 and k = 100. Slow peers run on the first queries only (column "queries"); their time is also given
 * scaled to all queries (they are linear in the queries).
 *
 * Exactness: ids of sampled queries against the exact ranking (float64 distances in the difference form, ties
 * by smallest id, numpy); at D = 3, knn()'s ids and distance bytes against keops-node's brute force on every row.
 *
 *   npm run bench:knn           (needs `pip install faiss-cpu numpy scikit-learn` and the Debian package
 *                                dataset-fashion-mnist)
 *   BENCH_SCALE=0.1 npm run bench:knn   (quick smoke run)
 *
 * Prints a Markdown section and appends it to bench/RESULTS.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { readIdxImages, uniform } from './data';
import { benchReport, loadAverage } from './report';

const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const PYTHON = process.env.BENCH_PYTHON ?? 'python3';
const FASHION_MNIST = process.env.FASHION_MNIST_DIR ?? '/usr/share/datasets/fashion-mnist';
const THREADS = cpus().length;
/** BENCH_KS=10 / BENCH_CASES=d3,d128,fmnist run a part (the section says which). */
const KS = (process.env.BENCH_KS ?? '10,100').split(',').map(Number);
const CASES = new Set((process.env.BENCH_CASES ?? 'd3,d128,fmnist').split(','));
const SAMPLE = 100;

interface Case {
  readonly name: string;
  readonly label: string;
  readonly nx: number;
  readonly ny: number;
  readonly dim: number;
  /** Query rows each peer runs on (at most nx); peers not listed run on all of them. */
  readonly subset: Readonly<Record<string, number>>;
  readonly peers: readonly string[];
  readonly repeats: number;
}

interface Outcome {
  readonly seconds: number;
  readonly max_rss_kib: number;
  readonly version?: string;
}

const PEER_LABELS: Readonly<Record<string, string>> = {
  knn: 'keops-node knn()',
  bruteforce: 'keops-node brute force (KMin_ArgKMin, all pairs)',
  faiss: 'faiss-cpu IndexFlatL2',
  kdtree: 'scikit-learn KDTree (build + query)',
  hnswlib: 'hnswlib-node BruteforceSearch',
  usearch: 'usearch exactSearch',
};
const PYTHON_PEERS = new Set(['faiss', 'kdtree', 'exact']);
const SINGLE_THREADED = new Set(['kdtree', 'hnswlib']);

const report = benchReport();
const out = report.out;

/** The Node.js peers compiled to JavaScript (under ts-node a process would hold ~100 MiB more). */
const PEER_JS_DIR = join(__dirname, '..', 'node_modules', '.cache', 'keops-bench-js');

function compilePeer(): void {
  const tsc = join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc');
  execFileSync(
    process.execPath,
    [
      tsc,
      ...['--outDir', PEER_JS_DIR, '--rootDir', join(__dirname, '..'), '--target', 'ES2022'],
      ...['--module', 'nodenext', '--moduleResolution', 'nodenext', '--esModuleInterop', '--skipLibCheck'],
      ...['--types', 'node', '--ignoreConfig', join(__dirname, 'knn-peer.ts')],
    ],
    { stdio: 'inherit' },
  );
}

function runPeer(peer: string, work: string, c: Case, k: number, queries: number): Outcome {
  const args = [peer, work, c.name, String(k), String(queries), String(c.repeats), String(THREADS)];
  const env = { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' };
  const text = PYTHON_PEERS.has(peer)
    ? execFileSync(PYTHON, [join(__dirname, 'knn_peers.py'), ...args], { encoding: 'utf8', env })
    : execFileSync(process.execPath, [join(PEER_JS_DIR, 'bench', 'knn-peer.js'), ...args], {
        encoding: 'utf8',
        env,
        maxBuffer: 1 << 20,
      });
  return JSON.parse(text.trim().split('\n').pop() as string) as Outcome;
}

function readInts(file: string): Int32Array {
  const b = readFileSync(file);
  return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

async function bench(c: Case, work: string, sample: number[]): Promise<void> {
  for (const k of KS) {
    runPeer('exact', work, c, k, c.nx);
    const exact = readInts(join(work, `${c.name}.exact.${k}.i32`));
    const times: Record<string, number> = {};
    for (const peer of c.peers) {
      const queries = Math.min(c.nx, c.subset[peer] ?? c.nx);
      const o = runPeer(peer, work, c, k, queries);
      const ids = readInts(join(work, `${c.name}.${peer}.${k}.i32`));
      let rows = 0;
      let wrong = 0;
      sample.forEach((q, s) => {
        let bad = 0;
        for (let r = 0; r < k; r++) if (ids[q * k + r] !== exact[s * k + r]) bad++;
        rows += bad > 0 ? 1 : 0;
        wrong += bad;
      });
      const full = (o.seconds * c.nx) / queries;
      times[peer] = full;
      const threads = SINGLE_THREADED.has(peer) ? 1 : THREADS;
      const label = `${PEER_LABELS[peer]}${o.version ? ` ${o.version}` : ''}`;
      out(
        `| ${label} | ${c.label} | ${c.nx}×${c.ny}, D=${c.dim} | ${k} | ${queries} | ${o.seconds.toFixed(3)} s | ` +
          `${full.toFixed(3)} s | ${(o.max_rss_kib / 1024).toFixed(0)} MiB | ${threads} | ${rows}/${sample.length} rows (${wrong} ids) |`,
      );
    }
    if (c.peers.includes('knn') && c.peers.includes('bruteforce')) {
      const same = (ext: string): number => {
        const a = readFileSync(join(work, `${c.name}.knn.${k}.${ext}`));
        const b = readFileSync(join(work, `${c.name}.bruteforce.${k}.${ext}`));
        if (a.length !== b.length) return -1;
        let differ = 0;
        for (let e = 0; e < a.length; e += 4) if (a.readInt32LE(e) !== b.readInt32LE(e)) differ++;
        return differ;
      };
      const ratios = Object.entries(times)
        .filter(([peer]) => peer !== 'knn')
        .map(([peer, t]) => `${peer} ${(times.knn / t).toFixed(2)}×`)
        .join(', ');
      out(
        `| **knn() vs brute force, all ${c.nx} rows** | ${c.label} | | ${k} | | | | | | ids differing: ${same('i32')}, ` +
          `distances differing (bytes): ${same('dist')} |`,
      );
      out(`| **knn() time / peer's time** | ${c.label} | | ${k} | | | | | | ${ratios} |`);
    } else if (c.peers.includes('knn')) {
      const ratios = Object.entries(times)
        .filter(([peer]) => peer !== 'knn')
        .map(([peer, t]) => `${peer} ${(times.knn / t).toFixed(2)}×`)
        .join(', ');
      out(`| **knn() time / peer's time** | ${c.label} | | ${k} | | | | | | ${ratios} |`);
    }
  }
}

function writeCase(work: string, c: Case, x: Float32Array, y: Float32Array, sample: number[]): void {
  writeFileSync(join(work, `${c.name}.json`), JSON.stringify({ nx: c.nx, ny: c.ny, dim: c.dim, sample }));
  writeFileSync(join(work, `${c.name}.x.f32`), x);
  writeFileSync(join(work, `${c.name}.y.f32`), y);
}

async function main(): Promise<void> {
  compilePeer();
  const work = mkdtempSync(join(tmpdir(), 'keops-bench-knn-'));
  // One kernel cache for every child: the first compiles (untimed), the others load.
  process.env.KEOPS_CACHE_DIR = join(work, 'kernels');
  try {
    out(`## k-NN benchmark (issue 12), ${new Date().toISOString().slice(0, 10)}`);
    out('');
    out(
      `Machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${THREADS} vCPUs, Node ${process.version}. Scale ${SCALE}. ` +
        `\`npm run bench:knn\`: each peer in its own process (peak RSS = that process's, inputs included; the ` +
        `Node.js peers compiled to JavaScript), ` +
        `float32, best of the stated repeats after an untimed warm-up call. Exactness: ids of ${SAMPLE} sampled ` +
        `queries against the exact ranking (float64 differences, ties by smallest id). Cases ${[...CASES].join(', ')}, ` +
        `k = ${KS.join(', ')}. Load average before the run: ${loadAverage()}.`,
    );
    out('');
    out(
      '| what | data | size | k | queries run | time | time for all queries | peak RSS | threads | rows with ids ≠ exact |',
    );
    out('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    const scaled = (n: number): number => Math.max(SAMPLE * 5, Math.round(n * SCALE));
    const sampleOf = (rows: number): number[] =>
      Array.from({ length: SAMPLE }, (_, s) => Math.floor((s * rows) / SAMPLE));

    const d3: Case = {
      name: 'd3',
      label: 'uniform',
      nx: scaled(100_000),
      ny: scaled(100_000),
      dim: 3,
      subset: { faiss: scaled(10_000), hnswlib: scaled(2_000), usearch: scaled(2_000) },
      peers: ['knn', 'bruteforce', 'kdtree', 'faiss', 'hnswlib', 'usearch'],
      repeats: 2,
    };
    const s3 = sampleOf(Math.min(d3.nx, scaled(2_000)));
    if (CASES.has('d3')) {
      writeCase(work, d3, uniform(d3.nx * 3, 31), uniform(d3.ny * 3, 32), s3);
      await bench(d3, work, s3);
    }

    const d128: Case = {
      name: 'd128',
      label: 'uniform',
      nx: scaled(2_000),
      ny: scaled(100_000),
      dim: 128,
      subset: { hnswlib: scaled(500), usearch: scaled(1_000) },
      peers: ['knn', 'faiss', 'hnswlib', 'usearch'],
      repeats: 1,
    };
    const s128 = sampleOf(Math.min(d128.nx, scaled(500)));
    if (CASES.has('d128')) {
      writeCase(work, d128, uniform(d128.nx * 128, 41), uniform(d128.ny * 128, 42), s128);
      await bench(d128, work, s128);
    }

    if (CASES.has('fmnist')) {
      const train = await readIdxImages(join(FASHION_MNIST, 'train-images-idx3-ubyte.gz'), scaled(60_000));
      const test = await readIdxImages(join(FASHION_MNIST, 't10k-images-idx3-ubyte.gz'), scaled(10_000));
      const fmnist: Case = {
        name: 'fmnist',
        label: 'Fashion-MNIST',
        nx: test.rows,
        ny: train.rows,
        dim: train.dim,
        subset: { hnswlib: scaled(500), usearch: scaled(1_000) },
        peers: ['knn', 'faiss', 'hnswlib', 'usearch'],
        repeats: 1,
      };
      const sf = sampleOf(Math.min(fmnist.nx, scaled(500)));
      writeCase(work, fmnist, Float32Array.from(test.data), Float32Array.from(train.data), sf);
      writeFileSync(join(work, 'fmnist.x.u8'), test.data);
      writeFileSync(join(work, 'fmnist.y.u8'), train.data);
      await bench(fmnist, work, sf);
    }

    report.finish();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

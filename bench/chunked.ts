/**
 * Chunked (out-of-core) runs against one in-memory call: a Gaussian sum and ArgKMin K=10 at D=3, the base of N
 * points (and the weights) read from raw float32 files chunk by chunk by a read(start, end) source, memoryLimit
 * 64 MiB, against the same files read whole into memory first. One measurement per process, so that peak RSS (bench/chunked.sh runs each under /usr/bin/time -v)
 * belongs to that mode alone.
 *
 *     npx ts-node --transpile-only bench/chunked.ts --mode streamed|memory|baseline --reduction sum|argkmin --M 2000 --N 50000000
 *
 * Prints one JSON line: mode, reduction, sizes, seconds (the in-memory base is read before the clock starts; the
 * streamed one is read inside the run, overlapped with compute) and Gpairs/s. The files (N × 16 bytes, in
 * node_modules/.cache/keops-bench-data unless --data DIR) are written on first use. `baseline`
 * only loads the library and the kernels: its peak RSS is the fixed overhead.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Genred } from '../lib/genred';
import { reduceChunked } from '../lib/jobs/chunked';
import { PartialReducer } from '../lib/jobs/partial';
import { uniform } from './data';

function arg(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const mode = arg('mode', 'streamed');
const reduction = arg('reduction', 'sum');
const M = Number(arg('M', '2000'));
const N = Number(arg('N', '50000000'));
const memoryLimit = Number(arg('memoryLimit', String(64 * 2 ** 20)));
const D = 3;
const dataDir = arg('data', join(process.cwd(), 'node_modules', '.cache', 'keops-bench-data'));

/** Rows [start, end) of the base: the same values whichever way it is cut (one LCG seeded per block of rows). */
const BLOCK = 65536;
function generatedRows(start: number, end: number, dim: number, seed: number): Float32Array {
  const out = new Float32Array((end - start) * dim);
  for (let block = Math.floor(start / BLOCK); block * BLOCK < end; block++) {
    const rows = uniform(BLOCK * dim, seed + block);
    const a = Math.max(start, block * BLOCK);
    const z = Math.min(end, (block + 1) * BLOCK);
    out.set(rows.subarray((a - block * BLOCK) * dim, (z - block * BLOCK) * dim), (a - start) * dim);
  }
  return out;
}

/**
 * The base (N × D) and weights (N) as raw float32 files, written once (outside the clock) in blocks: the streamed
 * run reads them chunk by chunk (positional reads, off the JS thread), the in-memory one reads them whole first.
 */
function ensureFile(path: string, dim: number, seed: number): void {
  const bytes = N * dim * 4;
  if (existsSync(path) && statSync(path).size === bytes) return;
  const fd = openSync(`${path}.tmp`, 'w');
  for (let start = 0; start < N; start += 16 * BLOCK) {
    const rows = generatedRows(start, Math.min(N, start + 16 * BLOCK), dim, seed);
    writeSync(fd, new Uint8Array(rows.buffer));
  }
  closeSync(fd);
  renameSync(`${path}.tmp`, path);
}

function fileSource(path: string, dim: number) {
  return {
    rows: N,
    dtype: 'float32' as const,
    async read(start: number, end: number, target?: Float32Array | Float64Array): Promise<Float32Array> {
      const out = target instanceof Float32Array ? target : new Float32Array((end - start) * dim);
      const handle = await open(path, 'r');
      try {
        const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
        for (let done = 0; done < bytes.length;) {
          const { bytesRead } = await handle.read(bytes, done, bytes.length - done, start * dim * 4 + done);
          if (bytesRead === 0) throw new Error(`${path}: unexpected end of file`);
          done += bytesRead;
        }
      } finally {
        await handle.close();
      }
      return out;
    },
  };
}

function sum(values: ArrayLike<number>): number {
  let s = 0;
  for (let k = 0; k < values.length; k++) s += values[k];
  return s;
}

async function main(): Promise<void> {
  const g: Genred =
    reduction === 'sum'
      ? new Genred('Exp(-SqDist(x,y)*g)*b', [`x = Vi(${D})`, `y = Vj(${D})`, 'b = Vj(1)', 'g = Pm(1)'], {
          reduction: 'Sum',
          axis: 1,
          backend: 'cpu',
        })
      : new Genred('SqDist(x,y)', [`x = Vi(${D})`, `y = Vj(${D})`], {
          reduction: 'ArgKMin',
          k: 10,
          axis: 1,
          backend: 'cpu',
        });
  const x = uniform(M * D, 7);
  const gamma = Float32Array.of(10);
  mkdirSync(dataDir, { recursive: true });
  const basePath = join(dataDir, `base-${N}x${D}.f32`);
  const weightsPath = join(dataDir, `weights-${N}.f32`);
  ensureFile(basePath, D, 1000);
  if (reduction === 'sum') ensureFile(weightsPath, 1, 5000);
  const base = fileSource(basePath, D);
  const weights = fileSource(weightsPath, 1);
  // Warm-up: compile (or load) both kernels outside the clock.
  const small = generatedRows(0, 1000, D, 1);
  const reducer = new PartialReducer(g);
  const warmArgs =
    reduction === 'sum'
      ? [x.subarray(0, 30), small, small.subarray(0, 1000), gamma]
      : [x.subarray(0, 30), small];
  await g.call(warmArgs);
  await reducer.compute(warmArgs);

  let seconds: number;
  let checksum: number;
  if (mode === 'baseline') {
    // The fixed overhead: runtime, library and loaded kernels, no data.
    seconds = 0;
    checksum = 0;
  } else if (mode === 'memory') {
    const whole = (path: string) => {
      const buffer = readFileSync(path);
      return new Float32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength / 4);
    };
    const args = reduction === 'sum' ? [x, whole(basePath), whole(weightsPath), gamma] : [x, whole(basePath)];
    const started = performance.now();
    const out = (await g.call(args)) as Float32Array | Int32Array;
    seconds = (performance.now() - started) / 1000;
    checksum = sum(out);
  } else {
    const sources = reduction === 'sum' ? [x, base, weights, gamma] : [x, base];
    const started = performance.now();
    const out = (await reduceChunked(reducer, sources, { memoryLimit })) as Float32Array | Int32Array;
    seconds = (performance.now() - started) / 1000;
    checksum = sum(out);
  }
  console.log(
    JSON.stringify({
      mode,
      reduction,
      M,
      N,
      D,
      memoryLimit: mode === 'memory' ? null : memoryLimit,
      seconds: Number(seconds.toFixed(3)),
      gpairsPerSecond: seconds > 0 ? Number(((M * N) / seconds / 1e9).toFixed(3)) : null,
      checksum,
    }),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

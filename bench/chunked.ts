/**
 * Chunked (out-of-core) runs against one in-memory call: a Gaussian sum and ArgKMin K=10 at D=3, the base of N
 * points streamed from a source that generates it chunk by chunk (standing in for a file reader), memoryLimit
 * 64 MiB. One measurement per process, so that peak RSS (bench/chunked.sh runs each under /usr/bin/time -v)
 * belongs to that mode alone.
 *
 *     npx ts-node --transpile-only bench/chunked.ts --mode streamed|memory --reduction sum|argkmin --M 2000 --N 50000000
 *
 * Prints one JSON line: mode, reduction, sizes, seconds (compute only: the in-memory base is generated before the
 * clock starts; the streamed one is generated inside the run, overlapped with compute) and Gpairs/s.
 */
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

/** Rows [start, end) of the base: the same values whichever way it is cut (one LCG seeded per block of rows). */
const BLOCK = 65536;
function baseRows(start: number, end: number): Float32Array {
  const out = new Float32Array((end - start) * D);
  for (let block = Math.floor(start / BLOCK); block * BLOCK < end; block++) {
    const rows = uniform(BLOCK * D, 1000 + block);
    const a = Math.max(start, block * BLOCK);
    const z = Math.min(end, (block + 1) * BLOCK);
    out.set(rows.subarray((a - block * BLOCK) * D, (z - block * BLOCK) * D), (a - start) * D);
  }
  return out;
}

function sum(values: ArrayLike<number>): number {
  let s = 0;
  for (let k = 0; k < values.length; k++) s += values[k];
  return s;
}

async function main(): Promise<void> {
  const g =
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
  const weights = (start: number, end: number) =>
    Float32Array.from({ length: end - start }, (_, k) => ((start + k) % 7) / 7);
  // Warm-up: compile (or load) both kernels outside the clock.
  const small = baseRows(0, 1000);
  const reducer = new PartialReducer(g);
  const warmArgs =
    reduction === 'sum' ? [x.subarray(0, 30), small, weights(0, 1000), gamma] : [x.subarray(0, 30), small];
  await g.call(warmArgs);
  await reducer.compute(warmArgs);

  let seconds: number;
  let checksum: number;
  if (mode === 'memory') {
    const y = baseRows(0, N);
    const args = reduction === 'sum' ? [x, y, weights(0, N), gamma] : [x, y];
    const started = performance.now();
    const out = (await g.call(args)) as Float32Array | Int32Array;
    seconds = (performance.now() - started) / 1000;
    checksum = sum(out);
  } else {
    const ySource = { rows: N, dtype: 'float32' as const, read: baseRows };
    const bSource = { rows: N, dtype: 'float32' as const, read: weights };
    const sources = reduction === 'sum' ? [x, ySource, bSource, gamma] : [x, ySource];
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
      gpairsPerSecond: Number(((M * N) / seconds / 1e9).toFixed(3)),
      checksum,
    }),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

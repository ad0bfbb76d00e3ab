/**
 * What it costs that an asynchronous call works on copies of its inputs (taken when the call is made, and again
 * by the addon for its own threads): `call` (copies) against `callSync` (reads the arrays in place), same kernel,
 * best of several runs, at sizes where the copy is a large share of the work (few output rows) and a typical
 * one. Run: npx ts-node --transpile-only bench/input-copy.ts
 */
import { cpus } from 'node:os';
import { Genred } from '../lib';

const REPEATS = 7;

async function best(run: () => unknown): Promise<number> {
  let fastest = Infinity;
  for (let k = 0; k < REPEATS; k++) {
    const started = performance.now();
    await run();
    fastest = Math.min(fastest, performance.now() - started);
  }
  return fastest;
}

function filled(length: number): Float32Array {
  const a = new Float32Array(length);
  for (let k = 0; k < length; k++) a[k] = Math.sin(k);
  return a;
}

async function main(): Promise<void> {
  const g = new Genred('Exp(-SqDist(x,y))*b', ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'], { backend: 'cpu' });
  console.log(`Machine: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} vCPUs, Node ${process.version}.`);
  console.log(`Best of ${REPEATS} runs, float32, D = 3.\n`);
  console.log('| M × N | input bytes | callSync (in place) | call (copies) | difference |');
  console.log('| ----- | ----------- | ------------------- | ------------- | ---------- |');
  for (const [M, N] of [
    [1, 4_000_000],
    [16, 4_000_000],
    [10_000, 100_000],
  ]) {
    const args = [filled(M * 3), filled(N * 3), filled(N)];
    await g.call(args); // compile / warm up
    const sync = await best(() => g.callSync(args));
    const async = await best(() => g.call(args));
    const bytes = args.reduce((s, a) => s + a.byteLength, 0);
    console.log(
      `| ${M} × ${N} | ${(bytes / 2 ** 20).toFixed(1)} MiB | ${sync.toFixed(2)} ms | ${async.toFixed(2)} ms | ${(async - sync).toFixed(2)} ms |`,
    );
  }
}

void main();

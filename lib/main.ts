/**
 * `npm start`: the main job on an embedded default. A Gaussian kernel sum and a 10-nearest-neighbour search
 * on 100,000 generated points in 3-D (float32) on the best available backend, printing the backend, the
 * first-compile (or cache-load) time, the run time and pairs per second, and a spot check against the float64
 * reference evaluator on a subset. `KEOPS_MAIN_POINTS` overrides the size.
 */
import { performance } from 'node:perf_hooks';
import { Genred, type GenredResult } from './genred';
import { parseFormula } from './formula';
import { referenceGenred, type ReferenceInput } from './reference';
import { describeRuntime } from './runtime-summary';

const POINTS = Number(process.env.KEOPS_MAIN_POINTS ?? 100_000);
const DIM = 3;
const SPOT_ROWS = 100;
const SPOT_COLUMNS = 2_000;

/** Deterministic points in the unit cube (a linear congruential generator: no dependency, same everywhere). */
function points(count: number, dim: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(count * dim);
  for (let k = 0; k < out.length; k++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[k] = s / 2 ** 32;
  }
  return out;
}

interface Job {
  title: string;
  formula: string;
  aliases: string[];
  options: ConstructorParameters<typeof Genred>[2] & { reduction: string; axis: 0 | 1; k?: number };
  /** Arguments by alias position, and each argument's row count per point (0 for parameters). */
  args: Float32Array[];
}

function subsetArgs(job: Job, iRows: number, jRows: number, dims: number[], cats: number[]): Float32Array[] {
  return job.args.map((a, k) =>
    cats[k] === 2 ? a : a.subarray(0, (cats[k] === 0 ? iRows : jRows) * dims[k]),
  );
}

function maxRelativeError(got: GenredResult, want: GenredResult): string {
  const g = ArrayBuffer.isView(got) ? got : got.values;
  const w = ArrayBuffer.isView(want) ? want : want.values;
  if (g instanceof Int32Array) {
    let mismatches = 0;
    for (let k = 0; k < w.length; k++) if (g[k] !== w[k]) mismatches++;
    return mismatches === 0 ? `all ${w.length} indices equal` : `${mismatches} of ${w.length} indices differ`;
  }
  let err = 0;
  let scale = 0;
  for (let k = 0; k < w.length; k++) {
    err = Math.max(err, Math.abs(g[k] - w[k]));
    scale = Math.max(scale, Math.abs(w[k]));
  }
  return `max relative error ${(err / Math.max(scale, 1e-300)).toExponential(2)}`;
}

async function runJob(job: Job): Promise<void> {
  const parsed = parseFormula(job.formula, job.aliases);
  const dims = parsed.variables.map((v) => v.dim);
  const cats = parsed.variables.map((v) => v.cat);
  const genred = new Genred(job.formula, job.aliases, job.options);

  let t0 = performance.now();
  await genred.call(subsetArgs(job, 4, 4, dims, cats));
  const firstMs = performance.now() - t0;
  const info = genred.kernelInfo('float32', 'cuda') ?? genred.kernelInfo('float32', 'cpu');
  const what = info?.backend === 'cuda' ? 'CUDA kernels' : 'CPU kernel';
  const origin =
    info?.origin === 'compiled' ? `${what} compiled now` : `${what} loaded from the ${info?.origin} cache`;

  // A second Genred with the same formula: what every later process or object pays (memory/disk cache).
  t0 = performance.now();
  await new Genred(job.formula, job.aliases, job.options).call(subsetArgs(job, 4, 4, dims, cats));
  const cachedMs = performance.now() - t0;

  t0 = performance.now();
  await genred.call(job.args);
  const runS = (performance.now() - t0) / 1000;

  const spotArgs = subsetArgs(job, SPOT_ROWS, SPOT_COLUMNS, dims, cats);
  const got = await genred.call(spotArgs);
  const inputs: ReferenceInput[] = spotArgs.map((data, k) => ({
    data,
    dim: dims[k],
    cat: cats[k] as 0 | 1 | 2,
  }));
  const want = referenceGenred(job.options.reduction, parsed.node, inputs, {
    axis: job.options.axis,
    k: job.options.k,
  });

  console.log(
    `\n${job.title}: ${job.formula}, reduction ${job.options.reduction}${job.options.k ? ` K=${job.options.k}` : ''}`,
  );
  console.log(`  first call: ${firstMs.toFixed(1)} ms (${origin})`);
  console.log(`  same formula, new object: ${cachedMs.toFixed(2)} ms`);
  console.log(
    `  run ${POINTS} x ${POINTS}: ${runS.toFixed(3)} s, ${((POINTS * POINTS) / runS / 1e9).toFixed(2)} Gpairs/s`,
  );
  console.log(
    `  spot check (${SPOT_ROWS} x ${SPOT_COLUMNS} vs float64 reference): ${maxRelativeError(got, want)}`,
  );
}

async function main(): Promise<void> {
  console.log(`keops-node main job: ${POINTS} points in ${DIM}-D, float32`);
  console.log(await describeRuntime());
  const x = points(POINTS, DIM, 1);
  const y = points(POINTS, DIM, 2);
  const b = points(POINTS, 1, 3);
  await runJob({
    title: 'Gaussian kernel sum',
    formula: 'Exp(-SqDist(x,y)*g)*b',
    aliases: ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)', 'g = Pm(1)'],
    options: { reduction: 'Sum', axis: 1 },
    args: [x, y, b, Float32Array.of(100)],
  });
  await runJob({
    title: '10-nearest-neighbour search',
    formula: 'SqDist(x,y)',
    aliases: ['x = Vi(3)', 'y = Vj(3)'],
    options: { reduction: 'ArgKMin', axis: 1, k: 10 },
    args: [x, y],
  });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

/**
 * How many pairs the screened k-NN kernels send to the exact path (no GPU needed): the screening test of
 * cuda_kernels.tpl with the constants lib/codegen/cuda-screen.ts derives, replayed in float32 on the CPU for every
 * pair of a sample of query rows swept over the whole base in j order (the kernels' order), once with the bound of
 * the FMA dot products and once with the wider bound of tensor-core (TF32) dot products. The dot products are
 * computed in float64 and rounded to float32, on operands truncated to TF32 for the tensor-core case (the test only
 * needs their rounding to be within the bound; the rate is a statistic). The exact value and the k-th smallest
 * threshold are the kernels' float32 difference form.
 *
 *   npx ts-node --transpile-only bench/cuda-screen-rate.ts [--queries 100] [--write]
 *
 * Cases: uniform [0, 1) rows at D = 128 (100,000 base rows) and Fashion-MNIST (60,000 training images, D = 784,
 * raw 0-255 values; skipped when the dataset is not installed), k = 10; then the dot-product rankings the
 * tensor-core kernels also screen: the inner product on the uniform rows, the cosine distance on Fashion-MNIST.
 * --write appends the tables to bench/RESULTS.md.
 */
import { existsSync, appendFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { cudaDotScreen, cudaSqDistScreen, type CudaSqDistScreen } from '../lib/codegen/cuda-screen';
import { parseReductionWithVariables } from '../lib/formula/index';
import { readIdxImages, uniform } from './data';

const FASHION_MNIST = process.env.FASHION_MNIST_DIR ?? '/usr/share/datasets/fashion-mnist';
const K = 10;
const f = Math.fround;

function screenOf(dim: number, tensorCores: boolean): CudaSqDistScreen {
  const parsed = parseReductionWithVariables(`ArgKMin_Reduction(SqDist(x,y),${K},0)`, [
    `x = Vi(0,${dim})`,
    `y = Vj(1,${dim})`,
  ]);
  const positions = parsed.variables.map((v) => ({ dim: v.dim, cat: v.cat }));
  const screen = cudaSqDistScreen(parsed.reduction, positions, { tensorCores });
  if (screen === undefined) throw new Error(`no screening at D = ${dim}`);
  // The kernel's constants are float32 literals.
  return { ...screen, alpha: f(screen.alpha), beta: f(screen.beta), tau: f(screen.tau), eta: f(screen.eta) };
}

/** The value the tensor cores may read: the float32's 13 low mantissa bits dropped. */
function truncateToTf32(values: Float32Array): Float32Array {
  const out = new Float32Array(values);
  const bits = new Uint32Array(out.buffer);
  for (let k = 0; k < bits.length; k++) bits[k] &= 0xffffe000;
  return out;
}

function squareNorms(rows: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(rows.length / dim);
  for (let r = 0; r < out.length; r++) {
    let s = 0;
    for (let k = 0; k < dim; k++) s = f(s + f(rows[r * dim + k] * rows[r * dim + k]));
    out[r] = s;
  }
  return out;
}

/** Inserts `value` into the ascending K smallest values `best` when it is below the largest (the KMin fold). */
function keepSmallest(best: Float64Array, value: number): void {
  if (!(value < best[K - 1])) return;
  let r = K - 1;
  while (r > 0 && best[r - 1] > value) {
    best[r] = best[r - 1];
    r--;
  }
  best[r] = value;
}

/** Row counts, |x|² and |y|² (float32, in order), and the rows as the tensor cores may read them. */
function prepared(queries: Float32Array, base: Float32Array, dim: number) {
  return {
    m: queries.length / dim,
    n: base.length / dim,
    qn: squareNorms(queries, dim),
    bn: squareNorms(base, dim),
    qt: truncateToTf32(queries),
    bt: truncateToTf32(base),
  };
}

interface Rate {
  readonly fma: number;
  readonly tensorCores: number;
}

/** Fraction of the pairs (query, base row) whose exact value the kernels compute, per bound. */
function rates(queries: Float32Array, base: Float32Array, dim: number): Rate {
  const { m, n, qn, bn, qt, bt } = prepared(queries, base, dim);
  const screens = { fma: screenOf(dim, false), tensorCores: screenOf(dim, true) };
  const kept = { fma: 0, tensorCores: 0 };
  for (let i = 0; i < m; i++) {
    // The k smallest exact values so far (ascending), per bound: each bound has its own sweep, but the exact
    // values are the same, so the thresholds are too; one list serves both.
    const best = new Float64Array(K).fill(Infinity);
    for (let j = 0; j < n; j++) {
      let dot = 0;
      let dotTf32 = 0;
      for (let k = 0; k < dim; k++) {
        dot += queries[i * dim + k] * base[j * dim + k];
        dotTf32 += qt[i * dim + k] * bt[j * dim + k];
      }
      const norm = f(qn[i] + bn[j]);
      const T = best[K - 1];
      let needed = false;
      for (const [name, value] of [
        ['fma', dot],
        ['tensorCores', dotTf32],
      ] as const) {
        const s = screens[name];
        const a = f(norm - f(2 * f(value)));
        const lhs = f(a * s.alpha);
        const bar = f(T * s.tau);
        const skip = a >= 0 && lhs >= f(bar + f(f(norm * s.beta) + s.eta)) && lhs < Infinity;
        if (!skip) {
          kept[name]++;
          needed = true;
        }
      }
      if (!needed) continue;
      let exact = 0;
      for (let k = 0; k < dim; k++) {
        const d = f(queries[i * dim + k] - base[j * dim + k]);
        exact = f(exact + f(d * d));
      }
      keepSmallest(best, exact);
    }
  }
  return { fma: kept.fma / (m * n), tensorCores: kept.tensorCores / (m * n) };
}

/**
 * The same for a dot-product ranking f = c + sign·(x|y) (`-(x|y)`: c = 0, sign = −1; `1-(x|y)`: c = 1), which
 * only the tensor-core kernels screen: the fraction of pairs their test sends to the exact path.
 */
function dotRate(queries: Float32Array, base: Float32Array, dim: number, formula: string): number {
  const parsed = parseReductionWithVariables(`KMin_ArgKMin_Reduction(${formula},${K},0)`, [
    `x = Vi(0,${dim})`,
    `y = Vj(1,${dim})`,
  ]);
  const positions = parsed.variables.map((v) => ({ dim: v.dim, cat: v.cat }));
  const screen = cudaDotScreen(parsed.reduction, positions);
  if (screen === undefined) throw new Error(`no dot screening for ${formula}`);
  const { m, n, qn, bn, qt, bt } = prepared(queries, base, dim);
  let kept = 0;
  for (let i = 0; i < m; i++) {
    const best = new Float64Array(K).fill(Infinity);
    for (let j = 0; j < n; j++) {
      let dotTf32 = 0;
      for (let k = 0; k < dim; k++) dotTf32 += qt[i * dim + k] * bt[j * dim + k];
      const norm = f(qn[i] + bn[j]);
      const T = best[K - 1];
      const bar = f(T + f(Math.abs(T) * 2 ** -20));
      const q = f(-screen.b * norm + f(screen.c + screen.sign * f(dotTf32)));
      const rhs = f(f(norm + screen.offset) * screen.kappa + bar);
      if (q >= rhs && q < Infinity) continue;
      kept++;
      let p = 0;
      for (let k = 0; k < dim; k++) p = f(p + f(queries[i * dim + k] * base[j * dim + k]));
      const exact = f(screen.c + screen.sign * p);
      keepSmallest(best, exact);
    }
  }
  return kept / (m * n);
}

/** Rows scaled to unit length (cosine distance). */
function normalizeRows(rows: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(rows.length);
  for (let r = 0; r < rows.length / dim; r++) {
    let s = 0;
    for (let k = 0; k < dim; k++) s += rows[r * dim + k] ** 2;
    const scale = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let k = 0; k < dim; k++) out[r * dim + k] = rows[r * dim + k] * scale;
  }
  return out;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const at = (flag: string): string | undefined => {
    const k = argv.indexOf(flag);
    return k >= 0 ? argv[k + 1] : undefined;
  };
  const queryCount = Number(at('--queries') ?? 100);
  const rows: string[] = [];
  const dotRows: string[] = [];
  const pct = (x: number): string => `${(100 * x).toFixed(3)}%`;
  const report = (label: string, r: Rate): void => {
    const line = `| ${label} | ${(100 * r.fma).toFixed(3)}% | ${(100 * r.tensorCores).toFixed(3)}% |`;
    rows.push(line);
    console.log(line);
  };
  {
    const dim = 128;
    const base = uniform(100_000 * dim, 7);
    const queries = uniform(queryCount * dim, 8);
    report(`uniform [0, 1), D = 128, ${queryCount} × 100,000, k = ${K}`, rates(queries, base, dim));
    dotRows.push(
      `| uniform [0, 1), D = 128, inner product \`-(x\\|y)\` | ${pct(dotRate(queries, base, dim, '-(x|y)'))} |`,
    );
    console.log(dotRows[dotRows.length - 1]);
  }
  const train = join(FASHION_MNIST, 'train-images-idx3-ubyte.gz');
  const test = join(FASHION_MNIST, 't10k-images-idx3-ubyte.gz');
  if (existsSync(train) && existsSync(test)) {
    const base = await readIdxImages(train, 60_000);
    const queries = await readIdxImages(test, queryCount);
    const q = Float32Array.from(queries.data);
    const b = Float32Array.from(base.data);
    report(`Fashion-MNIST, D = 784, ${queryCount} × 60,000, k = ${K}`, rates(q, b, base.dim));
    const cosine = dotRate(normalizeRows(q, base.dim), normalizeRows(b, base.dim), base.dim, '1-(x|y)');
    dotRows.push(`| Fashion-MNIST, D = 784, cosine \`1-(x\\|y)\` on unit rows | ${pct(cosine)} |`);
    console.log(dotRows[dotRows.length - 1]);
  } else {
    console.log(`(Fashion-MNIST skipped: not in ${FASHION_MNIST})`);
  }
  const text =
    `\n## Pairs the screened k-NN kernels evaluate exactly, ${new Date().toISOString().slice(0, 10)}\n\n` +
    `No GPU: \`npx ts-node --transpile-only bench/cuda-screen-rate.ts\` replays the kernels' screening test on the ` +
    `CPU (${cpus()[0]?.model ?? 'CPU'}), pairs in j order per query row, with the constants of both bounds.\n\n` +
    `| data | FMA dot products | tensor cores (TF32) |\n| --- | --- | --- |\n` +
    rows.join('\n') +
    '\n\nDot-product rankings (tensor cores only):\n\n| data | tensor cores (TF32) |\n| --- | --- |\n' +
    dotRows.join('\n') +
    '\n';
  if (argv.includes('--write')) appendFileSync(join(__dirname, 'RESULTS.md'), text);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

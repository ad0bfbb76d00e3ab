/**
 * CUDA benchmark: keops-node on the GPU (`backend: 'cuda'`), every case in one run, the median of several
 * repetitions after one warm-up call.
 *
 *   npx ts-node --transpile-only bench/cuda.ts [--sizes 1e4,1e5,1e6] [--d128-sizes 1e4,1e5] [--quick] [--json out.json]
 *
 * Cases (M = N = each size, uniform points in the unit cube, float32 unless said):
 *   - Gaussian sum Exp(-SqDist(x,y))*b, x = Vi(3), y = Vj(3), b = Vj(1), float32 and float64: with host typed
 *     arrays in and out (PCIe copies included) and with DeviceArray inputs + `output: 'device'` (GPU time only);
 *   - LogSumExp of -SqDist(x,y), and its gradient with respect to x (`grad`, cotangent of ones);
 *   - ArgKMin K=10 of SqDist(x,y) at D=3 and D=128 (D=128 at the sizes ≤ 1e5 only, unless --sizes or
 *     --d128-sizes is given);
 *   - latencies: NVRTC first compile of a formula no cache has seen (a random constant in its text, a fresh
 *     KEOPS_CACHE_DIR), the first call of that formula in a new process that finds it in the disk cache, and the
 *     per-call overhead (median of 1000 calls of a 10×10 Gaussian sum, DeviceArrays and host arrays).
 * Each result is spot-checked against a float64 evaluation of a few rows in JavaScript (the `check` column).
 *
 * --quick: one warm-up and two repetitions, 20 overhead calls (for CI, with the emulated GPU of test/fake-cuda).
 * Exits 2, after printing runtimeInfo(), when the backend is not CUDA; 1 when a case failed or a check did not
 * pass (the figures of the other cases are still printed and written).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DeviceArray, Genred, type GenredDeviceResult, runtimeInfo, type RuntimeInfo } from '../lib/index';
import { uniform } from './data';

const ROOT = join(__dirname, '..');

// ---------------------------------------------------------------------------------------------------------------
// Command line

interface Settings {
  readonly sizes: readonly number[];
  readonly d128Sizes: readonly number[];
  readonly quick: boolean;
  readonly json: string | undefined;
}

function parseSizes(text: string, flag: string): number[] {
  const sizes = text
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((s) => Math.round(Number(s)));
  if (sizes.length === 0 || sizes.some((n) => !Number.isSafeInteger(n) || n < 1)) {
    throw new Error(`${flag} needs a comma-separated list of sizes >= 1, e.g. 1e4,1e5,1e6; got ${text}`);
  }
  return sizes;
}

function parseArgs(argv: readonly string[]): Settings {
  let sizes: number[] | undefined;
  let d128: number[] | undefined;
  let quick = false;
  let json: string | undefined;
  for (let k = 0; k < argv.length; k++) {
    const arg = argv[k];
    const value = (): string => {
      const v = argv[++k];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--sizes') sizes = parseSizes(value(), arg);
    else if (arg.startsWith('--sizes=')) sizes = parseSizes(arg.slice(8), '--sizes');
    else if (arg === '--d128-sizes') d128 = parseSizes(value(), arg);
    else if (arg.startsWith('--d128-sizes=')) d128 = parseSizes(arg.slice(13), '--d128-sizes');
    else if (arg === '--quick') quick = true;
    else if (arg === '--json') json = value();
    else if (arg.startsWith('--json=')) json = arg.slice(7);
    else if (arg === '--help' || arg === '-h') {
      console.log(
        'usage: npx ts-node --transpile-only bench/cuda.ts [--sizes 1e4,1e5,1e6] [--d128-sizes LIST] [--quick] [--json FILE]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${arg} (see --help)`);
  }
  const chosen = sizes ?? [1e4, 1e5, 1e6];
  // D=128 is capped at 1e5 by default; sizes given explicitly are used as they are.
  const d128Sizes = d128 ?? (sizes !== undefined ? chosen : chosen.filter((n) => n <= 1e5));
  return { sizes: chosen, d128Sizes, quick, json };
}

// ---------------------------------------------------------------------------------------------------------------
// Data, timing, checks

const median = (values: readonly number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Repetitions after the warm-up: fewer for large sizes, and within about BUDGET_S seconds per case. */
const BUDGET_S = 20;
function repetitions(size: number, warmupS: number, quick: boolean): number {
  if (quick) return 2;
  const wanted = size <= 1e4 ? 10 : size <= 1e5 ? 5 : 3;
  return Math.max(1, Math.min(wanted, Math.floor(BUDGET_S / Math.max(warmupS, 1e-6))));
}

interface Timing {
  readonly seconds: number;
  readonly times: number[];
  readonly reps: number;
}

/**
 * One warm-up call, then the median of the repetitions. `run` must resolve when the GPU work is done (keops-node
 * calls do: the device thread synchronises its stream before settling); `after` (untimed) sees what each call
 * returned (to dispose it, or to keep the last one for the check).
 */
async function measure<T>(
  size: number,
  quick: boolean,
  run: () => Promise<T>,
  after: (result: T, last: boolean) => void | Promise<void> = () => undefined,
): Promise<Timing> {
  let t0 = performance.now();
  await after(await run(), false);
  const warmupS = (performance.now() - t0) / 1000;
  const reps = repetitions(size, warmupS, quick);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    t0 = performance.now();
    const result = await run();
    times.push((performance.now() - t0) / 1000);
    await after(result, r === reps - 1);
  }
  return { seconds: median(times), times, reps };
}

/** Rows checked against float64: a few, spread over the output. */
function sampleRows(m: number): number[] {
  const count = Math.min(m, 6);
  return Array.from({ length: count }, (_, k) => Math.floor((k * (m - 1)) / Math.max(1, count - 1)));
}

function sqDist(x: ArrayLike<number>, i: number, y: ArrayLike<number>, j: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) {
    const t = x[i * d + k] - y[j * d + k];
    s += t * t;
  }
  return s;
}

function gaussRef(x: ArrayLike<number>, y: ArrayLike<number>, b: ArrayLike<number>, i: number, n: number) {
  let acc = 0;
  for (let j = 0; j < n; j++) acc += Math.exp(-sqDist(x, i, y, j, 3)) * b[j];
  return acc;
}

function lseRef(x: ArrayLike<number>, y: ArrayLike<number>, i: number, n: number): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) max = Math.max(max, -sqDist(x, i, y, j, 3));
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(-sqDist(x, i, y, j, 3) - max);
  return max + Math.log(s);
}

/** ∂ LSE_i / ∂ x_i = Σ_j softmax_ij · (-2)(x_i - y_j). */
function lseGradRef(x: ArrayLike<number>, y: ArrayLike<number>, i: number, n: number): number[] {
  const lse = lseRef(x, y, i, n);
  const g = [0, 0, 0];
  for (let j = 0; j < n; j++) {
    const w = Math.exp(-sqDist(x, i, y, j, 3) - lse);
    for (let k = 0; k < 3; k++) g[k] += -2 * w * (x[i * 3 + k] - y[j * 3 + k]);
  }
  return g;
}

function knnRef(x: ArrayLike<number>, y: ArrayLike<number>, i: number, n: number, d: number, k: number) {
  const best: { dist: number; j: number }[] = [];
  for (let j = 0; j < n; j++) {
    const dist = sqDist(x, i, y, j, d);
    if (best.length === k && dist >= best[k - 1].dist) continue;
    let at = best.length;
    while (at > 0 && best[at - 1].dist > dist) at--;
    best.splice(at, 0, { dist, j });
    if (best.length > k) best.pop();
  }
  return best.map((e) => e.j);
}

interface Check {
  readonly text: string;
  readonly ok: boolean;
}

function relErrCheck(
  got: ArrayLike<number>,
  rows: readonly number[],
  ref: (i: number) => number,
  tol: number,
) {
  let worst = 0;
  for (const i of rows) {
    const want = ref(i);
    worst = Math.max(worst, Math.abs(got[i] - want) / Math.max(Math.abs(want), 1e-30));
  }
  const ok = Number.isFinite(worst) && worst <= tol;
  return { text: `max rel. err ${worst.toExponential(1)}${ok ? '' : ` > ${tol} FAILED`}`, ok };
}

function absErrCheck(
  got: ArrayLike<number>,
  rows: readonly number[],
  dim: number,
  ref: (i: number) => number[],
  tol: number,
): Check {
  let worst = 0;
  for (const i of rows) {
    const want = ref(i);
    for (let k = 0; k < dim; k++) worst = Math.max(worst, Math.abs(got[i * dim + k] - want[k]));
  }
  const ok = Number.isFinite(worst) && worst <= tol;
  return { text: `max abs. err ${worst.toExponential(1)}${ok ? '' : ` > ${tol} FAILED`}`, ok };
}

/** The share of the float64 k nearest neighbours of the sample rows found among the first k of each row. */
function recallCheck(
  got: Int32Array,
  rows: readonly number[],
  stride: number,
  k: number,
  ref: (i: number) => number[],
): Check {
  let found = 0;
  for (const i of rows) {
    const want = new Set(ref(i));
    for (let r = 0; r < k; r++) if (want.has(got[i * stride + r])) found++;
  }
  const recall = found / (rows.length * k);
  const ok = recall >= 0.9;
  return { text: `recall ${recall.toFixed(2)}${ok ? '' : ' < 0.9 FAILED'}`, ok };
}

// ---------------------------------------------------------------------------------------------------------------
// Results

interface CaseResult {
  readonly id: string;
  readonly label: string;
  readonly size: number;
  readonly M: number;
  readonly N: number;
  readonly D: number;
  readonly dtype: 'float32' | 'float64';
  readonly io: 'host' | 'device';
  /** Median seconds; null when the case failed. */
  readonly seconds: number | null;
  readonly gpairsPerS: number | null;
  readonly reps: number;
  readonly times: readonly number[];
  readonly check: string;
  readonly ok: boolean;
  readonly target?: string;
  readonly targetMet?: boolean;
  readonly error?: string;
}

interface LatencyResult {
  readonly id: string;
  readonly label: string;
  readonly value: number | null;
  readonly unit: 'ms' | 'µs';
  readonly target?: string;
  readonly targetMet?: boolean;
  readonly note?: string;
  readonly error?: string;
}

/** The targets of the CUDA backend (seconds for cases at a size; ms / µs for latencies). */
const CASE_TARGETS: Readonly<Record<string, { size: number; seconds: number }>> = {
  'gauss-f32': { size: 1e6, seconds: 0.3 },
  'gauss-f32-device': { size: 1e6, seconds: 0.3 },
  'argkmin-d3-f32': { size: 1e6, seconds: 0.3 },
};

const cases: CaseResult[] = [];
const latencies: LatencyResult[] = [];

const errorText = (e: unknown): string =>
  e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e);

function fmtSeconds(s: number | null): string {
  if (s === null) return 'failed';
  return s >= 1 ? `${s.toFixed(2)} s` : s >= 0.01 ? `${s.toFixed(3)} s` : `${(s * 1000).toFixed(2)} ms`;
}

function printCase(c: CaseResult): void {
  console.log(
    `| ${c.label} | ${c.size} | ${fmtSeconds(c.seconds)} | ${c.gpairsPerS === null ? '' : c.gpairsPerS.toPrecision(3)} | ` +
      `${c.reps} | ${c.error ?? c.check} | ${c.target ?? ''} |`,
  );
}

function latencyLine(l: LatencyResult): string {
  const value = l.value === null ? 'failed' : `${l.value.toFixed(1)} ${l.unit}`;
  return `| ${l.label} | ${value} | ${l.target ?? ''} | ${l.error ?? l.note ?? ''} |`;
}

async function runCase(
  spec: Omit<CaseResult, 'seconds' | 'gpairsPerS' | 'reps' | 'times' | 'check' | 'ok' | 'M' | 'N'>,
  body: () => Promise<{ timing: Timing; check: Check }>,
): Promise<void> {
  let result: CaseResult;
  const base = { ...spec, M: spec.size, N: spec.size };
  try {
    const { timing, check } = await body();
    const target = CASE_TARGETS[spec.id];
    const withTarget =
      target !== undefined && target.size === spec.size
        ? {
            target: `≤ ${target.seconds.toFixed(2)} s ${timing.seconds <= target.seconds ? '✓' : '✗'}`,
            targetMet: timing.seconds <= target.seconds,
          }
        : {};
    result = {
      ...base,
      seconds: timing.seconds,
      gpairsPerS: (spec.size * spec.size) / timing.seconds / 1e9,
      reps: timing.reps,
      times: timing.times,
      check: check.text,
      ok: check.ok,
      ...withTarget,
    };
  } catch (e) {
    result = {
      ...base,
      seconds: null,
      gpairsPerS: null,
      reps: 0,
      times: [],
      check: '',
      ok: false,
      error: errorText(e),
    };
  }
  cases.push(result);
  printCase(result);
}

function disposeResult(r: GenredDeviceResult): void {
  if (r instanceof DeviceArray) r.dispose();
  else {
    r.values.dispose();
    r.indices.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cases

const GAUSS = 'Exp(-SqDist(x,y))*b';
const GAUSS_ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'];

async function gaussian(
  settings: Settings,
  dtype: 'float32' | 'float64',
  io: 'host' | 'device',
): Promise<void> {
  const maxN = Math.max(...settings.sizes);
  const x32 = uniform(maxN * 3, 1);
  const y32 = uniform(maxN * 3, 2);
  const b32 = uniform(maxN, 3);
  const conv = (a: Float32Array) => (dtype === 'float32' ? a : Float64Array.from(a));
  const [x, y, b] = [conv(x32), conv(y32), conv(b32)];
  const g = new Genred(GAUSS, GAUSS_ALIASES, { reduction: 'Sum', axis: 1, backend: 'cuda' });
  const suffix = dtype === 'float32' ? 'f32' : 'f64';
  const tol = dtype === 'float32' ? 1e-3 : 1e-9;
  for (const n of settings.sizes) {
    const xs = x.subarray(0, n * 3);
    const ys = y.subarray(0, n * 3);
    const bs = b.subarray(0, n);
    const rows = sampleRows(n);
    const check = (out: ArrayLike<number>) => relErrCheck(out, rows, (i) => gaussRef(xs, ys, bs, i, n), tol);
    const label = `Gaussian sum, ${dtype}, ${io === 'host' ? 'host arrays' : 'DeviceArray in/out'}`;
    await runCase(
      { id: `gauss-${suffix}${io === 'device' ? '-device' : ''}`, label, size: n, D: 3, dtype, io },
      async () => {
        if (io === 'host') {
          let last: ArrayLike<number> = [];
          const timing = await measure(
            n,
            settings.quick,
            () => g.call([xs, ys, bs]),
            (r) => {
              last = r as ArrayLike<number>;
            },
          );
          return { timing, check: check(last) };
        }
        const dx = await DeviceArray.from(xs);
        const dy = await DeviceArray.from(ys);
        const db = await DeviceArray.from(bs);
        try {
          let last: ArrayLike<number> = [];
          const timing = await measure(
            n,
            settings.quick,
            () => g.call([dx, dy, db], { output: 'device' }),
            async (r, isLast) => {
              if (isLast && r instanceof DeviceArray) last = await r.toHost();
              disposeResult(r);
            },
          );
          return { timing, check: check(last) };
        } finally {
          dx.dispose();
          dy.dispose();
          db.dispose();
        }
      },
    );
  }
}

async function logSumExp(settings: Settings, withGrad: boolean): Promise<void> {
  const maxN = Math.max(...settings.sizes);
  const x = uniform(maxN * 3, 4);
  const y = uniform(maxN * 3, 5);
  const g = new Genred('-SqDist(x,y)', ['x = Vi(3)', 'y = Vj(3)'], {
    reduction: 'LogSumExp',
    axis: 1,
    backend: 'cuda',
  });
  for (const n of settings.sizes) {
    const xs = x.subarray(0, n * 3);
    const ys = y.subarray(0, n * 3);
    const rows = sampleRows(n);
    if (!withGrad) {
      await runCase(
        {
          id: 'lse-f32',
          label: 'LogSumExp of -SqDist, float32',
          size: n,
          D: 3,
          dtype: 'float32',
          io: 'host',
        },
        async () => {
          let last: ArrayLike<number> = [];
          const timing = await measure(
            n,
            settings.quick,
            () => g.call([xs, ys]),
            (r) => {
              last = r as ArrayLike<number>;
            },
          );
          // Values near log N: an absolute tolerance.
          return { timing, check: absErrCheck(last, rows, 1, (i) => [lseRef(xs, ys, i, n)], 1e-3) };
        },
      );
      continue;
    }
    const cotangent = new Float32Array(n).fill(1);
    await runCase(
      {
        id: 'lse-grad-x-f32',
        label: 'gradient of the LogSumExp w.r.t. x, float32',
        size: n,
        D: 3,
        dtype: 'float32',
        io: 'host',
      },
      async () => {
        let last: ArrayLike<number> = [];
        const timing = await measure(
          n,
          settings.quick,
          () => g.grad([xs, ys], { wrt: 'x', cotangent }),
          (r) => {
            last = r;
          },
        );
        return { timing, check: absErrCheck(last, rows, 3, (i) => lseGradRef(xs, ys, i, n), 1e-3) };
      },
    );
  }
}

async function argKMin(settings: Settings, dim: number): Promise<void> {
  const sizes = dim === 3 ? settings.sizes : settings.d128Sizes;
  if (sizes.length === 0) return;
  const maxN = Math.max(...sizes);
  const x = uniform(maxN * dim, 10 + dim);
  const y = uniform(maxN * dim, 20 + dim);
  const K = 10;
  const g = new Genred('SqDist(x,y)', [`x = Vi(${dim})`, `y = Vj(${dim})`], {
    reduction: 'ArgKMin',
    axis: 1,
    k: K,
    backend: 'cuda',
  });
  for (const n of sizes) {
    const xs = x.subarray(0, n * dim);
    const ys = y.subarray(0, n * dim);
    const rows = sampleRows(n).slice(0, dim > 16 ? 4 : 6);
    const k = Math.min(K, n);
    await runCase(
      {
        id: `argkmin-d${dim}-f32`,
        label: `ArgKMin K=10, D=${dim}, float32`,
        size: n,
        D: dim,
        dtype: 'float32',
        io: 'host',
      },
      async () => {
        let last: Int32Array = new Int32Array(0);
        const timing = await measure(
          n,
          settings.quick,
          () => g.call([xs, ys]),
          (r) => {
            last = r as Int32Array;
          },
        );
        // With K > N the missing ranks are +∞ with index -1: check the first min(K, N) of each row.
        const check = recallCheck(last, rows, K, k, (i) => knnRef(xs, ys, i, n, dim, k));
        // Say which kernels ran: the screening on tensor cores (compute capability 8.0+, D >= 32) or not.
        const tensorCores = g.kernelInfo('float32', 'cuda')?.tensorCores === true;
        return { timing, check: { ...check, text: `${check.text}${tensorCores ? ', tensor cores' : ''}` } };
      },
    );
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Latencies

/** First compile of a formula no cache has seen, its load from the disk cache in a new process, per-call overhead. */
async function latency(settings: Settings, cacheDir: string): Promise<void> {
  // A random decimal constant (an exact rational in the formula language): a kernel no cache holds.
  const constant = (0.5 + Math.random() / 2).toFixed(9);
  const formula = `Exp(-SqDist(x,y)*${constant})*b`;
  const g = new Genred(formula, GAUSS_ALIASES, { reduction: 'Sum', axis: 1, backend: 'cuda' });
  const tx = uniform(30, 7);
  const ty = uniform(30, 8);
  const tb = uniform(10, 9);

  try {
    const t0 = performance.now();
    await g.call([tx, ty, tb]);
    const firstMs = performance.now() - t0;
    const info = g.kernelInfo('float32', 'cuda');
    const note = `kernelInfo: origin ${info?.origin}, compileMs ${info?.compileMs.toFixed(1)} (NVRTC)`;
    const ok = info?.origin === 'compiled';
    latencies.push({
      id: 'first-compile',
      label: 'first call of a new formula, cold cache (NVRTC compile + load + run), 10×10',
      value: firstMs,
      unit: 'ms',
      target: `≤ 500 ms ${firstMs <= 500 ? '✓' : '✗'}`,
      targetMet: firstMs <= 500,
      note: ok ? note : `${note}; expected origin 'compiled'`,
      ...(ok ? {} : { error: `origin ${info?.origin}, expected 'compiled'` }),
    });
    latencies.push({
      id: 'nvrtc-compile',
      label: 'NVRTC compile alone (kernelInfo compileMs)',
      value: info?.compileMs ?? null,
      unit: 'ms',
      target: info === undefined ? undefined : `≤ 500 ms ${info.compileMs <= 500 ? '✓' : '✗'}`,
      targetMet: info === undefined ? undefined : info.compileMs <= 500,
    });
  } catch (e) {
    latencies.push({
      id: 'first-compile',
      label: 'first compile',
      value: null,
      unit: 'ms',
      error: errorText(e),
    });
  }

  // A new process: time its CUDA start-up, then the first call of the same formula (kernel in the disk cache).
  const probe = `
    const t0 = performance.now();
    const { DeviceArray, Genred, runtimeInfo } = require('./lib/index');
    (async () => {
      const t1 = performance.now();
      const info = await runtimeInfo();
      const warm = await DeviceArray.from(new Float32Array(1)); warm.dispose();
      const t2 = performance.now();
      const g = new Genred(${JSON.stringify(formula)}, ${JSON.stringify(GAUSS_ALIASES)}, { reduction: 'Sum', axis: 1, backend: 'cuda' });
      const a = new Float32Array(30).fill(0.5), c = new Float32Array(10).fill(1);
      const t3 = performance.now();
      await g.call([a, a, c]);
      const t4 = performance.now();
      await g.call([a, a, c]);
      const t5 = performance.now();
      const k = g.kernelInfo('float32', 'cuda');
      console.log(JSON.stringify({ backend: info.backend, importMs: t1 - t0, initMs: t2 - t1, firstMs: t4 - t3,
        secondMs: t5 - t4, origin: k && k.origin }));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const child = spawnSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', probe], {
    cwd: ROOT,
    env: { ...process.env, KEOPS_CACHE_DIR: cacheDir },
    encoding: 'utf8',
    timeout: 300_000,
  });
  try {
    if (child.status !== 0) {
      throw new Error(
        `the probe process exited with ${child.status ?? child.signal}: ${child.stderr.slice(-2000)}`,
      );
    }
    const lines = child.stdout.trim().split('\n');
    const disk = JSON.parse(lines[lines.length - 1]) as {
      backend: string;
      importMs: number;
      initMs: number;
      firstMs: number;
      secondMs: number;
      origin: string | undefined;
    };
    const ok = disk.origin === 'disk';
    latencies.push({
      id: 'disk-load',
      label: 'first call in a new process, kernel in the disk cache, 10×10',
      value: disk.firstMs,
      unit: 'ms',
      target: `≤ 10 ms ${disk.firstMs <= 10 ? '✓' : '✗'}`,
      targetMet: disk.firstMs <= 10,
      note: `origin ${disk.origin}; second call ${disk.secondMs.toFixed(2)} ms`,
      ...(ok ? {} : { error: `origin ${disk.origin}, expected 'disk'` }),
    });
    latencies.push({
      id: 'process-cuda-init',
      label: 'new process: runtimeInfo() + opening the GPU (before that first call)',
      value: disk.initMs,
      unit: 'ms',
      note: `loading the library: ${disk.importMs.toFixed(0)} ms (ts-node)`,
    });
  } catch (e) {
    latencies.push({
      id: 'disk-load',
      label: 'disk cache load',
      value: null,
      unit: 'ms',
      error: errorText(e),
    });
  }

  // Per-call overhead: the kernel is loaded; tiny inputs, so the time is the library's and the driver's.
  const calls = settings.quick ? 20 : 1000;
  const overhead = async (
    id: string,
    label: string,
    call: () => Promise<unknown> | unknown,
    after: (r: unknown) => void = () => undefined,
  ): Promise<void> => {
    try {
      for (let k = 0; k < Math.min(50, calls); k++) after(await call());
      const times: number[] = [];
      for (let k = 0; k < calls; k++) {
        const t0 = performance.now();
        const r = await call();
        times.push((performance.now() - t0) * 1000);
        after(r);
      }
      const us = median(times);
      const mean = times.reduce((s, t) => s + t, 0) / times.length;
      latencies.push({
        id,
        label,
        value: us,
        unit: 'µs',
        target: `≤ 50 µs ${us <= 50 ? '✓' : '✗'}`,
        targetMet: us <= 50,
        note: `median of ${calls} calls; mean ${mean.toFixed(1)} µs`,
      });
    } catch (e) {
      latencies.push({ id, label, value: null, unit: 'µs', error: errorText(e) });
    }
  };
  let dx: DeviceArray | undefined;
  let dy: DeviceArray | undefined;
  let db: DeviceArray | undefined;
  try {
    dx = await DeviceArray.from(tx);
    dy = await DeviceArray.from(ty);
    db = await DeviceArray.from(tb);
    const args = [dx, dy, db];
    await overhead(
      'overhead-device',
      "per-call overhead, 10×10, DeviceArray inputs, output: 'device'",
      () => g.call(args, { output: 'device' }),
      (r) => disposeResult(r as GenredDeviceResult),
    );
  } catch (e) {
    latencies.push({
      id: 'overhead-device',
      label: 'overhead',
      value: null,
      unit: 'µs',
      error: errorText(e),
    });
  } finally {
    dx?.dispose();
    dy?.dispose();
    db?.dispose();
  }
  await overhead('overhead-host', 'per-call overhead, 10×10, host arrays, call()', () =>
    g.call([tx, ty, tb]),
  );
  await overhead('overhead-host-sync', 'per-call overhead, 10×10, host arrays, callSync()', () =>
    g.callSync([tx, ty, tb]),
  );
  for (const l of latencies) console.log(latencyLine(l));
}

// ---------------------------------------------------------------------------------------------------------------

const versionText = (v: number | undefined): string =>
  v === undefined ? 'unknown' : `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;

function describeGpu(info: RuntimeInfo): string {
  const d = info.devices[0];
  if (d === undefined) return 'no device';
  return (
    `${d.name} (sm_${d.computeCapability.join('')}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, ` +
    `${d.multiprocessors} SMs)`
  );
}

async function main(): Promise<void> {
  const settings = parseArgs(process.argv.slice(2));
  // A fresh cache folder: the first call of each formula compiles with NVRTC (inside KEOPS_CACHE_DIR when set,
  // so that a test's temporary folder holds everything).
  const base = process.env.KEOPS_CACHE_DIR ?? tmpdir();
  mkdirSync(base, { recursive: true });
  const cacheDir = mkdtempSync(join(base, 'keops-bench-cuda-'));
  process.env.KEOPS_CACHE_DIR = cacheDir;
  try {
    const info = await runtimeInfo();
    console.log('runtimeInfo():', JSON.stringify(info, null, 2));
    if (info.backend !== 'cuda') {
      console.error(
        `bench/cuda.ts: the CUDA backend is not usable here, so there is nothing to measure: ${info.reason}`,
      );
      process.exitCode = 2;
      return;
    }
    const emulated = info.devices[0]?.name.includes('emulated') ?? false;
    const t0 = performance.now();
    const warm = await DeviceArray.from(new Float32Array(1));
    warm.dispose();
    const contextMs = performance.now() - t0;
    const date = new Date().toISOString();
    console.log(
      [
        '',
        `## keops-node CUDA benchmark, ${date.slice(0, 10)}`,
        '',
        `GPU: ${describeGpu(info)}, driver CUDA ${versionText(info.driver?.version)}, NVRTC ${info.nvrtc?.version ?? '?'}, ` +
          `Node ${process.version}. Sizes M = N = ${settings.sizes.join(', ')} (D=128: ${settings.d128Sizes.join(', ') || 'none'}). ` +
          `Median of ${settings.quick ? '2 (--quick)' : 'up to 10 / 5 / 3 (≤1e4 / ≤1e5 / larger)'} repetitions after one warm-up. ` +
          `Opening the GPU took ${contextMs.toFixed(0)} ms.`,
        ...(emulated
          ? ['', '**Emulated GPU (test/fake-cuda): the figures say nothing about real hardware.**']
          : []),
        '',
        '| latency | value | target | note |',
        '|---|---|---|---|',
      ].join('\n'),
    );
    await latency(settings, cacheDir);
    console.log(
      '\n| case | M = N | time | Gpairs/s | reps | check | target |\n|---|---|---|---|---|---|---|',
    );
    await gaussian(settings, 'float32', 'host');
    await gaussian(settings, 'float32', 'device');
    await gaussian(settings, 'float64', 'host');
    await gaussian(settings, 'float64', 'device');
    await logSumExp(settings, false);
    await logSumExp(settings, true);
    await argKMin(settings, 3);
    await argKMin(settings, 128);

    const failed = [
      ...cases.filter((c) => c.error !== undefined || !c.ok),
      ...latencies.filter((l) => l.error),
    ];
    if (settings.json !== undefined) {
      const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
      const out = resolve(settings.json);
      mkdirSync(dirname(out), { recursive: true });
      const d = info.devices[0];
      writeFileSync(
        out,
        JSON.stringify(
          {
            tool: 'keops-node',
            version: pkg.version,
            date,
            emulated,
            quick: settings.quick,
            sizes: settings.sizes,
            d128Sizes: settings.d128Sizes,
            gpu: d?.name,
            device: d,
            driver: versionText(info.driver?.version),
            nvrtc: info.nvrtc?.version,
            node: process.version,
            contextMs,
            cases,
            latency: latencies,
            failures: failed.length,
          },
          null,
          2,
        ) + '\n',
      );
      console.log(`\nwrote ${out}`);
    }
    if (failed.length > 0) {
      console.error(
        `\n${failed.length} case(s) failed or did not pass their check: ${failed.map((f) => f.id).join(', ')}`,
      );
      process.exitCode = 1;
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

/**
 * The native addon on its own, with small hand-written kernels (no code generator involved): loading, the ABI
 * check, sync and async runs, row blocks and j-intervals, thread splitting, and failures that must become
 * errors rather than crashes.
 */
import { expect } from 'chai';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { acquireCpuKernel, acquireCpuKernelSync, type CpuKernelSpec } from '../lib/backend/cache';
import { type CpuKernelHandle, type NativeCpuJob, nativeAddon } from '../lib/backend/native';
import { KeOpsError } from '../lib/errors';

/** out[i] = Σ_{j in intervals} x[i]·y[j] (+ 1 per row when `plusOne`), in T; returns 7 when asked to fail. */
function dotKernel(
  type: 'float' | 'double',
  options: { abiVersion?: string; failOnRow?: number } = {},
): CpuKernelSpec {
  const source = `
#include "keops_abi.h"
typedef ${type} T;
extern "C" int keops_cpu_abi_version(void) { return ${options.abiVersion ?? 'KEOPS_CPU_ABI_VERSION'}; }
extern "C" int keops_cpu_run(const keops_cpu_task* task) {
  const T* x = static_cast<const T*>(task->args[0]);
  const T* y = static_cast<const T*>(task->args[1]);
  T* out = static_cast<T*>(task->out_val);
  for (int64_t i = task->row_begin; i < task->row_end; ++i) {
    if (i == ${options.failOnRow ?? -1}) return 7;
    T acc = 0;
    for (int64_t k = 0; k < task->n_intervals; ++k)
      for (int64_t j = task->j_intervals[2 * k]; j < task->j_intervals[2 * k + 1]; ++j) acc += x[i] * y[j];
    out[i] = acc;
    if (task->out_idx) task->out_idx[i] = static_cast<int32_t>(task->row_end - task->row_begin);
  }
  return 0;
}
`;
  return { source, compilerFlags: [], description: `test dot kernel ${type} ${JSON.stringify(options)}` };
}

function job(
  x: Float64Array | Float32Array,
  y: Float64Array | Float32Array,
  out: Float64Array | Float32Array,
): NativeCpuJob {
  return {
    args: [x, y],
    outVal: out,
    outIdx: null,
    nx: x.length,
    ny: y.length,
    blocks: Float64Array.of(0, x.length, 0, 1),
    intervals: Float64Array.of(0, y.length),
    argElements: Float64Array.of(x.length, y.length),
  };
}

function expected(x: ArrayLike<number>, y: ArrayLike<number>): number[] {
  const sy = Array.from(y).reduce((a, b) => a + b, 0);
  return Array.from(x, (xi) => xi * sy);
}

describe('native addon', function () {
  const previousCacheDir = process.env.KEOPS_CACHE_DIR;
  let cacheDir: string;
  let kernel64: CpuKernelHandle;

  before(async function () {
    cacheDir = mkdtempSync(join(tmpdir(), 'keops-addon-test-'));
    process.env.KEOPS_CACHE_DIR = cacheDir;
    kernel64 = (await acquireCpuKernel(dotKernel('double'))).kernel;
  });

  after(function () {
    if (previousCacheDir === undefined) delete process.env.KEOPS_CACHE_DIR;
    else process.env.KEOPS_CACHE_DIR = previousCacheDir;
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('reports its ABI version and a default thread count', function () {
    expect(nativeAddon().abiVersion).to.equal(2);
    expect(nativeAddon().defaultThreads).to.be.at.least(1);
  });

  it('runs a kernel synchronously and asynchronously with the same result', async function () {
    const x = Float64Array.from({ length: 1000 }, (_, i) => i / 7);
    const y = Float64Array.from({ length: 300 }, (_, j) => Math.sin(j));
    const outSync = new Float64Array(x.length);
    const outAsync = new Float64Array(x.length);
    nativeAddon().runCpuSync(kernel64, [job(x, y, outSync)], 1);
    await nativeAddon().runCpu(kernel64, [job(x, y, outAsync)], 4);
    const want = expected(x, y);
    for (let i = 0; i < x.length; i++)
      expect(outSync[i]).to.be.closeTo(want[i], 1e-9 * (1 + Math.abs(want[i])));
    expect(Array.from(outAsync)).to.deep.equal(Array.from(outSync));
  });

  it('splits rows across threads without changing the result', function () {
    const x = Float64Array.from({ length: 5000 }, (_, i) => Math.cos(i));
    const y = Float64Array.from({ length: 2000 }, (_, j) => 1 / (j + 1));
    const one = new Float64Array(x.length);
    const many = new Float64Array(x.length);
    nativeAddon().runCpuSync(kernel64, [job(x, y, one)], 1);
    nativeAddon().runCpuSync(kernel64, [job(x, y, many)], 8);
    expect(Array.from(many)).to.deep.equal(Array.from(one));
  });

  it('passes row blocks and their j-intervals to the kernel', function () {
    const x = Float64Array.of(1, 2, 3, 4, 5);
    const y = Float64Array.of(1, 10, 100, 1000);
    const out = new Float64Array(5).fill(-1);
    // rows [0,2) reduce over j in [0,1) ∪ [2,4); rows [2,3) over nothing; rows [3,5) over [1,2)
    nativeAddon().runCpuSync(
      kernel64,
      [
        {
          ...job(x, y, out),
          blocks: Float64Array.of(0, 2, 0, 2, 2, 3, 0, 0, 3, 5, 2, 1),
          intervals: Float64Array.of(0, 1, 2, 4, 1, 2),
        },
      ],
      2,
    );
    expect(Array.from(out)).to.deep.equal([1101, 2202, 0, 40, 50]);
  });

  it('runs several jobs (batch entries) in one call', async function () {
    const xs = [Float64Array.of(1, 2), Float64Array.of(3, 4, 5)];
    const y = Float64Array.of(1, 2, 3);
    const outs = [new Float64Array(2), new Float64Array(3)];
    await nativeAddon().runCpu(kernel64, [job(xs[0], y, outs[0]), job(xs[1], y, outs[1])], 0);
    expect(Array.from(outs[0])).to.deep.equal([6, 12]);
    expect(Array.from(outs[1])).to.deep.equal([18, 24, 30]);
  });

  it('keeps the event loop running during an async run', async function () {
    const x = Float64Array.from({ length: 4000 }, (_, i) => i);
    const y = Float64Array.from({ length: 100_000 }, () => 1);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = performance.now();
    await nativeAddon().runCpu(kernel64, [job(x, y, new Float64Array(x.length))], 1);
    const elapsed = performance.now() - started;
    clearInterval(timer);
    if (elapsed > 30) expect(ticks).to.be.greaterThan(2);
  });

  it('keeps the input and output arrays alive while an async run uses them', async function () {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const size = 3000;
    const out = new Float64Array(size);
    // The inputs exist only inside the job: nothing in JS references them once runCpu has returned.
    const pending = nativeAddon().runCpu(
      kernel64,
      [job(new Float64Array(size).fill(2), new Float64Array(50_000).fill(0.5), out)],
      1,
    );
    for (let k = 0; k < 5; k++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    await pending;
    expect(out.every((v) => v === 50_000)).to.equal(true);
  });

  it('works in worker threads, which get their own addon instance', async function () {
    const kernelPath = (await acquireCpuKernel(dotKernel('double'))).path;
    const script = `
      require('ts-node/register/transpile-only');
      const { parentPort, workerData } = require('node:worker_threads');
      const { nativeAddon } = require(workerData.nativeModule);
      const kernel = nativeAddon().loadCpuKernel(workerData.kernelPath);
      const x = Float64Array.of(1, 2, 3), y = Float64Array.of(1, 1), out = new Float64Array(3);
      const job = { args: [x, y], outVal: out, outIdx: null, nx: 3, ny: 2,
                    blocks: Float64Array.of(0, 3, 0, 1), intervals: Float64Array.of(0, 2),
                    argElements: Float64Array.of(3, 2) };
      nativeAddon().runCpu(kernel, [job], 2).then(() => parentPort.postMessage(Array.from(out)));
      if (workerData.busy) nativeAddon().runCpu(kernel, [{ ...job, args: [new Float64Array(4000).fill(1),
        new Float64Array(200000).fill(1)], outVal: new Float64Array(4000), nx: 4000, ny: 200000,
        blocks: Float64Array.of(0, 4000, 0, 1), intervals: Float64Array.of(0, 200000),
        argElements: Float64Array.of(4000, 200000) }], 1);
    `;
    const runWorker = (busy: boolean) =>
      new Promise<number[]>((resolveResult, reject) => {
        const nativeModule = resolve(__dirname, '../lib/backend/native');
        const worker = new Worker(script, { eval: true, workerData: { kernelPath, busy, nativeModule } });
        worker.once('message', (m: number[]) => {
          resolveResult(m);
          // Terminating while a run is still in flight must neither crash nor hang the process.
          void worker.terminate();
        });
        worker.once('error', reject);
      });
    expect(await runWorker(false)).to.deep.equal([2, 4, 6]);
    expect(await runWorker(true)).to.deep.equal([2, 4, 6]);
  });

  it('reports a kernel failure status as an error', async function () {
    const failing = (await acquireCpuKernel(dotKernel('double', { failOnRow: 3 }))).kernel;
    const x = new Float64Array(10);
    const y = new Float64Array(4);
    expect(() => nativeAddon().runCpuSync(failing, [job(x, y, new Float64Array(10))], 1)).to.throw(
      /status 7/,
    );
    let rejected: unknown;
    await nativeAddon()
      .runCpu(failing, [job(x, y, new Float64Array(10))], 2)
      .catch((e: unknown) => (rejected = e));
    expect((rejected as { code?: string }).code).to.equal('ERR_KERNEL_RUN');
  });

  it('refuses a kernel with another ABI version and leaves no cache entry', async function () {
    const before = readdirSync(cacheDir).filter((n) => n.endsWith('.so')).length;
    let error: unknown;
    await acquireCpuKernel(dotKernel('double', { abiVersion: '999' })).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(KeOpsError);
    expect((error as KeOpsError).code).to.equal('ERR_NATIVE');
    expect((error as KeOpsError).message).to.match(/ABI version 999/);
    expect(readdirSync(cacheDir).filter((n) => n.endsWith('.so')).length).to.equal(before);
    expect(readdirSync(cacheDir).filter((n) => n.startsWith('.tmp-'))).to.deep.equal([]);
  });

  it('rejects bad handles and bad jobs with errors, not crashes', function () {
    const addon = nativeAddon();
    const x = new Float64Array(4);
    const good = job(x, x, new Float64Array(4));
    const forged = { path: 'x', dispose() {} } as CpuKernelHandle;
    expect(() => addon.runCpuSync(forged, [good], 1)).to.throw(/not a CpuKernel/);
    expect(() => addon.runCpuSync(kernel64, [{ ...good, blocks: Float64Array.of(0, 5, 0, 1) }], 1)).to.throw(
      /\[0, nx\)/,
    );
    expect(() => addon.runCpuSync(kernel64, [{ ...good, intervals: Float64Array.of(0, 9) }], 1)).to.throw(
      /ny/,
    );
    expect(() => addon.runCpuSync(kernel64, [{ ...good, outVal: new Float32Array(4) }], 1)).to.throw(
      /same type/,
    );
    expect(() =>
      addon.runCpuSync(kernel64, [{ ...good, args: [x, [1, 2] as unknown as Float64Array] }], 1),
    ).to.throw(/Float32Array or Float64Array/);
    expect(() => addon.loadCpuKernel(join(cacheDir, 'missing.so'))).to.throw(/cannot load kernel/);
    // More values to read than the buffer really holds (a lying `length` upstream): refused, not read.
    expect(() => addon.runCpuSync(kernel64, [{ ...good, argElements: Float64Array.of(4, 5) }], 1))
      .to.throw(/holds 4 values/)
      .with.property('code', 'ERR_ARG_SHAPE');
    const gone = new Float64Array(4);
    structuredClone(gone.buffer, { transfer: [gone.buffer] });
    expect(() => addon.runCpuSync(kernel64, [{ ...good, args: [x, gone] }], 1))
      .to.throw(/detached/)
      .with.property('code', 'ERR_ARG_DETACHED');
  });

  it('reads SharedArrayBuffer arrays, sync and async', async function () {
    const shared = (values: number[]) => {
      const a = new Float64Array(new SharedArrayBuffer(values.length * 8));
      a.set(values);
      return a;
    };
    const x = shared([1, 2, 3]);
    const y = shared([1, 1]);
    const out = shared([0, 0, 0]);
    nativeAddon().runCpuSync(kernel64, [job(x, y, out)], 1);
    expect(Array.from(out)).to.deep.equal([2, 4, 6]);
    const outAsync = new Float64Array(3);
    await nativeAddon().runCpu(kernel64, [job(x, y, outAsync)], 2);
    expect(Array.from(outAsync)).to.deep.equal([2, 4, 6]);
  });

  it('cancels a queued run through its control object', async function () {
    const x = new Float64Array(100).fill(1);
    const y = new Float64Array(100).fill(1);
    const control: { cancel?: () => void } = {};
    const pending = nativeAddon().runCpu(kernel64, [job(x, y, new Float64Array(100))], 1, control);
    expect(control.cancel).to.be.a('function');
    control.cancel?.();
    control.cancel?.(); // idempotent
    let code: unknown;
    await pending.catch((e: { code?: unknown }) => (code = e.code));
    // The run may have finished before the cancel arrived; if not, it is ERR_ABORTED.
    expect([undefined, 'ERR_ABORTED']).to.include(code);
  });

  it('refuses a disposed kernel handle', function () {
    const handle = acquireCpuKernelSync(dotKernel('float')).kernel;
    const extra = nativeAddon().loadCpuKernel(handle.path);
    extra.dispose();
    const x = new Float32Array(2);
    expect(() => nativeAddon().runCpuSync(extra, [job(x, x, new Float32Array(2))], 1)).to.throw(/disposed/);
    nativeAddon().runCpuSync(handle, [job(x, x, new Float32Array(2))], 1); // the original handle still works
  });
});

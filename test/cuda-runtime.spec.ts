/**
 * The CUDA device runtime: DeviceArray lifecycle and accounting, results kept on the GPU, launch schemes
 * (split, ranges, opt-in shared memory, kernel thread limits), out-of-memory recovery, concurrency, sticky
 * errors, device mismatch, worker_threads and process exit. On the GPU when there is one, else on the emulated
 * GPU (test/cuda-target.ts); tests that need the emulator's knobs (memory size, failure injection, launch trace,
 * a second device) run on the emulator only. The numerical Genred suite for this backend is in genred.spec.ts.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { DeviceArray, deviceMemory } from '../lib/backend/cuda/device-array';
import { runtimeInfo } from '../lib/backend/cuda/runtime';
import { KeOpsError } from '../lib/errors';
import { parseFormula } from '../lib/formula';
import { Genred } from '../lib/genred';
import type { ReductionName } from '../lib/genred-types';
import { referenceGenred } from '../lib/reference';
import { useCudaTarget, useFakeCudaDevices, withFakeEnv } from './cuda-target';
import { expectBackendResult, randArray, rejection, rng, thrown, useTestKernelCache } from './util';

const execFileAsync = promisify(execFile);
const ROOT = resolve(__dirname, '..');

const gauss = (options: ConstructorParameters<typeof Genred>[2] = {}) =>
  new Genred('Exp(-SqDist(x,y))*b', ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'], {
    axis: 1,
    backend: 'cuda',
    ...options,
  });

function gaussData(M: number, N: number, seed: number, dtype: 'float32' | 'float64' = 'float32') {
  const r = rng(seed);
  const cast = (a: Float64Array) => (dtype === 'float32' ? Float32Array.from(a) : a);
  return [cast(randArray(r, 3 * M)), cast(randArray(r, 3 * N)), cast(randArray(r, 2 * N))];
}

function gaussReference(args: readonly (Float32Array | Float64Array)[], reduction = 'Sum', k?: number) {
  const aliases = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];
  const formula = reduction === 'Sum' ? 'Exp(-SqDist(x,y))*b' : 'SqDist(x,y)';
  return referenceGenred(
    reduction,
    parseFormula(formula, aliases).node,
    [
      { data: args[0], cat: 0, dim: 3 },
      { data: args[1], cat: 1, dim: 3 },
      { data: args[2], cat: 1, dim: 2 },
    ],
    { axis: 1, k },
  );
}

describe('CUDA device runtime', function () {
  this.timeout(300_000);
  useTestKernelCache();
  // Two emulated devices, for the mismatch and sticky-error tests (read by the fake driver when probed).
  useFakeCudaDevices(2);
  const target = useCudaTarget();
  const emulatedOnly = (context: Mocha.Context) => {
    target.require(context);
    if (target.kind !== 'emulated') context.skip();
  };
  beforeEach(function () {
    target.require(this);
  });

  it('runtimeInfo picks CUDA and lists the device', async function () {
    const info = await runtimeInfo();
    expect(info.backend).to.equal('cuda');
    expect(info.reason).to.equal(undefined);
    expect(info.devices.length).to.be.greaterThan(0);
    if (target.kind === 'emulated') expect(info.devices[0].name).to.equal('keops-node emulated GPU');
  });

  describe('DeviceArray', function () {
    it('round-trips float32, float64 and int32 data, async and sync', async function () {
      const r = rng(1);
      for (const data of [
        Float32Array.from(randArray(r, 1000)),
        randArray(r, 777),
        Int32Array.from({ length: 555 }, (_, i) => i * 7 - 100),
        new Float32Array(0),
      ]) {
        const a = await DeviceArray.from(data);
        expect(a.dtype).to.equal(
          data instanceof Float32Array ? 'float32' : data instanceof Float64Array ? 'float64' : 'int32',
        );
        expect(a.length).to.equal(data.length);
        expect(a.byteLength).to.equal(data.byteLength);
        const back = await a.toHost();
        expect(back.constructor).to.equal(data.constructor);
        expect(Array.from(back)).to.deep.equal(Array.from(data));
        expect(Array.from(a.toHostSync())).to.deep.equal(Array.from(data));
        a.dispose();
        const s = DeviceArray.fromSync(data);
        expect(Array.from(await s.toHost())).to.deep.equal(Array.from(data));
        s.dispose();
      }
    });

    it('dispose is idempotent, frees at once and is accounted; Symbol.dispose disposes', async function () {
      const before = await deviceMemory();
      const a = await DeviceArray.from(new Float64Array(1000));
      const during = await deviceMemory();
      expect(during.arrays).to.equal(before.arrays + 1);
      expect(during.arrayBytes).to.equal(before.arrayBytes + 8000);
      a.dispose();
      a.dispose();
      expect(a.disposed).to.equal(true);
      expect(String(a)).to.contain('disposed');
      const after = await deviceMemory();
      expect(after.arrays).to.equal(before.arrays);
      expect(after.arrayBytes).to.equal(before.arrayBytes);
      const b = await DeviceArray.from(new Float32Array(10));
      b[Symbol.dispose]();
      expect(b.disposed).to.equal(true);
      expect((await deviceMemory()).arrays).to.equal(before.arrays);
    });

    it('use after dispose is ERR_DISPOSED', async function () {
      const a = await DeviceArray.from(new Float32Array(30));
      a.dispose();
      expect((await rejection(a.toHost())).code).to.equal('ERR_DISPOSED');
      expect(thrown(() => a.toHostSync()).code).to.equal('ERR_DISPOSED');
      const [, y, b] = gaussData(10, 10, 2);
      expect((await rejection(gauss().call([a, y, b]))).code).to.equal('ERR_DISPOSED');
    });

    it('garbage collection frees forgotten arrays and pinned results (the backstop)', async function () {
      const script = `
        const { Genred, DeviceArray, deviceMemory } = require(${JSON.stringify(join(ROOT, 'lib', 'index.ts'))});
        const settle = async () => {
          for (let k = 0; k < 10; k++) { global.gc(); await new Promise((r) => setTimeout(r, 20)); }
        };
        (async () => {
          const g = new Genred('x*y', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1, backend: 'cuda' });
          await g.call([Float32Array.of(1), Float32Array.of(1)]);
          await settle();
          const base = await deviceMemory();
          for (let k = 0; k < 5; k++) await DeviceArray.from(new Float32Array(1000));
          let out = await g.call([new Float32Array(400000), Float32Array.of(1)]); // 1.6 MB: pinned
          const during = await deviceMemory();
          out = null;
          await settle();
          const after = await deviceMemory();
          console.log(JSON.stringify({ base, during, after }));
        })();
      `;
      const { stdout } = await execFileAsync(
        process.execPath,
        ['--expose-gc', '-r', 'ts-node/register/transpile-only', '-e', script],
        { cwd: ROOT, env: process.env, timeout: 120_000 },
      );
      const { base, during, after } = JSON.parse(stdout.trim().split('\n').pop() as string);
      expect(during.arrays).to.equal(base.arrays + 5);
      expect(during.pinnedBytes).to.be.at.least(1_600_000);
      expect(after.arrays).to.equal(base.arrays);
      expect(after.arrayBytes).to.equal(base.arrayBytes);
      expect(after.pinnedBytes).to.equal(base.pinnedBytes);
    });

    it('rejects bad input with typed errors', async function () {
      expect((await rejection(DeviceArray.from([1, 2] as unknown as Float32Array))).code).to.equal(
        'ERR_ARG_TYPE',
      );
      expect((await rejection(DeviceArray.from(new Uint8Array(3) as unknown as Float32Array))).code).to.equal(
        'ERR_ARG_TYPE',
      );
      expect((await rejection(DeviceArray.from(new Float32Array(3), { device: -1 }))).code).to.equal(
        'ERR_INVALID_ARGUMENT',
      );
      expect((await rejection(DeviceArray.from(new Float32Array(3), { device: 64 }))).code).to.equal(
        'ERR_NO_GPU',
      );
    });
  });

  describe('Genred with DeviceArrays', function () {
    it('takes DeviceArray arguments, mixed with host arrays', async function () {
      const args = gaussData(40, 70, 3);
      const expected = gaussReference(args);
      const x = await DeviceArray.from(args[0]);
      const y = await DeviceArray.from(args[1]);
      expectBackendResult(await gauss().call([x, y, args[2]]), expected, 'float32', 'device args');
      // 'auto' follows the arrays to the GPU.
      expectBackendResult(
        await gauss({ backend: 'auto' }).call([x, y, args[2]]),
        expected,
        'float32',
        'auto',
      );
      expectBackendResult(gauss().callSync([x, y, args[2]]), expected, 'float32', 'sync');
      x.dispose();
      y.dispose();
    });

    it("returns DeviceArrays with output: 'device' and chains calls on the GPU", async function () {
      const args = gaussData(50, 60, 4);
      const g = gauss();
      const before = await deviceMemory();
      const out = await g.call(args, { output: 'device' });
      expect(out).to.be.instanceOf(DeviceArray);
      const onDevice = out as DeviceArray;
      expect(onDevice.dtype).to.equal('float32');
      expect(onDevice.length).to.equal(50 * 2);
      expectBackendResult(await onDevice.toHost(), gaussReference(args), 'float32', 'device output');
      expect((await deviceMemory()).arrays).to.equal(before.arrays + 1);
      // The output (50 × 2) is the weight b of a reduction over it, as a j-variable, without leaving the GPU.
      const again = new Genred('Exp(-SqDist(x,y))*b', ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'], {
        axis: 1,
        backend: 'cuda',
      });
      const x2 = Float32Array.from(randArray(rng(5), 3 * 20));
      const chained = (await again.call([x2, args[0], onDevice])) as Float32Array;
      const hostB = (await onDevice.toHost()) as Float32Array;
      expectBackendResult(
        chained,
        (await again.call([x2, args[0], hostB])) as Float32Array,
        'float32',
        'chained',
      );
      onDevice.dispose();
      expect((await deviceMemory()).arrays).to.equal(before.arrays);
    });

    it('keeps index, value+index and post-processed results on the GPU', async function () {
      const args = gaussData(30, 45, 6, 'float64');
      const aliases = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];
      const knn = new Genred('SqDist(x,y)', aliases, {
        axis: 1,
        reduction: 'KMin_ArgKMin',
        k: 4,
        backend: 'cuda',
      });
      const pair = await knn.call(args, { output: 'device' });
      const expected = gaussReference(args, 'KMin_ArgKMin', 4) as {
        values: Float64Array;
        indices: Int32Array;
      };
      const { values, indices } = pair as { values: DeviceArray; indices: DeviceArray };
      expect(indices.dtype).to.equal('int32');
      expectBackendResult(
        { values: (await values.toHost()) as Float64Array, indices: (await indices.toHost()) as Int32Array },
        expected,
        'float64',
        'KMin_ArgKMin on device',
      );
      const lse = new Genred('-SqDist(x,y)', aliases, { axis: 1, reduction: 'LogSumExp', backend: 'cuda' });
      const lseOut = (await lse.call(args, { output: 'device' })) as DeviceArray;
      expectBackendResult(await lseOut.toHost(), (await lse.call(args)) as Float64Array, 'float64', 'LSE');
      for (const a of [values, indices, lseOut]) a.dispose();
    });

    it('rejects what cannot run: cpu backend, int32 data, sync device output', async function () {
      const args = gaussData(5, 5, 7);
      const x = await DeviceArray.from(args[0]);
      const cpu = gauss({ backend: 'cpu' });
      expect((await rejection(cpu.call([x, args[1], args[2]]))).code).to.equal('ERR_INVALID_ARGUMENT');
      expect((await rejection(cpu.call(args, { output: 'device' }))).code).to.equal('ERR_INVALID_ARGUMENT');
      expect((await rejection(gauss().call(args, { output: 'gpu' as 'device' }))).code).to.equal(
        'ERR_INVALID_ARGUMENT',
      );
      expect(thrown(() => gauss().callSync(args, { output: 'device' })).code).to.equal(
        'ERR_INVALID_ARGUMENT',
      );
      const ints = await DeviceArray.from(new Int32Array(15));
      expect((await rejection(gauss().call([ints, args[1], args[2]]))).code).to.equal('ERR_ARG_DTYPE');
      const gradError = await rejection(
        gauss().grad([x, args[1], args[2]] as unknown as Float32Array[], {
          wrt: 'y',
          cotangent: new Float32Array(10),
        }),
      );
      expect(gradError.code).to.equal('ERR_ARG_TYPE');
      const wrongLength = await DeviceArray.from(new Float32Array(7));
      expect((await rejection(gauss().call([wrongLength, args[1], args[2]]))).code).to.equal('ERR_ARG_SHAPE');
      for (const a of [x, ints, wrongLength]) a.dispose();
    });

    it('computes gradients on the GPU (LogSumExp, Sum), matching the CPU backend', async function () {
      const args = gaussData(25, 35, 18, 'float64');
      for (const reduction of ['Sum', 'LogSumExp']) {
        const formula = reduction === 'Sum' ? 'Exp(-SqDist(x,y))*b' : '-SqDist(x,y)*Sum(b)';
        const aliases = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];
        const cotangent = randArray(rng(19), 25 * (reduction === 'Sum' ? 2 : 1));
        for (const wrt of ['x', 'y', 'b']) {
          const make = (backend: 'cpu' | 'cuda') =>
            new Genred(formula, aliases, { axis: 1, reduction: reduction as ReductionName, backend });
          const onGpu = await make('cuda').grad(args, { wrt, cotangent });
          const onCpu = make('cpu').gradSync(args, { wrt, cotangent });
          expectBackendResult(onGpu, onCpu, 'float64', `${reduction} d/d${wrt}`);
        }
      }
    });

    it('runs a call queued before dispose() of its argument', async function () {
      const args = gaussData(64, 64, 8);
      const y = await DeviceArray.from(args[1]);
      const pending = gauss().call([args[0], y, args[2]]);
      y.dispose();
      expectBackendResult(await pending, gaussReference(args), 'float32', 'queued before dispose');
    });
  });

  describe('launch schemes', function () {
    it('splits the reduced axis when there are few output rows', async function () {
      const args = gaussData(3, 30_000, 9, 'float64');
      const trace = join(mkdtempSync(join(tmpdir(), 'keops-trace-')), 'trace.txt');
      const out = await withFakeEnv({ KEOPS_FAKE_CUDA_TRACE: trace }, () => gauss().call(args));
      expectBackendResult(out, gaussReference(args), 'float64', 'split');
      if (target.kind === 'emulated') {
        const text = readFileSync(trace, 'utf8');
        expect(text).to.match(/launch keops_split grid=1,\d+,1/);
        expect(text).to.contain('launch keops_split_merge');
      }
      rmSync(trace, { force: true });
    });

    it('raises the shared memory limit for wide reduced-index records (opt-in)', async function () {
      // 200 float64 values per j: 1600 bytes a thread, more than 48 KiB for 32 threads.
      const g = new Genred('(y|y)*(x|y)', ['x = Vi(200)', 'y = Vj(200)'], { axis: 1, backend: 'cuda' });
      const r = rng(10);
      const x = randArray(r, 200 * 40);
      const y = randArray(r, 200 * 300);
      const expected = referenceGenred(
        'Sum',
        g.formulaNode,
        [
          { data: x, cat: 0, dim: 200 },
          { data: y, cat: 1, dim: 200 },
        ],
        { axis: 1 },
      );
      expectBackendResult(await g.call([x, y]), expected, 'float64', 'opt-in shared memory');
    });

    it("respects the kernel's thread limit (register-heavy kernels)", async function () {
      emulatedOnly(this);
      const trace = join(mkdtempSync(join(tmpdir(), 'keops-trace-')), 'trace.txt');
      const g = new Genred('Sin(x*y)*3', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1, backend: 'cuda' });
      const r = rng(11);
      const x = randArray(r, 500);
      const y = randArray(r, 700);
      const out = await withFakeEnv(
        { KEOPS_FAKE_CUDA_TRACE: trace, KEOPS_FAKE_CUDA_KERNEL_MAX_THREADS: '64' },
        () => g.call([x, y]),
      );
      const expected = referenceGenred(
        'Sum',
        g.formulaNode,
        [
          { data: x, cat: 0, dim: 1 },
          { data: y, cat: 1, dim: 1 },
        ],
        { axis: 1 },
      );
      expectBackendResult(out, expected, 'float64', 'thread limit');
      const blocks = [...readFileSync(trace, 'utf8').matchAll(/block=(\d+)/g)].map((m) => Number(m[1]));
      expect(blocks.length).to.be.greaterThan(0);
      expect(Math.max(...blocks)).to.be.at.most(64);
      rmSync(trace, { force: true });
    });
  });

  describe('out of memory', function () {
    it('is ERR_CUDA_OOM for arrays, and everything keeps working once they are freed', async function () {
      const info = await runtimeInfo();
      const total = info.devices[0].totalMemory;
      const chunkElements = Math.min(1 << 29, Math.floor(total / 8 / 4)); // at most 2 GiB of float32
      const chunk = new Float32Array(chunkElements);
      const before = await deviceMemory();
      const held: DeviceArray[] = [];
      let error: KeOpsError | undefined;
      for (let k = 0; k < 24 && error === undefined; k++) {
        try {
          held.push(await DeviceArray.from(chunk));
        } catch (e) {
          error = e as KeOpsError;
        }
      }
      for (const a of held) a.dispose();
      expect(error).to.be.instanceOf(KeOpsError);
      expect((error as KeOpsError).code).to.equal('ERR_CUDA_OOM');
      expect((error as KeOpsError).message).to.match(/out of GPU memory|CUDA_ERROR_OUT_OF_MEMORY/);
      const after = await deviceMemory();
      expect(after.arrays).to.equal(before.arrays);
      const args = gaussData(20, 20, 12);
      expectBackendResult(await gauss().call(args), gaussReference(args), 'float32', 'after OOM');
    });

    it('is ERR_CUDA_OOM inside a call, whose temporaries are freed', async function () {
      emulatedOnly(this);
      const g = new Genred('x*y', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1, backend: 'cuda' });
      const x = new Float32Array(6_000_000); // 24 MB in, 24 MB out: more than 40 MB
      const y = Float32Array.of(1);
      await g.call([Float32Array.of(1), y]); // compile and load first
      const before = await deviceMemory();
      const error = await withFakeEnv({ KEOPS_FAKE_CUDA_MEMORY: String(40 << 20) }, () =>
        rejection(g.call([x, y])),
      );
      expect(error.code).to.equal('ERR_CUDA_OOM');
      expect((await deviceMemory()).allocatedBytes).to.equal(before.allocatedBytes);
      expect(
        Array.from((await g.call([Float32Array.of(2, 3), Float32Array.of(4)])) as Float32Array),
      ).to.deep.equal([8, 12]);
    });
  });

  describe('concurrency and the event loop', function () {
    it('queues many concurrent calls safely, each with its own result', async function () {
      const g = gauss();
      const inputs = Array.from({ length: 40 }, (_, k) => gaussData(30 + k, 50 + 2 * k, 100 + k));
      const outs = await Promise.all(inputs.map((args) => g.call(args)));
      outs.forEach((out, k) => expectBackendResult(out, gaussReference(inputs[k]), 'float32', `call ${k}`));
    });

    it('runs reductions in worker threads, whose teardown is clean', async function () {
      const script = `
        require('ts-node').register({ transpileOnly: true });
        const { parentPort } = require('node:worker_threads');
        const { Genred, DeviceArray } = require(${JSON.stringify(join(ROOT, 'lib', 'index.ts'))});
        (async () => {
          const g = new Genred('x*y', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1, backend: 'cuda' });
          const out = await g.call([Float32Array.of(1, 2, 3), Float32Array.of(1, 1)]);
          const kept = await DeviceArray.from(new Float32Array(1000)); // never disposed: teardown frees it
          parentPort.postMessage(Array.from(out));
        })().catch((e) => parentPort.postMessage(String(e && e.code) + ' ' + e.message));
      `;
      for (let k = 0; k < 2; k++) {
        const worker = new Worker(script, { eval: true, env: process.env });
        const message = await new Promise((resolveMessage, reject) => {
          worker.once('message', resolveMessage);
          worker.once('error', reject);
        });
        expect(message).to.deep.equal([2, 4, 6]);
        expect(await worker.terminate()).to.be.a('number');
      }
      const args = gaussData(10, 10, 13);
      expectBackendResult(await gauss().call(args), gaussReference(args), 'float32', 'after workers');
    });

    it('lets the process exit while results and arrays are alive, or mid-call', async function () {
      for (const ending of ['', 'process.exit(0);']) {
        const script = `
          const { Genred, DeviceArray } = require(${JSON.stringify(join(ROOT, 'lib', 'index.ts'))});
          const g = new Genred('Exp(x*y)', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1, backend: 'cuda' });
          (async () => {
            await DeviceArray.from(new Float32Array(100));
            await g.call([new Float32Array(300), new Float32Array(400)], { output: 'device' });
            g.call([new Float32Array(3000), new Float32Array(4000)]);
            ${ending}
          })();
        `;
        const { stderr } = await execFileAsync(
          process.execPath,
          ['-r', 'ts-node/register/transpile-only', '-e', script],
          { cwd: ROOT, env: process.env, timeout: 120_000 },
        );
        expect(stderr).to.equal('');
      }
    });
  });

  describe('errors', function () {
    it('arrays on different GPUs are ERR_DEVICE_MISMATCH', async function () {
      emulatedOnly(this);
      const args = gaussData(4, 4, 14);
      const x0 = await DeviceArray.from(args[0], { device: 0 });
      const y1 = await DeviceArray.from(args[1], { device: 1 });
      expect((await rejection(gauss().call([x0, y1, args[2]]))).code).to.equal('ERR_DEVICE_MISMATCH');
      expect((await rejection(gauss().call([x0, args[1], args[2]], { device: 1 }))).code).to.equal(
        'ERR_DEVICE_MISMATCH',
      );
      x0.dispose();
      y1.dispose();
    });
    it('a failed launch is ERR_CUDA naming the CUDA error; that GPU then says it is unusable', async function () {
      emulatedOnly(this);
      const g = new Genred('x+y', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1, backend: 'cuda' });
      const args = [Float32Array.of(1, 2), Float32Array.of(3)];
      await g.call(args, { device: 1 }); // compile and load on device 1
      const error = await withFakeEnv({ KEOPS_FAKE_CUDA_FAIL_LAUNCH: '1' }, () =>
        rejection(g.call(args, { device: 1 })),
      );
      expect(error.code).to.equal('ERR_CUDA');
      expect(error.message).to.contain('CUDA_ERROR_LAUNCH_FAILED');
      const later = await rejection(g.call(args, { device: 1 }));
      expect(later.code).to.equal('ERR_CUDA');
      expect(later.message).to.contain('unusable');
      // Device 0 is unaffected.
      expect(Array.from((await g.call(args)) as Float32Array)).to.deep.equal([4, 5]);
    });
  });

  describe('kernel cache', function () {
    it('compiles once, stores the image on disk, and reuses the loaded module', async function () {
      const g1 = new Genred('Exp(-SqDist(x,y))*Sin(b)', ['x = Vi(2)', 'y = Vj(2)', 'b = Vj(1)'], {
        axis: 1,
        backend: 'cuda',
      });
      const args = [randArray(rng(15), 20), randArray(rng(16), 30), randArray(rng(17), 15)];
      await g1.call(args);
      const info = g1.kernelInfo('float64', 'cuda');
      expect(info?.backend).to.equal('cuda');
      expect(['compiled', 'disk']).to.include(info?.origin);
      expect(g1.kernelInfo('float32', 'cuda')).to.equal(undefined);
      const entry = join(process.env.KEOPS_CACHE_DIR as string, `${info?.key}.cubin`);
      const ptx = join(process.env.KEOPS_CACHE_DIR as string, `${info?.key}.ptx`);
      let found = false;
      for (const path of [entry, ptx]) {
        try {
          readFileSync(path);
          found = true;
        } catch {
          // the other format
        }
      }
      expect(found).to.equal(true);
      const g2 = new Genred('Exp(-SqDist(x,y))*Sin(b)', ['x = Vi(2)', 'y = Vj(2)', 'b = Vj(1)'], {
        axis: 1,
        backend: 'cuda',
      });
      g2.callSync(args);
      expect(g2.kernelInfo('float64', 'cuda')?.origin).to.equal('memory');
      expect(g2.kernelInfo('float64', 'cuda')?.key).to.equal(info?.key);
    });
  });
});

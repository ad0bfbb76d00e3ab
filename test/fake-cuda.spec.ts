/**
 * The CUDA test doubles of test/fake-cuda/ (a fake libcuda and NVRTC 13.0, built by fake-cuda.ts), seen
 * through the addon: the probe finds the emulated device and NVRTC 13.0, NVRTC "compiles" a generated kernel to a
 * KEOPSEMU image, for sm_90 and through the addon's retry when the architecture is unknown, and a rejected source
 * carries the compiler's log. The fake driver is then driven through its C API by driver_selftest.cc: its error
 * paths, and a launch of the compiled kernel checked against the reference. Needs g++ (skipped otherwise).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { cudaBindings, type NativeNvrtcResult } from '../lib/backend/cuda/bindings';
import type { ArgPosition } from '../lib/codegen/formula';
import { type CudaKernels, generateCudaKernels } from '../lib/codegen/cuda';
import { parseReductionWithVariables } from '../lib/formula/index';
import { referenceReduction } from '../lib/reference';
import { buildFakeCuda, type FakeCuda, fakeCudaEnv } from './fake-cuda';
import { expectClose, randArray, rng, withEnv } from './util';

const hasCompiler = spawnSync('g++', ['--version']).status === 0;

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];
const REDUCTION = 'Sum_Reduction(Exp(-SqDist(x,y))*b,0)';
const M = 37;
const N = 53;
const BLOCK = 8;

/** The image header the fake NVRTC writes: magic, then the size of the shared object that follows. */
function expectEmulatedImage(image: Buffer): void {
  expect(image.subarray(0, 8).toString('latin1')).to.equal('KEOPSEMU');
  expect(image.readBigUInt64LE(8)).to.equal(BigInt(image.length - 16));
  expect([...image.subarray(16, 20)]).to.deep.equal([0x7f, 0x45, 0x4c, 0x46]); // the shared object's ELF header
}

describe('fake CUDA driver and NVRTC (test doubles)', function () {
  this.timeout(60_000);
  let fake: FakeCuda;
  let kernels: CudaKernels;
  let reduction: ReturnType<typeof parseReductionWithVariables>;
  let positions: ArgPosition[];
  let compiled: NativeNvrtcResult;

  const compile = (arch: string, source = kernels.source, name = 'keops_kernel.cu') =>
    cudaBindings().nvrtcCompileSync([fake.nvrtcPath], { source, name, arch, options: ['--std=c++17'] });

  before(function () {
    if (!hasCompiler) {
      console.log('      (skipped: no g++ to build the fake CUDA libraries)');
      this.skip();
    }
    fake = buildFakeCuda();
    reduction = parseReductionWithVariables(REDUCTION, ALIASES);
    positions = ALIASES.map(() => ({ dim: 1, cat: 2 }));
    for (const v of reduction.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
    kernels = generateCudaKernels(reduction.reduction, {
      dtype: 'float64',
      sumScheme: 'block_sum',
      positions,
    });
  });

  it('gives the environment that points the addon at the fakes', () => {
    expect(fakeCudaEnv()).to.deep.equal({
      KEOPS_CUDA_DRIVER_LIBRARY: fake.driverPath,
      KEOPS_NVRTC_LIBRARY: fake.nvrtcPath,
    });
  });

  it('is probed as one emulated compute capability 9.0 device and NVRTC 13.0', () => {
    const probe = cudaBindings().cudaProbeSync(fake.driverPath, [fake.nvrtcPath]);
    expect(probe.driver).to.deep.include({ loaded: true, path: fake.driverPath, version: 13000 });
    expect(probe.driver.initError).to.equal(undefined);
    expect(probe.driver.devices).to.deep.equal([
      {
        name: 'keops-node emulated GPU',
        major: 9,
        minor: 0,
        totalMemory: 256 * 1024 * 1024,
        multiprocessors: 4,
        maxThreadsPerBlock: 1024,
        sharedMemoryPerBlock: 49152,
        sharedMemoryPerBlockOptin: 232448,
        maxGridDimY: 65535,
      },
    ]);
    expect(probe.nvrtc).to.deep.equal({
      loaded: true,
      path: fake.nvrtcPath,
      builtinsPath: join(fake.folder, 'libnvrtc-builtins.so.13.0'),
      major: 13,
      minor: 0,
      supportedArchs: [75, 80, 86, 87, 89, 90, 100, 120],
      cubin: true,
    });
  });

  it('reads its environment at each call: no device, memory size', () => {
    withEnv({ KEOPS_FAKE_CUDA_DEVICES: '0' }, () => {
      const probe = cudaBindings().cudaProbeSync(fake.driverPath, [fake.nvrtcPath]);
      expect(probe.driver.initError).to.equal(
        'cuInit failed: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected',
      );
      expect(probe.driver.devices).to.deep.equal([]);
    });
    withEnv({ KEOPS_FAKE_CUDA_DEVICES: '2', KEOPS_FAKE_CUDA_MEMORY: String(1 << 20) }, () => {
      const probe = cudaBindings().cudaProbeSync(fake.driverPath, [fake.nvrtcPath]);
      expect(probe.driver.devices.map((d) => d.totalMemory)).to.deep.equal([1 << 20, 1 << 20]);
    });
  });

  it('compiles a generated kernel to an sm_90 "cubin": a KEOPSEMU image', () => {
    compiled = compile('sm_90');
    expect(compiled).to.deep.include({ output: 'cubin', arch: 'sm_90', log: '', nvrtcVersion: '13.0' });
    expect(compiled.rejectedArch).to.equal(undefined);
    expectEmulatedImage(compiled.image);
  });

  it('rejects an unknown architecture like NVRTC, so that the addon retries for compute_120 (PTX)', () => {
    const retried = compile('sm_200');
    expect(retried).to.deep.include({ output: 'ptx', arch: 'compute_120', rejectedArch: 'sm_200' });
    expect(retried.log).to.contain(
      'NVRTC rejected --gpu-architecture=sm_200 (nvrtc: error: invalid value for --gpu-architecture (-arch))',
    );
    expectEmulatedImage(retried.image);
  });

  it("turns a rejected source into ERR_COMPILE with the compiler's log, naming the program", () => {
    let error: unknown;
    try {
      compile('sm_90', 'extern "C" __global__ void k() { undeclared_name(); }', 'broken.cu');
    } catch (e) {
      error = e;
    }
    expect(error).to.have.property('code', 'ERR_COMPILE');
    expect((error as { log: string }).log)
      .to.contain('broken.cu:1:')
      .and.to.contain('undeclared_name');
  });

  describe('driver, through its C API (driver_selftest.cc)', () => {
    let dir: string;
    let selftest: string;

    before(function () {
      if (compiled === undefined) this.skip(); // the compilation test failed
      dir = mkdtempSync(join(tmpdir(), 'keops-fake-cuda-test-'));
      selftest = join(dir, 'driver_selftest');
      execFileSync('g++', [
        '-std=c++17',
        '-O1',
        '-pthread',
        '-I',
        join(__dirname, '..', 'native'),
        '-o',
        selftest,
        join(__dirname, 'fake-cuda', 'driver_selftest.cc'),
        '-ldl',
      ]);
    });

    after(() => {
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    it('checks contexts, handles, ranges and limits, runs the kernel right and traces what it did', () => {
      const r = rng(3);
      const data = positions.map((p) => randArray(r, p.dim * (p.cat === 0 ? M : N)));
      const header = [
        M,
        N,
        BLOCK,
        BLOCK * kernels.sharedBytesPerThread,
        kernels.argSlots,
        kernels.layout.dimVal,
      ];
      const counts = Array.from({ length: kernels.argSlots }, (_, k) => data[k]?.length ?? 0);
      const input = join(dir, 'input.bin');
      const output = join(dir, 'output.bin');
      const trace = join(dir, 'trace.txt');
      const image = join(dir, 'image.bin');
      writeFileSync(image, compiled.image);
      writeFileSync(
        input,
        Buffer.concat([
          Buffer.from(BigInt64Array.from([...header, ...counts].map((x) => BigInt(x))).buffer),
          ...data.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)),
        ]),
      );
      const env: NodeJS.ProcessEnv = { ...process.env, KEOPS_FAKE_CUDA_TRACE: trace };
      for (const name of ['DEVICES', 'MEMORY', 'KERNEL_MAX_THREADS', 'FAIL_LAUNCH']) {
        delete env[`KEOPS_FAKE_CUDA_${name}`];
      }
      const run = spawnSync(selftest, [fake.driverPath, image, kernels.entries.oneD, input, output], {
        env,
        encoding: 'utf8',
      });
      expect(run.stderr).to.equal('');
      expect(run.status).to.equal(0);

      const expected = referenceReduction(
        reduction.reduction,
        positions.map((p, pos) => ({ data: data[pos], cat: p.cat as 0 | 1 | 2, dim: p.dim })),
      );
      const raw = readFileSync(output);
      const got = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      expectClose(got, expected.val, 1e-12, 1e-14, 'emulated launch');

      const lines = readFileSync(trace, 'utf8').trim().split('\n');
      const count = (prefix: string) => lines.filter((l) => l.startsWith(prefix)).length;
      expect(lines).to.include(
        `launch ${kernels.entries.oneD} grid=${Math.ceil(M / BLOCK)},1,1 block=${BLOCK} shared=${header[3]}`,
      );
      expect(count('launch ')).to.equal(1); // refused and failed launches are not traced
      expect(count('alloc ')).to.equal(kernels.argSlots + 1);
      expect(count('free ')).to.equal(kernels.argSlots);
      expect(count('resetfree ')).to.equal(1); // the output, left to the context reset
      expect(lines).to.include.members([
        'hostalloc 64',
        'hostfree 64',
        'hostalloc 100',
        'resethostfree 100',
        `moduleload ${compiled.image.length}`,
        'moduleunload',
        'ctxretain 0 1',
        'ctxrelease 0 0',
      ]);
    });
  });
});

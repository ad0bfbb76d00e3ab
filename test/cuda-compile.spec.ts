/**
 * The CUDA backend without a GPU: the loader's reasons (no libcuda here, a missing file, a real driver library
 * without a device), runtimeInfo's interpretation of probes, launch geometry, and NVRTC compilation of the
 * generated kernels — every operation of ALL_OPS and every reduction of REDUCTIONS, float32 and float64, every
 * sum scheme, both tags — to PTX, and once to an sm_90 cubin. Many reductions share one translation unit (one
 * NVRTC call each) and the two dtypes compile in parallel: about a minute on 2 cores.
 *
 * NVRTC comes from KEOPS_NVRTC_LIBRARY, or from .nvrtc/ (where .ci/run unpacks the pip wheel); the driver library
 * from KEOPS_TEST_LIBCUDA (e.g. an unpacked libcuda1 package, to test "driver present, no GPU"). Without them those
 * tests are skipped with the reason printed. The kernels' logic is tested by running them on the CPU: cuda-emulated.spec.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { archOfDevice, compileCuda, compileCudaSync } from '../lib/backend/cuda/compile';
import { nvrtcCandidates } from '../lib/backend/cuda/bindings';
import { buildRangesLookup, chooseBlockSize, planCudaLaunch } from '../lib/backend/cuda/launch';
import { noGpuError } from '../lib/backend/cuda/device';
import {
  cachedRuntimeInfo,
  interpretProbe,
  runtimeInfo,
  type RuntimeInfo,
} from '../lib/backend/cuda/runtime';
import { packageRoot } from '../lib/backend/package-root';
import { cudaPrelude, type CudaDtype, type CudaSumScheme, generateCudaKernels } from '../lib/codegen/cuda';
import { hasKahanScheme } from '../lib/codegen/reduction-hooks';
import { KeOpsError } from '../lib/errors';
import { Genred } from '../lib/genred';
import { parseReductionWithVariables } from '../lib/formula/index';
import { topoOrder } from '../lib/formula/node';
import type { Reduction } from '../lib/formula/reduction';
import { REDUCTIONS } from '../lib/formula/reductions';
import { ALL_OPS } from '../lib/formula/registry';
import type { ArgPosition } from '../lib/codegen/formula';
import { localNvrtc } from './cuda-target';
import { ALIASES, OP_INSTANCES } from './op-instances';
import { withEnvAsync } from './util';

/** One instance of every reduction, as `(formula text, tag)` → reduction text. */
function reductionInstance(name: string, tag: 0 | 1): string {
  const def = REDUCTIONS.get(name);
  if (def === undefined) throw new Error(`no reduction ${name}`);
  switch (def.syntax) {
    case 'tag':
      return name.startsWith('Max_SumShiftExp')
        ? `${name}(-SqDist(x,y),${tag})`
        : `${name}(Exp(-SqDist(x,y))*c,${tag})`;
    case 'k_tag':
      return `${name}(SqDist(x,y)*c,3,${tag})`;
    case 'tag_formula2':
      return `${name}(-SqDist(x,y),${tag},c)`;
  }
}

function parseWithPositions(text: string): { reduction: Reduction; positions: ArgPosition[] } {
  const parsed = parseReductionWithVariables(text, ALIASES);
  // Every alias position exists in the kernel's argument list; unused ones are 1-dim parameters nobody reads.
  const positions: ArgPosition[] = ALIASES.map(() => ({ dim: 1, cat: 2 }));
  for (const v of parsed.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
  return { reduction: parsed.reduction, positions };
}

interface Unit {
  readonly label: string;
  readonly prefix: string;
}

/** One translation unit holding the kernels of many reductions; `units[n].prefix` names kernel n's entries. */
function translationUnit(
  items: readonly { label: string; text: string; sumScheme: CudaSumScheme; dtypeAcc?: CudaDtype }[],
  dtype: CudaDtype,
): { source: string; units: Unit[] } {
  const units: Unit[] = [];
  let body = '';
  items.forEach((item, n) => {
    const { reduction, positions } = parseWithPositions(item.text);
    const prefix = `k${n}`;
    const kernels = generateCudaKernels(reduction, {
      dtype,
      dtypeAcc: item.dtypeAcc,
      sumScheme: item.sumScheme,
      positions,
      symbolPrefix: prefix,
    });
    body += kernels.body;
    units.push({ label: item.label, prefix });
  });
  return { source: cudaPrelude() + body, units };
}

/** Every unit's four entry points are in the PTX. */
function expectEntries(ptx: string, units: readonly Unit[]): void {
  const missing = units.flatMap((u) =>
    ['1d', 'split', 'split_merge', 'ranges']
      .map((kind) => `${u.prefix}_${kind}`)
      .filter((entry) => !new RegExp(`\\.entry ${entry}\\(`).test(ptx))
      .map((entry) => `${entry} (${u.label})`),
  );
  expect(missing, 'entry points missing from the PTX').to.deep.equal([]);
}

const DTYPES: readonly CudaDtype[] = ['float32', 'float64'];
/** The reductions with a compensated fold (hasKahanScheme; the hooks throw for the others). */
const KAHAN_REDUCTIONS: ReadonlySet<string> = new Set(
  [...REDUCTIONS.keys()].filter((name) =>
    hasKahanScheme(parseWithPositions(reductionInstance(name, 0)).reduction),
  ),
);

/** A CUDA driver library to load on this GPU-less machine, when one is provided (KEOPS_TEST_LIBCUDA). */
function localLibcuda(): string | undefined {
  return process.env.KEOPS_TEST_LIBCUDA || undefined;
}

describe('CUDA backend without a GPU', function () {
  this.timeout(300_000);

  describe('nvrtcCandidates', () => {
    it('uses KEOPS_NVRTC_LIBRARY alone when it is set', () => {
      expect(nvrtcCandidates({ KEOPS_NVRTC_LIBRARY: '/opt/nvrtc/libnvrtc.so.12' })).to.deep.equal([
        '/opt/nvrtc/libnvrtc.so.12',
      ]);
    });

    it('tries the versioned sonames newest first, then the toolkit folders', () => {
      const list = nvrtcCandidates({ CUDA_PATH: '/opt/cuda', CUDA_HOME: '/opt/cuda' });
      expect(list.slice(0, 4)).to.deep.equal([
        'libnvrtc.so.13',
        'libnvrtc.so.12',
        'libnvrtc.so.11.2',
        'libnvrtc.so',
      ]);
      expect(list).to.include('/opt/cuda/lib64/libnvrtc.so.13');
      expect(list).to.include('/usr/local/cuda/lib64/libnvrtc.so.12');
      expect(list.filter((p) => p === '/opt/cuda/lib64/libnvrtc.so.13')).to.have.length(1);
    });
  });

  describe('runtimeInfo', () => {
    // First: once a test has loaded a driver library by path, dlopen("libcuda.so.1") finds it by its soname.
    it("says 'cpu' with the loader's reason when libcuda.so.1 is missing", async function () {
      const info = await runtimeInfo();
      if (info.driver !== undefined) {
        console.log(`      (skipped: a CUDA driver is installed here: ${JSON.stringify(info)})`);
        this.skip();
      }
      expect(info.backend).to.equal('cpu');
      expect(info.reason).to.be.a('string').that.contains('libcuda.so.1');
      expect(info.reason).to.contain('cannot open shared object file');
      expect(info.devices).to.deep.equal([]);
    });

    it("reports cuInit's error with a real driver library but no GPU", async function () {
      const driver = localLibcuda();
      if (driver === undefined) {
        console.log('      (skipped: no driver library: set KEOPS_TEST_LIBCUDA to a libcuda.so.1 to run it)');
        this.skip();
      }
      const info = await withEnvAsync({ KEOPS_CUDA_DRIVER_LIBRARY: driver }, runtimeInfo);
      if (info.devices.length > 0) this.skip();
      expect(info.backend).to.equal('cpu');
      expect(info.driver?.version).to.be.a('number').above(0);
      expect(info.reason).to.contain('cuInit failed: CUDA_ERROR_NO_DEVICE');
    });

    it('reports the dlerror text of a KEOPS_CUDA_DRIVER_LIBRARY that does not exist', async () => {
      const missing = '/nonexistent/keops-test/libcuda.so.1';
      const info = await withEnvAsync({ KEOPS_CUDA_DRIVER_LIBRARY: missing }, runtimeInfo);
      expect(info.backend).to.equal('cpu');
      expect(info.reason).to.contain(`${missing}: cannot open shared object file`);
    });

    it('reports the dlerror text of a KEOPS_NVRTC_LIBRARY that does not exist', async () => {
      const missing = '/nonexistent/keops-test/libnvrtc.so.13';
      const info = await withEnvAsync({ KEOPS_NVRTC_LIBRARY: missing }, runtimeInfo);
      expect(info.backend).to.equal('cpu');
      expect(info.nvrtc).to.equal(undefined);
      expect(info.reason).to.contain(`${missing}: cannot open shared object file: No such file or directory`);
      expect(info.reason).to.contain('KEOPS_NVRTC_LIBRARY');
    });

    it('compileCuda rejects with ERR_NO_NVRTC and the same text', async () => {
      const missing = '/nonexistent/keops-test/libnvrtc.so.13';
      for (const compile of [
        compileCuda,
        async (s: string, o: Parameters<typeof compileCuda>[1]) => compileCudaSync(s, o),
      ]) {
        const error = await withEnvAsync({ KEOPS_NVRTC_LIBRARY: missing }, () =>
          compile('extern "C" __global__ void k() {}', { fastMath: false, output: 'ptx' }).then(
            () => undefined,
            (e: unknown) => e,
          ),
        );
        expect(error).to.be.instanceOf(KeOpsError);
        expect((error as KeOpsError).code).to.equal('ERR_NO_NVRTC');
        expect((error as KeOpsError).message).to.contain(`${missing}: cannot open shared object file`);
      }
    });
  });

  describe('noGpuError', () => {
    it("is ERR_NO_GPU carrying runtimeInfo's reason", async function () {
      const info = await runtimeInfo();
      if (info.backend === 'cuda') this.skip();
      const error = noGpuError(info);
      expect(error.code).to.equal('ERR_NO_GPU');
      expect(error.message).to.contain(info.reason as string);
    });

    it("is what Genred throws for backend: 'cuda'", async function () {
      const info = await runtimeInfo();
      if (info.backend === 'cuda') this.skip();
      const g = new Genred('SqDist(x,y)', ['x = Vi(3)', 'y = Vj(3)'], { backend: 'cuda' });
      const x = new Float64Array(6);
      const error = await g.call([x, x]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(KeOpsError).with.property('code', 'ERR_NO_GPU');
      expect((error as KeOpsError).message).to.contain(info.reason as string);
      expect(() => g.callSync([x, x]))
        .to.throw(KeOpsError)
        .with.property('code', 'ERR_NO_GPU');
    });
  });

  describe('interpretProbe', () => {
    const device = {
      name: 'NVIDIA H100 80GB HBM3',
      major: 9,
      minor: 0,
      totalMemory: 85e9,
      multiprocessors: 132,
      maxThreadsPerBlock: 1024,
      sharedMemoryPerBlock: 49152,
      sharedMemoryPerBlockOptin: 232448,
      maxGridDimY: 65535,
    };
    const nvrtc = { loaded: true, path: '/x/libnvrtc.so.13', major: 13, minor: 0, supportedArchs: [75, 90] };
    const probe = (driver: object, nvrtcPart: object = nvrtc) =>
      interpretProbe({
        driver: { loaded: true, devices: [], ...driver },
        nvrtc: { loaded: false, ...nvrtcPart },
      });

    it("picks 'cuda' when driver, device and NVRTC fit together", () => {
      const info: RuntimeInfo = probe({ version: 13000, devices: [device] });
      expect(info.backend).to.equal('cuda');
      expect(info.reason).to.equal(undefined);
      expect(info.devices[0].computeCapability).to.deep.equal([9, 0]);
      expect(info.nvrtc?.version).to.equal('13.0');
      expect(info.driver?.version).to.equal(13000);
    });

    it('explains a driver older than NVRTC', () => {
      const info = probe({ version: 12020, devices: [device] });
      expect(info.backend).to.equal('cpu');
      expect(info.reason).to.match(/CUDA 12\.2\) is older than NVRTC 13\.0/);
    });

    it('explains a driver without devices', () => {
      const info = probe({
        version: 12020,
        initError: 'cuInit failed: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected',
      });
      expect(info.backend).to.equal('cpu');
      expect(info.reason).to.contain('CUDA_ERROR_NO_DEVICE');
      expect(probe({ version: 13000 }).reason).to.contain('no device');
    });

    it('leaves NVRTC out of the reason when it was not probed (no usable driver: the quick path)', async () => {
      const info = interpretProbe(
        {
          driver: { loaded: false, error: 'libcuda.so.1: cannot open shared object file', devices: [] },
          nvrtc: { loaded: false, error: 'no NVRTC library to try' },
        },
        false,
      );
      expect(info.backend).to.equal('cpu');
      expect(info.reason).to.contain('libcuda.so.1').and.not.to.contain('NVRTC');
      // What `auto` uses without a driver is the same decision, and does not load NVRTC.
      const cached = await cachedRuntimeInfo();
      if (cached.backend === 'cpu' && cached.devices.length === 0) {
        expect((await runtimeInfo()).backend).to.equal('cpu');
      }
    });

    it('lists every reason when several things are missing', () => {
      const info = interpretProbe({
        driver: { loaded: false, error: 'libcuda.so.1: cannot open shared object file', devices: [] },
        nvrtc: { loaded: false, error: 'libnvrtc.so.13: cannot open shared object file' },
      });
      expect(info.reason).to.contain('libcuda.so.1').and.to.contain('libnvrtc.so.13');
      expect(info).to.not.have.property('driver');
      expect(info).to.not.have.property('nvrtc');
    });
  });

  describe('generated CUDA source', () => {
    it('has an instance of every operation in ALL_OPS, and the kernel contains it', () => {
      expect(ALL_OPS.map((op) => op.name).filter((name) => !(name in OP_INSTANCES))).to.deep.equal([]);
      for (const op of ALL_OPS) {
        const { reduction } = parseWithPositions(`Sum_Reduction(${OP_INSTANCES[op.name]},0)`);
        const names = new Set(topoOrder(reduction.fout).map((n) => n.op.name));
        expect(names.has(op.name), `${OP_INSTANCES[op.name]} lost ${op.name}: ${reduction.fout}`).to.equal(
          true,
        );
      }
    });

    it('compileCuda validates its options before loading NVRTC', () => {
      const src = 'extern "C" __global__ void k() {}';
      for (const bad of [
        { fastMath: false, output: 'cubin' },
        { fastMath: false, output: 'elf' },
        { fastMath: 'yes', output: 'ptx' },
        { arch: 'hopper', fastMath: false, output: 'ptx' },
      ]) {
        expect(() => compileCudaSync(src, bad as never))
          .to.throw(KeOpsError)
          .with.property('code', 'ERR_INVALID_ARGUMENT');
      }
    });
  });

  describe('native sources', () => {
    it('need no CUDA header and link no CUDA library (dlopen only)', () => {
      const root = packageRoot();
      const sources = readdirSync(join(root, 'native')).filter((f) => /\.(cc|h)$/.test(f));
      for (const file of sources) {
        const text = readFileSync(join(root, 'native', file), 'utf8');
        expect(text, file).to.not.match(/#include\s*[<"](cuda|cuda_runtime|nvrtc)\.h[>"]/);
      }
      expect(readFileSync(join(root, 'binding.gyp'), 'utf8')).to.not.match(/-l(cuda|nvrtc)\b/);
    });

    it('maps compute capabilities to architectures', () => {
      expect(archOfDevice([9, 0])).to.equal('sm_90');
      expect(archOfDevice([12, 1])).to.equal('sm_121');
      expect(() => archOfDevice([9, 10])).to.throw(KeOpsError);
    });
  });

  describe('NVRTC compilation of the generated kernels', () => {
    let nvrtcPath: string | undefined;
    let restore: string | undefined;

    before(async function () {
      nvrtcPath = localNvrtc();
      if (nvrtcPath === undefined) {
        console.log(
          '      (skipped: no NVRTC: set KEOPS_NVRTC_LIBRARY or let .ci/run unpack it into .nvrtc/)',
        );
        this.skip();
      }
      restore = process.env.KEOPS_NVRTC_LIBRARY;
      process.env.KEOPS_NVRTC_LIBRARY = nvrtcPath;
      const info = await runtimeInfo();
      if (info.nvrtc === undefined) {
        console.log(`      (skipped: NVRTC cannot be loaded: ${info.reason})`);
        this.skip();
      }
      console.log(`      NVRTC ${info.nvrtc.version} from ${info.nvrtc.path}`);
    });

    after(() => {
      if (restore === undefined) delete process.env.KEOPS_NVRTC_LIBRARY;
      else process.env.KEOPS_NVRTC_LIBRARY = restore;
    });

    it('compiles every operation to PTX, float32 and float64 (one translation unit per dtype)', async () => {
      const items = ALL_OPS.map((op) => ({
        label: op.name,
        text: `Sum_Reduction(${OP_INSTANCES[op.name]},0)`,
        sumScheme: 'block_sum' as const,
      }));
      const results = await Promise.all(
        DTYPES.map(async (dtype) => {
          const { source, units } = translationUnit(items, dtype);
          const compiled = await compileCuda(source, {
            arch: 'compute_90',
            fastMath: dtype === 'float32',
            output: 'ptx',
            name: `all_ops_${dtype}.cu`,
          });
          return { dtype, units, compiled };
        }),
      );
      for (const { dtype, units, compiled } of results) {
        expect(compiled.output).to.equal('ptx');
        expect(compiled.log, `${dtype}: NVRTC warnings`).to.not.match(/warning/);
        const ptx = compiled.image.toString('utf8');
        expect(ptx).to.contain('.target sm_90');
        expectEntries(ptx, units);
        console.log(
          `      ${dtype}: ${units.length} operations, ${(compiled.compileMs / 1000).toFixed(1)} s`,
        );
      }
    });

    it('compiles every reduction, both tags, every applicable sum scheme and accumulator, float32 and float64', async () => {
      const results = await Promise.all(
        DTYPES.map(async (dtype) => {
          const items = [...REDUCTIONS.values()].flatMap((def) =>
            ([0, 1] as const).flatMap((tag) => {
              const text = reductionInstance(def.name, tag);
              const schemes: CudaSumScheme[] = def.sumType
                ? [
                    'direct_sum',
                    'block_sum',
                    ...(KAHAN_REDUCTIONS.has(def.name) ? (['kahan_scheme'] as const) : []),
                  ]
                : ['direct_sum'];
              const accs: CudaDtype[] = def.sumType && dtype === 'float32' ? ['float32', 'float64'] : [dtype];
              return schemes.flatMap((sumScheme) =>
                accs.map((dtypeAcc) => ({
                  label: `${text} ${sumScheme} acc ${dtypeAcc}`,
                  text,
                  sumScheme,
                  dtypeAcc,
                })),
              );
            }),
          );
          const { source, units } = translationUnit(items, dtype);
          const compiled = await compileCuda(source, {
            arch: 'sm_90',
            fastMath: dtype === 'float32',
            output: 'ptx',
          });
          return { dtype, units, compiled };
        }),
      );
      for (const { dtype, units, compiled } of results) {
        expect(compiled.log, `${dtype}: NVRTC warnings`).to.not.match(/warning/);
        expectEntries(compiled.image.toString('utf8'), units);
        console.log(
          `      ${dtype}: ${units.length} reduction kernels, ${(compiled.compileMs / 1000).toFixed(1)} s`,
        );
      }
      expect(new Set(results[0].units.map((u) => u.label.split('(')[0]))).to.have.property(
        'size',
        REDUCTIONS.size,
      );
    });

    it('compiles to an sm_90 cubin (ELF), synchronously too', () => {
      const { reduction, positions } = parseWithPositions('Sum_Reduction(Exp(-SqDist(x,y))*c,0)');
      for (const dtype of DTYPES) {
        const kernels = generateCudaKernels(reduction, { dtype, sumScheme: 'block_sum', positions });
        const compiled = compileCudaSync(kernels.source, {
          arch: 'sm_90',
          fastMath: kernels.fastMath,
          output: 'cubin',
        });
        expect(compiled.output).to.equal('cubin');
        expect(compiled.arch).to.equal('sm_90');
        expect([...compiled.image.subarray(0, 4)]).to.deep.equal([0x7f, 0x45, 0x4c, 0x46]);
        for (const entry of Object.values(kernels.entries))
          expect(compiled.image.includes(entry)).to.equal(true);
      }
    });

    it('retries for the newest architecture NVRTC knows when it rejects the requested one', async () => {
      const compiled = await compileCuda('extern "C" __global__ void k(float* x) { x[0] = expf(x[1]); }', {
        arch: 'sm_999',
        fastMath: true,
        output: 'cubin',
      });
      expect(compiled.rejectedArch).to.equal('sm_999');
      expect(compiled.log).to.contain('NVRTC rejected --gpu-architecture=sm_999');
      expect(compiled.output).to.equal('ptx');
      expect(compiled.arch).to.match(/^compute_\d+$/);
      expect(compiled.image.toString()).to.contain('.entry k(');
    });

    it('turns a rejected source into ERR_COMPILE carrying the NVRTC log', async () => {
      const error = await compileCuda('extern "C" __global__ void k() { undeclared_name(); }', {
        fastMath: false,
        output: 'ptx',
        name: 'broken.cu',
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).to.be.instanceOf(KeOpsError);
      expect((error as KeOpsError).code).to.equal('ERR_COMPILE');
      expect((error as KeOpsError).message)
        .to.contain('broken.cu')
        .and.to.contain('undeclared_name');
    });
  });
});

describe('CUDA launch geometry', () => {
  const h100 = {
    multiprocessors: 132,
    maxThreadsPerBlock: 1024,
    sharedMemoryPerBlock: 49152,
    sharedMemoryPerBlockOptin: 232448,
  };
  const gaussian = {
    sharedBytesPerThread: 5 * 4,
    partialSlots: { val: 2, idx: 1 },
    dtypeAcc: 'float32' as const,
  };

  it("uses KeOps' block size, shrinking it in whole warps for wide inner records", () => {
    expect(chooseBlockSize(gaussian, h100)).to.deep.equal({
      blockSize: 192,
      sharedBytes: 3840,
      sharedOptIn: false,
    });
    const wide = { ...gaussian, sharedBytesPerThread: 1000 * 4 };
    expect(chooseBlockSize(wide, h100)).to.deep.equal({
      blockSize: 32,
      sharedBytes: 128000,
      sharedOptIn: true,
    });
    expect(chooseBlockSize({ ...gaussian, maxThreadsPerBlock: 128 }, h100).blockSize).to.equal(128);
    const noInner = { ...gaussian, sharedBytesPerThread: 0 };
    expect(chooseBlockSize(noInner, h100).blockSize).to.equal(192);
    const huge = { ...gaussian, sharedBytesPerThread: 300_000 };
    expect(() => chooseBlockSize(huge, h100))
      .to.throw(KeOpsError)
      .with.property('code', 'ERR_FORMULA_TOO_LARGE');
  });

  it('gives tensor-core kernels whole warps: as many as fit with a per-block tile, up to 256 threads', () => {
    // D = 128 staged in shared memory: 688 bytes per thread, a tile of 32 records of 528 + 4 bytes per block.
    const tiled = { ...gaussian, sharedBytesPerThread: 688, sharedBytesPerBlock: 32 * 532, warpBlocks: true };
    expect(chooseBlockSize(tiled, h100)).to.deep.equal({
      blockSize: 256,
      sharedBytes: 256 * 688 + 32 * 532,
      sharedOptIn: true,
    });
    // A GPU with less shared memory per block (A100: 163 KiB opt-in): 6 warps.
    const a100 = { ...h100, sharedMemoryPerBlockOptin: 166912 };
    expect(chooseBlockSize(tiled, a100).blockSize).to.equal(192);
    // D = 40 with x in registers (no per-block tile): KeOps' rule, in whole warps.
    const small = { ...gaussian, sharedBytesPerThread: 260, warpBlocks: true };
    expect(chooseBlockSize(small, h100).blockSize).to.equal(160);
    // Not even one warp fits: a typed error, never a partial warp.
    for (const kernel of [
      { ...tiled, sharedBytesPerThread: 7000 },
      { ...small, sharedBytesPerThread: 7300 },
      { ...tiled, maxThreadsPerBlock: 16 },
    ]) {
      expect(() => chooseBlockSize(kernel, h100))
        .to.throw(KeOpsError)
        .with.property('code', 'ERR_FORMULA_TOO_LARGE');
    }
  });

  it('keeps the 1D scheme when the rows fill the GPU', () => {
    const plan = planCudaLaunch({ nx: 1_000_000, ny: 1_000_000, batches: 1 }, gaussian, h100);
    expect(plan.scheme).to.equal('1d');
    expect(plan.grid).to.deep.equal([Math.ceil(1e6 / 192), 1, 1]);
    expect(plan.partialValBytes).to.equal(0);
  });

  it('splits over j when few output rows would leave multiprocessors idle', () => {
    const plan = planCudaLaunch({ nx: 1000, ny: 1_000_000, batches: 1 }, gaussian, h100);
    expect(plan.scheme).to.equal('split');
    expect(plan.slice % plan.blockSize).to.equal(0);
    expect(plan.splits).to.equal(Math.ceil(1e6 / plan.slice));
    expect((plan.splits - 1) * plan.slice).to.be.below(1e6);
    expect(plan.grid[0] * plan.grid[1]).to.be.at.least(3 * 132); // several blocks per multiprocessor
    expect(plan.partialValBytes).to.equal(plan.splits * 1000 * 2 * 4);
    expect(plan.partialIdxBytes).to.equal(plan.splits * 1000 * 4);
  });

  it('does not split a short reduction, nor beyond the partials budget', () => {
    expect(planCudaLaunch({ nx: 10, ny: 100, batches: 1 }, gaussian, h100).scheme).to.equal('1d');
    const capped = planCudaLaunch({ nx: 1000, ny: 1_000_000, batches: 1 }, gaussian, h100, {
      maxPartialBytes: 1000 * 12 * 3,
    });
    expect(capped.splits).to.be.at.most(3);
  });

  it('launches batches in chunks of 65535', () => {
    const plan = planCudaLaunch({ nx: 10, ny: 10, batches: 100_000 }, gaussian, h100);
    expect(plan.grid[2]).to.equal(65535);
    expect(plan.batchChunks).to.equal(2);
  });

  it('cuts range blocks into entries of at most one block of rows', () => {
    // rows [0, 5) reduce over intervals 0..1, rows [5, 6) over nothing, rows [6, 10) over interval 2
    const lookup = buildRangesLookup(Float64Array.from([0, 5, 0, 2, 5, 6, 2, 0, 6, 10, 2, 1]), 3);
    expect([...lookup].map(Number)).to.deep.equal([
      0, 3, 0, 2, 3, 5, 0, 2, 5, 6, 2, 0, 6, 9, 2, 1, 9, 10, 2, 1,
    ]);
  });
});

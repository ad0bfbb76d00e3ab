/**
 * Builds the CUDA test doubles of test/fake-cuda/: a fake driver (libcuda) and a fake NVRTC (libnvrtc 13.0,
 * with the libnvrtc-builtins.so.13.0 the loader insists on), with which the addon's whole CUDA path runs on a
 * machine without a GPU: the fake NVRTC builds the generated kernels with g++ for the CPU and the fake driver runs
 * them on host threads. See the header comments of fake_cuda_driver.cc and fake_nvrtc.cc for what they imitate
 * and the environment variables that steer them.
 *
 *     const { driverPath, nvrtcPath } = buildFakeCuda();
 *     Object.assign(process.env, fakeCudaEnv()); // KEOPS_CUDA_DRIVER_LIBRARY, KEOPS_NVRTC_LIBRARY
 *
 * The libraries are built once per content of their sources, into a folder of the system's temporary directory
 * named by its hash, shared by every test process; needs g++.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

export interface FakeCuda {
  /** The fake driver: pass as KEOPS_CUDA_DRIVER_LIBRARY or as cudaProbe's driver path. */
  readonly driverPath: string;
  /** The fake NVRTC: pass as KEOPS_NVRTC_LIBRARY or as the only NVRTC candidate. */
  readonly nvrtcPath: string;
  /** The folder holding both, the builtins library and emulation.h. */
  readonly folder: string;
}

const SOURCES = join(__dirname, 'fake-cuda');
const NATIVE = join(__dirname, '..', 'native');

/** Every file the libraries are built from (the fake NVRTC also reads emulation.h when it compiles). */
const INPUTS: readonly string[] = [
  join(SOURCES, 'emulation.h'),
  join(SOURCES, 'fake_export.h'),
  join(SOURCES, 'fake_cuda_driver.cc'),
  join(SOURCES, 'fake_nvrtc.cc'),
  join(NATIVE, 'cuda_api.h'),
];

const CXX_FLAGS: readonly string[] = [
  '-std=c++17',
  '-O2',
  '-g',
  '-shared',
  '-fPIC',
  '-pthread',
  '-fvisibility=hidden', // only the CUDA / NVRTC entry points are exported
  '-Wall',
  '-Wextra',
  '-I',
  NATIVE,
];

let built: FakeCuda | undefined;

// File names and sonames no real library has: the dynamic loader matches a later dlopen("libcuda.so.1") (or
// NVRTC's own dlopen of its builtins by soname) against the libraries already loaded, so fakes carrying the real
// names would stand in for the real driver or NVRTC for the rest of the process.
const DRIVER_FILE = 'libkeops-fake-cuda.so';
const NVRTC_FILE = 'libkeops-fake-nvrtc.so';
/** The loader looks for the builtins next to NVRTC under the real name; only its soname is private. */
const BUILTINS_FILE = 'libnvrtc-builtins.so.13.0';

function libraries(folder: string): FakeCuda {
  return {
    driverPath: join(folder, DRIVER_FILE),
    nvrtcPath: join(folder, NVRTC_FILE),
    folder,
  };
}

function compile(args: readonly string[]): void {
  try {
    execFileSync('g++', args, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 16 << 20 });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`building the fake CUDA libraries failed: g++ ${args.join(' ')}\n${stderr}`);
  }
}

/** Builds (or finds already built) the fake driver and NVRTC; synchronous, once per process. */
export function buildFakeCuda(): FakeCuda {
  if (built !== undefined) return built;
  const hash = createHash('sha256');
  for (const file of INPUTS) hash.update(basename(file)).update('\0').update(readFileSync(file));
  hash.update(CXX_FLAGS.join(' ')).update(DRIVER_FILE).update(NVRTC_FILE);
  const folder = join(tmpdir(), `keops-fake-cuda-${hash.digest('hex').slice(0, 16)}`);
  if (!existsSync(join(folder, DRIVER_FILE))) {
    // Built under a private name and renamed into place: the folder, when it exists, is complete, and two test
    // processes building at once do not see each other's half-written files.
    const staging = `${folder}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    mkdirSync(staging, { recursive: true });
    try {
      copyFileSync(join(SOURCES, 'emulation.h'), join(staging, 'emulation.h'));
      compile([
        ...CXX_FLAGS,
        `-Wl,-soname,${DRIVER_FILE}`,
        '-o',
        join(staging, DRIVER_FILE),
        join(SOURCES, 'fake_cuda_driver.cc'),
        '-ldl',
      ]);
      compile([
        ...CXX_FLAGS,
        `-Wl,-soname,${NVRTC_FILE}`,
        '-o',
        join(staging, NVRTC_FILE),
        join(SOURCES, 'fake_nvrtc.cc'),
        '-ldl',
      ]);
      // The loader opens NVRTC's builtins library before any compilation; an empty one satisfies it.
      compile([
        '-shared',
        '-fPIC',
        '-Wl,-soname,libkeops-fake-nvrtc-builtins.so',
        '-o',
        join(staging, BUILTINS_FILE),
        '-x',
        'c++',
        '/dev/null',
      ]);
      try {
        renameSync(staging, folder);
      } catch (e) {
        // Another process finished first (its folder is complete: it was renamed into place too).
        if (!existsSync(join(folder, DRIVER_FILE))) throw e;
      }
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  built = libraries(folder);
  return built;
}

/** The environment that makes the addon use the fakes (builds them if needed). */
export function fakeCudaEnv(): Record<string, string> {
  const { driverPath, nvrtcPath } = buildFakeCuda();
  return { KEOPS_CUDA_DRIVER_LIBRARY: driverPath, KEOPS_NVRTC_LIBRARY: nvrtcPath };
}

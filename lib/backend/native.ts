/**
 * The native addon (native/addon.cc), loaded on first use with node-gyp-build from the package root: a local
 * build (build/Release) when there is one, else the prebuild from prebuilds/ that fits this platform (published
 * packages carry one for linux-x64 glibc, so installing them compiles nothing). Nothing native loads at
 * `require('keops-node')` time, so formula work keeps running where the addon is missing.
 */
import { KeOpsError, type KeOpsErrorCode } from '../errors';
import { packageRoot } from './package-root';

/** A kernel shared object loaded in this environment (see native/addon.cc, class CpuKernel). */
export interface CpuKernelHandle {
  readonly path: string;
  dispose(): void;
}

export type FloatArray = Float32Array | Float64Array;

/** One independent reduction for the addon: one batch entry. Rows/intervals are validated in TypeScript. */
export interface NativeCpuJob {
  /** One array per argument position, all of the kernel's dtype. */
  args: FloatArray[];
  outVal: FloatArray | null;
  outIdx: Int32Array | null;
  nx: number;
  ny: number;
  /** Quads (rowBegin, rowEnd, firstInterval, intervalCount), covering [0, nx). */
  blocks: Float64Array;
  /** Pairs [start, end) of inner rows. */
  intervals: Float64Array;
}

interface NativeAddon {
  readonly abiVersion: number;
  readonly defaultThreads: number;
  loadCpuKernel(path: string): CpuKernelHandle;
  runCpuSync(kernel: CpuKernelHandle, jobs: NativeCpuJob[], threads: number): void;
  runCpu(kernel: CpuKernelHandle, jobs: NativeCpuJob[], threads: number): Promise<void>;
}

let addon: NativeAddon | undefined;

export function nativeAddon(): NativeAddon {
  if (addon === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const load = require('node-gyp-build') as (dir: string) => NativeAddon;
      addon = load(packageRoot());
    } catch (e) {
      throw new KeOpsError(
        'ERR_NATIVE',
        `the keops-node native addon is not available (${(e as Error).message}). ` +
          'Build it with `npm run build:native` (needs a C++ compiler, python3 and make).',
        { cause: e },
      );
    }
  }
  return addon;
}

/** Native errors carry a string `code`; give them the library's error type. */
export function toKeOpsError(e: unknown, context: string): KeOpsError {
  if (e instanceof KeOpsError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const nativeCode = typeof err?.code === 'string' ? err.code : '';
  const code: KeOpsErrorCode = nativeCode === 'ERR_INVALID_ARGUMENT' ? 'ERR_INTERNAL' : 'ERR_NATIVE';
  return new KeOpsError(code, `${context}: ${message}${nativeCode ? ` (${nativeCode})` : ''}`, { cause: e });
}

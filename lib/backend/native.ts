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
  /**
   * Per argument, how many values the kernel reads (rows x dim, from the plan): the addon checks each array's
   * real backing store against it, whatever the arrays' JS-visible `length` says.
   */
  argElements: Float64Array;
}

/** Filled in by `runCpu`: stops the run (it then rejects with ERR_ABORTED). */
export interface CpuRunControl {
  cancel?: () => void;
}

interface NativeAddon {
  readonly abiVersion: number;
  readonly defaultThreads: number;
  loadCpuKernel(path: string): CpuKernelHandle;
  runCpuSync(kernel: CpuKernelHandle, jobs: NativeCpuJob[], threads: number): void;
  /** Runs on the addon's own thread pool (never libuv's), on copies of the inputs. */
  runCpu(
    kernel: CpuKernelHandle,
    jobs: NativeCpuJob[],
    threads: number,
    control?: CpuRunControl,
  ): Promise<void>;
}

let addon: NativeAddon | undefined;
/** Looked for once: a process that has no addon gets the same error on every call, without a new search. */
let missing: KeOpsError | undefined;

/** What a user of the package (or of a clone of the repository) runs to build the addon. */
export const REBUILD_HINT =
  'run `npm rebuild keops-node` (it needs a C++ compiler, python3 and make; in a clone of the repository: ' +
  '`npm run build:native`)';

export function nativeAddon(): NativeAddon {
  if (addon === undefined) {
    if (missing !== undefined) throw missing;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const load = require('node-gyp-build') as (dir: string) => NativeAddon;
      addon = load(packageRoot());
    } catch (e) {
      // node-gyp-build's message is several lines (what it looked for, where): its first line is the reason.
      const reason = String((e as Error)?.message ?? e)
        .split('\n')[0]
        .trim();
      missing = new KeOpsError(
        'ERR_NATIVE',
        `the keops-node native addon is not available (${reason}); to build it, ${REBUILD_HINT}`,
        { cause: e },
      );
      throw missing;
    }
  }
  return addon;
}

/** Native codes that mean the same to the caller as the library's own (the rest are addon-internal). */
const PASSED_THROUGH = new Set<string>(['ERR_ABORTED', 'ERR_ARG_DETACHED', 'ERR_ARG_SHAPE']);

/** Native errors carry a string `code`; give them the library's error type. */
export function toKeOpsError(e: unknown, context: string): KeOpsError {
  if (e instanceof KeOpsError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const nativeCode = typeof err?.code === 'string' ? err.code : '';
  const code: KeOpsErrorCode = PASSED_THROUGH.has(nativeCode)
    ? (nativeCode as KeOpsErrorCode)
    : nativeCode === 'ERR_INVALID_ARGUMENT'
      ? 'ERR_INTERNAL'
      : 'ERR_NATIVE';
  return new KeOpsError(code, `${context}: ${message}${nativeCode ? ` (${nativeCode})` : ''}`, { cause: e });
}

/**
 * `runtimeInfo()`: which backend `backend: 'auto'` picks on this machine and, when it is not CUDA, exactly why.
 *
 *     const info = await runtimeInfo();
 *     // { backend: 'cpu', reason: 'no CUDA driver: libcuda.so.1: cannot open shared object file: ...', devices: [] }
 *
 * CUDA is usable when the driver library loads, cuInit succeeds, there is at least one device, NVRTC loads (with
 * its builtins library) and the driver is not older than NVRTC's major version (NVRTC 13 emits PTX ISA 9.0 and
 * cubins a CUDA 12 driver rejects). Every call probes again (libraries already loaded are not re-read), so
 * installing a driver or setting KEOPS_NVRTC_LIBRARY is seen without restarting (`backend: 'auto'` reuses the last
 * answer: call runtimeInfo() to make it look again).
 */
import {
  type CudaBindings,
  cudaDriverLibrary,
  cudaBindings,
  type NativeCudaProbe,
  nvrtcCandidates,
} from './bindings';

export interface CudaDeviceInfo {
  readonly name: string;
  readonly computeCapability: readonly [number, number];
  /** Bytes. */
  readonly totalMemory: number;
  readonly multiprocessors: number;
  readonly maxThreadsPerBlock: number;
  /** Bytes of shared memory a block gets by default, and at most (opt-in). */
  readonly sharedMemoryPerBlock: number;
  readonly sharedMemoryPerBlockOptin: number;
}

export interface RuntimeInfo {
  readonly backend: 'cuda' | 'cpu';
  /** Why the backend is not CUDA (absent when it is). */
  readonly reason?: string;
  readonly devices: readonly CudaDeviceInfo[];
  readonly nvrtc?: {
    readonly version: string;
    readonly path: string;
    readonly supportedArchs: readonly number[];
  };
  /** cuDriverGetVersion(): 1000 * major + 10 * minor (12020 = CUDA 12.2). */
  readonly driver?: { readonly version: number };
}

const NVRTC_HINT =
  'install NVRTC (the CUDA toolkit, or `pip install nvidia-cuda-nvrtc`) and put its folder on LD_LIBRARY_PATH, ' +
  'or set KEOPS_NVRTC_LIBRARY to the path of libnvrtc.so';

function versionText(driverVersion: number): string {
  return `${Math.floor(driverVersion / 1000)}.${Math.floor((driverVersion % 1000) / 10)}`;
}

/** Turns the addon's probe into the public answer (pure: tested with hand-made probes). */
export function interpretProbe(probe: NativeCudaProbe, nvrtcProbed = true): RuntimeInfo {
  const { driver, nvrtc } = probe;
  const devices: CudaDeviceInfo[] = driver.devices.map((d) => ({
    name: d.name,
    computeCapability: [d.major, d.minor] as const,
    totalMemory: d.totalMemory,
    multiprocessors: d.multiprocessors,
    maxThreadsPerBlock: d.maxThreadsPerBlock,
    sharedMemoryPerBlock: d.sharedMemoryPerBlock,
    sharedMemoryPerBlockOptin: d.sharedMemoryPerBlockOptin,
  }));
  const nvrtcInfo =
    nvrtc.loaded && nvrtc.path !== undefined
      ? {
          version: `${nvrtc.major}.${nvrtc.minor}`,
          path: nvrtc.path,
          supportedArchs: nvrtc.supportedArchs ?? [],
        }
      : undefined;
  const driverInfo = driver.loaded && driver.version !== undefined ? { version: driver.version } : undefined;

  const reasons: string[] = [];
  if (!driver.loaded) reasons.push(`no CUDA driver (${driver.error ?? 'unknown error'})`);
  else if (driver.initError !== undefined)
    reasons.push(`the CUDA driver cannot be used (${driver.initError})`);
  else if (devices.length === 0) reasons.push('the CUDA driver reports no device');
  if (!nvrtc.loaded && nvrtcProbed)
    reasons.push(`no NVRTC (${nvrtc.error ?? 'unknown error'}); ${NVRTC_HINT}`);
  if (reasons.length === 0 && driverInfo !== undefined && nvrtc.major !== undefined) {
    if (driverInfo.version < nvrtc.major * 1000) {
      reasons.push(
        `the CUDA driver (CUDA ${versionText(driverInfo.version)}) is older than NVRTC ${nvrtcInfo?.version}, whose ` +
          `PTX and cubins it would reject; update the driver or point KEOPS_NVRTC_LIBRARY at an NVRTC ` +
          `${Math.floor(driverInfo.version / 1000)}.x`,
      );
    }
  }
  return {
    backend: reasons.length === 0 ? 'cuda' : 'cpu',
    ...(reasons.length === 0 ? {} : { reason: reasons.join('; ') }),
    devices,
    ...(nvrtcInfo === undefined ? {} : { nvrtc: nvrtcInfo }),
    ...(driverInfo === undefined ? {} : { driver: driverInfo }),
  };
}

function addonMissing(e: unknown): RuntimeInfo {
  return {
    backend: 'cpu',
    reason: `the native addon is not available, so CUDA cannot be probed: ${(e as Error).message}`,
    devices: [],
  };
}

function bindingsOrError(): CudaBindings | RuntimeInfo {
  try {
    return cudaBindings();
  } catch (e) {
    return addonMissing(e);
  }
}

// The last answer per configuration (driver library, NVRTC candidates), for `auto` and for opening devices: a
// cache of what the machine offers, refreshed by every runtimeInfo() call.
const lastAnswers = new Map<string, RuntimeInfo>();

function configKey(): string {
  return JSON.stringify([cudaDriverLibrary(), nvrtcCandidates()]);
}

/** Which backend `auto` picks and why (probing runs off the JS thread: loading NVRTC reads ~100 MB). */
export async function runtimeInfo(): Promise<RuntimeInfo> {
  const key = configKey();
  const bindings = bindingsOrError();
  if (!('cudaProbe' in bindings)) return bindings;
  const info = interpretProbe(await bindings.cudaProbe(cudaDriverLibrary(), nvrtcCandidates()));
  lastAnswers.set(key, info);
  return info;
}

/** `runtimeInfo()` on the calling thread, for synchronous code paths (Genred.callSync). */
export function runtimeInfoSync(): RuntimeInfo {
  const key = configKey();
  const bindings = bindingsOrError();
  if (!('cudaProbeSync' in bindings)) return bindings;
  const info = interpretProbe(bindings.cudaProbeSync(cudaDriverLibrary(), nvrtcCandidates()));
  lastAnswers.set(key, info);
  return info;
}

/** Whether the driver part of a probe leaves any chance of CUDA (then NVRTC is worth loading). */
function driverUsable(probe: NativeCudaProbe): boolean {
  return probe.driver.loaded && probe.driver.initError === undefined && probe.driver.devices.length > 0;
}

/**
 * The last runtimeInfo() of this configuration, probing only the first time — the driver first: without a
 * usable driver the answer is 'cpu' whatever NVRTC says, and loading NVRTC (~100 MB) would cost every CPU-only
 * process ~50 ms on its first call.
 */
export async function cachedRuntimeInfo(): Promise<RuntimeInfo> {
  const known = lastAnswers.get(configKey());
  if (known !== undefined) return known;
  const bindings = bindingsOrError();
  if (!('cudaProbe' in bindings)) return bindings;
  const driverOnly = await bindings.cudaProbe(cudaDriverLibrary(), []);
  if (driverUsable(driverOnly)) return runtimeInfo();
  const info = interpretProbe(driverOnly, false);
  lastAnswers.set(configKey(), info);
  return info;
}

/** The cached answer of cachedRuntimeInfo(), if there is one yet (never probes). */
export function knownRuntimeInfo(): RuntimeInfo | undefined {
  return lastAnswers.get(configKey());
}

export function cachedRuntimeInfoSync(): RuntimeInfo {
  const known = lastAnswers.get(configKey());
  if (known !== undefined) return known;
  const bindings = bindingsOrError();
  if (!('cudaProbeSync' in bindings)) return bindings;
  const driverOnly = bindings.cudaProbeSync(cudaDriverLibrary(), []);
  if (driverUsable(driverOnly)) return runtimeInfoSync();
  const info = interpretProbe(driverOnly, false);
  lastAnswers.set(configKey(), info);
  return info;
}

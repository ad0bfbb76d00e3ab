/**
 * The CUDA functions of the native addon (native/cuda_addon.cc) and where they look for the libraries. The
 * addon opens libcuda and NVRTC with dlopen at run time, so it builds and loads without CUDA; these functions
 * report missing libraries as data (probe) or as errors with a `code` (compile).
 */
import { join } from 'node:path';
import { KeOpsError } from '../../errors';
import { nativeAddon, REBUILD_HINT } from '../native';

/** The driver library, as the driver package installs it. */
export const CUDA_DRIVER_LIBRARY = 'libcuda.so.1';

/**
 * The driver library to open: `KEOPS_CUDA_DRIVER_LIBRARY` (a file path, for drivers outside the loader's search
 * path, such as WSL's /usr/lib/wsl/lib/libcuda.so.1) or libcuda.so.1.
 */
export function cudaDriverLibrary(env: NodeJS.ProcessEnv = process.env): string {
  return env.KEOPS_CUDA_DRIVER_LIBRARY?.trim() || CUDA_DRIVER_LIBRARY;
}

/** NVRTC sonames, newest first: CUDA 13, 12, 11.2+ (11.x shares one soname), then the unversioned dev link. */
export const NVRTC_SONAMES: readonly string[] = [
  'libnvrtc.so.13',
  'libnvrtc.so.12',
  'libnvrtc.so.11.2',
  'libnvrtc.so',
];

/** Conventional toolkit folder, tried after $CUDA_PATH and $CUDA_HOME. */
const DEFAULT_CUDA_ROOT = '/usr/local/cuda';

/**
 * Where NVRTC is looked for, in order. `KEOPS_NVRTC_LIBRARY` (a file path), when set, is the only candidate:
 * an explicit choice that fails is reported rather than silently replaced by another NVRTC. Otherwise the
 * sonames through the dynamic loader's search path (LD_LIBRARY_PATH, ldconfig), then under
 * $CUDA_PATH/lib64, $CUDA_HOME/lib64 and /usr/local/cuda/lib64.
 */
export function nvrtcCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const explicit = env.KEOPS_NVRTC_LIBRARY?.trim();
  if (explicit) return [explicit];
  const roots = [env.CUDA_PATH, env.CUDA_HOME, DEFAULT_CUDA_ROOT]
    .filter((root): root is string => typeof root === 'string' && root.trim() !== '')
    .map((root) => root.trim());
  const candidates = [...NVRTC_SONAMES];
  for (const root of new Set(roots)) {
    for (const soname of NVRTC_SONAMES) candidates.push(join(root, 'lib64', soname));
  }
  return candidates;
}

export interface NativeCudaDevice {
  readonly name: string;
  readonly major: number;
  readonly minor: number;
  readonly totalMemory: number;
  readonly multiprocessors: number;
  readonly maxThreadsPerBlock: number;
  readonly sharedMemoryPerBlock: number;
  readonly sharedMemoryPerBlockOptin: number;
  readonly maxGridDimY: number;
}

export interface NativeCudaProbe {
  readonly driver: {
    readonly loaded: boolean;
    /** Why the library could not be used (dlerror() text, missing symbol). */
    readonly error?: string;
    readonly path?: string;
    /** cuDriverGetVersion: 1000 * major + 10 * minor, e.g. 12020. */
    readonly version?: number;
    /** cuInit / device query failure, e.g. "cuInit failed: CUDA_ERROR_NO_DEVICE: no CUDA-capable device...". */
    readonly initError?: string;
    readonly devices: readonly NativeCudaDevice[];
  };
  readonly nvrtc: {
    readonly loaded: boolean;
    readonly error?: string;
    readonly path?: string;
    readonly builtinsPath?: string;
    readonly major?: number;
    readonly minor?: number;
    readonly supportedArchs?: readonly number[];
    /** Whether this NVRTC can emit CUBIN (11.1+). */
    readonly cubin?: boolean;
  };
}

export interface NativeNvrtcRequest {
  source: string;
  name: string;
  /** '' = NVRTC's default architecture. */
  arch: string;
  options: string[];
}

export interface NativeNvrtcResult {
  readonly image: Buffer;
  readonly log: string;
  readonly output: 'ptx' | 'cubin';
  readonly arch: string;
  readonly rejectedArch?: string;
  readonly nvrtcVersion: string;
}

/** Opaque handles made by the addon (tagged Externals). */
export interface NativeCudaDevice {
  readonly __brand: 'NativeCudaDevice';
}
export interface NativeCudaModule {
  readonly __brand: 'NativeCudaModule';
}
export interface NativeDeviceBuffer {
  readonly __brand: 'NativeDeviceBuffer';
}

export interface NativeModuleInfo {
  readonly module: NativeCudaModule;
  readonly functions: readonly { name: string; maxThreadsPerBlock: number; numRegs: number }[];
}

export interface NativeMemoryInfo {
  /** Device bytes keops-node holds (arrays and the temporaries of running calls; the cache excluded). */
  readonly allocatedBytes: number;
  /** Freed device blocks kept for reuse (given back to the driver when an allocation would fail). */
  readonly cachedBytes: number;
  /** Live device buffers owned by JS (DeviceArrays) and their bytes. */
  readonly arrays: number;
  readonly arrayBytes: number;
  /** Pinned host memory held by results not yet garbage-collected. */
  readonly pinnedBytes: number;
}

/** A buffer of one run: uploaded from host memory, an existing device buffer, scratch, or an output. */
export type NativeRunBuffer =
  | { kind: 'upload'; data: ArrayBufferView }
  | { kind: 'existing'; buffer: NativeDeviceBuffer }
  | { kind: 'scratch'; bytes: number; zero?: boolean }
  | { kind: 'output'; bytes: number; device?: boolean };

/** A kernel parameter: an int64, a null pointer, a pointer into a buffer, or a struct of buffer pointers (-1: null). */
export type NativeRunParam = number | null | { buffer: number; offset?: number } | { struct: number[] };

export interface NativeRunLaunch {
  /** Index of the function in the module's `functions`. */
  fn: number;
  grid: [number, number, number];
  block: number;
  shared: number;
  params: NativeRunParam[];
}

export interface NativeRunRequest {
  buffers: NativeRunBuffer[];
  launches: NativeRunLaunch[];
}

/** One entry per output buffer, in order: host bytes, or a device buffer when `device` was set. */
export type NativeRunResult = (ArrayBuffer | NativeDeviceBuffer)[];

export interface CudaDeviceBindings {
  cudaDeviceOpen(driverPath: string, ordinal: number): NativeCudaDevice;
  cudaDeviceInit(device: NativeCudaDevice): Promise<void>;
  cudaDeviceInitSync(device: NativeCudaDevice): void;
  cudaDeviceClose(device: NativeCudaDevice): void;
  cudaModuleLoad(device: NativeCudaDevice, image: Buffer, names: string[]): Promise<NativeModuleInfo>;
  cudaModuleLoadSync(device: NativeCudaDevice, image: Buffer, names: string[]): NativeModuleInfo;
  cudaUpload(device: NativeCudaDevice, data: ArrayBufferView): Promise<NativeDeviceBuffer>;
  cudaUploadSync(device: NativeCudaDevice, data: ArrayBufferView): NativeDeviceBuffer;
  cudaDownload(device: NativeCudaDevice, buffer: NativeDeviceBuffer): Promise<ArrayBuffer>;
  cudaDownloadSync(device: NativeCudaDevice, buffer: NativeDeviceBuffer): ArrayBuffer;
  cudaFree(buffer: NativeDeviceBuffer): void;
  cudaMemoryInfo(device: NativeCudaDevice): NativeMemoryInfo;
  cudaRun(
    device: NativeCudaDevice,
    module: NativeCudaModule,
    request: NativeRunRequest,
  ): Promise<NativeRunResult>;
  cudaRunSync(device: NativeCudaDevice, module: NativeCudaModule, request: NativeRunRequest): NativeRunResult;
}

export interface CudaBindings extends CudaDeviceBindings {
  cudaProbe(driverPath: string, nvrtcCandidates: string[]): Promise<NativeCudaProbe>;
  cudaProbeSync(driverPath: string, nvrtcCandidates: string[]): NativeCudaProbe;
  nvrtcCompile(nvrtcCandidates: string[], request: NativeNvrtcRequest): Promise<NativeNvrtcResult>;
  nvrtcCompileSync(nvrtcCandidates: string[], request: NativeNvrtcRequest): NativeNvrtcResult;
}

/** The addon's CUDA functions; throws KeOpsError ERR_NATIVE when the addon is missing or predates them. */
export function cudaBindings(): CudaBindings {
  const addon = nativeAddon() as unknown as Partial<CudaBindings>;
  if (
    typeof addon.cudaProbe !== 'function' ||
    typeof addon.nvrtcCompile !== 'function' ||
    typeof addon.cudaRun !== 'function'
  ) {
    throw new KeOpsError(
      'ERR_NATIVE',
      `the keops-node native addon has no CUDA functions (built from older sources): ${REBUILD_HINT}`,
    );
  }
  return addon as CudaBindings;
}

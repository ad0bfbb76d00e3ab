/**
 * A CUDA device as the runner uses it: the addon's device handle (one native thread that owns the context and
 * its stream and runs a queue of jobs, see native/cuda_device.h), the modules loaded on it, and its limits.
 *
 *     const device = await openCudaDevice(0);   // ERR_NO_GPU with runtimeInfo()'s reason when CUDA is unusable
 *     const module = await device.loadModule(key, image, ['keops_1d', ...]);
 *     const outputs = await device.run(module, request);
 *
 * Devices are opened once per process and configuration (driver library, NVRTC candidates, ordinal) and live
 * until the environment ends (the addon stops their thread then). Calls queue on the device thread in order;
 * many concurrent calls are safe. Native failures become KeOpsErrors: ERR_CUDA_OOM (the call's memory is
 * freed again), ERR_CUDA (with the CUDA error name), ERR_DISPOSED, ERR_DEVICE_MISMATCH.
 */
import { KeOpsError, type KeOpsErrorCode } from '../../errors';
import {
  type CudaBindings,
  cudaBindings,
  cudaDriverLibrary,
  type NativeCudaDevice,
  type NativeCudaModule,
  type NativeDeviceBuffer,
  type NativeMemoryInfo,
  type NativeModuleInfo,
  type NativeRunRequest,
  type NativeRunResult,
  nvrtcCandidates,
} from './bindings';
import { archOfDevice, type CudaArch } from './compile';
import { type CudaDeviceInfo, cachedRuntimeInfo, cachedRuntimeInfoSync, type RuntimeInfo } from './runtime';

const NATIVE_CODES: ReadonlySet<string> = new Set([
  'ERR_CUDA',
  'ERR_CUDA_OOM',
  'ERR_DISPOSED',
  'ERR_DEVICE_MISMATCH',
  'ERR_NO_GPU',
]);

/** Gives a native failure the library's error type (ERR_INVALID_ARGUMENT from the addon is our bug). */
export function toCudaError(e: unknown, context: string): KeOpsError {
  if (e instanceof KeOpsError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const nativeCode = typeof err?.code === 'string' ? err.code : '';
  const code: KeOpsErrorCode = NATIVE_CODES.has(nativeCode)
    ? (nativeCode as KeOpsErrorCode)
    : nativeCode === 'ERR_INVALID_ARGUMENT'
      ? 'ERR_INTERNAL'
      : 'ERR_NATIVE';
  return new KeOpsError(code, `${context}: ${message}`, { cause: e });
}

export interface LoadedCudaModule {
  readonly handle: NativeCudaModule;
  /** Function name → index and limits, for the names asked for. */
  readonly functions: ReadonlyMap<string, { index: number; maxThreadsPerBlock: number; numRegs: number }>;
}

function moduleOf(info: NativeModuleInfo): LoadedCudaModule {
  return {
    handle: info.module,
    functions: new Map(info.functions.map((f, index) => [f.name, { index, ...f }])),
  };
}

export class CudaDevice {
  readonly ordinal: number;
  readonly info: CudaDeviceInfo;
  readonly arch: CudaArch;
  /** cuDriverGetVersion(). */
  readonly driverVersion: number;
  readonly nvrtc: { readonly version: string; readonly path: string };
  /** @internal */
  readonly handle: NativeCudaDevice;
  private readonly bindings: CudaBindings;
  private readonly modules = new Map<string, Promise<LoadedCudaModule>>();
  private readonly readyModules = new Map<string, LoadedCudaModule>();

  /** @internal use openCudaDevice */
  constructor(ordinal: number, runtime: RuntimeInfo, handle: NativeCudaDevice, bindings: CudaBindings) {
    const info = runtime.devices[ordinal];
    this.ordinal = ordinal;
    this.info = info;
    this.arch = archOfDevice(info.computeCapability);
    this.driverVersion = runtime.driver?.version ?? 0;
    this.nvrtc = { version: runtime.nvrtc?.version ?? '', path: runtime.nvrtc?.path ?? '' };
    this.handle = handle;
    this.bindings = bindings;
  }

  /** The module for `key` (content-addressed: same key, same code), loaded once per device. */
  async loadModule(key: string, image: () => Promise<Buffer>, names: string[]): Promise<LoadedCudaModule> {
    const ready = this.readyModules.get(key);
    if (ready !== undefined) return ready;
    let pending = this.modules.get(key);
    if (pending === undefined) {
      pending = (async () => {
        const bytes = await image();
        try {
          const loaded = moduleOf(await this.bindings.cudaModuleLoad(this.handle, bytes, names));
          this.readyModules.set(key, loaded);
          return loaded;
        } catch (e) {
          throw toCudaError(e, `loading the CUDA kernels on GPU ${this.ordinal}`);
        }
      })().finally(() => this.modules.delete(key));
      this.modules.set(key, pending);
    }
    return pending;
  }

  loadModuleSync(key: string, image: () => Buffer, names: string[]): LoadedCudaModule {
    const ready = this.readyModules.get(key);
    if (ready !== undefined) return ready;
    try {
      const loaded = moduleOf(this.bindings.cudaModuleLoadSync(this.handle, image(), names));
      this.readyModules.set(key, loaded);
      return loaded;
    } catch (e) {
      throw toCudaError(e, `loading the CUDA kernels on GPU ${this.ordinal}`);
    }
  }

  async run(module: LoadedCudaModule, request: NativeRunRequest): Promise<NativeRunResult> {
    try {
      return await this.bindings.cudaRun(this.handle, module.handle, request);
    } catch (e) {
      throw toCudaError(e, `running a reduction on GPU ${this.ordinal}`);
    }
  }

  runSync(module: LoadedCudaModule, request: NativeRunRequest): NativeRunResult {
    try {
      return this.bindings.cudaRunSync(this.handle, module.handle, request);
    } catch (e) {
      throw toCudaError(e, `running a reduction on GPU ${this.ordinal}`);
    }
  }

  async upload(data: ArrayBufferView): Promise<NativeDeviceBuffer> {
    try {
      return await this.bindings.cudaUpload(this.handle, data);
    } catch (e) {
      throw toCudaError(e, `uploading ${data.byteLength} bytes to GPU ${this.ordinal}`);
    }
  }

  uploadSync(data: ArrayBufferView): NativeDeviceBuffer {
    try {
      return this.bindings.cudaUploadSync(this.handle, data);
    } catch (e) {
      throw toCudaError(e, `uploading ${data.byteLength} bytes to GPU ${this.ordinal}`);
    }
  }

  async download(buffer: NativeDeviceBuffer): Promise<ArrayBuffer> {
    try {
      return await this.bindings.cudaDownload(this.handle, buffer);
    } catch (e) {
      throw toCudaError(e, `reading a DeviceArray from GPU ${this.ordinal}`);
    }
  }

  downloadSync(buffer: NativeDeviceBuffer): ArrayBuffer {
    try {
      return this.bindings.cudaDownloadSync(this.handle, buffer);
    } catch (e) {
      throw toCudaError(e, `reading a DeviceArray from GPU ${this.ordinal}`);
    }
  }

  free(buffer: NativeDeviceBuffer): void {
    this.bindings.cudaFree(buffer);
  }

  memoryInfo(): NativeMemoryInfo {
    return this.bindings.cudaMemoryInfo(this.handle);
  }
}

// Open devices by configuration: a cache of process resources (a context per GPU), not program state.
const openDevices = new Map<string, Promise<CudaDevice>>();
const readyDevices = new Map<string, CudaDevice>();

function configKey(ordinal: number): string {
  return JSON.stringify([cudaDriverLibrary(), nvrtcCandidates(), ordinal]);
}

function checkOrdinal(ordinal: unknown): number {
  if (!Number.isSafeInteger(ordinal) || (ordinal as number) < 0) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `device must be an integer >= 0, got ${String(ordinal)}`);
  }
  return ordinal as number;
}

/** The reason CUDA cannot run here, as ERR_NO_GPU (runtimeInfo()'s words). */
export function noGpuError(info: RuntimeInfo, ordinal = 0): KeOpsError {
  const why =
    info.backend !== 'cuda'
      ? (info.reason ?? 'CUDA is not usable')
      : `there is no GPU ${ordinal} (${info.devices.length} found: ${info.devices.map((d) => d.name).join(', ')})`;
  return new KeOpsError(
    'ERR_NO_GPU',
    `backend 'cuda' is not available: ${why}. Use backend 'cpu' or 'auto'.`,
  );
}

function usableRuntime(info: RuntimeInfo, ordinal: number): void {
  if (info.backend !== 'cuda' || ordinal >= info.devices.length) throw noGpuError(info, ordinal);
}

function openHandle(bindings: CudaBindings, ordinal: number): NativeCudaDevice {
  try {
    return bindings.cudaDeviceOpen(cudaDriverLibrary(), ordinal);
  } catch (e) {
    throw toCudaError(e, `opening GPU ${ordinal}`);
  }
}

function initFailed(
  bindings: CudaBindings,
  handle: NativeCudaDevice,
  ordinal: number,
  e: unknown,
): KeOpsError {
  bindings.cudaDeviceClose(handle);
  const error = toCudaError(e, `creating a CUDA context on GPU ${ordinal}`);
  return error.code === 'ERR_CUDA' ? new KeOpsError('ERR_NO_GPU', error.message, { cause: e }) : error;
}

/** GPU `ordinal`, opened on first use (its context is created on the device thread, off the JS thread). */
export async function openCudaDevice(ordinal = 0): Promise<CudaDevice> {
  checkOrdinal(ordinal);
  const key = configKey(ordinal);
  const ready = readyDevices.get(key);
  if (ready !== undefined) return ready;
  let pending = openDevices.get(key);
  if (pending === undefined) {
    pending = (async () => {
      const runtime = await cachedRuntimeInfo();
      usableRuntime(runtime, ordinal);
      const bindings = cudaBindings();
      const handle = openHandle(bindings, ordinal);
      try {
        await bindings.cudaDeviceInit(handle);
      } catch (e) {
        throw initFailed(bindings, handle, ordinal, e);
      }
      const device = new CudaDevice(ordinal, runtime, handle, bindings);
      readyDevices.set(key, device);
      return device;
    })().finally(() => openDevices.delete(key));
    openDevices.set(key, pending);
  }
  return pending;
}

export function openCudaDeviceSync(ordinal = 0): CudaDevice {
  checkOrdinal(ordinal);
  const key = configKey(ordinal);
  const ready = readyDevices.get(key);
  if (ready !== undefined) return ready;
  const runtime = cachedRuntimeInfoSync();
  usableRuntime(runtime, ordinal);
  const bindings = cudaBindings();
  const handle = openHandle(bindings, ordinal);
  try {
    bindings.cudaDeviceInitSync(handle);
  } catch (e) {
    throw initFailed(bindings, handle, ordinal, e);
  }
  const device = new CudaDevice(ordinal, runtime, handle, bindings);
  readyDevices.set(key, device);
  return device;
}

/** Whether `auto` runs on a GPU here (cached per configuration; `runtimeInfo()` refreshes it). */
export async function cudaUsable(ordinal = 0): Promise<boolean> {
  const info = await cachedRuntimeInfo();
  return info.backend === 'cuda' && ordinal < info.devices.length;
}

export function cudaUsableSync(ordinal = 0): boolean {
  const info = cachedRuntimeInfoSync();
  return info.backend === 'cuda' && ordinal < info.devices.length;
}

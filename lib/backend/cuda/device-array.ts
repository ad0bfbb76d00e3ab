/**
 * `DeviceArray`: an array in GPU memory, so that data stays on the GPU across calls.
 *
 *     const x = await DeviceArray.from(new Float32Array(3 * M));   // upload (GPU 0 unless { device })
 *     const out = await g.call([x, y, b], { output: 'device' });   // DeviceArray result, never copied to the host
 *     const host = await out.toHost();                             // Float32Array
 *     out.dispose(); x.dispose();                                  // or `using x = ...` (Symbol.dispose)
 *
 * `dispose()` is idempotent and frees the memory at once (after the calls already queued on the GPU that use it);
 * use after dispose is ERR_DISPOSED. Garbage collection frees an undisposed array too, but only as a backstop:
 * GPU memory is scarce and the collector does not see it. `deviceMemory()` reports what keops-node holds.
 * A DeviceArray is a flat array of float32, float64 or int32 values; give Genred its shape like a TypedArray's
 * (`{ data: deviceArray, shape }` for batch dims).
 */
import { KeOpsError } from '../../errors';
import type { NativeDeviceBuffer, NativeMemoryInfo } from './bindings';
import { type CudaDevice, openCudaDevice, openCudaDeviceSync } from './device';

export type DeviceDtype = 'float32' | 'float64' | 'int32';
export type DeviceTypedArray = Float32Array | Float64Array | Int32Array;

export interface DeviceArrayOptions {
  /** GPU ordinal (default 0). */
  readonly device?: number;
}

const BYTES: Readonly<Record<DeviceDtype, number>> = { float32: 4, float64: 8, int32: 4 };

function dtypeOfArray(data: unknown): DeviceDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  throw new KeOpsError(
    'ERR_ARG_TYPE',
    `DeviceArray.from needs a Float32Array, Float64Array or Int32Array, got ${
      ArrayBuffer.isView(data) ? data.constructor.name : typeof data
    }`,
  );
}

function view(dtype: DeviceDtype, buffer: ArrayBuffer, length: number): DeviceTypedArray {
  if (dtype === 'float32') return new Float32Array(buffer, 0, length);
  if (dtype === 'float64') return new Float64Array(buffer, 0, length);
  return new Int32Array(buffer, 0, length);
}

function options(opts: unknown): number {
  if (opts === undefined) return 0;
  if (typeof opts !== 'object' || opts === null) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', 'DeviceArray options must be an object');
  }
  return (opts as DeviceArrayOptions).device ?? 0;
}

export class DeviceArray {
  readonly dtype: DeviceDtype;
  /** Number of elements. */
  readonly length: number;
  /** GPU ordinal. */
  readonly device: number;
  #owner: CudaDevice;
  #buffer: NativeDeviceBuffer | undefined;
  #disposed = false;
  /** Calls holding this array (submitted, not yet settled): dispose() frees only once they are done. */
  #uses = 0;

  private constructor(owner: CudaDevice, buffer: NativeDeviceBuffer, dtype: DeviceDtype, length: number) {
    if (typeof owner !== 'object' || owner === null || typeof buffer !== 'object' || buffer === null) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        'DeviceArray has no public constructor: use DeviceArray.from(typedArray) or DeviceArray.fromSync',
      );
    }
    this.#owner = owner;
    this.#buffer = buffer;
    this.dtype = dtype;
    this.length = length;
    this.device = owner.ordinal;
  }

  /** @internal Wraps a buffer the addon made (a reduction's output). */
  static wrap(
    owner: CudaDevice,
    buffer: NativeDeviceBuffer,
    dtype: DeviceDtype,
    length: number,
  ): DeviceArray {
    return new DeviceArray(owner, buffer, dtype, length);
  }

  /** Copies `data` to the GPU (off the JS thread). */
  static async from(data: DeviceTypedArray, opts?: DeviceArrayOptions): Promise<DeviceArray> {
    const dtype = dtypeOfArray(data);
    const owner = await openCudaDevice(options(opts));
    return new DeviceArray(owner, await owner.upload(data), dtype, data.length);
  }

  /** `from`, blocking the thread. */
  static fromSync(data: DeviceTypedArray, opts?: DeviceArrayOptions): DeviceArray {
    const dtype = dtypeOfArray(data);
    const owner = openCudaDeviceSync(options(opts));
    return new DeviceArray(owner, owner.uploadSync(data), dtype, data.length);
  }

  get byteLength(): number {
    return this.length * BYTES[this.dtype];
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** @internal The native buffer; ERR_DISPOSED once disposed, unless a call holding it is still running. */
  get buffer(): NativeDeviceBuffer {
    if ((this.#disposed && this.#uses === 0) || this.#buffer === undefined) throw this.disposedError();
    return this.#buffer;
  }

  /**
   * @internal Marks the array in use by a call from its submission to its end: a dispose() in between takes
   * effect for later calls at once, and frees the memory when the call is done. Returns the release function.
   */
  retain(): () => void {
    if (this.#disposed) throw this.disposedError();
    this.#uses++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.#uses === 0 && this.#disposed) this.freeNow();
    };
  }

  /** @internal */
  get owner(): CudaDevice {
    return this.#owner;
  }

  /** A host copy (in pinned memory when large). */
  async toHost(): Promise<DeviceTypedArray> {
    return view(this.dtype, await this.#owner.download(this.buffer), this.length);
  }

  toHostSync(): DeviceTypedArray {
    return view(this.dtype, this.#owner.downloadSync(this.buffer), this.length);
  }

  /** Frees the GPU memory now (or, for calls already submitted with it, when they end); idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#uses === 0) this.freeNow();
  }

  private freeNow(): void {
    const buffer = this.#buffer;
    if (buffer === undefined) return;
    this.#buffer = undefined;
    this.#owner.free(buffer);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `DeviceArray(${this.dtype}[${this.length}] on GPU ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  private disposedError(): KeOpsError {
    return new KeOpsError('ERR_DISPOSED', `${this} was used after dispose()`);
  }
}

export interface DeviceMemoryInfo extends NativeMemoryInfo {
  readonly device: number;
}

/** What keops-node holds on GPU `device` (opening it if needed). */
export async function deviceMemory(device = 0): Promise<DeviceMemoryInfo> {
  const owner = await openCudaDevice(device);
  return { device, ...owner.memoryInfo() };
}

/**
 * Vectors as k-NN jobs and file readers see them: `rows` rows of `dim` values of one storage dtype, read by row
 * ranges (a file larger than memory is never loaded whole), and the conversion of stored rows to the float32 /
 * float64 the kernels compute in.
 */
import { KeOpsError } from '../errors';
import type { Dtype, FloatArray } from '../backend/plan';

/** How values are stored (in memory or in a file). float16 and bfloat16 travel as their raw 16-bit patterns. */
export type StorageDtype =
  'float32' | 'float64' | 'float16' | 'bfloat16' | 'uint8' | 'int8' | 'int32' | 'int64';

/** The typed array of each storage dtype. */
export interface StorageArrayOf {
  float32: Float32Array;
  float64: Float64Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  uint8: Uint8Array;
  int8: Int8Array;
  int32: Int32Array;
  int64: BigInt64Array;
}

export type StorageArray = StorageArrayOf[StorageDtype];

export const STORAGE_DTYPES: readonly StorageDtype[] = [
  'float32',
  'float64',
  'float16',
  'bfloat16',
  'uint8',
  'int8',
  'int32',
  'int64',
];

/** Bytes per value of each storage dtype. */
export const STORAGE_BYTES: Readonly<Record<StorageDtype, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  uint8: 1,
  int8: 1,
  int32: 4,
  int64: 8,
};

/**
 * Rows read by ranges: a file (lib/io readers) or an array in memory (`vectorsFromArray`). `read(start, end)`
 * returns rows [start, end), row-major, (end − start) × dim values of `dtype`; it may be called concurrently and
 * in any order.
 */
export interface VectorSource {
  readonly rows: number;
  readonly dim: number;
  readonly dtype: StorageDtype;
  /** For messages: a file path, or a description such as 'queries'. */
  readonly name: string;
  read(start: number, end: number): Promise<StorageArray>;
  /** Releases what the source holds (a file descriptor); idempotent. */
  close?(): Promise<void>;
}

/** The storage dtype of a typed array, or undefined for other values. Uint16Array is taken as float16. */
export function storageDtypeOf(data: unknown): StorageDtype | undefined {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Uint16Array) return 'float16';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return undefined;
}

/**
 * An in-memory array as a VectorSource. `dtype` overrides the array's own (only 'bfloat16' for a Uint16Array
 * differs from what `storageDtypeOf` says). Reads are views, not copies.
 */
export function vectorsFromArray(
  data: StorageArray,
  dim: number,
  options: { dtype?: StorageDtype; name?: string } = {},
): VectorSource {
  const name = options.name ?? 'vectors';
  const own = storageDtypeOf(data);
  if (own === undefined) {
    throw new KeOpsError(
      'ERR_ARG_TYPE',
      `${name}: expected a Float32Array, Float64Array, Uint16Array (float16 / bfloat16), Uint8Array, Int8Array, Int32Array or BigInt64Array`,
    );
  }
  const dtype = options.dtype ?? own;
  if (dtype !== own && !(own === 'float16' && dtype === 'bfloat16')) {
    throw new KeOpsError('ERR_ARG_DTYPE', `${name}: a ${data.constructor.name} cannot hold ${dtype} values`);
  }
  if (!Number.isSafeInteger(dim) || dim < 1) {
    throw new KeOpsError('ERR_ARG_SHAPE', `${name}: dim must be an integer >= 1, got ${String(dim)}`);
  }
  if (data.length % dim !== 0) {
    throw new KeOpsError('ERR_ARG_SHAPE', `${name}: length ${data.length} is not a multiple of dim ${dim}`);
  }
  const rows = data.length / dim;
  return {
    rows,
    dim,
    dtype,
    name,
    read(start, end) {
      try {
        checkRowRange(name, start, end, rows);
      } catch (e) {
        return Promise.reject(e);
      }
      return Promise.resolve(data.subarray(start * dim, end * dim));
    },
  };
}

/** ERR_INVALID_ARGUMENT unless [start, end) is a range of integers within [0, rows). */
export function checkRowRange(name: string, start: number, end: number, rows: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > rows) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `${name}: bad row range [${start}, ${end}) of ${rows} rows`);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The value of an IEEE binary16 bit pattern (exact: every float16 is a float32). */
export function float16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1024 + fraction) * 2 ** (exponent - 25);
}

/** The value of a bfloat16 bit pattern (the top half of a float32). */
export function bfloat16ToNumber(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

/** A float array of `dtype` and the given length, to convert into. */
export function allocateFloat(dtype: Dtype, length: number): FloatArray {
  return dtype === 'float32' ? new Float32Array(length) : new Float64Array(length);
}

/**
 * Converts stored values into `target` (a float32 or float64 array of the same length). Exact for every dtype
 * into float64; into float32, float64 / int32 / int64 round to nearest as a cast would.
 */
export function convertToFloat(source: StorageArray, dtype: StorageDtype, target: FloatArray): FloatArray {
  if (source.length !== target.length) {
    throw new KeOpsError('ERR_INTERNAL', `convertToFloat: ${source.length} values into ${target.length}`);
  }
  const n = source.length;
  switch (dtype) {
    case 'float16': {
      const s = source as Uint16Array;
      for (let i = 0; i < n; i++) target[i] = float16ToNumber(s[i]);
      return target;
    }
    case 'bfloat16': {
      const s = source as Uint16Array;
      const bits = new Uint32Array(n);
      for (let i = 0; i < n; i++) bits[i] = s[i] << 16;
      target.set(new Float32Array(bits.buffer));
      return target;
    }
    case 'int64': {
      const s = source as BigInt64Array;
      for (let i = 0; i < n; i++) target[i] = Number(s[i]);
      return target;
    }
    default:
      target.set(source as Exclude<StorageArray, BigInt64Array>);
      return target;
  }
}

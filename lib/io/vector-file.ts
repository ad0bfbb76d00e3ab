/**
 * `openVectorFile`: a vector file as a VectorSource. Only the header is read when opening (and, for .Xvecs,
 * the last row's dimension prefix); `read(start, end)` then reads that row range with positional reads, so
 * files larger than memory or over 2 GiB are fine. A gzipped file (`name.ext.gz`) is decompressed into
 * memory, up to `maxGzipBytes`.
 */
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { KeOpsError } from '../errors';
import {
  checkRowRange,
  type StorageArray,
  type StorageDtype,
  STORAGE_BYTES,
  storageDtypeOf,
  type VectorSource,
} from './vector-source';
import {
  type ByteReader,
  fileByteReader,
  fileFormatError,
  fileIoError,
  memoryByteReader,
  readBytes,
} from './byte-reader';
import {
  checkRowDim,
  resolveFormat,
  rowStride,
  sniffFormat,
  type VectorFileFormat,
  VECTOR_FILE_FORMATS,
  type VectorLayout,
} from './formats';

const gunzipAsync = promisify(gunzip);

/** Default limit on a gzipped file's decompressed size: such files are held in memory. */
export const DEFAULT_MAX_GZIP_BYTES = 2 ** 30;

/** Rows read per positional read of a .Xvecs file (their prefixes are stripped through a scratch buffer). */
const VECS_SCRATCH_BYTES = 16 * 2 ** 20;

export interface OpenVectorFileOptions {
  /** The format, when the file name does not say it (or says it wrongly). */
  format?: VectorFileFormat;
  /** Largest decompressed size of a `.gz` file, in bytes (default 1 GiB). */
  maxGzipBytes?: number;
}

/** An open vector file: a VectorSource that holds a file descriptor until `close()`. */
export interface VectorFile extends VectorSource {
  readonly path: string;
  readonly format: VectorFileFormat;
  /** Whether it was decompressed from gzip into memory. */
  readonly gzip: boolean;
  /** Byte offset of row 0 (of its dimension prefix, for .Xvecs). */
  readonly dataOffset: number;
  /**
   * Reads rows [start, end) into `target` (an array of the file's dtype, at least (end − start) × dim long:
   * one buffer reused over a scan spares allocating and zeroing a new one per block); returns the part filled.
   */
  readInto<T extends StorageArray>(start: number, end: number, target: T): Promise<T>;
  close(): Promise<void>;
}

/** A typed array of `dtype` over `length` values of `buffer` (which must be aligned for it). */
export function storageView(
  dtype: StorageDtype,
  buffer: ArrayBuffer,
  byteOffset: number,
  length: number,
): StorageArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(buffer, byteOffset, length);
    case 'float64':
      return new Float64Array(buffer, byteOffset, length);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(buffer, byteOffset, length);
    case 'uint8':
      return new Uint8Array(buffer, byteOffset, length);
    case 'int8':
      return new Int8Array(buffer, byteOffset, length);
    case 'int32':
      return new Int32Array(buffer, byteOffset, length);
    case 'int64':
      return new BigInt64Array(buffer, byteOffset, length);
  }
}

/** Reverses the byte order of each `width`-byte value, in place (big-endian IDX data). */
export function swapBytes(bytes: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let k = 0; k + width <= bytes.length; k += width) {
    for (let a = k, b = k + width - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

async function openBytes(path: string, gzip: boolean, maxGzipBytes: number): Promise<ByteReader> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw fileIoError(path, 'open it', e);
  }
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) {
      throw fileIoError(path, 'read it', Object.assign(new Error('is a directory'), { code: 'EISDIR' }));
    }
    if (!gzip) return fileByteReader(path, handle, stat.size);
    if (stat.size > maxGzipBytes) {
      throw new KeOpsError(
        'ERR_FILE_IO',
        `${path}: cannot read: a gzipped file is decompressed into memory, and this one is ${stat.size} bytes compressed (limit ${maxGzipBytes}); gunzip it first, uncompressed files are read by row ranges`,
      );
    }
    const compressed = await readBytes(fileByteReader(path, handle, stat.size), 0, stat.size);
    let bytes: Buffer;
    try {
      bytes = await gunzipAsync(compressed, { maxOutputLength: maxGzipBytes });
    } catch (e) {
      if ((e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new KeOpsError(
          'ERR_FILE_IO',
          `${path}: cannot read: a gzipped file is decompressed into memory, and this one is over the ${maxGzipBytes}-byte limit; gunzip it first, uncompressed files are read by row ranges`,
        );
      }
      const atEnd = /unexpected end/i.test((e as Error).message);
      throw fileFormatError(path, atEnd ? stat.size : 0, `not a valid gzip stream: ${(e as Error).message}`);
    }
    await handle.close();
    return memoryByteReader(path, bytes);
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw e;
  }
}

/** Adds what the content looks like to a format error of a file whose name says another format. */
async function withContentHint(e: unknown, reader: ByteReader, format: VectorFileFormat): Promise<unknown> {
  if (!(e instanceof KeOpsError) || e.code !== 'ERR_FILE_FORMAT') return e;
  try {
    const head = await readBytes(reader, 0, Math.min(reader.size, 4096));
    const looks = sniffFormat(head, reader.size);
    if (looks !== undefined && !looks.includes(`.${format}`) && !(looks === 'IDX' && format === 'idx')) {
      return new KeOpsError(
        'ERR_FILE_FORMAT',
        `${e.message} (its content looks like a ${looks} file, not .${format})`,
      );
    }
  } catch {
    // The hint is a courtesy: the original error stands.
  }
  return e;
}

/**
 * Opens a vector file for reading by row ranges. The format comes from `options.format` or the file name
 * (.fvecs .ivecs .bvecs .fbin .u8bin .i8bin .ibin .npy .idx / *-ubyte, optionally followed by .gz).
 * A missing or unreadable file is ERR_FILE_IO; a malformed one ERR_FILE_FORMAT naming the byte offset.
 */
export async function openVectorFile(path: string, options: OpenVectorFileOptions = {}): Promise<VectorFile> {
  const { format, gzip } = resolveFormat(path, options.format);
  const maxGzipBytes = options.maxGzipBytes ?? DEFAULT_MAX_GZIP_BYTES;
  if (!Number.isSafeInteger(maxGzipBytes) || maxGzipBytes < 1) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `maxGzipBytes must be a positive integer, got ${String(maxGzipBytes)}`,
    );
  }
  const reader = await openBytes(path, gzip, maxGzipBytes);
  let layout: VectorLayout;
  try {
    layout = await VECTOR_FILE_FORMATS[format].parse(reader);
  } catch (e) {
    const error = await withContentHint(e, reader, format);
    await reader.close().catch(() => undefined);
    throw error;
  }
  return vectorFile(reader, layout, format, gzip);
}

function vectorFile(
  reader: ByteReader,
  layout: VectorLayout,
  format: VectorFileFormat,
  gzip: boolean,
): VectorFile {
  const { rows, dim, dtype } = layout;
  const valueBytes = STORAGE_BYTES[dtype];
  const rowBytes = dim * valueBytes;
  const stride = rowStride(layout);
  const path = reader.path;

  /** Reads rows [start, end) into `out` (their bytes, from its start). */
  async function readPlain(start: number, end: number, out: Uint8Array): Promise<void> {
    const bytes = out.subarray(0, (end - start) * rowBytes);
    await reader.readInto(layout.dataOffset + start * stride, bytes.length, bytes);
    if (layout.bigEndian) swapBytes(bytes, valueBytes);
  }

  /** The same for .Xvecs rows: read through a scratch buffer, each row's dimension prefix checked and dropped. */
  async function readPrefixed(start: number, end: number, out: Uint8Array): Promise<void> {
    const block = Math.max(1, Math.floor(VECS_SCRATCH_BYTES / stride));
    const scratch = new Uint8Array(Math.min(block, end - start) * stride);
    const view = new DataView(scratch.buffer);
    for (let r0 = start; r0 < end; r0 += block) {
      const r1 = Math.min(end, r0 + block);
      await reader.readInto(layout.dataOffset + r0 * stride, (r1 - r0) * stride, scratch);
      for (let r = r0; r < r1; r++) {
        const at = (r - r0) * stride;
        checkRowDim(path, layout, r, view.getInt32(at, true));
        out.set(scratch.subarray(at + 4, at + stride), (r - start) * rowBytes);
      }
    }
  }

  const checkRange = (start: number, end: number): void => checkRowRange(path, start, end, rows);
  const readBytesOf = (start: number, end: number, out: Uint8Array): Promise<void> =>
    layout.dimPrefix ? readPrefixed(start, end, out) : readPlain(start, end, out);

  return {
    path,
    name: path,
    format,
    gzip,
    rows,
    dim,
    dtype,
    dataOffset: layout.dataOffset,
    async read(start, end) {
      checkRange(start, end);
      const buffer = new ArrayBuffer((end - start) * rowBytes);
      await readBytesOf(start, end, new Uint8Array(buffer));
      return storageView(dtype, buffer, 0, (end - start) * dim);
    },
    async readInto(start, end, target) {
      checkRange(start, end);
      const length = (end - start) * dim;
      const own = storageDtypeOf(target);
      if (!(own === dtype || (own === 'float16' && dtype === 'bfloat16')) || target.length < length) {
        throw new KeOpsError(
          'ERR_INVALID_ARGUMENT',
          `${path}: readInto needs an array of at least ${length} ${dtype} values, got a ${target.constructor.name} of ${target.length}`,
        );
      }
      await readBytesOf(start, end, new Uint8Array(target.buffer, target.byteOffset, length * valueBytes));
      return target.subarray(0, length) as typeof target;
    },
    close: () => reader.close(),
  };
}

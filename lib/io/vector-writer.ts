/**
 * `createVectorFileWriter`: writes a vector file of known rows × dim without ever leaving a half-written file
 * at its path. Rows go to a temporary file beside it (same folder, so the final rename is atomic), sized up
 * front with its header written first; `writeRows` writes at row positions (every format has a fixed row
 * stride), in any order; `commit()` fsyncs, renames onto the path and fsyncs the folder; `abort()` removes the
 * temporary file. A job killed mid-way can reopen its temporary file (`tempPath` + `resume: true`): the header
 * is checked against rows / dim / dtype / format and the rows already written are kept.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { KeOpsError } from '../errors';
import { type StorageArray, type StorageDtype, STORAGE_BYTES, storageDtypeOf } from './vector-source';
import { fileIoError } from './byte-reader';
import {
  layoutBytes,
  MAX_HEADER_COUNT,
  resolveFormat,
  rowStride,
  type VectorFileFormat,
  VECTOR_FILE_FORMATS,
  type VectorLayout,
} from './formats';
import { swapBytes } from './vector-file';

/** Largest single positional write (fs writes stop at 2 GiB). */
const MAX_WRITE_BYTES = 2 ** 30;

export interface VectorFileWriterOptions {
  /** The format; default: the one the file name says. */
  format?: VectorFileFormat;
  rows: number;
  dim: number;
  /** The stored dtype; default: the format's first (float32 for .fbin / .fvecs / .npy, int32 for .ibin...). */
  dtype?: StorageDtype;
  /**
   * The temporary file, in the same folder as the path (default: a new unique name there). Without `resume`,
   * a file already there is replaced.
   */
  tempPath?: string;
  /**
   * Reopen `tempPath` if it exists, keeping its contents (after checking that its size and header are those
   * of this rows / dim / dtype / format: ERR_CHECKPOINT otherwise); create it if it does not.
   */
  resume?: boolean;
}

export interface VectorFileWriter {
  /** Where `commit()` puts the file. */
  readonly path: string;
  /** Where the rows are written until then. */
  readonly tempPath: string;
  readonly format: VectorFileFormat;
  readonly rows: number;
  readonly dim: number;
  readonly dtype: StorageDtype;
  /** Whether an existing temporary file was reopened (`resume`), its rows kept. */
  readonly resumed: boolean;
  /**
   * Writes rows [startRow, startRow + data.length / dim): `data` row-major, of the writer's dtype (a Uint16Array
   * for float16). Writes may run concurrently, in any order.
   */
  writeRows(startRow: number, data: StorageArray): Promise<void>;
  /** Flushes what was written to disk (a checkpoint can then record it). */
  sync(): Promise<void>;
  /** fsync, rename onto `path` (replacing a file there), fsync the folder. */
  commit(): Promise<void>;
  /** Closes and removes the temporary file; `path` is untouched. Idempotent. */
  abort(): Promise<void>;
  /**
   * Syncs and closes the temporary file and keeps it, for a later writer with `tempPath` and `resume: true` (a
   * job stopping cleanly, to continue later). `path` is untouched; `abort()` may still remove the file.
   */
  close(): Promise<void>;
}

/** The file bytes of a layout's header (empty for .Xvecs). */
function headerOf(
  format: VectorFileFormat,
  rows: number,
  dim: number,
  dtype: StorageDtype,
): {
  header: Uint8Array;
  layout: VectorLayout;
} {
  return VECTOR_FILE_FORMATS[format].create(rows, dim, dtype);
}

function checkOptions(
  path: string,
  options: VectorFileWriterOptions,
): {
  format: VectorFileFormat;
  dtype: StorageDtype;
} {
  const { format, gzip } = resolveFormat(path, options.format);
  if (gzip) throw new KeOpsError('ERR_INVALID_ARGUMENT', `${path}: gzipped files are read, not written`);
  const spec = VECTOR_FILE_FORMATS[format];
  const dtype = options.dtype ?? spec.dtypes[0];
  if (!spec.dtypes.includes(dtype)) {
    throw new KeOpsError(
      'ERR_ARG_DTYPE',
      `${path}: a .${format} file holds ${spec.dtypes.join(', ')}, not ${dtype}`,
    );
  }
  const { rows, dim } = options;
  if (!Number.isSafeInteger(rows) || rows < 0) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${path}: rows must be an integer >= 0, got ${String(rows)}`,
    );
  }
  if (!Number.isSafeInteger(dim) || dim < 1) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `${path}: dim must be an integer >= 1, got ${String(dim)}`);
  }
  if ((format.endsWith('bin') || format === 'idx') && (rows > MAX_HEADER_COUNT || dim > MAX_HEADER_COUNT)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${path}: a .${format} header holds rows and dim below 2^32`,
    );
  }
  if (format.endsWith('vecs') && rows === 0) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${path}: a .${format} file of 0 rows has no dimension to read back`,
    );
  }
  if (format.endsWith('vecs') && dim > 0x7fffffff) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `${path}: a .${format} row prefix holds dim below 2^31`);
  }
  return { format, dtype };
}

/** A new temporary name beside `path`: hidden, unique to this process and call. */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
}

async function writeFully(
  handle: FileHandle,
  tempPath: string,
  bytes: Uint8Array,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const piece = Math.min(bytes.length - done, MAX_WRITE_BYTES);
    try {
      const { bytesWritten } = await handle.write(bytes, done, piece, position + done);
      done += bytesWritten;
    } catch (e) {
      throw fileIoError(tempPath, `write ${piece} bytes at byte ${position + done}`, e);
    }
  }
}

async function readHeader(handle: FileHandle, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(bytes, done, length - done, done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return bytes.subarray(0, done);
}

/** Opens `tempPath` as a resumed file: ERR_CHECKPOINT unless its size and header are the expected ones. */
async function reopen(
  tempPath: string,
  header: Uint8Array,
  layout: VectorLayout,
): Promise<FileHandle | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(tempPath, 'r+');
  } catch (e) {
    if ((e as { code?: unknown }).code === 'ENOENT') return undefined;
    throw fileIoError(tempPath, 'reopen it', e);
  }
  try {
    const size = (await handle.stat()).size;
    const expected = layoutBytes(layout);
    if (size !== expected) {
      throw new KeOpsError(
        'ERR_CHECKPOINT',
        `${tempPath}: cannot resume: the file has ${size} bytes, a ${layout.rows} × ${layout.dim} ${layout.dtype} file of this format has ${expected}`,
      );
    }
    const found = await readHeader(handle, header.length);
    const differs = found.findIndex((b, k) => b !== header[k]);
    if (differs >= 0) {
      throw new KeOpsError(
        'ERR_CHECKPOINT',
        `${tempPath}: cannot resume: its header differs at byte ${differs} from that of a ${layout.rows} × ${layout.dim} ${layout.dtype} file of this format`,
      );
    }
    return handle;
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw e instanceof KeOpsError ? e : fileIoError(tempPath, 'reopen it', e);
  }
}

/** Bytes to write for rows of a layout: the data itself, or a copy with dimension prefixes / swapped bytes. */
function rowBytesOf(layout: VectorLayout, data: StorageArray, rows: number): Uint8Array {
  const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (!layout.dimPrefix && !layout.bigEndian) return raw;
  if (layout.bigEndian) {
    const copy = raw.slice();
    swapBytes(copy, STORAGE_BYTES[layout.dtype]);
    return copy;
  }
  const stride = rowStride(layout);
  const rowBytes = stride - 4;
  const out = new Uint8Array(rows * stride);
  const view = new DataView(out.buffer);
  for (let r = 0; r < rows; r++) {
    view.setInt32(r * stride, layout.dim, true);
    out.set(raw.subarray(r * rowBytes, (r + 1) * rowBytes), r * stride + 4);
  }
  return out;
}

/** Whether `data` is an array of `dtype` (float16 and bfloat16: a Uint16Array). */
function holds(data: unknown, dtype: StorageDtype): boolean {
  const own = storageDtypeOf(data);
  return own === dtype || (own === 'float16' && dtype === 'bfloat16');
}

/**
 * Starts writing a rows × dim vector file to a temporary file beside `path`; nothing appears at `path` before
 * `commit()`.
 */
export async function createVectorFileWriter(
  path: string,
  options: VectorFileWriterOptions,
): Promise<VectorFileWriter> {
  const { format, dtype } = checkOptions(path, options);
  const { rows, dim } = options;
  if (options.resume === true && options.tempPath === undefined) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `${path}: resume needs the tempPath of the file to reopen`);
  }
  const tempPath = options.tempPath ?? temporaryPathFor(path);
  if (dirname(resolve(tempPath)) !== dirname(resolve(path)) || resolve(tempPath) === resolve(path)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${tempPath}: the temporary file must be another file in the folder of ${path} (so that renaming it is atomic)`,
    );
  }
  const { header, layout } = headerOf(format, rows, dim, dtype);
  let handle = options.resume === true ? await reopen(tempPath, header, layout) : undefined;
  const resumed = handle !== undefined;
  if (handle === undefined) {
    try {
      handle = await open(tempPath, options.tempPath === undefined ? 'wx' : 'w');
    } catch (e) {
      throw fileIoError(tempPath, 'create it', e);
    }
    try {
      await writeFully(handle, tempPath, header, 0);
      await handle.truncate(layoutBytes(layout));
    } catch (e) {
      await handle.close().catch(() => undefined);
      await unlink(tempPath).catch(() => undefined);
      throw e instanceof KeOpsError ? e : fileIoError(tempPath, `size it to ${layoutBytes(layout)} bytes`, e);
    }
  }
  const file: FileHandle = handle;
  // closed: by close(), or by a commit whose rename failed; the rows stay in the temporary file until abort().
  let state: 'open' | 'closed' | 'committed' | 'aborted' = 'open';
  const stride = rowStride(layout);

  const checkOpen = (action: string): void => {
    if (state !== 'open')
      throw new KeOpsError('ERR_FILE_IO', `${tempPath}: cannot ${action}: the writer is ${state}`);
  };

  return {
    path,
    tempPath,
    format,
    rows,
    dim,
    dtype,
    resumed,
    async writeRows(startRow, data) {
      checkOpen('write');
      if (!holds(data, dtype)) {
        throw new KeOpsError(
          'ERR_ARG_DTYPE',
          `${path}: rows of ${dtype} expected, got a ${(data as object)?.constructor?.name ?? typeof data}`,
        );
      }
      const count = data.length / dim;
      if (!Number.isInteger(count)) {
        throw new KeOpsError('ERR_ARG_SHAPE', `${path}: ${data.length} values are not whole rows of ${dim}`);
      }
      if (!Number.isSafeInteger(startRow) || startRow < 0 || startRow + count > rows) {
        throw new KeOpsError(
          'ERR_INVALID_ARGUMENT',
          `${path}: rows [${startRow}, ${startRow + count}) are outside the file's ${rows} rows`,
        );
      }
      if (count === 0) return;
      await writeFully(
        file,
        tempPath,
        rowBytesOf(layout, data, count),
        layout.dataOffset + startRow * stride,
      );
    },
    async sync() {
      checkOpen('sync');
      try {
        await file.sync();
      } catch (e) {
        throw fileIoError(tempPath, 'sync it', e);
      }
    },
    async commit() {
      checkOpen('commit');
      try {
        await file.sync();
        await file.close();
      } catch (e) {
        throw fileIoError(tempPath, 'sync and close it', e);
      }
      state = 'closed';
      try {
        await rename(tempPath, path);
      } catch (e) {
        throw fileIoError(path, `rename ${tempPath} onto it (the rows stay there until abort())`, e);
      }
      state = 'committed';
      await syncFolder(dirname(resolve(path)));
    },
    async close() {
      if (state !== 'open') return;
      state = 'closed';
      try {
        await file.sync();
        await file.close();
      } catch (e) {
        await file.close().catch(() => undefined);
        throw fileIoError(tempPath, 'sync and close it', e);
      }
    },
    async abort() {
      if (state === 'committed' || state === 'aborted') return;
      state = 'aborted';
      await file.close().catch(() => undefined);
      try {
        await unlink(tempPath);
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'ENOENT') throw fileIoError(tempPath, 'remove it', e);
      }
    },
  };
}

/** Makes a rename durable: fsync of the folder (skipped where the platform cannot fsync folders). */
async function syncFolder(folder: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(folder, 'r');
    await handle.sync();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF') {
      throw fileIoError(folder, 'sync the folder', e);
    }
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

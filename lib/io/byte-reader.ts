/**
 * Bytes of a file read at positions: from an open file descriptor (positional reads, so a file of any size,
 * over 2 GiB included, is never loaded whole), or from a buffer in memory (a decompressed .gz file). Also the
 * two errors every file reader and writer throws: ERR_FILE_FORMAT (names the file and a byte offset) and
 * ERR_FILE_IO (names the file and the system error code).
 */
import type { FileHandle } from 'node:fs/promises';
import { KeOpsError } from '../errors';

/** Largest single positional read: fs reads stop at 2 GiB, so bigger ranges are read in pieces. */
const MAX_READ_BYTES = 2 ** 30;

/** A malformed file: the message names the file and the byte offset the problem was found at. */
export function fileFormatError(path: string, offset: number, message: string): KeOpsError {
  return new KeOpsError('ERR_FILE_FORMAT', `${path}: at byte ${offset}: ${message}`);
}

/** A file that cannot be opened, read or written: the message names the file and the system error code. */
export function fileIoError(path: string, action: string, cause: unknown): KeOpsError {
  const code = (cause as { code?: unknown } | null)?.code;
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new KeOpsError(
    'ERR_FILE_IO',
    `${path}: cannot ${action}: ${typeof code === 'string' ? `${code} (${detail})` : detail}`,
    { cause },
  );
}

/** Bytes [offset, offset + length) of a file, read on demand. */
export interface ByteReader {
  readonly path: string;
  /** The file's size in bytes (a safe integer: files up to 8 PiB). */
  readonly size: number;
  /**
   * Reads exactly `length` bytes at `offset` into `target` (from `targetOffset`). A file shorter than that is
   * ERR_FILE_FORMAT (truncated) naming the offset where its bytes end; a failed read is ERR_FILE_IO.
   */
  readInto(offset: number, length: number, target: Uint8Array, targetOffset?: number): Promise<void>;
  close(): Promise<void>;
}

/** Reads a whole range into a new buffer. */
export async function readBytes(reader: ByteReader, offset: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  await reader.readInto(offset, length, bytes);
  return bytes;
}

function truncated(path: string, end: number, wanted: number): KeOpsError {
  return fileFormatError(
    path,
    end,
    `the file is truncated: it ends here, ${wanted} bytes before the data it declares`,
  );
}

/** A reader over an open file (which it owns and closes). */
export function fileByteReader(path: string, handle: FileHandle, size: number): ByteReader {
  let closed = false;
  return {
    path,
    size,
    async readInto(offset, length, target, targetOffset = 0) {
      if (closed) throw new KeOpsError('ERR_FILE_IO', `${path}: cannot read: the file is closed`);
      let done = 0;
      while (done < length) {
        const piece = Math.min(length - done, MAX_READ_BYTES);
        let bytesRead: number;
        try {
          ({ bytesRead } = await handle.read(target, targetOffset + done, piece, offset + done));
        } catch (e) {
          throw fileIoError(path, `read ${piece} bytes at byte ${offset + done}`, e);
        }
        if (bytesRead === 0) throw truncated(path, offset + done, length - done);
        done += bytesRead;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await handle.close();
      } catch (e) {
        throw fileIoError(path, 'close', e);
      }
    },
  };
}

/** A reader over bytes in memory. */
export function memoryByteReader(path: string, bytes: Uint8Array): ByteReader {
  let closed = false;
  return {
    path,
    size: bytes.length,
    readInto(offset, length, target, targetOffset = 0) {
      if (closed)
        return Promise.reject(new KeOpsError('ERR_FILE_IO', `${path}: cannot read: the file is closed`));
      if (offset + length > bytes.length) {
        return Promise.reject(truncated(path, bytes.length, offset + length - bytes.length));
      }
      target.set(bytes.subarray(offset, offset + length), targetOffset);
      return Promise.resolve();
    },
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
}

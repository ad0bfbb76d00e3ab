/**
 * Where a distributed job reads its inputs and writes shard results and outputs. Plans hold locations (strings);
 * a `JobStorage` turns them into row readers, writers and bytes. `fileStorage` serves paths on a filesystem every
 * worker mounts (NFS, a cluster filesystem, a Kubernetes volume); an object-store implementation (s3://…) can be
 * passed in the same place without touching plans, shards or merges.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { KeOpsError } from '../errors';
import { openVectorFile } from '../io/vector-file';
import { createVectorFileWriter } from '../io/vector-writer';
import type { StorageArray, StorageDtype, VectorSource } from '../io/vector-source';

/** A vector output file being written: rows by position, then committed (appears whole) or aborted. */
export interface VectorWriter {
  /** Writes rows [start, start + data.length / dim). */
  writeRows(start: number, data: StorageArray): Promise<void>;
  /** Makes the file appear at its location, whole. */
  commit(): Promise<void>;
  /** Drops what was written; idempotent. */
  abort(): Promise<void>;
}

export interface VectorOutputSpec {
  readonly rows: number;
  readonly dim: number;
  readonly dtype: StorageDtype;
}

export interface JobStorage {
  /** Opens input vectors by location. */
  openVectors(location: string): Promise<VectorSource>;
  /** Starts an output vector file (its format from the location's extension). */
  createVectors(location: string, spec: VectorOutputSpec): Promise<VectorWriter>;
  /** Whether something is stored at a location. */
  exists(location: string): Promise<boolean>;
  /** The bytes at a location, or undefined when there is nothing there. */
  readBytes(location: string): Promise<Uint8Array | undefined>;
  /** Stores bytes at a location so that readers see either nothing or all of them. */
  writeBytes(location: string, bytes: Uint8Array): Promise<void>;
  /** Joins a folder location and a name. */
  join(folder: string, name: string): string;
}

const ioError = (what: string, path: string, e: unknown) =>
  new KeOpsError('ERR_FILE_IO', `cannot ${what} ${path}: ${(e as Error).message}`, { cause: e });

/**
 * Writes a file under a temporary name in its folder (created if needed), flushes it, then renames it into place:
 * readers, and a second writer of the same bytes, never see a partial file.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const folder = dirname(path);
  const temp = join(folder, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(folder, { recursive: true });
  } catch (e) {
    throw ioError('create the folder', folder, e);
  }
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (e) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw ioError('write', path, e);
  }
}

/** Reads a whole file; undefined when it does not exist. */
export async function readFileIfExists(path: string): Promise<Uint8Array | undefined> {
  try {
    return await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', path, e);
  }
}

/** Storage on a filesystem every worker mounts: locations are paths, vectors are files of lib/io's formats. */
export function fileStorage(): JobStorage {
  return {
    openVectors: (location) => openVectorFile(location),
    createVectors: (location, spec) => createVectorFileWriter(location, spec),
    exists: (location) =>
      access(location).then(
        () => true,
        () => false,
      ),
    readBytes: readFileIfExists,
    writeBytes: writeFileAtomic,
    join: (folder, name) => join(folder, name),
  };
}

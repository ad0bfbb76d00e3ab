/**
 * The kernel cache: compiled CPU kernels (and CUDA images, `<key>.cubin` / `<key>.ptx`, see
 * lib/backend/cuda/kernels.ts) on disk, shared by every process of a user, with the loaded kernels of this
 * process in front.
 *
 * Folder: `KEOPS_CACHE_DIR`, else `$XDG_CACHE_HOME` (or `~/.cache`) + `/keops-node/<package version>/`.
 * Entry: `<key>.so`, key = sha256 of everything that determines the machine code (generated source, reduction,
 * options, compiler identity and flags, ABI header, CPU). The file is the shared object followed by a 48-byte
 * trailer (magic, body length, sha256 of the key and the body): the dynamic loader ignores bytes after the ELF
 * image; a truncated or damaged entry, or an intact entry of another key renamed to this one, fails the check
 * and is rebuilt. Entries are compiled to a temporary file in the
 * same folder, checked, loaded, and only then renamed into place, so readers in other processes see either no
 * entry or a complete one; two processes compiling the same key both succeed (the last rename wins, same code).
 * Temporary files are named `.tmp-<key prefix>-<host tag>-<pid>-<random>`: those of a process that is gone
 * (a compiler orphaned by a killed process) are removed by the next compilation and counted by cacheInfo().
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { KeOpsError } from '../errors';
import {
  kernelCompilerFlags,
  compileSharedObject,
  compileSharedObjectSync,
  type CompilerInfo,
  findCompiler,
  findCompilerSync,
} from './cpu/compile';
import { type CpuKernelHandle, nativeAddon, toKeOpsError } from './native';
import { nativeIncludeDir, packageVersion } from './package-root';

/** Bump when the entry file format or the key recipe changes. */
const ENTRY_FORMAT_VERSION = 2;
const TRAILER_MAGIC = Buffer.from('KEOPSNK2', 'latin1');
const TRAILER_BYTES = TRAILER_MAGIC.length + 8 + 32;
const ENTRY_NAME = /^[0-9a-f]{64}\.(so|cubin|ptx)$/;
const TEMP_PREFIX = '.tmp-';

/** What to compile: the generated kernel and what it was generated from. */
export interface CpuKernelSpec {
  /** Generated C++ source (lib/codegen). */
  readonly source: string;
  /** The generator's compiler flags (added after the base flags). */
  readonly compilerFlags: readonly string[];
  /** Canonical description of the computation: reduction string, dtype, dtypeAcc, sumScheme, arg count... */
  readonly description: string;
}

export type KernelOrigin = 'memory' | 'disk' | 'compiled';

export interface AcquiredCpuKernel {
  readonly kernel: CpuKernelHandle;
  readonly key: string;
  /** The cache entry file. */
  readonly path: string;
  /** Where it came from this time: already loaded, loaded from the disk cache, or compiled now. */
  readonly origin: KernelOrigin;
  /** Milliseconds spent compiling (0 unless origin is 'compiled'). */
  readonly compileMs: number;
}

export interface CacheInfo {
  readonly folder: string;
  /** Number of kernel entries. */
  readonly entries: number;
  /** Bytes used by the folder (entries and leftover temporary files). */
  readonly bytes: number;
  /** Temporary files whose owner process is gone (or that are over a day old): removed by the next compile. */
  readonly staleTemporaries: number;
}

/** The cache folder for the current environment (read on each call, so tests may point it elsewhere). */
export function cacheFolder(): string {
  const explicit = process.env.KEOPS_CACHE_DIR;
  if (explicit) return explicit;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'keops-node', packageVersion());
}

// Loaded kernels and compilations in progress, by entry path. These are caches of immutable, content-addressed
// objects (the path is a hash of the code), not program state: a hit and a miss differ only in speed.
const loadedKernels = new Map<string, AcquiredCpuKernel>();
const pendingKernels = new Map<string, Promise<AcquiredCpuKernel>>();

/** Bounds the compilers running at once (each is CPU- and memory-hungry); waiting compilations queue in order. */
class CompileSlots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly capacity: number) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    // A finishing task hands its slot straight to the next waiter, so `running` never exceeds the capacity.
    if (this.running < this.capacity) this.running++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.running--;
    }
  }
}

const compileSlots = new CompileSlots(Math.max(1, availableParallelism()));

let abiHeaderHash: string | undefined;

function entryKey(spec: CpuKernelSpec, compiler: CompilerInfo, flags: readonly string[]): string {
  abiHeaderHash ??= createHash('sha256')
    .update(readFileSync(join(nativeIncludeDir(), 'keops_abi.h')))
    .digest('hex');
  const recipe = {
    format: ENTRY_FORMAT_VERSION,
    abiVersion: nativeAddon().abiVersion,
    abiHeader: abiHeaderHash,
    description: spec.description,
    source: createHash('sha256').update(spec.source).digest('hex'),
    compiler: compiler.identity,
    flags,
    // -march=native: a cache folder shared between machines (NFS home) must not mix CPUs.
    cpu: `${process.arch} ${cpus()[0]?.model ?? 'unknown'}`,
  };
  return createHash('sha256').update(JSON.stringify(recipe)).digest('hex');
}

/** The trailer's hash covers the key: an entry only checks out under the name it was written for. */
function entryDigest(key: string, body: Buffer): Buffer {
  return createHash('sha256').update(`${key}\n`).update(body).digest();
}

function withTrailer(body: Buffer, key: string): Buffer {
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(body.length));
  return Buffer.concat([body, TRAILER_MAGIC, length, entryDigest(key, body)]);
}

/** Whether `file` is a complete entry for `key`: trailer present, length and hash of key + body matching. */
export function isIntactEntry(file: Buffer, key: string): boolean {
  if (file.length < TRAILER_BYTES) return false;
  const bodyLength = file.length - TRAILER_BYTES;
  const trailer = file.subarray(bodyLength);
  if (!trailer.subarray(0, TRAILER_MAGIC.length).equals(TRAILER_MAGIC)) return false;
  if (trailer.readBigUInt64LE(TRAILER_MAGIC.length) !== BigInt(bodyLength)) return false;
  return entryDigest(key, file.subarray(0, bodyLength)).equals(trailer.subarray(TRAILER_MAGIC.length + 8));
}

/** Tells this machine's temporary files from those of other machines sharing the folder (NFS home). */
const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
const TEMP_NAME = /^\.tmp-[0-9a-f]{16}-([0-9a-f]{8})-(\d+)-[0-9a-f]{12}(\.[a-z]+)?$/;
/** A temporary file older than this is stale whoever made it. */
const TEMP_MAX_AGE_MS = 24 * 3600 * 1000;

function tempBase(folder: string, key: string): string {
  const random = randomBytes(6).toString('hex');
  return join(folder, `${TEMP_PREFIX}${key.slice(0, 16)}-${HOST_TAG}-${process.pid}-${random}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/** Whether the temporary file `name` in `folder` was left by a process that is gone (or is very old). */
function isStaleTemporary(folder: string, name: string): boolean {
  if (!name.startsWith(TEMP_PREFIX)) return false;
  const parts = TEMP_NAME.exec(name);
  if (parts !== null && parts[1] === HOST_TAG && !processAlive(Number(parts[2]))) return true;
  try {
    return Date.now() - statSync(join(folder, name)).mtimeMs > TEMP_MAX_AGE_MS;
  } catch {
    return false;
  }
}

/** Best effort: another process may be removing the same files. */
function removeStaleTemporaries(folder: string): void {
  for (const name of listFolder(folder)) {
    if (isStaleTemporary(folder, name)) rmSync(join(folder, name), { force: true, recursive: true });
  }
}

/** The compiler exited with success but `path` is not there: a broken compiler or wrapper. */
function readCompilerOutput(path: string, compiler: CompilerInfo): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new KeOpsError(
      'ERR_COMPILE',
      `${compiler.path} reported success but wrote no shared object (${(e as Error).message}); check CXX`,
      { cause: e },
    );
  }
}

function entryFlags(spec: CpuKernelSpec): string[] {
  return kernelCompilerFlags(spec.source.length, spec.compilerFlags);
}

function loadKernel(path: string): CpuKernelHandle {
  try {
    return nativeAddon().loadCpuKernel(path);
  } catch (e) {
    throw toKeOpsError(e, 'loading a compiled kernel');
  }
}

/** Loads an existing entry if it is intact and loadable; undefined means "compile it". */
function loadEntryIfValid(path: string, key: string, file: Buffer | undefined): CpuKernelHandle | undefined {
  if (file === undefined || !isIntactEntry(file, key)) return undefined;
  try {
    return nativeAddon().loadCpuKernel(path);
  } catch {
    return undefined; // e.g. built against another ABI: rebuild it
  }
}

function cacheFolderError(folder: string, e: unknown): KeOpsError {
  if (e instanceof KeOpsError) return e;
  return new KeOpsError(
    'ERR_CACHE',
    `cannot use the kernel cache folder ${folder} (${(e as Error).message}); set KEOPS_CACHE_DIR to a writable folder`,
    { cause: e },
  );
}

function remember(acquired: AcquiredCpuKernel): AcquiredCpuKernel {
  loadedKernels.set(acquired.path, { ...acquired, origin: 'memory', compileMs: 0 });
  return acquired;
}

/** The kernel for `spec`: from memory, from disk, or compiled now (once per key, however many callers wait). */
export async function acquireCpuKernel(spec: CpuKernelSpec): Promise<AcquiredCpuKernel> {
  const compiler = await findCompiler();
  const flags = entryFlags(spec);
  const key = entryKey(spec, compiler, flags);
  const folder = cacheFolder();
  const path = join(folder, `${key}.so`);
  const loaded = loadedKernels.get(path);
  if (loaded !== undefined) return loaded;
  let pending = pendingKernels.get(path);
  if (pending === undefined) {
    pending = (async (): Promise<AcquiredCpuKernel> => {
      const existing = await readFile(path).catch(() => undefined);
      const fromDisk = loadEntryIfValid(path, key, existing);
      if (fromDisk !== undefined) {
        return remember({ kernel: fromDisk, key, path, origin: 'disk', compileMs: 0 });
      }
      await mkdir(folder, { recursive: true }).catch((e: unknown) => {
        throw cacheFolderError(folder, e);
      });
      removeStaleTemporaries(folder);
      const temp = tempBase(folder, key);
      const started = performance.now();
      try {
        await writeFile(`${temp}.cpp`, spec.source).catch((e: unknown) => {
          throw cacheFolderError(folder, e);
        });
        await compileSlots.run(() => compileSharedObject(compiler, flags, `${temp}.cpp`, `${temp}.so`));
        const compileMs = performance.now() - started;
        const body = readCompilerOutput(`${temp}.so`, compiler);
        await writeFile(`${temp}.so`, withTrailer(body, key)).catch((e: unknown) => {
          throw cacheFolderError(folder, e);
        });
        // Load before publishing: a kernel that cannot load never becomes a cache entry.
        const kernel = loadKernel(`${temp}.so`);
        await rename(`${temp}.so`, path).catch((e: unknown) => {
          throw cacheFolderError(folder, e);
        });
        return remember({ kernel, key, path, origin: 'compiled', compileMs });
      } finally {
        await rm(`${temp}.cpp`, { force: true });
        await rm(`${temp}.so`, { force: true });
      }
    })().finally(() => pendingKernels.delete(path));
    pendingKernels.set(path, pending);
  }
  return pending;
}

/** Synchronous `acquireCpuKernel`, for `callSync`: blocks while compiling. */
export function acquireCpuKernelSync(spec: CpuKernelSpec): AcquiredCpuKernel {
  const compiler = findCompilerSync();
  const flags = entryFlags(spec);
  const key = entryKey(spec, compiler, flags);
  const folder = cacheFolder();
  const path = join(folder, `${key}.so`);
  const loaded = loadedKernels.get(path);
  if (loaded !== undefined) return loaded;
  let existing: Buffer | undefined;
  try {
    existing = readFileSync(path);
  } catch {
    existing = undefined;
  }
  const fromDisk = loadEntryIfValid(path, key, existing);
  if (fromDisk !== undefined) return remember({ kernel: fromDisk, key, path, origin: 'disk', compileMs: 0 });
  try {
    mkdirSync(folder, { recursive: true });
  } catch (e) {
    throw cacheFolderError(folder, e);
  }
  removeStaleTemporaries(folder);
  const temp = tempBase(folder, key);
  const started = performance.now();
  try {
    try {
      writeFileSync(`${temp}.cpp`, spec.source);
    } catch (e) {
      throw cacheFolderError(folder, e);
    }
    compileSharedObjectSync(compiler, flags, `${temp}.cpp`, `${temp}.so`);
    const compileMs = performance.now() - started;
    const body = readCompilerOutput(`${temp}.so`, compiler);
    try {
      writeFileSync(`${temp}.so`, withTrailer(body, key));
    } catch (e) {
      throw cacheFolderError(folder, e);
    }
    const kernel = loadKernel(`${temp}.so`);
    try {
      renameSync(`${temp}.so`, path);
    } catch (e) {
      throw cacheFolderError(folder, e);
    }
    return remember({ kernel, key, path, origin: 'compiled', compileMs });
  } finally {
    rmSync(`${temp}.cpp`, { force: true });
    rmSync(`${temp}.so`, { force: true });
  }
}

/**
 * A cache entry that is not a CPU kernel (CUDA images): `<key>.<extension>` holding `body` and the trailer.
 * Reading returns the body of an intact entry, else undefined (a damaged entry is then rewritten). Writing is
 * atomic (temporary file, then rename); a folder that cannot be written is ERR_CACHE.
 */
export function readCacheEntrySync(key: string, extension: 'cubin' | 'ptx'): Buffer | undefined {
  let file: Buffer;
  try {
    file = readFileSync(join(cacheFolder(), `${key}.${extension}`));
  } catch {
    return undefined;
  }
  return isIntactEntry(file, key) ? file.subarray(0, file.length - TRAILER_BYTES) : undefined;
}

export async function readCacheEntry(key: string, extension: 'cubin' | 'ptx'): Promise<Buffer | undefined> {
  const file = await readFile(join(cacheFolder(), `${key}.${extension}`)).catch(() => undefined);
  return file !== undefined && isIntactEntry(file, key)
    ? file.subarray(0, file.length - TRAILER_BYTES)
    : undefined;
}

export function writeCacheEntrySync(key: string, extension: 'cubin' | 'ptx', body: Buffer): string {
  const folder = cacheFolder();
  const path = join(folder, `${key}.${extension}`);
  const temp = `${tempBase(folder, key)}.${extension}`;
  try {
    mkdirSync(folder, { recursive: true });
    writeFileSync(temp, withTrailer(body, key));
    renameSync(temp, path);
  } catch (e) {
    rmSync(temp, { force: true });
    throw cacheFolderError(folder, e);
  }
  return path;
}

export async function writeCacheEntry(
  key: string,
  extension: 'cubin' | 'ptx',
  body: Buffer,
): Promise<string> {
  const folder = cacheFolder();
  const path = join(folder, `${key}.${extension}`);
  const temp = `${tempBase(folder, key)}.${extension}`;
  try {
    await mkdir(folder, { recursive: true });
    await writeFile(temp, withTrailer(body, key));
    await rename(temp, path);
  } catch (e) {
    await rm(temp, { force: true });
    throw cacheFolderError(folder, e);
  }
  return path;
}

function listFolder(folder: string): string[] {
  try {
    return readdirSync(folder);
  } catch {
    return [];
  }
}

/** What the disk cache holds (for `keops-node cache info`). */
export function cacheInfo(): CacheInfo {
  const folder = cacheFolder();
  let entries = 0;
  let bytes = 0;
  let staleTemporaries = 0;
  for (const name of listFolder(folder)) {
    if (!ENTRY_NAME.test(name) && !name.startsWith(TEMP_PREFIX)) continue;
    try {
      bytes += statSync(join(folder, name)).size;
      if (ENTRY_NAME.test(name)) entries++;
      else if (isStaleTemporary(folder, name)) staleTemporaries++;
    } catch {
      // removed by another process meanwhile
    }
  }
  return { folder, entries, bytes, staleTemporaries };
}

/**
 * Deletes the disk cache's entries and leftover temporary files (only files this library writes, whatever the
 * folder holds besides). Kernels already loaded in this process keep working. Returns what was removed.
 */
export function clearCache(): CacheInfo {
  const before = cacheInfo();
  for (const name of listFolder(before.folder)) {
    if (ENTRY_NAME.test(name) || name.startsWith(TEMP_PREFIX)) {
      rmSync(join(before.folder, name), { force: true, recursive: true });
    }
  }
  return before;
}

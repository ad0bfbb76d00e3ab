/**
 * Job checkpoints: a small JSON file beside a job's output that says which job it belongs to (a hash of the
 * inputs' identity and of the options that change the output) and how far the job got, so that a job killed at
 * any moment (even with SIGKILL) resumes where its last checkpoint left it.
 *
 * Writes are atomic and durable: the text goes to `FILE.tmp`, is fsynced, renamed over FILE, and the folder is
 * fsynced, so a reader sees the old checkpoint or the new one, never a mix. The body carries a sha256 of itself:
 * a file that is not a complete checkpoint of this format is ERR_CHECKPOINT ("corrupt"), never trusted.
 *
 * Input identity (`identifyInput`): what the source reports (rows, dim, storage dtype), for a file also its
 * resolved path, size and modification time, and for every source a sha256 of a sample of its stored rows (the
 * first and last rows and 16 rows spread between them, about 1 MiB at most). A changed header, size, timestamp or
 * sampled row makes another job; a file copied elsewhere (another path) also does — resuming then means
 * starting again, which is safe, whereas resuming over changed inputs would silently mix two results.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { KeOpsError } from '../errors';
import type { VectorSource } from '../io/vector-source';

/** The `kind` field of every checkpoint file. */
const CHECKPOINT_KIND = 'keops-node job checkpoint';
const CHECKPOINT_VERSION = 1;
/** Bytes of stored rows hashed per input, at most (whole rows; at least the first and last row). */
const SAMPLE_BYTES = 1 << 20;
/** Rows spread over the middle of an input that the sample includes. */
const SAMPLE_SPREAD = 16;

/** What identifies one input of a job. */
export interface InputIdentity {
  readonly name: string;
  /** For a file: the resolved path, its size in bytes and its modification time (ms since 1970). */
  readonly path?: string;
  readonly size?: number;
  readonly mtimeMs?: number;
  readonly rows: number;
  readonly dim: number;
  readonly dtype: string;
  /** sha256 (hex) of the sampled rows' stored bytes. */
  readonly sample: string;
}

/** A job's identity: plain JSON values only (its hash is taken over its canonical JSON text). */
export type JobIdentity = { readonly [key: string]: JsonValue };
type JsonValue =
  string | number | boolean | null | readonly JsonValue[] | { readonly [key: string]: JsonValue };

/** The checkpoint of a job whose output rows are produced in order: rows [0, rowsDone) are durably written. */
export interface Checkpoint {
  /** sha256 (hex) of the canonical identity. */
  readonly job: string;
  /** The identity itself, to tell the user what differs when another job finds this checkpoint. */
  readonly identity: JobIdentity;
  readonly rows: number;
  readonly rowsDone: number;
}

/** Row ranges [start, end) whose stored bytes make an input's sample: head, spread, tail. */
export function sampleRanges(rows: number, rowBytes: number): [number, number][] {
  if (rows === 0) return [];
  const edge = Math.max(1, Math.floor(SAMPLE_BYTES / 4 / Math.max(1, rowBytes)));
  const ranges: [number, number][] = [[0, Math.min(rows, edge)]];
  for (let s = 1; s <= SAMPLE_SPREAD; s++) {
    const row = Math.floor((s * rows) / (SAMPLE_SPREAD + 1));
    ranges.push([row, row + 1]);
  }
  ranges.push([Math.max(0, rows - edge), rows]);
  return ranges;
}

function bytesOf(data: ArrayBufferView): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** The identity of an input: a VectorSource, with the file path it was opened from when there is one. */
export async function identifyInput(source: VectorSource, path?: string): Promise<InputIdentity> {
  const hash = createHash('sha256');
  hash.update(`${source.rows}x${source.dim} ${source.dtype}\n`);
  const probe = source.rows > 0 ? await source.read(0, 1) : undefined;
  const rowBytes = probe === undefined ? 0 : probe.byteLength;
  for (const [a, b] of sampleRanges(source.rows, rowBytes)) {
    hash.update(`${a}:${b}\n`);
    hash.update(bytesOf(await source.read(a, b)));
  }
  const base = { name: source.name, rows: source.rows, dim: source.dim, dtype: source.dtype };
  const sample = hash.digest('hex');
  if (path === undefined) return { ...base, sample };
  const resolved = resolve(path);
  let stat;
  try {
    stat = await fsp.stat(resolved);
  } catch (e) {
    throw fileError(resolved, 'cannot stat', e);
  }
  return { ...base, path: resolved, size: stat.size, mtimeMs: Math.floor(stat.mtimeMs), sample };
}

/** JSON text with object keys sorted, so that equal identities hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  );
}

export function jobHash(identity: JobIdentity): string {
  return createHash('sha256').update(canonicalJson(identity)).digest('hex');
}

function fileError(path: string, what: string, e: unknown): KeOpsError {
  const reason = e instanceof Error ? e.message : String(e);
  return new KeOpsError('ERR_FILE_IO', `${path}: ${what}: ${reason}`, { cause: e });
}

const corrupt = (path: string, why: string) =>
  new KeOpsError(
    'ERR_CHECKPOINT',
    `${path}: not a valid checkpoint (${why}); delete it to start the job again`,
  );

/** Reads a checkpoint; undefined when there is none. ERR_CHECKPOINT when the file is not a valid checkpoint. */
export async function readCheckpoint(path: string): Promise<Checkpoint | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fileError(path, 'cannot read the checkpoint', e);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw corrupt(path, 'not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw corrupt(path, 'not an object');
  const { checksum, ...body } = parsed as Record<string, unknown>;
  if (body.kind !== CHECKPOINT_KIND) throw corrupt(path, 'not a keops-node checkpoint');
  if (body.version !== CHECKPOINT_VERSION) {
    throw corrupt(
      path,
      `format version ${String(body.version)}, this keops-node writes ${CHECKPOINT_VERSION}`,
    );
  }
  if (checksum !== createHash('sha256').update(canonicalJson(body)).digest('hex')) {
    throw corrupt(path, 'checksum mismatch');
  }
  const { job, identity, rows, rowsDone } = body;
  const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (
    typeof job !== 'string' ||
    typeof identity !== 'object' ||
    identity === null ||
    !count(rows) ||
    !count(rowsDone) ||
    (rowsDone as number) > (rows as number) ||
    jobHash(identity as JobIdentity) !== job
  ) {
    throw corrupt(path, 'inconsistent fields');
  }
  return { job, identity: identity as JobIdentity, rows: rows as number, rowsDone: rowsDone as number };
}

/** Writes a checkpoint atomically and durably (temporary file, fsync, rename, fsync of the folder). */
export async function writeCheckpoint(path: string, checkpoint: Checkpoint): Promise<void> {
  const body = { kind: CHECKPOINT_KIND, version: CHECKPOINT_VERSION, ...checkpoint };
  const checksum = createHash('sha256').update(canonicalJson(body)).digest('hex');
  const text = `${JSON.stringify({ ...body, checksum }, null, 2)}\n`;
  const temp = `${path}.tmp`;
  try {
    const handle = await fsp.open(temp, 'w');
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(temp, path);
    await syncFolder(dirname(path));
  } catch (e) {
    await fsp.rm(temp, { force: true }).catch(() => undefined);
    throw fileError(path, 'cannot write the checkpoint', e);
  }
}

/** Removes a checkpoint (and a leftover temporary one); no error when there is none. */
export async function removeCheckpoint(path: string): Promise<void> {
  try {
    await fsp.rm(`${path}.tmp`, { force: true });
    await fsp.rm(path, { force: true });
    await syncFolder(dirname(path));
  } catch (e) {
    throw fileError(path, 'cannot remove the checkpoint', e);
  }
}

/** Makes a folder's entries (created, renamed, removed files) durable. */
export async function syncFolder(folder: string): Promise<void> {
  const handle = await fsp.open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The fields in which two identities differ (dotted paths, at most a few levels deep), for the message that
 * tells a user why a checkpoint belongs to another job.
 */
export function identityDifferences(a: unknown, b: unknown, prefix = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => identityDifferences(a[k], b[k], prefix === '' ? k : `${prefix}.${k}`));
  }
  return canonicalJson(a) === canonicalJson(b) ? [] : [prefix === '' ? '(all)' : prefix];
}

/** A held job lock: `release()` removes it (idempotent). */
export interface JobLock {
  release(): Promise<void>;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

/**
 * Takes the lock file `path` for this process (its pid and host inside), so that two runs of one job — a
 * `--resume` started while the first run still goes — never write the same files. A lock left by a process
 * of this host that no longer runs (killed with -9) is taken over; a live one is ERR_CHECKPOINT.
 */
export async function acquireJobLock(path: string): Promise<JobLock> {
  const owner = `${process.pid} ${hostname()}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      await fsp.writeFile(path, owner, { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(path, 'cannot create the lock', e);
    }
    const text = await fsp.readFile(path, 'utf8').catch(() => '');
    const [pidText, host] = text.trim().split(' ');
    const pid = Number(pidText);
    const stale = host === hostname() && Number.isSafeInteger(pid) && pid > 0 && !isAlive(pid);
    if (!stale || attempt > 0) {
      throw new KeOpsError(
        'ERR_CHECKPOINT',
        `${path}: another process (${text.trim() === '' ? 'unknown' : `pid ${pidText} on ${host}`}) is running ` +
          'this job; if none is, delete the lock file',
      );
    }
    await fsp.rm(path, { force: true });
  }
  let held = true;
  return {
    async release() {
      if (!held) return;
      held = false;
      await fsp.rm(path, { force: true });
    },
  };
}

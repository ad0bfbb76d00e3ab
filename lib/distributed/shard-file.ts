/**
 * A shard result on disk: the serialised partial result of one shard, wrapped with what it belongs to, so that
 * the merge can tell a result of this plan and shard from a stale, foreign or damaged one.
 *
 *     0      8   magic "KEOPSSHD"
 *     8      4   envelope version (u32 LE, 1)
 *     12     4   header length L (u32 LE)
 *     16     L   header, JSON: { "plan": plan hash, "shard": index, "querySlice": [a, b], "baseSlice": [a, b] }
 *     16+L   …   the partial result (lib/jobs/partial-bytes.ts, with its own checksum)
 *     end−32 32  sha256 of everything before
 *
 * Shard results are named `shard-<index>.kps` in the plan's shard folder and written under a temporary name,
 * then renamed: a shard that runs twice (at-least-once delivery) writes the same bytes twice, harmlessly.
 */
import { createHash } from 'node:crypto';
import { KeOpsError } from '../errors';
import { PartialResult } from '../jobs/partial';
import { describeShard, type JobPlan, type ShardSpec, shardSpec } from './plan';
import type { JobStorage } from './storage';

const MAGIC = 'KEOPSSHD';
const VERSION = 1;
const CHECKSUM_BYTES = 32;

interface ShardHeader {
  readonly plan: string;
  readonly shard: number;
  readonly querySlice: readonly [number, number];
  readonly baseSlice: readonly [number, number];
}

export function shardFileName(index: number): string {
  return `shard-${String(index).padStart(6, '0')}.kps`;
}

export function shardLocation(plan: JobPlan, storage: JobStorage, index: number): string {
  return storage.join(plan.shardDir, shardFileName(index));
}

export function encodeShard(plan: JobPlan, shard: ShardSpec, partial: PartialResult): Uint8Array {
  const header: ShardHeader = {
    plan: plan.hash,
    shard: shard.index,
    querySlice: shard.querySlice,
    baseSlice: shard.baseSlice,
  };
  const head = Buffer.from(JSON.stringify(header), 'utf8');
  const body = partial.toBytes();
  const out = new Uint8Array(16 + head.length + body.length + CHECKSUM_BYTES);
  const view = new DataView(out.buffer);
  out.set(Buffer.from(MAGIC, 'latin1'), 0);
  view.setUint32(8, VERSION, true);
  view.setUint32(12, head.length, true);
  out.set(head, 16);
  out.set(body, 16 + head.length);
  const end = out.length - CHECKSUM_BYTES;
  out.set(createHash('sha256').update(out.subarray(0, end)).digest(), end);
  return out;
}

const shardError = (what: string, location: string, message: string, cause?: unknown) =>
  new KeOpsError('ERR_SHARD', `${what} in ${location}: ${message}`, cause === undefined ? {} : { cause });

/**
 * Parses and checks a shard result against its plan and shard: ERR_SHARD naming the shard and the file when the
 * envelope is damaged or belongs elsewhere, or when the partial inside is malformed (its ERR_PARTIAL_FORMAT as the
 * cause) or covers other rows.
 */
export function decodeShard(
  plan: JobPlan,
  index: number,
  bytes: Uint8Array,
  location: string,
): PartialResult {
  const shard = shardSpec(plan, index);
  const what = describeShard(shard);
  if (bytes.length < 16 + CHECKSUM_BYTES || Buffer.from(bytes.subarray(0, 8)).toString('latin1') !== MAGIC) {
    throw shardError(what, location, 'not a keops-node shard result (wrong magic number or too short)');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== VERSION)
    throw shardError(what, location, `envelope version ${version}, expected ${VERSION}`);
  const end = bytes.length - CHECKSUM_BYTES;
  const sum = createHash('sha256').update(bytes.subarray(0, end)).digest();
  if (!sum.equals(bytes.subarray(end))) {
    throw shardError(what, location, 'checksum mismatch: the file is corrupt or truncated');
  }
  const headLength = view.getUint32(12, true);
  if (16 + headLength > end) throw shardError(what, location, 'header length beyond the end of the file');
  let header: ShardHeader;
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(16, 16 + headLength)).toString('utf8')) as ShardHeader;
  } catch (e) {
    throw shardError(what, location, 'unreadable header', e);
  }
  if (header.plan !== plan.hash) {
    throw shardError(
      what,
      location,
      `it belongs to another plan (hash ${String(header.plan).slice(0, 12)}…, this plan is ${plan.hash.slice(0, 12)}…)`,
    );
  }
  const same = (a: readonly number[] | undefined, b: readonly number[]) =>
    Array.isArray(a) && a.length === 2 && a[0] === b[0] && a[1] === b[1];
  if (
    header.shard !== index ||
    !same(header.querySlice, shard.querySlice) ||
    !same(header.baseSlice, shard.baseSlice)
  ) {
    throw shardError(
      what,
      location,
      `it is the result of shard ${String(header.shard)} (query rows ${JSON.stringify(header.querySlice)}, base rows ${JSON.stringify(header.baseSlice)})`,
    );
  }
  let partial: PartialResult;
  try {
    partial = PartialResult.fromBytes(bytes.subarray(16 + headLength, end));
  } catch (e) {
    const reason = e instanceof KeOpsError ? `${e.code}: ${e.message}` : String(e);
    throw shardError(what, location, reason, e);
  }
  const [q0, q1] = shard.querySlice;
  const [b0, b1] = shard.baseSlice;
  const expected = b1 > b0 ? [[b0, b1]] : [];
  if (partial.rows !== q1 - q0 || JSON.stringify(partial.slices) !== JSON.stringify(expected)) {
    throw shardError(
      what,
      location,
      `its partial result covers ${partial.rows} query rows and base rows ${JSON.stringify(partial.slices)}`,
    );
  }
  return partial;
}

/** Reads a shard result: undefined when absent, ERR_SHARD when present but not a valid result of this shard. */
export async function readShard(
  plan: JobPlan,
  storage: JobStorage,
  index: number,
): Promise<PartialResult | undefined> {
  const location = shardLocation(plan, storage, index);
  const bytes = await storage.readBytes(location);
  return bytes === undefined ? undefined : decodeShard(plan, index, bytes, location);
}

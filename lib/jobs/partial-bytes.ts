/**
 * The byte format of a partial result (little-endian), version 1:
 *
 *     0    8   magic "KEOPSPRT"
 *     8    4   format version (u32, 1)
 *     12   4   dtype (u32: 1 float32, 2 float64)
 *     16   32  reduction content hash (sha256)
 *     48   8   output rows (u64)
 *     56   4   accumulator values per row (u32)
 *     60   4   accumulator indices per row (u32)
 *     64   4   number S of reduced-axis slices (u32)
 *     68   4   reserved (0)
 *     72  16S  slices: start, end (u64 each), sorted and disjoint
 *     ...  8·rows·values   accumulator values (f64)
 *     ...  8·rows·indices  global indices (f64 holding integers; -1 = no row reached the slot)
 *     ...  32  sha256 of everything before
 *
 * Anything else (wrong magic or version, inconsistent sizes, a bad checksum, non-integer indices) is
 * ERR_PARTIAL_FORMAT.
 */
import { createHash } from 'node:crypto';
import { KeOpsError } from '../errors';
import type { Dtype } from '../backend/plan';

const MAGIC = 'KEOPSPRT';
export const PARTIAL_FORMAT_VERSION = 1;
const HEADER_BYTES = 72;
const CHECKSUM_BYTES = 32;

export interface EncodedPartial {
  readonly reduction: string;
  readonly dtype: Dtype;
  readonly rows: number;
  readonly dimVal: number;
  readonly dimIdx: number;
  readonly slices: readonly (readonly [number, number])[];
  readonly val: Float64Array;
  readonly idx: Float64Array;
}

const bad = (message: string) =>
  new KeOpsError('ERR_PARTIAL_FORMAT', `not a valid partial result: ${message}`);

export function encodePartial(p: EncodedPartial): Uint8Array {
  const body = HEADER_BYTES + 16 * p.slices.length + 8 * (p.val.length + p.idx.length);
  const bytes = new Uint8Array(body + CHECKSUM_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set(Buffer.from(MAGIC, 'latin1'), 0);
  view.setUint32(8, PARTIAL_FORMAT_VERSION, true);
  view.setUint32(12, p.dtype === 'float32' ? 1 : 2, true);
  bytes.set(Buffer.from(p.reduction, 'hex'), 16);
  view.setBigUint64(48, BigInt(p.rows), true);
  view.setUint32(56, p.dimVal, true);
  view.setUint32(60, p.dimIdx, true);
  view.setUint32(64, p.slices.length, true);
  let at = HEADER_BYTES;
  for (const [a, b] of p.slices) {
    view.setBigUint64(at, BigInt(a), true);
    view.setBigUint64(at + 8, BigInt(b), true);
    at += 16;
  }
  for (const array of [p.val, p.idx]) {
    for (let k = 0; k < array.length; k++, at += 8) view.setFloat64(at, array[k], true);
  }
  bytes.set(createHash('sha256').update(bytes.subarray(0, body)).digest(), body);
  return bytes;
}

function safeCount(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${what} ${value} is too large`);
  return Number(value);
}

export function decodePartial(bytes: Uint8Array): EncodedPartial {
  if (!(bytes instanceof Uint8Array)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      'a serialised partial result must be a Uint8Array (or Buffer)',
    );
  }
  if (bytes.length < HEADER_BYTES + CHECKSUM_BYTES)
    throw bad(`${bytes.length} bytes is shorter than the header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (Buffer.from(bytes.subarray(0, 8)).toString('latin1') !== MAGIC) throw bad('wrong magic number');
  const version = view.getUint32(8, true);
  if (version !== PARTIAL_FORMAT_VERSION) {
    throw bad(`format version ${version}, this keops-node reads version ${PARTIAL_FORMAT_VERSION}`);
  }
  const body = bytes.length - CHECKSUM_BYTES;
  const sum = createHash('sha256').update(bytes.subarray(0, body)).digest();
  if (!sum.equals(bytes.subarray(body))) throw bad('checksum mismatch (corrupt or truncated data)');
  const dtypeCode = view.getUint32(12, true);
  if (dtypeCode !== 1 && dtypeCode !== 2) throw bad(`unknown dtype code ${dtypeCode}`);
  const reduction = Buffer.from(bytes.subarray(16, 48)).toString('hex');
  const rows = safeCount(view.getBigUint64(48, true), 'row count');
  const dimVal = view.getUint32(56, true);
  const dimIdx = view.getUint32(60, true);
  const sliceCount = view.getUint32(64, true);
  const expected = HEADER_BYTES + 16 * sliceCount + 8 * rows * (dimVal + dimIdx);
  if (expected !== body) throw bad(`${body} bytes of header and data, the header describes ${expected}`);
  const slices: [number, number][] = [];
  let at = HEADER_BYTES;
  for (let s = 0; s < sliceCount; s++, at += 16) {
    const a = safeCount(view.getBigUint64(at, true), 'slice start');
    const b = safeCount(view.getBigUint64(at + 8, true), 'slice end');
    const previousEnd = s === 0 ? -1 : slices[s - 1][1];
    if (!(a < b) || a <= previousEnd) throw bad('slices must be non-empty, sorted and disjoint');
    slices.push([a, b]);
  }
  const read = (n: number): Float64Array => {
    const out = new Float64Array(n);
    for (let k = 0; k < n; k++, at += 8) out[k] = view.getFloat64(at, true);
    return out;
  };
  const val = read(rows * dimVal);
  const idx = read(rows * dimIdx);
  for (let k = 0; k < idx.length; k++) {
    if (!Number.isSafeInteger(idx[k]) || idx[k] < -1) throw bad(`index ${idx[k]} is not an integer >= -1`);
  }
  return {
    reduction,
    dtype: dtypeCode === 1 ? 'float32' : 'float64',
    rows,
    dimVal,
    dimIdx,
    slices,
    val,
    idx,
  };
}

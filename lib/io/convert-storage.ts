/**
 * Conversion of stored values between storage dtypes (what `keops-node convert` does to each block), and the
 * rule of which conversions happen without being asked for:
 *
 * - exact: every value of the source dtype is a value of the target (uint8 → int32, int32 → float64,
 *   float16 → float32, ...): always done;
 * - rounds: float to a narrower float (float64 → float32, float32 → float16, ...): done, rounding to nearest
 *   (ties to even), overflow to ±Infinity, as a cast does;
 * - explicit: everything else (float → int, int → narrower int, int32 → float32, int64 → float64): done only when
 *   the target dtype is named explicitly. Floats then round to the nearest integer (ties to even); a value that
 *   does not fit the target (out of range, NaN, ±Infinity) is an error naming its row and column — never a
 *   silent wrap-around or clamp.
 */
import { KeOpsError } from '../errors';
import {
  bfloat16ToNumber,
  convertToFloat,
  float16ToNumber,
  type StorageArray,
  type StorageDtype,
} from './vector-source';
import { storageView } from './vector-file';
import { STORAGE_BYTES } from './vector-source';

export type ConversionRule = 'exact' | 'rounds' | 'explicit';

const FLOAT_PRECISION: Readonly<
  Partial<Record<StorageDtype, { exponentBits: number; fractionBits: number }>>
> = {
  float16: { exponentBits: 5, fractionBits: 10 },
  bfloat16: { exponentBits: 8, fractionBits: 7 },
  float32: { exponentBits: 8, fractionBits: 23 },
  float64: { exponentBits: 11, fractionBits: 52 },
};

const INTEGER_RANGE: Readonly<Partial<Record<StorageDtype, readonly [number, number]>>> = {
  uint8: [0, 255],
  int8: [-128, 127],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [-(2 ** 63), 2 ** 63 - 1],
};

export function isIntegerDtype(dtype: StorageDtype): boolean {
  return INTEGER_RANGE[dtype] !== undefined;
}

/** Whether converting `from` to `to` is exact, rounds floats, or must be asked for (see the file comment). */
export function conversionRule(from: StorageDtype, to: StorageDtype): ConversionRule {
  if (from === to) return 'exact';
  const fromRange = INTEGER_RANGE[from];
  const toRange = INTEGER_RANGE[to];
  const toFloat = FLOAT_PRECISION[to];
  const fromFloat = FLOAT_PRECISION[from];
  if (fromRange !== undefined) {
    if (toRange !== undefined)
      return toRange[0] <= fromRange[0] && fromRange[1] <= toRange[1] ? 'exact' : 'explicit';
    // Integers up to 2^(fraction bits + 1) are exact in a float.
    const exactUpTo = 2 ** ((toFloat as { fractionBits: number }).fractionBits + 1);
    return Math.max(-fromRange[0], fromRange[1]) <= exactUpTo ? 'exact' : 'explicit';
  }
  if (toRange !== undefined || fromFloat === undefined || toFloat === undefined) return 'explicit';
  return toFloat.exponentBits >= fromFloat.exponentBits && toFloat.fractionBits >= fromFloat.fractionBits
    ? 'exact'
    : 'rounds';
}

/** x rounded to the nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5 || (diff === 0.5 && floor % 2 !== 0)) return floor + 1;
  return floor;
}

/**
 * The bit pattern of the binary float with `exponentBits` / `fractionBits` nearest to x (ties to even; overflow
 * to ±Infinity; NaN to the quiet NaN): float16 (5, 10) and bfloat16 (8, 7).
 */
export function encodeSmallFloat(x: number, exponentBits: number, fractionBits: number): number {
  const signBit = 1 << (exponentBits + fractionBits);
  const infinity = ((1 << exponentBits) - 1) << fractionBits;
  if (Number.isNaN(x)) return infinity | (1 << (fractionBits - 1));
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  const a = Math.abs(x);
  const bias = (1 << (exponentBits - 1)) - 1;
  const minNormal = 2 ** (1 - bias);
  if (a < minNormal) {
    // Subnormal: a multiple of 2^(1 - bias - fractionBits); rounding up to 2^fractionBits gives the smallest normal.
    return sign | roundHalfEven(a / 2 ** (1 - bias - fractionBits));
  }
  let exponent = Math.floor(Math.log2(a));
  if (2 ** exponent > a) exponent--;
  else if (2 ** (exponent + 1) <= a) exponent++;
  let fraction = roundHalfEven((a / 2 ** exponent - 1) * 2 ** fractionBits);
  if (fraction === 2 ** fractionBits) {
    fraction = 0;
    exponent++;
  }
  if (exponent > bias) return sign | infinity;
  return sign | ((exponent + bias) << fractionBits) | fraction;
}

/** Where a value is, for messages: `name` row r column c (`firstRow` is the row of the block's first value). */
export interface ConversionContext {
  name?: string;
  dim?: number;
  firstRow?: number;
}

function doesNotFit(
  value: number | bigint,
  k: number,
  to: StorageDtype,
  context: ConversionContext,
): KeOpsError {
  const dim = context.dim ?? 1;
  const row = (context.firstRow ?? 0) + Math.floor(k / dim);
  return new KeOpsError(
    'ERR_INVALID_ARGUMENT',
    `${context.name ?? 'values'}: row ${row}, column ${k % dim}: ${String(value)} does not fit ${to}`,
  );
}

/**
 * Converts `source` (of dtype `from`) to a new array of dtype `to` (`source` itself when they are the same
 * dtype). Conversions whose rule is 'explicit' must
 * be asked for with `explicit: true` (ERR_ARG_DTYPE otherwise); integer targets are range-checked.
 */
export function convertStorage(
  source: StorageArray,
  from: StorageDtype,
  to: StorageDtype,
  options: ConversionContext & { explicit?: boolean } = {},
): StorageArray {
  if (conversionRule(from, to) === 'explicit' && options.explicit !== true) {
    throw new KeOpsError(
      'ERR_ARG_DTYPE',
      `${options.name ?? 'values'}: converting ${from} to ${to} may change values; ask for ${to} explicitly to convert anyway (floats round to the nearest integer, values out of range are refused)`,
    );
  }
  if (from === to) return source;
  const n = source.length;
  const target = storageView(to, new ArrayBuffer(n * STORAGE_BYTES[to]), 0, n);
  if (to === 'float32' || to === 'float64')
    return convertToFloat(source, from, target as Float32Array | Float64Array);

  const read: (k: number) => number | bigint =
    from === 'float16'
      ? (k) => float16ToNumber((source as Uint16Array)[k])
      : from === 'bfloat16'
        ? (k) => bfloat16ToNumber((source as Uint16Array)[k])
        : (k) => (source as Exclude<StorageArray, Uint16Array>)[k];

  const small = to === 'float16' || to === 'bfloat16' ? FLOAT_PRECISION[to] : undefined;
  if (small !== undefined) {
    const out = target as Uint16Array;
    for (let k = 0; k < n; k++)
      out[k] = encodeSmallFloat(Number(read(k)), small.exponentBits, small.fractionBits);
    return target;
  }
  const [lo, hi] = INTEGER_RANGE[to] as readonly [number, number];
  if (to === 'int64') {
    const out = target as BigInt64Array;
    for (let k = 0; k < n; k++) {
      const v = read(k);
      if (typeof v === 'bigint') {
        out[k] = v;
        continue;
      }
      const r = roundHalfEven(v);
      // 2^63 is the first double out of range; Number.isFinite excludes NaN and the infinities.
      if (!Number.isFinite(r) || r < lo || r >= 2 ** 63) throw doesNotFit(v, k, to, options);
      out[k] = BigInt(r);
    }
    return target;
  }
  const out = target as Exclude<StorageArray, Uint16Array | BigInt64Array | Float32Array | Float64Array>;
  for (let k = 0; k < n; k++) {
    const v = read(k);
    if (typeof v === 'bigint') {
      if (v < BigInt(lo) || v > BigInt(hi)) throw doesNotFit(v, k, to, options);
      out[k] = Number(v);
      continue;
    }
    const r = roundHalfEven(v);
    if (!(r >= lo && r <= hi)) throw doesNotFit(v, k, to, options);
    out[k] = r;
  }
  return target;
}

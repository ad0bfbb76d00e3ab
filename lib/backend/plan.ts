/**
 * From a call's arguments to independent jobs, validating everything before any native work: argument count,
 * types, dtypes, shapes, batch broadcasting (docs/semantics.md 4.6) and ranges (4.4). Backend-independent.
 *
 * Conventions (shared with lib/reference.ts): M = rows of the i-inputs, N = rows of the j-inputs, 1 when there
 * are none. Batched inputs are `{ data, shape }` with shape [...batch, rows, dim] (Vi, Vj) or [...batch, dim]
 * (Pm); missing leading batch dims count as 1 and each batch dim is equal across inputs or 1. Every batch entry
 * becomes one job whose argument arrays are zero-copy views. Ranges describe, per block of output rows, the
 * inner intervals reduced over; rows outside every block get the neutral value. Ranges and batch dims exclude
 * each other, as in KeOps.
 */
import { KeOpsError, type KeOpsErrorCode } from '../errors';
import type { FormulaVariable } from '../formula/aliases';
import { batchOffset, broadcastBatchShape } from '../reference';
import { nativeRanges, type NativeRanges } from './native-ranges';
import { DeviceArray } from './cuda/device-array';
import { detachedError, elementCount, isDetached } from './typed-arrays';
import { checkedBatchCount } from './limits';
import { fromUserCode } from '../validate';

export type FloatArray = Float32Array | Float64Array;
export type Dtype = 'float32' | 'float64';

/** An input's values: in host memory, or on a GPU (then the call runs there). */
export type ArgData = FloatArray | DeviceArray;

/** One argument: a row-major array (rows = length / dim), or the array with its full shape (batch dims). */
export type GenredArg = FloatArray | { readonly data: FloatArray; readonly shape: readonly number[] };

/** An argument of a forward call, which may also live on a GPU (DeviceArray). */
export type CallArg =
  GenredArg | DeviceArray | { readonly data: DeviceArray; readonly shape: readonly number[] };

/** KeOps' ranges 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i); pairs flattened. */
export type GenredRanges = readonly [
  Int32Array | readonly number[],
  Int32Array | readonly number[],
  Int32Array | readonly number[],
  Int32Array | readonly number[],
  Int32Array | readonly number[],
  Int32Array | readonly number[],
];

export interface PlannedJob {
  /** One array per argument position (views into the caller's arrays); empty when inputs are on a GPU. */
  readonly args: FloatArray[];
  /** Per position, where this job's values start in `ReductionPlan.inputs` (elements). */
  readonly offsets: number[];
}

export interface ReductionPlan {
  readonly dtype: Dtype;
  /** Output rows per batch entry (M for tag 0, N for tag 1) and reduced rows (the other one). */
  readonly nx: number;
  readonly ny: number;
  readonly batchShape: readonly number[];
  /** The caller's arrays, one per argument position. */
  readonly inputs: readonly ArgData[];
  /** The GPU holding the DeviceArray inputs, if any (they all live on it). */
  readonly device?: number;
  /** Whether the positions are read by the formula (false: a placeholder argument). */
  readonly declared: readonly boolean[];
  /** Per position, the values one job reads from its argument (rows x dim; 0 for a placeholder). */
  readonly argElements: Float64Array;
  readonly jobs: readonly PlannedJob[];
  /** Quads (rowBegin, rowEnd, firstInterval, intervalCount) covering [0, nx), and the [start, end) pairs. */
  readonly blocks: Float64Array;
  readonly intervals: Float64Array;
  /** Number of (output row, reduced row) pairs the whole call evaluates: a measure of its cost. */
  readonly pairCount: number;
}

interface ArgInfo {
  data: ArgData;
  rows: number;
  batch: number[];
}

const fail = (code: KeOpsErrorCode, message: string): KeOpsError => new KeOpsError(code, message);

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

const kindOf = (v: FormulaVariable): string => (v.cat === 0 ? 'Vi' : v.cat === 1 ? 'Vj' : 'Pm');

function describe(v: FormulaVariable | undefined, pos: number): string {
  if (v === undefined) return `argument ${pos}`;
  return `argument ${pos} (${v.name ?? ''}${v.name ? ' = ' : ''}${kindOf(v)}(${v.dim}))`;
}

function dtypeOf(data: unknown, what: string): Dtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof DeviceArray) {
    if (data.dtype === 'int32') {
      throw fail('ERR_ARG_DTYPE', `${what} is an int32 DeviceArray; only float32 and float64 are supported`);
    }
    if (data.disposed) throw fail('ERR_DISPOSED', `${what}: ${data} was used after dispose()`);
    return data.dtype;
  }
  if (ArrayBuffer.isView(data)) {
    throw fail(
      'ERR_ARG_DTYPE',
      `${what} is a ${data.constructor.name}; only Float32Array and Float64Array are supported`,
    );
  }
  throw fail(
    'ERR_ARG_TYPE',
    `${what} must be a Float32Array, a Float64Array, a DeviceArray or { data, shape }`,
  );
}

function readArg(arg: unknown, v: FormulaVariable | undefined, pos: number): ArgInfo & { dtype: Dtype } {
  const what = describe(v, pos);
  const isShaped = typeof arg === 'object' && arg !== null && !ArrayBuffer.isView(arg) && 'data' in arg;
  const data = isShaped ? (arg as { data: unknown }).data : arg;
  const dtype = dtypeOf(data, what);
  const array = data as ArgData;
  // The real element count, whatever a subclass getter or an own `length` property claims.
  const length = array instanceof DeviceArray ? array.length : elementCount(array, what);
  if (length === 0 && !(array instanceof DeviceArray) && isDetached(array)) throw detachedError(what);
  if (v === undefined) return { data: array, rows: 0, batch: [], dtype }; // a position no formula reads
  const minRank = v.cat === 2 ? 1 : 2;
  if (isShaped) {
    const shapeValue = (arg as { shape?: unknown }).shape;
    if (!Array.isArray(shapeValue) || !shapeValue.every(isCount) || shapeValue.length < minRank) {
      throw fail(
        'ERR_ARG_SHAPE',
        `${what}: shape must be [...batch, ${v.cat === 2 ? '' : 'rows, '}${v.dim}] (integers >= 0), got ${JSON.stringify(shapeValue)}`,
      );
    }
    const shape = shapeValue as number[];
    const size = shape.reduce((p, s) => p * s, 1);
    if (size !== length) {
      throw fail('ERR_ARG_SHAPE', `${what}: shape [${shape}] needs ${size} values, got ${length}`);
    }
    if (shape[shape.length - 1] !== v.dim) {
      throw fail('ERR_ARG_SHAPE', `${what}: the last entry of shape [${shape}] must be the dim ${v.dim}`);
    }
    const rows = v.cat === 2 ? 1 : shape[shape.length - 2];
    return { data: array, rows, batch: shape.slice(0, shape.length - minRank), dtype };
  }
  if (length % v.dim !== 0) {
    throw fail('ERR_ARG_SHAPE', `${what}: ${length} values is not a multiple of the dim ${v.dim}`);
  }
  if (v.cat === 2 && length !== v.dim) {
    throw fail('ERR_ARG_SHAPE', `${what}: a parameter needs exactly ${v.dim} values, got ${length}`);
  }
  return { data: array, rows: length / v.dim, batch: [], dtype };
}

function commonRows(
  infos: readonly ArgInfo[],
  variables: readonly (FormulaVariable | undefined)[],
  cat: 0 | 1,
): number {
  let rows: number | undefined;
  let first = -1;
  infos.forEach((info, pos) => {
    if (variables[pos]?.cat !== cat) return;
    if (rows === undefined) {
      rows = info.rows;
      first = pos;
    } else if (info.rows !== rows) {
      throw fail(
        'ERR_ARG_SHAPE',
        `all ${cat === 0 ? 'Vi' : 'Vj'} arguments must have the same number of rows: ` +
          `${describe(variables[first], first)} has ${rows}, ${describe(variables[pos], pos)} has ${info.rows}`,
      );
    }
  });
  return rows ?? 1;
}

function checkRangesTuple(ranges: unknown): GenredRanges {
  if (!Array.isArray(ranges) || ranges.length !== 6) {
    throw fail(
      'ERR_RANGES',
      'ranges must be the 6-tuple [ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i] of Int32Arrays',
    );
  }
  ranges.forEach((r: unknown, k) => {
    if (!(r instanceof Int32Array) && !Array.isArray(r)) {
      throw fail('ERR_RANGES', `ranges[${k}] must be an Int32Array (or an array of integers)`);
    }
  });
  return ranges as unknown as GenredRanges;
}

/**
 * Validates a call and splits it into jobs. `variables` lists every declared variable (aliases and inline);
 * `argCount` is the number of arguments expected; `tag` is the reduction's (0: one output row per i).
 */
export function planReduction(
  args: unknown,
  variables: readonly FormulaVariable[],
  argCount: number,
  tag: 0 | 1,
  ranges?: unknown,
): ReductionPlan {
  args = fromUserCode(
    'arguments',
    () => (Array.isArray(args) ? Array.from(args as unknown[]) : args),
    'ERR_ARG_TYPE',
  );
  if (!Array.isArray(args)) {
    throw fail('ERR_ARG_COUNT', `the arguments must be an array of ${argCount} arrays`);
  }
  if (args.length !== argCount) {
    throw fail(
      'ERR_ARG_COUNT',
      `expected ${argCount} argument${argCount === 1 ? '' : 's'} (one per variable position), got ${args.length}`,
    );
  }
  const byPosition: (FormulaVariable | undefined)[] = new Array(argCount).fill(undefined);
  for (const v of variables) byPosition[v.pos] = v;

  const infos = fromUserCode(
    'arguments',
    () => (args as unknown[]).map((arg, pos) => readArg(arg, byPosition[pos], pos)),
    'ERR_ARG_TYPE',
  );
  const dtypes = new Set(infos.map((info) => info.dtype));
  if (dtypes.size > 1) {
    throw fail(
      'ERR_ARG_DTYPE',
      'all arguments must have the same dtype: mix of Float32Array and Float64Array',
    );
  }
  const dtype: Dtype = infos[0]?.dtype ?? 'float64';
  const M = commonRows(infos, byPosition, 0);
  const N = commonRows(infos, byPosition, 1);
  const [nx, ny] = tag === 0 ? [M, N] : [N, M];

  let batchShape: number[];
  try {
    batchShape = broadcastBatchShape(
      infos.filter((_, pos) => byPosition[pos] !== undefined).map((i) => i.batch),
    );
  } catch (e) {
    throw fail('ERR_ARG_SHAPE', (e as Error).message);
  }

  let rangeBlocks: NativeRanges;
  if (ranges !== undefined && ranges !== null) {
    if (batchShape.length > 0) throw fail('ERR_RANGES', 'ranges cannot be combined with batch dimensions');
    const r = checkRangesTuple(ranges);
    try {
      rangeBlocks =
        tag === 0 ? nativeRanges(r[0], r[1], r[2], nx, ny) : nativeRanges(r[3], r[4], r[5], nx, ny);
    } catch (e) {
      throw fail('ERR_RANGES', (e as Error).message);
    }
  } else {
    rangeBlocks = nativeRanges([0, nx], [ny > 0 ? 1 : 0], ny > 0 ? [0, ny] : [], nx, ny);
  }

  const devices = new Set(
    infos.filter((info) => info.data instanceof DeviceArray).map((info) => (info.data as DeviceArray).device),
  );
  if (devices.size > 1) {
    throw fail(
      'ERR_DEVICE_MISMATCH',
      `the DeviceArray arguments live on different GPUs (${[...devices].join(', ')})`,
    );
  }
  const device = devices.size === 1 ? [...devices][0] : undefined;

  const batchCount = checkedBatchCount(batchShape);
  const jobs: PlannedJob[] = [];
  for (let b = 0; b < batchCount; b++) {
    const offsets = infos.map((info, pos) => {
      const v = byPosition[pos];
      if (v === undefined || batchShape.length === 0) return 0;
      return batchOffset(b, batchShape, info.batch) * info.rows * v.dim;
    });
    const args =
      device !== undefined
        ? []
        : infos.map((info, pos) => {
            const v = byPosition[pos];
            const data = info.data as FloatArray;
            if (v === undefined || batchShape.length === 0) return data;
            return data.subarray(offsets[pos], offsets[pos] + info.rows * v.dim);
          });
    jobs.push({ args, offsets });
  }
  const { blocks, intervals, pairsPerJob } = rangeBlocks;
  return {
    dtype,
    nx,
    ny,
    batchShape,
    inputs: infos.map((info) => info.data),
    ...(device === undefined ? {} : { device }),
    declared: byPosition.map((v) => v !== undefined),
    argElements: Float64Array.from(infos, (info, pos) => {
      const v = byPosition[pos];
      return v === undefined ? 0 : (v.cat === 2 ? 1 : info.rows) * v.dim;
    }),
    jobs,
    blocks,
    intervals,
    pairCount: pairsPerJob * jobs.length,
  };
}

/** A fresh array of the same values (the constructor reads the source's internal slots, not its properties). */
function copyOf(array: FloatArray): FloatArray {
  return array instanceof Float32Array ? new Float32Array(array) : new Float64Array(array);
}

/**
 * The same plan on private copies of its host inputs: for a call that cannot hand its inputs to the addon (which
 * copies them) before returning to the caller, so that what the caller then does with its arrays (overwrite,
 * transfer, shrink) cannot change the call.
 */
export function snapshotPlan(plan: ReductionPlan): ReductionPlan {
  const copies = plan.inputs.map((data) => (data instanceof DeviceArray ? data : copyOf(data)));
  const jobs = plan.jobs.map((job): PlannedJob => ({
    offsets: job.offsets,
    args: job.args.map((view, pos) => {
      const copy = copies[pos] as FloatArray;
      return copy.subarray(job.offsets[pos], job.offsets[pos] + elementCount(view, `argument ${pos}`));
    }),
  }));
  return { ...plan, inputs: copies, jobs };
}

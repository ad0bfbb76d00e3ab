/**
 * Partial results: a reduction over a slice of its reduced axis, kept as the raw accumulator state so that
 * partials of disjoint slices — computed in any order, by other processes or machines — merge into the result of
 * one call over their union.
 *
 *     const reducer = new PartialReducer(new Genred('SqDist(x,y)', ['x = Vi(3)', 'y = Vj(3)'], { reduction: 'ArgKMin', k: 5, axis: 1 }));
 *     const a = await reducer.compute([x, yFirst], { start: 0 });            // j in [0, n1)
 *     const b = await reducer.compute([x, ySecond], { start: n1 });          // j in [n1, n)
 *     const result = reducer.finalize(reducer.merge([b, a]));               // = one call over [0, n)
 *     const again = reducer.fromBytes(a.toBytes());                          // across processes
 *
 * The state of each reduction and its merge are those the reduction declares (lib/formula/reductions.ts:
 * `partialState`, `merge`), the same definitions the kernels use to combine the split-over-j partials of a GPU
 * launch: sums for Sum; (max, shifted sums) for the LogSumExp family; values and indices for the Min, Max, ArgMin, KMin families.
 * States are kept in float64 whatever the data dtype (sums settled: any Kahan compensation of the kernel is
 * folded in), so merging never loses float32 precision. Indices are global (offset by the slice start) and may
 * pass 2^31; a slot no row reached has index -1 (its value is the neutral ±inf), and sorts after real ones.
 */
import { createHash } from 'node:crypto';
import { KeOpsError } from '../errors';
import type { CallArg, Dtype, FloatArray } from '../backend/plan';
import { type RunOptions, ReductionRunner } from '../backend/runner';
import { type GenredReduction, type GenredValues, rawGenredReduction } from '../formula/genred-reductions';
import type { Reduction, ReductionAcc } from '../formula/reduction';
import { partialStateReduction } from '../formula/reductions';
import type { NodeGenred } from '../genred';
import { decodePartial, encodePartial } from './partial-bytes';

/** Largest reduced-axis length whose indices fit an Int32Array; longer ones get a BigInt64Array. */
export const INT32_INDEX_LIMIT = 2 ** 31;

/** A [start, end) range of the reduced axis, in global rows. */
export type RowSlice = readonly [number, number];

/** Indices as int32, or as int64 when the reduced axis is longer than 2^31 rows. */
export type ChunkedIndices = Int32Array | BigInt64Array;
/** A reduction's result (as Genred's), with int64 indices for reduced axes longer than 2^31 rows. */
export type ChunkedResult = GenredValues | ChunkedIndices | { values: GenredValues; indices: ChunkedIndices };

/** The accumulator state of `rows` output rows over the reduced rows of `slices`. Treat as immutable. */
export class PartialResult {
  constructor(
    /** Content hash of the reduction (hex sha256): engine reduction, output kind and width. */
    readonly reduction: string,
    /** The data dtype of the computation (and of the final values). */
    readonly dtype: Dtype,
    /** Output rows. */
    readonly rows: number,
    /** Accumulator values and indices per row. */
    readonly dimVal: number,
    readonly dimIdx: number,
    /** Disjoint, sorted [start, end) ranges of the reduced axis folded in (adjacent ranges joined). */
    readonly slices: readonly RowSlice[],
    /** rows × dimVal accumulator values. */
    readonly val: Float64Array,
    /** rows × dimIdx global indices (integers, -1 for a slot nothing reached). */
    readonly idx: Float64Array,
  ) {
    Object.freeze(this.slices);
    Object.freeze(this);
  }

  /** Number of reduced rows folded in. */
  get reducedRows(): number {
    return this.slices.reduce((n, [a, b]) => n + (b - a), 0);
  }

  /** The serialised form: header (magic, format version, reduction hash, dtype, rows, slices), data, checksum. */
  toBytes(): Uint8Array {
    return encodePartial(this);
  }

  /** Parses `toBytes` output (validating structure and checksum; ERR_PARTIAL_FORMAT otherwise). */
  static fromBytes(bytes: Uint8Array): PartialResult {
    const d = decodePartial(bytes);
    return new PartialResult(d.reduction, d.dtype, d.rows, d.dimVal, d.dimIdx, d.slices, d.val, d.idx);
  }
}

export interface PartialComputeOptions extends Pick<RunOptions, 'backend' | 'threads' | 'device'> {
  /** Global index of the first reduced row of the arguments (default 0). */
  readonly start?: number;
}

const mismatch = (message: string) => new KeOpsError('ERR_PARTIAL_MISMATCH', message);

/** Sorted union of disjoint slice lists; overlapping slices are an error (they would count rows twice). */
export function unionSlices(lists: readonly (readonly RowSlice[])[]): RowSlice[] {
  const all = lists.flat().sort((p, q) => p[0] - q[0]);
  const out: [number, number][] = [];
  for (const [a, b] of all) {
    const last = out[out.length - 1];
    if (last !== undefined && a < last[1]) {
      throw mismatch(
        `partial results overlap: rows [${a}, ${b}) and [${last[0]}, ${last[1]}) of the reduced axis`,
      );
    }
    if (last !== undefined && a === last[1]) last[1] = b;
    else if (b > a) out.push([a, b]);
  }
  return out;
}

/**
 * The accumulator operations of one state reduction on row-major float64 state arrays: identity, folding a
 * kernel's raw output in (with global indices), merging, finalising. Everything goes through the reduction's
 * declared `init`, `merge` and `finalize`.
 */
export class StateOps {
  readonly dimVal: number;
  readonly dimIdx: number;
  /** The neutral accumulator (what `init` gives). */
  private readonly neutral: ReductionAcc;
  private readonly a: { val: Float64Array; idx: Float64Array };
  private readonly b: { val: Float64Array; idx: Float64Array };

  constructor(readonly state: Reduction) {
    this.dimVal = state.layout.dimredVal;
    this.dimIdx = state.layout.dimredIdx;
    if (this.dimIdx > 0 && this.dimIdx !== this.dimVal) {
      throw new KeOpsError('ERR_INTERNAL', `${state.def.name}: index slots do not pair with value slots`);
    }
    this.neutral = { val: new Float64Array(this.dimVal), idx: new Float64Array(this.dimIdx) };
    state.def.init(this.neutral, state);
    this.neutral.idx.fill(-1);
    this.a = { val: new Float64Array(this.dimVal), idx: new Float64Array(this.dimIdx) };
    this.b = { val: new Float64Array(this.dimVal), idx: new Float64Array(this.dimIdx) };
  }

  /** `rows` neutral accumulators. */
  identity(rows: number): { val: Float64Array; idx: Float64Array } {
    const val = new Float64Array(rows * this.dimVal);
    const idx = new Float64Array(rows * this.dimIdx);
    for (let r = 0; r < rows; r++) {
      val.set(this.neutral.val, r * this.dimVal);
      idx.set(this.neutral.idx, r * this.dimIdx);
    }
    return { val, idx };
  }

  /**
   * Merges the raw state-reduction output of a kernel call (`rawRows` rows, local indices) into rows
   * [row0, row0 + rawRows) of the state, its indices offset by `start`. A slot still holding the neutral value was
   * reached by no row (folds only admit strictly better values): its index becomes -1.
   */
  foldRaw(
    into: { val: Float64Array; idx: Float64Array },
    row0: number,
    raw: { val: FloatArray; idx: Int32Array; rows: number },
    start: number,
  ): void {
    const { dimVal: dv, dimIdx: di, a, b, neutral } = this;
    for (let r = 0; r < raw.rows; r++) {
      for (let k = 0; k < dv; k++) b.val[k] = raw.val[r * dv + k];
      for (let k = 0; k < di; k++) b.idx[k] = b.val[k] === neutral.val[k] ? -1 : raw.idx[r * di + k] + start;
      this.mergeRow(into, row0 + r, a, b);
    }
  }

  /** Merges rows of `other` into rows [row0, ...) of `into`. */
  mergeRows(
    into: { val: Float64Array; idx: Float64Array },
    row0: number,
    other: { val: Float64Array; idx: Float64Array },
    rows: number,
  ): void {
    const { dimVal: dv, dimIdx: di, a, b } = this;
    for (let r = 0; r < rows; r++) {
      for (let k = 0; k < dv; k++) b.val[k] = other.val[r * dv + k];
      for (let k = 0; k < di; k++) b.idx[k] = other.idx[r * di + k];
      this.mergeRow(into, row0 + r, a, b);
    }
  }

  private mergeRow(
    into: { val: Float64Array; idx: Float64Array },
    row: number,
    a: { val: Float64Array; idx: Float64Array },
    b: { val: Float64Array; idx: Float64Array },
  ): void {
    const { dimVal: dv, dimIdx: di } = this;
    for (let k = 0; k < dv; k++) a.val[k] = into.val[row * dv + k];
    for (let k = 0; k < di; k++) a.idx[k] = into.idx[row * di + k];
    this.state.def.merge(a, b, this.state);
    for (let k = 0; k < dv; k++) into.val[row * dv + k] = a.val[k];
    for (let k = 0; k < di; k++) into.idx[row * di + k] = a.idx[k];
  }
}

/** Finalises state rows into the user's result of `resolved` (the reduction whose state `ops` holds). */
export function finalizeState(
  resolved: GenredReduction,
  ops: StateOps,
  state: { val: Float64Array; idx: Float64Array },
  rows: number,
  dtype: Dtype,
  wideIndices: boolean,
): ChunkedResult {
  const red = resolved.reduction;
  const { dimVal, dimIdx } = red.layout;
  const val = dtype === 'float32' ? new Float32Array(rows * dimVal) : new Float64Array(rows * dimVal);
  const idx32 = new Int32Array(wideIndices ? 0 : rows * dimIdx);
  const idx64 = wideIndices ? new BigInt64Array(rows * dimIdx) : undefined;
  const acc = { val: new Float64Array(ops.dimVal), idx: new Float64Array(ops.dimIdx) };
  for (let r = 0; r < rows; r++) {
    acc.val.set(state.val.subarray(r * ops.dimVal, (r + 1) * ops.dimVal));
    acc.idx.set(state.idx.subarray(r * ops.dimIdx, (r + 1) * ops.dimIdx));
    const out = red.def.finalize(acc, red);
    val.set(out.val, r * dimVal);
    if (idx64 !== undefined) for (let k = 0; k < dimIdx; k++) idx64[r * dimIdx + k] = BigInt(out.idx[k]);
    else idx32.set(out.idx, r * dimIdx);
  }
  if (idx64 === undefined) return resolved.postprocess({ val, idx: idx32, rows });
  // Index outputs are copies of the raw indices: post-process with placeholders, then put the int64 ones in.
  const result = resolved.postprocess({ val, idx: new Int32Array(rows * dimIdx), rows });
  if (result instanceof Int32Array) return idx64;
  if (ArrayBuffer.isView(result)) return result;
  return { values: result.values, indices: idx64 };
}

/**
 * Computes, merges, finalises and parses the partial results of one reduction (a Genred / NodeGenred): the
 * partial state runs through the normal Genred machinery (CPU or GPU), as a reduction whose output is the
 * accumulator.
 */
export class PartialReducer {
  /** Content hash identifying the reduction in its partial results. */
  readonly reductionHash: string;
  /** The reduction whose result `finalize` gives. */
  readonly resolved: GenredReduction;
  /** Runs the state reduction (same variables, backend and sum settings as the Genred). */
  readonly stateRunner: ReductionRunner;
  /** @internal */
  readonly ops: StateOps;

  constructor(readonly genred: NodeGenred) {
    const runner = genred.runner;
    this.resolved = runner.resolved;
    const red = this.resolved.reduction;
    const state = partialStateReduction(red);
    this.ops = new StateOps(state);
    this.stateRunner = new ReductionRunner({
      resolved: rawGenredReduction(state),
      variables: runner.variables,
      argCount: runner.argCount,
      sumScheme: runner.sumScheme,
      dtypeAcc: runner.dtypeAcc,
      backend: runner.backend,
      threads: runner.threads === 0 ? undefined : runner.threads,
      label: `partial ${genred.reductionName}`,
    });
    this.reductionHash = createHash('sha256')
      .update(`keops-partial|${red.hash}|${this.resolved.outputKind}|${this.resolved.dimOut}`)
      .digest('hex');
  }

  /** The partial over the reduced rows of `args`, which are the global rows [start, start + rows). */
  async compute(args: readonly CallArg[], options: PartialComputeOptions = {}): Promise<PartialResult> {
    const start = checkStart(options);
    const raw = await this.stateRunner.callRaw(args, runOptionsOf(options));
    return this.fromRaw(raw, start);
  }

  /** Like `compute`, but blocks the thread. */
  computeSync(args: readonly CallArg[], options: PartialComputeOptions = {}): PartialResult {
    const start = checkStart(options);
    return this.fromRaw(this.stateRunner.callRawSync(args, runOptionsOf(options)), start);
  }

  /** The neutral partial of `rows` output rows (covers no reduced row). */
  empty(rows: number, dtype: Dtype): PartialResult {
    const { val, idx } = this.ops.identity(rows);
    return new PartialResult(this.reductionHash, dtype, rows, this.ops.dimVal, this.ops.dimIdx, [], val, idx);
  }

  /**
   * Merges partials of disjoint slices (in any order: indices come out the same, sums agree within rounding).
   * ERR_PARTIAL_MISMATCH for partials of another reduction, dtype or row count, or overlapping slices.
   */
  merge(partials: readonly PartialResult[]): PartialResult {
    if (!Array.isArray(partials) || partials.length === 0) {
      throw new KeOpsError('ERR_INVALID_ARGUMENT', 'merge needs a non-empty array of partial results');
    }
    for (const p of partials) this.check(p);
    const first = partials[0];
    for (const p of partials) {
      if (p.dtype !== first.dtype)
        throw mismatch(`cannot merge ${p.dtype} and ${first.dtype} partial results`);
      if (p.rows !== first.rows) {
        throw mismatch(`cannot merge partial results of ${p.rows} and ${first.rows} output rows`);
      }
    }
    const slices = unionSlices(partials.map((p) => p.slices));
    const state = { val: first.val.slice(), idx: first.idx.slice() };
    for (const p of partials.slice(1)) this.ops.mergeRows(state, 0, p, p.rows);
    return new PartialResult(
      this.reductionHash,
      first.dtype,
      first.rows,
      this.ops.dimVal,
      this.ops.dimIdx,
      slices,
      state.val,
      state.idx,
    );
  }

  /**
   * The reduction's result over the partial's slices: Genred's result type, with a BigInt64Array of indices when
   * the reduced axis reaches past 2^31 rows.
   */
  finalize(partial: PartialResult): ChunkedResult {
    this.check(partial);
    const end = partial.slices.length === 0 ? 0 : partial.slices[partial.slices.length - 1][1];
    return finalizeState(
      this.resolved,
      this.ops,
      partial,
      partial.rows,
      partial.dtype,
      end > INT32_INDEX_LIMIT,
    );
  }

  /** Parses serialised partial results of this reduction (ERR_PARTIAL_FORMAT / ERR_PARTIAL_MISMATCH). */
  fromBytes(bytes: Uint8Array): PartialResult {
    const p = PartialResult.fromBytes(bytes);
    this.check(p);
    return p;
  }

  /** @internal A partial from a raw state-reduction output whose reduced rows start at `start`. */
  fromRaw(
    raw: {
      val: FloatArray;
      idx: Int32Array;
      rows: number;
      ny: number;
      dtype: Dtype;
      batchShape: readonly number[];
    },
    start: number,
  ): PartialResult {
    if (raw.batchShape.length > 0) {
      throw new KeOpsError('ERR_INVALID_ARGUMENT', 'partial results take plain 2D arguments (no batch dims)');
    }
    const state = this.ops.identity(raw.rows);
    this.ops.foldRaw(state, 0, raw, start);
    const slices: RowSlice[] = raw.ny > 0 ? [[start, start + raw.ny]] : [];
    return new PartialResult(
      this.reductionHash,
      raw.dtype,
      raw.rows,
      this.ops.dimVal,
      this.ops.dimIdx,
      slices,
      state.val,
      state.idx,
    );
  }

  private check(p: PartialResult): void {
    if (!(p instanceof PartialResult)) {
      throw new KeOpsError('ERR_INVALID_ARGUMENT', 'expected a PartialResult (use fromBytes to parse bytes)');
    }
    if (p.reduction !== this.reductionHash) {
      throw mismatch(
        `the partial result belongs to another reduction (hash ${p.reduction.slice(0, 12)}…, ` +
          `this one is ${this.reductionHash.slice(0, 12)}…)`,
      );
    }
    if (p.dimVal !== this.ops.dimVal || p.dimIdx !== this.ops.dimIdx) {
      throw mismatch(
        `the partial result has ${p.dimVal}+${p.dimIdx} state slots per row, expected ${this.ops.dimVal}+${this.ops.dimIdx}`,
      );
    }
  }
}

function checkStart(options: PartialComputeOptions): number {
  if (typeof options !== 'object' || options === null) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', 'options must be an object');
  }
  const start = options.start ?? 0;
  if (!Number.isSafeInteger(start) || start < 0) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `start must be an integer >= 0, got ${String(start)}`);
  }
  return start;
}

const runOptionsOf = (o: PartialComputeOptions): RunOptions => ({
  backend: o.backend,
  threads: o.threads,
  device: o.device,
});

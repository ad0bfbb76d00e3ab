/**
 * The float64 reference: dense loops over output rows and, in increasing order, the reduced index, folding
 * each evaluation of the formula with the reduction's own reference hooks. Slow and simple on purpose: it is
 * the oracle every backend is tested against.
 *
 * Conventions that backends must mirror:
 * - Sizes: M = rows of the cat-0 inputs (all equal), N = rows of the cat-1 inputs; 1 when there are none.
 * - Ranges (docs/semantics.md 4.4): a row folds each interval of its block, by increasing
 *   start, so an index listed in two overlapping intervals counts twice (as in KeOps); rows outside every
 *   block get the neutral value
 *   (init + finalize), on every backend (KeOps' GPU leaves them uninitialised). Blocks must not overlap.
 * - Batch dims (4.6): inputs given with `shape` = [...batch, rows, dim] (cat 0/1) or [...batch, dim] (cat 2);
 *   missing leading batch dims count as 1, each batch dim is equal across inputs or 1 (broadcast), and the
 *   output is [...batch, rows, dimOut], batch dims first. Ranges with batch dims are rejected.
 */
import { KeOpsError } from './errors';
import { varsOf } from './formula/diff';
import { evaluateFormula } from './formula/evaluate';
import {
  type GenredReductionOptions,
  type GenredResult,
  resolveGenredReduction,
} from './formula/genred-reductions';
import { builder as b } from './formula/builder';
import { type Node, topoOrder } from './formula/node';
import type { Reduction } from './formula/reduction';
import { outputDim, reductionGradient } from './formula/reductions';

export type ReferenceData = Float64Array | Float32Array;

/** One input array, by variable position: give `dim` (no batch dims) or the full `shape`. */
export type ReferenceInput =
  | { data: ReferenceData; cat: 0 | 1 | 2; dim: number; shape?: undefined }
  | { data: ReferenceData; cat: 0 | 1 | 2; shape: readonly number[]; dim?: number };

/** The 6-tuple of 4.4: (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i); pairs flattened. */
export type Ranges = readonly [
  ArrayLike<number>,
  ArrayLike<number>,
  ArrayLike<number>,
  ArrayLike<number>,
  ArrayLike<number>,
  ArrayLike<number>,
];

export interface ReferenceOptions {
  ranges?: Ranges;
}

export interface ReferenceOutput {
  /** rows × dimVal values, row-major (batch dims first). */
  val: Float64Array;
  /** rows × dimIdx indices. */
  idx: Int32Array;
  /** Total output rows: product(batchShape) × rowsPerBatch. */
  rows: number;
  rowsPerBatch: number;
  /** Broadcast batch shape ([] without batch dims). */
  batchShape: number[];
}

/** One block of output rows [start, end) and the sorted, disjoint, non-adjacent intervals they reduce over. */
export interface RangeBlock {
  readonly start: number;
  readonly end: number;
  readonly reduced: ReadonlyArray<readonly [number, number]>;
}

const invalid = (message: string): KeOpsError => new KeOpsError('ERR_INVALID_ARGUMENT', message);

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

interface NormalizedInput {
  data: Float64Array;
  cat: 0 | 1 | 2;
  dim: number;
  rows: number;
  batch: number[];
}

function normalizeInput(input: ReferenceInput, pos: number): NormalizedInput {
  const { data, cat } = input;
  if (!(data instanceof Float64Array || data instanceof Float32Array)) {
    throw invalid(`input ${pos}: data must be a Float64Array or Float32Array`);
  }
  if (cat !== 0 && cat !== 1 && cat !== 2) throw invalid(`input ${pos}: cat must be 0, 1 or 2, got ${cat}`);
  let dim: number;
  let rows: number;
  let batch: number[];
  if (input.shape !== undefined) {
    const shape = Array.from(input.shape);
    const minRank = cat === 2 ? 1 : 2;
    if (shape.length < minRank || !shape.every(isCount)) {
      throw invalid(
        `input ${pos}: shape must be [...batch, ${cat === 2 ? '' : 'rows, '}dim] of integers >= 0`,
      );
    }
    dim = shape[shape.length - 1];
    rows = cat === 2 ? 1 : shape[shape.length - 2];
    batch = shape.slice(0, shape.length - minRank);
    if (input.dim !== undefined && input.dim !== dim)
      throw invalid(`input ${pos}: dim ${input.dim} ≠ shape's last entry ${dim}`);
    const size = shape.reduce((p, s) => p * s, 1);
    if (data.length !== size)
      throw invalid(`input ${pos}: shape [${shape}] needs ${size} values, got ${data.length}`);
  } else {
    dim = input.dim as number;
    if (!isCount(dim) || dim < 1) throw invalid(`input ${pos}: dim must be an integer >= 1, got ${dim}`);
    if (data.length % dim !== 0)
      throw invalid(`input ${pos}: ${data.length} values is not a multiple of dim ${dim}`);
    rows = data.length / dim;
    if (cat === 2 && rows !== 1)
      throw invalid(`input ${pos}: a parameter (cat 2) needs exactly ${dim} values, got ${data.length}`);
    batch = [];
  }
  if (dim < 1) throw invalid(`input ${pos}: dim must be >= 1`);
  return { data: data instanceof Float64Array ? data : Float64Array.from(data), cat, dim, rows, batch };
}

/** Broadcasts batch shapes (left-padded with 1s): each dim equal across inputs or 1. */
export function broadcastBatchShape(shapes: readonly (readonly number[])[]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    const padded = [...new Array<number>(rank - s.length).fill(1), ...s];
    padded.forEach((d, k) => {
      if (d === 1) return;
      if (out[k] !== 1 && out[k] !== d) {
        throw invalid(
          `batch dimension ${k}: sizes ${out[k]} and ${d} are incompatible (each must be equal or 1)`,
        );
      }
      out[k] = d;
    });
  }
  return out;
}

/** Offset (in batches) of an input with batch shape `own` at the flat output batch index `flat`. */
export function batchOffset(flat: number, outShape: readonly number[], own: readonly number[]): number {
  const padded = [...new Array<number>(outShape.length - own.length).fill(1), ...own];
  let offset = 0;
  let rest = flat;
  let stride = 1;
  for (let k = outShape.length - 1; k >= 0; k--) {
    const coord = rest % outShape[k];
    rest = Math.floor(rest / outShape[k]);
    if (padded[k] !== 1) offset += coord * stride;
    stride *= padded[k];
  }
  return offset;
}

/**
 * Validates one direction of a ranges tuple and returns its blocks, each with its intervals sorted by start
 * (overlapping ones kept: they count twice).
 * `rowsArr`/`slices`/`intervals` = (ranges_i, slices_i, redranges_j) for tag 0, (ranges_j, slices_j, redranges_i)
 * for tag 1; `outRows`/`redSize` = the sizes of the output and reduced axes.
 */
export function normalizeRanges(
  rowsArr: ArrayLike<number>,
  slices: ArrayLike<number>,
  intervals: ArrayLike<number>,
  outRows: number,
  redSize: number,
): RangeBlock[] {
  const ints = (a: ArrayLike<number>, what: string): number[] => {
    const out = Array.from(a, Number);
    if (!out.every(isCount)) throw invalid(`ranges: ${what} must hold integers >= 0`);
    return out;
  };
  const rowPairs = ints(rowsArr, 'row ranges');
  const sl = ints(slices, 'slices');
  const iv = ints(intervals, 'reduction ranges');
  if (rowPairs.length % 2 !== 0 || iv.length % 2 !== 0)
    throw invalid('ranges: [start, end) pairs must have even length');
  const nBlocks = rowPairs.length / 2;
  if (sl.length !== nBlocks)
    throw invalid(`ranges: ${nBlocks} row blocks need ${nBlocks} slices, got ${sl.length}`);
  const blocks: RangeBlock[] = [];
  let previousSlice = 0;
  for (let k = 0; k < nBlocks; k++) {
    const [start, end] = [rowPairs[2 * k], rowPairs[2 * k + 1]];
    if (start > end || end > outRows)
      throw invalid(`ranges: row block [${start}, ${end}) is not within [0, ${outRows})`);
    if (sl[k] < previousSlice || sl[k] > iv.length / 2) {
      throw invalid(
        `ranges: slices must be non-decreasing and at most ${iv.length / 2}, got ${sl[k]} at ${k}`,
      );
    }
    const pairs: Array<[number, number]> = [];
    for (let t = previousSlice; t < sl[k]; t++) {
      const [s, e] = [iv[2 * t], iv[2 * t + 1]];
      if (s > e || e > redSize)
        throw invalid(`ranges: reduction interval [${s}, ${e}) is not within [0, ${redSize})`);
      if (s < e) pairs.push([s, e]);
    }
    previousSlice = sl[k];
    // Sorted by start (so first visits are in increasing index order, and ties go to the smallest index), but
    // not merged: an index listed in two overlapping intervals is folded twice, as in KeOps.
    pairs.sort((x, y) => x[0] - y[0]);
    blocks.push({ start, end, reduced: pairs });
  }
  const sorted = [...blocks].filter((bk) => bk.start < bk.end).sort((x, y) => x.start - y.start);
  for (let k = 1; k < sorted.length; k++) {
    if (sorted[k].start < sorted[k - 1].end) {
      throw invalid(
        `ranges: row blocks [${sorted[k - 1].start}, ${sorted[k - 1].end}) and [${sorted[k].start}, ${sorted[k].end}) overlap`,
      );
    }
  }
  return blocks;
}

/**
 * Computes a reduction densely in float64. `inputs[p]` is the array of the variable at position p (unused
 * positions may be undefined, but given inputs still count for M and N).
 */
export function referenceReduction(
  red: Reduction,
  inputs: readonly (ReferenceInput | undefined)[],
  opts: ReferenceOptions = {},
): ReferenceOutput {
  if (!Array.isArray(inputs)) throw invalid('referenceReduction: inputs must be an array');
  const norm = inputs.map((inp, p) => (inp === undefined ? undefined : normalizeInput(inp, p)));
  const fout = red.fout;
  const vars = [...varsOf(fout)];
  for (const v of vars) {
    const [pos, dim, cat] = v.params as number[];
    const inp = norm[pos];
    if (inp === undefined) throw invalid(`no input for variable ${v} (position ${pos})`);
    if (inp.dim !== dim || inp.cat !== cat) {
      throw invalid(`input ${pos} has dim ${inp.dim} and cat ${inp.cat}, but the formula uses ${v}`);
    }
  }
  const rowCount = (cat: 0 | 1): number => {
    const counts = new Set(
      norm.filter((x) => x !== undefined && x.cat === cat).map((x) => (x as NormalizedInput).rows),
    );
    if (counts.size > 1) {
      throw invalid(
        `all ${cat === 0 ? 'i' : 'j'}-indexed (cat ${cat}) inputs must have the same number of rows, got ${[...counts].join(', ')}`,
      );
    }
    return counts.size === 0 ? 1 : [...counts][0];
  };
  const M = rowCount(0);
  const N = rowCount(1);
  const present = norm.filter((x): x is NormalizedInput => x !== undefined);
  const batchShape = broadcastBatchShape(present.map((x) => x.batch));
  const nBatches = batchShape.reduce((p, s) => p * s, 1);
  const [outRows, redSize] = red.tag === 0 ? [M, N] : [N, M];

  let blocks: RangeBlock[];
  if (opts.ranges !== undefined) {
    if (batchShape.length > 0) throw invalid('ranges cannot be combined with batch dimensions');
    if (!Array.isArray(opts.ranges) || opts.ranges.length !== 6) {
      throw invalid(
        'ranges must be the 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)',
      );
    }
    const r = opts.ranges;
    blocks =
      red.tag === 0 ? normalizeRanges(r[0], r[1], r[2], M, N) : normalizeRanges(r[3], r[4], r[5], N, M);
  } else {
    blocks = [{ start: 0, end: outRows, reduced: redSize > 0 ? [[0, redSize]] : [] }];
  }

  const { dimVal, dimIdx, dimredVal, dimredIdx } = red.layout;
  const totalRows = nBatches * outRows;
  const val = new Float64Array(totalRows * dimVal);
  const idx = new Int32Array(totalRows * dimIdx);
  const def = red.def;
  const newAcc = () => ({ val: new Float64Array(dimredVal), idx: new Int32Array(dimredIdx) });
  const write = (row: number, out: { val: Float64Array; idx: Int32Array | Float64Array }) => {
    val.set(out.val, row * dimVal);
    idx.set(out.idx, row * dimIdx);
  };

  // Neutral value everywhere first; covered rows are overwritten below.
  const neutralAcc = newAcc();
  def.init(neutralAcc, red);
  const neutral = def.finalize(neutralAcc, red);
  for (let row = 0; row < totalRows; row++) write(row, neutral);

  const order = topoOrder(fout);
  const varInputs = new Map<Node, NormalizedInput>(
    vars.map((v) => [v, norm[v.params[0] as number] as NormalizedInput]),
  );
  for (let batch = 0; batch < nBatches; batch++) {
    // First value of each input's slice for this batch.
    const base = new Map<Node, number>();
    for (const [v, inp] of varInputs) {
      const perBatch = (inp.cat === 2 ? 1 : inp.rows) * inp.dim;
      base.set(v, batchOffset(batch, batchShape, inp.batch) * perBatch);
    }
    for (const block of blocks) {
      for (let row = block.start; row < block.end; row++) {
        const acc = newAcc();
        def.init(acc, red);
        for (const [s, e] of block.reduced) {
          for (let t = s; t < e; t++) {
            const [i, j] = red.tag === 0 ? [row, t] : [t, row];
            const values = (v: Node): Float64Array => {
              const inp = varInputs.get(v) as NormalizedInput;
              const at = inp.cat === 0 ? i : inp.cat === 1 ? j : 0;
              const start = (base.get(v) as number) + at * inp.dim;
              return inp.data.subarray(start, start + inp.dim);
            };
            def.fold(acc, evaluateFormula(fout, values, order), t, red);
          }
        }
        write(batch * outRows + row, def.finalize(acc, red));
      }
    }
  }
  return { val, idx, rows: totalRows, rowsPerBatch: outRows, batchShape };
}

/**
 * A Genred call computed by the reference: resolveGenredReduction + referenceReduction + postprocess.
 * Batched inputs give a flat result with the batch dims first ([...batch, rows, ...rowShape]).
 */
export function referenceGenred(
  name: string,
  formula: Node,
  inputs: readonly (ReferenceInput | undefined)[],
  opts: GenredReductionOptions & ReferenceOptions,
): GenredResult {
  const resolved = resolveGenredReduction(name, formula, opts);
  const raw = referenceReduction(resolved.reduction, inputs, { ranges: opts.ranges });
  return resolved.postprocess(raw);
}

/**
 * The gradient of ⟨G, result⟩ with respect to the input at position `wrt`, computed as the autograd of every
 * backend should: forward reference, `cotangent` (backward of the post-processing), `reductionGradient`
 * with eta and the saved raw output as two extra inputs, then sums over the rows of a parameter and over the
 * broadcast batch dims of the input. Returns an array of the input's own size. Same ranges tuple as the
 * forward call (it holds both directions).
 */
export function referenceGenredGradient(
  name: string,
  formula: Node,
  inputs: readonly (ReferenceInput | undefined)[],
  opts: GenredReductionOptions & ReferenceOptions & { wrt: number; G: ArrayLike<number> },
): Float64Array {
  const resolved = resolveGenredReduction(name, formula, opts);
  const red = resolved.reduction;
  const raw = referenceReduction(red, inputs, { ranges: opts.ranges });
  const eta = resolved.cotangent(raw, opts.G);
  const target = inputs[opts.wrt];
  if (target === undefined) throw invalid(`referenceGenredGradient: no input at position ${opts.wrt}`);
  const own = normalizeInput(target, opts.wrt);
  const v = b.variable(opts.wrt, own.dim, own.cat);
  const width = outputDim(red);
  const extra = (data: Float64Array, dim: number): ReferenceInput => ({
    data,
    cat: red.tag,
    shape: [...raw.batchShape, raw.rowsPerBatch, dim],
  });
  const etaVar = b.variable(inputs.length, width, red.tag);
  const gradInputs = [...inputs, extra(eta, width)];
  let savedVar: Node | undefined;
  if (red.layout.dimVal > 0) {
    savedVar = b.variable(inputs.length + 1, red.layout.dimVal, red.tag);
    gradInputs.push(extra(raw.val, red.layout.dimVal));
  }
  const gradRed = reductionGradient(red, v, etaVar, savedVar);
  const out = referenceReduction(gradRed, gradInputs, { ranges: opts.ranges });
  // Sum the per-batch, per-row gradients into the input's own (possibly broadcast) shape.
  const ownRows = own.cat === 2 ? 1 : own.rows;
  const perBatch = ownRows * own.dim;
  const grad = new Float64Array(own.data.length);
  const nBatches = raw.batchShape.reduce((p, n) => p * n, 1);
  for (let batch = 0; batch < nBatches; batch++) {
    const base = batchOffset(batch, raw.batchShape, own.batch) * perBatch;
    for (let row = 0; row < out.rowsPerBatch; row++) {
      const target = base + (own.cat === 2 ? 0 : row * own.dim);
      const source = (batch * out.rowsPerBatch + row) * own.dim;
      for (let k = 0; k < own.dim; k++) grad[target + k] += out.val[source + k];
    }
  }
  return grad;
}

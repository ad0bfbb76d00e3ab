/**
 * The Genred-level reduction names (docs/semantics.md 2.2): how each maps onto an engine reduction and how
 * the raw engine output becomes the user's result. One table, shared by the CPU and CUDA backends and by the
 * float64 reference, so that every backend post-processes identically.
 *
 * Raw output: `rows` rows of `dimVal` values (`val`, row-major) and `dimIdx` int32 indices (`idx`).
 * Results are row-major `rows × dimOut` arrays in the dtype of `raw.val` (indices: Int32Array); KMin-type
 * results are (rows, K, D) with D innermost; pairs are `{ values, indices }` with the same shape each.
 */
import { KeOpsError } from '../errors';
import { builder as b } from './builder';
import type { Node } from './node';
import type { Reduction } from './reduction';
import { closestName, makeReduction } from './reductions';

export type GenredValues = Float64Array | Float32Array;
export type GenredResult = GenredValues | Int32Array | { values: GenredValues; indices: Int32Array };

export interface RawReductionOutput {
  val: GenredValues;
  idx: Int32Array;
  /** Number of output rows (all batches together, when batched). */
  rows: number;
}

export type GenredOutputKind = 'values' | 'indices' | 'values+indices';

export interface GenredReduction {
  /** The engine reduction the backends run. */
  readonly reduction: Reduction;
  readonly outputKind: GenredOutputKind;
  /** Width of one output row (of each part, for values+indices). */
  readonly dimOut: number;
  /** Shape of one output row as KeOps returns it: [dimOut], or [K] / [K, D] for KMin-type reductions. */
  readonly rowShape: readonly number[];
  /**
   * Whether the result is the raw output as is (values = raw.val, indices = raw.idx): then a result can stay
   * on the GPU without a round trip through postprocess.
   */
  readonly rawIsResult: boolean;
  /** Turns the raw engine output into the user's result (validates the raw sizes). */
  postprocess(raw: RawReductionOutput): GenredResult;
  /**
   * Backward of `postprocess`: from the cotangent G of the result's values (rows × dimOut; ignored, may be
   * empty, for index outputs) to the cotangent of the raw output, rows × (dimVal + dimIdx) in float64: the
   * `eta` input of `reductionGradient` (with `saved` = the raw values). Rows whose raw s is 0 (nothing was
   * reduced) get a zero cotangent instead of ∞.
   */
  cotangent(raw: RawReductionOutput, G: ArrayLike<number>): Float64Array;
}

export interface GenredReductionOptions {
  /** 1: reduce over j, one row per i (engine tag 0); 0: reduce over i, one row per j (tag 1). */
  axis: 0 | 1;
  /** K, for KMin / ArgKMin / KMin_ArgKMin. */
  k?: number;
  /** Weight formula g, for LogSumExp / LogSumExpWeight / SumSoftMaxWeight / Max_SumShiftExpWeight. */
  formula2?: Node;
}

type Post = (raw: RawReductionOutput, red: Reduction) => GenredResult;
/** Backward of a Post: G (rows × dimOut) → cotangent of the raw row (rows × (dimVal + dimIdx)). */
type Back = (raw: RawReductionOutput, G: ArrayLike<number>, red: Reduction) => Float64Array;

interface GenredSpec {
  /** Whether formula2 is 'required', 'optional' or 'forbidden'. */
  readonly formula2: 'required' | 'optional' | 'forbidden';
  readonly takesK: boolean;
  build(formula: Node, tag: 0 | 1, k: number | undefined, formula2: Node | undefined): GenredReduction;
}

const emptyLike = (val: GenredValues, n: number): GenredValues =>
  val instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);

const copyValues: Post = (raw) => raw.val.slice();
const copyIndices: Post = (raw) => raw.idx.slice();
const copyBoth: Post = (raw) => ({ values: raw.val.slice(), indices: raw.idx.slice() });

/** Cotangent of a copied raw output: G on the values, 0 on the indices. */
const backCopy: Back = (raw, G, red) => {
  const { dimVal, dimIdx } = red.layout;
  const width = dimVal + dimIdx;
  const eta = new Float64Array(raw.rows * width);
  for (let r = 0; r < raw.rows; r++) for (let k = 0; k < dimVal; k++) eta[r * width + k] = G[r * dimVal + k];
  return eta;
};

/** d(m + log s_k) = dm + ds_k / s_k. */
const backLogSumExp: Back = (raw, G, red) => {
  const width = red.layout.dimVal;
  const d = width - 1;
  const eta = new Float64Array(raw.rows * width);
  for (let r = 0; r < raw.rows; r++) {
    for (let k = 0; k < d; k++) {
      const s = raw.val[r * width + 1 + k];
      const g = G[r * d + k];
      eta[r * width] += g;
      eta[r * width + 1 + k] = s === 0 ? 0 : g / s;
    }
  }
  return eta;
};

/** d(s_g / s_1) = ds_g / s_1 − s_g ds_1 / s_1² (m does not appear). */
const backSoftMax: Back = (raw, G, red) => {
  const width = red.layout.dimVal;
  const d = width - 2;
  const eta = new Float64Array(raw.rows * width);
  for (let r = 0; r < raw.rows; r++) {
    const s1 = raw.val[r * width + 1];
    if (s1 === 0) continue;
    for (let k = 0; k < d; k++) {
      const g = G[r * d + k];
      eta[r * width + 2 + k] = g / s1;
      eta[r * width + 1] -= (g * raw.val[r * width + 2 + k]) / (s1 * s1);
    }
  }
  return eta;
};

/** Raw (m, s_1..s_d) rows → m + log s_k (log Σ e^f g; −∞ for an empty reduction). */
const logSumExp: Post = (raw, red) => {
  const width = red.layout.dimVal;
  const d = width - 1;
  const out = emptyLike(raw.val, raw.rows * d);
  for (let r = 0; r < raw.rows; r++) {
    const m = raw.val[r * width];
    for (let k = 0; k < d; k++) out[r * d + k] = m + Math.log(raw.val[r * width + 1 + k]);
  }
  return out;
};

/** Raw (m, s_1, s_g...) rows → s_g / s_1 (Σ e^f g / Σ e^f; NaN for an empty reduction, as 0/0). */
const softMax: Post = (raw, red) => {
  const width = red.layout.dimVal;
  const d = width - 2;
  const out = emptyLike(raw.val, raw.rows * d);
  for (let r = 0; r < raw.rows; r++) {
    const s1 = raw.val[r * width + 1];
    for (let k = 0; k < d; k++) out[r * d + k] = raw.val[r * width + 2 + k] / s1;
  }
  return out;
};

function finish(
  red: Reduction,
  outputKind: GenredOutputKind,
  dimOut: number,
  rowShape: number[],
  post: Post,
  back: Back = backCopy,
) {
  const checkRaw = (raw: RawReductionOutput, what: string) => {
    const { dimVal, dimIdx } = red.layout;
    if (!Number.isSafeInteger(raw.rows) || raw.rows < 0) {
      throw new KeOpsError('ERR_INVALID_ARGUMENT', `${what}: rows must be an integer >= 0, got ${raw.rows}`);
    }
    if (raw.val.length !== raw.rows * dimVal || raw.idx.length !== raw.rows * dimIdx) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `${what} of ${red}: expected ${raw.rows}×${dimVal} values and ${raw.rows}×${dimIdx} indices, ` +
          `got ${raw.val.length} and ${raw.idx.length}`,
      );
    }
  };
  const result: GenredReduction = {
    reduction: red,
    outputKind,
    dimOut,
    rowShape: Object.freeze(rowShape),
    rawIsResult: post === copyValues || post === copyIndices || post === copyBoth,
    postprocess(raw) {
      checkRaw(raw, 'postprocess');
      return post(raw, red);
    },
    cotangent(raw, G) {
      checkRaw(raw, 'cotangent');
      if (outputKind !== 'indices' && G.length !== raw.rows * dimOut) {
        throw new KeOpsError(
          'ERR_INVALID_ARGUMENT',
          `cotangent of ${red}: the result's cotangent must have ${raw.rows}×${dimOut} values, got ${G.length}`,
        );
      }
      return back(raw, G, red);
    },
  };
  return Object.freeze(result);
}

const plain = (engine: string, kind: GenredOutputKind, post: Post): GenredSpec => ({
  formula2: 'forbidden',
  takesK: false,
  build: (f, tag) => finish(makeReduction(engine, f, { tag }), kind, f.dim, [f.dim], post),
});

const kType = (engine: string, kind: GenredOutputKind, post: Post): GenredSpec => ({
  formula2: 'forbidden',
  takesK: true,
  build(f, tag, k) {
    const red = makeReduction(engine, f, { tag, k });
    const K = red.k as number;
    return finish(red, kind, K * f.dim, f.dim === 1 ? [K] : [K, f.dim], post);
  },
});

const logSumExpSpec = (formula2: 'optional' | 'required'): GenredSpec => ({
  formula2,
  takesK: false,
  build(f, tag, _k, g) {
    const red =
      g === undefined
        ? makeReduction('Max_SumShiftExp_Reduction', f, { tag })
        : makeReduction('Max_SumShiftExpWeight_Reduction', f, { tag, formula2: g });
    const d = red.layout.dimVal - 1;
    return finish(red, 'values', d, [d], logSumExp, backLogSumExp);
  },
});

const softMaxSpec: GenredSpec = {
  formula2: 'required',
  takesK: false,
  build(f, tag, _k, g) {
    const weights = b.call('Concat', [b.int(1), g as Node]);
    const red = makeReduction('Max_SumShiftExpWeight_Reduction', f, { tag, formula2: weights });
    return finish(red, 'values', (g as Node).dim, [(g as Node).dim], softMax, backSoftMax);
  },
};

const GENRED: ReadonlyMap<string, GenredSpec> = new Map<string, GenredSpec>([
  ['Sum', plain('Sum_Reduction', 'values', copyValues)],
  ['LogSumExp', logSumExpSpec('optional')],
  ['LogSumExpWeight', logSumExpSpec('required')],
  ['SumSoftMaxWeight', softMaxSpec],
  ['SoftMax', softMaxSpec],
  [
    'Max_SumShiftExp',
    {
      formula2: 'forbidden',
      takesK: false,
      build: (f, tag) =>
        finish(makeReduction('Max_SumShiftExp_Reduction', f, { tag }), 'values', 2, [2], copyValues),
    },
  ],
  [
    'Max_SumShiftExpWeight',
    {
      formula2: 'required',
      takesK: false,
      build(f, tag, _k, g) {
        const red = makeReduction('Max_SumShiftExpWeight_Reduction', f, { tag, formula2: g });
        return finish(red, 'values', red.layout.dimVal, [red.layout.dimVal], copyValues);
      },
    },
  ],
  ['Min', plain('Min_Reduction', 'values', copyValues)],
  ['Max', plain('Max_Reduction', 'values', copyValues)],
  ['ArgMin', plain('ArgMin_Reduction', 'indices', copyIndices)],
  ['ArgMax', plain('ArgMax_Reduction', 'indices', copyIndices)],
  ['Min_ArgMin', plain('Min_ArgMin_Reduction', 'values+indices', copyBoth)],
  ['MinArgMin', plain('Min_ArgMin_Reduction', 'values+indices', copyBoth)],
  ['Max_ArgMax', plain('Max_ArgMax_Reduction', 'values+indices', copyBoth)],
  ['MaxArgMax', plain('Max_ArgMax_Reduction', 'values+indices', copyBoth)],
  ['KMin', kType('KMin_Reduction', 'values', copyValues)],
  ['ArgKMin', kType('ArgKMin_Reduction', 'indices', copyIndices)],
  ['KMin_ArgKMin', kType('KMin_ArgKMin_Reduction', 'values+indices', copyBoth)],
  ['KMinArgKMin', kType('KMin_ArgKMin_Reduction', 'values+indices', copyBoth)],
]);

/**
 * An engine reduction whose result is its raw output as is (values, indices, or both): what partial results run
 * (the `partialState` of a reduction outputs its whole accumulator).
 */
export function rawGenredReduction(red: Reduction): GenredReduction {
  const { dimVal, dimIdx } = red.layout;
  if (dimIdx === 0) return finish(red, 'values', dimVal, [dimVal], copyValues);
  if (dimVal === 0) return finish(red, 'indices', dimIdx, [dimIdx], copyIndices);
  if (dimVal !== dimIdx) {
    throw new KeOpsError('ERR_INTERNAL', `${red}: ${dimVal} values but ${dimIdx} indices per row`);
  }
  return finish(red, 'values+indices', dimVal, [dimVal], copyBoth);
}

/** Every Genred `reduction_op` name accepted (aliases included). */
export const GENRED_REDUCTION_NAMES: readonly string[] = Object.freeze([...GENRED.keys()]);

/**
 * Resolves a Genred reduction name (`reduction_op`) for a formula: the engine reduction, the output kind and
 * width, and the post-processing. axis 1 reduces over j (tag 0), axis 0 over i (tag 1); the default axis is
 * the caller's business. Throws ERR_REDUCTION for an unknown name (with the closest one), a missing or
 * superfluous K or formula2, and ERR_FORMULA_DIM for wrong dims.
 */
export function resolveGenredReduction(
  name: string,
  formula: Node,
  opts: GenredReductionOptions,
): GenredReduction {
  const spec = GENRED.get(name);
  if (spec === undefined) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `unknown reduction '${name}'; did you mean '${closestName(name, GENRED.keys())}'? ` +
        `(known: ${GENRED_REDUCTION_NAMES.join(', ')})`,
    );
  }
  if (opts.axis !== 0 && opts.axis !== 1) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `${name}: axis must be 0 (reduce over i) or 1 (reduce over j), got ${opts.axis}`,
    );
  }
  if (spec.takesK && opts.k === undefined) {
    throw new KeOpsError('ERR_REDUCTION', `${name}: K (opt_arg) is required`);
  }
  if (!spec.takesK && opts.k !== undefined) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `${name} takes no K (opt_arg); only KMin, ArgKMin and KMin_ArgKMin do`,
    );
  }
  if (spec.formula2 === 'required' && opts.formula2 === undefined) {
    throw new KeOpsError('ERR_REDUCTION', `${name}: the weight formula (formula2) is required`);
  }
  if (spec.formula2 === 'forbidden' && opts.formula2 !== undefined) {
    throw new KeOpsError('ERR_REDUCTION', `${name} takes no weight formula (formula2)`);
  }
  const tag = opts.axis === 1 ? 0 : 1;
  return spec.build(formula, tag, opts.k, opts.formula2);
}

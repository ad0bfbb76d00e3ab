/**
 * The engine reductions of docs/semantics.md 2.1, one `ReductionDef` each, and their gradients (3.2, 3.3).
 *
 * Accumulator layouts (value part `val`, exact int32 index part `idx`; D = dim of the formula):
 * - Sum_Reduction: val = D partial sums.
 * - Max_SumShiftExp(Weight)_Reduction: val = (m, s_1..s_d) with Σ_j e^{f_j} g_j = e^m · s (d = d(g), 1 without g).
 * - Min/Max_Reduction: val = D running extrema.
 * - ArgMin/ArgMax/Min_ArgMin/Max_ArgMax_Reduction: val = D running extrema, idx = D indices.
 * - KMin/ArgKMin/KMin_ArgKMin_Reduction: val[r*D+l], idx[r*D+l] = rank r (0 = smallest) of component l.
 *   Outputs follow the same (K, D) order, D innermost.
 * - Zero_Reduction: val = D zeros (nothing is folded; backends may skip the loop entirely).
 *
 * Ties: folds compare values strictly, so while j increases the earliest j wins; merges compare
 * (value, index) lexicographically, so merging partial accumulators of any split of j, in any order, gives
 * the same result as one pass.
 */
import { KeOpsError } from '../errors';
import { builder as b } from './builder';
import { varsOf } from './diff';
import type { Node } from './node';
import {
  checkTag,
  Reduction,
  type ReductionAcc,
  type ReductionDef,
  type ReductionEmitContext,
  type ReductionLayout,
} from './reduction';

/** Accumulators live in registers / local memory: keep them bounded (K·D for KMin, D otherwise). */
export const MAX_ACCUMULATOR_WIDTH = 1 << 20;
/**
 * K·D bound of the KMin family: their folds and merges keep K·D values and indices in arrays on a worker's
 * stack (and a GPU thread's local memory), and each candidate costs O(K); K·D = 2^20 overflowed the stack.
 */
export const MAX_KMIN_WIDTH = 1 << 14;

/** A reduction definition with its differentiation rules (kept here so reduction.ts stays the plain contract). */
interface EngineReductionDef extends ReductionDef {
  /** Reverse mode: the reduction computing (∂R/∂v)ᵀ·eta, or a string saying why there is none. */
  readonly gradient: ((req: GradRequest) => Reduction) | string;
  /** Forward mode: the reduction computing ∂R/∂v · u, or a string saying why there is none. */
  readonly diff: ((req: DiffRequest) => Reduction) | string;
}

interface GradRequest {
  red: Reduction;
  v: Node;
  eta: Node;
  saved: Node | undefined;
  /** Tag of the gradient reduction: the category of v's own index (parameters: 0). */
  gradTag: 0 | 1;
}

interface DiffRequest {
  red: Reduction;
  v: Node;
  u: Node;
  saved: Node | undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Shared helpers

const noIndex = new Int32Array(0);

function rejectExtras(name: string, k: number | undefined, formula2Dim: number | undefined): void {
  if (k !== undefined)
    throw new KeOpsError('ERR_REDUCTION', `${name} takes no K argument (only KMin-type reductions do)`);
  if (formula2Dim !== undefined) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `${name} takes no second formula (only Max_SumShiftExpWeight_Reduction does)`,
    );
  }
}

function checkWidth(name: string, width: number): void {
  if (width > MAX_ACCUMULATOR_WIDTH) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `${name}: accumulator of ${width} values exceeds ${MAX_ACCUMULATOR_WIDTH}`,
    );
  }
}

/** `for (int k = 0; k < n; k++) { body(k) }` with a hygienic loop variable. */
function loop(ctx: ReductionEmitContext, n: number, body: (k: string) => string): string {
  const k = ctx.fresh('k');
  return `for (int ${k} = 0; ${k} < ${n}; ${k}++) { ${body(k)} }`;
}

const inf = (ctx: ReductionEmitContext): string => `keops_inf<${ctx.T}>()`;

/** Gradient-reduction tag: i-variables reduce over j (0), j-variables over i (1), parameters over j (0). */
const gradTagOf = (v: Node): 0 | 1 => ((v.params[2] as number) === 1 ? 1 : 0);

/**
 * Directional derivative J_v(F)·u by double reverse mode: Grad(F,v,w) = Jᵀw is linear in the dummy w, so its
 * gradient with respect to w along u is J·u (w disappears).
 */
export function directionalDerivative(f: Node, v: Node, u: Node): Node {
  if (u.dim !== v.dim) {
    throw new KeOpsError(
      'ERR_FORMULA_DIM',
      `Diff: the tangent must have the variable's dim ${v.dim}, got ${u.dim}`,
    );
  }
  let pos = 0;
  for (const x of [...varsOf(f), ...varsOf(u), v]) pos = Math.max(pos, (x.params[0] as number) + 1);
  const w = b.variable(pos, f.dim, -1);
  return b.grad(b.grad(f, v, w), w, u);
}

// ---------------------------------------------------------------------------------------------------------
// Sum

const Sum_Reduction: EngineReductionDef = {
  name: 'Sum_Reduction',
  doc: 'Sum_Reduction(F,tag): Σ F over j (tag 0) or over i (tag 1), per component',
  syntax: 'tag',
  sumType: true,
  partialState: 'Sum_Reduction',
  layout(d, k, d2) {
    rejectExtras('Sum_Reduction', k, d2);
    checkWidth('Sum_Reduction', d);
    return { dimredVal: d, dimredIdx: 0, dimVal: d, dimIdx: 0 };
  },
  fout: (f) => f,
  init: (acc) => void acc.val.fill(0),
  fold(acc, fout) {
    for (let k = 0; k < acc.val.length; k++) acc.val[k] += fout[k];
  },
  merge(acc, other) {
    for (let k = 0; k < acc.val.length; k++) acc.val[k] += other.val[k];
  },
  finalize: (acc) => ({ val: acc.val.slice(), idx: noIndex }),
  emitInit: (ctx, val) =>
    `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) => `${val}[${k}] = ${ctx.lit(0)};`)} }`,
  emitFold: (ctx, val, _idx, fout) =>
    `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) => `${val}[${k}] += ${fout}[${k}];`)} }`,
  emitMerge: (ctx, val, _idx, val2) =>
    `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) => `${val}[${k}] += ${val2}[${k}];`)} }`,
  emitFinalize: (ctx, val, _idx, outVal) =>
    `{ ${loop(ctx, ctx.red.layout.dimVal, (k) => `${outVal}[${k}] = ${val}[${k}];`)} }`,
  gradient: ({ red, v, eta, gradTag }) => new Reduction(Sum_Reduction, b.grad(red.formula, v, eta), gradTag),
  diff: ({ red, v, u }) => new Reduction(Sum_Reduction, directionalDerivative(red.formula, v, u), red.tag),
};

// ---------------------------------------------------------------------------------------------------------
// Max_SumShiftExp(Weight): (m, s) with Σ e^{f} g = e^m s, stable for any range of f.

/**
 * Adds e^{f}·w to the accumulator (m, s): rescales s when f is a new maximum. A term with f = −∞ weighs
 * e^{−∞} = 0 (so two −∞ never produce ∞−∞ = NaN); f = m = +∞ adds w. A NaN f becomes the maximum and stays
 * it (m = NaN, s = NaN), so NaN propagates however the terms are split between partial accumulators and
 * merged (a NaN held only in s would be lost when merged from an accumulator whose m is still −∞).
 * One exp per term, e^{−|f−m|} (e^0 on a tie), whichever branch is taken: vectorised folds evaluate both
 * branches, so a second exp would be paid on every term (about 30% slower LogSumExp on the CPU).
 */
function addShiftExp(val: Float64Array, f: number, weight: (k: number) => number): void {
  const m = val[0];
  const n = val.length - 1;
  const up = f > m || Number.isNaN(f);
  const c = Math.exp(up ? m - f : f === m ? 0 : f - m);
  if (up) {
    for (let k = 1; k <= n; k++) val[k] = val[k] * c + weight(k - 1);
    val[0] = f;
  } else if (f !== -Infinity || m !== -Infinity) {
    for (let k = 1; k <= n; k++) val[k] += c * weight(k - 1);
  }
}

/** C++ of `addShiftExp`; `weight(k)` is the C expression of w_k. */
function emitAddShiftExp(
  ctx: ReductionEmitContext,
  val: string,
  f: string,
  weight: (k: string) => string,
): string {
  const n = ctx.red.layout.dimredVal - 1;
  const T = ctx.T;
  const [fv, mv, up, c] = [ctx.fresh('f'), ctx.fresh('m'), ctx.fresh('up'), ctx.fresh('c')];
  return (
    `{ const ${T} ${fv} = ${f}; const ${T} ${mv} = ${val}[0]; ` +
    `const bool ${up} = ${fv} > ${mv} || ${fv} != ${fv}; ` +
    `const ${T} ${c} = keops_exp(${up} ? ${mv} - ${fv} : ${fv} == ${mv} ? ${ctx.lit(0)} : ${fv} - ${mv}); ` +
    `if (${up}) { ${loop(ctx, n, (k) => `${val}[1 + ${k}] = ${val}[1 + ${k}] * ${c} + ${weight(k)};`)} ` +
    `${val}[0] = ${fv}; } ` +
    `else if (${fv} != -${inf(ctx)} || ${mv} != -${inf(ctx)}) { ` +
    `${loop(ctx, n, (k) => `${val}[1 + ${k}] += ${c} * ${weight(k)};`)} } }`
  );
}

/**
 * The LogSumExp-type reduction; `weighted` = with a weight formula g (fout = Concat(f, g)), otherwise g = 1
 * and fout = f. Pseudo-gradient (2.2): valid for post-processings invariant under (m, s) -> (m+c, s·e^{−c}),
 * i.e. m + log s and s_g / s_1; the m component of eta is ignored.
 */
function shiftExpReduction(weighted: boolean): EngineReductionDef {
  const name = weighted ? 'Max_SumShiftExpWeight_Reduction' : 'Max_SumShiftExp_Reduction';
  const weightFormula = (red: Reduction): Node | undefined => (weighted ? (red.formula2 as Node) : undefined);
  /** Exp(F − M)·g with M = the saved max: the summand whose Sum_Reduction the gradient differentiates. */
  const shiftedSummand = (red: Reduction, saved: Node | undefined): Node => {
    if (saved === undefined) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `${name}: its gradient needs the saved forward output (m, s) of dim ${red.layout.dimVal}`,
      );
    }
    if (saved.dim !== red.layout.dimVal) {
      throw new KeOpsError(
        'ERR_FORMULA_DIM',
        `${name}: the saved output must have dim ${red.layout.dimVal}, got ${saved.dim}`,
      );
    }
    const e = b.call('Exp', [b.sub(red.formula, b.call('Extract', [saved], [0, 1]))]);
    const g = weightFormula(red);
    return g === undefined ? e : b.mul(e, g);
  };
  const def: EngineReductionDef = {
    name,
    doc: weighted
      ? 'Max_SumShiftExpWeight_Reduction(f,tag,g): (m, s) with m = max f and s = Σ e^{f−m} g (f scalar)'
      : 'Max_SumShiftExp_Reduction(f,tag): (m, s) with m = max f and s = Σ e^{f−m} (f scalar)',
    syntax: weighted ? 'tag_formula2' : 'tag',
    sumType: true,
    partialState: name,
    layout(d, k, d2) {
      if (k !== undefined) throw new KeOpsError('ERR_REDUCTION', `${name} takes no K argument`);
      if (d !== 1)
        throw new KeOpsError(
          'ERR_FORMULA_DIM',
          `${name}: the formula f must be a scalar (dim 1), got dim ${d}`,
        );
      if (weighted && d2 === undefined)
        throw new KeOpsError('ERR_REDUCTION', `${name}: the weight formula g is missing`);
      if (!weighted && d2 !== undefined) {
        throw new KeOpsError(
          'ERR_REDUCTION',
          `${name} takes no weight formula (use Max_SumShiftExpWeight_Reduction)`,
        );
      }
      const width = 1 + (d2 ?? 1);
      checkWidth(name, width);
      return { dimredVal: width, dimredIdx: 0, dimVal: width, dimIdx: 0 };
    },
    fout: (f, g) => (weighted ? b.call('Concat', [f, g as Node]) : f),
    init(acc) {
      acc.val.fill(0);
      acc.val[0] = -Infinity;
    },
    fold: (acc, fout) => addShiftExp(acc.val, fout[0], weighted ? (k) => fout[1 + k] : () => 1),
    merge: (acc, other) => addShiftExp(acc.val, other.val[0], (k) => other.val[1 + k]),
    finalize: (acc) => ({ val: acc.val.slice(), idx: noIndex }),
    emitInit: (ctx, val) =>
      `{ ${val}[0] = -${inf(ctx)}; ${loop(ctx, ctx.red.layout.dimredVal - 1, (k) => `${val}[1 + ${k}] = ${ctx.lit(0)};`)} }`,
    emitFold: (ctx, val, _idx, fout) =>
      emitAddShiftExp(ctx, val, `${fout}[0]`, weighted ? (k) => `${fout}[1 + ${k}]` : () => ctx.lit(1)),
    emitMerge: (ctx, val, _idx, val2) => emitAddShiftExp(ctx, val, `${val2}[0]`, (k) => `${val2}[1 + ${k}]`),
    emitFinalize: (ctx, val, _idx, outVal) =>
      `{ ${loop(ctx, ctx.red.layout.dimVal, (k) => `${outVal}[${k}] = ${val}[${k}];`)} }`,
    gradient({ red, v, eta, saved, gradTag }) {
      const n = red.layout.dimVal - 1;
      const etaS = b.call('Extract', [eta], [1, n]);
      return new Reduction(Sum_Reduction, b.grad(shiftedSummand(red, saved), v, etaS), gradTag);
    },
    diff({ red, v, u, saved }) {
      const tangent = directionalDerivative(shiftedSummand(red, saved), v, u);
      return new Reduction(Sum_Reduction, b.call('Concat', [b.zero(1), tangent]), red.tag);
    },
  };
  return def;
}

const Max_SumShiftExp_Reduction = shiftExpReduction(false);
const Max_SumShiftExpWeight_Reduction = shiftExpReduction(true);

/**
 * The index of a rank no candidate filled (K > N, an empty reduction, or only NaN / infinite candidates), with
 * value +inf (−inf for Max): FAISS' convention, so that index 0 always names a real candidate.
 */
export const MISSING_INDEX = -1;

// ---------------------------------------------------------------------------------------------------------
// Min / Max / ArgMin / ArgMax / Min_ArgMin / Max_ArgMax: per component, the first extremum in j.

type Output = 'values' | 'indices' | 'both';

const argZeroGradient = ({ v, gradTag }: GradRequest): Reduction =>
  new Reduction(Zero_Reduction, b.zero(v.dim), gradTag);
const argZeroDiff = ({ red }: DiffRequest): Reduction =>
  new Reduction(Zero_Reduction, b.zero(red.layout.dimVal + red.layout.dimIdx), red.tag);

function extremumReduction(
  name: string,
  direction: 'min' | 'max',
  output: Output,
  doc: string,
): EngineReductionDef {
  const tracksIndex = output !== 'values';
  const better = direction === 'min' ? (x: number, y: number) => x < y : (x: number, y: number) => x > y;
  const cmp = direction === 'min' ? '<' : '>';
  const start = direction === 'min' ? Infinity : -Infinity;
  const what = direction === 'min' ? 'minimum' : 'maximum';
  const notDifferentiable =
    `${name} is not differentiable (its value jumps where the ${what} changes index); ` +
    `differentiate through Arg${direction === 'min' ? 'Min' : 'Max'}_Reduction and gather the formula at that index instead`;
  return {
    name,
    doc: `${name}(F,tag): per component, ${doc} over j (tag 0) or i (tag 1); ties go to the smallest index`,
    syntax: 'tag',
    sumType: false,
    // The index-only variants keep the extrema in their accumulator but do not output them.
    partialState:
      output === 'indices' ? (direction === 'min' ? 'Min_ArgMin_Reduction' : 'Max_ArgMax_Reduction') : name,
    layout(d, k, d2) {
      rejectExtras(name, k, d2);
      checkWidth(name, d);
      return {
        dimredVal: d,
        dimredIdx: tracksIndex ? d : 0,
        dimVal: output === 'indices' ? 0 : d,
        dimIdx: tracksIndex ? d : 0,
      };
    },
    fout: (f) => f,
    init(acc) {
      acc.val.fill(start);
      acc.idx.fill(MISSING_INDEX);
    },
    fold(acc, fout, j) {
      for (let k = 0; k < acc.val.length; k++) {
        if (better(fout[k], acc.val[k])) {
          acc.val[k] = fout[k];
          if (tracksIndex) acc.idx[k] = j;
        }
      }
    },
    merge(acc, other) {
      for (let k = 0; k < acc.val.length; k++) {
        const x = other.val[k];
        if (better(x, acc.val[k]) || (tracksIndex && x === acc.val[k] && other.idx[k] < acc.idx[k])) {
          acc.val[k] = x;
          if (tracksIndex) acc.idx[k] = other.idx[k];
        }
      }
    },
    finalize: (acc) => ({
      val: output === 'indices' ? new Float64Array(0) : acc.val.slice(),
      idx: tracksIndex ? acc.idx.slice() : noIndex,
    }),
    emitInit: (ctx, val, idx) =>
      `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) => `${val}[${k}] = ${direction === 'min' ? '' : '-'}${inf(ctx)};${tracksIndex ? ` ${idx}[${k}] = ${MISSING_INDEX};` : ''}`)} }`,
    emitFold: (ctx, val, idx, fout, j) =>
      `{ ${loop(
        ctx,
        ctx.red.layout.dimredVal,
        (k) =>
          `if (${fout}[${k}] ${cmp} ${val}[${k}]) { ${val}[${k}] = ${fout}[${k}];${tracksIndex ? ` ${idx}[${k}] = (int)(${j});` : ''} }`,
      )} }`,
    emitMerge: (ctx, val, idx, val2, idx2) =>
      `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) =>
        tracksIndex
          ? `if (${val2}[${k}] ${cmp} ${val}[${k}] || (${val2}[${k}] == ${val}[${k}] && ${idx2}[${k}] < ${idx}[${k}])) ` +
            `{ ${val}[${k}] = ${val2}[${k}]; ${idx}[${k}] = ${idx2}[${k}]; }`
          : `if (${val2}[${k}] ${cmp} ${val}[${k}]) ${val}[${k}] = ${val2}[${k}];`,
      )} }`,
    emitFinalize: (ctx, val, idx, outVal, outIdx) =>
      `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) =>
        [
          output !== 'indices' ? `${outVal}[${k}] = ${val}[${k}];` : '',
          tracksIndex ? `${outIdx}[${k}] = ${idx}[${k}];` : '',
        ].join(' '),
      )} }`,
    gradient: output === 'indices' ? argZeroGradient : notDifferentiable,
    diff: output === 'indices' ? argZeroDiff : notDifferentiable,
  };
}

const Min_Reduction = extremumReduction('Min_Reduction', 'min', 'values', 'the minimum');
const Max_Reduction = extremumReduction('Max_Reduction', 'max', 'values', 'the maximum');
const ArgMin_Reduction = extremumReduction('ArgMin_Reduction', 'min', 'indices', 'the index of the minimum');
const ArgMax_Reduction = extremumReduction('ArgMax_Reduction', 'max', 'indices', 'the index of the maximum');
const Min_ArgMin_Reduction = extremumReduction(
  'Min_ArgMin_Reduction',
  'min',
  'both',
  'the minimum and its index',
);
const Max_ArgMax_Reduction = extremumReduction(
  'Max_ArgMax_Reduction',
  'max',
  'both',
  'the maximum and its index',
);

// ---------------------------------------------------------------------------------------------------------
// KMin / ArgKMin / KMin_ArgKMin: per component, the K smallest values in increasing order with their indices.

/** Ranks up to which the KMin insertion is emitted unrolled (registers, no loop-carried index). */
const KMIN_UNROLLED_RANKS = 16;

/**
 * Inserts x (known to be before the rank-(K−1) entry) into the sorted ranks of component l, after the entries
 * it does not precede: rank r takes rank r−1's entry when x precedes it, x when x precedes rank r but not r−1,
 * and keeps its own otherwise. `precedes(slot)` is the order: `x < val[slot]` for the fold (ties keep the earlier
 * index), (value, index) lexicographic for the merge. Every rank is updated by selects, from K−1 down (so rank
 * r−1 is still the old one when rank r reads it): no data-dependent loop or index, so a GPU keeps the ranks in
 * registers instead of local memory.
 */
function emitKMinInsert(
  ctx: ReductionEmitContext,
  val: string,
  idx: string,
  x: string,
  j: string,
  l: string,
  precedes: (slot: string) => string = (slot) => `${x} < ${val}[${slot}]`,
): string {
  const D = ctx.red.formula.dim;
  const K = ctx.red.k as number;
  const at = (r: string): string => `${r} * ${D} + ${l}`;
  const step = (r: string): string => {
    const [shift, lands] = [ctx.fresh('shift'), ctx.fresh('lands')];
    return (
      `{ const bool ${shift} = ${precedes(at(`(${r} - 1)`))}; const bool ${lands} = ${precedes(at(r))}; ` +
      `${val}[${at(r)}] = ${shift} ? ${val}[${at(`(${r} - 1)`)}] : ${lands} ? ${x} : ${val}[${at(r)}]; ` +
      `${idx}[${at(r)}] = ${shift} ? ${idx}[${at(`(${r} - 1)`)}] : ${lands} ? ${j} : ${idx}[${at(r)}]; }`
    );
  };
  let ranks: string;
  if (K <= KMIN_UNROLLED_RANKS) {
    ranks = Array.from({ length: K - 1 }, (_, q) => step(String(K - 1 - q))).join(' ');
  } else {
    const r = ctx.fresh('r');
    ranks = `for (int ${r} = ${K - 1}; ${r} > 0; ${r}--) ${step(r)}`;
  }
  const first = ctx.fresh('lands');
  return (
    `${ranks} { const bool ${first} = ${precedes(l)}; ` +
    `${val}[${l}] = ${first} ? ${x} : ${val}[${l}]; ${idx}[${l}] = ${first} ? ${j} : ${idx}[${l}]; }`
  );
}

function kminReduction(name: string, output: Output, doc: string): EngineReductionDef {
  const notDifferentiable =
    `${name} is not differentiable (the selected values jump when the ranking changes); ` +
    'differentiate through ArgKMin_Reduction and gather the formula at those indices instead';
  return {
    name,
    doc: `${name}(F,K,tag): per component, ${doc} in increasing order (ties: smallest index first; ranks with no candidate are +inf with index -1)`,
    syntax: 'k_tag',
    sumType: false,
    partialState: 'KMin_ArgKMin_Reduction',
    layout(d, k, d2) {
      if (d2 !== undefined) throw new KeOpsError('ERR_REDUCTION', `${name} takes no second formula`);
      if (k === undefined || !Number.isSafeInteger(k) || k < 1) {
        throw new KeOpsError('ERR_REDUCTION', `${name}: K must be an integer >= 1, got ${k}`);
      }
      if (k * d > MAX_KMIN_WIDTH) {
        throw new KeOpsError(
          'ERR_REDUCTION',
          `${name}: K × dim = ${k} × ${d} exceeds ${MAX_KMIN_WIDTH}, the most K-nearest ranks one reduction keeps`,
        );
      }
      return {
        dimredVal: k * d,
        dimredIdx: k * d,
        dimVal: output === 'indices' ? 0 : k * d,
        dimIdx: output === 'values' ? 0 : k * d,
      };
    },
    fout: (f) => f,
    init(acc) {
      acc.val.fill(Infinity);
      acc.idx.fill(MISSING_INDEX);
    },
    fold(acc, fout, j, red) {
      const D = red.formula.dim;
      const K = red.k as number;
      const { val, idx } = acc;
      for (let l = 0; l < D; l++) {
        const x = fout[l];
        if (!(x < val[(K - 1) * D + l])) continue;
        let r = K - 1;
        for (; r > 0 && x < val[(r - 1) * D + l]; r--) {
          val[r * D + l] = val[(r - 1) * D + l];
          idx[r * D + l] = idx[(r - 1) * D + l];
        }
        val[r * D + l] = x;
        idx[r * D + l] = j;
      }
    },
    merge(acc, other, red) {
      const D = red.formula.dim;
      const K = red.k as number;
      const mergedVal = new Float64Array(K);
      const mergedIdx = new Float64Array(K); // exact for int32 and for the global indices of partial results
      for (let l = 0; l < D; l++) {
        let a = 0;
        let c = 0;
        for (let r = 0; r < K; r++) {
          const va = acc.val[a * D + l];
          const vb = other.val[c * D + l];
          const ia = acc.idx[a * D + l];
          const ib = other.idx[c * D + l];
          if (vb < va || (vb === va && ib < ia)) {
            mergedVal[r] = vb;
            mergedIdx[r] = ib;
            c++;
          } else {
            mergedVal[r] = va;
            mergedIdx[r] = ia;
            a++;
          }
        }
        for (let r = 0; r < K; r++) {
          acc.val[r * D + l] = mergedVal[r];
          acc.idx[r * D + l] = mergedIdx[r];
        }
      }
    },
    finalize: (acc) => ({
      val: output === 'indices' ? new Float64Array(0) : acc.val.slice(),
      idx: output === 'values' ? noIndex : acc.idx.slice(),
    }),
    emitInit: (ctx, val, idx) =>
      `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) => `${val}[${k}] = ${inf(ctx)}; ${idx}[${k}] = ${MISSING_INDEX};`)} }`,
    emitFold(ctx, val, idx, fout, j) {
      const D = ctx.red.formula.dim;
      const K = ctx.red.k as number;
      const [x, jj] = [ctx.fresh('x'), ctx.fresh('j')];
      return `{ const int ${jj} = (int)(${j}); ${loop(
        ctx,
        D,
        (l) =>
          `const ${ctx.T} ${x} = ${fout}[${l}]; ` +
          `if (${x} < ${val}[${(K - 1) * D} + ${l}]) { ${emitKMinInsert(ctx, val, idx, x, jj, l)} }`,
      )} }`;
    },
    // Each entry of the second list, in order, inserted into the first by (value, index): the K first of the
    // merged order (the two-pointer merge of the reference), with registers only (the insertion of the fold).
    emitMerge(ctx, val, idx, val2, idx2) {
      const D = ctx.red.formula.dim;
      const K = ctx.red.k as number;
      const [x, jj, q] = [ctx.fresh('x'), ctx.fresh('j'), ctx.fresh('q')];
      const precedes = (slot: string): string =>
        `(${x} < ${val}[${slot}] || (${x} == ${val}[${slot}] && ${jj} < ${idx}[${slot}]))`;
      return `{ ${loop(ctx, D, (l) => {
        const entry = (rank: string): string =>
          `{ const ${ctx.T} ${x} = ${val2}[${rank} * ${D} + ${l}]; const int ${jj} = ${idx2}[${rank} * ${D} + ${l}]; ` +
          `if (${precedes(`${(K - 1) * D} + ${l}`)}) { ${emitKMinInsert(ctx, val, idx, x, jj, l, precedes)} } }`;
        return K <= KMIN_UNROLLED_RANKS
          ? Array.from({ length: K }, (_, r) => entry(String(r))).join(' ')
          : `for (int ${q} = 0; ${q} < ${K}; ${q}++) ${entry(q)}`;
      })} }`;
    },
    emitFinalize: (ctx, val, idx, outVal, outIdx) =>
      `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) =>
        [
          output !== 'indices' ? `${outVal}[${k}] = ${val}[${k}];` : '',
          output !== 'values' ? `${outIdx}[${k}] = ${idx}[${k}];` : '',
        ].join(' '),
      )} }`,
    gradient: output === 'indices' ? argZeroGradient : notDifferentiable,
    diff: output === 'indices' ? argZeroDiff : notDifferentiable,
  };
}

const KMin_Reduction = kminReduction('KMin_Reduction', 'values', 'the K smallest values');
const ArgKMin_Reduction = kminReduction(
  'ArgKMin_Reduction',
  'indices',
  'the indices of the K smallest values',
);
const KMin_ArgKMin_Reduction = kminReduction(
  'KMin_ArgKMin_Reduction',
  'both',
  'the K smallest values and their indices',
);

// ---------------------------------------------------------------------------------------------------------
// Zero_Reduction: the gradient of index-valued reductions; its formula is canonically Zero(d).

const Zero_Reduction: EngineReductionDef = {
  name: 'Zero_Reduction',
  doc: 'Zero_Reduction(Zero(d),tag): d zeros per output row (nothing is evaluated)',
  syntax: 'tag',
  sumType: false,
  partialState: 'Zero_Reduction',
  layout(d, k, d2) {
    rejectExtras('Zero_Reduction', k, d2);
    checkWidth('Zero_Reduction', d);
    return { dimredVal: d, dimredIdx: 0, dimVal: d, dimIdx: 0 };
  },
  fout: (f) => f,
  init: (acc) => void acc.val.fill(0),
  fold: () => undefined,
  merge: () => undefined,
  finalize: (acc) => ({ val: new Float64Array(acc.val.length), idx: noIndex }),
  emitInit: (ctx, val) =>
    `{ ${loop(ctx, ctx.red.layout.dimredVal, (k) => `${val}[${k}] = ${ctx.lit(0)};`)} }`,
  emitFold: () => '{ }',
  emitMerge: () => '{ }',
  emitFinalize: (ctx, _val, _idx, outVal) =>
    `{ ${loop(ctx, ctx.red.layout.dimVal, (k) => `${outVal}[${k}] = ${ctx.lit(0)};`)} }`,
  gradient: ({ v, gradTag }) => new Reduction(Zero_Reduction, b.zero(v.dim), gradTag),
  diff: ({ red }) => new Reduction(Zero_Reduction, b.zero(red.layout.dimVal), red.tag),
};

// ---------------------------------------------------------------------------------------------------------
// Tables and entry points

const ENGINE_REDUCTIONS: ReadonlyMap<string, EngineReductionDef> = new Map(
  [
    Sum_Reduction,
    Max_SumShiftExp_Reduction,
    Max_SumShiftExpWeight_Reduction,
    Min_Reduction,
    Max_Reduction,
    ArgMin_Reduction,
    ArgMax_Reduction,
    Min_ArgMin_Reduction,
    Max_ArgMax_Reduction,
    KMin_Reduction,
    ArgKMin_Reduction,
    KMin_ArgKMin_Reduction,
    Zero_Reduction,
  ].map((d) => [d.name, d]),
);

/** Every engine reduction by its formula-string name (e.g. 'Sum_Reduction'). */
export const REDUCTIONS: ReadonlyMap<string, ReductionDef> = ENGINE_REDUCTIONS;

/** Levenshtein distance, case-insensitive (for "did you mean" suggestions). */
function editDistance(a: string, b2: string): number {
  const s = a.toLowerCase();
  const t = b2.toLowerCase();
  let prev = Array.from({ length: t.length + 1 }, (_, k) => k);
  for (let i = 1; i <= s.length; i++) {
    const cur = [i];
    for (let j = 1; j <= t.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (s[i - 1] === t[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[t.length];
}

/** The candidate closest to `name` (for error messages). */
export function closestName(name: string, candidates: Iterable<string>): string {
  let best = '';
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(name, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best;
}

/**
 * Zero_Reduction ignores its formula's value: store Zero(d) so that equal reductions print equal. An integer
 * first argument is KeOps' own spelling `Zero_Reduction(d,tag)`, so `Zero_Reduction(3,0)` has dim 3.
 */
function zeroReductionFormula(formula: Node): Node {
  if (formula.op.name !== 'IntCst') return b.zero(formula.dim);
  const d = formula.params[0] as number;
  if (!(d >= 1 && d <= MAX_ACCUMULATOR_WIDTH)) {
    throw new KeOpsError(
      'ERR_REDUCTION',
      `Zero_Reduction: the dimension must be between 1 and ${MAX_ACCUMULATOR_WIDTH}, got ${d}`,
    );
  }
  return b.zero(d);
}

function lookupEngineDef(name: string): EngineReductionDef {
  const def = ENGINE_REDUCTIONS.get(name);
  if (def === undefined) {
    const hint = closestName(name, ENGINE_REDUCTIONS.keys());
    throw new KeOpsError(
      'ERR_REDUCTION',
      `unknown reduction '${name}'; did you mean '${hint}'? (known: ${[...ENGINE_REDUCTIONS.keys()].join(', ')})`,
    );
  }
  return def;
}

/**
 * Builds the engine reduction `name` applied to `formula`, validating everything: the name (with a
 * suggestion), the tag (0 or 1), K (an integer >= 1, only for KMin-type reductions), formula2 (only and
 * always for Max_SumShiftExpWeight_Reduction) and dims.
 */
export function makeReduction(
  name: string,
  formula: Node,
  opts: { tag: number; k?: number; formula2?: Node },
): Reduction {
  const def = lookupEngineDef(name);
  const tag = checkTag(name, opts.tag);
  if (def.syntax !== 'k_tag' && opts.k !== undefined) {
    throw new KeOpsError('ERR_REDUCTION', `${name} takes no K argument (only KMin-type reductions do)`);
  }
  if (def.syntax === 'k_tag' && (opts.k === undefined || !Number.isSafeInteger(opts.k) || opts.k < 1)) {
    throw new KeOpsError('ERR_REDUCTION', `${name}: K must be an integer >= 1, got ${opts.k}`);
  }
  if (def.syntax !== 'tag_formula2' && opts.formula2 !== undefined) {
    throw new KeOpsError('ERR_REDUCTION', `${name} takes no second formula`);
  }
  if (def.syntax === 'tag_formula2' && opts.formula2 === undefined) {
    throw new KeOpsError('ERR_REDUCTION', `${name}: the weight formula (third argument) is missing`);
  }
  const f = def === Zero_Reduction ? zeroReductionFormula(formula) : formula;
  return new Reduction(def, f, tag, opts.k, opts.formula2);
}

/**
 * The reduction whose output is `red`'s whole accumulator (its `partialState`): same formula, tag, K and weight
 * formula, same accumulator layout and fold.
 */
export function partialStateReduction(red: Reduction): Reduction {
  const state = makeReduction(red.def.partialState, red.formula, {
    tag: red.tag,
    k: red.k,
    formula2: red.formula2,
  });
  const [a, b2] = [red.layout, state.layout];
  if (a.dimredVal !== b2.dimredVal || a.dimredIdx !== b2.dimredIdx) {
    throw new KeOpsError(
      'ERR_INTERNAL',
      `${red.def.name}: its partial state ${state.def.name} has another accumulator`,
    );
  }
  return state;
}

/** Width of a reduction's output row (values then indices): the dim of the gradient input eta. */
export const outputDim = (red: Reduction): number => red.layout.dimVal + red.layout.dimIdx;

function checkVariable(what: string, v: Node): void {
  const cat = v.params[2] as number;
  if (v.op.name !== 'Var' || ![0, 1, 2].includes(cat)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `${what}: can only differentiate with respect to an input variable, got ${v}`,
    );
  }
}

function engineDefOf(red: Reduction): EngineReductionDef {
  const def = ENGINE_REDUCTIONS.get(red.def.name);
  if (def === undefined || def !== red.def) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `${red.def.name} is not an engine reduction of keops-node`);
  }
  return def;
}

/**
 * Reverse mode (docs/semantics.md 3.2): the reduction whose output is the gradient of ⟨eta, red⟩ with respect
 * to the variable v. `eta` (dim = output width) and `saved` (the raw forward output, needed by the
 * Max_SumShiftExp family) are formulas, normally variables of category `red.tag`.
 *
 * The result reduces over the index v does not carry: i-variables get one row per i (tag 0), j-variables one
 * row per j (tag 1). Parameters get tag 0, i.e. one partial gradient per i: the CALLER MUST SUM those rows.
 * Sum → Sum_Reduction(Grad(F,v,eta)); Max_SumShiftExp(Weight) → the pseudo-gradient
 * Sum_Reduction(Grad(Exp(F − m)·g, v, eta_s)) with m from `saved` (valid after m + log s or s_g/s_1);
 * ArgMin/ArgMax/ArgKMin/Zero → Zero_Reduction; Min/Max/KMin (and their Arg-pairs) → ERR_NOT_DIFFERENTIABLE.
 */
export function reductionGradient(red: Reduction, v: Node, eta: Node, saved?: Node): Reduction {
  const def = engineDefOf(red);
  checkVariable(`gradient of ${def.name}`, v);
  if (typeof def.gradient === 'string') throw new KeOpsError('ERR_NOT_DIFFERENTIABLE', def.gradient);
  if (eta.dim !== outputDim(red)) {
    throw new KeOpsError(
      'ERR_FORMULA_DIM',
      `gradient of ${def.name}: the gradient input must have the output's dim ${outputDim(red)}, got ${eta.dim}`,
    );
  }
  return def.gradient({ red, v, eta, saved, gradTag: gradTagOf(v) });
}

/**
 * Forward mode (docs/semantics.md 3.3): the reduction computing the derivative of red along the tangent u
 * of v (dim u = dim v). Sum → Sum_Reduction(Diff(F,v,u), tag); Max_SumShiftExp(Weight) →
 * Sum_Reduction(Concat(Zero(1), Diff(Exp(F − m)·g, v, u)), tag) (tangent of s at fixed m, the m component 0);
 * ArgMin/ArgMax/ArgKMin/Zero → Zero_Reduction; the others → ERR_NOT_DIFFERENTIABLE.
 */
export function reductionDiff(red: Reduction, v: Node, u: Node, saved?: Node): Reduction {
  const def = engineDefOf(red);
  checkVariable(`derivative of ${def.name}`, v);
  if (typeof def.diff === 'string') throw new KeOpsError('ERR_NOT_DIFFERENTIABLE', def.diff);
  if (u.dim !== v.dim) {
    throw new KeOpsError(
      'ERR_FORMULA_DIM',
      `derivative of ${def.name}: the tangent must have dim ${v.dim}, got ${u.dim}`,
    );
  }
  return def.diff({ red, v, u, saved });
}

export type { ReductionAcc, ReductionLayout };

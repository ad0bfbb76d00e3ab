/**
 * The reduction hooks as `KEOPS_HD` functions shared by the CPU and CUDA kernels, wrapping the C++ statements
 * of the `ReductionDef` (docs/semantics.md 5.7). With T the data type and TA the accumulator type:
 *
 *   KEOPS_HD void <prefix>_init(TA* val, int* idx)
 *   KEOPS_HD void <prefix>_fold(TA* val, int* idx, const T* fout, long j)          // j: global inner index
 *   KEOPS_HD void <prefix>_merge(TA* val, int* idx, const TA* val2, const int* idx2)
 *   KEOPS_HD void <prefix>_finalize(const TA* val, const int* idx, T* out_val, int* out_idx)
 *
 * and, for the sum-type reductions that have a compensated variant (Sum, Max_SumShiftExp(Weight)):
 *
 *   KEOPS_HD void <prefix>_fold_kahan(TA* val, int* idx, TA* comp, const T* fout, long j)
 *   KEOPS_HD void <prefix>_settle_kahan(TA* val, TA* comp)   // folds the compensation into val, zeroes comp
 *
 * `comp` has `dimredVal` entries, zero-initialised by the caller. Index arrays are `int` (int32 on every target).
 *
 * and, for reductions whose fold only ever tightens a threshold (KMin family), a branch-free filter:
 *
 *   KEOPS_HD bool <prefix>_can_skip(const TA* val, const T* fout)
 *
 * true when folding `fout` into `val` would change nothing, and then also for every state `val` can later reach
 * (so a kernel may test many values against one snapshot of the accumulator, e.g. in a SIMD loop), and exactly when
 * it holds for each of a group of values it holds for their componentwise minimum with NaN ignored (keops_fmin), so
 * a kernel may test that minimum once (the CUDA kernels do).
 *
 * and, for reductions whose fold has a cheap common case (Max_SumShiftExp(Weight): a term at or below the
 * running maximum), a fold with a branch to that case, for kernels that branch per pair (the CUDA kernels; the
 * CPU kernel's vectorised loops keep the branch-free `fold`), with `hotSlots` values of state that make the common
 * case cheaper (e.g. the maximum pre-scaled by −log2 e):
 *
 *   KEOPS_HD void <prefix>_fold_hot(TA* val, int* idx, TA* hot, const T* fout, long j)
 *   KEOPS_HD void <prefix>_hot_sync(const TA* val, TA* hot)    // starts the hot state from val
 *   KEOPS_HD void <prefix>_hot_settle(TA* val, TA* hot)        // makes val what _fold would have made it
 *
 * Between a `_hot_sync` and a `_hot_settle`, `val` may be folded by `_fold_hot` only; after the settle it holds
 * what the same terms folded by `_fold` give (to rounding), and the state is synced again. A kernel syncs after
 * every other change of `val` (init, merge) and settles before anything reads `val` (merge, finalize, partials).
 */
import { KeOpsError } from '../errors';
import type { Reduction, ReductionEmitContext } from '../formula/reduction';
import { cLiteral, type NameAllocator } from './names';

export interface ReductionHooksOptions {
  /** Data scalar type (fout, outputs). */
  readonly T: string;
  /** Accumulator scalar type. */
  readonly TAcc: string;
  readonly names: NameAllocator;
  /** Fixed prefix of the hook names (reserved in `names`), e.g. 'keops_red'. */
  readonly prefix: string;
  /** What `TAcc` stands for: float32 hot paths work in base 2 (see emitShiftExpHotFold). */
  readonly accDtype: 'float32' | 'float64';
}

export interface ReductionHooks {
  readonly source: string;
  readonly init: string;
  readonly fold: string;
  readonly merge: string;
  readonly finalize: string;
  /** Present when the reduction has a compensated (Kahan) fold. */
  readonly kahan?: { readonly fold: string; readonly settle: string };
  /** Present when the reduction has a monotone skip test (see above). */
  readonly canSkip?: string;
  /** Present when the reduction has a fold with a hot path (see above). */
  readonly hot?: {
    readonly fold: string;
    readonly sync: string;
    readonly settle: string;
    readonly slots: number;
  };
}

/**
 * KMin-type (val[r*D + l] sorted by rank r): a value enters only if it is below rank K-1 (strictly: ties keep the
 * earlier index; NaN never enters), and that threshold only decreases.
 */
function emitKMinCanSkip(ctx: ReductionEmitContext, val: string, fout: string): string {
  const D = ctx.red.formula.dim;
  const K = ctx.red.k as number;
  const skip = ctx.fresh('skip');
  return (
    `int ${skip} = 1; ` +
    forEach(ctx, D, (l) => `${skip} &= !(${fout}[${l}] < ${val}[${(K - 1) * D} + ${l}]);`) +
    ` return ${skip} != 0;`
  );
}

const SKIP_TESTS: ReadonlyMap<string, (ctx: ReductionEmitContext, val: string, fout: string) => string> =
  new Map([
    ['KMin_Reduction', emitKMinCanSkip],
    ['ArgKMin_Reduction', emitKMinCanSkip],
    ['KMin_ArgKMin_Reduction', emitKMinCanSkip],
  ]);

/** The bodies of a hot-path fold and of its state hooks (`hot` names the state array). */
interface HotFold {
  readonly fold: string;
  readonly sync: string;
  readonly settle: string;
  readonly slots: number;
}

/**
 * Max_SumShiftExp(Weight): d = f − m <= 0 (f at or below the maximum, both finite, or f = −∞, or m = +∞) adds
 * e^d·w, which is what the full fold computes in those cases (e^{f−m}, e^0 on a tie); d > 0 (a new maximum) and
 * d = NaN (NaN, or both infinite of one sign) take the full fold. One compare and branch instead of the full
 * fold's selects on every term. The common case is marked likely: NVCC then lays it out in line (it otherwise puts
 * it out of line, two jumps more per pair).
 *
 * float accumulators take that case in base 2, as fast math computes e^x anyway (2^(x·log2 e)): with
 * h = RN(−m·log2 e) kept in `hot` (recomputed only when m changes), (f − m)·log2 e is one exact FMA f·log2 e + h
 * followed by the MUFU, instead of a subtraction and a multiply. h is rounded: every term so added carries the same
 * factor 2^ρ, ρ = m·log2 e + h (an exact FMA), |ρ| <= half an ulp of m·log2 e; so `hot` also keeps the sums s0 at the
 * last sync, and the settle scales what was added since, s = s0 + (s − s0)·2^−ρ, before anything reads s (the full
 * fold, merge, finalize). Exponent differences are thus exact as in the full fold, whatever |m|. While |m·log2 e|
 * >= 2^30 (2^ρ could overflow), or m is not finite, h = +∞ and every term takes the full fold. double
 * accumulators keep d = f − m (no state).
 */
function emitShiftExpHotFold(
  ctx: ReductionEmitContext,
  names: { val: string; hot: string; fout: string },
  fullFold: string,
  accDtype: 'float32' | 'float64',
): HotFold {
  const { val, hot, fout } = names;
  const n = ctx.red.layout.dimredVal - 1;
  const weighted = ctx.red.fout.dim > 1;
  const T = ctx.T;
  const [d, c] = [ctx.fresh('d'), ctx.fresh('c')];
  const w = (k: string): string => (weighted ? `${fout}[1 + ${k}]` : ctx.lit(1));
  const add = forEach(ctx, n, (k) => `${val}[1 + ${k}] += ${c} * ${w(k)};`);
  if (accDtype !== 'float32') {
    return {
      fold:
        `(void)${hot}; const ${T} ${d} = (${T})${fout}[0] - ${val}[0]; ` +
        `if (KEOPS_LIKELY(${d} <= ${ctx.lit(0)})) { const ${T} ${c} = keops_exp(${d}); ${add} } else ${fullFold}`,
      sync: `(void)${val}; (void)${hot};`,
      settle: `(void)${val}; (void)${hot};`,
      slots: 0,
    };
  }
  const [h, rho, back] = [ctx.fresh('h'), ctx.fresh('rho'), ctx.fresh('back')];
  const sync =
    `const ${T} ${h} = ${val}[0] * ${ctx.lit(-Math.LOG2E)}; ` +
    `${hot}[0] = keops_abs(${h}) < ${ctx.lit(2 ** 30)} ? ${h} : keops_inf<${T}>(); ` +
    forEach(ctx, n, (k) => `${hot}[1 + ${k}] = ${val}[1 + ${k}];`);
  const settle =
    `if (${hot}[0] < keops_inf<${T}>()) { ` +
    `const ${T} ${rho} = keops_fma(${val}[0], keops_log2e_float, ${hot}[0]); ` +
    `const ${T} ${back} = keops_exp2(-${rho}); ` +
    forEach(
      ctx,
      n,
      (k) =>
        `${val}[1 + ${k}] = keops_fma(${val}[1 + ${k}] - ${hot}[1 + ${k}], ${back}, ${hot}[1 + ${k}]); ` +
        `${hot}[1 + ${k}] = ${val}[1 + ${k}];`,
    ) +
    ` }`;
  return {
    // −f·(−log2 e): the negation of a formula ending in one (−SqDist) cancels.
    fold:
      `const ${T} ${d} = keops_fma(-(${T})${fout}[0], keops_minus_log2e_float, ${hot}[0]); ` +
      `if (KEOPS_LIKELY(${d} <= ${ctx.lit(0)})) { const ${T} ${c} = keops_exp2(${d}); ${add} } ` +
      `else { { ${settle} } ${fullFold} { ${sync} } }`,
    sync,
    settle,
    slots: 1 + n,
  };
}

const HOT_FOLDS: ReadonlyMap<
  string,
  (
    ctx: ReductionEmitContext,
    names: { val: string; hot: string; fout: string },
    fullFold: string,
    accDtype: 'float32' | 'float64',
  ) => HotFold
> = new Map([
  ['Max_SumShiftExp_Reduction', emitShiftExpHotFold],
  ['Max_SumShiftExpWeight_Reduction', emitShiftExpHotFold],
]);

/** Whether `kahan_scheme` is available for this reduction. */
export function hasKahanScheme(red: Reduction): boolean {
  return KAHAN_FOLDS.has(red.def.name);
}

type KahanEmitter = (
  ctx: ReductionEmitContext,
  names: { val: string; comp: string; fout: string },
) => { fold: string; settle: string };

/** y = a - c; t = s + y; c = (t - s) - y; s = t. A non-finite c (s or a infinite) is dropped: inf stays inf. */
function kahanAdd(ctx: ReductionEmitContext, s: string, c: string, a: string): string {
  const [y, t, e] = [ctx.fresh('y'), ctx.fresh('t'), ctx.fresh('e')];
  const T = ctx.T;
  return (
    `{ const ${T} ${y} = (${T})(${a}) - ${c}; const ${T} ${t} = ${s} + ${y}; ` +
    `const ${T} ${e} = (${t} - ${s}) - ${y}; ${c} = ${e} == ${e} ? ${e} : ${ctx.lit(0)}; ${s} = ${t}; }`
  );
}

function forEach(ctx: ReductionEmitContext, n: number, body: (k: string) => string): string {
  const k = ctx.fresh('k');
  return `for (int ${k} = 0; ${k} < ${n}; ${k}++) { ${body(k)} }`;
}

const sumKahan: KahanEmitter = (ctx, { val, comp, fout }) => {
  const D = ctx.red.layout.dimredVal;
  return {
    fold: forEach(ctx, D, (k) => kahanAdd(ctx, `${val}[${k}]`, `${comp}[${k}]`, `${fout}[${k}]`)),
    settle: forEach(ctx, D, (k) => `${val}[${k}] -= ${comp}[${k}]; ${comp}[${k}] = ${ctx.lit(0)};`),
  };
};

/**
 * Mirrors the (m, s) fold of reductions.ts (addShiftExp): s and its compensation are rescaled together when a
 * new maximum arrives, and the weighted term is added with compensation.
 */
const shiftExpKahan: KahanEmitter = (ctx, { val, comp, fout }) => {
  const n = ctx.red.layout.dimredVal - 1;
  const weighted = ctx.red.fout.dim > 1;
  const T = ctx.T;
  const [f, c] = [ctx.fresh('f'), ctx.fresh('c')];
  const w = (k: string): string => (weighted ? `(${T})${fout}[1 + ${k}]` : ctx.lit(1));
  const rescaleAndAdd = (scale: string, term: (k: string) => string): string =>
    forEach(
      ctx,
      n,
      (k) =>
        `${val}[1 + ${k}] *= ${scale}; ${comp}[1 + ${k}] *= ${scale}; ` +
        kahanAdd(ctx, `${val}[1 + ${k}]`, `${comp}[1 + ${k}]`, term(k)),
    );
  // One exp per term, as addShiftExp: e^{−|f−m|}, e^0 on a tie (then c·w = w exactly).
  const [m, up] = [ctx.fresh('m'), ctx.fresh('up')];
  const fold =
    `const ${T} ${f} = (${T})${fout}[0]; const ${T} ${m} = ${val}[0]; ` +
    `const bool ${up} = ${f} > ${m} || ${f} != ${f}; ` + // NaN becomes a sticky maximum, as addShiftExp
    `const ${T} ${c} = keops_exp(${up} ? ${m} - ${f} : ${f} == ${m} ? ${ctx.lit(0)} : ${f} - ${m}); ` +
    `if (${up}) { ${rescaleAndAdd(c, w)} ${val}[0] = ${f}; } ` +
    `else if (${f} != -keops_inf<${T}>() || ${m} != -keops_inf<${T}>()) { ` +
    `${rescaleAndAdd(ctx.lit(1), (k) => `${c} * ${w(k)}`)} }`;
  return {
    fold,
    settle: forEach(
      ctx,
      n,
      (k) => `${val}[1 + ${k}] -= ${comp}[1 + ${k}]; ${comp}[1 + ${k}] = ${ctx.lit(0)};`,
    ),
  };
};

const KAHAN_FOLDS: ReadonlyMap<string, KahanEmitter> = new Map([
  ['Sum_Reduction', sumKahan],
  ['Max_SumShiftExp_Reduction', shiftExpKahan],
  ['Max_SumShiftExpWeight_Reduction', shiftExpKahan],
]);

export function generateReductionHooks(red: Reduction, opts: ReductionHooksOptions): ReductionHooks {
  const { T, TAcc, names, prefix } = opts;
  const ctx: ReductionEmitContext = {
    red,
    T: TAcc,
    lit: (v) => cLiteral(v, TAcc),
    fresh: (hint) => names.fresh(hint),
  };
  const def = red.def;
  const fn = (name: string, params: string, body: string, returns = 'void'): string =>
    `KEOPS_HD ${returns} ${names.reserve(name)}(${params}) {\n  ${body}\n}\n`;
  const [val, idx, val2, idx2, fout, j, outVal, outIdx, comp, hotState] = [
    'val',
    'idx',
    'val2',
    'idx2',
    'fout',
    'j',
    'out_val',
    'out_idx',
    'comp',
    'hot',
  ].map((h) => names.fresh(h));

  const hookNames = {
    init: `${prefix}_init`,
    fold: `${prefix}_fold`,
    merge: `${prefix}_merge`,
    finalize: `${prefix}_finalize`,
  };
  let source =
    fn(hookNames.init, `${TAcc}* ${val}, int* ${idx}`, def.emitInit(ctx, val, idx)) +
    fn(
      hookNames.fold,
      `${TAcc}* ${val}, int* ${idx}, const ${T}* ${fout}, long ${j}`,
      def.emitFold(ctx, val, idx, fout, j),
    ) +
    fn(
      hookNames.merge,
      `${TAcc}* ${val}, int* ${idx}, const ${TAcc}* ${val2}, const int* ${idx2}`,
      def.emitMerge(ctx, val, idx, val2, idx2),
    ) +
    fn(
      hookNames.finalize,
      `const ${TAcc}* ${val}, const int* ${idx}, ${T}* ${outVal}, int* ${outIdx}`,
      def.emitFinalize(ctx, val, idx, outVal, outIdx),
    );

  const kahanEmitter = KAHAN_FOLDS.get(def.name);
  let kahan: ReductionHooks['kahan'];
  if (kahanEmitter !== undefined) {
    const code = kahanEmitter(ctx, { val, comp, fout });
    kahan = { fold: `${prefix}_fold_kahan`, settle: `${prefix}_settle_kahan` };
    source +=
      fn(
        kahan.fold,
        `${TAcc}* ${val}, int* ${idx}, ${TAcc}* ${comp}, const ${T}* ${fout}, long ${j}`,
        code.fold,
      ) + fn(kahan.settle, `${TAcc}* ${val}, ${TAcc}* ${comp}`, code.settle);
  }
  const skipTest = SKIP_TESTS.get(def.name);
  let canSkip: string | undefined;
  if (skipTest !== undefined) {
    canSkip = `${prefix}_can_skip`;
    source += fn(canSkip, `const ${TAcc}* ${val}, const ${T}* ${fout}`, skipTest(ctx, val, fout), 'bool');
  }
  const hotFold = HOT_FOLDS.get(def.name);
  let hot: ReductionHooks['hot'];
  if (hotFold !== undefined) {
    const fullFold = `{ ${def.emitFold(ctx, val, idx, fout, j)} }`;
    const code = hotFold(ctx, { val, hot: hotState, fout }, fullFold, opts.accDtype);
    hot = {
      fold: `${prefix}_fold_hot`,
      sync: `${prefix}_hot_sync`,
      settle: `${prefix}_hot_settle`,
      slots: code.slots,
    };
    source +=
      fn(
        hot.fold,
        `${TAcc}* ${val}, int* ${idx}, ${TAcc}* ${hotState}, const ${T}* ${fout}, long ${j}`,
        `(void)${idx}; (void)${j}; ${code.fold}`,
      ) +
      fn(hot.sync, `const ${TAcc}* ${val}, ${TAcc}* ${hotState}`, code.sync) +
      fn(hot.settle, `${TAcc}* ${val}, ${TAcc}* ${hotState}`, code.settle);
  }
  return { source, ...hookNames, kahan, canSkip, hot };
}

/** The error for a sum scheme the reduction does not support. */
export function unsupportedSumScheme(red: Reduction, scheme: string): KeOpsError {
  return new KeOpsError(
    'ERR_INVALID_ARGUMENT',
    `sum scheme '${scheme}' applies to sum-type reductions only` +
      (red.def.sumType ? ` with a compensated fold (Sum, Max_SumShiftExp(Weight))` : '') +
      `, not to ${red.def.name}`,
  );
}

/**
 * Screening of k-nearest-neighbour searches in the float32 CUDA kernels (the GPU side of cpu-blocked-filter.ts).
 *
 *   cudaSqDistScreen(red, positions, { tensorCores }) -> CudaSqDistScreen | undefined
 *
 * For a KMin / ArgKMin / KMin_ArgKMin (or Min / ArgMin / Min_ArgMin) reduction whose formula is SqDist(x, y) alone (x an output-row variable,
 * y a reduced one, D >= MIN_SCREEN_DIM; the pattern the CPU's blocked filter recognises), the kernels compute
 * A = fl(fl(|x|² + |y|²) − 2⟨x,y⟩) with one FMA per component (|x|² once per row, |y|² once per staged record)
 * and skip every pair for which
 *
 *   fl(A·α) >= fl(fl(T·τ) + fl(fl(N·β) + η)),  A >= 0,  N = fl(|x|² + |y|²),  T = the row's k-th smallest value.
 *
 * Why that is safe (u = 2⁻²⁴, γ = D·u / (1 − D·u), η₀ = D·2⁻¹²⁶ for flushed subnormals, FTZ under fast math):
 *   - the float32 dot product and norms are within γ·Σ|x_k y_k| ≤ γ·S/2 and γ·|x|², γ·|y|² (+η₀) of the exact
 *     ones, S = |x|² + |y|², so the exact d = |x − y|² ≥ A/(1 + u) − c₀·S − 5η₀ with c₀ = 2γ + u(1 + γ), and
 *     S ≤ N / ((1 − u)(1 − γ)) + 2η₀/(1 − γ);
 *   - the kernel's exact value d̃ = fl(Σ fl(x_k − y_k)²) ≥ κ·d − 3η₀, κ = (1 − u)³(1 − γ);
 *   - hence d̃ ≥ a₁·A − a₂·N − η₁ with a₁ = κ/(1 + u), a₂ = κ·c₀ / ((1 − u)(1 − γ)), η₁ = 16η₀;
 *   - the test's own roundings (each at most a factor 1 ± u on non-negative values, literals rounded to float32
 *     included) are covered by α = a₁(1 − 4u), β = a₂(1 + 8u), τ = 1 + 2⁻²¹, η = 2η₁.
 * So a skipped pair has d̃ >= T: the fold (which inserts only values < T, and T only decreases) would not have
 * inserted it. NaN and overflow fail the test and take the exact path. Results (values and indices) are those of
 * the unscreened kernel, bit for bit; the screening only decides which pairs are evaluated exactly.
 *
 * With `tensorCores`, ⟨x,y⟩ comes from mma.sync with TF32 operands and float32 accumulation (the norms stay FMA
 * sums). The hardware's TF32 handling is taken at its worst, so that the bound holds whether it rounds or
 * truncates: each operand within 2⁻¹⁰ of its float32 value (10 mantissa bits kept), so a product within
 * e_in = 2·2⁻¹⁰ + 2⁻²⁰ of x_k y_k; the product exact; each m16n8k8 step (8 products added to the running sum)
 * within ε_m = 2⁻¹⁸ of |c| + Σ|p| (16 × the 9·2⁻²³ of a round-toward-zero sum of 9 terms aligned to the largest);
 * flushed subnormal operands and results within 2⁻¹²⁶·|other| and 2⁻¹²⁶. Over s = ⌈D/8⌉ steps:
 *   |dot − ⟨x,y⟩| ≤ c_dot·Σ|x_k y_k| + η_mma,   c_dot = e_in + s·ε_m·(1 + ε_m)^s·(1 + 2⁻¹⁰)² + 2⁻¹²⁶,
 *   η_mma = (D + 9s)·2⁻¹²⁵,
 * and the derivation above goes through with c₀ = γ + c_dot + u(1 + γ) and η₁ += 2·η_mma. With c_dot ≈ 2⁻⁹ the
 * band of pairs evaluated exactly is wider (about T + 2⁻⁹·N instead of T + D·2⁻²³·N), which for k-NN data still
 * excludes almost every pair, and the exact path keeps the results bit for bit those of the unscreened kernel.
 */
import type { Reduction } from '../formula/reduction';
import { planBlockedEvaluation } from './cpu-blocked';
import { sqDistFilter } from './cpu-blocked-filter';
import type { ArgPosition } from './formula';

/** Below this, the exact per-pair code is short and the screening's test would weigh more than it saves. */
export const MIN_SCREEN_DIM = 32;
/**
 * Reductions whose fold keeps a value only when it is strictly below a threshold that never increases (NaN never
 * enters): the k-th smallest value for the KMin family, the minimum (K = 1) for the Min family.
 */
const KMIN_FAMILY = new Set(['KMin_Reduction', 'ArgKMin_Reduction', 'KMin_ArgKMin_Reduction']);
const MIN_FAMILY = new Set(['Min_Reduction', 'ArgMin_Reduction', 'Min_ArgMin_Reduction']);

export interface CudaSqDistScreen {
  readonly outerPos: number;
  readonly innerPos: number;
  readonly dim: number;
  /** The threshold's slot in the accumulator values (val[K − 1]; val[0] for the Min family). */
  readonly slot: number;
  readonly alpha: number;
  readonly beta: number;
  readonly tau: number;
  readonly eta: number;
}

/** Dimensions per mma.sync m16n8k8 step. */
export const MMA_K = 8;
/** Relative error of an operand read as TF32, rounded or truncated to 10 mantissa bits. */
const MMA_INPUT_ERROR = 2 ** -10;
/** Relative error of one m16n8k8 accumulation step, against |c| + Σ|products| (see the header). */
const MMA_STEP_ERROR = 2 ** -18;

/** The bound on the error of the tensor-core dot product: c_dot (relative to Σ|x_k y_k|) and η_mma (absolute). */
export function mmaDotError(dim: number): { readonly relative: number; readonly absolute: number } {
  const steps = Math.ceil(dim / MMA_K);
  const eIn = 2 * MMA_INPUT_ERROR + MMA_INPUT_ERROR ** 2;
  const accumulation = steps * MMA_STEP_ERROR * (1 + MMA_STEP_ERROR) ** steps * (1 + MMA_INPUT_ERROR) ** 2;
  return { relative: eIn + accumulation + 2 ** -126, absolute: (dim + 9 * steps) * 2 ** -125 };
}

export function cudaSqDistScreen(
  red: Reduction,
  positions: readonly ArgPosition[],
  opts: { readonly tensorCores?: boolean } = {},
): CudaSqDistScreen | undefined {
  const k = KMIN_FAMILY.has(red.def.name) ? red.k : MIN_FAMILY.has(red.def.name) ? 1 : undefined;
  if (k === undefined) return undefined;
  const plan = planBlockedEvaluation(red.fout, positions, red.tag);
  const filter = plan === undefined ? undefined : sqDistFilter(plan, k);
  if (filter === undefined || filter.dim < MIN_SCREEN_DIM) return undefined;
  const D = filter.dim;
  const u = 2 ** -24;
  const gamma = (D * u) / (1 - D * u);
  const mma = opts.tensorCores === true ? mmaDotError(D) : undefined;
  // The norms' error (γ·S), the dot product's (γ·S for FMA sums, c_dot·S on tensor cores), N's rounding.
  const c0 = gamma + (mma === undefined ? gamma : mma.relative) + u * (1 + gamma);
  const kappa = (1 - u) ** 3 * (1 - gamma);
  const a1 = kappa / (1 + u);
  const a2 = (kappa * c0) / ((1 - u) * (1 - gamma));
  const eta1 = 16 * D * 2 ** -126 + (mma === undefined ? 0 : 2 * mma.absolute);
  return {
    outerPos: filter.outerPos,
    innerPos: filter.innerPos,
    dim: D,
    slot: filter.thresholdSlot,
    alpha: a1 * (1 - 4 * u),
    beta: a2 * (1 + 8 * u),
    tau: 1 + 2 ** -21,
    eta: 2 * eta1,
  };
}

/**
 * Screening of k-NN searches ranked by a dot product, on tensor cores only: a KMin- or Min-family reduction whose
 * formula is f = c + s·(x|y), s = ±1, c an integer: `-(x|y)` (largest inner product first), `1-(x|y)` (cosine
 * distance of normalised rows), `(x|y)`; x an output-row variable, y a reduced one, D >= MIN_SCREEN_DIM.
 *
 * The kernel computes, per pair, q = fl(−b·N + fl(c + s·dot)) (one FMA) with dot the tensor-core product and
 * N = fl(|x|² + |y|²), and skips the pair when
 *
 *   q >= fl(κ·fl(N + C) + B),  q < +inf,  B = fl(T + fl(|T|·2⁻²⁰)),  T = the row's k-th smallest value.
 *
 * Why that is safe (u = 2⁻²⁴, γ = D·u / (1 − D·u), A = Σ|x_k y_k| ≤ S/2, S = |x|² + |y|²):
 *   - the exact path's value is f̃ = fl(c + s·P̃), P̃ the float32 dot product, |P̃ − P| ≤ γ·A + D·2⁻¹²⁴ (flushed
 *     subnormals, as in the header), and |dot − P| ≤ c_dot·A + η_mma (mmaDotError);
 *   - so c + s·P̃ ≥ L = c + s·dot − b₀·N − η₂ with b₀ = (c_dot + γ + 2⁻¹²⁶) / (2(1 − γ)(1 − u)) (S in terms of N);
 *     rounding is monotone, so f̃ ≥ fl(L) ≥ L − u|L|;
 *   - b = b₀ + u(1 + c_dot) / (2(1 − γ)(1 − u)) also covers the rounding of c + s·dot (|dot| ≤ 0.51·N), so
 *     L ≥ q − u|q|/(1 − u) − u|c| − η₂; every magnitude involved is at most 1.01·M, M = |c| + N, hence
 *     f̃ ≥ q − 3.1·u·M − η₂;
 *   - the right side: B ≥ T + |T|·2⁻²¹ (its two roundings cost less than the 2⁻²⁰), fl(N + C) ≥ (N + C)(1 − u),
 *     and the FMA's rounding costs less than B's margin, so it is ≥ T + κ(1 − u)²(N + C) ≥ T + 3.1·u·M + η₂ with
 *     κ = 5u and C = |c| + η₂/κ.
 * So a skipped pair has f̃ >= T and the fold (which keeps only values < T) would not have kept it. NaN and
 * infinities fail the test and take the exact path. Constants are rounded up to float32.
 */
export interface CudaDotScreen {
  readonly outerPos: number;
  readonly innerPos: number;
  readonly dim: number;
  readonly slot: number;
  /** f = c + sign·(x|y). */
  readonly c: number;
  readonly sign: 1 | -1;
  readonly b: number;
  readonly kappa: number;
  /** C = |c| + η₂/κ. */
  readonly offset: number;
}

/** The smallest float32 at or above x (the screening's constants may only err on the safe side). */
function float32Above(x: number): number {
  const f = Math.fround(x);
  if (f >= x) return f;
  const bits = new Uint32Array(new Float32Array([f]).buffer);
  bits[0] += 1; // positive constants only
  return new Float32Array(bits.buffer)[0];
}

/** f = c + sign·(x|y) with one output-row and one reduced-row variable, or undefined. */
function dotShape(
  red: Reduction,
  positions: readonly ArgPosition[],
): { c: number; sign: 1 | -1; outerPos: number; innerPos: number; dim: number } | undefined {
  const plan = planBlockedEvaluation(red.fout, positions, red.tag);
  if (plan === undefined || plan.terms.length !== 1) return undefined;
  const term = plan.terms[0];
  if (term.kind !== 'scalprod' || term.operands.some((o) => o.op.name !== 'Var')) return undefined;
  const [a, b] = term.operands.map((o) => o.params[0] as number);
  const inner = new Set(plan.packed.map((p) => p.pos));
  if (inner.has(a) === inner.has(b)) return undefined;
  const root = plan.root;
  const isTerm = (n: typeof root): boolean => n.op.name === 'Var' && n.params[0] === positions.length;
  let c = 0;
  let sign: 1 | -1;
  if (isTerm(root)) {
    sign = 1;
  } else if (root.op.name === 'Minus' && isTerm(root.children[0])) {
    sign = -1;
  } else if (
    root.op.name === 'Subtract' &&
    root.children[0].op.name === 'IntCst' &&
    isTerm(root.children[1])
  ) {
    c = root.children[0].params[0] as number;
    sign = -1;
  } else {
    return undefined;
  }
  // |c| small enough that c and c ± dot stay exact integers' neighbourhood (the bound holds for any c; this
  // keeps the constants meaningful).
  if (!Number.isSafeInteger(c) || Math.abs(c) > 2 ** 20) return undefined;
  return { c, sign, outerPos: inner.has(a) ? b : a, innerPos: inner.has(a) ? a : b, dim: term.dim };
}

export function cudaDotScreen(red: Reduction, positions: readonly ArgPosition[]): CudaDotScreen | undefined {
  const k = KMIN_FAMILY.has(red.def.name) ? red.k : MIN_FAMILY.has(red.def.name) ? 1 : undefined;
  if (k === undefined) return undefined;
  const shape = dotShape(red, positions);
  if (shape === undefined || shape.dim < MIN_SCREEN_DIM) return undefined;
  const D = shape.dim;
  const u = 2 ** -24;
  const gamma = (D * u) / (1 - D * u);
  const mma = mmaDotError(D);
  const denominator = 2 * (1 - gamma) * (1 - u);
  const b0 = (mma.relative + gamma + 2 ** -126) / denominator;
  const b = (b0 + (u * (1 + mma.relative)) / denominator) * (1 + 2 ** -20);
  const eta2 = 4 * (mma.absolute + D * 2 ** -124 + 2 ** -120);
  const kappa = 5 * u;
  return {
    outerPos: shape.outerPos,
    innerPos: shape.innerPos,
    dim: D,
    slot: k - 1,
    c: shape.c,
    sign: shape.sign,
    b: float32Above(b),
    kappa: float32Above(kappa),
    offset: float32Above((Math.abs(shape.c) + eta2 / kappa) * (1 + 2 ** -20)),
  };
}

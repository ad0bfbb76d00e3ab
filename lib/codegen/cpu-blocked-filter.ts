/**
 * Exact k-min search at bfloat16 speed: a filter for the register-blocked SqDist term of KMin-type reductions.
 *
 * When the formula of a KMin / ArgKMin / KMin_ArgKMin reduction is exactly SqDist(x,y) (float32), most pairs
 * only need to be shown *not* to enter the k smallest. On CPUs with AVX512_BF16 the tile is first screened with
 * the expanded form ‖x‖² + ‖y‖² − 2⟨x̃,ỹ⟩, the dot product of the bfloat16-rounded rows computed by VDPBF16PS
 * (32 products per instruction, twice the rate of float32 FMA), and a rigorous bound on its error:
 *
 *   |SqDist(x,y) − A| ≤ 2(‖x − x̃‖·‖y‖ + ‖x̃‖·‖y − ỹ‖) + c·(‖x‖² + ‖y‖²) + flush terms,
 *   c = 1.1·(2.1·D·ε·(1 + u)² + 1.1·(D + 17)·ε + 16ε),  u = 2⁻⁸, ε = 2⁻²⁴
 *
 * (⟨x,y⟩ − ⟨x̃,ỹ⟩ = ⟨x − x̃, y⟩ + ⟨x̃, y − ỹ⟩ and Cauchy-Schwarz for the bfloat16 rounding, which is 0 for data
 * such as 8-bit images; float32 accumulation of D exact products; the float32 norms; the float32 arithmetic of A
 * and of the bound; denormals, which VDPBF16PS reads as 0 and flushes). Norm bounds are rounded up.
 * A pair whose lower bound A − bound exceeds the row's current k-th smallest exact value (thresholds only
 * decrease) cannot enter and gets +inf, which the KMin fold never keeps; every other pair (NaN and infinities
 * included) gets its exact value in the difference form, Σ (x_k − y_k)². So returned values and ids are exactly
 * those of the unfiltered evaluation's ranking: the screening only decides which pairs are computed exactly.
 *
 * Without AVX512_BF16 (decided at compile time, -march=native) the exact micro-kernel runs instead.
 */
import type { BlockedPlan, PairwiseTerm } from './cpu-blocked';

const MAX_FILTER_DIM = 8192;

export interface SqDistFilter {
  /** Positions of the outer (x) and inner (y) variables. */
  readonly outerPos: number;
  readonly innerPos: number;
  readonly dim: number;
  /** Index of the k-th smallest value in a row accumulator (KMin hooks: val[K-1]). */
  readonly thresholdSlot: number;
}

/** The filter for a plan whose formula is one SqDist(x,y) term, else undefined. */
export function sqDistFilter(plan: BlockedPlan, k: number): SqDistFilter | undefined {
  if (plan.terms.length !== 1 || plan.root.op.name !== 'Var') return undefined;
  // Rows are converted through a stack array of D/2 words.
  if (plan.terms[0].dim > MAX_FILTER_DIM) return undefined;
  const term: PairwiseTerm = plan.terms[0];
  const [square] = term.operands;
  if (term.kind !== 'sum' || square.op.name !== 'Square') return undefined;
  const [diff] = square.children;
  if (diff.op.name !== 'Subtract' || diff.children.some((c) => c.op.name !== 'Var')) return undefined;
  const [a, b] = diff.children.map((c) => c.params[0] as number);
  const inner = new Set(plan.packed.map((p) => p.pos));
  if (inner.has(a) === inner.has(b)) return undefined;
  return {
    outerPos: inner.has(a) ? b : a,
    innerPos: inner.has(a) ? a : b,
    dim: term.dim,
    thresholdSlot: k - 1,
  };
}

/** Scalars (4-byte) of work area the filter needs after the values. */
export function filterScratchScalars(f: SqDistFilter, tile: number, rowBlock: number): number {
  const pairs = Math.ceil(f.dim / 2);
  return tile * pairs + 3 * tile + rowBlock * pairs + 3 * rowBlock;
}

/**
 * C++ (inside `#if KEOPS_BLOCKED_FILTER`): `keops_blocked_filtered(args, tile_start, len, first_row, rows,
 * area, acc, acc_stride)` writes values[row][t] (at `area`) for the tile, reading each row's threshold at
 * acc[row * acc_stride + thresholdSlot].
 */
export function filterSource(f: SqDistFilter, tile: number, rowBlock: number): string {
  const D = f.dim;
  const Q = Math.ceil(D / 2);
  const u = 2 ** -8;
  const eps = 2 ** -24;
  // The norms' own float32 rounding (16 partial sums of D/16 terms, then 16 + the tail) adds (D + 17)·ε.
  const slack = 1.1 * (2.1 * D * eps * (1 + u) ** 2 + 1.1 * (D + 17) * eps + 16 * eps);
  // Denormal bfloat16 inputs count as 0 in VDPBF16PS, denormal results are flushed.
  const flushPerNorm = 2 ** -123 * Math.sqrt(D);
  const absolute = D * 2 ** -123;
  // Upward factor for the float32 norms (16 partial sums) and their square roots.
  const up = 1 + 1.1 * (D + 17) * eps + 8 * eps;
  const MR = 4;
  const NV = 4;
  const rows = [...Array(MR).keys()];
  const vecs = [...Array(NV).keys()];
  const each = (f: (r: number, v: number) => string): string =>
    rows.flatMap((r) => vecs.map((v) => f(r, v))).join(' ');
  return `// ---- bfloat16 screening of SqDist for KMin-type reductions (lib/codegen/cpu-blocked-filter.ts)
// Two instructions by inline assembly: <immintrin.h> would triple the compile time, and the bfloat16 builtins
// differ between compiler versions. keops_vec / keops_ivec are 16 floats / 16 ints (cpu-blocked.ts).
static inline keops_vec keops_dpbf16(keops_vec acc, keops_ivec a, keops_ivec b) {
  __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
// Bit l set where !(a[l] > b[l]) (so NaN sets it).
static inline unsigned keops_not_greater(keops_vec a, keops_vec b) {
  unsigned short m;
  __asm__("vcmpps $10, %2, %1, %0" : "=k"(m) : "v"(a), "v"(b));
  return m;
}
static inline unsigned keops_bf16(float v) {
  unsigned bits;
  __builtin_memcpy(&bits, &v, 4);
  const unsigned rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;  // round to nearest even
  return (bits & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded;           // NaN stays NaN
}
typedef unsigned keops_uvec __attribute__((vector_size(64)));
static inline float keops_bf16_value(unsigned h) {
  const unsigned bits = h << 16;
  float v;
  __builtin_memcpy(&v, &bits, 4);
  return v;
}
// A row's bfloat16 pairs (components 2q, 2q+1 in the low, high half of word q), its squared norm ‖x‖², and
// upper bounds of ‖x‖ and of ‖x − x̃‖ (x̃ its bfloat16 rounding; x − x̃ is exact in float32). Sums are 16 partial
// sums then summed in order; the factor up covers their rounding and that of the square roots.
static inline void keops_bf16_row(const float* s, unsigned* pairs, float* norm, float* length, float* residual) {
  for (long q = 0; q < ${Math.floor(D / 2)}; q++) pairs[q] = keops_bf16(s[2 * q]) | keops_bf16(s[2 * q + 1]) << 16;
  if (${D % 2} != 0) pairs[${Q - 1}] = keops_bf16(s[${D - 1}]);
  keops_vec acc = {}, racc = {};
  long k = 0;
  for (; k + 16 <= ${D}; k += 16) {
    keops_vec v;
    __builtin_memcpy(&v, s + k, 64);
    // keops_bf16 on 16 lanes at once (NaN and infinities give a NaN residual: the pair is then re-evaluated).
    const keops_uvec bits = (keops_uvec)v;
    const keops_vec h = (keops_vec)((bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u);
    const keops_vec e = v - h;
    acc += v * v;
    racc += e * e;
  }
  float n = 0, rn = 0;
  for (int l = 0; l < 16; l++) {
    n += acc[l];
    rn += racc[l];
  }
  for (; k < ${D}; k++) {
    const float e = s[k] - keops_bf16_value(keops_bf16(s[k]));
    n += s[k] * s[k];
    rn += e * e;
  }
  const float up = ${up.toExponential(9)}f;
  *norm = n;
  *length = __builtin_sqrtf(n * up) * up;
  *residual = __builtin_sqrtf(rn * up) * up;
}
// Σ (x_k − y_k)², 16 partial sums over k then summed: the exact value of a screened-in pair.
__attribute__((noinline)) static float keops_exact_sqdist(const float* x, const float* y) {
  keops_vec s = {};
  long k = 0;
  for (; k + 16 <= ${D}; k += 16) {
    keops_vec a, b;
    __builtin_memcpy(&a, x + k, 64);
    __builtin_memcpy(&b, y + k, 64);
    const keops_vec d = a - b;
    s += d * d;
  }
  float total = 0;
  for (int l = 0; l < 16; l++) total += s[l];
  for (; k < ${D}; k++) {
    const float d = x[k] - y[k];
    total += d * d;
  }
  return total;
}
// Once per output row of a block (from the row prologue): its bfloat16 pairs and squared norm.
static void keops_blocked_filtered_row(const void* const* args, long i, long r, float* area) {
  unsigned* const xpack = (unsigned*)(area + ${rowBlock} * ${tile} + ${tile * Q + 3 * tile});
  float* const xnorm = (float*)(xpack + ${rowBlock * Q});
  keops_bf16_row((const float*)args[${f.outerPos}] + i * ${D}, xpack + r * ${Q}, xnorm + r, xnorm + ${rowBlock} + r,
                 xnorm + ${2 * rowBlock} + r);
}
static void keops_blocked_filtered(const void* const* args, long tile_start, long len, long first_row, long rows,
                                   float* area, const keops_acc_t* acc, long acc_stride) {
  float* const values = area;
  unsigned* const ypack = (unsigned*)(area + ${rowBlock} * ${tile});  // pair q of panel row l: [(p*Q + q)*64 + l]
  float* const ynorm = (float*)(ypack + ${tile * Q});  // then ‖y‖ and ‖y − ỹ‖ bounds, ${tile} each
  unsigned* const xpack = (unsigned*)(ynorm + ${3 * tile});
  float* const xnorm = (float*)(xpack + ${rowBlock * Q});
  const float* const X = (const float*)args[${f.outerPos}] + first_row * ${D};
  const float* const Y = (const float*)args[${f.innerPos}] + tile_start * ${D};
  const long panels = (len + 63) / 64;
  for (long t = 0; t < panels * 64; t++) {
    unsigned* const d = ypack + (t / 64) * ${Q * 64} + t % 64;
    if (t < len) {
      unsigned pairs[${Q}];
      keops_bf16_row(Y + t * ${D}, pairs, ynorm + t, ynorm + ${tile} + t, ynorm + ${2 * tile} + t);
      for (long q = 0; q < ${Q}; q++) d[q * 64] = pairs[q];
    } else {
      for (long q = 0; q < ${Q}; q++) d[q * 64] = 0;
      ynorm[t] = ynorm[${tile} + t] = ynorm[${2 * tile} + t] = 0;
    }
  }
  const float slack = ${slack.toExponential(9)}f;
  const float flush = ${flushPerNorm.toExponential(9)}f;
  const float absolute = ${absolute.toExponential(9)}f;
  for (long r0 = 0; r0 < rows; r0 += ${MR}) {
${rows.map((r) => `    const unsigned* const x${r} = xpack + (r0 + ${r} < rows ? r0 + ${r} : rows - 1) * ${Q};`).join('\n')}
    for (long p = 0; p < panels; p++) {
      const unsigned* const yp = ypack + p * ${Q * 64};
      ${each((r, v) => `keops_vec a${r}${v} = {};`)}
      for (long q = 0; q < ${Q}; q++) {
        ${vecs.map((v) => `const keops_ivec y${v} = *(const keops_ivec*)(yp + q * 64 + ${v * 16});`).join(' ')}
        ${rows.map((r) => `const keops_ivec b${r} = (keops_ivec){} + (int)x${r}[q];`).join(' ')}
        ${each((r, v) => `a${r}${v} = keops_dpbf16(a${r}${v}, b${r}, y${v});`)}
      }
${rows
  .map(
    (r) => `      if (r0 + ${r} < rows) {
        const long row = r0 + ${r};
        const keops_vec thr = (keops_vec){} + (float)acc[row * acc_stride + ${f.thresholdSlot}];
        const float nx = xnorm[row], xa = xnorm[${rowBlock} + row], xr = xnorm[${2 * rowBlock} + row];
        float* const out = values + row * ${tile} + p * 64;
${vecs
  .map(
    (v) => `        {
          keops_vec ny, ya, yr;
          __builtin_memcpy(&ny, ynorm + p * 64 + ${v * 16}, 64);
          __builtin_memcpy(&ya, ynorm + ${tile} + p * 64 + ${v * 16}, 64);
          __builtin_memcpy(&yr, ynorm + ${2 * tile} + p * 64 + ${v * 16}, 64);
          const keops_vec s = nx + ny;
          const keops_vec approx = s - 2.0f * a${r}${v};
          const keops_vec bound = 2.0001f * (xr * ya + (xa + xr) * yr) + slack * s + flush * (xa + xr + ya + yr) +
                                  absolute;
          const keops_vec lower = approx - bound;
          unsigned mask = keops_not_greater(lower, thr);
          for (int l = 0; l < 16; l++) out[${v * 16} + l] = __builtin_inff();
          while (mask != 0) {
            const int l = __builtin_ctz(mask);
            mask &= mask - 1;
            const long t = p * 64 + ${v * 16} + l;
            if (t < len) out[${v * 16} + l] = keops_exact_sqdist(X + row * ${D}, Y + t * ${D});
          }
        }`,
  )
  .join('\n')}
      }`,
  )
  .join('\n')}
    }
  }
}
// ---- end of bfloat16 screening
`;
}

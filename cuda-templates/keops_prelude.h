// keops-node prelude: scalar helpers shared, unchanged, by the CPU and CUDA kernels.
// Every generated formula body and reduction hook is KEOPS_HD inline code calling only these functions,
// so CPU tests exercise exactly the code the GPU runs. Overloaded for float and double; the float versions
// call the float functions (expf...) so that NVRTC/--use_fast_math can map them to intrinsics.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KEOPS_HD __host__ __device__ __forceinline__
#define KEOPS_LIBM(f) f
#else
#define KEOPS_HD static inline __attribute__((always_inline))
// GCC / Clang builtins (calls to libm unless folded) rather than <math.h>, which in C++ is <cmath>: 20k lines,
// half the compile time of a small kernel.
#define KEOPS_LIBM(f) __builtin_##f
#endif
// Branch conditions that are almost always true / false: the common case is laid out in line (in the CUDA inner
// loops, NVCC otherwise may put it out of line behind two extra jumps). GCC, Clang and NVRTC all have the builtin.
#define KEOPS_LIKELY(c) __builtin_expect(!!(c), 1)
#define KEOPS_UNLIKELY(c) __builtin_expect(!!(c), 0)

// exp(double) for the GPU: CUDA's algorithm (x = n ln2 + r, a degree-11 polynomial, 2^n added to the
// exponent), with its coefficients in constant memory, which FP64 FMAs read as operands: CUDA's own exp
// rebuilds each 64-bit constant in registers, several times per pair in an unrolled loop. |x| >= 708 (results
// that are not normal numbers), inf and NaN go to the library exp. Portable (the CPU tests run it, see
// test/device-math.spec.ts); the CPU kernels keep their vectorisable keops_exp below.
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KEOPS_CONSTANT __constant__
KEOPS_HD int keops_hi_word(double x) { return __double2hiint(x); }
KEOPS_HD int keops_lo_word(double x) { return __double2loint(x); }
KEOPS_HD double keops_from_words(int hi, int lo) { return __hiloint2double(hi, lo); }
KEOPS_HD double keops_fma(double a, double b, double c) { return fma(a, b, c); }
KEOPS_HD float keops_fma(float a, float b, float c) { return fmaf(a, b, c); }
#else
#define KEOPS_CONSTANT static const
KEOPS_HD int keops_hi_word(double x) {
  unsigned long long u;
  __builtin_memcpy(&u, &x, sizeof u);
  return (int)(unsigned int)(u >> 32);
}
KEOPS_HD int keops_lo_word(double x) {
  unsigned long long u;
  __builtin_memcpy(&u, &x, sizeof u);
  return (int)(unsigned int)u;
}
KEOPS_HD double keops_from_words(int hi, int lo) {
  const unsigned long long u = ((unsigned long long)(unsigned int)hi << 32) | (unsigned int)lo;
  double x;
  __builtin_memcpy(&x, &u, sizeof x);
  return x;
}
KEOPS_HD double keops_fma(double a, double b, double c) { return __builtin_fma(a, b, c); }
KEOPS_HD float keops_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#endif
// ±log2(e) in float, as FMA operands (the CUDA LogSumExp hot path): from constant memory, an FFMA operand; a
// literal would first be moved into a register for every use.
KEOPS_CONSTANT float keops_log2e_float = 1.44269504088896340736f;
KEOPS_CONSTANT float keops_minus_log2e_float = -1.44269504088896340736f;
// exp(r) - 1 - r over r^2 for |r| <= ln2/2, highest degree first (CUDA's exp polynomial).
KEOPS_CONSTANT double keops_exp_coefficients[10] = {
    2.502232253650299e-08,  2.763090348817311e-07, 2.755751454588244e-06, 2.4801491039099165e-05,
    0.00019841269589115497, 0.001388888894591638,  0.008333333333455043,  0.041666666666519754,
    0.16666666666666477,    0.5000000000000012};
// The FMA operands of the argument reduction and of the last two steps, likewise: written as literals, each is
// rebuilt in registers for every use (a move per constant per pair in an unrolled loop).
enum { KEOPS_EXP_LOG2E, KEOPS_EXP_SHIFT, KEOPS_EXP_MINUS_LN2_HI, KEOPS_EXP_MINUS_LN2_LO, KEOPS_EXP_ONE };
KEOPS_CONSTANT double keops_exp_constants[5] = {
    1.4426950408889634,     // log2(e)
    6755399441055744.0,     // 1.5 * 2^52: t's low word is round(x / ln2)
    -0.6931471805599453,    // -ln 2, in two parts
    -2.3190468138462996e-17,
    1.0};
KEOPS_HD double keops_exp_device(double x) {
  const double shift = keops_exp_constants[KEOPS_EXP_SHIFT];
  const double t = keops_fma(x, keops_exp_constants[KEOPS_EXP_LOG2E], shift);
  const double n = t - shift;
  double r = keops_fma(n, keops_exp_constants[KEOPS_EXP_MINUS_LN2_HI], x);
  r = keops_fma(n, keops_exp_constants[KEOPS_EXP_MINUS_LN2_LO], r);
  double p = keops_exp_coefficients[0];
  for (int k = 1; k < 10; k++) p = keops_fma(p, r, keops_exp_coefficients[k]);
  p = keops_fma(p, r, keops_exp_constants[KEOPS_EXP_ONE]);
  p = keops_fma(p, r, keops_exp_constants[KEOPS_EXP_ONE]);
  // |x| < 708.39 (0x4086232B: its high word; inf and NaN have larger ones): 2^n p is a normal number. The other
  // case is marked unlikely, so that the common one is laid out in line (one jump less per pair).
  if (KEOPS_UNLIKELY((keops_hi_word(x) & 0x7fffffff) >= 0x4086232B)) return KEOPS_LIBM(exp)(x);
  return keops_from_words(keops_hi_word(p) + (keops_lo_word(t) << 20), keops_lo_word(p));
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
KEOPS_HD float keops_exp(float x) { return expf(x); }
KEOPS_HD double keops_exp(double x) { return keops_exp_device(x); }
// 2^x (the exponent of Exp with its log2(e) scale folded into the formula, lib/codegen/cuda-exp2.ts).
KEOPS_HD float keops_exp2(float x) { return exp2f(x); }
KEOPS_HD double keops_exp2(double x) { return exp2(x); }
#else
// CPU: branch-free exp that GCC/Clang vectorise without -ffast-math (libm's expf is an opaque scalar call, and
// libmvec is only used under -ffast-math, which would break inf/NaN semantics). x = n ln2 + r with |r| <= ln2/2,
// exp(r) by a polynomial, 2^n applied as two halves so that results near overflow / in the subnormal range come
// out right. Comparisons with NaN are false, so NaN propagates through the clamps. Max error: float 2.0 ulp
// (exhaustive), double 1.2 ulp; exact inf / 0 / subnormal behaviour. Decimal constants (not hexadecimal: C++11).
KEOPS_HD float keops_bits_to_float(unsigned int u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}
KEOPS_HD unsigned int keops_float_to_bits(float f) {
  unsigned int u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}
KEOPS_HD double keops_bits_to_double(unsigned long long u) {
  double f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}
KEOPS_HD unsigned long long keops_double_to_bits(double f) {
  unsigned long long u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}
// exp(r) * 2^n for |r| <= ln(2) / 2, where z = n + shift holds the integer n in its low mantissa bits: the common
// tail of keops_exp and keops_exp2 (2^n is applied in two halves so that n = 128 / 1024 does not overflow).
KEOPS_HD float keops_exp_reduced(float r, float z) {
  const float r2 = r * r;
  const float p = 0.041899767f + 0.00824739f * r;  // minimax coefficients of exp(r) - 1
  const float q = (0.49999127f + 0.16668396f * r) + p * r2;
  const float poly = 0.9999994f * r + q * r2;
  const unsigned int ni = keops_float_to_bits(z) - 0x4b400000u;  // n, two's complement
  const unsigned int n1 = (unsigned int)((int)ni >> 1);
  const unsigned int n2 = ni - n1;
  const float s1 = keops_bits_to_float((n1 << 23) + 0x3f800000u);
  const float s2 = keops_bits_to_float((n2 << 23) + 0x3f800000u);
  return (s1 + poly * s1) * s2;
}
KEOPS_HD double keops_exp_reduced(double r, double z) {
  double p = 1.0 / 6227020800.0;  // Taylor series of exp(r) - 1 to degree 13
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  const double poly = p * r;
  const unsigned long long ni = keops_double_to_bits(z) - 0x4338000000000000ull;
  const unsigned long long n1 = (unsigned long long)((long long)ni >> 1);
  const unsigned long long n2 = ni - n1;
  const double s1 = keops_bits_to_double((n1 << 52) + 0x3ff0000000000000ull);
  const double s2 = keops_bits_to_double((n2 << 52) + 0x3ff0000000000000ull);
  return (s1 + poly * s1) * s2;
}
KEOPS_HD float keops_exp(float x) {
  const float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  const float shift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  const float z = xc * 1.442695f + shift;
  const float n = z - shift;
  float r = xc - n * 0.69314575f;
  r = r - n * 1.4286068e-06f;
  return keops_exp_reduced(r, z);
}
KEOPS_HD double keops_exp(double x) {
  const double xc = x < -1080.0 ? -1080.0 : (x > 1030.0 ? 1030.0 : x);
  const double shift = 6755399441055744.0;  // 1.5 * 2^52
  const double z = xc * 1.4426950408889634 + shift;
  const double n = z - shift;
  double r = xc - n * 6.93147180369123816490e-01;  // ln 2 in two parts (fdlibm): n * hi is exact without FMA
  r = r - n * 1.90821492927058770002e-10;
  return keops_exp_reduced(r, z);
}
// 2^x as keops_exp: x = n + f with |f| <= 1/2 (exact), 2^f = exp(f ln2) by the same polynomials.
KEOPS_HD float keops_exp2(float x) {
  const float xc = x < -150.0f ? -150.0f : (x > 129.0f ? 129.0f : x);
  const float shift = 12582912.0f;
  const float z = xc + shift;
  const float n = z - shift;
  const float r = (xc - n) * 0.6931472f;
  return keops_exp_reduced(r, z);
}
KEOPS_HD double keops_exp2(double x) {
  const double xc = x < -1100.0 ? -1100.0 : (x > 1100.0 ? 1100.0 : x);
  const double shift = 6755399441055744.0;
  const double z = xc + shift;
  const double n = z - shift;
  const double f = xc - n;
  const double r = keops_fma(f, 6.93147180559945286227e-01, f * 2.3190468138462996e-17);
  return keops_exp_reduced(r, z);
}
#endif
KEOPS_HD float keops_log(float x) { return KEOPS_LIBM(logf)(x); }
KEOPS_HD double keops_log(double x) { return KEOPS_LIBM(log)(x); }
KEOPS_HD float keops_sqrt(float x) { return KEOPS_LIBM(sqrtf)(x); }
KEOPS_HD double keops_sqrt(double x) { return KEOPS_LIBM(sqrt)(x); }
// 1/sqrt(x), and 0 at x = 0 (KeOps convention).
KEOPS_HD float keops_rsqrt(float x) { return x == 0.0f ? 0.0f : 1.0f / KEOPS_LIBM(sqrtf)(x); }
KEOPS_HD double keops_rsqrt(double x) { return x == 0.0 ? 0.0 : 1.0 / KEOPS_LIBM(sqrt)(x); }
KEOPS_HD float keops_sin(float x) { return KEOPS_LIBM(sinf)(x); }
KEOPS_HD double keops_sin(double x) { return KEOPS_LIBM(sin)(x); }
KEOPS_HD float keops_cos(float x) { return KEOPS_LIBM(cosf)(x); }
KEOPS_HD double keops_cos(double x) { return KEOPS_LIBM(cos)(x); }
KEOPS_HD float keops_asin(float x) { return KEOPS_LIBM(asinf)(x); }
KEOPS_HD double keops_asin(double x) { return KEOPS_LIBM(asin)(x); }
KEOPS_HD float keops_acos(float x) { return KEOPS_LIBM(acosf)(x); }
KEOPS_HD double keops_acos(double x) { return KEOPS_LIBM(acos)(x); }
KEOPS_HD float keops_atan(float x) { return KEOPS_LIBM(atanf)(x); }
KEOPS_HD double keops_atan(double x) { return KEOPS_LIBM(atan)(x); }
KEOPS_HD float keops_atan2(float y, float x) { return KEOPS_LIBM(atan2f)(y, x); }
KEOPS_HD double keops_atan2(double y, double x) { return KEOPS_LIBM(atan2)(y, x); }
KEOPS_HD float keops_pow(float x, float y) { return KEOPS_LIBM(powf)(x, y); }
KEOPS_HD double keops_pow(double x, double y) { return KEOPS_LIBM(pow)(x, y); }
KEOPS_HD float keops_floor(float x) { return KEOPS_LIBM(floorf)(x); }
KEOPS_HD double keops_floor(double x) { return KEOPS_LIBM(floor)(x); }
KEOPS_HD float keops_round(float x) { return KEOPS_LIBM(roundf)(x); }
KEOPS_HD double keops_round(double x) { return KEOPS_LIBM(round)(x); }
KEOPS_HD float keops_abs(float x) { return KEOPS_LIBM(fabsf)(x); }
KEOPS_HD double keops_abs(double x) { return KEOPS_LIBM(fabs)(x); }
// The smaller of a and b, NaN ignored (the other operand wins): one min instruction on the GPU.
KEOPS_HD float keops_fmin(float a, float b) { return KEOPS_LIBM(fminf)(a, b); }
KEOPS_HD double keops_fmin(double a, double b) { return KEOPS_LIBM(fmin)(a, b); }
KEOPS_HD float keops_min(float a, float b) { return a < b ? a : b; }
KEOPS_HD double keops_min(double a, double b) { return a < b ? a : b; }
KEOPS_HD float keops_max(float a, float b) { return a > b ? a : b; }
KEOPS_HD double keops_max(double a, double b) { return a > b ? a : b; }
// Integer power by repeated squaring (exact for small |n|, same result on CPU and GPU).
template <typename T>
KEOPS_HD T keops_powi(T x, int n) {
  T base = n < 0 ? T(1) / x : x;
  unsigned m = n < 0 ? (unsigned)(-(long)n) : (unsigned)n;
  T r = T(1);
  while (m) {
    if (m & 1u) r *= base;
    base *= base;
    m >>= 1;
  }
  return r;
}
template <typename T>
KEOPS_HD T keops_sign(T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); }
template <typename T>
KEOPS_HD T keops_inf() { return T(1) / T(0); }
template <typename T>
KEOPS_HD T keops_nan() { return T(0) / T(0); }

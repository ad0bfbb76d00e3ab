/**
 * The float32 CUDA LogSumExp hot path in base 2 (reduction-hooks.ts, emitShiftExpHotFold): a term below the
 * running maximum m is added as 2^(f·log2 e + h) with h = −m·log2 e rounded, and the common factor that rounding
 * puts on the terms is taken out again before anything reads the sums. Run on the emulated GPU
 * (test/cuda-emulator.ts) against the float64 reference, with exact inputs (f = x·b, x a power of two, so the
 * reference sees the very values the kernel does): maxima up to 2^126 with terms within a few ulp of them (where
 * an uncorrected h would be off by whole units of the exponent), ties, ±inf, NaN, values beyond 2^30 (the full
 * fold only), weights, every sum scheme and the merge of split partials. Needs g++.
 */
import { expect } from 'chai';
import { type CudaSumScheme, generateCudaKernels } from '../lib/codegen/cuda';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseReductionWithVariables } from '../lib/formula/index';
import { referenceReduction } from '../lib/reference';
import { useCudaEmulator } from './cuda-emulator';
import { expectClose, randArray, rng } from './util';

const ALIASES = ['x = Vi(1)', 'b = Vj(1)', 'c = Vj(1)'];
const N = 41;
const BLOCK = 4;

/** Row scales: powers of two (exact products), from tiny to 2^126, both signs. */
const SCALES = [
  1,
  2 ** -10,
  8,
  2 ** 10,
  2 ** 20,
  2 ** 24,
  2 ** 29,
  2 ** 31,
  2 ** 60,
  2 ** 126,
  -1,
  -(2 ** 22),
];

/** b: consecutive float32 values just below 0.75 (terms within a few ulp of the maximum), ties, and the rest. */
function inner(seed: number): Float64Array {
  const b = Float64Array.from(randArray(rng(seed), N, -1, 0.7), (v) => Math.fround(v));
  const ulp = 2 ** -24; // of values in [0.5, 1)
  for (let k = 0; k < 12; k++) b[(5 * k + 3) % N] = 0.75 - k * ulp;
  b[40] = 0.75; // a tie with the maximum, in another tile and another split
  b[17] = 0.75 - ulp; // and with the second value
  return b;
}

function parse(text: string) {
  const parsed = parseReductionWithVariables(text, ALIASES);
  const positions: ArgPosition[] = ALIASES.map(() => ({ dim: 1, cat: 2 }));
  for (const v of parsed.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
  return { ...parsed, positions };
}

describe('CUDA LogSumExp in base 2 (float32 hot path, emulated)', function () {
  this.timeout(300_000);
  const emulator = useCudaEmulator();

  async function check(
    text: string,
    sumScheme: CudaSumScheme,
    rowsPerThread: number,
    data: { x: readonly number[]; b: Float64Array; c: Float64Array },
  ): Promise<void> {
    const c = parse(text);
    const kernels = generateCudaKernels(c.reduction, {
      dtype: 'float32',
      sumScheme,
      positions: c.positions,
      rowsPerThread,
    });
    if (sumScheme !== 'kahan_scheme') expect(kernels.body).to.include('keops_minus_log2e_float');
    const args = [Float32Array.from(data.x), Float32Array.from(data.b), Float32Array.from(data.c)];
    const expected = referenceReduction(
      c.reduction,
      c.positions.map((p, pos) => ({ data: Float64Array.from(args[pos]), cat: p.cat, dim: p.dim })),
      {},
    );
    const nx = data.x.length;
    const exe = await emulator.compile(kernels);
    for (const launch of [
      { scheme: '1d' as const, nx, ny: N, blockSize: BLOCK, args },
      // Slices of 12: the maximum, its ties and the near-maximum terms fall in different partials.
      { scheme: 'split' as const, nx, ny: N, blockSize: BLOCK, splits: Math.ceil(N / 12), slice: 12, args },
    ]) {
      const got = await emulator.run(exe, kernels, launch);
      const what = `${text} ${sumScheme} R=${rowsPerThread} ${launch.scheme}`;
      expectClose(got.val, expected.val, 1e-5, 0, what);
    }
  }

  const plain = { x: SCALES, b: inner(1), c: randArray(rng(2), N, 0.5, 2) };

  for (const scheme of ['block_sum', 'direct_sum'] as const) {
    for (const rows of [1, 2]) {
      it(`maxima from 2^-10 to 2^126, terms within ulps of them, ties: ${scheme}, ${rows} row(s) per thread`, async () => {
        await check('Max_SumShiftExp_Reduction(x*b,0)', scheme, rows, plain);
      });
    }
  }

  it('weighted (two weights), and the kahan_scheme fold (no hot path) on the same data', async () => {
    await check('Max_SumShiftExpWeight_Reduction(x*b,0,Concat(c,c*c))', 'block_sum', 2, plain);
    await check('Max_SumShiftExpWeight_Reduction(x*b,0,c)', 'direct_sum', 1, plain);
    await check('Max_SumShiftExp_Reduction(x*b,0)', 'kahan_scheme', 2, plain);
  });

  it('-inf, +inf, NaN, values near the float32 limit and rows of -inf only give the reference', async () => {
    const b = inner(3);
    b[2] = -Infinity;
    b[8] = Infinity; // +inf in row x > 0, -inf in row x < 0
    b[9] = Infinity;
    b[21] = 3e38; // with x = 1: beyond 2^30 / log2 e, the full fold only
    b[22] = 3e38;
    b[23] = -3.4e38;
    const nan = Float64Array.from(b);
    nan[30] = NaN;
    const none = new Float64Array(N).fill(-Infinity);
    none[35] = 0.5; // m stays -inf for most of the row, then jumps
    const c = randArray(rng(4), N, 0.5, 2);
    for (const scheme of ['block_sum', 'direct_sum'] as const) {
      // |x| <= 1 where b holds ±3e38: x·b must not overflow in float32 where the float64 reference does not.
      await check('Max_SumShiftExp_Reduction(x*b,0)', scheme, 2, { x: [1, -1, 0.5, 2 ** -20], b, c });
      await check('Max_SumShiftExp_Reduction(x*b,0)', scheme, 1, { x: [1, 0.25, -1], b: nan, c });
      await check('Max_SumShiftExpWeight_Reduction(x*b,0,c)', scheme, 2, { x: [1, 8, 2 ** 24], b: none, c });
    }
  });

  it('float64 accumulators keep the natural-base hot path (no base-2 state)', () => {
    const c = parse('Max_SumShiftExp_Reduction(x*b,0)');
    const opts = { sumScheme: 'block_sum' as const, positions: c.positions };
    expect(generateCudaKernels(c.reduction, { ...opts, dtype: 'float64' }).body).not.to.include(
      'keops_minus_log2e_float',
    );
    expect(
      generateCudaKernels(c.reduction, { ...opts, dtype: 'float32', dtypeAcc: 'float64' }).body,
    ).not.to.include('keops_minus_log2e_float');
  });
});

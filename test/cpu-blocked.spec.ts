/**
 * The register-blocked CPU strategy for pairwise inner-dimension terms (lib/codegen/cpu-blocked.ts): which
 * formulas select it (checked on the generated kernel, so that a formula cannot silently fall back to the
 * per-pair path), and results against the float64 reference on adversarial data, in both dtypes, on both axes,
 * for several reductions.
 *
 * Data are chosen so that float32 evaluation in the difference form is exact (integers, small enough sums), so
 * ids must equal the exact ranking (ties by smallest index) in both dtypes: a large common offset (2^20, where the
 * expanded form ‖x‖² + ‖y‖² − 2⟨x,y⟩ loses every digit in float32), near-duplicates and exact duplicates (ties),
 * and uint8-like image data. A float64 case with a 1e4 offset and non-integer noise checks 1e-10 values.
 */
import { expect } from 'chai';
import { generateCpuKernel, type CpuKernel } from '../lib/codegen/cpu';
import { MAX_BLOCKED_DIM, MIN_BLOCKED_DIM } from '../lib/codegen/cpu-blocked';
import { parseFormula, parseReduction } from '../lib/formula';
import { Genred, type GenredArg } from '../lib/genred';
import type { ReductionName } from '../lib/genred-types';
import { type ReferenceInput, referenceGenred } from '../lib/reference';
import { expectBackendResult, rng, useTestKernelCache } from './util';

type Dtype = 'float32' | 'float64';
const DTYPES: readonly Dtype[] = ['float32', 'float64'];
const OFFSET = 2 ** 20;

function kernelOf(g: Genred, dtype: Dtype): CpuKernel {
  return generateCpuKernel(g.reduction, {
    dtype,
    dtypeAcc: dtype,
    sumScheme: 'block_sum',
    positions: g.variables.map((v) => ({ dim: v.dim, cat: v.cat })),
  });
}

describe('CPU register-blocked pairwise terms: selection', function () {
  this.timeout(60_000);
  const positions = (d: number) => [
    { dim: d, cat: 0 as const },
    { dim: d, cat: 1 as const },
    { dim: d, cat: 2 as const },
    { dim: 1, cat: 2 as const },
    { dim: 1, cat: 1 as const },
  ];
  const aliases = (d: number) => [`x = Vi(${d})`, `y = Vj(${d})`, `w = Pm(${d})`, 'g = Pm(1)', 'b = Vj(1)'];
  const kernel = (text: string, d: number, dtype: Dtype = 'float32'): CpuKernel =>
    generateCpuKernel(parseReduction(text, aliases(d)), {
      dtype,
      dtypeAcc: dtype,
      sumScheme: 'block_sum',
      positions: positions(d),
    });

  const selected = [
    'ArgKMin_Reduction(SqDist(x,y),10,0)',
    'ArgKMin_Reduction(SqDist(x,y),10,1)',
    'Min_ArgMin_Reduction(Norm2(x-y),0)',
    'Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)',
    'Sum_Reduction(Exp(-g*SqDist(x,y))*b,1)',
    'Max_SumShiftExp_Reduction(-Sum(Abs(x-y)),0)',
    'Sum_Reduction(WeightedSqDist(w,x,y)*b,0)',
    'KMin_ArgKMin_Reduction(-(x|y),3,0)',
    'Max_Reduction(SqDist(x,y)-(x|y)+Sum(Abs(x-y)),0)',
  ];
  for (const text of selected) {
    it(`selects the blocked strategy for ${text} (D=128, both dtypes)`, () => {
      for (const dtype of DTYPES) {
        const k = kernel(text, 128, dtype);
        expect(k.blockedTerms, dtype).to.be.greaterThan(0);
        expect(k.source).to.contain('keops_blocked_tile(task->args');
        expect(k.source).to.contain('register-blocked pairwise term(s)');
        // Nothing left to unroll: compile time does not grow with D.
        expect(k.compilerFlags.join(' ')).not.to.contain('max-completely-peel-times');
      }
    });
  }
  it('screens KMin-type SqDist searches in bfloat16 (float32 only), and nothing else', () => {
    expect(kernel('ArgKMin_Reduction(SqDist(x,y),10,0)', 128).bf16Screening).to.equal(true);
    expect(kernel('KMin_ArgKMin_Reduction(SqDist(x,y),10,1)', 784).bf16Screening).to.equal(true);
    expect(kernel('ArgKMin_Reduction(SqDist(x,y),10,0)', 128).source).to.contain('vdpbf16ps');
    expect(kernel('ArgKMin_Reduction(SqDist(x,y),10,0)', 128, 'float64').bf16Screening).to.equal(false);
    expect(kernel('ArgKMin_Reduction(Sum(Abs(x-y)),10,0)', 128).bf16Screening).to.equal(false);
    expect(kernel('ArgKMin_Reduction(Norm2(x-y),10,0)', 128).bf16Screening).to.equal(false);
    expect(kernel('Min_ArgMin_Reduction(SqDist(x,y),0)', 128).bf16Screening).to.equal(false);
    expect(kernel('Sum_Reduction(SqDist(x,y)*b,0)', 128).bf16Screening).to.equal(false);
  });
  it('counts each distinct pairwise term once', () => {
    expect(kernel('Max_Reduction(SqDist(x,y)-(x|y)+Sum(Abs(x-y)),0)', 64).blockedTerms).to.equal(3);
    expect(kernel('Sum_Reduction(Exp(-SqDist(x,y))*SqDist(x,y)*b,0)', 64).blockedTerms).to.equal(1);
  });
  it(`keeps the per-pair strategy outside D=${MIN_BLOCKED_DIM}..${MAX_BLOCKED_DIM} and for terms that are not component-wise`, () => {
    expect(kernel('Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)', 3).blockedTerms).to.equal(0);
    expect(kernel('ArgKMin_Reduction(SqDist(x,y),10,0)', MIN_BLOCKED_DIM - 1).blockedTerms).to.equal(0);
    expect(kernel('Sum_Reduction(Sum(Exp(x-y)),0)', 64).blockedTerms).to.equal(0);
    expect(kernel('Sum_Reduction(SqDist(x,y),0)', MAX_BLOCKED_DIM + 1).blockedTerms).to.equal(0);
    expect(kernel('Sum_Reduction(Sum(x*w),0)', 64).blockedTerms).to.equal(0); // no inner variable
    const plain = kernel('ArgKMin_Reduction(SqDist(x,y),10,0)', 3);
    expect(plain.source).not.to.contain('keops_blocked_tile(task->args');
  });
});

interface Case {
  readonly reduction: ReductionName;
  readonly formula: string;
  readonly k?: number;
}

const CASES: readonly Case[] = [
  { reduction: 'ArgKMin', formula: 'SqDist(x,y)', k: 5 },
  { reduction: 'KMin_ArgKMin', formula: 'Sum(Abs(x-y))', k: 4 },
  { reduction: 'Min_ArgMin', formula: 'Norm2(x-y)' },
  { reduction: 'LogSumExp', formula: '-g*SqDist(x,y)' },
  { reduction: 'Sum', formula: 'Exp(-g*SqDist(x,y))*b' },
  { reduction: 'Sum', formula: '(x|y)*b' },
  { reduction: 'Max_ArgMax', formula: '-WeightedSqDist(w,x,y)' },
];

type DataKind = 'offset' | 'image' | 'smooth-offset';

/**
 * Variables x (i), y (j), w (parameter, small positive integers), g (parameter) and b (j). Rows of y repeat rows
 * of x, exactly or off by one unit in one component, and repeat each other, so ranks tie and nearly tie.
 */
function makeData(kind: DataKind, dtype: Dtype, M: number, N: number, D: number): GenredArg[] {
  const r = rng(kind === 'image' ? 17 : 23);
  const x = new Float64Array(M * D);
  const y = new Float64Array(N * D);
  const draw = (): number =>
    kind === 'image' ? Math.floor(r() * 256) : kind === 'offset' ? OFFSET + Math.floor(r() * 16) : 1e4 + r();
  x.forEach((_, k) => (x[k] = draw()));
  y.forEach((_, k) => (y[k] = draw()));
  for (let j = 0; j < N; j += 3) {
    const i = (j * 7) % M;
    for (let k = 0; k < D; k++) y[j * D + k] = x[i * D + k];
    if (j % 2 === 1) y[j * D + (j % D)] += 1; // near-duplicate
  }
  for (let j = 5; j < N; j += 11) for (let k = 0; k < D; k++) y[j * D + k] = y[(j - 4) * D + k]; // exact ties
  const w = Float64Array.from({ length: D }, () => 1 + Math.floor(r() * 3));
  const g = Float64Array.of(kind === 'image' ? 1 / 65536 : 1 / 64);
  const b = Float64Array.from({ length: N }, () => 1 + Math.floor(r() * 8)); // positive: no cancellation
  const args = [x, y, w, g, b];
  return dtype === 'float32' ? args.map((a) => Float32Array.from(a)) : args;
}

function referenceOf(c: Case, aliases: readonly string[], axis: 0 | 1, args: readonly GenredArg[]) {
  const dims = aliases.map((a) => Number(/\((\d+)\)/.exec(a)?.[1]));
  const cats = [0, 1, 2, 2, 1] as const;
  const inputs: ReferenceInput[] = args.map((a, pos) => ({
    data: a as Float64Array,
    cat: cats[pos],
    dim: dims[pos],
  }));
  return referenceGenred(c.reduction, parseFormula(c.formula, aliases).node, inputs, { axis, k: c.k });
}

describe('CPU register-blocked pairwise terms: results against the float64 reference', function () {
  this.timeout(300_000);
  useTestKernelCache();
  // One width for every data set, so that the 28 kernels (cases × axes × dtypes) are shared between them.
  const D = 40;
  const aliases = [`x = Vi(${D})`, `y = Vj(${D})`, `w = Pm(${D})`, 'g = Pm(1)', 'b = Vj(1)'];
  const label = (c: Case, axis: 0 | 1): string => `${c.reduction}(${c.formula}) axis ${axis}`;
  const genreds = new Map<string, Genred>();

  before(async function () {
    // Compile every kernel at once: the cache bounds how many compilers run in parallel.
    const firstCalls: Promise<unknown>[] = [];
    for (const c of CASES) {
      for (const axis of [0, 1] as const) {
        const g = new Genred(c.formula, aliases, { reduction: c.reduction, axis, k: c.k });
        genreds.set(label(c, axis), g);
        for (const dtype of DTYPES) firstCalls.push(g.call(makeData('image', dtype, 2, 3, D)));
      }
    }
    await Promise.all(firstCalls);
  });

  const runs: { what: string; kind: DataKind; dtypes: readonly Dtype[]; M: number; N: number }[] = [
    { what: 'large common offset, near-duplicates and ties', kind: 'offset', dtypes: DTYPES, M: 37, N: 150 },
    { what: 'uint8-like image data', kind: 'image', dtypes: DTYPES, M: 29, N: 130 },
    { what: 'offset 1e4 with fractional noise', kind: 'smooth-offset', dtypes: ['float64'], M: 21, N: 90 },
  ];
  for (const c of CASES) {
    for (const axis of [0, 1] as const) {
      it(`${label(c, axis)} on every data set`, async () => {
        const g = genreds.get(label(c, axis)) as Genred;
        for (const run of runs) {
          for (const dtype of run.dtypes) {
            expect(kernelOf(g, dtype).blockedTerms, 'blocked strategy selected').to.be.greaterThan(0);
            const args = makeData(run.kind, dtype, run.M, run.N, D);
            const actual = await g.call(args);
            expectBackendResult(actual, referenceOf(c, aliases, axis, args), dtype, `${run.what}, ${dtype}`);
          }
        }
      });
    }
  }

  it('screened ArgKMin on smooth data (most pairs pruned) returns the exact ids', async () => {
    const [M, N, D] = [40, 3000, 64];
    const aliases = [`x = Vi(${D})`, `y = Vj(${D})`, `w = Pm(${D})`, 'g = Pm(1)', 'b = Vj(1)'];
    const c: Case = { reduction: 'KMin_ArgKMin', formula: 'SqDist(x,y)', k: 10 };
    for (const axis of [0, 1] as const) {
      const g = new Genred(c.formula, aliases, { reduction: c.reduction, axis, k: c.k });
      expect(kernelOf(g, 'float32').bf16Screening).to.equal(true);
      const r = rng(5);
      const [rowsX, rowsY] = axis === 1 ? [M, N] : [N, M];
      const args = [
        Float32Array.from({ length: rowsX * D }, () => r()),
        Float32Array.from({ length: rowsY * D }, () => r()),
        new Float32Array(D),
        new Float32Array(1),
        new Float32Array(rowsY),
      ];
      expectBackendResult(await g.call(args), referenceOf(c, aliases, axis, args), 'float32', `axis ${axis}`);
    }
  });

  it('screened ArgKMin keeps exact semantics with NaN, infinite and huge components', async () => {
    const [M, N, D] = [9, 400, 40];
    const aliases = [`x = Vi(${D})`, `y = Vj(${D})`, `w = Pm(${D})`, 'g = Pm(1)', 'b = Vj(1)'];
    const c: Case = { reduction: 'KMin_ArgKMin', formula: 'SqDist(x,y)', k: 5 };
    const g = new Genred(c.formula, aliases, { reduction: c.reduction, axis: 1, k: c.k });
    const r = rng(9);
    const x = Float32Array.from({ length: M * D }, () => r());
    const y = Float32Array.from({ length: N * D }, () => r());
    y[5 * D + 1] = NaN; // never enters a k-min
    y[17 * D] = Infinity;
    y[23 * D + 2] = 3e38; // its bfloat16 rounding overflows
    for (let k = 0; k < D; k++) y[40 * D + k] = x[k] + 1e-3; // near-duplicate of row 0
    const args = [x, y, new Float32Array(D), new Float32Array(1), new Float32Array(N)];
    expectBackendResult(await g.call(args), referenceOf(c, aliases, 1, args), 'float32', 'special values');
  });

  it('covers several tiles, row blocks, partial panels and partial micro-kernel rows', async () => {
    // ArgKMin over N > tile (partial last tile and panel) and M > row block (partial last block and MR group).
    for (const [M, N, D] of [
      [7, 1500, 300],
      [1003, 70, 21],
    ]) {
      const aliases = [`x = Vi(${D})`, `y = Vj(${D})`, `w = Pm(${D})`, 'g = Pm(1)', 'b = Vj(1)'];
      const c: Case = { reduction: 'ArgKMin', formula: 'SqDist(x,y)', k: 3 };
      const g = new Genred(c.formula, aliases, { reduction: c.reduction, axis: 1, k: c.k });
      for (const dtype of DTYPES) {
        const k = kernelOf(g, dtype);
        expect(k.blockedTerms).to.equal(1);
        expect(
          N > k.tile || M > k.rowBlock,
          `sizes ${M}×${N} exceed tile ${k.tile} or row block ${k.rowBlock}`,
        ).to.equal(true);
        const args = makeData('offset', dtype, M, N, D);
        expectBackendResult(
          await g.call(args),
          referenceOf(c, aliases, 1, args),
          dtype,
          `${dtype} ${M}×${N}×${D}`,
        );
      }
    }
  });
});

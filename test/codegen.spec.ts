/**
 * Code generation: hygienic names and exact literals, the formula body, and generated CPU kernels compiled with
 * g++ and run through a small C driver (test/cpu-harness.ts), compared with a float64 reference for a Gaussian
 * sum, min/arg/KMin ties, j-intervals, sum schemes, and one kernel per operation of the registry.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { generateCpuKernel, type CpuKernel, type Dtype, type SumScheme } from '../lib/codegen/cpu';
import { type ArgPosition, generateFormulaCode } from '../lib/codegen/formula';
import { cLiteral, NameAllocator } from '../lib/codegen/names';
import { builder as b } from '../lib/formula/builder';
import { evaluateFormula } from '../lib/formula/evaluate';
import { type Node, topoOrder } from '../lib/formula/node';
import { rational } from '../lib/formula/rational';
import type { Reduction } from '../lib/formula/reduction';
import { makeReduction } from '../lib/formula/reductions';
import { ALL_OPS } from '../lib/formula/registry';
import { CpuHarness, type HarnessResult } from './cpu-harness';
import { rng } from './util';

const hasCompiler = (() => {
  try {
    execFileSync('g++', ['--version'], { stdio: 'ignore' });
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

// ---------------------------------------------------------------------------------------------------------
// float64 reference: straight from the reduction's JS hooks and the formula evaluator.

interface Problem {
  red: Reduction;
  positions: readonly ArgPosition[];
  /** Row-major data per position (float64; already rounded to float32 for float32 kernels). */
  data: readonly Float64Array[];
  nx: number;
  ny: number;
  intervals?: readonly (readonly [number, number])[];
}

function reference(
  p: Problem,
  rows: readonly [number, number] = [0, p.nx],
): { val: Float64Array; idx: Int32Array } {
  const { red, positions, data } = p;
  const { dimVal, dimIdx, dimredVal, dimredIdx } = red.layout;
  const order = topoOrder(red.fout);
  const val = new Float64Array(p.nx * dimVal).fill(NaN);
  const idx = new Int32Array(p.nx * dimIdx).fill(-1);
  const intervals = p.intervals ?? [[0, p.ny]];
  for (let i = rows[0]; i < rows[1]; i++) {
    const acc = { val: new Float64Array(dimredVal), idx: new Int32Array(dimredIdx) };
    red.def.init(acc, red);
    for (const [start, end] of intervals) {
      for (let j = start; j < end; j++) {
        const fout = evaluateFormula(
          red.fout,
          (v) => {
            const pos = v.params[0] as number;
            const { dim, cat } = positions[pos];
            const row = cat === 2 ? 0 : cat === red.tag ? i : j;
            return data[pos].subarray(row * dim, (row + 1) * dim);
          },
          order,
        );
        red.def.fold(acc, fout, j, red);
      }
    }
    const out = red.def.finalize(acc, red);
    val.set(out.val, i * dimVal);
    idx.set(out.idx, i * dimIdx);
  }
  return { val, idx };
}

/** Σ_j |fout| per output component, the scale for sums whose terms cancel. */
function absSumScale(p: Problem): Float64Array {
  const absRed = makeReduction('Sum_Reduction', b.call('Abs', [p.red.fout]), { tag: p.red.tag });
  return reference({ ...p, red: absRed }).val;
}

function toDtype(a: Float64Array, dtype: Dtype): Float32Array | Float64Array {
  return dtype === 'float32' ? Float32Array.from(a) : Float64Array.from(a);
}

function randomData(
  positions: readonly ArgPosition[],
  rows: (cat: number) => number,
  seed: number,
  lo = -1,
  hi = 1,
) {
  const r = rng(seed);
  return positions.map(({ dim, cat }) => {
    const a = new Float64Array(rows(cat) * dim);
    for (let k = 0; k < a.length; k++) a[k] = lo + (hi - lo) * r();
    return a;
  });
}

/** Maximum of |a - e| / (atol + |e|) style errors: relative to `scale` when given, else to |e|. */
function maxRelativeError(actual: Float64Array, expected: Float64Array, scale?: Float64Array): number {
  let worst = 0;
  for (let k = 0; k < expected.length; k++) {
    const a = actual[k];
    const e = expected[k];
    if (Number.isNaN(e) || !Number.isFinite(e)) {
      if (!Object.is(a, e) && !(Number.isNaN(a) && Number.isNaN(e))) return Infinity;
      continue;
    }
    const s = scale === undefined ? Math.abs(e) : Math.max(scale[k], Math.abs(e));
    const err = s === 0 ? Math.abs(a - e) : Math.abs(a - e) / s;
    if (!(err <= worst)) worst = Number.isNaN(err) ? Infinity : Math.max(worst, err);
  }
  return worst;
}

// ---------------------------------------------------------------------------------------------------------

describe('codegen: names and literals', () => {
  it('fresh names are unique, sanitised and never look like fixed names', () => {
    const names = new NameAllocator();
    const fixed = names.reserve('keops_formula');
    const seen = new Set<string>([fixed]);
    for (const hint of ['k', 'k', 'i', 'x y', '9lives', '', 'keops_formula', 'a;b']) {
      const n = names.fresh(hint);
      expect(n).to.match(/^[A-Za-z][A-Za-z0-9]*_[0-9]+$/);
      expect(seen.has(n), n).to.equal(false);
      seen.add(n);
    }
    expect(() => names.reserve('k_3'))
      .to.throw()
      .with.property('code', 'ERR_INTERNAL');
  });

  it('literals are exact doubles cast to T, with inf / NaN / -0', () => {
    expect(cLiteral(3, 'float')).to.equal('((float)(3.0))');
    expect(cLiteral(-0, 'double')).to.equal('((double)(-0.0))');
    expect(cLiteral(0.1, 'double')).to.equal('((double)(0.1))');
    expect(cLiteral(rational(1, 3), 'double')).to.equal(`((double)(${1 / 3}))`);
    expect(Number(/\(([^()]*)\)\)$/.exec(cLiteral(rational(1, 3), 'double'))?.[1])).to.equal(1 / 3);
    expect(cLiteral(2 ** 64, 'double')).to.equal('((double)(18446744073709552000.0))');
    expect(cLiteral(1e300, 'double')).to.equal('((double)(1e+300))');
    expect(cLiteral(Infinity, 'float')).to.equal('keops_inf<float>()');
    expect(cLiteral(-Infinity, 'float')).to.equal('(-keops_inf<float>())');
    expect(cLiteral(NaN, 'float')).to.equal('keops_nan<float>()');
  });
});

describe('codegen: formula body', () => {
  const x = b.variable(0, 3, 0);
  const y = b.variable(1, 3, 1);
  const positions: ArgPosition[] = [
    { dim: 3, cat: 0 },
    { dim: 3, cat: 1 },
  ];

  it('emits every distinct DAG node once and reads inner variables with the stride', () => {
    const e = b.call('Exp', [b.sum(b.sub(x, y))]);
    const f = b.add(e, b.mul(e, e));
    const code = generateFormulaCode(f, {
      T: 'float',
      positions,
      tag: 0,
      names: new NameAllocator(),
      functionName: 'keops_formula',
    });
    expect(code.source.match(/keops_exp\(/g)?.length).to.equal(1);
    expect(code.args.map((a) => [a.pos, a.role])).to.deep.equal([
      [0, 'outer'],
      [1, 'inner'],
    ]);
    expect(code.source).to.contain('* INNER_STRIDE]');
    expect(code.source).to.match(/^template <int INNER_STRIDE>\nKEOPS_HD void keops_formula\(/);
  });

  it('tag 1 makes j-variables outer', () => {
    const code = generateFormulaCode(b.sub(x, y), {
      T: 'double',
      positions,
      tag: 1,
      names: new NameAllocator(),
      functionName: 'keops_formula',
    });
    expect(code.args.map((a) => a.role)).to.deep.equal(['inner', 'outer']);
  });

  it('rejects variables that disagree with the declared positions', () => {
    const gen = (p: ArgPosition[]) => () =>
      generateFormulaCode(b.sub(x, y), {
        T: 'float',
        positions: p,
        tag: 0,
        names: new NameAllocator(),
        functionName: 'f',
      });
    expect(gen([{ dim: 3, cat: 0 }]))
      .to.throw()
      .with.property('code', 'ERR_INVALID_ARGUMENT');
    expect(
      gen([
        { dim: 3, cat: 0 },
        { dim: 2, cat: 1 },
      ]),
    )
      .to.throw()
      .with.property('code', 'ERR_INVALID_ARGUMENT');
    expect(
      gen([
        { dim: 3, cat: 0 },
        { dim: 3, cat: 0 },
      ]),
    )
      .to.throw()
      .with.property('code', 'ERR_INVALID_ARGUMENT');
  });

  it('refuses kahan_scheme for reductions without a compensated fold', () => {
    const red = makeReduction('Min_Reduction', b.sub(x, y), { tag: 0 });
    expect(() =>
      generateCpuKernel(red, { dtype: 'float32', dtypeAcc: 'float32', sumScheme: 'kahan_scheme', positions }),
    )
      .to.throw()
      .with.property('code', 'ERR_INVALID_ARGUMENT');
  });
});

(hasCompiler ? describe : describe.skip)('codegen: compiled CPU kernels', function () {
  this.timeout(240000);
  let harness: CpuHarness;

  before(() => {
    harness = new CpuHarness();
  });
  after(() => harness.dispose());

  interface KernelCase {
    name: string;
    problem: Problem;
    dtype: Dtype;
    dtypeAcc?: Dtype;
    sumScheme?: SumScheme;
  }
  interface Compiled {
    kernel: CpuKernel;
    so: string;
    seconds: number;
  }

  /** Generates and compiles kernels, two compilers at a time; throws the first failure. */
  async function compileAll(cases: readonly KernelCase[]): Promise<Compiled[]> {
    const results = await tryCompileAll(cases);
    const failure = results.find((r) => r instanceof Error);
    if (failure !== undefined) throw failure;
    return results as Compiled[];
  }

  /** Like compileAll, but returns each case's Error instead of throwing. */
  async function tryCompileAll(cases: readonly KernelCase[]): Promise<(Compiled | Error)[]> {
    const out: (Compiled | Error)[] = new Array(cases.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < cases.length) {
        const k = next++;
        const c = cases[k];
        try {
          const kernel = generateCpuKernel(c.problem.red, {
            dtype: c.dtype,
            dtypeAcc: c.dtypeAcc ?? c.dtype,
            sumScheme: c.sumScheme ?? 'block_sum',
            positions: c.problem.positions,
          });
          const { so, seconds } = await harness.compile(
            kernel.source,
            kernel.compilerFlags,
            c.name.replace(/\W/g, '_'),
          );
          out[k] = { kernel, so, seconds };
        } catch (e) {
          const detail = (e as { stderr?: string }).stderr ?? String(e);
          out[k] = new Error(`${c.name}: generation or compilation failed: ${detail.slice(0, 3000)}`);
        }
      }
    };
    await Promise.all([worker(), worker()]);
    return out;
  }

  function run(
    c: KernelCase,
    compiled: Compiled,
    extra: { rows?: [number, number]; threads?: number } = {},
  ): HarnessResult {
    const p = c.problem;
    const r = harness.run(compiled.so, {
      args: p.data.map((a) => toDtype(a, c.dtype)),
      nx: p.nx,
      ny: p.ny,
      dtype: c.dtype,
      dimVal: p.red.layout.dimVal,
      dimIdx: p.red.layout.dimIdx,
      intervals: p.intervals,
      ...extra,
    });
    expect(r.rc, `${c.name}: return code`).to.equal(0);
    return r;
  }

  function roundData(p: Problem, dtype: Dtype): Problem {
    return dtype === 'float32'
      ? { ...p, data: p.data.map((a) => Float64Array.from(Float32Array.from(a))) }
      : p;
  }

  // -------------------------------------------------------------------------------------------------------
  describe('Gaussian sum', () => {
    const D = 3;
    const positions: ArgPosition[] = [
      { dim: D, cat: 0 },
      { dim: D, cat: 1 },
      { dim: 1, cat: 1 },
      { dim: 1, cat: 2 },
    ];
    const x = b.variable(0, D, 0);
    const y = b.variable(1, D, 1);
    const w = b.variable(2, 1, 1);
    const g = b.variable(3, 1, 2);
    const d = b.sub(x, y);
    const gauss = b.mul(b.call('Exp', [b.neg(b.mul(g, b.sum(b.mul(d, d))))]), w);

    function problem(tag: 0 | 1, nx: number, ny: number, seed: number): Problem {
      const M = tag === 0 ? nx : ny;
      const N = tag === 0 ? ny : nx;
      const data = randomData(positions, (cat) => (cat === 0 ? M : cat === 1 ? N : 1), seed, 0, 1);
      data[3][0] = 2.5;
      return { red: makeReduction('Sum_Reduction', gauss, { tag }), positions, data, nx, ny };
    }

    it('matches the float64 reference in float32 (1e-5) and float64 (1e-10), both tags, odd sizes', async () => {
      const cases: KernelCase[] = [];
      for (const dtype of ['float32', 'float64'] as const) {
        for (const tag of [0, 1] as const) {
          cases.push({
            name: `gauss-${dtype}-tag${tag}`,
            dtype,
            problem: roundData(problem(tag, 77, 2 * 1024 + 37, 7 + tag), dtype),
          });
        }
      }
      const compiled = await compileAll(cases);
      cases.forEach((c, k) => {
        expect(compiled[k].kernel.evaluation).to.equal('lanes');
        const got = run(c, compiled[k], { threads: 2 });
        const want = reference(c.problem);
        const err = maxRelativeError(got.val, want.val);
        expect(err, `${c.name}: max relative error`).to.be.below(c.dtype === 'float32' ? 1e-5 : 1e-10);
      });
    });

    it('wide formulas (D = 40, unrolled with extra flags) and huge ones (evaluated one j at a time) stay accurate', async () => {
      const cases: KernelCase[] = [];
      for (const [Dw, name] of [
        [40, 'gauss-D40'],
        [1100, 'gauss-D1100'],
      ] as const) {
        const pos: ArgPosition[] = [
          { dim: Dw, cat: 0 },
          { dim: Dw, cat: 1 },
        ];
        const dw = b.sub(b.variable(0, Dw, 0), b.variable(1, Dw, 1));
        // Cos keeps the formula off the register-blocked path (cpu-blocked.spec.ts), which SqDist would take.
        const f = b.call('Exp', [b.neg(b.mul(b.rat(rational(1, Dw)), b.sum(b.call('Cos', [dw]))))]);
        const data = randomData(pos, (cat) => (cat === 0 ? 5 : 150), 31, 0, 1);
        const red = makeReduction('Sum_Reduction', f, { tag: 0 });
        cases.push({
          name,
          dtype: 'float32',
          problem: roundData({ red, positions: pos, data, nx: 5, ny: 150 }, 'float32'),
        });
      }
      const compiled = await compileAll(cases);
      expect(compiled[0].kernel.evaluation).to.equal('lanes');
      expect(compiled[0].kernel.compilerFlags).to.include('--param=max-completely-peel-times=40');
      expect(compiled[1].kernel.evaluation).to.equal('scalar');
      expect(compiled.map((c) => c.kernel.blockedTerms)).to.deep.equal([0, 0]);
      cases.forEach((c, k) => {
        const err = maxRelativeError(run(c, compiled[k]).val, reference(c.problem).val);
        expect(err, `${c.name}: max relative error`).to.be.below(1e-5);
      });
    });

    it('LogSumExp-type reductions agree with the reference under every sum scheme and accumulator', async () => {
      const lse = b.neg(b.mul(g, b.sum(b.mul(d, d))));
      const cases: KernelCase[] = [];
      for (const [name, formula2] of [
        ['Max_SumShiftExp_Reduction', undefined],
        ['Max_SumShiftExpWeight_Reduction', b.call('Concat', [w, b.mul(w, w)])],
      ] as const) {
        const red = makeReduction(name, lse, { tag: 0, formula2 });
        const base = { ...problem(0, 13, 1500, 21), red };
        for (const dtype of ['float32', 'float64'] as const) {
          for (const sumScheme of ['direct_sum', 'block_sum', 'kahan_scheme'] as const) {
            cases.push({
              name: `${name}-${dtype}-${sumScheme}`,
              dtype,
              sumScheme,
              problem: roundData(base, dtype),
            });
          }
        }
        cases.push({
          name: `${name}-float32-acc64`,
          dtype: 'float32',
          dtypeAcc: 'float64',
          problem: roundData(base, 'float32'),
        });
      }
      const compiled = await compileAll(cases);
      cases.forEach((c, k) => {
        const got = run(c, compiled[k]);
        const want = reference(c.problem);
        const err = maxRelativeError(got.val, want.val);
        expect(err, `${c.name}: max relative error`).to.be.below(c.dtype === 'float32' ? 1e-5 : 1e-12);
      });
    });

    it('LogSumExp folds keep the reference semantics for -inf, +inf and ties', async () => {
      // f = x_i + y_j: rows of all -inf (-> (-inf, 0)), rows reaching +inf (ties at +inf add the weights),
      // finite rows with ties and -inf terms.
      const pos: ArgPosition[] = [
        { dim: 1, cat: 0 },
        { dim: 1, cat: 1 },
        { dim: 2, cat: 1 },
      ];
      const inputs = [
        { x: [0, -Infinity, 2.5, -3], pattern: [-Infinity, 0, 0, 1, -Infinity, 1, 0.5] },
        { x: [0, 1, Infinity], pattern: [0, Infinity, 1, Infinity, -1] },
      ];
      const f = b.add(b.variable(0, 1, 0), b.variable(1, 1, 1));
      const cases: KernelCase[] = [];
      for (const dtype of ['float32', 'float64'] as const) {
        for (const sumScheme of ['direct_sum', 'block_sum', 'kahan_scheme'] as const) {
          for (const weighted of [false, true]) {
            inputs.forEach(({ x, pattern }, k) => {
              const red = weighted
                ? makeReduction('Max_SumShiftExpWeight_Reduction', f, {
                    tag: 0,
                    formula2: b.variable(2, 2, 1),
                  })
                : makeReduction('Max_SumShiftExp_Reduction', f, { tag: 0 });
              const ny = pattern.length * 5;
              const data = [
                Float64Array.from(x),
                Float64Array.from({ length: ny }, (_, j) => pattern[j % pattern.length]),
                Float64Array.from({ length: 2 * ny }, (_, j) => 1 + (j % 5)),
              ];
              cases.push({
                name: `lse-inf${k}-${weighted ? 'weighted-' : ''}${dtype}-${sumScheme}`,
                dtype,
                sumScheme,
                problem: { red, positions: pos, data, nx: x.length, ny },
              });
            });
          }
        }
      }
      const compiled = await compileAll(cases);
      cases.forEach((c, k) => {
        const got = run(c, compiled[k]).val;
        const want = reference(c.problem).val;
        expect(Array.from(got).some(Number.isNaN), `${c.name}: NaN`).to.equal(false);
        expect(maxRelativeError(got, want), `${c.name}: ${got} vs ${want}`).to.be.below(1e-6);
      });
    });

    it('computes only the rows asked for, over the given j-intervals (none = the neutral value)', async () => {
      const base = problem(0, 20, 3000, 3);
      const cases: KernelCase[] = [
        {
          name: 'gauss-ranges',
          dtype: 'float64',
          problem: {
            ...base,
            intervals: [
              [3, 10],
              [20, 21],
              [30, 1100],
              [2990, 3000],
            ],
          },
        },
        { name: 'gauss-no-interval', dtype: 'float64', problem: { ...base, intervals: [] } },
      ];
      const compiled = await compileAll(cases);
      const rows: [number, number] = [5, 12];
      for (const [k, c] of cases.entries()) {
        const got = run(c, compiled[k], { rows });
        const want = reference(c.problem, rows);
        for (let i = 0; i < c.problem.nx; i++) {
          if (i < rows[0] || i >= rows[1]) {
            expect(Number.isNaN(got.val[i]), `${c.name}: row ${i} must be untouched`).to.equal(true);
          } else {
            expect(Math.abs(got.val[i] - want.val[i]), `${c.name}: row ${i}`).to.be.at.most(
              1e-12 * Math.abs(want.val[i]),
            );
          }
        }
        if (c.problem.intervals?.length === 0)
          expect(Array.from(got.val.slice(5, 12))).to.deep.equal(new Array(7).fill(0));
      }
      // Invalid requests are refused with the ABI's return codes.
      const bad = (intervals: [number, number][], r: [number, number]) =>
        harness.run(compiled[0].so, {
          args: base.data,
          nx: base.nx,
          ny: base.ny,
          dtype: 'float64',
          dimVal: 1,
          dimIdx: 0,
          intervals,
          rows: r,
        }).rc;
      expect(bad([[0, 3001]], [0, 1])).to.equal(2);
      expect(bad([[5, 4]], [0, 1])).to.equal(2);
      expect(bad([[0, 10]], [0, 21])).to.equal(1);
      expect(bad([[0, 10]], [3, 2])).to.equal(1);
    });

    it('sum schemes: block_sum, kahan_scheme and float64 accumulation reach ~1e-7, direct_sum ~1e-5 (N = 2e5)', async () => {
      const pos1: ArgPosition[] = [
        { dim: 1, cat: 0 },
        { dim: 1, cat: 1 },
      ];
      const f = b.call('Exp', [b.neg(b.call('Square', [b.sub(b.variable(0, 1, 0), b.variable(1, 1, 1))]))]);
      const data = randomData(pos1, (cat) => (cat === 0 ? 4 : 200000), 11, 0, 1).map((a) =>
        Float64Array.from(Float32Array.from(a)),
      );
      const p: Problem = {
        red: makeReduction('Sum_Reduction', f, { tag: 0 }),
        positions: pos1,
        data,
        nx: 4,
        ny: 200000,
      };
      const want = reference(p);
      const variants: [string, SumScheme, Dtype][] = [
        ['direct', 'direct_sum', 'float32'],
        ['block', 'block_sum', 'float32'],
        ['kahan', 'kahan_scheme', 'float32'],
        ['acc64', 'direct_sum', 'float64'],
      ];
      const cases = variants.map(([name, sumScheme, dtypeAcc]) => ({
        name,
        problem: p,
        dtype: 'float32' as const,
        sumScheme,
        dtypeAcc,
      }));
      const compiled = await compileAll(cases);
      const err = Object.fromEntries(
        cases.map((c, k) => [c.name, maxRelativeError(run(c, compiled[k]).val, want.val)]),
      );
      if (process.env.KEOPS_CODEGEN_VERBOSE) console.log(err);
      // Measured: direct 2.0e-6, block 9.2e-8, kahan 8.7e-8, acc64 4.1e-8 (KeOps CPU: 1.3e-4, 4.1e-7, 3.7e-8, 3.7e-8).
      expect(err.kahan, JSON.stringify(err)).to.be.below(2e-7);
      expect(err.acc64, JSON.stringify(err)).to.be.below(2e-7);
      expect(err.block, JSON.stringify(err)).to.be.below(5e-7);
      expect(err.direct, JSON.stringify(err)).to.be.below(2e-5);
      expect(err.block, JSON.stringify(err)).to.be.at.most(err.direct);
    });
  });

  // -------------------------------------------------------------------------------------------------------
  describe('sub-formulas that read no inner variable (hoisted into a per-row prologue)', () => {
    // x, u: outer rows (tag 0); y, w: inner rows; p: scalar parameter, q: vector parameter.
    const positions: ArgPosition[] = [
      { dim: 3, cat: 0 },
      { dim: 3, cat: 1 },
      { dim: 2, cat: 1 },
      { dim: 1, cat: 2 },
      { dim: 3, cat: 2 },
      { dim: 2, cat: 0 },
    ];
    const x = b.variable(0, 3, 0);
    const y = b.variable(1, 3, 1);
    const w = b.variable(2, 2, 1);
    const p = b.variable(3, 1, 2);
    const q = b.variable(4, 3, 2);
    const u = b.variable(5, 2, 0);
    const d = b.sub(x, y);
    const sqDist = b.sum(b.mul(d, d));
    const exp = (a: Node): Node => b.call('Exp', [a]);
    // Outer-only and used twice: Factorize keeps one evaluation of it.
    const outerNorm = b.call('Sqrt', [b.add(p, b.sum(b.mul(x, x)))]);
    const formulas: readonly (readonly [string, Node])[] = [
      ['parameter scalar', b.mul(exp(b.sub(p, b.mul(exp(p), sqDist))), w)],
      ['parameter vector', b.mul(exp(b.neg(q)), d)],
      ['outer vector', b.mul(b.call('Sin', [b.mul(x, q)]), b.call('Cos', [y]))],
      ['outer and inner', b.add(b.mul(b.call('Cos', [u]), b.sum(y)), b.mul(exp(b.sum(u)), w))],
      [
        'Factorize',
        b.call('Factorize', [b.add(b.mul(outerNorm, b.sum(y)), b.mul(outerNorm, outerNorm)), outerNorm]),
      ],
      ['entirely parameters', b.mul(exp(q), p)],
      ['entirely outer', b.add(b.call('Sin', [u]), p)],
    ];

    it('generates the parameter-only node in the prologue, outside the per-pair function', () => {
      const code = generateFormulaCode(formulas[0][1], {
        T: 'float',
        positions,
        tag: 0,
        names: new NameAllocator(),
        functionName: 'keops_formula',
      });
      expect(code.prologue?.functionName).to.equal('keops_formula_prologue');
      expect(code.prologue?.hoistedScalars).to.equal(1);
      expect(code.prologue?.args.map((a) => a.pos)).to.deep.equal([0, 3]);
      const [prologue, perPair] = code.source.split('template <int INNER_STRIDE>');
      expect(prologue).to.match(/^KEOPS_HD void keops_formula_prologue\(/);
      // Exp(p) in the prologue, the outer Exp (which reads y) per pair.
      expect(prologue.match(/keops_exp\(/g)?.length).to.equal(1);
      expect(perPair.match(/keops_exp\(/g)?.length).to.equal(1);
      // An inner-only formula has no prologue.
      const plain = generateFormulaCode(b.sum(b.mul(y, y)), {
        T: 'float',
        positions,
        tag: 0,
        names: new NameAllocator(),
        functionName: 'keops_formula',
      });
      expect(plain.prologue).to.equal(undefined);
      expect(plain.source).to.not.contain('hoisted');
    });

    it('keeps vectors beyond the cap per pair', () => {
      const big: ArgPosition[] = [...positions, { dim: 600, cat: 2 }];
      const f = b.mul(exp(b.variable(6, 600, 2)), b.sum(b.mul(y, y)));
      const gen = (maxHoistedScalars: number) =>
        generateFormulaCode(f, {
          T: 'float',
          positions: big,
          tag: 0,
          names: new NameAllocator(),
          functionName: 'keops_formula',
          maxHoistedScalars,
        });
      expect(gen(1024).prologue?.hoistedScalars).to.equal(600);
      expect(gen(512).prologue).to.equal(undefined);
      expect(gen(512).localScalars).to.be.at.least(600);
    });

    it('match the float64 reference in float32 and float64, both tags, every evaluation strategy', async () => {
      const cases: KernelCase[] = [];
      const rowsOf = (cat: number): number => (cat === 0 ? 29 : cat === 1 ? 301 : 1);
      for (const dtype of ['float32', 'float64'] as const) {
        const push = (name: string, red: Reduction, pos: readonly ArgPosition[], seed: number): void => {
          const [nx, ny] = red.tag === 0 ? [29, 301] : [301, 29];
          const data = randomData(pos, rowsOf, seed, 0.1, 1);
          cases.push({
            name: `${name}-${dtype}-tag${red.tag}`,
            dtype,
            problem: roundData({ red, positions: pos, data, nx, ny }, dtype),
          });
        };
        for (const tag of [0, 1] as const) {
          formulas.forEach(([name, f], k) =>
            push(name, makeReduction('Sum_Reduction', f, { tag }), positions, 50 + k),
          );
          const lse = b.neg(b.mul(exp(p), sqDist));
          push(
            'lse',
            makeReduction('Max_SumShiftExpWeight_Reduction', lse, { tag, formula2: w }),
            positions,
            49,
          );
        }
        // KMin folds from a buffer of formula values; a formula with large locals is evaluated one j at a time.
        const kmin = b.add(b.mul(exp(p), sqDist), b.sum(u));
        push('kmin', makeReduction('KMin_Reduction', kmin, { tag: 0, k: 3 }), positions, 48);
        const wide: ArgPosition[] = positions.map((pos, k) => (k === 1 ? { dim: 1100, cat: 1 } : pos));
        const yWide = b.variable(1, 1100, 1);
        const wideFormula = b.add(b.mul(exp(b.sum(q)), b.sum(b.mul(yWide, yWide))), b.sum(x));
        push('wide', makeReduction('Sum_Reduction', wideFormula, { tag: 0 }), wide, 47);
      }
      const compiled = await compileAll(cases);
      const strategies = new Set(compiled.map((c) => c.kernel.evaluation));
      expect([...strategies].sort()).to.deep.equal(['buffer', 'lanes', 'scalar']);
      cases.forEach((c, k) => {
        if (c.problem.red.tag === 0) expect(compiled[k].kernel.source, c.name).to.contain('_prologue(');
        const err = maxRelativeError(
          run(c, compiled[k], { threads: 2 }).val,
          reference(c.problem).val,
          // Sums are compared at the scale of Σ|terms| (their terms cancel), KMin values one by one.
          c.problem.red.def.sumType ? absSumScale(c.problem) : undefined,
        );
        expect(err, `${c.name}: max relative error`).to.be.below(c.dtype === 'float32' ? 2e-5 : 1e-12);
      });
    });
  });

  // -------------------------------------------------------------------------------------------------------
  describe('min / max / arg / KMin reductions with ties', () => {
    // Small integers: many exactly equal values, so ties must go to the smallest index everywhere.
    const positions: ArgPosition[] = [
      { dim: 2, cat: 0 },
      { dim: 2, cat: 1 },
      { dim: 1, cat: 1 },
    ];
    const x = b.variable(0, 2, 0);
    const y = b.variable(1, 2, 1);
    const z = b.variable(2, 1, 1);
    const f = b.call('Abs', [b.sub(x, y)]);
    const nx = 9;
    const ny = 1300;
    const r = rng(5);
    const ints = (n: number): Float64Array => Float64Array.from({ length: n }, () => Math.floor(r() * 5) - 2);
    const data = [
      ints(nx * 2),
      ints(ny * 2),
      Float64Array.from({ length: ny }, (_, j) => (j % 7 === 3 ? NaN : j % 5)),
    ];

    const reductions: [string, Node, number?][] = [
      ['Min_Reduction', f],
      ['Max_Reduction', f],
      ['ArgMin_Reduction', f],
      ['ArgMax_Reduction', f],
      ['Min_ArgMin_Reduction', f],
      ['Max_ArgMax_Reduction', f],
      ['KMin_Reduction', f, 3],
      ['ArgKMin_Reduction', f, 4],
      ['KMin_ArgKMin_Reduction', f, 5],
      // K = 12 > 9 rows for tag 1: the missing ranks keep +inf and index 0.
      ['KMin_ArgKMin_Reduction', f, 12],
      // NaN values are never selected (strict comparisons), as in the reference.
      ['Min_ArgMin_Reduction', b.mul(z, b.sum(x))],
      ['KMin_ArgKMin_Reduction', b.mul(z, b.sum(x)), 3],
      ['Max_SumShiftExp_Reduction', b.sum(b.sub(x, y))],
      ['Zero_Reduction', b.zero(2)],
      // No inner variable at all: every j gives the same value (exact small integers).
      ['Sum_Reduction', b.mul(x, x)],
      ['Min_ArgMin_Reduction', b.sum(x)],
    ];

    it('match the float64 reference exactly, in float32 and float64, both tags', async () => {
      const cases: KernelCase[] = [];
      for (const dtype of ['float32', 'float64'] as const) {
        for (const tag of [0, 1] as const) {
          for (const [name, formula, k] of reductions) {
            const red = makeReduction(name, formula, { tag, k });
            // Output rows are i for tag 0 and j for tag 1.
            const p: Problem =
              tag === 0 ? { red, positions, data, nx, ny } : { red, positions, data, nx: ny, ny: nx };
            cases.push({ name: `${name}-${dtype}-tag${tag}`, dtype, problem: p });
          }
        }
      }
      const compiled = await compileAll(cases);
      cases.forEach((c, k) => {
        const got = run(c, compiled[k], { threads: 2 });
        const want = reference(c.problem);
        expect(Array.from(got.idx), `${c.name}: indices`).to.deep.equal(Array.from(want.idx));
        const tol = c.problem.red.def.name.startsWith('Max_SumShiftExp')
          ? c.dtype === 'float32'
            ? 1e-5
            : 1e-12
          : 0;
        expect(maxRelativeError(got.val, want.val), `${c.name}: values`).to.be.at.most(tol);
      });
    });
  });

  // -------------------------------------------------------------------------------------------------------
  describe('every operation', () => {
    // One kernel per operation: Sum_Reduction over j of a formula using it, in float64, compared with the
    // reference to 1e-10 of Σ|terms|.
    const positions: ArgPosition[] = [
      { dim: 3, cat: 0 }, // 0 x in [-1, 1]
      { dim: 3, cat: 1 }, // 1 y in [-1, 1]
      { dim: 1, cat: 2 }, // 2 p = 0.7
      { dim: 1, cat: 0 }, // 3 si in [-1, 1]
      { dim: 1, cat: 1 }, // 4 sj in [-1, 1]
      { dim: 4, cat: 0 }, // 5 complex pair
      { dim: 4, cat: 1 }, // 6 complex pair
      { dim: 6, cat: 1 }, // 7 2x3 or 3x2 matrix
      { dim: 6, cat: 2 }, // 8 sorted knots
      { dim: 3, cat: 0 }, // 9 ui in [0.5, 2]
      { dim: 3, cat: 1 }, // 10 uj in [0.5, 2]
      { dim: 1, cat: 2 }, // 11 gamma = 0.5
      { dim: 1, cat: 0 }, // 12 ti in [0, 1]
      { dim: 3, cat: 0 }, // 13 small integers
      { dim: 3, cat: 1 }, // 14 small integers
    ];
    const v = positions.map((p, pos) => b.variable(pos, p.dim, p.cat));
    const [x, y, p, si, sj, cx, cy, A, knots, ui, uj, gamma, ti, ki, kj] = v;
    const nx = 7;
    const ny = 45;
    const r = rng(17);
    const data = positions.map(({ dim, cat }, pos) => {
      const n = (cat === 0 ? nx : cat === 1 ? ny : 1) * dim;
      const a = new Float64Array(n);
      for (let k = 0; k < n; k++) {
        const u = r();
        a[k] = [9, 10].includes(pos)
          ? 0.5 + 1.5 * u
          : pos === 12
            ? u
            : [13, 14].includes(pos)
              ? Math.floor(u * 5) - 2
              : 2 * u - 1;
      }
      return a;
    });
    data[2][0] = 0.7;
    data[8].set([0, 0.2, 0.4, 0.4, 0.8, 1]);
    data[11][0] = 0.5;

    const c = (name: string, kids: Node[], params?: (number | readonly number[])[]) =>
      b.call(name, kids, params);
    const xy = b.mul(x, y);
    const cm = c('ComplexMult', [cx, cy]);
    const FORMULAS: Record<string, () => Node> = {
      Var: () => y,
      IntCst: () => b.add(b.mul(b.int(3), y), p),
      RatCst: () => b.mul(b.rat(rational(1, 3)), y),
      Zero: () => c('Concat', [b.zero(2), b.sub(x, y)]),
      Add: () => b.add(x, y),
      Subtract: () => b.sub(x, y),
      Minus: () => b.neg(xy),
      Mult: () => xy,
      Divide: () => b.div(x, uj),
      Inv: () => c('Inv', [b.mul(ui, uj)]),
      Scalprod: () => c('Scalprod', [x, y]),
      Square: () => c('Square', [b.sub(x, y)]),
      Pow: () => c('Concat', [c('Pow', [b.sub(x, y)], [3]), c('Pow', [b.mul(ui, uj)], [-2])]),
      Powf: () => c('Powf', [ui, y]),
      Sqrt: () => c('Sqrt', [b.mul(ui, uj)]),
      Rsqrt: () => c('Rsqrt', [b.add(ui, uj)]),
      Exp: () => c('Exp', [xy]),
      Log: () => c('Log', [b.mul(ui, uj)]),
      XLogX: () => c('XLogX', [c('Abs', [b.mul(ki, kj)])]),
      Sin: () => c('Sin', [b.mul(b.int(3), xy)]),
      Cos: () => c('Cos', [b.mul(b.int(3), xy)]),
      SinXDivX: () => c('SinXDivX', [b.sub(ki, kj)]),
      Asin: () => c('Asin', [xy]),
      Acos: () => c('Acos', [xy]),
      Atan: () => c('Atan', [b.div(x, uj)]),
      Atan2: () => c('Atan2', [x, y]),
      Abs: () => c('Abs', [b.sub(x, y)]),
      Sign: () => c('Sign', [b.sub(ki, kj)]),
      Step: () => c('Step', [b.sub(ki, kj)]),
      ReLU: () => c('ReLU', [b.sub(x, y)]),
      Floor: () => c('Floor', [b.mul(b.int(3), b.sub(x, y))]),
      Round: () => c('Concat', [c('Round', [xy], [2]), c('Round', [b.mul(b.int(40), xy)], [-1])]),
      Mod: () => c('Mod', [b.mul(b.int(3), x), uj, y]),
      Clamp: () => c('Clamp', [b.mul(b.int(2), x), sj, b.add(sj, b.rat(rational(1, 2)))]),
      ClampInt: () => c('ClampInt', [b.mul(b.int(3), b.sub(x, y))], [-1, 1]),
      DiffClampInt: () => c('DiffClampInt', [b.sub(ki, kj)], [-1, 1]),
      IfElse: () => c('IfElse', [b.sub(x, y), x, y]),
      Equal: () => c('Equal', [ki, kj]),
      NotEqual: () => c('NotEqual', [ki, kj]),
      LessThan: () => c('LessThan', [ki, kj]),
      LessOrEqual: () => c('LessOrEqual', [ki, kj]),
      Sum: () => b.sum(c('Exp', [xy])),
      SumT: () => b.sumT(b.mul(si, sj), 3),
      Max: () => c('Max', [xy]),
      Min: () => c('Min', [xy]),
      ArgMax: () => c('ArgMax', [b.mul(ki, kj)]),
      ArgMin: () => c('ArgMin', [b.mul(ki, kj)]),
      Elem: () => c('Elem', [xy], [1]),
      ElemT: () => c('ElemT', [b.mul(si, sj)], [4, 2]),
      Extract: () => c('Extract', [xy], [1, 2]),
      ExtractT: () => c('ExtractT', [xy], [1, 5]),
      Concat: () => c('Concat', [x, y]),
      OneHot: () => c('OneHot', [b.add(c('Elem', [ki], [0]), c('Elem', [kj], [0]))], [4]),
      MatVecMult: () => c('MatVecMult', [A, x]),
      VecMatMult: () => c('VecMatMult', [x, A]),
      TensorProd: () => c('TensorProd', [x, y]),
      TensorDot: () => c('TensorDot', [x, A], [[3], [3, 2], [0], [0]]),
      Kron: () =>
        c(
          'Kron',
          [c('Extract', [x], [0, 2]), A],
          [
            [2, 1],
            [2, 3],
          ],
        ),
      ComplexReal: () => c('ComplexReal', [cm]),
      ComplexImag: () => c('ComplexImag', [c('ComplexAdd', [cx, cy])]),
      Real2Complex: () => c('Real2Complex', [xy]),
      Imag2Complex: () => c('Imag2Complex', [b.sub(x, y)]),
      Conj: () => c('Conj', [c('ComplexSubtract', [cx, cy])]),
      ComplexAdd: () => c('ComplexAdd', [cx, cy]),
      ComplexSubtract: () => c('ComplexSubtract', [cx, c('Extract', [cy], [0, 2])]),
      ComplexMult: () => cm,
      ComplexRealScal: () => c('ComplexRealScal', [sj, cx]),
      ComplexDivide: () => c('ComplexDivide', [cx, cy]),
      ComplexSquareAbs: () => c('ComplexSquareAbs', [cm]),
      ComplexAbs: () => c('ComplexAbs', [cm]),
      ComplexAngle: () => c('ComplexAngle', [cm]),
      ComplexExp: () => c('ComplexExp', [cm]),
      ComplexExp1j: () => c('ComplexExp1j', [xy]),
      ComplexSum: () => c('ComplexSum', [cm]),
      ComplexSumT: () => c('ComplexSumT', [c('Extract', [cm], [0, 2])], [6]),
      BSpline: () => c('BSpline', [knots, b.mul(ti, c('Elem', [uj], [0]))], [2]),
      SoftDTW_SqDist: () => c('SoftDTW_SqDist', [x, c('Concat', [y, sj]), gamma]),
      GradSoftDTW_SqDist: () => c('GradSoftDTW_SqDist', [x, c('Concat', [y, sj]), gamma]),
      Factorize: () => {
        const g = b.sum(xy);
        return c('Factorize', [b.add(c('Exp', [g]), b.mul(g, g)), g]);
      },
    };

    it('has a test formula for every operation of the registry', () => {
      const missing = ALL_OPS.map((o) => o.name).filter((n) => !(n in FORMULAS));
      expect(missing).to.deep.equal([]);
    });

    // float32 catches emitted code that only compiles in double (e.g. a double literal passed to an overloaded
    // float function); its tolerance allows for float rounding of intermediate values.
    for (const [dtype, tol] of [
      ['float64', 1e-10],
      ['float32', 2e-5],
    ] as const) {
      it(`each operation compiles and matches the float64 reference (${dtype})`, async () => {
        const cases: KernelCase[] = [];
        const problems: string[] = [];
        for (const op of ALL_OPS) {
          const make = FORMULAS[op.name];
          if (make === undefined) continue;
          let formula: Node;
          try {
            formula = make();
          } catch (e) {
            problems.push(`${op.name}: cannot build the test formula: ${(e as Error).message}`);
            continue;
          }
          if (!topoOrder(formula).some((n) => n.op === op)) {
            problems.push(`${op.name}: the test formula ${formula} does not contain it (simplified away?)`);
            continue;
          }
          const red = makeReduction('Sum_Reduction', formula, { tag: 0 });
          const problem = roundData({ red, positions, data, nx, ny }, dtype);
          cases.push({ name: `${op.name}-${dtype}`, dtype, problem });
        }
        const compiled = await tryCompileAll(cases);
        for (const [k, kc] of cases.entries()) {
          const ck = compiled[k];
          if (ck instanceof Error) {
            problems.push(ck.message);
            continue;
          }
          const got = run(kc, ck);
          const want = reference(kc.problem);
          const err = maxRelativeError(got.val, want.val, absSumScale(kc.problem));
          if (!(err <= tol))
            problems.push(`${kc.name}: relative error ${err} (formula ${kc.problem.red.fout})`);
        }
        expect(problems, problems.join('\n')).to.deep.equal([]);
      });
    }
  });
});

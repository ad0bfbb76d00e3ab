/**
 * Base-2 exponentials of the float32 CUDA kernels (lib/codegen/cuda-exp2.ts): which exponents take the log2(e)
 * scale into a per-row factor, and the kernels' results on the emulated GPU (test/cuda-emulator.ts) against the
 * float64 reference, with growing exponentials (negative scale), quotients, sums of terms and vectors. Needs g++.
 */
import { expect } from 'chai';
import { generateCudaKernels } from '../lib/codegen/cuda';
import { foldExpScale } from '../lib/codegen/cuda-exp2';
import { builder } from '../lib/formula/builder';
import type { ArgPosition } from '../lib/codegen/formula';
import { parseReductionWithVariables } from '../lib/formula/index';
import { referenceReduction } from '../lib/reference';
import { useCudaEmulator } from './cuda-emulator';
import { expectClose, randArray, rng } from './util';

const ALIASES = ['x = Vi(0,3)', 'y = Vj(1,3)', 'b = Vj(2,1)', 'g = Pm(3,1)'];
const M = 23;
const N = 37;

function parse(text: string) {
  const parsed = parseReductionWithVariables(text, ALIASES);
  const positions: ArgPosition[] = ALIASES.map(() => ({ dim: 1, cat: 2 }));
  for (const v of parsed.variables) positions[v.pos] = { dim: v.dim, cat: v.cat };
  return { ...parsed, positions };
}

describe('CUDA base-2 exponentials (log2 e folded into a per-row factor)', function () {
  this.timeout(300_000);
  const emulator = useCudaEmulator();

  const folded = (text: string): boolean => {
    const c = parse(text);
    return foldExpScale(c.reduction.fout, c.positions, c.reduction.tag).toString().includes('KeOpsCudaExp2');
  };

  it('folds the scale where a factor read once per row absorbs it, and only there', () => {
    for (const text of [
      'Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)',
      'Sum_Reduction(Exp(-SqDist(x,y)*g)*b,0)',
      'Sum_Reduction(Exp(-SqDist(x,y)/g)*b,0)',
      'Sum_Reduction(Exp(-0.5*SqDist(x,y))*b,0)',
      'Sum_Reduction(Exp(g-Exp(g)*SqDist(x,y))*b,0)',
      'Sum_Reduction(Exp(-g*SqDist(x,y))*b,1)',
    ]) {
      expect(folded(text), text).to.equal(true);
    }
    for (const text of [
      'Sum_Reduction(Exp(-SqDist(x,y))*b,0)', // no factor: the multiply would move, not vanish
      'Sum_Reduction(Exp(x-y)*b,0)',
      'Sum_Reduction(Exp(g*x)*b,0)', // reads no j variable: computed once per row anyway
      'Sum_Reduction(Exp(-SqDist(x,y)/b)*b,0)', // the divisor is read per pair
    ]) {
      expect(folded(text), text).to.equal(false);
    }
    const c = parse('Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)');
    const opts = { sumScheme: 'block_sum' as const, positions: c.positions };
    expect(generateCudaKernels(c.reduction, { ...opts, dtype: 'float32' }).body).to.include('keops_exp2(');
    // float64: CUDA's exp2(double) costs what the multiply saves; the formula is left as written.
    expect(generateCudaKernels(c.reduction, { ...opts, dtype: 'float64' }).body).not.to.include(
      'keops_exp2(',
    );
  });

  it('visits shared sub-formulas once (a deep DAG whose tree has 2^60 nodes: visited as a tree, it would not end)', () => {
    const c = parse('Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)');
    const g = builder.variable(3, 1, 2);
    let u = c.reduction.fout.children[1].children[0];
    for (let k = 0; k < 60; k++) u = builder.add(u, builder.div(u, g));
    const folded = foldExpScale(builder.call('Exp', [u]), c.positions, 0);
    expect(folded.op.name).to.equal('KeOpsCudaExp2');
  });

  for (const [text, g] of [
    ['Sum_Reduction(Exp(-g*SqDist(x,y))*b,0)', 0.7],
    ['Sum_Reduction(Exp(-g*SqDist(x,y))*b,1)', -0.05], // growing exponential
    ['Sum_Reduction(Exp(-SqDist(x,y)/g)*b,0)', 1.3],
    ['Sum_Reduction(Exp(g-Exp(g)*SqDist(x,y))*b,0)', -0.4],
    ['Sum_Reduction(Exp(-0.5*SqDist(x,y))*b,0)', 0],
    ['Sum_Reduction(Exp(-g*(x-y))*b,0)', 0.9], // vector exponent
    ['Max_SumShiftExpWeight_Reduction(-g*SqDist(x,y),0,Exp(-g*SqDist(x,y))*b)', 2],
  ] as const) {
    it(`${text} with g = ${g}: float32 results of the reference (1D and split kernels)`, async () => {
      const c = parse(text);
      const tag = c.reduction.tag;
      const kernels = generateCudaKernels(c.reduction, {
        dtype: 'float32',
        sumScheme: 'block_sum',
        positions: c.positions,
      });
      expect(kernels.body).to.include('keops_exp2(');
      const rows = (p: ArgPosition): number => (p.cat === 2 ? 1 : p.cat === 0 ? M : N);
      const args = c.positions.map((p, pos) =>
        pos === 3 ? Float32Array.of(g) : Float32Array.from(randArray(rng(40 + pos), rows(p) * p.dim)),
      );
      const expected = referenceReduction(
        c.reduction,
        c.positions.map((p, pos) => ({ data: Float64Array.from(args[pos]), cat: p.cat, dim: p.dim })),
        {},
      );
      const [nx, ny] = tag === 0 ? [M, N] : [N, M];
      const exe = await emulator.compile(kernels);
      for (const launch of [
        { scheme: '1d' as const, nx, ny, blockSize: 8, args },
        { scheme: 'split' as const, nx, ny, blockSize: 8, splits: Math.ceil(ny / 16), slice: 16, args },
      ]) {
        const got = await emulator.run(exe, kernels, launch);
        expectClose(got.val, expected.val, 1e-5, 1e-6, `${text} ${launch.scheme}`);
      }
    });
  }
});

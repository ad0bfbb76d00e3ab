/**
 * End-to-end gradients of Genred computed by the CPU backend (`grad`, `gradSync`, `gradient`), against the
 * float64 reference gradient (lib/reference.ts) for every differentiable reduction × both axes × each variable
 * category, with batch dims and ranges, against finite differences of the forward call, and to second order.
 * Kernels go to the shared test cache under node_modules/.cache and are compiled up front, in parallel.
 */
import { expect } from 'chai';
import { parseFormula } from '../lib/formula';
import { Genred, type GenredArg, type GenredRanges } from '../lib/genred';
import type { ReductionName } from '../lib/genred-types';
import { type ReferenceInput, referenceGenredGradient } from '../lib/reference';
import { randArray, rejection, rng, useTestKernelCache } from './util';

type Dtype = 'float32' | 'float64';
const DTYPES: readonly Dtype[] = ['float32', 'float64'];
const AXES: readonly (0 | 1)[] = [0, 1];
const TOLERANCE: Record<Dtype, number> = { float32: 1e-4, float64: 1e-10 };

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)', 'p = Pm(1)'];
const NAMES = ['x', 'y', 'b', 'p'];
const CATEGORIES: readonly (0 | 1 | 2)[] = [0, 1, 1, 2];
const DIMS = [3, 3, 2, 1];
const M = 5;
const N = 7;

interface Case {
  reduction: string;
  formula: string;
  formula2?: string;
}

const CASES: readonly Case[] = [
  { reduction: 'Sum', formula: 'Exp(-p*SqDist(x,y))*b' },
  { reduction: 'LogSumExp', formula: '-p*SqDist(x,y)+Sum(b)' },
  { reduction: 'LogSumExp', formula: '-p*SqDist(x,y)', formula2: 'Exp(b)' },
  { reduction: 'SumSoftMaxWeight', formula: '-p*SqDist(x,y)', formula2: 'b' },
];

const label = (c: Case, axis: 0 | 1): string =>
  `${c.reduction}(${c.formula}${c.formula2 ? `, ${c.formula2}` : ''}) axis ${axis}`;

function genredFor(c: Case, axis: 0 | 1): Genred {
  return new Genred(c.formula, ALIASES, {
    reduction: c.reduction as ReductionName,
    axis,
    formula2: c.formula2,
  });
}

function makeData(dtype: Dtype, seed = 3): Float64Array[] | Float32Array[] {
  const r = rng(seed);
  const rows = [M, N, N, 1];
  const arrays = DIMS.map((dim, pos) => (pos === 3 ? Float64Array.of(0.7) : randArray(r, rows[pos] * dim)));
  return dtype === 'float32' ? arrays.map((a) => Float32Array.from(a)) : arrays;
}

function referenceInputs(args: readonly GenredArg[]): ReferenceInput[] {
  return args.map((arg, pos) =>
    ArrayBuffer.isView(arg)
      ? { data: arg, cat: CATEGORIES[pos], dim: DIMS[pos] }
      : { data: arg.data, cat: CATEGORIES[pos], shape: arg.shape },
  );
}

function referenceGradient(
  c: Case,
  axis: 0 | 1,
  args: readonly GenredArg[],
  wrt: number,
  G: ArrayLike<number>,
  ranges?: GenredRanges,
): Float64Array {
  const node = (text: string) => parseFormula(text, ALIASES).node;
  return referenceGenredGradient(c.reduction, node(c.formula), referenceInputs(args), {
    axis,
    formula2: c.formula2 === undefined ? undefined : node(c.formula2),
    ranges,
    wrt,
    G,
  });
}

/** max |a − e| ≤ tol · max(1, max |e|): relative to the gradient's scale, robust to tiny components. */
function expectNear(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  expect(actual.length, `${what} length`).to.equal(expected.length);
  let scale = 1;
  for (let k = 0; k < expected.length; k++) scale = Math.max(scale, Math.abs(expected[k]));
  for (let k = 0; k < expected.length; k++) {
    const error = Math.abs(actual[k] - expected[k]);
    expect(error <= tol * scale, `${what}[${k}]: got ${actual[k]}, expected ${expected[k]}`).to.equal(true);
  }
}

function cotangent(rows: number, dim: number, dtype: Dtype, seed = 5): Float64Array | Float32Array {
  const G = randArray(rng(seed), rows * dim);
  return dtype === 'float32' ? Float32Array.from(G) : G;
}

/** ⟨G, f⟩ */
const dot = (G: ArrayLike<number>, f: ArrayLike<number>): number => {
  let s = 0;
  for (let k = 0; k < G.length; k++) s += G[k] * f[k];
  return s;
};

/** Central finite differences of x ↦ ⟨G, f(x)⟩ at args[wrt]. */
function finiteDifferences(
  f: (args: Float64Array[]) => ArrayLike<number>,
  args: readonly Float64Array[],
  wrt: number,
  G: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(args[wrt].length);
  for (let k = 0; k < out.length; k++) {
    const h = 1e-6;
    const shifted = (delta: number): number => {
      const copy = args.map((a) => a.slice());
      copy[wrt][k] += delta;
      return dot(G, f(copy));
    };
    out[k] = (shifted(h) - shifted(-h)) / (2 * h);
  }
  return out;
}

describe('Genred gradients (CPU backend)', function () {
  this.timeout(300_000);
  useTestKernelCache();
  const genreds = new Map<string, Genred>();

  before(async function () {
    // Compile every forward and gradient kernel at once: the cache bounds how many compilers run in parallel.
    const firstCalls: Promise<unknown>[] = [];
    for (const c of CASES) {
      for (const axis of AXES) {
        const g = genredFor(c, axis);
        genreds.set(label(c, axis), g);
        for (const dtype of DTYPES) {
          const args = makeData(dtype);
          const G = cotangent(axis === 1 ? M : N, g.dimOut, dtype);
          for (let wrt = 0; wrt < 4; wrt++) firstCalls.push(g.grad(args, { wrt, cotangent: G }));
        }
      }
    }
    await Promise.all(firstCalls);
  });

  for (const c of CASES) {
    for (const axis of AXES) {
      for (const dtype of DTYPES) {
        it(`${label(c, axis)} ${dtype}: every input against the reference`, async function () {
          const g = genreds.get(label(c, axis)) as Genred;
          const args = makeData(dtype);
          const G = cotangent(axis === 1 ? M : N, g.dimOut, dtype);
          for (let wrt = 0; wrt < 4; wrt++) {
            const expected = referenceGradient(c, axis, args, wrt, G);
            const viaPosition = await g.grad(args, { wrt, cotangent: G });
            expect(viaPosition, NAMES[wrt]).to.be.instanceOf(
              dtype === 'float32' ? Float32Array : Float64Array,
            );
            expectNear(viaPosition, expected, TOLERANCE[dtype], `d/d${NAMES[wrt]}`);
            const viaName = g.gradSync(args, { wrt: NAMES[wrt], cotangent: G });
            expectNear(viaName, expected, TOLERANCE[dtype], `d/d${NAMES[wrt]} (sync, by name)`);
          }
        });
      }
    }
  }

  it('agrees with finite differences of the forward call', function () {
    const args = makeData('float64') as Float64Array[];
    const checks: Array<[Case, 0 | 1, number]> = [
      [CASES[0], 1, 0], // Sum, i-variable
      [CASES[1], 0, 3], // LogSumExp, parameter
      [CASES[2], 1, 2], // LogSumExp with weight, j-variable in the weight
      [CASES[3], 0, 1], // SumSoftMaxWeight, j-variable
    ];
    for (const [c, axis, wrt] of checks) {
      const g = genreds.get(label(c, axis)) as Genred;
      const G = cotangent(axis === 1 ? M : N, g.dimOut, 'float64');
      const numeric = finiteDifferences((a) => g.callSync(a) as Float64Array, args, wrt, G);
      expectNear(
        g.gradSync(args, { wrt, cotangent: G }),
        numeric,
        1e-6,
        `${label(c, axis)} d/d${NAMES[wrt]}`,
      );
    }
  });

  it('sums over broadcast batch dims and parameter rows', async function () {
    const c = CASES[1];
    const g = genreds.get(label(c, 1)) as Genred;
    const r = rng(9);
    // x: [2, 1, M, 3], y: [3, N, 3] (broadcast over the first batch dim), b: [N, 2], p: [2, 3, 1].
    const args: GenredArg[] = [
      { data: randArray(r, 2 * M * 3), shape: [2, 1, M, 3] },
      { data: randArray(r, 3 * N * 3), shape: [3, N, 3] },
      randArray(r, N * 2),
      { data: Float64Array.from({ length: 6 }, () => 0.5 + r()), shape: [2, 3, 1] },
    ];
    const G = randArray(r, 2 * 3 * M);
    for (let wrt = 0; wrt < 4; wrt++) {
      const expected = referenceGradient(c, 1, args, wrt, G);
      expectNear(await g.grad(args, { wrt, cotangent: G }), expected, 1e-10, `batched d/d${NAMES[wrt]}`);
    }
  });

  it('follows the forward ranges', async function () {
    const c = CASES[0];
    const args = makeData('float64');
    // i-blocks [0,2) → j [0,3), [3,5) → j [2,7); j-blocks [0,4) → i [1,5), [4,7) → i [0,2).
    const ranges: GenredRanges = [
      [0, 2, 3, 5],
      [1, 2],
      [0, 3, 2, 7],
      [0, 4, 4, 7],
      [1, 2],
      [1, 5, 0, 2],
    ];
    for (const axis of AXES) {
      const g = genreds.get(label(c, axis)) as Genred;
      const G = cotangent(axis === 1 ? M : N, g.dimOut, 'float64');
      for (let wrt = 0; wrt < 4; wrt++) {
        const expected = referenceGradient(c, axis, args, wrt, G, ranges);
        const actual = await g.grad(args, { wrt, cotangent: G, ranges });
        expectNear(actual, expected, 1e-10, `ranges axis ${axis} d/d${NAMES[wrt]}`);
      }
    }
  });

  it('differentiates a gradient again (second order, Sum)', async function () {
    const g = genreds.get(label(CASES[0], 1)) as Genred;
    const gx = g.gradient('x');
    expect(gx.etaPosition).to.equal(4);
    expect(gx.savedPosition).to.equal(undefined);
    const args = makeData('float64') as Float64Array[];
    const eta = cotangent(M, 2, 'float64') as Float64Array;
    const firstOrder = (a: Float64Array[]) => gx.callSync([...a.slice(0, 4), eta]) as Float64Array;
    // The gradient reduction is the first-order gradient itself.
    expectNear(firstOrder(args), g.gradSync(args, { wrt: 'x', cotangent: eta }), 1e-12, 'dx');
    const H = cotangent(M, 3, 'float64', 8);
    const gradArgs = [...args, eta];
    for (const wrt of ['x', 'y', 'p']) {
      const pos = NAMES.indexOf(wrt);
      const numeric = finiteDifferences(firstOrder, args, pos, H);
      expectNear(await gx.grad(gradArgs, { wrt, cotangent: H }), numeric, 1e-6, `d²/dx d${wrt}`);
    }
    // With respect to eta, the gradient is linear: d⟨H, Jᵀeta⟩/deta = J H.
    const numericEta = finiteDifferences((a) => gx.callSync(a) as Float64Array, gradArgs, 4, H);
    expectNear(gx.gradSync(gradArgs, { wrt: 4, cotangent: H }), numericEta, 1e-6, 'd²/dx deta');
  });

  it('gives zero for Arg-type reductions and explains Min, Max and KMin', async function () {
    const args = makeData('float64');
    const argMin = new Genred('SqDist(x,y)', ALIASES, { reduction: 'ArgMin', axis: 1 });
    const zero = await argMin.grad(args, { wrt: 'x' });
    expect(Array.from(zero)).to.deep.equal(new Array(M * 3).fill(0));
    for (const reduction of ['Min', 'Max', 'Min_ArgMin', 'KMin'] as const) {
      const g = new Genred('SqDist(x,y)', ALIASES, {
        reduction,
        axis: 1,
        k: reduction === 'KMin' ? 2 : undefined,
      });
      const e = await rejection(g.grad(args, { wrt: 'x', cotangent: new Float64Array(M * g.dimOut) }));
      expect(e.code, reduction).to.equal('ERR_NOT_DIFFERENTIABLE');
      expect(e.message)
        .to.match(/not differentiable/)
        .and.match(/Arg/);
    }
  });

  it('validates its options', async function () {
    const g = genreds.get(label(CASES[0], 1)) as Genred;
    const args = makeData('float64');
    const G = cotangent(M, 2, 'float64');
    const code = async (p: Promise<unknown>) => (await rejection(p)).code;
    expect(await code(g.grad(args, { wrt: 'z', cotangent: G }))).to.equal('ERR_INVALID_ARGUMENT');
    expect(await code(g.grad(args, { wrt: 7, cotangent: G }))).to.equal('ERR_INVALID_ARGUMENT');
    expect(await code(g.grad(args, { wrt: 'x' }))).to.equal('ERR_INVALID_ARGUMENT');
    expect(await code(g.grad(args, { wrt: 'x', cotangent: G.subarray(1) }))).to.equal('ERR_INVALID_ARGUMENT');
    const notFloat = [1, 2] as unknown as Float64Array;
    expect(await code(g.grad(args, { wrt: 'x', cotangent: notFloat }))).to.equal('ERR_ARG_TYPE');
    expect(await code(g.grad(args.slice(1), { wrt: 'x', cotangent: G }))).to.equal('ERR_ARG_COUNT');
  });
});

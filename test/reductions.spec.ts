import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import { builder as b } from '../lib/formula/builder';
import type { Node } from '../lib/formula/node';
import type { Reduction, ReductionEmitContext } from '../lib/formula/reduction';
import {
  makeReduction,
  outputDim,
  REDUCTIONS,
  reductionDiff,
  reductionGradient,
} from '../lib/formula/reductions';
import { referenceReduction, type ReferenceInput } from '../lib/reference';
import { expectClose, randArray, rng } from './util';

// ---------------------------------------------------------------------------------------------------------
// Helpers: run the reference hooks on a sequence of fout rows, in one pass or split and merged.

type Rows = Float64Array[];

function newAcc(red: Reduction) {
  return { val: new Float64Array(red.layout.dimredVal), idx: new Int32Array(red.layout.dimredIdx) };
}

function onePass(red: Reduction, rows: Rows) {
  const acc = newAcc(red);
  red.def.init(acc, red);
  rows.forEach((f, j) => red.def.fold(acc, f, j, red));
  return red.def.finalize(acc, red);
}

/** Folds contiguous blocks of j separately, then merges the partial accumulators in a random order. */
function splitPass(red: Reduction, rows: Rows, r: () => number) {
  const cuts = new Set<number>([0, rows.length]);
  const nCuts = Math.floor(r() * 5);
  for (let c = 0; c < nCuts; c++) cuts.add(Math.floor(r() * (rows.length + 1)));
  const bounds = [...cuts].sort((x, y) => x - y);
  const parts = bounds.slice(0, -1).map((s, k) => {
    const acc = newAcc(red);
    red.def.init(acc, red);
    for (let j = s; j < bounds[k + 1]; j++) red.def.fold(acc, rows[j], j, red);
    return acc;
  });
  while (parts.length > 1) {
    const a = parts.splice(Math.floor(r() * parts.length), 1)[0];
    const c = parts[Math.floor(r() * parts.length)];
    red.def.merge(c, a, red);
  }
  return red.def.finalize(parts[0], red);
}

const vj = (pos: number, dim: number): Node => b.variable(pos, dim, 1);

function randomRows(r: () => number, n: number, dim: number, levels = 0): Rows {
  return Array.from({ length: n }, () => {
    const a = randArray(r, dim, -3, 3);
    // Few distinct levels make ties frequent.
    if (levels > 0) for (let k = 0; k < dim; k++) a[k] = Math.round(a[k] * levels) / levels;
    return a;
  });
}

function expectKeOpsError(fn: () => unknown, code: string, pattern?: RegExp): KeOpsError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a KeOpsError').to.be.instanceOf(KeOpsError);
  const err = caught as KeOpsError;
  expect(err.code, err.message).to.equal(code);
  if (pattern) expect(err.message).to.match(pattern);
  return err;
}

// Independent brute-force definitions (per component l, over j = 0..n-1).

const column = (rows: Rows, l: number): number[] => rows.map((f) => f[l]);

function bruteExtremum(rows: Rows, D: number, dir: 'min' | 'max') {
  const vals = new Float64Array(D);
  const idx = new Int32Array(D);
  for (let l = 0; l < D; l++) {
    const col = column(rows, l).filter((x) => !Number.isNaN(x));
    const best =
      col.length === 0
        ? dir === 'min'
          ? Infinity
          : -Infinity
        : dir === 'min'
          ? Math.min(...col)
          : Math.max(...col);
    vals[l] = best;
    const first = column(rows, l).indexOf(best);
    idx[l] = Number.isFinite(best) && first >= 0 ? first : -1;
  }
  return { vals, idx };
}

/** K smallest by a stable sort of (value, j); +inf / NaN never selected; missing ranks are (+inf, 0). */
function bruteKMin(rows: Rows, D: number, K: number) {
  const vals = new Float64Array(K * D).fill(Infinity);
  const idx = new Int32Array(K * D).fill(-1);
  for (let l = 0; l < D; l++) {
    const pairs = column(rows, l)
      .map((v, j) => ({ v, j }))
      .filter((p) => p.v < Infinity)
      .sort((p, q) => p.v - q.v);
    pairs.slice(0, K).forEach((p, rank) => {
      vals[rank * D + l] = p.v;
      idx[rank * D + l] = p.j;
    });
  }
  return { vals, idx };
}

/** (max f, Σ e^{f - max} g) computed naively in two passes. */
function bruteShiftExp(rows: Rows, weighted: boolean) {
  const fs = rows.map((r) => r[0]);
  const m = fs.length === 0 ? -Infinity : Math.max(...fs);
  const dg = weighted ? rows[0].length - 1 : 1;
  const s = new Float64Array(dg);
  for (const row of rows) {
    if (row[0] === -Infinity) continue;
    for (let k = 0; k < dg; k++) s[k] += Math.exp(row[0] - m) * (weighted ? row[1 + k] : 1);
  }
  return Float64Array.from([m, ...s]);
}

// ---------------------------------------------------------------------------------------------------------

describe('reductions: reference hooks', () => {
  it('registers the 13 engine reductions', () => {
    expect([...REDUCTIONS.keys()].sort()).to.deep.equal(
      [
        'ArgKMin_Reduction',
        'ArgMax_Reduction',
        'ArgMin_Reduction',
        'KMin_ArgKMin_Reduction',
        'KMin_Reduction',
        'Max_ArgMax_Reduction',
        'Max_Reduction',
        'Max_SumShiftExpWeight_Reduction',
        'Max_SumShiftExp_Reduction',
        'Min_ArgMin_Reduction',
        'Min_Reduction',
        'Sum_Reduction',
        'Zero_Reduction',
      ].sort(),
    );
  });

  it('Sum_Reduction: per-component sums, any split', () => {
    const r = rng(11);
    const red = makeReduction('Sum_Reduction', vj(0, 3), { tag: 0 });
    for (let trial = 0; trial < 20; trial++) {
      const rows = randomRows(r, 1 + Math.floor(r() * 30), 3);
      const expected = new Float64Array(3);
      for (const f of rows) for (let l = 0; l < 3; l++) expected[l] += f[l];
      expectClose(onePass(red, rows).val, expected, 1e-12, 1e-12);
      expectClose(splitPass(red, rows, r).val, expected, 1e-12, 1e-12);
    }
    expectClose(onePass(red, []).val, [0, 0, 0]);
  });

  for (const dir of ['min', 'max'] as const) {
    const Name = dir === 'min' ? 'Min' : 'Max';
    it(`${Name}, Arg${Name}, ${Name}_Arg${Name}: first extremum, ties to the smallest index, any split`, () => {
      const r = rng(dir === 'min' ? 21 : 22);
      const D = 2;
      const values = makeReduction(`${Name}_Reduction`, vj(0, D), { tag: 0 });
      const args = makeReduction(`Arg${Name}_Reduction`, vj(0, D), { tag: 0 });
      const both = makeReduction(`${Name}_Arg${Name}_Reduction`, vj(0, D), { tag: 1 });
      expect(args.layout).to.deep.equal({ dimredVal: D, dimredIdx: D, dimVal: 0, dimIdx: D });
      expect(both.layout).to.deep.equal({ dimredVal: D, dimredIdx: D, dimVal: D, dimIdx: D });
      for (let trial = 0; trial < 40; trial++) {
        const rows = randomRows(r, 1 + Math.floor(r() * 25), D, 2);
        const expected = bruteExtremum(rows, D, dir);
        for (const pass of [onePass, (red: Reduction, rs: Rows) => splitPass(red, rs, r)]) {
          expect(Array.from(pass(values, rows).val)).to.deep.equal(Array.from(expected.vals));
          expect(Array.from(pass(args, rows).idx)).to.deep.equal(Array.from(expected.idx));
          expect(pass(args, rows).val.length).to.equal(0);
          const out = pass(both, rows);
          expect(Array.from(out.val)).to.deep.equal(Array.from(expected.vals));
          expect(Array.from(out.idx)).to.deep.equal(Array.from(expected.idx));
        }
      }
      const empty = onePass(both, []);
      expect(Array.from(empty.val)).to.deep.equal([
        dir === 'min' ? Infinity : -Infinity,
        dir === 'min' ? Infinity : -Infinity,
      ]);
      expect(Array.from(empty.idx)).to.deep.equal([-1, -1]);
    });
  }

  it('Min/ArgMin skip NaN and give index -1 when nothing beats +inf', () => {
    const red = makeReduction('Min_ArgMin_Reduction', vj(0, 1), { tag: 0 });
    const out = onePass(red, [
      Float64Array.of(NaN),
      Float64Array.of(Infinity),
      Float64Array.of(2),
      Float64Array.of(NaN),
    ]);
    expect(Array.from(out.val)).to.deep.equal([2]);
    expect(Array.from(out.idx)).to.deep.equal([2]);
    const none = onePass(red, [Float64Array.of(Infinity), Float64Array.of(NaN)]);
    expect(Array.from(none.val)).to.deep.equal([Infinity]);
    expect(Array.from(none.idx)).to.deep.equal([-1]);
  });

  it('KMin, ArgKMin, KMin_ArgKMin: sorted K smallest, ties to the smallest index, any split', () => {
    const r = rng(31);
    for (const [K, D] of [
      [1, 1],
      [3, 2],
      [4, 3],
    ]) {
      const kmin = makeReduction('KMin_Reduction', vj(0, D), { tag: 0, k: K });
      const argk = makeReduction('ArgKMin_Reduction', vj(0, D), { tag: 0, k: K });
      const both = makeReduction('KMin_ArgKMin_Reduction', vj(0, D), { tag: 0, k: K });
      expect(both.layout).to.deep.equal({ dimredVal: K * D, dimredIdx: K * D, dimVal: K * D, dimIdx: K * D });
      expect(kmin.layout.dimIdx).to.equal(0);
      expect(argk.layout.dimVal).to.equal(0);
      for (let trial = 0; trial < 40; trial++) {
        const rows = randomRows(r, 1 + Math.floor(r() * 20), D, 1);
        const expected = bruteKMin(rows, D, K);
        for (const pass of [onePass, (red: Reduction, rs: Rows) => splitPass(red, rs, r)]) {
          expect(Array.from(pass(kmin, rows).val)).to.deep.equal(Array.from(expected.vals));
          expect(Array.from(pass(argk, rows).idx)).to.deep.equal(Array.from(expected.idx));
          const out = pass(both, rows);
          expect(Array.from(out.val)).to.deep.equal(Array.from(expected.vals));
          expect(Array.from(out.idx)).to.deep.equal(Array.from(expected.idx));
        }
      }
    }
  });

  it('KMin with K > N leaves +inf and index -1 in the missing ranks', () => {
    const red = makeReduction('KMin_ArgKMin_Reduction', vj(0, 1), { tag: 0, k: 5 });
    const out = onePass(red, [Float64Array.of(3), Float64Array.of(1), Float64Array.of(3)]);
    expect(Array.from(out.val)).to.deep.equal([1, 3, 3, Infinity, Infinity]);
    expect(Array.from(out.idx)).to.deep.equal([1, 0, 2, -1, -1]);
  });

  it('Max_SumShiftExp: (max, Σ e^{f-max}), stable for huge values, any split', () => {
    const r = rng(41);
    const red = makeReduction('Max_SumShiftExp_Reduction', vj(0, 1), { tag: 0 });
    for (let trial = 0; trial < 20; trial++) {
      const shift = trial % 2 === 0 ? 0 : 1000;
      const rows = randomRows(r, 1 + Math.floor(r() * 30), 1).map((f) => Float64Array.of(f[0] * 5 + shift));
      const expected = bruteShiftExp(rows, false);
      expectClose(onePass(red, rows).val, expected, 1e-12);
      expectClose(splitPass(red, rows, r).val, expected, 1e-12);
      const lse = (out: Float64Array) => out[0] + Math.log(out[1]);
      const direct = shift + Math.log(rows.reduce((s, f) => s + Math.exp(f[0] - shift), 0));
      expect(Math.abs(lse(onePass(red, rows).val) - direct)).to.be.below(
        1e-12 * Math.max(1, Math.abs(direct)),
      );
      expect(Number.isFinite(lse(onePass(red, rows).val))).to.equal(true);
    }
  });

  it('Max_SumShiftExpWeight: vector weights, any split', () => {
    const r = rng(42);
    const red = makeReduction('Max_SumShiftExpWeight_Reduction', vj(0, 1), { tag: 1, formula2: vj(1, 2) });
    expect(red.layout).to.deep.equal({ dimredVal: 3, dimredIdx: 0, dimVal: 3, dimIdx: 0 });
    expect(red.fout.dim).to.equal(3);
    for (let trial = 0; trial < 20; trial++) {
      const rows = randomRows(r, 1 + Math.floor(r() * 30), 3);
      const expected = bruteShiftExp(rows, true);
      expectClose(onePass(red, rows).val, expected, 1e-12, 1e-15);
      expectClose(splitPass(red, rows, r).val, expected, 1e-12, 1e-15);
    }
  });

  it('Max_SumShiftExp handles -inf and +inf without NaN', () => {
    const r = rng(43);
    const red = makeReduction('Max_SumShiftExp_Reduction', vj(0, 1), { tag: 0 });
    const allNegInf = [Float64Array.of(-Infinity), Float64Array.of(-Infinity), Float64Array.of(-Infinity)];
    expect(Array.from(onePass(red, allNegInf).val)).to.deep.equal([-Infinity, 0]);
    expect(Array.from(splitPass(red, allNegInf, r).val)).to.deep.equal([-Infinity, 0]);
    expect(Array.from(onePass(red, []).val)).to.deep.equal([-Infinity, 0]);
    const mixed = [
      Float64Array.of(-Infinity),
      Float64Array.of(0),
      Float64Array.of(-Infinity),
      Float64Array.of(0),
    ];
    expectClose(onePass(red, mixed).val, [0, 2]);
    for (let t = 0; t < 10; t++) expectClose(splitPass(red, mixed, r).val, [0, 2]);
    const posInf = [Float64Array.of(1), Float64Array.of(Infinity), Float64Array.of(2)];
    expect(Array.from(onePass(red, posInf).val)).to.deep.equal([Infinity, 1]);
    // Merging two empty accumulators (both m = -inf) stays (−inf, 0).
    const a = newAcc(red);
    const c = newAcc(red);
    red.def.init(a, red);
    red.def.init(c, red);
    red.def.merge(a, c, red);
    expect(Array.from(a.val)).to.deep.equal([-Infinity, 0]);
  });

  it('Zero_Reduction outputs zeros and prints canonically', () => {
    const red = makeReduction('Zero_Reduction', b.call('Exp', [vj(0, 2)]), { tag: 1 });
    expect(red.toString()).to.equal('Zero_Reduction(Zero(2),1)');
    // KeOps' spelling Zero_Reduction(d, tag): an integer first argument is the dimension.
    expect(makeReduction('Zero_Reduction', b.int(3), { tag: 0 }).toString()).to.equal(
      'Zero_Reduction(Zero(3),0)',
    );
    expectKeOpsError(
      () => makeReduction('Zero_Reduction', b.int(-2), { tag: 0 }),
      'ERR_REDUCTION',
      /dimension/,
    );
    expect(Array.from(onePass(red, [Float64Array.of(5, 6)]).val)).to.deep.equal([0, 0]);
  });
});

describe('reductions: makeReduction validation and printing', () => {
  const f = vj(0, 2);
  it('prints each syntax canonically', () => {
    expect(makeReduction('Sum_Reduction', f, { tag: 0 }).toString()).to.equal('Sum_Reduction(Var(0,2,1),0)');
    expect(makeReduction('KMin_Reduction', f, { tag: 1, k: 3 }).toString()).to.equal(
      'KMin_Reduction(Var(0,2,1),3,1)',
    );
    expect(
      makeReduction('Max_SumShiftExpWeight_Reduction', vj(0, 1), { tag: 0, formula2: f }).toString(),
    ).to.equal('Max_SumShiftExpWeight_Reduction(Var(0,1,1),0,Var(0,2,1))');
  });

  it('rejects bad names, tags, K, formula2 and dims with KeOpsErrors', () => {
    expectKeOpsError(
      () => makeReduction('Sum_Reductio', f, { tag: 0 }),
      'ERR_REDUCTION',
      /did you mean 'Sum_Reduction'/,
    );
    expectKeOpsError(
      () => makeReduction('argmin_reduction', f, { tag: 0 }),
      'ERR_REDUCTION',
      /ArgMin_Reduction/,
    );
    expectKeOpsError(() => makeReduction('Sum_Reduction', f, { tag: 2 }), 'ERR_REDUCTION');
    expectKeOpsError(() => makeReduction('Sum_Reduction', f, { tag: -1 }), 'ERR_REDUCTION');
    expectKeOpsError(() => makeReduction('Sum_Reduction', f, { tag: 0, k: 2 }), 'ERR_REDUCTION', /K/);
    for (const k of [undefined, 0, -1, 1.5, NaN, Infinity]) {
      expectKeOpsError(() => makeReduction('KMin_Reduction', f, { tag: 0, k }), 'ERR_REDUCTION', /K must be/);
    }
    expectKeOpsError(
      () => makeReduction('KMin_Reduction', f, { tag: 0, k: 2 ** 30 }),
      'ERR_REDUCTION',
      /exceeds/,
    );
    expectKeOpsError(() => makeReduction('Sum_Reduction', f, { tag: 0, formula2: f }), 'ERR_REDUCTION');
    expectKeOpsError(
      () => makeReduction('Max_SumShiftExpWeight_Reduction', vj(0, 1), { tag: 0 }),
      'ERR_REDUCTION',
    );
    expectKeOpsError(
      () => makeReduction('Max_SumShiftExp_Reduction', f, { tag: 0 }),
      'ERR_FORMULA_DIM',
      /scalar/,
    );
    expectKeOpsError(
      () => makeReduction('Max_SumShiftExpWeight_Reduction', f, { tag: 0, formula2: f }),
      'ERR_FORMULA_DIM',
    );
  });

  it('equal reductions print and hash equal', () => {
    const r1 = makeReduction('ArgKMin_Reduction', f, { tag: 0, k: 2 });
    const r2 = makeReduction('ArgKMin_Reduction', vj(0, 2), { tag: 0, k: 2 });
    expect(r1.equals(r2)).to.equal(true);
    expect(r1.hash).to.equal(r2.hash);
    expect(r1.equals(makeReduction('ArgKMin_Reduction', f, { tag: 1, k: 2 }))).to.equal(false);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Gradients, checked numerically through the reference evaluator.

const M = 3;
const N = 4;
const D = 2;
const x = b.variable(0, D, 0);
const y = b.variable(1, D, 1);
const p = b.variable(2, 1, 2);
const w = b.variable(3, D, 1);

const sqDist = (u: Node, v: Node) => b.sum(b.call('Square', [b.sub(u, v)]));
/** f_ij = -p·|x_i - y_j|² (+ a term linear in y so j-gradients are not symmetric). */
const scalarF = b.add(b.mul(b.neg(p), sqDist(x, y)), b.call('Sum', [b.mul(x, y)]));

interface Point {
  x: Float64Array;
  y: Float64Array;
  p: Float64Array;
  w: Float64Array;
}

function inputsAt(pt: Point, extra: ReferenceInput[] = []): ReferenceInput[] {
  return [
    { data: pt.x, dim: D, cat: 0 },
    { data: pt.y, dim: D, cat: 1 },
    { data: pt.p, dim: 1, cat: 2 },
    { data: pt.w, dim: D, cat: 1 },
    ...extra,
  ];
}

function randomPoint(r: () => number): Point {
  return {
    x: randArray(r, M * D),
    y: randArray(r, N * D),
    p: Float64Array.of(0.7),
    w: randArray(r, N * D, 0.5, 2),
  };
}

/** Central finite differences of `objective` with respect to every entry of pt[key]. */
function numericGradient(pt: Point, key: keyof Point, objective: (q: Point) => number): Float64Array {
  const base = pt[key];
  const out = new Float64Array(base.length);
  for (let k = 0; k < base.length; k++) {
    const h = 1e-6;
    const at = (delta: number) => {
      const moved = Float64Array.from(base);
      moved[k] += delta;
      return objective({ ...pt, [key]: moved });
    };
    out[k] = (at(h) - at(-h)) / (2 * h);
  }
  return out;
}

/** Gradient rows from the gradient reduction, summed over rows for a parameter. */
function symbolicGradient(gradRed: Reduction, inputs: ReferenceInput[], v: Node): Float64Array {
  const raw = referenceReduction(gradRed, inputs);
  if ((v.params[2] as number) !== 2) return raw.val;
  const total = new Float64Array(v.dim);
  for (let row = 0; row < raw.rows; row++)
    for (let k = 0; k < v.dim; k++) total[k] += raw.val[row * v.dim + k];
  return total;
}

describe('reductions: gradients', () => {
  const r = rng(51);

  it('Sum_Reduction: Grad structure and tags follow the variable category', () => {
    const red = makeReduction('Sum_Reduction', b.mul(scalarF, w), { tag: 0 });
    const eta = b.variable(4, D, 0);
    const gx = reductionGradient(red, x, eta);
    expect(gx.def.name).to.equal('Sum_Reduction');
    expect(gx.tag).to.equal(0);
    expect(gx.formula).to.equal(b.grad(red.formula, x, eta));
    expect(reductionGradient(red, y, eta).tag).to.equal(1);
    expect(reductionGradient(red, p, eta).tag).to.equal(0);
    expectKeOpsError(() => reductionGradient(red, x, b.variable(4, 3, 0)), 'ERR_FORMULA_DIM');
    expectKeOpsError(() => reductionGradient(red, b.call('Exp', [x]), eta), 'ERR_INVALID_ARGUMENT');
  });

  for (const tag of [0, 1] as const) {
    it(`Sum_Reduction (tag ${tag}): gradients w.r.t. x, y, p match finite differences`, () => {
      const red = makeReduction('Sum_Reduction', b.mul(b.call('Exp', [scalarF]), w), { tag });
      const rows = tag === 0 ? M : N;
      const pt = randomPoint(r);
      const G = randArray(r, rows * D);
      const eta = b.variable(4, D, tag);
      const objective = (q: Point) => {
        const out = referenceReduction(red, inputsAt(q)).val;
        return out.reduce((s, v, k) => s + v * G[k], 0);
      };
      for (const [v, key] of [
        [x, 'x'],
        [y, 'y'],
        [p, 'p'],
      ] as const) {
        const symbolic = symbolicGradient(
          reductionGradient(red, v, eta),
          inputsAt(pt, [{ data: G, dim: D, cat: tag }]),
          v,
        );
        expectClose(symbolic, numericGradient(pt, key, objective), 1e-6, 1e-8, `d/d${key}`);
      }
    });
  }

  it('Sum_Reduction: reductionDiff matches a finite-difference directional derivative', () => {
    const red = makeReduction('Sum_Reduction', b.mul(b.call('Exp', [scalarF]), w), { tag: 0 });
    const pt = randomPoint(r);
    const U = randArray(r, N * D);
    const u = b.variable(4, D, 1);
    const tangent = referenceReduction(
      reductionDiff(red, y, u),
      inputsAt(pt, [{ data: U, dim: D, cat: 1 }]),
    ).val;
    const h = 1e-6;
    const at = (s: number) =>
      referenceReduction(red, inputsAt({ ...pt, y: pt.y.map((v, k) => v + s * U[k]) })).val;
    const plus = at(h);
    const minus = at(-h);
    expectClose(
      tangent,
      plus.map((v, k) => (v - minus[k]) / (2 * h)),
      1e-6,
      1e-8,
    );
  });

  for (const weighted of [false, true]) {
    const name = weighted ? 'Max_SumShiftExpWeight_Reduction' : 'Max_SumShiftExp_Reduction';
    for (const tag of [0, 1] as const) {
      it(`${name} (tag ${tag}): pseudo-gradient = gradient of m + log s (finite differences)`, () => {
        const red = weighted
          ? makeReduction(name, scalarF, { tag, formula2: w })
          : makeReduction(name, scalarF, { tag });
        const dOut = outputDim(red);
        const dS = dOut - 1;
        const rows = tag === 0 ? M : N;
        const pt = randomPoint(r);
        const G = randArray(r, rows * dS);
        // L = Σ_rows Σ_k G·(m + log s_k)
        const objective = (q: Point) => {
          const raw = referenceReduction(red, inputsAt(q)).val;
          let s = 0;
          for (let row = 0; row < rows; row++) {
            for (let k = 0; k < dS; k++)
              s += G[row * dS + k] * (raw[row * dOut] + Math.log(raw[row * dOut + 1 + k]));
          }
          return s;
        };
        const saved = referenceReduction(red, inputsAt(pt)).val;
        // eta = [∂L/∂m (ignored by the pseudo-gradient: any value), ∂L/∂s_k = G_k / s_k]
        const etaData = new Float64Array(rows * dOut);
        for (let row = 0; row < rows; row++) {
          etaData[row * dOut] = 123.0;
          for (let k = 0; k < dS; k++)
            etaData[row * dOut + 1 + k] = G[row * dS + k] / saved[row * dOut + 1 + k];
        }
        const eta = b.variable(4, dOut, tag);
        const savedVar = b.variable(5, dOut, tag);
        const extra: ReferenceInput[] = [
          { data: etaData, dim: dOut, cat: tag },
          { data: saved, dim: dOut, cat: tag },
        ];
        for (const [v, key] of [[x, 'x'], [y, 'y'], [p, 'p'], ...(weighted ? [[w, 'w']] : [])] as Array<
          [Node, keyof Point]
        >) {
          const gradRed = reductionGradient(red, v, eta, savedVar);
          expect(gradRed.def.name).to.equal('Sum_Reduction');
          const symbolic = symbolicGradient(gradRed, inputsAt(pt, extra), v);
          expectClose(symbolic, numericGradient(pt, key, objective), 1e-6, 1e-7, `d/d${key}`);
        }
        expectKeOpsError(() => reductionGradient(red, x, eta), 'ERR_INVALID_ARGUMENT', /saved/);
      });
    }
  }

  it('Max_SumShiftExp: reductionDiff gives the tangent of s at fixed m (d LSE = ds / s)', () => {
    const red = makeReduction('Max_SumShiftExp_Reduction', scalarF, { tag: 0 });
    const pt = randomPoint(r);
    const U = randArray(r, M * D);
    const saved = referenceReduction(red, inputsAt(pt)).val;
    const u = b.variable(4, D, 0);
    const savedVar = b.variable(5, 2, 0);
    const diffRed = reductionDiff(red, x, u, savedVar);
    const tangent = referenceReduction(
      diffRed,
      inputsAt(pt, [
        { data: U, dim: D, cat: 0 },
        { data: saved, dim: 2, cat: 0 },
      ]),
    ).val;
    const lse = (q: Point) => {
      const raw = referenceReduction(red, inputsAt(q)).val;
      return Array.from({ length: M }, (_, i) => raw[2 * i] + Math.log(raw[2 * i + 1]));
    };
    const h = 1e-6;
    const plus = lse({ ...pt, x: pt.x.map((v, k) => v + h * U[k]) });
    const minus = lse({ ...pt, x: pt.x.map((v, k) => v - h * U[k]) });
    for (let i = 0; i < M; i++) {
      expect(tangent[2 * i]).to.equal(0);
      expectClose([tangent[2 * i + 1] / saved[2 * i + 1]], [(plus[i] - minus[i]) / (2 * h)], 1e-6, 1e-8);
    }
  });

  it('ArgMin/ArgMax/ArgKMin/Zero give Zero_Reduction gradients; the others are not differentiable', () => {
    const f = b.sub(x, y);
    for (const [name, k] of [
      ['ArgMin_Reduction', undefined],
      ['ArgMax_Reduction', undefined],
      ['ArgKMin_Reduction', 2],
      ['Zero_Reduction', undefined],
    ] as const) {
      const red = makeReduction(name, f, { tag: 0, k });
      const eta = b.variable(4, outputDim(red), 0);
      const gy = reductionGradient(red, y, eta);
      expect(gy.toString()).to.equal(`Zero_Reduction(Zero(${D}),1)`);
      expect(reductionGradient(red, p, eta).toString()).to.equal('Zero_Reduction(Zero(1),0)');
      const u = b.variable(5, D, 1);
      expect(reductionDiff(red, y, u).toString()).to.equal(`Zero_Reduction(Zero(${outputDim(red)}),0)`);
    }
    for (const [name, k, hint] of [
      ['Min_Reduction', undefined, /ArgMin/],
      ['Max_Reduction', undefined, /ArgMax/],
      ['Min_ArgMin_Reduction', undefined, /ArgMin/],
      ['Max_ArgMax_Reduction', undefined, /ArgMax/],
      ['KMin_Reduction', 2, /ArgKMin/],
      ['KMin_ArgKMin_Reduction', 2, /ArgKMin/],
    ] as const) {
      const red = makeReduction(name, f, { tag: 0, k });
      const eta = b.variable(4, outputDim(red), 0);
      expectKeOpsError(() => reductionGradient(red, x, eta), 'ERR_NOT_DIFFERENTIABLE', hint);
      expectKeOpsError(() => reductionDiff(red, x, b.variable(5, D, 0)), 'ERR_NOT_DIFFERENTIABLE', hint);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// The C++ hooks, compiled with g++ and run on the same data as the reference hooks.

interface CppCase {
  red: Reduction;
  rows: Rows;
  /** Block boundaries (j) and the order in which the block accumulators are merged. */
  bounds: number[];
  mergeOrder: number[];
}

function emitContext(red: Reduction, T: string, counter: { n: number }): ReductionEmitContext {
  return {
    red,
    T,
    lit: (v) => `((${T})(${typeof v === 'number' ? v : Number(v.p) / Number(v.q)}))`,
    fresh: (hint) => `${hint}_${counter.n++}`,
  };
}

function cppProgram(cases: CppCase[], T: string): string {
  const counter = { n: 0 };
  const fmt = (v: number) =>
    `(${T})` +
    (Number.isFinite(v) ? `(${v})` : Number.isNaN(v) ? '(0.0/0.0)' : v > 0 ? '(1.0/0.0)' : '(-1.0/0.0)');
  const body = cases.map((c, n) => {
    const { red } = c;
    const ctx = emitContext(red, T, counter);
    const L = red.layout;
    const df = red.fout.dim;
    const data = c.rows.flatMap((row) => Array.from(row, fmt));
    const decl = (v: string, i: string) =>
      `${T} ${v}[${Math.max(1, L.dimredVal)}]; int ${i}[${Math.max(1, L.dimredIdx)}];`;
    const blocks = c.bounds.slice(0, -1).map((s, k) => {
      const e = c.bounds[k + 1];
      return `${decl(`bv${k}`, `bi${k}`)} ${red.def.emitInit(ctx, `bv${k}`, `bi${k}`)}
        for (long j = ${s}; j < ${e}; j++) { const ${T}* fo = F${n} + j * ${df}; ${red.def.emitFold(ctx, `bv${k}`, `bi${k}`, 'fo', 'j')} }`;
    });
    const [first, ...rest] = c.mergeOrder;
    return `{
      static const ${T} F${n}[${Math.max(1, data.length)}] = { ${data.length > 0 ? data.join(', ') : '0'} };
      ${decl('val', 'idx')} ${red.def.emitInit(ctx, 'val', 'idx')}
      for (long j = 0; j < ${c.rows.length}; j++) { const ${T}* fo = F${n} + j * ${df}; ${red.def.emitFold(ctx, 'val', 'idx', 'fo', 'j')} }
      ${T} ov[${Math.max(1, L.dimVal)}] = {0}; int oi[${Math.max(1, L.dimIdx)}] = {0};
      ${red.def.emitFinalize(ctx, 'val', 'idx', 'ov', 'oi')}
      print_out(ov, ${L.dimVal}, oi, ${L.dimIdx});
      ${blocks.join('\n')}
      ${rest.map((k) => red.def.emitMerge(ctx, `bv${first}`, `bi${first}`, `bv${k}`, `bi${k}`)).join('\n')}
      ${red.def.emitFinalize(ctx, `bv${first}`, `bi${first}`, 'ov', 'oi')}
      print_out(ov, ${L.dimVal}, oi, ${L.dimIdx});
    }`;
  });
  return `#include <stdio.h>
#include "keops_prelude.h"
template <typename T> static void print_out(const T* v, int nv, const int* id, int ni) {
  for (int k = 0; k < nv; k++) printf("%.17g ", (double)v[k]);
  printf("| ");
  for (int k = 0; k < ni; k++) printf("%d ", id[k]);
  printf("\\n");
}
int main() {
${body.join('\n')}
  return 0;
}
`;
}

function parseLine(line: string): { val: number[]; idx: number[] } {
  const [v, i] = line.split('|');
  const num = (s: string) =>
    s === 'inf' ? Infinity : s === '-inf' ? -Infinity : /nan/.test(s) ? NaN : Number(s);
  return {
    val: v.trim() === '' ? [] : v.trim().split(/\s+/).map(num),
    idx: i.trim() === '' ? [] : i.trim().split(/\s+/).map(Number),
  };
}

function hasGpp(): boolean {
  try {
    execFileSync('g++', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('reductions: C++ hooks (g++) agree with the reference hooks', function () {
  this.timeout(60000);
  const r = rng(61);
  const cases: CppCase[] = [];
  const add = (red: Reduction, rows: Rows) => {
    for (let t = 0; t < 2; t++) {
      const cuts = new Set([
        0,
        rows.length,
        ...Array.from({ length: 3 }, () => Math.floor(r() * (rows.length + 1))),
      ]);
      const bounds = [...cuts].sort((a, c) => a - c);
      const order = Array.from({ length: bounds.length - 1 }, (_, k) => k).sort(() => r() - 0.5);
      cases.push({ red, rows, bounds, mergeOrder: order });
    }
  };
  const tieRows = (n: number, dim: number) => randomRows(r, n, dim, 1);
  add(makeReduction('Sum_Reduction', vj(0, 3), { tag: 0 }), randomRows(r, 17, 3));
  add(
    makeReduction('Max_SumShiftExp_Reduction', vj(0, 1), { tag: 0 }),
    randomRows(r, 17, 1).map((f) => f.map((v) => 400 * v)),
  );
  add(makeReduction('Max_SumShiftExp_Reduction', vj(0, 1), { tag: 0 }), [
    Float64Array.of(-Infinity),
    Float64Array.of(-Infinity),
    Float64Array.of(-Infinity),
  ]);
  add(makeReduction('Max_SumShiftExp_Reduction', vj(0, 1), { tag: 0 }), [
    Float64Array.of(-Infinity),
    Float64Array.of(1.5),
    Float64Array.of(-Infinity),
    Float64Array.of(0.25),
  ]);
  add(
    makeReduction('Max_SumShiftExpWeight_Reduction', vj(0, 1), { tag: 0, formula2: vj(1, 2) }),
    randomRows(r, 17, 3),
  );
  for (const name of ['Min', 'Max', 'ArgMin', 'ArgMax', 'Min_ArgMin', 'Max_ArgMax']) {
    add(makeReduction(`${name}_Reduction`, vj(0, 2), { tag: 0 }), tieRows(19, 2));
  }
  for (const name of ['KMin', 'ArgKMin', 'KMin_ArgKMin']) {
    add(makeReduction(`${name}_Reduction`, vj(0, 2), { tag: 0, k: 3 }), tieRows(19, 2));
  }
  add(makeReduction('KMin_ArgKMin_Reduction', vj(0, 1), { tag: 0, k: 5 }), tieRows(3, 1));
  add(makeReduction('Zero_Reduction', vj(0, 2), { tag: 0 }), tieRows(4, 2));

  for (const T of ['double', 'float']) {
    it(`${T}: one pass and split + merged passes match the reference hooks`, function () {
      if (!hasGpp()) this.skip();
      const dir = mkdtempSync(join(tmpdir(), 'keops-red-'));
      try {
        const src = join(dir, 'red.cpp');
        writeFileSync(src, cppProgram(cases, T));
        const exe = join(dir, 'red');
        execFileSync(
          'g++',
          [
            '-O0',
            '-std=c++17',
            '-Wall',
            '-Werror',
            '-Wno-unused-variable',
            '-Wno-unused-but-set-variable',
            '-I',
            join(__dirname, '..', 'cuda-templates'),
            src,
            '-o',
            exe,
          ],
          {
            stdio: ['ignore', 'ignore', 'pipe'],
          },
        );
        const lines = execFileSync(exe, { encoding: 'utf8' }).trim().split('\n');
        expect(lines.length).to.equal(2 * cases.length);
        const tol = T === 'double' ? 1e-12 : 1e-5;
        cases.forEach((c, n) => {
          // The float program reads float-rounded data: compare with the reference on the same data.
          const rows = T === 'double' ? c.rows : c.rows.map((row) => row.map(Math.fround));
          const expected = onePass(c.red, rows);
          for (const line of [lines[2 * n], lines[2 * n + 1]]) {
            const got = parseLine(line);
            const what = `${c.red} (${T})`;
            if (c.red.def.sumType) expectClose(got.val, expected.val, tol, tol, what);
            else expectClose(got.val, expected.val, 0, 0, what);
            expect(got.idx, what).to.deep.equal(Array.from(expected.idx));
          }
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

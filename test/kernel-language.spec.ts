/**
 * The high-level kernel language: parsing (structure, errors with positions, limits), lowering to formula nodes
 * checked against hand-written KeOps 1.x definitions (test/kernel-oracle.ts) in both domains, symbolic
 * gradients against finite differences, and fuzzing in the style of test/fuzz.spec.ts.
 */
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import { builder as b } from '../lib/formula/builder';
import { varsOf } from '../lib/formula/diff';
import type { Node } from '../lib/formula/node';
import { ratToNumber } from '../lib/formula/rational';
import {
  KERNEL_ATOMS,
  type KernelExpression,
  type KernelTerm,
  MAX_KERNEL_LENGTH,
  MAX_KERNEL_NESTING,
  parseKernel,
} from '../lib/kernels/language';
import { NODE_ALGEBRA } from '../lib/kernels/product';
import { ATOM, ATOM_LOG, spdMatrix, type Vec } from './kernel-oracle';
import { checkGradient, evalWith, expectClose, expectKeOpsError, randArray, rng } from './util';

const D = 3;

/** Lowers `k` with x_p = Var(2p,D,0), y_p = Var(2p+1,D,1) and scale a = Var(100+a, dims[a], 2). */
function lowerWith(
  k: KernelExpression,
  scaleDims: readonly (number | undefined)[],
  domain: 'sum' | 'log' = 'sum',
) {
  const pairs = k.pairs.map((_, p) => ({ x: b.variable(2 * p, D, 0), y: b.variable(2 * p + 1, D, 1) }));
  const scales = scaleDims.map((dim, a) => (dim === undefined ? undefined : b.variable(100 + a, dim, 2)));
  const node = k.lower(NODE_ALGEBRA, { pair: (p) => pairs[p], scale: (a) => scales[a] }, domain);
  return { node, pairs, scales };
}

/** Scale dims for every atom: none for linear, else 1, D or D² in turn. */
const scaleDimsOf = (k: KernelExpression, r: () => number): (number | undefined)[] =>
  k.atoms.map((a) => (a.name === 'linear' ? undefined : [1, D, D * D][Math.floor(r() * 3)]));

/** Random values: points in [-1,1], scales positive (a full matrix symmetric positive definite). */
function pointFor(lowered: ReturnType<typeof lowerWith>, r: () => number) {
  const values = new Map<Node, Float64Array>();
  const vecs: { xs: Float64Array[]; ys: Float64Array[]; gs: (Float64Array | undefined)[] } = {
    xs: [],
    ys: [],
    gs: [],
  };
  for (const { x, y } of lowered.pairs) {
    const xv = randArray(r, D);
    const yv = randArray(r, D);
    values.set(x, xv);
    values.set(y, yv);
    vecs.xs.push(xv);
    vecs.ys.push(yv);
  }
  for (const g of lowered.scales) {
    if (g === undefined) {
      vecs.gs.push(undefined);
      continue;
    }
    const gv = g.dim === D * D ? spdMatrix(r, D) : randArray(r, g.dim, 0.2, 1.5);
    values.set(g, gv);
    vecs.gs.push(gv);
  }
  return { values, ...vecs };
}

/** Direct numeric evaluation of the syntax tree with the oracle atoms: an implementation independent of lower(). */
function oracle(k: KernelExpression, t: KernelTerm, p: ReturnType<typeof pointFor>): number {
  switch (t.kind) {
    case 'atom': {
      const a = k.atoms[t.atom];
      return ATOM[a.name](p.gs[t.atom] as Vec, p.xs[a.pair], p.ys[a.pair]);
    }
    case 'constant':
      return ratToNumber(t.value);
    case 'power':
      return oracle(k, t.base, p) ** t.exponent;
    case 'sum':
      return t.terms.reduce((s, u) => s + oracle(k, u, p), 0);
    case 'product':
      return t.terms.reduce((s, u) => s * oracle(k, u, p), 1);
  }
}

describe('kernel language: parsing', () => {
  it('reads atoms, pairs (in order of first appearance) and one scale slot per atom, as KeOps 1.x', () => {
    const k = parseKernel('cauchy(x,y) + gaussian(x,y) * (1 + cauchy(u,v)**2)');
    expect(k.pairs).to.deep.equal([
      { x: 'x', y: 'y' },
      { x: 'u', y: 'v' },
    ]);
    expect(k.atoms.map((a) => [a.name, a.pair, a.pos])).to.deep.equal([
      ['cauchy', 0, 0],
      ['gaussian', 0, 14],
      ['cauchy', 1, 35],
    ]);
    expect(k.toString()).to.equal('cauchy(x,y) + gaussian(x,y) * (1 + cauchy(u,v)**2)');
  });

  it('follows Python precedence: ** over * over +; constants may be decimals', () => {
    const k = parseKernel('2*linear(x,y)**3 + 0.5');
    expect(k.toString()).to.equal('2 * linear(x,y)**3 + 0.5');
    expect(parseKernel('((linear(x,y)**2)**3 * (2 + .5e1))').toString()).to.equal(
      '(linear(x,y)**2)**3 * (2 + 5)',
    );
    expect(parseKernel(k.toString()).toString()).to.equal(k.toString());
    expect(parseKernel('  distance( x , y )').toString()).to.equal('distance(x,y)');
  });

  it('rejects bad kernels with a typed error at the right position', () => {
    const cases: Array<[string, string, number, string]> = [
      ['gausian(x,y)', 'ERR_FORMULA_NAME', 0, 'did you mean gaussian'],
      ['gaussian(x,y) - 1', 'ERR_FORMULA_SYNTAX', 14, "'-' is not part of the kernel language"],
      ['gaussian(x,y) / 2', 'ERR_FORMULA_SYNTAX', 14, "'/' is not part"],
      ['-gaussian(x,y)', 'ERR_FORMULA_SYNTAX', 0, 'negative terms'],
      ['gaussian(x,y) + cauchy(y,z)', 'ERR_FORMULA_NAME', 23, "'y' already belongs to the pair (x,y)"],
      ['gaussian(x,y) + cauchy(y,x)', 'ERR_FORMULA_NAME', 23, 'already belongs'],
      ['gaussian(x,x)', 'ERR_FORMULA_NAME', 11, 'must differ'],
      ['gaussian(x,y', 'ERR_FORMULA_SYNTAX', 0, 'never closed'],
      ['(gaussian(x,y)', 'ERR_FORMULA_SYNTAX', 0, "'(' is never closed"],
      ['gaussian(x,y))', 'ERR_FORMULA_SYNTAX', 13, "unmatched ')'"],
      ['gaussian(x,y,g)', 'ERR_FORMULA_ARITY', 12, 'scale'],
      ['gaussian(x)', 'ERR_FORMULA_SYNTAX', 10, "expected ','"],
      ['gaussian(1,y)', 'ERR_FORMULA_SYNTAX', 9, 'variable name'],
      ['gaussian(linear,y)', 'ERR_FORMULA_NAME', 9, 'is a kernel'],
      ['linear(x,y)**x', 'ERR_FORMULA_PARAM', 13, 'non-negative integer'],
      ['linear(x,y)**0.5', 'ERR_FORMULA_PARAM', 13, 'non-negative integer'],
      ['linear(x,y)**2**2', 'ERR_FORMULA_SYNTAX', 14, 'chained powers'],
      ['linear(x,y)**99999999999', 'ERR_FORMULA_PARAM', 13, 'too large'],
      ['linear(x,y) linear(u,v)', 'ERR_FORMULA_SYNTAX', 12, 'operator'],
      ['2 + 3', 'ERR_FORMULA_SYNTAX', 0, 'at least one atom'],
      ['', 'ERR_FORMULA_SYNTAX', 0, 'empty kernel'],
      ['gaussian(x,y) ^ 2', 'ERR_FORMULA_SYNTAX', 14, '**'],
      ['gaussian(x,y) + ', 'ERR_FORMULA_SYNTAX', 16, 'expected an atom'],
      ['1e999 * linear(x,y)', 'ERR_FORMULA_PARAM', 0, 'out of range'],
    ];
    for (const [text, code, pos, mention] of cases) {
      const e = expectKeOpsError(() => parseKernel(text), code as never, mention);
      expect(e.position, text).to.equal(pos);
    }
  });

  it('bounds the length and the nesting', () => {
    expectKeOpsError(
      () => parseKernel('('.repeat(MAX_KERNEL_NESTING + 1)),
      'ERR_FORMULA_TOO_LARGE',
      'nested',
    );
    const deep = `${'('.repeat(MAX_KERNEL_NESTING)}linear(x,y)${')'.repeat(MAX_KERNEL_NESTING)}`;
    expect(parseKernel(deep).atoms).to.have.length(1);
    expectKeOpsError(
      () => parseKernel('1+'.repeat(MAX_KERNEL_LENGTH)),
      'ERR_FORMULA_TOO_LARGE',
      'characters',
    );
    expectKeOpsError(() => parseKernel(42 as unknown as string), 'ERR_INVALID_ARGUMENT', 'string');
  });
});

describe('kernel language: lowering', () => {
  it('defines every atom as KeOps 1.x, for scalar, diagonal and full-matrix scales, in both domains', () => {
    const r = rng(1);
    for (const name of KERNEL_ATOMS.keys()) {
      for (const dim of name === 'linear' ? [undefined] : [1, D, D * D]) {
        const k = parseKernel(`${name}(x,y)`);
        const sum = lowerWith(k, [dim]);
        const log = lowerWith(k, [dim], 'log');
        for (let t = 0; t < 5; t++) {
          const p = pointFor(sum, r);
          const what = `${name} with a scale of dim ${dim}`;
          expectClose(
            evalWith(sum.node, p.values),
            [ATOM[name](p.gs[0] as Vec, p.xs[0], p.ys[0])],
            1e-13,
            0,
            what,
          );
          expectClose(
            evalWith(log.node, p.values),
            [ATOM_LOG[name](p.gs[0] as Vec, p.xs[0], p.ys[0])],
            1e-13,
            0,
            what,
          );
        }
      }
    }
  });

  it('lowers composite kernels to the oracle, the log form to the log of the kernel, gradients exact', () => {
    const r = rng(2);
    const texts = [
      'gaussian(x,y) * (1 + linear(u,v)**2)',
      'cauchy(x,y) + gaussian(x,y) * (1 + cauchy(u,v)**2)',
      '2*laplacian(x,y)**3 + 0.25*inverse_multiquadric(u,v)',
      'distance(x,y) * linear(u,v)**0 + 1',
    ];
    for (const text of texts) {
      const k = parseKernel(text);
      const dims = scaleDimsOf(k, r);
      const sum = lowerWith(k, dims);
      const log = lowerWith(k, dims, 'log');
      for (let t = 0; t < 4; t++) {
        const p = pointFor(sum, r);
        const expected = oracle(k, k.root, p);
        expectClose(evalWith(sum.node, p.values), [expected], 1e-13, 0, text);
        if (!text.includes('linear') && !text.includes('distance')) {
          expectClose(evalWith(log.node, p.values), [Math.log(expected)], 1e-12, 1e-14, `log ${text}`);
        }
        for (const v of varsOf(sum.node)) checkGradient(sum.node, v, p.values, r, 1e-6);
      }
    }
  });

  it('keeps KeOps 1.x convention d√u/du = 0 at u = 0: laplacian and distance gradients are finite where x = y', () => {
    for (const name of ['laplacian', 'distance']) {
      const { node, pairs, scales } = lowerWith(parseKernel(`${name}(x,y)`), [1]);
      const point = Float64Array.of(0.3, -0.2, 0.5);
      const values = new Map([
        [pairs[0].x, point],
        [pairs[0].y, point],
        [scales[0] as Node, Float64Array.of(2)],
      ]);
      const gradient = b.grad(node, pairs[0].x, b.variable(200, 1, 0));
      values.set(b.variable(200, 1, 0), Float64Array.of(1));
      expect(Array.from(evalWith(gradient, values), Math.abs), name).to.deep.equal([0, 0, 0]);
    }
  });

  it('positions dimension errors at the atom', () => {
    const k = parseKernel('linear(u,v) + gaussian(x,y)');
    const e = expectKeOpsError(() => lowerWith(k, [undefined, 2]), 'ERR_FORMULA_DIM', 'gaussian(x,y)', 'dim');
    expect(e.position).to.equal(14);
    expectKeOpsError(() => lowerWith(k, [undefined, undefined]), 'ERR_INVALID_ARGUMENT', 'needs a scale');
    expectKeOpsError(() => lowerWith(k, [1, 1]), 'ERR_INVALID_ARGUMENT', 'takes no scale');
  });
});

// ---- fuzzing ------------------------------------------------------------------------------------------------

const ATOM_NAMES = [...KERNEL_ATOMS.keys()];
const PIECES = [
  ...ATOM_NAMES,
  'x',
  'y',
  'u',
  'v',
  '(',
  ')',
  ',',
  '+',
  '*',
  '**',
  '-',
  '/',
  '2',
  '0.5',
  '1e-3',
  ' ',
  '^',
  '%',
  '$',
  'é',
  '"',
  '\\',
  '[',
  'gaussian(x,y)',
  'linear(u,v)',
];
const MAX_MS_PER_INPUT = 2000;

function picker(r: () => number) {
  return <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
}

function grammarKernel(r: () => number, depth: number): string {
  const pick = picker(r);
  if (depth <= 0 || r() < 0.3) {
    if (r() < 0.2) return pick(['1', '2', '0.5', '3']);
    const [x, y] = pick([
      ['x', 'y'],
      ['u', 'v'],
    ]);
    return `${pick(ATOM_NAMES)}(${x},${y})`;
  }
  const u = r();
  if (u < 0.4) return `${grammarKernel(r, depth - 1)} + ${grammarKernel(r, depth - 1)}`;
  if (u < 0.8) return `${grammarKernel(r, depth - 1)} * ${grammarKernel(r, depth - 1)}`;
  if (u < 0.9) return `(${grammarKernel(r, depth - 1)})**${Math.floor(r() * 4)}`;
  return `(${grammarKernel(r, depth - 1)})`;
}

function mutate(text: string, r: () => number): string {
  const pick = picker(r);
  let t = text;
  for (let m = 0; m < 1 + Math.floor(r() * 3); m++) {
    const at = Math.floor(r() * (t.length + 1));
    const u = r();
    if (u < 0.4) t = t.slice(0, at) + pick(PIECES) + t.slice(at);
    else if (u < 0.7) t = t.slice(0, at) + t.slice(at + 1 + Math.floor(r() * 3));
    else t = t.slice(0, at);
  }
  return t;
}

/** Parses, round-trips, lowers in both domains, evaluates against the oracle and differentiates: only KeOpsErrors. */
function exercise(text: string, r: () => number, failures: string[]): boolean {
  const start = performance.now();
  let ok = false;
  try {
    const k = parseKernel(text);
    // Number spellings may grow (1e-9 prints as 0.000000001): round-trip what stays within the length limit.
    if (k.toString().length <= MAX_KERNEL_LENGTH && parseKernel(k.toString()).toString() !== k.toString()) {
      failures.push(`round trip of ${JSON.stringify(text)}`);
    }
    const dims = scaleDimsOf(k, r);
    const sum = lowerWith(k, dims);
    lowerWith(k, dims, 'log');
    const p = pointFor(sum, r);
    const got = evalWith(sum.node, p.values)[0];
    const expected = oracle(k, k.root, p);
    if (Number.isFinite(expected) && !(Math.abs(got - expected) <= 1e-9 * Math.max(1, Math.abs(expected)))) {
      failures.push(`value of ${JSON.stringify(text)}: ${got} vs ${expected}`);
    }
    const vars = [...varsOf(sum.node)];
    if (vars.length > 0 && sum.node.treeSize < 5000) b.grad(sum.node, vars[0], b.variable(200, 1, 0));
    ok = true;
  } catch (e) {
    if (!(e instanceof KeOpsError)) failures.push(`non-KeOpsError for ${JSON.stringify(text)}: ${String(e)}`);
    else if (e.code === 'ERR_INTERNAL')
      failures.push(`ERR_INTERNAL for ${JSON.stringify(text)}: ${e.message}`);
    else if (
      e.code.startsWith('ERR_FORMULA_') &&
      e.code !== 'ERR_FORMULA_TOO_LARGE' &&
      e.position === undefined
    ) {
      failures.push(`${e.code} without a position for ${JSON.stringify(text)}`);
    }
  }
  const elapsed = performance.now() - start;
  if (elapsed > MAX_MS_PER_INPUT)
    failures.push(`${elapsed.toFixed(0)} ms for ${JSON.stringify(text.slice(0, 100))}`);
  return ok;
}

describe('kernel language: fuzzing', function () {
  this.timeout(60_000);

  it('survives 2,000 random token soups', () => {
    const r = rng(21);
    const pick = picker(r);
    const failures: string[] = [];
    for (let n = 0; n < 2000; n++) {
      const length = 1 + Math.floor(r() * 15);
      exercise(Array.from({ length }, () => pick(PIECES)).join(''), r, failures);
    }
    expect(failures.slice(0, 10)).to.deep.equal([]);
  });

  it('evaluates 1,500 grammar-generated kernels like the oracle, and survives their mutations', () => {
    const r = rng(22);
    const failures: string[] = [];
    let ok = 0;
    for (let n = 0; n < 1500; n++) {
      const text = grammarKernel(r, 1 + Math.floor(r() * 4));
      if (exercise(text, r, failures)) ok++;
      exercise(mutate(text, r), r, failures);
    }
    expect(failures.slice(0, 10)).to.deep.equal([]);
    expect(ok).to.be.above(1000);
  });

  it('survives deep and long inputs quickly', () => {
    const r = rng(23);
    const failures: string[] = [];
    for (const levels of [10, 99, 100, 101, 5000]) {
      exercise(`${'('.repeat(levels)}gaussian(x,y)${')'.repeat(levels)}`, r, failures);
      exercise(`${'('.repeat(levels)}gaussian(x,y)`, r, failures);
    }
    // Long sums and products (just under the length limit) parse, lower with a shallow tree and evaluate.
    expect(exercise(Array.from({ length: 700 }, () => 'linear(x,y)').join('+'), r, failures)).to.equal(true);
    expect(exercise(Array.from({ length: 600 }, () => 'cauchy(u,v)**3').join('*'), r, failures)).to.equal(
      true,
    );
    exercise('gaussian(x,y)'.padEnd(MAX_KERNEL_LENGTH + 1, ' '), r, failures);
    expect(failures).to.deep.equal([]);
  });
});

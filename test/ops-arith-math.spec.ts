/** Arithmetic (1.5 a) and math (1.5 b) operations: dims, reference values, special values, gradients, C++. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { builder as b } from '../lib/formula/builder';
import { intern, type Node, type ParamValue } from '../lib/formula/node';
import type { EmitContext } from '../lib/formula/opdef';
import { type Rational, ratToNumber } from '../lib/formula/rational';
import { OPS } from '../lib/formula/registry';
import { checkGradient, evalWith, expectClose, expectKeOpsError, randArray, rng } from './util';

type Range = readonly [number, number];

interface OpCase {
  op: string;
  arity: number;
  params?: readonly ParamValue[];
  /** Direct Math computation of one component. */
  ref: (...x: number[]) => number;
  /** Sampling interval of each child (default [-1, 1]), chosen away from poles and outside domains. */
  domain?: readonly Range[];
  /** Children whose gradient is checked by finite differences; the others must get a zero gradient. */
  grad?: readonly boolean[];
  /** Relative and absolute tolerance against `ref` (default 1e-13, 1e-15). */
  tol?: readonly [number, number];
}

const POS: Range = [0.2, 2];
const UNIT: Range = [-0.9, 0.9];
const WIDE: Range = [-3, 3];

/** C round(), written independently of the implementation (fine away from the 0.49999999999999994 case). */
const cRound = (x: number): number => Math.sign(x) * Math.floor(Math.abs(x) + 0.5);

const CASES: readonly OpCase[] = [
  { op: 'Add', arity: 2, ref: (x, y) => x + y, grad: [true, true] },
  { op: 'Subtract', arity: 2, ref: (x, y) => x - y, grad: [true, true] },
  { op: 'Minus', arity: 1, ref: (x) => -x, grad: [true] },
  { op: 'Mult', arity: 2, ref: (x, y) => x * y, grad: [true, true] },
  { op: 'Divide', arity: 2, ref: (x, y) => x / y, domain: [WIDE, POS], grad: [true, true] },
  { op: 'Inv', arity: 1, ref: (x) => 1 / x, domain: [POS], grad: [true] },
  { op: 'Square', arity: 1, ref: (x) => x * x, grad: [true] },
  ...[-3, -1, 0, 1, 2, 3, 5].map((m): OpCase => ({
    op: 'Pow',
    arity: 1,
    params: [m],
    ref: (x) => x ** m,
    domain: [POS],
    grad: [true],
  })),
  {
    op: 'Powf',
    arity: 2,
    ref: (x, y) => Math.exp(y * Math.log(x)),
    domain: [POS, [-2, 2]],
    grad: [true, true],
  },
  { op: 'Sqrt', arity: 1, ref: Math.sqrt, domain: [POS], grad: [true] },
  { op: 'Rsqrt', arity: 1, ref: (x) => Math.sqrt(1 / x), domain: [POS], grad: [true] },
  { op: 'Exp', arity: 1, ref: Math.exp, grad: [true] },
  { op: 'Log', arity: 1, ref: Math.log, domain: [POS], grad: [true] },
  { op: 'XLogX', arity: 1, ref: (x) => x * Math.log(x), domain: [POS], grad: [true] },
  { op: 'Sin', arity: 1, ref: Math.sin, domain: [WIDE], grad: [true] },
  { op: 'Cos', arity: 1, ref: Math.cos, domain: [WIDE], grad: [true] },
  { op: 'SinXDivX', arity: 1, ref: (x) => Math.sin(x) / x, domain: [WIDE], grad: [true] },
  { op: 'Asin', arity: 1, ref: Math.asin, domain: [UNIT], grad: [true] },
  { op: 'Acos', arity: 1, ref: Math.acos, domain: [UNIT], grad: [true] },
  { op: 'Atan', arity: 1, ref: Math.atan, domain: [WIDE], grad: [true] },
  { op: 'Atan2', arity: 2, ref: Math.atan2, domain: [WIDE, WIDE], grad: [true, true] },
  { op: 'Abs', arity: 1, ref: Math.abs, grad: [true] },
  { op: 'Sign', arity: 1, ref: Math.sign },
  { op: 'Step', arity: 1, ref: (x) => (x < 0 ? 0 : 1) },
  { op: 'ReLU', arity: 1, ref: (x) => Math.max(x, 0), grad: [true] },
  { op: 'Floor', arity: 1, ref: Math.floor, domain: [WIDE] },
  ...[0, 1, 2, -1, -2].map((d): OpCase => ({
    op: 'Round',
    arity: 1,
    params: [d],
    ref: (x) => cRound(x * 10 ** d) / 10 ** d,
    domain: [[-300, 300]],
  })),
  {
    op: 'Mod',
    arity: 3,
    ref: (f, n, o) => o + ((((f - o) % n) + n) % n),
    domain: [WIDE, [0.5, 2], [-1, 1]],
    grad: [true, true, false],
    tol: [1e-12, 1e-14],
  },
  {
    op: 'Clamp',
    arity: 3,
    ref: (f, a, c) => Math.min(Math.max(f, a), c),
    domain: [
      [-2, 2],
      [-1, -0.2],
      [0.2, 1],
    ],
    grad: [true, true, true],
  },
  {
    op: 'ClampInt',
    arity: 1,
    params: [-1, 1],
    ref: (x) => Math.min(Math.max(x, -1), 1),
    domain: [WIDE],
    grad: [true],
  },
  {
    op: 'ClampInt',
    arity: 1,
    params: [0, 2],
    ref: (x) => Math.min(Math.max(x, 0), 2),
    domain: [WIDE],
    grad: [true],
  },
  { op: 'DiffClampInt', arity: 1, params: [-1, 1], ref: (x) => (Math.abs(x) <= 1 ? 1 : 0), domain: [WIDE] },
  { op: 'IfElse', arity: 3, ref: (f, a, c) => (f < 0 ? c : a), grad: [false, true, true] },
  { op: 'Equal', arity: 2, ref: (x, y) => Number(x === y) },
  { op: 'NotEqual', arity: 2, ref: (x, y) => Number(x !== y) },
  { op: 'LessThan', arity: 2, ref: (x, y) => Number(x < y) },
  { op: 'LessOrEqual', arity: 2, ref: (x, y) => Number(!(x > y)) },
];

const D = 3;
const caseName = (c: OpCase): string => (c.params ? `${c.op}(${c.params.join(',')})` : c.op);

/** Children dims to test: all D, then (for several children) each child in turn a broadcast scalar. */
function dimConfigs(arity: number): number[][] {
  const configs = [new Array<number>(arity).fill(D)];
  if (arity > 1) for (let k = 0; k < arity; k++) configs.push(configs[0].map((d, j) => (j === k ? 1 : d)));
  return configs;
}

/** Variables of the given dims (positions 0, 1, 2...; categories i, j, parameter in turn). */
const varsFor = (dims: readonly number[]): Node[] => dims.map((d, k) => b.variable(k, d, k % 3));

function samplePoint(c: OpCase, vars: readonly Node[], r: () => number): Map<Node, Float64Array> {
  return new Map(
    vars.map((v, k) => {
      const [lo, hi] = c.domain?.[k] ?? [-1, 1];
      return [v, randArray(r, v.dim, lo, hi)];
    }),
  );
}

const evalOne = (op: string, args: readonly number[][], params: readonly ParamValue[] = []): Float64Array => {
  const vars = varsFor(args.map((a) => a.length));
  const f = b.call(op, vars, params);
  return evalWith(f, new Map(vars.map((v, k) => [v, Float64Array.from(args[k])])));
};

/** The node of exactly this op (no simplification rule applied), to test its own emission. */
function rawNode(name: string, children: readonly Node[], params: readonly ParamValue[] = []): Node {
  const op = OPS.get(name);
  if (op === undefined) throw new Error(`no op ${name}`);
  const dims = children.map((c) => c.dim);
  return intern(op, children, params, op.dim(dims, params));
}

/** A finite number as a C++ double literal (exact), converted to T. */
const cppLiteral = (v: number): string => `T(${v.toExponential()})`;

/** An EmitContext for tests: literals are `T(value)`, fresh names `_hint0`, `_hint1`... */
function testEmitContext(
  node: Node,
  out: string,
  args: readonly string[],
): EmitContext & { freshNames: string[] } {
  const freshNames: string[] = [];
  return {
    node,
    out,
    args,
    argDims: node.children.map((c) => c.dim),
    dim: node.dim,
    params: node.params,
    T: 'T',
    lit: (v: number | Rational) => cppLiteral(typeof v === 'number' ? v : ratToNumber(v)),
    fresh: (hint: string) => {
      const name = `_${hint}${freshNames.length}`;
      freshNames.push(name);
      return name;
    },
    freshNames,
  };
}

/** Functions the emitted C++ may call: the prelude's, and nothing else. */
const PRELUDE_FUNCTIONS = (() => {
  const text = readFileSync(join(__dirname, '..', 'cuda-templates', 'keops_prelude.h'), 'utf8');
  return new Set(text.match(/\bkeops_\w+(?=\s*[(<])/g) ?? []);
})();
const CPP_WORDS = new Set(['for', 'int']);

/** A number as printf("%g") writes it (inf, -inf, nan, -nan included). */
function parseCNumber(text: string): number {
  const unsigned = text.replace(/^-/, '');
  const sign = text.startsWith('-') ? -1 : 1;
  if (unsigned === 'inf') return sign * Infinity;
  if (unsigned === 'nan') return NaN;
  return Number(text);
}

describe('arithmetic and math operations (1.5 a, b)', () => {
  describe('dimension rules', () => {
    for (const c of CASES) {
      it(`${caseName(c)}: dim D, broadcast {1, D}, error on {2, 3}`, () => {
        for (const dims of dimConfigs(c.arity)) {
          expect(b.call(c.op, varsFor(dims), c.params).dim, `dims ${dims}`).to.equal(D);
        }
        expect(b.call(c.op, varsFor(new Array<number>(c.arity).fill(1)), c.params).dim).to.equal(1);
        if (c.arity > 1) {
          for (let k = 0; k < c.arity; k++) {
            const dims = new Array<number>(c.arity).fill(3).map((d, j) => (j === k ? 2 : d));
            expectKeOpsError(() => b.call(c.op, varsFor(dims), c.params), 'ERR_FORMULA_DIM', c.op, '2', '3');
          }
        }
      });
    }

    it('Scalprod: dim 1; equal dims or a scalar side; clear error otherwise', () => {
      expect(b.call('Scalprod', varsFor([3, 3])).dim).to.equal(1);
      expect(b.call('Scalprod', varsFor([1, 4])).dim).to.equal(1);
      expect(b.call('Scalprod', varsFor([4, 1])).dim).to.equal(1);
      expect(b.call('Scalprod', varsFor([1, 1])).dim).to.equal(1);
      expectKeOpsError(() => b.call('Scalprod', varsFor([2, 3])), 'ERR_FORMULA_DIM', 'Scalprod', '2', '3');
    });

    it('rejects bad arities and parameters with KeOpsErrors', () => {
      const [x, y] = varsFor([3, 3]);
      expectKeOpsError(() => b.call('Exp', [x, y]), 'ERR_FORMULA_ARITY', 'Exp');
      expectKeOpsError(() => b.call('Clamp', [x, y]), 'ERR_FORMULA_ARITY', 'Clamp');
      expectKeOpsError(() => b.call('Pow', [x]), 'ERR_FORMULA_PARAM', 'Pow');
      expectKeOpsError(() => b.call('Pow', [x], [2 ** 31]), 'ERR_FORMULA_PARAM', 'Pow', String(2 ** 31));
      expectKeOpsError(() => b.call('Round', [x], [23]), 'ERR_FORMULA_PARAM', 'Round', '23');
      expectKeOpsError(() => b.call('Round', [x], [-23]), 'ERR_FORMULA_PARAM', 'Round');
      expectKeOpsError(() => b.call('ClampInt', [x], [0]), 'ERR_FORMULA_PARAM', 'ClampInt');
      expect(b.call('Pow', [x], [-(2 ** 31 - 1)]).dim).to.equal(3);
      expect(b.call('Round', [x], [22]).dim).to.equal(3);
    });
  });

  describe('reference values', () => {
    for (const c of CASES) {
      it(`${caseName(c)} matches direct Math computations, also broadcast`, () => {
        const r = rng(11);
        for (const dims of dimConfigs(c.arity)) {
          const vars = varsFor(dims);
          const f = b.call(c.op, vars, c.params);
          for (let trial = 0; trial < 5; trial++) {
            const point = samplePoint(c, vars, r);
            const args = vars.map((v) => point.get(v) as Float64Array);
            const expected = Float64Array.from({ length: f.dim }, (_, k) =>
              c.ref(...args.map((a) => (a.length === 1 ? a[0] : a[k]))),
            );
            const [rtol, atol] = c.tol ?? [1e-13, 1e-15];
            expectClose(evalWith(f, point), expected, rtol, atol, `${f}`);
          }
        }
      });
    }

    it('Scalprod is the dot product, or a scalar times the sum of the other side', () => {
      expectClose(
        evalOne('Scalprod', [
          [1, 2, 3],
          [4, -5, 6],
        ]),
        [4 - 10 + 18],
      );
      expectClose(evalOne('Scalprod', [[2], [4, -5, 6]]), [2 * 5]);
      expectClose(evalOne('Scalprod', [[4, -5, 6], [-3]]), [-3 * 5]);
      expectClose(evalOne('Scalprod', [[1.5], [-2]]), [-3]);
    });
  });

  describe('special values', () => {
    it('Rsqrt, XLogX and SinXDivX at 0; Sign, Step and ReLU at 0', () => {
      expectClose(evalOne('Rsqrt', [[0, -0, 4, 0.25]]), [0, 0, 0.5, 2]);
      expectClose(evalOne('XLogX', [[0, 1, Math.E]]), [0, 0, Math.E]);
      expectClose(evalOne('SinXDivX', [[0, -0, Math.PI / 2]]), [1, 1, 2 / Math.PI]);
      expectClose(evalOne('Sign', [[0, -0, -2, 3, NaN]]), [0, 0, -1, 1, 0]);
      expectClose(evalOne('Step', [[0, -0, -1e-300, 5]]), [1, 1, 0, 1]);
      expectClose(evalOne('ReLU', [[-2, 0, 3, NaN]]), [0, 0, 3, NaN]);
      expectClose(evalOne('Abs', [[-2, 0, 3]]), [2, 0, 3]);
      expectClose(evalOne('Floor', [[-0.5, 2, 2.999]]), [-1, 2, 2]);
    });

    it('Inv, Pow and Powf at the edges', () => {
      expectClose(evalOne('Inv', [[0, -0, 4]]), [Infinity, -Infinity, 0.25]);
      expectClose(evalOne('Pow', [[0, 2, -3, NaN]], [0]), [1, 1, 1, 1]);
      expectClose(evalOne('Pow', [[2, -3, 0]], [-2]), [0.25, 1 / 9, Infinity]);
      expectClose(evalOne('Pow', [[2, -3]], [5]), [32, -243]);
      expectClose(
        evalOne('Powf', [
          [4, 2, 0],
          [0.5, -1, 0],
        ]),
        [2, 0.5, 1],
      );
    });

    it('Round: ties away from zero, like C round, with d decimals', () => {
      expectClose(
        evalOne('Round', [[0.5, -0.5, 1.5, 2.5, -2.5, 0.49999999999999994, -0.3]], [0]),
        [1, -1, 2, 3, -3, 0, -0],
      );
      expectClose(evalOne('Round', [[1.25, -1.25, 3.14159, -0.004]], [1]), [1.3, -1.3, 3.1, -0]);
      expectClose(evalOne('Round', [[3.14159, 2.675]], [2]), [3.14, 2.68], 1e-15);
      expectClose(evalOne('Round', [[1234.5678, 1250, -1250, 49]], [-2]), [1200, 1300, -1300, 0]);
      // f·10^d beyond 2^52 (or overflowing) is already integral: f itself.
      expectClose(evalOne('Round', [[1e300, -1e300, Infinity, 2 ** 60]], [5]), [
        1e300,
        -1e300,
        Infinity,
        2 ** 60,
      ]);
      expect(Object.is(evalOne('Round', [[-0.3]], [0])[0], -0)).to.equal(true);
    });

    it('Mod, Clamp, ClampInt, DiffClampInt, IfElse', () => {
      expectClose(evalOne('Mod', [[5.5, -0.5, 4], [2], [0]]), [1.5, 1.5, 0]);
      expectClose(evalOne('Mod', [[4], [Math.PI * 2], [-Math.PI]]), [4 - 2 * Math.PI], 1e-15);
      expectClose(evalOne('Clamp', [[-3, 0.5, 3, -1, 2], [-1], [2]]), [-1, 0.5, 2, -1, 2]);
      expectClose(evalOne('ClampInt', [[-3, 0.5, 3, -1, 2]], [-1, 2]), [-1, 0.5, 2, -1, 2]);
      expectClose(evalOne('DiffClampInt', [[-3, 0.5, 3, -1, 2]], [-1, 2]), [0, 1, 0, 1, 1]);
      expectClose(evalOne('IfElse', [[0, -0, -1, 2], [10], [20, 21, 22, 23]]), [10, 10, 22, 10]);
    });

    it('Atan2(f, g) takes f as y', () => {
      expectClose(
        evalOne('Atan2', [
          [1, 0, -1],
          [0, -1, 0],
        ]),
        [Math.PI / 2, Math.PI, -Math.PI / 2],
      );
    });

    it('comparisons give 1.0 / 0.0', () => {
      const x = [1, 2, 3, NaN];
      const y = [2, 2, 2, NaN];
      expectClose(evalOne('Equal', [x, y]), [0, 1, 0, 0]);
      expectClose(evalOne('NotEqual', [x, y]), [1, 0, 1, 1]);
      expectClose(evalOne('LessThan', [x, y]), [1, 0, 0, 0]);
      expectClose(evalOne('LessOrEqual', [x, y]), [1, 1, 0, 0]);
    });
  });

  describe('gradients', () => {
    for (const c of CASES) {
      const differentiable = c.grad ?? [];
      if (differentiable.some((g) => g)) {
        it(`${caseName(c)}: symbolic gradient matches finite differences (same dims and broadcast)`, () => {
          const r = rng(23);
          for (const dims of dimConfigs(c.arity)) {
            const vars = varsFor(dims);
            const f = b.call(c.op, vars, c.params);
            for (let trial = 0; trial < 3; trial++) {
              const point = samplePoint(c, vars, r);
              vars.forEach((v, k) => {
                if (differentiable[k]) checkGradient(f, v, point, r);
              });
            }
          }
        });
      }
      if (differentiable.some((g) => !g) || differentiable.length === 0) {
        it(`${caseName(c)}: zero gradient where none flows`, () => {
          for (const dims of dimConfigs(c.arity)) {
            const vars = varsFor(dims);
            const f = b.call(c.op, vars, c.params);
            const G = b.variable(9, f.dim, 0);
            vars.forEach((v, k) => {
              if (!differentiable[k])
                expect(b.grad(f, v, G).name, `gradient of ${f} w.r.t. ${v}`).to.equal('Zero');
            });
          }
        });
      }
    }

    it('derivative formulas are differentiable themselves (second order, every differentiable op)', () => {
      const r = rng(29);
      for (const c of CASES) {
        const differentiable = c.grad ?? [];
        for (const dims of dimConfigs(c.arity)) {
          const vars = varsFor(dims);
          const f = b.call(c.op, vars, c.params);
          const e = b.variable(5, f.dim, 0);
          const point = samplePoint(c, vars, r);
          point.set(e, randArray(r, f.dim));
          vars.forEach((v, k) => {
            if (!differentiable[k]) return;
            const firstOrder = b.call('Sum', [b.grad(f, v, e)]);
            vars.forEach((w, j) => {
              if (differentiable[j]) checkGradient(firstOrder, w, point, r);
            });
          });
        }
      }
    });

    it('Scalprod: gradients match finite differences (same dims and scalar sides)', () => {
      const r = rng(5);
      for (const dims of [
        [4, 4],
        [1, 4],
        [4, 1],
        [1, 1],
      ]) {
        const vars = varsFor(dims);
        const f = b.call('Scalprod', vars);
        const point = new Map(vars.map((v) => [v, randArray(r, v.dim)]));
        for (const v of vars) checkGradient(f, v, point, r);
      }
    });

    it('composite formulas differentiate through several ops', () => {
      const r = rng(7);
      const [x, y] = varsFor([3, 3]);
      const sq = b.call('Sum', [b.call('Square', [b.sub(x, y)])]);
      const f = b.mul(
        b.call('Exp', [b.neg(sq)]),
        b.call('Atan2', [x, b.call('Sqrt', [b.add(sq, b.int(1))])]),
      );
      const point = new Map([
        [x, randArray(r, 3)],
        [y, randArray(r, 3)],
      ]);
      checkGradient(f, x, point, r);
      checkGradient(f, y, point, r);
      // Second order: the gradient of a gradient.
      const e = b.variable(5, 1, 0);
      const g1 = b.call('Sum', [b.grad(f, x, e)]);
      point.set(e, Float64Array.of(0.7));
      checkGradient(g1, y, point, r);
    });

    it('SinXDivX and Rsqrt have a finite gradient (0) at 0', () => {
      const [x] = varsFor([3]);
      const G = b.variable(1, 3, 0);
      const at0 = new Map([
        [x, Float64Array.of(0, -0, 0)],
        [G, Float64Array.of(1, 2, 3)],
      ]);
      expectClose(evalWith(b.grad(b.call('SinXDivX', [x]), x, G), at0), [0, 0, 0]);
      expectClose(evalWith(b.grad(b.call('Rsqrt', [x]), x, G), at0), [0, 0, 0]);
    });

    it('Clamp sends the gradient to whichever operand the value came from', () => {
      const [f, a, c] = varsFor([4, 4, 4]);
      const G = b.variable(3, 4, 0);
      const point = new Map([
        [f, Float64Array.of(-2, 0, 2, 5)],
        [a, Float64Array.of(-1, -1, -1, 6)],
        [c, Float64Array.of(1, 1, 1, 3)], // last: a > b, the value is b
        [G, Float64Array.of(1, 2, 3, 4)],
      ]);
      const clamp = b.call('Clamp', [f, a, c]);
      expectClose(evalWith(b.grad(clamp, f, G), point), [0, 2, 0, 0]);
      expectClose(evalWith(b.grad(clamp, a, G), point), [1, 0, 0, 4]);
      expectClose(evalWith(b.grad(clamp, c, G), point), [0, 0, 3, 0]);
    });

    it('IfElse sends G to the selected branch and nothing to the condition', () => {
      const [f, a, c] = varsFor([3, 3, 3]);
      const G = b.variable(3, 3, 0);
      const point = new Map([
        [f, Float64Array.of(-1, 0, 1)],
        [a, Float64Array.of(5, 6, 7)],
        [c, Float64Array.of(8, 9, 10)],
        [G, Float64Array.of(1, 2, 3)],
      ]);
      const ifElse = b.call('IfElse', [f, a, c]);
      expectClose(evalWith(b.grad(ifElse, a, G), point), [0, 2, 3]);
      expectClose(evalWith(b.grad(ifElse, c, G), point), [1, 0, 0]);
    });
  });

  describe('C++ emission', () => {
    /** One node per case and dim configuration, with input values (random, then special values). */
    function emissionSamples(): Array<{ node: Node; inputs: Float64Array[] }> {
      const r = rng(31);
      const samples: Array<{ node: Node; inputs: Float64Array[] }> = [];
      for (const c of CASES) {
        for (const dims of dimConfigs(c.arity)) {
          const vars = varsFor(dims);
          const point = samplePoint(c, vars, r);
          samples.push({
            node: rawNode(c.op, vars, c.params),
            inputs: vars.map((v) => point.get(v) as Float64Array),
          });
        }
      }
      const special = (op: string, args: number[][], params: ParamValue[] = []): void => {
        samples.push({
          node: rawNode(op, varsFor(args.map((a) => a.length)), params),
          inputs: args.map((a) => Float64Array.from(a)),
        });
      };
      special('Rsqrt', [[0, 4]]);
      special('XLogX', [[0, 2]]);
      special('SinXDivX', [[0, 2]]);
      special('Sign', [[0, -2, 3]]);
      special('Round', [[0.5, -0.5, 2.5, -2.5]], [0]);
      special('Round', [[1.25, -1.25]], [1]);
      special('Round', [[1e20, 1250]], [3]);
      special('Round', [[1250, -1250]], [-2]);
      special('Pow', [[0, 2, -3]], [0]);
      special('Pow', [[2, -4]], [-2]);
      special('Scalprod', [
        [1, 2, 3],
        [4, -5, 6],
      ]);
      special('Scalprod', [[2], [4, -5, 6]]);
      special('Scalprod', [[4, -5, 6], [-3]]);
      special('IfElse', [[0, -1], [10], [20]]);
      special('Clamp', [[-3, 0.5, 3], [-1], [2]]);
      return samples;
    }

    it('every op emits non-empty C++ naming only its context names and prelude functions', () => {
      for (const { node } of emissionSamples()) {
        const args = node.children.map((_, k) => `arg${k}`);
        const ctx = testEmitContext(node, 'res', args);
        const code = node.op.emit(ctx);
        expect(code.trim().length, `${node}`).to.be.greaterThan(0);
        const allowed = new Set([
          ctx.out,
          ...args,
          ...ctx.freshNames,
          ctx.T,
          ...PRELUDE_FUNCTIONS,
          ...CPP_WORDS,
        ]);
        const identifiers = code.match(/\b[A-Za-z_]\w*/g) ?? [];
        for (const id of identifiers)
          expect(allowed.has(id), `${node}: unexpected name '${id}' in ${code}`).to.equal(true);
        expect(code, `${node}`).to.not.match(/\bfloat\b|\bdouble\b/);
      }
    });

    it('the emitted C++ computes the reference values in double and float (g++)', function () {
      if (spawnSync('g++', ['--version']).status !== 0) this.skip();
      this.timeout(60000);
      const samples = emissionSamples();
      const functions = samples.map(({ node, inputs }, s) => {
        const args = inputs.map((_, k) => `in${k}`);
        const code = node.op.emit(testEmitContext(node, 'out', args));
        const decls = inputs.map(
          (a, k) => `T in${k}[${a.length}] = {${Array.from(a, cppLiteral).join(', ')}};`,
        );
        return `template <typename T> void sample${s}(T* out) {\n  ${decls.join('\n  ')}\n  ${code}\n}`;
      });
      const calls = samples.map(({ node }, s) => {
        const print = (T: string) =>
          `{ ${T} out[${node.dim}]; sample${s}<${T}>(out); for (int k = 0; k < ${node.dim}; k++) printf("%.17g ", (double)out[k]); printf("\\n"); }`;
        return `  ${print('double')}\n  ${print('float')}`;
      });
      const prelude = join(__dirname, '..', 'cuda-templates', 'keops_prelude.h');
      const source = `#include "${prelude}"\n#include <stdio.h>\n${functions.join('\n')}\nint main() {\n${calls.join('\n')}\n  return 0;\n}\n`;
      const dir = mkdtempSync(join(tmpdir(), 'keops-ops-'));
      try {
        writeFileSync(join(dir, 'ops.cpp'), source);
        const compiled = spawnSync(
          'g++',
          ['-O1', '-std=c++17', '-Wall', '-Werror', '-o', join(dir, 'ops'), join(dir, 'ops.cpp')],
          {
            encoding: 'utf8',
          },
        );
        expect(compiled.status, compiled.stderr).to.equal(0);
        const run = spawnSync(join(dir, 'ops'), { encoding: 'utf8' });
        expect(run.status, run.stderr).to.equal(0);
        const lines = run.stdout.trim().split('\n');
        expect(lines.length).to.equal(2 * samples.length);
        samples.forEach(({ node, inputs }, s) => {
          const expected = node.op.evaluate(inputs, node.params, node);
          const parse = (line: string) => line.trim().split(' ').map(parseCNumber);
          expectClose(parse(lines[2 * s]), expected, 1e-14, 1e-300, `double ${node}`);
          expectClose(parse(lines[2 * s + 1]), expected, 2e-6, 1e-6, `float ${node}`);
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});

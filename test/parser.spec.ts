import { expect } from 'chai';
import { KeOpsError, type KeOpsErrorCode } from '../lib/errors';
import { builder as b } from '../lib/formula/builder';
import { Formula, parseFormula, parseReduction, parseReductionWithVariables } from '../lib/formula/index';
import { type Node, topoOrder } from '../lib/formula/node';
import { rational } from '../lib/formula/rational';
import { ALL_MACROS, ALL_OPS } from '../lib/formula/registry';
import { rng } from './util';
import { ALIASES, OP_INSTANCES } from './op-instances';

/** x, y: 3-vectors (i, j); b: scalar j; s: parameter; t: scalar i; z, w: 2 complex numbers; A: 3×3; k: knots. */
const A = ALIASES;

const parse = (text: string, aliases: readonly string[] = A): Formula => parseFormula(text, aliases);
const node = (text: string, aliases: readonly string[] = A): Node => parse(text, aliases).node;

function catchError(run: () => unknown): KeOpsError {
  try {
    run();
  } catch (e) {
    expect(e, `expected a KeOpsError, got ${e}`).to.be.instanceOf(KeOpsError);
    return e as KeOpsError;
  }
  expect.fail('expected an error');
}

function expectError(
  run: () => unknown,
  code: KeOpsErrorCode,
  position?: number,
  messagePart?: string,
): KeOpsError {
  const e = catchError(run);
  expect(e.code, e.message).to.equal(code);
  if (position !== undefined) expect(e.position, e.message).to.equal(position);
  if (messagePart !== undefined) expect(e.message).to.contain(messagePart);
  return e;
}

/** Canonical text must re-parse, without aliases, to the very same node. */
function expectRoundTrip(n: Node): void {
  const again = parseFormula(n.toString()).node;
  expect(again === n, `round trip of ${n} gave ${again}`).to.equal(true);
}

describe('formula parser', () => {
  describe('precedence and operators (Python rules, docs/semantics.md 1.3)', () => {
    const equivalences: ReadonlyArray<readonly [string, string]> = [
      ['x|y*2', 'Scalprod(x,Mult(y,2))'],
      ['x|y+b', 'Scalprod(x,Add(y,b))'],
      ['-x**2', 'Minus(Square(x))'],
      ['x**-0.5', 'Rsqrt(x)'],
      ['x**(-0.5)', 'Rsqrt(x)'],
      ['x**0.5', 'Sqrt(x)'],
      ['x**2', 'Square(x)'],
      ['x**2.0', 'Square(x)'],
      ['x**3', 'Pow(x,3)'],
      ['x**-1', 'Pow(x,-1)'],
      ['x**1.5', 'Powf(x,RatCst(3,2))'],
      ['x**-2.5', 'Powf(x,RatCst(-5,2))'],
      ['x**b', 'Powf(x,b)'],
      ['x**b**s', 'Powf(x,Powf(b,s))'],
      ['2**-s', 'Powf(2,Minus(s))'],
      ['-b**-s', 'Minus(Powf(b,Minus(s)))'],
      ['2*x/3', 'Divide(Mult(2,x),3)'],
      ['x+y*b', 'Add(x,Mult(y,b))'],
      ['(x+y)*b', 'Mult(Add(x,y),b)'],
      ['x-y-b', 'Subtract(Subtract(x,y),b)'],
      ['x/y/b', 'Divide(Divide(x,y),b)'],
      ['x-y+b', 'Add(Subtract(x,y),b)'],
      ['-x*y', 'Mult(Minus(x),y)'],
      ['x*-y', 'Mult(x,Minus(y))'],
      ['- -x', 'Minus(Minus(x))'],
      ['+x', 'x'],
      ['x+-+y', 'Add(x,Minus(y))'],
      ['-x+y', 'Add(Minus(x),y)'],
      ['b<s', 'LessThan(b,s)'],
      ['b>s', 'LessThan(s,b)'],
      ['b<=s', 'LessOrEqual(b,s)'],
      ['b>=s', 'LessOrEqual(s,b)'],
      ['b==s', 'Equal(b,s)'],
      ['b!=s', 'NotEqual(b,s)'],
      ['b+1<s*2', 'LessThan(Add(b,1),Mult(s,2))'],
      ['x|y<b', 'LessThan(Scalprod(x,y),b)'],
      ['(b<s)<t', 'LessThan(LessThan(b,s),t)'],
      ['b<(s<t)', 'LessThan(b,LessThan(s,t))'],
      [' Exp ( - x ) ', 'Exp(Minus(x))'],
      ['\tx\n*\r\ny', 'Mult(x,y)'],
      ['Exp(-SqDist(x,y))*b', 'Mult(Exp(Minus(Sum(Square(Subtract(x,y))))),b)'],
    ];
    for (const [text, expected] of equivalences) {
      it(`${JSON.stringify(text)} = ${expected}`, () => {
        expect(node(text).toString()).to.equal(node(expected).toString());
        expect(node(text)).to.equal(node(expected));
      });
    }

    it('maps comparisons to the right operations (KeOps returns Python bools for ==, !=)', () => {
      expect(node('b<s').name).to.equal('LessThan');
      expect(node('b>s').children[0]).to.equal(node('s'));
      expect(node('b==s').name).to.equal('Equal');
      expect(node('b!=s').name).to.equal('NotEqual');
    });

    it('rejects chained comparisons, pointing at the second operator', () => {
      expectError(() => parse('b<s<t'), 'ERR_FORMULA_SYNTAX', 3, 'chained comparison');
      expectError(() => parse('b < s == t'), 'ERR_FORMULA_SYNTAX', 6);
      expectError(() => parse('b>=s!=t'), 'ERR_FORMULA_SYNTAX', 4);
      expectError(() => parse('Exp(b<s+1>t)'), 'ERR_FORMULA_SYNTAX', 9);
    });
  });

  describe('literals', () => {
    it('reads decimals as exact rationals', () => {
      expect(node('2.5')).to.equal(b.rat(rational(5, 2)));
      expect(node('1e-3')).to.equal(b.rat(rational(1, 1000)));
      expect(node('.5')).to.equal(b.rat(rational(1, 2)));
      expect(node('0.1')).to.equal(b.rat(rational(1, 10)));
      expect(node('1.25E+1')).to.equal(b.rat(rational(25, 2)));
      expect(node('3.')).to.equal(b.int(3));
      expect(node('1e2')).to.equal(b.int(100));
      expect(node('2.5*x')).to.equal(b.mul(b.rat(rational(5, 2)), node('x')));
    });

    it('reads integers as IntCst and folds signs into literals', () => {
      expect(node('7')).to.equal(b.int(7));
      expect(node('-3')).to.equal(b.int(-3));
      expect(node('- -3')).to.equal(b.int(3));
      expect(node('-(3)')).to.equal(b.int(-3));
      expect(node('-2.5')).to.equal(b.rat(rational(-5, 2)));
      expect(node('-3*x')).to.equal(b.mul(b.int(-3), node('x')));
      expect(node('Round(x,-2)').params).to.deep.equal([-2]);
      expect(node('RatCst(-1,3)')).to.equal(b.rat(rational(-1, 3)));
    });

    it('keeps huge exact constants exact (canonical RatCst text re-parses)', () => {
      const tiny = node('1e-300');
      expect(tiny).to.equal(b.rat(rational(1n, 10n ** 300n)));
      expectRoundTrip(tiny);
      expectRoundTrip(node('123456789.123456789*x'));
    });

    it('rejects integers beyond 2^53 and out-of-range decimals', () => {
      expectError(() => parse('x*123456789012345678901234567890'), 'ERR_FORMULA_PARAM', 2);
      expectError(() => parse('1e999'), 'ERR_FORMULA_PARAM', 0);
      expectError(() => parse('Round(x,99999999999999999999)'), 'ERR_FORMULA_PARAM', 8);
      expectError(() => parse('x**99999999999999999999'), 'ERR_FORMULA_PARAM', 3);
      expectError(() => parse('1'.repeat(500)), 'ERR_FORMULA_PARAM', 0);
    });

    it('reads list parameters', () => {
      const n = node('TensorDot(A,x,[3,3],[3],[1],[0])');
      expect(n.name).to.equal('TensorDot');
      expect(n.params.slice(0, 4)).to.deep.equal([[3, 3], [3], [1], [0]]);
      expect(node('TensorDot(A,x,[3, 3 ],[ 3],[1],[0])')).to.equal(n);
    });
  });

  describe('function calls', () => {
    it('expands macros and builds operations with parameters', () => {
      expect(node('SqDist(x,y)')).to.equal(node('Sum(Square(x-y))'));
      expect(node('Extract(x,1,2)').params).to.deep.equal([1, 2]);
      expect(node('IntInv(4)')).to.equal(b.rat(rational(1, 4)));
    });

    it('suggests the closest name for unknown functions', () => {
      expectError(() => parse('Exq(x)'), 'ERR_FORMULA_NAME', 0, 'did you mean Exp?');
      expectError(() => parse('x+exp(x)'), 'ERR_FORMULA_NAME', 2, 'did you mean Exp?');
      expectError(() => parse('SqDst(x,y)'), 'ERR_FORMULA_NAME', 0, 'did you mean SqDist?');
      expectError(() => parse('Foo(x)'), 'ERR_FORMULA_NAME', 0, "unknown function 'Foo'");
      expectError(() => parse('Ind(1)'), 'ERR_FORMULA_NAME', 0, 'list');
      expectError(() => parse('x(1)'), 'ERR_FORMULA_NAME', 0, 'variable, not a function');
      expectError(() => parse('Exp'), 'ERR_FORMULA_NAME', 0, 'Exp(...)');
    });

    it('puts variables that macros introduce after every declared position (KeOps would reuse b)', () => {
      const aliases = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'];
      const f = parseFormula('Grad(Exp(-SqDist(x,y)),x)', aliases);
      const e = b.variable(3, 1, 1);
      expect(f.node).to.equal(parseFormula('Grad(Exp(-SqDist(x,y)),x,Var(3,1,1))', aliases).node);
      expect(f.variables[3]).to.deep.equal({ pos: 3, dim: 1, cat: 1 });
      expect(topoOrder(f.node)).to.include(e);
      const twice = parseFormula('Grad(Exp(-SqDist(x,y)),x)+Grad(Exp(-SqDist(x,y)),y)', aliases);
      expect(twice.variables.slice(3)).to.deep.equal([
        { pos: 3, dim: 1, cat: 1 },
        { pos: 4, dim: 1, cat: 0 },
      ]);
      expectError(
        () => parseFormula('Grad(Exp(-SqDist(x,y)),x)*Vj(3,2)', aliases),
        'ERR_ALIAS',
        26,
        'made by Grad',
      );
    });

    it('reports unknown variables with a suggestion', () => {
      expectError(() => parse('x+yy'), 'ERR_FORMULA_NAME', 2, 'did you mean y?');
      expectError(() => parse('x+q'), 'ERR_FORMULA_NAME', 2, "unknown variable 'q'");
      expectError(() => parseFormula('x'), 'ERR_FORMULA_NAME', 0, "'x = Vi(3)'");
    });

    it('checks arity, naming the function and its signature', () => {
      expectError(() => parse('Exp()'), 'ERR_FORMULA_ARITY', 0, 'Exp(formula)');
      expectError(() => parse('x+Exp(x,y)'), 'ERR_FORMULA_ARITY', 2, 'Exp takes 1 argument');
      expectError(() => parse('Round(x)'), 'ERR_FORMULA_ARITY', 0, 'Round(formula, int)');
      expectError(() => parse('TensorDot(x,y)'), 'ERR_FORMULA_ARITY', 0, 'TensorDot(formula, formula, list');
      expectError(() => parse('Grad(x)'), 'ERR_FORMULA_ARITY', 0, 'Grad(formula, formula[, formula])');
      expectError(() => parse('Concat([1],x)'), 'ERR_FORMULA_ARITY', 7, 'must be a formula');
    });

    it('checks parameters: integer literals and lists only', () => {
      expectError(() => parse('Round(x,s)'), 'ERR_FORMULA_PARAM', 8, 'integer literal');
      expectError(() => parse('Round(x,2.5)'), 'ERR_FORMULA_PARAM', 8);
      expectError(() => parse('Round(x,[2])'), 'ERR_FORMULA_PARAM', 8);
      expectError(() => parse('TensorDot(A,x,3,[3],[1],[0])'), 'ERR_FORMULA_PARAM', 14, 'list of integers');
      expectError(() => parse('TensorDot(A,x,[3,x],[3],[1],[0])'), 'ERR_FORMULA_PARAM', 17);
      expectError(() => parse('TensorDot(A,x,[3,3.5],[3],[1],[0])'), 'ERR_FORMULA_PARAM', 17);
      expectError(() => parse('RatCst(1,0)'), 'ERR_FORMULA_PARAM', 9, 'denominator');
      expectError(() => parse('Extract(x,2,5)'), 'ERR_FORMULA_PARAM');
    });

    it('gives build errors the position of the failing operator or call', () => {
      expectError(() => parse('x+c'), 'ERR_FORMULA_DIM', 1, 'incompatible');
      expectError(() => parse('Exp(x)*Exp(c)'), 'ERR_FORMULA_DIM', 6);
      expectError(() => parse('b + SqDist(x,c)'), 'ERR_FORMULA_DIM', 4);
      expectError(() => parse('x|c'), 'ERR_FORMULA_DIM', 1);
      expectError(() => parse('b*Var(9,2,5)'), 'ERR_FORMULA_PARAM', 10);
    });
  });

  describe('syntax errors carry the position', () => {
    const cases: ReadonlyArray<readonly [string, number, string]> = [
      ['', 0, 'empty formula'],
      ['   ', 3, 'empty formula'],
      ['(x', 0, 'never closed'],
      ['Exp(Log(x)', 0, 'never closed'],
      ['x)', 1, "unmatched ')'"],
      ['(x))', 3, "unmatched ')'"],
      ['()', 1, 'expected'],
      ['x+', 2, "after '+'"],
      ['x*/y', 2, "after '*'"],
      ['x y', 2, 'operator'],
      ['Exp(x) x', 7, 'operator'],
      ['x^2', 1, '**'],
      ['x%2', 1, 'Mod'],
      ['x//2', 1, 'Floor'],
      ['x@y', 1, 'MatVecMult'],
      ['@', 0, ''],
      ['x = y', 2, '=='],
      ['x & y', 2, ''],
      ['x # y', 2, 'unexpected character'],
      ['x+é', 2, 'U+00E9'],
      ['2x', 1, 'right after the number'],
      ['1e', 0, 'malformed number'],
      ['x.y', 1, "'.'"],
      ['Exp(x,)', 6, 'argument'],
      ['Exp(,x)', 4, 'expected'],
      ['(x,y)', 2, 'tuples'],
      ['x,y', 1, "','"],
      ['[1,2]', 0, 'parameter'],
      ['x+[1', 2, 'never closed'],
      ['Round(x,[1 2])', 11, "expected ',' or ']'"],
      ['!x', 0, '!='],
    ];
    for (const [text, position, part] of cases) {
      it(`${JSON.stringify(text)} -> position ${position}`, () => {
        expectError(() => parse(text), 'ERR_FORMULA_SYNTAX', position, part);
      });
    }

    it('shows an excerpt with a caret under the position', () => {
      const e = expectError(() => parse('Exp(x) + @'), 'ERR_FORMULA_SYNTAX', 9);
      expect(e.message).to.contain('Exp(x) + @\n           ^');
    });
  });

  describe('size limits', () => {
    it('rejects nesting deeper than the limit without overflowing the stack', () => {
      const n = 100_000;
      expectError(() => parse('('.repeat(n) + 'x' + ')'.repeat(n)), 'ERR_FORMULA_TOO_LARGE');
      expectError(() => parse('-'.repeat(n) + 'x'), 'ERR_FORMULA_TOO_LARGE');
      expectError(() => parse('x**'.repeat(n / 4) + 'x'), 'ERR_FORMULA_TOO_LARGE');
      expectError(() => parse('Exp('.repeat(n / 5) + 'x' + ')'.repeat(n / 5)), 'ERR_FORMULA_TOO_LARGE');
      expectError(() => parse('Exp('.repeat(n / 5)), 'ERR_FORMULA_TOO_LARGE');
    });

    it('rejects over-long input', () => {
      expectError(() => parse('x+'.repeat(60_000) + 'x'), 'ERR_FORMULA_TOO_LARGE', undefined, 'characters');
    });

    it('parses the longest accepted input in bounded time', function () {
      this.timeout(20_000);
      const start = Date.now();
      expect(parse('x+'.repeat(49_999) + 'x').dim).to.equal(3);
      expect(parse('1+'.repeat(49_999) + '1').dim).to.equal(1);
      expect(Date.now() - start).to.be.below(10_000);
    });

    it('parses long flat formulas quickly', () => {
      const start = Date.now();
      const f = parse(Array.from({ length: 5000 }, (_, k) => `${k}*x`).join('+'));
      expect(f.dim).to.equal(3);
      expect(Date.now() - start).to.be.below(5000);
    });

    it('round-trips formulas close to the builder depth limit', () => {
      let f = node('x');
      for (let k = 0; k < 1900; k++) f = b.call(k % 2 === 0 ? 'Sin' : 'Cos', [f]);
      expectRoundTrip(f);
    });
  });

  describe('aliases', () => {
    it('accepts every alias form, ignoring spaces', () => {
      const f = parseFormula('x+y+p+q+r+u+v+m', [
        'x = Vi(3)',
        'y=Vj(3)',
        ' p = Pm( 3 ) ',
        'q = Vi(7,3)',
        'r = Var(8,3,1)',
        'u = Vx(3)',
        'v = Vy(10,3)',
        'm=Pm(11,1)',
        'Var(12,2,2)',
        'Vj(13,5)',
      ]);
      expect(f.variables).to.deep.equal([
        { name: 'x', pos: 0, dim: 3, cat: 0 },
        { name: 'y', pos: 1, dim: 3, cat: 1 },
        { name: 'p', pos: 2, dim: 3, cat: 2 },
        { name: 'u', pos: 5, dim: 3, cat: 0 },
        { name: 'q', pos: 7, dim: 3, cat: 0 },
        { name: 'r', pos: 8, dim: 3, cat: 1 },
        { name: 'v', pos: 10, dim: 3, cat: 1 },
        { name: 'm', pos: 11, dim: 1, cat: 2 },
        { pos: 12, dim: 2, cat: 2 },
        { pos: 13, dim: 5, cat: 1 },
      ]);
      expect(f.node).to.equal(
        parseFormula(
          'Var(0,3,0)+Var(1,3,1)+Var(2,3,2)+Var(7,3,0)+Var(8,3,1)+Var(5,3,0)+Var(10,3,1)+Var(11,1,2)',
        ).node,
      );
    });

    it('allows two names for the same variable', () => {
      const f = parseFormula('x-x2', ['x=Vi(0,3)', 'x2=Var(0,3,0)']);
      expect(f.variables).to.deep.equal([{ name: 'x', pos: 0, dim: 3, cat: 0 }]);
    });

    const aliasErrors: ReadonlyArray<readonly [readonly string[], string]> = [
      [['x = Vi(3'], 'malformed'],
      [['x == Vi(3)'], 'malformed'],
      [['x = Vk(3)'], 'malformed'],
      [['x = Vi(3) y'], 'after the closing'],
      [['x = Vi(3,3,3)'], 'Vi takes 1 integer'],
      [['x = Var(0,3)'], 'Var takes 3 integers'],
      [['x = Var(0,3,3)'], 'category'],
      [['x = Vi(a)'], 'non-negative integers'],
      [['x = Vi(-1,3)'], 'non-negative integers'],
      [['x = Vi(1.5)'], 'non-negative integers'],
      [[''], 'malformed'],
      [['x ='], 'malformed'],
      [['3x = Vi(3)'], 'malformed'],
      [['x y = Vi(3)'], 'malformed'],
      [['x = Vi(3)@'], 'malformed'],
      [['Exp = Vi(3)'], "'Exp' is the name of a function"],
      [['Vi = Vi(3)'], 'name of a function'],
      [['Var = Vi(3)'], 'name of a function'],
      [['SqDist = Vj(3)'], 'name of a function'],
      [['Sum_Reduction = Vj(3)'], 'name of a function'],
      [['x = Vi(3)', 'x = Vj(3)'], "'x' is already declared by alias 0"],
      [['x = Vi(0,3)', 'y = Vj(0,3)'], 'declares position 0 as Vj(0,3)'],
      [['x = Vi(0,3)', 'y = Vi(0,2)'], 'declared it as Vi(0,3)'],
      [['x = Vi(0)'], 'dimension must be between 1'],
      [['x = Var(0,0,0)'], 'dimension'],
      [['x = Vi(99999999,1)'], 'position must be at most'],
      [['x = Vi(1,99999999999999999999)'], 'dimension'],
    ];
    for (const [aliases, part] of aliasErrors) {
      it(`rejects ${JSON.stringify(aliases)}`, () => {
        const e = expectError(() => parseFormula('1', aliases), 'ERR_ALIAS', undefined, part);
        const index = aliases.length - 1;
        expect(e.message).to.contain(`alias ${index} (`);
        expect(e.message).to.contain(aliases[index]);
      });
    }

    it('rejects inline variables that conflict with an alias or each other', () => {
      expectError(() => parse('x+Var(0,2,0)'), 'ERR_ALIAS', 2, 'declared it as Vi(0,3)');
      expectError(() => parse('b*Vi(1,3)'), 'ERR_ALIAS', 2, "alias 1 ('y = Vj(3)')");
      expectError(() => parseFormula('Var(4,2,0)+Var(4,2,1)'), 'ERR_ALIAS', 11);
    });
  });

  describe('inline variables', () => {
    it('accepts Var(pos,dim,cat) and (unlike KeOps) Vi/Vj/Pm(pos,dim)', () => {
      const f = parseFormula('Vi(0,3)*Vj(1,3)+Pm(2,1)*Var(3,1,1)');
      expect(f.node).to.equal(parseFormula('Var(0,3,0)*Var(1,3,1)+Var(2,1,2)*Var(3,1,1)').node);
      expect(f.variables).to.deep.equal([
        { pos: 0, dim: 3, cat: 0 },
        { pos: 1, dim: 3, cat: 1 },
        { pos: 2, dim: 1, cat: 2 },
        { pos: 3, dim: 1, cat: 1 },
      ]);
    });

    it('mixes aliases and inline variables (keops test_heterogeneous_var_aliases)', () => {
      const f = parseFormula('p*Sum(x-y)*Var(3,1,1)', ['p=Pm(0,1)', 'x=Vi(1,3)', 'y=Vj(2,3)']);
      expect(f.variables.map((v) => [v.name, v.pos])).to.deep.equal([
        ['p', 0],
        ['x', 1],
        ['y', 2],
        [undefined, 3],
      ]);
    });

    it('rejects bad inline variables', () => {
      expectError(() => parse('x*Vi(3)'), 'ERR_FORMULA_ARITY', 2, 'only exists in aliases');
      expectError(() => parse('Var(0,3)'), 'ERR_FORMULA_ARITY', 0);
      expectError(() => parse('Var(20,3,-1)'), 'ERR_FORMULA_PARAM', 9, 'category');
      expectError(() => parse('Var(20,3,7)'), 'ERR_FORMULA_PARAM', 9, 'category');
      expectError(() => parse('Var(20,0,1)'), 'ERR_FORMULA_PARAM', 0, 'dimension');
      expectError(() => parse('Var(-1,1,1)'), 'ERR_FORMULA_PARAM', 0, 'position');
      expectError(() => parse('Vi(20,s)'), 'ERR_FORMULA_PARAM', 6, 'integer literal');
    });
  });

  describe('reductions', () => {
    it('parses the three syntaxes and round-trips their canonical text', () => {
      const texts = [
        'Sum_Reduction(Exp(-SqDist(x,y))*b,0)',
        'Sum_Reduction(x,1)',
        'KMin_ArgKMin_Reduction(SqDist(x,y),5,0)',
        'ArgKMin_Reduction(SqDist(x,y),3,1)',
        'Max_SumShiftExpWeight_Reduction(-SqDist(x,y),0,y)',
        'Max_SumShiftExp_Reduction(-SqDist(x,y),0)',
        'Min_ArgMin_Reduction(x-y,0)',
      ];
      for (const text of texts) {
        const r = parseReduction(text, A);
        const again = parseReduction(r.toString());
        expect(again.toString()).to.equal(r.toString());
        expect(again.formula).to.equal(r.formula);
      }
      const r = parseReduction('KMin_ArgKMin_Reduction(SqDist(x,y),5,0)', A);
      expect([r.def.name, r.k, r.tag]).to.deep.equal(['KMin_ArgKMin_Reduction', 5, 0]);
      const w = parseReduction('Max_SumShiftExpWeight_Reduction(-SqDist(x,y),1,y)', A);
      expect(w.formula2).to.equal(node('y'));
      expect(w.tag).to.equal(1);
    });

    it('returns the variables with the reduction', () => {
      const { reduction, variables } = parseReductionWithVariables('Sum_Reduction(x*b,0)', [
        'x=Vi(3)',
        'b=Vj(1)',
      ]);
      expect(reduction.formula).to.equal(parseFormula('Var(0,3,0)*Var(1,1,1)').node);
      expect(variables.map((v) => v.name)).to.deep.equal(['x', 'b']);
    });

    it('reports reduction errors', () => {
      expectError(() => parseReduction('Sum_Reduction(x,2)', A), 'ERR_REDUCTION', 0, '0 (reduce over j)');
      expectError(() => parseReduction('Sum_Reduction(x,s)', A), 'ERR_REDUCTION', 16, 'integer literal');
      expectError(() => parseReduction('KMin_Reduction(x,b,0)', A), 'ERR_REDUCTION', 17, 'K');
      expectError(() => parseReduction('KMin_Reduction(x,0,0)', A), 'ERR_REDUCTION', 0);
      expectError(
        () => parseReduction('Sum_Reduction(x)', A),
        'ERR_FORMULA_ARITY',
        0,
        'Sum_Reduction(formula, tag)',
      );
      expectError(
        () => parseReduction('Sum_Reductin(x,0)', A),
        'ERR_REDUCTION',
        0,
        'did you mean Sum_Reduction?',
      );
      expectError(
        () => parseReduction('Sum_Reduction(x,0)+1', A),
        'ERR_REDUCTION',
        0,
        'not part of a formula',
      );
      expectError(() => parseReduction('Exp(Sum_Reduction(x,0))', A), 'ERR_REDUCTION', 4, 'outermost');
      expectError(() => parseReduction('Exp(x)', A), 'ERR_REDUCTION', 0, 'expected a reduction');
      expectError(() => parseReduction('(Sum_Reduction(x,0))', A), 'ERR_REDUCTION', 1);
      expectError(() => parseFormula('Sum_Reduction(x,0)', A), 'ERR_REDUCTION', 0, 'parseReduction');
      expectError(() => parseReduction('Sum_Reduction(x+c,0)', A), 'ERR_FORMULA_DIM', 15);
      expectError(() => parseReduction('', A), 'ERR_FORMULA_SYNTAX', 0);
    });
  });

  describe('public API', () => {
    it('validates argument types', () => {
      expectError(() => parseFormula(3 as unknown as string), 'ERR_INVALID_ARGUMENT', undefined, 'string');
      expectError(() => parseFormula('x', 'x=Vi(3)' as unknown as string[]), 'ERR_INVALID_ARGUMENT');
      expectError(
        () => parseFormula('x', [3] as unknown as string[]),
        'ERR_INVALID_ARGUMENT',
        undefined,
        'alias 0',
      );
      expectError(() => parseReduction(null as unknown as string), 'ERR_INVALID_ARGUMENT');
      expectError(
        () => parseReduction('Sum_Reduction(x,0)', {} as unknown as string[]),
        'ERR_INVALID_ARGUMENT',
      );
    });

    it('exposes node, dim, variables, canonical text and hash', () => {
      const f = parse('Exp(-SqDist(x,y))*b');
      expect(f.dim).to.equal(1);
      expect(f.toString()).to.equal(f.node.toString());
      expect(f.toString()).to.contain('Var(0,3,0)');
      expect(f.hash).to.match(/^[0-9a-f]{64}$/);
      expect(f.hash).to.equal(parseFormula(f.toString()).hash);
      expect(f.variables.map((v) => v.name)).to.deep.equal([
        'x',
        'y',
        'b',
        's',
        't',
        'z',
        'w',
        'A',
        'k',
        'c',
      ]);
      expect(Object.isFrozen(f.variables)).to.equal(true);
      expect(Formula.fromNode(f.node).variables).to.deep.equal([
        { pos: 0, dim: 3, cat: 0 },
        { pos: 1, dim: 3, cat: 1 },
        { pos: 2, dim: 1, cat: 1 },
      ]);
    });
  });

  describe('canonical round trip', () => {
    /** One valid instance of every parse-time function. */
    const MACRO_INSTANCES: Readonly<Record<string, string>> = {
      RatCst: 'RatCst(1,3)*x',
      IntInv: 'IntInv(3)*x',
      SqNorm2: 'SqNorm2(x)',
      Norm2: 'Norm2(x)',
      Normalize: 'Normalize(x)',
      SqDist: 'SqDist(x,y)',
      SqNormIso: 'SqNormIso(s,x)',
      SqNormDiag: 'SqNormDiag(y,x)',
      SymSqNorm: 'SymSqNorm(A,x)',
      WeightedSqNorm: 'WeightedSqNorm(s,x)',
      WeightedSqDist: 'WeightedSqDist(A,x,y)',
      Grad: 'Grad(Exp(-SqDist(x,y))*b,x,s)',
      Diff: 'Diff(Exp(-SqDist(x,y)),x,y)',
      GradMatrix: 'GradMatrix(Sin(x),x)',
      Divergence: 'Divergence(Sin(x),x)',
      Laplacian: 'Laplacian(Exp(-SqDist(x,y)),x)',
      TraceOperator: 'TraceOperator(s*x,x)',
      AdjointOperator: 'AdjointOperator(s*x,x,y)',
      SumLinOperator: 'SumLinOperator(s*x,x)',
      AutoFactorize: 'AutoFactorize(Exp(x+y)*Sin(x+y))',
    };

    it('has an instance for every operation in ALL_OPS and every macro in ALL_MACROS', () => {
      const missingOps = ALL_OPS.map((op) => op.name).filter((name) => !(name in OP_INSTANCES));
      const missingMacros = ALL_MACROS.map((m) => m.name).filter((name) => !(name in MACRO_INSTANCES));
      expect(missingOps, 'operations without a round-trip instance').to.deep.equal([]);
      expect(missingMacros, 'macros without a round-trip instance').to.deep.equal([]);
    });

    for (const op of ALL_OPS) {
      it(`round-trips ${op.name}`, () => {
        const text = OP_INSTANCES[op.name];
        if (text === undefined) return; // reported by the completeness test above
        const n = node(text);
        const names = new Set(topoOrder(n).map((m) => m.op.name));
        expect(names.has(op.name), `${text} gave ${n}, without ${op.name}`).to.equal(true);
        expectRoundTrip(n);
        for (const alias of op.aliases ?? []) {
          expect(node(text.split(op.name).join(alias))).to.equal(n);
        }
      });
    }

    for (const macro of ALL_MACROS) {
      it(`round-trips the expansion of ${macro.name}`, () => {
        const text = MACRO_INSTANCES[macro.name];
        if (text === undefined) return;
        expectRoundTrip(node(text));
      });
    }

    it('round-trips random formulas', () => {
      const r = rng(2024);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
      const scalars = ['b', 's', 't', '2', '-3', '0.5', 'Sum(x)', 'SqDist(x,y)', '(x|y)'];
      const vectors = ['x', 'y', 'x-y', 'Vi(20,3)', 'Var(21,3,1)'];
      const unary = ['Exp', 'Sin', 'Cos', 'Abs', 'Sqrt', 'Log', 'Minus', 'Square', 'ReLU', 'Atan'];
      const gen = (depth: number, vector: boolean): string => {
        if (depth === 0) return pick(vector ? vectors : scalars);
        switch (Math.floor(r() * 7)) {
          case 0:
            return `${pick(unary)}(${gen(depth - 1, vector)})`;
          case 1:
            return `(${gen(depth - 1, vector)}${pick(['+', '-', '*', '/'])}${gen(depth - 1, vector)})`;
          case 2:
            return `${gen(depth - 1, false)}${pick(['*', '+', '-'])}${gen(depth - 1, vector)}`;
          case 3:
            return vector
              ? `Normalize(${gen(depth - 1, true)})`
              : `(${gen(depth - 1, true)}|${gen(depth - 1, true)})`;
          case 4:
            return vector
              ? `${gen(depth - 1, true)}**${pick(['2', '3', '-0.5', '0.5', '1.5', 'b'])}`
              : `Sum(${gen(depth - 1, true)})`;
          case 5:
            return `-${gen(depth - 1, vector)}`;
          default:
            return vector
              ? `IfElse(${gen(depth - 1, false)},${gen(depth - 1, true)},${gen(depth - 1, true)})`
              : `(${gen(depth - 1, false)}<${gen(depth - 1, false)})`;
        }
      };
      let count = 0;
      for (let k = 0; k < 400; k++) {
        const text = gen(1 + Math.floor(r() * 4), r() < 0.5);
        const f = parse(text);
        expectRoundTrip(f.node);
        expect(parseFormula(f.toString()).hash).to.equal(f.hash);
        count++;
      }
      expect(count).to.equal(400);
    });
  });
});

/**
 * Graphviz rendering: toDot() on formulas, reductions, Genred gradients and LazyTensors, and the
 * `keops-node graph` command. The DOT text is checked structurally, then rendered to SVG with Graphviz's `dot`
 * when it is installed (Debian package graphviz; the test says so and skips otherwise).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { expect } from 'chai';
import { graphCommand, graphDot, splitAliases } from '../lib/cli/graph';
import { parseFormula, parseReduction } from '../lib/formula';
import { dotString } from '../lib/formula/dot';
import { topoOrder } from '../lib/formula/node';
import { Genred } from '../lib/genred';
import { lazyKernel } from '../lib/kernels/lazy';
import { Pm, Vi, Vj } from '../lib/lazy-tensor';

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)', 's = Pm(1)'];
const ROOT = resolve(__dirname, '..');
const hasDot = spawnSync('dot', ['-V']).status === 0;

function nodeLines(dot: string): string[] {
  return dot.split('\n').filter((l) => /^ {2}(n\d+|top) \[label=/.test(l));
}
function edgeLines(dot: string): string[] {
  return dot.split('\n').filter((l) => / -> /.test(l));
}

/** Renders with Graphviz and checks that every node made it into the SVG. */
function expectRenders(dot: string): void {
  if (!hasDot) return;
  const svg = execFileSync('dot', ['-Tsvg'], { input: dot, encoding: 'utf8' });
  expect(svg).to.contain('<svg');
  expect((svg.match(/class="node"/g) ?? []).length).to.equal(nodeLines(dot).length);
}

function capture(argv: readonly string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = graphCommand(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

describe('toDot', function () {
  this.timeout(60_000);

  before(function () {
    if (!hasDot)
      console.log(
        '    (Graphviz `dot` is not installed: DOT text is checked, not rendered; apt-get install graphviz)',
      );
  });

  it('draws a formula DAG: one node per distinct subformula, labelled with operation and dim', () => {
    const f = parseFormula('Exp(-s*SqDist(x,y))*b + Exp(-s*SqDist(x,y))', ALIASES);
    const dot = f.toDot();
    expect(dot.startsWith('digraph "formula" {\n')).to.equal(true);
    expect(dot.trimEnd().endsWith('}')).to.equal(true);
    const order = topoOrder(f.node);
    expect(nodeLines(dot)).to.have.length(order.length);
    expect(edgeLines(dot)).to.have.length(order.reduce((n, node) => n + node.children.length, 0));
    expect(dot).to.contain('label="Exp\\ndim 1"');
    expect(dot).to.contain('label="x\\nVi #0, dim 3"');
    expect(dot).to.contain('label="b\\nVj #2, dim 2"');
    expect(dot).to.contain('label="s\\nPm #3, dim 1"');
    expect(dot).to.match(/label="Subtract\\ndim 3"/);
    expectRenders(dot);
  });

  it('draws reductions (with a weight formula) and gradient reductions under a reduction node', () => {
    const red = parseReduction('Max_SumShiftExpWeight_Reduction(-SqDist(x,y), 1, b)', ALIASES);
    const dot = red.toDot();
    expect(dot).to.contain('Max_SumShiftExpWeight_Reduction\\nreduce over i (one row per j)');
    expect(dot).to.contain('[label="weight"]');
    expectRenders(dot);
    const g = new Genred('Exp(-s*SqDist(x,y))*b', ALIASES, { axis: 1 });
    expect(g.toDot()).to.contain('Sum_Reduction\\nreduce over j (one row per i)\\noutput dim 2');
    const grad = g.gradient('x').toDot();
    expect(grad).to.contain('x\\nVi #0, dim 3');
    expect(grad).to.contain('output dim 3');
    expectRenders(grad);
  });

  it('draws LazyTensors, their reductions and kernels of the high-level language', () => {
    const x = Vi(new Float64Array(12), 3);
    const y = Vj(new Float64Array(15), 3);
    const K = x.sqdist(y).mul(Pm(0.5)).neg().exp();
    expect(K.toDot(['x', 'y', 'gamma'])).to.contain('gamma\\nPm #2, dim 1');
    expect(K.toDot()).to.contain('Vj #1\\ndim 3');
    const red = K.reduction('Sum', { axis: 1 }).toDot(['x', 'y']);
    expect(red).to.contain('Sum_Reduction');
    expectRenders(red);
    const kernel = lazyKernel('gaussian(x,y) * (1 + linear(u,v)**2)', { x, y, u: x, v: y }, [
      Pm(Float64Array.of(1, 2, 3)),
      null,
    ]);
    const dot = kernel.toDot(['x', 'y', 'gamma0']);
    expect(dot).to.contain('Scalprod\\ndim 1');
    expectRenders(dot);
    expect(() => K.toDot([1 as unknown as string])).to.throw('names must be an array of strings');
  });

  it('escapes labels', () => {
    expect(dotString('a "b" \\ c\nd')).to.equal('"a \\"b\\" \\\\ c\\nd"');
  });
});

describe('keops-node graph', function () {
  this.timeout(120_000);

  it('prints the DOT text of a formula, a reduction and their gradients', () => {
    const f = capture(['Exp(-SqDist(x,y))*b', '-a', 'x=Vi(3), y=Vj(3)', '--aliases', 'b=Vj(2)']);
    expect(f.code, f.err).to.equal(0);
    expect(f.out).to.equal(parseFormula('Exp(-SqDist(x,y))*b', ['x=Vi(3)', 'y=Vj(3)', 'b=Vj(2)']).toDot());
    const g = capture(['Exp(-SqDist(x,y))*b', '-a', 'x=Vi(3); y=Vj(3); b=Vj(2)', '--grad', 'y']);
    expect(g.code, g.err).to.equal(0);
    expect(g.out).to.contain('eta\\nVi #3, dim 2');
    expectRenders(g.out);
    const r = capture([
      'Max_SumShiftExp_Reduction(-SqDist(x,y)*s, 0)',
      '-a',
      'x=Vi(3), y=Vj(3), s=Pm(1)',
      '-g',
      's',
    ]);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.contain('eta\\n');
    expect(r.out).to.contain('saved\\n');
    expectRenders(r.out);
    expect(graphDot('Sum_Reduction(x*eta, 0)', ['x = Vi(1)', 'eta = Vj(1)'], 'x')).to.contain('eta1\\n');
  });

  it('draws high-level kernels (--kernel), scales from the aliases gammak or new scalar parameters', () => {
    const aliases = ['-a', 'x=Vi(3), y=Vj(3), u=Vi(3), v=Vj(3)'];
    const k = capture(['--kernel', 'gaussian(x,y) * (1 + linear(u,v)**2)', ...aliases]);
    expect(k.code, k.err).to.equal(0);
    expect(k.out).to.contain('gamma0\\nPm #4, dim 1');
    expect(k.out).to.contain('Scalprod\\ndim 1');
    expectRenders(k.out);
    const full = capture(['-k', 'cauchy(x,y)', '-a', 'x=Vi(3), y=Vj(3), gamma0=Pm(9)', '--grad', 'gamma0']);
    expect(full.code, full.err).to.equal(0);
    expect(full.out).to.contain('TensorProd');
    expect(full.out).to.contain('eta\\n');
    expectRenders(full.out);
    const missing = capture(['-k', 'gaussian(x,z)', '-a', 'x=Vi(3)']);
    expect(missing.code).to.equal(1);
    expect(missing.err).to.contain("the kernel uses 'z'");
    expect(capture(['-k', 'gaussian(x,y', ...aliases]).err).to.contain('ERR_FORMULA_SYNTAX');
  });

  it('answers bad usage with 2 and bad formulas with 1, on stderr', () => {
    expect(capture(['--help']).out).to.contain('usage: keops-node graph');
    expect(capture([]).code).to.equal(2);
    expect(capture(['x', 'y']).code).to.equal(2);
    expect(capture(['x', '--bogus']).code).to.equal(2);
    const bad = capture(['Exp(x', '-a', 'x=Vi(3)']);
    expect(bad.code).to.equal(1);
    expect(bad.err).to.contain('ERR_FORMULA_SYNTAX');
    expect(bad.out).to.equal('');
    expect(capture(['Exp(x)', '-a', 'x=Vi(3)', '--grad', 'z']).err).to.contain("no variable named 'z'");
  });

  it('splits alias lists at the commas outside parentheses', () => {
    expect(splitAliases('x = Vi(0,3), y=Vj(3); ;b = Pm(1) ')).to.deep.equal([
      'x = Vi(0,3)',
      'y=Vj(3)',
      'b = Pm(1)',
    ]);
  });

  it('runs as a subcommand of the keops-node command', () => {
    const run = spawnSync(
      process.execPath,
      [
        '-r',
        'ts-node/register/transpile-only',
        'lib/cli.ts',
        'graph',
        'SqDist(x,y)',
        '-a',
        'x=Vi(2), y=Vj(2)',
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    expect(run.status, run.stderr).to.equal(0);
    expect(run.stdout.startsWith('digraph "formula" {')).to.equal(true);
    expectRenders(run.stdout);
  });
});

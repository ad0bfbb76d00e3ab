/**
 * The compile-time reduction names and result kinds (lib/genred-types.ts) against the reductions the library
 * resolves at run time, and the exported reference evaluator (`referenceCall`) against a backend call.
 */
import { expect } from 'chai';
import { GENRED_REDUCTION_NAMES, resolveGenredReduction } from '../lib/formula/genred-reductions';
import { INDEX_REDUCTIONS, PAIR_REDUCTIONS, VALUE_REDUCTIONS } from '../lib/genred-types';
import { Genred, parseFormula, referenceCall } from '../lib/index';
import { expectClose, randArray, rng } from './util';

describe('types: reduction names and result kinds', () => {
  it('name the reductions Genred resolves, each with the result kind it has at run time', () => {
    const all = [...VALUE_REDUCTIONS, ...INDEX_REDUCTIONS, ...PAIR_REDUCTIONS];
    expect([...all].sort()).to.deep.equal([...GENRED_REDUCTION_NAMES].sort());
    const f = parseFormula('x-y', ['x = Vi(1)', 'y = Vj(1)']).node;
    const g = parseFormula('y', ['x = Vi(1)', 'y = Vj(1)']).node;
    const kind = (name: string): string => {
      const k = name.includes('KMin') ? 2 : undefined;
      const needsWeight =
        name === 'LogSumExpWeight' || name === 'Max_SumShiftExpWeight' || name.startsWith('S');
      const formula2 = needsWeight && name !== 'Sum' ? g : undefined;
      return resolveGenredReduction(name, f, { axis: 1, k, formula2 }).outputKind;
    };
    for (const name of VALUE_REDUCTIONS) expect(kind(name), name).to.equal('values');
    for (const name of INDEX_REDUCTIONS) expect(kind(name), name).to.equal('indices');
    for (const name of PAIR_REDUCTIONS) expect(kind(name), name).not.to.be.oneOf(['values', 'indices']);
  });
});

describe('referenceCall: the exported float64 reference', function () {
  this.timeout(60_000);
  it('gives what a CPU call gives, for values and for value+index reductions', () => {
    const r = rng(3);
    const [x, y, b] = [randArray(r, 7 * 3), randArray(r, 5 * 3), randArray(r, 5)];
    const aliases = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'];
    const sum = new Genred('Exp(-SqDist(x,y))*b', aliases, { reduction: 'Sum', axis: 1, backend: 'cpu' });
    expectClose(sum.callSync([x, y, b]), referenceCall(sum, [x, y, b]) as Float64Array, 1e-12);
    const knn = new Genred('SqDist(x,y)', aliases.slice(0, 2), {
      reduction: 'KMin_ArgKMin',
      k: 6,
      axis: 1,
      backend: 'cpu',
    });
    const got = knn.callSync([x, y]);
    const want = referenceCall(knn, [x, y]) as { values: Float64Array; indices: Int32Array };
    expect(Array.from(got.indices)).to.deep.equal(Array.from(want.indices));
    expect(want.indices[5]).to.equal(-1);
    expectClose(got.values, want.values, 1e-12);
  });
});

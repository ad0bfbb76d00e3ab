/**
 * Input checking of the public API (issue 9, items 6 and 7a): unknown option keys with a suggestion, wrong
 * option types named, Proxy objects whose traps throw and misused exported constructors all give KeOpsErrors
 * with a code, never a raw TypeError or RangeError.
 */
import { expect } from 'chai';
import * as keops from '../lib/index';
import { Genred, type GenredCallOptions, KeOpsError, parseFormula } from '../lib/index';
import { CALL_OPTION_KEYS } from '../lib/validate';
import { expectKeOpsError } from './util';

const ALIASES = ['x = Vi(1)', 'y = Vj(1)'];
const ARGS = [Float64Array.of(1, 2), Float64Array.of(3, 4, 5)];

/** An object every trap of which throws, as a hostile or buggy caller could pass. */
const hostile = <T extends object>(target: T): T =>
  new Proxy(target, {
    get() {
      throw new TypeError('get trap');
    },
    has() {
      throw new TypeError('has trap');
    },
    ownKeys() {
      throw new TypeError('ownKeys trap');
    },
    getOwnPropertyDescriptor() {
      throw new RangeError('descriptor trap');
    },
  });

async function rejection(p: () => Promise<unknown>): Promise<KeOpsError> {
  try {
    await p();
  } catch (e) {
    expect(e).to.be.instanceOf(KeOpsError);
    return e as KeOpsError;
  }
  throw new Error('expected a rejection');
}

describe('validation: option keys and types', function () {
  this.timeout(60_000);
  const g = new Genred('x*y', ALIASES, { axis: 1, backend: 'cpu' });

  it('refuses an unknown constructor option with a did-you-mean, instead of silently running Sum', () => {
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { reducton: 'Min' } as never),
      'ERR_INVALID_ARGUMENT',
      "unknown option 'reducton'",
      "did you mean 'reduction'?",
    );
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { axes: 1 } as never),
      'ERR_INVALID_ARGUMENT',
      "'axis'",
    );
    const e = expectKeOpsError(
      () => new Genred('x*y', ALIASES, { zzzzzz: 1 } as never),
      'ERR_INVALID_ARGUMENT',
    );
    expect(e.message).not.to.contain('did you mean');
    // NodeGenred accepts its extra keys, Genred does not.
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { argCount: 3 } as never),
      'ERR_INVALID_ARGUMENT',
      'argCount',
    );
    const node = parseFormula('x*y', ALIASES).node;
    expect(new keops.NodeGenred(node, { argCount: 3 }).argCount).to.equal(3);
  });

  it('refuses unknown call and grad options; accepts every declared call option, signal included', async () => {
    expectKeOpsError(
      () => g.callSync(ARGS, { thread: 2 } as never),
      'ERR_INVALID_ARGUMENT',
      "did you mean 'threads'?",
    );
    const e = await rejection(() => g.call(ARGS, { rangs: null } as never));
    expect(e.code).to.equal('ERR_INVALID_ARGUMENT');
    expect(e.message).to.contain("did you mean 'ranges'?");
    await rejection(() => g.grad(ARGS, { wrt: 'x', cotangent: new Float64Array(2), cotangnt: 1 } as never));
    expect(CALL_OPTION_KEYS).to.include('signal');
    const sum = g.callSync(ARGS, {
      signal: new AbortController().signal,
      threads: 1,
      output: 'host',
    } as GenredCallOptions);
    expect(Array.from(sum as Float64Array)).to.deep.equal([12, 24]);
  });

  it('refuses unknown LazyTensor reduction and KernelSolve options too', () => {
    const x = keops.Vi(Float64Array.of(1, 2), 1);
    const y = keops.Vj(Float64Array.of(3, 4, 5), 1);
    expectKeOpsError(
      () => x.mul(y).sumSync(1, { sumSchme: 'kahan_scheme' } as never),
      'ERR_INVALID_ARGUMENT',
      "did you mean 'sumScheme'?",
    );
    expect(Array.from(x.mul(y).sumSync(1, { threads: 1 }))).to.deep.equal([12, 24]);
    expectKeOpsError(
      () =>
        new keops.KernelSolve('Exp(-SqDist(x,y))*a', ['x = Vi(1)', 'y = Vj(1)', 'a = Vj(1)'], 'a', {
          axis: 1,
          symetry: 'assume',
        } as never),
      'ERR_INVALID_ARGUMENT',
      "did you mean 'symmetry'?",
    );
  });

  it('says which type a wrong option value has', async () => {
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { axis: '1' } as never),
      'ERR_REDUCTION',
      'a string ("1")',
    );
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { reduction: 3 } as never),
      'ERR_REDUCTION',
      'a number (3)',
    );
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { backend: 'gpu' } as never),
      'ERR_INVALID_ARGUMENT',
      'a string ("gpu")',
    );
    expectKeOpsError(
      () => new Genred('x*y', ALIASES, { threads: [2] } as never),
      'ERR_INVALID_ARGUMENT',
      'an array',
    );
    expectKeOpsError(() => g.callSync(ARGS, { device: null } as never), 'ERR_INVALID_ARGUMENT', 'null');
    expectKeOpsError(() => g.callSync(ARGS, 'fast' as never), 'ERR_INVALID_ARGUMENT', 'a string ("fast")');
    const e = await rejection(() => g.call(ARGS, { output: true } as never));
    expect(e.message).to.contain('a boolean (true)');
  });
});

describe('validation: hostile objects and misused constructors give KeOpsErrors', function () {
  this.timeout(60_000);
  const g = new Genred('x*y', ALIASES, { axis: 1, backend: 'cpu' });

  it('Proxy options, arguments and argument objects whose traps throw', async () => {
    expectKeOpsError(() => new Genred('x*y', ALIASES, hostile({})), 'ERR_INVALID_ARGUMENT', 'ownKeys trap');
    expectKeOpsError(() => g.callSync(ARGS, hostile({})), 'ERR_INVALID_ARGUMENT', 'trap');
    expectKeOpsError(() => g.callSync(hostile([...ARGS])), 'ERR_ARG_TYPE', 'trap');
    expectKeOpsError(
      () => g.callSync([hostile({ data: ARGS[0], shape: [2, 1] }), ARGS[1]]),
      'ERR_ARG_TYPE',
      'trap',
    );
    const getter = {
      get data(): Float64Array {
        throw new RangeError('no data');
      },
      shape: [2, 1],
    };
    expectKeOpsError(() => g.callSync([getter as never, ARGS[1]]), 'ERR_ARG_TYPE', 'RangeError: no data');
    const e = await rejection(() => g.call(hostile([...ARGS])));
    expect(e.code).to.equal('ERR_ARG_TYPE');
    const revocable = Proxy.revocable([...ARGS], {});
    revocable.revoke();
    expectKeOpsError(() => g.callSync(revocable.proxy), 'ERR_ARG_TYPE', 'revoked');
    await rejection(() => g.grad(ARGS, hostile({ wrt: 'x' })));
  });

  it('exported constructors called with the wrong arguments', () => {
    const misuses: [string, () => unknown][] = [
      ['Formula', () => new keops.Formula(undefined as never, undefined as never)],
      ['Formula', () => new keops.Formula('x' as never, 'y' as never)],
      ['NodeGenred', () => new keops.NodeGenred(undefined as never)],
      ['NodeGenred', () => new keops.NodeGenred('x*y' as never, {})],
      ['NodeKernelSolve', () => new keops.NodeKernelSolve({} as never, {} as never, {} as never)],
      ['GenredGradientReduction', () => new keops.GenredGradientReduction({} as never, {} as never, {})],
      ['ReductionRunner', () => new keops.ReductionRunner({} as never)],
      ['LazyReduction', () => new keops.LazyReduction('x' as never, 'y' as never, 0)],
      ['DeviceArray', () => new (keops.DeviceArray as unknown as new () => unknown)()],
      ['LazyTensor', () => new (keops.LazyTensor as unknown as new (...a: unknown[]) => unknown)({})],
      ['Genred', () => new keops.Genred(undefined as never, undefined as never)],
      [
        'KernelSolve',
        () => new keops.KernelSolve(undefined as never, undefined as never, undefined as never),
      ],
    ];
    for (const [name, misuse] of misuses) {
      let error: unknown;
      try {
        misuse();
      } catch (e) {
        error = e;
      }
      expect(error, `${name}: ${String(error)}`).to.be.instanceOf(KeOpsError);
      expect((error as KeOpsError).code, name).to.be.a('string');
    }
  });
});

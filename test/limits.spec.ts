/**
 * Bounded planning (issue 9, item 2): batch counts, output sizes, K and index ranges are checked before anything
 * is allocated or run, and refused in milliseconds with a KeOpsError.
 */
import { expect } from 'chai';
import { Genred } from '../lib/genred';
import { KeOpsError } from '../lib/errors';
import { MAX_BATCH_ENTRIES, MAX_INDEXED_ROWS, checkOutputSize } from '../lib/backend/limits';
import { expectKeOpsError } from './util';

/** Rejects with `code` within `ms` milliseconds. */
async function expectQuickRejection(
  run: () => Promise<unknown>,
  code: string,
  ms: number,
): Promise<KeOpsError> {
  const start = Date.now();
  let error: unknown;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  expect(error, 'the call must fail').to.be.instanceOf(KeOpsError);
  expect((error as KeOpsError).code).to.equal(code);
  expect(Date.now() - start, 'refused up front').to.be.below(ms);
  return error as KeOpsError;
}

describe('limits: calls are bounded up front', function () {
  this.timeout(60_000);
  const aliases = ['x = Vi(1)', 'y = Vj(1)'];

  it('refuses a billion empty batch entries quickly (ERR_OUTPUT_TOO_LARGE)', async () => {
    const g = new Genred('x*y', aliases, { reduction: 'Sum', axis: 1, backend: 'cpu' });
    const args = [{ data: new Float64Array(0), shape: [1e9, 0, 1] }, Float64Array.of(1)];
    const e = await expectQuickRejection(() => g.call(args), 'ERR_OUTPUT_TOO_LARGE', 2000);
    expect(e.message).to.match(/batch entries/);
    expectKeOpsError(() => g.callSync(args), 'ERR_OUTPUT_TOO_LARGE');
    // Batch dims whose product overflows are refused as quickly.
    const huge = [{ data: new Float64Array(0), shape: [1e15, 1e15, 0, 1] }, Float64Array.of(1)];
    await expectQuickRejection(() => g.call(huge), 'ERR_OUTPUT_TOO_LARGE', 2000);
    // At the limit, planning works.
    const ok = [{ data: new Float64Array(0), shape: [MAX_BATCH_ENTRIES, 0, 1] }, Float64Array.of(1)];
    expect((await g.call(ok)).length).to.equal(0);
  });

  it('refuses K beyond the K-nearest bound at construction (ERR_REDUCTION), not with a crash', () => {
    const start = Date.now();
    expectKeOpsError(
      () => new Genred('SqDist(x,y)', aliases, { reduction: 'ArgKMin', k: 1048576, axis: 1 }),
      'ERR_REDUCTION',
      /K × dim/,
    );
    expectKeOpsError(
      () => new Genred('x-y', ['x = Vi(2)', 'y = Vj(2)'], { reduction: 'KMin', k: 16384, axis: 1 }),
      'ERR_REDUCTION',
    );
    expect(Date.now() - start).to.be.below(1000);
  });

  it('refuses an output larger than a typed array or the machine memory (ERR_OUTPUT_TOO_LARGE)', () => {
    const layout = { dimredVal: 4, dimredIdx: 0, dimVal: 4, dimIdx: 0 };
    expectKeOpsError(() => checkOutputSize(2 ** 40, layout, 8), 'ERR_OUTPUT_TOO_LARGE', /typed array/);
    expectKeOpsError(() => checkOutputSize(2 ** 30, layout, 8), 'ERR_OUTPUT_TOO_LARGE', /memory/);
    checkOutputSize(1000, layout, 8);
  });

  it('refuses an index reduction over 2^31 rows (ERR_INDEX_OVERFLOW) instead of wrapping indices', async function () {
    let y: Float32Array;
    try {
      // Never touched: the call is refused before any native work, so the pages are never faulted in.
      y = new Float32Array(MAX_INDEXED_ROWS + 1);
    } catch {
      this.skip(); // this Node cannot even make such an array
    }
    const x = Float32Array.of(0);
    const argmin = new Genred('SqDist(x,y)', aliases, { reduction: 'ArgMin', axis: 1, backend: 'cpu' });
    await expectQuickRejection(() => argmin.call([x, y]), 'ERR_INDEX_OVERFLOW', 2000);
    const kmin = new Genred('SqDist(x,y)', aliases, { reduction: 'KMin', k: 2, axis: 1, backend: 'cpu' });
    expectKeOpsError(() => kmin.callSync([x, y]), 'ERR_INDEX_OVERFLOW');
  });
});

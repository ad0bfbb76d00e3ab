/**
 * Chunked runs over several GPUs (`devices`), on the emulated GPU with three fake devices (or the real GPUs):
 * the reduced axis is split over the devices and merged to the CPU's result; a failing device is a typed error
 * naming it, with no hang.
 */
import { expect } from 'chai';
import { runtimeInfo } from '../lib/backend/cuda/runtime';
import { Genred } from '../lib/genred';
import { reduceChunked } from '../lib/jobs/chunked';
import { PartialReducer } from '../lib/jobs/partial';
import { useCudaTarget, useFakeCudaDevices, withFakeEnv } from './cuda-target';
import { expectRelative, randArray, rejection, rng, useTestKernelCache } from './util';

const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];

describe('chunked runs on several GPUs', function () {
  this.timeout(600_000);
  useTestKernelCache();
  useFakeCudaDevices(3);
  const target = useCudaTarget();
  beforeEach(function () {
    target.require(this);
  });

  const r = rng(41);
  const M = 33;
  const N = 150;
  const [x, y, b] = [randArray(r, 3 * M), randArray(r, 3 * N), randArray(r, 2 * N)].map((a) =>
    Float32Array.from(a),
  );

  it('splits the reduced axis over the devices and merges to the CPU result (ArgKMin exact, Sum within 1e-6)', async function () {
    const count = (await runtimeInfo()).devices.length;
    const devices = Array.from({ length: Math.min(count, 3) }, (_, k) => k);
    for (const [reduction, k, formula] of [
      ['ArgKMin', 5, 'SqDist(x,y)'],
      ['Sum', undefined, 'Exp(-SqDist(x,y))*b'],
    ] as const) {
      const options = { reduction, axis: 1 as const, ...(k === undefined ? {} : { k }) };
      const cpu = await new Genred(formula, ALIASES, { ...options, backend: 'cpu' }).call([x, y, b]);
      const reducer = new PartialReducer(new Genred(formula, ALIASES, { ...options, backend: 'cuda' }));
      for (const which of [devices, 'all'] as const) {
        const result = await reduceChunked(reducer, [x, y, b], {
          devices: which,
          chunkRows: { reduced: 17 },
        });
        if (reduction === 'ArgKMin')
          expect(Array.from(result as Int32Array)).to.deep.equal(Array.from(cpu as Int32Array));
        else
          expectRelative(
            result as Float32Array,
            cpu as Float32Array,
            1e-6,
            `${reduction} on ${String(which)}`,
          );
      }
    }
  });

  it('a failing device is a typed error naming it', async function () {
    if (target.kind !== 'emulated') this.skip();
    const reducer = new PartialReducer(
      new Genred('SqDist(x,y)', ALIASES, { reduction: 'ArgKMin', k: 5, axis: 1, backend: 'cuda' }),
    );
    const error = await withFakeEnv({ KEOPS_FAKE_CUDA_FAIL_DEVICE: '2' }, () =>
      rejection(reduceChunked(reducer, [x, y, b], { devices: [0, 1, 2], chunkRows: { reduced: 10 } })),
    );
    expect(error.code).to.equal('ERR_CUDA');
    expect(error.message).to.contain('GPU 2 failed');
    const missing = await rejection(reduceChunked(reducer, [x, y, b], { devices: [0, 7] }));
    expect(missing.code).to.equal('ERR_NO_GPU');
    expect(missing.message).to.contain('GPU 7');
  });
});

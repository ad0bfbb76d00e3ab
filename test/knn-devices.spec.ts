/**
 * knn on GPUs (the emulated GPU with three fake devices, or the real ones): the CUDA kernel ranks ties smallest id
 * first as the CPU does (integer data: exact values, so the ids must be the CPU's), and the bytes do not depend
 * on how many devices share the base or how it is chunked.
 */
import { expect } from 'chai';
import { knn, type KnnResult } from '../lib/knn/index';
import { useCudaTarget, useFakeCudaDevices } from './cuda-target';
import { rng, useTestKernelCache } from './util';

const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe('knn on several GPUs', function () {
  this.timeout(600_000);
  useTestKernelCache();
  useFakeCudaDevices(3);
  const target = useCudaTarget();
  beforeEach(function () {
    target.require(this);
  });

  it('ids and distances of the CPU, the same bytes on 1 or 2 devices and any chunking', async () => {
    const r = rng(51);
    const [M, N, D, k] = [21, 160, 3, 7];
    const ints = (n: number) => Float32Array.from({ length: n }, () => Math.floor(r() * 5) - 2);
    const queries = { data: ints(M * D), dim: D };
    const base = { data: ints(N * D), dim: D }; // 125 distinct rows at most: many ties, also at rank k
    const cpu = await knn(queries, base, { k, backend: 'cpu' });
    const same = (a: KnnResult, what: string) => {
      expect(bytesOf(a.ids).equals(bytesOf(cpu.ids)), `${what}: ids`).to.equal(true);
      expect(bytesOf(a.distances).equals(bytesOf(cpu.distances)), `${what}: distances`).to.equal(true);
    };
    same(await knn(queries, base, { k, devices: [0] }), 'one device');
    // Not GPU 2: chunked-devices.spec fails it on purpose, and the emulator keeps a failed device for the process.
    same(await knn(queries, base, { k, devices: [0, 1], chunkRows: { base: 23 } }), 'two devices');
    same(
      await knn(queries, base, { k, devices: [1, 0], chunkRows: { queries: 8, base: 50 } }),
      'devices 1 and 0',
    );
  });
});

/**
 * Plans, shards and merges in one process (no Redis): shard results written and merged give exactly the output of
 * the same plan run locally, and the reduction's result; damaged, missing, stale or foreign shard results are
 * ERR_SHARD naming the shard and the file.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { Genred } from '../lib/genred';
import { KeOpsError } from '../lib/errors';
import { createKnnPlan, createReductionPlan } from '../lib/distributed/planner';
import { knn } from '../lib/knn';
import {
  canonicalJson,
  evenSlices,
  type JobPlan,
  planJson,
  readPlan,
  shardCount,
  writePlan,
} from '../lib/distributed/plan';
import { mergePlan, runPlanLocally, runShard } from '../lib/distributed/shards';
import { startWorker } from '../lib/distributed/queue';
import { shardLocation } from '../lib/distributed/shard-file';
import { expectClose, randArray, rejection, rng } from './util';
import { memoryStorage } from './distributed-util';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

async function rejects(promise: Promise<unknown>, code: string): Promise<KeOpsError> {
  const e = await rejection(promise);
  expect(e.code, e.message).to.equal(code);
  return e;
}

const M = 37;
const N = 53;

function setup(seed: number) {
  const r = rng(seed);
  const storage = memoryStorage();
  const x = randArray(r, M * 3);
  const y = randArray(r, N * 3);
  const b = randArray(r, N * 2);
  storage.vectors.set('/data/x', { data: x, dim: 3, dtype: 'float64' });
  storage.vectors.set('/data/y', { data: y, dim: 3, dtype: 'float64' });
  storage.vectors.set('/data/b', { data: b, dim: 2, dtype: 'float64' });
  return { storage, x, y, b };
}

const sumRequest = (slices: { querySlices: number; baseSlices: number; chunkRows: number }) => ({
  formula: 'Exp(-g*SqDist(x,y))*b',
  aliases: ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)', 'g = Pm(1)'],
  reduction: 'Sum',
  axis: 1 as const,
  dtype: 'float64' as const,
  inputs: { x: '/data/x', y: '/data/y', b: '/data/b' },
  parameters: { g: [0.7] },
  shardDir: '/job/shards',
  outputs: { values: '/job/values.npy' },
  ...slices,
});

async function runAllShards(plan: JobPlan, storage: ReturnType<typeof memoryStorage>): Promise<void> {
  // Reverse order: the merge order comes from the plan, not from when shards finish.
  for (let s = shardCount(plan) - 1; s >= 0; s--) await runShard(plan, s, { storage, backend: 'cpu' });
}

describe('distributed plans, shards and merges (in process)', function () {
  this.timeout(120000);

  it('cuts rows into even, consecutive slices', () => {
    expect(evenSlices(10, 3)).to.deep.equal([
      [0, 3],
      [3, 6],
      [6, 10],
    ]);
    expect(evenSlices(2, 5)).to.deep.equal([
      [0, 1],
      [1, 2],
    ]);
    expect(evenSlices(0, 4)).to.deep.equal([[0, 0]]);
  });

  it('is deterministic: the same request gives the same plan text and hash', async () => {
    const { storage } = setup(1);
    const a = await createReductionPlan(sumRequest({ querySlices: 3, baseSlices: 4, chunkRows: 7 }), storage);
    const b = await createReductionPlan(sumRequest({ querySlices: 3, baseSlices: 4, chunkRows: 7 }), storage);
    expect(planJson(a)).to.equal(planJson(b));
    const c = await createReductionPlan(sumRequest({ querySlices: 3, baseSlices: 4, chunkRows: 8 }), storage);
    expect(c.hash).to.not.equal(a.hash);
    expect(shardCount(a)).to.equal(12);
    expect(canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] })).to.equal('{"a":[2,{"c":4,"d":3}],"b":1}');
  });

  it('Sum: sharded and merged = the local run of the plan (bytes) ≈ one Genred call', async () => {
    const { storage, x, y, b } = setup(2);
    const plan = await createReductionPlan(
      sumRequest({ querySlices: 3, baseSlices: 4, chunkRows: 7 }),
      storage,
    );
    await runAllShards(plan, storage);
    const merged = await mergePlan(plan, { storage });
    expect(merged.outputs).to.deep.equal({ values: '/job/values.npy' });
    const distributed = storage.vectors.get('/job/values.npy');
    storage.vectors.delete('/job/values.npy');
    await runPlanLocally(plan, { storage, backend: 'cpu' });
    const local = storage.vectors.get('/job/values.npy');
    expect(distributed?.dim).to.equal(2);
    expect(Buffer.from((distributed?.data as Float64Array).buffer)).to.deep.equal(
      Buffer.from((local?.data as Float64Array).buffer),
    );
    const g = new Genred('Exp(-g*SqDist(x,y))*b', ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)', 'g = Pm(1)'], {
      axis: 1,
      backend: 'cpu',
    });
    const direct = await g.call([x, y, b, new Float64Array([0.7])]);
    expectClose(distributed?.data as Float64Array, direct as Float64Array, 1e-12, 1e-14);
  });

  it('ArgKMin: exact global indices, identical however the plan is cut', async () => {
    const { storage, x, y } = setup(3);
    const request = (q: number, bs: number, chunk: number) => ({
      formula: 'SqDist(x,y)',
      aliases: ['x = Vi(3)', 'y = Vj(3)'],
      reduction: 'ArgKMin',
      k: 4,
      axis: 1 as const,
      dtype: 'float64' as const,
      inputs: { x: '/data/x', y: '/data/y' },
      shardDir: `/job/shards-${q}-${bs}-${chunk}`,
      outputs: { indices: `/job/ids-${q}-${bs}-${chunk}` },
      querySlices: q,
      baseSlices: bs,
      chunkRows: chunk,
    });
    const expected = await new Genred('SqDist(x,y)', ['x = Vi(3)', 'y = Vj(3)'], {
      reduction: 'ArgKMin',
      k: 4,
      axis: 1,
      backend: 'cpu',
    }).call([x, y]);
    for (const [q, bs, chunk] of [
      [1, 1, 1000],
      [4, 7, 3],
      [2, 5, 11],
    ]) {
      const plan = await createReductionPlan(request(q, bs, chunk), storage);
      await runAllShards(plan, storage);
      await mergePlan(plan, { storage });
      const ids = storage.vectors.get(`/job/ids-${q}-${bs}-${chunk}`);
      expect(ids?.dtype).to.equal('int32');
      expect([...(ids?.data as Int32Array)]).to.deep.equal([...expected]);
    }
  });

  for (const [metric, excludeSelf] of [
    ['l2', false],
    ['cosine', false],
    ['l2', true],
  ] as const) {
    it(`k-NN (${metric}${excludeSelf ? ', excludeSelf' : ''}): ids and distances byte-identical to knn()`, async () => {
      const r = rng(11);
      const storage = memoryStorage();
      const D = 5;
      // uint8 rows with many ties: the (distance, id) order must survive the shard cuts.
      const base = Uint8Array.from({ length: 61 * D }, () => Math.floor(r() * 3));
      const queries = excludeSelf ? base : Uint8Array.from({ length: 29 * D }, () => Math.floor(r() * 3));
      storage.vectors.set('/data/base', { data: base, dim: D, dtype: 'uint8' });
      storage.vectors.set('/data/queries', { data: queries, dim: D, dtype: 'uint8' });
      const plan = await createKnnPlan(
        {
          queries: '/data/queries',
          base: '/data/base',
          k: 6,
          metric,
          excludeSelf,
          querySlices: 3,
          baseSlices: 4,
          chunkRows: 5,
          shardDir: '/knn/shards',
          outputs: { ids: '/knn/ids', distances: '/knn/distances' },
        },
        storage,
      );
      await runAllShards(plan, storage);
      await mergePlan(plan, { storage });
      const expected = await knn(
        { data: queries, dim: D },
        { data: base, dim: D },
        { k: 6, metric, excludeSelf, backend: 'cpu' },
      );
      const ids = storage.vectors.get('/knn/ids')?.data as Int32Array;
      const distances = storage.vectors.get('/knn/distances')?.data as Float32Array;
      expect(Buffer.from(ids.buffer)).to.deep.equal(Buffer.from(expected.ids.buffer));
      expect(Buffer.from(distances.buffer)).to.deep.equal(Buffer.from(expected.distances.buffer));
    });
  }

  it('a shard run twice is harmless; a stored valid result is reused', async () => {
    const { storage } = setup(4);
    const plan = await createReductionPlan(
      sumRequest({ querySlices: 2, baseSlices: 2, chunkRows: 100 }),
      storage,
    );
    const first = await runShard(plan, 1, { storage, backend: 'cpu' });
    const bytes = storage.bytes.get(first.location);
    const again = await runShard(plan, 1, { storage, backend: 'cpu' });
    expect(again.reused).to.equal(true);
    const forced = await runShard(plan, 1, { storage, backend: 'cpu', force: true });
    expect(forced.reused).to.equal(false);
    expect(Buffer.from(storage.bytes.get(first.location) as Uint8Array)).to.deep.equal(
      Buffer.from(bytes as Uint8Array),
    );
  });

  it('merge: missing, corrupt, foreign and misplaced shard results are ERR_SHARD naming shard and file', async () => {
    const { storage } = setup(5);
    const plan = await createReductionPlan(
      sumRequest({ querySlices: 2, baseSlices: 2, chunkRows: 100 }),
      storage,
    );
    await runShard(plan, 0, { storage, backend: 'cpu' });
    await runShard(plan, 3, { storage, backend: 'cpu' });
    const missing = await rejects(mergePlan(plan, { storage }), 'ERR_SHARD');
    expect(missing.message).to.match(/2 of 4 shard results are missing/);
    expect(missing.message).to.include(shardLocation(plan, storage, 1));
    expect(storage.vectors.has('/job/values.npy')).to.equal(false);
    await runShard(plan, 1, { storage, backend: 'cpu' });
    await runShard(plan, 2, { storage, backend: 'cpu' });

    // One flipped byte in the middle of a result.
    const location = shardLocation(plan, storage, 2);
    const good = storage.bytes.get(location) as Uint8Array;
    const bad = good.slice();
    bad[Math.floor(bad.length / 2)] ^= 0x40;
    storage.bytes.set(location, bad);
    const corrupt = await rejects(mergePlan(plan, { storage }), 'ERR_SHARD');
    expect(corrupt.message).to.include('shard 2 (query rows [18, 37), base rows [0, 26))');
    expect(corrupt.message).to.include(location);
    expect(corrupt.message).to.match(/checksum/);
    expect(storage.vectors.has('/job/values.npy')).to.equal(false);

    // Another shard's result under this name.
    storage.bytes.set(location, storage.bytes.get(shardLocation(plan, storage, 1)) as Uint8Array);
    const misplaced = await rejects(mergePlan(plan, { storage }), 'ERR_SHARD');
    expect(misplaced.message).to.match(/result of shard 1/);

    // The same shard of another plan (other parameter value).
    const other = await createReductionPlan(
      { ...sumRequest({ querySlices: 2, baseSlices: 2, chunkRows: 100 }), parameters: { g: [0.5] } },
      storage,
    );
    await runShard(other, 2, { storage, backend: 'cpu', force: true });
    const foreign = await rejects(mergePlan(plan, { storage }), 'ERR_SHARD');
    expect(foreign.message).to.match(/belongs to another plan/);

    // The partial inside damaged but the envelope re-sealed: the partial's own check is the cause.
    const resealed = good.slice();
    resealed[resealed.length - 32 - 100] ^= 0x01;
    resealed.set(
      createHash('sha256')
        .update(resealed.subarray(0, resealed.length - 32))
        .digest(),
      resealed.length - 32,
    );
    storage.bytes.set(location, resealed);
    const inner = await rejects(mergePlan(plan, { storage }), 'ERR_SHARD');
    expect(inner.message).to.match(/ERR_PARTIAL_FORMAT/);
    expect((inner.cause as KeOpsError).code).to.equal('ERR_PARTIAL_FORMAT');

    storage.bytes.set(location, good);
    await mergePlan(plan, { storage });
    expect(storage.vectors.has('/job/values.npy')).to.equal(true);
  });

  it('plan files: written whole, read back equal, an edited one is ERR_FILE_FORMAT', async () => {
    const { storage } = setup(6);
    const plan = await createReductionPlan(
      sumRequest({ querySlices: 2, baseSlices: 3, chunkRows: 5 }),
      storage,
    );
    const dir = mkdtempSync(join(tmpdir(), 'keops-plan-'));
    try {
      const path = join(dir, 'job.plan.json');
      await writePlan(path, plan);
      expect(await readPlan(path)).to.deep.equal(JSON.parse(planJson(plan)));
      writeFileSync(path, readFileSync(path, 'utf8').replace('"chunkRows": 5', '"chunkRows": 6'));
      const e = await rejects(readPlan(path), 'ERR_FILE_FORMAT');
      expect(e.message).to.match(/hash does not match/);
      writeFileSync(path, '{ nope');
      await rejects(readPlan(path), 'ERR_FILE_FORMAT');
      await rejects(readPlan(join(dir, 'absent.json')), 'ERR_FILE_IO');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad requests are typed errors', async () => {
    const { storage } = setup(7);
    const worker = { redis: 'redis://127.0.0.1:1', storage };
    await rejects(startWorker({ ...worker, devices: [0], concurrency: 2 }), 'ERR_INVALID_ARGUMENT');
    await rejects(startWorker({ ...worker, concurrency: 0 }), 'ERR_INVALID_ARGUMENT');
    await rejects(startWorker({ ...worker, queue: 'no spaces' }), 'ERR_INVALID_ARGUMENT');
    const base = sumRequest({ querySlices: 1, baseSlices: 1, chunkRows: 10 });
    await rejects(
      createReductionPlan({ ...base, inputs: { x: '/data/x', y: '/data/y' } }, storage),
      'ERR_INVALID_ARGUMENT',
    );
    await rejects(
      createReductionPlan({ ...base, inputs: { ...base.inputs, b: '/data/x' } }, storage),
      'ERR_ARG_SHAPE',
    );
    await rejects(createReductionPlan({ ...base, parameters: {} }, storage), 'ERR_INVALID_ARGUMENT');
    await rejects(createReductionPlan({ ...base, formula: 'Exp(' }, storage), 'ERR_FORMULA_SYNTAX');
    await rejects(
      createReductionPlan({ ...base, inputs: { ...base.inputs, y: '/nowhere' } }, storage),
      'ERR_FILE_IO',
    );
    await rejects(createReductionPlan({ ...base, querySlices: 0 }, storage), 'ERR_INVALID_ARGUMENT');
    await rejects(
      createReductionPlan({ ...base, outputs: { indices: '/x' } }, storage),
      'ERR_INVALID_ARGUMENT',
    );
  });
});

/**
 * k-NN jobs over files (issue 12, item 4): results against a float64 brute force, output bytes independent of
 * blocks / memory / threads, abort and resume giving the same bytes, checkpoints of other jobs, corrupt ones.
 */
import { existsSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { openVectorFile } from '../lib/io/vector-file';
import { vectorsFromArray } from '../lib/io/vector-source';
import type { KeOpsError } from '../lib/errors';
import { type Checkpoint, jobHash, readCheckpoint, writeCheckpoint } from '../lib/jobs/checkpoint';
import {
  CHECKPOINT_SUFFIX,
  type KnnJobOptions,
  LOCK_SUFFIX,
  PARTIAL_SUFFIX,
  partialPathOf,
  runKnnJob,
} from '../lib/jobs/knn-job';
import {
  bruteForceKnn,
  integerPoints,
  readBin,
  scratchFolder,
  type TestMetric,
  writeFbin,
} from './knn-fixtures';
import { expectClose, rejection } from './util';

/** All values of a vector file, as numbers (through lib/io's reader). */
async function readAll(
  path: string,
): Promise<{ rows: number; dim: number; dtype: string; values: number[] }> {
  const file = await openVectorFile(path);
  try {
    const data = await file.read(0, file.rows);
    return { rows: file.rows, dim: file.dim, dtype: file.dtype, values: Array.from(data, Number) };
  } finally {
    await file.close();
  }
}

const DIM = 6;
const BASE_ROWS = 300;
const QUERY_ROWS = 120;

describe('k-NN jobs over files', function () {
  this.timeout(60_000);
  const scratch = scratchFolder('knn-job');
  const dir = scratch.dir;
  const baseData = integerPoints(1, BASE_ROWS, DIM);
  const queryData = integerPoints(2, QUERY_ROWS, DIM);
  const basePath = join(dir, 'base.fbin');
  const queryPath = join(dir, 'queries.fbin');
  let run = 0;
  /** Output paths of a fresh job. */
  const outputs = () => {
    run++;
    return { out: join(dir, `ids-${run}.ibin`), distancesOut: join(dir, `distances-${run}.fbin`) };
  };
  const job = (extra: Partial<KnnJobOptions> = {}): KnnJobOptions => ({
    base: basePath,
    queries: queryPath,
    k: 7,
    ...outputs(),
    ...extra,
  });
  const bytes = (path: string) => readFileSync(path);

  before(() => {
    writeFbin(basePath, baseData, DIM);
    writeFbin(queryPath, queryData, DIM);
  });
  after(() => scratch.remove());

  it('writes the ids and distances of the float64 brute force (ties by id), leaving no temporary files', async () => {
    const options = job({ blockRows: 25 });
    const result = await runKnnJob(options);
    expect(result).to.include({ rows: QUERY_ROWS, baseRows: BASE_ROWS, k: 7, resumedRows: 0 });
    expect(result.outputs).to.deep.equal([options.out, options.distancesOut]);
    const expected = bruteForceKnn(queryData, baseData, DIM, 7);
    const ids = readBin(options.out, 'int32');
    const distances = readBin(options.distancesOut as string, 'float32');
    expect([ids.rows, ids.dim, distances.rows, distances.dim]).to.deep.equal([QUERY_ROWS, 7, QUERY_ROWS, 7]);
    expect(ids.values).to.deep.equal(expected.ids);
    expect(distances.values).to.deep.equal(expected.distances); // integer points: exact in float32
    expect(existsSync(options.out + CHECKPOINT_SUFFIX)).to.equal(false);
    expect(readdirSync(dir).filter((f) => /partial|checkpoint|lock|tmp/.test(f))).to.deep.equal([]);
  });

  it('matches the brute force for every metric, and for a k-NN graph without self (queries = base)', async () => {
    const metrics: TestMetric[] = ['l2', 'euclidean', 'ip', 'cosine', 'l1'];
    for (const metric of metrics) {
      const options = job({ metric, blockRows: 33 });
      await runKnnJob(options);
      const expected = bruteForceKnn(queryData, baseData, DIM, 7, metric);
      const ids = readBin(options.out, 'int32').values;
      const distances = readBin(options.distancesOut as string, 'float32').values;
      if (metric === 'cosine') {
        // float32 cosines of different pairs may round to the same value: check distances, and the ids' own.
        expectClose(distances, expected.distances, 1e-5, 1e-6, metric);
        const own = ids.map((id, n) => {
          const q = Math.floor(n / 7);
          return bruteForceKnn(
            queryData.subarray(q * DIM, (q + 1) * DIM),
            baseData.subarray(id * DIM, (id + 1) * DIM),
            DIM,
            1,
            metric,
          ).distances[0];
        });
        expectClose(own, expected.distances, 1e-5, 1e-6, `${metric} ids`);
      } else {
        expect(ids, metric).to.deep.equal(expected.ids);
        expectClose(distances, expected.distances, metric === 'euclidean' ? 1e-6 : 0, 0, metric);
      }
    }
    const graph = job({ queries: undefined, excludeSelf: true, blockRows: 64 });
    const result = await runKnnJob(graph);
    expect(result.rows).to.equal(BASE_ROWS);
    const expected = bruteForceKnn(baseData, baseData, DIM, 7, 'l2', true);
    expect(readBin(graph.out, 'int32').values).to.deep.equal(expected.ids);
    expect(readBin(graph.distancesOut as string, 'float32').values).to.deep.equal(expected.distances);
  });

  it('writes .ivecs and .npy results (float64 distances from float64 inputs), -1 / +inf past the base', async () => {
    const small = vectorsFromArray(baseData.slice(0, 5 * DIM), DIM, { name: 'five rows' });
    const queries = vectorsFromArray(queryData.slice(0, 9 * DIM), DIM, { name: 'nine queries' });
    const options = {
      base: small,
      queries,
      k: 7,
      out: join(dir, 'wide-ids.ivecs'),
      distancesOut: join(dir, 'wide-distances.npy'),
    };
    await runKnnJob(options);
    const expected = bruteForceKnn(queryData.slice(0, 9 * DIM), baseData.slice(0, 5 * DIM), DIM, 7);
    const ids = await readAll(options.out);
    const distances = await readAll(options.distancesOut);
    expect([ids.rows, ids.dim, ids.dtype]).to.deep.equal([9, 7, 'int32']);
    expect([distances.rows, distances.dim, distances.dtype]).to.deep.equal([9, 7, 'float64']);
    expect(ids.values).to.deep.equal(expected.ids);
    expect(distances.values).to.deep.equal(expected.distances);
    expect(ids.values.filter((id) => id === -1)).to.have.length(9 * 2);
    const npy = { ...options, out: join(dir, 'ids.npy'), distancesOut: join(dir, 'distances.fvecs') };
    await runKnnJob(npy);
    expect((await readAll(npy.out)).values).to.deep.equal(expected.ids);
    expect((await readAll(npy.distancesOut)).dtype).to.equal('float32');
    const badFormat = await rejection(runKnnJob({ ...options, out: join(dir, 'ids.fbin') }));
    expect(badFormat.code).to.equal('ERR_INVALID_ARGUMENT');
    expect(badFormat.message).to.contain('.fbin file cannot hold ids');
  });

  it('gives the same bytes whatever the block size, memory limit and threads', async () => {
    const reference = job();
    await runKnnJob(reference);
    for (const extra of [{ blockRows: 1 }, { blockRows: 17, threads: 1 }, { memoryLimit: 40_000 }]) {
      const other = job(extra);
      await runKnnJob(other);
      expect(bytes(other.out).equals(bytes(reference.out)), JSON.stringify(extra)).to.equal(true);
      expect(bytes(other.distancesOut as string).equals(bytes(reference.distancesOut as string))).to.equal(
        true,
      );
    }
  });

  it('aborted after some blocks, keeps its checkpoint; resumed, writes the bytes of an uninterrupted run', async () => {
    const reference = job();
    await runKnnJob(reference);
    const stopped = job({ blockRows: 10 });
    const controller = new AbortController();
    let rowsAtAbort = 0;
    const error = await rejection(
      runKnnJob({
        ...stopped,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.rowsDone >= 30 && !controller.signal.aborted) {
            rowsAtAbort = p.rowsDone;
            controller.abort();
          }
        },
      }),
    );
    expect(error.code).to.equal('ERR_ABORTED');
    expect(existsSync(stopped.out)).to.equal(false);
    expect(existsSync(stopped.distancesOut as string)).to.equal(false);
    const checkpoint = JSON.parse(readFileSync(stopped.out + CHECKPOINT_SUFFIX, 'utf8')) as {
      rowsDone: number;
    };
    expect(checkpoint.rowsDone).to.equal(rowsAtAbort);

    // Resumed with another block size: the checkpoint counts rows, not blocks.
    const seen: number[] = [];
    const resumed = await runKnnJob({
      ...stopped,
      blockRows: 13,
      resume: true,
      onProgress: (p) => seen.push(p.rowsDone),
    });
    expect(resumed.resumedRows).to.equal(rowsAtAbort);
    expect(seen[0]).to.equal(rowsAtAbort);
    expect(resumed.pairs).to.equal((QUERY_ROWS - rowsAtAbort) * BASE_ROWS);
    expect(bytes(stopped.out).equals(bytes(reference.out))).to.equal(true);
    expect(bytes(stopped.distancesOut as string).equals(bytes(reference.distancesOut as string))).to.equal(
      true,
    );
    expect(existsSync(stopped.out + CHECKPOINT_SUFFIX)).to.equal(false);
  });

  /** A job stopped after its first block: its options (the checkpoint stays beside options.out). */
  async function stoppedJob(extra: Partial<KnnJobOptions> = {}): Promise<KnnJobOptions> {
    const options = job({ blockRows: 10, ...extra });
    const controller = new AbortController();
    await rejection(
      runKnnJob({
        ...options,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.rowsDone > 0) controller.abort();
        },
      }),
    );
    return options;
  }

  it('refuses to start over an existing checkpoint unless resuming, and names the way out', async () => {
    const options = await stoppedJob();
    const error = await rejection(runKnnJob(options));
    expect(error.code).to.equal('ERR_CHECKPOINT');
    expect(error.message).to.contain(CHECKPOINT_SUFFIX).and.to.contain('--resume').and.to.contain('delete');
    expect(existsSync(options.out + CHECKPOINT_SUFFIX)).to.equal(true);
    await runKnnJob({ ...options, resume: true });
    expect(existsSync(options.out)).to.equal(true);
  });

  it('rejects the checkpoint of another job (other k, metric, inputs) with ERR_CHECKPOINT naming what differs', async () => {
    const options = await stoppedJob();
    const otherK = await rejection(runKnnJob({ ...options, k: 8, resume: true }));
    expect(otherK.code).to.equal('ERR_CHECKPOINT');
    expect(otherK.message)
      .to.contain('another job')
      .and.to.match(/differs in: .*\bk\b/);
    const otherQueries = await rejection(runKnnJob({ ...options, queries: basePath, resume: true }));
    expect(otherQueries.code).to.equal('ERR_CHECKPOINT');
    expect(otherQueries.message).to.contain('queries');
    // Made on another processor (which may round a last bit differently): another job too.
    const path = options.out + CHECKPOINT_SUFFIX;
    const found = (await readCheckpoint(path)) as Checkpoint;
    const identity = { ...found.identity, processor: 'cpu: some other model' };
    await writeCheckpoint(path, { ...found, identity, job: jobHash(identity) });
    const elsewhere = await rejection(runKnnJob({ ...options, resume: true }));
    expect(elsewhere.code).to.equal('ERR_CHECKPOINT');
    expect(elsewhere.message).to.contain('differs in: processor)');
    await writeCheckpoint(path, found);
    const noDistances = await rejection(runKnnJob({ ...options, distancesOut: undefined, resume: true }));
    expect(noDistances.code).to.equal('ERR_CHECKPOINT');
    expect(noDistances.message).to.contain('outputs');
  });

  it('rejects a resume after an input file changed (content or timestamp)', async () => {
    const changing = join(dir, 'changing.fbin');
    writeFbin(changing, queryData, DIM);
    const options = await stoppedJob({ queries: changing });
    const altered = queryData.slice();
    altered[altered.length - 1] += 1; // the last row is in the sample
    writeFbin(changing, altered, DIM);
    const error = await rejection(runKnnJob({ ...options, resume: true }));
    expect(error.code).to.equal('ERR_CHECKPOINT');
    expect(error.message).to.contain('queries.sample');
    writeFbin(changing, queryData, DIM);
    utimesSync(changing, new Date(), new Date(Date.now() + 5000));
    const touched = await rejection(runKnnJob({ ...options, resume: true }));
    expect(touched.message).to.contain('queries.mtimeMs').and.not.to.contain('sample');
  });

  it('rejects a corrupt checkpoint with ERR_CHECKPOINT, and resumes a fresh job when there is none', async () => {
    const options = await stoppedJob();
    const path = options.out + CHECKPOINT_SUFFIX;
    const text = readFileSync(path, 'utf8');
    for (const bad of ['{', '[]', text.replace('"rowsDone": 10', '"rowsDone": 20'), '{"kind":"other"}']) {
      writeFileSync(path, bad);
      const error = await rejection(runKnnJob({ ...options, resume: true }));
      expect(error.code, bad.slice(0, 30)).to.equal('ERR_CHECKPOINT');
      expect(error.message).to.contain('not a valid checkpoint');
    }
    const fresh = job();
    expect((await runKnnJob({ ...fresh, resume: true })).resumedRows).to.equal(0);
  });

  it('refuses to resume when the temporary output is gone, and finishes a job stopped while renaming', async () => {
    const options = await stoppedJob();
    rmSync(partialPathOf(options.out));
    const error = await rejection(runKnnJob({ ...options, resume: true }));
    expect(error.code).to.equal('ERR_CHECKPOINT');
    expect(error.message).to.contain('is gone');

    // Done and renamed, but stopped before the checkpoint was removed: a resume only removes the checkpoint.
    const finished = job({ blockRows: 10 });
    let last: Buffer | undefined;
    await runKnnJob({
      ...finished,
      onProgress: (p) => {
        if (p.rowsDone === p.rows) last = readFileSync(finished.out + CHECKPOINT_SUFFIX);
      },
    });
    writeFileSync(finished.out + CHECKPOINT_SUFFIX, last as Buffer);
    const before = readFileSync(finished.out);
    const again = await runKnnJob({ ...finished, resume: true });
    expect(again.pairs).to.equal(0);
    expect(readFileSync(finished.out).equals(before)).to.equal(true);
    expect(existsSync(finished.out + CHECKPOINT_SUFFIX)).to.equal(false);
  });

  it('runs a job in one process at a time (a lock file), taking over the lock of a process that died', async () => {
    const options = job({ blockRows: 5 });
    const outcomes = await Promise.allSettled([runKnnJob(options), runKnnJob(options)]);
    expect(outcomes.map((o) => o.status).sort()).to.deep.equal(['fulfilled', 'rejected']);
    const error = (outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult)
      .reason as KeOpsError;
    expect(error.code).to.equal('ERR_CHECKPOINT');
    expect(error.message)
      .to.contain(`pid ${process.pid} on ${hostname()}`)
      .and.to.contain('is running this job');
    expect(existsSync(options.out + LOCK_SUFFIX)).to.equal(false);

    const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
    const orphan = job();
    writeFileSync(orphan.out + LOCK_SUFFIX, `${dead} ${hostname()}\n`);
    await runKnnJob(orphan);
    expect(existsSync(orphan.out)).to.equal(true);
    expect(existsSync(orphan.out + LOCK_SUFFIX)).to.equal(false);
  });

  it('reports a missing input as ERR_FILE_IO and bad options as ERR_INVALID_ARGUMENT, writing nothing', async () => {
    const missing = job({ base: join(dir, 'no-such.fbin') });
    expect((await rejection(runKnnJob(missing))).code).to.equal('ERR_FILE_IO');
    expect(existsSync(missing.out + CHECKPOINT_SUFFIX)).to.equal(false);
    for (const bad of [{ k: 0 }, { k: 1.5 }, { memoryLimit: -1 }, { metric: 'cosinus' }, { nope: 1 }]) {
      const options = job(bad as Partial<KnnJobOptions>);
      const error = await rejection(runKnnJob(options));
      expect(error.code, JSON.stringify(bad)).to.equal('ERR_INVALID_ARGUMENT');
      expect(existsSync(options.out + CHECKPOINT_SUFFIX)).to.equal(false);
    }
    // Failing or stopped before the first block is done: nothing is left behind (nothing to resume).
    const aborted = job();
    const stop = new AbortController();
    stop.abort();
    expect((await rejection(runKnnJob({ ...aborted, signal: stop.signal }))).code).to.equal('ERR_ABORTED');
    const noGpu = job();
    expect((await rejection(runKnnJob({ ...noGpu, devices: [0] }))).code).to.equal('ERR_NO_GPU');
    for (const options of [aborted, noGpu]) {
      for (const path of [options.out, options.distancesOut as string]) {
        for (const suffix of ['', CHECKPOINT_SUFFIX, PARTIAL_SUFFIX, LOCK_SUFFIX])
          expect(existsSync(path + suffix)).to.equal(false);
      }
    }
    const same = job();
    const error = await rejection(runKnnJob({ ...same, distancesOut: same.out }));
    expect(error.code).to.equal('ERR_INVALID_ARGUMENT');
  });
});

/**
 * k-NN jobs over files (issue 12, item 4): results against a float64 brute force, output bytes independent of
 * blocks / memory / threads, abort and resume giving the same bytes, checkpoints of other jobs, corrupt ones.
 */
import { existsSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { CHECKPOINT_SUFFIX, type KnnJobOptions, runKnnJob } from '../lib/jobs/knn-job';
import { bruteForceKnn, integerPoints, readBin, scratchFolder, writeFbin } from './knn-fixtures';
import { rejection } from './util';

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
    expect(readdirSync(dir).filter((f) => /tmp|checkpoint/.test(f))).to.deep.equal([]);
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
    const same = job();
    const error = await rejection(runKnnJob({ ...same, distancesOut: same.out }));
    expect(error.code).to.equal('ERR_INVALID_ARGUMENT');
  });
});

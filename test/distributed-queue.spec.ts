/**
 * The BullMQ executor against a real redis-server (KEOPS_TEST_REDIS_URL, or one this file starts on a free port):
 * worker processes run a k-NN plan while one is killed with SIGKILL mid-shard, and the outputs are byte-identical
 * to knn()'s; a reduction job through the queue matches its local run; Redis unreachable, a missing input and a
 * shard that keeps failing are typed errors (ERR_QUEUE with the cause), never a hang.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import { createKnnPlan, createReductionPlan } from '../lib/distributed/planner';
import { writePlan } from '../lib/distributed/plan';
import { connectRedis, startWorker, submitPlan } from '../lib/distributed/queue';
import { runPlanLocally } from '../lib/distributed/shards';
import { runDistributedKnn } from '../lib/distributed/knn-submit';
import { fileStorage } from '../lib/distributed/storage';
import { runCli } from '../lib/cli';
import { rejection, rng } from './util';
import {
  expectKnnFiles,
  freePort,
  knnOfFiles,
  type TestRedis,
  testRedis,
  writeRandomRows,
  writeVectors,
} from './distributed-util';

const CLI = join(__dirname, '..', 'lib', 'cli.ts');
const SHARDS = 5;

/** A `keops-node worker` process whose stdout lines are collected. */
class WorkerProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private waiters: { test: (line: string) => boolean; resolve: (line: string) => void }[] = [];

  constructor(redis: string, queue: string, extra: string[] = []) {
    this.child = spawn(
      process.execPath,
      ['-r', 'ts-node/register/transpile-only', CLI, 'worker', '--redis', redis, '--queue', queue, ...extra],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' } },
    );
    let pending = '';
    const take = (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      let at;
      while ((at = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, at);
        pending = pending.slice(at + 1);
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => (w.test(line) ? (w.resolve(line), false) : true));
      }
    };
    this.child.stdout?.on('data', take);
    this.child.stderr?.on('data', take);
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** The first line (seen or to come) that passes `test`. */
  line(test: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const seen = this.lines.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`worker ${this.pid}: no '${what}' within ${timeoutMs} ms:\n${this.lines.join('\n')}`),
          ),
        timeoutMs,
      );
      this.waiters.push({
        test,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      });
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

describe('distributed jobs on BullMQ (real redis-server, worker processes)', function () {
  this.timeout(120000);
  let redis: TestRedis | undefined;
  let dir: string;
  const workers: WorkerProcess[] = [];

  before(async function () {
    redis = await testRedis();
    if (redis === undefined) {
      console.log('    (skipped: no KEOPS_TEST_REDIS_URL and no redis-server binary to start one)');
      this.skip();
    }
    dir = mkdtempSync(join(tmpdir(), 'keops-dist-queue-'));
  });

  after(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await redis?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('three workers, one killed with SIGKILL mid-shard: its shard runs again elsewhere, outputs = knn() bytes', async () => {
    const url = (redis as TestRedis).url;
    const queue = `kill-${process.pid}`;
    const r = rng(31);
    const D = 32;
    const options = ['--threads', '1', '--lock-duration', '1.5', '--stalled-interval', '1'];
    const pool = [0, 1, 2].map(() => new WorkerProcess(url, queue, options));
    workers.push(...pool);
    // Shards of one kernel call each, lasting about as long as the lock or longer: lock renewal must go on.
    await writeRandomRows(join(dir, 'q.fbin'), 1000, D, 'float32', r);
    await writeRandomRows(join(dir, 'b.fbin'), 24000, D, 'float32', r);
    const metric = { formula: 'Sum(Exp(-Abs(x-y)))' };
    // The local result (while the workers start), which also compiles the kernel into the cache they share.
    const expected = await knnOfFiles(join(dir, 'q.fbin'), join(dir, 'b.fbin'), { k: 10, metric });
    const planPath = join(dir, 'knn.json');
    await writePlan(
      planPath,
      await createKnnPlan(
        {
          queries: join(dir, 'q.fbin'),
          base: join(dir, 'b.fbin'),
          k: 10,
          metric,
          querySlices: SHARDS,
          shardDir: join(dir, 'knn.shards'),
          outputs: { ids: join(dir, 'ids.ibin'), distances: join(dir, 'd.fbin') },
        },
        fileStorage(),
      ),
    );
    await Promise.all(pool.map((w) => w.line((l) => l.includes('waiting for shards'), 60000, 'waiting')));

    const started = performance.now();
    const progress: number[] = [];
    const submitted = submitPlan(planPath, {
      redis: url,
      queue,
      attempts: 3,
      backoffMs: 200,
      timeoutMs: 90000,
      onProgress: (p) => progress.push(p.shardsDone),
    });
    const victim = pool[0];
    const startedLine = await victim.line((l) => /shard \d+ .* started/.test(l), 30000, 'a shard started');
    victim.kill('SIGKILL');
    const killedShard = Number(/shard (\d+) /.exec(startedLine)?.[1]);
    const result = await submitted;
    const seconds = (performance.now() - started) / 1000;

    expect(await victim.exited).to.equal(null); // killed by the signal
    await expectKnnFiles(expected, join(dir, 'ids.ibin'), join(dir, 'd.fbin'));
    expect(result.shards).to.equal(SHARDS);
    expect(progress[progress.length - 1]).to.equal(SHARDS);

    const survivors = pool.slice(1).flatMap((w) => w.lines);
    const startsOf = (index: number) =>
      survivors.filter((l) => new RegExp(`shard ${index} \\(.* started`).test(l)).length;
    // The killed worker's shard ran again on a survivor; every other shard ran exactly once (none stalled while
    // its worker was busy in a long native call).
    expect(startsOf(killedShard), survivors.join('\n')).to.be.at.least(1);
    for (let s = 0; s < SHARDS; s++) {
      if (s !== killedShard) {
        const all = pool
          .flatMap((w) => w.lines)
          .filter((l) => new RegExp(`shard ${s} \\(.* started`).test(l));
        expect(all.length, `shard ${s}:\n${pool.map((w) => w.lines.join('\n')).join('\n--\n')}`).to.equal(1);
      }
    }
    if (process.env.KEOPS_DISTRIBUTED_TRANSCRIPT === '1') {
      console.log(
        `      killed worker ${victim.pid} during shard ${killedShard}; job done in ${seconds.toFixed(1)} s`,
      );
      for (const [k, w] of pool.entries()) for (const l of w.lines) console.log(`      [w${k}] ${l}`);
    }
    for (const w of pool.slice(1)) w.kill('SIGTERM');
    expect(await pool[1].exited).to.equal(0);
    expect(await pool[2].exited).to.equal(0);
  });

  it('a reduction job through the queue = its local run (bytes); a missing input fails it with ERR_QUEUE', async () => {
    const url = (redis as TestRedis).url;
    const queue = `reduce-${process.pid}`;
    const r = rng(32);
    await writeRandomRows(join(dir, 'x.npy'), 50, 3, 'float64', r);
    await writeRandomRows(join(dir, 'y.npy'), 80, 3, 'float64', r);
    const request = {
      formula: 'Exp(-SqDist(x,y))',
      aliases: ['x = Vi(3)', 'y = Vj(3)'],
      reduction: 'LogSumExp',
      dtype: 'float64' as const,
      inputs: { x: join(dir, 'x.npy'), y: join(dir, 'y.npy') },
      querySlices: 2,
      baseSlices: 3,
      chunkRows: 7,
      shardDir: join(dir, 'lse.shards'),
      outputs: { values: join(dir, 'lse.npy') },
    };
    const plan = await createReductionPlan(request, fileStorage());
    const planPath = join(dir, 'lse.json');
    await writePlan(planPath, plan);
    const events: string[] = [];
    const worker = await startWorker({
      redis: url,
      queue,
      storage: fileStorage(),
      backend: 'cpu',
      concurrency: 2,
      onEvent: (line) => events.push(line),
    });
    try {
      const result = await submitPlan(planPath, { redis: url, queue, timeoutMs: 60000 });
      expect(result.outputs).to.deep.equal({ values: join(dir, 'lse.npy') });
      const distributed = readFileSync(join(dir, 'lse.npy'));
      await runPlanLocally(
        { ...plan, outputs: { values: join(dir, 'lse-local.npy') } },
        { storage: fileStorage(), backend: 'cpu' },
      );
      expect(distributed).to.deep.equal(readFileSync(join(dir, 'lse-local.npy')));

      // The same job with its base file gone from the shared folder: every try of a shard fails, then the job.
      const plan2 = await createReductionPlan(
        { ...request, shardDir: join(dir, 'lse2.shards') },
        fileStorage(),
      );
      const plan2Path = join(dir, 'lse2.json');
      await writePlan(plan2Path, plan2);
      renameSync(join(dir, 'y.npy'), join(dir, 'y-moved.npy'));
      const t = performance.now();
      const e = await rejection(
        submitPlan(plan2Path, { redis: url, queue, attempts: 2, backoffMs: 50, timeoutMs: 60000 }),
      );
      expect(e.code).to.equal('ERR_QUEUE');
      expect(e.message).to.match(/shard \d+ \(query rows .*\) failed after 2 attempts: ERR_FILE_IO/);
      expect(e.message).to.contain(join(dir, 'y.npy'));
      expect((e.cause as KeOpsError).code).to.equal('ERR_FILE_IO');
      expect(performance.now() - t).to.be.below(30000);
      renameSync(join(dir, 'y-moved.npy'), join(dir, 'y.npy'));
    } finally {
      await worker.close();
    }
    expect(events.some((l) => l.includes('merging the 6 shards'))).to.equal(true);
  });

  it('runDistributedKnn: a k-NN graph over files, planned, queued and merged = knn() bytes', async () => {
    const url = (redis as TestRedis).url;
    const queue = `graph-${process.pid}`;
    const r = rng(33);
    await writeVectors(
      join(dir, 'points.u8bin'),
      Uint8Array.from({ length: 120 * 6 }, () => Math.floor(r() * 3)),
      6,
      'uint8',
    );
    const worker = await startWorker({
      redis: url,
      queue,
      storage: fileStorage(),
      backend: 'cpu',
      concurrency: 2,
    });
    try {
      const result = await runDistributedKnn({
        redis: url,
        queue,
        base: join(dir, 'points.u8bin'),
        k: 4,
        excludeSelf: true,
        out: join(dir, 'graph.ivecs'),
        distancesOut: join(dir, 'graph-d.fvecs'),
        shards: 3,
        baseShards: 2,
        timeoutMs: 60000,
      });
      expect(result.shards).to.equal(6);
      expect(result.plan).to.equal(join(dir, 'graph.ivecs.plan.json'));
    } finally {
      await worker.close();
    }
    const expected = await knnOfFiles(join(dir, 'points.u8bin'), join(dir, 'points.u8bin'), {
      k: 4,
      excludeSelf: true,
    });
    await expectKnnFiles(expected, join(dir, 'graph.ivecs'), join(dir, 'graph-d.fvecs'));
  });

  it('keops-node knn --redis --shards: the same files as keops-node knn on one machine', async () => {
    const url = (redis as TestRedis).url;
    const queue = `knncli-${process.pid}`;
    const r = rng(34);
    await writeRandomRows(join(dir, 'cq.fbin'), 70, 9, 'float32', r);
    await writeRandomRows(join(dir, 'cb.fbin'), 150, 9, 'float32', r);
    const io = { out: () => undefined, err: () => undefined };
    const common = [
      'knn',
      '--queries',
      join(dir, 'cq.fbin'),
      '--base',
      join(dir, 'cb.fbin'),
      '-k',
      '5',
      '--metric',
      'cosine',
    ];
    expect(
      await runCli([...common, '--out', join(dir, 'one.npy'), '--distances', join(dir, 'one-d.npy')], io),
    ).to.equal(0);
    const worker = await startWorker({ redis: url, queue, storage: fileStorage(), backend: 'cpu' });
    let out = '';
    try {
      const argv = [...common, '--out', join(dir, 'many.npy'), '--distances', join(dir, 'many-d.npy')];
      const code = await runCli(
        [...argv, '--redis', url, '--queue', queue, '--shards', '3', '--base-shards', '2'],
        {
          out: (t) => (out += `${t}\n`),
          err: () => undefined,
        },
      );
      expect(code, out).to.equal(0);
    } finally {
      await worker.close();
    }
    expect(out).to.contain('6 shards on the workers of the queue');
    expect(readFileSync(join(dir, 'many.npy'))).to.deep.equal(readFileSync(join(dir, 'one.npy')));
    expect(readFileSync(join(dir, 'many-d.npy'))).to.deep.equal(readFileSync(join(dir, 'one-d.npy')));
    expect(await runCli([...common, '--out', join(dir, 'x.npy'), '--shards', '2'], io)).to.equal(2);
    expect(await runCli([...common, '--out', join(dir, 'x.npy'), '--redis', url, '--resume'], io)).to.equal(
      2,
    );
  });
});

describe('distributed jobs without a reachable Redis', function () {
  this.timeout(60000);

  it('Redis unreachable: ERR_QUEUE at once from connecting, a worker and keops-node worker (no hang)', async () => {
    const port = await freePort();
    const url = `redis://user:secret@127.0.0.1:${port}`;
    const t = performance.now();
    const e = await rejection(connectRedis({ redis: url, connectTimeoutMs: 2000 }));
    expect(e.code).to.equal('ERR_QUEUE');
    expect(e.message).to.contain(`cannot reach Redis at redis://***@127.0.0.1:${port}`);
    expect(e.message).to.not.contain('secret');
    const w = await rejection(startWorker({ redis: url, storage: fileStorage(), connectTimeoutMs: 2000 }));
    expect(w.code).to.equal('ERR_QUEUE');
    let err = '';
    const code = await runCli(['worker', '--redis', `redis://127.0.0.1:${port}`], {
      out: () => undefined,
      err: (text) => (err += text),
    });
    expect(code).to.equal(1);
    expect(err).to.match(/^keops-node worker: ERR_QUEUE: cannot reach Redis/);
    expect(performance.now() - t).to.be.below(10000);
    const bad = await rejection(connectRedis({ redis: 'http://localhost:6379' }));
    expect(bad.code).to.equal('ERR_INVALID_ARGUMENT');
  });
});

/**
 * Distributed k-NN on one machine: Fashion-MNIST (10,000 test images as queries, 60,000 train images as base,
 * uint8, D = 784), k = 10, run by 1, 2 and 4 `keops-node worker` processes through BullMQ on a redis-server of
 * our own, against the local run (knn() over the same files); then the queue's overhead per shard, with tiny
 * shards. Outputs are checked byte-identical to the local run's.
 *
 *     npx ts-node --transpile-only bench/distributed.ts [queries=10000] [workers=1,2,4] [shards=8] [tinyShards=200] [baseSlices=1]
 *
 * Needs /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) and redis-server. Worker start-up
 * (a Node process loading keops-node) is outside the clock: the workers are waiting before each job is submitted.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createKnnPlan } from '../lib/distributed/planner';
import { writePlan } from '../lib/distributed/plan';
import { startWorker, submitPlan } from '../lib/distributed/queue';
import { runPlanLocally } from '../lib/distributed/shards';
import { fileStorage } from '../lib/distributed/storage';
import { convertVectorFile } from '../lib/io/convert-file';
import { openVectorFile } from '../lib/io/vector-file';
import { createVectorFileWriter } from '../lib/io/vector-writer';
import { knn } from '../lib/knn';
import { loadAverage } from './report';
import { freePort } from '../test/distributed-util';

const DATA = '/usr/share/datasets/fashion-mnist';

const CLI = join(__dirname, '..', 'lib', 'cli.ts');

const [queriesArg, workersArg, shardsArg, tinyArg, baseSlicesArg] = process.argv.slice(2);
const QUERIES = Number(queriesArg ?? 10000);
const WORKERS = (workersArg ?? '1,2,4').split(',').map(Number);
const SHARDS = Number(shardsArg ?? 8);
const TINY_SHARDS = Number(tinyArg ?? 200);
/** Base slices: the shards are (SHARDS / BASE_SLICES) query slices x BASE_SLICES base slices. */
const BASE_SLICES = Number(baseSlicesArg ?? 1);

function startRedis(dir: string, port: number): ChildProcess {
  return spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    {
      stdio: 'ignore',
    },
  );
}

async function waitFor(predicate: () => boolean, what: string, ms = 120000): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function spawnWorker(
  url: string,
  queue: string,
  threads: number,
): { child: ChildProcess; ready: () => boolean } {
  const child = spawn(
    process.execPath,
    [
      '-r',
      'ts-node/register/transpile-only',
      CLI,
      'worker',
      '--redis',
      url,
      '--queue',
      queue,
      '--threads',
      String(threads),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let ready = false;
  child.stdout?.on('data', (d: Buffer) => {
    if (d.toString().includes('waiting for shards')) ready = true;
  });
  return { child, ready: () => ready };
}

async function main(): Promise<void> {
  if (!existsSync(join(DATA, 'train-images-idx3-ubyte.gz'))) {
    console.log(`no Fashion-MNIST under ${DATA} (Debian package dataset-fashion-mnist): nothing to measure`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'keops-bench-dist-'));
  const port = await freePort();
  const redis = startRedis(dir, port);
  const url = `redis://127.0.0.1:${port}`;
  const storage = fileStorage();
  try {
    const base = join(dir, 'train.u8bin');
    const queriesAll = join(dir, 't10k.u8bin');
    await convertVectorFile(join(DATA, 'train-images-idx3-ubyte.gz'), base);
    await convertVectorFile(join(DATA, 't10k-images-idx3-ubyte.gz'), queriesAll);
    let queries = queriesAll;
    if (QUERIES < 10000) {
      queries = join(dir, 'queries.u8bin');
      const source = await openVectorFile(queriesAll);
      const writer = await createVectorFileWriter(queries, { rows: QUERIES, dim: 784, dtype: 'uint8' });
      await writer.writeRows(0, await source.read(0, QUERIES));
      await writer.commit();
      await source.close();
    }
    const cores = cpus().length;
    console.log(`machine: ${cores} cores (${cpus()[0].model}), load average at start ${loadAverage()}`);
    console.log(
      `Fashion-MNIST: ${QUERIES} queries x 60000 base, uint8, D = 784, k = 10, l2; ${SHARDS} shards (${Math.max(1, Math.round(SHARDS / BASE_SLICES))} query slices x ${BASE_SLICES} base slices)`,
    );

    // Local: knn() over the same files, all cores, written to the same formats.
    const q = await openVectorFile(queries);
    const b = await openVectorFile(base);
    await knn(q, b, { k: 10, backend: 'cpu', chunkRows: { queries: 16, base: 64 } }); // compile, warm
    let t = performance.now();
    const local = await knn(q, b, { k: 10, backend: 'cpu' });
    const localSeconds = (performance.now() - t) / 1000;
    await q.close();
    await b.close();
    for (const [name, data] of [
      ['local-ids.ibin', local.ids],
      ['local-d.fbin', local.distances],
    ] as const) {
      const w = await createVectorFileWriter(join(dir, name), {
        rows: QUERIES,
        dim: 10,
        dtype: name.endsWith('ibin') ? 'int32' : 'float32',
      });
      await w.writeRows(0, data);
      await w.commit();
    }
    const pairs = QUERIES * 60000;
    console.log(
      `local knn(): ${localSeconds.toFixed(2)} s, ${(pairs / localSeconds / 1e6).toFixed(1)} Mpairs/s (load ${loadAverage()})`,
    );

    for (const count of WORKERS) {
      const queue = `bench-${count}`;
      const threads = Math.max(1, Math.floor(cores / count));
      const workers = Array.from({ length: count }, () => spawnWorker(url, queue, threads));
      await waitFor(() => workers.every((w) => w.ready()), 'workers');
      const planPath = join(dir, `plan-${count}.json`);
      await writePlan(
        planPath,
        await createKnnPlan(
          {
            queries,
            base,
            k: 10,
            querySlices: Math.max(1, Math.round(SHARDS / BASE_SLICES)),
            baseSlices: BASE_SLICES,
            shardDir: join(dir, `shards-${count}`),
            outputs: { ids: join(dir, `ids-${count}.ibin`), distances: join(dir, `d-${count}.fbin`) },
          },
          storage,
        ),
      );
      t = performance.now();
      await submitPlan(planPath, { redis: url, queue });
      const seconds = (performance.now() - t) / 1000;
      const same =
        readFileSync(join(dir, `ids-${count}.ibin`)).equals(readFileSync(join(dir, 'local-ids.ibin'))) &&
        readFileSync(join(dir, `d-${count}.fbin`)).equals(readFileSync(join(dir, 'local-d.fbin')));
      console.log(
        `${count} worker(s) x ${threads} thread(s): ${seconds.toFixed(2)} s, ${(pairs / seconds / 1e6).toFixed(1)} Mpairs/s, ` +
          `${(seconds / localSeconds).toFixed(2)}x the local time; outputs ${same ? 'byte-identical' : 'DIFFERENT'} (load ${loadAverage()})`,
      );
      for (const w of workers) w.child.kill('SIGTERM');
      await Promise.all(workers.map((w) => new Promise((r) => w.child.once('exit', r))));
    }

    // Per-shard overhead: many tiny shards through the queue (one in-process worker, concurrency 1) vs the same
    // plan run locally (same shards, same merge, no queue, no shard files).
    const smallBase = join(dir, 'small-base.u8bin');
    {
      const source = await openVectorFile(base);
      const writer = await createVectorFileWriter(smallBase, { rows: 100, dim: 784, dtype: 'uint8' });
      await writer.writeRows(0, await source.read(0, 100));
      await writer.commit();
      await source.close();
    }
    const smallPlan = await createKnnPlan(
      {
        queries,
        base: smallBase,
        k: 10,
        querySlices: TINY_SHARDS,
        shardDir: join(dir, 'small-shards'),
        outputs: { ids: join(dir, 'small-ids.ibin') },
      },
      storage,
    );
    const smallPath = join(dir, 'small.json');
    await writePlan(smallPath, smallPlan);
    t = performance.now();
    await runPlanLocally(
      { ...smallPlan, outputs: { ids: join(dir, 'small-local.ibin') } },
      { storage, backend: 'cpu' },
    );
    const tinyLocal = (performance.now() - t) / 1000;
    const worker = await startWorker({ redis: url, queue: 'bench-tiny', storage, backend: 'cpu' });
    t = performance.now();
    await submitPlan(smallPath, { redis: url, queue: 'bench-tiny' });
    const tinyQueued = (performance.now() - t) / 1000;
    await worker.close();
    console.log(
      `tiny shards: ${TINY_SHARDS} shards of ${QUERIES / TINY_SHARDS} queries x 100 base rows: local ${tinyLocal.toFixed(2)} s, ` +
        `queued ${tinyQueued.toFixed(2)} s: ${(((tinyQueued - tinyLocal) / TINY_SHARDS) * 1000).toFixed(1)} ms per shard of queue overhead`,
    );
  } finally {
    redis.kill('SIGTERM');
    await new Promise((r) => redis.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

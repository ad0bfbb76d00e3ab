/**
 * The BullMQ executor: a job plan becomes a flow, one parent job (the merge) over one child job per shard, on
 * Redis. Workers (`startWorker`, `keops-node worker`) pull shards, run them with their CPUs or GPUs and store the
 * results next to the plan; when the last shard is done, a worker runs the merge. The submitter (`submitPlan`)
 * adds the flow and waits, with progress from the shards.
 *
 * Delivery is at least once: a shard whose worker dies (its lock is no longer renewed) goes back to the queue and
 * another worker runs it; shard results are written whole under a temporary name and renamed, so a shard run twice
 * is harmless. A failing shard is retried with exponential backoff up to `attempts` times, then fails the job:
 * the submitter rejects with ERR_QUEUE carrying the shard's error (its KeOpsError code kept) as the cause.
 * Native work runs off the event loop, so lock renewal goes on during long shards.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { KeOpsError, type KeOpsErrorCode } from '../errors';
import type { ComputeSettings, ShardKernel } from './kernels';
import { describeShard, type JobPlan, readPlan, shardCount, shardSpec } from './plan';
import { kernelFor, mergePlan, type MergeResult, runShard, type ShardRunResult } from './shards';
import type { JobStorage } from './storage';

/**
 * BullMQ and its Redis client load on first use, not with the package: an application that never queues does not
 * pay for them (nor for the native msgpack addon BullMQ brings).
 */
const loadBullmq = () => import('bullmq');
const loadIORedis = async () => (await import('ioredis')).Redis;

export interface QueueOptions {
  /** redis://[user:password@]host:port[/db] */
  readonly redis: string;
  /** Queue name prefix (default 'keops'): shards go to '<name>-shards', merges to '<name>-merge'. */
  readonly queue?: string;
  /** How long to wait for Redis before failing with ERR_QUEUE (default 5000 ms). */
  readonly connectTimeoutMs?: number;
}

const DEFAULT_QUEUE = 'keops';
const queueNames = (options: QueueOptions) => {
  const name = options.queue ?? DEFAULT_QUEUE;
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `queue name '${name}': use letters, digits, '_', '.', '-'`);
  }
  return { shards: `${name}-shards`, merge: `${name}-merge` };
};

/** The URL without its password, for messages. */
export function redactRedisUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}

/** Connects to Redis, failing quickly (ERR_QUEUE) when it cannot be reached; the client retries later drops. */
export async function connectRedis(options: QueueOptions): Promise<IORedis> {
  if (typeof options.redis !== 'string' || !/^rediss?:\/\//.test(options.redis)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `--redis must be a redis:// or rediss:// URL, got '${String(options.redis)}'`,
    );
  }
  const timeout = options.connectTimeoutMs ?? 5000;
  let connected = false;
  const RedisClient = await loadIORedis();
  const client = new RedisClient(options.redis, {
    lazyConnect: true,
    connectTimeout: timeout,
    maxRetriesPerRequest: null, // what BullMQ's blocking connections need
    // Before the first connection: no retries (fail fast); after it, reconnect with a capped delay.
    retryStrategy: (times) => (connected ? Math.min(times * 200, 2000) : null),
  });
  client.on('error', () => undefined); // connection errors surface through the calls below
  try {
    await withTimeout(client.connect(), timeout);
    await withTimeout(client.ping(), timeout);
    connected = true;
    return client;
  } catch (e) {
    client.disconnect();
    throw new KeOpsError(
      'ERR_QUEUE',
      `cannot reach Redis at ${redactRedisUrl(options.redis)}: ${(e as Error).message || String(e)}`,
      { cause: e },
    );
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---- errors across the queue ----

/** How a shard's failure is stored in Redis: "ERR_CODE: message", so the submitter can type it again. */
function jobError(e: unknown): Error {
  if (e instanceof KeOpsError) return new Error(`${e.code}: ${e.message}`);
  return e instanceof Error ? e : new Error(String(e));
}

function errorFromReason(reason: string | undefined): KeOpsError {
  const match = /^(ERR_[A-Z_]+): ([\s\S]*)$/.exec(reason ?? '');
  if (match !== null) return new KeOpsError(match[1] as KeOpsErrorCode, match[2]);
  return new KeOpsError('ERR_INTERNAL', reason ?? 'unknown failure');
}

// ---- worker ----

export interface WorkerOptions extends QueueOptions, ComputeSettings {
  readonly storage: JobStorage;
  /** Shards run at once (default 1; with `devices`, one per GPU). */
  readonly concurrency?: number;
  /** GPU ordinals: each running shard takes a free one. */
  readonly devices?: readonly number[];
  /** BullMQ lock duration (default 30000 ms): a worker silent this long is presumed dead. */
  readonly lockDurationMs?: number;
  /** How often workers look for stalled shards (default 30000 ms). */
  readonly stalledIntervalMs?: number;
  /** How many times a shard may stall before it fails (default 1). */
  readonly maxStalledCount?: number;
  /** A line for the log: shards started, done, failed, merges. */
  readonly onEvent?: (line: string) => void;
}

export interface RunningWorker {
  readonly name: string;
  /** Stops taking shards, waits for the running ones, disconnects. */
  close(): Promise<void>;
}

interface ShardJobData {
  readonly plan: string;
  readonly hash: string;
  readonly index: number;
}

interface MergeJobData {
  readonly plan: string;
  readonly hash: string;
}

/** Plans and kernels by plan hash (a worker serves one job at a time, mostly). */
class PlanCache {
  private readonly entries = new Map<string, Promise<{ plan: JobPlan; kernel: ShardKernel }>>();

  get(location: string, hash: string): Promise<{ plan: JobPlan; kernel: ShardKernel }> {
    let entry = this.entries.get(hash);
    if (entry === undefined) {
      entry = readPlan(location).then((plan) => {
        if (plan.hash !== hash) {
          throw new KeOpsError(
            'ERR_SHARD',
            `the plan ${location} has hash ${plan.hash.slice(0, 12)}…, the queued job was for ${hash.slice(0, 12)}… (was the plan file replaced?)`,
          );
        }
        return { plan, kernel: kernelFor(plan) };
      });
      entry.catch(() => this.entries.delete(hash));
      this.entries.set(hash, entry);
      while (this.entries.size > 4) this.entries.delete(this.entries.keys().next().value as string);
    }
    return entry;
  }
}

export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const names = queueNames(options);
  const devices = options.devices === undefined ? undefined : [...options.devices];
  const concurrency = options.concurrency ?? devices?.length ?? 1;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > (devices?.length ?? Infinity)) {
    const most = devices === undefined ? '' : ` and at most the ${devices.length} GPUs given`;
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `concurrency must be an integer >= 1${most}, got ${String(concurrency)}`,
    );
  }
  const connection = await connectRedis(options);
  const { Worker } = await loadBullmq();
  const log = options.onEvent ?? (() => undefined);
  const name = `${hostname()}:${process.pid}`;
  const free = devices === undefined ? [] : [...devices];
  const plans = new PlanCache();
  const common = {
    connection,
    lockDuration: options.lockDurationMs ?? 30000,
    stalledInterval: options.stalledIntervalMs ?? 30000,
    maxStalledCount: options.maxStalledCount ?? 1,
    name,
  };

  const shardWorker = new Worker<ShardJobData, ShardRunResult>(
    names.shards,
    async (job) => {
      const { plan: location, hash, index } = job.data;
      const device = devices === undefined ? options.device : free.shift();
      try {
        const { plan, kernel } = await plans.get(location, hash);
        const what = describeShard(shardSpec(plan, index));
        log(`worker ${name}: ${what} of plan ${hash.slice(0, 12)}… started (try ${job.attemptsStarted})`);
        let lastReport = 0;
        const result = await runShard(plan, index, {
          storage: options.storage,
          kernel,
          backend: options.backend,
          device,
          threads: options.threads,
          onProgress: (p) => {
            const now = performance.now();
            if (now - lastReport < 250 && p.pairsDone < p.pairsTotal) return;
            lastReport = now;
            job.updateProgress({ pairsDone: p.pairsDone, pairsTotal: p.pairsTotal }).catch(() => undefined);
          },
        });
        log(
          `worker ${name}: shard ${index} ${result.reused ? 'was already stored' : `done in ${result.seconds.toFixed(2)} s`}`,
        );
        return result;
      } catch (e) {
        log(`worker ${name}: shard ${index} failed: ${jobError(e).message}`);
        throw jobError(e);
      } finally {
        if (devices !== undefined && device !== undefined) free.push(device);
      }
    },
    { ...common, concurrency },
  );
  const mergeWorker = new Worker<MergeJobData, MergeResult>(
    names.merge,
    async (job) => {
      try {
        const { plan } = await plans.get(job.data.plan, job.data.hash);
        log(`worker ${name}: merging the ${shardCount(plan)} shards of plan ${plan.hash.slice(0, 12)}…`);
        const result = await mergePlan(plan, { storage: options.storage });
        log(`worker ${name}: wrote ${Object.values(result.outputs).join(', ')}`);
        return result;
      } catch (e) {
        log(`worker ${name}: merge failed: ${jobError(e).message}`);
        throw jobError(e);
      }
    },
    { ...common, concurrency: 1 },
  );
  for (const w of [shardWorker, mergeWorker]) {
    w.on('error', (e) => log(`worker ${name}: queue error: ${e.message}`));
    w.on('stalled', (jobId) =>
      log(`worker ${name}: job ${jobId} stalled (its worker stopped renewing the lock); it runs again`),
    );
  }
  await Promise.all([shardWorker.waitUntilReady(), mergeWorker.waitUntilReady()]);
  log(`worker ${name}: waiting for shards on ${names.shards} (concurrency ${concurrency})`);
  return {
    name,
    async close() {
      await Promise.all([shardWorker.close(), mergeWorker.close()]);
      await connection.quit().catch(() => undefined);
    },
  };
}

// ---- submitting ----

export interface JobProgress {
  readonly shardsDone: number;
  readonly shardsTotal: number;
  readonly pairsDone: number;
  readonly pairsTotal: number;
}

export interface SubmitOptions extends QueueOptions {
  /** Tries per shard before the job fails (default 3). */
  readonly attempts?: number;
  /** First retry delay, doubled at each retry (default 1000 ms). */
  readonly backoffMs?: number;
  readonly onProgress?: (progress: JobProgress) => void;
  /** Gives up waiting (ERR_QUEUE) after this long; the queued shards stay queued. Default: no limit. */
  readonly timeoutMs?: number;
}

export interface SubmitResult extends MergeResult {
  readonly seconds: number;
}

/**
 * Queues the plan stored at `planLocation` (a path every worker can read) as a BullMQ flow and waits for the
 * merge. ERR_QUEUE when Redis is unreachable, when a shard keeps failing (its error as the cause) or when the
 * merge fails.
 */
export async function submitPlan(planLocation: string, options: SubmitOptions): Promise<SubmitResult> {
  const started = performance.now();
  const plan = await readPlan(planLocation);
  const names = queueNames(options);
  const attempts = options.attempts ?? 3;
  if (!Number.isSafeInteger(attempts) || attempts < 1) {
    throw new KeOpsError('ERR_INVALID_ARGUMENT', `attempts must be an integer >= 1, got ${String(attempts)}`);
  }
  const backoffMs = options.backoffMs ?? 1000;
  const connection = await connectRedis(options);
  const { FlowProducer, Queue, QueueEvents } = await loadBullmq();
  const total = shardCount(plan);
  const run = `${plan.hash.slice(0, 16)}-${randomBytes(4).toString('hex')}`;
  const shardId = (index: number) => `${run}-s${index}`;
  const flows = new FlowProducer({ connection });
  const shardEvents = new QueueEvents(names.shards, { connection: connection.duplicate() });
  const mergeEvents = new QueueEvents(names.merge, { connection: connection.duplicate() });
  const shardQueue = new Queue(names.shards, { connection });
  const pairsOf = (index: number) => {
    const s = shardSpec(plan, index);
    return (s.querySlice[1] - s.querySlice[0]) * (s.baseSlice[1] - s.baseSlice[0]);
  };
  const pairsTotal = Array.from({ length: total }, (_, i) => pairsOf(i)).reduce((a, b) => a + b, 0);
  const pairsDone = new Map<string, number>();
  const done = new Set<string>();
  const report = () =>
    options.onProgress?.({
      shardsDone: done.size,
      shardsTotal: total,
      pairsDone: [...pairsDone.values()].reduce((a, b) => a + b, 0),
      pairsTotal,
    });
  const ours = (jobId: string) => jobId.startsWith(`${run}-s`);
  shardEvents.on('progress', ({ jobId, data }) => {
    if (!ours(jobId) || typeof data !== 'object' || data === null) return;
    const p = (data as { pairsDone?: unknown }).pairsDone;
    if (typeof p === 'number' && !done.has(jobId)) {
      pairsDone.set(jobId, p);
      report();
    }
  });
  shardEvents.on('completed', ({ jobId }) => {
    if (!ours(jobId)) return;
    done.add(jobId);
    pairsDone.set(jobId, pairsOf(Number(jobId.slice(run.length + 2))));
    report();
  });
  try {
    await Promise.all([shardEvents.waitUntilReady(), mergeEvents.waitUntilReady()]);
    const tree = await flows.add({
      name: 'merge',
      queueName: names.merge,
      data: { plan: planLocation, hash: plan.hash } satisfies MergeJobData,
      opts: { jobId: `${run}-merge`, removeOnComplete: { age: 86400 } },
      children: Array.from({ length: total }, (_, index) => ({
        name: 'shard',
        queueName: names.shards,
        data: { plan: planLocation, hash: plan.hash, index } satisfies ShardJobData,
        opts: {
          jobId: shardId(index),
          attempts,
          backoff: { type: 'exponential', delay: backoffMs },
          failParentOnFailure: true,
          removeOnComplete: { age: 86400 },
        },
      })),
    });
    report();
    let result: MergeResult;
    try {
      const finished = tree.job.waitUntilFinished(mergeEvents, options.timeoutMs) as Promise<MergeResult>;
      result = await finished;
    } catch (e) {
      throw await explainFailure(e, plan, shardQueue, shardId, options.timeoutMs);
    }
    report();
    return { ...result, seconds: (performance.now() - started) / 1000 };
  } finally {
    await Promise.allSettled([shardEvents.close(), mergeEvents.close(), flows.close(), shardQueue.close()]);
    await connection.quit().catch(() => undefined);
  }
}

/** ERR_QUEUE for a failed flow: the failing shard's error (typed again) as the cause, else the merge's. */
async function explainFailure(
  e: unknown,
  plan: JobPlan,
  shardQueue: Queue,
  shardId: (index: number) => string,
  timeoutMs: number | undefined,
): Promise<KeOpsError> {
  const message = e instanceof Error ? e.message : String(e);
  if (/timed out|ttl/i.test(message) && timeoutMs !== undefined) {
    return new KeOpsError(
      'ERR_QUEUE',
      `the job did not finish within ${timeoutMs} ms (are workers running?)`,
      {
        cause: e,
      },
    );
  }
  const { Job } = await loadBullmq();
  for (let index = 0; index < shardCount(plan); index++) {
    const job = await Job.fromId<ShardJobData>(shardQueue, shardId(index));
    if (job !== undefined && (await job.isFailed())) {
      const cause = errorFromReason(job.failedReason);
      return new KeOpsError(
        'ERR_QUEUE',
        `${describeShard(shardSpec(plan, index))} failed after ${job.attemptsMade} attempts: ${cause.code}: ${cause.message}`,
        { cause },
      );
    }
  }
  const cause = errorFromReason(message);
  return new KeOpsError('ERR_QUEUE', `the merge failed: ${cause.code}: ${cause.message}`, { cause });
}

/**
 * `keops-node worker --redis URL [--concurrency N] [--device …]`: a BullMQ worker that pulls shards of submitted
 * job plans (and their merges) from Redis and runs them, until SIGINT or SIGTERM (then it finishes the running
 * shards and exits 0; a second signal ends it at once, and its shards go to other workers).
 */
import { startWorker } from '../distributed/queue';
import { fileStorage } from '../distributed/storage';
import { type CommandOutput, integerOption, newCommand, runCommand } from './commander-io';
import { type DeviceChoice, deviceArgument, secondsArgument } from './distributed-args';

const HELP_AFTER = `
Start one worker per machine (or per GPU group) with access to the plans' files at the same paths. Each
shard is delivered at least once: if this worker dies, its shards go back to the queue once its lock
expires (--lock-duration) and another worker runs them; results are written whole, so a shard run twice is
harmless. A shard that fails is retried with backoff, as many times as the submitter asked.

Exit codes: 0 stopped by SIGINT / SIGTERM, 1 failed (e.g. ERR_QUEUE: Redis unreachable), 2 bad arguments.`;

interface WorkerArguments {
  redis: string;
  queue?: string;
  concurrency?: number;
  device?: DeviceChoice;
  threads?: number;
  lockDuration?: number;
  stalledInterval?: number;
}

/** The process signals the worker stops on (replaceable in tests). */
export interface WorkerCommandEnv {
  readonly signals: Pick<NodeJS.Process, 'once' | 'off'>;
}

export const WORKER_SUMMARY = 'run shards of submitted job plans from a Redis queue (BullMQ)';

export function workerCommand(
  argv: readonly string[],
  io: CommandOutput,
  env: WorkerCommandEnv = { signals: process },
): Promise<number> {
  const command = newCommand('worker', io)
    .description(WORKER_SUMMARY)
    .addHelpText('after', HELP_AFTER)
    .requiredOption('--redis <url>', 'redis://host:port[/db]')
    .option('--queue <name>', "queue name prefix (default 'keops')")
    .option('--concurrency <n>', 'shards at once (default 1, or one per GPU of --device)', integerOption(1))
    .option('--device <where>', 'cpu, auto (default), cuda, or GPU ordinals such as 0,1', deviceArgument)
    .option('--threads <n>', 'CPU threads per shard (default: one per core)', integerOption(1))
    .option(
      '--lock-duration <seconds>',
      'a worker silent this long is presumed dead (default 30)',
      secondsArgument,
    )
    .option(
      '--stalled-interval <seconds>',
      'how often to look for shards of dead workers (default 30)',
      secondsArgument,
    );
  return runCommand('worker', command, argv, io, async (parsed) => {
    const args = parsed.opts<WorkerArguments>();
    const worker = await startWorker({
      redis: args.redis,
      queue: args.queue,
      storage: fileStorage(),
      concurrency: args.concurrency,
      backend: args.device?.backend,
      devices: args.device?.devices,
      threads: args.threads,
      lockDurationMs: args.lockDuration === undefined ? undefined : args.lockDuration * 1000,
      stalledIntervalMs: args.stalledInterval === undefined ? undefined : args.stalledInterval * 1000,
      onEvent: (line) => io.out(line),
    });
    const signal = await new Promise<string>((resolve) => {
      const stop = (name: string) => () => {
        env.signals.off('SIGINT', onInt);
        env.signals.off('SIGTERM', onTerm);
        resolve(name);
      };
      const onInt = stop('SIGINT');
      const onTerm = stop('SIGTERM');
      env.signals.once('SIGINT', onInt);
      env.signals.once('SIGTERM', onTerm);
    });
    io.out(`worker ${worker.name}: ${signal}, finishing the running shards`);
    await worker.close();
    io.out(`worker ${worker.name}: stopped`);
  });
}

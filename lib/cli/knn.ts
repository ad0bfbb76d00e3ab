/**
 * `keops-node knn --base FILE [--queries FILE] -k K --out FILE [--distances FILE] [options]`: an exact k-NN job
 * over vector files (lib/jobs/knn-job.ts), with progress (a bar on a terminal, plain lines otherwise), a summary,
 * Ctrl-C that stops cleanly and keeps the checkpoint, and `--resume`.
 *
 * Exit codes: 0 done; 1 the job failed (the message starts with the error code, e.g. ERR_FILE_IO); 2 bad
 * arguments (with the usage); 130 interrupted (SIGINT), resumable with --resume.
 */
import { type Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isKeOpsError } from '../errors';
import { type KnnJobProgress, runKnnJob } from '../jobs/knn-job';
import { KNN_METRICS } from '../knn/index';
import {
  type CommandOutput,
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  integerOption,
  newCommand,
} from './commander-io';
import { barProgress, formatDuration, formatRate, lineProgress, type ProgressDisplay } from './progress';
import { parseSize } from './sizes';
import { type KnnFileArguments, knnJobFiles } from './knn-arguments';
import { distributedKnnCommand, LOCAL_ONLY_OPTIONS } from './knn-distributed';

/** What the command takes from its process: overridable for tests. */
export interface KnnCommandEnv {
  /** A terminal to draw the progress bar on; without one, progress is plain lines on stderr. */
  readonly terminal?: NodeJS.WritableStream;
  /** Where SIGINT comes from: the process (or a test's EventEmitter). */
  readonly signals: {
    once(event: 'SIGINT', listener: () => void): unknown;
    off(event: 'SIGINT', listener: () => void): unknown;
  };
}

const EXIT_INTERRUPTED = 130;

const HELP_AFTER = `
Writes the ids of the K nearest base rows of each query row (sorted by distance, then id) to --out, and
their distances to --distances. Formats follow the extensions: ids .ibin / .ivecs / .npy, distances
.fbin / .fvecs / .npy; inputs .fvecs .ivecs .bvecs .fbin .u8bin .i8bin .ibin .npy and IDX files.
Without --queries the base is its own query set (a k-NN graph), which needs --exclude-self.

Outputs appear at their paths only when complete. OUT.keops-checkpoint records the finished query rows: a
job stopped by Ctrl-C, a crash or kill -9 continues with the same command plus --resume, and writes the
same bytes as an uninterrupted run. Results do not depend on --memory, --threads or --block-rows.

Exit codes: 0 done, 1 failed (the message starts with the error code), 2 bad arguments,
130 interrupted (resume with --resume).`;

function sizeArgument(value: string): number {
  try {
    return parseSize(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

function devicesArgument(value: string): 'all' | number[] {
  if (value === 'all') return 'all';
  const parts = value.split(',').map((p) => p.trim());
  if (parts.some((p) => !/^\d+$/.test(p)))
    throw new InvalidArgumentError("expected 'all' or GPU ordinals such as 0,1");
  const ordinals = parts.map(Number);
  if (new Set(ordinals).size !== ordinals.length) throw new InvalidArgumentError('a GPU is listed twice');
  return ordinals;
}

interface KnnArguments extends KnnFileArguments {
  memory?: number;
  blockRows?: number;
  threads?: number;
  device?: 'all' | number[];
  resume?: boolean;
  redis?: string;
  shards?: number;
  baseShards?: number;
  queue?: string;
  attempts?: number;
}

const USAGE =
  'usage: keops-node knn --base FILE [--queries FILE] -k K --out FILE [options]  (--help for all)';

function knnProgram(io: CommandOutput): Command {
  return newCommand('knn', io)
    .description('Exact k nearest neighbours of query vectors among base vectors, from files to files.')
    .showHelpAfterError(USAGE)
    .requiredOption('--base <file>', 'the base vectors')
    .option('--queries <file>', 'the query vectors (default: the base, with --exclude-self)')
    .requiredOption('-k <k>', 'neighbours per query', integerOption(1))
    .requiredOption('--out <file>', 'the ids file (.ibin, .ivecs, .npy)')
    .option('--distances <file>', 'also write the distances (.fbin, .fvecs, .npy)')
    .addOption(
      new Option('--metric <metric>', 'l2 is squared Euclidean; ip ranks the largest inner products first')
        .choices(KNN_METRICS)
        .default('l2'),
    )
    .option('--exclude-self', 'query i never gets base row i (k-NN graphs; duplicates are kept)')
    .option('--memory <size>', 'memory for the data, e.g. 4GiB, 512MiB, 1e9 (default 256MiB)', sizeArgument)
    .option('--block-rows <rows>', 'at most this many query rows between checkpoints', integerOption(1))
    .option('--threads <n>', 'CPU threads (default: one per core)', integerOption(1))
    .option('--device <gpus>', "GPUs: 'all' or ordinals such as 0,1", devicesArgument)
    .option('--resume', 'continue the job from its checkpoint (OUT.keops-checkpoint), if there is one')
    .option(
      '--progress-interval <seconds>',
      'seconds between progress lines when stderr is not a terminal',
      (v) => {
        const s = Number(v);
        if (v.trim() === '' || !Number.isFinite(s) || s < 0) {
          throw new InvalidArgumentError('expected a number of seconds >= 0');
        }
        return s;
      },
      5,
    )
    .option('--redis <url>', 'run on the workers of this Redis queue (keops-node worker) instead')
    .option('--shards <n>', 'with --redis: query slices, one shard each (default 1)', integerOption(1))
    .option('--base-shards <n>', 'with --redis: base slices per query slice (default 1)', integerOption(1))
    .option('--queue <name>', "with --redis: the queue name prefix (default 'keops')")
    .option('--attempts <n>', 'with --redis: tries per shard (default 3)', integerOption(1))
    .addHelpText('after', HELP_AFTER);
}

/** Runs `keops-node knn ...` (argv after `knn`); returns the exit code. */
export async function knnCommand(
  argv: readonly string[],
  io: CommandOutput,
  env: KnnCommandEnv = { signals: process },
): Promise<number> {
  const program = knnProgram(io);
  let args: KnnArguments;
  try {
    program.parse([...argv], { from: 'user' });
    args = program.opts<KnnArguments>();
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  if (args.queries === undefined && args.excludeSelf !== true) {
    io.err(
      `keops-node knn: --queries is required, unless --exclude-self (the base is then its own query set)\n${USAGE}`,
    );
    return EXIT_USAGE;
  }
  if (args.redis !== undefined) {
    const local = LOCAL_ONLY_OPTIONS.find((name) => args[name] !== undefined);
    if (local !== undefined) {
      io.err(
        `keops-node knn: --${local.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is for the workers, not with --redis\n${USAGE}`,
      );
      return EXIT_USAGE;
    }
    return distributedKnnCommand({ ...args, redis: args.redis }, io);
  }
  for (const name of ['shards', 'baseShards', 'queue', 'attempts'] as const) {
    if (args[name] !== undefined) {
      io.err(
        `keops-node knn: --${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --redis\n${USAGE}`,
      );
      return EXIT_USAGE;
    }
  }

  const controller = new AbortController();
  const onSigint = () => controller.abort(new Error('SIGINT'));
  // once: a second Ctrl-C, while the job winds down, ends the process the usual way.
  env.signals.once('SIGINT', onSigint);
  const display: ProgressDisplay =
    env.terminal !== undefined
      ? barProgress('knn', env.terminal)
      : lineProgress('knn', (line) => io.err(line), args.progressInterval * 1000);
  let last: KnnJobProgress | undefined;
  try {
    const result = await runKnnJob({
      ...knnJobFiles(args),
      memoryLimit: args.memory,
      blockRows: args.blockRows,
      threads: args.threads,
      devices: args.device,
      resume: args.resume === true,
      signal: controller.signal,
      onProgress: (p) => {
        last = p;
        display.update(p);
      },
    });
    display.stop();
    const seconds = result.elapsedMs / 1000;
    const resumed = result.resumedRows > 0 ? `, resumed at row ${result.resumedRows}` : '';
    io.out(
      `knn: ${result.rows} queries x ${result.baseRows} base rows, k = ${result.k}, metric ${args.metric}` +
        `${args.excludeSelf === true ? ', self excluded' : ''}`,
    );
    io.out(
      `  ${seconds.toFixed(2)} s, ${formatRate(seconds > 0 ? result.pairs / seconds : 0)}pairs/s${resumed}`,
    );
    for (const path of result.outputs) io.out(`  wrote ${path}`);
    return EXIT_OK;
  } catch (e) {
    display.stop();
    if (controller.signal.aborted && isKeOpsError(e) && e.code === 'ERR_ABORTED') {
      const done = last?.rowsDone ?? 0;
      const rows = last?.rows ?? 0;
      io.err(
        `keops-node knn: interrupted after ${done} of ${rows} query rows ` +
          `(${formatDuration((last?.elapsedMs ?? 0) / 1000)}); ` +
          (done > 0
            ? 'the checkpoint is kept: run the same command with --resume to continue'
            : 'no block had finished, nothing was kept'),
      );
      return EXIT_INTERRUPTED;
    }
    if (!isKeOpsError(e)) throw e;
    io.err(`keops-node knn: ${e.code}: ${e.message}`);
    const kept = last?.rowsDone ?? 0; // the job keeps its checkpoint once a block is done
    if (kept > 0 && e.code !== 'ERR_CHECKPOINT') {
      io.err(`keops-node knn: ${kept} query rows are checkpointed: once the cause is fixed, add --resume`);
    }
    return EXIT_FAILURE;
  } finally {
    env.signals.off('SIGINT', onSigint);
  }
}

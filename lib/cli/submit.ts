/**
 * `keops-node submit --plan PLAN.json --redis URL`: queues a job plan on Redis (BullMQ: one job per shard, then
 * the merge) and waits for `keops-node worker` processes to run it, printing progress.
 */
import { performance } from 'node:perf_hooks';
import { type JobProgress, submitPlan } from '../distributed/queue';
import { type CommandOutput, integerOption, newCommand, runCommand } from './commander-io';
import { secondsArgument } from './distributed-args';

const HELP_AFTER = `
The plan file must be readable at the same path by the workers. A shard that fails is retried --attempts
times in all, waiting --backoff seconds, then twice as long at each retry; a shard that still fails fails
the job (ERR_QUEUE, with the shard's own error). Shards of workers that die are run again by others.

Exit codes: 0 outputs written, 1 failed (ERR_QUEUE: Redis unreachable, a shard or the merge failed, or
--timeout passed), 2 bad arguments.`;

interface SubmitArguments {
  plan: string;
  redis: string;
  queue?: string;
  attempts?: number;
  backoff?: number;
  timeout?: number;
  progressInterval: number;
}

/** "3/8 shards, 41.5% of pairs": a progress line. */
export function progressLine(p: JobProgress, seconds: number): string {
  const share = p.pairsTotal > 0 ? (100 * p.pairsDone) / p.pairsTotal : 100;
  return `${p.shardsDone}/${p.shardsTotal} shards, ${share.toFixed(1)}% of pairs, ${seconds.toFixed(1)} s`;
}

export const SUBMIT_SUMMARY = 'run a job plan on the workers of a Redis queue and wait for its outputs';

export function submitCommand(argv: readonly string[], io: CommandOutput): Promise<number> {
  const command = newCommand('submit', io)
    .description(SUBMIT_SUMMARY)
    .addHelpText('after', HELP_AFTER)
    .requiredOption('--plan <file>', 'the plan (keops-node plan), at a path the workers can read')
    .requiredOption('--redis <url>', 'redis://host:port[/db]')
    .option('--queue <name>', "queue name prefix (default 'keops')")
    .option('--attempts <n>', 'tries per shard (default 3)', integerOption(1))
    .option('--backoff <seconds>', 'first retry delay, doubled at each retry (default 1)', secondsArgument)
    .option(
      '--timeout <seconds>',
      'give up waiting after this long (the queued shards stay queued)',
      secondsArgument,
    )
    .option(
      '--progress-interval <seconds>',
      'seconds between progress lines (default 5)',
      secondsArgument,
      5,
    );
  return runCommand('submit', command, argv, io, async (parsed) => {
    const args = parsed.opts<SubmitArguments>();
    const started = performance.now();
    let lastLine = -Infinity;
    const result = await submitPlan(args.plan, {
      redis: args.redis,
      queue: args.queue,
      attempts: args.attempts,
      backoffMs: args.backoff === undefined ? undefined : args.backoff * 1000,
      timeoutMs: args.timeout === undefined ? undefined : args.timeout * 1000,
      onProgress: (p) => {
        const now = performance.now();
        if (now - lastLine < args.progressInterval * 1000 && p.shardsDone < p.shardsTotal) return;
        lastLine = now;
        io.err(`submit: ${progressLine(p, (now - started) / 1000)}`);
      },
    });
    io.out(
      `done: ${result.shards} shards merged (${result.queryRows} rows) in ${result.seconds.toFixed(2)} s`,
    );
    for (const [role, location] of Object.entries(result.outputs)) io.out(`  wrote ${role}: ${location}`);
  });
}

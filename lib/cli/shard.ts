/**
 * `keops-node shard --plan PLAN.json --index I`: runs one shard of a plan and stores its result in the plan's
 * shard folder (temporary name, then rename). For schedulers that start one process per index: Kubernetes
 * Indexed Jobs (--index $JOB_COMPLETION_INDEX), Slurm arrays ($SLURM_ARRAY_TASK_ID), AWS Batch array jobs
 * ($AWS_BATCH_JOB_ARRAY_INDEX).
 */
import { describeShard, readPlan, shardSpec } from '../distributed/plan';
import { runShard } from '../distributed/shards';
import { fileStorage } from '../distributed/storage';
import { type CommandOutput, integerOption, newCommand, runCommand } from './commander-io';
import { type DeviceChoice, deviceArgument } from './distributed-args';

const HELP_AFTER = `
Runs shard I of the plan (0 <= I < the plan's shard count) on this machine and writes its result to the
plan's shard folder. A valid result already there is kept (a shard delivered twice is harmless); --force
computes it again. Results do not depend on the machine, --threads or where the other shards ran.

Exit codes: 0 done, 1 failed (the message starts with the error code), 2 bad arguments.`;

interface ShardArguments {
  plan: string;
  index: number;
  device?: DeviceChoice;
  threads?: number;
  force?: boolean;
}

export const SHARD_SUMMARY =
  'run one shard of a job plan (Kubernetes Indexed Jobs, Slurm arrays, AWS Batch arrays)';

export function shardCommand(argv: readonly string[], io: CommandOutput): Promise<number> {
  const command = newCommand('shard', io)
    .description(SHARD_SUMMARY)
    .addHelpText('after', HELP_AFTER)
    .requiredOption('--plan <file>', 'the plan (keops-node plan)')
    .requiredOption('--index <i>', 'the shard to run', integerOption(0))
    .option('--device <where>', 'cpu, auto (default), cuda, or one GPU ordinal', deviceArgument)
    .option('--threads <n>', 'CPU threads (default: one per core)', integerOption(1))
    .option('--force', 'compute the shard even when its result is already stored');
  return runCommand('shard', command, argv, io, async (parsed) => {
    const args = parsed.opts<ShardArguments>();
    if ((args.device?.devices?.length ?? 0) > 1) {
      parsed.error('error: --device takes one GPU ordinal (a shard runs on one device)');
    }
    const plan = await readPlan(args.plan);
    const result = await runShard(plan, args.index, {
      storage: fileStorage(),
      backend: args.device?.backend,
      device: args.device?.devices?.[0],
      threads: args.threads,
      force: args.force === true,
    });
    const what = describeShard(shardSpec(plan, args.index));
    io.out(
      result.reused
        ? `${what}: a valid result is already stored at ${result.location}`
        : `${what}: ${result.pairs} pairs in ${result.seconds.toFixed(2)} s, wrote ${result.location}`,
    );
  });
}

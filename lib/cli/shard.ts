/**
 * `keops-node shard --plan PLAN.json --index I`: runs one shard of a plan and stores its result in the plan's
 * shard folder (temporary name, then rename). For schedulers that start one process per index: Kubernetes
 * Indexed Jobs (--index $JOB_COMPLETION_INDEX), Slurm arrays ($SLURM_ARRAY_TASK_ID), AWS Batch array jobs
 * ($AWS_BATCH_JOB_ARRAY_INDEX).
 */
import { describeShard, readPlan, shardSpec } from '../distributed/plan';
import type { OptionValues } from 'commander';
import { runShard } from '../distributed/shards';
import { fileStorage } from '../distributed/storage';
import {
  type CommandLineIo,
  type DeviceChoice,
  deviceArgument,
  integerAtLeast,
  parseOrExit,
  program,
  runReporting,
} from './distributed-args';

const HELP_AFTER = `
Runs shard I of the plan (0 <= I < the plan's shard count) on this machine and writes its result to the
plan's shard folder. A valid result already there is kept (a shard delivered twice is harmless); --force
computes it again. Results do not depend on the machine, --threads or where the other shards ran.

Exit codes: 0 done, 1 failed (the message starts with the error code), 2 bad arguments.`;

interface ShardArguments extends OptionValues {
  plan: string;
  index: number;
  device?: DeviceChoice;
  threads?: number;
  force?: boolean;
}

export async function shardCommand(argv: readonly string[], io: CommandLineIo): Promise<number> {
  const command = program('shard', 'run one shard of a job plan', io, HELP_AFTER)
    .requiredOption('--plan <file>', 'the plan (keops-node plan)')
    .requiredOption('--index <i>', 'the shard to run', integerAtLeast(0))
    .option('--device <where>', 'cpu, auto (default), cuda, or one GPU ordinal', deviceArgument)
    .option('--threads <n>', 'CPU threads (default: one per core)', integerAtLeast(1))
    .option('--force', 'compute the shard even when its result is already stored');
  const args = parseOrExit<ShardArguments>(command, argv, io);
  if (typeof args === 'number') return args;
  if ((args.device?.devices?.length ?? 0) > 1) {
    io.err('keops-node shard: --device takes one GPU ordinal (a shard runs on one device)');
    return 2;
  }
  return runReporting('shard', io, async () => {
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

/**
 * `keops-node knn … --redis URL --shards N`: the k-NN job run by `keops-node worker` processes instead of this
 * one: planned beside --out (OUT.plan.json, shard results in OUT.shards), queued, waited for with progress lines.
 * The files written are those of the single-machine job, byte for byte.
 */
import { performance } from 'node:perf_hooks';
import { isKeOpsError } from '../errors';
import { runDistributedKnn } from '../distributed/knn-submit';
import { type CommandOutput, EXIT_FAILURE, EXIT_OK } from './commander-io';
import { type KnnFileArguments, knnJobFiles } from './knn-arguments';
import { progressLine } from './submit';

export interface DistributedKnnArguments extends KnnFileArguments {
  redis: string;
  shards?: number;
  baseShards?: number;
  queue?: string;
  attempts?: number;
}

/** Options of the single-machine job that belong to the workers, not to a queued job. */
export const LOCAL_ONLY_OPTIONS = ['memory', 'blockRows', 'threads', 'device', 'resume'] as const;

export async function distributedKnnCommand(
  args: DistributedKnnArguments,
  io: CommandOutput,
): Promise<number> {
  const started = performance.now();
  let lastLine = -Infinity;
  try {
    const result = await runDistributedKnn({
      redis: args.redis,
      queue: args.queue,
      attempts: args.attempts,
      ...knnJobFiles(args),
      shards: args.shards ?? 1,
      baseShards: args.baseShards,
      onProgress: (p) => {
        const now = performance.now();
        if (now - lastLine < args.progressInterval * 1000 && p.shardsDone < p.shardsTotal) return;
        lastLine = now;
        io.err(`knn: ${progressLine(p, (now - started) / 1000)}`);
      },
    });
    io.out(
      `knn: ${result.queryRows} queries, k = ${args.k}, metric ${args.metric}, ${result.shards} shards on the ` +
        `workers of the queue, ${result.seconds.toFixed(2)} s (plan ${result.plan})`,
    );
    for (const location of Object.values(result.outputs)) io.out(`  wrote ${location}`);
    return EXIT_OK;
  } catch (e) {
    if (!isKeOpsError(e)) throw e;
    io.err(`keops-node knn: ${e.code}: ${e.message}`);
    return EXIT_FAILURE;
  }
}

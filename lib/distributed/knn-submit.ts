/**
 * A k-NN job over vector files run by the workers of a Redis queue: plan (beside the ids file), submit, wait.
 * What `keops-node knn … --redis URL --shards N` runs; the outputs are those of the single-machine job, byte for
 * byte.
 */
import { writePlan } from './plan';
import { createKnnPlan, type KnnPlanRequest } from './planner';
import { type SubmitOptions, type SubmitResult, submitPlan } from './queue';
import { fileStorage } from './storage';

export interface DistributedKnnOptions extends SubmitOptions {
  readonly base: string;
  /** Default: the base (a k-NN graph, with excludeSelf). */
  readonly queries?: string;
  readonly k: number;
  readonly metric?: KnnPlanRequest['metric'];
  readonly excludeSelf?: boolean;
  readonly dtype?: KnnPlanRequest['dtype'];
  /** The ids file (.ibin, .ivecs, .npy). */
  readonly out: string;
  /** The distances file (.fbin, .fvecs, .npy). */
  readonly distancesOut?: string;
  /** Query slices (one shard each, times baseShards). */
  readonly shards: number;
  /** Base slices (default 1: every shard reads the whole base). */
  readonly baseShards?: number;
  /** Base rows per kernel call inside a shard. */
  readonly chunkRows?: number;
  /** Where the plan goes (default OUT.plan.json) and the shard results (default OUT.shards), on shared storage. */
  readonly planPath?: string;
  readonly shardDir?: string;
}

export async function runDistributedKnn(
  options: DistributedKnnOptions,
): Promise<SubmitResult & { readonly plan: string }> {
  const planPath = options.planPath ?? `${options.out}.plan.json`;
  const plan = await createKnnPlan(
    {
      base: options.base,
      queries: options.queries ?? options.base,
      k: options.k,
      metric: options.metric,
      excludeSelf: options.excludeSelf,
      dtype: options.dtype,
      querySlices: options.shards,
      baseSlices: options.baseShards,
      chunkRows: options.chunkRows,
      shardDir: options.shardDir ?? `${options.out}.shards`,
      outputs: { ids: options.out, distances: options.distancesOut },
    },
    fileStorage(),
  );
  await writePlan(planPath, plan);
  const result = await submitPlan(planPath, options);
  return { ...result, plan: planPath };
}

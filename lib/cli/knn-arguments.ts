/**
 * The arguments `keops-node knn` shares between its single-machine job and its queued, distributed one: the files
 * and the ranking, and how they map onto the options of runKnnJob and runDistributedKnn.
 */
import type { KnnMetricName } from '../knn/index';

export interface KnnFileArguments {
  base: string;
  queries?: string;
  k: number;
  out: string;
  distances?: string;
  metric: KnnMetricName;
  excludeSelf?: boolean;
  progressInterval: number;
}

/** The inputs, outputs and ranking of the job, as both runners take them. */
export function knnJobFiles(args: KnnFileArguments) {
  return {
    base: args.base,
    queries: args.queries,
    k: args.k,
    metric: args.metric,
    excludeSelf: args.excludeSelf === true,
    out: args.out,
    distancesOut: args.distances,
  };
}

/** Jobs beyond one machine: plans cut into shards, shard results, merges, and the BullMQ executor. */
export {
  type JobPlan,
  type JobSpec,
  type KnnJobSpec,
  type PlanInput,
  readPlan,
  type ReductionJobSpec,
  shardCount,
  type ShardSpec,
  shardSpec,
  writePlan,
} from './plan';
export {
  createKnnPlan,
  createReductionPlan,
  type KnnPlanRequest,
  type PlanLayout,
  type ReductionPlanRequest,
} from './planner';
export {
  computeShard,
  mergePlan,
  type MergeResult,
  runPlanLocally,
  runShard,
  type ShardRunOptions,
  type ShardRunResult,
} from './shards';
export { fileStorage, type JobStorage, type VectorOutputSpec, type VectorWriter } from './storage';
export {
  type JobProgress,
  type QueueOptions,
  type RunningWorker,
  startWorker,
  submitPlan,
  type SubmitOptions,
  type SubmitResult,
  type WorkerOptions,
} from './queue';
export { type DistributedKnnOptions, runDistributedKnn } from './knn-submit';

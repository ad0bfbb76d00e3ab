import { KeOpsError } from '../errors';
import type { ShardKernel } from './kernels';
import type { JobPlan } from './plan';

export function knnKernel(plan: JobPlan): ShardKernel {
  throw new KeOpsError('ERR_INTERNAL', `k-NN kernel pending knn-api (${plan.hash})`);
}

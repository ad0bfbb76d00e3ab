/** The shard kernel of a k-NN plan: the k-NN search's mergeable partials (lib/knn), ids and distances as outputs. */
import { KeOpsError } from '../errors';
import type { FloatArray } from '../backend/plan';
import type { StorageArray } from '../io/vector-source';
import { KnnSearch } from '../knn/plan';
import type { ComputeSettings, ShardKernel } from './kernels';
import type { JobPlan } from './plan';

export function knnKernel(plan: JobPlan, settings: ComputeSettings = {}): ShardKernel {
  const job = plan.job;
  if (job.kind !== 'knn') throw new KeOpsError('ERR_INTERNAL', 'knnKernel: not a k-NN plan');
  const search = new KnnSearch({
    dim: plan.inputs.base.dim,
    k: job.k,
    metric: job.metric,
    excludeSelf: job.excludeSelf,
    dtype: job.dtype,
    backend: settings.backend,
    threads: settings.threads,
  });
  return {
    outputs: [
      { role: 'ids', dim: job.k, dtype: 'int32' },
      { role: 'distances', dim: job.k, dtype: job.dtype },
    ],
    convert: (_input, stored, storageDtype) => search.convertRows(stored, storageDtype),
    compute: (query, _q0, base, b0, options) =>
      search.partial(query.get('queries') as FloatArray, base.get('base') as FloatArray, b0, {
        device: options.device ?? settings.device,
        signal: options.signal,
      }),
    merge: (partials) => search.merge(partials),
    finish(partial, q0) {
      const rows = search.finish(partial, q0);
      return new Map<string, StorageArray>([
        ['ids', rows.ids],
        ['distances', rows.distances],
      ]);
    },
  };
}

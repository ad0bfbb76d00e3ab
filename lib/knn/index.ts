/** Exact k-nearest neighbours: the `knn` API and the mergeable search pieces jobs and shards build on. */
export {
  knn,
  type KnnInput,
  type KnnOptions,
  type KnnResult,
  type KnnRunOptions,
  runKnnSearch,
  vectorSourceOf,
} from './knn';
export { KNN_METRICS, type KnnMetric, type KnnMetricName, type MetricDef } from './metric';
export { type KnnPartialOptions, type KnnRows, KnnSearch, type KnnSearchSpec } from './plan';

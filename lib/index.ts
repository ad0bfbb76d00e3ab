export { KeOpsError, type KeOpsErrorCode, isKeOpsError } from './errors';
export {
  Formula,
  type FormulaVariable,
  type ParsedReduction,
  type VariableCategory,
  MAX_FORMULA_LENGTH,
  MAX_NESTING,
  parseFormula,
  parseReduction,
  parseReductionWithVariables,
} from './formula/index';
export type { Node } from './formula/node';
export type { Reduction } from './formula/reduction';
export {
  Genred,
  type Backend,
  type CallArg,
  type GenredDeviceCallOptions,
  type GenredDeviceResult,
  type DtypeAcc,
  type GenredArg,
  type GenredCallOptions,
  type GenredKernelInfo,
  type GenredOptions,
  type GenredRanges,
  type GenredResult,
  type SumScheme,
} from './genred';
export { type CacheInfo, cacheFolder, cacheInfo, clearCache } from './backend/cache';
export { type CudaDeviceInfo, type RuntimeInfo, runtimeInfo } from './backend/cuda/runtime';
export {
  DeviceArray,
  type DeviceArrayOptions,
  type DeviceDtype,
  type DeviceMemoryInfo,
  type DeviceTypedArray,
  deviceMemory,
} from './backend/cuda/device-array';
export {
  LazyTensor,
  LazyReduction,
  LazySolve,
  Pm,
  Vi,
  Vj,
  type LazyData,
  type LazyGradOptions,
  type LazyReductionOptions,
  type LazySolveCallOptions,
  type LazySolveOptions,
  type LazyVariable,
  type Operand,
  type ReductionAxis,
  type ShapedLazyData,
  type ValuesAndIndices,
  type VariableOptions,
} from './lazy-tensor';
export {
  GenredGradientReduction,
  NodeGenred,
  type GenredGradOptions,
  type NodeGenredOptions,
  type RawRun,
} from './genred';
export {
  KernelSolve,
  NodeKernelSolve,
  type KernelSolveCallOptions,
  type KernelSolveGradOptions,
  type KernelSolveOptions,
  type NodeKernelSolveOptions,
} from './kernel-solve';
export { ReductionRunner, type ReductionRunnerSpec, type RunOptions } from './backend/runner';
export {
  type BlockSparseRanges,
  type KeepMask,
  type LabelArray,
  type PointCloud,
  clusterCentroids,
  clusterRanges,
  clusterRangesCentroids,
  fromMatrix,
  gridCluster,
  permuteRows,
  sortClusters,
  swapAxes,
  unpermuteRows,
} from './cluster';
export { genericArgKMin, genericArgMin, genericLogSumExp, genericSum } from './generic';
export {
  type GenredDeviceOutput,
  type GenredOutput,
  type IndexReductionName,
  type PairReductionName,
  type ReductionName,
  type ValueReductionName,
  type ValuesOf,
} from './genred-types';
export {
  type ReferenceInput,
  type ReferenceOptions,
  type ReferenceOutput,
  type Ranges as ReferenceRanges,
  referenceGenred,
  referenceGenredGradient,
  referenceReduction,
} from './reference';
export { type ReferenceCallOptions, referenceCall } from './reference-call';
export {
  type KernelAlgebra,
  type KernelAtom,
  type KernelAtomName,
  KernelExpression,
  type KernelPair,
  type KernelTerm,
  MAX_KERNEL_LENGTH,
  MAX_KERNEL_NESTING,
  parseKernel,
} from './kernels/language';
export {
  KERNEL_PRODUCT_MODES,
  type KernelArray,
  type KernelProductFormula,
  type KernelProductGradOptions,
  type KernelProductMode,
  type KernelProductOptions,
  type KernelProductParams,
  type KernelProductPlan,
  type KernelScale,
  kernelProduct,
  kernelProductFormula,
  kernelProductGrad,
  kernelProductGradSync,
  kernelProductPlan,
  kernelProductSync,
} from './kernels/product';
export { lazyKernel, type LazyKernelOptions } from './kernels/lazy';
export { type DotNames, formulaToDot, reductionToDot } from './formula/dot';
export {
  type ChunkedIndices,
  type ChunkedOptions,
  type ChunkedProgress,
  type ChunkedResult,
  DEFAULT_MEMORY_LIMIT,
  INT32_INDEX_LIMIT,
  PAIRS_PER_CALL,
  PARTIAL_FORMAT_VERSION,
  type PartialComputeOptions,
  PartialReducer,
  PartialResult,
  type RangeRowSource,
  reduceChunked,
  type RowSlice,
  type RowSource,
  type StreamRowSource,
} from './jobs/index';
export {
  KNN_METRICS,
  knn,
  type KnnInput,
  type KnnMetric,
  type KnnMetricName,
  type KnnOptions,
  type KnnPartialOptions,
  type KnnResult,
  type KnnRows,
  type KnnRunOptions,
  KnnSearch,
  type KnnSearchSpec,
  type MetricDef,
  runKnnSearch,
  vectorSourceOf,
} from './knn/index';
export {
  CHECKPOINT_SUFFIX,
  type KnnJobOptions,
  type KnnJobProgress,
  type KnnJobResult,
  PARTIAL_SUFFIX,
  runKnnJob,
} from './jobs/knn-job';
export { type VectorFileFormat } from './io/formats';
export {
  DEFAULT_MAX_GZIP_BYTES,
  openVectorFile,
  type OpenVectorFileOptions,
  type VectorFile,
} from './io/vector-file';
export {
  createVectorFileWriter,
  temporaryPathFor,
  type VectorFileWriter,
  type VectorFileWriterOptions,
} from './io/vector-writer';
export { type ConversionRule, conversionRule, convertStorage } from './io/convert-storage';
export {
  convertVectorFile,
  type ConvertVectorFileOptions,
  type ConvertVectorFileResult,
} from './io/convert-file';
export { type IdTable, recall, type RecallOptions, type RecallResult } from './knn/recall';
export {
  computeShard,
  createKnnPlan,
  createReductionPlan,
  type DistributedKnnOptions,
  fileStorage,
  type JobPlan,
  type JobProgress,
  type JobSpec,
  type JobStorage,
  type KnnJobSpec,
  type KnnPlanRequest,
  mergePlan,
  type MergeResult,
  type PlanInput,
  type PlanLayout,
  type QueueOptions,
  readPlan,
  type ReductionJobSpec,
  type ReductionPlanRequest,
  runDistributedKnn,
  runPlanLocally,
  type RunningWorker,
  runShard,
  shardCount,
  type ShardRunOptions,
  type ShardRunResult,
  type ShardSpec,
  shardSpec,
  startWorker,
  submitPlan,
  type SubmitOptions,
  type SubmitResult,
  type VectorOutputSpec,
  type VectorWriter,
  type WorkerOptions,
  writePlan,
} from './distributed/index';
export {
  knnLowDim,
  type KnnLowDimOptions,
  type KnnLowDimResult,
  LOW_DIM_METRIC_FORMULAS,
  lowDimKnnApplies,
  type LowDimMetric,
} from './knn/prune';

/** Scale-out: partial results that merge across slices, processes and machines, and chunked (out-of-core) runs. */
export {
  type ChunkedIndices,
  type ChunkedResult,
  INT32_INDEX_LIMIT,
  type PartialComputeOptions,
  PartialReducer,
  PartialResult,
  type RowSlice,
} from './partial';
export { PARTIAL_FORMAT_VERSION } from './partial-bytes';
export {
  type ChunkedOptions,
  type ChunkedProgress,
  DEFAULT_MEMORY_LIMIT,
  PAIRS_PER_CALL,
  reduceChunked,
} from './chunked';
export { type RangeRowSource, type RowSource, type StreamRowSource } from './sources';

/**
 * The one error type keops-node throws. `code` is stable and meant for programs; the message is for people.
 * Syntax errors carry the 0-based character `position` in the input they refer to.
 */
export type KeOpsErrorCode =
  | 'ERR_FORMULA_SYNTAX' // malformed text: unbalanced parentheses, bad token, empty input, chained comparison
  | 'ERR_FORMULA_NAME' // unknown operation or variable name
  | 'ERR_FORMULA_ARITY' // wrong number of arguments to an operation
  | 'ERR_FORMULA_PARAM' // bad integer / list parameter of an operation
  | 'ERR_FORMULA_DIM' // incompatible dimensions
  | 'ERR_FORMULA_TOO_LARGE' // input or derived formula beyond the size / depth limits
  | 'ERR_ALIAS' // malformed alias or conflicting variable declarations
  | 'ERR_NOT_DIFFERENTIABLE' // gradient requested through an operation or reduction that has none
  | 'ERR_NOT_LINEAR' // a linear-operator construction applied to a non-linear formula
  | 'ERR_NOT_SYMMETRIC' // KernelSolve: the operator is not (or cannot be checked to be) symmetric
  | 'ERR_NOT_CONVERGED' // an iterative solver reached its iteration limit before its tolerance
  | 'ERR_REDUCTION' // unknown reduction name, bad K, bad axis
  | 'ERR_INVALID_ARGUMENT' // bad argument to a public function
  | 'ERR_ARG_COUNT' // a reduction call got the wrong number of input arrays
  | 'ERR_ARG_TYPE' // an input is not a Float32Array / Float64Array (or { data, shape })
  | 'ERR_ARG_DTYPE' // unsupported element type, or float32 and float64 inputs mixed
  | 'ERR_ARG_SHAPE' // input length / shape inconsistent with its dim, row counts or batch dims
  | 'ERR_ARG_DETACHED' // an input's ArrayBuffer is detached (transferred to another thread or context)
  | 'ERR_RANGES' // malformed block-sparse ranges
  | 'ERR_OUTPUT_TOO_LARGE' // the output, or the number of batch entries, is beyond what can be allocated
  | 'ERR_INDEX_OVERFLOW' // an index reduction over 2^31 rows or more (indices are int32)
  | 'ERR_CLUSTER' // bad cluster labels: negative, out of range, or unsorted where sorted ones are needed
  | 'ERR_NO_COMPILER' // the CPU backend found no C++ compiler
  | 'ERR_COMPILE' // the C++ compiler or NVRTC rejected a generated kernel (the message carries its log)
  | 'ERR_COMPILE_TIMEOUT' // the C++ compiler ran longer than KEOPS_COMPILE_TIMEOUT seconds and was killed
  | 'ERR_CACHE' // the kernel cache folder cannot be used
  | 'ERR_NATIVE' // the native addon is missing, or a kernel failed to load or run
  | 'ERR_NO_GPU' // a GPU backend was requested but none is available
  | 'ERR_NO_NVRTC' // NVRTC (CUDA's run-time compiler library) cannot be loaded
  | 'ERR_CUDA' // a CUDA driver or NVRTC call failed (the message names the call and the CUDA error)
  | 'ERR_CUDA_OOM' // CUDA or NVRTC ran out of memory (what the call allocated is freed again)
  | 'ERR_DISPOSED' // a DeviceArray (or CUDA device) was used after dispose()
  | 'ERR_ABORTED' // the call's AbortSignal fired: the run stopped and freed what it held
  | 'ERR_DEVICE_MISMATCH' // arrays of one call live on different GPUs, or not on the GPU the call runs on
  | 'ERR_PARTIAL_MISMATCH' // partial results of different reductions, dtypes, rows, or overlapping slices
  | 'ERR_PARTIAL_FORMAT' // bytes that are not a valid serialised partial result (truncated, corrupt, other version)
  | 'ERR_MEMORY_LIMIT' // a chunked run's memoryLimit is too small (the message names the minimum)
  | 'ERR_SOURCE' // a row source threw, or returned rows of the wrong length, dtype or dimension
  | 'ERR_FILE_FORMAT' // a vector file is malformed or not of its extension's format (the message names file and byte offset)
  | 'ERR_FILE_IO' // a file cannot be opened, read, written or renamed (the message names the file and the system error)
  | 'ERR_CHECKPOINT' // a job's checkpoint belongs to another job (inputs, options) or is corrupt
  | 'ERR_QUEUE' // the job queue (Redis) is unreachable, or a distributed job failed (the message carries the cause)
  | 'ERR_SHARD' // a job plan's shard result is missing, corrupt or inconsistent with the plan
  | 'ERR_INTERNAL'; // a bug in keops-node: please report it

export interface KeOpsErrorOptions {
  position?: number;
  cause?: unknown;
}

export class KeOpsError extends Error {
  readonly code: KeOpsErrorCode;
  readonly position?: number;

  constructor(code: KeOpsErrorCode, message: string, options: KeOpsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KeOpsError';
    this.code = code;
    if (options.position !== undefined) this.position = options.position;
  }
}

export function isKeOpsError(e: unknown): e is KeOpsError {
  return e instanceof KeOpsError;
}

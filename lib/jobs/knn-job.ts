/**
 * k-NN jobs over files: the k nearest base rows of every query row, written to result files (ids, and
 * optionally distances) that appear at their final paths only when complete, with a checkpoint that lets a job
 * killed at any moment resume and still produce the same bytes.
 *
 *     await runKnnJob({ base: 'base.fbin', queries: 'queries.fbin', k: 10, out: 'ids.ibin',
 *                       distancesOut: 'distances.fbin', memoryLimit: 2 ** 30, resume: true });
 *
 * How: queries are processed in blocks, in order. Each block is searched against the whole base, streamed in
 * chunks (so memory is bounded by `memoryLimit` whatever the file sizes), and its rows are written at their
 * place in the outputs' temporary files (PATH.keops-partial). Once those rows are fsynced the checkpoint
 * (OUT.keops-checkpoint, see checkpoint.ts) records that rows [0, q1) are done. At the end the temporary files
 * are renamed to their final paths and the checkpoint is removed. A resumed job reopens the temporary files and
 * goes on from the checkpoint's row (rows written after it are written again, with the same bytes). A job that
 * fails or is stopped keeps its checkpoint and temporary files once a block is done; before, it removes them.
 *
 * Determinism: the result of a row depends only on that row, the base, k and the metric, never on the block
 * it was in, the base chunking, threads or the number of GPUs (the search breaks ties by id), so the output
 * bytes are the same however the job was split, stopped and resumed — and the block size may change between
 * runs. Another processor model may round a last bit differently: the job's identity names the processor.
 */
import { performance } from 'node:perf_hooks';
import { cpus } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { promises as fsp } from 'node:fs';
import { KeOpsError } from '../errors';
import { packageVersion } from '../backend/package-root';
import { runtimeInfo } from '../backend/cuda/runtime';
import { resolveFormat, VECTOR_FILE_FORMATS, type VectorFileFormat } from '../io/formats';
import { openVectorFile } from '../io/vector-file';
import type { StorageDtype, VectorSource } from '../io/vector-source';
import { createVectorFileWriter, type VectorFileWriter } from '../io/vector-writer';
import { type KnnMetric, type KnnRows, KnnSearch, runKnnSearch } from '../knn/index';
import { DEFAULT_MEMORY_LIMIT } from './chunked';
import {
  acquireJobLock,
  type Checkpoint,
  identifyInput,
  identityDifferences,
  type JobIdentity,
  jobHash,
  readCheckpoint,
  removeCheckpoint,
  writeCheckpoint,
} from './checkpoint';

/** The checkpoint of a job writing OUT is OUT + this suffix. */
export const CHECKPOINT_SUFFIX = '.keops-checkpoint';
/** While a job runs, OUT + this suffix holds its process id (a second run of the job is refused). */
export const LOCK_SUFFIX = '.keops-lock';
/** The temporary file of an output PATH (renamed to PATH when the job ends) is PATH + this suffix. */
export const PARTIAL_SUFFIX = '.keops-partial';
/**
 * Most (query × base) pairs per block: bounds the work a kill can lose (a minute or two on a CPU at D = 128)
 * and sets how often the checkpoint is written.
 */
export const PAIRS_PER_BLOCK = 2 ** 34;

export interface KnnJobProgress {
  /** (query, base) pairs done, including those done before a resume, and in all. */
  readonly pairsDone: number;
  readonly pairsTotal: number;
  /** Pairs already done (by an earlier run) when this run started. */
  readonly pairsAtStart: number;
  /** Query rows whose results are written and checkpointed, and in all. */
  readonly rowsDone: number;
  readonly rows: number;
  /** Milliseconds since this run started. */
  readonly elapsedMs: number;
}

export interface KnnJobOptions {
  /** The base vectors: a vector file path (lib/io reads its format from its name) or a VectorSource. */
  readonly base: string | VectorSource;
  /** The queries: a path or a VectorSource; default: the base (a k-NN graph, usually with excludeSelf). */
  readonly queries?: string | VectorSource;
  readonly k: number;
  /** As for `knn`: 'l2' (the default, squared Euclidean), 'euclidean', 'ip', 'cosine', 'l1' or { formula }. */
  readonly metric?: KnnMetric;
  /** Query i never gets base row i as a neighbour (a k-NN graph: the queries are the base rows). */
  readonly excludeSelf?: boolean;
  /** The ids file (int32): .ibin, .ivecs or .npy. */
  readonly out: string;
  /** The distances file: .fbin, .fvecs or .npy (float32; float64 in .npy when the search is float64). */
  readonly distancesOut?: string;
  /** Formats of `out` and `distancesOut` when their names do not say them. */
  readonly outFormat?: VectorFileFormat;
  readonly distancesFormat?: VectorFileFormat;
  /** Bytes the job may hold for its data (query block, base chunks, results); default 256 MiB. */
  readonly memoryLimit?: number;
  /** Upper bound on the query rows per block (a checkpoint after each block): for tuning and tests. */
  readonly blockRows?: number;
  /** CPU threads (default: one per core). */
  readonly threads?: number;
  /** GPUs to run on ('all', or ordinals). */
  readonly devices?: 'all' | readonly number[];
  /**
   * Continue from the checkpoint beside `out` if there is one (else start). Without it, an existing
   * checkpoint is an error (ERR_CHECKPOINT), so that a finished part of a job is never thrown away by mistake.
   */
  readonly resume?: boolean;
  readonly onProgress?: (progress: KnnJobProgress) => void;
  /** Stops the job between kernel calls (ERR_ABORTED); its checkpoint and temporary files stay for a resume. */
  readonly signal?: AbortSignal;
}

export interface KnnJobResult {
  readonly rows: number;
  readonly baseRows: number;
  readonly k: number;
  /** The files written: ids, then distances if asked for. */
  readonly outputs: readonly string[];
  /** Query rows found done in the checkpoint (0 for a fresh job). */
  readonly resumedRows: number;
  /** Pairs computed by this run, and its duration. */
  readonly pairs: number;
  readonly elapsedMs: number;
}

const OPTION_KEYS: ReadonlySet<string> = new Set([
  'base',
  'queries',
  'k',
  'metric',
  'excludeSelf',
  'out',
  'distancesOut',
  'outFormat',
  'distancesFormat',
  'memoryLimit',
  'blockRows',
  'threads',
  'devices',
  'resume',
  'onProgress',
  'signal',
]);

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

function positiveInteger(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw invalid(`${what} must be an integer >= 1, got ${String(value)}`);
  }
  return value;
}

/** One output file of the job. */
interface OutputSpec {
  readonly role: 'ids' | 'distances';
  readonly path: string;
  readonly format: VectorFileFormat;
}

interface Settings {
  readonly k: number;
  readonly metric: KnnMetric;
  readonly excludeSelf: boolean;
  readonly outputs: readonly OutputSpec[];
  readonly memoryLimit: number;
  readonly blockRows: number;
  readonly threads?: number;
  readonly devices?: 'all' | readonly number[];
  readonly resume: boolean;
  readonly onProgress?: (progress: KnnJobProgress) => void;
  readonly signal?: AbortSignal;
}

/** An output's format (from its name unless given), which must hold the role's values. */
function outputSpec(role: 'ids' | 'distances', path: unknown, format: string | undefined): OutputSpec {
  const what = role === 'ids' ? 'out' : 'distancesOut';
  if (typeof path !== 'string' || path === '') throw invalid(`${what} must be a file path`);
  const resolved = resolveFormat(path, format);
  if (resolved.gzip) throw invalid(`${what}: ${path}: gzipped files are read, not written`);
  const wanted: StorageDtype = role === 'ids' ? 'int32' : 'float32';
  if (!VECTOR_FILE_FORMATS[resolved.format].dtypes.includes(wanted)) {
    throw invalid(`${what}: a .${resolved.format} file cannot hold ${role} (${wanted})`);
  }
  return { role, path, format: resolved.format };
}

function checkOptions(options: KnnJobOptions): Settings {
  if (typeof options !== 'object' || options === null) throw invalid('options must be an object');
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) {
      throw invalid(`unknown option '${key}' (known: ${[...OPTION_KEYS].join(', ')})`);
    }
  }
  const outputs = [outputSpec('ids', options.out, options.outFormat)];
  if (options.distancesOut !== undefined) {
    outputs.push(outputSpec('distances', options.distancesOut, options.distancesFormat));
    if (resolve(options.distancesOut) === resolve(options.out)) {
      throw invalid('out and distancesOut must be different files');
    }
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw invalid('onProgress must be a function');
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw invalid('signal must be an AbortSignal');
  }
  return {
    k: positiveInteger(options.k, 'k'),
    metric: options.metric ?? 'l2',
    excludeSelf: options.excludeSelf === true,
    outputs,
    memoryLimit: positiveInteger(options.memoryLimit ?? DEFAULT_MEMORY_LIMIT, 'memoryLimit'),
    blockRows: options.blockRows === undefined ? Infinity : positiveInteger(options.blockRows, 'blockRows'),
    threads: options.threads === undefined ? undefined : positiveInteger(options.threads, 'threads'),
    devices: options.devices,
    resume: options.resume === true,
    onProgress: options.onProgress,
    signal: options.signal,
  };
}

/** An input of the job: the source, and the path it was opened from (the job closes what it opened). */
interface Input {
  readonly source: VectorSource;
  readonly path?: string;
}

async function openInput(input: string | VectorSource, what: string): Promise<Input> {
  if (typeof input === 'string') return { source: await openVectorFile(input), path: input };
  if (typeof input !== 'object' || input === null || typeof input.read !== 'function') {
    throw invalid(`${what} must be a file path or a VectorSource`);
  }
  return { source: input };
}

/** Query rows per block: queries and results within a quarter of the limit, at most PAIRS_PER_BLOCK pairs. */
function chooseBlockRows(settings: Settings, queries: VectorSource, baseRows: number): number {
  const perQueryRow = 8 * queries.dim + 32 * settings.k;
  const byMemory = Math.floor(settings.memoryLimit / 4 / perQueryRow);
  const byPairs = Math.floor(PAIRS_PER_BLOCK / Math.max(1, baseRows));
  return Math.max(1, Math.min(byMemory, byPairs, settings.blockRows, Math.max(1, queries.rows)));
}

/** Runs a k-NN job (see the file comment); resolves when the outputs are at their final paths. */
export async function runKnnJob(options: KnnJobOptions): Promise<KnnJobResult> {
  const settings = checkOptions(options);
  const opened: Input[] = [];
  try {
    const base = await openInput(options.base, 'base');
    opened.push(base);
    const queries = options.queries === undefined ? base : await openInput(options.queries, 'queries');
    if (queries !== base) opened.push(queries);
    return await new KnnJob(settings, base, queries).run();
  } finally {
    await Promise.all(opened.filter((i) => i.path !== undefined).map((i) => i.source.close?.()));
  }
}

/** The temporary file of an output: beside it (so that the rename is atomic), named after it. */
export function partialPathOf(path: string): string {
  return join(dirname(path), `${basename(path)}${PARTIAL_SUFFIX}`);
}

class KnnJob {
  private readonly base: VectorSource;
  private readonly queries: VectorSource;
  private readonly search: KnnSearch;
  private readonly checkpointPath: string;
  private readonly started = performance.now();
  /** Query rows whose results are durably written (the checkpoint's count). */
  private rowsDone = 0;

  constructor(
    private readonly settings: Settings,
    private readonly baseInput: Input,
    private readonly queryInput: Input,
  ) {
    this.base = baseInput.source;
    this.queries = queryInput.source;
    this.checkpointPath = `${settings.outputs[0].path}${CHECKPOINT_SUFFIX}`;
    if (this.queries.dim !== this.base.dim) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `queries ${this.queries.name} have dim ${this.queries.dim}, base ${this.base.name} has dim ${this.base.dim}`,
      );
    }
    if (settings.excludeSelf && this.queries.rows !== this.base.rows) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `excludeSelf needs the queries to be the base rows: ${this.queries.rows} queries, ${this.base.rows} base rows`,
      );
    }
    const wide = this.base.dtype === 'float64' || this.queries.dtype === 'float64';
    this.search = new KnnSearch({
      dim: this.base.dim,
      k: settings.k,
      metric: settings.metric,
      excludeSelf: settings.excludeSelf,
      dtype: wide ? 'float64' : 'float32',
      threads: settings.threads,
    });
  }

  /** The stored dtype of an output: int32 ids; distances in the search dtype when the format holds it. */
  private dtypeOf(spec: OutputSpec): StorageDtype {
    if (spec.role === 'ids') return 'int32';
    return VECTOR_FILE_FORMATS[spec.format].dtypes.includes(this.search.dtype)
      ? this.search.dtype
      : 'float32';
  }

  /** Everything that changes the output bytes (block sizes, threads and devices do not). */
  private async identity(): Promise<JobIdentity> {
    const base = await identifyInput(this.base, this.baseInput.path);
    const queries =
      this.queryInput === this.baseInput ? 'base' : await identifyInput(this.queries, this.queryInput.path);
    return {
      job: 'knn',
      keopsNode: packageVersion(),
      processor: await processorIdentity(),
      search: this.search.hash,
      base: { ...base },
      queries: typeof queries === 'string' ? queries : { ...queries },
      k: this.settings.k,
      metric: typeof this.settings.metric === 'string' ? this.settings.metric : { ...this.settings.metric },
      excludeSelf: this.settings.excludeSelf,
      outputs: this.settings.outputs.map((s) => ({
        role: s.role,
        path: resolve(s.path),
        format: s.format,
        dtype: this.dtypeOf(s),
      })),
    };
  }

  /** Runs the job holding its lock (OUT.keops-lock), so that no other process writes its files meanwhile. */
  async run(): Promise<KnnJobResult> {
    const lock = await acquireJobLock(`${this.settings.outputs[0].path}${LOCK_SUFFIX}`);
    try {
      return await this.runLocked();
    } finally {
      await lock.release();
    }
  }

  private async runLocked(): Promise<KnnJobResult> {
    const { settings } = this;
    const rows = this.queries.rows;
    const identity = await this.identity();
    const job = jobHash(identity);
    const found = await readCheckpoint(this.checkpointPath);
    if (found !== undefined && !settings.resume) {
      throw new KeOpsError(
        'ERR_CHECKPOINT',
        `${this.checkpointPath} exists (${found.rowsDone} of ${found.rows} query rows done): ` +
          'resume the job (--resume, or resume: true), or delete the checkpoint to start again',
      );
    }
    if (found !== undefined && found.job !== job) {
      const differences = identityDifferences(found.identity, identity);
      throw new KeOpsError(
        'ERR_CHECKPOINT',
        `${this.checkpointPath} belongs to another job (differs in: ${differences.join(', ')}); ` +
          'delete it to start this job, or run the job it was made for',
      );
    }
    const resumedRows = found?.rowsDone ?? 0;
    if (found !== undefined && (await this.alreadyCommitted(found))) {
      await removeCheckpoint(this.checkpointPath);
      return this.finished(rows, resumedRows, 0);
    }
    const writers = await this.openWriters(found);
    this.rowsDone = resumedRows;
    try {
      const pairs = await this.searchAll(writers, job, identity, resumedRows);
      for (const w of writers) await w.commit();
      await removeCheckpoint(this.checkpointPath);
      return this.finished(rows, resumedRows, pairs);
    } catch (e) {
      // Once some rows are checkpointed, the temporary files stay for a resume; before, nothing is worth keeping.
      const keep = this.rowsDone > 0;
      await Promise.all(writers.map((w) => (keep ? w.close() : w.abort()).catch(() => undefined)));
      if (!keep) await removeCheckpoint(this.checkpointPath).catch(() => undefined);
      throw e;
    }
  }

  private finished(rows: number, resumedRows: number, pairs: number): KnnJobResult {
    return {
      rows,
      baseRows: this.base.rows,
      k: this.settings.k,
      outputs: this.settings.outputs.map((s) => s.path),
      resumedRows,
      pairs,
      elapsedMs: performance.now() - this.started,
    };
  }

  /**
   * Whether a finished job was stopped after renaming its outputs but before removing its checkpoint: every
   * row done, every temporary file gone (renamed) and every output there.
   */
  private async alreadyCommitted(found: Checkpoint): Promise<boolean> {
    if (found.rowsDone !== found.rows) return false;
    for (const spec of this.settings.outputs) {
      if ((await exists(partialPathOf(spec.path))) || !(await exists(spec.path))) return false;
    }
    return true;
  }

  /**
   * The writers: new temporary files for a fresh job (replacing those of a run stopped before its first
   * checkpoint); those of the checkpoint for a resumed one (whose rows done must still be there: ERR_CHECKPOINT
   * if a temporary file is gone).
   */
  private async openWriters(found: Checkpoint | undefined): Promise<VectorFileWriter[]> {
    const writers: VectorFileWriter[] = [];
    try {
      for (const spec of this.settings.outputs) {
        const writer = await createVectorFileWriter(spec.path, {
          format: spec.format,
          rows: this.queries.rows,
          dim: this.settings.k,
          dtype: this.dtypeOf(spec),
          tempPath: partialPathOf(spec.path),
          resume: found !== undefined,
        });
        writers.push(writer);
        if (found !== undefined && found.rowsDone > 0 && !writer.resumed) {
          throw new KeOpsError(
            'ERR_CHECKPOINT',
            `${this.checkpointPath} says ${found.rowsDone} query rows are done, but their temporary file ` +
              `${writer.tempPath} is gone: delete the checkpoint to start the job again`,
          );
        }
      }
    } catch (e) {
      // A resumed job's temporary files are kept (closed); a fresh job's are removed.
      await Promise.all(
        writers.map((w) => (found !== undefined ? w.close() : w.abort()).catch(() => undefined)),
      );
      throw e;
    }
    return writers;
  }

  /** Searches and writes the blocks after `startRow`, checkpointing each; returns the pairs computed. */
  private async searchAll(
    writers: readonly VectorFileWriter[],
    job: string,
    identity: JobIdentity,
    startRow: number,
  ): Promise<number> {
    const { settings } = this;
    const rows = this.queries.rows;
    const baseRows = this.base.rows;
    const block = chooseBlockRows(settings, this.queries, baseRows);
    const pairsAtStart = startRow * baseRows;
    const report = (rowsDone: number, pairsDone: number) =>
      settings.onProgress?.({
        pairsDone,
        pairsTotal: rows * baseRows,
        pairsAtStart,
        rowsDone,
        rows,
        elapsedMs: performance.now() - this.started,
      });
    report(startRow, pairsAtStart);
    // The block's results: up to 16 bytes per neighbour (int32 ids, float64 distances, and their copies).
    const searchMemory = Math.max(1, settings.memoryLimit - block * settings.k * 16);
    for (let q0 = startRow; q0 < rows; q0 += block) {
      checkAbort(settings.signal);
      const q1 = Math.min(rows, q0 + block);
      const result = await runKnnSearch(this.search, this.queries, this.base, {
        queryRange: [q0, q1],
        memoryLimit: searchMemory,
        threads: settings.threads,
        devices: settings.devices,
        signal: settings.signal,
        onProgress: (p) => report(q0, q0 * baseRows + p.pairsDone),
      });
      await this.write(writers, q0, result);
      await Promise.all(writers.map((w) => w.sync()));
      await writeCheckpoint(this.checkpointPath, { job, identity, rows, rowsDone: q1 });
      this.rowsDone = q1;
      report(q1, q1 * baseRows);
    }
    return (rows - startRow) * baseRows;
  }

  private async write(writers: readonly VectorFileWriter[], q0: number, result: KnnRows): Promise<void> {
    await Promise.all(
      writers.map((w) => {
        if (w === writers[0]) return w.writeRows(q0, result.ids);
        const d = result.distances;
        return w.writeRows(q0, w.dtype === 'float64' || d instanceof Float32Array ? d : Float32Array.from(d));
      }),
    );
  }
}

/**
 * What the kernels run on ('auto' picks the GPUs when there are any): kernels are compiled for their processor,
 * and another CPU model or GPU may round a distance differently in its last bit, so a job resumes only there.
 */
async function processorIdentity(): Promise<string> {
  const info = await runtimeInfo();
  if (info.backend === 'cuda' && info.devices.length > 0) {
    return `cuda: ${[...new Set(info.devices.map((d) => d.name))].join(', ')}`;
  }
  return `cpu: ${cpus()[0]?.model ?? 'unknown'}`;
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted)
    throw new KeOpsError('ERR_ABORTED', 'the k-NN job was aborted', { cause: signal.reason });
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Chunked (out-of-core) execution: a reduction whose i- and j-indexed inputs are row sources (sources.ts), run
 * over blocks of output rows and chunks of reduced rows so that peak memory stays within `memoryLimit` (plus a
 * fixed overhead: the runtime, compiled kernels, parameters), with the next chunk read while the current one
 * computes. Each (block, chunk) piece is a partial result (partial.ts) merged into the block's state, so the
 * result is that of one call: indices exactly (global, int64 past 2^31 reduced rows), sums within rounding.
 *
 *     const result = await reduceChunked(new Genred(...), [x, { rows: N, read: (a, b) => readBase(a, b) }], {
 *       memoryLimit: 64 << 20,
 *       onProgress: ({ pairsDone, pairsTotal }) => console.log(pairsDone / pairsTotal),
 *       signal: controller.signal,
 *       devices: 'all',
 *     });
 *
 * Order: output blocks outer, reduced chunks inner. When the state of every output row fits in half the limit
 * there is one block and every source is read once; otherwise the reduced-axis sources are read once per block
 * (streams, which read once, then need a larger limit). Kernel calls are pieces of at most PAIRS_PER_CALL pairs,
 * spread over the lanes (one per GPU of `devices`, or the CPU backend with all its threads): `signal` and progress
 * are checked and reported between pieces.
 */
import { performance } from 'node:perf_hooks';
import { KeOpsError } from '../errors';
import type { CallArg, Dtype, FloatArray } from '../backend/plan';
import type { Backend, RunOptions } from '../backend/runner';
import { runtimeInfo } from '../backend/cuda/runtime';
import type { GenredValues } from '../formula/genred-reductions';
import type { NodeGenred } from '../genred';
import {
  type ChunkedIndices,
  type ChunkedResult,
  finalizeState,
  INT32_INDEX_LIMIT,
  PartialReducer,
} from './partial';
import { openRowSource, type RowReader, type RowSource } from './sources';

/** Pairs (output row × reduced row) per kernel call: seconds of CPU work, so abort and progress stay responsive. */
export const PAIRS_PER_CALL = 2 ** 32;
/** Default `memoryLimit`. */
export const DEFAULT_MEMORY_LIMIT = 256 * 2 ** 20;
/** Most reduced rows one call takes (its local indices are int32). */
const MAX_ROWS_PER_CALL = 2 ** 31 - 1;
/** Progress reports are at least this far apart (the last one, at completion, always comes). */
const PROGRESS_INTERVAL_MS = 100;

export interface ChunkedProgress {
  /** (output row, reduced row) pairs evaluated so far, and in all. */
  readonly pairsDone: number;
  readonly pairsTotal: number;
  readonly elapsedMs: number;
}

export interface ChunkedOptions {
  /** Bytes the run may hold (states, input chunks, kernel outputs, the result); default 256 MiB. */
  readonly memoryLimit?: number;
  /** Upper bounds on the chunk sizes the memory limit gives (rows): for tuning and tests. */
  readonly chunkRows?: { readonly output?: number; readonly reduced?: number };
  /** Called with the progress at most ~10 times a second, and once at the end. */
  readonly onProgress?: (progress: ChunkedProgress) => void;
  /** Cancels the run between kernel calls: it rejects with ERR_ABORTED. */
  readonly signal?: AbortSignal;
  /** Runs on these GPUs ('all': every GPU), one lane each, the reduced axis split over them and merged. */
  readonly devices?: 'all' | readonly number[];
  /** The Genred's backend unless given ('cuda' with `devices`). */
  readonly backend?: Backend;
  /** CPU threads per call (default: the Genred's, i.e. one per core). */
  readonly threads?: number;
}

/** The names of ChunkedOptions (checked at run time: unknown names are refused). */
export const CHUNKED_OPTION_KEYS = [
  'memoryLimit',
  'chunkRows',
  'onProgress',
  'signal',
  'devices',
  'backend',
  'threads',
] as const satisfies readonly (keyof ChunkedOptions)[];
const OPTION_KEYS: ReadonlySet<string> = new Set(CHUNKED_OPTION_KEYS);

const invalid = (message: string) => new KeOpsError('ERR_INVALID_ARGUMENT', message);

interface Lane {
  readonly options: RunOptions;
  /** The GPU ordinal, for error messages. */
  readonly device?: number;
}

/** How one argument position is fed. */
type Input =
  | { readonly kind: 'fixed'; readonly data: CallArg }
  | { readonly kind: 'rows'; readonly axis: 'output' | 'reduced'; readonly reader: RowReader };

/**
 * Runs `genred` (a Genred, NodeGenred, or the PartialReducer of one, which keeps its compiled kernels between
 * runs) over row sources, one per argument (parameters and unused positions: plain arrays).
 */
export async function reduceChunked(
  genred: NodeGenred | PartialReducer,
  sources: readonly (RowSource | CallArg)[],
  options: ChunkedOptions = {},
): Promise<ChunkedResult> {
  const reducer = genred instanceof PartialReducer ? genred : new PartialReducer(genred);
  const settings = checkOptions(options);
  const run = new ChunkedRun(reducer, settings);
  try {
    run.open(sources);
    return await run.execute();
  } finally {
    await run.close();
  }
}

interface Settings {
  readonly memoryLimit: number;
  readonly outputCap: number;
  readonly reducedCap: number;
  readonly onProgress?: (progress: ChunkedProgress) => void;
  readonly signal?: AbortSignal;
  readonly devices?: 'all' | readonly number[];
  readonly backend?: Backend;
  readonly threads?: number;
}

function checkCap(value: unknown, what: string): number {
  if (value === undefined) return Infinity;
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw invalid(`chunkRows.${what} must be an integer >= 1, got ${String(value)}`);
  }
  return value as number;
}

function checkOptions(options: ChunkedOptions): Settings {
  if (typeof options !== 'object' || options === null) throw invalid('options must be an object');
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.has(key)) {
      throw invalid(`unknown option '${key}' (known: ${[...OPTION_KEYS].join(', ')})`);
    }
  }
  const memoryLimit = options.memoryLimit ?? DEFAULT_MEMORY_LIMIT;
  if (typeof memoryLimit !== 'number' || !Number.isSafeInteger(memoryLimit) || memoryLimit < 1) {
    throw invalid(`memoryLimit must be a number of bytes >= 1, got ${String(memoryLimit)}`);
  }
  const caps = options.chunkRows ?? {};
  if (typeof caps !== 'object' || caps === null) throw invalid('chunkRows must be { output?, reduced? }');
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw invalid('onProgress must be a function');
  }
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw invalid('signal must be an AbortSignal');
  const devices = options.devices;
  if (devices !== undefined && devices !== 'all') {
    if (!Array.isArray(devices) || devices.length === 0) {
      throw invalid(`devices must be 'all' or a non-empty array of GPU ordinals`);
    }
    for (const d of devices) {
      if (!Number.isSafeInteger(d) || d < 0) throw invalid(`devices: ${String(d)} is not a GPU ordinal`);
    }
    if (new Set(devices).size !== devices.length) throw invalid('devices: an ordinal is listed twice');
  }
  if (devices !== undefined && options.backend === 'cpu')
    throw invalid("devices needs backend 'cuda' or 'auto'");
  return {
    memoryLimit,
    outputCap: checkCap(caps.output, 'output'),
    reducedCap: checkCap(caps.reduced, 'reduced'),
    onProgress: options.onProgress,
    signal,
    devices,
    backend: options.backend,
    threads: options.threads,
  };
}

const bytesOf = (dtype: Dtype | undefined): number => (dtype === 'float32' ? 4 : 8);

class ChunkedRun {
  private inputs: Input[] = [];
  private dtype: Dtype | undefined;
  private rowsOut = 0;
  private rowsReduced = 0;
  private readonly started = performance.now();
  private lastReport = -Infinity;
  private pairsDone = 0;

  constructor(
    private readonly reducer: PartialReducer,
    private readonly settings: Settings,
  ) {}

  open(sources: readonly (RowSource | CallArg)[]): void {
    const runner = this.reducer.stateRunner;
    if (!Array.isArray(sources)) throw new KeOpsError('ERR_ARG_COUNT', 'sources must be an array');
    if (sources.length !== runner.argCount) {
      throw new KeOpsError('ERR_ARG_COUNT', `expected ${runner.argCount} sources, got ${sources.length}`);
    }
    const outputCat = runner.reduction.tag === 0 ? 0 : 1;
    const declared = new Map(runner.variables.map((v) => [v.pos, v]));
    const rows: Record<'output' | 'reduced', number | undefined> = { output: undefined, reduced: undefined };
    sources.forEach((source, pos) => {
      const v = declared.get(pos);
      if (v === undefined || v.cat === 2) {
        this.inputs.push({ kind: 'fixed', data: source as CallArg });
        return;
      }
      const what = `source ${pos}${v.name === undefined ? '' : ` (${v.name})`}`;
      const reader = openRowSource(source, v.dim, what, () => this.dtype);
      this.inputs.push({ kind: 'rows', axis: v.cat === outputCat ? 'output' : 'reduced', reader });
      const axis = v.cat === outputCat ? 'output' : 'reduced';
      const known = rows[axis];
      if (known !== undefined && known !== reader.rows) {
        throw new KeOpsError(
          'ERR_ARG_SHAPE',
          `${what} has ${reader.rows} rows, another ${axis}-axis source ${known}`,
        );
      }
      rows[axis] = reader.rows;
      if (reader.dtype !== undefined) this.setDtype(reader.dtype, what);
    });
    for (const input of this.inputs) {
      if (input.kind === 'fixed') {
        const data = input.data;
        if (data instanceof Float32Array || data instanceof Float64Array)
          this.setDtype(dtypeOfArray(data), 'a parameter');
      }
    }
    if (rows.output === undefined || rows.reduced === undefined) {
      throw invalid('a chunked run needs at least one i-indexed and one j-indexed source');
    }
    this.rowsOut = rows.output;
    this.rowsReduced = rows.reduced;
  }

  private setDtype(dtype: Dtype, what: string): void {
    if (this.dtype !== undefined && this.dtype !== dtype) {
      throw new KeOpsError('ERR_ARG_DTYPE', `${what} is ${dtype}, other inputs are ${this.dtype}`);
    }
    this.dtype = dtype;
  }

  async close(): Promise<void> {
    await Promise.all(this.inputs.map((i) => (i.kind === 'rows' ? i.reader.close() : undefined)));
  }

  private readers(axis: 'output' | 'reduced'): RowReader[] {
    return this.inputs.flatMap((i) => (i.kind === 'rows' && i.axis === axis ? [i.reader] : []));
  }

  /** Output block and reduced chunk sizes (rows) from the memory limit; ERR_MEMORY_LIMIT when nothing fits. */
  private chooseSizes(lanes: number): { block: number; chunk: number } {
    const { memoryLimit, outputCap, reducedCap } = this.settings;
    const ops = this.reducer.ops;
    const { dimVal, dimIdx } = this.reducer.resolved.reduction.layout;
    const bytes = bytesOf(this.dtype);
    const width = (axis: 'output' | 'reduced') => this.readers(axis).reduce((n, r) => n + r.dim, 0);
    const indexBytes = this.rowsReduced > INT32_INDEX_LIMIT ? 8 : 4;
    const perOutputRow =
      8 * (ops.dimVal + ops.dimIdx) + // the block's float64 state
      bytes * width('output') + // the block's inputs
      bytes * dimVal +
      indexBytes * dimIdx + // its share of the result
      lanes * (bytes * ops.dimVal + 4 * ops.dimIdx); // kernel outputs in flight
    const perReducedRow = 2 * bytes * width('reduced'); // the chunk being computed and the next one
    const minimum = perOutputRow + perReducedRow;
    if (memoryLimit < minimum) {
      throw new KeOpsError(
        'ERR_MEMORY_LIMIT',
        `memoryLimit ${memoryLimit} bytes is below the minimum of ${minimum} bytes for this reduction ` +
          `(one output row: ${perOutputRow} bytes, one reduced row: ${perReducedRow} bytes)`,
      );
    }
    const M = Math.max(1, this.rowsOut);
    let block: number;
    let chunk: number;
    if (M * perOutputRow <= memoryLimit / 2) {
      block = M;
      chunk = Math.floor((memoryLimit - M * perOutputRow) / perReducedRow);
    } else {
      block = Math.floor(memoryLimit / 2 / perOutputRow);
      chunk = Math.floor(memoryLimit / 2 / perReducedRow);
      if (block < 1 || chunk < 1) {
        block = Math.max(1, block);
        chunk = Math.max(1, Math.floor((memoryLimit - block * perOutputRow) / perReducedRow));
      }
    }
    block = Math.min(block, outputCap, M);
    chunk = Math.max(1, Math.min(chunk, reducedCap, Math.max(1, this.rowsReduced), MAX_ROWS_PER_CALL));
    if (block < this.rowsOut) {
      const stream = this.readers('reduced').find((r) => !r.rereadable);
      if (stream !== undefined) {
        throw new KeOpsError(
          'ERR_MEMORY_LIMIT',
          `a streamed reduced-axis source is read once, so the state of all ${this.rowsOut} output rows must fit: ` +
            `that needs memoryLimit >= ${Math.ceil(2 * this.rowsOut * perOutputRow)} bytes ` +
            `(or give a source with read(start, end))`,
        );
      }
    }
    return { block, chunk };
  }

  private async lanes(): Promise<Lane[]> {
    const { devices, backend, threads } = this.settings;
    if (devices === undefined) return [{ options: { backend, threads } }];
    const info = await runtimeInfo();
    if (info.backend !== 'cuda' || info.devices.length === 0) {
      throw new KeOpsError('ERR_NO_GPU', `devices: no usable GPU (${info.reason ?? 'no device'})`);
    }
    const ordinals = devices === 'all' ? info.devices.map((_, k) => k) : devices;
    for (const d of ordinals) {
      if (d >= info.devices.length) {
        throw new KeOpsError(
          'ERR_NO_GPU',
          `devices: there is no GPU ${d} (this machine has ${info.devices.length})`,
        );
      }
    }
    return ordinals.map((device) => ({ options: { backend: 'cuda', device, threads }, device }));
  }

  private checkAbort(): void {
    const signal = this.settings.signal;
    if (signal?.aborted) {
      throw new KeOpsError('ERR_ABORTED', 'the chunked run was aborted', { cause: signal.reason });
    }
  }

  private report(force: boolean): void {
    const onProgress = this.settings.onProgress;
    if (onProgress === undefined) return;
    const now = performance.now();
    if (!force && now - this.lastReport < PROGRESS_INTERVAL_MS) return;
    this.lastReport = now;
    onProgress({
      pairsDone: this.pairsDone,
      pairsTotal: this.rowsOut * this.rowsReduced,
      elapsedMs: now - this.started,
    });
  }

  /**
   * Reads rows [start, end) of every source of an axis. `pool` (reduced axis) recycles two arrays per source,
   * alternately (`slot`): a chunk's array is reused two chunks later, after its computation has ended.
   */
  private async readAxis(
    axis: 'output' | 'reduced',
    start: number,
    end: number,
    pool?: { readonly buffers: Map<RowReader, FloatArray[]>; readonly rows: number; readonly slot: number },
  ): Promise<Map<RowReader, FloatArray>> {
    const readers = this.readers(axis);
    const target = (r: RowReader): FloatArray | undefined => {
      // Only sources that fill it get a recycled array (arrays are read as views, streams as their chunks).
      if (pool === undefined || this.dtype === undefined || !r.fillsTarget) return undefined;
      let pair = pool.buffers.get(r);
      if (pair === undefined) {
        const make = () =>
          this.dtype === 'float32'
            ? new Float32Array(pool.rows * r.dim)
            : new Float64Array(pool.rows * r.dim);
        pair = [make(), make()];
        pool.buffers.set(r, pair);
      }
      return pair[pool.slot % 2].subarray(0, (end - start) * r.dim);
    };
    const chunks = await Promise.all(readers.map((r) => r.read(start, end, target(r))));
    for (const c of chunks) this.setDtypeFromChunk(c);
    return new Map(readers.map((r, k) => [r, chunks[k]]));
  }

  private setDtypeFromChunk(chunk: FloatArray): void {
    const dtype = dtypeOfArray(chunk);
    if (this.dtype === undefined) this.dtype = dtype;
    else if (this.dtype !== dtype) {
      throw new KeOpsError('ERR_SOURCE', `a source returned ${dtype} rows, but the run is ${this.dtype}`);
    }
  }

  async execute(): Promise<ChunkedResult> {
    this.checkAbort();
    const lanes = await this.lanes();
    const { block, chunk } = this.chooseSizes(lanes.length);
    const M = this.rowsOut;
    const N = this.rowsReduced;
    const perCall = Math.max(1, Math.min(chunk, Math.floor(PAIRS_PER_CALL / Math.max(1, block))));
    const wide = N > INT32_INDEX_LIMIT;
    const parts: ChunkedResult[] = [];
    const buffers = new Map<RowReader, FloatArray[]>(); // recycled reduced-axis chunks
    for (let i0 = 0; i0 < M || (M === 0 && i0 === 0); i0 += block) {
      const i1 = Math.min(M, i0 + block);
      this.checkAbort();
      const outputRows = await this.readAxis('output', i0, i1);
      const state = this.reducer.ops.identity(i1 - i0);
      const readChunk = (j0: number) => {
        const p = this.readAxis('reduced', j0, Math.min(N, j0 + chunk), {
          buffers,
          rows: chunk,
          slot: j0 / chunk,
        });
        p.catch(() => undefined); // awaited below; a failure is reported there
        return p;
      };
      let next: Promise<Map<RowReader, FloatArray>> | undefined = N > 0 && i1 > i0 ? readChunk(0) : undefined;
      try {
        for (let j0 = 0; next !== undefined; j0 += chunk) {
          const j1 = Math.min(N, j0 + chunk);
          const reducedRows = await next;
          next = j1 < N ? readChunk(j1) : undefined; // overlaps the reads of the next chunk with this one's compute
          // At least one piece per lane, so that every GPU works on every chunk.
          const count = Math.min(j1 - j0, Math.max(lanes.length, Math.ceil((j1 - j0) / perCall)));
          const size = Math.ceil((j1 - j0) / count);
          const pieces: [number, number][] = [];
          for (let a = j0; a < j1; a += size) pieces.push([a, Math.min(j1, a + size)]);
          await this.runPieces(
            lanes,
            pieces,
            (a, z) => this.argsFor(outputRows, reducedRows, j0, a, z),
            state,
            i1 - i0,
          );
        }
      } finally {
        if (next !== undefined) await next.catch(() => undefined); // never leave a read running
      }
      parts.push(
        finalizeState(this.reducer.resolved, this.reducer.ops, state, i1 - i0, this.dtype ?? 'float64', wide),
      );
      if (M === 0) break;
    }
    this.report(true);
    return concatResults(parts);
  }

  private argsFor(
    outputRows: Map<RowReader, FloatArray>,
    reducedRows: Map<RowReader, FloatArray>,
    j0: number,
    a: number,
    z: number,
  ): CallArg[] {
    return this.inputs.map((input) => {
      if (input.kind === 'fixed') return input.data;
      const { reader } = input;
      if (input.axis === 'output') return outputRows.get(reader) as FloatArray;
      return (reducedRows.get(reader) as FloatArray).subarray((a - j0) * reader.dim, (z - j0) * reader.dim);
    });
  }

  /** Runs the pieces on the lanes (each lane one call at a time) and folds each result into the block state. */
  private async runPieces(
    lanes: readonly Lane[],
    pieces: readonly [number, number][],
    args: (a: number, z: number) => CallArg[],
    state: { val: Float64Array; idx: Float64Array },
    blockRows: number,
  ): Promise<void> {
    let next = 0;
    let failure: unknown;
    const work = async (lane: Lane) => {
      while (failure === undefined && next < pieces.length) {
        this.checkAbort();
        const [a, z] = pieces[next++];
        let raw;
        try {
          raw = await this.reducer.stateRunner.callRaw(args(a, z), lane.options);
        } catch (e) {
          throw laneError(lane, e);
        }
        this.reducer.ops.foldRaw(state, 0, raw, a);
        this.pairsDone += blockRows * (z - a);
        this.report(false);
      }
    };
    const settled = await Promise.allSettled(
      lanes.map((lane) =>
        work(lane).catch((e: unknown) => {
          failure ??= e;
        }),
      ),
    );
    void settled;
    if (failure !== undefined) throw failure;
  }
}

function laneError(lane: Lane, e: unknown): KeOpsError {
  if (lane.device === undefined) {
    return e instanceof KeOpsError ? e : new KeOpsError('ERR_NATIVE', String(e), { cause: e });
  }
  const code = e instanceof KeOpsError ? e.code : 'ERR_CUDA';
  const message = e instanceof Error ? e.message : String(e);
  return new KeOpsError(code, `GPU ${lane.device} failed: ${message}`, { cause: e });
}

const dtypeOfArray = (a: FloatArray): Dtype => (a instanceof Float32Array ? 'float32' : 'float64');

/** Concatenates the results of consecutive output blocks. */
function concatResults(parts: readonly ChunkedResult[]): ChunkedResult {
  if (parts.length === 1) return parts[0];
  const join = <T extends GenredValues | ChunkedIndices>(arrays: T[]): T => {
    const total = arrays.reduce((n, a) => n + a.length, 0);
    const out = new (arrays[0].constructor as new (n: number) => T)(total);
    let at = 0;
    for (const a of arrays) {
      (out as unknown as { set(a: T, at: number): void }).set(a, at);
      at += a.length;
    }
    return out;
  };
  const first = parts[0];
  if (ArrayBuffer.isView(first)) return join(parts as (GenredValues | ChunkedIndices)[]);
  const pairs = parts as { values: GenredValues; indices: ChunkedIndices }[];
  return { values: join(pairs.map((p) => p.values)), indices: join(pairs.map((p) => p.indices)) };
}

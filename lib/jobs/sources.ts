/**
 * Row sources: where a chunked run (chunked.ts) reads the rows of one i- or j-indexed argument.
 *
 *     Float32Array | Float64Array                                  // all rows in memory (rows = length / dim)
 *     { rows, read(start, end, target?) => rows [start, end) }     // random access, sync or async (re-readable)
 *     { rows, chunks: AsyncIterable<FloatArray> | Iterable<...> }  // a stream of consecutive rows, read once
 *
 * Each returned array holds whole rows, row-major, of the argument's dim, in one dtype for the whole run
 * (`dtype` on a source sizes the chunks before its first read; unknown dtypes are sized as float64). A source
 * that throws, or returns a wrong length, type or dtype, fails the run with ERR_SOURCE naming the argument and
 * the rows.
 */
import { KeOpsError } from '../errors';
import type { Dtype, FloatArray } from '../backend/plan';

export interface RangeRowSource {
  readonly rows: number;
  readonly dtype?: Dtype;
  /**
   * Rows [start, end). `target`, when given, is an array of exactly (end − start) × dim values of the run's dtype
   * that the source may fill and return instead of allocating: a chunked run recycles two per source, which keeps
   * its memory bounded however quickly garbage is collected. Returning another array is fine too.
   */
  read(start: number, end: number, target?: FloatArray): FloatArray | Promise<FloatArray>;
}

export interface StreamRowSource {
  readonly rows: number;
  readonly dtype?: Dtype;
  readonly chunks: AsyncIterable<FloatArray> | Iterable<FloatArray>;
}

export type RowSource = FloatArray | RangeRowSource | StreamRowSource;

/** A source opened for one run: reads validated rows, sequentially for streams. */
export interface RowReader {
  readonly rows: number;
  readonly dim: number;
  /** Known before the first read (arrays, declared dtypes), else undefined. */
  readonly dtype: Dtype | undefined;
  /** Whether rows can be read again (false for streams). */
  readonly rereadable: boolean;
  /** Whether `read` may fill a `target` array (read(start, end) sources); arrays and streams never do. */
  readonly fillsTarget: boolean;
  /** `target`: a recyclable array of the rows' size, passed on to read(start, end, target) sources. */
  read(start: number, end: number, target?: FloatArray): Promise<FloatArray>;
  /** Releases the source (ends a stream early); idempotent. */
  close(): Promise<void>;
}

const sourceError = (what: string, message: string, cause?: unknown) =>
  new KeOpsError('ERR_SOURCE', `${what}: ${message}`, cause === undefined ? {} : { cause });

const isFloatArray = (a: unknown): a is FloatArray => a instanceof Float32Array || a instanceof Float64Array;
const dtypeOf = (a: FloatArray): Dtype => (a instanceof Float32Array ? 'float32' : 'float64');

function checkRows(rows: unknown, what: string): number {
  if (typeof rows !== 'number' || !Number.isSafeInteger(rows) || rows < 0) {
    throw new KeOpsError('ERR_ARG_TYPE', `${what}: rows must be an integer >= 0, got ${String(rows)}`);
  }
  return rows;
}

function checkDeclaredDtype(dtype: unknown, what: string): Dtype | undefined {
  if (dtype === undefined || dtype === 'float32' || dtype === 'float64') return dtype;
  throw new KeOpsError(
    'ERR_ARG_DTYPE',
    `${what}: dtype must be 'float32' or 'float64', got ${String(dtype)}`,
  );
}

/** Checks a chunk a source returned for rows [start, end). */
function checkChunk(
  chunk: unknown,
  what: string,
  dim: number,
  start: number,
  end: number,
  dtype: Dtype | undefined,
): FloatArray {
  const range = `rows [${start}, ${end})`;
  if (!isFloatArray(chunk)) {
    throw sourceError(what, `${range}: expected a Float32Array or Float64Array, got ${describeValue(chunk)}`);
  }
  if (dtype !== undefined && dtypeOf(chunk) !== dtype) {
    throw sourceError(what, `${range}: got ${dtypeOf(chunk)} rows, but the run is ${dtype}`);
  }
  if (chunk.length !== (end - start) * dim) {
    throw sourceError(
      what,
      `${range}: expected ${end - start} rows of dim ${dim} (${(end - start) * dim} values), got ${chunk.length} values`,
    );
  }
  return chunk;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  return typeof v === 'object' ? `an object` : `a ${typeof v}`;
}

/**
 * Opens a source for an argument of dimension `dim`; `what` names it in errors. `dtype()` gives the run's dtype
 * once known (so that every chunk is checked against it).
 */
export function openRowSource(
  source: unknown,
  dim: number,
  what: string,
  runDtype: () => Dtype | undefined,
): RowReader {
  if (isFloatArray(source)) {
    if (source.length % dim !== 0) {
      throw new KeOpsError(
        'ERR_ARG_SHAPE',
        `${what}: length ${source.length} is not a multiple of its dim ${dim}`,
      );
    }
    return {
      rows: source.length / dim,
      dim,
      dtype: dtypeOf(source),
      rereadable: true,
      fillsTarget: false,
      read: (start, end) => Promise.resolve(source.subarray(start * dim, end * dim)),
      close: () => Promise.resolve(),
    };
  }
  if (typeof source !== 'object' || source === null) {
    throw new KeOpsError(
      'ERR_ARG_TYPE',
      `${what} must be a Float32Array, a Float64Array, { rows, read(start, end) } or { rows, chunks }`,
    );
  }
  const rows = checkRows((source as { rows?: unknown }).rows, what);
  const declared = checkDeclaredDtype((source as { dtype?: unknown }).dtype, what);
  const read = (source as { read?: unknown }).read;
  if (typeof read === 'function') {
    return {
      rows,
      dim,
      dtype: declared,
      rereadable: true,
      fillsTarget: true,
      async read(start, end, target) {
        let chunk: unknown;
        try {
          chunk = await read.call(source, start, end, target);
        } catch (e) {
          throw sourceError(
            what,
            `reading rows [${start}, ${end}) failed: ${(e as Error)?.message ?? String(e)}`,
            e,
          );
        }
        return checkChunk(chunk, what, dim, start, end, runDtype() ?? declared);
      },
      close: () => Promise.resolve(),
    };
  }
  const chunks = (source as { chunks?: unknown }).chunks;
  const iterable = chunks as { [Symbol.asyncIterator]?: unknown; [Symbol.iterator]?: unknown } | null;
  if (
    typeof iterable?.[Symbol.asyncIterator] === 'function' ||
    typeof iterable?.[Symbol.iterator] === 'function'
  ) {
    return streamReader(
      chunks as AsyncIterable<FloatArray> | Iterable<FloatArray>,
      rows,
      dim,
      declared,
      what,
      runDtype,
    );
  }
  throw new KeOpsError(
    'ERR_ARG_TYPE',
    `${what}: a row source needs read(start, end) or chunks (an iterable)`,
  );
}

/**
 * A stream read in order: each read takes the next rows, from the rest of the previous chunk and as many new
 * chunks as needed (copied into one array only when a read spans chunks).
 */
function streamReader(
  chunks: AsyncIterable<FloatArray> | Iterable<FloatArray>,
  rows: number,
  dim: number,
  declared: Dtype | undefined,
  what: string,
  runDtype: () => Dtype | undefined,
): RowReader {
  const iterator =
    Symbol.asyncIterator in chunks
      ? (chunks as AsyncIterable<FloatArray>)[Symbol.asyncIterator]()
      : (chunks as Iterable<FloatArray>)[Symbol.iterator]();
  let position = 0; // rows handed out
  let pending: FloatArray | undefined; // the unread rest of the last chunk
  let closed = false;
  const next = async (): Promise<FloatArray> => {
    let step: IteratorResult<FloatArray>;
    try {
      step = await iterator.next();
    } catch (e) {
      throw sourceError(
        what,
        `reading after row ${position} failed: ${(e as Error)?.message ?? String(e)}`,
        e,
      );
    }
    if (step.done) throw sourceError(what, `the stream ended after fewer rows than its declared ${rows}`);
    const chunk = step.value as unknown;
    if (!isFloatArray(chunk)) {
      throw sourceError(
        what,
        `after row ${position}: expected a Float32Array or Float64Array, got ${describeValue(chunk)}`,
      );
    }
    const dtype = runDtype() ?? declared;
    if (dtype !== undefined && dtypeOf(chunk) !== dtype) {
      throw sourceError(what, `after row ${position}: got ${dtypeOf(chunk)} rows, but the run is ${dtype}`);
    }
    if (chunk.length % dim !== 0) {
      throw sourceError(
        what,
        `after row ${position}: a chunk of ${chunk.length} values is not whole rows of dim ${dim}`,
      );
    }
    return chunk;
  };
  return {
    rows,
    dim,
    dtype: declared,
    rereadable: false,
    fillsTarget: false,
    async read(start, end) {
      if (start !== position) {
        throw new KeOpsError(
          'ERR_INTERNAL',
          `${what}: a stream read at row ${start}, but it is at row ${position}`,
        );
      }
      const want = (end - start) * dim;
      const parts: FloatArray[] = [];
      let have = 0;
      while (have < want) {
        const chunk = pending ?? (await next());
        const take = Math.min(chunk.length, want - have);
        parts.push(chunk.subarray(0, take));
        pending = take < chunk.length ? chunk.subarray(take) : undefined;
        have += take;
      }
      position = end;
      if (end === rows && pending !== undefined && pending.length > 0) {
        throw sourceError(what, `the stream has more rows than its declared ${rows}`);
      }
      if (parts.length === 1) return parts[0];
      const out = parts[0] instanceof Float32Array ? new Float32Array(want) : new Float64Array(want);
      let at = 0;
      for (const p of parts) {
        if (dtypeOf(p) !== dtypeOf(out)) throw sourceError(what, 'chunks of different dtypes');
        out.set(p, at);
        at += p.length;
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      pending = undefined;
      try {
        await iterator.return?.();
      } catch {
        // the stream failed while closing; its earlier error (if any) is the one reported
      }
    },
  };
}

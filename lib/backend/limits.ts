/**
 * Up-front bounds of a call, checked before anything is allocated or run, so that a request that cannot be
 * served fails in milliseconds with a KeOpsError instead of allocating until the process aborts, or returning
 * indices that wrapped around.
 *
 * - Batch entries (each is one planned job, with views into every argument): at most MAX_BATCH_ENTRIES.
 * - Outputs: each result array within the largest typed array this Node can make, and all of them together
 *   within the machine's memory (ERR_OUTPUT_TOO_LARGE).
 * - Indices are int32: a reduction that returns indices cannot reduce over 2^31 rows or more
 *   (ERR_INDEX_OVERFLOW).
 */
import { constants as bufferConstants } from 'node:buffer';
import { totalmem } from 'node:os';
import { KeOpsError } from '../errors';
import type { ReductionLayout } from '../formula/reduction';

/**
 * Batch entries (jobs) one call may plan. Each entry is planned and handed to the addon as its own job (about
 * 10-30 µs and a few hundred bytes each on one core), so 2^16 entries take under a second or two.
 */
export const MAX_BATCH_ENTRIES = 1 << 16;

/** Rows a reduction with index outputs may reduce over: indices are int32. */
export const MAX_INDEXED_ROWS = 2 ** 31 - 1;

/** The largest typed array (in elements) this Node can allocate. */
const MAX_TYPED_ARRAY_LENGTH = bufferConstants.MAX_LENGTH;

/**
 * The number of batch entries of `batchShape`, refused above MAX_BATCH_ENTRIES (computed without overflowing,
 * so that `[1e9, 1e9]` is refused as quickly as `[1e9]`).
 */
export function checkedBatchCount(batchShape: readonly number[]): number {
  let count = 1;
  for (const n of batchShape) {
    count *= n;
    if (count > MAX_BATCH_ENTRIES) {
      throw new KeOpsError(
        'ERR_OUTPUT_TOO_LARGE',
        `the batch dims [${batchShape.join(', ')}] make more than ${MAX_BATCH_ENTRIES} batch entries, ` +
          'the most one call plans; split the call, or fold batch dims into rows',
      );
    }
  }
  return batchShape.some((n) => n === 0) ? 0 : count;
}

/** Refuses an output that could not be allocated: `rows` output rows of `dimVal` values and `dimIdx` indices. */
export function checkOutputSize(rows: number, layout: ReductionLayout, valueBytes: number): void {
  const values = rows * layout.dimVal;
  const indices = rows * layout.dimIdx;
  const largest = Math.max(values, indices);
  if (largest > MAX_TYPED_ARRAY_LENGTH) {
    throw new KeOpsError(
      'ERR_OUTPUT_TOO_LARGE',
      `the output needs ${largest} elements in one array (${rows} rows × ${Math.max(layout.dimVal, layout.dimIdx)}), ` +
        `more than the ${MAX_TYPED_ARRAY_LENGTH} a typed array can hold`,
    );
  }
  const bytes = values * valueBytes + indices * 4;
  if (bytes > totalmem()) {
    throw new KeOpsError(
      'ERR_OUTPUT_TOO_LARGE',
      `the output needs ${formatBytes(bytes)}, more than this machine's memory (${formatBytes(totalmem())})`,
    );
  }
}

/** Refuses a reduction with index outputs over 2^31 rows or more (the indices would wrap). */
export function checkIndexRange(reducedRows: number, layout: ReductionLayout, what: string): void {
  if (layout.dimredIdx > 0 && reducedRows > MAX_INDEXED_ROWS) {
    throw new KeOpsError(
      'ERR_INDEX_OVERFLOW',
      `${what} returns int32 indices, so it reduces over at most ${MAX_INDEXED_ROWS} rows; got ${reducedRows}`,
    );
  }
}

/**
 * Runs an allocation, turning the RangeError of an allocation that fails anyway (memory taken by others since
 * the check) into ERR_OUTPUT_TOO_LARGE.
 */
export function allocateOutput<T>(what: string, allocate: () => T): T {
  try {
    return allocate();
  } catch (e) {
    if (e instanceof RangeError) {
      throw new KeOpsError('ERR_OUTPUT_TOO_LARGE', `${what} could not be allocated: ${e.message}`, {
        cause: e,
      });
    }
    throw e;
  }
}

function formatBytes(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

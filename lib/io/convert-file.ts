/**
 * `convertVectorFile`: copies a vector file into another format, streamed in blocks of rows (any size), through
 * the crash-safe writer (nothing at the output path until it is complete). The output dtype is `dtype` when
 * given; else the input's, when the output format holds it; else the first dtype of the output format that
 * holds every input value exactly, or a narrower float (rounding); anything else must be asked for with
 * `dtype` (see convert-storage.ts for the rules).
 */
import { KeOpsError } from '../errors';
import { type StorageDtype, STORAGE_BYTES } from './vector-source';
import { conversionRule, convertStorage } from './convert-storage';
import { resolveFormat, type VectorFileFormat, VECTOR_FILE_FORMATS } from './formats';
import { openVectorFile } from './vector-file';
import { createVectorFileWriter } from './vector-writer';

export interface ConvertVectorFileOptions {
  /** Format of the input (default: from its name). */
  from?: VectorFileFormat;
  /** Format of the output (default: from its name). */
  to?: VectorFileFormat;
  /** Stored dtype of the output; naming it allows conversions that may change values. */
  dtype?: StorageDtype;
  /** Bytes per block of rows read and written (default 8 MiB). */
  blockBytes?: number;
}

export interface ConvertVectorFileResult {
  rows: number;
  dim: number;
  from: { format: VectorFileFormat; dtype: StorageDtype };
  to: { format: VectorFileFormat; dtype: StorageDtype };
}

/** The dtype the output gets (see the file comment); ERR_ARG_DTYPE when it must be asked for. */
export function outputDtype(
  input: StorageDtype,
  format: VectorFileFormat,
  requested: StorageDtype | undefined,
  name: string,
): StorageDtype {
  const holds = VECTOR_FILE_FORMATS[format].dtypes;
  if (requested !== undefined) {
    if (!holds.includes(requested)) {
      throw new KeOpsError(
        'ERR_ARG_DTYPE',
        `${name}: a .${format} file holds ${holds.join(', ')}, not ${requested}`,
      );
    }
    return requested;
  }
  if (holds.includes(input)) return input;
  const implicit =
    holds.find((d) => conversionRule(input, d) === 'exact') ??
    holds.find((d) => conversionRule(input, d) === 'rounds');
  if (implicit !== undefined) return implicit;
  throw new KeOpsError(
    'ERR_ARG_DTYPE',
    `${name}: a .${format} file holds ${holds.join(', ')}; converting ${input} to ${holds.length === 1 ? holds[0] : 'one of them'} may change values: ask for the dtype (--dtype) to convert anyway`,
  );
}

/** Converts `input` into `output` (replacing a file there once complete). */
export async function convertVectorFile(
  input: string,
  output: string,
  options: ConvertVectorFileOptions = {},
): Promise<ConvertVectorFileResult> {
  const { format: outFormat } = resolveFormat(output, options.to);
  const blockBytes = options.blockBytes ?? 8 * 2 ** 20;
  if (!Number.isSafeInteger(blockBytes) || blockBytes < 1) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `blockBytes must be a positive integer, got ${String(blockBytes)}`,
    );
  }
  const source = await openVectorFile(input, { format: options.from });
  try {
    const dtype = outputDtype(source.dtype, outFormat, options.dtype, output);
    const writer = await createVectorFileWriter(output, {
      format: outFormat,
      rows: source.rows,
      dim: source.dim,
      dtype,
    });
    try {
      const rowBytes = source.dim * Math.max(STORAGE_BYTES[source.dtype], STORAGE_BYTES[dtype]);
      const block = Math.max(1, Math.floor(blockBytes / rowBytes));
      for (let start = 0; start < source.rows; start += block) {
        const end = Math.min(source.rows, start + block);
        const values = convertStorage(await source.read(start, end), source.dtype, dtype, {
          explicit: options.dtype !== undefined,
          name: input,
          dim: source.dim,
          firstRow: start,
        });
        await writer.writeRows(start, values);
      }
      await writer.commit();
    } catch (e) {
      await writer.abort().catch(() => undefined);
      throw e;
    }
    return {
      rows: source.rows,
      dim: source.dim,
      from: { format: source.format, dtype: source.dtype },
      to: { format: outFormat, dtype },
    };
  } finally {
    await source.close();
  }
}

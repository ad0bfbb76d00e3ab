/**
 * The vector file formats, one row each: their file extensions, the dtypes they hold, and their layout — how
 * the header is parsed and written. Every layout has a fixed row stride after the header, so row r lies at
 * `dataOffset + r * rowStride` (plus a 4-byte dimension prefix for the TEXMEX .Xvecs files): readers and
 * writers address rows with positional reads and writes, never loading a file.
 */
import { basename } from 'node:path';
import { KeOpsError } from '../errors';
import { type StorageDtype, STORAGE_BYTES } from './vector-source';
import { type ByteReader, fileFormatError, readBytes } from './byte-reader';
import {
  NPY_DTYPES,
  NPY_MAGIC,
  NPY_MAX_HEADER_BYTES,
  npyHeaderBytes,
  npyPreamble,
  parseNpyHeader,
} from './npy';

export type VectorFileFormat =
  'fvecs' | 'ivecs' | 'bvecs' | 'fbin' | 'u8bin' | 'i8bin' | 'ibin' | 'npy' | 'idx';

/** Where the rows of a file are, once its header is read. */
export interface VectorLayout {
  rows: number;
  dim: number;
  dtype: StorageDtype;
  /** Byte offset of row 0 (of its dimension prefix, for .Xvecs). */
  dataOffset: number;
  /** Each row starts with an int32 equal to `dim` (the TEXMEX .fvecs / .ivecs / .bvecs files). */
  dimPrefix: boolean;
  /** Multi-byte values are stored big-endian (IDX). */
  bigEndian: boolean;
}

/** Bytes from one row to the next. */
export function rowStride(layout: Pick<VectorLayout, 'dim' | 'dtype' | 'dimPrefix'>): number {
  return (layout.dimPrefix ? 4 : 0) + layout.dim * STORAGE_BYTES[layout.dtype];
}

interface FormatSpec {
  readonly extensions: readonly string[];
  /** What it holds: the first is what a writer uses when given no dtype. */
  readonly dtypes: readonly StorageDtype[];
  readonly description: string;
  /** Reads the header and checks the file's size against it. */
  parse(reader: ByteReader): Promise<VectorLayout>;
  /** The header of a new file, and its layout. */
  create(rows: number, dim: number, dtype: StorageDtype): { header: Uint8Array; layout: VectorLayout };
}

const MAX_UINT32 = 0xffffffff;

/** The file size `layout` needs. */
export function layoutBytes(layout: VectorLayout): number {
  return layout.dataOffset + layout.rows * rowStride(layout);
}

/** Checks that a file holds exactly the rows its header declares. */
function checkSize(reader: ByteReader, layout: VectorLayout, what: string): VectorLayout {
  const expected = layoutBytes(layout);
  if (reader.size < expected) {
    throw fileFormatError(
      reader.path,
      reader.size,
      `the file is truncated: ${what} declares ${layout.rows} rows × ${layout.dim} ${layout.dtype}, ending at byte ${expected}, but the file ends here`,
    );
  }
  if (reader.size > expected) {
    throw fileFormatError(
      reader.path,
      expected,
      `${reader.size - expected} bytes after the data: ${what} declares ${layout.rows} rows × ${layout.dim} ${layout.dtype}, ending here`,
    );
  }
  return layout;
}

function vecs(dtype: StorageDtype, extension: string): FormatSpec {
  return {
    extensions: [extension],
    dtypes: [dtype],
    description: `TEXMEX: each row is an int32 dim, then dim ${dtype}`,
    async parse(reader) {
      if (reader.size === 0)
        throw fileFormatError(reader.path, 0, 'empty file: no row to take the dimension from');
      const first = await readBytes(reader, 0, 4);
      const dim = new DataView(first.buffer).getInt32(0, true);
      const stride = 4 + dim * STORAGE_BYTES[dtype];
      if (dim < 1 || stride > reader.size) {
        throw fileFormatError(
          reader.path,
          0,
          `row 0 declares dimension ${dim}, impossible in a ${reader.size}-byte .${extension} file`,
        );
      }
      const rows = Math.floor(reader.size / stride);
      if (rows * stride !== reader.size) {
        throw fileFormatError(
          reader.path,
          rows * stride,
          `the file is not a whole number of rows of ${stride} bytes (dimension ${dim}): ${reader.size - rows * stride} bytes left over from here (truncated, or rows of different dimensions)`,
        );
      }
      const layout: VectorLayout = { rows, dim, dtype, dataOffset: 0, dimPrefix: true, bigEndian: false };
      // The last row's prefix too: a file of mixed dimensions rarely passes both checks.
      if (rows > 1) await checkDimPrefixes(reader, layout, rows - 1, rows);
      return layout;
    },
    create(rows, dim) {
      return {
        header: new Uint8Array(0),
        layout: { rows, dim, dtype, dataOffset: 0, dimPrefix: true, bigEndian: false },
      };
    },
  };
}

function bin(dtype: StorageDtype, extension: string): FormatSpec {
  return {
    extensions: [extension],
    dtypes: [dtype],
    description: `big-ann-benchmarks: uint32 rows, uint32 dim, then rows × dim ${dtype}`,
    async parse(reader) {
      if (reader.size < 8)
        throw fileFormatError(
          reader.path,
          reader.size,
          `the file is truncated: a .${extension} header is 8 bytes`,
        );
      const view = new DataView((await readBytes(reader, 0, 8)).buffer);
      const rows = view.getUint32(0, true);
      const dim = view.getUint32(4, true);
      if (dim < 1) throw fileFormatError(reader.path, 4, `the header declares dimension ${dim}`);
      return checkSize(
        reader,
        { rows, dim, dtype, dataOffset: 8, dimPrefix: false, bigEndian: false },
        'the header (byte 0)',
      );
    },
    create(rows, dim) {
      const header = new Uint8Array(8);
      const view = new DataView(header.buffer);
      view.setUint32(0, rows, true);
      view.setUint32(4, dim, true);
      return { header, layout: { rows, dim, dtype, dataOffset: 8, dimPrefix: false, bigEndian: false } };
    },
  };
}

const IDX_TYPES: Readonly<Record<number, StorageDtype | undefined>> = {
  0x08: 'uint8',
  0x09: 'int8',
  0x0b: undefined, // int16: no storage dtype holds it
  0x0c: 'int32',
  0x0d: 'float32',
  0x0e: 'float64',
};
const IDX_CODES = new Map(
  Object.entries(IDX_TYPES).flatMap(([code, dtype]) =>
    dtype === undefined ? [] : [[dtype, Number(code)] as const],
  ),
);

const npy: FormatSpec = {
  extensions: ['npy'],
  dtypes: NPY_DTYPES,
  description: 'NumPy .npy 1.0 / 2.0 / 3.0, little-endian, C order, 2-D (or 1-D: one column)',
  async parse(reader) {
    const head = await readBytes(reader, 0, Math.min(reader.size, 12));
    const bad = NPY_MAGIC.findIndex((b, k) => k < head.length && head[k] !== b);
    if (bad >= 0) throw fileFormatError(reader.path, bad, 'not a .npy file: bad magic (expected \\x93NUMPY)');
    if (reader.size < 12) {
      throw fileFormatError(
        reader.path,
        reader.size,
        'the file is truncated: a .npy preamble is 10 or 12 bytes',
      );
    }
    const { version, headerStart, headerLength } = npyPreamble(head, reader.path);
    if (headerLength > NPY_MAX_HEADER_BYTES) {
      throw fileFormatError(
        reader.path,
        8,
        `a .npy header of ${headerLength} bytes (more than ${NPY_MAX_HEADER_BYTES})`,
      );
    }
    if (headerStart + headerLength > reader.size) {
      throw fileFormatError(
        reader.path,
        reader.size,
        `the file is truncated: the .npy header declares ${headerLength} bytes`,
      );
    }
    const header = parseNpyHeader(version, await readBytes(reader, headerStart, headerLength), reader.path);
    const [rows, dim = 1] = header.shape;
    if (dim < 1)
      throw fileFormatError(
        reader.path,
        headerStart,
        `the .npy array has shape (${header.shape.join(', ')}): no columns`,
      );
    return checkSize(
      reader,
      { rows, dim, dtype: header.dtype, dataOffset: header.dataOffset, dimPrefix: false, bigEndian: false },
      `the .npy header (byte ${headerStart})`,
    );
  },
  create(rows, dim, dtype) {
    const header = npyHeaderBytes(rows, dim, dtype);
    return {
      header,
      layout: { rows, dim, dtype, dataOffset: header.length, dimPrefix: false, bigEndian: false },
    };
  },
};

const idx: FormatSpec = {
  extensions: ['idx'],
  dtypes: ['uint8', 'int8', 'int32', 'float32', 'float64'],
  description:
    'IDX (MNIST): magic, big-endian uint32 sizes, big-endian data; rows × (product of the other sizes)',
  async parse(reader) {
    if (reader.size < 4)
      throw fileFormatError(reader.path, reader.size, 'the file is truncated: an IDX magic is 4 bytes');
    const magic = await readBytes(reader, 0, 4);
    if (magic[0] !== 0 || magic[1] !== 0)
      throw fileFormatError(reader.path, 0, 'not an IDX file: bad magic (expected two zero bytes)');
    if (!(magic[2] in IDX_TYPES))
      throw fileFormatError(reader.path, 2, `not an IDX file: unknown type code 0x${magic[2].toString(16)}`);
    const dtype = IDX_TYPES[magic[2]];
    if (dtype === undefined) throw fileFormatError(reader.path, 2, 'unsupported IDX type int16 (0x0b)');
    const ndims = magic[3];
    if (ndims < 1) throw fileFormatError(reader.path, 3, 'an IDX file of 0 dimensions');
    const dataOffset = 4 + 4 * ndims;
    if (reader.size < dataOffset)
      throw fileFormatError(
        reader.path,
        reader.size,
        `the file is truncated: the IDX header is ${dataOffset} bytes`,
      );
    const view = new DataView((await readBytes(reader, 4, 4 * ndims)).buffer);
    const sizes = Array.from({ length: ndims }, (_, k) => view.getUint32(4 * k, false));
    const rows = sizes[0];
    const dim = sizes.slice(1).reduce((a, b) => a * b, 1);
    if (dim < 1 || !Number.isSafeInteger(dim))
      throw fileFormatError(reader.path, 8, `IDX sizes (${sizes.join(', ')}): no columns`);
    return checkSize(
      reader,
      { rows, dim, dtype, dataOffset, dimPrefix: false, bigEndian: true },
      `the IDX header (sizes ${sizes.join(' × ')})`,
    );
  },
  create(rows, dim, dtype) {
    const header = new Uint8Array(12);
    header[2] = IDX_CODES.get(dtype) as number;
    header[3] = 2;
    const view = new DataView(header.buffer);
    view.setUint32(4, rows, false);
    view.setUint32(8, dim, false);
    return { header, layout: { rows, dim, dtype, dataOffset: 12, dimPrefix: false, bigEndian: true } };
  },
};

export const VECTOR_FILE_FORMATS: Readonly<Record<VectorFileFormat, FormatSpec>> = {
  fvecs: vecs('float32', 'fvecs'),
  ivecs: vecs('int32', 'ivecs'),
  bvecs: vecs('uint8', 'bvecs'),
  fbin: bin('float32', 'fbin'),
  u8bin: bin('uint8', 'u8bin'),
  i8bin: bin('int8', 'i8bin'),
  ibin: bin('int32', 'ibin'),
  npy,
  idx,
};

export function isVectorFileFormat(name: string): name is VectorFileFormat {
  return Object.hasOwn(VECTOR_FILE_FORMATS, name);
}

/**
 * The format a file name says, and whether it is gzipped (`.gz` after the name). IDX files are `*.idx` or
 * named like MNIST's (`train-images-idx3-ubyte`, `*-ubyte`). Undefined when the name says nothing.
 */
export function formatFromName(path: string): { format: VectorFileFormat | undefined; gzip: boolean } {
  let name = basename(path).toLowerCase();
  const gzip = name.endsWith('.gz');
  if (gzip) name = name.slice(0, -3);
  if (/(^|[.-])idx\d*(-ubyte)?$/.test(name) || name.endsWith('-ubyte')) return { format: 'idx', gzip };
  const dot = name.lastIndexOf('.');
  const extension = dot < 0 ? '' : name.slice(dot + 1);
  const format = (Object.keys(VECTOR_FILE_FORMATS) as VectorFileFormat[]).find((f) =>
    VECTOR_FILE_FORMATS[f].extensions.includes(extension),
  );
  return { format, gzip };
}

/** The format to use for `path`: the one given, else the one its name says; ERR_INVALID_ARGUMENT otherwise. */
export function resolveFormat(
  path: string,
  format: string | undefined,
): { format: VectorFileFormat; gzip: boolean } {
  const named = formatFromName(path);
  if (format === undefined) {
    if (named.format === undefined) {
      throw new KeOpsError(
        'ERR_INVALID_ARGUMENT',
        `${path}: the file name does not say its format (extensions: ${Object.values(VECTOR_FILE_FORMATS)
          .flatMap((f) => f.extensions.map((e) => `.${e}`))
          .join(', ')}, or *-ubyte for IDX); pass the format`,
      );
    }
    return { format: named.format, gzip: named.gzip };
  }
  if (!isVectorFileFormat(format)) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `unknown vector file format '${format}' (known: ${Object.keys(VECTOR_FILE_FORMATS).join(', ')})`,
    );
  }
  return { format, gzip: named.gzip };
}

/** Checks the dimension prefix of rows [start, end) of a .Xvecs file (reading only the prefixes). */
async function checkDimPrefixes(
  reader: ByteReader,
  layout: VectorLayout,
  start: number,
  end: number,
): Promise<void> {
  const stride = rowStride(layout);
  const prefix = new Uint8Array(4);
  const view = new DataView(prefix.buffer);
  for (let r = start; r < end; r++) {
    await reader.readInto(layout.dataOffset + r * stride, 4, prefix);
    checkRowDim(reader.path, layout, r, view.getInt32(0, true));
  }
}

/** ERR_FILE_FORMAT unless a .Xvecs row's prefix is the file's dimension. */
export function checkRowDim(path: string, layout: VectorLayout, row: number, found: number): void {
  if (found !== layout.dim) {
    throw fileFormatError(
      path,
      layout.dataOffset + row * rowStride(layout),
      `row ${row} declares dimension ${found}, but row 0 declares ${layout.dim} (rows of one file must have one dimension)`,
    );
  }
}

/** A guess at what a file's first bytes are, for messages about a file whose name says another format. */
export function sniffFormat(head: Uint8Array, size: number): string | undefined {
  if (head.length >= 6 && NPY_MAGIC.every((b, k) => head[k] === b)) return '.npy';
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip-compressed';
  if (
    head.length >= 4 &&
    head[0] === 0 &&
    head[1] === 0 &&
    IDX_TYPES[head[2]] !== undefined &&
    head[3] >= 1 &&
    head[3] <= 4
  ) {
    return 'IDX';
  }
  if (head.length >= 8) {
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const rows = view.getUint32(0, true);
    const dim = view.getUint32(4, true);
    for (const [bytes, names] of [
      [4, '.fbin / .ibin'],
      [1, '.u8bin / .i8bin'],
    ] as const) {
      if (dim > 0 && 8 + rows * dim * bytes === size) return names;
    }
    const d = view.getInt32(0, true);
    for (const [bytes, names] of [
      [4, '.fvecs / .ivecs'],
      [1, '.bvecs'],
    ] as const) {
      const stride = 4 + d * bytes;
      const second = head.length >= stride + 4 && size > stride ? view.getInt32(stride, true) : d;
      if (d > 0 && size % stride === 0 && second === d) return names;
    }
  }
  return undefined;
}

/** Largest rows or dim the uint32 headers (.Xbin, IDX) can declare. */
export const MAX_HEADER_COUNT = MAX_UINT32;

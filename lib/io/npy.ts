/**
 * The NumPy .npy header (format versions 1.0, 2.0 and 3.0): `\x93NUMPY`, major and minor version bytes, the
 * header length (uint16 in 1.0, uint32 in 2.0 and 3.0, little-endian), then a Python dict literal such as
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 128), }` padded with spaces and a newline. The
 * literal is parsed strictly (strings, True / False, tuples of integers; never evaluated). Readers take
 * row ranges at `dataOffset + row * rowBytes`, so nothing beyond the header is loaded.
 */
import { type StorageDtype, STORAGE_BYTES } from './vector-source';
import { fileFormatError } from './byte-reader';

export const NPY_MAGIC = Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

/** Bytes before the dict: magic, version, header length. */
export const NPY_PREAMBLE_BYTES: Readonly<Record<1 | 2 | 3, number>> = { 1: 10, 2: 12, 3: 12 };

/** Longest header accepted (numpy itself refuses headers over 10 kB unless told otherwise). */
export const NPY_MAX_HEADER_BYTES = 1 << 20;

/** The numpy type codes (after the byte-order character) of the dtypes read and written. */
const NPY_CODES: Readonly<Record<string, StorageDtype>> = {
  f2: 'float16',
  f4: 'float32',
  f8: 'float64',
  u1: 'uint8',
  i1: 'int8',
  i4: 'int32',
  i8: 'int64',
};

export interface NpyHeader {
  version: 1 | 2 | 3;
  dtype: StorageDtype;
  /** The stored shape: 2-D (rows, dim), or 1-D (rows), read as one column. */
  shape: number[];
  /** Where the data starts (the header's end). */
  dataOffset: number;
}

type PyValue = string | boolean | number[];

/** Parses the dict literal; `base` is the byte offset of `text` in the file, for messages. */
function parseDict(text: string, path: string, base: number): Map<string, PyValue> {
  let k = 0;
  const fail = (what: string): never => {
    throw fileFormatError(path, base + k, `malformed .npy header: ${what} in ${JSON.stringify(text.trim())}`);
  };
  const space = (): void => {
    while (k < text.length && (text[k] === ' ' || text[k] === '\t')) k++;
  };
  const expectChar = (c: string): void => {
    space();
    if (text[k] !== c) fail(`expected '${c}'`);
    k++;
  };
  const string = (): string => {
    space();
    const quote = text[k];
    if (quote !== "'" && quote !== '"') fail('expected a string');
    const end = text.indexOf(quote, k + 1);
    if (end < 0) fail('unterminated string');
    const s = text.slice(k + 1, end);
    if (s.includes('\\')) fail('escape in a string');
    k = end + 1;
    return s;
  };
  const integer = (): number => {
    space();
    const m = /^[0-9]+/.exec(text.slice(k));
    if (m === null) fail('expected a non-negative integer');
    const n = Number((m as RegExpExecArray)[0]);
    if (!Number.isSafeInteger(n)) fail(`dimension ${(m as RegExpExecArray)[0]} is too large`);
    k += (m as RegExpExecArray)[0].length;
    // Python 2 numpy wrote long integers as 3L.
    if (text[k] === 'L') k++;
    return n;
  };
  const value = (): PyValue => {
    space();
    if (text[k] === "'" || text[k] === '"') return string();
    if (text.startsWith('True', k)) {
      k += 4;
      return true;
    }
    if (text.startsWith('False', k)) {
      k += 5;
      return false;
    }
    if (text[k] === '(') {
      k++;
      const items: number[] = [];
      space();
      if (text[k] === ')') {
        k++;
        return items;
      }
      for (;;) {
        items.push(integer());
        space();
        if (text[k] === ')') {
          k++;
          return items;
        }
        expectChar(',');
        space();
        if (text[k] === ')') {
          k++;
          return items;
        }
      }
    }
    return fail('expected a string, True, False or a tuple of integers');
  };

  const dict = new Map<string, PyValue>();
  expectChar('{');
  for (;;) {
    space();
    if (text[k] === '}') {
      k++;
      break;
    }
    const key = string();
    if (dict.has(key)) fail(`key '${key}' repeated`);
    expectChar(':');
    dict.set(key, value());
    space();
    if (text[k] === ',') k++;
    else if (text[k] !== '}') fail("expected ',' or '}'");
  }
  space();
  if (k < text.length && text.slice(k).replace(/[ \n]/g, '') !== '') fail('text after the dict');
  return dict;
}

/** The header length field and where the dict starts, from the first bytes of a file (at least 12). */
export function npyPreamble(
  bytes: Uint8Array,
  path: string,
): { version: 1 | 2 | 3; headerStart: number; headerLength: number } {
  for (let k = 0; k < NPY_MAGIC.length; k++) {
    if (bytes[k] !== NPY_MAGIC[k])
      throw fileFormatError(path, k, 'not a .npy file: bad magic (expected \\x93NUMPY)');
  }
  const major = bytes[6];
  if (major !== 1 && major !== 2 && major !== 3) {
    throw fileFormatError(
      path,
      6,
      `unsupported .npy format version ${major}.${bytes[7]} (1.0, 2.0 and 3.0 are read)`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  return { version: major, headerStart: NPY_PREAMBLE_BYTES[major], headerLength };
}

/** Parses the header dict (`headerBytes` are the `headerLength` bytes after the preamble). */
export function parseNpyHeader(version: 1 | 2 | 3, headerBytes: Uint8Array, path: string): NpyHeader {
  const start = NPY_PREAMBLE_BYTES[version];
  // 1.0 and 2.0 headers are latin-1, 3.0 headers UTF-8; a valid dict is ASCII in all three.
  const text = new TextDecoder(version === 3 ? 'utf-8' : 'latin1').decode(headerBytes);
  const dict = parseDict(text, path, start);
  const keys = [...dict.keys()].sort().join(', ');
  if (keys !== 'descr, fortran_order, shape') {
    throw fileFormatError(
      path,
      start,
      `malformed .npy header: keys are ${keys || 'none'}, expected descr, fortran_order, shape`,
    );
  }
  const descr = dict.get('descr');
  const fortran = dict.get('fortran_order');
  const shape = dict.get('shape');
  if (typeof descr !== 'string') {
    throw fileFormatError(
      path,
      start,
      `unsupported .npy dtype (a structured dtype): only plain numbers are read`,
    );
  }
  if (typeof fortran !== 'boolean')
    throw fileFormatError(path, start, 'malformed .npy header: fortran_order is not True or False');
  if (!Array.isArray(shape))
    throw fileFormatError(path, start, 'malformed .npy header: shape is not a tuple');
  const order = descr[0];
  const dtype = NPY_CODES[descr.slice(1)];
  if (dtype === undefined || !'<>|='.includes(order) || descr.length !== 3) {
    throw fileFormatError(
      path,
      start,
      `unsupported .npy dtype '${descr}' (read: ${Object.keys(NPY_CODES).join(', ')}, little-endian)`,
    );
  }
  if (STORAGE_BYTES[dtype] > 1 && (order === '>' || (order === '=' && !littleEndianHost()))) {
    throw fileFormatError(
      path,
      start,
      `big-endian .npy data ('${descr}') is not read: save it little-endian ('<${descr.slice(1)}')`,
    );
  }
  if (STORAGE_BYTES[dtype] > 1 && order === '|') {
    throw fileFormatError(
      path,
      start,
      `malformed .npy dtype '${descr}': a multi-byte type needs a byte order`,
    );
  }
  if (fortran && shape.length > 1) {
    throw fileFormatError(
      path,
      start,
      'Fortran-order (column-major) .npy data is not read: save it in C order',
    );
  }
  if (shape.length !== 1 && shape.length !== 2) {
    throw fileFormatError(
      path,
      start,
      `the .npy array has shape (${shape.join(', ')}): rows × dim (2-D) or one column (1-D) is read`,
    );
  }
  return { version, dtype, shape, dataOffset: start + headerBytes.length };
}

function littleEndianHost(): boolean {
  return new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
}

const DESCR: Readonly<Partial<Record<StorageDtype, string>>> = {
  float32: '<f4',
  float64: '<f8',
  float16: '<f2',
  uint8: '|u1',
  int8: '|i1',
  int32: '<i4',
  int64: '<i8',
};

/** The dtypes a .npy file holds (float32 first: the default of writers). */
export const NPY_DTYPES = Object.keys(DESCR) as StorageDtype[];

/**
 * The header of a rows × dim C-order .npy file, as numpy writes it: version 1.0 (2.0 if the dict would not fit
 * a uint16), the dict padded with spaces and ended with a newline so the data starts at a multiple of 64.
 */
export function npyHeaderBytes(rows: number, dim: number, dtype: StorageDtype): Uint8Array {
  const descr = DESCR[dtype];
  if (descr === undefined) throw new Error(`npyHeaderBytes: no .npy dtype for ${dtype}`);
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${rows}, ${dim}), }`;
  const version = dict.length + 1 + NPY_PREAMBLE_BYTES[1] <= 0xffff ? 1 : 2;
  const preamble = NPY_PREAMBLE_BYTES[version];
  const total = Math.ceil((preamble + dict.length + 1) / 64) * 64;
  const header = dict.padEnd(total - preamble - 1, ' ') + '\n';
  const bytes = new Uint8Array(total);
  bytes.set(NPY_MAGIC);
  bytes[6] = version;
  bytes[7] = 0;
  const view = new DataView(bytes.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  for (let k = 0; k < header.length; k++) bytes[preamble + k] = header.charCodeAt(k);
  return bytes;
}

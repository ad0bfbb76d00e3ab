/**
 * Vector files (issue 12, item 3): readers by row ranges for .fvecs/.ivecs/.bvecs, .fbin/.u8bin/.i8bin/.ibin,
 * .npy 1.0–3.0 and IDX (plain or gzipped), malformed files as ERR_FILE_FORMAT naming the byte offset, and the
 * crash-safe writers (temporary file, commit by rename, abort, resume after kill -9). Fixtures are built here
 * byte by byte from the format definitions, independently of the writers.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { expect } from 'chai';
import type { KeOpsErrorCode } from '../lib/errors';
import { openVectorFile } from '../lib/io/vector-file';
import { createVectorFileWriter } from '../lib/io/vector-writer';
import type { VectorFileFormat } from '../lib/io/formats';
import { STORAGE_BYTES, type StorageArray, type StorageDtype } from '../lib/io/vector-source';
import { rejection, rng } from './util';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'keops-vector-files-'));
});
after(() => {
  if (!process.env.KEEP_FIXTURES) rmSync(dir, { recursive: true, force: true });
});

/** Deterministic values of each dtype (float16 as bit patterns of small exact numbers). */
function valuesOf(dtype: StorageDtype, n: number, seed: number): StorageArray {
  const r = rng(seed);
  const ints = (lo: number, hi: number) => Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
  switch (dtype) {
    case 'float32':
      return Float32Array.from({ length: n }, () => r() * 200 - 100);
    case 'float64':
      return Float64Array.from({ length: n }, () => r() * 2e6 - 1e6);
    case 'float16':
    case 'bfloat16':
      return Uint16Array.from(ints(0, 0x7c00));
    case 'uint8':
      return Uint8Array.from(ints(0, 256));
    case 'int8':
      return Int8Array.from(ints(-128, 128));
    case 'int32':
      return Int32Array.from(ints(-(2 ** 31), 2 ** 31));
    case 'int64':
      return BigInt64Array.from(ints(-(2 ** 31), 2 ** 31), (v) => BigInt(v) * 4294967311n);
  }
}

function bytesOf(values: StorageArray, bigEndian = false): Buffer {
  const b = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const copy = Buffer.from(b);
  if (bigEndian && values.BYTES_PER_ELEMENT > 1) {
    for (let k = 0; k < copy.length; k += values.BYTES_PER_ELEMENT) {
      copy.subarray(k, k + values.BYTES_PER_ELEMENT).reverse();
    }
  }
  return copy;
}

function vecsFile(values: StorageArray, rows: number, dim: number): Buffer {
  const width = values.BYTES_PER_ELEMENT;
  const out = Buffer.alloc(rows * (4 + dim * width));
  const raw = bytesOf(values);
  for (let r = 0; r < rows; r++) {
    out.writeInt32LE(dim, r * (4 + dim * width));
    raw.copy(out, r * (4 + dim * width) + 4, r * dim * width, (r + 1) * dim * width);
  }
  return out;
}

function binFile(values: StorageArray, rows: number, dim: number): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(rows, 0);
  header.writeUInt32LE(dim, 4);
  return Buffer.concat([header, bytesOf(values)]);
}

function npyFile(dict: string, data: Buffer, version = 1, options: { pad?: boolean } = {}): Buffer {
  const preamble = version === 1 ? 10 : 12;
  let header = `${dict}\n`;
  if (options.pad !== false) {
    const total = Math.ceil((preamble + header.length) / 64) * 64;
    header = `${dict.padEnd(total - preamble - 1, ' ')}\n`;
  }
  const pre = Buffer.alloc(preamble);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(pre);
  if (version === 1) pre.writeUInt16LE(header.length, 8);
  else pre.writeUInt32LE(Buffer.byteLength(header), 8);
  return Buffer.concat([pre, Buffer.from(header, version === 3 ? 'utf8' : 'latin1'), data]);
}

const NPY_DESCR: Partial<Record<StorageDtype, string>> = {
  float16: '<f2',
  float32: '<f4',
  float64: '<f8',
  uint8: '|u1',
  int8: '|i1',
  int32: '<i4',
  int64: '<i8',
};

function npyDict(descr: string, shape: string, fortran = 'False'): string {
  return `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;
}

const IDX_CODE: Partial<Record<StorageDtype, number>> = {
  uint8: 8,
  int8: 9,
  int32: 0x0c,
  float32: 0x0d,
  float64: 0x0e,
};

function idxFile(dtype: StorageDtype, sizes: number[], values: StorageArray): Buffer {
  const header = Buffer.alloc(4 + 4 * sizes.length);
  header[2] = IDX_CODE[dtype] as number;
  header[3] = sizes.length;
  sizes.forEach((s, k) => header.writeUInt32BE(s, 4 + 4 * k));
  return Buffer.concat([header, bytesOf(values, true)]);
}

function put(name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

function rowsOf(values: StorageArray, dim: number, start: number, end: number): unknown[] {
  return [...values.subarray(start * dim, end * dim)];
}

/** Opens a file, checks its shape and dtype, and reads it whole and at odd ranges. */
async function expectReads(
  path: string,
  expected: { rows: number; dim: number; dtype: StorageDtype; format: VectorFileFormat },
  values: StorageArray,
): Promise<void> {
  const file = await openVectorFile(path);
  try {
    expect({ rows: file.rows, dim: file.dim, dtype: file.dtype, format: file.format }, path).to.deep.equal(
      expected,
    );
    const { rows, dim } = expected;
    const whole = await file.read(0, rows);
    expect(whole.constructor, path).to.equal(values.constructor);
    expect([...whole], path).to.deep.equal([...values]);
    for (const [a, b] of [
      [1, Math.min(rows, 4)],
      [Math.floor(rows / 2), rows],
      [rows - 1, rows],
      [3, 3],
    ]) {
      const part = await file.read(a, b);
      expect(part.length, `${path} [${a}, ${b})`).to.equal((b - a) * dim);
      expect([...part], `${path} [${a}, ${b})`).to.deep.equal(rowsOf(values, dim, a, b));
    }
    // Into one reused buffer, longer than needed.
    const target = whole.slice();
    for (const [a, b] of [
      [2, 5],
      [0, 1],
    ]) {
      const part = await file.readInto(a, b, target);
      expect(part.buffer, 'a view of the target').to.equal(target.buffer);
      expect([...part], `${path} readInto [${a}, ${b})`).to.deep.equal(rowsOf(values, dim, a, b));
    }
    // Concurrent reads in any order.
    const parts = await Promise.all([file.read(5, 7), file.read(0, 2), file.read(2, 5)]);
    expect(parts.flatMap((p) => [...p] as unknown[])).to.deep.equal([
      ...rowsOf(values, dim, 5, 7),
      ...rowsOf(values, dim, 0, 5),
    ]);
  } finally {
    await file.close();
  }
}

async function expectFormatError(
  path: string,
  offset: number,
  ...mentions: (string | RegExp)[]
): Promise<void> {
  await expectOpenError(path, 'ERR_FILE_FORMAT', path, `at byte ${offset}:`, ...mentions);
}

async function expectOpenError(
  path: string,
  code: KeOpsErrorCode,
  ...mentions: (string | RegExp)[]
): Promise<void> {
  const e = await rejection(openVectorFile(path));
  expect(e.code, e.message).to.equal(code);
  for (const m of mentions) {
    if (typeof m === 'string') expect(e.message).to.contain(m);
    else expect(e.message).to.match(m);
  }
}

describe('vector files: readers', () => {
  const ROWS = 11;
  const DIM = 7;

  it('reads .fvecs / .ivecs / .bvecs rows by ranges', async () => {
    for (const [format, dtype] of [
      ['fvecs', 'float32'],
      ['ivecs', 'int32'],
      ['bvecs', 'uint8'],
    ] as const) {
      const values = valuesOf(dtype, ROWS * DIM, 1);
      await expectReads(
        put(`a.${format}`, vecsFile(values, ROWS, DIM)),
        { rows: ROWS, dim: DIM, dtype, format },
        values,
      );
    }
  });

  it('reads .fbin / .u8bin / .i8bin / .ibin rows by ranges', async () => {
    for (const [format, dtype] of [
      ['fbin', 'float32'],
      ['u8bin', 'uint8'],
      ['i8bin', 'int8'],
      ['ibin', 'int32'],
    ] as const) {
      const values = valuesOf(dtype, ROWS * DIM, 2);
      await expectReads(
        put(`a.${format}`, binFile(values, ROWS, DIM)),
        { rows: ROWS, dim: DIM, dtype, format },
        values,
      );
    }
  });

  it('reads .npy 1.0, 2.0 and 3.0 of every dtype; 1-D arrays as one column', async () => {
    for (const [dtype, descr] of Object.entries(NPY_DESCR) as [StorageDtype, string][]) {
      const values = valuesOf(dtype, ROWS * DIM, 3);
      for (const version of [1, 2, 3]) {
        const path = put(
          `v${version}-${dtype}.npy`,
          npyFile(npyDict(descr, `(${ROWS}, ${DIM})`), bytesOf(values), version),
        );
        await expectReads(path, { rows: ROWS, dim: DIM, dtype, format: 'npy' }, values);
      }
    }
    const column = valuesOf('int64', ROWS, 4);
    await expectReads(
      put('column.npy', npyFile(npyDict('<i8', `(${ROWS},)`), bytesOf(column))),
      { rows: ROWS, dim: 1, dtype: 'int64', format: 'npy' },
      column,
    );
    // Native byte order, double quotes, no trailing comma, no padding, Python 2 long integers.
    const f = valuesOf('float32', ROWS * DIM, 5);
    const path = put(
      'plain.npy',
      npyFile(`{"descr": "=f4", "shape": (${ROWS}L, ${DIM}L), "fortran_order": False}`, bytesOf(f), 1, {
        pad: false,
      }),
    );
    await expectReads(path, { rows: ROWS, dim: DIM, dtype: 'float32', format: 'npy' }, f);
  });

  it('reads IDX files of every dtype (big-endian), flattening trailing sizes, plain or gzipped', async () => {
    for (const dtype of Object.keys(IDX_CODE) as StorageDtype[]) {
      const values = valuesOf(dtype, ROWS * DIM, 6);
      const bytes = idxFile(dtype, [ROWS, DIM], values);
      await expectReads(put(`a-${dtype}.idx`, bytes), { rows: ROWS, dim: DIM, dtype, format: 'idx' }, values);
      await expectReads(
        put(`b-${dtype}.idx.gz`, gzipSync(bytes)),
        { rows: ROWS, dim: DIM, dtype, format: 'idx' },
        values,
      );
    }
    const images = valuesOf('uint8', ROWS * 4 * 3, 7);
    await expectReads(
      put('t10k-images-idx3-ubyte.gz', gzipSync(idxFile('uint8', [ROWS, 4, 3], images))),
      { rows: ROWS, dim: 12, dtype: 'uint8', format: 'idx' },
      images,
    );
    const labels = valuesOf('uint8', ROWS, 8);
    await expectReads(
      put('t10k-labels-idx1-ubyte', idxFile('uint8', [ROWS], labels)),
      { rows: ROWS, dim: 1, dtype: 'uint8', format: 'idx' },
      labels,
    );
  });

  it('reads Fashion-MNIST as Debian ships it (gzipped IDX), when installed', async function () {
    const folder = '/usr/share/datasets/fashion-mnist';
    if (!existsSync(join(folder, 't10k-images-idx3-ubyte.gz'))) {
      console.log(`      (skipped: ${folder} is not installed: apt-get install dataset-fashion-mnist)`);
      this.skip();
    }
    const images = await openVectorFile(join(folder, 't10k-images-idx3-ubyte.gz'));
    const labels = await openVectorFile(join(folder, 't10k-labels-idx1-ubyte.gz'));
    try {
      expect([images.rows, images.dim, images.dtype, images.format]).to.deep.equal([
        10000,
        784,
        'uint8',
        'idx',
      ]);
      expect([labels.rows, labels.dim, labels.dtype]).to.deep.equal([10000, 1, 'uint8']);
      const counts = new Array<number>(10).fill(0);
      for (const label of (await labels.read(0, 10000)) as Uint8Array) counts[label]++;
      expect(counts, 'ten classes of 1000 test images').to.deep.equal(new Array<number>(10).fill(1000));
      const last = (await images.read(9999, 10000)) as Uint8Array;
      expect(last.length).to.equal(784);
      expect(Math.max(...last)).to.be.above(0);
    } finally {
      await Promise.all([images.close(), labels.close()]);
    }
  });

  it('takes the format from options.format when the name says none or another', async () => {
    const values = valuesOf('float32', ROWS * DIM, 9);
    const path = put('vectors.dat', binFile(values, ROWS, DIM));
    const e = await rejection(openVectorFile(path));
    expect(e.code).to.equal('ERR_INVALID_ARGUMENT');
    expect(e.message).to.contain(path).and.to.contain('.fvecs');
    const file = await openVectorFile(path, { format: 'fbin' });
    expect([...(await file.read(2, 3))]).to.deep.equal(rowsOf(values, DIM, 2, 3));
    await file.close();
    expect((await rejection(openVectorFile(path, { format: 'csv' as VectorFileFormat }))).code).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
  });

  it('reads rows beyond 4 GiB of a sparse file (positional reads, no 2 GiB limit)', async function () {
    const rows = 5 * 2 ** 20;
    const dim = 1024;
    const size = 8 + rows * dim;
    const path = join(dir, 'huge.u8bin');
    const handle = await open(path, 'w');
    try {
      await handle.truncate(size);
      await handle.write(binFile(new Uint8Array(0), rows, dim).subarray(0, 8), 0, 8, 0);
      const last = Uint8Array.from({ length: 2 * dim }, (_, k) => (k * 7) % 251);
      await handle.write(last, 0, last.length, size - last.length);
    } finally {
      await handle.close();
    }
    if (statSync(path).blocks * 512 > 2 ** 24) {
      rmSync(path);
      console.log('      (skipped: this file system does not make sparse files)');
      this.skip();
    }
    const file = await openVectorFile(path);
    expect(file.rows).to.equal(rows);
    const tail = await file.read(rows - 2, rows);
    expect([...tail]).to.deep.equal(Array.from({ length: 2 * dim }, (_, k) => (k * 7) % 251));
    await file.close();
    rmSync(path);

    // The same beyond 4 GiB in a .fvecs file, whose rows carry dimension prefixes.
    const vpath = join(dir, 'huge.fvecs');
    const stride = 4 + 4 * dim;
    const vrows = Math.ceil(2 ** 32 / stride) + 3;
    const rowsBytes = vecsFile(
      Float32Array.from({ length: 2 * dim }, (_, k) => k - 0.5),
      2,
      dim,
    );
    const vh = await open(vpath, 'w');
    await vh.truncate(vrows * stride);
    await vh.write(rowsBytes, 0, stride, 0);
    await vh.write(rowsBytes, 0, rowsBytes.length, (vrows - 2) * stride);
    await vh.close();
    const vfile = await openVectorFile(vpath);
    expect(vfile.rows).to.equal(vrows);
    expect([...(await vfile.read(vrows - 1, vrows))]).to.deep.equal(
      Array.from({ length: dim }, (_, k) => dim + k - 0.5),
    );
    // A row in the (zero) middle has dimension prefix 0.
    const e = await rejection(vfile.read(vrows - 3, vrows - 1));
    expect(e.code).to.equal('ERR_FILE_FORMAT');
    expect(e.message)
      .to.contain(`at byte ${(vrows - 3) * stride}:`)
      .and.to.contain(`row ${vrows - 3} declares dimension 0`);
    await vfile.close();
    rmSync(vpath);
  });

  it('refuses bad row ranges and reads after close', async () => {
    const path = put('range.fbin', binFile(valuesOf('float32', 12, 10), 4, 3));
    const file = await openVectorFile(path);
    for (const [a, b] of [
      [-1, 2],
      [3, 2],
      [0, 5],
      [0.5, 2],
    ]) {
      expect((await rejection(file.read(a, b))).code, `[${a}, ${b})`).to.equal('ERR_INVALID_ARGUMENT');
    }
    expect((await rejection(file.readInto(0, 2, new Float32Array(5)))).code, 'short').to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    expect((await rejection(file.readInto(0, 1, new Float64Array(3)))).code, 'dtype').to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    expect((await rejection(file.readInto(3, 5, new Float32Array(6)))).code, 'range').to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    await file.close();
    await file.close();
    const e = await rejection(file.read(0, 1));
    expect(e.code).to.equal('ERR_FILE_IO');
    expect(e.message).to.contain('closed');
  });
});

describe('vector files: malformed and missing files', () => {
  it('missing, unreadable or directory: ERR_FILE_IO with the system code', async () => {
    await expectOpenError(join(dir, 'missing.fvecs'), 'ERR_FILE_IO', 'missing.fvecs', 'ENOENT');
    const folder = join(dir, 'folder.npy');
    mkdirSync(folder);
    await expectOpenError(folder, 'ERR_FILE_IO', 'folder.npy', 'EISDIR');
  });

  it('.Xvecs: empty, truncated, inconsistent row dimensions', async () => {
    await expectFormatError(put('empty.fvecs', new Uint8Array(0)), 0, 'empty');
    const values = valuesOf('float32', 5 * 4, 11);
    const good = vecsFile(values, 5, 4);
    await expectFormatError(
      put('cut.fvecs', good.subarray(0, good.length - 3)),
      4 * 20,
      'not a whole number of rows',
    );
    await expectFormatError(
      put('huge-dim.fvecs', Buffer.from(good.subarray(0, 8)).fill(0x7f, 2, 4)),
      0,
      'declares dimension',
    );
    // Row 3 of 5 claims dimension 9: same stride, wrong prefix; found when rows [2, 4) are read.
    const mixed = Buffer.from(good);
    mixed.writeInt32LE(9, 3 * 20);
    const file = await openVectorFile(put('mixed.fvecs', mixed));
    expect([...(await file.read(0, 3))]).to.deep.equal(rowsOf(values, 4, 0, 3));
    const e = await rejection(file.read(2, 4));
    expect(e.code).to.equal('ERR_FILE_FORMAT');
    expect(e.message)
      .to.contain('mixed.fvecs')
      .and.to.contain('at byte 60:')
      .and.to.contain('row 3 declares dimension 9');
    await file.close();
    // ...and when it is the last row, at open.
    const last = Buffer.from(good);
    last.writeInt32LE(2, 4 * 20);
    await expectFormatError(put('last.fvecs', last), 80, 'row 4 declares dimension 2');
    // Rows of two dimensions whose total size is not a multiple of the first row's stride.
    const two = Buffer.concat([
      vecsFile(valuesOf('float32', 4, 1), 1, 4),
      vecsFile(valuesOf('float32', 6, 1), 2, 3),
    ]);
    await expectFormatError(put('two.fvecs', two), 40, 'not a whole number of rows', '12 bytes left over');
  });

  it('.Xbin: short header, truncated data, trailing bytes, zero dimension', async () => {
    const good = binFile(valuesOf('int32', 12, 12), 4, 3);
    await expectFormatError(put('short.ibin', good.subarray(0, 5)), 5, 'truncated');
    await expectFormatError(
      put('cut.ibin', good.subarray(0, good.length - 1)),
      good.length - 1,
      'truncated',
      'ending at byte 56',
    );
    await expectFormatError(
      put('long.ibin', Buffer.concat([good, Buffer.alloc(3)])),
      good.length,
      '3 bytes after the data',
    );
    const zero = Buffer.from(good);
    zero.writeUInt32LE(0, 4);
    await expectFormatError(put('zero.ibin', zero), 4, 'dimension 0');
  });

  it('.npy: bad magic, version, header, Fortran order, big-endian, shape, dtype, size', async () => {
    const data = bytesOf(valuesOf('float32', 12, 13));
    const npy = (dict: string, version = 1, bytes = data) => npyFile(dict, bytes, version);
    const good = npy(npyDict('<f4', '(4, 3)'));
    const bad = Buffer.from(good);
    bad[3] = 0x58;
    await expectFormatError(put('magic.npy', bad), 3, 'bad magic');
    await expectFormatError(put('tiny.npy', Buffer.from([0x93, 0x4e])), 2, 'truncated');
    const v4 = Buffer.from(good);
    v4[6] = 4;
    await expectFormatError(put('v4.npy', v4), 6, 'version 4.0');
    await expectFormatError(put('fortran.npy', npy(npyDict('<f4', '(4, 3)', 'True'))), 10, 'Fortran');
    await expectFormatError(put('big.npy', npy(npyDict('>f4', '(4, 3)'))), 10, 'big-endian');
    await expectFormatError(put('3d.npy', npy(npyDict('<f4', '(2, 2, 3)'))), 10, 'shape (2, 2, 3)');
    await expectFormatError(put('0d.npy', npy(npyDict('<f4', '()'), 1, data.subarray(0, 4))), 10, 'shape ()');
    await expectFormatError(
      put('complex.npy', npy(npyDict('<c8', '(4, 3)'))),
      10,
      "unsupported .npy dtype '<c8'",
    );
    await expectFormatError(put('u4.npy', npy(npyDict('<u4', '(4, 3)'))), 10, "'<u4'");
    await expectFormatError(
      put('nocols.npy', npy(npyDict('<f4', '(4, 0)'), 1, Buffer.alloc(0))),
      10,
      'no columns',
    );
    await expectFormatError(
      put('struct.npy', npy(`{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4, 3), }`)),
      20,
      'malformed .npy header',
    );
    await expectFormatError(
      put('extra.npy', npy(`{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), 'x': 'y'}`)),
      10,
      'keys are descr, fortran_order, shape, x',
    );
    await expectFormatError(
      put('eval.npy', npy(`{'descr': '<f4', 'fortran_order': __import__('os'), 'shape': (4, 3)}`)),
      44,
      'malformed .npy header',
    );
    await expectFormatError(
      put('junk.npy', npy(`{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3)} x`)),
      68,
      'text after',
    );
    const cut = put('cut.npy', good.subarray(0, good.length - 4));
    await expectFormatError(cut, good.length - 4, 'truncated', `ending at byte ${good.length}`);
    await expectFormatError(
      put('long.npy', Buffer.concat([good, Buffer.alloc(8)])),
      good.length,
      '8 bytes after',
    );
    const header = Buffer.from(good);
    header.writeUInt16LE(4000, 8);
    await expectFormatError(put('header.npy', header), good.length, 'header declares 4000 bytes');
  });

  it('IDX: bad magic, int16, truncated', async () => {
    const good = idxFile('uint8', [4, 3], valuesOf('uint8', 12, 14));
    const magic = Buffer.from(good);
    magic[1] = 1;
    await expectFormatError(put('magic.idx', magic), 0, 'bad magic');
    const type = Buffer.from(good);
    type[2] = 0x0b;
    await expectFormatError(put('short-ubyte', type), 2, 'int16');
    type[2] = 0x42;
    await expectFormatError(put('weird-ubyte', type), 2, 'unknown type code 0x42');
    await expectFormatError(put('cut.idx', good.subarray(0, 10)), 10, 'truncated');
    await expectFormatError(put('cut-data.idx', good.subarray(0, 20)), 20, 'truncated');
  });

  it('gzip: corrupt or truncated streams, and the size cap', async () => {
    const bytes = idxFile('uint8', [40, 30], valuesOf('uint8', 1200, 15));
    const gz = gzipSync(bytes);
    await expectFormatError(put('cut.idx.gz', gz.subarray(0, gz.length - 10)), gz.length - 10, 'gzip');
    const corrupt = Buffer.from(gz);
    corrupt.fill(0x55, 12, 30);
    await expectFormatError(put('corrupt.idx.gz', corrupt), 0, 'gzip');
    const path = put('cap.idx.gz', gz);
    const e = await rejection(openVectorFile(path, { maxGzipBytes: 1000 }));
    expect(e.code).to.equal('ERR_FILE_IO');
    expect(e.message).to.contain('cap.idx.gz').and.to.contain('1000');
    expect((await openVectorFile(path, { maxGzipBytes: 1300 })).rows).to.equal(40);
  });

  it('a file whose name says another format: the error says what the content looks like', async () => {
    const npy = npyFile(npyDict('<f4', '(4, 3)'), bytesOf(valuesOf('float32', 12, 16)));
    await expectFormatError(put('npy.fvecs', npy), 0, 'looks like a .npy file');
    await expectFormatError(put('npy.fbin', npy), npy.length, 'looks like a .npy file');
    const fbin = binFile(valuesOf('float32', 12, 17), 4, 3);
    await expectFormatError(put('bin.npy', fbin), 0, 'bad magic', 'looks like a .fbin / .ibin file');
    const fvecs = vecsFile(valuesOf('float32', 12, 18), 4, 3);
    await expectFormatError(put('vecs.fbin', fvecs), fvecs.length, 'looks like a .fvecs / .ivecs file');
    await expectFormatError(put('gz.npy', gzipSync(npy)), 0, 'looks like a gzip-compressed file');
  });
});

describe('vector files: writers', () => {
  const cases: [VectorFileFormat, StorageDtype, (v: StorageArray, rows: number, dim: number) => Buffer][] = [
    ['fvecs', 'float32', vecsFile],
    ['ivecs', 'int32', vecsFile],
    ['bvecs', 'uint8', vecsFile],
    ['fbin', 'float32', binFile],
    ['u8bin', 'uint8', binFile],
    ['i8bin', 'int8', binFile],
    ['ibin', 'int32', binFile],
    ...(Object.entries(NPY_DESCR) as [StorageDtype, string][]).map(
      ([dtype, descr]) =>
        [
          'npy',
          dtype,
          (v: StorageArray, rows: number, dim: number) =>
            npyFile(npyDict(descr, `(${rows}, ${dim})`), bytesOf(v)),
        ] as [VectorFileFormat, StorageDtype, (v: StorageArray, rows: number, dim: number) => Buffer],
    ),
    ...(Object.keys(IDX_CODE) as StorageDtype[]).map(
      (dtype) =>
        ['idx', dtype, (v: StorageArray, rows: number, dim: number) => idxFile(dtype, [rows, dim], v)] as [
          VectorFileFormat,
          StorageDtype,
          (v: StorageArray, rows: number, dim: number) => Buffer,
        ],
    ),
  ];

  it('writes every format and dtype byte for byte as the format defines, rows in any order', async () => {
    const rows = 9;
    const dim = 5;
    for (const [format, dtype, expected] of cases) {
      const values = valuesOf(dtype, rows * dim, 20);
      const path = join(dir, `w-${dtype}.${format}`);
      const writer = await createVectorFileWriter(path, { rows, dim, dtype });
      expect(writer.format).to.equal(format);
      await Promise.all([
        writer.writeRows(6, values.subarray(6 * dim)),
        writer.writeRows(0, values.subarray(0, 2 * dim)),
        writer.writeRows(2, values.subarray(2 * dim, 6 * dim)),
      ]);
      expect(existsSync(path), 'nothing at the path before commit').to.equal(false);
      await writer.commit();
      expect(readFileSync(path).equals(expected(values, rows, dim)), `${format} ${dtype}`).to.equal(true);
      await expectReads(path, { rows, dim, dtype, format }, values);
    }
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).to.deep.equal([]);
  });

  it('defaults the dtype to the format\u2019s first and refuses one the format cannot hold', async () => {
    const w = await createVectorFileWriter(join(dir, 'd.npy'), { rows: 1, dim: 1 });
    expect(w.dtype).to.equal('float32');
    await w.abort();
    for (const [name, dtype] of [
      ['x.fbin', 'int32'],
      ['x.ivecs', 'float32'],
      ['x.idx', 'int64'],
      ['x.npy', 'bfloat16'],
    ] as const) {
      const e = await rejection(createVectorFileWriter(join(dir, name), { rows: 1, dim: 1, dtype }));
      expect(e.code, name).to.equal('ERR_ARG_DTYPE');
    }
  });

  it('refuses bad shapes, gzip, a temporary file elsewhere, and wrong rows', async () => {
    const path = join(dir, 'bad.fbin');
    for (const options of [
      { rows: -1, dim: 2 },
      { rows: 2, dim: 0 },
      { rows: 2 ** 32, dim: 1 },
      { rows: 1.5, dim: 2 },
    ]) {
      expect((await rejection(createVectorFileWriter(path, options))).code).to.equal('ERR_INVALID_ARGUMENT');
    }
    expect(
      (await rejection(createVectorFileWriter(join(dir, 'zero.fvecs'), { rows: 0, dim: 2 }))).code,
    ).to.equal('ERR_INVALID_ARGUMENT');
    expect((await rejection(createVectorFileWriter(path, { rows: 1, dim: 2, resume: true }))).code).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    expect(
      (await rejection(createVectorFileWriter(join(dir, 'x.fbin.gz'), { rows: 1, dim: 2 }))).code,
    ).to.equal('ERR_INVALID_ARGUMENT');
    const other = mkdtempSync(join(tmpdir(), 'keops-other-'));
    try {
      const e = await rejection(
        createVectorFileWriter(path, { rows: 1, dim: 2, tempPath: join(other, 't.tmp') }),
      );
      expect(e.code).to.equal('ERR_INVALID_ARGUMENT');
      expect(e.message).to.contain('in the folder of');
    } finally {
      rmSync(other, { recursive: true });
    }
    const writer = await createVectorFileWriter(path, { rows: 3, dim: 2 });
    expect((await rejection(writer.writeRows(0, new Float64Array(2)))).code).to.equal('ERR_ARG_DTYPE');
    expect((await rejection(writer.writeRows(0, new Float32Array(3)))).code).to.equal('ERR_ARG_SHAPE');
    expect((await rejection(writer.writeRows(2, new Float32Array(4)))).code).to.equal('ERR_INVALID_ARGUMENT');
    expect((await rejection(writer.writeRows(-1, new Float32Array(2)))).code).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    await writer.abort();
    expect((await rejection(writer.writeRows(0, new Float32Array(2)))).code).to.equal('ERR_FILE_IO');
    expect(existsSync(writer.tempPath)).to.equal(false);
    expect(existsSync(path)).to.equal(false);
  });

  it('writes to a temporary file beside the path; commit renames it, replacing an old file; abort leaves nothing', async () => {
    const sub = mkdtempSync(join(dir, 'commit-'));
    const path = join(sub, 'out.ibin');
    writeFileSync(path, 'old contents');
    const writer = await createVectorFileWriter(path, { rows: 2, dim: 2 });
    expect(readdirSync(sub).sort()).to.deep.equal([writer.tempPath.slice(sub.length + 1), 'out.ibin'].sort());
    expect(statSync(writer.tempPath).size, 'sized up front').to.equal(8 + 16);
    await writer.writeRows(0, Int32Array.of(1, 2, 3, 4));
    await writer.sync();
    expect(readFileSync(path, 'utf8'), 'the old file stays until commit').to.equal('old contents');
    await writer.commit();
    expect(readdirSync(sub)).to.deep.equal(['out.ibin']);
    expect([...new Int32Array(Uint8Array.from(readFileSync(path)).buffer, 8)]).to.deep.equal([1, 2, 3, 4]);
    await writer.abort(); // after commit: nothing to do, the file stays
    expect(existsSync(path)).to.equal(true);

    const aborted = await createVectorFileWriter(join(sub, 'gone.npy'), {
      rows: 4,
      dim: 3,
      dtype: 'float64',
    });
    await aborted.writeRows(1, new Float64Array(6));
    await aborted.abort();
    await aborted.abort();
    expect(readdirSync(sub)).to.deep.equal(['out.ibin']);
  });

  it('resumes a temporary file: checks its header, keeps its rows; ERR_CHECKPOINT for another shape', async () => {
    const path = join(dir, 'resume.fvecs');
    const tempPath = join(dir, 'resume.fvecs.partial');
    const values = valuesOf('float32', 6 * 4, 21);
    const first = await createVectorFileWriter(path, { rows: 6, dim: 4, tempPath });
    expect(first.resumed).to.equal(false);
    await first.writeRows(0, values.subarray(0, 12));
    await first.sync();
    // (the first writer is abandoned, as by a crash)
    for (const other of [
      { rows: 7, dim: 4 },
      { rows: 6, dim: 3 },
    ]) {
      const e = await rejection(createVectorFileWriter(path, { ...other, tempPath, resume: true }));
      expect(e.code).to.equal('ERR_CHECKPOINT');
      expect(e.message).to.contain(tempPath);
    }
    const npyTemp = join(dir, 'r.npy.partial');
    await (await createVectorFileWriter(join(dir, 'r.npy'), { rows: 6, dim: 4, tempPath: npyTemp })).sync();
    const e = await rejection(
      createVectorFileWriter(join(dir, 'r.npy'), {
        rows: 6,
        dim: 4,
        dtype: 'int32',
        tempPath: npyTemp,
        resume: true,
      }),
    );
    expect(e.code).to.equal('ERR_CHECKPOINT');
    expect(e.message).to.contain('header differs at byte 22');

    const second = await createVectorFileWriter(path, { rows: 6, dim: 4, tempPath, resume: true });
    expect(second.resumed).to.equal(true);
    await second.writeRows(3, values.subarray(12, 16));
    // A clean stop: closed, the temporary file kept, nothing at the path.
    await second.close();
    await second.close();
    expect((await rejection(second.writeRows(4, values.subarray(16)))).code).to.equal('ERR_FILE_IO');
    expect(existsSync(path)).to.equal(false);
    const third = await createVectorFileWriter(path, { rows: 6, dim: 4, tempPath, resume: true });
    expect(third.resumed).to.equal(true);
    await third.writeRows(4, values.subarray(16));
    await third.commit();
    expect(readFileSync(path).equals(vecsFile(values, 6, 4))).to.equal(true);
    expect(existsSync(tempPath)).to.equal(false);

    const fresh = await createVectorFileWriter(join(dir, 'fresh.ibin'), {
      rows: 1,
      dim: 1,
      tempPath: join(dir, 'fresh.tmp'),
      resume: true,
    });
    expect(fresh.resumed, 'no temporary file yet: a new one').to.equal(false);
    await fresh.abort();
  });

  it('survives kill -9: the final path never exists before commit, the temporary file resumes', async function () {
    this.timeout(30_000);
    const path = join(dir, 'killed.npy');
    const tempPath = join(dir, 'killed.npy.partial');
    const values = valuesOf('int64', 8 * 3, 22);
    const script = `
      const { createVectorFileWriter } = require('./lib/io/vector-writer');
      (async () => {
        const w = await createVectorFileWriter(${JSON.stringify(path)}, { rows: 8, dim: 3, dtype: 'int64', tempPath: ${JSON.stringify(tempPath)} });
        await w.writeRows(0, BigInt64Array.from(${JSON.stringify(Array.from(values.subarray(0, 12), String))}, BigInt));
        await w.sync();
        process.kill(process.pid, 'SIGKILL');
      })();`;
    const child = spawnSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', script], {
      cwd: join(__dirname, '..'),
      encoding: 'utf8',
    });
    expect(child.signal, child.stderr).to.equal('SIGKILL');
    expect(existsSync(path)).to.equal(false);
    expect(existsSync(tempPath)).to.equal(true);
    const writer = await createVectorFileWriter(path, {
      rows: 8,
      dim: 3,
      dtype: 'int64',
      tempPath,
      resume: true,
    });
    expect(writer.resumed).to.equal(true);
    await writer.writeRows(4, values.subarray(12));
    await writer.commit();
    const file = await openVectorFile(path);
    expect([...(await file.read(0, 8))]).to.deep.equal([...values]);
    await file.close();
  });

  it('writes rows beyond 4 GiB (sparse)', async function () {
    const rows = 5 * 2 ** 20;
    const dim = 1024;
    const path = join(dir, 'huge-out.u8bin');
    const writer = await createVectorFileWriter(path, { rows, dim });
    if (statSync(writer.tempPath).blocks * 512 > 2 ** 24) {
      await writer.abort();
      console.log('      (skipped: this file system does not make sparse files)');
      this.skip();
    }
    const last = Uint8Array.from({ length: dim }, (_, k) => k % 253);
    await writer.writeRows(rows - 1, last);
    await writer.commit();
    const file = await openVectorFile(path);
    expect([...(await file.read(rows - 1, rows))]).to.deep.equal([...last]);
    await file.close();
    rmSync(path);
  });
});

describe('vector files: numpy cross-check', function () {
  this.timeout(30_000);

  it('reads .npy files numpy writes (1.0, 2.0, 3.0) and numpy loads ours', async function () {
    const probe = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
    if (probe.status !== 0) {
      console.log(
        `      (skipped: python3 with numpy is not available: ${probe.error?.message ?? probe.stderr.trim()})`,
      );
      this.skip();
    }
    const script = `
import numpy as np, sys
from numpy.lib import format as fmt
d = sys.argv[1]
a = np.arange(35, dtype=np.float64).reshape(7, 5) * 1.5 - 20
for code in ['f2', 'f4', 'f8', 'u1', 'i1', 'i4', 'i8']:
    np.save(f'{d}/np-{code}.npy', (a if code[0] == 'f' else a % 100).astype(code))
for v in [(2, 0), (3, 0)]:
    with open(f'{d}/np-v{v[0]}.npy', 'wb') as f:
        fmt.write_array(f, a.astype('<f4'), version=v)
np.save(f'{d}/np-1d.npy', np.arange(6, dtype='<i8'))
np.save(f'{d}/np-fortran.npy', np.asfortranarray(a))
for name, dtype in [('ours-f4', 'f4'), ('ours-i8', 'i8'), ('ours-f2', 'f2')]:
    x = np.load(f'{d}/{name}.npy')
    assert x.dtype == np.dtype(dtype) and x.shape == (3, 4), (name, x.dtype, x.shape)
    assert (x == np.arange(12).reshape(3, 4)).all(), name
print('ok')
`;
    for (const [name, dtype, make] of [
      ['ours-f4', 'float32', () => Float32Array.from({ length: 12 }, (_, k) => k)],
      ['ours-i8', 'int64', () => BigInt64Array.from({ length: 12 }, (_, k) => BigInt(k))],
      // float16 bit patterns of 0..11
      [
        'ours-f2',
        'float16',
        () =>
          Uint16Array.from([
            0, 0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800, 0x4880, 0x4900, 0x4980,
          ]),
      ],
    ] as const) {
      const w = await createVectorFileWriter(join(dir, `${name}.npy`), { rows: 3, dim: 4, dtype });
      await w.writeRows(0, make());
      await w.commit();
    }
    const run = spawnSync('python3', ['-c', script, dir], { encoding: 'utf8' });
    expect(run.status, run.stderr).to.equal(0);
    expect(run.stdout.trim()).to.equal('ok');
    const base = Array.from({ length: 35 }, (_, k) => k * 1.5 - 20);
    for (const [code, dtype] of [
      ['f2', 'float16'],
      ['f4', 'float32'],
      ['f8', 'float64'],
      ['u1', 'uint8'],
      ['i1', 'int8'],
      ['i4', 'int32'],
      ['i8', 'int64'],
    ] as const) {
      const file = await openVectorFile(join(dir, `np-${code}.npy`));
      expect([file.rows, file.dim, file.dtype], code).to.deep.equal([7, 5, dtype]);
      const rows = await file.read(2, 4);
      expect(rows.length).to.equal(10);
      if (dtype === 'float32' || dtype === 'float64') expect([...rows]).to.deep.equal(base.slice(10, 20));
      await file.close();
    }
    for (const v of [2, 3]) {
      const file = await openVectorFile(join(dir, `np-v${v}.npy`));
      expect([...(await file.read(0, 7))]).to.deep.equal(base);
      await file.close();
    }
    const column = await openVectorFile(join(dir, 'np-1d.npy'));
    expect([column.rows, column.dim]).to.deep.equal([6, 1]);
    expect([...(await column.read(0, 6))]).to.deep.equal([0n, 1n, 2n, 3n, 4n, 5n]);
    await column.close();
    await expectFormatError(join(dir, 'np-fortran.npy'), 10, 'Fortran');
    expect(STORAGE_BYTES.float16).to.equal(2);
  });
});

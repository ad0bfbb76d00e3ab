/**
 * `keops-node convert` and `keops-node recall` (issue 12, item 5), with what they rest on: the dtype conversion
 * rules and rounding (lib/io/convert-storage.ts), `convertVectorFile`, and `recall()`.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { expect } from 'chai';
import { runCli } from '../lib/cli';
import { conversionRule, convertStorage, encodeSmallFloat } from '../lib/io/convert-storage';
import { convertVectorFile } from '../lib/io/convert-file';
import { openVectorFile } from '../lib/io/vector-file';
import { createVectorFileWriter } from '../lib/io/vector-writer';
import {
  bfloat16ToNumber,
  float16ToNumber,
  type StorageArray,
  type StorageDtype,
  vectorsFromArray,
} from '../lib/io/vector-source';
import { recall } from '../lib/knn/recall';
import { expectKeOpsError, rejection, rng } from './util';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'keops-convert-recall-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

async function writeFile(
  name: string,
  rows: number,
  dim: number,
  dtype: StorageDtype,
  data: StorageArray,
): Promise<string> {
  const path = join(dir, name);
  const w = await createVectorFileWriter(path, { rows, dim, dtype });
  await w.writeRows(0, data);
  await w.commit();
  return path;
}

async function readAll(
  path: string,
): Promise<{ dtype: StorageDtype; rows: number; dim: number; values: unknown[] }> {
  const f = await openVectorFile(path);
  try {
    return { dtype: f.dtype, rows: f.rows, dim: f.dim, values: [...(await f.read(0, f.rows))] };
  } finally {
    await f.close();
  }
}

describe('dtype conversions', () => {
  it('classifies conversions: exact, rounding floats, or explicit', () => {
    const cases: [StorageDtype, StorageDtype, string][] = [
      ['uint8', 'float16', 'exact'],
      ['int8', 'bfloat16', 'exact'],
      ['uint8', 'int8', 'explicit'],
      ['int8', 'int32', 'exact'],
      ['int32', 'float64', 'exact'],
      ['int32', 'float32', 'explicit'],
      ['int64', 'float64', 'explicit'],
      ['int64', 'int32', 'explicit'],
      ['float16', 'float32', 'exact'],
      ['bfloat16', 'float32', 'exact'],
      ['float16', 'bfloat16', 'rounds'],
      ['float64', 'float32', 'rounds'],
      ['float32', 'float16', 'rounds'],
      ['float32', 'int32', 'explicit'],
      ['float16', 'uint8', 'explicit'],
      ['int32', 'int32', 'exact'],
    ];
    for (const [from, to, rule] of cases) expect(conversionRule(from, to), `${from} -> ${to}`).to.equal(rule);
  });

  it('encodes float16 and bfloat16 exactly for their own values and to the nearest (ties to even) otherwise', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const h = float16ToNumber(bits);
      if (!Number.isNaN(h)) expect(encodeSmallFloat(h, 5, 10), `f16 ${bits}`).to.equal(bits);
      const b = bfloat16ToNumber(bits);
      if (!Number.isNaN(b)) expect(encodeSmallFloat(b, 8, 7), `bf16 ${bits}`).to.equal(bits);
    }
    expect(Number.isNaN(float16ToNumber(encodeSmallFloat(NaN, 5, 10)))).to.equal(true);
    expect(float16ToNumber(encodeSmallFloat(65520, 5, 10))).to.equal(Infinity); // halfway to 65536: even is inf
    expect(float16ToNumber(encodeSmallFloat(65519.99, 5, 10))).to.equal(65504);
    expect(float16ToNumber(encodeSmallFloat(2 ** -25, 5, 10))).to.equal(0); // halfway to the smallest subnormal
    expect(float16ToNumber(encodeSmallFloat(1 + 2 ** -11, 5, 10))).to.equal(1); // tie: to even
    expect(float16ToNumber(encodeSmallFloat(1 + 3 * 2 ** -11, 5, 10))).to.equal(1 + 2 ** -9);
    // Random doubles: the encoded value is no farther than either neighbouring pattern.
    const r = rng(31);
    for (let t = 0; t < 20000; t++) {
      const x = (r() - 0.5) * 2 ** Math.floor(r() * 40 - 26);
      for (const [e, f, decode] of [
        [5, 10, float16ToNumber],
        [8, 7, bfloat16ToNumber],
      ] as const) {
        const bits = encodeSmallFloat(x, e, f);
        const got = Math.abs(decode(bits) - x);
        for (const n of [bits - 1, bits + 1]) {
          if ((n & 0x7fff) < ((1 << e) - 1) << f && ((n ^ bits) & 0x8000) === 0) {
            expect(got, `${x} (${e}, ${f})`).to.be.at.most(Math.abs(decode(n) - x));
          }
        }
      }
    }
  });

  it('converts floats to integers only when asked, rounding ties to even and refusing values out of range', () => {
    const x = Float32Array.of(1.5, 2.5, -0.5, 254.4, 3, -7.5, 127.4, 0);
    expectKeOpsError(() => convertStorage(x, 'float32', 'int32'), 'ERR_ARG_DTYPE', 'float32 to int32');
    expect([...convertStorage(x, 'float32', 'int32', { explicit: true })]).to.deep.equal([
      2, 2, 0, 254, 3, -8, 127, 0,
    ]);
    expectKeOpsError(
      () => convertStorage(x, 'float32', 'uint8', { explicit: true, name: 'x.fbin', dim: 4, firstRow: 10 }),
      'ERR_INVALID_ARGUMENT',
      'x.fbin: row 11, column 1: -7.5 does not fit uint8',
    );
    expectKeOpsError(
      () => convertStorage(Float32Array.of(3, 127.5), 'float32', 'int8', { explicit: true, dim: 2 }),
      'ERR_INVALID_ARGUMENT',
      'row 0, column 1: 127.5 does not fit int8',
    );
    expectKeOpsError(
      () => convertStorage(Float64Array.of(NaN), 'float64', 'int64', { explicit: true }),
      'ERR_INVALID_ARGUMENT',
      'NaN does not fit int64',
    );
    expect([
      ...convertStorage(Float64Array.of(-(2 ** 53), 2 ** 62), 'float64', 'int64', { explicit: true }),
    ]).to.deep.equal([-(2n ** 53n), 2n ** 62n]);
    expectKeOpsError(
      () => convertStorage(Float64Array.of(2 ** 63), 'float64', 'int64', { explicit: true }),
      'ERR_INVALID_ARGUMENT',
    );
    const big = BigInt64Array.of(5n, -(2n ** 31n), 2n ** 31n);
    expect([...convertStorage(big.subarray(0, 2), 'int64', 'int32', { explicit: true })]).to.deep.equal([
      5,
      -(2 ** 31),
    ]);
    expectKeOpsError(
      () => convertStorage(big, 'int64', 'int32', { explicit: true }),
      'ERR_INVALID_ARGUMENT',
      '2147483648',
    );
    expect([...convertStorage(Int32Array.of(3, -4), 'int32', 'int64')]).to.deep.equal([3n, -4n]);
    expect([...convertStorage(Uint8Array.of(255, 0), 'uint8', 'float16')]).to.deep.equal([0x5bf8, 0]);
    expect([...convertStorage(Float64Array.of(1 / 3), 'float64', 'float32')]).to.deep.equal([
      Math.fround(1 / 3),
    ]);
    const same = Int8Array.of(1, 2);
    expect(convertStorage(same, 'int8', 'int8')).to.equal(same);
  });
});

describe('keops-node convert', function () {
  this.timeout(60_000);

  it('round-trips through every format: file to file, bytes identical at the end', async () => {
    const r = rng(41);
    const rows = 23;
    const dim = 6;
    const chains: [StorageDtype, StorageArray, string[]][] = [
      [
        'float32',
        Float32Array.from({ length: rows * dim }, () => r() * 10 - 5),
        ['fbin', 'fvecs', 'npy', 'idx', 'fbin'],
      ],
      [
        'uint8',
        Uint8Array.from({ length: rows * dim }, () => Math.floor(r() * 256)),
        ['u8bin', 'bvecs', 'npy', 'idx', 'u8bin'],
      ],
      [
        'int32',
        Int32Array.from({ length: rows * dim }, () => Math.floor(r() * 2 ** 32) - 2 ** 31),
        ['ibin', 'ivecs', 'npy', 'idx', 'ibin'],
      ],
      [
        'int8',
        Int8Array.from({ length: rows * dim }, () => Math.floor(r() * 256) - 128),
        ['i8bin', 'npy', 'idx', 'i8bin'],
      ],
      ['float64', Float64Array.from({ length: rows * dim }, () => r() * 1e6), ['npy', 'idx', 'npy']],
    ];
    for (const [dtype, values, formats] of chains) {
      const first = await writeFile(`chain-${dtype}-0.${formats[0]}`, rows, dim, dtype, values);
      let previous = first;
      for (let k = 1; k < formats.length; k++) {
        const next = join(dir, `chain-${dtype}-${k}.${formats[k]}`);
        const run = await cli('convert', previous, next);
        expect(run.code, run.err).to.equal(0);
        expect(run.out).to.contain(`${rows} rows × ${dim} ${dtype} (.${formats[k]})`);
        expect(await readAll(next), `${dtype} .${formats[k]}`).to.deep.equal({
          dtype,
          rows,
          dim,
          values: [...values],
        });
        previous = next;
      }
      expect(readFileSync(previous).equals(readFileSync(first)), dtype).to.equal(true);
    }
    // float16 and int64 live in .npy only.
    for (const [dtype, values] of [
      ['float16', Uint16Array.from({ length: rows * dim }, () => Math.floor(r() * 0x7c00))],
      [
        'int64',
        BigInt64Array.from({ length: rows * dim }, () => BigInt(Math.floor(r() * 2 ** 40)) - 2n ** 39n),
      ],
    ] as const) {
      const a = await writeFile(`a-${dtype}.npy`, rows, dim, dtype, values);
      const b = join(dir, `b-${dtype}.npy`);
      expect((await cli('convert', a, b)).code).to.equal(0);
      expect(readFileSync(b).equals(readFileSync(a))).to.equal(true);
    }
  });

  it('reads gzipped IDX (as Fashion-MNIST ships) and streams in blocks of rows', async () => {
    const r = rng(42);
    const rows = 50;
    const images = Uint8Array.from({ length: rows * 28 * 28 }, () => Math.floor(r() * 256));
    const header = Buffer.alloc(16);
    header.writeUInt32BE(0x00000803, 0);
    header.writeUInt32BE(rows, 4);
    header.writeUInt32BE(28, 8);
    header.writeUInt32BE(28, 12);
    const gz = join(dir, 't10k-images-idx3-ubyte.gz');
    writeFileSync(gz, gzipSync(Buffer.concat([header, images])));
    const out = join(dir, 'images.fbin');
    const done = await convertVectorFile(gz, out, { blockBytes: 28 * 28 * 4 * 3 + 1 });
    expect(done).to.deep.equal({
      rows,
      dim: 784,
      from: { format: 'idx', dtype: 'uint8' },
      to: { format: 'fbin', dtype: 'float32' },
    });
    expect(await readAll(out)).to.deep.equal({ dtype: 'float32', rows, dim: 784, values: [...images] });
    const npy = join(dir, 'images.npy');
    expect((await cli('convert', gz, npy)).code).to.equal(0);
    expect((await readAll(npy)).dtype, 'the input dtype when the format holds it').to.equal('uint8');
  });

  it('applies the dtype rules: implicit exact and float rounding, --dtype for the rest, range errors name row and column', async () => {
    const f64 = await writeFile('d.npy', 2, 3, 'float64', Float64Array.of(0.1, 1.5, 2.5, -3, 1e40, 7));
    const fbin = join(dir, 'd.fbin');
    expect((await cli('convert', f64, fbin)).code).to.equal(0);
    expect((await readAll(fbin)).values).to.deep.equal([Math.fround(0.1), 1.5, 2.5, -3, Infinity, 7]);

    const ibin = join(dir, 'd.ibin');
    const refused = await cli('convert', f64, ibin);
    expect(refused.code).to.equal(1);
    expect(refused.err)
      .to.contain('ERR_ARG_DTYPE')
      .and.to.contain('float64 to int32')
      .and.to.contain('--dtype');
    const range = await cli('convert', f64, ibin, '--dtype', 'int32');
    expect(range.code).to.equal(1);
    expect(range.err)
      .to.contain('ERR_INVALID_ARGUMENT')
      .and.to.contain('row 1, column 1: 1e+40 does not fit int32');
    expect(existsSync(ibin), 'no output after a failed conversion').to.equal(false);
    expect(
      readdirSync(dir).filter((n) => n.endsWith('.tmp')),
      'no temporary file left',
    ).to.deep.equal([]);

    const ok = await writeFile('e.npy', 1, 4, 'float64', Float64Array.of(0.5, 1.5, -2.5, 1e9));
    expect((await cli('convert', ok, ibin, '--dtype', 'int32')).code).to.equal(0);
    expect((await readAll(ibin)).values).to.deep.equal([0, 2, -2, 1e9]);

    const i64 = await writeFile('ids.npy', 2, 2, 'int64', BigInt64Array.of(1n, 2n, 3n, 4n));
    const ivecs = join(dir, 'ids.ivecs');
    expect((await cli('convert', i64, ivecs)).err).to.contain('int64 to int32');
    expect((await cli('convert', i64, ivecs, '--dtype', 'int32')).code).to.equal(0);
    expect((await readAll(ivecs)).values).to.deep.equal([1, 2, 3, 4]);
    // An IDX file holds no int64 and no float16: float16 widens to float32 exactly, int64 needs --dtype.
    const f16 = await writeFile('h.npy', 1, 2, 'float16', Uint16Array.of(0x3c00, 0xc000));
    const idx = join(dir, 'h.idx');
    expect((await cli('convert', f16, idx)).code).to.equal(0);
    expect(await readAll(idx)).to.deep.equal({ dtype: 'float32', rows: 1, dim: 2, values: [1, -2] });
    expect((await cli('convert', i64, join(dir, 'ids.idx'))).code).to.equal(1);
    const wrong = await cli('convert', f64, join(dir, 'x.fbin'), '--dtype', 'float64');
    expect(wrong.code).to.equal(1);
    expect(wrong.err).to.contain('ERR_ARG_DTYPE').and.to.contain('holds float32');
  });

  it('--from / --to override file names; usage errors exit 2, failures exit 1 with their code', async () => {
    const src = await writeFile('named.fbin', 2, 2, 'float32', Float32Array.of(1, 2, 3, 4));
    const odd = join(dir, 'vectors.dat');
    expect((await cli('convert', src, odd, '--to', 'npy')).code).to.equal(0);
    const back = join(dir, 'back.fvecs');
    expect((await cli('convert', odd, back, '--from', 'npy')).code).to.equal(0);
    expect((await readAll(back)).values).to.deep.equal([1, 2, 3, 4]);

    const help = await cli('convert', '--help');
    expect(help.code).to.equal(0);
    expect(help.out)
      .to.contain('Usage: keops-node convert')
      .and.to.contain('--dtype')
      .and.to.contain('Exit codes');
    expect(help.err).to.equal('');
    for (const argv of [
      ['convert'],
      ['convert', src],
      ['convert', src, back, 'extra'],
      ['convert', src, back, '--to', 'csv'],
      ['convert', src, back, '--dtype', 'complex64'],
      ['convert', src, back, '--bogus'],
    ]) {
      const r = await cli(...argv);
      expect(r.code, argv.join(' ')).to.equal(2);
      expect(r.out, argv.join(' ')).to.equal('');
      expect(r.err, argv.join(' ')).to.match(/error: .*\n\(keops-node convert --help for usage\)/);
    }
    const missing = await cli('convert', join(dir, 'missing.fbin'), back);
    expect(missing.code).to.equal(1);
    expect(missing.err).to.contain('ERR_FILE_IO').and.to.contain('missing.fbin').and.to.contain('ENOENT');
    const unknown = await cli('convert', src, join(dir, 'out.csv'));
    expect(unknown.code).to.equal(1);
    expect(unknown.err).to.contain('ERR_INVALID_ARGUMENT');
    const malformed = join(dir, 'bad.npy');
    writeFileSync(malformed, 'not numpy at all');
    const bad = await cli('convert', malformed, back);
    expect(bad.code).to.equal(1);
    expect(bad.err).to.contain('ERR_FILE_FORMAT').and.to.contain('bad.npy: at byte 0');
    const top = await cli('--help');
    expect(top.out).to.contain('keops-node convert IN OUT').and.to.contain('keops-node recall --result FILE');
  });
});

/** recall@K computed independently: sorted unique arrays, filtered. */
function naiveRecall(result: number[][], truth: number[][], k: number): number {
  let sum = 0;
  result.forEach((row, q) => {
    const t = [...new Set(truth[q].slice(0, k).filter((id) => id >= 0))];
    const r = [...new Set(row.slice(0, k).filter((id) => id >= 0))];
    sum += r.filter((id) => t.includes(id)).length / k;
  });
  return sum / result.length;
}

describe('recall', function () {
  this.timeout(60_000);

  it('is the mean over queries of |first K result ids ∩ first K truth ids| / K', async () => {
    const result = { ids: Int32Array.of(1, 2, 3, 4, 5, 6), k: 3 };
    const truth = { ids: [1, 3, 9, 2, 7, 8, 9, 4], k: 4 };
    expect(await recall(result, truth)).to.deep.equal({ k: 3, queries: 2, recall: (2 / 3 + 0) / 2 });
    expect(await recall(result, truth, { k: 2 })).to.deep.equal({ k: 2, queries: 2, recall: 0.25 });
    expect((await recall(result, truth, { k: 1 })).recall).to.equal(0.5);
    // Missing ranks (-1) match nothing; a repeated id counts once.
    expect((await recall({ ids: [5, 5, -1], k: 3 }, { ids: [5, -1, 7], k: 3 })).recall).to.equal(1 / 3);
    expect((await recall({ ids: BigInt64Array.of(7n, 5n), k: 2 }, { ids: [5, 7], k: 2 })).recall).to.equal(1);
    // A VectorSource of ids works as well.
    expect((await recall(vectorsFromArray(Int32Array.of(1, 2, 3, 4, 5, 6), 3), truth)).recall).to.equal(
      1 / 3,
    );
  });

  it('refuses mismatched rows, K beyond either table, float ids, no queries', async () => {
    const e1 = await rejection(recall({ ids: [1, 2], k: 1 }, { ids: [1, 2, 3], k: 1 }));
    expect(e1.code).to.equal('ERR_ARG_SHAPE');
    expect(e1.message).to.contain('2 rows').and.to.contain('3');
    const e2 = await rejection(recall({ ids: [1, 2], k: 2 }, { ids: [1], k: 1 }));
    expect(e2.code).to.equal('ERR_INVALID_ARGUMENT');
    expect(e2.message).to.contain('truth has 1 ids per row');
    expect((await rejection(recall({ ids: [1, 2], k: 2 }, { ids: [1, 2], k: 2 }, { k: 3 }))).code).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    expect((await rejection(recall({ ids: [1, 2], k: 2 }, { ids: [1, 2], k: 2 }, { k: 0 }))).code).to.equal(
      'ERR_INVALID_ARGUMENT',
    );
    expect((await rejection(recall({ ids: [1, 2, 3], k: 2 }, { ids: [1, 2], k: 2 }))).code).to.equal(
      'ERR_ARG_SHAPE',
    );
    expect((await rejection(recall({ ids: [], k: 2 }, { ids: [], k: 2 }))).code).to.equal('ERR_ARG_SHAPE');
    const floats = vectorsFromArray(Float32Array.of(1, 2), 2, { name: 'distances.fbin' });
    const e3 = await rejection(recall(floats, { ids: [1, 2], k: 2 }));
    expect(e3.code).to.equal('ERR_ARG_DTYPE');
    expect(e3.message).to.contain('distances.fbin');
  });

  it('keops-node recall reads result and truth files (truth wider, int64 .npy), in blocks, and prints recall@K', async () => {
    const r = rng(51);
    const queries = 1100;
    const k = 10;
    const wide = 1000;
    const truth: number[][] = [];
    const result: number[][] = [];
    for (let q = 0; q < queries; q++) {
      const perm = Array.from({ length: wide }, (_, i) => i * 7 + q);
      for (let i = wide - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      truth.push(perm);
      result.push(
        Array.from({ length: k }, () => (r() < 0.8 ? perm[Math.floor(r() * 14)] : r() < 0.5 ? -1 : 99999)),
      );
    }
    const resultPath = await writeFile('result.ivecs', queries, k, 'int32', Int32Array.from(result.flat()));
    const truthPath = await writeFile(
      'truth.npy',
      queries,
      wide,
      'int64',
      BigInt64Array.from(truth.flat(), (v) => BigInt(v)),
    );
    for (const kk of [10, 5, 1]) {
      const run = await cli(
        'recall',
        '--result',
        resultPath,
        '--truth',
        truthPath,
        ...(kk === 10 ? [] : ['-k', String(kk)]),
      );
      expect(run.code, run.err).to.equal(0);
      expect(run.out).to.equal(`recall@${kk}: ${naiveRecall(result, truth, kk).toFixed(4)}\n`);
    }
    const [rf, tf] = [await openVectorFile(resultPath), await openVectorFile(truthPath)];
    expect((await recall(rf, tf, { k: 7 })).recall).to.be.closeTo(naiveRecall(result, truth, 7), 1e-12);
    await Promise.all([rf.close(), tf.close()]);

    const help = await cli('recall', '--help');
    expect(help.code).to.equal(0);
    expect(help.out).to.contain('recall@K = mean over queries');
    for (const argv of [
      ['recall'],
      ['recall', '--result', resultPath],
      ['recall', '--result', resultPath, '--truth', truthPath, '-k', '0'],
      ['recall', '--result', resultPath, '--truth', truthPath, '-k', 'ten'],
      ['recall', '--result', resultPath, '--truth', truthPath, 'extra'],
    ]) {
      const u = await cli(...argv);
      expect(u.code, argv.join(' ')).to.equal(2);
      expect(u.err).to.contain('(keops-node recall --help for usage)');
    }
    const tooWide = await cli('recall', '--result', resultPath, '--truth', truthPath, '-k', '11');
    expect(tooWide.code).to.equal(1);
    expect(tooWide.err).to.contain('ERR_INVALID_ARGUMENT').and.to.contain('result.ivecs has 10 ids per row');
    const fewer = await writeFile('fewer.ibin', 3, k, 'int32', new Int32Array(3 * k));
    const rows = await cli('recall', '--result', fewer, '--truth', truthPath);
    expect(rows.code).to.equal(1);
    expect(rows.err).to.contain('ERR_ARG_SHAPE').and.to.contain('3 rows');
    const missing = await cli('recall', '--result', join(dir, 'nope.ivecs'), '--truth', truthPath);
    expect(missing.code).to.equal(1);
    expect(missing.err).to.contain('ERR_FILE_IO').and.to.contain('ENOENT');
  });
});

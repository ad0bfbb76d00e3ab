/**
 * Vector files: write / read throughput and peak memory of reading by row ranges, side by side with reading the
 * whole file with fs.readFile (what loaders such as npyjs need), and converting Fashion-MNIST's gzipped IDX.
 * Each measurement runs in its own process so that its peak RSS is its own. Appends a section to
 * bench/RESULTS.md with `--write`.
 *
 *     npx ts-node --transpile-only bench/vector-files.ts [--mib 512] [--write]
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertVectorFile } from '../lib/io/convert-file';
import { openVectorFile } from '../lib/io/vector-file';
import { createVectorFileWriter } from '../lib/io/vector-writer';

const DIM = 128;
const BLOCK_BYTES = 64 * 2 ** 20;
const FASHION = '/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz';

interface Measure {
  seconds: number;
  bytes: number;
  maxRssMiB: number;
  check: number;
}

/** One measurement, in this process (the child). */
async function measure(mode: string, path: string, rows: number): Promise<Measure> {
  const start = process.hrtime.bigint();
  let bytes = 0;
  let check = 0;
  const blockRows = Math.floor(BLOCK_BYTES / (4 * DIM));
  if (mode === 'write') {
    const writer = await createVectorFileWriter(path, { rows, dim: DIM });
    const block = new Float32Array(blockRows * DIM);
    for (let r = 0; r < rows; r += blockRows) {
      const n = Math.min(blockRows, rows - r);
      block.fill(r % 1000);
      await writer.writeRows(r, block.subarray(0, n * DIM));
      bytes += n * DIM * 4;
    }
    await writer.commit();
  } else if (mode === 'ranges') {
    const file = await openVectorFile(path);
    for (let r = 0; r < file.rows; r += blockRows) {
      const rowsRead = (await file.read(r, Math.min(file.rows, r + blockRows))) as Float32Array;
      check += rowsRead[0];
      bytes += rowsRead.byteLength;
    }
    await file.close();
  } else if (mode === 'rangesInto') {
    const file = await openVectorFile(path);
    const buffer = new Float32Array(blockRows * DIM);
    for (let r = 0; r < file.rows; r += blockRows) {
      const rowsRead = await file.readInto(r, Math.min(file.rows, r + blockRows), buffer);
      check += rowsRead[0];
      bytes += rowsRead.byteLength;
    }
    await file.close();
  } else if (mode === 'readFile') {
    const all = await readFile(path);
    const values = new Float32Array(
      all.buffer,
      all.byteOffset + (path.endsWith('.fbin') ? 8 : 0),
      rows * DIM,
    );
    for (let r = 0; r < rows; r += blockRows) check += values[r * DIM];
    bytes = all.length;
  } else if (mode === 'convert') {
    const done = await convertVectorFile(FASHION, path);
    bytes = done.rows * done.dim;
    check = done.rows;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { seconds, bytes, maxRssMiB: process.resourceUsage().maxRSS / 1024, check };
}

function child(mode: string, path: string, rows: number): Measure {
  const run = spawnSync(
    process.execPath,
    ['-r', 'ts-node/register/transpile-only', __filename, '--child', mode, path, String(rows)],
    { encoding: 'utf8', cwd: join(__dirname, '..') },
  );
  if (run.status !== 0) throw new Error(`${mode}: ${run.stderr}`);
  return JSON.parse(run.stdout) as Measure;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    process.stdout.write(JSON.stringify(await measure(args[1], args[2], Number(args[3]))));
    return;
  }
  const mibIndex = args.indexOf('--mib');
  const mib = mibIndex >= 0 ? Number(args[mibIndex + 1]) : 512;
  const rows = Math.floor((mib * 2 ** 20) / (4 * DIM));
  const dir = mkdtempSync(join(tmpdir(), 'keops-bench-vectors-'));
  const lines: string[] = [];
  const row = (what: string, size: string, m: Measure, note = '') => {
    const rate = m.bytes / 2 ** 20 / m.seconds;
    lines.push(
      `| ${what} | ${size} | ${m.seconds.toFixed(3)} s | ${rate.toFixed(0)} MiB/s | ${m.maxRssMiB.toFixed(0)} MiB | ${note} |`,
    );
    console.log(lines[lines.length - 1]);
  };
  try {
    const idle = child('idle', '', 0);
    lines.push(
      `| (a process that reads nothing: the baseline of peak RSS) | | | | ${idle.maxRssMiB.toFixed(0)} MiB | ts-node |`,
    );
    const fbin = join(dir, 'base.fbin');
    const size = `${rows}×${DIM} float32 (${mib} MiB)`;
    row(
      'write .fbin (createVectorFileWriter, 64 MiB blocks)',
      size,
      child('write', fbin, rows),
      'temp file, fsync, rename',
    );
    const ranges = child('ranges', fbin, rows);
    const into = child('rangesInto', fbin, rows);
    const whole = child('readFile', fbin, rows);
    if (ranges.check !== whole.check || into.check !== whole.check) throw new Error('the reads differ');
    row(
      'read .fbin by 64 MiB row ranges (openVectorFile, read)',
      size,
      ranges,
      'page cache warm; a new array per block',
    );
    row('read .fbin by 64 MiB row ranges (readInto one buffer)', size, into, 'page cache warm');
    row('read .fbin whole (fs.readFile)', size, whole, 'page cache warm; stops at 2 GiB');
    if (existsSync(FASHION)) {
      row(
        'convert Fashion-MNIST train IDX .gz → .u8bin',
        '60000×784 uint8',
        child('convert', join(dir, 'train.u8bin'), 0),
        'gunzip in memory',
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (args.includes('--write')) {
    const date = new Date().toISOString().slice(0, 10);
    appendFileSync(
      join(__dirname, 'RESULTS.md'),
      [
        '',
        `## Vector files, ${date}`,
        '',
        `Machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} vCPUs, Node ${process.version}; files in ${tmpdir()}. Each line is its own process (peak RSS is that process's; the first line is the baseline). Timings on a shared machine: compare within this table only.`,
        '',
        '| what | size | time | throughput | peak RSS | note |',
        '|---|---|---|---|---|---|',
        ...lines,
        '',
      ].join('\n'),
    );
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

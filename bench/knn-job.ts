/**
 * k-NN jobs over files: what the job machinery (files read by row ranges, query blocks, fsynced checkpoints,
 * temporary files renamed into place) costs next to `knn()` on the same rows in memory, and the peak memory of
 * each. Fashion-MNIST (Debian's dataset-fashion-mnist) when installed, else uniform uint8 rows of the same
 * shape. Each measurement runs in its own process so that its peak RSS is its own. Appends a section to
 * bench/RESULTS.md with `--write`.
 *
 *     npx ts-node --transpile-only bench/knn-job.ts [--queries 2000] [--write]
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertVectorFile } from '../lib/io/convert-file';
import { openVectorFile } from '../lib/io/vector-file';
import { createVectorFileWriter } from '../lib/io/vector-writer';
import { runKnnJob } from '../lib/jobs/knn-job';
import { loadAverage } from './report';
import { knn } from '../lib/knn/index';

const FASHION = '/usr/share/datasets/fashion-mnist';
const K = 10;

interface Measure {
  seconds: number;
  maxRssMiB: number;
  ids: string;
}

/** Reads a whole (small) vector file into memory. */
async function load(path: string): Promise<{ data: Uint8Array; dim: number }> {
  const file = await openVectorFile(path);
  try {
    return { data: (await file.read(0, file.rows)) as Uint8Array, dim: file.dim };
  } finally {
    await file.close();
  }
}

/** One measurement, in this process (the child). */
async function measure(mode: string, dir: string): Promise<Measure> {
  const base = join(dir, 'base.u8bin');
  const queries = join(dir, 'queries.u8bin');
  const out = join(dir, `${mode}.ibin`);
  const start = process.hrtime.bigint();
  if (mode === 'knn') {
    const [q, b] = [await load(queries), await load(base)];
    const result = await knn(q, b, { k: K });
    const writer = await createVectorFileWriter(out, { rows: result.rows, dim: K, dtype: 'int32' });
    await writer.writeRows(0, result.ids);
    await writer.commit();
  } else {
    const options = {
      job: {},
      'job-blocks': { blockRows: 200 },
      'job-32MiB': { memoryLimit: 32 * 2 ** 20 },
    }[mode];
    await runKnnJob({ base, queries, k: K, out, ...options });
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024, ids: out };
}

const MODES: Record<string, string> = {
  knn: 'knn() on the rows loaded in memory, ids written once',
  job: 'runKnnJob, files → files (one block here)',
  'job-blocks': 'runKnnJob, blocks of 200 queries (checkpoint after each)',
  'job-32MiB': 'runKnnJob, memoryLimit 32 MiB',
};

async function prepare(dir: string, queryRows: number): Promise<string> {
  const base = join(dir, 'base.u8bin');
  const queries = join(dir, 'queries.u8bin');
  const train = join(FASHION, 'train-images-idx3-ubyte.gz');
  if (existsSync(train)) {
    await convertVectorFile(train, base);
    const all = join(dir, 'all-queries.u8bin');
    await convertVectorFile(join(FASHION, 't10k-images-idx3-ubyte.gz'), all);
    const { data, dim } = await load(all);
    const writer = await createVectorFileWriter(queries, { rows: queryRows, dim, dtype: 'uint8' });
    await writer.writeRows(0, data.subarray(0, queryRows * dim));
    await writer.commit();
    return `Fashion-MNIST: ${queryRows} test images × 60000 train images, D = 784 uint8`;
  }
  let seed = 1;
  const random = (n: number) =>
    Uint8Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256);
  for (const [path, rows] of [
    [base, 60000],
    [queries, queryRows],
  ] as const) {
    const writer = await createVectorFileWriter(path, { rows, dim: 784, dtype: 'uint8' });
    await writer.writeRows(0, random(rows * 784));
    await writer.commit();
  }
  return `uniform uint8: ${queryRows} × 60000, D = 784`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    process.stdout.write(JSON.stringify(await measure(argv[1], argv[2])));
    return;
  }
  const at = argv.indexOf('--queries');
  const queryRows = at >= 0 ? Number(argv[at + 1]) : 2000;
  const dir = mkdtempSync(join(tmpdir(), 'keops-knn-job-bench-'));
  try {
    const data = await prepare(dir, queryRows);
    const rows: string[] = [];
    let reference: Buffer | undefined;
    for (const [mode, what] of Object.entries(MODES)) {
      const child = spawnSync(
        process.execPath,
        ['-r', 'ts-node/register/transpile-only', __filename, '--child', mode, dir],
        { encoding: 'utf8', env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' } },
      );
      if (child.status !== 0) throw new Error(`${mode}: ${child.stderr}`);
      const m = JSON.parse(child.stdout) as Measure;
      const ids = readFileSync(m.ids);
      reference ??= ids;
      const pairs = queryRows * 60000;
      rows.push(
        `| ${what} | ${m.seconds.toFixed(2)} s | ${(pairs / m.seconds / 1e6).toFixed(0)} Mpairs/s | ` +
          `${m.maxRssMiB.toFixed(0)} MiB | ${ids.equals(reference) ? 'same bytes as knn()' : 'DIFFERENT'} |`,
      );
      console.log(rows[rows.length - 1]);
    }
    const text = [
      '',
      `## k-NN jobs over files, ${new Date().toISOString().slice(0, 10)}`,
      '',
      `Machine: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} vCPUs, Node ${process.version}; ${data}, k = ${K}, l2; ` +
        `files in ${tmpdir()}. Each line is its own process (ts-node included in the peak RSS). ` +
        `Load average at the end: ${loadAverage()} (a shared machine: compare within this table only).`,
      '',
      '| what | time | rate | peak RSS | ids |',
      '| --- | --- | --- | --- | --- |',
      ...rows,
      '',
    ].join('\n');
    if (argv.includes('--write')) appendFileSync(join(__dirname, 'RESULTS.md'), text);
    else console.log(text);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});

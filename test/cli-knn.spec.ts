/**
 * `keops-node knn` (issue 12, items 4 and 5): arguments and exit codes, progress lines and summary, and — as
 * child processes — a job killed with SIGKILL or stopped with SIGINT, then resumed: the same bytes as an
 * uninterrupted run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { Writable } from 'node:stream';
import { copyFileSync, existsSync, readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { runCli } from '../lib/cli';
import { knnCommand } from '../lib/cli/knn';
import { formatDuration, lineProgress, type ProgressState } from '../lib/cli/progress';
import { parseSize } from '../lib/cli/sizes';
import { CHECKPOINT_SUFFIX } from '../lib/jobs/knn-job';
import { bruteForceKnn, integerPoints, readBin, scratchFolder, writeFbin } from './knn-fixtures';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

describe('keops-node knn: sizes and progress lines', () => {
  it('parses sizes with binary and decimal units, and refuses others', () => {
    const cases: [string, number][] = [
      ['4GiB', 4 * 2 ** 30],
      ['512MiB', 512 * 2 ** 20],
      ['1e9', 1e9],
      ['2GB', 2e9],
      ['64k', 65536],
      ['1.5 G', 1.5 * 2 ** 30],
      ['100', 100],
      ['3kb', 3000],
    ];
    for (const [text, bytes] of cases) expect(parseSize(text), text).to.equal(bytes);
    for (const bad of ['', 'GiB', '-1MiB', '4 parsecs', '0', '0.1', '1e400', 'NaN']) {
      expect(() => parseSize(bad), bad).to.throw(/size/);
    }
  });

  it('writes a progress line at most every interval, and the last one, with rows, rate and ETA', () => {
    const lines: string[] = [];
    const display = lineProgress('knn', (l) => lines.push(l), 5000);
    const at = (elapsedMs: number, rowsDone: number): ProgressState => ({
      pairsDone: rowsDone * 100,
      pairsTotal: 100_000,
      pairsAtStart: 0,
      rowsDone,
      rows: 1000,
      elapsedMs,
    });
    for (const [ms, rows] of [
      [0, 0],
      [1000, 100],
      [4999, 400],
      [5000, 500],
      [9000, 900],
      [9500, 1000],
      [12_000, 1000],
    ]) {
      display.update(at(ms, rows));
    }
    expect(lines).to.deep.equal([
      'knn: 0.0% (0/1000 rows), 0.00 pairs/s, ETA ?',
      'knn: 50.0% (500/1000 rows), 10.0 kpairs/s, ETA 5s',
      'knn: 100.0% (1000/1000 rows), 10.5 kpairs/s, ETA 0s',
    ]);
    expect([formatDuration(75), formatDuration(3 * 3600 + 120), formatDuration(undefined)]).to.deep.equal([
      '1m15s',
      '3h02m',
      '?',
    ]);
  });
});

const CLI = join(__dirname, '..', 'lib', 'cli.ts');

/** The command as a child process (ts-node, as a user's `npx keops-node` would run the built file). */
function spawnCli(args: readonly string[]): ChildProcess & {
  output: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
} {
  const child = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', CLI, ...args], {
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const output = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>(
    (resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return Object.assign(child, { output });
}

/** Rows the checkpoint at `path` says are done, or -1 while there is none. */
function checkpointRows(path: string): number {
  try {
    return (JSON.parse(readFileSync(path, 'utf8')) as { rowsDone: number }).rowsDone;
  } catch {
    return -1;
  }
}

/** Resolves once the checkpoint shows at least one finished block (polling), or rejects if the child ends first. */
async function firstBlockDone(child: ReturnType<typeof spawnCli>, checkpoint: string): Promise<number> {
  let ended = false;
  void child.output.then(() => (ended = true));
  for (;;) {
    const rows = checkpointRows(checkpoint);
    if (rows > 0) return rows;
    if (ended) throw new Error(`the job ended before its first checkpoint: ${(await child.output).stderr}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('keops-node knn', function () {
  this.timeout(60_000);
  const scratch = scratchFolder('cli-knn');
  const dir = scratch.dir;
  const DIM = 16;
  const baseData = integerPoints(3, 10_000, DIM);
  const queryData = integerPoints(4, 2000, DIM);
  const basePath = join(dir, 'base.fbin');
  const queryPath = join(dir, 'queries.fbin');
  const reference = { ids: join(dir, 'reference.ibin'), distances: join(dir, 'reference.fbin') };
  const jobArgs = (ids: string, distances: string, ...extra: string[]) => [
    'knn',
    '--base',
    basePath,
    '--queries',
    queryPath,
    '-k',
    '10',
    '--out',
    ids,
    '--distances',
    distances,
    ...extra,
  ];
  const sameBytes = (a: string, b: string) => readFileSync(a).equals(readFileSync(b));

  before(async () => {
    writeFbin(basePath, baseData, DIM);
    writeFbin(queryPath, queryData, DIM);
    // The uninterrupted run that the others compare with (it also compiles the kernel, once).
    const r = await cli(...jobArgs(reference.ids, reference.distances));
    expect(r.code, r.err).to.equal(0);
  });
  after(() => scratch.remove());

  it('prints its help (exit 0) and refuses bad arguments with the usage (exit 2)', async () => {
    const help = await cli('knn', '--help');
    expect(help.code).to.equal(0);
    expect(help.out).to.contain('--base <file>').and.to.contain('--resume').and.to.contain('Exit codes');
    expect((await cli('help', 'knn')).out).to.contain('usage: keops-node knn');
    // A complete command line, each case below breaking it one way.
    const valid = ['knn', '--base', basePath, '--queries', queryPath, '-k', '3', '--out', 'x.ibin'];
    for (const argv of [
      ['knn'],
      ['knn', '--base', basePath, '-k', '3'],
      ['knn', '--base', basePath, '--queries', queryPath, '-k', '0', '--out', 'x.ibin'],
      [...valid, '--memory', '4 parsecs'],
      [...valid, '--metric', 'hamming'],
      [...valid, '--device', '0,zero'],
      [...valid, 'extra'],
      ['knn', '--base', basePath, '-k', '3', '--out', 'x.ibin'],
      ['knn', '--bogus'],
    ]) {
      const r = await cli(...argv);
      expect(r.code, argv.join(' ')).to.equal(2);
      expect(r.err, argv.join(' ')).to.contain('usage: keops-node knn');
      expect(r.out).to.equal('');
    }
    expect((await cli('knn', '--base', basePath, '-k', '3', '--out', 'x.ibin')).err).to.contain(
      '--queries is required, unless --exclude-self',
    );
  });

  it('writes the brute-force result, with progress lines on stderr and a summary on stdout', async () => {
    const ids = join(dir, 'small.ibin');
    const distances = join(dir, 'small.fbin');
    // -k 4 after the common arguments (commander keeps an option's last value).
    const small = ['-k', '4', '--memory', '4MiB', '--block-rows', '1000', '--threads', '1'];
    const r = await cli(...jobArgs(ids, distances, ...small, '--progress-interval', '0'));
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.match(/^knn: 2000 queries x 10000 base rows, k = 4, metric l2\n/);
    expect(r.out)
      .to.match(/pairs\/s/)
      .and.to.contain(`wrote ${ids}`)
      .and.to.contain(`wrote ${distances}`);
    expect(r.err)
      .to.match(/^knn: 0\.0% \(0\/2000 rows\)/)
      .and.to.contain('knn: 100.0% (2000/2000 rows)');
    const expected = bruteForceKnn(queryData.subarray(0, 200 * DIM), baseData, DIM, 4);
    expect(readBin(ids, 'int32').values.slice(0, 800)).to.deep.equal(expected.ids);
    expect(readBin(distances, 'float32').values.slice(0, 800)).to.deep.equal(expected.distances);
  });

  it('draws a progress bar on a terminal (rows, pairs/s, ETA) instead of progress lines', async () => {
    let drawn = '';
    const terminal = Object.assign(
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          drawn += chunk.toString();
          done();
        },
      }),
      { isTTY: true, columns: 120 },
    );
    let err = '';
    const code = await knnCommand(
      [
        '--base',
        basePath,
        '--queries',
        queryPath,
        '-k',
        '2',
        '--out',
        join(dir, 'bar.ibin'),
        '--block-rows',
        '500',
      ],
      { out: () => undefined, err: (t) => (err += t) },
      { terminal, signals: process },
    );
    expect(code, err).to.equal(0);
    expect(err).to.equal('');
    expect(drawn).to.match(/knn \[[=-]+\] \d+% \| \d+\/2000 rows \| [\d.]+ [kMG]?pairs\/s \| ETA /);
    expect(drawn).to.contain('2000/2000 rows');
  });

  it('reports a missing input file as ERR_FILE_IO with exit 1', async () => {
    const r = await cli(
      'knn',
      '--base',
      join(dir, 'missing.fbin'),
      '--queries',
      queryPath,
      '-k',
      '3',
      '--out',
      join(dir, 'm.ibin'),
    );
    expect(r.code).to.equal(1);
    expect(r.err).to.match(/^keops-node knn: ERR_FILE_IO: .*missing\.fbin/);
  });

  it('fails with exit 1 when an input is truncated mid-job, saying that the checkpoint is kept; resume refused', async () => {
    const changing = join(dir, 'changing.fbin');
    copyFileSync(basePath, changing);
    const ids = join(dir, 'truncated.ibin');
    const args = ['--base', changing, '--queries', queryPath, '-k', '3', '--out', ids, '--block-rows', '10'];
    const poll = setInterval(() => {
      if (checkpointRows(ids + CHECKPOINT_SUFFIX) > 0) {
        clearInterval(poll);
        truncateSync(changing, 8 + 4 * DIM * 5000);
      }
    }, 2);
    let err = '';
    const code = await knnCommand(args, { out: () => undefined, err: (t) => (err += `${t}\n`) });
    clearInterval(poll);
    expect(code, err).to.equal(1);
    // The chunked executor reports a failing read as ERR_SOURCE, with the reader's message (file, byte offset).
    expect(err).to.match(
      /^keops-node knn: ERR_SOURCE: .*changing\.fbin: at byte \d+: the file is truncated/m,
    );
    expect(err).to.match(/\d+ query rows are checkpointed: once the cause is fixed, add --resume/);
    expect(existsSync(ids)).to.equal(false);
    // Rewritten whole but with other rows, the input is another file: resuming is refused rather than mixing
    // two results.
    const other = baseData.slice();
    other[other.length - 1] += 1;
    writeFbin(changing, other, DIM);
    const resumed = await cli('knn', ...args, '--resume');
    expect(resumed.code).to.equal(1);
    expect(resumed.err).to.contain('ERR_CHECKPOINT').and.to.contain('base.');
  });

  it('killed with SIGKILL after a checkpoint, leaves no output; --resume then writes the same bytes', async () => {
    const ids = join(dir, 'killed.ibin');
    const distances = join(dir, 'killed.fbin');
    const args = jobArgs(ids, distances, '--block-rows', '10', '--progress-interval', '0.2');
    const child = spawnCli(args);
    const rows = await firstBlockDone(child, ids + CHECKPOINT_SUFFIX);
    child.kill('SIGKILL');
    const killed = await child.output;
    expect(killed.signal).to.equal('SIGKILL');
    const after = checkpointRows(ids + CHECKPOINT_SUFFIX);
    expect(after).to.be.at.least(rows).and.below(2000);
    expect(existsSync(ids)).to.equal(false);
    expect(existsSync(distances)).to.equal(false);

    const refused = await cli(...args);
    expect(refused.code).to.equal(1);
    expect(refused.err).to.contain('ERR_CHECKPOINT').and.to.contain('--resume');

    // Resumed (from what is on disk only) with larger blocks: the checkpoint counts rows, results do not
    // depend on blocks.
    const resumed = await cli(...args, '--block-rows', '500', '--resume');
    expect(resumed.code, resumed.err).to.equal(0);
    expect(resumed.out).to.contain(`resumed at row ${after}`);
    expect(sameBytes(ids, reference.ids)).to.equal(true);
    expect(sameBytes(distances, reference.distances)).to.equal(true);
    expect(existsSync(ids + CHECKPOINT_SUFFIX)).to.equal(false);
  });

  it('stopped by SIGINT, exits 130 keeping the checkpoint; --resume finishes with the same bytes', async () => {
    const ids = join(dir, 'interrupted.ibin');
    const distances = join(dir, 'interrupted.fbin');
    const args = jobArgs(ids, distances, '--block-rows', '10').slice(1);
    // The process's signals, as the command sees them: SIGINT is sent once the first block is checkpointed.
    const signals = new EventEmitter();
    const checkpoint = ids + CHECKPOINT_SUFFIX;
    const poll = setInterval(() => {
      if (checkpointRows(checkpoint) > 0) {
        clearInterval(poll);
        signals.emit('SIGINT');
      }
    }, 2);
    let err = '';
    const code = await knnCommand(args, { out: () => undefined, err: (t) => (err += `${t}\n`) }, { signals });
    clearInterval(poll);
    expect(code, err).to.equal(130);
    expect(err)
      .to.match(/interrupted after \d+ of 2000 query rows/)
      .and.to.contain('--resume');
    expect(signals.listenerCount('SIGINT')).to.equal(0);
    expect(existsSync(ids)).to.equal(false);
    expect(checkpointRows(checkpoint)).to.be.above(0).and.below(2000);
    const r = await cli('knn', ...args, '--block-rows', '500', '--resume');
    expect(r.code, r.err).to.equal(0);
    expect(sameBytes(ids, reference.ids)).to.equal(true);
    expect(sameBytes(distances, reference.distances)).to.equal(true);
  });
});

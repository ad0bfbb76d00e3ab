/**
 * `keops-node plan` / `shard` / `merge` on real files, as a scheduler without Redis would run them: the merged
 * ids and distances files are byte-identical to knn()'s result written to the same formats; a corrupt or
 * missing shard result fails the merge (exit 1, ERR_SHARD naming shard and file) and leaves no output.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { runCli } from '../lib/cli';
import { openVectorFile } from '../lib/io/vector-file';
import { readPlan } from '../lib/distributed/plan';
import { rng } from './util';
import { expectKnnFiles, knnOfFiles, writeVectors } from './distributed-util';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

describe('keops-node plan / shard / merge (files, no queue)', function () {
  this.timeout(120000);
  let dir: string;
  const D = 12;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keops-dist-cli-'));
    const r = rng(21);
    // uint8 values in a small range: many equal distances, so ties must break by id across shard cuts.
    await writeVectors(
      join(dir, 'base.u8bin'),
      Uint8Array.from({ length: 301 * D }, () => Math.floor(r() * 4)),
      D,
      'uint8',
    );
    await writeVectors(
      join(dir, 'queries.u8bin'),
      Uint8Array.from({ length: 47 * D }, () => Math.floor(r() * 4)),
      D,
      'uint8',
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('plans, runs every shard, merges: byte-identical to knn() written to the same formats', async () => {
    const plan = join(dir, 'job.json');
    const made = await cli(
      'plan',
      plan,
      '--queries',
      join(dir, 'queries.u8bin'),
      '--base',
      join(dir, 'base.u8bin'),
      '-k',
      '7',
      '--ids',
      join(dir, 'ids.ibin'),
      '--distances',
      join(dir, 'distances.fbin'),
      '--query-slices',
      '3',
      '--base-slices',
      '4',
      '--chunk-rows',
      '29',
    );
    expect(made.code, made.err).to.equal(0);
    expect(made.out).to.match(/12 shards \(3 query slices x 4 base slices\)/);
    // Shards in a scrambled order, one of them twice (at-least-once delivery).
    for (const index of [5, 0, 11, 3, 3, 7, 1, 2, 4, 6, 8, 9, 10]) {
      const r = await cli('shard', '--plan', plan, '--index', String(index), '--device', 'cpu');
      expect(r.code, r.err).to.equal(0);
    }
    const merged = await cli('merge', '--plan', plan);
    expect(merged.code, merged.err).to.equal(0);
    expect(merged.out).to.contain('merged 12 shards (47 rows)');

    const expected = await knnOfFiles(join(dir, 'queries.u8bin'), join(dir, 'base.u8bin'), { k: 7 });
    await expectKnnFiles(expected, join(dir, 'ids.ibin'), join(dir, 'distances.fbin'));
    // No temporary files left behind in the shard folder.
    const shards = readdirSync((await readPlan(plan)).shardDir);
    expect(shards.filter((f) => !/^shard-\d{6}\.kps$/.test(f))).to.deep.equal([]);
    expect(shards).to.have.length(12);
  });

  it('a corrupt or missing shard result: merge exits 1 with ERR_SHARD naming shard and file, writes nothing', async () => {
    const plan = join(dir, 'job2.json');
    const made = await cli(
      'plan',
      plan,
      '--base',
      join(dir, 'base.u8bin'),
      '--exclude-self',
      '-k',
      '3',
      '--ids',
      join(dir, 'graph.ibin'),
      '--shards',
      '2',
    );
    expect(made.code, made.err).to.equal(0);
    for (const index of [0, 1])
      expect((await cli('shard', '--plan', plan, '--index', String(index))).code).to.equal(0);
    const shardFile = join((await readPlan(plan)).shardDir, 'shard-000001.kps');
    const bytes = readFileSync(shardFile);
    const damaged = Buffer.from(bytes);
    damaged[200] ^= 0xff;
    writeFileSync(shardFile, damaged);
    const corrupt = await cli('merge', '--plan', plan);
    expect(corrupt.code).to.equal(1);
    expect(corrupt.err).to.match(
      /^keops-node merge: ERR_SHARD: shard 1 \(query rows \[150, 301\), base rows \[0, 301\)\)/,
    );
    expect(corrupt.err).to.contain(shardFile);
    expect(existsSync(join(dir, 'graph.ibin'))).to.equal(false);

    rmSync(shardFile);
    const missing = await cli('merge', '--plan', plan);
    expect(missing.code).to.equal(1);
    expect(missing.err).to.match(/ERR_SHARD: 1 of 2 shard results are missing/);
    expect(existsSync(join(dir, 'graph.ibin'))).to.equal(false);

    // A rerun of the shard repairs the job.
    expect((await cli('shard', '--plan', plan, '--index', '1')).code).to.equal(0);
    expect((await cli('merge', '--plan', plan)).code).to.equal(0);
    const graph = await knnOfFiles(join(dir, 'base.u8bin'), join(dir, 'base.u8bin'), {
      k: 3,
      excludeSelf: true,
    });
    await expectKnnFiles(graph, join(dir, 'graph.ibin'));
  });

  it('a reduction plan from the command line: Sum with a parameter, values file', async () => {
    const r = rng(22);
    const x = Float64Array.from({ length: 40 * 3 }, () => r());
    const y = Float64Array.from({ length: 90 * 3 }, () => r());
    await writeVectors(join(dir, 'x.npy'), x, 3, 'float64');
    await writeVectors(join(dir, 'y.npy'), y, 3, 'float64');
    const plan = join(dir, 'sum.json');
    const made = await cli(
      'plan',
      plan,
      '--formula',
      'Exp(-g*SqDist(x,y))',
      '-a',
      'x = Vi(3), y = Vj(3)',
      '-a',
      'g = Pm(1)',
      '--param',
      'g=2.5',
      '--input',
      `x=${join(dir, 'x.npy')}`,
      '--input',
      `y=${join(dir, 'y.npy')}`,
      '--values',
      join(dir, 'sums.npy'),
      '--dtype',
      'float64',
      '--query-slices',
      '2',
      '--base-slices',
      '3',
    );
    expect(made.code, made.err).to.equal(0);
    for (let i = 0; i < 6; i++)
      expect((await cli('shard', '--plan', plan, '--index', String(i))).code).to.equal(0);
    expect((await cli('merge', '--plan', plan)).code).to.equal(0);
    const file = await openVectorFile(join(dir, 'sums.npy'));
    const sums = (await file.read(0, 40)) as Float64Array;
    await file.close();
    for (let i = 0; i < 40; i++) {
      let s = 0;
      for (let j = 0; j < 90; j++) {
        let d2 = 0;
        for (let c = 0; c < 3; c++) d2 += (x[3 * i + c] - y[3 * j + c]) ** 2;
        s += Math.exp(-2.5 * d2);
      }
      expect(Math.abs(sums[i] - s)).to.be.below(1e-12 * s);
    }
  });

  it('--help exits 0; bad arguments exit 2 with the usage; failures exit 1 with the code', async () => {
    for (const name of ['plan', 'shard', 'merge', 'worker', 'submit']) {
      const help = await cli(name, '--help');
      expect(help.code, name).to.equal(0);
      expect(help.out, name).to.contain(`keops-node ${name}`);
      expect(help.out, name).to.contain('Exit codes');
    }
    const bad = [
      ['shard', '--plan', 'x.json'],
      ['shard', '--plan', 'x.json', '--index', '-1'],
      ['merge'],
      ['plan'],
      ['plan', join(dir, 'p.json'), '--base', join(dir, 'base.u8bin')],
      ['worker'],
      ['worker', '--redis', 'redis://127.0.0.1:1', '--concurrency', '0'],
      ['submit', '--plan', 'x.json'],
    ];
    for (const argv of bad) {
      const r = await cli(...argv);
      expect(r.code, argv.join(' ')).to.equal(2);
      expect(r.err, argv.join(' ')).to.contain('usage');
    }
    const absent = await cli('merge', '--plan', join(dir, 'absent.json'));
    expect(absent.code).to.equal(1);
    expect(absent.err).to.match(/^keops-node merge: ERR_FILE_IO: /);
    const outOfRange = await cli('shard', '--plan', join(dir, 'job.json'), '--index', '12');
    expect(outOfRange.code).to.equal(1);
    expect(outOfRange.err).to.contain('ERR_INVALID_ARGUMENT');
  });
});

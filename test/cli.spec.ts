/** The `keops-node` command (issue 9, item 7d): help, version, argument checking, and `info`'s wrapped reason. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'chai';
import { runCli } from '../lib/cli';
import { packageVersion } from '../lib/backend/package-root';
import { wrapReason } from '../lib/runtime-summary';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

describe('keops-node command', function () {
  this.timeout(60_000);

  it('--help and -h print the usage to stdout and exit 0; a command with --help prints its own', async () => {
    for (const flag of ['--help', '-h', 'help']) {
      const r = await cli(flag);
      expect(r.code, flag).to.equal(0);
      expect(r.err).to.equal('');
      expect(r.out).to.match(/^usage: keops-node/);
      expect(r.out).to.contain('keops-node info').and.to.contain('keops-node cache clear');
    }
    const sub = await cli('cache', '--help');
    expect(sub.code).to.equal(0);
    expect(sub.out).to.contain('usage: keops-node cache clear');
    expect((await cli('help', 'info')).out).to.contain('usage: keops-node info');
  });

  it('--version prints the package version', async () => {
    const r = await cli('--version');
    expect(r).to.deep.equal({ code: 0, out: `${packageVersion()}\n`, err: '' });
  });

  it('refuses unknown commands, unknown options and extra arguments with exit 2 and the usage on stderr', async () => {
    for (const argv of [
      ['info', 'extra'],
      ['cache'],
      ['cache', 'clear', 'now'],
      ['cache', 'purge'],
      ['frobnicate'],
      ['--verbose'],
      ['--version', 'x'],
      ['--help', 'x'],
      ['toString'],
      [],
    ]) {
      const r = await cli(...argv);
      expect(r.code, argv.join(' ')).to.equal(2);
      expect(r.out, argv.join(' ')).to.equal('');
      expect(r.err, argv.join(' ')).to.contain('usage');
    }
    expect((await cli('info', 'extra')).err).to.contain("unexpected argument 'extra'");
  });

  it('runs as a process with those exit codes', () => {
    const run = (...args: string[]) =>
      spawnSync(
        process.execPath,
        ['-r', 'ts-node/register/transpile-only', join(__dirname, '..', 'lib', 'cli.ts'), ...args],
        {
          encoding: 'utf8',
          env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
        },
      );
    const help = run('--help');
    expect(help.status).to.equal(0);
    expect(help.stdout).to.match(/^usage: keops-node/);
    const extra = run('info', 'now');
    expect(extra.status).to.equal(2);
    expect(extra.stderr).to.contain("unexpected argument 'now'");
  });

  it('ends quietly with status 141 when its reader closes the pipe (`keops-node knn --help | true`)', () => {
    const cliPath = join(__dirname, '..', 'lib', 'cli.ts');
    const piped = spawnSync(
      'bash',
      [
        '-c',
        `"$0" -r ts-node/register/transpile-only "$1" knn --help | true; echo "status \${PIPESTATUS[0]}"`,
        process.execPath,
        cliPath,
      ],
      { encoding: 'utf8', env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' } },
    );
    expect(piped.stdout.trim()).to.equal('status 141');
    expect(piped.stderr).to.equal('');
  });

  it('info wraps a long CUDA reason into indented lines, one per clause', () => {
    const reason =
      'no CUDA driver (cannot load libcuda.so.1: no such file; really); ' +
      `no NVRTC (${'cannot open shared object file; '.repeat(8)}done); install NVRTC`;
    const lines = wrapReason(reason, '    ');
    expect(lines[0]).to.equal('    no CUDA driver (cannot load libcuda.so.1: no such file; really);');
    expect(lines.every((l) => l.length <= 100 && l.startsWith('    '))).to.equal(true);
    expect(lines[lines.length - 1]).to.equal('    install NVRTC');
    expect(lines.map((l) => l.trim()).join(' ')).to.equal(reason);
  });
});

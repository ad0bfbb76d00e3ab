/**
 * The kernel cache: memory and disk hits, corrupt entries rebuilt, processes compiling the same key at once,
 * failed compilations leaving nothing behind, and the compiler-not-found error. Uses hand-written kernels (no
 * code generator) and a fresh KEOPS_CACHE_DIR per run.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import {
  acquireCpuKernel,
  acquireCpuKernelSync,
  cacheFolder,
  cacheInfo,
  clearCache,
  type CpuKernelSpec,
  isIntactEntry,
} from '../lib/backend/cache';
import { kernelCompilerFlags, LARGE_SOURCE_CHARS } from '../lib/backend/cpu/compile';
import { KeOpsError } from '../lib/errors';
import { Genred } from '../lib/genred';
import { describeRuntime } from '../lib/runtime-summary';
import { rejection, thrown, withEnvAsync } from './util';

const execFileAsync = promisify(execFile);
const repoRoot = resolve(__dirname, '..');

/** A valid kernel (out[i] = x[i] + tag) whose source differs per `tag`, so each test gets its own key. */
function kernelSpec(tag: string): CpuKernelSpec {
  const source = `
#include "keops_abi.h"
// ${tag}
extern "C" int keops_cpu_abi_version(void) { return KEOPS_CPU_ABI_VERSION; }
extern "C" int keops_cpu_run(const keops_cpu_task* task) {
  const double* x = static_cast<const double*>(task->args[0]);
  double* out = static_cast<double*>(task->out_val);
  for (int64_t i = task->row_begin; i < task->row_end; ++i) out[i] = x[i] + ${tag.length};
  return 0;
}
`;
  return { source, compilerFlags: [], description: `cache test ${tag}` };
}

/** Runs `acquireCpuKernel(kernelSpec(tag))` in a fresh node process; resolves to its origin and entry path. */
async function acquireInChild(tag: string, cacheDir: string): Promise<{ origin: string; path: string }> {
  const script = `
    const { acquireCpuKernel } = require('./lib/backend/cache');
    const spec = (${kernelSpec.toString()})(${JSON.stringify(tag)});
    acquireCpuKernel(spec).then(
      (k) => console.log(JSON.stringify({ origin: k.origin, path: k.path })),
      (e) => { console.error(e); process.exit(1); });
  `;
  const { stdout } = await execFileAsync(
    process.execPath,
    ['-r', 'ts-node/register/transpile-only', '-e', script],
    {
      cwd: repoRoot,
      env: { ...process.env, KEOPS_CACHE_DIR: cacheDir },
    },
  );
  return JSON.parse(stdout.trim().split('\n').pop() as string) as { origin: string; path: string };
}

function entries(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith('.so') && !n.startsWith('.'));
}

/** An entry's key: its file name without the extension. */
const keyOf = (path: string): string => basename(path).replace(/\.[a-z]+$/, '');

/** An executable shell script standing in for the compiler (answers --version like one). */
function fakeCompiler(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\nif [ "$1" = --version ]; then echo ${name} 1.0; exit 0; fi\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** Whether process `pid` exists and is not a zombie (a container's init may never reap it). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The absolute path of `command` on PATH. */
function execFileSyncPath(command: string): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      statSync(join(dir, command));
      return join(dir, command);
    } catch {
      // not here
    }
  }
  throw new Error(`${command} is not on PATH`);
}

function temporaries(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.startsWith('.tmp-'));
}

describe('kernel cache', function () {
  const previousCacheDir = process.env.KEOPS_CACHE_DIR;
  let cacheDir: string;

  before(function () {
    cacheDir = mkdtempSync(join(tmpdir(), 'keops-cache-test-'));
    process.env.KEOPS_CACHE_DIR = cacheDir;
  });

  after(function () {
    if (previousCacheDir === undefined) delete process.env.KEOPS_CACHE_DIR;
    else process.env.KEOPS_CACHE_DIR = previousCacheDir;
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('uses KEOPS_CACHE_DIR, else a versioned folder under XDG_CACHE_HOME', function () {
    expect(cacheFolder()).to.equal(cacheDir);
    const saved = { dir: process.env.KEOPS_CACHE_DIR, xdg: process.env.XDG_CACHE_HOME };
    try {
      delete process.env.KEOPS_CACHE_DIR;
      process.env.XDG_CACHE_HOME = '/some/cache';
      expect(cacheFolder()).to.match(/^\/some\/cache\/keops-node\/\d+\.\d+\.\d+/);
    } finally {
      process.env.KEOPS_CACHE_DIR = saved.dir;
      if (saved.xdg === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved.xdg;
    }
  });

  it('compiles once, then hits memory in this process and disk in another', async function () {
    const first = await acquireCpuKernel(kernelSpec('hit'));
    expect(first.origin).to.equal('compiled');
    expect(isIntactEntry(readFileSync(first.path), keyOf(first.path))).to.equal(true);
    const again = await acquireCpuKernel(kernelSpec('hit'));
    expect(again.origin).to.equal('memory');
    expect(again.kernel).to.equal(first.kernel);
    expect(acquireCpuKernelSync(kernelSpec('hit')).origin).to.equal('memory');
    const child = await acquireInChild('hit', cacheDir);
    expect(child).to.deep.equal({ origin: 'disk', path: first.path });
  });

  it('compiles a key once however many callers wait for it', async function () {
    const results = await Promise.all([1, 2, 3, 4].map(() => acquireCpuKernel(kernelSpec('together'))));
    // Every caller got the one result of the one compilation.
    expect(new Set(results).size).to.equal(1);
    expect(results[0].origin).to.equal('compiled');
  });

  it('a second Genred with the same formula reuses the loaded kernel', async function () {
    this.timeout(120_000);
    const args = [Float64Array.of(1, 2), Float64Array.of(3, 4, 5)];
    const g1 = new Genred('x*y', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1 });
    const g2 = new Genred('x*y', ['x = Vi(1)', 'y = Vj(1)'], { axis: 1 });
    expect(Array.from((await g1.call(args)) as Float64Array)).to.deep.equal([12, 24]);
    expect(g1.kernelInfo('float64')?.origin).to.equal('compiled');
    expect(Array.from((await g2.call(args)) as Float64Array)).to.deep.equal([12, 24]);
    expect(g2.kernelInfo('float64')?.origin).to.equal('memory');
  });

  it('rebuilds a truncated or damaged entry', async function () {
    // Built and checked in other processes: this one must not have the library mapped while it is damaged.
    const { path } = await acquireInChild('corrupt', cacheDir);
    truncateSync(path, Math.floor(statSync(path).size / 2));
    expect(isIntactEntry(readFileSync(path), keyOf(path))).to.equal(false);
    expect(await acquireInChild('corrupt', cacheDir)).to.deep.equal({ origin: 'compiled', path });
    expect(isIntactEntry(readFileSync(path), keyOf(path))).to.equal(true);

    const bytes = readFileSync(path);
    bytes[100] ^= 0xff; // same length, one byte flipped: only the hash can tell
    writeFileSync(path, bytes);
    expect(isIntactEntry(readFileSync(path), keyOf(path))).to.equal(false);
    expect((await acquireInChild('corrupt', cacheDir)).origin).to.equal('compiled');
    expect(isIntactEntry(readFileSync(path), keyOf(path))).to.equal(true);
    expect((await acquireInChild('corrupt', cacheDir)).origin).to.equal('disk');
  });

  it("rebuilds an intact entry of another key renamed under this key's name", async function () {
    const mine = await acquireInChild('renamed-mine', cacheDir);
    const other = await acquireInChild('renamed-other', cacheDir);
    copyFileSync(other.path, mine.path); // intact, but another kernel's code
    expect(isIntactEntry(readFileSync(mine.path), keyOf(other.path))).to.equal(true);
    expect(isIntactEntry(readFileSync(mine.path), keyOf(mine.path))).to.equal(false);
    expect(await acquireInChild('renamed-mine', cacheDir)).to.deep.equal({
      origin: 'compiled',
      path: mine.path,
    });
    expect(isIntactEntry(readFileSync(mine.path), keyOf(mine.path))).to.equal(true);
  });

  it('lets two processes compile the same key at the same time', async function () {
    const [a, b] = await Promise.all([acquireInChild('race', cacheDir), acquireInChild('race', cacheDir)]);
    expect(a.path).to.equal(b.path);
    expect(isIntactEntry(readFileSync(a.path), keyOf(a.path))).to.equal(true);
    expect(temporaries(cacheDir)).to.deep.equal([]);
    expect((await acquireCpuKernel(kernelSpec('race'))).origin).to.equal('disk');
  });

  it('leaves no entry behind when compilation fails, and reports the compiler log', async function () {
    const before = entries(cacheDir);
    const broken: CpuKernelSpec = { source: 'this is not C++;', compilerFlags: [], description: 'broken' };
    let error: unknown;
    await acquireCpuKernel(broken).catch((e: unknown) => (error = e));
    expect(error).to.be.instanceOf(KeOpsError);
    expect((error as KeOpsError).code).to.equal('ERR_COMPILE');
    expect((error as KeOpsError).message).to.match(/error/i);
    expect(() => acquireCpuKernelSync(broken))
      .to.throw(KeOpsError)
      .with.property('code', 'ERR_COMPILE');
    expect(entries(cacheDir)).to.deep.equal(before);
    expect(temporaries(cacheDir)).to.deep.equal([]);
  });

  it('leaves no entry behind when the compiler writes output but fails', async function () {
    const before = entries(cacheDir);
    const fake = join(cacheDir, 'fake-cxx.sh');
    // Answers --version, then writes a partial output file and fails, like a compiler killed midway.
    writeFileSync(
      fake,
      '#!/bin/sh\nif [ "$1" = --version ]; then echo fake 1.0; exit 0; fi\n' +
        'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo partial > "$2"; fi; shift; done\necho "fake: boom" >&2; exit 1\n',
    );
    chmodSync(fake, 0o755);
    const saved = process.env.CXX;
    process.env.CXX = fake;
    try {
      let error: unknown;
      await acquireCpuKernel(kernelSpec('fake')).catch((e: unknown) => (error = e));
      expect((error as KeOpsError).code).to.equal('ERR_COMPILE');
      expect((error as KeOpsError).message).to.contain('fake: boom');
    } finally {
      if (saved === undefined) delete process.env.CXX;
      else process.env.CXX = saved;
    }
    expect(entries(cacheDir)).to.deep.equal(before);
    expect(temporaries(cacheDir)).to.deep.equal([]);
  });

  it('is ERR_COMPILE when the compiler reports success but writes nothing', async function () {
    const silent = fakeCompiler(cacheDir, 'silent-cxx', 'exit 0');
    await withEnvAsync({ CXX: silent }, async () => {
      const e = await rejection(acquireCpuKernel(kernelSpec('silent')));
      expect(e.code).to.equal('ERR_COMPILE');
      expect(e.message).to.contain('wrote no shared object');
      expect(thrown(() => acquireCpuKernelSync(kernelSpec('silent'))).code).to.equal('ERR_COMPILE');
    });
    expect(temporaries(cacheDir)).to.deep.equal([]);
  });

  it('is ERR_CACHE when the entry path is a folder or the cache folder a file', async function () {
    const { path } = await acquireInChild('eisdir', cacheDir);
    const other = mkdtempSync(join(tmpdir(), 'keops-cache-eisdir-'));
    try {
      mkdirSync(join(other, basename(path)));
      await withEnvAsync({ KEOPS_CACHE_DIR: other }, async () => {
        expect((await rejection(acquireCpuKernel(kernelSpec('eisdir')))).code).to.equal('ERR_CACHE');
        expect(thrown(() => acquireCpuKernelSync(kernelSpec('eisdir'))).code).to.equal('ERR_CACHE');
      });
      const file = join(other, 'plain-file');
      writeFileSync(file, 'not a folder');
      await withEnvAsync({ KEOPS_CACHE_DIR: file }, async () => {
        expect((await rejection(acquireCpuKernel(kernelSpec('enotdir')))).code).to.equal('ERR_CACHE');
      });
      if (process.getuid?.() !== 0) {
        // Permissions do not stop root: checked only as another user.
        const locked = join(other, 'locked');
        mkdirSync(locked, { mode: 0o500 });
        await withEnvAsync({ KEOPS_CACHE_DIR: locked }, async () => {
          expect((await rejection(acquireCpuKernel(kernelSpec('eacces')))).code).to.equal('ERR_CACHE');
        });
      }
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('kills a compiler that outlives KEOPS_COMPILE_TIMEOUT, with what it started', async function () {
    this.timeout(60_000);
    const pidFile = join(cacheDir, 'slow-child.pid');
    // The "compiler" starts a long child (like cc1plus) and waits for it.
    const slow = fakeCompiler(cacheDir, 'slow-cxx', `sleep 120 & echo $! > ${pidFile}; wait`);
    await withEnvAsync({ CXX: slow, KEOPS_COMPILE_TIMEOUT: '1' }, async () => {
      const e = await rejection(acquireCpuKernel(kernelSpec('slow')));
      expect(e.code).to.equal('ERR_COMPILE_TIMEOUT');
      expect(e.message).to.contain('KEOPS_COMPILE_TIMEOUT');
      const child = Number(readFileSync(pidFile, 'utf8'));
      await new Promise((r) => setTimeout(r, 200)); // the kill is delivered
      expect(running(child), 'the compiler child survived').to.equal(false);
      expect(thrown(() => acquireCpuKernelSync(kernelSpec('slow'))).code).to.equal('ERR_COMPILE_TIMEOUT');
    });
    await withEnvAsync({ KEOPS_COMPILE_TIMEOUT: 'soon' }, async () => {
      expect((await rejection(acquireCpuKernel(kernelSpec('slow')))).code).to.equal('ERR_INVALID_ARGUMENT');
    });
    expect(temporaries(cacheDir)).to.deep.equal([]);
  });

  it('reports and removes temporary files whose owner process is gone', async function () {
    const hostTag = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
    const dead = await new Promise<number>((done) => {
      const child = execFile(process.execPath, ['-e', '0'], () => done(child.pid as number));
    });
    const stale = `.tmp-0123456789abcdef-${hostTag}-${dead}-0123456789ab.so`;
    const live = `.tmp-0123456789abcdef-${hostTag}-${process.pid}-0123456789ab.so`;
    writeFileSync(join(cacheDir, stale), 'left by a killed compiler');
    writeFileSync(join(cacheDir, live), 'a compile in progress');
    expect(cacheInfo().staleTemporaries).to.equal(1);
    expect(await describeRuntime()).to.contain('1 stale temporary file');
    await acquireCpuKernel(kernelSpec('stale-cleanup'));
    expect(temporaries(cacheDir)).to.deep.equal([live]);
    rmSync(join(cacheDir, live));
  });

  it('takes CXX as a path with spaces, appends CXXFLAGS, and compiles huge sources at -O1', async function () {
    const folder = join(cacheDir, 'my tools');
    mkdirSync(folder);
    const real = execFileSyncPath('g++');
    const cxx = fakeCompiler(folder, 'g++ wrapper', `exec ${real} "$@"`);
    const spec: CpuKernelSpec = {
      ...kernelSpec('cxxflags'),
      source: `#ifndef KEOPS_TEST_FLAG\n#error CXXFLAGS ignored\n#endif\n${kernelSpec('cxxflags').source}`,
    };
    await withEnvAsync({ CXX: cxx, CXXFLAGS: '-DKEOPS_TEST_FLAG=1  -g0' }, async () => {
      expect((await acquireCpuKernel(spec)).origin).to.equal('compiled');
    });
    const levels = (chars: number) =>
      kernelCompilerFlags(chars, ['-O3', '-ffast-math']).filter((f) => f.startsWith('-O'));
    expect(levels(LARGE_SOURCE_CHARS + 1)).to.deep.equal(['-O1']);
    expect(levels(1000)).to.deep.equal(['-O3']);
    await withEnvAsync({ CXXFLAGS: '-O2' }, () => {
      expect(levels(LARGE_SOURCE_CHARS + 1)).to.deep.equal(['-O1', '-O2']); // the user's comes last and wins
    });
  });

  it('explains how to install a compiler when none is found', async function () {
    const saved = process.env.CXX;
    process.env.CXX = '/nonexistent/bin/c++';
    try {
      let error: unknown;
      await acquireCpuKernel(kernelSpec('nocompiler')).catch((e: unknown) => (error = e));
      expect((error as KeOpsError).code).to.equal('ERR_NO_COMPILER');
      expect((error as KeOpsError).message).to.contain('apt-get install g++');
      expect(() => acquireCpuKernelSync(kernelSpec('nocompiler')))
        .to.throw(KeOpsError)
        .with.property('code', 'ERR_NO_COMPILER');
    } finally {
      if (saved === undefined) delete process.env.CXX;
      else process.env.CXX = saved;
    }
  });

  it('reports and clears the disk cache', function () {
    const info = cacheInfo();
    expect(info.folder).to.equal(cacheDir);
    expect(info.entries).to.equal(entries(cacheDir).length);
    expect(info.entries).to.be.greaterThan(0);
    expect(info.bytes).to.be.greaterThan(0);
    writeFileSync(join(cacheDir, 'unrelated.txt'), 'kept');
    expect(clearCache().entries).to.equal(info.entries);
    expect(cacheInfo().entries).to.equal(0);
    expect(readdirSync(cacheDir)).to.include('unrelated.txt');
  });
});

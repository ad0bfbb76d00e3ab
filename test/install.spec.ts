/**
 * Installing and running without a C++ compiler. The GPU path needs only the addon (prebuilt) and NVRTC: here
 * `backend: 'cuda'` runs on the emulated GPU (test/fake-cuda) in a child process whose PATH holds nothing but
 * `node` and whose CXX names a missing file, while the CPU backend says ERR_NO_COMPILER with what to install,
 * and `keops-node info` says the same. The emulated GPU builds the "device code" with g++ itself (it stands in
 * for the GPU and its NVRTC): it gets g++ by absolute path, through KEOPS_FAKE_NVRTC_CXX, never keops-node.
 *
 * With KEOPS_PACK_TEST=1 (.ci/run sets it; one to three minutes on 2 cores), the same runs against the packed
 * package: `npm pack` (whose prepack hook makes the prebuild), installed into fresh projects: with
 * --ignore-scripts it loads its addon from prebuilds/; its install script accepts the prebuild without compiling;
 * and where no prebuild fits (here: a musl system, faked with LIBC=musl) the install script builds the addon from
 * source.
 */
import { execFile } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { parseFormula } from '../lib/formula';
import { referenceGenred } from '../lib/reference';
import { fakeCudaEnv } from './fake-cuda';
import { expectBackendResult, randArray, rng } from './util';

const execFileAsync = promisify(execFile);
const ROOT = resolve(__dirname, '..');
const PREBUILD = join('prebuilds', 'linux-x64', 'keops-node.glibc.node');
/** What `npm pack` needs from the checkout: the package's files and what builds them (dist/ and prebuilds/). */
const PACKED_SOURCES = [
  'package.json',
  'package-lock.json',
  'README.md',
  'binding.gyp',
  'CMakeLists.txt',
  'tsconfig.json',
  'tsconfig.build.json',
  'lib',
  'native',
  'cuda-templates',
];

const FORMULA = 'Exp(-SqDist(x,y))*b';
const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(2)'];
const M = 23;
const N = 31;

/** The probe's inputs (float64) and the float64 reference of the Gaussian sum over j. */
function gaussCase(seed: number) {
  const r = rng(seed);
  const [x, y, b] = [randArray(r, 3 * M), randArray(r, 3 * N), randArray(r, 2 * N)];
  const expected = referenceGenred(
    'Sum',
    parseFormula(FORMULA, ALIASES).node,
    [
      { data: x, cat: 0, dim: 3 },
      { data: y, cat: 1, dim: 3 },
      { data: b, cat: 1, dim: 2 },
    ],
    { axis: 1 },
  );
  return { inputs: { x: Array.from(x), y: Array.from(y), b: Array.from(b) }, expected };
}

/** Writes the probe's inputs to `folder`/inputs.json; returns that path and the expected result. */
function writeGaussCase(folder: string, seed: number): { inputFile: string; expected: Float64Array } {
  const c = gaussCase(seed);
  const inputFile = join(folder, 'inputs.json');
  writeFileSync(inputFile, JSON.stringify(c.inputs));
  return { inputFile, expected: c.expected as Float64Array };
}

interface Outcome {
  values?: number[];
  error?: { code: string; message: string };
}
interface ProbeReport {
  /** The addon files mapped into the process (/proc/self/maps). */
  addons: string[];
  cuda?: Outcome;
  cpu: Outcome;
  cpuSync: Outcome;
}

/**
 * Child-process script: loads keops-node from argv[1] (lib/index.ts or an installed package folder), runs the
 * Gaussian sum on the inputs of the JSON file argv[2] with the CPU backend (async and sync) and, when argv[3] is
 * 'cuda', with the CUDA backend, and prints what happened as JSON.
 */
const PROBE = `
const { readFileSync } = require('node:fs');
const [modulePath, inputFile, withCuda] = process.argv.slice(1);
const { Genred } = require(modulePath);
const { x, y, b } = JSON.parse(readFileSync(inputFile, 'utf8'));
const args = [Float64Array.from(x), Float64Array.from(y), Float64Array.from(b)];
const gauss = (backend) => new Genred(${JSON.stringify(FORMULA)}, ${JSON.stringify(ALIASES)}, { axis: 1, backend });
const outcome = async (run) => {
  try {
    return { values: Array.from(await run()) };
  } catch (e) {
    return { error: { code: e.code, message: e.message } };
  }
};
(async () => {
  const report = {};
  if (withCuda === 'cuda') report.cuda = await outcome(() => gauss('cuda').call(args));
  report.cpu = await outcome(() => gauss('cpu').call(args));
  report.cpuSync = await outcome(() => gauss('cpu').callSync(args));
  report.addons = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n')
    .map((line) => line.split(/\\s+/).slice(5).join(' ')).filter((path) => path.endsWith('.node')))];
  console.log(JSON.stringify(report));
})();
`;

/** Where a program is on PATH, or undefined. */
function onPath(program: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir !== '' && existsSync(join(dir, program))) return join(dir, program);
  }
  return undefined;
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * An environment without a C++ compiler: PATH is one folder holding only a link to this node, CXX names a file
 * that does not exist; the fake driver and NVRTC are those of test/fake-cuda, with the fake NVRTC's own g++
 * given by absolute path (a wrapper that restores the full PATH for g++'s assembler and linker).
 */
function noCompilerEnv(folder: string, gxx: string): NodeJS.ProcessEnv {
  const bin = join(folder, 'bin');
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  const gpuCompiler = join(folder, 'emulated-gpu-g++');
  writeFileSync(
    gpuCompiler,
    `#!/bin/sh\nPATH=${shellQuote(process.env.PATH ?? '')}\nexport PATH\nexec ${shellQuote(gxx)} "$@"\n`,
  );
  chmodSync(gpuCompiler, 0o755);
  for (const compiler of ['c++', 'g++', 'clang++', 'cc', 'gcc'])
    expect(onPath(compiler, bin)).to.equal(undefined);
  return {
    PATH: bin,
    HOME: process.env.HOME ?? folder,
    TMPDIR: tmpdir(),
    CXX: join(folder, 'no-such-dir', 'g++'),
    KEOPS_CACHE_DIR: join(folder, 'kernel-cache'),
    ...fakeCudaEnv(),
    KEOPS_FAKE_NVRTC_CXX: gpuCompiler,
  };
}

/** This process's environment less npm's per-run variables (from an outer `npm test`), for nested npm runs. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && k !== 'INIT_CWD') env[k] = v;
  }
  return { ...env, ...extra };
}

async function runProbe(
  modulePath: string,
  inputFile: string,
  options: { cwd: string; env: NodeJS.ProcessEnv; tsNode: boolean; cuda: boolean },
): Promise<ProbeReport> {
  const { stdout } = await execFileAsync(
    process.execPath,
    [
      ...(options.tsNode ? ['-r', 'ts-node/register/transpile-only'] : []),
      '-e',
      PROBE,
      modulePath,
      inputFile,
      options.cuda ? 'cuda' : 'cpu-only',
    ],
    { cwd: options.cwd, env: options.env, timeout: 240_000 },
  );
  return JSON.parse(stdout.trim().split('\n').pop() as string) as ProbeReport;
}

function expectValues(outcome: Outcome | undefined, expected: Float64Array, what: string): void {
  expect(outcome?.error, `${what}: ${outcome?.error?.message}`).to.equal(undefined);
  expectBackendResult(Float64Array.from(outcome?.values ?? []), expected, 'float64', what);
}

function expectNoCompiler(outcome: Outcome, what: string): void {
  expect(outcome.error?.code, `${what}: ${JSON.stringify(outcome)}`).to.equal('ERR_NO_COMPILER');
  expect(outcome.error?.message).to.contain('no C++ compiler found');
  expect(outcome.error?.message).to.contain('apt-get install g++');
}

function expectInfoWithoutCompiler(stdout: string): void {
  expect(stdout).to.match(/^backend \(auto\): cuda$/m);
  expect(stdout).to.match(/^C\+\+ compiler: none \(no C\+\+ compiler found .*apt-get install g\+\+/m);
}

function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let k = 0; k < Math.max(a.length, b.length); k++) {
    if ((a[k] ?? 0) !== (b[k] ?? 0)) return (a[k] ?? 0) - (b[k] ?? 0);
  }
  return 0;
}

const gxx = onPath('g++');
const linuxGlibcX64 =
  process.platform === 'linux' &&
  process.arch === 'x64' &&
  (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header
    ?.glibcVersionRuntime !== undefined;

describe('without a C++ compiler', function () {
  this.timeout(300_000);
  let folder = '';
  let inputFile = '';
  let expected: Float64Array;
  let env: NodeJS.ProcessEnv;

  before(function () {
    if (gxx === undefined || process.platform !== 'linux') {
      console.log('      (skipped: the emulated GPU needs g++ on Linux to build)');
      this.skip();
    }
    folder = mkdtempSync(join(tmpdir(), 'keops-no-compiler-'));
    ({ inputFile, expected } = writeGaussCase(folder, 1601));
    env = noCompilerEnv(folder, gxx as string);
  });
  after(() => {
    if (folder) rmSync(folder, { recursive: true, force: true });
  });

  it("backend 'cuda' compiles and runs (emulated GPU); the CPU backend is ERR_NO_COMPILER saying what to install", async function () {
    const report = await runProbe(join(ROOT, 'lib', 'index.ts'), inputFile, {
      cwd: ROOT,
      env,
      tsNode: true,
      cuda: true,
    });
    expectValues(report.cuda, expected, 'cuda');
    expectNoCompiler(report.cpu, 'cpu');
    expectNoCompiler(report.cpuSync, 'cpu callSync');
  });

  it('`keops-node info` reports the missing compiler', async function () {
    const { stdout } = await execFileAsync(
      process.execPath,
      ['-r', 'ts-node/register/transpile-only', join(ROOT, 'lib', 'cli.ts'), 'info'],
      { cwd: ROOT, env, timeout: 120_000 },
    );
    expectInfoWithoutCompiler(stdout);
  });
});

describe('the packed package (KEOPS_PACK_TEST=1)', function () {
  this.timeout(600_000);
  let folder = '';
  let staging = '';
  let tarball = '';
  let inputFile = '';
  let expected: Float64Array;

  before(async function () {
    if (process.env.KEOPS_PACK_TEST !== '1') {
      console.log('      (skipped: set KEOPS_PACK_TEST=1 to pack and install the package; .ci/run does)');
      this.skip();
    }
    if (!linuxGlibcX64 || gxx === undefined) {
      console.log(
        '      (skipped: the prebuild made here is for linux-x64 glibc, and the emulated GPU needs g++)',
      );
      this.skip();
    }
    folder = mkdtempSync(join(tmpdir(), 'keops-pack-'));
    ({ inputFile, expected } = writeGaussCase(folder, 1602));
    // `npm pack` runs prepack (npm run prebuildify) and prepare (the TypeScript build), as `npm publish` does.
    // It runs in a copy of the sources: prebuildify rebuilds build/Release, and rewriting the addon that this very
    // test process (and its later specs) has mapped would crash it.
    staging = join(folder, 'sources');
    for (const entry of PACKED_SOURCES) cpSync(join(ROOT, entry), join(staging, entry), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(staging, 'node_modules'));
    const { stdout } = await execFileAsync('npm', ['pack', '--json', '--pack-destination', folder], {
      cwd: staging,
      env: cleanEnv(),
      maxBuffer: 64 << 20,
    });
    const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as {
      filename: string;
      files: { path: string }[];
    }[];
    tarball = join(folder, packed.filename);
    const files = packed.files.map((f) => f.path);
    for (const needed of [
      PREBUILD,
      'dist/lib/index.js',
      'dist/lib/cli.js',
      'binding.gyp',
      'native/addon.cc',
    ]) {
      expect(files, needed).to.include(needed);
    }
    expect(
      files.filter((f) => f.startsWith('test/') || f.startsWith('lib/') || f.startsWith('build/')),
    ).to.deep.equal([]);
  });
  after(() => {
    if (folder) rmSync(folder, { recursive: true, force: true });
  });

  /** A fresh consumer project with the tarball installed by `npm install <flags> <tarball>`. */
  async function install(name: string, flags: string[], extraEnv: NodeJS.ProcessEnv = {}, manifest = {}) {
    const app = join(folder, name);
    mkdirSync(app);
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true, ...manifest }),
    );
    // --prefer-offline: the dependencies (node-addon-api, node-gyp-build) usually come from npm's cache.
    const { stdout, stderr } = await execFileAsync(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', ...flags, tarball],
      { cwd: app, env: cleanEnv(extraEnv), maxBuffer: 64 << 20 },
    );
    return { app, pkg: join(app, 'node_modules', 'keops-node'), log: stdout + stderr };
  }

  it('installed with --ignore-scripts, loads its addon from the prebuild; CUDA runs without a compiler', async function () {
    const { app, pkg } = await install('ignore-scripts', ['--ignore-scripts']);
    expect(existsSync(join(pkg, PREBUILD))).to.equal(true);
    expect(existsSync(join(pkg, 'build'))).to.equal(false);

    const env = noCompilerEnv(join(folder, 'ignore-scripts'), gxx as string);
    const bare = await runProbe(pkg, inputFile, { cwd: app, env, tsNode: false, cuda: true });
    expect(bare.addons).to.deep.equal([join(pkg, PREBUILD)]);
    expectValues(bare.cuda, expected, 'cuda from the prebuild');
    expectNoCompiler(bare.cpu, 'cpu');
    expectNoCompiler(bare.cpuSync, 'cpu callSync');

    // The package's bin, run through its #!/usr/bin/env node line with the bare PATH.
    const { stdout } = await execFileAsync(join(app, 'node_modules', '.bin', 'keops-node'), ['info'], {
      cwd: app,
      env,
      timeout: 120_000,
    });
    expectInfoWithoutCompiler(stdout);

    // With a compiler, the installed package's CPU backend finds its templates and headers and runs.
    const cache = join(folder, 'ignore-scripts', 'cpu-cache');
    const withCompiler = await runProbe(pkg, inputFile, {
      cwd: app,
      env: cleanEnv({ KEOPS_CACHE_DIR: cache }),
      tsNode: false,
      cuda: false,
    });
    expect(withCompiler.addons).to.deep.equal([join(pkg, PREBUILD)]);
    expectValues(withCompiler.cpu, expected, 'cpu from the prebuild');
    expectValues(withCompiler.cpuSync, expected, 'cpu callSync from the prebuild');
  });

  it('the prebuild needs at most glibc 2.34 and GLIBCXX 3.4.30 (the systems README promises)', async function () {
    if (onPath('objdump') === undefined) this.skip();
    const { stdout } = await execFileAsync('objdump', ['-T', join(staging, PREBUILD)], {
      maxBuffer: 64 << 20,
    });
    const newest = (prefix: string) =>
      [...stdout.matchAll(new RegExp(`\\(${prefix}_([0-9.]+)\\)`, 'g'))]
        .map((m) => m[1].split('.').map(Number))
        .reduce((a, b) => (compareVersions(a, b) >= 0 ? a : b), [0]);
    expect(compareVersions(newest('GLIBC'), [2, 34]), `GLIBC_${newest('GLIBC').join('.')}`).to.be.at.most(0);
    expect(
      compareVersions(newest('GLIBCXX'), [3, 4, 30]),
      `GLIBCXX_${newest('GLIBCXX').join('.')}`,
    ).to.be.at.most(0);
  });

  it('its install script (node-gyp-build) accepts the prebuild and compiles nothing', async function () {
    // Approved the way `npm install-scripts approve` records it (npm 11; older npm ignores the field).
    const { pkg, log } = await install(
      'with-scripts',
      [],
      {},
      { allowScripts: { [`file:${tarball}`]: true } },
    );
    expect(log).to.contain('> node-gyp-build');
    expect(existsSync(join(pkg, 'build'))).to.equal(false);
  });

  it('builds the addon from source where no prebuild fits (LIBC=musl)', async function () {
    const { app, pkg, log } = await install(
      'musl',
      [],
      { LIBC: 'musl' },
      { allowScripts: { [`file:${tarball}`]: true } },
    );
    expect(log).to.contain('gyp info ok');
    const built = join(pkg, 'build', 'Release', 'keops_node.node');
    expect(existsSync(built)).to.equal(true);
    const report = await runProbe(pkg, inputFile, {
      cwd: app,
      env: cleanEnv({ KEOPS_CACHE_DIR: join(folder, 'musl', 'cpu-cache') }),
      tsNode: false,
      cuda: false,
    });
    expect(report.addons).to.deep.equal([built]);
    expectValues(report.cpu, expected, 'cpu from the local build');
  });
});

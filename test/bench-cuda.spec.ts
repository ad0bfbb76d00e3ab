/**
 * bench/cuda.ts (the GPU benchmark) run end to end against the emulated GPU of test/fake-cuda, so that the script
 * works the first time it meets a real one: every case and latency is measured and checked, the JSON has them all,
 * a machine without CUDA gets exit status 2, and bench/gpu.sh merges the JSON files into the side-by-side table
 * (with bench/torch_gpu.py on the CPU where PyTorch is installed, else with a hand-made PyTorch file). Needs g++
 * (skipped otherwise); the merge needs python3.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { fakeCudaEnv } from './fake-cuda';

const ROOT = join(__dirname, '..');
const hasCompiler = spawnSync('g++', ['--version']).status === 0;
const hasPython = spawnSync('python3', ['--version']).status === 0;
const hasTorch = hasPython && spawnSync('python3', ['-c', 'import torch']).status === 0;

const CASE_IDS = [
  'gauss-f32',
  'gauss-f32-device',
  'gauss-f64',
  'gauss-f64-device',
  'lse-f32',
  'lse-grad-x-f32',
  'argkmin-d3-f32',
  'argkmin-d128-f32',
];
const LATENCY_IDS = [
  'first-compile',
  'nvrtc-compile',
  'disk-load',
  'process-cuda-init',
  'overhead-device',
  'overhead-host',
  'overhead-host-sync',
];

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const bench = (args: readonly string[], env: NodeJS.ProcessEnv): Promise<Ran> =>
  run(process.execPath, ['-r', 'ts-node/register/transpile-only', 'bench/cuda.ts', ...args], env);

interface BenchCase {
  id: string;
  size: number;
  seconds: number | null;
  gpairsPerS: number | null;
  reps: number;
  ok: boolean;
  check: string;
  error?: string;
}

interface BenchLatency {
  id: string;
  value: number | null;
  note?: string;
  error?: string;
}

describe('bench/cuda.ts on the emulated GPU', function () {
  this.timeout(300_000);
  let folder = '';
  let env: NodeJS.ProcessEnv = {};

  before(function () {
    if (!hasCompiler) {
      console.log('      (skipped: no g++ to build the emulated GPU)');
      this.skip();
    }
    folder = mkdtempSync(join(tmpdir(), 'keops-bench-cuda-test-'));
    env = { ...process.env, ...fakeCudaEnv(), KEOPS_CACHE_DIR: join(folder, 'cache') };
  });
  after(() => {
    if (folder !== '') rmSync(folder, { recursive: true, force: true });
  });

  it('measures and checks every case and latency, and writes them all to the JSON', async function () {
    const json = join(folder, 'out', 'keops-cuda.json');
    const ran = await bench(['--quick', '--sizes', '200', '--json', json], env);
    expect(ran.code, `${ran.stdout}\n${ran.stderr}`).to.equal(0);
    expect(ran.stdout).to.include('"backend": "cuda"'); // runtimeInfo() first
    expect(ran.stdout).to.include('| case | M = N | time | Gpairs/s |');

    const out = JSON.parse(readFileSync(json, 'utf8')) as {
      tool: string;
      gpu: string;
      driver: string;
      nvrtc: string;
      date: string;
      emulated: boolean;
      sizes: number[];
      d128Sizes: number[];
      cases: BenchCase[];
      latency: BenchLatency[];
      failures: number;
    };
    expect(out.tool).to.equal('keops-node');
    expect(out.gpu).to.equal('keops-node emulated GPU');
    expect(out.emulated).to.equal(true);
    expect(out.driver).to.equal('13.0');
    expect(out.nvrtc).to.equal('13.0');
    expect(Number.isNaN(Date.parse(out.date))).to.equal(false);
    expect(out.sizes).to.deep.equal([200]);
    expect(out.d128Sizes).to.deep.equal([200]);
    expect(out.failures).to.equal(0);

    expect(out.cases.map((c) => c.id)).to.have.members(CASE_IDS);
    for (const c of out.cases) {
      expect(c.error, c.id).to.equal(undefined);
      expect(c.ok, `${c.id}: ${c.check}`).to.equal(true);
      expect(c.size).to.equal(200);
      expect(c.seconds, c.id).to.be.a('number').greaterThan(0);
      expect(c.gpairsPerS, c.id).to.be.a('number').greaterThan(0);
      expect(c.reps, c.id).to.be.within(1, 2); // --quick
    }

    expect(out.latency.map((l) => l.id)).to.have.members(LATENCY_IDS);
    const latency = new Map(out.latency.map((l) => [l.id, l]));
    for (const l of out.latency) {
      expect(l.error, l.id).to.equal(undefined);
      expect(l.value, l.id).to.be.a('number').at.least(0);
    }
    expect(latency.get('first-compile')?.note).to.include('origin compiled');
    expect(latency.get('nvrtc-compile')?.value).to.be.greaterThan(0);
    expect(latency.get('disk-load')?.note).to.include('origin disk');
    expect(latency.get('overhead-device')?.note).to.include('median of 20 calls'); // --quick

    // The whole run stays inside the cache folder it was given, and cleans up after itself.
    expect(readdirSync(join(folder, 'cache'))).to.deep.equal([]);
  });

  it('exits with status 2, after printing runtimeInfo(), when CUDA is not usable', async function () {
    const ran = await bench(['--quick', '--sizes', '10'], {
      ...env,
      KEOPS_CUDA_DRIVER_LIBRARY: join(folder, 'no-such-libcuda.so'),
    });
    expect(ran.code, `${ran.stdout}\n${ran.stderr}`).to.equal(2);
    expect(ran.stdout).to.include('runtimeInfo()');
    expect(ran.stderr).to.include('the CUDA backend is not usable here');
  });

  it('bench/gpu.sh merges the keops-node and PyTorch figures into one table', async function () {
    if (!hasPython) this.skip();
    const out = join(folder, 'merge');
    const keops = join(folder, 'out', 'keops-cuda.json');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'keops-cuda.json'), readFileSync(keops));
    if (hasTorch) {
      const torch = await run(
        'python3',
        [
          'bench/torch_gpu.py',
          '--device',
          'cpu',
          '--quick',
          '--sizes',
          '200',
          '--json',
          join(out, 'torch-gpu.json'),
        ],
        env,
      );
      expect(torch.code, torch.stderr).to.equal(0);
    } else {
      // What bench/torch_gpu.py writes, for two cases.
      const torchCase = (id: string, label: string, seconds: number) => ({
        id,
        label,
        size: 200,
        M: 200,
        N: 200,
        D: 3,
        dtype: 'float32',
        io: 'host',
        seconds,
        gpairsPerS: (200 * 200) / seconds / 1e9,
        reps: 2,
        times: [seconds, seconds],
        method: 'dense',
        check: 'max rel. err 1e-7',
        ok: true,
      });
      writeFileSync(
        join(out, 'torch-gpu.json'),
        JSON.stringify({
          tool: 'pytorch',
          version: '0.0-test',
          cuda: null,
          date: new Date().toISOString(),
          quick: true,
          sizes: [200],
          d128Sizes: [200],
          gpu: 'CPU',
          python: '3',
          cases: [
            torchCase('gauss-f32', 'Gaussian sum, float32, host tensors', 0.001),
            torchCase('argkmin-d3-f32', 'ArgKMin K=10, D=3, float32', 0.002),
          ],
          failures: 0,
        }),
      );
    }
    const ran = await run('bash', ['bench/gpu.sh', '--only', 'merge'], { ...env, BENCH_OUT: out });
    expect(ran.code, ran.stderr).to.equal(0);
    const table = ran.stdout;
    expect(table).to.include('| case | M = N | keops-node | Gpairs/s | PyTorch | Gpairs/s |');
    expect(table).to.include('| Gaussian sum, float32 | 200 |');
    expect(table).to.match(
      /\| ArgKMin K=10, D=3, float32 \| 200 \| [0-9.]+ m?s \| [0-9.e-]+ \| [0-9.]+ m?s \|/,
    );
    expect(table).to.include('| keops-node latency | value | target | note |');
    expect(table).to.include('emulated GPU');
    expect(readFileSync(join(out, 'gpu-results.md'), 'utf8')).to.equal(table);
  });
});

/**
 * Server use: CPU kernels on the library's own threads (libuv's pool stays free for fs and friends), calls
 * cancelled by an AbortSignal within about a tile of work, and worker.terminate() / process.exit() that do not
 * wait for a running kernel. Long calls here would take minutes if cancellation did not work, so a regression
 * shows up as a timeout, never as a timing assertion.
 */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { expect } from 'chai';
import { Genred } from '../lib';
import { expectKeOpsError, rejection, useTestKernelCache } from './util';

const FORMULA = 'Exp(-SqDist(x,y))*b';
const ALIASES = ['x = Vi(3)', 'y = Vj(3)', 'b = Vj(1)'];

/** Inputs of a call that takes about a minute per thread on a laptop core (2.5e10 pairs). */
function longInputs(): Float64Array[] {
  const M = 50_000;
  const N = 500_000;
  return [new Float64Array(M * 3).fill(0.1), new Float64Array(N * 3).fill(0.2), new Float64Array(N).fill(1)];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('server use', function () {
  this.timeout(120_000);
  useTestKernelCache();
  const g = new Genred(FORMULA, ALIASES, { backend: 'cpu' });

  before(async function () {
    // Compile (or load) the kernel once, outside the measured parts.
    await g.call([new Float64Array(3), new Float64Array(3), new Float64Array(1)]);
  });

  it('leaves libuv free while long kernels run, and aborts them with ERR_ABORTED', async function () {
    const inputs = longInputs();
    const controllers = [0, 1, 2, 3].map(() => new AbortController());
    let settled = 0;
    const calls = controllers.map((c) =>
      g.call(inputs, { threads: 1, signal: c.signal }).finally(() => settled++),
    );
    calls.forEach((p) => p.catch(() => undefined));
    await sleep(200); // the four runs are now on the kernel pool (two running, two queued)
    const text = await readFile(resolve(__dirname, '../package.json'), 'utf8');
    expect(text.length).to.be.greaterThan(0);
    expect(settled, 'a kernel finished before a tiny readFile').to.equal(0);
    controllers.forEach((c) => c.abort());
    for (const call of calls) expect((await rejection(call)).code).to.equal('ERR_ABORTED');
    // Everything was freed and the pool is free again: a small call still works.
    const small = (await g.call([
      Float64Array.of(0, 0, 0),
      Float64Array.of(0, 0, 0),
      Float64Array.of(2),
    ])) as Float64Array;
    expect(Array.from(small)).to.deep.equal([2]);
  });

  it('refuses an aborted or invalid signal before any work', async function () {
    const args = [new Float64Array(3), new Float64Array(3), new Float64Array(1)];
    const aborted = AbortSignal.abort();
    expect((await rejection(g.call(args, { signal: aborted }))).code).to.equal('ERR_ABORTED');
    expectKeOpsError(() => g.callSync(args, { signal: aborted }), 'ERR_ABORTED');
    expectKeOpsError(
      () => g.callSync(args, { signal: 'stop' as unknown as AbortSignal }),
      'ERR_INVALID_ARGUMENT',
    );
  });

  it('lets worker.terminate() end a worker whose kernel is still running', async function () {
    this.timeout(60_000);
    const script = `
      require('ts-node/register/transpile-only');
      const { parentPort, workerData } = require('node:worker_threads');
      const { Genred } = require(workerData.lib);
      const g = new Genred(${JSON.stringify(FORMULA)}, ${JSON.stringify(ALIASES)}, { backend: 'cpu' });
      const M = 200000, N = 1000000;  // minutes of work
      g.call([new Float64Array(M * 3), new Float64Array(N * 3), new Float64Array(N)]);
      setTimeout(() => parentPort.postMessage('running'), 1500);
    `;
    const worker = new Worker(script, { eval: true, workerData: { lib: resolve(__dirname, '../lib') } });
    await new Promise((r, reject) => {
      worker.once('message', r);
      worker.once('error', reject);
    });
    await worker.terminate();
  });

  it('lets process.exit() end a process whose kernel is still running', function () {
    const script = `
      const { Genred } = require(${JSON.stringify(resolve(__dirname, '../lib'))});
      const g = new Genred(${JSON.stringify(FORMULA)}, ${JSON.stringify(ALIASES)}, { backend: 'cpu' });
      const M = 200000, N = 1000000;  // minutes of work
      g.call([new Float64Array(M * 3), new Float64Array(N * 3), new Float64Array(N)]);
      setTimeout(() => process.exit(7), 1500);
    `;
    const child = spawnSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', script], {
      encoding: 'utf8',
      timeout: 50_000,
      cwd: resolve(__dirname, '..'),
    });
    expect(child.signal, child.stderr).to.equal(null);
    expect(child.status, child.stderr).to.equal(7);
  });
});

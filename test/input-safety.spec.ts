/**
 * Input memory safety (run in a child process: a regression here is a segfault, which must fail the test, not
 * kill mocha). See test/fixtures/input-safety-child.ts for the scenarios.
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { expect } from 'chai';
import { useTestKernelCache } from './util';

describe('input memory safety', function () {
  this.timeout(180_000);
  useTestKernelCache();

  it('calls keep their inputs as they were, or reject with a typed error; never read foreign memory', function () {
    const child = spawnSync(
      process.execPath,
      ['-r', 'ts-node/register/transpile-only', resolve(__dirname, 'fixtures/input-safety-child.ts')],
      { encoding: 'utf8', timeout: 170_000, cwd: resolve(__dirname, '..') },
    );
    expect(child.signal, `child died by signal; stderr:\n${child.stderr}`).to.equal(null);
    expect(child.status, child.stderr).to.equal(0);
    const results = JSON.parse(child.stdout.trim().split('\n').pop() ?? '{}') as Record<string, string>;
    expect(results).to.deep.equal({
      transferred: 'same',
      shrunk: 'same',
      overwritten: 'same',
      overwrittenFirstCall: 'same',
      transferredFirstCall: 'same',
      addonTransferred: 'same',
      addonOverwritten: 'same',
      ownLengthProperty: 'same',
      subclassLength: 'same',
      subclassLengthSync: 'same',
      proxy: 'error ERR_ARG_TYPE',
      detached: 'error ERR_ARG_DETACHED',
      detachedSync: 'error ERR_ARG_DETACHED',
      shared: 'same',
      sharedSync: 'same',
    });
  });
});

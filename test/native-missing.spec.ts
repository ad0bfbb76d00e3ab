/** Where the native addon is missing, the error tells a user of the package what to run, once. */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { expect } from 'chai';

describe('missing native addon', function () {
  this.timeout(60_000);

  it('is ERR_NATIVE naming `npm rebuild keops-node` once, the same error on every call', function () {
    // The child's node-gyp-build looks in an empty folder, as it would in a package installed without a build.
    const script = `
      const Module = require('node:module');
      const load = Module._load;
      Module._load = function (request, ...rest) {
        const loaded = load.call(this, request, ...rest);
        return request === 'node-gyp-build' ? () => loaded(require('node:os').tmpdir()) : loaded;
      };
      const { Genred } = require(${JSON.stringify(resolve(__dirname, '../lib'))});
      const g = new Genred('x*y', ['x = Vi(1)', 'y = Vj(1)'], { backend: 'cpu' });
      const errors = [0, 1].map(() => { try { g.callSync([Float64Array.of(1), Float64Array.of(2)]); } catch (e) { return e; } });
      console.log(JSON.stringify({ code: errors[0].code, message: errors[0].message, same: errors[0] === errors[1] }));
    `;
    const child = spawnSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', script], {
      encoding: 'utf8',
      cwd: resolve(__dirname, '..'),
    });
    expect(child.status, child.stderr).to.equal(0);
    const { code, message, same } = JSON.parse(child.stdout.trim().split('\n').pop() ?? '{}') as {
      code: string;
      message: string;
      same: boolean;
    };
    expect(code).to.equal('ERR_NATIVE');
    expect(message.split('npm rebuild keops-node').length - 1, message).to.equal(1);
    expect(message).to.not.contain('\n');
    expect(same).to.equal(true);
  });
});

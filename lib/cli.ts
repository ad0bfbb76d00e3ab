#!/usr/bin/env node
/**
 * The `keops-node` command: `keops-node info` (backend, compiler, cache folder and size, why CUDA is or isn't
 * used), `keops-node cache clear` and `keops-node graph` (Graphviz DOT of a formula: lib/cli/graph.ts).
 */
import { clearCache } from './backend/cache';
import { describeRuntime } from './runtime-summary';
import { graphCommand } from './cli/graph';

const USAGE =
  "usage: keops-node info | keops-node cache clear | keops-node graph FORMULA [options] (see 'graph --help')";

async function main(argv: readonly string[]): Promise<number> {
  const [command, sub] = argv;
  if (command === 'graph') {
    return graphCommand(argv.slice(1), {
      out: (text) => process.stdout.write(text),
      err: (text) => process.stderr.write(text),
    });
  }
  if (command === 'info' && sub === undefined) {
    console.log(await describeRuntime());
    return 0;
  }
  if (command === 'cache' && sub === 'clear') {
    const removed = clearCache();
    console.log(
      `removed ${removed.entries} kernels (${(removed.bytes / 2 ** 20).toFixed(1)} MiB) from ${removed.folder}`,
    );
    return 0;
  }
  console.error(USAGE);
  return command === undefined || command === '--help' || command === 'help' ? 0 : 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  },
);

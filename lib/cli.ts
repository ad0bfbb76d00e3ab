#!/usr/bin/env node
/**
 * The `keops-node` command. Subcommands are rows of one table (name, usage, summary, how many arguments, what
 * to run), so adding one is adding a row: `keops-node info` (backend, compiler, cache folder and size, why
 * CUDA is or isn't used), `keops-node cache clear` and `keops-node graph` (Graphviz DOT of a formula:
 * lib/cli/graph.ts, which parses its own options). `--help`/`-h` (also after a subcommand) prints help to
 * stdout and exits 0; `--version` prints the version; unknown subcommands, options and extra arguments print
 * usage to stderr and exit 2; a failure exits 1 with its code.
 */
import { clearCache } from './backend/cache';
import { packageVersion } from './backend/package-root';
import { isKeOpsError } from './errors';
import { describeRuntime } from './runtime-summary';
import { GRAPH_USAGE, graphCommand } from './cli/graph';
import { MERGE_SUMMARY, mergeCommand } from './cli/merge';
import { PLAN_SUMMARY, planCommand } from './cli/plan';
import { SHARD_SUMMARY, shardCommand } from './cli/shard';
import { SUBMIT_SUMMARY, submitCommand } from './cli/submit';
import { WORKER_SUMMARY, workerCommand } from './cli/worker';
import { knnCommand } from './cli/knn';
import { CONVERT_SUMMARY, convertCommand } from './cli/convert';
import { RECALL_SUMMARY, recallCommand } from './cli/recall';

/** Where the command writes (process.stdout / stderr, or a test's buffers). */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** stderr when it is a terminal (progress bars are drawn there); absent otherwise and in tests. */
  readonly terminal?: NodeJS.WritableStream;
}

interface SubcommandText {
  /** Arguments after the subcommand's name, as shown in usage. */
  readonly usage: string;
  readonly summary: string;
}

/** A command with fixed arguments: the table checks them, then runs it. */
interface FixedSubcommand extends SubcommandText {
  /** The exact arguments it takes (after its name); anything else is a usage error. */
  readonly args: readonly string[];
  run(io: CliIo): Promise<void> | void;
}

/** A command with options of its own: it parses everything after its name (help included), returns its exit code. */
interface ParsingSubcommand extends SubcommandText {
  main(args: readonly string[], io: CliIo): Promise<number> | number;
}

type Subcommand = FixedSubcommand | ParsingSubcommand;

const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  info: {
    usage: '',
    summary: 'where keops-node runs: backend (and why CUDA is or is not used), compiler, kernel cache',
    args: [],
    async run(io) {
      io.out(await describeRuntime());
    },
  },
  cache: {
    usage: 'clear',
    summary: 'remove every compiled kernel from the cache folder',
    args: ['clear'],
    run(io) {
      const removed = clearCache();
      io.out(
        `removed ${removed.entries} kernels (${(removed.bytes / 2 ** 20).toFixed(1)} MiB) from ${removed.folder}`,
      );
    },
  },
  graph: {
    usage: 'FORMULA [options]',
    summary: 'print the Graphviz DOT graph of a formula, a reduction or its gradient',
    main: (args, io) =>
      graphCommand(args, {
        out: (text) => io.out(text.replace(/\n$/, '')),
        err: (text) => io.err(text.replace(/\n$/, '')),
      }),
  },
  plan: { usage: 'PLAN.json [options]', summary: PLAN_SUMMARY, main: planCommand },
  shard: { usage: '--plan FILE --index I', summary: SHARD_SUMMARY, main: shardCommand },
  merge: { usage: '--plan FILE', summary: MERGE_SUMMARY, main: mergeCommand },
  worker: {
    usage: '--redis URL [options]',
    summary: WORKER_SUMMARY,
    main: (args, io) => workerCommand(args, io),
  },
  submit: { usage: '--plan FILE --redis URL', summary: SUBMIT_SUMMARY, main: submitCommand },
  knn: {
    usage: '--base FILE [--queries FILE] -k K --out FILE [options]',
    summary: 'exact k-NN job over vector files: ids (and distances) to files, progress, --resume',
    main: (args, io) => knnCommand(args, io, { terminal: io.terminal, signals: process }),
  },
  convert: { usage: 'IN OUT [options]', summary: CONVERT_SUMMARY, main: convertCommand },
  recall: { usage: '--result FILE --truth FILE [-k K]', summary: RECALL_SUMMARY, main: recallCommand },
};

const HELP_FLAGS = ['--help', '-h'];

function usage(): string {
  const width = Math.max(...Object.entries(SUBCOMMANDS).map(([n, c]) => `${n} ${c.usage}`.length));
  const rows = Object.entries(SUBCOMMANDS).map(
    ([name, c]) => `  keops-node ${`${name} ${c.usage}`.padEnd(width)}   ${c.summary}`,
  );
  return [
    'usage: keops-node <command> [arguments]',
    '',
    'commands:',
    ...rows,
    '',
    'options:',
    '  -h, --help     this help (after a command: that command)',
    '  --version      the keops-node version',
  ].join('\n');
}

/** Runs the command line `argv` (without node and the script); returns the exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    io.err(usage());
    return 2;
  }
  if (HELP_FLAGS.includes(name) || name === 'help') {
    if (rest.length > 0 && !(name === 'help' && rest.length === 1 && Object.hasOwn(SUBCOMMANDS, rest[0]))) {
      io.err(`keops-node: unexpected argument '${rest[0]}'\n${usage()}`);
      return 2;
    }
    io.out(name === 'help' && rest.length === 1 ? commandHelp(rest[0]) : usage());
    return 0;
  }
  if (name === '--version' || name === '-v') {
    if (rest.length > 0) {
      io.err(`keops-node: unexpected argument '${rest[0]}'\n${usage()}`);
      return 2;
    }
    io.out(packageVersion());
    return 0;
  }
  const command = Object.hasOwn(SUBCOMMANDS, name) ? SUBCOMMANDS[name] : undefined;
  if (command === undefined) {
    io.err(`keops-node: unknown ${name.startsWith('-') ? 'option' : 'command'} '${name}'\n${usage()}`);
    return 2;
  }
  if ('main' in command) return command.main(rest, io);
  if (rest.some((a) => HELP_FLAGS.includes(a))) {
    io.out(commandHelp(name));
    return 0;
  }
  const extra = rest.findIndex((a, k) => a !== command.args[k]);
  if (extra >= 0 || rest.length !== command.args.length) {
    const what = extra >= 0 ? `unexpected argument '${rest[extra]}'` : 'missing argument';
    io.err(`keops-node ${name}: ${what}\nusage: ${commandLine(name)}`);
    return 2;
  }
  try {
    await command.run(io);
    return 0;
  } catch (e) {
    io.err(`keops-node ${name}: ${isKeOpsError(e) ? `${e.code}: ${e.message}` : String(e)}`);
    return 1;
  }
}

function commandLine(name: string): string {
  return `keops-node ${name} ${SUBCOMMANDS[name].usage}`.trimEnd();
}

function commandHelp(name: string): string {
  if (name === 'graph') return GRAPH_USAGE;
  return `usage: ${commandLine(name)}\n\n${SUBCOMMANDS[name].summary}`;
}

if (require.main === module) {
  // A reader that stops early (`keops-node knn --help | head`) closes the pipe: end as Unix tools do when
  // SIGPIPE kills them (status 141), without a stack trace. A job stopped this way resumes from its checkpoint.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
      process.exit(141);
    });
  }
  runCli(process.argv.slice(2), {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
    terminal: process.stderr.isTTY ? process.stderr : undefined,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`keops-node: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

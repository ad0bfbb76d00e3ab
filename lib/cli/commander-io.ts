/**
 * Runs a subcommand whose options commander parses: commander writes through the command's `io` (never
 * process.stdout / process.exit), and the outcome is one of the documented exit codes — 0 done (help
 * included), 1 failed with a KeOpsError (its code and message printed to stderr), 2 usage error (message and
 * usage to stderr). Errors that are not KeOpsErrors are bugs and propagate.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { isKeOpsError } from '../errors';

/** Where a command writes: whole messages, without a trailing newline. */
export interface CommandOutput {
  out(text: string): void;
  err(text: string): void;
}

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A new commander Command named `keops-node NAME` writing through `io` and throwing instead of exiting. */
export function newCommand(name: string, io: CommandOutput): Command {
  const trim = (text: string): string => text.replace(/\n$/, '');
  return new Command(`keops-node ${name}`)
    .exitOverride()
    .allowExcessArguments(false)
    .showHelpAfterError(`(keops-node ${name} --help for usage)`)
    .configureOutput({
      writeOut: (text) => io.out(trim(text)),
      writeErr: (text) => io.err(trim(text)),
    });
}

/**
 * Parses `argv` (the arguments after the subcommand's name) with `command`, then runs `run` with the parsed
 * command; returns the exit code: 2 for usage errors (found by commander, or by `run` through
 * `parsed.error(message)`), 1 for a KeOpsError (printed with its code).
 */
export async function runCommand(
  name: string,
  command: Command,
  argv: readonly string[],
  io: CommandOutput,
  run: (parsed: Command) => Promise<void>,
): Promise<number> {
  try {
    command.parse([...argv], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    throw e;
  }
  try {
    await run(command);
    return EXIT_OK;
  } catch (e) {
    // `run` may still reject the arguments with `parsed.error(message)` (a usage error, printed by commander).
    if (e instanceof CommanderError) return EXIT_USAGE;
    if (!isKeOpsError(e)) throw e;
    io.err(`keops-node ${name}: ${e.code}: ${e.message}`);
    return EXIT_FAILURE;
  }
}

/** A commander argument parser for integers >= `min` (a usage error otherwise). */
export function integerOption(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected an integer >= ${min}`);
    }
    return n;
  };
}

/**
 * What the distributed-job commands (plan, shard, merge, worker, submit) share: a commander program that writes
 * through the command's io and never exits the process, option parsers, and the exit-code convention (0 done,
 * 1 the job failed with a KeOpsError, printed with its code first; 2 bad arguments).
 */
import { Command, CommanderError, InvalidArgumentError, type OptionValues } from 'commander';
import { isKeOpsError } from '../errors';
import type { Backend } from '../backend/runner';

/** Where a command writes: whole lines, without their newline. */
export interface CommandLineIo {
  out(text: string): void;
  err(text: string): void;
}

export function program(name: string, description: string, io: CommandLineIo, helpAfter: string): Command {
  const strip = (text: string) => text.replace(/\n$/, '');
  return new Command(`keops-node ${name}`)
    .description(description)
    .addHelpText('after', helpAfter)
    .helpOption('-h, --help', 'this help')
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.out(strip(text)),
      writeErr: (text) => io.err(strip(text)),
    });
}

/**
 * Parses argv with the program: its options, or the exit code to return (0 after --help, 2 for bad arguments,
 * commander having printed why).
 */
export function parseOrExit<T extends OptionValues>(command: Command, argv: readonly string[], io: CommandLineIo): T | number {
  try {
    command.parse([...argv], { from: 'user' });
    return command.opts<T>();
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help') return 0;
    io.err(`usage: ${command.name()} ${command.usage()}  (--help for all)`);
    return 2;
  }
}

/** Runs the command's work: 0, or 1 with "keops-node NAME: ERR_CODE: message" for a KeOpsError. */
export async function runReporting(name: string, io: CommandLineIo, work: () => Promise<void>): Promise<number> {
  try {
    await work();
    return 0;
  } catch (e) {
    if (!isKeOpsError(e)) throw e;
    io.err(`keops-node ${name}: ${e.code}: ${e.message}`);
    return 1;
  }
}

export function integerAtLeast(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected an integer >= ${min}`);
    }
    return n;
  };
}

/** Where shards run: --device cpu | auto | cuda | 0,1 (GPU ordinals). */
export interface DeviceChoice {
  readonly backend?: Backend;
  readonly devices?: readonly number[];
}

export function deviceArgument(value: string): DeviceChoice {
  if (value === 'cpu' || value === 'auto' || value === 'cuda') return { backend: value };
  const parts = value.split(',').map((p) => p.trim());
  if (parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError("expected cpu, auto, cuda or GPU ordinals such as 0,1");
  }
  const devices = parts.map(Number);
  if (new Set(devices).size !== devices.length) throw new InvalidArgumentError('a GPU is listed twice');
  return { backend: 'cuda', devices };
}

export function secondsArgument(value: string): number {
  const s = Number(value);
  if (value.trim() === '' || !Number.isFinite(s) || s <= 0) {
    throw new InvalidArgumentError('expected a number of seconds > 0');
  }
  return s;
}

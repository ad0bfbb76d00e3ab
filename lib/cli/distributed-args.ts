/**
 * What the distributed-job commands (plan, shard, merge, worker, submit) share beyond commander-io.ts: usage
 * errors found after parsing (`command.error(...)` inside `run`, exit 2) and the --device and seconds options.
 */
import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import type { Backend } from '../backend/runner';
import { type CommandOutput, EXIT_USAGE, runCommand } from './commander-io';

/** runCommand, where `run` may also reject the arguments with `parsed.error(message)` (exit 2). */
export async function runDistributedCommand(
  name: string,
  command: Command,
  argv: readonly string[],
  io: CommandOutput,
  run: (parsed: Command) => Promise<void>,
): Promise<number> {
  try {
    return await runCommand(name, command, argv, io, run);
  } catch (e) {
    if (e instanceof CommanderError) return EXIT_USAGE;
    throw e;
  }
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
    throw new InvalidArgumentError('expected cpu, auto, cuda or GPU ordinals such as 0,1');
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

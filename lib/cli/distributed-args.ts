/** What the distributed-job commands (plan, shard, merge, worker, submit) share: the --device and seconds options. */
import { InvalidArgumentError } from 'commander';
import type { Backend } from '../backend/runner';

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

/**
 * Byte sizes as people type them on a command line: `4GiB`, `512MiB`, `1e9`, `64k`, `1.5G`. Binary units
 * (KiB, MiB, GiB, TiB, and the bare K, M, G, T) are powers of 1024; decimal ones (kB, MB, GB, TB) powers of
 * 1000; no unit (or B) is bytes. Case does not matter; spaces between the number and the unit are allowed.
 */
import { KeOpsError } from '../errors';

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  kib: 2 ** 10,
  kb: 1e3,
  m: 2 ** 20,
  mib: 2 ** 20,
  mb: 1e6,
  g: 2 ** 30,
  gib: 2 ** 30,
  gb: 1e9,
  t: 2 ** 40,
  tib: 2 ** 40,
  tb: 1e12,
};

/** The number of bytes `text` names (rounded down to a whole byte); ERR_INVALID_ARGUMENT if it names none. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+(?:e[+-]?\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = match === null ? undefined : UNITS[match[2].toLowerCase()];
  if (match === null || unit === undefined) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `'${text}' is not a size: write bytes such as 1e9, or a number with a unit (KiB, MiB, GiB, TiB, kB, MB, GB, TB)`,
    );
  }
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new KeOpsError(
      'ERR_INVALID_ARGUMENT',
      `size '${text}' must be at least 1 byte and at most 2^53 bytes`,
    );
  }
  return bytes;
}

/** A byte count for people: `512 MiB`, `3.2 GiB`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let u = 0;
  while (value >= 1024 && u < units.length - 1) {
    value /= 1024;
    u++;
  }
  return `${u === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[u]}`;
}

/**
 * Small vector files for k-NN job tests, written byte by byte here (independent of lib/io), and an independent
 * float64 brute-force k-NN to check results against.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rng } from './util';

/** rows × dim small integers (0..range-1) as float64: float32 distances of such points are exact. */
export function integerPoints(seed: number, rows: number, dim: number, range = 16): Float64Array {
  const r = rng(seed);
  const data = new Float64Array(rows * dim);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * range);
  return data;
}

/** A big-ann .fbin file: uint32 rows, uint32 dim, then float32 rows. */
export function writeFbin(path: string, data: ArrayLike<number>, dim: number): void {
  const rows = data.length / dim;
  const bytes = Buffer.alloc(8 + 4 * data.length);
  bytes.writeUInt32LE(rows, 0);
  bytes.writeUInt32LE(dim, 4);
  for (let i = 0; i < data.length; i++) bytes.writeFloatLE(data[i], 8 + 4 * i);
  writeFileSync(path, bytes);
}

/** The rows of a .ibin / .fbin file: [rows, dim, values]. */
export function readBin(
  path: string,
  kind: 'int32' | 'float32',
): { rows: number; dim: number; values: number[] } {
  const bytes = readFileSync(path);
  const rows = bytes.readUInt32LE(0);
  const dim = bytes.readUInt32LE(4);
  const values: number[] = [];
  for (let i = 0; i < rows * dim; i++) {
    values.push(kind === 'int32' ? bytes.readInt32LE(8 + 4 * i) : bytes.readFloatLE(8 + 4 * i));
  }
  return { rows, dim, values };
}

export type TestMetric = 'l2' | 'euclidean' | 'ip' | 'cosine' | 'l1';

function pairScore(metric: TestMetric, x: Float64Array, y: Float64Array): number {
  let dot = 0;
  let nx = 0;
  let ny = 0;
  let l1 = 0;
  let l2 = 0;
  for (let d = 0; d < x.length; d++) {
    dot += x[d] * y[d];
    nx += x[d] * x[d];
    ny += y[d] * y[d];
    l1 += Math.abs(x[d] - y[d]);
    l2 += (x[d] - y[d]) ** 2;
  }
  switch (metric) {
    case 'l2':
      return l2;
    case 'euclidean':
      return Math.sqrt(l2);
    case 'ip':
      return dot;
    case 'cosine':
      return 1 - dot / Math.sqrt(nx * ny);
    case 'l1':
      return l1;
  }
}

/**
 * k nearest base rows of each query row in float64, sorted by (distance, id) — for 'ip' by largest inner product
 * first, then id; with `excludeSelf` query i skips base row i. Missing ranks: id -1, distance ±inf.
 */
export function bruteForceKnn(
  queries: Float64Array,
  base: Float64Array,
  dim: number,
  k: number,
  metric: TestMetric = 'l2',
  excludeSelf = false,
): { ids: number[]; distances: number[] } {
  const nq = queries.length / dim;
  const nb = base.length / dim;
  const larger = metric === 'ip';
  const ids: number[] = [];
  const distances: number[] = [];
  for (let i = 0; i < nq; i++) {
    const x = queries.subarray(i * dim, (i + 1) * dim);
    const scored: [number, number][] = [];
    for (let j = 0; j < nb; j++) {
      if (excludeSelf && i === j) continue;
      scored.push([pairScore(metric, x, base.subarray(j * dim, (j + 1) * dim)), j]);
    }
    scored.sort((a, b) => (a[0] !== b[0] ? (larger ? b[0] - a[0] : a[0] - b[0]) : a[1] - b[1]));
    for (let r = 0; r < k; r++) {
      ids.push(r < scored.length ? scored[r][1] : -1);
      distances.push(r < scored.length ? scored[r][0] : larger ? -Infinity : Infinity);
    }
  }
  return { ids, distances };
}

/** A fresh temporary folder, and its removal. */
export function scratchFolder(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), `keops-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

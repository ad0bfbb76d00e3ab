/** Helpers for the distributed-job tests: an in-memory JobStorage, and a redis-server of the test's own. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { expect } from 'chai';
import { KeOpsError } from '../lib/errors';
import {
  STORAGE_BYTES,
  type StorageArray,
  type StorageDtype,
  vectorsFromArray,
} from '../lib/io/vector-source';
import type { JobStorage, VectorWriter } from '../lib/distributed/storage';
import { openVectorFile } from '../lib/io/vector-file';
import { createVectorFileWriter } from '../lib/io/vector-writer';
import { knn, type KnnMetric, type KnnResult } from '../lib/knn';

export interface StoredVectors {
  readonly data: StorageArray;
  readonly dim: number;
  readonly dtype: StorageDtype;
}

/** Everything in maps: vectors by location, bytes by location. Writers commit whole arrays. */
export function memoryStorage(): JobStorage & {
  vectors: Map<string, StoredVectors>;
  bytes: Map<string, Uint8Array>;
} {
  const vectors = new Map<string, StoredVectors>();
  const bytes = new Map<string, Uint8Array>();
  const arrayOf = (dtype: StorageDtype, n: number): StorageArray => {
    switch (dtype) {
      case 'float32':
        return new Float32Array(n);
      case 'float64':
        return new Float64Array(n);
      case 'int32':
        return new Int32Array(n);
      case 'int64':
        return new BigInt64Array(n);
      default:
        throw new Error(`memoryStorage: no ${dtype} outputs (${STORAGE_BYTES[dtype]} bytes)`);
    }
  };
  return {
    vectors,
    bytes,
    openVectors(location) {
      const v = vectors.get(location);
      if (v === undefined) {
        return Promise.reject(new KeOpsError('ERR_FILE_IO', `cannot open ${location}: no such vectors`));
      }
      return Promise.resolve(vectorsFromArray(v.data, v.dim, { dtype: v.dtype, name: location }));
    },
    createVectors(location, spec) {
      const data = arrayOf(spec.dtype, spec.rows * spec.dim);
      let state: 'open' | 'done' = 'open';
      const writer: VectorWriter = {
        writeRows(start, rows) {
          (data as unknown as { set(a: StorageArray, at: number): void }).set(rows, start * spec.dim);
          return Promise.resolve();
        },
        commit() {
          if (state === 'open') vectors.set(location, { data, dim: spec.dim, dtype: spec.dtype });
          state = 'done';
          return Promise.resolve();
        },
        abort() {
          state = 'done';
          return Promise.resolve();
        },
      };
      return Promise.resolve(writer);
    },
    exists: (location) => Promise.resolve(bytes.has(location)),
    readBytes: (location) => Promise.resolve(bytes.get(location)?.slice()),
    writeBytes(location, b) {
      bytes.set(location, b.slice());
      return Promise.resolve();
    },
    join: (folder, name) => `${folder}/${name}`,
  };
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Whether a Redis answers PING on 127.0.0.1:port. */
function pingRedis(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.on('error', () => finish(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      answer += d.toString('latin1');
      if (answer.includes('\r\n')) finish(answer.startsWith('+PONG'));
    });
  });
}

export const REDIS_SERVER = process.env.KEOPS_REDIS_SERVER ?? 'redis-server';

/** Whether a redis-server binary runs here. */
export function redisServerAvailable(): boolean {
  const r = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

export interface TestRedis {
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * The Redis the tests use: KEOPS_TEST_REDIS_URL when set (CI starts one), else a redis-server of our own on a free
 * port with no persistence, in a temporary folder; undefined when neither is possible.
 */
export async function testRedis(): Promise<TestRedis | undefined> {
  const given = process.env.KEOPS_TEST_REDIS_URL;
  if (given !== undefined && given !== '') return { url: given, stop: () => Promise.resolve() };
  if (!redisServerAvailable()) return undefined;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'keops-redis-'));
  const child: ChildProcess = spawn(
    REDIS_SERVER,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await pingRedis(port);
    if (up) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`redis-server did not start on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes rows to a vector file (format from the extension). */
export async function writeVectors(
  path: string,
  data: StorageArray,
  dim: number,
  dtype: StorageDtype,
): Promise<void> {
  const writer = await createVectorFileWriter(path, { rows: data.length / dim, dim, dtype });
  await writer.writeRows(0, data);
  await writer.commit();
}

/**
 * Checks that the files `ids` (and `distances`) hold exactly `expected`'s rows: the expected result is written
 * beside them, in the same formats (from their names), by the library's writer, and the bytes compared.
 */
export async function expectKnnFiles(expected: KnnResult, ids: string, distances?: string): Promise<void> {
  const outputs: [string, StorageArray, StorageDtype][] = [[ids, expected.ids, 'int32']];
  if (distances !== undefined) outputs.push([distances, expected.distances, 'float32']);
  for (const [path, data, dtype] of outputs) {
    const reference = join(dirname(path), `expected-${basename(path)}`);
    await writeVectors(reference, data, expected.k, dtype);
    expect(readFileSync(path), path).to.deep.equal(readFileSync(reference));
  }
}

/** Writes `rows` × `dim` values drawn from `r` (uniform [0, 1)) to a vector file of float32 or float64. */
export function writeRandomRows(
  path: string,
  rows: number,
  dim: number,
  dtype: 'float32' | 'float64',
  r: () => number,
): Promise<void> {
  const data = dtype === 'float32' ? new Float32Array(rows * dim) : new Float64Array(rows * dim);
  for (let k = 0; k < data.length; k++) data[k] = r();
  return writeVectors(path, data, dim, dtype);
}

/** knn() over two vector files (closed afterwards), on the CPU. */
export async function knnOfFiles(
  queries: string,
  base: string,
  options: { k: number; excludeSelf?: boolean; metric?: KnnMetric },
): Promise<KnnResult> {
  const q = await openVectorFile(queries);
  const b = await openVectorFile(base);
  try {
    return await knn(q, b, { ...options, backend: 'cpu' });
  } finally {
    await q.close();
    await b.close();
  }
}

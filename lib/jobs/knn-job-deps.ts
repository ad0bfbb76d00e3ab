/**
 * TEMPORARY SHIM (replaced by knn-api's and vector-files' work when they are merged): the k-NN search of one
 * query block and the result-file writers, as the k-NN job uses them.
 */
import { promises as fsp } from 'node:fs';
import { KeOpsError } from '../errors';
import { Genred } from '../genred';
import { reduceChunked } from './chunked';
import { allocateFloat, convertToFloat, type StorageDtype, type VectorSource } from '../io/vector-source';

export type KnnMetric = 'l2' | 'euclidean' | 'ip' | 'cosine' | 'l1';
export const KNN_METRICS: readonly KnnMetric[] = ['l2', 'euclidean', 'ip', 'cosine', 'l1'];

export interface BlockSearchOptions {
  readonly k: number;
  readonly metric: KnnMetric;
  readonly excludeSelf: boolean;
  readonly memoryLimit: number;
  readonly threads?: number;
  readonly devices?: 'all' | readonly number[];
  readonly signal?: AbortSignal;
  readonly onProgress?: (pairsDone: number) => void;
}

export interface BlockResult {
  readonly ids: Int32Array | BigInt64Array;
  readonly distances: Float32Array | Float64Array;
}

/** The k nearest base rows of query rows [q0, q1), each row sorted by (distance, id). */
export async function searchBlock(
  queries: VectorSource,
  base: VectorSource,
  q0: number,
  q1: number,
  options: BlockSearchOptions,
): Promise<BlockResult> {
  if (options.metric !== 'l2' || options.excludeSelf) throw new KeOpsError('ERR_INTERNAL', 'shim: l2 only');
  const dim = queries.dim;
  const x = convertToFloat(
    await queries.read(q0, q1),
    queries.dtype,
    allocateFloat('float32', (q1 - q0) * dim),
  );
  const genred = new Genred('SqDist(x,y)', [`x = Vi(${dim})`, `y = Vj(${dim})`], {
    reduction: 'KMin_ArgKMin',
    k: options.k,
    axis: 1,
    backend: 'cpu',
  });
  const y = {
    rows: base.rows,
    dtype: 'float32' as const,
    read: async (a: number, b: number) =>
      convertToFloat(await base.read(a, b), base.dtype, allocateFloat('float32', (b - a) * dim)),
  };
  const result = (await reduceChunked(genred, [x, y], {
    memoryLimit: options.memoryLimit,
    signal: options.signal,
    threads: options.threads,
    onProgress: (p) => options.onProgress?.(p.pairsDone),
  })) as { values: Float32Array; indices: Int32Array };
  return { ids: result.indices, distances: result.values };
}

export type ResultFormat = 'ibin' | 'fbin';

export interface ResultWriter {
  readonly path: string;
  readonly tempPath: string;
  writeRows(startRow: number, data: Int32Array | BigInt64Array | Float32Array | Float64Array): Promise<void>;
  sync(): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
  close(): Promise<void>;
}

export async function openVectorFile(path: string): Promise<VectorSource> {
  const handle = await fsp.open(path, 'r').catch((e: unknown) => {
    throw new KeOpsError('ERR_FILE_IO', `${path}: ${String(e)}`);
  });
  const header = Buffer.alloc(8);
  await handle.read(header, 0, 8, 0);
  const rows = header.readUInt32LE(0);
  const dim = header.readUInt32LE(4);
  const dtype: StorageDtype = path.endsWith('.u8bin') ? 'uint8' : 'float32';
  const size = dtype === 'uint8' ? 1 : 4;
  return {
    rows,
    dim,
    dtype,
    name: path,
    async read(a, b) {
      const buf = Buffer.alloc((b - a) * dim * size);
      await handle.read(buf, 0, buf.length, 8 + a * dim * size);
      return dtype === 'uint8'
        ? new Uint8Array(buf.buffer, buf.byteOffset, buf.length)
        : new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    },
    close: () => handle.close(),
  };
}

export async function createResultWriter(
  path: string,
  spec: { rows: number; dim: number; dtype: StorageDtype },
  resume: boolean,
): Promise<ResultWriter> {
  const tempPath = `${path}.tmp`;
  const handle = await fsp.open(tempPath, resume ? 'r+' : 'w');
  if (!resume) {
    const header = Buffer.alloc(8);
    header.writeUInt32LE(spec.rows, 0);
    header.writeUInt32LE(spec.dim, 4);
    await handle.write(header, 0, 8, 0);
    await handle.truncate(8 + spec.rows * spec.dim * 4);
  }
  return {
    path,
    tempPath,
    async writeRows(start, data) {
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      await handle.write(bytes, 0, bytes.length, 8 + start * spec.dim * 4);
    },
    sync: () => handle.sync(),
    async commit() {
      await handle.sync();
      await handle.close();
      await fsp.rename(tempPath, path);
    },
    async abort() {
      await handle.close().catch(() => undefined);
      await fsp.rm(tempPath, { force: true });
    },
    close: () => handle.close(),
  };
}

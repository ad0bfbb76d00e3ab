/** Benchmark data shared by the bench scripts: the same values every run, on every machine. */
import { openVectorFile } from '../lib/io/vector-file';

/** Uniform [0, 1) values from a fixed linear congruential generator (no dependency, no Math.random). */
export function uniform(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(count);
  for (let k = 0; k < count; k++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[k] = s / 2 ** 32;
  }
  return out;
}

/** The first `limit` images of a (gzipped) IDX image file, such as Fashion-MNIST's, as uint8 rows. */
export async function readIdxImages(
  file: string,
  limit: number,
): Promise<{ data: Uint8Array; rows: number; dim: number }> {
  const images = await openVectorFile(file);
  try {
    if (images.dtype !== 'uint8') throw new Error(`${file}: expected uint8 images, got ${images.dtype}`);
    const rows = Math.min(limit, images.rows);
    return { data: (await images.read(0, rows)) as Uint8Array, rows, dim: images.dim };
  } finally {
    await images.close();
  }
}

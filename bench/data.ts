/** Benchmark data shared by the bench scripts: the same values every run, on every machine. */

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

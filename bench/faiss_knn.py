"""faiss-cpu side of bench/highdim.ts: exact k-NN (IndexFlatL2) on the data the TypeScript script wrote.

    python3 bench/faiss_knn.py DIR NAME K THREADS REPEATS

reads DIR/NAME.json ({"nx", "ny", "dim", "sample": [query rows]}), DIR/NAME.x.f32 and DIR/NAME.y.f32 (row-major
float32), times IndexFlatL2 (add + search, best of REPEATS), and writes
  DIR/NAME.faiss.i32  the ids faiss returns (nx × K, int32),
  DIR/NAME.exact.i32  the exact ids of the sampled queries (len(sample) × K): float64 distances in the difference
                      form, stable sort, so ties go to the smallest index;
and prints one JSON line {"seconds": wall time, "cpu_seconds": CPU time of all threads in that run, ...}.
Run it with OMP_WAIT_POLICY=PASSIVE (bench/highdim.ts does) so that idle OpenMP threads do not spin: on a shared
machine spinning would inflate both faiss's wall and CPU times.
"""

import json
import sys
import time

import faiss
import numpy as np


def main() -> None:
    folder, name, k, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    meta = json.load(open(f"{folder}/{name}.json"))
    nx, ny, dim = meta["nx"], meta["ny"], meta["dim"]
    x = np.fromfile(f"{folder}/{name}.x.f32", dtype=np.float32).reshape(nx, dim)
    y = np.fromfile(f"{folder}/{name}.y.f32", dtype=np.float32).reshape(ny, dim)
    faiss.omp_set_num_threads(threads)
    best = float("inf")
    best_cpu = 0.0
    ids = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        index = faiss.IndexFlatL2(dim)
        index.add(y)
        _, ids = index.search(x, k)
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, best_cpu = seconds, time.process_time() - c0
    ids.astype(np.int32).tofile(f"{folder}/{name}.faiss.i32")

    y64 = y.astype(np.float64)
    exact = np.empty((len(meta["sample"]), k), dtype=np.int32)
    for row, q in enumerate(meta["sample"]):
        d = ((y64 - x[q].astype(np.float64)) ** 2).sum(axis=1)
        exact[row] = np.argsort(d, kind="stable")[:k]
    exact.tofile(f"{folder}/{name}.exact.i32")
    print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "faiss": faiss.__version__, "threads": threads}))


if __name__ == "__main__":
    main()

"""Python side of bench/knn.ts: faiss-cpu IndexFlatL2, scikit-learn KDTree, and the exact float64 reference.

    python3 bench/knn_peers.py PEER DIR CASE K QUERIES REPEATS THREADS

PEER is `faiss` (IndexFlatL2: add + search), `kdtree` (KDTree build + query) or `exact` (numpy, float64
distances in the difference form, stable sort: ties go to the smallest id). Reads DIR/CASE.x.f32 and
DIR/CASE.y.f32 (row-major float32) and DIR/CASE.json ({"nx", "ny", "dim", "sample"}); runs on the first QUERIES
query rows (`exact`: on the sampled rows), best of REPEATS, and writes DIR/CASE.PEER.K.i32 (ids, QUERIES × K, or
len(sample) × K for `exact`). Prints one JSON line: {"seconds", "max_rss_kib", "version"}; the peak RSS is this
process's, inputs included. Run it with OMP_WAIT_POLICY=PASSIVE so that idle OpenMP threads do not spin.
"""

import json
import resource
import sys
import time

import numpy as np


def main() -> None:
    peer, folder, case, k, queries, repeats, threads = sys.argv[1:8]
    k, queries, repeats, threads = int(k), int(queries), int(repeats), int(threads)
    meta = json.load(open(f"{folder}/{case}.json"))
    nx, ny, dim = meta["nx"], meta["ny"], meta["dim"]
    x = np.fromfile(f"{folder}/{case}.x.f32", dtype=np.float32).reshape(nx, dim)[:queries]
    y = np.fromfile(f"{folder}/{case}.y.f32", dtype=np.float32).reshape(ny, dim)
    best = float("inf")
    ids = None
    version = ""
    if peer == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        version = faiss.__version__
        for _ in range(repeats):
            t0 = time.perf_counter()
            index = faiss.IndexFlatL2(dim)
            index.add(y)
            _, ids = index.search(x, k)
            best = min(best, time.perf_counter() - t0)
    elif peer == "kdtree":
        import sklearn
        from sklearn.neighbors import KDTree

        version = sklearn.__version__
        for _ in range(repeats):
            t0 = time.perf_counter()
            tree = KDTree(y)
            _, ids = tree.query(x, k=k)
            best = min(best, time.perf_counter() - t0)
    elif peer == "exact":
        version = np.__version__
        y64 = y.astype(np.float64)
        full = np.fromfile(f"{folder}/{case}.x.f32", dtype=np.float32).reshape(nx, dim)
        ids = np.empty((len(meta["sample"]), k), dtype=np.int64)
        t0 = time.perf_counter()
        for row, q in enumerate(meta["sample"]):
            d = ((y64 - full[q].astype(np.float64)) ** 2).sum(axis=1)
            ids[row] = np.argsort(d, kind="stable")[:k]
        best = time.perf_counter() - t0
    else:
        raise SystemExit(f"unknown peer {peer}")
    ids.astype(np.int32).tofile(f"{folder}/{case}.{peer}.{k}.i32")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": best, "max_rss_kib": rss, "version": version}))


if __name__ == "__main__":
    main()

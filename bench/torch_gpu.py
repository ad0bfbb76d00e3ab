#!/usr/bin/env python3
"""PyTorch baseline for bench/cuda.ts: the same cases, on the same GPU, the way a PyTorch user writes them.

    python3 bench/torch_gpu.py [--sizes 1e4,1e5,1e6] [--d128-sizes LIST] [--quick] [--json out.json] [--device cuda|cpu]

Cases (M = N = each size, uniform points in the unit cube, float32 unless said), with the ids of bench/cuda.ts:
  gauss-f32 / gauss-f64            sum_j exp(-|x_i - y_j|^2) b_j, tensors on the host (copies to and from the
                                   GPU timed), float32 / float64
  gauss-f32-device / -f64-device   the same with the tensors already on the GPU and the result left there
  lse-f32                          logsumexp_j(-|x_i - y_j|^2), host tensors
  lse-grad-x-f32                   its gradient with respect to x (autograd, cotangent of ones), host tensors
  argkmin-d3-f32 / -d128-f32       topk(k=10, largest=False) of |x_i - y_j|^2 at D=3 and D=128 (D=128 at sizes
                                   <= 1e5 unless --sizes or --d128-sizes is given), host tensors

Squared distances are |x|^2 + |y|^2 - 2 x.y^T (one matmul, as torch.cdist does for large inputs; TF32 stays off,
PyTorch's default for matmuls). The M x N matrices are "dense" (the whole matrix at once) when the temporaries fit
in about 40% of the free GPU memory, and otherwise computed over chunks of rows of x; the method column says
which. Timings: torch.cuda.synchronize() before and after each run, one warm-up, the median of the repetitions.

--device cpu runs the same code on the CPU (for smoke tests at tiny sizes, where CUDA is absent).
Exits 2 when torch cannot be imported or CUDA is asked for and absent.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"bench/torch_gpu.py: PyTorch is not importable ({e}); install torch to run the baseline", file=sys.stderr)
    sys.exit(2)

BUDGET_S = 20.0  # seconds of repetitions per case at most (at least one repetition)
MEMORY_SHARE = 0.4  # share of the free memory the M x N temporaries may take
WARMUP_ROWS = 10**5  # larger sizes warm up on this many rows of x (and estimate a full run from it)
K = 10


def parse_sizes(text, flag):
    try:
        sizes = [int(round(float(s))) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(n < 1 for n in sizes):
        raise SystemExit(f"{flag} needs a comma-separated list of sizes >= 1, e.g. 1e4,1e5,1e6; got {text}")
    return sizes


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", help="M = N for every case (default 1e4,1e5,1e6)")
    p.add_argument("--d128-sizes", help="sizes of the D=128 ArgKMin (default: --sizes, or those <= 1e5)")
    p.add_argument("--quick", action="store_true", help="one warm-up and two repetitions")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default) or cpu (smoke tests)")
    a = p.parse_args()
    sizes = parse_sizes(a.sizes, "--sizes") if a.sizes else [10**4, 10**5, 10**6]
    if a.d128_sizes:
        d128 = parse_sizes(a.d128_sizes, "--d128-sizes")
    else:
        d128 = sizes if a.sizes else [n for n in sizes if n <= 10**5]
    return a, sizes, d128


def uniform(count, seed, dim):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, dim, generator=g, dtype=torch.float32)


class Bench:
    def __init__(self, device, quick):
        self.device = torch.device(device)
        self.quick = quick
        self.cuda = self.device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def free_bytes(self):
        if self.cuda:
            free, _total = torch.cuda.mem_get_info(self.device)
            return free
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2 << 30

    def chunk_rows(self, m, n, elem_bytes, matrices):
        """Rows of x per chunk so that `matrices` M x N temporaries fit in MEMORY_SHARE of the free memory."""
        if self.cuda:
            torch.cuda.empty_cache()
        need = m * n * elem_bytes * matrices
        budget = self.free_bytes() * MEMORY_SHARE
        if need <= budget:
            return m, "dense"
        rows = max(1, int(budget // (n * elem_bytes * matrices)))
        return rows, f"chunks of {rows} rows ({need / 2**30:.3g} GiB dense)"

    def repetitions(self, size, warmup_s):
        if self.quick:
            return 2
        wanted = 10 if size <= 10**4 else 5 if size <= 10**5 else 3
        return max(1, min(wanted, int(BUDGET_S // max(warmup_s, 1e-6))))

    def measure(self, size, run, warmup=None):
        """One warm-up (on a slice of the rows for large sizes: `warmup` returns it and the share of the work it
        does), then the median of the repetitions; the estimate of a full run sets their number."""
        self.sync()
        t0 = time.perf_counter()
        share = 1.0
        if warmup is not None:
            share = warmup()
        else:
            run()
        self.sync()
        warm = (time.perf_counter() - t0) / share
        times = []
        result = None
        for _ in range(self.repetitions(size, warm)):
            self.sync()
            t0 = time.perf_counter()
            result = run()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), times, result


def sq_dist(x, y, y2):
    """|x_i - y_j|^2 for a block of rows x (m x D) against y (n x D); y2 = |y|^2 as a row."""
    d2 = torch.addmm(y2, x, y.T, beta=1, alpha=-2)
    d2.add_((x * x).sum(1, keepdim=True))
    return d2.clamp_min_(0)


def sq_dist_autograd(x, y, y2):
    d2 = (x * x).sum(1, keepdim=True) + y2 - 2 * (x @ y.T)
    return d2.clamp_min(0)


def gauss_chunked(x, y, b, rows):
    y2 = (y * y).sum(1)[None, :]
    out = torch.empty(x.shape[0], 1, dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], rows):
        k = sq_dist(x[s : s + rows], y, y2)
        out[s : s + rows] = k.neg_().exp_() @ b
    return out


def lse_chunked(x, y, rows):
    y2 = (y * y).sum(1)[None, :]
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = torch.logsumexp(sq_dist(x[s : s + rows], y, y2).neg_(), dim=1)
    return out


def lse_grad_chunked(x, y, cot, rows):
    """d/dx of <cot, logsumexp_j(-|x_i - y_j|^2)> by autograd, one chunk of rows at a time (rows are independent)."""
    y2 = (y * y).sum(1)[None, :]
    out = torch.empty_like(x)
    for s in range(0, x.shape[0], rows):
        xi = x[s : s + rows].detach().requires_grad_(True)
        lse = torch.logsumexp(-sq_dist_autograd(xi, y, y2), dim=1)
        (g,) = torch.autograd.grad(lse, xi, grad_outputs=cot[s : s + rows])
        out[s : s + rows] = g
    return out


def knn_chunked(x, y, rows):
    y2 = (y * y).sum(1)[None, :]
    k = min(K, y.shape[0])
    out = torch.empty(x.shape[0], k, dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = torch.topk(sq_dist(x[s : s + rows], y, y2), k, dim=1, largest=False, sorted=True).indices
    return out


def sample_rows(m):
    count = min(m, 6)
    return [(k * (m - 1)) // max(1, count - 1) for k in range(count)]


def ref_sq_dist(xh, yh, idx):
    """float64 |x_i - y_j|^2 of the sample rows, one row at a time (|idx| x N)."""
    y = yh.double()
    return torch.stack([((y - xh[i].double()) ** 2).sum(1) for i in idx])


def itemsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def check_close(got, want, tol, relative):
    err = (got - want).abs()
    if relative:
        err = err / want.abs().clamp_min(1e-30)
    worst = float(err.max())
    ok = math.isfinite(worst) and worst <= tol
    kind = "rel." if relative else "abs."
    return f"max {kind} err {worst:.1e}" + ("" if ok else f" > {tol} FAILED"), ok


def main():
    args, sizes, d128_sizes = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench/torch_gpu.py: CUDA is not available to PyTorch here "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu for a smoke test",
            file=sys.stderr,
        )
        sys.exit(2)
    bench = Bench(args.device, args.quick)
    dev = bench.device
    if bench.cuda:
        props = torch.cuda.get_device_properties(dev)
        gpu = props.name
        device_info = {
            "name": props.name,
            "computeCapability": [props.major, props.minor],
            "totalMemory": props.total_memory,
            "multiprocessors": props.multi_processor_count,
        }
    else:
        gpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        device_info = {"name": gpu}
    date = datetime.datetime.now(datetime.timezone.utc).isoformat()
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    print(f"## PyTorch {torch.__version__} benchmark, {date[:10]}\n")
    print(
        f"Device: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}, "
        f"TF32 matmuls {'on' if tf32 else 'off'}. "
        f"Sizes M = N = {', '.join(map(str, sizes))} (D=128: {', '.join(map(str, d128_sizes)) or 'none'}). "
        f"Median of {'2 (--quick)' if args.quick else 'up to 10 / 5 / 3'} repetitions after one warm-up.\n"
    )
    print("| case | M = N | time | Gpairs/s | reps | method | check |\n|---|---|---|---|---|---|---|")
    cases = []

    def record(case_id, label, n, d, dtype, io, body):
        entry = {"id": case_id, "label": label, "size": n, "M": n, "N": n, "D": d, "dtype": dtype, "io": io}
        try:
            seconds, times, method, check, ok = body()
            entry.update(
                seconds=seconds,
                gpairsPerS=n * n / seconds / 1e9,
                reps=len(times),
                times=times,
                method=method,
                check=check,
                ok=ok,
            )
            line = f"| {label} | {n} | {seconds:.4g} s | {n * n / seconds / 1e9:.3g} | {len(times)} | {method} | {check} |"
        except Exception as e:  # a failing case (out of memory...) is reported, the others still run
            entry.update(seconds=None, gpairsPerS=None, reps=0, times=[], method="", check="", ok=False, error=repr(e))
            line = f"| {label} | {n} | failed | | | | {e!r} |"
            if bench.cuda:
                torch.cuda.empty_cache()
        cases.append(entry)
        print(line, flush=True)

    def warm_slice(n, work):
        """Warm-up on the first rows only for large sizes; returns a function giving the share of the work done."""
        rows = min(n, WARMUP_ROWS)

        def warm():
            work(rows)
            return rows / n

        return warm

    max_n = max(sizes)
    x_host32 = uniform(max_n, 1, 3)
    y_host32 = uniform(max_n, 2, 3)
    b_host32 = uniform(max_n, 3, 1)

    # Gaussian sum
    for dtype in (torch.float32, torch.float64):
        name = "float32" if dtype == torch.float32 else "float64"
        suffix = "f32" if dtype == torch.float32 else "f64"
        tol = 1e-3 if dtype == torch.float32 else 1e-9
        for io in ("host", "device"):
            for n in sizes:
                xh, yh, bh = (t[:n].to(dtype) for t in (x_host32, y_host32, b_host32))

                def body(n=n, xh=xh, yh=yh, bh=bh, io=io, dtype=dtype, tol=tol):
                    rows, method = bench.chunk_rows(n, n, itemsize(dtype), 2)
                    if io == "host":

                        def run(m=n):
                            x, y, b = xh[:m].to(dev), yh.to(dev), bh.to(dev)
                            return gauss_chunked(x, y, b, rows).cpu()

                    else:
                        xd, yd, bd = xh.to(dev), yh.to(dev), bh.to(dev)

                        def run(m=n):
                            return gauss_chunked(xd[:m], yd, bd, rows)

                    seconds, times, out = bench.measure(n, run, warm_slice(n, run))
                    idx = sample_rows(n)
                    want = (-ref_sq_dist(xh, yh, idx)).exp() @ bh.double()
                    check, ok = check_close(out[idx].double().cpu(), want, tol, relative=True)
                    return seconds, times, method, check, ok

                label = f"Gaussian sum, {name}, {'host tensors' if io == 'host' else 'tensors on the device'}"
                record(f"gauss-{suffix}{'-device' if io == 'device' else ''}", label, n, 3, name, io, body)

    # LogSumExp and its gradient (host tensors in and out, as keops-node's call() and grad())
    x_host = uniform(max_n, 4, 3)
    y_host = uniform(max_n, 5, 3)
    for n in sizes:
        xh, yh = x_host[:n], y_host[:n]
        idx = sample_rows(n)
        d2ref = ref_sq_dist(xh, yh, idx)

        def lse_body(n=n, xh=xh, yh=yh, idx=idx, d2ref=d2ref):
            rows, method = bench.chunk_rows(n, n, 4, 3)

            def run(m=n):
                return lse_chunked(xh[:m].to(dev), yh.to(dev), rows).cpu()

            seconds, times, out = bench.measure(n, run, warm_slice(n, run))
            check, ok = check_close(out[idx].double(), torch.logsumexp(-d2ref, dim=1), 1e-3, relative=False)
            return seconds, times, method, check, ok

        record("lse-f32", "LogSumExp of -SqDist, float32", n, 3, "float32", "host", lse_body)

        def grad_body(n=n, xh=xh, yh=yh, idx=idx, d2ref=d2ref):
            # Autograd keeps about five M x N temporaries (distances, their exponentials, the backward's).
            rows, method = bench.chunk_rows(n, n, 4, 5)
            cot = torch.ones(n)

            def run(m=n):
                return lse_grad_chunked(xh[:m].to(dev), yh.to(dev), cot[:m].to(dev), rows).cpu()

            seconds, times, out = bench.measure(n, run, warm_slice(n, run))
            w = torch.softmax(-d2ref, dim=1)  # |idx| x n
            want = -2 * (xh[idx].double() - w @ yh.double())
            check, ok = check_close(out[idx].double(), want, 1e-3, relative=False)
            return seconds, times, method + ", autograd", check, ok

        record("lse-grad-x-f32", "gradient of the LogSumExp w.r.t. x, float32", n, 3, "float32", "host", grad_body)

    # ArgKMin K=10 (topk, largest=False)
    for d, knn_sizes in ((3, sizes), (128, d128_sizes)):
        if not knn_sizes:
            continue
        top = max(knn_sizes)
        xk = uniform(top, 10 + d, d)
        yk = uniform(top, 20 + d, d)
        for n in knn_sizes:
            xh, yh = xk[:n], yk[:n]

            def knn_body(n=n, xh=xh, yh=yh, d=d):
                rows, method = bench.chunk_rows(n, n, 4, 2)

                def run(m=n):
                    return knn_chunked(xh[:m].to(dev), yh.to(dev), rows).cpu()

                seconds, times, out = bench.measure(n, run, warm_slice(n, run))
                idx = sample_rows(n)[: 4 if d > 16 else 6]
                k = min(K, n)
                want = torch.topk(ref_sq_dist(xh, yh, idx), k, dim=1, largest=False).indices
                found = sum(len(set(out[i, :k].tolist()) & set(want[r].tolist())) for r, i in enumerate(idx))
                recall = found / (len(idx) * k)
                ok = recall >= 0.9
                check = f"recall {recall:.2f}" + ("" if ok else " < 0.9 FAILED")
                return seconds, times, method + ", topk", check, ok

            record(f"argkmin-d{d}-f32", f"ArgKMin K=10, D={d}, float32", n, d, "float32", "host", knn_body)

    failures = [c["id"] for c in cases if not c.get("ok")]
    if args.json:
        out = os.path.abspath(args.json)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(
                {
                    "tool": "pytorch",
                    "version": torch.__version__,
                    "cuda": torch.version.cuda,
                    "date": date,
                    "quick": args.quick,
                    "deviceKind": bench.device.type,
                    "sizes": sizes,
                    "d128Sizes": d128_sizes,
                    "gpu": gpu,
                    "device": device_info,
                    "python": platform.python_version(),
                    "tf32": tf32,
                    "cases": cases,
                    "failures": len(failures),
                },
                f,
                indent=2,
            )
            f.write("\n")
        print(f"\nwrote {out}")
    if failures:
        print(f"\n{len(failures)} case(s) failed or did not pass their check: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

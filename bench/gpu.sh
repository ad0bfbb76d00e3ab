#!/usr/bin/env bash
# GPU benchmark: keops-node (bench/cuda.ts) and PyTorch (bench/torch_gpu.py) on the same GPU with the same sizes,
# then one side-by-side Markdown table on stdout (also written to $OUT_DIR/gpu-results.md).
#
#   bash bench/gpu.sh [--sizes 1e4,1e5,1e6] [--d128-sizes LIST] [--quick] [--only keops|torch|merge] [--torch-device cpu]
#   npm run bench:gpu -- --quick
#
# On the GPU machine (see shared/gpu/prepare.sh): bash .gpu/run.sh bash bench/gpu.sh
# The JSON files and the table go to $BENCH_OUT, else the device tool's $OUT, else a temporary folder.
# --only runs one side (e.g. when one run must fit a time limit), and --only merge just merges the JSON files
# already in that folder. Without --sizes, both sides use 1e4,1e5,1e6 and cap ArgKMin D=128 at 1e5.
# Set PYTHON to choose the interpreter (default python3). Exit status: 0 when both sides ran cleanly, else 1
# (the table still shows whatever was measured).
set -uo pipefail
cd "$(dirname "$0")/.."

size_args=()
quick=()
only=all
torch_device=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes | --d128-sizes)
      [ $# -ge 2 ] || { echo "gpu.sh: $1 needs a value" >&2; exit 2; }
      size_args+=("$1" "$2")
      shift 2
      ;;
    --quick) quick=(--quick); shift ;;
    --only)
      [ $# -ge 2 ] || { echo "gpu.sh: --only needs keops, torch or merge" >&2; exit 2; }
      only=$2
      shift 2
      ;;
    --torch-device)
      [ $# -ge 2 ] || { echo "gpu.sh: --torch-device needs cuda or cpu" >&2; exit 2; }
      torch_device=$2
      shift 2
      ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$only" in all | keops | torch | merge) ;; *) echo "gpu.sh: --only keops|torch|merge, not $only" >&2; exit 2 ;; esac

out_dir=${BENCH_OUT:-${OUT:-$(mktemp -d)}}
mkdir -p "$out_dir"
keops_json=$out_dir/keops-cuda.json
torch_json=$out_dir/torch-gpu.json
python=${PYTHON:-python3}
status=0

if [ "$only" = all ] || [ "$only" = keops ]; then
  rm -f "$keops_json"
  echo "== keops-node: bench/cuda.ts" >&2
  node -r ts-node/register/transpile-only bench/cuda.ts ${size_args[@]+"${size_args[@]}"} ${quick[@]+"${quick[@]}"} --json "$keops_json" >&2
  rc=$?
  [ $rc -eq 0 ] || { echo "gpu.sh: bench/cuda.ts exited with $rc" >&2; status=1; }
fi

if [ "$only" = all ] || [ "$only" = torch ]; then
  rm -f "$torch_json"
  echo "== PyTorch: bench/torch_gpu.py" >&2
  "$python" bench/torch_gpu.py ${size_args[@]+"${size_args[@]}"} ${quick[@]+"${quick[@]}"} --device "$torch_device" --json "$torch_json" >&2
  rc=$?
  [ $rc -eq 0 ] || { echo "gpu.sh: bench/torch_gpu.py exited with $rc" >&2; status=1; }
fi

# The side-by-side table (Python's standard library only).
"$python" - "$keops_json" "$torch_json" <<'PY' | tee "$out_dir/gpu-results.md"
import json
import os
import sys


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


keops, torch = load(sys.argv[1]), load(sys.argv[2])
if keops is None and torch is None:
    print("gpu.sh: no results to merge (neither %s nor %s exists)" % (sys.argv[1], sys.argv[2]), file=sys.stderr)
    sys.exit(1)


def seconds(s):
    if s is None:
        return "failed"
    if s >= 1:
        return "%.2f s" % s
    if s >= 0.01:
        return "%.3f s" % s
    return "%.2f ms" % (s * 1000)


def rate(c):
    return "" if c is None or c.get("gpairsPerS") is None else "%.3g" % c["gpairsPerS"]


ref = keops or torch
date = ref["date"][:10]
print("## GPU benchmark, %s\n" % date)
lines = []
if keops is not None:
    dev = keops.get("device") or {}
    mem = dev.get("totalMemory")
    lines.append(
        "keops-node %s: GPU %s%s, driver CUDA %s, NVRTC %s, Node %s%s."
        % (
            keops.get("version"),
            keops.get("gpu"),
            "" if mem is None else " (%.1f GiB)" % (mem / 2**30),
            keops.get("driver"),
            keops.get("nvrtc"),
            keops.get("node"),
            " **(emulated GPU: figures meaningless)**" if keops.get("emulated") else "",
        )
    )
if torch is not None:
    lines.append(
        "PyTorch %s (CUDA %s) on %s, Python %s."
        % (torch.get("version"), torch.get("cuda"), torch.get("gpu"), torch.get("python"))
    )
if keops is not None and torch is not None and keops.get("gpu") != torch.get("gpu"):
    lines.append("**Warning: the two sides ran on different devices.**")
sizes = ", ".join(str(n) for n in ref.get("sizes", []))
d128 = ", ".join(str(n) for n in ref.get("d128Sizes", []))
lines.append(
    "M = N = %s (ArgKMin D=128: %s); uniform points in the unit cube; median of the repetitions after one warm-up%s."
    % (sizes, d128 or "none", " (--quick)" if ref.get("quick") else "")
)
print(" ".join(lines) + "\n")

# Cases, in keops-node's order, then any PyTorch-only ones.
order = []
by_key = {}
for side, data in (("keops", keops), ("torch", torch)):
    for c in (data or {}).get("cases", []):
        key = (c["id"], c["size"])
        if key not in by_key:
            by_key[key] = {"label": c["label"]}
            order.append(key)
        by_key[key][side] = c

print("| case | M = N | keops-node | Gpairs/s | PyTorch | Gpairs/s | PyTorch method | keops-node speed-up | target |")
print("|---|---|---|---|---|---|---|---|---|")
for key in order:
    row = by_key[key]
    k, t = row.get("keops"), row.get("torch")
    ks = None if k is None else k.get("seconds")
    ts = None if t is None else t.get("seconds")
    speed = ("%.3g×" % (ts / ks)) if ks and ts else ""
    notes = []
    for side, c in (("keops-node", k), ("PyTorch", t)):
        if c is not None and (c.get("error") or not c.get("ok", True)):
            notes.append("%s: %s" % (side, c.get("error") or c.get("check")))
    target = (k or {}).get("target", "")
    print(
        "| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
        % (
            row["label"].replace(", host arrays", "").replace(", host tensors", "") + (" (%s)" % "; ".join(notes) if notes else ""),
            key[1],
            "" if k is None else seconds(ks),
            rate(k),
            "" if t is None else seconds(ts),
            rate(t),
            "" if t is None else t.get("method", ""),
            speed,
            target,
        )
    )

if keops is not None and keops.get("latency"):
    print("\n| keops-node latency | value | target | note |\n|---|---|---|---|")
    for l in keops["latency"]:
        value = "failed" if l.get("value") is None else "%.1f %s" % (l["value"], l["unit"])
        print("| %s | %s | %s | %s |" % (l["label"], value, l.get("target", ""), l.get("error") or l.get("note", "")))

print(
    "\n“host” rows include the copies to and from the GPU (typed arrays / CPU tensors in and out); “DeviceArray in/out”"
    " and “tensors on the device” rows keep inputs and result on the GPU. Speed-up = PyTorch time / keops-node time."
)
PY
merge=${PIPESTATUS[0]}
[ "$merge" -eq 0 ] || status=1
echo "results in $out_dir (keops-cuda.json, torch-gpu.json, gpu-results.md)" >&2
exit $status

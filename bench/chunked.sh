#!/usr/bin/env bash
# Chunked runs vs one in-memory call (bench/chunked.ts), each mode in its own process under /usr/bin/time -v so
# that its peak RSS is its own; `baseline` (library and kernels loaded, no data) is the fixed overhead. Compiled
# to JavaScript first (ts-node alone holds ~100 MiB). Usage: bash bench/chunked.sh [M] [N] [modes]
# (defaults: the issue's 200000 50000000, "baseline memory streamed").
set -euo pipefail
cd "$(dirname "$0")/.."
M="${1:-200000}"
N="${2:-50000000}"
MODES="${3:-baseline memory streamed}"
OUT=node_modules/.cache/keops-bench-js
npx tsc --outDir "$OUT" --rootDir . --target ES2022 --module nodenext --moduleResolution nodenext \
  --esModuleInterop --skipLibCheck --types node --ignoreConfig bench/chunked.ts
for reduction in sum argkmin; do
  for mode in $MODES; do
    log="$(mktemp)"
    line="$(/usr/bin/time -v node "$OUT/bench/chunked.js" \
      --mode "$mode" --reduction "$reduction" --M "$M" --N "$N" 2>"$log")"
    rss_kb="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")"
    rm -f "$log"
    echo "${line%\}},\"peakRssMiB\":$((rss_kb / 1024))}"
  done
done

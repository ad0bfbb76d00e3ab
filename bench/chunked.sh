#!/usr/bin/env bash
# Chunked runs vs one in-memory call (bench/chunked.ts), each mode in its own process under /usr/bin/time -v so
# that its peak RSS is its own. Usage: bash bench/chunked.sh [M] [N]   (defaults: the issue's 200000 50000000)
set -euo pipefail
cd "$(dirname "$0")/.."
M="${1:-200000}"
N="${2:-50000000}"
for reduction in sum argkmin; do
  for mode in memory streamed; do
    log="$(mktemp)"
    line="$(/usr/bin/time -v node -r ts-node/register/transpile-only bench/chunked.ts \
      --mode "$mode" --reduction "$reduction" --M "$M" --N "$N" 2>"$log")"
    rss_kb="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")"
    rm -f "$log"
    echo "${line%\}},\"peakRssMiB\":$((rss_kb / 1024))}"
  done
done

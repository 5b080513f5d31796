#!/usr/bin/env bash
# /healthz throughput and latency on loopback with wrk (Debian package), 2 threads.
# Usage: bench/healthz.sh [DURATION_SECS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
dur="${1:-10}"
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk); }
cargo build --release -q -p bunko-server
data=$(mktemp -d)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
BUNKO__LOG__FORMAT=json target/release/bunko serve --listen "127.0.0.1:$port" --data-dir "$data/d" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.05; done
for c in 1 16 64; do
  echo "== wrk -c$c -d${dur}s --latency /healthz"
  t=$(( c < 2 ? 1 : 2 ))
  wrk -t"$t" -c"$c" -d"${dur}s" --latency "http://127.0.0.1:$port/healthz" | grep -E 'Requests/sec|  50%|  99%|Latency  '
done
echo "== RSS after load: $(grep VmRSS /proc/$pid/status)"

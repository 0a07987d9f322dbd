#!/usr/bin/env bash
# Memory per stored copy: N keys (default 1,000,000) of 100-byte values into a local
# piazza-cluster (3 slaves in one process: two copies of each key) and into memcached;
# RSS from /proc after loading. Also: N concurrent connections (default 1000) served for
# 3 seconds. Usage: bench/memory.sh [keys] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release
keys=${1:-1000000}
conns=${2:-1000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }

"$bin/piazza-cluster" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --slave-port 0 \
  --data-dir "$work/p" --log-level warn >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q '^piazza cluster' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^piazza cluster: coordinator \([^ ]*\).*/\1/p' "$work/out")
before=$(rss $pid)
"$bin/piazza-bench" --coordinator "$addr" --keys "$keys" --connections 16 --ops 1 --preload >/dev/null
after=$(rss $pid)
echo "| piazza-cluster (3 slaves, 2 copies) | $keys | $(( (after - before) / 1048576 )) MiB | $(( (after - before) / (2 * keys) )) B |"

port=$((20000 + RANDOM % 20000))
memcached -u "$(id -un)" -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 4096 &
mpid=$!
sleep 0.5
mbefore=$(rss $mpid)
"$bin/piazza-bench" --coordinator "127.0.0.1:$port" --protocol memcache --keys "$keys" --connections 16 --ops 1 --preload >/dev/null
mafter=$(rss $mpid)
echo "| memcached (1 copy) | $keys | $(( (mafter - mbefore) / 1048576 )) MiB | $(( (mafter - mbefore) / keys )) B |"

echo
line=$("$bin/piazza-bench" --coordinator "$addr" --keys 10000 --connections "$conns" --seconds 3 --get-ratio 0.9 --json)
echo "$conns connections to Piazza for 3 s: $line"

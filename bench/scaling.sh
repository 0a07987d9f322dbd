#!/usr/bin/env bash
# From 10k to 1M keys: for each key count (default 10000, 100000 and 1000000), a fresh
# local piazza-cluster (3 slaves in one process, log on: two copies of each key), then a
# fresh memcached (-t 2 -m 4096). Each is preloaded with the keys (100-byte values) and
# its RSS growth from /proc is divided by the copies stored; then piazza-bench runs 32
# connections, 90/10 get/set over uniform keys, for 5 s. Prints a Markdown table.
# Usage: bench/scaling.sh [keys ...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release
if [ $# -gt 0 ]; then counts=("$@"); else counts=(10000 100000 1000000); fi
conns=32
secs=5
work=$(mktemp -d)
# `|| true`: with nothing left running, kill fails, and set -e would skip the rm.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }

# measure NAME COPIES PID ADDR PROTOCOL KEYS: preload, RSS growth, timed run; one row.
measure() {
  local name=$1 copies=$2 pid=$3 addr=$4 protocol=$5 keys=$6 before after line
  before=$(rss "$pid")
  "$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys "$keys" \
    --connections 16 --ops 1 --preload >/dev/null
  after=$(rss "$pid")
  line=$("$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys "$keys" \
    --value-size 100 --connections "$conns" --seconds "$secs" --get-ratio 0.9 --json)
  get() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$line"; }
  if [ "$(get errors)" != 0 ]; then echo "$name, $keys keys: $(get errors) errors" >&2; fi
  printf '| %s | %s | %s | %s | %.0f | %s |\n' "$keys" "$name" \
    "$(( (after - before) / 1048576 ))" "$(( (after - before) / (copies * keys) ))" \
    "$(get ops_per_sec)" "$(get p99_us)"
}

echo "| keys | server | RSS growth MiB | bytes per stored copy | ops/s 90/10 | p99 us |"
echo "| --- | --- | --- | --- | --- | --- |"
for keys in "${counts[@]}"; do
  "$bin/piazza-cluster" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --slave-port 0 \
    --data-dir "$work/p-$keys" --log-level warn >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 100); do grep -q '^piazza cluster' "$work/out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^piazza cluster: coordinator \([^ ]*\).*/\1/p' "$work/out")
  if [ -z "$addr" ]; then echo "piazza-cluster did not start:" >&2; cat "$work/err" >&2; exit 1; fi
  measure "piazza-cluster (3 slaves, 2 copies)" 2 "$pid" "$addr" binary "$keys"
  kill "$pid"
  wait "$pid" || true
  rm -rf "$work/p-$keys"

  port=$((20000 + RANDOM % 20000))
  memcached -u "$(id -un)" -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 4096 &
  mpid=$!
  sleep 0.5
  measure "memcached (1 copy)" 1 "$mpid" "127.0.0.1:$port" memcache "$keys"
  kill "$mpid"
  wait "$mpid" || true
done

#!/usr/bin/env bash
# From 10k to 1M keys: for each key count (default 10000, 100000 and 1000000), a fresh
# local piazza-cluster (3 slaves in one process, log on: two copies of each key), then a
# fresh memcached (-t 2 -m 4096). Each is preloaded with the keys (100-byte values) and
# its RSS growth from /proc is divided by the copies stored; then piazza-bench runs 32
# connections, 90/10 get/set over uniform keys, for 5 s. Prints a Markdown table.
# Usage: bench/scaling.sh [keys ...]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
if [ $# -gt 0 ]; then counts=("$@"); else counts=(10000 100000 1000000); fi
conns=32
secs=5
bench_setup
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
  get() { field "$1" "$line"; }
  if [ "$(get errors)" != 0 ]; then echo "$name, $keys keys: $(get errors) errors" >&2; fi
  printf '| %s | %s | %s | %s | %.0f | %s |\n' "$keys" "$name" \
    "$(( (after - before) / 1048576 ))" "$(( (after - before) / (copies * keys) ))" \
    "$(get ops_per_sec)" "$(get p99_us)"
}

echo "| keys | server | RSS growth MiB | bytes per stored copy | ops/s 90/10 | p99 us |"
echo "| --- | --- | --- | --- | --- | --- |"
for keys in "${counts[@]}"; do
  start_cluster "$work/p-$keys"
  measure "piazza-cluster (3 slaves, 2 copies)" 2 "$piazza_pid" "$piazza" binary "$keys"
  kill "$piazza_pid"
  wait "$piazza_pid" || true
  rm -rf "$work/p-$keys"

  start_memcached -m 4096
  measure "memcached (1 copy)" 1 "$memcached_pid" "$memcached" memcache "$keys"
  kill "$memcached_pid"
  wait "$memcached_pid" || true
done

#!/usr/bin/env bash
# Durability costs: SET ops/s at 32 connections (100-byte values, every write on two
# slaves' logs) with --fsync never, everysec and always; log bytes per stored copy; and
# the restart time of a cluster holding N keys (default 1,000,000): SIGKILL everything,
# start it again on the same addresses and data dirs, time until it serves.
# Usage: bench/durability.sh [keys-for-restart]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release
keys=${1:-1000000}
now() { date +%s%N; }

echo "| --fsync | SET ops/s (32 conns) | p50 us | p99 us | log bytes per stored copy |"
echo "| --- | --- | --- | --- | --- |"
for mode in never everysec always; do
  work=$(mktemp -d)
  "$bin/piazza-cluster" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --slave-port 0 \
    --data-dir "$work" --fsync "$mode" --log-level warn >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 100); do grep -q '^piazza cluster' "$work/out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^piazza cluster: coordinator \([^ ]*\).*/\1/p' "$work/out")
  # Log bytes per copy: 10,000 fresh keys written once.
  before=$(cat "$work"/slave-*/wal.*.log | wc -c)
  "$bin/piazza-bench" --coordinator "$addr" --keys 10000 --connections 8 --ops 1 --preload >/dev/null
  after=$(cat "$work"/slave-*/wal.*.log | wc -c)
  per_copy=$(( (after - before) / 20000 ))
  line=$("$bin/piazza-bench" --coordinator "$addr" --keys 10000 --connections 32 --seconds 4 --get-ratio 0 --json)
  get() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$line"; }
  printf '| %s | %.0f | %s | %s | %s |\n' "$mode" "$(get ops_per_sec)" "$(get p50_us)" "$(get p99_us)" "$per_copy"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
done

echo
echo "| keys | log + snapshot bytes on disk (all slaves) | restart: start → serving (ms) |"
echo "| --- | --- | --- |"
work=$(mktemp -d)
start_all() {
  "$bin/piazza-coordinator" --listen "$1" --heartbeat 127.0.0.1:0 --data-dir "$work/c" --log-level warn 2>"$work/c.err" &
  for _ in $(seq 100); do grep -q '^listening on' "$work/c.err" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on //p' "$work/c.err")
  for i in 1 2 3; do
    "$bin/piazza-slave" --listen "${slave_addr[$i]:-127.0.0.1:0}" --coordinator "$addr" \
      --data-dir "$work/s$i" --log-level warn 2>"$work/s$i.err" &
  done
}
serving() { "$bin/piazza-client" --coordinator "$addr" get probe >/dev/null 2>&1; [ $? -eq 1 ]; }
declare -a slave_addr
start_all 127.0.0.1:0
until [ "$("$bin/piazza-client" --coordinator "$addr" status 2>/dev/null | grep -c ' alive ')" -eq 3 ]; do sleep 0.1; done
for i in 1 2 3; do slave_addr[i]=$(sed -n 's/^listening on //p' "$work/s$i.err"); done
"$bin/piazza-bench" --coordinator "$addr" --keys "$keys" --connections 16 --ops 1 --preload >/dev/null
pkill -9 -f "$work" || true
sleep 0.5
bytes=$(cat "$work"/s*/wal.*.log "$work"/s*/snapshot.* 2>/dev/null | wc -c)
t0=$(now)
start_all "$addr"
until serving; do sleep 0.02; done
t1=$(now)
echo "| $keys | $bytes | $(( (t1 - t0) / 1000000 )) |"
pkill -9 -f "$work" || true
rm -rf "$work"

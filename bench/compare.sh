#!/usr/bin/env bash
# Piazza next to memcached and Redis on this machine, in one run: starts memcached and
# Redis with one replica (if installed) and a local Piazza cluster of 3 slaves on
# loopback, then runs piazza-bench against each (Piazza: through the coordinator with
# the binary and the text protocol, and with direct routing) for 1, 8, 32 and 128 connections,
# 100-byte values, 90/10 and 0/100 get/set. Redis runs with `WAIT 1 0` after every SET,
# so a SET counts once the replica has it, like Piazza's two acknowledged copies.
# Prints a Markdown table. Usage: bench/compare.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
secs=${1:-3}
bench_setup

start_cluster "$work/piazza"

targets=("piazza-binary binary $piazza" "piazza-direct binary $piazza --direct" "piazza-text memcache $piazza")
if command -v memcached >/dev/null; then
  start_memcached -m 2048
  targets+=("memcached memcache $memcached")
else
  echo "memcached not installed (apt-get install memcached): skipping it" >&2
fi
if command -v redis-server >/dev/null; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --daemonize no >"$work/redis.log" 2>&1 &
  redis-server --port $((rport + 1)) --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --replicaof 127.0.0.1 "$rport" --daemonize no >"$work/replica.log" 2>&1 &
  sleep 0.5
  # Blocks until the replica has synced and acknowledged.
  "$bin/piazza-bench" --coordinator "127.0.0.1:$rport" --protocol resp --redis-wait --get-ratio 0 --ops 1 --connections 1 >/dev/null
  targets+=("redis+replica resp 127.0.0.1:$rport --redis-wait")
else
  echo "redis-server not installed (apt-get install redis-server): skipping it" >&2
fi

echo "| target | connections | get ratio | ops/s | p50 us | p99 us | p99.9 us | max us | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for t in "${targets[@]}"; do
  read -r name protocol addr extra <<<"$t"
  "$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys 10000 \
    --connections 8 --ops 10000 --preload >/dev/null
  for conns in 1 8 32 128; do
    for ratio in 0.9 0; do
      # shellcheck disable=SC2086 # $extra holds flags, one word each
      line=$("$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys 10000 \
        --value-size 100 --connections "$conns" --seconds "$secs" --get-ratio "$ratio" --json ${extra:-})
      get() { field "$1" "$line"; }
      printf '| %s | %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$name" "$conns" "$ratio" \
        "$(get ops_per_sec)" "$(get p50_us)" "$(get p99_us)" "$(get p999_us)" "$(get max_us)" "$(get errors)"
    done
  done
done

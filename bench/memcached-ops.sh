#!/usr/bin/env bash
# memcached's operations on Piazza and on memcached, in one run: a local piazza-cluster
# (3 slaves, two copies of every key) and memcached -t 2 on loopback, then piazza-bench
# against Piazza (binary protocol and memcached text protocol, through the coordinator)
# and memcached (text): get and set of 100-byte values and a get of 10 keys at once
# (32 connections, 10,000 keys), set with a 300 s expiry (32 connections), incr on one
# hot key and on 10,000 keys (8 connections), gets-then-cas on 1 key and on 100 keys
# (8 connections: contention; EXISTS conflicts counted apart). Prints the machine and
# its load, then one Markdown table. Usage: bench/memcached-ops.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
secs=${1:-3}
start_piazza_and_memcached
# name|connections|flags
ops=(
  "get|32|--keys 10000 --get-ratio 1"
  "get of 10 keys|32|--keys 10000 --get-ratio 1 --multiget 10"
  "set|32|--keys 10000 --get-ratio 0"
  "set, 300 s expiry|32|--keys 10000 --workload set-ttl --ttl 300 --get-ratio 0"
  "incr, 1 hot key|8|--workload incr --keys 1"
  "incr, 10k keys|8|--workload incr --keys 10000"
  "gets+cas, 1 key|8|--workload cas --keys 1"
  "gets+cas, 100 keys|8|--workload cas --keys 100"
)

echo "| operation | target | conns | ops/s | keys/s | p50 us | p99 us | p99.9 us | errors | notes |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
row() { # row OPERATION TARGET CONNS PROTOCOL ADDR FLAGS...
  local op=$1 name=$2 conns=$3 protocol=$4 addr=$5 line notes=""
  shift 5
  line=$("$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" \
    --value-size 100 --connections "$conns" --seconds "$secs" --json "$@" 2>"$work/bench.err") || {
    printf '| %s | %s | %s | — | — | — | — | — | — | %s |\n' "$op" "$name" "$conns" "$(head -c 120 "$work/bench.err")"
    return 0
  }
  get() { field "$1" "$line"; }
  if [ "$(get ops)" = 0 ]; then
    notes="every request failed (not served)"
  else
    case "$*" in *cas*) notes="$(get cas_stored) stored, $(get cas_exists) EXISTS";; esac
  fi
  printf '| %s | %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' "$op" "$name" "$conns" \
    "$(get ops_per_sec)" "$(get keys_per_sec)" "$(get p50_us)" "$(get p99_us)" "$(get p999_us)" \
    "$(get errors)" "$notes"
}
preload 10000 "${targets[@]}"
for o in "${ops[@]}"; do
  IFS='|' read -r op conns flags <<<"$o"
  for t in "${targets[@]}"; do
    read -r name protocol addr <<<"$t"
    # shellcheck disable=SC2086 # flags are words
    row "$op" "$name" "$conns" "$protocol" "$addr" $flags
  done
  if [ "$op" = "get of 10 keys" ]; then
    # shellcheck disable=SC2086
    row "$op" "piazza-binary MULTI_GET" "$conns" binary "$piazza" $flags --multiget-op
  fi
done
echo
print_load

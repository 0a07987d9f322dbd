#!/usr/bin/env bash
# One connection, many requests (issue 11): what pipelining and multi-key gets give on a
# single connection, on Piazza (3-slave piazza-cluster, two copies acknowledged, through
# the coordinator; binary and memcached text protocols) next to memcached -t 2, in one
# run on loopback: sets and gets pipelined 100 deep, and gets of 100 keys at once (text
# `get k1 ... k100`; binary: 100 GET frames, or one MULTI_GET frame). 100-byte values,
# 10,000 keys; pipelined rows also with direct routing (`--direct`). Prints the machine
# and its load, then one Markdown table.
# Usage: bench/one-connection.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
secs=${1:-5}
start_piazza_and_memcached
ops=(
  "set, pipelined 100 deep|--get-ratio 0 --pipeline 100"
  "get, pipelined 100 deep|--get-ratio 1 --pipeline 100"
  "get of 100 keys|--get-ratio 1 --multiget 100"
)
echo "| workload (1 connection) | target | requests/s | keys/s | p50 us | p99 us | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row() { # row WORKLOAD TARGET PROTOCOL ADDR FLAGS...
  local op=$1 name=$2 protocol=$3 addr=$4 line
  shift 4
  line=$("$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --connections 1 \
    --keys 10000 --value-size 100 --seconds "$secs" --json "$@" 2>"$work/bench.err") || {
    printf '| %s | %s | — | — | — | — | %s |\n' "$op" "$name" "$(head -c 120 "$work/bench.err")"
    return 0
  }
  printf '| %s | %s | %.0f | %.0f | %s | %s | %s |\n' "$op" "$name" \
    "$(field ops_per_sec "$line")" "$(field keys_per_sec "$line")" "$(field p50_us "$line")" \
    "$(field p99_us "$line")" "$(field errors "$line")"
}
preload 10000 "${targets[@]}"
for o in "${ops[@]}"; do
  IFS='|' read -r op flags <<<"$o"
  for t in "${targets[@]}"; do
    read -r name protocol addr <<<"$t"
    # shellcheck disable=SC2086 # flags are words
    row "$op" "$name" "$protocol" "$addr" $flags
  done
  if [ "$op" != "get of 100 keys" ]; then
    # Direct routing: the client pipelines to each key's primary (DirectClient::execute).
    # shellcheck disable=SC2086
    row "$op" "piazza-direct" binary "$piazza" $flags --direct
  fi
  if [ "$op" = "get of 100 keys" ]; then
    # shellcheck disable=SC2086
    row "$op" "piazza-binary MULTI_GET" binary "$piazza" $flags --multiget-op
  fi
done
echo
print_load

#!/usr/bin/env bash
# Issue 11's "done when" points in one run, next to memcached, rounds interleaved: in
# each round every workload runs on Piazza and then on memcached, and the summary gives,
# per workload, the median over the rounds of Piazza's keys/s and p99.9 divided by
# memcached's in the same round. On a noisy host single rounds scatter by 2×; the
# medians are the figures to compare.
#
# Workloads (100-byte values, 10,000 keys preloaded):
# - one connection: 100-key text multi-gets through the coordinator; pipelined sets
#   (depth 100) through the coordinator, text and binary;
# - 32 connections, 90/10 and sets only: through the coordinator (binary) and direct;
# - 128 connections, 90/10 and sets only: direct; and, sets only, direct on a cluster of
#   one slave (no replica to forward to: what the same thread-per-connection slave does
#   when a set needs no second copy).
#
# Usage: bench/targets.sh [rounds] [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
rounds=${1:-5}
secs=${2:-3}
start_one_and_three
print_machine
echo
echo "| round | workload | target | keys/s | p50 us | p99.9 us | max us | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
run() { # run ROUND WORKLOAD TARGET ADDR PROTOCOL FLAGS...
  local round=$1 workload=$2 target=$3 addr=$4 protocol=$5 line
  shift 5
  line=$("$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys 10000 \
    --value-size 100 --seconds "$secs" --json "$@")
  printf '| %s | %s | %s | %.0f | %s | %s | %s | %s |\n' "$round" "$workload" "$target" \
    "$(field keys_per_sec "$line")" "$(field p50_us "$line")" "$(field p999_us "$line")" \
    "$(field max_us "$line")" "$(field errors "$line")"
  printf '%s|%s|%s|%s|%s\n' "$round" "$workload" "$target" "$(field keys_per_sec "$line")" \
    "$(field p999_us "$line")" >>"$work/rows"
}
for round in $(seq "$rounds"); do
  w="1 conn, 100-key gets"
  run "$round" "$w" piazza-text "$piazza" memcache --connections 1 --get-ratio 1 --multiget 100
  run "$round" "$w" memcached "$memcached" memcache --connections 1 --get-ratio 1 --multiget 100
  w="1 conn, sets, pipeline 100"
  run "$round" "$w" piazza-text "$piazza" memcache --connections 1 --get-ratio 0 --pipeline 100
  run "$round" "$w" piazza-binary "$piazza" binary --connections 1 --get-ratio 0 --pipeline 100
  run "$round" "$w" memcached "$memcached" memcache --connections 1 --get-ratio 0 --pipeline 100
  for conns in 32 128; do
    for ratio in 0.9 0; do
      w="$conns conns, get ratio $ratio"
      if [ "$conns" = 32 ]; then
        run "$round" "$w" piazza-binary "$piazza" binary --connections "$conns" --get-ratio "$ratio"
      fi
      run "$round" "$w" piazza-direct "$piazza" binary --connections "$conns" --get-ratio "$ratio" --direct
      if [ "$conns" = 128 ] && [ "$ratio" = 0 ]; then
        run "$round" "$w" direct-1-slave "$one" binary --connections "$conns" --get-ratio "$ratio" --direct
      fi
      run "$round" "$w" memcached "$memcached" memcache --connections "$conns" --get-ratio "$ratio"
    done
  done
done
echo
echo "| workload | target | rounds | keys/s ÷ memcached (median) | p99.9 ÷ memcached (median) |"
echo "| --- | --- | --- | --- | --- |"
# Each row divided by memcached's row of the same round and workload; then the medians.
awk -F'|' '
  { key = $1 "|" $2; if ($3 == "memcached") { mk[key] = $4; mp[key] = $5 } else rows[NR] = $0 }
  END {
    for (i in rows) {
      split(rows[i], f, "|"); key = f[1] "|" f[2]
      if (mk[key] > 0 && mp[key] > 0) printf "%s|%s|%.3f|%.2f\n", f[2], f[3], f[4] / mk[key], f[5] / mp[key]
    }
  }' "$work/rows" | sort -t'|' -k1,2 -s >"$work/ratios"
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
cut -d'|' -f1,2 "$work/ratios" | awk '!seen[$0]++' | while IFS='|' read -r workload target; do
  awk -F'|' -v w="$workload" -v t="$target" '$1 == w && $2 == t' "$work/ratios" >"$work/one-ratio"
  printf '| %s | %s | %s | %s× | %s× |\n' "$workload" "$target" "$(wc -l <"$work/one-ratio")" \
    "$(cut -d'|' -f3 "$work/one-ratio" | median)" "$(cut -d'|' -f4 "$work/one-ratio" | median)"
done
print_load

#!/usr/bin/env bash
# CPU time per request, server and load generator, at 128 connections (direct routing):
# a 3-slave piazza-cluster (two copies a write), a 1-slave one (one copy) and memcached,
# one after the other. Server CPU comes from /proc/PID/stat (user + system) before and
# after the run, the generator's from bash's `time`. 10,000 keys preloaded, 100-byte values.
#
# Usage: bench/cpu.sh [get-ratio] [seconds]   (default: 0, sets only; 4 s)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
ratio=${1:-0}
secs=${2:-4}
start_one_and_three
print_machine
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo
echo "| server | requests/s | server CPU per request | piazza-bench CPU per request | p99.9 us |"
echo "| --- | --- | --- | --- | --- |"
for t in "piazza-3-slaves binary $piazza $piazza_pid --direct" \
  "piazza-1-slave binary $one $one_pid --direct" \
  "memcached memcache $memcached $memcached_pid"; do
  read -r name protocol addr pid extra <<<"$t"
  before=$(ticks "$pid")
  # bash's `time`: the generator's user and system seconds, to $work/time.
  TIMEFORMAT='%U %S'
  # shellcheck disable=SC2086 # $extra holds flags, one word each
  { time "$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys 10000 \
    --value-size 100 --connections 128 --seconds "$secs" --get-ratio "$ratio" --json \
    ${extra:-} >"$work/json"; } 2>"$work/time"
  after=$(ticks "$pid")
  line=$(cat "$work/json")
  read -r user system <"$work/time"
  awk -v name="$name" -v rate="$(field ops_per_sec "$line")" -v secs="$secs" \
    -v server=$((after - before)) -v hz="$hz" -v user="$user" -v sys="$system" \
    -v p999="$(field p999_us "$line")" 'BEGIN {
      n = rate * secs
      printf "| %s | %.0f | %.1f µs | %.1f µs | %s |\n", name, rate,
        server / hz * 1e6 / n, (user + sys) * 1e6 / n, p999 }'
done
print_load

#!/usr/bin/env bash
# Write stalls while a slave compacts its log or sends a transfer. A coordinator and two
# slaves as separate processes on loopback (--fsync everysec), N keys (default 1,000,000)
# of 100 bytes preloaded, so each slave holds N entries (its own and its previous table).
# Then a SET-only run (16 connections, uniform keys, S seconds, default 20) in each of
# three scenarios, each on a fresh cluster:
#   idle        nothing else happens (no compaction: --compact-min-bytes is huge)
#   compaction  --compact-min-bytes sits 24 MB above the preload's log, so both slaves
#               compact while the run goes on (each walks all N entries)
#   join        a third slave starts 3 s into the run: the two slaves transfer their own
#               tables (or the part inside its arc) to it, then split and drop the arc
# and prints, per scenario, the run's figures (max and p99.9 are what a stall moves) and
# what the slaves and the coordinator logged about the compaction or the join (and, for
# idle, each slave's resident memory holding its N entries).
# Usage: bench/stalls.sh [keys] [seconds] [rounds]
# STALLS_BIN=DIR takes the binaries from DIR (e.g. an older build) instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
keys=${1:-1000000}
seconds=${2:-20}
rounds=${3:-1}
if [ -n "${STALLS_BIN:-}" ]; then
  bin=$STALLS_BIN
  work=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
else
  bench_setup
fi

# Bytes the preload puts in each slave's log: one record per key, 33 bytes of header
# and fields, the key ("key:<i>"), 100 bytes of value.
preload_log_bytes() {
  local n=$1 total=0 digits=1 low=0 high=10
  while [ "$low" -lt "$n" ]; do
    local count=$(( (high < n ? high : n) - low ))
    total=$(( total + count * (33 + 4 + digits + 100) ))
    low=$high; high=$(( high * 10 )); digits=$(( digits + 1 ))
  done
  echo "$total"
}

# start_slave NAME COMPACT_MIN: a slave with its data in $dir/NAME, logging to NAME.err.
start_slave() {
  "$bin/piazza-slave" --listen 127.0.0.1:0 --coordinator "$addr" --data-dir "$dir/$1" \
    --compact-min-bytes "$2" --log-level info 2>"$dir/$1.err" &
  slave_pids+=($!)
}
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

alive() { "$bin/piazza-client" --coordinator "$addr" status 2>/dev/null | grep -c ' alive ' || true; }
settled() { ! "$bin/piazza-client" --coordinator "$addr" status 2>/dev/null | grep -q '^moving'; }

# start_cluster_of COMPACT_MIN: coordinator and two slaves in a fresh $dir, preloaded.
start_cluster_of() {
  dir=$(mktemp -d -p "$work")
  slave_pids=()
  "$bin/piazza-coordinator" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --data-dir "$dir/c" \
    --log-level info 2>"$dir/c.err" &
  for _ in $(seq 100); do grep -q '^listening on' "$dir/c.err" 2>/dev/null && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on //p' "$dir/c.err")
  start_slave s1 "$1"
  start_slave s2 "$1"
  until [ "$(alive)" -eq 2 ] && settled; do sleep 0.1; done
  "$bin/piazza-bench" --coordinator "$addr" --keys "$keys" --connections 16 --ops 1 --preload >/dev/null
}

stop_cluster() {
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}

run_sets() {
  "$bin/piazza-bench" --coordinator "$addr" --keys "$keys" --connections 16 --seconds "$seconds" \
    --get-ratio 0 --json
}

row() {
  printf '| %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$1" "$keys" "$(field ops_per_sec "$2")" \
    "$(field p50_us "$2")" "$(field p99_us "$2")" "$(field p999_us "$2")" "$(field max_us "$2")" "$3"
}

huge=$((1 << 40))
threshold=$(( $(preload_log_bytes "$keys") + 24 * 1048576 ))
echo "| scenario | keys | SET ops/s | p50 us | p99 us | p99.9 us | max us | during the run |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for _ in $(seq "$rounds"); do
  start_cluster_of "$huge"
  rss="slaves' RSS after the preload: $(rss_mib "${slave_pids[0]}") MiB, $(rss_mib "${slave_pids[1]}") MiB"
  row idle "$(run_sets)" "$rss"
  stop_cluster

  start_cluster_of "$threshold"
  line=$(run_sets)
  what=$(grep -ho 'compacted the log.*\|compaction skipped.*' "$dir"/s1.err "$dir"/s2.err | paste -sd ';' - || true)
  row compaction "$line" "${what:-no compaction}"
  stop_cluster

  start_cluster_of "$huge"
  run_sets >"$dir/run.json" &
  run_pid=$!
  sleep 3
  start_slave s3 "$huge"
  wait "$run_pid"
  done_by_end=yes
  if [ "$(alive)" -ne 3 ] || ! settled; then done_by_end="NOT finished by the end of the run"; fi
  steps=$(grep -ho 'slave [0-9]* joined: .* in [0-9]* ms\|join of slave.*' "$dir/c.err" | tail -1 || true)
  row join "$(cat "$dir/run.json")" "join done: $done_by_end; ${steps:-}"
  stop_cluster
done

#!/usr/bin/env bash
# Two builds of Piazza and memcached side by side, rounds interleaved (A, B, memcached),
# so that a change is measured before and after in the same run. A and B are checkouts
# of this repository (e.g. `git worktree add ../before <commit>`), each with its release
# binaries built; each gets a piazza-cluster of 3 slaves; B's piazza-bench drives all
# three. 10,000 keys preloaded, 100-byte values.
#
# Usage: bench/ab.sh A_DIR B_DIR [seconds] [rounds]
# Environment: CONNS (default 128), RATIOS (get ratios, default "0.9 0"), DIRECT (flags
# for the Piazza rows, default --direct; DIRECT= for the coordinator), ONE=1 for the
# one-connection workloads instead (pipelined sets, 100-key gets; text and binary).
set -euo pipefail
a_dir=$(cd "$1" && pwd)
b_dir=$(cd "$2" && pwd)
secs=${3:-3}
rounds=${4:-3}
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
bin=$a_dir/target/release
start_cluster "$work/a"
pa=$piazza
bin=$b_dir/target/release
start_cluster "$work/b"
pb=$piazza
start_memcached -m 1024
for addr in "$pa" "$pb" "$memcached"; do
  "$bin/piazza-bench" --coordinator "$addr" --protocol memcache --keys 10000 \
    --connections 8 --ops 10000 --preload >/dev/null
done
print_machine
row() { # row LABEL ADDR PROTOCOL FLAGS...
  local label=$1 addr=$2 protocol=$3 line
  shift 3
  line=$("$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys 10000 \
    --value-size 100 --seconds "$secs" --json "$@")
  printf '| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n' "$label" "$*" \
    "$(field ops_per_sec "$line")" "$(field keys_per_sec "$line")" "$(field p50_us "$line")" \
    "$(field p99_us "$line")" "$(field p999_us "$line")" "$(field max_us "$line")" \
    "$(field errors "$line")"
}
echo "| target | flags | requests/s | keys/s | p50 us | p99 us | p99.9 us | max us | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for _ in $(seq "$rounds"); do
  if [ "${ONE:-}" = 1 ]; then
    for w in "--get-ratio 0 --pipeline 100" "--get-ratio 1 --multiget 100"; do
      # shellcheck disable=SC2086 # $w holds flags, one word each
      {
        row A "$pa" memcache --connections 1 $w
        row B "$pb" memcache --connections 1 $w
        row A-binary "$pa" binary --connections 1 $w
        row B-binary "$pb" binary --connections 1 $w
        row memcached "$memcached" memcache --connections 1 $w
      }
    done
  else
    for ratio in ${RATIOS:-0.9 0}; do
      # shellcheck disable=SC2086 # $DIRECT holds flags, one word each
      {
        row A "$pa" binary --connections "${CONNS:-128}" --get-ratio "$ratio" ${DIRECT---direct}
        row B "$pb" binary --connections "${CONNS:-128}" --get-ratio "$ratio" ${DIRECT---direct}
        row memcached "$memcached" memcache --connections "${CONNS:-128}" --get-ratio "$ratio"
      }
    done
  fi
done
print_load

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
#
# After the rows, a summary: per target and workload, the median over the rounds of its
# keys/s and of its p99.9, each divided by memcached's in the same round. On a noisy host
# the rounds scatter; the medians are the figures to compare.
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
    "$(field errors "$line")" | tee -a "$work/rows"
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
summary() { # the medians of the rows in $work/rows (see the top of this file)
  # Each memcached row closes a workload's group in its round: the rows before it are
  # divided by it. Output: label, workload (memcached's flags), keys ratio, p99.9 ratio.
  awk -F'|' '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    { label = trim($2); keys = trim($5) + 0; p999 = trim($8) + 0
      if (label == "memcached") {
        for (i = 1; i <= n; i++)
          printf "%s|%s|%.3f|%.2f\n", names[i], trim($3), bk[i] / (keys ? keys : 1), bp[i] / (p999 ? p999 : 1)
        n = 0
      } else { n++; names[n] = label; bk[n] = keys; bp[n] = p999 } }' "$work/rows" >"$work/ratios"
  median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  echo
  echo "| target | workload (memcached's flags) | rounds | keys/s ÷ memcached (median) | p99.9 ÷ memcached (median) |"
  echo "| --- | --- | --- | --- | --- |"
  cut -d'|' -f1,2 "$work/ratios" | awk '!seen[$0]++' | while IFS='|' read -r label workload; do
    awk -F'|' -v l="$label" -v w="$workload" '$1 == l && $2 == w' "$work/ratios" >"$work/one"
    printf '| %s | %s | %s | %s× | %s× |\n' "$label" "$workload" "$(wc -l <"$work/one")" \
      "$(cut -d'|' -f3 "$work/one" | median)" "$(cut -d'|' -f4 "$work/one" | median)"
  done
}
summary
print_load

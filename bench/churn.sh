#!/usr/bin/env bash
# Delete-heavy churn over a fixed live set: a coordinator and three slaves as separate
# processes on loopback; 10,000 keys of 100 bytes preloaded (the live set, never
# deleted); then for DURATION seconds (default 600) CLIENTS piazza-client processes
# (default 4) each put and then delete keys never used before (`churn:<client>:<n>`), so
# every delete leaves a tombstone on two slaves. Every SAMPLE seconds (default 30) it
# prints each slave's RSS and the live keys the cluster reports: with tombstones kept
# forever the RSS grows with the deletes; with tombstone collection it levels off.
# Usage: bench/churn.sh [duration-seconds]
# Environment: CLIENTS, SAMPLE; TOMBSTONE_GRACE_SECS is passed to the coordinator as
# --tombstone-grace-secs if it accepts that flag (otherwise the script says so and runs
# without it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
duration=${1:-600}
clients=${CLIENTS:-4}
sample=${SAMPLE:-30}
bench_setup
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

coordinator_flags=()
if [ -n "${TOMBSTONE_GRACE_SECS:-}" ]; then
  if "$bin/piazza-coordinator" --help | grep -q -- '--tombstone-grace-secs'; then
    coordinator_flags+=(--tombstone-grace-secs "$TOMBSTONE_GRACE_SECS")
  else
    echo "note: this piazza-coordinator has no --tombstone-grace-secs; running without it" >&2
  fi
fi

"$bin/piazza-coordinator" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --data-dir "$work/c" \
  --log-level warn "${coordinator_flags[@]}" 2>"$work/c.err" &
for _ in $(seq 100); do grep -q '^listening on' "$work/c.err" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$work/c.err")
slaves=()
for i in 1 2 3; do
  "$bin/piazza-slave" --listen 127.0.0.1:0 --coordinator "$addr" --data-dir "$work/s$i" \
    --log-level warn 2>"$work/s$i.err" &
  slaves+=($!)
done
status() { "$bin/piazza-client" --coordinator "$addr" status 2>/dev/null || true; }
until [ "$(status | grep -c ' alive ')" -eq 3 ] && ! status | grep -q '^moving'; do sleep 0.1; done
"$bin/piazza-bench" --coordinator "$addr" --keys 10000 --connections 8 --ops 1 --preload >/dev/null
value=$(printf 'v%.0s' $(seq 100))

# One churn client: put then delete fresh keys over one connection for the duration (the
# generator is stopped then; the client ends at the end of its input). Its replies are
# counted (one line per command).
churn() {
  timeout "$duration" awk -v c="$1" -v v="$value" \
    'BEGIN { for (n = 0; ; n++) { print "put churn:" c ":" n " " v; print "del churn:" c ":" n } }' |
    "$bin/piazza-client" --coordinator "$addr" 2>/dev/null | wc -l >"$work/churn.$1.count" || true
}
churners=()
for c in $(seq "$clients"); do
  churn "$c" &
  churners+=($!)
done

live() { status | awk '$5 == "alive" { sum += $6 } END { print sum + 0 }'; }
header="| t (s) |"; rule="| --- |"
for i in 1 2 3; do header+=" slave $i RSS (MiB) |"; rule+=" --- |"; done
echo "$header live keys |"
echo "$rule --- |"
start=$(date +%s)
elapsed=0
while :; do
  row="| $elapsed |"
  for pid in "${slaves[@]}"; do row+=" $(rss_mib "$pid") |"; done
  echo "$row $(live) |"
  [ "$elapsed" -ge "$duration" ] && break
  sleep $(( sample < duration - elapsed ? sample : duration - elapsed ))
  elapsed=$(( $(date +%s) - start ))
done

wait "${churners[@]}" 2>/dev/null || true
ops=$(cat "$work"/churn.*.count 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
echo
echo "churn: $ops puts and deletes in ${elapsed} s ($(( ops / (elapsed > 0 ? elapsed : 1) )) per second), $clients clients; flags: ${coordinator_flags[*]:-none}"

#!/usr/bin/env bash
# Failure and join timings: a coordinator and 4 slaves as separate processes on loopback
# (default heartbeat 1000 ms, failure timeout 3000 ms), N keys of 100 bytes; SIGKILL one
# slave and time "declared dead" and "two copies again"; then start a new slave and time
# its join. Also counts the entries each move copied (from the coordinator's log): the
# re-replication after the death (only the dead slave's data), the rebalancing that
# evens the shares out after it, and the join. Usage: bench/failover.sh [N ...]
# (default: 10000 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000 1000000)
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

echo "| keys | SIGKILL → declared dead (ms) | SIGKILL → two copies again (ms) | join: start → alive, data moved (ms) | entries copied: re-replication / rebalance / join |"
echo "| --- | --- | --- | --- | --- |"
for n in "${sizes[@]}"; do
  work=$(mktemp -d)
  "$bin/piazza-coordinator" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --data-dir "$work/c" \
    --log-level info 2>"$work/c.err" &
  coord_pid=$!
  for _ in $(seq 100); do grep -q '^listening on' "$work/c.err" && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on //p' "$work/c.err")
  pids=()
  for i in 1 2 3 4; do
    "$bin/piazza-slave" --listen 127.0.0.1:0 --coordinator "$addr" --data-dir "$work/s$i" \
      --log-level warn 2>"$work/s$i.err" &
    pids+=($!)
  done
  status() { "$bin/piazza-client" --coordinator "$addr" status; }
  until [ "$(status | grep -c ' alive ')" -eq 4 ] && ! status | grep -q '^moving'; do sleep 0.1; done
  "$bin/piazza-bench" --coordinator "$addr" --keys "$n" --connections 16 --ops 1 --preload >/dev/null
  victim=${pids[1]}
  t0=$(now)
  kill -9 "$victim"
  until status | grep -qE ' (suspected|dead) '; do sleep 0.02; done
  t1=$(now)
  until ! status | grep -q '^moving'; do sleep 0.05; done
  t2=$(now)
  "$bin/piazza-slave" --listen 127.0.0.1:0 --coordinator "$addr" --data-dir "$work/s5" \
    --log-level warn 2>"$work/s5.err" &
  pids+=($!)
  t3=$(now)
  until [ "$(status | grep -c ' alive ')" -eq 4 ] && ! status | grep -q '^moving'; do sleep 0.05; done
  t4=$(now)
  copied() { grep "$1" "$work/c.err" | sed -n 's/.*: \([0-9]*\) keys, .*/\1/p' | tail -1; }
  moved="$(copied 're-replication after slave') / $(copied 'rebalanced the ring') / $(copied 'slave 5 joined')"
  echo "| $n | $(ms "$t0" "$t1") | $(ms "$t0" "$t2") | $(ms "$t3" "$t4") | $moved |"
  kill -9 "${pids[@]}" "$coord_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
done

#!/usr/bin/env bash
# Direct routing through a failure and a join, under load: a coordinator and 4 slaves as
# separate processes on loopback (default timings), 10,000 keys; piazza-bench --direct
# --verify runs for 20 s with 8 connections (each checks every read against what it last
# stored) while one slave is SIGKILLed at 4 s and a new one starts at 12 s. Prints the
# bench's JSON line and the slaves' view changes. Usage: bench/direct-failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin/piazza-coordinator" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --data-dir "$work/c" \
  --log-level warn 2>"$work/c.err" &
for _ in $(seq 100); do grep -q '^listening on' "$work/c.err" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$work/c.err")
pids=()
for i in 1 2 3 4 5; do
  if [ "$i" -eq 5 ]; then sleep 8; echo "$(date +%T.%N | cut -c1-12) starting a fifth slave" >&2; fi
  "$bin/piazza-slave" --listen 127.0.0.1:0 --coordinator "$addr" --data-dir "$work/s$i" \
    --log-level info 2>"$work/s$i.err" &
  pids+=($!)
  if [ "$i" -eq 4 ]; then
    status() { "$bin/piazza-client" --coordinator "$addr" status; }
    until [ "$(status | grep -c ' alive ')" -eq 4 ] && ! status | grep -q '^moving'; do sleep 0.1; done
    "$bin/piazza-bench" --coordinator "$addr" --direct --connections 8 --seconds 20 --keys 10000 \
      --preload --verify --get-ratio 0.5 --json >"$work/bench.json" &
    bench=$!
    sleep 4
    echo "$(date +%T.%N | cut -c1-12) SIGKILL slave 2" >&2
    kill -9 "${pids[1]}"
  fi
done
wait "$bench"
cat "$work/bench.json"; echo
echo "view changes seen by the slaves:" >&2
cat "$work"/s*.err | grep -h "routing view" | sort | uniq -c | sed 's/^/  /' >&2

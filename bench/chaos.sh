#!/usr/bin/env bash
# Chaos: a verifying client (bench/chaos.py) writes, deletes and reads a few keys through
# the coordinator while processes of a local cluster (a coordinator and 3 slaves, each a
# process, short heartbeat timings) are SIGKILLed and restarted, paused (SIGSTOP) past
# the failure timeout, and a fourth slave joins and leaves (SIGINT). The client keeps a
# model of what each key may hold (a write that failed may or may not have landed) and
# counts every read the model rules out ("wrong"). At the end, once the cluster is
# quiet, every key must have exactly one copy in its primary's `own` and one in its
# replica's `previous` ("bad" counts the keys that do not).
#
# Usage: bench/chaos.sh [seconds] [seed]      (default 40 s, seed 1)
# Environment: ACTIONS, the kinds of action to draw from (default "0 1 2 3 4"):
#   0 SIGKILL a slave and restart it; 1 SIGKILL the coordinator and restart it;
#   2 pause a slave 1.0-1.4 s; 3 start or stop (SIGINT) a fourth slave;
#   4 SIGKILL a slave, then the coordinator right after, and restart both.
# Keeps the logs in bench/chaos-logs/ (overwritten each run).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
secs=${1:-40}
RANDOM=${2:-1}
cargo build --release -q
bin=target/release
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
coordinator=127.0.0.1:$port
start_coordinator() {
  "$bin/piazza-coordinator" --listen "$coordinator" --heartbeat "127.0.0.1:$((port + 1))" \
    --data-dir "$work/c" --heartbeat-interval-ms 100 --failure-timeout-ms 1000 \
    --slave-timeout-ms 1000 --log-level info 2>>"$work/coordinator.log" &
  coordinator_pid=$!
}
declare -A slave_pid
start_slave() { # start_slave N: slave N listens on port + 10 + N
  "$bin/piazza-slave" --listen "127.0.0.1:$((port + 10 + $1))" --coordinator "$coordinator" \
    --data-dir "$work/s$1" --heartbeat-interval-ms 100 --log-level info 2>>"$work/slave-$1.log" &
  slave_pid[$1]=$!
}
start_coordinator
sleep 0.5
for i in 1 2 3; do start_slave "$i"; done
sleep 1.5
python3 bench/chaos.py run "$coordinator" "$secs" 200 "$RANDOM" >"$work/client.out" 2>&1 &
client=$!
end=$((SECONDS + secs - 4))
fourth=0
while [ $SECONDS -lt $end ]; do
  sleep "0.$((5 + RANDOM % 20))"
  action=$((RANDOM % 6))
  if [[ " ${ACTIONS:-0 1 2 3 4} " != *" $action "* ]]; then continue; fi
  printf '%s ' "$(date +%T.%3N)"
  case $action in
    0) i=$((1 + RANDOM % 3)); echo "SIGKILL slave $i, restart it"
       kill -9 "${slave_pid[$i]}"; sleep "0.$((RANDOM % 9))"; start_slave "$i" ;;
    1) echo "SIGKILL the coordinator, restart it"
       kill -9 "$coordinator_pid"; sleep "0.$((RANDOM % 5))"; start_coordinator ;;
    2) i=$((1 + RANDOM % 3)); echo "pause slave $i"
       kill -STOP "${slave_pid[$i]}"; sleep "1.$((RANDOM % 5))"; kill -CONT "${slave_pid[$i]}" ;;
    3) if [ $fourth = 0 ]; then echo "start slave 4"; start_slave 4; fourth=1
       else echo "stop slave 4 (SIGINT: leave)"; kill -INT "${slave_pid[4]}"; fourth=0; fi ;;
    4) i=$((1 + RANDOM % 3)); echo "SIGKILL slave $i, then the coordinator; restart both"
       kill -9 "${slave_pid[$i]}"; sleep "1.$((RANDOM % 3))"; kill -9 "$coordinator_pid"
       sleep 0.2; start_coordinator; start_slave "$i" ;;
  esac
done
wait $client
grep -m 5 -A1 WRONG "$work/client.out"
grep STATS "$work/client.out"
sleep 8
"$bin/piazza-client" --coordinator "$coordinator" status | tee "$work/status"
# shellcheck disable=SC2046 # one address per word
python3 bench/chaos.py check $(awk '$5 == "alive" { print $2 }' "$work/status") -- 200
grep -h "panicked" "$work"/*.log
mkdir -p bench/chaos-logs
cp "$work"/*.log "$work/client.out" bench/chaos-logs/

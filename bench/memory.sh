#!/usr/bin/env bash
# Memory per stored copy: N keys (default 1,000,000) of 100-byte values into a local
# piazza-cluster (3 slaves in one process: two copies of each key) and into memcached;
# RSS from /proc after loading. Also: N concurrent connections (default 1000) served for
# 3 seconds. Usage: bench/memory.sh [keys] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
keys=${1:-1000000}
conns=${2:-1000}
bench_setup
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }

start_cluster "$work/p"
pid=$piazza_pid
addr=$piazza
before=$(rss "$pid")
"$bin/piazza-bench" --coordinator "$addr" --keys "$keys" --connections 16 --ops 1 --preload >/dev/null
after=$(rss "$pid")
echo "| piazza-cluster (3 slaves, 2 copies) | $keys | $(( (after - before) / 1048576 )) MiB | $(( (after - before) / (2 * keys) )) B |"

start_memcached -m 4096
mpid=$memcached_pid
mbefore=$(rss "$mpid")
"$bin/piazza-bench" --coordinator "$memcached" --protocol memcache --keys "$keys" --connections 16 --ops 1 --preload >/dev/null
mafter=$(rss "$mpid")
echo "| memcached (1 copy) | $keys | $(( (mafter - mbefore) / 1048576 )) MiB | $(( (mafter - mbefore) / keys )) B |"

echo
line=$("$bin/piazza-bench" --coordinator "$addr" --keys 10000 --connections "$conns" --seconds 3 --get-ratio 0.9 --json)
echo "$conns connections to Piazza for 3 s: $line"

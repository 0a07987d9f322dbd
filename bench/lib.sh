#!/usr/bin/env bash
# Helpers shared by the bench scripts; source it, do not run it. The caller has done
# `set -euo pipefail` and `cd` to the repository root.
#   bench_setup         builds the release binaries, makes $work (a temporary directory)
#                       and sets an exit trap that kills every job the script started
#                       and removes $work
#   free_port           prints a loopback port nothing listens on
#   wait_port PORT      waits (at most 5 s) until 127.0.0.1:PORT accepts connections
#   start_cluster DIR [ARGS...]  starts a local piazza-cluster (3 slaves, one process) on
#                       loopback with its data in DIR (extra ARGS, e.g. --slaves 1, are
#                       passed on); sets $piazza (coordinator address) and $piazza_pid
#   start_memcached [ARGS...]  starts memcached -t 2 on a free loopback port (extra
#                       ARGS, e.g. -m 4096, are passed on); sets $memcached (address)
#                       and $memcached_pid
#   field NAME LINE     prints the number NAME holds in piazza-bench's JSON LINE
#   need_memcached      exits with a message when memcached is not installed
#   print_machine       prints the machine (cores, CPU) and its load average now
#   print_load          prints the load average at the end of a run
#   start_piazza_and_memcached  need_memcached, bench_setup, start_cluster, then
#                       memcached -m 1024, print_machine and a blank line; sets
#                       $targets: piazza-binary, piazza-text and memcached, each a
#                       "name protocol address" line
#   start_one_and_three  need_memcached, bench_setup, then a 1-slave piazza-cluster
#                       (sets $one and $one_pid), a 3-slave one ($piazza, $piazza_pid) and
#                       memcached -m 1024, with 10,000 keys preloaded on each
#   preload KEYS TARGET...  stores KEYS keys (0..KEYS-1) on each TARGET, a
#                       "name protocol address" line, before the measured runs
# Every variable set here is read by the scripts that source this file.
# shellcheck disable=SC2034
bin=target/release

bench_setup() {
  cargo build --release -q
  work=$(mktemp -d)
  # `|| true`: with nothing left running, kill fails, and set -e would skip the rm.
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

free_port() {
  # Below the kernel's ephemeral range, so no outgoing connection holds the port.
  local low port
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 50); do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

wait_port() {
  for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1" >&2
  return 1
}

start_cluster() {
  local dir=$1
  shift
  mkdir -p "$dir"
  "$bin/piazza-cluster" --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --slave-port 0 \
    --data-dir "$dir" --log-level warn "$@" >"$dir.out" 2>"$dir.err" &
  # shellcheck disable=SC2034
  piazza_pid=$!
  for _ in $(seq 100); do grep -q '^piazza cluster' "$dir.out" 2>/dev/null && break; sleep 0.1; done
  piazza=$(sed -n 's/^piazza cluster: coordinator \([^ ]*\).*/\1/p' "$dir.out")
  if [ -z "$piazza" ]; then echo "piazza-cluster did not start:" >&2; cat "$dir.err" >&2; return 1; fi
}

start_memcached() {
  local port
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    memcached -u "$(id -un)" -l 127.0.0.1 -p "$port" -U 0 -t 2 "$@" &
    # shellcheck disable=SC2034
    memcached_pid=$!
    if wait_port "$port" 2>/dev/null && kill -0 "$memcached_pid" 2>/dev/null; then
      # shellcheck disable=SC2034
      memcached=127.0.0.1:$port
      return 0
    fi
    kill "$memcached_pid" 2>/dev/null || true   # taken after all: another port
  done
  echo "memcached did not start" >&2
  return 1
}

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }

need_memcached() {
  command -v memcached >/dev/null || { echo "memcached is not installed (apt-get install -y memcached)" >&2; exit 1; }
}

print_machine() {
  echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

print_load() {
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

preload() {
  local keys=$1 target name protocol addr
  shift
  for target in "$@"; do
    read -r name protocol addr <<<"$target"
    "$bin/piazza-bench" --coordinator "$addr" --protocol "$protocol" --keys "$keys" \
      --connections 8 --ops 1 --preload >/dev/null
  done
}

start_piazza_and_memcached() {
  need_memcached
  bench_setup
  start_cluster "$work/piazza"
  start_memcached -m 1024
  print_machine
  echo
  targets=("piazza-binary binary $piazza" "piazza-text memcache $piazza" "memcached memcache $memcached")
}

start_one_and_three() {
  need_memcached
  bench_setup
  start_cluster "$work/one" --slaves 1
  one=$piazza
  one_pid=$piazza_pid
  start_cluster "$work/piazza"
  start_memcached -m 1024
  preload 10000 "piazza memcache $piazza" "one memcache $one" "memcached memcache $memcached"
}

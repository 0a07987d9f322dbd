#!/usr/bin/env bash
# Judges Piazza's memcached compatibility with suites other people wrote, side by side
# with a real memcached:
#   - libmemcached's memcapable (Debian: memccapable), -a (text) and -b (binary);
#   - pymemcache 4.0.0's own integration tests, from its sdist, unmodified;
#   - the libmemcached tools memcping, memcstat, memcflush, memctouch, memccp
#     (--expire/--add/--replace) and memcexist, text and (where they have it) binary.
# Each runs against a real memcached (loopback, -U 0) and against a 3-slave Piazza cluster
# (piazza-cluster from target/release), both on free loopback ports and both killed on
# exit. Prints a table; exits non-zero when Piazza fails anything memcached passes.
#
# Usage: .ci/memcached-suites.sh [--report-only] [--no-install] [--no-build]
#   --report-only  always exit 0 (for measuring progress)
#   --no-install   do not apt-get/pip anything (fail if something is missing)
#   --no-build     do not run `cargo build --release --bins` first
# Environment: PIAZZA_SUITES_WORK (default target/memcached-suites): the venv, the
# pymemcache sdist and the logs of the last run (logs/) are kept there.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

REPORT_ONLY=0
INSTALL=1
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --report-only) REPORT_ONLY=1 ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    -h | --help)
      sed -n '2,17p' "$0"
      exit 0
      ;;
    *)
      echo "memcached-suites: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

WORK=${PIAZZA_SUITES_WORK:-$ROOT/target/memcached-suites}
VENV=$WORK/venv
PYMEMCACHE_VERSION=4.0.0
SDIST=$WORK/pymemcache-$PYMEMCACHE_VERSION
LOGS=$WORK/logs
# Pinned so that a run is repeatable; pytest-cov because pymemcache's setup.cfg addopts
# name --cov; pytest-timeout so one hanging test fails alone instead of the whole run.
PY_PACKAGES=(pytest==9.2.0 pytest-cov==7.1.0 pytest-timeout==2.4.0)
TOOLS=(memcached memccapable memcping memcstat memcflush memctouch memccp memcexist memccat)

say() { echo "memcached-suites: $*" >&2; }
die() {
  say "$*"
  if [ "$REPORT_ONLY" = 1 ]; then exit 0; fi
  exit 1
}

# ---------------------------------------------------------------- installation
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else
    say "need root for: $*"
    return 1
  fi
}

apt_install() {
  # Quiet and idempotent: only what is missing; retries while another apt holds the lock.
  local try
  for try in 1 2 3 4 5; do
    if as_root env DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq >"$LOGS/apt.log" 2>&1 &&
      as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
        -o DPkg::Lock::Timeout=120 --no-install-recommends "$@" >>"$LOGS/apt.log" 2>&1; then
      return 0
    fi
    say "apt-get failed (try $try of 5); see $LOGS/apt.log"
    sleep $((try * 5))
  done
  tail -20 "$LOGS/apt.log" >&2
  return 1
}

install_all() {
  local missing=()
  local tool
  for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing ${missing[*]} (and --no-install): apt-get install memcached libmemcached-tools"
    say "installing memcached libmemcached-tools (missing: ${missing[*]})"
    apt_install memcached libmemcached-tools || die "could not install memcached libmemcached-tools"
  fi
  # The Debian package may start a memcached of its own on 11211 where services run; we
  # never use that one.

  if ! "$VENV/bin/python" -c 'import pytest, pytest_cov, pytest_timeout' >/dev/null 2>&1; then
    [ "$INSTALL" = 1 ] || die "no venv with pytest at $VENV (and --no-install)"
    say "creating $VENV with ${PY_PACKAGES[*]}"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >"$LOGS/venv.log" 2>&1; then
      # Debian's own python3 needs python3-venv for this.
      rm -rf "$VENV"
      apt_install python3 python3-venv || die "could not install python3-venv"
      /usr/bin/python3 -m venv "$VENV" >"$LOGS/venv.log" 2>&1 || die "python3 -m venv failed; see $LOGS/venv.log"
    fi
    timeout 600 "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}" \
      >"$LOGS/pip.log" 2>&1 || {
      tail -20 "$LOGS/pip.log" >&2
      die "pip install ${PY_PACKAGES[*]} failed"
    }
  fi

  if [ ! -f "$SDIST/pymemcache/test/test_integration.py" ]; then
    [ "$INSTALL" = 1 ] || die "no pymemcache sdist at $SDIST (and --no-install)"
    say "fetching the pymemcache $PYMEMCACHE_VERSION sdist"
    local dl=$WORK/download
    rm -rf "$dl" "$SDIST"
    mkdir -p "$dl"
    timeout 300 "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-binary :all: \
      --no-deps "pymemcache==$PYMEMCACHE_VERSION" -d "$dl" >"$LOGS/sdist.log" 2>&1 ||
      die "pip download pymemcache==$PYMEMCACHE_VERSION failed; see $LOGS/sdist.log"
    tar -xzf "$dl/pymemcache-$PYMEMCACHE_VERSION.tar.gz" -C "$WORK" || die "cannot unpack the pymemcache sdist"
  fi
}

mkdir -p "$WORK" "$LOGS"
rm -f "$LOGS"/*.out
install_all

if [ "$BUILD" = 1 ]; then
  say "cargo build --release --bins"
  timeout 1800 cargo build --release --bins -q || die "cargo build --release failed"
fi
CLUSTER_BIN=$ROOT/target/release/piazza-cluster
[ -x "$CLUSTER_BIN" ] || die "$CLUSTER_BIN is missing: run cargo build --release"

# ---------------------------------------------------------------- servers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/piazza-suites.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PY=$VENV/bin/python

# probe HOST PORT: true once a text `set` through the server answers STORED.
probe() {
  "$PY" - "$1" "$2" <<'EOF' >/dev/null 2>&1
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.sendall(b"set piazza_suites_probe 0 0 1\r\nx\r\n")
reply = b""
while not reply.endswith(b"\r\n"):
    chunk = s.recv(100)
    if not chunk:
        break
    reply += chunk
sys.exit(0 if reply == b"STORED\r\n" else 1)
EOF
}

wait_ready() { # NAME PORT
  local deadline=$((SECONDS + 30))
  until probe 127.0.0.1 "$2"; do
    [ $SECONDS -lt $deadline ] || die "$1 on port $2 does not store a key after 30 s"
    sleep 0.2
  done
}

start_memcached() {
  local user=()
  [ "$(id -u)" = 0 ] && user=(-u root)
  # -p -1: memcached picks a free port and writes it to MEMCACHED_PORT_FILENAME (its own
  # test suite's mechanism).
  MEMCACHED_PORT_FILENAME=$TMP/memcached.ports memcached -l 127.0.0.1 -p -1 -U 0 -m 64 -t 2 "${user[@]}" \
    >"$LOGS/memcached.log" 2>&1 &
  PIDS+=($!)
  local deadline=$((SECONDS + 20))
  until [ -s "$TMP/memcached.ports" ] && grep -q 'TCP INET' "$TMP/memcached.ports"; do
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "memcached exited: $(cat "$LOGS/memcached.log")"
    [ $SECONDS -lt $deadline ] || die "memcached did not report its port"
    sleep 0.1
  done
  MC_PORT=$(awk '/TCP INET/ {print $3; exit}' "$TMP/memcached.ports")
  wait_ready memcached "$MC_PORT"
}

start_piazza() {
  mkdir -p "$TMP/piazza"
  "$CLUSTER_BIN" --slaves 3 --listen 127.0.0.1:0 --heartbeat 127.0.0.1:0 --slave-port 0 \
    --data-dir "$TMP/piazza" --log-level warn >"$TMP/piazza.out" 2>"$LOGS/piazza.log" &
  PIDS+=($!)
  local deadline=$((SECONDS + 30))
  until grep -q '^piazza cluster: coordinator ' "$TMP/piazza.out" 2>/dev/null; do
    kill -0 "${PIDS[-1]}" 2>/dev/null || die "piazza-cluster exited: $(tail -5 "$LOGS/piazza.log")"
    [ $SECONDS -lt $deadline ] || die "piazza-cluster did not print its address"
    sleep 0.1
  done
  local addr
  addr=$(sed -n 's/^piazza cluster: coordinator \([^ ]*\) .*/\1/p' "$TMP/piazza.out" | head -1)
  PZ_PORT=${addr##*:}
  wait_ready piazza "$PZ_PORT"
}

start_memcached
start_piazza
say "memcached on 127.0.0.1:$MC_PORT, Piazza (3 slaves) on 127.0.0.1:$PZ_PORT; logs in $LOGS"

# ---------------------------------------------------------------- suites
# Each suite function takes (NAME PORT), writes its log to $LOGS/<suite>-NAME.out, prints
# a short result on stdout and returns 0 when the suite passed.
ROWS=()    # suite labels in order
declare -A RESULT_TEXT RESULT_OK

record() { # LABEL NAME PORT FUNCTION ARGS...
  local label=$1 name=$2 port=$3 fn=$4
  shift 4
  local text rc
  text=$("$fn" "$name" "$port" "$@")
  rc=$?
  RESULT_TEXT["$label|$name"]=$text
  RESULT_OK["$label|$name"]=$((rc == 0))
}

ROW=0
suite() { # LABEL FUNCTION ARGS...: runs against both servers
  local label=$1
  shift
  ROWS+=("$label")
  ROW=$((ROW + 1)) # set here: the suites run in subshells
  say "$label"
  record "$label" memcached "$MC_PORT" "$@"
  record "$label" piazza "$PZ_PORT" "$@"
}

run_memcapable() { # NAME PORT MODE(-a|-b)
  local log=$LOGS/memcapable$3-$1.out rc
  timeout 300 memccapable -h 127.0.0.1 -p "$2" -t 5 "$3" >"$log" 2>&1 </dev/null
  rc=$?
  local passed failed total
  passed=$(grep -o '\[pass\]' "$log" | wc -l)
  failed=$(grep -o '\[FAIL\]' "$log" | wc -l)
  total=$((passed + failed))
  if [ $rc = 124 ]; then
    echo "timeout ($passed/$total)"
    return 1
  fi
  echo "$passed/$total"
  [ $rc = 0 ] && grep -q 'All tests passed' "$log" && [ "$failed" = 0 ]
}

run_pymemcache() { # NAME PORT
  local log=$LOGS/pymemcache-$1.out rc
  (cd "$SDIST" && timeout 900 "$PY" -m pytest pymemcache/test/test_integration.py -m integration \
    --server 127.0.0.1 --port "$2" --timeout=5 -p no:cacheprovider) >"$log" 2>&1 </dev/null
  rc=$?
  local summary
  summary=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* in [0-9.]+s' "$log" | tail -1 |
    sed -E 's/^=+ //; s/ in [0-9.]+s.*//')
  case $rc in
    0) ;;
    5) summary="no tests ran" ;;
    124) summary="timeout${summary:+ ($summary)}" ;;
  esac
  echo "${summary:-exit $rc}"
  [ $rc = 0 ] && grep -qE '[1-9][0-9]* passed' <<<"$summary"
}

# --- libmemcached tools. A scenario prints nothing; T wraps every call in a timeout.
T() { timeout 5 "$@" </dev/null >>"$TOOL_LOG" 2>&1; }
# value SERVERS KEY [-b]: prints the value memccat reads
value() { timeout 5 memccat ${3:+-b} -s "$1" "$2" </dev/null 2>>"$TOOL_LOG"; }
# newfile KEY CONTENT: writes $FILES/KEY (memccp uses the file's basename as the key)
newfile() { printf '%s' "$2" >"$FILES/$1"; }
# has SERVERS KEY [-b]: memccat finds the key (each scenario checks with memccat, so that
# only the memcexist row depends on memcexist).
has() { T memccat ${3:+-b} -s "$1" "$2"; }
# gone_within SECONDS SERVERS KEY [-b]: polls until the key is gone
gone_within() {
  local deadline=$((SECONDS + $1))
  while has "$2" "$3" "${4:-}"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.25
  done
}
check() { # COMMAND...: logs and fails the scenario when COMMAND fails
  if "$@"; then return 0; fi
  echo "FAILED: $*" >>"$TOOL_LOG"
  return 1
}
refuse() { # COMMAND...: the command must fail
  if ! "$@"; then return 0; fi
  echo "UNEXPECTEDLY SUCCEEDED: $*" >>"$TOOL_LOG"
  return 1
}

# Each scenario takes SERVERS and "" (text) or -b (binary).
tool_memcping() {
  check T memcping -s "$1"
}
tool_memcstat() {
  local out
  out=$(timeout 5 memcstat $2 -s "$1" </dev/null 2>>"$TOOL_LOG") || {
    echo "FAILED: memcstat $2" >>"$TOOL_LOG"
    return 1
  }
  echo "$out" >>"$TOOL_LOG"
  # memcstat prints "Server: host (port)" and then one "name: value" line per stat.
  check grep -q '^Server: ' <<<"$out" && check grep -qE '^\s+pid: [0-9]+' <<<"$out" &&
    check grep -qE '^\s+version: ' <<<"$out" && check T memcstat $2 -S -s "$1"
}
tool_memcflush() {
  local k=$KEYBASE-flush
  newfile "$k" flushme
  check T memccp $2 -s "$1" "$FILES/$k" && check has "$1" "$k" "$2" &&
    check T memcflush $2 -s "$1" && refuse has "$1" "$k" "$2"
}
tool_memctouch() {
  local k=$KEYBASE-touch
  newfile "$k" touchme
  check T memccp $2 -s "$1" "$FILES/$k" &&
    refuse T memctouch $2 -s "$1" -e 100 "$k-missing" &&
    check T memctouch $2 -s "$1" -e 2 "$k" &&
    check has "$1" "$k" "$2" &&
    check gone_within 6 "$1" "$k" "$2"
}
tool_memccp_expire() {
  local k=$KEYBASE-expire k2=$KEYBASE-noexpire
  newfile "$k" expireme
  newfile "$k2" keepme
  check T memccp $2 -s "$1" --expire=2 "$FILES/$k" &&
    check T memccp $2 -s "$1" --expire=100 "$FILES/$k2" &&
    check has "$1" "$k" "$2" &&
    check gone_within 6 "$1" "$k" "$2" &&
    check has "$1" "$k2" "$2"
}
tool_memccp_add() {
  local k=$KEYBASE-add
  newfile "$k" first
  check T memccp $2 -s "$1" --add "$FILES/$k" || return 1
  newfile "$k" second
  refuse T memccp $2 -s "$1" --add "$FILES/$k" &&
    check test "$(value "$1" "$k" "$2")" = first
}
tool_memccp_replace() {
  local k=$KEYBASE-replace
  newfile "$k" first
  refuse T memccp $2 -s "$1" --replace "$FILES/$k" &&
    refuse has "$1" "$k" "$2" &&
    check T memccp $2 -s "$1" "$FILES/$k" || return 1
  newfile "$k" second
  check T memccp $2 -s "$1" --replace "$FILES/$k" &&
    check test "$(value "$1" "$k" "$2")" = second
}
tool_memcexist() {
  # libmemcached asks with `add KEY 0 2678400 0` (text): an exptime past 30 days is a Unix
  # time, long gone, so a missing key stays missing.
  local k=$KEYBASE-exist
  newfile "$k" here
  check T memccp $2 -s "$1" "$FILES/$k" &&
    check T memcexist $2 -s "$1" "$k" &&
    refuse T memcexist $2 -s "$1" "$k-missing" &&
    refuse has "$1" "$k-missing" "$2"
}

run_tool() { # NAME PORT SCENARIO [-b]
  TOOL_LOG=$LOGS/tools-$1.out
  FILES=$TMP/files-$1-$ROW
  KEYBASE=ci$ROW-$1-$$
  mkdir -p "$FILES"
  echo "== $3 ${4:-} against $1 (127.0.0.1:$2)" >>"$TOOL_LOG"
  if "$3" "127.0.0.1:$2" "${4:-}"; then
    echo "pass"
  else
    echo "FAIL"
    return 1
  fi
}

suite "memccapable -a (text)" run_memcapable -a
suite "memccapable -b (binary)" run_memcapable -b
suite "pymemcache $PYMEMCACHE_VERSION integration" run_pymemcache
for mode in "" -b; do
  proto=text
  [ -n "$mode" ] && proto=binary
  [ -z "$mode" ] && suite "memcping (text)" run_tool tool_memcping
  suite "memcstat ($proto)" run_tool tool_memcstat $mode
  suite "memcflush ($proto)" run_tool tool_memcflush $mode
  suite "memctouch ($proto)" run_tool tool_memctouch $mode
  suite "memccp --expire ($proto)" run_tool tool_memccp_expire $mode
  suite "memccp --add ($proto)" run_tool tool_memccp_add $mode
  suite "memccp --replace ($proto)" run_tool tool_memccp_replace $mode
  suite "memcexist ($proto)" run_tool tool_memcexist $mode
done

# ---------------------------------------------------------------- report
regressions=0
passed=0
printf '\n%-30s %-24s %-34s %s\n' suite memcached piazza verdict
printf '%-30s %-24s %-34s %s\n' ------------------------------ ------------------------ ---------------------------------- -------
for label in "${ROWS[@]}"; do
  mc_ok=${RESULT_OK["$label|memcached"]}
  pz_ok=${RESULT_OK["$label|piazza"]}
  if [ "$pz_ok" = 1 ]; then
    verdict=ok
    passed=$((passed + 1))
  elif [ "$mc_ok" = 1 ]; then
    verdict=FAIL
    regressions=$((regressions + 1))
  else
    verdict="not judged (memcached fails it too)"
  fi
  printf '%-30s %-24s %-34s %s\n' "$label" "${RESULT_TEXT["$label|memcached"]}" \
    "${RESULT_TEXT["$label|piazza"]}" "$verdict"
done

if [ "$regressions" -gt 0 ]; then
  echo
  echo "What Piazza failed (full logs in $LOGS):"
  "$PY" - "$LOGS" <<'EOF'
import collections, os, re, sys
logs = sys.argv[1]
def read(name):
    try:
        with open(os.path.join(logs, name), errors="replace") as f:
            return f.read()
    except OSError:
        return ""
for mode in ("-a", "-b"):
    text = read(f"memcapable{mode}-piazza.out")
    failed = [m.group(1) for m in re.finditer(
        r"((?:ascii|binary) [a-z]+(?: noreply)?)\s.*?\[(?:pass|FAIL)\]", text, re.S)
        if m.group(0).endswith("[FAIL]")]
    if failed:
        print(f"  memccapable {mode}: {', '.join(failed)}")
per_test = collections.defaultdict(lambda: [0, 0])
for m in re.finditer(r"::(test_\w+)\S*\s+(PASSED|FAILED|ERROR)", read("pymemcache-piazza.out")):
    per_test[m.group(1)][m.group(2) == "PASSED"] += 1
bad = [f"{name} ({failed}/{failed + ok})" for name, (failed, ok) in per_test.items() if failed]
if bad:
    print("  pymemcache, failed/run per test: " + ", ".join(bad))
scenario = None
for line in read("tools-piazza.out").splitlines():
    if line.startswith("== "):
        scenario = line[3:].split(" against ")[0]
    elif line.startswith(("FAILED: ", "UNEXPECTEDLY SUCCEEDED: ")):
        print(f"  {scenario}: {line}")
EOF
fi
echo
echo "memcached-suites: $passed passed, $regressions failed"
if [ "$regressions" -gt 0 ] && [ "$REPORT_ONLY" = 0 ]; then
  exit 1
fi
exit 0

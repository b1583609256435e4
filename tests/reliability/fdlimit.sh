#!/bin/bash
# A client at its descriptor limit (tests/reliability/fdlimit.py): under
# `ulimit -n 256` it opens 60 connections it does not use yet, then 150
# inheritable connections, used once each, then pipes until EMFILE; then one more exchange on every
# connection, each checked byte for byte. Run plain, then with both ends shimmed,
# over TCP and a unix socket, with the library's defaults and with
# SHMSHIM_SHORT_MS=0 SHMSHIM_STATS=0: the client must get exactly as many
# connections as without the library, and pipes but one (the library's log file
# and statistics table keep a descriptor each) (the library's
# descriptors for its connections, a segment memfd kept for an exec per
# inheritable upgraded connection and an endpoint per connection waiting for its
# offer, made it fail with EMFILE at about 110 connections: a client at its
# limit failed where the kernel lets it go on, redis-benchmark -c 700 under
# `ulimit -n 1024`), some connections upgraded at both ends before the limit
# came, and the library saying what it gave back. Then, 2.5 s later, one more
# connection: upgraded at both ends (the client's scarce period is over; it
# stayed plain for good before).
#   BUILD=build SHM_PRELOAD=... tests/reliability/fdlimit.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
PY=$ROOT/tests/reliability/fdlimit.py
TMP=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$TMP"' EXIT
pass=0 fail=0
port=$((20000 + RANDOM % 10000))

# one VARIANT ADDR: the client's result line in $TMP/VARIANT.out
one() {
  local v=$1 addr=$2 envs=()
  [ "$v" != plain ] && envs=(LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log")
  [ "$v" = shim0 ] && envs+=(SHMSHIM_SHORT_MS=0 SHMSHIM_STATS=0)
  env "${envs[@]}" timeout 60 python3 "$PY" server "$addr" >"$TMP/srv.$v" 2>&1 &
  spid=$!
  local i
  for i in $(seq 250); do grep -q ready "$TMP/srv.$v" 2>/dev/null && break; sleep 0.02; done
  env "${envs[@]}" timeout 60 bash -c 'ulimit -n 256 && exec python3 "$@"' _ "$PY" client "$addr" 150 60 >"$TMP/$v.out" 2>&1
  echo "client exit $?" >>"$TMP/$v.out"
  wait "$spid"
  echo "server exit $?" >>"$TMP/$v.out"
  spid=
}

for fam in tcp unix; do
  port=$((port + 1))
  [ $fam = tcp ] && addr=tcp:$port || addr=unix:$TMP/echo.sock
  rm -f "$TMP/echo.sock"
  one plain "$addr"
  for v in shim shim0; do
    rm -f "$TMP/log" "$TMP/echo.sock"
    one $v "$addr"
    why=""
    grep -q ' bad=0$' "$TMP/plain.out" || why="the plain run itself failed: $(tr '\n' ' ' <"$TMP/plain.out")"
    # The library's own descriptors that stay: its log file (SHMSHIM_LOG_FILE,
    # here) and its statistics table (with the defaults): a pipe less.
    strip() { sed -e 's/ pipe_fds=[0-9]* total=[0-9]* / /' -e '/^late_fd=/d' "$1"; }
    pipes() { sed -n 's/.* pipe_fds=\([0-9]*\) .*/\1/p' "$1"; }
    [ "$(strip "$TMP/$v.out")" = "$(strip "$TMP/plain.out")" ] && [ "$(pipes "$TMP/$v.out")" -ge $(($(pipes "$TMP/plain.out") - 2)) ] ||
      why="$why shimmed: $(tr '\n' ' ' <"$TMP/$v.out"), plain: $(tr '\n' ' ' <"$TMP/plain.out")"
    uc=$(grep -c 'upgraded fd=[0-9]* role=client' "$TMP/log" 2>/dev/null)
    us=$(grep -c 'upgraded fd=[0-9]* role=server' "$TMP/log" 2>/dev/null)
    [ "${uc:-0}" -gt 0 ] && [ "${uc:-0}" = "${us:-0}" ] || why="$why upgraded: $uc client and $us server ends (some, equal)"
    gave=$(grep -o 'gave back [0-9]* kept for exec and [0-9]* endpoints' "$TMP/log" 2>/dev/null | head -1)
    set -- $gave
    [ "${3:-0}" -gt 0 ] && [ "${8:-0}" -gt 0 ] ||
      why="$why the library did not say it gave back both kinds of descriptors (${gave:-nothing said})"
    # the late connection, after the give-back: upgraded by the client
    late=$(sed -n 's/^late_fd=//p' "$TMP/$v.out")
    lateup=$(sed -n '/gave back/,$p' "$TMP/log" 2>/dev/null | grep -c "upgraded fd=${late:-x} role=client")
    [ -n "$late" ] && [ "$lateup" -ge 1 ] ||
      why="$why the connection made after the scarce period was not upgraded by the client (fd ${late:-none})"
    if [ -n "$why" ]; then
      fail=$((fail + 1)); echo "FAIL fdlimit $fam $v:$why"
    else
      pass=$((pass + 1)); echo "ok fdlimit $fam $v: $(head -1 "$TMP/$v.out"); upgraded $uc at both ends; $gave; late connection upgraded"
    fi
  done
done
echo "fdlimit: $pass passed, $fail failed"
[ $fail = 0 ]

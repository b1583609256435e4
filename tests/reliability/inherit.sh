#!/bin/bash
# Forged SHMSHIM_INHERIT variables (core/inherit.c): a shimmed parent with two
# upgraded connections A and B (to the shimmed echo server of victim.c) execs
# itself; the variable the library wrote is rewritten on the way (forgeinh.c,
# "tamper"), and the new image must take over only what the variable truly
# describes:
#   none       the variable as written: A and B taken over and working (control)
#   dup_alias  + "D,<pipe's write end>,A": the pipe must stay a pipe (it used to
#              become a second name for A: its bytes went into A's ring)
#   family     A's entry claims AF_INET: A refused, B taken over
#   swapseg    A's and B's segments exchanged: neither taken over (the segment
#              must name the socket it was carried with), both reset loudly
#   BUILD=build SHM_PRELOAD=... tests/reliability/inherit.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
V=$ROOT/$BUILD/tests/rel/victim
F=$ROOT/$BUILD/tests/rel/forgeinh
TMP=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0; fail=0

env LD_PRELOAD="$PRE" "$V" echo "unix:$TMP/echo" 0 >"$TMP/echo.out" 2>&1 &
pids=$!
for i in $(seq 250); do grep -q ready "$TMP/echo.out" && break; sleep 0.02; done

# case CASE WANT_TAKEN_OVER WANT_LINE [LOGWORD]
run() {
  local cas=$1 want=$2 wline=$3 logword=${4:-}
  rm -f "$TMP/log"
  env LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log" "$F" parent "unix:$TMP/echo" "$cas" \
    >"$TMP/out" 2>"$TMP/err"
  local rc=$? why=""
  local line; line=$(grep '^child:' "$TMP/out")
  local ups; ups=$(grep -c ' upgraded fd=.*role=client' "$TMP/log" 2>/dev/null)
  local taken; taken=$(grep -c 'inherited fd=.*taken over' "$TMP/log" 2>/dev/null)
  [ $rc = 0 ] || why="exit $rc: $(grep -v 'cannot be preloaded' "$TMP/err" | tail -2)"
  [ "$ups" = 2 ] || why="$why $ups connections upgraded before exec, expected 2"
  [ "$taken" = "$want" ] || why="$why $taken connections taken over, expected $want"
  [ "$line" = "child: $wline" ] || why="$why got '$line', expected 'child: $wline'"
  if [ -n "$logword" ] && ! grep -q "$logword" "$TMP/log"; then why="$why no '$logword' in the log"; fi
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL inherit $cas:$why"; sed 's/^/    log: /' "$TMP/log" | tail -6; grep tamper "$TMP/err" | sed 's/^/    /'
  else
    pass=$((pass + 1)); echo "ok inherit $cas: $taken taken over, $line"
  fi
}

run none      2 "pipe=ok A=ok B=ok"
run dup_alias 2 "pipe=ok A=ok B=ok" "not that socket"
run family    1 "pipe=ok A=ERR B=ok" "does not describe"
run swapseg   0 "pipe=ok A=ERR B=ERR" "not carried with this socket"
echo "inherit: $pass passed, $fail failed"
[ $fail = 0 ]

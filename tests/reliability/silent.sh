#!/bin/bash
# Processes of the same user connect to a pending client's endpoint and say
# nothing (tests/reliability/silent.c, over TCP and a unix socket): the client's
# non-blocking recv() must answer at once, as without the library (it waited up
# to 2 s for the first silent connection, then gave the connection up as plain),
# and the connection must still be upgraded when the real server offers. Each
# case runs plain, then with both ends shimmed, with SHMSHIM_SHORT_MS=0 and with
# the defaults: the outputs must be identical, every byte checked, and the
# shimmed runs upgraded at both ends.
#   BUILD=build SHM_PRELOAD=... tests/reliability/silent.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/rel/silent
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0

# run FAMILY SETTING(short0|default)
run() {
  local fam=$1 set=$2 why="" envs=(LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log")
  [ "$set" = short0 ] && envs+=(SHMSHIM_SHORT_MS=0)
  rm -rf "$TMP/p" "$TMP/s" "$TMP/log"
  mkdir "$TMP/p" "$TMP/s"
  timeout 60 "$P" "$fam" "$TMP/p" >"$TMP/plain.out" 2>"$TMP/plain.err"
  local prc=$?
  env "${envs[@]}" timeout 60 "$P" "$fam" "$TMP/s" >"$TMP/shim.out" 2>"$TMP/shim.err"
  local src=$?
  [ "$prc" = 0 ] || why="$why plain run exit $prc: $(tail -1 "$TMP/plain.err");"
  [ "$src" = 0 ] || why="$why shimmed run exit $src: $(tail -1 "$TMP/shim.err");"
  cmp -s "$TMP/plain.out" "$TMP/shim.out" ||
    why="$why output differs: plain '$(head -2 "$TMP/plain.out" | tr '\n' ' ')', shimmed '$(head -2 "$TMP/shim.out" | tr '\n' ' ')';"
  grep -q "3 of 3 intruders connected" "$TMP/shim.err" || why="$why the intruders did not reach the endpoint: $(head -1 "$TMP/shim.err");"
  local up
  up=$(grep -c ' upgraded fd=' "$TMP/log" 2>/dev/null)
  [ "$up" = 2 ] || why="$why upgraded ends: ${up:-0} (want 2): $(grep -m2 ' plain fd=' "$TMP/log" 2>/dev/null | tr '\n' ' ');"
  if [ -n "$why" ]; then
    fail=$((fail + 1))
    echo "FAIL silent $fam $set:$why"
  else
    pass=$((pass + 1))
    echo "ok silent $fam $set: EAGAIN as plain, 10 round trips, upgraded at both ends ($(grep -o 'took.*' "$TMP/shim.err"))"
  fi
}

for fam in tcp unix; do
  run "$fam" short0
  run "$fam" default
done
echo "silent: $pass passed, $fail failed"
[ "$fail" = 0 ]

#!/bin/bash
# Descriptor numbers freed behind the shim's back (a raw close system call,
# close_range, closefrom, fclose of an fdopen'ed socket) and reused by a new
# descriptor; epoll's fairness to non-shim descriptors with more ready rings than
# maxevents; copies of an epoll descriptor; the program's dup2 onto the numbers
# the library holds hidden. tests/progs/fdreuse.c checks every byte;
# this script checks the exit codes and, through the shim's log, how many
# connection ends were upgraded.
#   BUILD=build tests/preload/fdreuse.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
T=$ROOT/$BUILD/tests/progs/fdreuse
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((10000 + RANDOM % 15000))
pass=0; fail=0

# run SCENARIO UPGRADED_ENDS
run() {
  local scen=$1 want=$2 p1 p2
  port=$((port + 2)); p1=$port; p2=$((port + 1))
  local log=$TMP/shim.log; rm -f "$log" "$TMP/srv.out" "$TMP/cli.out"
  # Connections to the second port stay plain (rawclose2's connection B).
  local envs=(env "LD_PRELOAD=$LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$log" "SHMSHIM_PORTS_DENY=$p2")
  [ "$scen" = epmax1 ] || [ "$scen" = epmax2 ] && envs=("${envs[@]:0:4}")
  # rawmany's 70 connections end at once, unused: with the default policy they
  # are short-lived and C would rightly stay plain. C must be upgraded here.
  [ "$scen" = rawmany ] || [ "$scen" = rawdup ] && envs+=(SHMSHIM_SHORT_MS=0)
  # rawdup: the log opened from the start (debug), so that the numbers freed
  # behind our back are the lowest free ones when the inner set is rebuilt.
  [ "$scen" = rawdup ] && envs+=(SHMSHIM_LOG=debug)
  "${envs[@]}" timeout 60 "$T" server "$scen" "$p1" "$p2" >"$TMP/srv.out" 2>&1 &
  spid=$!
  local i
  for i in $(seq 200); do grep -q ready "$TMP/srv.out" 2>/dev/null && break; sleep 0.02; done
  "${envs[@]}" timeout 60 "$T" client "$scen" "$p1" "$p2" >"$TMP/cli.out" 2>&1
  local crc=$?
  wait "$spid"; local src=$?; spid=
  local up=0 why=""
  [ -f "$log" ] && up=$(grep -c ' upgraded fd=' "$log")
  [ $crc = 0 ] || why="client exit $crc: $(tail -2 "$TMP/cli.out" | tr '\n' ' ')"
  [ $src = 0 ] || why="$why server exit $src: $(tail -2 "$TMP/srv.out" | tr '\n' ' ')"
  [ "$up" = "$want" ] || why="$why upgraded $up connection ends, expected $want"
  [ "$scen" != rawdup ] || grep -q 'inner set rebuilt' "$log" 2>/dev/null || why="$why the inner set was not rebuilt (the test proves nothing)"
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL fdreuse $scen: $why"
    [ -f "$log" ] && grep -v " upgraded fd=" "$log" | sed "s/^/    log: /" | head -20
  else
    pass=$((pass + 1)); echo "ok fdreuse $scen $(grep -h 'listener reported\|hidden numbers' "$TMP/srv.out")"
  fi
}

run rawclose1 4  # A and B upgraded
run rawclose2 2  # A upgraded, B (second port) plain
run closerange 4 # A and C
run closefrom 4
run fclose 4
run rawmany 2    # C; the 70 others are offered, but their clients never use them
run rawdup 2     # the same, with a copy of each of the 70 in the set too
run epmax1 16    # 8 connections (the listener's is never used: plain)
run epmax2 16
run epdup 2
run dup2hidden 2
run dup2closing 4
echo "fdreuse: $pass passed, $fail failed"
[ $fail = 0 ]

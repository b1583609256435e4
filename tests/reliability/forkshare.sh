#!/bin/bash
# A client's connection shared with its fork child after the upgrade, and a stdio
# pointer saved across a dup2 (tests/reliability/forkshare.c): each case plain,
# then with both ends shimmed (SHMSHIM_SHORT_MS=0); the outputs must be the same
# and the shimmed connection upgraded at both ends. Before (a review's repros):
# the parent's idle-memory release gave back the pages of its child's unread
# bytes (61,440 of 65,536 bytes arrived as zeros); the parent's poll and
# FIONREAD counted what its child had read (and the switch-over kick as data);
# the saved stream had been freed (SIGSEGV). concw/concr: parent and child write
# (read) the connection at the same time; before, they copied into (out of) the
# same place of the ring: records mixed, bytes lost or doubled, then a reset.
#   BUILD=build SHM_PRELOAD=... tests/reliability/forkshare.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/rel/forkshare
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0

# run NAME ARGS...: plain, then shimmed; the last argument is the directory
run() {
  local name=$1 why=""
  shift
  rm -rf "$TMP/d" "$TMP/log"
  mkdir "$TMP/d"
  timeout 60 "$P" "$@" "$TMP/d" >"$TMP/plain.out" 2>&1
  echo "exit $?" >>"$TMP/plain.out"
  rm -rf "$TMP/d"
  mkdir "$TMP/d"
  env LD_PRELOAD="$PRE" SHMSHIM_SHORT_MS=0 SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log" timeout 60 "$P" "$@" "$TMP/d" \
    >"$TMP/shim.out" 2>&1
  echo "exit $?" >>"$TMP/shim.out"
  cmp -s <(sort "$TMP/plain.out") <(sort "$TMP/shim.out") ||
    why="$why output differs: plain '$(tr '\n' ' ' <"$TMP/plain.out")', shimmed '$(tr '\n' ' ' <"$TMP/shim.out")';"
  local up
  up=$(grep -c ' upgraded fd=' "$TMP/log" 2>/dev/null)
  [ "$name" = stdsaved ] || [ "$up" = 2 ] || why="$why upgraded ends: ${up:-0} (want 2);"
  # (a child killed inside its ring section: its sibling takes the side lock over, logged)
  grep ' warn ' "$TMP/log" 2>/dev/null | grep -v 'a section of a shared connection' |
    grep -q . && why="$why warnings: $(grep -m2 ' warn ' "$TMP/log" | tr '\n' ' ');"
  if [ -n "$why" ]; then
    fail=$((fail + 1))
    echo "FAIL forkshare $name:$why"
  else
    pass=$((pass + 1))
    echo "ok forkshare $name: as plain$([ "$name" = stdsaved ] || echo ', upgraded at both ends')"
  fi
}

run idle idle
run look1000 look 1000
run look300000 look 300000
for f in unix tcp; do
  run concw-$f concw $f
  run concr-$f concr $f
  run concwkill-$f concwkill $f
done
# (over TCP the kernel's reset drops what the server had not read yet: unix only)
run forkfail-unix forkfail unix
run stdsaved stdsaved
echo "forkshare: $pass passed, $fail failed"
[ "$fail" = 0 ]

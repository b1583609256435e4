#!/bin/bash
# A server socket that was close-on-exec when it was upgraded (python makes every
# socket so; accept4(SOCK_CLOEXEC) likewise), handed to a new image afterwards:
#   spawn  posix_spawn duplicates it onto /bin/echo's fd 1: echo's line must arrive
#   exec   set_inheritable, then exec: the new image echoes 64 KiB (sha256)
# The new image must take the connection over (SHMSHIM_INHERIT), upgraded at both
# ends, with no warning. The memfd of a close-on-exec socket used to be given back
# at the upgrade: the new image could not take the connection over and read
# ECONNRESET (echo failed, the client got nothing). It is now kept as a spare
# while few are kept (core/segment.h, shm_seg_keep_spare).
#   BUILD=build SHM_PRELOAD=... tests/reliability/spawncloexec.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
PY=$ROOT/tests/reliability/spawncloexec.py
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0; fail=0
shim() { env LD_PRELOAD="$PRE" SHMSHIM_SHORT_MS=0 SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log" "$@"; }
until_grep() { for i in $(seq 200); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.05; done; return 1; }

for cas in spawn exec; do
  rm -f "$TMP/log" "$TMP/s" "$TMP/srv.out" "$TMP/cli.out"
  shim timeout 30 python3 "$PY" server "$TMP/s" "$cas" >"$TMP/srv.out" 2>&1 &
  spid=$!
  until_grep listening "$TMP/srv.out"
  shim timeout 30 python3 "$PY" client "$TMP/s" "$cas" >"$TMP/cli.out" 2>&1
  crc=$?
  wait "$spid"; src=$?; spid=
  why=""
  [ "$crc" = 0 ] || why="$why client exit $crc: $(tail -2 "$TMP/cli.out" | tr '\n' ' ');"
  [ "$src" = 0 ] || why="$why server exit $src: $(tail -2 "$TMP/srv.out" | tr '\n' ' ');"
  grep -q 'client ok' "$TMP/cli.out" || why="$why the client did not check the bytes;"
  grep -q 'inherited fd=[0-9]* role=server: taken over after exec' "$TMP/log" || why="$why the new image did not take the connection over;"
  grep ' warn ' "$TMP/log" >/dev/null && why="$why warnings: $(grep -m2 ' warn ' "$TMP/log" | tr '\n' ' ');"
  [ "$(grep -c ' upgraded fd=' "$TMP/log")" = 2 ] || why="$why upgraded ends: $(grep -c ' upgraded fd=' "$TMP/log") (want 2);"
  if [ -z "$why" ]; then
    echo "ok spawncloexec $cas"; pass=$((pass + 1))
  else
    echo "FAIL spawncloexec $cas:$why"; sed 's/^/    log: /' "$TMP/log" | head -12; fail=$((fail + 1))
  fi
done
echo "spawncloexec: $pass passed, $fail failed"
[ "$fail" = 0 ]

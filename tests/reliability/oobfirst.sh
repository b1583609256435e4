#!/bin/bash
# Urgent data that arrives before the client's first use of its socket, taken with
# recv(MSG_OOB) as the client's first call (tests/reliability/oobfirst.py): run
# plain, then with both ends shimmed; the output must be the same (the urgent
# byte, then 10 byte-checked round trips), and the shimmed connection upgraded at
# both ends. The shimmed run used to die of SIGSEGV (the urgent byte's note looked
# at a segment the pending client did not have yet).
#   BUILD=build SHM_PRELOAD=... tests/reliability/oobfirst.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
PY=$ROOT/tests/reliability/oobfirst.py
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
timeout 30 python3 "$PY" >"$TMP/plain.out" 2>&1
prc=$?
env LD_PRELOAD="$PRE" SHMSHIM_SHORT_MS=0 SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log" timeout 30 python3 "$PY" \
  >"$TMP/shim.out" 2>&1
src=$?
why=""
[ "$prc" = 0 ] || why="$why plain run exit $prc: $(tail -2 "$TMP/plain.out" | tr '\n' ' ');"
[ "$src" = 0 ] || why="$why shimmed run exit $src: $(tail -2 "$TMP/shim.out" | tr '\n' ' ');"
cmp -s "$TMP/plain.out" "$TMP/shim.out" || why="$why output differs: plain '$(tr '\n' ' ' <"$TMP/plain.out")', shimmed '$(tr '\n' ' ' <"$TMP/shim.out")';"
[ "$(grep -c ' upgraded fd=' "$TMP/log" 2>/dev/null)" = 2 ] || why="$why upgraded ends: $(grep -c ' upgraded fd=' "$TMP/log" 2>/dev/null) (want 2);"
grep -q ' warn ' "$TMP/log" 2>/dev/null && why="$why warnings: $(grep -m2 ' warn ' "$TMP/log" | tr '\n' ' ');"
if [ -n "$why" ]; then
  echo "FAIL oobfirst:$why"
  echo "oobfirst: 0 passed, 1 failed"
  exit 1
fi
echo "ok oobfirst: urgent byte before the first look, then 10 round trips: as plain, upgraded at both ends"
echo "oobfirst: 1 passed, 0 failed"

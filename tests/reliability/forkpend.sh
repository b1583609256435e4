#!/bin/bash
# A client that forks while its connection waits for the server's offer, then
# both processes use it (tests/reliability/forkpend.py), over TCP and a unix
# socket: run plain, then with both ends shimmed (SHMSHIM_SHORT_MS=0); the
# output must be the same (every exchange echoed byte for byte), the shared
# connection plain at both ends (neither process attaches: the one that did not
# would read its sibling's switch-over kicks as data), the second connection,
# made after the fork, upgraded at both ends, though parent and children use it
# in turn after its upgrade. The child used to read the kicks (the server reset
# the connection on a stray byte) or wait for bytes that went to the ring; on the
# second connection, the parent wrote from where it was before its child wrote
# (wrong bytes, then a reset).
#   BUILD=build SHM_PRELOAD=... tests/reliability/forkpend.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
PY=$ROOT/tests/reliability/forkpend.py
TMP=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; [ -n "${FORKPEND_KEEP:-}" ] || rm -rf "$TMP"' EXIT
pass=0 fail=0
port=$((20000 + RANDOM % 10000))

# one VARIANT ADDR: runs server and client; the client's output in $TMP/VARIANT.out
one() {
  local v=$1 addr=$2 envs=()
  [ "$v" = shim ] && envs=(LD_PRELOAD="$PRE" SHMSHIM_SHORT_MS=0 SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log")
  env "${envs[@]}" timeout 60 python3 "$PY" server "$addr" >"$TMP/srv.$v" 2>&1 &
  spid=$!
  local i
  for i in $(seq 250); do grep -q ready "$TMP/srv.$v" 2>/dev/null && break; sleep 0.02; done
  env "${envs[@]}" timeout 60 python3 "$PY" client "$addr" >"$TMP/$v.out" 2>&1
  echo "client exit $?" >>"$TMP/$v.out"
  wait "$spid"
  echo "server exit $?" >>"$TMP/$v.out"
  spid=
}

for fam in tcp unix; do
  rm -f "$TMP"/log "$TMP"/*.out "$TMP"/s.*
  port=$((port + 1))
  if [ "$fam" = tcp ]; then a1=$port; port=$((port + 1)); a2=$port; else a1=$TMP/s.plain; a2=$TMP/s.shim; fi
  one plain "$a1"
  one shim "$a2"
  why=""
  grep -q 'child: 3000 bytes echoed' "$TMP/plain.out" && grep -q 'exit 0' "$TMP/plain.out" ||
    why="$why plain run: $(tr '\n' ' ' <"$TMP/plain.out");"
  cmp -s "$TMP/plain.out" "$TMP/shim.out" ||
    why="$why output differs: plain '$(tr '\n' ' ' <"$TMP/plain.out")', shimmed '$(tr '\n' ' ' <"$TMP/shim.out")';"
  up=$(grep -c ' upgraded fd=' "$TMP/log" 2>/dev/null)
  [ "$up" = 2 ] || why="$why upgraded ends: ${up:-0} (want 2: the second connection's);"
  # The shared connection: plain at the server, and in the process(es) that
  # looked at it (the words depend on whether the server offered before the fork
  # shut the client's endpoint: "never took the offer" / "shared with a process
  # forked", or "peer not shimmed (Connection refused)" / "data came without an offer").
  ps=$(grep -c ' plain fd=[0-9]* role=server' "$TMP/log" 2>/dev/null)
  pc=$(grep -c ' plain fd=[0-9]* role=client' "$TMP/log" 2>/dev/null)
  [ "$ps" = 1 ] || why="$why plain server ends: ${ps:-0} (want 1, the shared connection);"
  [ "${pc:-0}" -ge 1 ] || why="$why no client end of the shared connection says plain;"
  grep -q ' warn ' "$TMP/log" 2>/dev/null && why="$why warnings: $(grep -m2 ' warn ' "$TMP/log" | tr '\n' ' ');"
  if [ -n "$why" ]; then
    fail=$((fail + 1))
    echo "FAIL forkpend $fam:$why"
  else
    pass=$((pass + 1))
    echo "ok forkpend $fam: parent and child on the shared connection as plain (plain at both ends), the second connection upgraded"
  fi
done
echo "forkpend: $pass passed, $fail failed"
[ "$fail" = 0 ]

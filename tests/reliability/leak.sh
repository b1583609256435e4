#!/bin/bash
# Leaks: 10,000 upgraded connections opened and closed (tests/reliability/leak.c,
# TCP then AF_UNIX); both processes measure their descriptors, mappings and RSS
# after a warm-up of 200 connections and at the end. Every connection must have
# been upgraded at both ends.
#   LEAK_CONNS=10000 tests/reliability/leak.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/rel/leak
N=${LEAK_CONNS:-10000}
WARM=200
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
fail=0; pass=0
for fam in tcp4 unix; do
  [ $fam = unix ] && addr=unix:$TMP/leak.sock || addr=tcp4:$port
  rm -f "$TMP"/*.log
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/s.log" timeout 600 "$P" server "$addr" $WARM "$N" >"$TMP/s.out" 2>&1 &
  spid=$!
  for i in $(seq 250); do grep -q ready "$TMP/s.out" 2>/dev/null && break; sleep 0.02; done
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/c.log" timeout 600 "$P" client "$addr" $WARM "$N" >"$TMP/c.out" 2>&1
  crc=$?
  wait $spid; src=$?; spid=
  cu=$(grep -c 'upgraded fd=.*role=client' "$TMP/c.log"); su=$(grep -c 'upgraded fd=.*role=server' "$TMP/s.log")
  want=$((WARM + N))
  echo "    $(grep '^leak' "$TMP/s.out")"; echo "    $(grep '^leak' "$TMP/c.out")"
  if [ $crc != 0 ] || [ $src != 0 ] || [ "$cu" != $want ] || [ "$su" != $want ]; then
    echo "FAIL leak $fam: client exit $crc, server exit $src, upgrades $cu/$su of $want"; tail -n 2 "$TMP/c.out" "$TMP/s.out"
    fail=$((fail + 1))
  else
    echo "ok leak $fam: $want connections upgraded and closed, descriptors and mappings back exactly, RSS within ${LEAK_RSS_SLACK_KIB:-256} KiB"
    pass=$((pass + 1))
  fi
done
echo "leak: $pass passed, $fail failed"
[ $fail = 0 ]

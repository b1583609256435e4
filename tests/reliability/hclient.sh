#!/bin/bash
# Hostile client against a shimmed epoll server (tests/reliability/hclient.c
# against the echo server of load.c), while 100 healthy shimmed connections stream
# 64 MiB through the same server process. For every case: the healthy connections
# finish byte-exact and upgraded, the server process is still alive afterwards,
# and for the corruption cases it closes the hostile connection (the shim logs the
# corruption and reports ECONNRESET to it) within the 5 s bound.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
HC=$ROOT/$BUILD/tests/rel/hclient
L=$ROOT/$BUILD/tests/rel/load
TMP=$(mktemp -d)
epid=
cleanup() { [ -n "$epid" ] && kill "$epid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
pass=0; fail=0
# run FAMILY CASE MUST_CLOSE(1|0) LOGWORD
run() {
  local fam=$1 cas=$2 must=$3 word=$4 addr
  port=$((port + 1))
  [ "$fam" = unix ] && addr=unix:$TMP/e.$port || addr=tcp4:$port
  rm -f "$TMP"/*.log "$TMP"/*.out
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/server.log" "$L" echo "$addr" >"$TMP/echo.out" 2>&1 &
  epid=$!
  for i in $(seq 250); do grep -q ready "$TMP/echo.out" 2>/dev/null && break; sleep 0.02; done
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/good.log" timeout 120 "$L" client "$addr" 100 33554432 $RANDOM >"$TMP/good.out" 2>&1 &
  local gpid=$!
  timeout 60 "$HC" "$addr" "$cas" >"$TMP/h.out" 2>&1
  local hrc=$?
  wait $gpid; local grc=$?
  local alive=0; kill -0 $epid 2>/dev/null && alive=1
  kill $epid 2>/dev/null; wait $epid 2>/dev/null; local erc=$?; epid=
  local gups=$(grep -c 'upgraded fd=.*role=client' "$TMP/good.log") line=$(grep '^hclient' "$TMP/h.out") why=""
  [ $hrc = 0 ] || why="hostile client could not stage it: $line"
  [ $grc = 0 ] && [ "$gups" = 100 ] || why="$why healthy client exit $grc, $gups/100 upgraded: $(tail -n 2 "$TMP/good.out" | tr '\n' ' ')"
  [ $alive = 1 ] || why="$why the server died (status $erc)"
  [ "$must" = 0 ] || grep -q 'server closed' <<<"$line" || why="$why the server kept the corrupt connection"
  [ -z "$word" ] || grep -q "$word" "$TMP/server.log" || why="$why no '$word' in the server's log"
  if [ -n "$why" ]; then fail=$((fail + 1)); echo "FAIL hclient $fam $cas:$why"; sed 's/^/    log: /' "$TMP/server.log" | grep -v 'upgraded fd' | head -5
  else pass=$((pass + 1)); echo "ok hclient $fam $cas: ${line#hclient $cas: }; server alive, 100 healthy connections byte-exact"; fi
}
for fam in tcp4 unix; do
  run $fam c_head_beyond 1 "corrupted the ring"
  run $fam c_head_back 1 "corrupted the ring"
  run $fam c_tail_past 1 "corrupted the ring"
  run $fam c_plain_back 1 "plain bytes"
  run $fam c_flags 0 ""
  run $fam c_futex 0 ""
done
echo "hostile client: $pass passed, $fail failed"
[ $fail = 0 ]

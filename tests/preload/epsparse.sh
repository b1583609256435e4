#!/bin/bash
# Lost wake-ups and misreported readiness in epoll's hot and cold members
# (docs/design.md "Readiness translation"): tests/progs/epsparse.c, a
# single-threaded epoll server (level-triggered, edge-triggered, one-shot and
# delete/re-add members, replies deferred past an epoll_wait) and a client holding
# 200 connections, most of them idle most of the time, with sparse requests of 1 B
# to 300 KB, half-closes and abrupt closes. Over TCP and AF_UNIX: plain (the reference), then the library on both
# ends with SHMSHIM_SHORT_MS=0 and with the defaults. The programs check every
# byte and fail on a reply stalled for 5 s; here both outputs must equal the
# plain run's and every connection must be upgraded at both ends.
#   BUILD=build tests/preload/epsparse.sh     (EPSPARSE_OPS, EPSPARSE_SEED)
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
T=$ROOT/$BUILD/tests/progs/epsparse
N=200
OPS=${EPSPARSE_OPS:-3000}
SEED=${EPSPARSE_SEED:-1}
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((10000 + RANDOM % 15000))
pass=0; fail=0

# run TRANSPORT NAME [ENV...]: outputs in $TMP/NAME.{srv,cli}, logs in .{slog,clog}
run() {
  local tr=$1 name=$2; shift 2
  local addr
  port=$((port + 1))
  if [ "$tr" = tcp ]; then addr=tcp:$port; else addr=unix:$TMP/s.sock; fi
  rm -f "$TMP/$name".*
  local senv=(env "$@") cenv=(env "$@")
  if [ $# -gt 0 ]; then
    senv+=(SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/$name.slog")
    cenv+=(SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/$name.clog")
  fi
  "${senv[@]}" timeout 60 "$T" server "$addr" $N >"$TMP/$name.srv" 2>&1 &
  spid=$!
  local i
  for i in $(seq 200); do grep -q ready "$TMP/$name.srv" 2>/dev/null && break; sleep 0.02; done
  "${cenv[@]}" timeout 60 "$T" client "$addr" $N "$OPS" "$SEED" >"$TMP/$name.cli" 2>&1
  crc=$?
  wait "$spid"; src=$?; spid=
}

for tr in tcp unix; do
  run $tr plain
  if [ $crc != 0 ] || [ $src != 0 ]; then
    fail=$((fail + 1))
    echo "FAIL epsparse $tr plain (the reference): client exit $crc, server exit $src"
    grep -h FAIL "$TMP/plain.cli" "$TMP/plain.srv" | head -5 | sed 's/^/    /'
    continue
  fi
  for mode in short0 default; do
    if [ $mode = short0 ]; then run $tr $mode "LD_PRELOAD=$LIB" SHMSHIM_SHORT_MS=0
    else run $tr $mode -u SHMSHIM_SHORT_MS "LD_PRELOAD=$LIB"; fi
    why=""
    [ $crc = 0 ] || why="client exit $crc: $(grep -h FAIL "$TMP/$mode.cli" | head -3 | tr '\n' ' ')"
    [ $src = 0 ] || why="$why server exit $src: $(grep -h FAIL "$TMP/$mode.srv" | head -3 | tr '\n' ' ')"
    if [ -z "$why" ]; then
      cmp -s "$TMP/plain.cli" "$TMP/$mode.cli" || why="client output differs from the plain run's"
      cmp -s "$TMP/plain.srv" "$TMP/$mode.srv" || why="$why server output differs from the plain run's"
    fi
    su=0; cu=0
    [ -f "$TMP/$mode.slog" ] && su=$(grep -c ' upgraded fd=' "$TMP/$mode.slog")
    [ -f "$TMP/$mode.clog" ] && cu=$(grep -c ' upgraded fd=' "$TMP/$mode.clog")
    [ "$su" = $N ] && [ "$cu" = $N ] || why="$why upgraded $su server and $cu client ends, expected $N each"
    if [ -n "$why" ]; then
      fail=$((fail + 1)); echo "FAIL epsparse $tr $mode (seed $SEED, ops $OPS): $why"
      diff "$TMP/plain.cli" "$TMP/$mode.cli" | head -6 | sed 's/^/    /'
      cat "$TMP/$mode.slog" "$TMP/$mode.clog" 2>/dev/null | grep -v ' upgraded fd=' | head -10 | sed 's/^/    log: /'
    else
      pass=$((pass + 1)); echo "ok epsparse $tr $mode: $(tail -1 "$TMP/$mode.cli")"
    fi
  done
done
echo "epsparse: $pass passed, $fail failed"
[ $fail = 0 ]

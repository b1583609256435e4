#!/bin/bash
# A libuv program (node) at both ends: libuv closes sockets with a raw close system
# call, so the shim learns that a connection's number was freed only when a later
# accept/socket returns it again. 300 echo connections, 8 at a time, each checked
# with sha256 by the client; every connection end must be upgraded and the shim
# must log no warning. Not run without node.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
JS=$ROOT/tests/progs/js/uv_echo.js
if ! command -v node >/dev/null; then echo "libuv: not run (no node)"; exit 0; fi
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((10000 + RANDOM % 15000))
N=300
log=$TMP/shim.log
envs=(env "LD_PRELOAD=$LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$log")
"${envs[@]}" timeout 120 node "$JS" server $port $N >"$TMP/srv.out" 2>&1 &
spid=$!
for i in $(seq 250); do grep -q ready "$TMP/srv.out" 2>/dev/null && break; sleep 0.02; done
"${envs[@]}" timeout 120 node "$JS" client $port $N >"$TMP/cli.out" 2>&1
crc=$?
wait "$spid"; src=$?; spid=
up=$(grep -c ' upgraded fd=' "$log" 2>/dev/null)
warn=$(grep -c ' warn ' "$log" 2>/dev/null)
why=""
[ $crc = 0 ] || why="client exit $crc: $(tail -3 "$TMP/cli.out" | tr '\n' ' ')"
[ $src = 0 ] || why="$why server exit $src: $(tail -3 "$TMP/srv.out" | tr '\n' ' ')"
[ "$up" = $((2 * N)) ] || why="$why upgraded $up connection ends, expected $((2 * N))"
[ "$warn" = 0 ] || why="$why $warn warnings: $(grep -m3 ' warn ' "$log" | tr '\n' ' ')"
if [ -n "$why" ]; then
  echo "FAIL libuv: $why"
  echo "libuv: 0 passed, 1 failed"
  exit 1
fi
echo "ok libuv: node echo server and client, $N connections byte-exact (sha256), all upgraded"
echo "libuv: 1 passed, 0 failed"

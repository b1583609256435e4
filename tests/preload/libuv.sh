#!/bin/bash
# A libuv program (node) at both ends: libuv closes sockets with a raw close system
# call, so the shim learns that a connection's number was freed only when a later
# accept/socket returns it again. 300 echo connections, 8 at a time, each checked
# with sha256 by the client; the shim must log no warning, and every connection
# must be upgraded at both ends, or at neither (a client that does not look again
# before the server has answered and closed finds the offer withdrawn): the
# server's and the client's counts must agree, and most must be upgraded. (Since
# libuv calls syscall(SYS_close), which the shim interposes, the close is seen.)
# Not run without node.
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
ups=$(grep -c ' upgraded fd=.* role=server' "$log" 2>/dev/null)
upc=$(grep -c ' upgraded fd=.* role=client' "$log" 2>/dev/null)
wds=$(grep -c 'role=server: the client never took the offer' "$log" 2>/dev/null)
wdc=$(grep -c -e 'role=client: the server withdrew its offer' -e 'role=client: an offer came, but its sender no longer holds' "$log" 2>/dev/null)
warn=$(grep -c ' warn ' "$log" 2>/dev/null)
why=""
[ $crc = 0 ] || why="client exit $crc: $(tail -3 "$TMP/cli.out" | tr '\n' ' ')"
[ $src = 0 ] || why="$why server exit $src: $(tail -3 "$TMP/srv.out" | tr '\n' ' ')"
[ "$ups" = "$upc" ] && [ $((ups + wds)) = $N ] && [ $((upc + wdc)) = $N ] ||
  why="$why upgraded $ups/$upc (server/client), withdrawn $wds/$wdc, expected $N connections accounted at both ends"
[ $((ups * 2)) -ge $N ] || why="$why only $ups of $N upgraded"
[ "$warn" = 0 ] || why="$why $warn warnings: $(grep -m3 ' warn ' "$log" | tr '\n' ' ')"
if [ -n "$why" ]; then
  echo "FAIL libuv: $why"
  echo "libuv: 0 passed, 1 failed"
  exit 1
fi
echo "ok libuv: node echo server and client, $N connections byte-exact (sha256), $ups upgraded at both ends, $wds at neither (offer withdrawn)"
echo "libuv: 1 passed, 0 failed"

#!/bin/bash
# Real programs under the shim: redis-server and redis-cli, both preloaded, over
# TCP and over a unix socket: SET and GET of a random 1 MB value must come back
# byte-identical, and the shim's log must show both ends of each connection upgraded.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
command -v redis-server >/dev/null || { echo "redis smoke: redis-server missing (make deps)"; exit 1; }
TMP=$(mktemp -d)
port=$((10000 + RANDOM % 15000))
log=$TMP/shim.log
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
shim() { env LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$log" "$@"; }
# Started directly (env execs redis-server), so that $! is the server's own PID.
env LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$log" redis-server --port "$port" \
  --bind 127.0.0.1 --unixsocket "$TMP/redis.sock" --save '' --appendonly no --dir "$TMP" \
  --daemonize no >"$TMP/server.out" 2>&1 &
spid=$!
for i in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
# The readiness probe above ran unshimmed: that connection must have stayed plain.
head -c 786432 /dev/urandom | base64 -w0 >"$TMP/value"   # 1 MiB of text
want=$(sha256sum <"$TMP/value" | cut -d' ' -f1)
fail=0
for where in "-p $port" "-s $TMP/redis.sock"; do
  : >"$log"
  shim timeout 20 redis-cli $where -x SET k <"$TMP/value" >"$TMP/set.out"
  got=$(shim timeout 20 redis-cli $where GET k | head -c -1 | sha256sum | cut -d' ' -f1)
  ups=$(grep -c ' upgraded fd=' "$log")
  if [ "$(cat "$TMP/set.out")" != OK ] || [ "$got" != "$want" ] || [ "$ups" != 4 ]; then
    echo "FAIL redis $where: set=$(cat "$TMP/set.out") sha=$got want=$want upgraded_ends=$ups (want 4)"
    sed 's/^/    log: /' "$log" | head
    fail=$((fail + 1))
  else
    echo "ok redis $where: 1 MiB SET/GET byte-identical, 2 connections upgraded at both ends"
  fi
done
# An unshimmed client against the shimmed server: plain, byte-identical.
: >"$log"
got=$(timeout 20 redis-cli -p "$port" GET k | head -c -1 | sha256sum | cut -d' ' -f1)
if [ "$got" != "$want" ] || grep -q ' upgraded fd=' "$log"; then
  echo "FAIL redis plain client: sha=$got upgraded=$(grep -c ' upgraded fd=' "$log")"; fail=$((fail + 1))
else
  echo "ok redis plain client against shimmed server: byte-identical, not upgraded"
fi
echo "redis smoke: $((3 - fail)) passed, $fail failed"
[ $fail = 0 ]

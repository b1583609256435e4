#!/bin/bash
# Load and soak: rounds of 1,000 concurrent upgraded connections through an epoll
# echo server and through redis-server (tests/reliability/load.c), random sizes,
# every byte checked on every connection, every connection upgraded at both ends.
# Rounds repeat until LOAD_SECONDS have passed (at least one round of each); the
# echo server's descriptor count must come back to its idle level after every
# round and its RSS must not keep growing.
#   LOAD_SECONDS=60 LOAD_CONNS=1000 LOAD_BYTES=134217728 tests/reliability/load.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
L=$ROOT/$BUILD/tests/rel/load
SECS=${LOAD_SECONDS:-60}
CONNS=${LOAD_CONNS:-1000}
BYTES=${LOAD_BYTES:-134217728} # per round and per server
TMP=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n 8192 || { echo "FAIL load: cannot raise the descriptor limit to 8192"; exit 1; }
command -v redis-server >/dev/null || { echo "FAIL load: redis-server missing (make deps)"; exit 1; }
port=$((20000 + RANDOM % 10000))
rport=$((port + 1))
shim() { env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$1" "${@:2}"; }

# Started with env directly (it execs), so that $! is the server's own PID.
env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/echo.log" "$L" echo "tcp4:$port" >"$TMP/echo.out" 2>&1 &
epid=$!
env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/redis.log" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
  --maxclients 4000 --dir "$TMP" --daemonize no >"$TMP/redis.out" 2>&1 &
rpid=$!
pids="$epid $rpid"
for i in $(seq 250); do grep -q ready "$TMP/echo.out" 2>/dev/null && break; sleep 0.02; done
for i in $(seq 250); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.02; done
idle_fds() { ls "/proc/$1/fd" | wc -l; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
base_fds=
fail=0; rounds=0; total=0; conns=0; rss_first=
t0=$(date +%s)
while :; do
  rounds=$((rounds + 1))
  for kind in echo redis; do
    : >"$TMP/client.log"; : >"$TMP/$kind.log"
    if [ $kind = echo ]; then
      shim "$TMP/client.log" timeout 300 "$L" client "tcp4:$port" "$CONNS" "$BYTES" "$RANDOM$rounds" >"$TMP/c.out" 2>&1
    else
      shim "$TMP/client.log" timeout 300 "$L" redis "$rport" "$CONNS" "$BYTES" "$RANDOM$rounds" >"$TMP/c.out" 2>&1
    fi
    rc=$?
    cu=$(grep -c 'upgraded fd=.*role=client' "$TMP/client.log"); su=$(grep -c 'upgraded fd=.*role=server' "$TMP/$kind.log")
    got=$(sed -n 's/^load: [0-9]* connections, \([0-9]*\) bytes.*/\1/p' "$TMP/c.out")
    if [ $rc != 0 ] || [ "$cu" != "$CONNS" ] || [ "$su" != "$CONNS" ]; then
      echo "FAIL load round $rounds $kind: exit $rc, $cu client and $su server upgrades of $CONNS"; tail -n 5 "$TMP/c.out"
      fail=$((fail + 1))
    else
      echo "ok load round $rounds $kind: $(cat "$TMP/c.out" | sed 's/^load: //'), $CONNS upgraded at both ends"
      total=$((total + ${got:-0})); conns=$((conns + CONNS))
    fi
  done
  # The echo server closed every connection: back to its idle descriptors (as
  # after round 1, which created the shim's one inner epoll set for its instance).
  [ -z "$base_fds" ] && sleep 0.5 && base_fds=$(idle_fds $epid)
  for i in $(seq 50); do [ "$(idle_fds $epid)" = "$base_fds" ] && break; sleep 0.1; done
  f=$(idle_fds $epid); r=$(rss_kb $epid); [ -z "$rss_first" ] && rss_first=$r
  if [ "$f" != "$base_fds" ]; then echo "FAIL load round $rounds: echo server holds $f descriptors, $base_fds when idle"; fail=$((fail + 1)); fi
  [ $fail != 0 ] && break
  [ $(($(date +%s) - t0)) -ge "$SECS" ] && break
done
echo "load: echo server RSS after round 1 ${rss_first} KiB, after round $rounds ${r} KiB; descriptors back to $base_fds after every round after the first"
# Allowed growth after the first round: the allocator's high-water mark may move a
# little between rounds of different random sizes; a per-connection leak would be
# 1,000 x rounds x (at least 1 KiB).
if [ "$rounds" -gt 1 ] && [ "$r" -gt $((rss_first + 16384)) ]; then
  echo "FAIL load: echo server RSS grew from $rss_first to $r KiB over $rounds rounds"; fail=$((fail + 1))
fi
echo "load: $rounds round(s) in $(($(date +%s) - t0)) s, $conns upgraded connections, $total bytes checked; $fail failure(s)"
[ $fail = 0 ]

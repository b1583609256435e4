#!/bin/bash
# Idle ring memory: a shimmed redis-server and a shimmed client (bench/loadgen
# hold) with 20 upgraded connections, each of which carried a 100 kB value both
# ways (SET, then GET checked). Then both sit idle, the server in epoll_wait and
# the client in poll(): after SHMSHIM_IDLE_MS (1000 here, so that the busy figure
# is read before it) each side gives the pages of its ring back. The resident shared memory of the segments is read from both processes'
# smaps, busy (right after the traffic) and after the idle time: busy it must be
# above the target (else this test proves nothing), idle at most 64 KiB per
# connection. Then every connection carries a new value, checked byte for byte.
# TCP and AF_UNIX.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
LG=$ROOT/$BUILD/bench/loadgen
N=20
VALUE=100000
LIMIT_KIB=64
TMP=$(mktemp -d)
spid= cpid=
cleanup() {
  exec 9>&- 2>/dev/null
  for p in $cpid $spid; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
command -v redis-server >/dev/null || { echo "FAIL idlemem: redis-server is not installed"; exit 1; }

# KiB resident in PID's mappings of connection segments (not the stats table).
seg_kib() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / { seg = ($0 ~ /memfd:shmshim / && $0 !~ /shmshim-stats/) }
       seg && /^Rss:/ { t += $2 } END { print t + 0 }' "/proc/$1/smaps"
}

fail=0 pass=0
for fam in tcp4 unix; do
  port=$((20000 + RANDOM % 10000))
  rm -f "$TMP"/*.log "$TMP"/fifo "$TMP"/sock
  env "LD_PRELOAD=$PRE" SHMSHIM_IDLE_MS=1000 SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/s.log" \
    redis-server --port "$([ $fam = tcp4 ] && echo $port || echo 0)" --bind 127.0.0.1 \
    --unixsocket "$TMP/sock" --save '' --appendonly no --dir "$TMP" >"$TMP/redis.out" 2>&1 &
  spid=$!
  addr=$([ $fam = tcp4 ] && echo "tcp4:$port" || echo "unix:$TMP/sock")
  for i in $(seq 100); do
    [ -S "$TMP/sock" ] && redis-cli -s "$TMP/sock" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
  done
  mkfifo "$TMP/fifo"
  # (no timeout(1) in between: $! must be the client itself; --watchdog bounds it)
  env "LD_PRELOAD=$PRE" SHMSHIM_IDLE_MS=1000 SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/c.log" \
    "$LG" "$addr" hold --conns $N --value $VALUE --watchdog 100 <"$TMP/fifo" >"$TMP/c.out" 2>&1 &
  cpid=$!
  exec 9>"$TMP/fifo"
  for i in $(seq 200); do grep -q 'hold ready' "$TMP/c.out" 2>/dev/null && break; sleep 0.05; done
  bs=$(seg_kib $spid) bc=$(seg_kib $cpid)
  sleep 3
  is=$(seg_kib $spid) ic=$(seg_kib $cpid)
  exec 9>&- # the client wakes up, sends and checks a new value on every connection
  wait $cpid
  crc=$? cpid=
  cu=$(grep -c 'upgraded fd=.*role=client' "$TMP/c.log" 2>/dev/null)
  su=$(grep -c 'upgraded fd=.*role=server' "$TMP/s.log" 2>/dev/null)
  kill $spid; wait $spid 2>/dev/null; spid=
  per() { echo $(($1 / N)); }
  line="busy server/client $(per $bs)/$(per $bc) KiB per connection, idle $(per $is)/$(per $ic) KiB"
  why=""
  [ $crc = 0 ] && grep -q 'hold done' "$TMP/c.out" || why="client exit $crc: $(head -2 "$TMP/c.out")"
  [ -z "$why" ] && [ "$cu" != $N ] && why="$cu of $N client connections upgraded"
  [ -z "$why" ] && [ "$su" -lt $N ] && why="$su of $N server connections upgraded"
  [ -z "$why" ] && { [ "$(per $bs)" -le $LIMIT_KIB ] || [ "$(per $bc)" -le $LIMIT_KIB ]; } &&
    why="busy memory already small: the measure is wrong"
  [ -z "$why" ] && [ "$(per $is)" -gt $LIMIT_KIB ] && why="idle server memory above $LIMIT_KIB KiB"
  [ -z "$why" ] && [ "$(per $ic)" -gt $LIMIT_KIB ] && why="idle client memory above $LIMIT_KIB KiB"
  if [ -n "$why" ]; then
    echo "FAIL idlemem $fam: $why ($line)"
    fail=$((fail + 1))
  else
    echo "ok idlemem $fam: $line; $N upgraded connections carried a new value intact afterwards"
    pass=$((pass + 1))
  fi
done
echo "idlemem: $pass passed, $fail failed"
[ $fail = 0 ]

#!/bin/bash
# Raw system calls on a shimmed connection (tests/reliability/rawsys.c): the shim
# interposes libc, so syscall(SYS_write/SYS_read) (and io_uring, which works on the
# kernel socket the same way) bypass it. What is checked (docs/security.md, "Raw
# system calls and io_uring"):
#  - excluded from upgrading (SHMSHIM_PORTS_DENY / SHMSHIM_PATHS_DENY, the
#    documented remedy): raw and libc bytes arrive in order, byte-exact;
#  - upgraded, a raw write and nothing after it: the peer's shim finds the stray
#    bytes on the socket and resets the connection (loud, not silent);
#  - upgraded, a raw read: it sees only kick bytes or nothing, never the peer's data.
#  - upgraded, a raw write followed by libc writes and a close: the reader looks
#    at the socket before it reports the ring's end of file, finds the raw bytes
#    and resets (never a silent loss).
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
R=$ROOT/$BUILD/tests/rel/rawsys
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
pass=0; fail=0
# run NAME CASE FAMILY EXTRA_ENV WANT_UPGRADES WANT_SERVER_LINE WANT_CLIENT_REGEX
run() {
  local name=$1 cas=$2 fam=$3 extra=$4 wups=$5 wsrv=$6 wcli=$7 addr
  port=$((port + 1))
  [ "$fam" = unix ] && addr=unix:$TMP/r.$port || addr=tcp4:$port
  rm -f "$TMP"/*.log
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/s.log" $extra "$R" server "$addr" >"$TMP/s.out" 2>&1 &
  spid=$!
  for i in $(seq 250); do grep -q ready "$TMP/s.out" 2>/dev/null && break; sleep 0.02; done
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/c.log" $extra timeout 20 "$R" client "$addr" "$cas" >"$TMP/c.out" 2>&1
  local crc=$?
  wait $spid; local src=$?; spid=
  local ups=$(cat "$TMP/s.log" "$TMP/c.log" 2>/dev/null | grep -c ' upgraded fd=')
  local sline=$(grep '^server got' "$TMP/s.out") cline=$(grep '^client' "$TMP/c.out")
  local why=""
  [ $crc = 0 ] && [ $src = 0 ] || why="exit client $crc server $src"
  [ "$ups" = "$wups" ] || why="$why $ups ends upgraded, expected $wups"
  grep -Eqx "$wsrv" <<<"$sline" || why="$why server: $sline, expected $wsrv"
  [ -z "$wcli" ] || grep -Eq "$wcli" <<<"$cline" || why="$why client: $cline"
  if [ -n "$why" ]; then fail=$((fail + 1)); echo "FAIL rawsys $name $fam: $why"
  else pass=$((pass + 1)); echo "ok rawsys $name $fam: $sline${cline:+; $cline}"; fi
}
for fam in tcp4 unix; do
  deny="SHMSHIM_PORTS_DENY=1-65535"; [ $fam = unix ] && deny="SHMSHIM_PATHS_DENY=/"
  run "excluded, raw write" rawwrite $fam "$deny" 0 "server got 'RAW-BYTESLIBC' EOF" ""
  run "upgraded, raw write (reset)" rawonly $fam "" 2 "server got '' ECONNRESET" ""
  run "upgraded, raw read (kicks or nothing)" rawread $fam "" 2 "server got '' EOF" "^client rawread (-1 '' EAGAIN|[0-9]+ 'k*' )$"
  run "upgraded, raw write then libc (must not be silent)" rawwrite $fam "" 2 "server got 'RAW-BYTESLIBC' EOF|server got '[A-Z]*' ECONNRESET" ""
done
echo "rawsys: $pass passed, $fail failed"
[ $fail = 0 ]

#!/bin/bash
# Short-lived connections (SHMSHIM_SHORT_MS, default settings): once most of a
# server's recent connections were short-lived, new ones stay plain (one in 16, at most one per 10 ms, is
# still offered), and a client that got no offer from an address several times
# in a row stops setting up its endpoint for a while; once the short traffic
# stops, long-lived connections are upgraded again.
#  1. sock_bench conn (connect, 64 B request and response checked in full, close)
#     for one second, TCP and AF_UNIX: every connection accounted for at both ends
#     with one of the known reasons, upgraded at both ends or at neither (a
#     connection is upgraded only when the client looks again after the server's
#     offer, before the server has closed: with one request per connection that
#     is a matter of timing, and otherwise the server withdraws its offer), and
#     plain ones skipped by the policy at both ends.
#  2. redis-server: 300 connections of one PING each (redis-benchmark -k 0), then,
#     1.5 s later, 10 connections that each SET and GET a 1000-byte value
#     (bench/loadgen hold, every value checked): the 10 must be upgraded at both
#     ends, and the PINGs mostly plain as "short-lived". Then one-PING connections
#     from a client without the library: after a few offers in vain (at least
#     12, the policy's window) the server skips them too (at most a quarter
#     offered).
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
SB=$ROOT/$BUILD/bench/sock_bench
LG=$ROOT/$BUILD/bench/loadgen
TMP=$(mktemp -d)
spid=
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
# the default, whatever the caller's environment says (make test sets 0)
ENVV=(env -u SHMSHIM_SHORT_MS -u SHMSHIM_LOG -u SHMSHIM_LOG_FILE LD_PRELOAD="$PRE" SHMSHIM_LOG=debug)
pass=0 fail=0
ok() { echo "ok short $*"; pass=$((pass + 1)); }
bad() { echo "FAIL short $*"; fail=$((fail + 1)); }
count() { grep -c -- "$1" "$2" 2>/dev/null; }

for fam in tcp4 unix; do
  log=$TMP/sb.$fam.log
  [ $fam = tcp4 ] && addr=tcp4:$((20000 + RANDOM % 10000)) || addr=unix:$TMP/sb.sock
  out=$("${ENVV[@]}" SHMSHIM_LOG_FILE="$log" timeout 60 "$SB" "$addr" conn 64 --time 1000 --watchdog 50 2>"$TMP/sb.err")
  rc=$?
  n=$(sed -n 's/.* conns=\([0-9]*\) .*/\1/p' <<<"$out")
  uc=$(count "upgraded fd=.* role=client family=$fam" "$log")
  us=$(count "upgraded fd=.* role=server family=$fam" "$log")
  ps=$(count "plain fd=.* role=server: short-lived connections here lately" "$log")
  pc=$(count "plain fd=.* role=client: no offer on the last connections to this address" "$log")
  other=$(grep -E "plain fd=|warn" "$log" | grep -v -e "short-lived connections here lately" \
    -e "no offer on the last connections" -e "data came without an offer" -e "peer not shimmed" \
    -e "the client never took the offer" -e "its sender no longer holds the other end" \
    -e "the server withdrew its offer" -e "peer closed its end" -e "peer socket not found" | head -1)
  # every connection, seen from each end: the server upgraded it, skipped it,
  # found no endpoint (the client skipped), or withdrew its offer (the client
  # never took it); the client was upgraded, skipped, got no offer before the
  # server's data, or found the offer withdrawn or its sender gone
  nos=$(($(count "plain fd=.* role=server: peer not shimmed" "$log") + $(count "plain fd=.* role=server: peer closed its end" "$log") +
    $(count "plain fd=.* role=server: peer socket not found" "$log")))
  wds=$(count "plain fd=.* role=server: the client never took the offer" "$log")
  psf=$(count "plain fd=.* role=client: data came without an offer" "$log")
  wdc=$(($(count "plain fd=.* role=client: an offer came, but its sender no longer holds" "$log") +
    $(count "plain fd=.* role=client: the server withdrew its offer" "$log")))
  line="$n connections: upgraded $uc/$us (client/server), server skipped $ps, client skipped $pc"
  if [ $rc != 0 ] || [ -s "$TMP/sb.err" ] || [ -z "$n" ]; then
    bad "$fam: sock_bench exit $rc: $(head -2 "$TMP/sb.err")"
  elif [ "$uc" != "$us" ]; then
    bad "$fam: connections upgraded at one end only ($line)"
  elif [ "$ps" -lt 1 ] || [ "$pc" -lt 1 ]; then
    bad "$fam: short-lived connections kept being upgraded ($line)"
  elif [ $((us + ps + nos + wds)) != "$n" ] || [ $((uc + pc + psf + wdc)) != "$n" ]; then
    bad "$fam: connections unaccounted for ($line; server: $nos 'peer not shimmed', $wds withdrawn; client: $psf 'no offer', $wdc withdrawn or gone)"
  elif [ -n "$other" ]; then
    bad "$fam: other plain connections or warnings: $other"
  elif [ $((uc * 4)) -gt "$n" ]; then
    bad "$fam: more than a quarter upgraded ($line)"
  else
    ok "$fam: $line; every request and response checked"
  fi
done

if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  slog=$TMP/redis.log clog=$TMP/hold.log
  "${ENVV[@]}" SHMSHIM_LOG_FILE="$slog" redis-server --port 0 --unixsocket "$TMP/r.sock" --save '' \
    --appendonly no --dir "$TMP" >/dev/null 2>&1 &
  spid=$!
  for i in $(seq 100); do [ -S "$TMP/r.sock" ] && break; sleep 0.05; done
  "${ENVV[@]}" SHMSHIM_LOG_FILE="$TMP/bench.log" timeout 60 redis-benchmark -s "$TMP/r.sock" -k 0 -c 1 \
    -n 300 -t ping -q >"$TMP/bench.out" 2>&1
  brc=$?
  short_up=$(count "upgraded fd=.* role=server" "$slog")
  short_plain=$(count "plain fd=.* role=server: short-lived connections here lately" "$slog")
  sleep 1.5
  "${ENVV[@]}" SHMSHIM_LOG_FILE="$clog" "$LG" "unix:$TMP/r.sock" hold --conns 10 --value 1000 \
    --watchdog 50 </dev/null >"$TMP/hold.out" 2>&1
  hrc=$?
  kill $spid; wait $spid 2>/dev/null; spid=
  # Clients without the library, to a new server (one PING per connection,
  # loadgen checks each PONG): a failed offer costs the server as much as a
  # short-lived upgrade, so it soon skips them too.
  ulog=$TMP/redis-u.log
  "${ENVV[@]}" SHMSHIM_LOG_FILE="$ulog" redis-server --port 0 --unixsocket "$TMP/u.sock" --save '' \
    --appendonly no --dir "$TMP" >/dev/null 2>&1 &
  spid=$!
  for i in $(seq 100); do [ -S "$TMP/u.sock" ] && break; sleep 0.05; done
  env -u LD_PRELOAD timeout 60 "$LG" "unix:$TMP/u.sock" churn --time 500 --samples 10 --watchdog 50 \
    >"$TMP/churn.out" 2>&1
  crc=$?
  kill $spid; wait $spid 2>/dev/null; spid=
  nconn=$(sed -n 's/.* conns=\([0-9]*\) .*/\1/p' "$TMP/churn.out")
  nos=$(count "plain fd=.* role=server: peer not shimmed" "$ulog")
  skip=$(count "plain fd=.* role=server: short-lived connections here lately" "$ulog")
  long_up=$(($(count "upgraded fd=.* role=server" "$slog") - short_up))
  long_cli=$(count "upgraded fd=.* role=client" "$clog")
  line="300 one-PING connections: $short_up upgraded, $short_plain plain (short-lived); then 10 long ones: $long_cli/$long_up upgraded (client/server)"
  if [ $brc != 0 ] || [ $hrc != 0 ] || ! grep -q 'hold done' "$TMP/hold.out"; then
    bad "redis: redis-benchmark exit $brc, loadgen exit $hrc: $(head -2 "$TMP/hold.out")"
  elif [ "$short_plain" -lt 200 ]; then
    bad "redis: short-lived connections kept being upgraded ($line)"
  elif [ "$long_cli" != 10 ] || [ "$long_up" != 10 ]; then
    bad "redis: long-lived connections after the short ones were not upgraded ($line)"
  else
    ok "redis: $line; every value checked"
  fi
  line="${nconn:-?} one-PING connections from a client without the library (+1 long) to a new server: $nos offered in vain, $skip skipped"
  if [ $crc != 0 ] || [ -z "$nconn" ]; then
    bad "redis unshimmed clients: loadgen exit $crc: $(head -2 "$TMP/churn.out")"
  elif [ $((nos + skip)) != $((nconn + 1)) ]; then
    bad "redis unshimmed clients: connections unaccounted for ($line)"
  elif [ "$nos" -lt 12 ] || [ $((nos * 4)) -gt "$nconn" ]; then
    bad "redis unshimmed clients: offers kept being made in vain ($line)"
  else
    ok "redis unshimmed clients: $line; every PONG checked"
  fi
else
  bad "redis: redis-server or redis-benchmark is not installed"
fi
echo "short: $pass passed, $fail failed"
[ $fail = 0 ]

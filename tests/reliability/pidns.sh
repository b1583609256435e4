#!/bin/bash
# A client and a server that share a pid namespace of their own whose /proc is
# the outer one (`unshare -p -f` without --mount-proc): SO_PEERCRED names the
# server by its number inside the namespace, /proc by the outer numbers. Looking
# at the sender of an offer through /proc/PID/fd would then look at another
# process, and refuse the genuine offer (docs/design.md, Negotiation, 4): the
# client must notice that /proc is not its namespace's and judge the offer by
# its proof. Every connection must be upgraded at both ends and byte-exact.
# Round hidepid (root and setpriv): the server runs as uid A, the client as uid
# B with a /proc mounted hidepid=2 (systemd's ProtectProc= does the same), where
# the server's /proc/PID is not there for it at all (ENOENT, as for a process
# gone): the client must tell a hidden process from a closed descriptor, and
# let the proof decide. Every connection upgraded, byte-exact.
#   BUILD=build SHM_PRELOAD=... [PIDNS_CONNS=20] tests/reliability/pidns.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
V=$ROOT/$BUILD/tests/rel/victim
N=${PIDNS_CONNS:-20}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if ! unshare -p -f true 2>/dev/null; then
  echo "FAIL pidns: cannot make a pid namespace here (unshare -p -f)"; echo "pidns: 0 passed, 1 failed"; exit 1
fi
fail=0 pass=0
port=$((20000 + RANDOM % 10000))
# judge NAME CLIENT_EXIT WHAT: every connection upgraded at both ends (the logs in
# $TMP), the client's bytes all right (its exit status).
judge() {
  local uc us why=
  uc=$(grep -c 'upgraded fd=.*role=client' "$TMP/client.log" 2>/dev/null)
  us=$(grep -c 'upgraded fd=.*role=server' "$TMP/server.log" 2>/dev/null)
  [ "$2" = 0 ] || why="client exit ${2:-none}: $(tail -n 2 "$TMP/client.out" 2>/dev/null | tr '\n' ' ')"
  [ "${uc:-0}" = "$N" ] && [ "${us:-0}" = "$N" ] || why="$why upgraded $uc at the client, $us at the server, of $N"
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL pidns $1: $why"
    grep -h 'warn\|plain fd\|ignored' "$TMP/client.log" 2>/dev/null | head -4 | sed 's/^/    log: /'
  else
    pass=$((pass + 1)); echo "ok pidns $1: $N connections $3"
  fi
}
for fam in tcp4 unix; do
  port=$((port + 1))
  [ "$fam" = unix ] && addr=unix:$TMP/echo.sock || addr=tcp4:$port
  rm -f "$TMP"/*.log "$TMP"/*.out "$TMP/echo.sock"
  # One namespace for both; the server is ended by the namespace's end (its
  # init, the shell, exits after the client: the kernel kills the rest).
  timeout 120 unshare -p -f --kill-child bash -c '
    env LD_PRELOAD="$1" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$2/server.log" "$3" echo "$4" 0 >"$2/echo.out" 2>&1 &
    for i in $(seq 250); do grep -q ready "$2/echo.out" 2>/dev/null && break; sleep 0.02; done
    env LD_PRELOAD="$1" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$2/client.log" "$3" client "$4" "$5" >"$2/client.out" 2>&1
    echo "client exit $?" >"$2/rc"
    kill $!
    wait' _ "$PRE" "$TMP" "$V" "$addr" "$N"
  judge "$fam" "$(sed -n 's/client exit //p' "$TMP/rc" 2>/dev/null)" \
    "upgraded at both ends, byte-exact, in a pid namespace whose /proc is the outer one"
done
# round hidepid
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && unshare -m true 2>/dev/null; then
  base=$((300000 + RANDOM * 4))
  chmod 1777 "$TMP"
  for fam in tcp4 unix; do
    port=$((port + 1))
    [ "$fam" = unix ] && addr=unix:$TMP/echo.sock || addr=tcp4:$port
    rm -f "$TMP"/*.log "$TMP"/*.out "$TMP/echo.sock" "$TMP/rc"
    (umask 0; exec setpriv --reuid=$base --regid=$base --clear-groups env LD_PRELOAD="$PRE" SHMSHIM_LOG=info \
      SHMSHIM_LOG_FILE="$TMP/server.log" "$V" echo "$addr" 0) >"$TMP/echo.out" 2>&1 &
    spid=$!
    for i in $(seq 250); do grep -q ready "$TMP/echo.out" 2>/dev/null && break; sleep 0.02; done
    timeout 120 unshare -m bash -c '
      mount -t proc -o hidepid=2 proc /proc || exit 3
      umask 0
      exec setpriv --reuid=$(($1 + 1)) --regid=$(($1 + 1)) --clear-groups env LD_PRELOAD="$2" SHMSHIM_LOG=info \
        SHMSHIM_LOG_FILE="$3/client.log" "$4" client "$5" "$6"' _ "$base" "$PRE" "$TMP" "$V" "$addr" "$N" \
      >"$TMP/client.out" 2>&1
    crc=$?
    kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
    judge "hidepid $fam" "$crc" "between two uids upgraded at both ends, byte-exact, the client's /proc hidepid=2"
  done
else
  echo "pidns: round hidepid needs root, setpriv and unshare -m: not run"
fi
echo "pidns: $pass passed, $fail failed"
[ $fail = 0 ]

#!/bin/bash
# Other users on the negotiation endpoints (tests/reliability/squat.c). While a
# shimmed client makes connections to a shimmed echo server (TCP, then AF_UNIX),
# an intruder running as another uid squats the endpoint names of the next socket
# inodes and sends forged offers to every live endpoint it sees. It must receive
# no byte and no descriptor; every connection must be byte-exact and upgraded at
# both ends or at neither. A first run with the intruder as the SAME uid is the
# control: it shows the squat really intercepts offers (same-uid processes are
# trusted, docs/security.md), so that the zero of the real run means something.
#   BUILD=build SHM_PRELOAD=... [SQUAT_CONNS=150] tests/reliability/squat.sh
set -u
# The intruder squats endpoint names of the next socket inodes of the whole
# network namespace: run in a namespace of our own (abstract unix names and
# loopback are per namespace), or concurrent tests on the same machine would have
# their connections left plain by it.
if [ -z "${SQUAT_IN_NETNS:-}" ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
  exec unshare --net env SQUAT_IN_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
[ -n "${SQUAT_IN_NETNS:-}" ] || echo "squat: no network namespace of our own (unshare failed): concurrent tests may be disturbed"
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
V=$ROOT/$BUILD/tests/rel/victim
S=$ROOT/$BUILD/tests/rel/squat
N=${SQUAT_CONNS:-150}
# A uid no process on the machine uses (no user entry is needed for setpriv):
# with a shared one such as 65534 (nobody), other programs' own connections
# would be fair game for the intruder, as for any process of their uid.
OTHER_UID=${SQUAT_UID:-$((200000 + RANDOM))}
TMP=$(mktemp -d)
chmod 755 "$TMP"
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
  echo "FAIL squat: needs root and setpriv to run the intruder as another uid"; exit 1
fi
port=$((20000 + RANDOM % 10000))
fail=0; pass=0
wait_ready() { local i; for i in $(seq 250); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.02; done; return 1; }

# round NAME AS_UID CONNS FAMILY SQUATTED_NAMES
round() {
  local name=$1 uid=$2 n=$3 fam=$4 names=$5 addr
  port=$((port + 1))
  [ "$fam" = unix ] && addr=unix:$TMP/echo.$port || addr=tcp4:$port
  rm -f "$TMP"/*.log "$TMP"/*.out
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/server.log" "$V" echo "$addr" 0 >"$TMP/echo.out" 2>&1 &
  local epid=$!
  setpriv --reuid="$uid" --regid="$uid" --clear-groups "$S" 100 "$names" >"$TMP/squat.out" 2>&1 &
  local spid=$!
  pids="$epid $spid"
  wait_ready "$TMP/echo.out"; wait_ready "$TMP/squat.out"
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=debug "SHMSHIM_LOG_FILE=$TMP/client.log" timeout 120 "$V" client "$addr" "$n" >"$TMP/client.out" 2>&1
  local crc=$?
  kill "$epid" 2>/dev/null; wait "$epid" 2>/dev/null
  kill -TERM "$spid"; wait "$spid"; pids=
  local line hits forged bytes fds uc pc us ign noep
  line=$(grep '^squat:' "$TMP/squat.out")
  hits=$(sed -n 's/.* hits=\([0-9]*\).*/\1/p' <<<"$line"); forged=$(sed -n 's/.* offers_forged=\([0-9]*\).*/\1/p' <<<"$line")
  bytes=$(sed -n 's/.* bytes_received=\([0-9]*\).*/\1/p' <<<"$line"); fds=$(sed -n 's/.* fds_received=\([0-9]*\).*/\1/p' <<<"$line")
  uc=$(sed -n 's/.*stats upgraded_client=\([0-9]*\).*/\1/p' "$TMP/client.log" | tail -1)
  pc=$(sed -n 's/.* plain_client=\([0-9]*\).*/\1/p' "$TMP/client.log" | tail -1)
  us=$(grep -c 'upgraded fd=.*role=server' "$TMP/server.log")
  ign=$(grep -c 'ignored' "$TMP/client.log")
  noep=$(grep -c 'no endpoint' "$TMP/client.log") # its name was squatted: never pending, plain
  uc=${uc:-0}; pc=${pc:-0} # no stats line: no connection was ever tracked
  local why=""
  if [ "$name" = control ]; then
    # Same uid: the squat works, the intruder is handed offers (segment + socket).
    [ "${hits:-0}" -gt 0 ] && [ "${fds:-0}" -gt 0 ] || why="the same-uid squat intercepted nothing (hits=$hits fds=$fds): the real run would prove nothing"
    echo "    control ($fam, same uid): $line; client exit $crc"
  else
    [ "$crc" = 0 ] || why="client exit $crc: $(tail -n 2 "$TMP/client.out" | tr '\n' ' ')"
    [ "${bytes:-x}" = 0 ] && [ "${fds:-x}" = 0 ] || why="$why intruder received $bytes bytes and $fds descriptors"
    [ "${hits:-0}" -gt 0 ] || [ "${forged:-0}" -gt 0 ] || why="$why the intruder never engaged (hits=$hits forged=$forged)"
    [ "${uc:-x}" = "$us" ] || why="$why $uc client upgrades but $us server upgrades (a half-upgraded connection)"
    [ $((${uc:-0} + ${pc:-0} + noep)) = "$n" ] || why="$why client upgraded $uc + plain $pc + squatted $noep != $n"
  fi
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL squat $name $fam: $why"; echo "    $line"
  else
    pass=$((pass + 1))
    [ "$name" = control ] || echo "ok squat $fam (intruder uid $uid): $n connections byte-exact, $uc upgraded at both ends, $((pc + noep)) plain at both ($noep because their endpoint name was squatted); intruder: $hits squatted-name hits, $forged forged offers ($ign ignored by clients), received 0 bytes, 0 descriptors"
  fi
}

round control 0 60 tcp4 4096
# Many squatted names (most clients lose their endpoint), then few (most clients
# are pending and get forged offers).
for fam in tcp4 unix; do
  round other "$OTHER_UID" "$N" $fam 4096
  round other "$OTHER_UID" "$N" $fam 16
done
echo "squat: $pass passed, $fail failed"
[ $fail = 0 ]

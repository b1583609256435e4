#!/bin/bash
# Intruders that uid checks alone do not stop (docs/security.md, section 2): user
# namespaces, where every foreign uid reads as the overflow uid (65534), and a
# same-uid process in a sandbox. The intruder is tests/reliability/squat.c in
# attack mode: it squats the endpoint names of the next socket inodes, takes any
# offer that reaches them as a real client would (maps the segment, answers with
# the best proof it can make, marks it attached and switched) and counts what the
# server then publishes into the rings it was handed (stolen), or it forges offers
# to live endpoints. The victims are a shimmed echo server and a shimmed client
# making connections with 256 KiB of echo each (byte-checked).
#
#   userns-server  the server runs as uid A under `unshare --user` (no mapping, the
#                  network namespace shared), the client as uid B, the intruder as
#                  uid C: the server sees B and C both as 65534. The intruder must
#                  receive nothing (no offer: unmapped ids never match), every
#                  connection byte-exact, upgrades equal at both ends.
#   userns-client  the client runs under `unshare --user` as uid B, the server as
#                  uid A, the intruder (uid C) forges offers to live endpoints: the
#                  client must refuse them before reading anything (no rejection
#                  logged by read_offer as '..., ignored', which comes after the
#                  descriptors were received), and the real server's offer too
#                  (its uid reads 65534 as well): plain at both ends, byte-exact.
#   sandbox        server, client and intruder all run as uid A; the intruder in
#                  its own mount and pid namespace with its own /proc (`unshare -m
#                  -p --mount-proc`: a bwrap or flatpak child without its own
#                  network): offers reach it (it squats names), but it cannot open
#                  the client's socket, so its answer proves nothing: it must steal 0
#                  bytes, every connection byte-exact, upgrades equal at both ends.
#                  Over AF_UNIX it must receive nothing at all: the server sees
#                  that the process listening on the endpoint is not the one that
#                  connected (SO_PEERCRED of both) and sends no offer.
#   pidns-server   the sandbox round with the server in a pid namespace of its own
#                  too: client and intruder are outside it, and their pids both
#                  read 0 there. Over AF_UNIX the intruder must still receive
#                  nothing: their pidfds (SO_PEERPIDFD, Linux 6.9 on) tell them
#                  apart (an older kernel leaves it to the answer check: the
#                  round then fails, as it should, on the claim it cannot make).
#   control        the same without the sandbox: over TCP the intruder can open the
#                  client's socket through /proc/PID/fd (no Yama, dumpable client)
#                  and its answer is a real proof: it must steal bytes, or the
#                  sandbox run would prove nothing (a same-uid process that may open
#                  our descriptors is trusted, docs/security.md section 3). Over
#                  AF_UNIX the listener check stops it too: it must receive nothing.
#   BUILD=build SHM_PRELOAD=... [SANDBOX_CONNS=80] tests/reliability/sandbox.sh
set -u
if [ -z "${SANDBOX_IN_NETNS:-}" ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
  exec unshare --net env SANDBOX_IN_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi
[ -n "${SANDBOX_IN_NETNS:-}" ] || echo "sandbox: no network namespace of our own (unshare failed): concurrent tests may be disturbed"
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
V=$ROOT/$BUILD/tests/rel/victim
S=$ROOT/$BUILD/tests/rel/squat
N=${SANDBOX_CONNS:-80}
# Uids no process on the machine uses (no user entry is needed for setpriv).
base=$((300000 + RANDOM * 4))
UA=$base UB=$((base + 1)) UC=$((base + 2))
TMP=$(mktemp -d)
chmod 1777 "$TMP"
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
as() { echo setpriv --reuid="$1" --regid="$1" --clear-groups; }
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
  echo "FAIL sandbox: needs root, setpriv and unshare"; exit 1
fi
if ! $(as "$UA") unshare --user true 2>/dev/null; then
  echo "FAIL sandbox: unprivileged user namespaces are not available here"; exit 1
fi
port=$((20000 + RANDOM % 10000))
fail=0; pass=0
wait_ready() { local i; for i in $(seq 250); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.02; done; return 1; }
num() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$2" | tail -1; }

# round NAME FAMILY
round() {
  local name=$1 fam=$2 addr n=$N names=4096 mode=attack delay=0 pause=10
  local -a srv=($(as "$UA")) cli=($(as "$UB")) sq=($(as "$UC"))
  case $name in
    userns-server) srv=($(as "$UA") unshare --user) ;;
    userns-client) cli=($(as "$UB") unshare --user); names=16; mode=; delay=300; pause=0 ;;
    sandbox) cli=($(as "$UA")); sq=(unshare -m -p -f --kill-child --mount-proc $(as "$UA")) ;;
    pidns-server)
      srv=(unshare -m -p -f --kill-child --mount-proc $(as "$UA")); cli=($(as "$UA"))
      sq=(unshare -m -p -f --kill-child --mount-proc $(as "$UA")) ;;
    control) cli=($(as "$UA")); sq=($(as "$UA")); n=20; pause=50 ;;
  esac
  port=$((port + 1))
  [ "$fam" = unix ] && addr=unix:$TMP/echo.$port || addr=tcp4:$port
  rm -f "$TMP"/*.log "$TMP"/*.out
  [ -n "${SANDBOX_KEEP:-}" ] && mkdir -p "$SANDBOX_KEEP" && trap 'cp "$TMP"/*.log "$TMP"/*.out "$SANDBOX_KEEP"/ 2>/dev/null' RETURN
  (umask 0; exec "${srv[@]}" env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/server.log" "$V" echo "$addr" "$delay") >"$TMP/echo.out" 2>&1 &
  local epid=$!
  "${sq[@]}" "$S" 100 "$names" $mode >"$TMP/squat.out" 2>&1 &
  local spid=$!
  pids="$epid $spid"
  wait_ready "$TMP/echo.out"; wait_ready "$TMP/squat.out"
  "${cli[@]}" env "LD_PRELOAD=$PRE" SHMSHIM_LOG=debug "SHMSHIM_LOG_FILE=$TMP/client.log" VICTIM_PAUSE_MS=$pause \
    timeout 120 "$V" client "$addr" "$n" >"$TMP/client.out" 2>&1
  local crc=$?
  # pidns-server: unshare --fork ignores SIGTERM, and so does the server, the init
  # of its pid namespace, from here: SIGKILL.
  [ "$name" = pidns-server ] && kill -KILL $(ps -o pid= --ppid "$epid") 2>/dev/null
  kill "$epid" 2>/dev/null; wait "$epid" 2>/dev/null
  # unshare --fork ignores SIGTERM itself: the intruder is its child.
  kill -TERM $(ps -o pid= --ppid "$spid") "$spid" 2>/dev/null; wait "$spid"; pids=
  local line hits forged bytes fds stolen proofs uc pc us refused read_rej noep
  line=$(grep -h '^squat:\|^attack:' "$TMP/squat.out" | tr '\n' ' ')
  hits=$(num hits "$TMP/squat.out"); forged=$(num offers_forged "$TMP/squat.out")
  bytes=$(num bytes_received "$TMP/squat.out"); fds=$(num fds_received "$TMP/squat.out")
  stolen=$(num stolen "$TMP/squat.out"); proofs=$(num real_proofs "$TMP/squat.out")
  uc=$(num upgraded_client "$TMP/client.log"); pc=$(num plain_client "$TMP/client.log")
  us=$(grep -c 'upgraded fd=.*role=server' "$TMP/server.log" 2>/dev/null)
  refused=$(grep -c 'without proof of holding the other end' "$TMP/server.log" 2>/dev/null)
  # Offers the client rejected after reading them (their descriptors received).
  read_rej=$(grep -c ' read_offer: .*, ignored$' "$TMP/client.log" 2>/dev/null)
  noep=$(grep -c 'no endpoint' "$TMP/client.log" 2>/dev/null)
  uc=${uc:-0}; pc=${pc:-0}; us=${us:-0}
  local why=""
  case $name:$fam in
    control:unix)
      # Over AF_UNIX the server compares the endpoint's listener with the process
      # that connected (SO_PEERCRED of both): a squatter, sandboxed or not, gets
      # nothing. The TCP control shows what this intruder does where it can.
      [ "$crc" = 0 ] || why="client exit $crc: $(tail -n 2 "$TMP/client.out" | tr '\n' ' ')"
      [ "${hits:-0}" -gt 0 ] || why="$why the intruder never engaged (hits=$hits)"
      [ "${bytes:-x}" = 0 ] && [ "${fds:-x}" = 0 ] || why="$why the intruder received $bytes bytes and $fds descriptors" ;;
    control:*)
      [ "${proofs:-0}" -gt 0 ] && [ "${stolen:-0}" -gt 0 ] && [ "$crc" != 0 ] ||
        why="the same-uid intruder without a sandbox stole nothing (real_proofs=$proofs stolen=$stolen client exit $crc): the sandbox run would prove nothing" ;;
    userns-client:*)
      [ "$crc" = 0 ] || why="client exit $crc: $(tail -n 2 "$TMP/client.out" | tr '\n' ' ')"
      [ "${forged:-0}" -gt 0 ] || why="$why the intruder forged no offer (the test proves nothing)"
      [ "${read_rej:-0}" = 0 ] || why="$why the client received $read_rej offers from a stranger before refusing them"
      [ "$uc" = "$us" ] || why="$why $uc client upgrades but $us server upgrades"
      [ $((uc + pc + noep)) = "$n" ] || why="$why client upgraded $uc + plain $pc + squatted $noep != $n" ;;
    *)
      [ "$crc" = 0 ] || why="client exit $crc: $(tail -n 2 "$TMP/client.out" | tr '\n' ' ')"
      [ "${stolen:-0}" = 0 ] || why="$why the intruder read $stolen bytes of the connections"
      [ "${hits:-0}" -gt 0 ] || why="$why the intruder never engaged (hits=$hits)"
      [ "$uc" = "$us" ] || why="$why $uc client upgrades but $us server upgrades (a half-upgraded connection)"
      [ $((uc + pc + noep)) = "$n" ] || why="$why client upgraded $uc + plain $pc + squatted $noep != $n"
      if [ "$name" = userns-server ] || [ "$fam" = unix ]; then
        [ "${bytes:-x}" = 0 ] && [ "${fds:-x}" = 0 ] || why="$why the intruder received $bytes bytes and $fds descriptors"
      fi ;;
  esac
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL sandbox $name $fam: $why"; echo "    $line"
  else
    pass=$((pass + 1))
    echo "ok sandbox $name $fam: $n connections, client exit $crc, upgraded $uc/$us, plain $pc + $noep squatted; intruder: $line; server refused $refused unproven attaches"
  fi
}

for fam in ${SANDBOX_FAMILIES:-tcp4 unix}; do
  for r in ${SANDBOX_ROUNDS:-control sandbox pidns-server userns-server userns-client}; do round "$r" $fam; done
done
echo "sandbox: $pass passed, $fail failed"
[ $fail = 0 ]

#!/bin/bash
# `shmshim stat` facing processes that lie to it (docs/security.md, section 2):
#  - swap: a process of another uid holds a memfd named like a statistics table,
#    and swaps it for an O_PATH descriptor of a root-only FIFO after stat (run
#    as root) has listed its descriptors and before it takes the table. The race
#    is made deterministic: strace stops stat with SIGSTOP right after it opens
#    /proc/PID/comm (between the listing and the take, in the old code and the
#    new), the process swaps, stat continues. Stat must never open
#    /proc/PID/fd/N (other than O_PATH, which opens nothing) and must not show
#    the FIFO as a table. Twice: with pidfd_getfd, and with it failing (seccomp,
#    as in old kernels and sandboxes: the O_PATH path).
#  - control: a real shimmed connection (socat) is still shown, both ways, and
#    without any open of /proc/PID/fd/N either.
#  - big: a forged table of 65,536 slots all naming the process's one socket
#    must show one connection (it used to show 65,536, about 25 MB of copies).
#  - plant: a table created by another uid and sent to the process through a
#    unix socket is not the process's own: not shown.
#   BUILD=build SHM_PRELOAD=... tests/reliability/statsafe.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
SHMSHIM=${STATSAFE_SHMSHIM:-$ROOT/$BUILD/tools/shmshim}
F=$ROOT/$BUILD/tests/rel/statforge
UID_A=${STATSAFE_UID:-$((200000 + RANDOM))}
UID_B=$((UID_A + 1))
TMP=$(mktemp -d)
chmod 711 "$TMP"
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok statsafe $*"; }
bad() { fail=$((fail + 1)); echo "FAIL statsafe $*"; }
if [ "$(id -u)" != 0 ] || ! command -v strace >/dev/null || ! command -v setpriv >/dev/null || ! command -v jq >/dev/null; then
  echo "FAIL statsafe: needs root, strace, setpriv and jq"; exit 1
fi
wait_for() { local i; for i in $(seq 500); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.02; done; return 1; }

# Opens of /proc/PID/fd/* in an strace log other than O_PATH ones.
bad_opens() { grep -E "open(at)?\(.*\"/proc/$2/fd/[0-9]+\"" "$1" | grep -v O_PATH; }

mkfifo -m 600 "$TMP/fifo" # root's, mode 600: the other uid may not open it

# swap WRAP...: one run of the swap case, stat started through WRAP.
swap() {
  local how=$1; shift
  setpriv --reuid="$UID_A" --regid="$UID_A" --clear-groups "$F" swap "$TMP/fifo" >"$TMP/swap.out" 2>&1 &
  local fpid=$! n
  pids="$fpid"
  wait_for "$TMP/swap.out" ready || { bad "swap $how: the forger did not start: $(cat "$TMP/swap.out")"; return; }
  n=$(awk '/ready/ {print $3}' "$TMP/swap.out")
  rm -f "$TMP/strace.log"
  strace -f -qq -o "$TMP/strace.log" -P "/proc/$fpid/comm" -P "/proc/$fpid/fd/$n" -e trace=open,openat \
    -e inject=openat:signal=SIGSTOP:when=1 "$@" "$SHMSHIM" stat --json "$fpid" >"$TMP/stat.out" 2>"$TMP/stat.err" &
  local spid=$!
  if ! wait_for "$TMP/strace.log" "stopped by SIGSTOP"; then
    bad "swap $how: stat was not stopped after reading /proc/$fpid/comm"; kill "$spid"; kill "$fpid"; wait; return
  fi
  kill -USR1 "$fpid"
  wait_for "$TMP/swap.out" swapped
  local target; target=$(readlink "/proc/$fpid/fd/$n")
  kill -CONT "$(awk '/stopped by SIGSTOP/ {print $1; exit}' "$TMP/strace.log")"
  wait "$spid"
  kill "$fpid"; wait "$fpid" 2>/dev/null; pids=
  local why="" opens
  [ "$target" = "$TMP/fifo" ] || why="$why the race was not staged (fd $n is $target)"
  opens=$(bad_opens "$TMP/strace.log" "$fpid")
  [ -z "$opens" ] || why="$why opened the process's descriptor with our credentials: $opens"
  if jq -e --argjson p "$fpid" '.processes[] | select(.pid == $p)' "$TMP/stat.out" >/dev/null 2>&1; then
    why="$why showed a table for the process"
  fi
  if [ -n "$why" ]; then bad "swap $how:$why"; else ok "swap $how: fd $n swapped for a root-only FIFO mid-read: never opened, nothing shown ($(head -c 120 "$TMP/stat.err"))"; fi
}

# control WRAP...: a real upgraded connection is shown, without opening its fd.
control() {
  local how=$1; shift
  env LD_PRELOAD="$PRE" socat "UNIX-LISTEN:$TMP/s.$how" PIPE &
  local srv=$!
  pids="$srv"
  local i; for i in $(seq 250); do [ -S "$TMP/s.$how" ] && break; sleep 0.02; done
  # One byte first: a connection both ends have used is upgraded at both
  # (docs/design.md, Negotiation); an idle one stays "pending" at the server.
  (printf x; sleep 30; echo) | env LD_PRELOAD="$PRE" socat - "UNIX-CONNECT:$TMP/s.$how" &
  local cli=$!
  pids="$srv $cli"
  local st=""
  for i in $(seq 250); do
    rm -f "$TMP/strace.log"
    strace -f -qq -o "$TMP/strace.log" -e trace=open,openat "$@" "$SHMSHIM" stat --json "$srv" >"$TMP/stat.out" 2>"$TMP/stat.err"
    st=$(jq -r --argjson p "$srv" '.processes[] | select(.pid == $p) | .connections[0].state' "$TMP/stat.out" 2>/dev/null)
    [ "$st" = upgraded ] && break
    sleep 0.02
  done
  kill "$srv" "$cli" 2>/dev/null; wait "$srv" "$cli" 2>/dev/null; pids=
  local opens; opens=$(bad_opens "$TMP/strace.log" "$srv")
  if [ "$st" = upgraded ] && [ -z "$opens" ]; then ok "control $how: socat's upgraded connection shown, its descriptors not opened"
  else bad "control $how: state=$st opens=$opens $(head -c 200 "$TMP/stat.err")"; fi
}

swap pidfd
swap "no-pidfd" "$F" nopidfd
control pidfd
control "no-pidfd" "$F" nopidfd

# big: 65,536 slots naming one socket.
"$F" big >"$TMP/big.out" 2>&1 &
pids=$!
if wait_for "$TMP/big.out" ready; then
  bpid=$(awk '{print $2}' "$TMP/big.out")
  "$SHMSHIM" stat --json "$bpid" >"$TMP/stat.out" 2>"$TMP/stat.err"
  nc=$(jq --argjson p "$bpid" '[.processes[] | select(.pid == $p) | .connections[]] | length' "$TMP/stat.out" 2>/dev/null)
  inv=$(jq --argjson p "$bpid" '.processes[] | select(.pid == $p) | .skipped.invalid' "$TMP/stat.out" 2>/dev/null)
  if [ "$nc" = 1 ]; then ok "big: 65,536 slots for one socket: 1 connection shown, ${inv:-?} slots invalid"
  else bad "big: ${nc:-none} connections shown for a process with one socket"; fi
else
  bad "big: the forger did not start: $(cat "$TMP/big.out")"
fi
kill $pids 2>/dev/null; wait 2>/dev/null; pids=

# plant: another uid's table, sent to the process.
"$F" plant "$UID_A" "$UID_B" >"$TMP/plant.out" 2>&1 &
pids=$!
if wait_for "$TMP/plant.out" ready; then
  ppid_=$(awk '{print $2}' "$TMP/plant.out")
  "$SHMSHIM" stat --json "$ppid_" >"$TMP/stat.out" 2>"$TMP/stat.err"
  nc=$(jq --argjson p "$ppid_" '[.processes[] | select(.pid == $p) | .connections[]] | length' "$TMP/stat.out" 2>/dev/null)
  if [ "${nc:-0}" = 0 ] && grep -q "uid $UID_B" "$TMP/stat.err"; then ok "plant: uid $UID_B's table in uid $UID_A's process not shown: $(head -c 150 "$TMP/stat.err")"
  else bad "plant: ${nc:-?} forged connection(s) shown; stderr: $(head -c 200 "$TMP/stat.err")"; fi
else
  bad "plant: the forger did not start: $(cat "$TMP/plant.out")"
fi
kill $pids 2>/dev/null; wait 2>/dev/null; pids=

echo "statsafe: $pass passed, $fail failed"
[ $fail = 0 ]

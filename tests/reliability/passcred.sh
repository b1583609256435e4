#!/bin/bash
# Credentials of ring data with SO_PASSCRED (tests/reliability/passcred.c): a
# client that drops its privileges and forks after the upgrade must be seen with
# the credentials of the process that wrote each record, at the time it wrote it,
# as the kernel reports them; never with the connection's first (root)
# credentials. Run plain first (the kernel's answer: the program's own check),
# then with both ends shimmed, where both ends must also be upgraded.
#   BUILD=build SHM_PRELOAD=... tests/reliability/passcred.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/rel/passcred
U=$((300000 + RANDOM))
TMP=$(mktemp -d)
chmod 1777 "$TMP"
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
if [ "$(id -u)" != 0 ]; then echo "FAIL passcred: needs root (the client drops its privileges)"; exit 1; fi
fail=0; pass=0

# run NAME SHIMMED
run() {
  local name=$1 shim=$2 i
  local -a envs=(env)
  rm -f "$TMP"/*.log "$TMP"/*.out
  [ "$shim" = 1 ] && envs=(env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/shim.log")
  "${envs[@]}" "$P" server "$TMP/s" >"$TMP/srv.out" 2>&1 &
  spid=$!
  for i in $(seq 250); do grep -q ready "$TMP/srv.out" 2>/dev/null && break; sleep 0.02; done
  "${envs[@]}" "$P" client "$TMP/s" "$U" >"$TMP/cli.out" 2>&1
  local crc=$?
  wait "$spid"; local src=$?; spid=
  local why="" up=0
  [ $crc = 0 ] || why="client exit $crc: $(tail -n 2 "$TMP/cli.out" | tr '\n' ' ')"
  [ $src = 0 ] || why="$why server exit $src: $(grep -v ready "$TMP/srv.out" | tail -n 4 | tr '\n' ' ')"
  if [ "$shim" = 1 ]; then
    up=$(grep -c ' upgraded fd=' "$TMP/shim.log" 2>/dev/null)
    [ "${up:-0}" = 2 ] || why="$why upgraded ${up:-0} connection ends, expected 2"
  fi
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL passcred $name: $why"
  else
    pass=$((pass + 1)); echo "ok passcred $name: $(grep '^passcred:' "$TMP/srv.out")$([ "$shim" = 1 ] && echo ", upgraded at both ends")"
  fi
}

run plain 0
run shimmed 1
echo "passcred: $pass passed, $fail failed"
[ $fail = 0 ]

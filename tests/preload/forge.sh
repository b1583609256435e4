#!/bin/bash
# Offer forgery: a shimmed client talking to a plain server is sent forged offers
# (a sealed segment with injected data, and a UDP socket mirroring the connection's
# addresses as proof) by a process of the same user and, when setpriv is available
# and we are root, by another user. The client must ignore both, log why, stay
# plain, and exchange exactly the server's bytes. Neither forgery's descriptors
# may be received: the same-user forger stays alive while the client looks, and
# the client must refuse it for the descriptor it names in its record (a UDP
# socket, not the other end of the connection), seen in its /proc/PID/fd, not
# for its proof, which is looked at only once received.
# Round "nodump" (root and setpriv): server, victim and forger run as one unused
# uid, the forger not dumpable, so that the victim may not look into its
# /proc/PID/fd (as an nginx worker may not look into php-fpm's workers of the
# same user, which must upgrade, tests/integration/php.sh): the record is
# received, and refused by its proof; the forger stays alive meanwhile.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
F=$ROOT/$BUILD/tests/progs/forge
TMP=$(mktemp -d)
chmod 1777 "$TMP"
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((10000 + RANDOM % 15000))
fail=0 pass=0
as() { echo setpriv --reuid="$1" --regid="$1" --clear-groups; }
canuid=0
[ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && canuid=1

# round NAME: same (the same-user forger, and another user's when we can) or nodump
round() {
  local name=$1 log=$TMP/$1.log
  local -a vas=() aas=()
  local amode=hold
  if [ "$name" = nodump ]; then
    local u=$((300000 + RANDOM * 4))
    vas=($(as $u)); aas=($(as $u)); amode=nodump
  fi
  port=$((port + 1))
  rm -f "$TMP/go" "$TMP/hold" "$TMP"/*.out
  "${vas[@]}" "$F" server "$port" >"$TMP/server.out" 2>&1 &
  local spid=$! vpid apid
  pids="$spid"
  for i in $(seq 100); do grep -q ready "$TMP/server.out" && break; sleep 0.02; done
  mkfifo "$TMP/go" "$TMP/hold"
  chmod 666 "$TMP/go" "$TMP/hold"
  ( umask 0; exec "${vas[@]}" env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$log" "$F" victim "$port" ) \
    <"$TMP/go" >"$TMP/victim.out" 2>&1 &
  vpid=$!
  pids="$pids $vpid"
  exec 3>"$TMP/go"
  for i in $(seq 100); do [ -s "$TMP/victim.out" ] && break; sleep 0.02; done
  local ino cport attacks=0
  read -r ino cport <"$TMP/victim.out"
  "${aas[@]}" "$F" attack "$ino" "$cport" "$port" $amode <"$TMP/hold" >"$TMP/a1.out" 2>&1 &
  apid=$!
  pids="$pids $apid"
  exec 4>"$TMP/hold"
  for i in $(seq 250); do grep -q 'forged offer sent' "$TMP/a1.out" && break; kill -0 $apid 2>/dev/null || break; sleep 0.02; done
  if grep -q 'forged offer sent' "$TMP/a1.out"; then attacks=$((attacks + 1)); else
    echo "FAIL forge $name: the forger could not be staged: $(cat "$TMP/a1.out")"; fail=$((fail + 1)); fi
  if [ "$name" = same ] && [ $canuid = 1 ]; then
    if setpriv --reuid=65534 --regid=65534 --clear-groups "$F" attack "$ino" "$cport" "$port" >"$TMP/a2.out" 2>&1; then
      attacks=$((attacks + 1)); else echo "FAIL forge: other-user attack could not be staged: $(cat "$TMP/a2.out")"; fail=$((fail + 1)); fi
  fi
  echo go >&3
  exec 3>&-
  wait "$vpid"; local vrc=$?
  exec 4>&-
  wait "$apid"
  wait "$spid"; local src=$?
  pids=
  local ignored ups why=0 how
  ignored=$(grep -c 'ignored' "$log" 2>/dev/null)
  ups=$(grep -c ' upgraded fd=' "$log" 2>/dev/null)
  # Each forgery must be refused for what gives it away (the descriptor it names;
  # the other user), not for a header the library no longer speaks: that would
  # test nothing.
  if [ "$name" = same ]; then
    grep -q 'whose descriptor is not the other end of the connection (pid [0-9]*): ignored, nothing received' "$log" || why=1
    [ $attacks = 2 ] && ! grep -q 'offer from uid 65534, .*: ignored' "$log" && why=1
    # A rejection logged after the record was received ('…, ignored' alone):
    # the forger's descriptors were taken in.
    grep -q ' read_offer: .*, ignored$' "$log" && why=1
  else
    grep -q ' read_offer: .*offer from a process without the other end of the connection, ignored$' "$log" || why=1
  fi
  grep -q 'bad offer header\|malformed offer' "$log" && why=1
  if [ $vrc != 0 ] || [ $src != 0 ] || [ "$ignored" != "$attacks" ] || [ "$ups" != 0 ] || [ $why != 0 ]; then
    echo "FAIL forge $name: victim exit $vrc, server exit $src, $ignored of $attacks forged offers ignored, $ups upgrades, reasons wrong: $why"
    tail -n 3 "$TMP/victim.out" "$TMP/server.out"; sed 's/^/    log: /' "$log" 2>/dev/null | head
    fail=$((fail + 1))
  else
    pass=$((pass + 1))
    [ $name = same ] && how="before anything was received" || how="by their proof (the forger could not be looked into)"
    echo "ok forge $name: $attacks forged offers ignored $how, connection stayed plain, server's bytes intact"
  fi
}

round same
if [ $canuid = 1 ]; then round nodump; else echo "forge: round nodump needs root and setpriv: not run"; fi
echo "forge: $pass passed, $fail failed"
[ $fail = 0 ]

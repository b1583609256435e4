#!/bin/bash
# Offer forgery: a shimmed client talking to a plain server is sent forged offers
# (a sealed segment with injected data, and a UDP socket mirroring the connection's
# addresses as proof) by a process of the same user and, when setpriv is available
# and we are root, by another user. The client must ignore both, log why, stay
# plain, and exchange exactly the server's bytes.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
F=$ROOT/$BUILD/tests/progs/forge
TMP=$(mktemp -d)
chmod 755 "$TMP"
spid= vpid=
cleanup() { for p in $spid $vpid; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((10000 + RANDOM % 15000))
log=$TMP/shim.log
fail=0
"$F" server "$port" >"$TMP/server.out" 2>&1 &
spid=$!
for i in $(seq 100); do grep -q ready "$TMP/server.out" && break; sleep 0.02; done
mkfifo "$TMP/go"
env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$log" "$F" victim "$port" <"$TMP/go" >"$TMP/victim.out" 2>&1 &
vpid=$!
exec 3>"$TMP/go"
for i in $(seq 100); do [ -s "$TMP/victim.out" ] && break; sleep 0.02; done
read -r ino cport <"$TMP/victim.out"
attacks=0
if "$F" attack "$ino" "$cport" "$port" >"$TMP/a1.out" 2>&1; then attacks=$((attacks + 1)); else
  echo "FAIL forge: same-user attack could not be staged: $(cat "$TMP/a1.out")"; fail=$((fail + 1)); fi
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  if setpriv --reuid=65534 --regid=65534 --clear-groups "$F" attack "$ino" "$cport" "$port" >"$TMP/a2.out" 2>&1; then
    attacks=$((attacks + 1)); else echo "FAIL forge: other-user attack could not be staged: $(cat "$TMP/a2.out")"; fail=$((fail + 1)); fi
fi
echo go >&3
exec 3>&-
wait "$vpid"; vrc=$?; vpid=
wait "$spid"; src=$?; spid=
ignored=$(grep -c 'ignored' "$log" 2>/dev/null)
ups=$(grep -c ' upgraded fd=' "$log" 2>/dev/null)
# Each forgery must be refused for what gives it away (the proof; the other user),
# not for a header the library no longer speaks: that would test nothing.
why=0
grep -q 'offer from a process without the other end of the connection, ignored' "$log" || why=1
[ $attacks = 2 ] && ! grep -q 'offer from uid 65534, .*: ignored' "$log" && why=1
grep -q 'bad offer header\|malformed offer' "$log" && why=1
if [ $vrc != 0 ] || [ $src != 0 ] || [ "$ignored" != "$attacks" ] || [ "$ups" != 0 ] || [ $why != 0 ]; then
  echo "FAIL forge: victim exit $vrc, server exit $src, $ignored of $attacks forged offers ignored, $ups upgrades, reasons wrong: $why"
  tail -n 3 "$TMP/victim.out" "$TMP/server.out"; sed 's/^/    log: /' "$log" 2>/dev/null | head
  fail=$((fail + 1))
else
  echo "ok forge: $attacks forged offers ignored, connection stayed plain, server's bytes intact"
fi
echo "forge: $((1 - (fail > 0))) passed, $((fail > 0)) failed"
[ $fail = 0 ]

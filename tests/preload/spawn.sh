#!/bin/bash
# Images started inside libc, past the exec wrappers: posix_spawn with and without
# file actions, system() and popen() (tests/progs/spawnsrv.c). A server reads a
# header through the library (the client attaches: the connection is upgraded),
# then hands the connection to `cat` and closes its copy; the client sends
# 1 B to 1 MiB and must get exactly that back (sha256), over TCP and unix.
#   - cat with the library: the connection is carried into it ("taken over after
#     exec" in the log) and echoes every byte;
#   - cat without it (nopreload): the connection is fenced there, cat fails with
#     a read error, and the client gets end of file with nothing, never a kick
#     byte as data;
#   - popen (any): the connection is kept from the child (EBADF there), the client
#     gets nothing.
# Before preload/spawn.c the new image read the socket unannounced: kick bytes as
# data or a hang.
#   BUILD=build tests/preload/spawn.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/progs/spawnsrv
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((10000 + RANDOM % 15000)) # below the ephemeral range (32768 on): a client's local port there made listen fail (EADDRINUSE)
pass=0 fail=0
export LC_ALL=C
for n in 1 65537 1048576; do head -c "$n" /dev/urandom >"$TMP/in.$n"; done

# run MODE FAMILY SIZE [nopreload]
run() {
  local mode=$1 fam=$2 size=$3 np=${4:-} addr why=""
  port=$((port + 1))
  if [ "$fam" = tcp ]; then addr=tcp:$port; else addr=unix:$TMP/s.sock; rm -f "$TMP/s.sock"; fi
  local log=$TMP/shim.log
  rm -f "$log" "$TMP/out" "$TMP/srv.err" "$TMP/cli.err"
  local envs=(env -u SHMSHIM_LOG -u SHMSHIM_LOG_FILE "LD_PRELOAD=$LIB" SHMSHIM_SHORT_MS=0 SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$log")
  "${envs[@]}" timeout 60 "$P" serve "$addr" "$mode" $np 2>"$TMP/srv.err" &
  spid=$!
  local i
  for i in $(seq 250); do grep -q listening "$TMP/srv.err" 2>/dev/null && break; sleep 0.02; done
  "${envs[@]}" timeout 60 "$P" client "$addr" "$TMP/in.$size" >"$TMP/out" 2>"$TMP/cli.err"
  local crc=$?
  wait "$spid"
  local src=$?
  spid=
  local got want up carried fenced kicks
  got=$(sha256sum <"$TMP/out" | cut -c1-64)
  want=$(sha256sum <"$TMP/in.$size" | cut -c1-64)
  up=$(grep -c ' upgraded fd=[0-9]* role=client' "$log" 2>/dev/null)
  carried=$(grep -c 'inherited fd=[01] role=server: taken over after exec' "$log" 2>/dev/null)
  fenced=$(grep -c -e 'cannot take it over' -e "not passed to popen()'s child" "$log" 2>/dev/null)
  [ "$src" = 0 ] || why="$why server exit $src: $(tail -2 "$TMP/srv.err" | tr '\n' ' ')"
  [ "$up" = 1 ] || why="$why client not upgraded ($up)"
  if [ "$mode" != popen ] && [ -z "$np" ]; then
    [ "$crc" = 0 ] || why="$why client exit $crc: $(tail -1 "$TMP/cli.err")"
    [ "$got" = "$want" ] || why="$why echo differs ($(stat -c %s "$TMP/out") of $size bytes)"
    [ "$carried" -ge 1 ] || [ "$mode" = fdopen ] || why="$why connection not carried into the program"
    [ "$fenced" = 0 ] || why="$why fenced"
  else
    # Nothing may come back: the program never had the connection's bytes.
    [ -s "$TMP/out" ] && why="$why client got $(stat -c %s "$TMP/out") bytes (first: $(head -c 8 "$TMP/out" | od -An -c | tr -s ' '))"
    [ "$fenced" -ge 1 ] || why="$why no fence logged"
    [ "$carried" = 0 ] || why="$why carried into an image without the library"
    grep -q -e 'read error' -e 'Bad file descriptor' -e 'Connection reset' "$TMP/srv.err" ||
      why="$why the program reported no error: $(tail -2 "$TMP/srv.err" | tr '\n' ' ')"
  fi
  grep -q ' warn .*kick' "$log" 2>/dev/null && why="$why $(grep -m1 ' warn .*kick' "$log")"
  if [ -n "$why" ]; then
    fail=$((fail + 1))
    echo "FAIL spawn $mode${np:+ $np} $fam $size:$why"
    [ -f "$log" ] && sed 's/^/    log: /' "$log" | head -12
  else
    pass=$((pass + 1))
    echo "ok spawn $mode${np:+ $np} $fam $size"
  fi
}

for fam in tcp unix; do
  for mode in actions inherit system; do
    for size in 1 65537 1048576; do run "$mode" "$fam" "$size"; done
    run "$mode" "$fam" 65537 nopreload
  done
  run popen "$fam" 65537
  # stdio: sed carried onto its standard streams; the server's own fdopen stream
  for size in 1 65537 1048576; do run sed "$fam" "$size"; run fdopen "$fam" "$size"; done
done
echo "spawn: $pass passed, $fail failed"
[ "$fail" = 0 ]

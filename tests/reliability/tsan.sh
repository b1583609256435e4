#!/bin/bash
# ThreadSanitizer on the preloaded library: libtsan is preloaded first, then the
# library built with -fsanitize=thread (build/tsan/), into the matrix program in
# the modes that use threads (blocking mode reads in a second thread; the threads
# scenario writes from two) and in the others for coverage. Any report not listed
# in tests/reliability/tsan.supp fails the run; bytes and upgrades are checked as
# in the matrix.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=$ROOT/build/tsan/libshmshim.so
T=$ROOT/build/tsan/tests/progs/shmtest
TS=$(${CC:-cc} -print-file-name=libtsan.so)
[ -f "$TS" ] || { echo "FAIL tsan: libtsan not found ($TS)"; exit 1; }
TMP=$(mktemp -d)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
export TSAN_OPTIONS="exitcode=66 suppressions=$ROOT/tests/reliability/tsan.supp"
port=$((20000 + RANDOM % 10000))
pass=0; fail=0
for spec in "tcp4 block echo 2000000" "tcp4 block threads 128000" "unix block threads 128000" \
            "tcp4 epoll echo 1000000" "unix epollet echo 1000000" "tcp6 poll halfclose 300000" \
            "unix block scm 20000" "tcp4 block fork 300000" "unix poll peek 100000" "tcp4 select banner 70000"; do
  set -- $spec
  port=$((port + 1))
  [ "$1" = unix ] && addr=unix:$TMP/s.$port || addr=$1:$port
  rm -f "$TMP"/*.log "$TMP"/*.out
  env "LD_PRELOAD=$TS $LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/s.log" timeout 120 "$T" server "$addr" "$2" "$3" "$4" >"$TMP/s.out" 2>&1 &
  spid=$!
  for i in $(seq 300); do grep -q ready "$TMP/s.out" 2>/dev/null && break; sleep 0.05; done
  env "LD_PRELOAD=$TS $LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/c.log" timeout 120 "$T" client "$addr" "$2" "$3" "$4" >"$TMP/c.out" 2>&1
  crc=$?
  wait $spid; src=$?; spid=
  ups=$(cat "$TMP/s.log" "$TMP/c.log" 2>/dev/null | grep -c ' upgraded fd=')
  if [ $crc != 0 ] || [ $src != 0 ] || [ "$ups" -lt 2 ]; then
    fail=$((fail + 1)); echo "FAIL tsan $spec: client exit $crc, server exit $src (66: race report), $ups ends upgraded"
    grep -h -A14 'WARNING: ThreadSanitizer' "$TMP/c.out" "$TMP/s.out" | head -40
  else
    pass=$((pass + 1)); echo "ok tsan $spec: no unlisted race, $ups connection ends upgraded"
  fi
done
echo "tsan (preloaded): $pass passed, $fail failed"
[ $fail = 0 ]

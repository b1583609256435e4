#!/bin/bash
# Hostile peer: tests/reliability/hostile plays the server side of the real
# negotiation toward a shimmed victim and then breaks the protocol (one case per
# run, see hostile.c). The victim (victim.c, preloaded) has a second connection to a
# healthy shimmed echo server. For every case: the victim must not die (no SIGSEGV,
# no SIGBUS: guard pages sit right around the hostile segment), must not hang
# (every wait is bounded), must report the documented result on the hostile
# connection only, and its other connection must echo byte-exact before and after.
# The shim's log must show exactly the expected upgrades.
#   BUILD=build SHM_PRELOAD=... [HOSTILE_CASES="futex flags"] tests/reliability/hostile.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
H=$ROOT/$BUILD/tests/rel/hostile
V=$ROOT/$BUILD/tests/rel/victim
TMP=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 10000)) # below the ephemeral range
pass=0; fail=0

wait_ready() { local i; for i in $(seq 250); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.02; done; return 1; }

# case FAMILY CASE OP EXPECTED_RESULTS(|-separated) UPGRADES PATTERN [LOGWORD] [ECHO_DELAY_MS] [MAX_FDS]
# MAX_FDS: how many more descriptors the victim may hold when A's operation ends.
run() {
  case " ${HOSTILE_CASES:-$2} " in *" $2 "*) ;; *) return ;; esac
  local fam=$1 cas=$2 op=$3 want=$4 wups=$5 wpat=$6 logword=${7:-} delay=${8:-0} maxfds=${9:-}
  port=$((port + 2))
  local ha ea
  if [ "$fam" = unix ]; then ha=unix:$TMP/h.$port; ea=unix:$TMP/e.$port; else ha=tcp4:$port; ea=tcp4:$((port + 1)); fi
  local vlog=$TMP/victim.log elog=$TMP/echo.log
  rm -f "$vlog" "$elog" "$TMP"/*.out
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$elog" "$V" echo "$ea" "$delay" >"$TMP/echo.out" 2>&1 &
  local epid=$!
  timeout 40 "$H" "$ha" "$cas" >"$TMP/hostile.out" 2>&1 &
  local hpid=$!
  pids="$epid $hpid"
  wait_ready "$TMP/echo.out"; wait_ready "$TMP/hostile.out"
  env "LD_PRELOAD=$PRE" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$vlog" timeout 30 "$V" run "$ha" "$ea" "$op" >"$TMP/victim.out" 2>&1
  local vrc=$?
  wait "$hpid" 2>/dev/null; local hrc=$?
  kill "$epid" 2>/dev/null; wait "$epid" 2>/dev/null
  pids=
  local line res ups pat ms why=""
  line=$(grep '^victim:' "$TMP/victim.out")
  res=$(sed -n 's/.* A=\([^ ]*\).*/\1/p' <<<"$line")
  pat=$(sed -n 's/.* pattern=\([^ ]*\).*/\1/p' <<<"$line")
  ms=$(sed -n 's/.* a_ms=\([^ ]*\).*/\1/p' <<<"$line")
  ups=$(grep -c ' upgraded fd=.*role=client' "$vlog" 2>/dev/null)
  [ $vrc = 0 ] || why="victim exit $vrc$( [ $vrc -gt 128 ] && echo " (signal $((vrc - 128)))")"
  [ $hrc = 0 ] || why="$why hostile could not stage the case (exit $hrc): $(tail -1 "$TMP/hostile.out")"
  case "|$want|" in *"|$res|"*) ;; *) why="$why A=$res, expected $want" ;; esac
  [ "$ups" = "$wups" ] || why="$why $ups client upgrades logged, expected $wups"
  [ "$wpat" = any ] || [ "$pat" = "$wpat" ] || why="$why pattern=$pat, expected $wpat"
  local afds; afds=$(sed -n 's/.* a_fds=\([-0-9]*\).*/\1/p' <<<"$line")
  if [ -n "$maxfds" ] && ! [ "${afds:-999999}" -le "$maxfds" ]; then why="$why $afds descriptors held, at most $maxfds expected"; fi
  if [ -n "$logword" ] && ! grep -q "$logword" "$vlog" 2>/dev/null; then why="$why no '$logword' in the victim's log"; fi
  if [ -n "$why" ]; then
    fail=$((fail + 1)); echo "FAIL hostile $fam $cas/$op:$why"
    echo "    $line"; sed 's/^/    log: /' "$vlog" 2>/dev/null | head -8; tail -n 3 "$TMP/victim.out" "$TMP/hostile.out" | sed 's/^/    /'
  else
    pass=$((pass + 1)); echo "ok hostile $fam $cas/$op: A=$res after ${ms} ms, B byte-exact, $(sed -n 's/.*guards=\([0-9]*\).*/\1/p' <<<"$line") guard(s)"
  fi
}

for fam in tcp4 unix; do
  run $fam control      read  EOF                     2 ok
  run $fam head_beyond  read  ECONNRESET              2 none "corrupted the ring"
  run $fam head_garbage poll  ECONNRESET              2 none "corrupted the ring"
  run $fam head_back    epoll ECONNRESET              2 bad  "corrupted the ring"
  run $fam tail_past    write ECONNRESET              2 none "corrupted the ring"
  run $fam tail_back    write ECONNRESET              2 none "corrupted the ring"
  run $fam flags        read  "EOF|ECONNRESET"        2 any
  run $fam flags        write "EPIPE|ECONNRESET|EAGAIN" 2 none
  run $fam futex        write EAGAIN                 2 none
  run $fam side_lock    read  EOF                     2 ok "for 2 s"
  run $fam kick_flood   read  "EOF|ECONNRESET"        2 none
  for s in seg_unsealed seg_small seg_big seg_tmpfile seg_magic seg_version; do
    run $fam $s read EOF 1 ok "the offer could not be taken"
  done
  run $fam offer_ino    read  EOF 1 ok "offer for another connection"
  run $fam offer_proof  read  EOF 1 ok "without the other end"
  # Refused before anything is received: as its sender does not hold the other
  # end, or (a look before the real server's accept) as that end is not there yet.
  run $fam offer_steal  read  EOF 2 ok "ignored, nothing received\|connection is gone: ignored" 1500
done
# Descriptor markers exist on AF_UNIX only (on TCP an 'A' is a stray byte: reset).
# A connection queues at most 4096 markers and min(4096, RLIMIT_NOFILE/4)
# descriptors (core/conn.c queue_anc): 24 x 253 are more.
run unix marker_far  read ECONNRESET 2 none "descriptor-marker" 0 0
run unix marker_many read ECONNRESET 2 none "descriptor-marker" 0 0
run unix marker_fds  read ECONNRESET 2 none "descriptor-marker" 0 4096
run unix marker_cut  scm  EOF        2 ok
echo "hostile peer: $pass passed, $fail failed"
[ $fail = 0 ]

#!/bin/bash
# redis-server with redis-cli and redis-benchmark, unmodified, with and without the
# library on either end, over loopback TCP and over the unix socket. In every cell:
#   - SET/GET of random binary values from 0 B to 4 MiB, compared byte for byte;
#   - redis-cli --pipe with 100,000 RPUSH commands, then the whole list read back
#     and compared with what was sent;
#   - pub/sub: two subscribers (SUBSCRIBE and PSUBSCRIBE), 200 messages of up to
#     60 KB from a publisher, every payload compared;
#   - MULTI/EXEC from 4 concurrent clients (200 transactions each), totals checked;
#   - a client killed (SIGKILL) in the middle of a pipeline while 3 others run
#     theirs: theirs complete and are compared, the server drops the dead one and
#     keeps serving;
#   - redis-benchmark (bounded -n), which must report no error;
#   - the upgrade assertions (lib.sh, it_cell_verdict) against the number of
#     connections redis itself counted (INFO total_connections_received).
# The cells run with the caller's settings (make test: SHMSHIM_SHORT_MS=0, every
# connection offered), then both ends shimmed once more with the library's
# defaults, where every connection must still be accounted for at both ends.
# Then replication (TCP), a primary and its replica both plain, then both
# shimmed: a full resync of 200,000 keys (diskless: the primary forks a child
# for the snapshot while its connections are upgraded), then writes from
# redis-benchmark streamed to the replica; the replica's data must equal the
# primary's (DEBUG DIGEST), and, shimmed, the replication link must have been
# upgraded at both ends.
source "$(dirname "$0")/lib.sh"
it_init redis
it_need redis-server redis-cli redis-benchmark awk base64 sha256sum timeout

CELL_TIMEOUT=${REDIS_CMD_TIMEOUT:-60}

# Data, made once.
SIZES="0 1 100 4095 4096 65536 262143 262144 262145 1048576 4194304"
for s in $SIZES; do head -c "$s" /dev/urandom >"$T/v.$s"; done
# 100k RPUSH commands in the wire protocol, and the list they build, one per line.
gen_rpush() { # KEY COUNT SEED > file; list in file.list
  awk -v key="$1" -v n="$2" -v seed="$3" -v list="$4" 'BEGIN {
    f = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (i = 0; i < n; i++) {
      v = "v" seed "-" i "-" substr(f, 1 + (i * 7) % 61, (i * 13 + seed) % 97);
      printf "*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(key), key, length(v), v;
      print v > list;
    }
  }'
}
gen_rpush pipelist 100000 7 "$T/pipe.list" >"$T/pipe.resp"
PIPE_SHA=$(it_sha "$T/pipe.list")
for g in 1 2 3; do
  gen_rpush "good$g" 20000 "$g" "$T/good$g.list" >"$T/good$g.resp"
  GOOD_SHA[$g]=$(it_sha "$T/good$g.list")
done
# Pub/sub payloads: base64 text (line-safe) of 1 B to 60 KB.
head -c 3000000 /dev/urandom | base64 -w0 >"$T/blob"
awk 'BEGIN { getline b < ARGV[1]; ARGV[1] = ""; for (i = 1; i <= 200; i++) print substr(b, 1 + i * 997, 1 + (i * 7919) % 60000) }' \
  "$T/blob" >"$T/payloads"
PAY_SHA=$(it_sha "$T/payloads")
awk '{ print "PUBLISH chan " $0 }' "$T/payloads" >"$T/pub.cmds"
# One MULTI/EXEC transaction, 200 times.
for i in $(seq 200); do printf 'MULTI\nINCR cnt\nINCRBY sum 3\nRPUSH txlist x\nEXEC\n'; done >"$T/multi.cmds"

# Plain redis-cli for the test's own bookkeeping (never part of a cell).
admin() { timeout 20 redis-cli "${WHERE[@]}" "$@"; }
total_conns() { admin INFO stats | tr -d '\r' | sed -n 's/^total_connections_received://p'; }

# For it_wait: is WANT CMD... (CMD's output is WANT); lines_ge FILE N.
is() { local want=$1; shift; [ "$("$@" 2>/dev/null)" = "$want" ]; }
lines_ge() { [ "$(wc -l <"$1")" -ge "$2" ]; }
client_count() { cli CLIENT LIST | grep -c .; }

# The features of one cell. $cs: clients shimmed; WHERE: redis-cli's address options.
cli() { it_run "$cs" "$IT_CLOG" timeout "$CELL_TIMEOUT" redis-cli "${WHERE[@]}" "$@"; }

feat_setget() {
  local s bad=0 got
  for s in $SIZES; do
    got=$(cli -x SET "k$s" <"$T/v.$s")
    [ "$got" = OK ] || { bad=1; it_log "SET of $s bytes answered '$got'"; }
    cli GET "k$s" >"$T/get.out"
    # redis-cli prints the raw value and a newline.
    got=$(head -c -1 "$T/get.out" | it_sha_stdin)
    [ "$got" = "$(it_sha "$T/v.$s")" ] && [ "$(tail -c 1 "$T/get.out" | od -An -c | tr -d ' ')" = '\n' ] ||
      { bad=1; it_log "GET of $s bytes: different bytes ($(stat -c %s "$T/get.out") bytes back)"; }
  done
  it_check "$label: SET/GET 0 B..4 MiB byte-identical" $((1 - bad))
}

feat_pipe() {
  cli DEL pipelist >/dev/null
  cli --pipe <"$T/pipe.resp" >"$T/pipe.out" 2>&1
  local rc=$? tail
  tail=$(tail -n 1 "$T/pipe.out")
  it_eq "$label: --pipe 100k commands (exit $rc)" "$tail" "errors: 0, replies: 100000"
  it_eq "$label: --pipe list read back" "$(cli LRANGE pipelist 0 -1 | it_sha_stdin)" "$PIPE_SHA"
  cli DEL pipelist >/dev/null
}

# A client in the background that records its own PID in FILE (so that it, not a
# wrapper, can be killed).
bg_cli() { # PIDFILE OUT ARGS...
  local pf=$1 out=$2
  shift 2
  rm -f "$pf"
  it_run "$cs" "$IT_CLOG" sh -c 'echo $$ >"$0"; exec redis-cli "$@"' "$pf" "${WHERE[@]}" "$@" >"$out" 2>&1 &
}

feat_pubsub() {
  bg_cli "$T/sub1.pid" "$T/sub1.out" SUBSCRIBE chan
  local w1=$!
  bg_cli "$T/sub2.pid" "$T/sub2.out" PSUBSCRIBE 'ch*'
  local w2=$!
  it_wait 20 is "$(echo chan; echo 1)" cli PUBSUB NUMSUB chan
  it_wait 20 is 1 cli PUBSUB NUMPAT
  cli <"$T/pub.cmds" >"$T/pub.out"
  it_eq "$label: every PUBLISH reached both subscribers" "$(sort -u "$T/pub.out" | tr '\n' ' ')" "2 "
  # subscribe: 3 header lines then message/chan/payload; psubscribe: 3, then
  # pmessage/pattern/chan/payload.
  it_wait 30 lines_ge "$T/sub1.out" 603
  it_wait 30 lines_ge "$T/sub2.out" 803
  it_eq "$label: SUBSCRIBE payloads" "$(awk 'NR > 3 && (NR - 3) % 3 == 0' "$T/sub1.out" | it_sha_stdin)" "$PAY_SHA"
  it_eq "$label: PSUBSCRIBE payloads" "$(awk 'NR > 3 && (NR - 3) % 4 == 0' "$T/sub2.out" | it_sha_stdin)" "$PAY_SHA"
  kill "$(cat "$T/sub1.pid")" "$(cat "$T/sub2.pid")"
  wait "$w1" "$w2" 2>/dev/null
}

feat_multi() {
  cli DEL cnt sum txlist >/dev/null
  local i pids=()
  for i in 1 2 3 4; do
    cli <"$T/multi.cmds" >"$T/multi.$i.out" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  local errs
  errs=$(cat "$T"/multi.*.out | grep -c -e ERR -e EXECABORT -e rror)
  it_eq "$label: MULTI/EXEC errors" "$errs" 0
  it_eq "$label: MULTI/EXEC totals" "$(cli MGET cnt sum | tr '\n' ' ')$(cli LLEN txlist)" "800 2400 800"
  cli DEL cnt sum txlist >/dev/null
}

feat_kill() {
  cli DEL good1 good2 good3 junk >/dev/null
  # The victim: an endless stream of 4 KB SETs (the generator is bounded by
  # timeout), killed once the server has some of its data. It records its own PID.
  rm -f "$T/victim.pid"
  timeout 30 awk 'BEGIN { v = sprintf("%4096s", ""); gsub(/ /, "z", v);
    while (1) printf "*3\r\n$3\r\nSET\r\n$4\r\njunk\r\n$4096\r\n%s\r\n", v }' |
    it_run "$cs" "$IT_CLOG" sh -c 'echo $$ >"$0"; exec redis-cli "$@"' "$T/victim.pid" "${WHERE[@]}" --pipe \
      >/dev/null 2>&1 &
  local victim=$!
  local g pids=()
  for g in 1 2 3; do
    cli --pipe <"$T/good$g.resp" >"$T/good$g.out" 2>&1 &
    pids+=($!)
  done
  it_wait 20 is 4096 cli STRLEN junk
  local killed=0
  it_wait 5 test -s "$T/victim.pid" && kill -KILL "$(cat "$T/victim.pid")" && killed=1
  it_check "$label: a pipelining redis-cli killed while the others run" "$killed"
  wait "${pids[@]}"
  wait "$victim" 2>/dev/null
  for g in 1 2 3; do
    it_eq "$label: pipe $g beside the killed one" "$(tail -n 1 "$T/good$g.out")" "errors: 0, replies: 20000"
    it_eq "$label: list $g read back" "$(cli LRANGE "good$g" 0 -1 | it_sha_stdin)" "${GOOD_SHA[$g]}"
  done
  # The server notices the dead client and keeps serving: in the end, the only
  # client is the one asking.
  it_wait 10 is 1 client_count
  it_eq "$label: clients left after the kill" "$(client_count)" 1
  it_eq "$label: server still answers" "$(cli PING)" PONG
  cli DEL good1 good2 good3 junk >/dev/null
}

feat_bench() {
  local out=$T/bench.out
  it_run "$cs" "$IT_CLOG" timeout 120 redis-benchmark "${WHERE[@]}" -n 20000 -c 20 -d 256 \
    -t set,get,incr,lpush,lpop,mset -q >"$out" 2>&1
  local rc=$?
  it_run "$cs" "$IT_CLOG" timeout 120 redis-benchmark "${WHERE[@]}" -n 20000 -c 8 -P 16 -d 4096 \
    -t set,get -q >>"$out" 2>&1
  rc=$((rc + $?))
  local ok errs
  ok=$(grep -c 'requests per second' "$out")
  errs=$(grep -ci -e error -e 'connection' "$out")
  if [ $rc = 0 ] && [ "$ok" = 8 ] && [ "$errs" = 0 ]; then
    it_check "$label: redis-benchmark" 1
  else
    it_check "$label: redis-benchmark" 0 "exit $rc, $ok of 8 tests reported, $errs error lines"
    tr '\r' '\n' <"$out" | grep -v '^$' | tail -n 5 | sed 's/^/    /'
  fi
}

# One server (shimmed if $ss), its cells (clients shimmed or not, each in $CLIENTS,
# over TCP and the unix socket), its exit.
run_server() {
  local tag=$1
  port=$(it_port) || exit 1
  sock=$T/redis.$tag.sock
  slog=$T/log/server.$tag.log
  mkdir -p "$T/data.$tag"
  it_start spid "$ss" "$slog" redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$sock" \
    --unixsocketperm 700 --save '' --appendonly no --dir "$T/data.$tag" --daemonize no \
    --maxclients 1000 --loglevel warning --logfile "$T/redis.$tag.out"
  WHERE=(-p "$port")
  if ! it_wait 20 redis-cli -p "$port" PING; then
    it_check "server_shim=$ss$SUFFIX: redis-server started" 0 "$(tail -n 3 "$T/redis.$tag.out")"
    return
  fi
  for tr in tcp unix; do
    if [ $tr = tcp ]; then WHERE=(-h 127.0.0.1 -p "$port") fam=tcp4; else WHERE=(-s "$sock") fam=unix; fi
    for cs in $CLIENTS; do
      label="client_shim=$cs server_shim=$ss $tr$SUFFIX"
      before=$(total_conns)
      it_cell_begin "$slog"
      it_run_features "$label" setget pipe pubsub multi kill bench
      it_cell_end
      after=$(total_conns)
      # The victim of feat_kill may die before it reads: it never learns the verdict.
      it_cell_verdict "$label" "$cs" "$ss" "$fam" $((after - before - 1)) 1
    done
  done
  it_stop "$spid" TERM 20
  rc=$?
  it_eq "server_shim=$ss$SUFFIX: redis-server exit status" "$rc" 0
  if [ "$ss" = 1 ]; then
    it_eq "server_shim=$ss$SUFFIX: redis-server's exit statistics" "$(it_count ' stats upgraded_client=' "$slog")" 1
    it_stats_check "server_shim=$ss$SUFFIX: redis-server" "$slog"
  fi
}

CLIENTS="0 1" SUFFIX=""
for ss in 0 1; do run_server "$ss"; done
# Both ends shimmed once more with the library's defaults (SHMSHIM_SHORT_MS unset):
# the short-lived policy leaves redis-cli's one-command connections plain as they
# come in bursts, the others upgrade; every byte and every connection as above.
IT_DEFAULT_SETTINGS=1 IT_DEFAULT_LOG=debug CLIENTS=1 SUFFIX=", default settings" ss=1
run_server default
IT_DEFAULT_SETTINGS=0

# Replication, plain then shimmed ($1: 0 or 1, both servers and the benchmark).
digest() { timeout 20 redis-cli -p "$1" DEBUG DIGEST; }
link_up() { timeout 20 redis-cli -p "$rport" INFO replication | grep -q '^master_link_status:up'; }
same_data() { [ "$(digest "$pport")" = "$(digest "$rport")" ]; }
replication() {
  local sh=$1 label="replication shim=$1" plog=$T/log/primary.$1.log rlog=$T/log/replica.$1.log
  pport=$(it_port) || exit 1
  rport=$(it_port) || exit 1
  mkdir -p "$T/repl.$sh"
  local common=(--bind 127.0.0.1 --save '' --appendonly no --dir "$T/repl.$sh" --daemonize no
    --enable-debug-command yes --repl-diskless-sync yes --repl-diskless-sync-delay 0 --loglevel warning)
  it_start ppid "$sh" "$plog" redis-server --port "$pport" "${common[@]}" --logfile "$T/primary.$sh.out"
  it_start rpid "$sh" "$rlog" redis-server --port "$rport" "${common[@]}" --dbfilename replica.rdb \
    --logfile "$T/replica.$sh.out"
  if ! it_wait 20 redis-cli -p "$pport" PING || ! it_wait 20 redis-cli -p "$rport" PING; then
    it_check "$label: servers started" 0
    return
  fi
  timeout 60 redis-cli -p "$pport" DEBUG POPULATE 200000 key 100 >/dev/null
  timeout 20 redis-cli -p "$rport" REPLICAOF 127.0.0.1 "$pport" >/dev/null
  it_wait 60 link_up
  it_check "$label: the replica's link to the primary is up" "$(link_up && echo 1 || echo 0)"
  it_run "$sh" "$T/log/bench.$sh.log" timeout 120 redis-benchmark -p "$pport" -n 50000 -r 100000 -P 16 \
    -t set,lpush,incr,sadd -q >"$T/repl.bench.$sh" 2>&1
  it_eq "$label: redis-benchmark's tests against the primary" "$(grep -c 'requests per second' "$T/repl.bench.$sh")" 4
  it_wait 30 same_data
  it_eq "$label: the replica's data (DEBUG DIGEST)" "$(digest "$rport")" "$(digest "$pport")"
  it_eq "$label: keys on the replica" "$(timeout 20 redis-cli -p "$rport" DBSIZE)" "$(timeout 20 redis-cli -p "$pport" DBSIZE)"
  if [ "$sh" = 1 ]; then
    # The replica is a client of the primary's on exactly one connection.
    it_eq "$label: the link upgraded by the replica" "$(it_count ' upgraded fd=[0-9]+ role=client family=tcp4 ' "$rlog")" 1
    it_eq "$label: the link upgraded by the primary" \
      "$(it_count ' upgraded fd=[0-9]+ role=server family=tcp4 ' "$plog")" \
      "$(($(it_count ' upgraded fd=[0-9]+ role=client family=tcp4 ' "$T/log/bench.$sh.log") + 1))"
    it_eq "$label: warnings in the library's logs" "$(cat "$plog" "$rlog" | grep -c ' warn ')" 0
  else
    it_eq "$label: nothing logged by the plain servers" "$(cat "$plog" "$rlog" 2>/dev/null | wc -c)" 0
  fi
  it_stop "$rpid" TERM 20
  it_eq "$label: replica exit status" "$?" 0
  it_stop "$ppid" TERM 20
  it_eq "$label: primary exit status" "$?" 0
}
replication 0
replication 1
it_finish

#!/bin/bash
# MariaDB (mariadbd with the mariadb client and mariadb-slap), unmodified, with
# and without the library on either end, over loopback TCP and the unix socket,
# with each of its two connection models: a thread per connection (blocking reads
# with poll) and the thread pool (thread_handling=pool-of-threads: a listener
# thread per group asleep in epoll_wait on the group's set, EPOLLONESHOT, while
# workers add each connection after its login and re-arm it after each query; it
# crashed on the library's epoll tag, then lost queries: docs/design.md, "Several
# threads on one set"). In every cell:
#   - LOAD DATA LOCAL of 8,000 rows of random text, read back in order and
#     compared byte for byte, and a 3.2 MB result of one query, checked;
#   - a bounded mariadb-slap run (6 clients, 3 x 300 mixed queries), no error;
#   - KILL of an idle connection (found by its database, once its first answer
#     came): its next query fails, as without the library;
#   - the upgrade assertions against the connections the server counted itself
#     (status variable Connections).
# Then once more with the library's default settings (pool of threads, both
# shimmed, unix): the same bytes, and both ends agree on what was upgraded.
source "$(dirname "$0")/lib.sh"
it_init mariadb
it_need mariadbd mariadb-install-db mariadb mariadb-slap sha256sum base64 timeout

# mariadbd refuses to run as root: its own user, as the package made it.
AS=()
if [ "$(id -u)" = 0 ]; then
  id mysql >/dev/null 2>&1 || { it_check "user mysql exists (mariadb-server)" 0; it_finish; }
  AS=(--user=mysql)
fi
mkdir "$T/data" "$T/run"
[ "$(id -u)" = 0 ] && chown mysql "$T/data" "$T/run"
if ! timeout 120 mariadb-install-db --no-defaults --datadir="$T/data" "${AS[@]}" \
  --auth-root-authentication-method=normal --skip-test-db >"$T/install.out" 2>&1; then
  it_check "mariadb-install-db" 0 "$(tail -n 3 "$T/install.out")"
  it_finish
fi

# 8,000 rows "number<TAB>base64" for LOAD DATA, and the expected answers.
head -c 1200000 /dev/urandom | base64 -w 140 | head -n 8000 | awk '{ printf "%d\t%s\n", NR, $0 }' >"$T/rows"
chmod 644 "$T/rows"
ROWS_SHA=$(it_sha "$T/rows")
BIG_SHA=$(for i in $(seq 50000); do printf 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; done | { cat; echo; } | it_sha_stdin)

my() { it_run "$cs" "$IT_CLOG" timeout 60 mariadb --no-defaults -uroot "${AT[@]}" "$@"; }
connections() { my -N -B -e "show global status like 'Connections'" | cut -f2; }

feat_data() {
  : >"$T/data.err"
  my -e "drop database if exists t; create database t; create table t.r (i int primary key, s text)" 2>>"$T/data.err" &&
    my --local-infile=1 -e "load data local infile '$T/rows' into table t.r fields terminated by '\t'" 2>>"$T/data.err"
  it_eq "$label: LOAD DATA and SELECT, byte-identical" "$(my -N -B -e 'select i, s from t.r order by i' 2>>"$T/data.err" | it_sha_stdin)" "$ROWS_SHA"
  [ -s "$T/data.err" ] && sed "s/^/[mariadb]   $label: /" "$T/data.err" | head -5
  it_eq "$label: a 3.2 MB result" "$(my -N -B -e "select repeat('0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', 50000)" | it_sha_stdin)" "$BIG_SHA"
}

feat_slap() {
  it_run "$cs" "$IT_CLOG" timeout 120 mariadb-slap --no-defaults -uroot "${AT[@]}" --concurrency=6 --iterations=3 \
    --number-of-queries=300 --auto-generate-sql --auto-generate-sql-load-type=mixed >"$T/slap.out" 2>&1
  local rc=$?
  it_check "$label: mariadb-slap (exit $rc)" "$([ $rc = 0 ] && grep -q 'Average number of seconds' "$T/slap.out" && echo 1 || echo 0)" \
    "$(tail -n 2 "$T/slap.out" | tr '\n' ' ')"
}

# An idle connection (its server thread, or the pool, waits for its next query)
# killed from another one: its next query must fail with the server gone.
feat_kill() {
  my -e "create database if not exists victim"
  # -n: each answer is written out at once; the kill waits for the first one (a
  # connection whose first query the pool has not picked up yet shows as Sleep).
  { echo "select 'before';"; sleep 1.5; echo "select 'after';"; } | my -n -N -D victim >"$T/victim.out" 2>&1 &
  local vp=$! id="" i
  for i in $(seq 100); do
    grep -q '^before$' "$T/victim.out" && break
    sleep 0.01
  done
  for i in $(seq 50); do
    id=$(my -N -B -e "select id from information_schema.processlist where command='Sleep' and db='victim'")
    [ -n "$id" ] && break
    sleep 0.05
  done
  my -e "kill $id" >/dev/null 2>&1
  wait "$vp"
  # The next query fails: "server has gone away" (2006), "lost connection" (2013),
  # or the server's own "connection was killed" (1927), as the race goes, plain too.
  local got
  got="$(grep -c '^before$' "$T/victim.out") $(grep -c '^after$' "$T/victim.out") $(grep -c '^ERROR ' "$T/victim.out")"
  it_check "$label: a killed idle connection" "$([ "$got" = "1 0 1" ] && echo 1 || echo 0)" \
    "got '$got', want '1 0 1' (before, after, error): $(tr '\n' '|' <"$T/victim.out")"
}

cell() {
  it_cell_begin "$slog"
  local c0
  c0=$(connections)
  it_run_features "$label" data slap kill
  n=$(($(connections) - c0 + 1)) # both status queries are the cell's too
  it_cell_end
}

for pool in 0 1; do
  [ $pool = 1 ] && TH=pool-of-threads || TH=one-thread-per-connection
  for ss in 0 1; do
    port=$(it_port) || exit 1
    sock=$T/run/m.$pool.$ss.sock
    slog=$T/log/server.$pool.$ss.log
    it_start spid "$ss" "$slog" mariadbd --no-defaults --datadir="$T/data" "${AS[@]}" --socket="$sock" \
      --port="$port" --bind-address=127.0.0.1 --pid-file="$T/run/m.pid" --log-error="$T/err.$pool.$ss.log" \
      --innodb-flush-log-at-trx-commit=0 --local-infile=1 --thread-handling=$TH --thread-pool-size=2 \
      --skip-name-resolve --max-connections=100
    if ! it_wait 60 test -S "$sock"; then
      it_check "$TH server_shim=$ss: mariadbd started" 0 "$(tail -n 3 "$T/err.$pool.$ss.log")"
      it_stop "$spid" TERM 20
      continue
    fi
    for tr in unix tcp; do
      if [ $tr = tcp ]; then AT=(--protocol=tcp -h 127.0.0.1 -P "$port") fam=tcp4; else AT=(--socket="$sock") fam=unix; fi
      for cs in 0 1; do
        label="$TH client_shim=$cs server_shim=$ss $tr"
        cell
        it_cell_verdict "$label" "$cs" "$ss" "$fam" "$n"
      done
    done
    it_stop "$spid" TERM 30
    it_eq "$TH server_shim=$ss: mariadbd exit status" "$?" 0
  done
done

# The library's defaults (SHMSHIM_SHORT_MS unset): connections that end quickly
# may stay plain on purpose, so the bytes, no warning, at least one upgrade, and
# the same number upgraded at both ends.
IT_DEFAULT_SETTINGS=1 ss=1 cs=1 tr=unix label="pool-of-threads both shimmed unix, default settings"
sock=$T/run/m.default.sock slog=$T/log/server.default.log port=$(it_port) || exit 1
it_start spid 1 "$slog" mariadbd --no-defaults --datadir="$T/data" "${AS[@]}" --socket="$sock" --port="$port" \
  --bind-address=127.0.0.1 --pid-file="$T/run/m.pid" --log-error="$T/err.default.log" \
  --innodb-flush-log-at-trx-commit=0 --local-infile=1 --thread-handling=pool-of-threads --thread-pool-size=2 \
  --skip-name-resolve
if it_wait 60 test -S "$sock"; then
  AT=(--socket="$sock")
  cell
  ups=$(it_count ' upgraded fd=[0-9]+ role=server ' "$IT_SLOG")
  upc=$(it_count ' upgraded fd=[0-9]+ role=client ' "$IT_CLOG")
  warn=$(cat "$IT_SLOG" "$IT_CLOG" | grep ' warn ' | grep -vcE "$IT_STRANGER")
  it_check "$label: upgrades" "$([ "$ups" -ge 1 ] && [ "$ups" = "$upc" ] && [ "$warn" = 0 ] && echo 1 || echo 0)" \
    "server upgraded $ups, clients $upc, $warn warning(s)"
  it_log "ok   $label: $n connections; upgraded server/client $ups/$upc"
  it_stop "$spid" TERM 30
  it_eq "$label: mariadbd exit status" "$?" 0
else
  it_check "$label: mariadbd started" 0 "$(tail -n 3 "$T/err.default.log")"
  it_stop "$spid" TERM 20
fi
IT_DEFAULT_SETTINGS=0
it_finish

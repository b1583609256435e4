#!/bin/bash
# postgres with psql and pgbench, unmodified, with and without the library on
# either end, over loopback TCP and over the unix socket. The postmaster accepts
# each connection and forks a backend that inherits it: an upgraded connection must
# survive that. Postgres runs as its own user (shmshim-pg, created when missing and
# we are root). In every cell:
#   - pgbench -i (scale 1: 100,000 rows sent with COPY);
#   - a bounded pgbench run (4 clients x 200 transactions), no failed transaction;
#   - consistency: the sums of the account, teller and branch balances each equal
#     the sum of the history's deltas, and the history has every transaction;
#   - COPY of 20,000 random text rows in and back out, compared byte for byte;
#   - the upgrade assertions against the connections postgres itself logged
#     (log_connections).
source "$(dirname "$0")/lib.sh"
it_init postgres
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PATH=$PGBIN:$PATH
it_need initdb postgres pg_isready psql pgbench setpriv sha256sum base64 timeout

# The server's user: postgres refuses to run as root.
AS=()
if [ "$(id -u)" = 0 ]; then
  PGU=shmshim-pg
  if ! id "$PGU" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PGU" ||
      { it_check "user $PGU created" 0; it_finish; }
  fi
  AS=(setpriv --reuid="$(id -u "$PGU")" --regid="$(id -g "$PGU")" --clear-groups)
  mkdir "$T/data" "$T/sock"
  chown "$PGU" "$T/data" "$T/sock"
else
  mkdir "$T/data" "$T/sock"
fi
chmod 700 "$T/data"
if ! "${AS[@]}" initdb -D "$T/data" -A trust -U postgres --no-sync >"$T/initdb.out" 2>&1; then
  it_check "initdb" 0 "$(tail -n 3 "$T/initdb.out")"
  it_finish
fi

# 20,000 rows of random text for COPY: "number<TAB>base64".
head -c 1500000 /dev/urandom | base64 -w 100 | head -n 20000 | awk '{ printf "%d\t%s\n", NR, $0 }' >"$T/rows"
ROWS_SHA=$(it_sha "$T/rows")

psql_() { it_run "$cs" "$IT_CLOG" timeout 60 psql -X -q -v ON_ERROR_STOP=1 "${PGAT[@]}" -U postgres "$@" postgres; }

feat_init() {
  it_run "$cs" "$IT_CLOG" timeout 120 pgbench -i -s 1 -q "${PGAT[@]}" -U postgres postgres >"$T/init.out" 2>&1
  local rc=$?
  it_check "$label: pgbench -i" "$([ $rc = 0 ] && grep -q '^done' "$T/init.out" && echo 1 || echo 0)" "exit $rc: $(tail -n 2 "$T/init.out" | tr '\n' ' ')"
}

feat_run() {
  it_run "$cs" "$IT_CLOG" timeout 120 pgbench -c 4 -j 2 -t 200 "${PGAT[@]}" -U postgres postgres >"$T/run.out" 2>&1
  local rc=$?
  it_eq "$label: pgbench run (exit $rc)" \
    "$(sed -n -e 's/^number of transactions actually processed: //p' -e 's/^number of failed transactions: \([0-9]*\).*/failed \1/p' "$T/run.out" | tr '\n' ' ')" \
    "800/800 failed 0 "
  it_eq "$label: balances match the history" "$(psql_ -Atc "select
      (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history),
      (select sum(tbalance) from pgbench_tellers) = (select sum(delta) from pgbench_history),
      (select sum(bbalance) from pgbench_branches) = (select sum(delta) from pgbench_history),
      (select count(*) from pgbench_history)")" "t|t|t|800"
}

feat_copy() {
  psql_ -c "drop table if exists rows; create table rows (i int primary key, t text)" &&
    psql_ -c "\\copy rows from '$T/rows'"
  it_eq "$label: COPY in and out, byte-identical" \
    "$(psql_ -Atc "copy (select i, t from rows order by i) to stdout" | it_sha_stdin)" "$ROWS_SHA"
}

for ss in 0 1; do
  port=$(it_port) || exit 1
  plog=$T/pg.$ss.out
  slog=$T/log/server.$ss.log
  it_start pgpid "$ss" "$slog" "${AS[@]}" postgres -D "$T/data" -p "$port" -k "$T/sock" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c shared_buffers=32MB -c max_connections=40 -c log_connections=on -c logging_collector=off \
    2>"$plog"
  if ! it_wait 30 pg_isready -q -h "$T/sock" -p "$port"; then
    it_check "server_shim=$ss: postgres started" 0 "$(tail -n 3 "$plog")"
    continue
  fi
  for tr in tcp unix; do
    if [ $tr = tcp ]; then PGAT=(-h 127.0.0.1 -p "$port") fam=tcp4; else PGAT=(-h "$T/sock" -p "$port") fam=unix; fi
    for cs in 0 1; do
      label="client_shim=$cs server_shim=$ss $tr"
      p0=$(it_size "$plog")
      it_cell_begin "$slog"
      it_run_features "$label" init run copy
      it_cell_end
      n=$(it_since "$plog" "$p0" | grep -c 'connection received:')
      it_cell_verdict "$label" "$cs" "$ss" "$fam" "$n"
    done
  done
  # Fast shutdown: the backends are told to exit, the postmaster waits for them.
  it_stop "$pgpid" INT 30
  it_eq "server_shim=$ss: postgres exit status" "$?" 0
done
it_finish

#!/bin/bash
# memcached (threaded, libevent; its worker threads run as nobody when started as
# root) with Debian's libmemcached clients and a small C client, unmodified, with
# and without the library on either end, over loopback TCP and over a unix socket
# (one memcached per transport: memcached listens on one or the other). In every
# cell:
#   - memccp/memccat of values from 0 B to 1 MiB, compared byte for byte;
#   - tests/progs/memc_client: 4 processes x 12 connections open at once, 4 rounds
#     of set then get of values from 0 B to 1 MiB, every byte checked;
#   - TCP: memcaslap (32 connections, 20,000 operations, every get verified);
#   - the upgrade assertions against memcached's own count (stats total_connections).
source "$(dirname "$0")/lib.sh"
it_init memcached
it_need memcached memccp memccat memcstat memcaslap sha256sum timeout
MC=$IT_BUILD/tests/progs/memc_client
[ -x "$MC" ] || { it_check "memc_client built" 0 "$MC missing (make tests)"; it_finish; }

SIZES="0 1 4096 262143 262145 1048576"
mkdir -m 755 "$T/v"
mkdir -m 1777 "$T/sock" # memcached creates its socket after dropping privileges
for s in $SIZES; do head -c "$s" /dev/urandom >"$T/v/val$s"; done
USER_OPT=()
[ "$(id -u)" = 0 ] && USER_OPT=(-u nobody)

# memcached's own count of connections; fails (for it_wait) until it answers.
total_conns() {
  local n
  n=$(timeout 20 memcstat --servers="$SERVER" | sed -n 's/^[[:space:]]*total_connections: *//p')
  [ -n "$n" ] || return 1
  echo "$n"
}

feat_memccp() {
  local s bad=0
  for s in $SIZES; do
    it_run "$cs" "$IT_CLOG" timeout 30 memccp --servers="$SERVER" "$T/v/val$s" || { bad=1; it_log "memccp of $s bytes failed"; }
    # memccat prints the value and a newline.
    it_run "$cs" "$IT_CLOG" timeout 30 memccat --servers="$SERVER" "val$s" >"$T/got"
    [ "$(head -c -1 "$T/got" | it_sha_stdin)" = "$(it_sha "$T/v/val$s")" ] &&
      [ "$(stat -c %s "$T/got")" = $((s + 1)) ] || { bad=1; it_log "$label: memccat of $s bytes: different bytes"; }
  done
  it_check "$label: memccp/memccat 0 B..1 MiB byte-identical" $((1 - bad))
}

feat_many() {
  local out
  out=$(it_run "$cs" "$IT_CLOG" timeout 120 "$MC" "$MCADDR" 4 12 4 1048576 "$IT_CELL" 2>&1)
  local rc=$?
  it_check "$label: memc_client 48 connections, 192 values" "$([ $rc = 0 ] && echo 1 || echo 0)" "$out"
}

feat_slap() {
  [ "$tr" = tcp ] || return 0
  it_run "$cs" "$IT_CLOG" timeout 120 memcaslap -s "$SERVER" -T 2 -c 32 -x 20000 -X 1000 -v 1.0 >"$T/slap.out" 2>&1
  local rc=$? gets fails
  gets=$(sed -n 's/^cmd_get: *//p' "$T/slap.out")
  fails=$(grep -E '^(verify_misses|verify_failed|get_misses): *[1-9]' "$T/slap.out")
  if [ $rc = 0 ] && [ "${gets:-0}" -gt 0 ] && [ -z "$fails" ]; then
    it_check "$label: memcaslap" 1
  else
    it_check "$label: memcaslap" 0 "exit $rc, cmd_get ${gets:-?}, $(echo "$fails" | tr '\n' ' ')"
    tail -n 5 "$T/slap.out" | sed 's/^/    /'
  fi
}

for ss in 0 1; do
  for tr in tcp unix; do
    slog=$T/log/server.$ss.$tr.log
    if [ $tr = tcp ]; then
      port=$(it_port) || exit 1
      it_start mpid "$ss" "$slog" memcached "${USER_OPT[@]}" -l 127.0.0.1 -p "$port" -U 0 -I 2m -m 256 -t 2 -c 1024
      SERVER=127.0.0.1:$port MCADDR=tcp:$port fam=tcp4
    else
      it_start mpid "$ss" "$slog" memcached "${USER_OPT[@]}" -s "$T/sock/mc.$ss" -a 0700 -I 2m -m 256 -t 2 -c 1024
      SERVER=$T/sock/mc.$ss MCADDR=unix:$T/sock/mc.$ss fam=unix
    fi
    if ! it_wait 20 total_conns; then
      it_check "server_shim=$ss $tr: memcached started" 0
      continue
    fi
    for cs in 0 1; do
      label="client_shim=$cs server_shim=$ss $tr"
      before=$(total_conns) || { it_check "$label: memcached answers" 0; continue; }
      it_cell_begin "$slog"
      it_run_features "$label" memccp many slap
      it_cell_end
      after=$(total_conns) || { it_check "$label: memcached answers" 0; continue; }
      it_cell_verdict "$label" "$cs" "$ss" "$fam" $((after - before - 1))
    done
    it_stop "$mpid" TERM 20
    rc=$?
    it_eq "server_shim=$ss $tr: memcached exit status" "$rc" 0
    [ "$ss" = 1 ] && it_stats_check "server_shim=$ss $tr: memcached" "$slog"
  done
done
it_finish

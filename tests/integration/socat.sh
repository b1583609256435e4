#!/bin/bash
# socat, unmodified, as an echo server and as its client, with and without the
# library on either end, over loopback TCP and a unix socket. Two servers:
#   fork    socat TCP-LISTEN:...,fork SYSTEM:cat: a forked socat per connection
#           relays between the connection and a cat over a socketpair; the
#           process that accepted (and its fork) uses the connection itself;
#   nofork  socat TCP-LISTEN:... EXEC:cat,nofork: the connection becomes cat's
#           standard input and output (dup2, exec), inetd-style; one connection
#           per server run.
# In every cell: 1 B to 4 MiB sent by `socat - TCP:...` (or UNIX-CONNECT), shut
# down for writing, echoed back and compared by sha256; the upgrade outcome of
# every connection socat accepted (its -d -d log) against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init socat
it_need socat cat sha256sum timeout

# The outcome the design wants with both ends shimmed (one end: always plain).
declare -A EXPECT=(
  [fork]=up      # the accepting socat (fork) relays through read/write itself
  [nofork]=plain # the connection is handed to cat's new image by exec
)
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=20
it_data $IT_SIZES

# Connections the server accepted so far (socat -d -d: one line each).
accepted() { it_count 'accepting connection from' "$T/server.out"; }

listen_addr() { # TR
  if [ "$1" = tcp ]; then echo "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr"; else echo "UNIX-LISTEN:$sock,unlink-early"; fi
}
client_addr() {
  if [ "$1" = tcp ]; then echo "TCP:127.0.0.1:$port"; else echo "UNIX-CONNECT:$sock"; fi
}
listening() {
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$sock"; fi
}

start_server() { # MODE
  rm -f "$sock"
  if [ "$1" = fork ]; then
    it_start spid "$ss" "$slog" socat -d -d "$(listen_addr "$tr"),fork" SYSTEM:cat 2>>"$T/server.out"
  else
    it_start spid "$ss" "$slog" socat -d -d "$(listen_addr "$tr")" EXEC:cat,nofork 2>>"$T/server.out"
  fi
  it_wait 10 listening || it_check "$label: socat listening" 0 "$(tail -n 3 "$T/server.out")"
}
# nofork: a new server for each transfer (the last one has exited: it served
# its one connection).
nofork_server() {
  [ -n "${spid:-}" ] && it_stop "$spid" TERM 5
  start_server nofork
}

run_cell() { # MODE
  local mode=$1 fam n0 n
  [ "$tr" = tcp ] && fam=tcp4 || fam=unix
  n0=$(accepted)
  it_cell_begin "$slog"
  spid=
  if [ "$mode" = fork ]; then
    start_server fork
    IT_ECHO_BEFORE=
  else
    IT_ECHO_BEFORE=nofork_server
  fi
  it_echo "$label" "$XFER_SECS" socat -t "$XFER_SECS" - "$(client_addr "$tr")"
  it_stop "$spid" TERM 5
  it_cell_end
  n=$(($(accepted) - n0))
  it_eq "$label: connections socat accepted" "$n" "$IT_ECHO_RUN"
  it_cell_expect "$label" "$cs" "$ss" "$fam" "$n" 0 "${EXPECT[$mode]}"
}

sock=$T/socat.sock
for mode in fork nofork; do
  for tr in tcp unix; do
    port=$(it_port) || exit 1
    for ss in 0 1; do
      slog=$T/log/server.$mode.$tr.$ss.log
      for cs in 0 1; do
        label="$mode client_shim=$cs server_shim=$ss $tr"
        t0=$(date +%s%N)
        run_cell "$mode"
        it_log "time $label: $((($(date +%s%N) - t0) / 1000000))ms"
      done
    done
  done
  # Once with the library's default settings (SHMSHIM_SHORT_MS unset).
  tr=tcp cs=1 ss=1 slog=$T/log/server.$mode.default.log label="$mode both shimmed tcp, default settings"
  port=$(it_port) || exit 1
  IT_DEFAULT_SETTINGS=1 run_cell "$mode"
done
it_finish

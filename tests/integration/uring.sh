#!/bin/bash
# An io_uring echo server (tests/progs/uring_echo.c: libc accept(), then every
# byte through IORING_OP_RECV / IORING_OP_SEND, never a libc read or write), with
# socat as the client; with and without the library on either end, over loopback
# TCP and a unix socket. In every cell: 1 B to 4 MiB sent, shut down for
# writing, echoed back and compared by sha256; the upgrade outcome of every
# connection the server accepted against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init uring
it_need socat sha256sum timeout ss
SRV=$IT_BUILD/tests/progs/uring_echo
[ -x "$SRV" ] || { it_check "$SRV built (make tests)" 0; it_finish; }

# Both ends shimmed: the library never sees the server's reads and writes (the
# kernel does them for io_uring), so the connection must stay plain. (One end:
# always plain.)
EXPECT=plain
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=20
it_data $IT_SIZES

echo_server_start() {
  rm -f "$sock"
  it_start spid "$ss" "$slog" "$SRV" "$([ "$tr" = tcp ] && echo "tcp:$port" || echo "unix:$sock")" 2>>"$T/server.out"
  it_wait 10 listening
}
listening() {
  kill -0 "$spid" 2>/dev/null || return 1
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$sock"; fi
}
echo_accepted() { it_count '^uring_echo: accepted' "$T/server.out"; }
echo_client_tcp() { ECHO_CLIENT_tcp=(socat -t "$XFER_SECS" - "TCP:127.0.0.1:$port"); }
echo_client_unix() { ECHO_CLIENT_unix=(socat -t "$XFER_SECS" - "UNIX-CONNECT:$sock"); }

it_echo_matrix "$EXPECT" tcp unix
grep -E '^uring_echo: (recv|send|io_uring)' "$T/server.out" | sort | uniq -c | head -5 | sed 's/^/    server: /'
it_finish

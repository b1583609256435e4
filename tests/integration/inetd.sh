#!/bin/bash
# An inetd-style server (tests/progs/inetd.c: accept, fork, dup2 the connection
# onto standard input and output, exec) running sed, a program that knows
# nothing of sockets, with socat as the client; with and without the library on
# either end, over loopback TCP and a unix socket. In every cell: 1 B to 4 MiB
# sent, shut down for writing, echoed back by sed and compared by sha256; the
# upgrade outcome of every connection inetd accepted against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init inetd
it_need socat sed sha256sum timeout ss
INETD=$IT_BUILD/tests/progs/inetd
[ -x "$INETD" ] || { it_check "$INETD built (make tests)" 0; it_finish; }

# Both ends shimmed: the connection is handed to sed's new image by exec, and the
# accepting process never uses it: it stays plain. (One end: always plain.)
EXPECT=plain
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=20
it_data $IT_SIZES

echo_server_start() {
  rm -f "$sock"
  # sed with an empty script: every byte out as it came in (no newline added).
  it_start spid "$ss" "$slog" "$INETD" "$([ "$tr" = tcp ] && echo "tcp:$port" || echo "unix:$sock")" sed -e '' 2>>"$T/server.out"
  it_wait 10 listening
}
listening() {
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$sock"; fi
}
echo_accepted() { it_count '^inetd: accepted' "$T/server.out"; }
echo_client_tcp() { ECHO_CLIENT_tcp=(socat -t "$XFER_SECS" - "TCP:127.0.0.1:$port"); }
echo_client_unix() { ECHO_CLIENT_unix=(socat -t "$XFER_SECS" - "UNIX-CONNECT:$sock"); }

it_echo_matrix "$EXPECT" tcp unix
it_finish

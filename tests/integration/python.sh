#!/bin/bash
# A Python asyncio echo server (asyncio.start_server / start_unix_server: streams
# over the selector event loop) and an asyncio client (open_connection: write
# everything, write_eof, read to the end), both written here in a few lines of
# Python and run by the system's interpreter; with and without the library on
# either end, over loopback TCP and a unix socket. In every cell: 1 B to 4 MiB
# echoed and compared by sha256; the upgrade outcome of every connection the
# server accepted against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init python
it_need python3 sha256sum timeout ss

# Both ends shimmed: the server's event loop uses the connection itself (recv,
# send, epoll): upgraded. (One end: always plain.)
EXPECT=up
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=20
it_data $IT_SIZES

cat >"$T/server.py" <<'PY'
import asyncio, sys

accepted = 0

async def echo(reader, writer):
    global accepted
    accepted += 1
    print("python: accepted", accepted, file=sys.stderr, flush=True)
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()

async def main(where):
    if where.startswith("tcp:"):
        server = await asyncio.start_server(echo, "127.0.0.1", int(where[4:]))
    else:
        server = await asyncio.start_unix_server(echo, where[5:])
    print("python: listening", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main(sys.argv[1]))
PY
cat >"$T/client.py" <<'PY'
import asyncio, sys

async def main(where):
    if where.startswith("tcp:"):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(where[4:]))
    else:
        reader, writer = await asyncio.open_unix_connection(where[5:])
    data = sys.stdin.buffer.read()
    out = sys.stdout.buffer

    async def send():
        for i in range(0, len(data), 65536):
            writer.write(data[i:i + 65536])
            await writer.drain()
        writer.write_eof()

    async def receive():
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            out.write(chunk)
        out.flush()

    await asyncio.gather(send(), receive())
    writer.close()
    await writer.wait_closed()

asyncio.run(main(sys.argv[1]))
PY

echo_server_start() {
  rm -f "$sock"
  it_start spid "$ss" "$slog" python3 "$T/server.py" "$([ "$tr" = tcp ] && echo "tcp:$port" || echo "unix:$sock")" 2>>"$T/server.out"
  it_wait 20 listening
}
listening() {
  kill -0 "$spid" 2>/dev/null || return 1
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$sock"; fi
}
echo_accepted() { it_count '^python: accepted' "$T/server.out"; }
echo_client_tcp() { ECHO_CLIENT_tcp=(python3 "$T/client.py" "tcp:$port"); }
echo_client_unix() { ECHO_CLIENT_unix=(python3 "$T/client.py" "unix:$sock"); }

it_echo_matrix "$EXPECT" tcp unix
grep -E 'Error|Traceback' "$T/server.out" "$T/client.err" 2>/dev/null | sort | uniq -c | head -5 | sed 's/^/    /'
it_finish

#!/bin/bash
# Node.js (libuv: epoll, accept4, read, writev) as an HTTP server and as its
# client, both written here in a few lines of JavaScript on node's own http
# module; with and without the library on either end, over loopback TCP and a
# unix socket. In every cell:
#   - POST of 1 B to 4 MiB to /echo, streamed back by the server as it arrives
#     (request piped into the response), the answer compared by sha256;
#   - GET of the same files (fs stream piped into the response), by sha256;
#   - the upgrade outcome of every connection the server accepted (its
#     'connection' events) against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init node
it_need node sha256sum timeout ss

# Both ends shimmed: node's event loop uses the connection itself: upgraded.
# (One end: always plain.)
EXPECT=up
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=20
it_data $IT_SIZES

cat >"$T/server.js" <<'JS'
const http = require('http');
const fs = require('fs');
const [where, dataDir] = process.argv.slice(2);
let accepted = 0;
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/echo') {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    req.pipe(res);
  } else if (req.method === 'GET' && /^\/data\/[0-9]+$/.test(req.url)) {
    const f = dataDir + '/' + req.url.slice(6);
    res.writeHead(200, { 'Content-Length': fs.statSync(f).size });
    fs.createReadStream(f).pipe(res);
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.on('connection', () => console.error('node: accepted ' + (++accepted)));
server.on('clientError', (e) => console.error('node: client error: ' + e.message));
const ready = () => console.error('node: listening');
if (where.startsWith('tcp:')) server.listen(Number(where.slice(4)), '127.0.0.1', ready);
else server.listen(where.slice(5), ready);
JS
cat >"$T/client.js" <<'JS'
// node client.js tcp:PORT|unix:PATH METHOD PATH: the request's body is standard
// input (POST), the answer's body goes to standard output; exit 1 unless 200.
const http = require('http');
const [where, method, path] = process.argv.slice(2);
const opts = { method, path, agent: false };
if (where.startsWith('tcp:')) Object.assign(opts, { host: '127.0.0.1', port: Number(where.slice(4)) });
else opts.socketPath = where.slice(5);
const req = http.request(opts, (res) => {
  if (res.statusCode !== 200) {
    console.error('client: status ' + res.statusCode);
    process.exitCode = 1;
  }
  res.pipe(process.stdout);
  res.on('error', (e) => { console.error('client: ' + e.message); process.exit(1); });
});
req.on('error', (e) => { console.error('client: ' + e.message); process.exit(1); });
if (method === 'POST') process.stdin.pipe(req);
else req.end();
JS

echo_server_start() {
  rm -f "$sock"
  it_start spid "$ss" "$slog" node "$T/server.js" "$([ "$tr" = tcp ] && echo "tcp:$port" || echo "unix:$sock")" "$T/data" 2>>"$T/server.out"
  it_wait 20 listening
}
listening() {
  kill -0 "$spid" 2>/dev/null || return 1
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$sock"; fi
}
echo_accepted() { it_count '^node: accepted' "$T/server.out"; }
echo_client_tcp() { ECHO_CLIENT_tcp=(node "$T/client.js" "tcp:$port" POST /echo); }
echo_client_unix() { ECHO_CLIENT_unix=(node "$T/client.js" "unix:$sock" POST /echo); }

# In each cell after the echoes: GET of every size (one connection each).
node_get() {
  local s rc where
  [ "$tr" = tcp ] && where=tcp:$port || where=unix:$sock
  for s in $IT_SIZES; do
    rm -f "$T/got"
    IT_ECHO_RUN=$((IT_ECHO_RUN + 1))
    it_run "$cs" "$IT_CLOG" timeout -k 5 "$XFER_SECS" node "$T/client.js" "$where" GET "/data/$s" >"$T/got" 2>"$T/xfer.err"
    rc=$?
    it_xfer "$label: GET of $s bytes" "$rc" "$s" "$T/got" "$XFER_SECS" "$T/xfer.err"
    cat "$T/xfer.err" >>"$T/client.err"
    { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && break
  done
}
ECHO_EXTRA=node_get
it_echo_matrix "$EXPECT" tcp unix
grep -E 'error|Error' "$T/server.out" "$T/client.err" 2>/dev/null | sort | uniq -c | head -5 | sed 's/^/    /'
it_finish

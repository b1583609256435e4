#!/bin/bash
# nginx with curl and wrk, unmodified, with and without the library on either end,
# over loopback TCP and over a unix socket. The front nginx (master + 2 workers,
# running as nobody when started as root, as nginx does by default) serves static
# files and proxies /up/ over a unix socket to a second nginx (always shimmed) that
# stores PUT bodies (WebDAV) and serves them back. In every cell:
#   - files of 0 B, 1 KiB, 64 KiB and 10 MiB, with sendfile on and off, over one
#     keep-alive connection and over one connection per request: sha256 of every
#     body;
#   - HTTP/1.1 chunked uploads (1 KiB, 64 KiB, 10 MiB) through the proxy: the stored
#     file and the body read back through the proxy, by sha256;
#   - load: wrk for 2 s (TCP; wrk has no unix sockets) or 64 parallel curls (unix),
#     no error and no non-2xx answer;
#   - `nginx -s reload` while 4 clients fetch and check files in a loop: every
#     fetch complete and intact, the workers replaced by new ones;
#   - the upgrade assertions against the connections nginx itself logged ($connection
#     in the access logs), for curl/wrk <-> front and for front <-> upstream.
# The cells run with the caller's settings (make test: SHMSHIM_SHORT_MS=0), then
# the front and its clients once more with the library's defaults.
source "$(dirname "$0")/lib.sh"
it_init nginx
it_need nginx curl wrk sha256sum timeout xargs

USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user nobody nogroup;"
mkdir -p "$T/www" && chmod 755 "$T/www"
mkdir -m 1777 "$T/store" "$T/tmp"
declare -A SHA
for f in 0:0 1k:1024 64k:65536 10m:10485760; do
  head -c "${f#*:}" /dev/urandom >"$T/www/${f%:*}"
  SHA[${f%:*}]=$(it_sha "$T/www/${f%:*}")
done
chmod 644 "$T"/www/*
FILES="0 1k 64k 10m"

# nginx.conf for one instance. $1: name; the rest: the http { } body.
conf() {
  local name=$1 body=$2
  mkdir -m 1777 -p "$T/tmp/$name"
  cat >"$T/$name.conf" <<EOF
worker_processes ${WORKERS:-2};
daemon off;
$USER_LINE
pid $T/$name.pid;
error_log $T/$name.err info;
events { worker_connections 512; }
http {
  log_format conn '\$connection \$status \$request_length \$body_bytes_sent "\$request"';
  access_log $T/log/$name.access conn;
  client_body_temp_path $T/tmp/$name/body;
  proxy_temp_path $T/tmp/$name/proxy;
  fastcgi_temp_path $T/tmp/$name/fcgi;
  uwsgi_temp_path $T/tmp/$name/uwsgi;
  scgi_temp_path $T/tmp/$name/scgi;
  keepalive_requests 10000;
  $body
}
EOF
}

# The upstream: a second nginx, always shimmed, storing PUT bodies.
WORKERS=1 conf up "server {
    listen unix:$T/up.sock;
    root $T/store;
    location = /status { stub_status; }
    location / { dav_methods PUT; create_full_put_path on; client_max_body_size 64m; }
  }"
ulog=$T/log/up.shim.log
it_start upid 1 "$ulog" nginx -e "$T/up.err" -p "$T" -c "$T/up.conf"
it_wait 20 test -S "$T/up.sock" || { it_check "upstream nginx started" 0 "$(tail -n 3 "$T/up.err")"; it_finish; }

# Distinct connections in an access-log excerpt (those that made a request).
conns() { awk '{ print $1 }' | sort -u | grep -c .; }
# Connections nginx accepted so far (stub_status), asked by a plain curl: that
# request's own connection is counted too.
accepts() { curl -s "$@" | awk 'p { print $1; exit } /accepts/ { p = 1 }'; }

fetch() { # extra curl options...
  it_run "$cs" "$IT_CLOG" timeout 60 curl -s "${CURL_AT[@]}" "$@"
}

feat_static() {
  local mode f loc args=() bad=0 n=0 line
  for mode in keepalive close; do
    args=()
    for f in $FILES; do
      for loc in sf nosf; do
        args+=(-o "$T/got.$f.$loc" "$BASE/$loc/$f")
      done
    done
    [ $mode = close ] && args=(-H "Connection: close" "${args[@]}")
    fetch -w '%{http_code} %{num_connects}\n' "${args[@]}" >"$T/static.$mode.out"
    for f in $FILES; do
      for loc in sf nosf; do
        [ "$(it_sha "$T/got.$f.$loc")" = "${SHA[$f]}" ] || { bad=1; it_log "$label: $mode /$loc/$f: different bytes"; }
        rm -f "$T/got.$f.$loc"
      done
    done
    # keep-alive: one connection for all 8 requests; close: one per request.
    n=$(awk '{ c += $2 } END { print c }' "$T/static.$mode.out")
    line=$(awk '{ print $1 }' "$T/static.$mode.out" | sort -u | tr '\n' ' ')
    it_eq "$label: static $mode status" "$line" "200 "
    it_eq "$label: static $mode connections" "$n" "$([ $mode = close ] && echo 8 || echo 1)"
  done
  it_check "$label: static files (sendfile on/off, keep-alive or not) byte-identical" $((1 - bad))
}

feat_upload() {
  local f code
  for f in 1k 64k 10m; do
    code=$(fetch -T "$T/www/$f" -H 'Transfer-Encoding: chunked' -w '%{http_code}' -o /dev/null "$BASE/up/c$IT_CELL/$f")
    it_eq "$label: chunked PUT $f via the proxy" "$code" 201
    it_eq "$label: stored $f" "$(it_sha "$T/store/c$IT_CELL/$f" 2>/dev/null)" "${SHA[$f]}"
    it_eq "$label: $f read back via the proxy" "$(fetch "$BASE/up/c$IT_CELL/$f" | it_sha_stdin)" "${SHA[$f]}"
  done
}

feat_load() {
  if [ "$tr" = tcp ]; then
    it_run "$cs" "$IT_CLOG" timeout 30 wrk -t 2 -c 16 -d 2s --timeout 10s "$BASE/sf/64k" >"$T/wrk.out" 2>&1
    local rc=$? reqs
    reqs=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$T/wrk.out")
    if [ $rc = 0 ] && [ "${reqs:-0}" -gt 0 ] && ! grep -q -e 'Socket errors' -e 'Non-2xx' "$T/wrk.out"; then
      it_check "$label: wrk" 1
    else
      it_check "$label: wrk" 0 "exit $rc: $(grep -e 'requests in' -e 'Socket errors' -e 'Non-2xx' "$T/wrk.out" | tr '\n' ' ')"
    fi
  else
    seq 64 | it_run "$cs" "$IT_CLOG" xargs -P 8 -I{} timeout 30 curl -s "${CURL_AT[@]}" -o /dev/null \
      -w '%{http_code}\n' "$BASE/sf/64k?{}" >"$T/par.out"
    it_eq "$label: 64 parallel curls" "$(sort "$T/par.out" | uniq -c | awk '{ print $1 "x" $2 }')" "64x200"
  fi
}

# Four clients fetch and check the 64 KiB file in a loop, one connection per fetch,
# while the master reloads its configuration (new workers; the old ones finish
# what they are doing and exit).
feat_reload() {
  local workers_before workers_after i pids=()
  workers_before=$(ps -o pid= --ppid "$fpid" | sort | tr '\n' ' ')
  for i in 1 2 3 4; do
    (
      ok=0
      for j in $(seq 10); do
        got=$(fetch -H 'Connection: close' "$BASE/nosf/64k" | it_sha_stdin)
        [ "$got" = "${SHA[64k]}" ] && ok=$((ok + 1))
      done
      echo "$ok" >"$T/reload.$i"
    ) &
    pids+=($!)
  done
  sleep 0.3
  nginx -e "$T/front.err" -p "$T" -c "$T/front.conf" -s reload
  wait "${pids[@]}"
  it_eq "$label: fetches during reload intact" "$(cat "$T"/reload.? | tr '\n' ' ')" "10 10 10 10 "
  it_wait 20 workers_changed "$workers_before"
  workers_after=$(ps -o pid= --ppid "$fpid" | sort | tr '\n' ' ')
  it_check "$label: reload replaced the workers" "$([ -n "$workers_after" ] && [ "$workers_after" != "$workers_before" ] && echo 1 || echo 0)" \
    "before: $workers_before after: $workers_after"
}
workers_changed() { # the old generation gone, two new workers up
  local now
  now=$(ps -o pid= --ppid "$fpid" | sort | tr '\n' ' ')
  [ "$(echo "$now" | wc -w)" = 2 ] && [ -z "$(comm -12 <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$now" | grep .))" ]
}

# One front (shimmed if $ss), its cells (clients shimmed or not, each in $CLIENTS,
# over TCP and the unix socket), its exit.
run_front() {
  local tag=$1
  port=$(it_port) || exit 1
  rm -f "$T/front.sock"
  conf front "server {
    listen 127.0.0.1:$port;
    listen unix:$T/front.sock;
    root $T/www;
    location = /status { stub_status; }
    location /sf/ { alias $T/www/; sendfile on; }
    location /nosf/ { alias $T/www/; sendfile off; }
    location /up/ {
      client_max_body_size 64m;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_send_timeout 20s;
      proxy_read_timeout 20s;
      proxy_pass http://unix:$T/up.sock:/;
    }
  }"
  flog=$T/log/front.$tag.shim.log
  it_start fpid "$ss" "$flog" nginx -e "$T/front.err" -p "$T" -c "$T/front.conf"
  if ! it_wait 20 curl -sf -o /dev/null "http://127.0.0.1:$port/sf/0"; then
    it_check "server_shim=$ss$SUFFIX: nginx started" 0 "$(tail -n 3 "$T/front.err")"
    it_stop "$fpid" QUIT 10
    return
  fi
  for tr in tcp unix; do
    if [ $tr = tcp ]; then
      CURL_AT=() BASE=http://127.0.0.1:$port fam=tcp4
    else
      CURL_AT=(--unix-socket "$T/front.sock") BASE=http://localhost fam=unix
    fi
    for cs in $CLIENTS; do
      label="client_shim=$cs server_shim=$ss $tr$SUFFIX"
      acc0=$(accepts "${CURL_AT[@]}" "$BASE/status") uacc0=$(accepts --unix-socket "$T/up.sock" http://localhost/status)
      a0=$(it_size "$T/log/front.access") u0=$(it_size "$T/log/up.access") ul0=$(it_size "$ulog")
      it_cell_begin "$flog"
      it_run_features "$label" static upload load reload
      it_cell_end
      it_since "$ulog" "$ul0" >"$T/log/cell$IT_CELL.up.log"
      acc1=$(accepts "${CURL_AT[@]}" "$BASE/status") uacc1=$(accepts --unix-socket "$T/up.sock" http://localhost/status)
      # Connections that never carried a request (wrk closes some it has just
      # opened when its time is up) never learn whether they were upgraded.
      n=$((acc1 - acc0 - 1))
      used=$(it_since "$T/log/front.access" "$a0" | grep -v ' "GET /status ' | conns)
      it_cell_verdict "$label" "$cs" "$ss" "$fam" "$n" $((n - used))
      # The front's workers are the upstream's clients.
      nu=$((uacc1 - uacc0 - 1))
      it_verdict "$label, front -> upstream" "$ss" 1 unix "$nu" 0 "$T/log/cell$IT_CELL.up.log" "$IT_SLOG"
    done
  done
  it_stop "$fpid" QUIT 30
  it_eq "server_shim=$ss$SUFFIX: nginx exit status" "$?" 0
  # Workers of both generations exited cleanly (the master forks them with no
  # connection of its own, so their counters add up).
  [ "$ss" = 1 ] && it_stats_check "server_shim=$ss$SUFFIX: nginx workers" "$flog"
}

CLIENTS="0 1" SUFFIX=""
for ss in 0 1; do run_front "$ss"; done
# The front and its clients once more with the library's defaults
# (SHMSHIM_SHORT_MS unset): curl's one-request connections in bursts, wrk's
# long ones, the front's upstream connections; every byte and connection as above.
IT_DEFAULT_SETTINGS=1 IT_DEFAULT_LOG=debug CLIENTS=1 SUFFIX=", default settings" ss=1
run_front default
IT_DEFAULT_SETTINGS=0
it_stop "$upid" QUIT 30
it_eq "upstream nginx exit status" "$?" 0
it_stats_check "upstream nginx" "$ulog"
it_finish

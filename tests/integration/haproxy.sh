#!/bin/bash
# haproxy (HTTP mode) in front of nginx, with curl as the client; each of the
# three shimmed or not, over loopback TCP and unix sockets (a cell's transport
# is used on both links: curl -> haproxy and haproxy -> nginx). In every cell:
#   - GET of 1 B and 1 MiB files, by sha256;
#   - PUT of 1 B and 1 MiB bodies (nginx stores them, WebDAV), the stored file
#     and the body read back through haproxy compared by sha256;
#   - the upgrade outcome of both links against EXPECT below, from the
#     connections each server counted (haproxy's CumConns, nginx's
#     stub_status accepts).
source "$(dirname "$0")/lib.sh"
it_init haproxy
it_need haproxy nginx curl socat sha256sum timeout ss

# Both ends of a link shimmed: haproxy and nginx use their connections
# themselves: upgraded (curl <-> haproxy and haproxy <-> nginx alike). One end:
# always plain.
declare -A EXPECT=([client-haproxy]=up [haproxy-nginx]=up)
IT_SIZES="1 1048576"
XFER_SECS=20
it_data $IT_SIZES

USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user nobody nogroup;"
mkdir -m 1777 -p "$T/store" "$T/tmp/ng"
nport=$(it_port) || exit 1
cat >"$T/ng.conf" <<EOF2
worker_processes 1;
daemon off;
$USER_LINE
pid $T/ng.pid;
error_log $T/ng.err info;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $T/tmp/ng/body;
  proxy_temp_path $T/tmp/ng/proxy;
  fastcgi_temp_path $T/tmp/ng/fcgi;
  uwsgi_temp_path $T/tmp/ng/uwsgi;
  scgi_temp_path $T/tmp/ng/scgi;
  keepalive_requests 10000;
  server {
    listen 127.0.0.1:$nport;
    listen unix:$T/ng.sock;
    location = /status { stub_status; }
    location /f/ { alias $T/data/; }
    location /store/ { alias $T/store/; dav_methods PUT; create_full_put_path on; client_max_body_size 64m; }
  }
}
EOF2
hport=$(it_port) || exit 1
cat >"$T/hap.cfg" <<EOF2
global
  maxconn 200
  stats socket $T/hap.stat mode 600 level admin
defaults
  mode http
  timeout connect 5s
  timeout client 20s
  timeout server 20s
frontend ft
  bind 127.0.0.1:$hport
  default_backend bt
frontend fu
  bind unix@$T/hap.sock
  default_backend bu
backend bt
  server n 127.0.0.1:$nport
backend bu
  server n unix@$T/ng.sock
EOF2
check=$(haproxy -c -f "$T/hap.cfg" 2>&1) || { it_check "haproxy -c" 0 "$check"; it_finish; }

# Connections each server accepted so far, asked by plain clients (their own
# connection is counted too).
hap_conns() { echo "show info" | timeout 10 socat - "UNIX-CONNECT:$T/hap.stat" | sed -n 's/^CumConns: //p'; }
ng_conns() { timeout 10 curl -s "http://127.0.0.1:$nport/status" | awk 'p { print $1; exit } /accepts/ { p = 1 }'; }
listening() { ss -Hltn "sport = :$1" | grep -q .; }

fetch() { # OUT URL-PATH [curl options]: one request, one connection
  local out=$1 path=$2
  shift 2
  it_run "$cs" "$IT_CLOG" timeout -k 5 "$XFER_SECS" curl -s "${CURL_AT[@]}" -o "$out" -w '%{http_code}' "$@" "$BASE$path" 2>"$T/xfer.err"
}
check_code() { # RC CODE WANT: the transfer's status for it_xfer
  if [ "$1" != 0 ]; then echo "$1"; elif [ "$2" != "$3" ]; then echo "HTTP $2"; else echo 0; fi
}

run_cell() {
  local s code rc h0 h1 g0 g1 l0 t0 fam
  [ "$tr" = tcp ] && fam=tcp4 || fam=unix
  t0=$(date +%s%N)
  if [ "$tr" = tcp ]; then CURL_AT=() BASE=http://127.0.0.1:$hport; else CURL_AT=(--unix-socket "$T/hap.sock") BASE=http://localhost; fi
  h0=$(hap_conns) g0=$(ng_conns) l0=$(it_size "$nlog")
  it_cell_begin "$hlog"
  for s in $IT_SIZES; do
    rm -f "$T/got"
    code=$(fetch "$T/got" "/f/$s")
    rc=$(check_code $? "$code" 200)
    it_xfer "$label: GET of $s bytes" "$rc" "$s" "$T/got" "$XFER_SECS" "$T/xfer.err"
    code=$(fetch /dev/null "/store/c$IT_CELL/$s" -T "$T/data/$s")
    rc=$(check_code $? "$code" 201)
    it_xfer "$label: PUT of $s bytes, stored" "$rc" "$s" "$T/store/c$IT_CELL/$s" "$XFER_SECS" "$T/xfer.err"
    rm -f "$T/got"
    code=$(fetch "$T/got" "/store/c$IT_CELL/$s")
    rc=$(check_code $? "$code" 200)
    it_xfer "$label: PUT of $s bytes, read back" "$rc" "$s" "$T/got" "$XFER_SECS" "$T/xfer.err"
  done
  it_cell_end
  it_since "$nlog" "$l0" >"$T/log/cell$IT_CELL.nginx.log"
  h1=$(hap_conns) g1=$(ng_conns)
  # curl -> haproxy: haproxy's log is the server's, curl's the client's.
  it_cell_expect "$label, client -> haproxy" "$cs" "$hs" "$fam" $((h1 - h0 - 1)) 0 "${EXPECT[client-haproxy]}"
  # haproxy -> nginx: nginx's log is the server's, haproxy's the client's.
  IT_SLOG=$T/log/cell$IT_CELL.nginx.log IT_CLOG=$T/log/cell$IT_CELL.server.log \
    it_cell_expect "$label, haproxy -> nginx" "$hs" "$ns" "$fam" $((g1 - g0 - 1)) 0 "${EXPECT[haproxy-nginx]}"
  it_log "time $label: $((($(date +%s%N) - t0) / 1000000))ms"
}

start_nginx() {
  rm -f "$T/ng.sock"
  it_start ngpid "$ns" "$nlog" nginx -e "$T/ng.err" -p "$T" -c "$T/ng.conf"
  it_wait 20 listening "$nport" || { it_check "nginx_shim=$ns: nginx started" 0 "$(tail -n 3 "$T/ng.err")"; it_stop "$ngpid" QUIT 5; return 1; }
}
start_haproxy() {
  rm -f "$T/hap.sock" "$T/hap.stat"
  it_start hpid "$hs" "$hlog" haproxy -db -f "$T/hap.cfg" 2>>"$T/hap.out"
  it_wait 20 listening "$hport" && it_wait 10 test -S "$T/hap.sock" ||
    { it_check "haproxy_shim=$hs: haproxy started" 0 "$(tail -n 3 "$T/hap.out")"; it_stop "$hpid" TERM 5; return 1; }
}

for ns in 0 1; do
  nlog=$T/log/nginx.$ns.log
  start_nginx || continue
  for hs in 0 1; do
    hlog=$T/log/haproxy.$ns.$hs.log
    start_haproxy || continue
    for tr in tcp unix; do
      for cs in 0 1; do
        label="client_shim=$cs haproxy_shim=$hs nginx_shim=$ns $tr"
        run_cell
      done
    done
    it_stop "$hpid" TERM 10
  done
  it_stop "$ngpid" QUIT 20
done
# Once with the library's default settings (SHMSHIM_SHORT_MS unset).
IT_DEFAULT_SETTINGS=1 ns=1 hs=1 cs=1 tr=tcp nlog=$T/log/nginx.default.log hlog=$T/log/haproxy.default.log
label="all shimmed tcp, default settings"
if start_nginx; then
  start_haproxy && { run_cell; it_stop "$hpid" TERM 10; }
  it_stop "$ngpid" QUIT 20
fi
IT_DEFAULT_SETTINGS=0
grep -hE '\[(error|crit|alert|emerg)\]|ALERT|WARNING' "$T/ng.err" "$T/hap.out" 2>/dev/null | sed 's/^[0-9/: ]*//; s/\[[0-9]*\]//' |
  sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
it_finish

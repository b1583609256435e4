#!/bin/bash
# php-fpm behind nginx: FastCGI over a unix socket and over loopback TCP, with
# and without the library on either end of that link (nginx's workers are the
# FastCGI clients, php-fpm's workers the servers; the HTTP client, curl, is
# always plain). Both run as nobody when started as root, as they do by
# default. In every cell:
#   - POST of 1 B to 4 MiB to a PHP script that copies php://input to its
#     output, the answer compared by sha256;
#   - GET of the same files through a PHP script that readfile()s them;
#   - the upgrade outcome of every FastCGI connection (nginx opens one per
#     request; php-fpm's access log counts them) against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init php
FPM=$(command -v php-fpm || ls /usr/sbin/php-fpm* 2>/dev/null | head -n 1)
[ -n "$FPM" ] || { it_check "php-fpm installed (make deps)" 0; it_finish; }
it_need nginx curl sha256sum timeout ss

# Both ends shimmed: nginx's workers and php-fpm's workers use the connection
# themselves: upgraded. (One end: always plain.)
EXPECT=up
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=30
it_data $IT_SIZES

USER_NGINX="" USER_FPM=""
if [ "$(id -u)" = 0 ]; then
  USER_NGINX="user nobody nogroup;"
  USER_FPM="user = nobody
group = nogroup"
fi
mkdir -p "$T/www" && chmod 755 "$T/www"
mkdir -m 1777 -p "$T/tmp"
cat >"$T/www/echo.php" <<'PHP'
<?php
header('Content-Type: application/octet-stream');
stream_copy_to_stream(fopen('php://input', 'rb'), fopen('php://output', 'wb'));
PHP
cat >"$T/www/get.php" <<'PHP'
<?php
$s = $_GET['s'] ?? '';
if (!preg_match('/^[0-9]+$/', $s)) { http_response_code(400); exit; }
header('Content-Type: application/octet-stream');
readfile(getenv('DATA_DIR') . '/' . $s);
PHP
chmod 644 "$T"/www/*.php

fport=$(it_port) || exit 1
cat >"$T/php-fpm.conf" <<EOF2
[global]
pid = $T/php-fpm.pid
error_log = $T/php-fpm.err
daemonize = no
[www]
$USER_FPM
listen = $T/php.sock
listen.mode = 0666
pm = static
pm.max_children = 2
access.log = $T/log/php.access
access.format = "%p %m %r %s %l"
clear_env = yes
env[DATA_DIR] = $T/data
php_admin_value[post_max_size] = 64M
php_admin_value[memory_limit] = 256M
php_admin_value[output_buffering] = 0
[tcp]
$USER_FPM
listen = 127.0.0.1:$fport
pm = static
pm.max_children = 2
access.log = $T/log/php.access
access.format = "%p %m %r %s %l"
clear_env = yes
env[DATA_DIR] = $T/data
php_admin_value[post_max_size] = 64M
php_admin_value[memory_limit] = 256M
php_admin_value[output_buffering] = 0
EOF2

port=$(it_port) || exit 1
mkdir -m 1777 -p "$T/tmp/front"
cat >"$T/front.conf" <<EOF2
worker_processes 2;
daemon off;
$USER_NGINX
pid $T/front.pid;
error_log $T/front.err info;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $T/tmp/front/body;
  proxy_temp_path $T/tmp/front/proxy;
  fastcgi_temp_path $T/tmp/front/fcgi;
  uwsgi_temp_path $T/tmp/front/uwsgi;
  scgi_temp_path $T/tmp/front/scgi;
  client_max_body_size 64m;
  server {
    listen 127.0.0.1:$port;
    location ~ ^/(unix|tcp)/(echo|get)\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $T/www/\$2.php;
      fastcgi_read_timeout 20s;
      fastcgi_send_timeout 20s;
      fastcgi_pass \$upstream;
    }
    set \$upstream unix:$T/php.sock;
    if (\$uri ~ ^/tcp/) { set \$upstream 127.0.0.1:$fport; }
  }
}
EOF2

fpm_requests() { it_count '.' "$T/log/php.access"; }
listening() { # PORT
  kill -0 "$spid" 2>/dev/null && ss -Hltn "sport = :$1" | grep -q .
}

run_cell() { # TR
  local tr=$1 fam s rc n0 n t0 conns=0 code
  [ "$tr" = tcp ] && fam=tcp4 || fam=unix
  t0=$(date +%s%N)
  n0=$(fpm_requests)
  it_cell_begin "$flog"
  IT_CLOG=$nlog.cell$IT_CELL
  local c0
  c0=$(it_size "$nlog")
  for s in $IT_SIZES; do
    rm -f "$T/got"
    conns=$((conns + 1))
    code=$(timeout -k 5 "$XFER_SECS" curl -s -o "$T/got" -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
      --data-binary @"$T/data/$s" "http://127.0.0.1:$port/$tr/echo" 2>"$T/xfer.err")
    rc=$?
    [ $rc = 0 ] && [ "$code" != 200 ] && rc="HTTP $code"
    it_xfer "$label: POST of $s bytes echoed" "$rc" "$s" "$T/got" "$XFER_SECS" "$T/xfer.err"
    { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && break
  done
  for s in $IT_SIZES; do
    rm -f "$T/got"
    conns=$((conns + 1))
    code=$(timeout -k 5 "$XFER_SECS" curl -s -o "$T/got" -w '%{http_code}' "http://127.0.0.1:$port/$tr/get?s=$s" 2>"$T/xfer.err")
    rc=$?
    [ $rc = 0 ] && [ "$code" != 200 ] && rc="HTTP $code"
    it_xfer "$label: GET of $s bytes" "$rc" "$s" "$T/got" "$XFER_SECS" "$T/xfer.err"
    { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && break
  done
  it_cell_end
  # nginx's log for this cell: its worker is the FastCGI client.
  it_since "$nlog" "$c0" >"$IT_CLOG"
  n=$(($(fpm_requests) - n0))
  it_eq "$label: FastCGI requests php-fpm served" "$n" "$conns"
  it_cell_expect "$label" "$cs" "$ss" "$fam" "$n" 0 "$EXPECT"
  it_log "time $label: $((($(date +%s%N) - t0) / 1000000))ms"
}

start_fpm() {
  rm -f "$T/php.sock"
  it_start fpmpid "$ss" "$flog" "$FPM" -F -y "$T/php-fpm.conf" -p "$T" 2>>"$T/fpm.out"
  spid=$fpmpid
  it_wait 20 test -S "$T/php.sock" && it_wait 20 listening "$fport" ||
    { it_check "server_shim=$ss: php-fpm started" 0 "$(tail -n 3 "$T/php-fpm.err" "$T/fpm.out" 2>/dev/null)"; it_stop "$fpmpid" TERM 5; return 1; }
}
start_nginx() {
  it_start ngpid "$cs" "$nlog" nginx -e "$T/front.err" -p "$T" -c "$T/front.conf"
  spid=$ngpid
  it_wait 20 listening "$port" ||
    { it_check "client_shim=$cs: nginx started" 0 "$(tail -n 3 "$T/front.err")"; it_stop "$ngpid" QUIT 5; return 1; }
}

for ss in 0 1; do
  flog=$T/log/fpm.$ss.log
  start_fpm || continue
  for cs in 0 1; do
    nlog=$T/log/nginx.$ss.$cs.log
    start_nginx || continue
    for tr in tcp unix; do
      label="client_shim=$cs server_shim=$ss $tr"
      run_cell "$tr"
    done
    it_stop "$ngpid" QUIT 20
  done
  it_stop "$fpmpid" QUIT 20
done
# Once with the library's default settings (SHMSHIM_SHORT_MS unset).
IT_DEFAULT_SETTINGS=1 ss=1 cs=1 flog=$T/log/fpm.default.log nlog=$T/log/nginx.default.log
label="both shimmed tcp, default settings"
if start_fpm; then
  start_nginx && { run_cell tcp; it_stop "$ngpid" QUIT 20; }
  it_stop "$fpmpid" QUIT 20
fi
IT_DEFAULT_SETTINGS=0
grep -hE '\[(error|crit|alert|emerg)\]|ERROR|WARNING' "$T/front.err" "$T/php-fpm.err" 2>/dev/null | sed 's/^[0-9/: ]*//; s/\[[0-9]*\]//' |
  sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
it_finish

#!/bin/bash
# bash's /dev/tcp under `shmshim run`, as a newcomer would try it: bash reads the
# server's first line itself (upgraded), then moves it from fd 0 to fd 4 (`exec 4<&0
# 0</dev/null`: bash keeps a close-on-exec copy of fd 0 meanwhile) and hands fd 4
# to programs it starts (cat and head: they read and write through libc's
# functions; /bin/echo writes through stdio, which no interposer sees). They must
# take the connection over and talk through it; the lines must come back in order.
source "$(dirname "$0")/lib.bash"
command -v socat >/dev/null || { echo "bash_tcp: socat missing (make deps)"; exit 1; }
log=$TMP/shim.log
"$S" run -- socat TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr SYSTEM:'echo one; cat' >"$TMP/srv.out" 2>&1 &
pids+=("$!")
listening() { ss -Hltn "sport = :$port" | grep -q .; }
until_true 10 listening || { echo "bash_tcp: socat did not start"; exit 1; }
timeout 20 "$S" run --log info --log-file "$log" -- bash -c "
  exec 0<>/dev/tcp/127.0.0.1/$port
  read -r l; echo \"bash read \$l\"
  exec 4<&0 0</dev/null
  echo two | cat >&4
  head -n 1 <&4
  echo three | cat >&4
  head -n 1 <&4" >"$TMP/out" 2>&1
check "bash_tcp: each line came back, in order, through bash and the programs it started" \
  test "$(cat "$TMP/out")" = "$(printf 'bash read one\ntwo\nthree')"
check "bash_tcp: bash upgraded the connection" grep -q ' upgraded fd=0 role=client' "$log"
check "bash_tcp: the programs took it over (cat, head, cat, head)" \
  test "$(grep -c 'role=client: taken over after exec' "$log")" = 4
check "bash_tcp: nothing was fenced or reset" bash -c "! grep -q 'ECONNRESET\|could not\|reset' '$log'"
finish

#!/bin/bash
# Where statistics live and die: nothing before the first connection, one hidden
# table after it, none after exec (close-on-exec) nor in a fork child that has not
# connected; a killed process leaves nothing behind (no file anywhere, no entry in
# anyone's table), and stat says plainly when a PID is gone or not shimmed.
source "$(dirname "$0")/lib.bash"

tables() { ls -l /proc/"$1"/fd 2>/dev/null | grep -c 'memfd:shmshim-stats'; }
shm_before=$(ls -A /dev/shm | sort | tr '\n' ' ')

sleep 30 &
plain=$!; pids+=("$plain")
"$S" stat "$plain" >"$TMP/out" 2>"$TMP/err"; rc=$?
check "stat of an unshimmed process: exit 1, 'not shimmed'" \
  eval '[ $rc = 1 ] && grep -q "pid $plain (sleep): not shimmed" "$TMP/err"'
"$S" run -- sleep 30 &
idle=$!; pids+=("$idle")
until_true 5 grep -qF "$LIB" /proc/$idle/maps
check "a shimmed process without connections has no table and as many fds as without the shim" \
  [ "$(tables $idle) $(ls /proc/$idle/fd | wc -l)" = "0 $(ls /proc/$plain/fd | wc -l)" ]
out=$("$S" stat "$idle"); rc=$?
check "stat of it: exit 0, no connection tracked yet" eval '[ $rc = 0 ] && grep -q "no connection tracked yet" <<<"$out"'
check "stat --json of it: table false, no connections" \
  [ "$("$S" stat --json "$idle" | jq -c '.processes[0] | [.table, (.connections | length)]')" = "[false,0]" ]

start_redis
# perl (syswrite/sysread/fork/exec: all through libc's entry points) connects and
# then forks a child that execs, or execs itself: the table must follow neither.
hold='use Socket; socket(my $s, PF_INET, SOCK_STREAM, 0) or die;
  connect($s, pack_sockaddr_in($ARGV[0], inet_aton("127.0.0.1"))) or die "connect: $!";
  syswrite($s, "PING\r\n") == 6 or die; sysread($s, my $b, 7) == 7 or die;
  if ($ARGV[1] eq "fork") { my $p = fork(); exec("sleep", "30") if !$p;
    open(my $f, ">", $ARGV[2]); print $f "$p\n"; close($f); waitpid($p, 0) }
  else { exec("sleep", "30") }'
"$S" run -- perl -e "$hold" "$port" fork "$TMP/child" &
bpid=$!; pids+=("$bpid")
until_true 10 test -s "$TMP/child"
child=$(cat "$TMP/child"); pids+=("$child")
j=$("$S" stat --json "$bpid")
check "perl's connection is upgraded and published, 7 bytes (+PONG) received" \
  [ "$(conn_of "$j" "$bpid" | jq -r '.state + " " + (.peer_pid | tostring) + " " + (.rx_bytes | tostring)')" = "upgraded $spid 7" ]
check "perl holds exactly one table; its forked-and-exec'd child none" [ "$(tables $bpid) $(tables $child)" = "1 0" ]
"$S" run -- perl -e "$hold" "$port" exec &
epid=$!; pids+=("$epid")
until_true 10 grep -qx sleep /proc/$epid/comm
check "after exec: no table in the new image" [ "$(tables $epid)" = 0 ]

# A shimmed client killed while connected.
mkfifo "$TMP/in"
"$S" run -- redis-cli -p "$port" <"$TMP/in" >/dev/null 2>&1 &
cpid=$!; pids+=("$cpid")
exec 3>"$TMP/in"
printf 'PING\n' >&3
has_conn() { [ "$(conn_of "$("$S" stat --json "$spid")" "$spid" ".peer_pid == $cpid" | jq -r .state)" = upgraded ]; }
until_true 10 has_conn
check "the client has its table" [ "$(tables $cpid)" = 1 ]
sino=$(conn_of "$("$S" stat --json "$spid")" "$spid" ".peer_pid == $cpid" | jq .inode)
kill -9 "$cpid"
wait "$cpid" 2>/dev/null
exec 3>&-
"$S" stat "$cpid" >"$TMP/out" 2>"$TMP/err"; rc=$?
check "stat of the killed client: exit 1, no such process" \
  eval '[ $rc = 1 ] && grep -q "pid $cpid: no such process" "$TMP/err"'
check "the full listing does not mention it" \
  [ "$("$S" stat --json | jq --argjson p "$cpid" '[.processes[] | select(.pid == $p)] | length')" = 0 ]
no_peer() { [ "$(conn_of "$("$S" stat --json "$spid")" "$spid" ".inode == $sino")" = null ]; }
check "the server's side of it is gone from the server's table" until_true 5 no_peer
# An unshimmed client's plain entry goes when the server closes the socket.
mkfifo "$TMP/in2"
redis-cli -p "$port" <"$TMP/in2" >/dev/null 2>&1 &
upid=$!; pids+=("$upid")
exec 4>"$TMP/in2"
printf 'PING\n' >&4
nplain() { "$S" stat --json "$spid" | jq '[.processes[].connections[] | select(.state == "plain")] | length'; }
one_plain() { [ "$(nplain)" = 1 ]; }
zero_plain() { [ "$(nplain)" = 0 ]; }
until_true 10 one_plain
kill -9 "$upid"; wait "$upid" 2>/dev/null; exec 4>&-
check "a plain connection whose peer died is not shown once the server closed it" until_true 5 zero_plain
check "no file appeared in /dev/shm" [ "$(ls -A /dev/shm | sort | tr '\n' ' ')" = "$shm_before" ]
finish

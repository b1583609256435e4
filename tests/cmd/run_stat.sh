#!/bin/bash
# `shmshim run` on a real server and client (redis-server, redis-cli,
# redis-benchmark) and `shmshim stat` while their connections are open: the
# connections must be reported upgraded at both ends, paired with each other, and
# the byte counts must match exactly what was sent (a SET of a random 100000-byte
# value: its RESP encoding is computed here); plain connections must be reported
# with their reason; the value must come back byte-identical.
source "$(dirname "$0")/lib.bash"

start_redis
check "run: the server runs with the build's library loaded" grep -qF "$LIB" /proc/$spid/maps
check "run: no wrapper process stays (the pid is redis-server's)" \
  grep -qx redis-server /proc/$spid/comm

head -c 75000 /dev/urandom | base64 -w0 >"$TMP/value" # 100000 characters, no spaces
want=$(sha256sum <"$TMP/value" | cut -d' ' -f1)
# What redis-cli sends for "SET k <value>": *3 $3 SET $1 k $100000 <value>, CRLF-ended.
req=$((4 + 4 + 5 + 4 + 3 + 9 + 100000 + 2))

for where in "-p $port" "-s $TMP/redis.sock"; do
  fam=tcp4; [ "${where:0:2}" = -s ] && fam=unix
  fifo=$TMP/in.$fam
  mkfifo "$fifo"
  "$S" run -- redis-cli $where <"$fifo" >"$TMP/cli.$fam" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  exec 3>"$fifo"
  upgraded() { [ "$(conn_of "$(stat_json "$cpid" 2>/dev/null)" "$cpid" | jq -r .state)" = upgraded ]; }
  until_true 10 upgraded
  j0=$(stat_json "$spid" "$cpid")
  c0=$(conn_of "$j0" "$cpid")
  s0=$(conn_of "$j0" "$spid" ".peer_pid == $cpid")
  if [ "$(jq -r '.state, .family, .role, .peer_pid' <<<"$c0" | tr '\n' ' ')" = "upgraded $fam client $spid " ] &&
     [ "$(jq -r '.state, .family, .role' <<<"$s0" | tr '\n' ' ')" = "upgraded $fam server " ] &&
     [ "$(jq .tx_bytes <<<"$c0")" = "$(jq .rx_bytes <<<"$s0")" ] &&
     [ "$(jq .rx_bytes <<<"$c0")" = "$(jq .tx_bytes <<<"$s0")" ]; then
    ok "stat $fam: redis-cli and redis-server upgraded, paired, counts agree at both ends"
  else
    bad "stat $fam: client=$c0 server=$s0"
  fi
  printf 'SET k %s\n' "$(cat "$TMP/value")" >&3
  until_true 10 grep -qx OK "$TMP/cli.$fam"
  settled() { [ "$(conn_of "$(stat_json "$spid")" "$spid" ".peer_pid == $cpid" | jq .rx_bytes)" = $(($(jq .rx_bytes <<<"$s0") + req)) ]; }
  until_true 5 settled
  j1=$(stat_json "$spid" "$cpid")
  c1=$(conn_of "$j1" "$cpid")
  s1=$(conn_of "$j1" "$spid" ".peer_pid == $cpid")
  dct=$(($(jq .tx_bytes <<<"$c1") - $(jq .tx_bytes <<<"$c0")))
  dcr=$(($(jq .rx_bytes <<<"$c1") - $(jq .rx_bytes <<<"$c0")))
  dst=$(($(jq .tx_bytes <<<"$s1") - $(jq .tx_bytes <<<"$s0")))
  dsr=$(($(jq .rx_bytes <<<"$s1") - $(jq .rx_bytes <<<"$s0")))
  dring=$(($(jq .tx_ring_bytes <<<"$c1") - $(jq .tx_ring_bytes <<<"$c0")))
  if [ "$dct $dsr $dring $dst $dcr" = "$req $req $req 5 5" ]; then
    ok "stat $fam: SET of 100000 bytes counted exactly: $req bytes out of the client and into the server, through the ring; 5 bytes (+OK) back"
  else
    bad "stat $fam: deltas client tx=$dct server rx=$dsr ring=$dring server tx=$dst client rx=$dcr (want $req $req $req 5 5)"
  fi
  got=$("$S" run -- redis-cli $where GET k | head -c -1 | sha256sum | cut -d' ' -f1)
  check "run $fam: GET returns the value byte-identical" [ "$got" = "$want" ]
  closed0=$(jq --argjson p "$spid" '.processes[] | select(.pid == $p) | .totals.closed' <<<"$j1")
  exec 3>&-
  wait "$cpid"
  gone() { [ "$(conn_of "$(stat_json "$spid")" "$spid" ".inode == $(jq .inode <<<"$s1")")" = null ]; }
  if until_true 5 gone; then
    closed1=$(stat_json "$spid" | jq --argjson p "$spid" '.processes[] | select(.pid == $p) | .totals.closed')
    check "stat $fam: the closed connection leaves the table (closed $closed0 -> $closed1)" [ "$closed1" -gt "$closed0" ]
  else
    bad "stat $fam: connection still listed after the client exited"
  fi
done

# A client without the shim: plain at the server, "peer not shimmed"; and a shimmed
# client told to leave TCP alone: plain at both ends, "disabled" at the client.
mkfifo "$TMP/in.plain" "$TMP/in.dis"
redis-cli -p "$port" <"$TMP/in.plain" >/dev/null 2>&1 &
ppid=$!; pids+=("$ppid"); exec 4>"$TMP/in.plain"
"$S" run --unix-only -- redis-cli -p "$port" <"$TMP/in.dis" >/dev/null 2>&1 &
dpid=$!; pids+=("$dpid"); exec 5>"$TMP/in.dis"
printf 'PING\n' >&4; printf 'PING\n' >&5
two_plain() { [ "$(stat_json "$spid" | jq '[.processes[].connections[] | select(.state == "plain" and .why == "peer_not_shimmed")] | length')" = 2 ]; }
until_true 10 two_plain
j=$(stat_json "$spid" "$dpid")
dc=$(conn_of "$j" "$dpid")
if two_plain && [ "$(jq -r '.state, .why, .counted' <<<"$dc" | tr '\n' ' ')" = "plain disabled false " ]; then
  ok "stat: an unshimmed client and a --unix-only client are plain at the server (peer not shimmed); the --unix-only client says disabled"
else
  bad "stat plain: server=$(stat_json "$spid" | jq -c '[.processes[].connections[] | {state, why}]') client=$dc"
fi
exec 4>&- 5>&-
wait "$ppid" "$dpid"

# redis-benchmark -c 10, shimmed, captured mid-run.
# (Not under timeout(1): $! must be redis-benchmark itself. It is killed below, or
# by the exit trap.)
"$S" run -- redis-benchmark -p "$port" -c 10 -n 5000000 -t set,get -d 64 -q >/dev/null 2>&1 &
bpid=$!; pids+=("$bpid")
ten() { [ "$(stat_json "$bpid" 2>/dev/null | jq '[.processes[].connections[] | select(.state == "upgraded" and .tx_bytes > 0)] | length')" = 10 ]; }
if until_true 20 ten; then
  j=$(stat_json "$bpid" "$spid")
  nb=$(jq --argjson b "$bpid" --argjson s "$spid" '[.processes[] | select(.pid == $b) | .connections[] | select(.state == "upgraded" and .role == "client" and .peer_pid == $s)] | length' <<<"$j")
  ns=$(jq --argjson b "$bpid" --argjson s "$spid" '[.processes[] | select(.pid == $s) | .connections[] | select(.state == "upgraded" and .peer_pid == $b)] | length' <<<"$j")
  check "stat mid-run: redis-benchmark -c 10 has 10 upgraded connections to the server, the server 10 to it ($nb, $ns)" [ "$nb $ns" = "10 10" ]
  inos=$(jq -c --argjson b "$bpid" --argjson s "$spid" '[.processes[] | select(.pid == $s) | .connections[] | select(.peer_pid == $b) | .inode]' <<<"$j")
  echo "--- shmshim stat, redis-benchmark -c 10 mid-run:"
  "$S" stat "$spid" "$bpid"
  echo "---"
else
  bad "stat mid-run: redis-benchmark never showed 10 upgraded connections"
fi
kill "$bpid" 2>/dev/null
wait "$bpid" 2>/dev/null
benchless() { [ "$(stat_json "$spid" | jq --argjson i "${inos:-[]}" '[.processes[].connections[] | select(.inode as $n | $i | index($n))] | length')" = 0 ]; }
check "stat: the killed benchmark's connections are gone from the server's table" until_true 5 benchless

# --stats: one summary line per process at exit.
"$S" run --stats -- redis-cli -p "$port" SET k2 v2 >"$TMP/sum.out" 2>"$TMP/sum.err"
check "run --stats: summary at exit counts the upgraded connection" \
  grep -q "redis-cli\] summary: connections upgraded 1 (client 1, server 0)" "$TMP/sum.err"
finish

#!/bin/bash
# A connection handed to a program started by the shell before the shell took the
# server's offer (issue "Exactly the kernel's behaviour", the exec class): bash
# opens /dev/tcp, a child it starts (/bin/echo, through stdio, which no
# interposer sees) writes to it, then bash reads the answer itself. The child's
# bytes go through the socket uncounted by bash, so bash must never switch: the
# connection stays plain at both ends, byte-exact, with no reset. Two orders:
# the client's child writes first (socat EXEC:cat offers at its first read), and
# the server speaks first (its offer is queued before bash's child runs).
source "$(dirname "$0")/lib.bash"
command -v socat >/dev/null || { echo "pending_exec: socat missing (make deps)"; exit 1; }
listening() { ss -Hltn "sport = :$1" | grep -q .; }
n=0
# case NAME SOCAT-ADDRESS BASH-SCRIPT EXPECTED-OUTPUT
case_() {
  local name=$1 addr=$2 script=$3 want=$4 p=$((port + n)) slog=$TMP/srv$n.log clog=$TMP/cli$n.log
  n=$((n + 1))
  "$S" run --log info --log-file "$slog" -- socat TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr "$addr" \
    >"$TMP/srv$n.out" 2>&1 &
  local sp=$!
  pids+=("$sp")
  until_true 10 listening $p || { bad "pending_exec $name: socat did not start"; return; }
  timeout 20 "$S" run --log info --log-file "$clog" -- bash -c "exec 0<>/dev/tcp/127.0.0.1/$p; $script" \
    >"$TMP/out$n" 2>&1
  wait "$sp" 2>/dev/null
  check "pending_exec $name: every line came back, in order" test "$(cat "$TMP/out$n")" = "$want"
  check "pending_exec $name: plain at both ends (the client and the server log it)" \
    bash -c "grep -q 'plain fd=0 role=client' '$clog' && grep -q 'plain fd=[0-9]* role=server' '$slog' &&
             ! grep -q ' upgraded fd=' '$clog' '$slog'"
  check "pending_exec $name: no reset, no corrupted switch point" \
    bash -c "! grep -q 'reset\|corrupted\|ECONNRESET' '$clog' '$slog'"
}
case_ "client's child first" EXEC:cat '/bin/echo one >&0; read -r l; echo "got $l"' "got one"
case_ "server first" SYSTEM:'echo hi; cat' \
  'sleep 0.3; /bin/echo one >&0; read -r a; read -r b; echo "got $a $b"' "got hi one"
finish

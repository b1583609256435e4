#!/bin/bash
# `shmshim stat` and a forked child that holds an upgraded connection (a server
# that forks per connection after its first exchange, the parent closing its
# copy at once): the child must be listed with the connection and its peer's
# PID, the client's row must name the child, the bytes must be intact, and the
# child's totals must not repeat the parent's (neither in the table nor in its
# exit line).
source "$(dirname "$0")/lib.bash"
PYTHON=/usr/bin/python3
[ -x $PYTHON ] || { echo "forkstat: needs $PYTHON (skipped)"; finish; exit; }
cat >"$TMP/srv.py" <<'PY'
import os, socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
a, _ = l.accept()
for _ in range(2): a.sendall(a.recv(100))
pid = os.fork()
if pid == 0:
    l.close()
    while True:
        d = a.recv(65536)
        if not d: sys.exit(0)
        a.sendall(d)
a.close(); os.waitpid(pid, 0)
PY
cat >"$TMP/cli.py" <<'PY'
import hashlib, os, socket, sys
c = socket.socket(); c.connect(("127.0.0.1", int(sys.argv[1])))
for m in (b"one", b"two"): c.sendall(m); assert c.recv(100) == m
print("child", flush=True)
sys.stdin.readline()
data = os.urandom(200000); c.sendall(data); got = b""
while len(got) < len(data): got += c.recv(65536)
print("bytes", "same" if hashlib.sha256(got).digest() == hashlib.sha256(data).digest() else "DIFFER", flush=True)
PY
log=$TMP/shim.log
"$S" run --log info --log-file "$log" -- $PYTHON "$TMP/srv.py" >"$TMP/srv.out" &
ppid_=$!
pids+=("$ppid_")
until_true 10 test -s "$TMP/srv.out" || { echo "forkstat: server did not start"; exit 1; }
mkfifo "$TMP/go"
"$S" run -- $PYTHON "$TMP/cli.py" "$(cat "$TMP/srv.out")" <"$TMP/go" >"$TMP/cli.out" 2>&1 &
cpid=$!
pids+=("$cpid")
exec 3>"$TMP/go"
until_true 10 grep -q child "$TMP/cli.out"
child=$(pgrep -P "$ppid_")
upgraded_pair() {
  local j c s
  j=$(stat_json "$cpid" "$child" 2>/dev/null) || return 1
  c=$(conn_of "$j" "$cpid" | jq -r '"\(.state) \(.peer_pid)"')
  s=$(conn_of "$j" "$child" | jq -r '"\(.state) \(.peer_pid)"')
  [ "$c" = "upgraded $child" ] && [ "$s" = "upgraded $cpid" ]
}
check "forkstat: the child holding the connection is listed with it, and each row names the other's PID" \
  until_true 5 upgraded_pair
j=$(stat_json "$child" 2>/dev/null)
check "forkstat: the child's totals are its own (it set nothing up)" \
  test "$(jq -r '.processes[0].totals | .upgraded_server + .upgraded_client + .plain_server + .plain_client' <<<"$j")" = 0
echo go >&3
exec 3>&-
wait "$cpid"
wait "$ppid_"
check "forkstat: the child echoed 200000 bytes intact" grep -qx "bytes same" "$TMP/cli.out"
check "forkstat: the parent counted the upgrade, the child's exit line repeats nothing" \
  test "$(grep -c 'stats upgraded_client=0 upgraded_server=1 ' "$log")" = 1
finish

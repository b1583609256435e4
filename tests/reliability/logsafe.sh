#!/bin/bash
# The library's log (core/log.c) must not be a way into other files or streams:
#  - symlink: SHMSHIM_LOG_FILE naming a symbolic link to another file: that file
#    is never written (O_NOFOLLOW);
#  - once: the log file is opened once per process, not once per line (strace
#    counts the opens over three upgraded connections);
#  - chdir: a relative SHMSHIM_LOG_FILE is resolved when the library loads; a
#    program that changes directory later still logs to the same file;
#  - socket: a process whose fd 2 is a socket (an inetd-style service: it is the
#    client's stream) writes no log line into it; the control run with fd 2 a
#    pipe shows the lines are there to be written.
# Each client is the shimmed victim program (victim.c, "client" mode) against its
# shimmed echo server; the server's log must show the connections upgraded.
#   BUILD=build SHM_PRELOAD=... tests/reliability/logsafe.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
V=$ROOT/$BUILD/tests/rel/victim
TMP=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok logsafe $*"; }
bad() { fail=$((fail + 1)); echo "FAIL logsafe $*"; }
for t in strace python3; do command -v $t >/dev/null || { echo "FAIL logsafe: needs $t"; exit 1; }; done

env LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/server.log" "$V" echo "unix:$TMP/echo" 0 >"$TMP/echo.out" 2>&1 &
pids=$!
for i in $(seq 250); do grep -q ready "$TMP/echo.out" && break; sleep 0.02; done
server_ups() { grep -c ' upgraded fd=.*role=server' "$TMP/server.log" 2>/dev/null; }

# client N [VAR=VALUE...]: N connections from the shimmed victim client; prints
# how many more server-side upgrades were logged.
client() {
  local n=$1; shift
  local before; before=$(server_ups)
  env LD_PRELOAD="$PRE" SHMSHIM_LOG=info "$@" "$V" client "unix:$TMP/echo" "$n" || echo "client failed" >&2
  echo $(($(server_ups) - before))
}

# symlink
printf 'precious\n' >"$TMP/target"
ln -s "$TMP/target" "$TMP/link"
ups=$(client 1 SHMSHIM_LOG_FILE="$TMP/link" 2>"$TMP/err")
if [ "$ups" = 1 ] && [ "$(cat "$TMP/target")" = precious ] && [ -L "$TMP/link" ]; then
  ok "symlink: SHMSHIM_LOG_FILE a symlink to another file: that file untouched (connection upgraded)"
else
  bad "symlink: upgrades=$ups target now: $(head -c 200 "$TMP/target" | tr '\n' '|') $(cat "$TMP/err")"
fi

# once
strace -f -qq -o "$TMP/strace.log" -e trace=open,openat env LD_PRELOAD="$PRE" SHMSHIM_LOG=info \
  SHMSHIM_LOG_FILE="$TMP/once.log" "$V" client "unix:$TMP/echo" 3 2>"$TMP/err"
opens=$(grep -c "\"$TMP/once.log\"" "$TMP/strace.log")
lines=$(grep -c ' upgraded fd=.*role=client' "$TMP/once.log" 2>/dev/null)
if [ "$opens" = 1 ] && [ "${lines:-0}" -ge 3 ]; then ok "once: $lines client lines over 3 connections, log opened $opens time"
else bad "once: log opened $opens times for ${lines:-0} upgrade lines (want 1 open, >= 3 lines) $(cat "$TMP/err")"; fi

# chdir
mkdir -p "$TMP/d/sub"
before=$(server_ups)
(cd "$TMP/d" && env LD_PRELOAD="$PRE" SHMSHIM_LOG=info SHMSHIM_LOG_FILE=rel.log python3 -c '
import os, socket, sys
os.chdir("sub")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
msg = os.urandom(4096)
s.sendall(msg)
got = b""
while len(got) < len(msg):
    b = s.recv(65536)
    if not b: break
    got += b
sys.exit(0 if got == msg else 1)
' "$TMP/echo") 2>"$TMP/err"
prc=$?
# The server reports the upgrade when it sees the client attached, at the latest
# when it lets go of the connection: after the client's end of file (bounded wait).
for i in $(seq 100); do [ $(($(server_ups) - before)) -ge 1 ] && break; sleep 0.05; done
ups=$(($(server_ups) - before))
if [ $prc = 0 ] && [ "$ups" = 1 ] && grep -q ' upgraded fd=.*role=client' "$TMP/d/rel.log" 2>/dev/null && [ ! -e "$TMP/d/sub/rel.log" ]; then
  ok "chdir: relative SHMSHIM_LOG_FILE stays where the program started (echo byte-exact, upgraded)"
else
  bad "chdir: rc=$prc upgrades=$ups rel.log=$([ -e "$TMP/d/rel.log" ] && echo yes || echo no) sub/rel.log=$([ -e "$TMP/d/sub/rel.log" ] && echo yes || echo no) $(head -c 200 "$TMP/err")"
fi

# socket (and its control, a pipe)
for kind in pipe socket; do
  before=$(server_ups)
  python3 - "$kind" "$PRE" "$V" "unix:$TMP/echo" >"$TMP/fd2.out" 2>"$TMP/err" <<'PY'
import os, socket, subprocess, sys
kind, pre, victim, addr = sys.argv[1:]
if kind == "socket":
    a, b = socket.socketpair()
    w, r = b.fileno(), a
else:
    rfd, w = os.pipe()
env = dict(os.environ, LD_PRELOAD=pre, SHMSHIM_LOG="info")
env.pop("SHMSHIM_LOG_FILE", None)
p = subprocess.Popen([victim, "client", addr, "2"], stderr=w, env=env)
os.close(w) if kind == "pipe" else b.close()
data = b""
while True:
    chunk = r.recv(65536) if kind == "socket" else os.read(rfd, 65536)
    if not chunk: break
    data += chunk
rc = p.wait()
print("rc=%d bytes=%d lines=%d" % (rc, len(data), data.count(b"shmshim[")))
PY
  ups=$(($(server_ups) - before))
  res=$(cat "$TMP/fd2.out")
  lines=$(sed -n 's/.*lines=\([0-9]*\).*/\1/p' <<<"$res"); bytes=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$res")
  case $kind in
    pipe)   if [[ $res == rc=0* ]] && [ "$ups" = 2 ] && [ "${lines:-0}" -ge 2 ]; then ok "socket (control): fd 2 a pipe: $lines log lines written there"
            else bad "socket (control): fd 2 a pipe: $res upgrades=$ups $(head -c 200 "$TMP/err")"; fi ;;
    socket) if [[ $res == rc=0* ]] && [ "$ups" = 2 ] && [ "$bytes" = 0 ]; then ok "socket: fd 2 a socket: nothing written into it (2 connections upgraded)"
            else bad "socket: fd 2 a socket: $res upgrades=$ups $(head -c 200 "$TMP/err")"; fi ;;
  esac
done

echo "logsafe: $pass passed, $fail failed"
[ $fail = 0 ]

#!/bin/bash
# --log-file and a process that gives up its user (nginx's workers): started as
# root, the process switches to nobody (setuid) before its first connection. Its
# log lines must still reach the file root's directory holds (opened before the
# switch), and its connection must be upgraded. A process started as nobody, who
# cannot open the file at all, must say so once on stderr instead of dropping its
# lines unseen.
source "$(dirname "$0")/lib.bash"
PYTHON=/usr/bin/python3 # the system one: nobody must be able to read its modules
if [ "$(id -u)" != 0 ] || [ ! -x $PYTHON ] || ! command -v setpriv >/dev/null; then
  echo "logdrop: needs root, /usr/bin/python3 and setpriv (skipped)"; finish; exit; fi
chmod 755 "$TMP"
mkdir "$TMP/logs" && chmod 755 "$TMP/logs" # root's: nobody cannot create files in it
# One process, both ends: listen, give up root, connect, accept, 100000 bytes
# each way, checked.
cat >"$TMP/drop.py" <<'PY'
import os, socket, sys, hashlib
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
if sys.argv[1] == "drop": os.setuid(65534)
c = socket.socket(); c.connect(l.getsockname()); a, _ = l.accept()
data = os.urandom(100000)
c.sendall(data); got = b""
while len(got) < len(data): got += a.recv(65536)
a.sendall(got); back = b""
while len(back) < len(data): back += c.recv(65536)
print("uid", os.geteuid(), "bytes", "same" if hashlib.sha256(back).digest() == hashlib.sha256(data).digest() else "DIFFER")
PY
log=$TMP/logs/shim.log
"$S" run --log info --log-file "$log" -- $PYTHON "$TMP/drop.py" drop >"$TMP/drop.out" 2>&1
check "logdrop: the process gave up root and its bytes came back intact" grep -qx "uid 65534 bytes same" "$TMP/drop.out"
check "logdrop: its lines reached root's log file (upgraded at both ends)" \
  test "$(grep -c ' upgraded fd=' "$log" 2>/dev/null)" = 2
# A process that gives up root and execs (setpriv, su, as postgres is started):
# the log file made before the switch must stay openable by the program it runs.
mkdir "$TMP/shared" && chmod 1777 "$TMP/shared"
log3=$TMP/shared/exec.log
"$S" run --log info --log-file "$log3" -- setpriv --reuid=65534 --regid=65534 --clear-groups \
  $PYTHON "$TMP/drop.py" stay >"$TMP/exec.out" 2>&1
check "logdrop: setuid then exec: bytes intact" grep -qx "uid 65534 bytes same" "$TMP/exec.out"
check "logdrop: setuid then exec: the program's lines reached the log (upgraded at both ends)" \
  test "$(grep -c ' upgraded fd=' "$log3" 2>/dev/null)" = 2
log2=$TMP/logs/other.log
setpriv --reuid=65534 --regid=65534 --clear-groups "$S" run --log info --log-file "$log2" -- \
  $PYTHON "$TMP/drop.py" stay >"$TMP/stay.out" 2>"$TMP/stay.err"
check "logdrop: started as nobody, bytes intact" grep -qx "uid 65534 bytes same" "$TMP/stay.out"
check "logdrop: started as nobody, the unopenable log file is named once on stderr" \
  test "$(grep -c "cannot open SHMSHIM_LOG_FILE $log2 as uid 65534: Permission denied" "$TMP/stay.err")" = 1
finish

#!/bin/bash
# gevent (Debian's python3-gevent: greenlets over libev) with each of libev's
# backends that it can choose (GEVENT_BACKEND): epoll, poll, select and, where the
# kernel has it, linux_iouring. One process, both ends in it (a server greenlet
# and a client), written here: over loopback TCP and a unix socket, 20 round
# trips of small messages, then 4 MiB echoed, every byte compared by sha256 in
# the program. Run plain (the reference), then shimmed: with epoll, poll and
# select every connection is upgraded; with io_uring, whose readiness the library
# cannot see (it would wait for a kick nobody sends), every connection stays plain
# and the library says why. Found with gevent's own tests: select's backend
# sizes its fd sets for nfds, which the library's select overran (a heap overrun:
# a crash here in most runs, depending on the heap's layout; tests/diff's
# select_short_set checks that exactly); with io_uring's the exchange hung.
source "$(dirname "$0")/lib.sh"
it_init gevent
it_need timeout
PY=/usr/bin/python3
if ! "$PY" -c 'import gevent' 2>/dev/null; then
  echo "[$IT_NAME] FAIL: $PY has no gevent (make deps: python3-gevent)"
  exit 1
fi

cat >"$T/echo.py" <<'PY'
from gevent import monkey
monkey.patch_all()
import gevent, hashlib, os, socket, sys

def serve(lst):
    c, _ = lst.accept()
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()

def exchange(family, addr):
    lst = socket.socket(family, socket.SOCK_STREAM)
    lst.bind(addr)
    lst.listen()
    g = gevent.spawn(serve, lst)
    cl = socket.socket(family, socket.SOCK_STREAM)
    cl.connect(lst.getsockname())
    sent, got = hashlib.sha256(), hashlib.sha256()
    for i in range(20):
        m = b"%d;" % i * (i + 1)
        cl.sendall(m)
        sent.update(m)
        r = b""
        while len(r) < len(m):
            r += cl.recv(65536)
        got.update(r)
    big = os.urandom(4 << 20)
    sent.update(big)
    def reader():
        n = 0
        while n < len(big):
            r = cl.recv(65536)
            if not r:
                break
            got.update(r)
            n += len(r)
    rd = gevent.spawn(reader)
    cl.sendall(big)
    rd.join()
    cl.close()
    g.join()
    lst.close()
    return sent.hexdigest() == got.hexdigest()

print("backend", gevent.get_hub().loop.backend)
ok_tcp = exchange(socket.AF_INET, ("127.0.0.1", 0))
ok_unix = exchange(socket.AF_UNIX, sys.argv[1])
print("tcp", "match" if ok_tcp else "MISMATCH")
print("unix", "match" if ok_unix else "MISMATCH")
PY

backends="epoll poll select"
if GEVENT_BACKEND=linux_iouring timeout 20 "$PY" -c 'import gevent; gevent.get_hub().loop' 2>/dev/null; then
  backends="$backends linux_iouring"
else
  it_log "libev's io_uring backend is not available here: not run"
fi
for be in $backends; do
  for shim in 0 1; do
    tag=$([ $shim = 1 ] && echo shim || echo plain)
    log=$T/log/$be.$tag.log
    it_env "$shim" "$log"
    rm -f "$T/sock"
    out=$("${IT_ENV[@]}" GEVENT_BACKEND=$be timeout -k 5 60 "$PY" "$T/echo.py" "$T/sock" 2>"$T/$be.$tag.err")
    rc=$?
    it_eq "$be $tag: exit status" "$rc" 0
    it_eq "$be $tag: output" "$(echo "$out" | tr '\n' ' ')" "backend $be tcp match unix match "
    [ $rc = 0 ] || tail -5 "$T/$be.$tag.err" | sed "s/^/    [$IT_NAME] /"
    [ $shim = 1 ] || { it_check "$be plain: the library not loaded" "$([ -s "$log" ] && echo 0 || echo 1)"; continue; }
    ups=$(it_count ' upgraded fd=[0-9]+ role=server ' "$log")
    upc=$(it_count ' upgraded fd=[0-9]+ role=client ' "$log")
    if [ "$be" = linux_iouring ]; then
      it_eq "$be shimmed: upgraded server/client" "$ups/$upc" 0/0
      it_check "$be shimmed: the library said why" "$(grep -q 'io_uring set up' "$log" && echo 1 || echo 0)"
    elif [ "${IT_DEFAULT_SETTINGS:-0}" = 1 ]; then
      it_check "$be shimmed: upgraded" "$([ "$ups" -ge 1 ] && [ "$upc" -ge 1 ] && echo 1 || echo 0)" "server/client $ups/$upc"
    else
      it_eq "$be shimmed: upgraded server/client" "$ups/$upc" 2/2
    fi
  done
done
it_finish

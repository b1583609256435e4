"""A client at its descriptor limit (tests/reliability/fdlimit.sh).

  fdlimit.py server ADDR     echo server (selectors), prints "ready"
  fdlimit.py client ADDR K P

The client opens P connections it does not use yet (a client waiting for its
offer holds an endpoint), then K inheritable connections and uses each (an
exchange checked byte for byte: upgraded ones keep their segment's memfd for an
exec), then pipes until EMFILE; then closes the pipes and makes one more
exchange on every connection. It prints how many descriptors of each kind it
got: with the library they must be as many as without it. Then, LATE_S seconds
later (past the library's scarce period, SHM_FDS_SCARCE_NS), one more
connection and exchange, the "late" one: it prints its descriptor number, which
the library must have upgraded (it stayed plain for good before)."""
import errno, os, selectors, socket, sys, time

LATE_S = 2.5


def addr_of(a):
    if a.startswith("unix:"):
        return socket.AF_UNIX, a[5:]
    return socket.AF_INET, ("127.0.0.1", int(a.split(":")[1]))


def server(a):
    fam, where = addr_of(a)
    ls = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(where)
    ls.listen(512)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is ls:
                c, _ = ls.accept()
                sel.register(c, selectors.EVENT_READ)
                continue
            c = key.fileobj
            b = c.recv(65536)
            if not b:
                if c.fileno() >= 0:
                    sel.unregister(c)
                c.close()
                continue
            if b == b"END\n":
                return
            c.sendall(b)


def exchange(s, i, r):
    msg = ("%d:%d:" % (i, r)).encode() + bytes((i * 7 + r + k) % 256 for k in range(100))
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        b = s.recv(len(msg) - len(got))
        if not b:
            break
        got += b
    return got == msg


def client(a, k, p):
    fam, where = addr_of(a)
    conns, pend, pipes, bad = [], [], [], 0
    why = "limit not reached"
    try:
        for i in range(p):
            s = socket.socket(fam, socket.SOCK_STREAM)
            pend.append(s)
            s.connect(where)
        for i in range(k):
            s = socket.socket(fam, socket.SOCK_STREAM)
            conns.append(s)
            s.set_inheritable(True)
            s.connect(where)
            bad += not exchange(s, i, 0)
        while True:
            pipes.extend(os.pipe())
    except OSError as e:
        why = errno.errorcode.get(e.errno, str(e.errno))
    # a socket made but not connected when the limit came is not counted
    for lst in (conns, pend):
        if lst and lst[-1].fileno() >= 0:
            try:
                lst[-1].getpeername()
            except OSError:
                lst.pop().close()
    for f in pipes:
        os.close(f)
    for i, s in enumerate(pend + conns):
        bad += not exchange(s, i, 1)
    time.sleep(LATE_S)
    late = socket.socket(fam, socket.SOCK_STREAM)
    late.connect(where)
    bad += not exchange(late, 0, 2)
    print("conns=%d pending=%d pipe_fds=%d total=%d stopped_by=%s bad=%d"
          % (len(conns), len(pend), len(pipes), len(conns) + len(pend) + len(pipes), why, bad))
    print("late_fd=%d" % late.fileno())
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect(where)
    s.sendall(b"END\n")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

# A client connects and forks before it has looked at the server's offer
# (tests/reliability/forkpend.sh): parent and child then both use the connection,
# one after the other, as they would without the library. Then the parent makes a
# second connection, which is upgraded before it forks: parent and children use
# that one in turn too. Prints what the program sees.
#   python3 forkpend.py server ADDR [N]  (echo server: N connections, default 2, one after the other)
#   python3 forkpend.py client ADDR
# ADDR: a port (127.0.0.1) or a unix socket path.
import os
import socket
import sys

mode, addr = sys.argv[1], sys.argv[2]
fam, where = (socket.AF_UNIX, addr) if addr.startswith('/') else (socket.AF_INET, ('127.0.0.1', int(addr)))

if mode == 'server':
    l = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET:
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(where)
    l.listen(4)
    print('ready', flush=True)
    for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 2):
        c, _ = l.accept()
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()
    sys.exit(0)


def exchange(s, tag, n):
    msg = bytes((tag + i * 7) % 251 for i in range(n))
    s.sendall(msg)
    got = b''
    while len(got) < n:
        d = s.recv(n - len(got))
        if not d:
            return 'end of file after %d of %d bytes' % (len(got), n)
        got += d
    return '%d bytes echoed' % n if got == msg else 'bytes differ'


s = socket.socket(fam, socket.SOCK_STREAM)
s.connect(where)  # no call on it before the fork: the client has not looked at the offer
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # the child: its turn after the parent's first two exchanges
    os.read(r, 1)
    print('child:', exchange(s, 3, 3000), flush=True)
    os._exit(0)
print('parent 1:', exchange(s, 1, 1000), flush=True)
print('parent 2:', exchange(s, 2, 20000), flush=True)
os.write(w, b'g')
_, st = os.waitpid(pid, 0)
print('child exit:', st, flush=True)
print('parent 3:', exchange(s, 4, 500), flush=True)
s.close()
t = socket.socket(fam, socket.SOCK_STREAM)
t.connect(where)
for k in range(3):
    print('second connection %d:' % k, exchange(t, 10 + k, 5000), flush=True)
for k in range(3):  # upgraded by now: each process's position in the rings must follow the others'
    pid = os.fork()
    if pid == 0:
        print('second connection, child %d:' % k, exchange(t, 30 + k, 3000 * (k + 1)), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print('second connection, parent after child %d:' % k, exchange(t, 40 + k, 7000), flush=True)
t.close()

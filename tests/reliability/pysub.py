"""Python's subprocess with an upgraded connection as the child's standard output
(tests/reliability/pysub.sh).

  pysub.py FAMILY HOW CHILD DIR

FAMILY tcp | unix; HOW vfork (subprocess's default on Linux: vfork, dup2 of the
socket onto the child's 1, every other descriptor closed, exec) or fork (a
preexec_fn makes subprocess fork instead); CHILD lib (the child, Python, runs
with the library, inherited LD_PRELOAD), sh (the same with dash, which leaves
through _exit()) or bare (Python without the library). A server thread accepts
the connection and reads everything; the main thread writes a line, runs the
child (which prints one line to its standard output, the connection), prints a
line to its own standard output, writes another line and closes. Printed: the
main thread's own line (the test looks for it in our standard output: a vfork
child's dup2 once made our standard output the connection), then "server=" and
what the server read, hex."""
import os, socket, subprocess, sys, tempfile, threading

fam, how, child, d = sys.argv[1:5]
if fam == "unix":
    path = os.path.join(d, "pysub.%d" % os.getpid())
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    addr = path
else:
    ls = socket.socket(socket.AF_INET)
    ls.bind(("127.0.0.1", 0))
    addr = ls.getsockname()
ls.listen(1)
got = []


def srv():
    c, _ = ls.accept()
    c.sendall(b"ping\n")
    d = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        d += b
    got.append(d)


t = threading.Thread(target=srv)
t.start()
s = socket.socket(ls.family)
s.connect(addr)
assert s.recv(5) == b"ping\n"  # the client's first use: it takes the offer here
s.sendall(b"from parent\n")
env = dict(os.environ)
if child == "bare":
    env.pop("LD_PRELOAD", None)
kw = {"preexec_fn": lambda: None} if how == "fork" else {}
if child == "sh":  # dash: leaves through _exit()
    argv = ["sh", "-c", "echo from child"]
else:
    argv = [sys.executable, "-c", "import sys; print('from child'); sys.stdout.flush()"]
r = subprocess.run(argv, stdout=s.fileno(), stderr=subprocess.DEVNULL, env=env, **kw)
print("parent line after the child (exit %d)" % (0 if r.returncode == 0 else 1), flush=True)
s.sendall(b"parent again\n")
s.close()
t.join()
print("server=" + got[0].hex(), flush=True)

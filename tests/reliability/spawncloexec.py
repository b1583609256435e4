# A socket that was close-on-exec when it was upgraded (python makes every socket
# so), handed to a new image afterwards (tests/reliability/spawncloexec.sh):
#   server PATH CASE   listens on unix PATH, accepts one connection, writes "h",
#                      reads "x" (the connection is upgraded by then), then
#                      "spawn": posix_spawn of /bin/echo with the connection
#                      duplicated onto its fd 1, then close; "exec": makes it
#                      inheritable and execs itself as
#   child FD           the new image: echoes until end of file
#   client PATH CASE   reads "h", writes "x"; "spawn": expects echo's line, then
#                      end of file; "exec": sends 64 KiB and checks the echo (sha256)
import hashlib, os, socket, sys

role = sys.argv[1]
if role == "server":
    path, case = sys.argv[2], sys.argv[3]
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)
    print("listening", flush=True)
    c, _ = ls.accept()
    c.sendall(b"h")
    if c.recv(1) != b"x":
        sys.exit("server: no x")
    if case == "spawn":
        pid = os.posix_spawn("/bin/echo", ["echo", "body"], os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, c.fileno(), 1)])
        _, st = os.waitpid(pid, 0)
        c.close()
        sys.exit(0 if os.waitstatus_to_exitcode(st) == 0 else "server: echo failed (%d)" % st)
    fd = c.detach()
    os.set_inheritable(fd, True)
    os.execv(sys.executable, [sys.executable, __file__, "child", str(fd)])
elif role == "child":
    c = socket.socket(fileno=int(sys.argv[2]))
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
else:
    path, case = sys.argv[2], sys.argv[3]
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    if c.recv(1) != b"h":
        sys.exit("client: no h")
    c.sendall(b"x")
    data = b"body\n"
    if case == "exec":
        data = os.urandom(65536)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        got += d
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        sys.exit("client: got %d bytes, not the %d expected (or they differ)" % (len(got), len(data)))
    print("client ok", flush=True)

# Urgent data before the client's first use of its socket (tests/reliability/oobfirst.sh):
# both ends in this process, over loopback TCP. The server sends one urgent byte
# at once; the client's first call on its socket is recv(MSG_OOB); then 10 round
# trips of 1-4096 random bytes each way. Prints what it read, as hex digests.
import hashlib, os, socket, sys, time

ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
c = socket.create_connection(ls.getsockname())
s, _ = ls.accept()
s.send(bytes([244]), socket.MSG_OOB)
time.sleep(0.2)  # the byte has arrived before the client looks
print("oob", c.recv(1, socket.MSG_OOB).hex(), flush=True)
h = hashlib.sha256()
for i in range(10):
    for a, b in ((s, c), (c, s)):
        data = os.urandom(1 + int.from_bytes(os.urandom(2), "little") % 4096)
        a.sendall(data)
        got = b""
        while len(got) < len(data):
            d = b.recv(len(data) - len(got))
            if not d:
                sys.exit("end of file in round %d" % i)
            got += d
        if got != data:
            sys.exit("round %d: bytes differ" % i)
        h.update(got)
print("rounds ok", flush=True)
c.close()
s.close()

#!/bin/bash
# A JVM echo server on java.nio (one thread, a Selector, non-blocking
# ServerSocketChannel and SocketChannels; TCP and, since Java 16, unix sockets),
# a few lines of Java compiled here with javac, with socat as the client; with
# and without the library on either end, over loopback TCP and a unix socket.
# In every cell: 1 B to 4 MiB sent, shut down for writing, echoed back and
# compared by sha256; the upgrade outcome of every connection the server
# accepted against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init java
it_need java javac socat sha256sum timeout ss

# Both ends shimmed: the JVM's selector loop uses the connection itself (read,
# write, epoll through libc): upgraded. (One end: always plain.)
EXPECT=up
# The JVM listens on a dual-stack IPv6 socket: its side of a TCP connection is
# logged as tcp6 (an IPv4-mapped address), socat's as tcp4.
ECHO_FAMILY_tcp='tcp[46]'
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=20
it_data $IT_SIZES

mkdir -p "$T/java"
cat >"$T/java/Echo.java" <<'JAVA'
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.*;
import java.nio.file.Path;
import java.util.Iterator;

/* Echo server: every byte read is written back; after the client's end of
 * stream, what is left is written, then the connection closed. */
public class Echo {
  static final class Conn {
    final ByteBuffer buf = ByteBuffer.allocate(65536); /* filled by read, drained by write */
    boolean eof;
  }

  public static void main(String[] args) throws IOException {
    ServerSocketChannel l;
    if (args[0].startsWith("tcp:")) {
      l = ServerSocketChannel.open();
      l.bind(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0].substring(4))));
    } else {
      l = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
      l.bind(UnixDomainSocketAddress.of(Path.of(args[0].substring(5))));
    }
    l.configureBlocking(false);
    Selector sel = Selector.open();
    l.register(sel, SelectionKey.OP_ACCEPT);
    System.err.println("java: listening");
    long accepted = 0;
    for (;;) {
      sel.select();
      Iterator<SelectionKey> it = sel.selectedKeys().iterator();
      while (it.hasNext()) {
        SelectionKey k = it.next();
        it.remove();
        if (k.isAcceptable()) {
          SocketChannel c = l.accept();
          if (c == null) continue;
          System.err.println("java: accepted " + (++accepted));
          c.configureBlocking(false);
          c.register(sel, SelectionKey.OP_READ, new Conn());
          continue;
        }
        SocketChannel c = (SocketChannel) k.channel();
        Conn s = (Conn) k.attachment();
        try {
          if (k.isReadable() && s.buf.hasRemaining() && c.read(s.buf) < 0) s.eof = true;
          s.buf.flip();
          c.write(s.buf);
          s.buf.compact();
          boolean pending = s.buf.position() > 0;
          if (s.eof && !pending) {
            c.close();
            continue;
          }
          int ops = (pending ? SelectionKey.OP_WRITE : 0) | (!s.eof && s.buf.hasRemaining() ? SelectionKey.OP_READ : 0);
          k.interestOps(ops);
        } catch (IOException e) {
          System.err.println("java: connection error: " + e);
          c.close();
        }
      }
    }
  }
}
JAVA
if ! timeout 120 javac -d "$T/java" "$T/java/Echo.java" 2>"$T/javac.err"; then
  it_check "javac Echo.java" 0 "$(head -n 5 "$T/javac.err")"
  it_finish
fi

echo_server_start() {
  rm -f "$sock"
  it_start spid "$ss" "$slog" java -Xshare:auto -XX:+UseSerialGC -Xmx64m -cp "$T/java" Echo \
    "$([ "$tr" = tcp ] && echo "tcp:$port" || echo "unix:$sock")" 2>>"$T/server.out"
  it_wait 30 listening
}
listening() {
  kill -0 "$spid" 2>/dev/null || return 1
  grep -q '^java: listening' "$T/server.out" || return 1
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$sock"; fi
}
echo_accepted() { it_count '^java: accepted' "$T/server.out"; }
echo_client_tcp() { ECHO_CLIENT_tcp=(socat -t "$XFER_SECS" - "TCP:127.0.0.1:$port"); }
echo_client_unix() { ECHO_CLIENT_unix=(socat -t "$XFER_SECS" - "UNIX-CONNECT:$sock"); }

it_echo_matrix "$EXPECT" tcp unix
grep -E 'error|Exception' "$T/server.out" 2>/dev/null | sort | uniq -c | head -5 | sed 's/^/    server: /'
it_finish

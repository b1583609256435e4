/* The socket of an upgraded connection: what it carries besides the peer's plain
 * bytes (kicks, descriptor markers, the urgent byte), its drains, and what its
 * end of file or error means (docs/design.md, "Wake-ups"). */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "conn_int.h"
#include "fdtab.h"
#include "log.h"
#include "real.h"
#include "stats.h"

/* Feeds socket bytes past the data (kicks, markers) to the marker parser. */
/* Anything else on the socket of an upgraded connection means bytes reached it
 * without going through the shim (stdio on a socket, a raw system call): their
 * place in the stream is unknown, so the connection fails loudly (reset) rather
 * than lose them or hang. */
static void stray_bytes(struct shm_conn *c, unsigned char b) {
  if (!CONN_WORD(c->sock_err))
    SHM_LOG(WARN, "byte 0x%02x on the socket of an upgraded connection (written around the shim?): reset",
            b);
  CONN_SET(c->sock_err, ECONNRESET);
}

void parse_sock_bytes(struct shm_conn *c, const unsigned char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (c->mk_len == 0 && (b[i] != 'A' || c->family != AF_UNIX)) {
      if (b[i] != 'k') stray_bytes(c, b[i]);
      SHM_STAT_ADD(c->st, kicks_rx, 1); /* stats */
      continue;
    }
    c->mk[c->mk_len++] = b[i];
    if (c->mk_len == (int)sizeof c->mk) {
      uint64_t off;
      memcpy(&off, c->mk + 1, sizeof off);
      c->mk_len = 0;
      queue_anc(c, off);
    }
  }
}


/* Caller holds rlock: the marker parser's state (a marker split across reads, the
 * queue of descriptors) is the readers'. quick, limit: see drain_sock_upto. */
static long drain_locked_upto(int fd, struct shm_conn *c, int quick, long limit) {
  /* A call that outlived another thread's close() leaves the number alone. */
  return __atomic_load_n(&c->dead, __ATOMIC_RELAXED) ? 0 : drain_sock_upto(fd, c, quick, limit);
}
void drain_locked_how(int fd, struct shm_conn *c, int quick) { (void)drain_locked_upto(fd, c, quick, -1); }
void drain_locked(int fd, struct shm_conn *c) { drain_locked_how(fd, c, 0); }

static long drain_trylock(int fd, struct shm_conn *c, int quick, long limit) {
  /* From a poller or a writer: with the read lock, or not at all. A reader that
   * holds it consumes the socket's bytes itself (the marker parser must never run
   * in two threads at once: the D15). */
  if (pthread_mutex_trylock(&c->rlock) != 0) return 0;
  /* Nor while a blocked reader sleeps on the socket (it let the lock go for its
   * sleep): the bytes there are what wakes it, and it consumes them once awake.
   * Taken by another thread first, they would leave it asleep with its data in
   * the ring (a lost wake-up). Looked at under the lock: a reader counts itself
   * before it lets the lock go and uncounts itself once it has it back. */
  long n = __atomic_load_n(&c->rx_asleep, __ATOMIC_RELAXED) ? 0 : drain_locked_upto(fd, c, quick, limit);
  pthread_mutex_unlock(&c->rlock);
  return n;
}

void shm_conn_drain(int fd, struct shm_conn *c) { (void)drain_trylock(fd, c, 0, -1); }

/* Kick bytes left in the socket are bounded: they occupy the peer's send buffer
 * (AF_UNIX) or our receive buffer (TCP), and a kick that finds no room is lost.
 * The peer kicks at most once per arming, so a few per edge. Whatever else an
 * unread edge carried (stray bytes written around the shim) is found by the
 * next drain: at most this many edges later, at end of file, or at close. */
#define SHM_EDGES_UNREAD 16
int shm_conn_edge_explained(struct shm_conn *c) {
  /* TCP: a kick left unread is not acknowledged until the delayed-ACK timer
   * fires (nothing is read, and the answers travel through the ring), and once
   * the peer's congestion window is full of such kicks its next one waits for
   * that timer: 9-15 ms at p99 for a PING every 100 us or 1 ms. Read at once. */
  if (c->family != AF_UNIX) return 0;
  uint32_t k = __atomic_load_n(&c->rx.ctl->kicks, __ATOMIC_ACQUIRE);
  uint32_t seen = __atomic_exchange_n(&c->kicks_seen, k, __ATOMIC_RELAXED);
  if (k == seen || __atomic_add_fetch(&c->edges_unread, 1, __ATOMIC_RELAXED) >= SHM_EDGES_UNREAD) {
    __atomic_store_n(&c->edges_unread, 0, __ATOMIC_RELAXED);
    return 0;
  }
  return 1;
}

long shm_conn_drain_upto(int fd, struct shm_conn *c, int wants_input, int quick, long limit) {
  if (!wants_input && __atomic_load_n(&c->sleepers_rx, __ATOMIC_RELAXED) > 0) return 0;
  return drain_trylock(fd, c, quick, limit);
}
void shm_conn_drain_for(int fd, struct shm_conn *c, int wants_input, int quick) {
  (void)shm_conn_drain_upto(fd, c, wants_input, quick, -1);
}

/* A peer that died without the library's exit path (SIGKILL, _exit) leaves the
 * kicks we sent it unread in its socket, and the kernel answers the close of a
 * socket with unread bytes with a reset. A plain peer's socket would have held
 * nothing unread if it had taken every byte we sent, and its death would read as
 * end of file: so does ours then. Every byte: all of the ring (its tail at our
 * head, as it published it), and, for a client, the bytes written to the socket
 * before the switch, which the server reads before any ring byte. */
static int peer_took_all(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || !c->tx.ctl) return 0;
  uint32_t head = __atomic_load_n(&c->tx.ctl->head, __ATOMIC_RELAXED);
  if (__atomic_load_n(&c->tx.ctl->tail, __ATOMIC_ACQUIRE) != head) return 0;
  if (head != 0) return 1;
  /* Nothing written to the ring: did we write to the socket? */
  return c->plain_sent == 0;
}

/* What a read of the socket of an upgraded connection said (n, errno e): EOF and
 * errors other than EAGAIN/EINTR are recorded. A reset after the peer took every
 * byte is the kicks it left unread when it died: end of file, as with plain
 * sockets, unless the peer itself closed with a reset (gone == 2). */
int reset_is_eof(struct shm_conn *c) { return peer_took_all(c) && peer_left(c) != 2; }
void note_sock_result(struct shm_conn *c, long n, int e) {
  if (n == 0) conn_flag_set(c, SHM_F_SOCK_EOF);
  else if (n < 0 && e == ECONNRESET && reset_is_eof(c)) conn_flag_set(c, SHM_F_SOCK_EOF);
  else if (n < 0 && e != EAGAIN && e != EINTR) CONN_SET(c->sock_err, e);
}

static long sock_recv_max(int fd, int family, struct sock_take *t, int flags, size_t max) {
  t->v = (struct iovec){t->buf, max < sizeof t->buf ? max : sizeof t->buf};
  t->m = (struct msghdr){.msg_iov = &t->v, .msg_iovlen = 1};
  if (family == AF_UNIX) {
    t->m.msg_control = t->ctl.b;
    t->m.msg_controllen = sizeof t->ctl.b;
  }
  return syscall(SYS_recvmsg, fd, &t->m, flags | MSG_CMSG_CLOEXEC);
}
static long sock_recv(int fd, int family, struct sock_take *t, int flags) {
  return sock_recv_max(fd, family, t, flags, sizeof t->buf);
}
/* n, e: what sock_recv returned. EOF and errors other than EAGAIN/EINTR are
 * recorded. Returns *more: the socket may hold more right now (a short read of a
 * stream took everything it had, unless it stopped at descriptors or, with
 * SO_PASSCRED, at another sender's credentials). */
int sock_took(struct shm_conn *c, struct sock_take *t, long n, int e) {
  int more = 0;
  if (n > 0) {
    more = n == (long)sizeof t->buf || t->m.msg_controllen != 0 ||
           (c->family == AF_UNIX && __atomic_load_n(&c->passcred, __ATOMIC_RELAXED) != 1);
    /* The rest of a marker that our buffer cut short last time comes first: its
     * descriptors came with its first bytes, and the kernel, having handed them
     * over, glued the following bytes up to the next marker's, whose descriptors
     * are the ones this read brings. */
    size_t rest = c->mk_len ? sizeof c->mk - (size_t)c->mk_len : 0;
    if (rest > (size_t)n) rest = (size_t)n;
    parse_sock_bytes(c, t->buf, rest);
    if (t->m.msg_controllen) take_fds(c, &t->m);
    parse_sock_bytes(c, t->buf + rest, (size_t)n - rest);
  }
  note_sock_result(c, n, e);
  return more;
}

/* Both halves at once (flags: MSG_DONTWAIT or 0 to block; at most max bytes),
 * read lock held. Returns what recvmsg returned. */
static long take_sock_bytes(int fd, struct shm_conn *c, int flags, size_t max, int *more) {
  struct sock_take t;
  long n = sock_recv_max(fd, c->family, &t, flags, max);
  int e = errno;
  *more = sock_took(c, &t, n, e);
  errno = e;
  return n;
}

/* A blocked reader's sleep without the read lock, in the receive that consumes
 * what wakes it (released if the thread is cancelled in it). */
__attribute__((noinline)) long sleep_consuming(struct sleep_undo *u, int fd, int family,
                                                      struct sock_take *t) {
  return CANCELLABLE(u, sock_recv(fd, family, t, 0));
}

/* The peer's urgent byte waits at a mark in the socket's stream: a normal read that
 * passes the mark makes the kernel forget the byte (and POLLPRI), so kicks behind
 * it stay until the application has taken the byte with recv(MSG_OOB). */
static int at_urgent_mark(int fd, struct shm_conn *c) {
  uint64_t um = peer_urg(c);
  if (!um || um == c->oob_taken) return 0;
  int at = 0;
  return syscall(SYS_ioctl, fd, SIOCATMARK, &at) == 0 && at;
}

/* Consumes what the socket holds now: to EAGAIN (or end of file), or, quick, to
 * the first short read, which saves the system call that would only have said
 * EAGAIN, one per wake-up. Quick only for a waiter that hears of what comes after
 * the short read anyway: an epoll member whose event did not say the peer shut
 * down (the socket's end of file would be a new edge then), a blocked reader (its
 * next sleep ends at once on what is left). A peer killed with its kicks unread
 * left [kicks, FIN] on our socket: a quick drain stops before the FIN. limit >= 0:
 * at most that many bytes (shm_conn_drain_polled), else no bound. Returns how
 * many it read. */
long drain_sock_upto(int fd, struct shm_conn *c, int quick, long limit) {
  if (shm_conn_sock_is_data(c) || limit == 0) return 0;
  if (c->family == AF_UNIX) passcred_on(fd, c); /* known once: whether reads stop at credentials */
  int more = 1;
  long n, total = 0;
  size_t max = limit < 0 ? SIZE_MAX : (size_t)limit;
  while (more && max && !at_urgent_mark(fd, c) && (n = take_sock_bytes(fd, c, MSG_DONTWAIT, max, &more)) > 0) {
    total += n;
    if (limit >= 0) max -= (size_t)n;
    /* The peer is letting go: read on to its end of file (POLLHUP, reset). */
    if (!more && (!quick || peer_left(c) || __atomic_load_n(&c->rx.ctl->wr_closed, __ATOMIC_ACQUIRE)))
      more = 1;
  }
  return total;
}
void drain_sock(int fd, struct shm_conn *c, int quick) { (void)drain_sock_upto(fd, c, quick, -1); }

/* After the application's recv(MSG_OOB): the byte of the peer's latest mark (the
 * kernel keeps only the latest byte) is taken. */
void shm_conn_oob_taken(struct shm_conn *c) {
  /* A client that has no segment yet (pending: the urgent byte came before its
   * first look) has no mark to note; its read dereferenced the missing segment
   * (SIGSEGV: tests/reliability/oobfirst.sh). */
  if (c->seg.base) c->oob_taken = peer_urg(c);
}

/* Is a read at the peer's urgent mark um (as urg[] has it: position + 1), whose
 * byte no read of ours has delivered inline yet? */
int at_new_mark(struct shm_conn *c, uint64_t um) { return um && um - 1 == c->rx_total && um != c->inline_urg; }
static int oob_inline(int fd) {
  int on = 0;
  socklen_t l = sizeof on;
  return syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_OOBINLINE, &on, &l) == 0 && on;
}
/* With SO_OOBINLINE, the byte of the mark um is the stream's next byte: at it,
 * not delivered inline yet, not taken with recv(MSG_OOB). */
int inline_byte_next(int fd, struct shm_conn *c, uint64_t um) {
  return at_new_mark(c, um) && um != c->oob_taken && oob_inline(fd);
}
/* A read would start at the peer's urgent mark, whose byte, with SO_OOBINLINE
 * on, is data waiting in the socket (the kernel reports POLLPRI for it). */
int inline_urgent_due(int fd, struct shm_conn *c) {
  if (!inline_byte_next(fd, c, peer_urg(c))) return 0;
  struct pollfd p = {fd, POLLPRI, 0};
  return poll_now(&p) > 0 && (p.revents & POLLPRI);
}
/* SO_OOBINLINE on: the peer's urgent byte is the stream's next byte at its mark.
 * It waits in the socket, behind kicks: those are drained (drain_sock stops at
 * the mark), then the byte is read as data, into the first byte of iov. 1: it is
 * there; 0: not yet. */
int take_inline_urgent(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int peek) {
  drain_sock(fd, c, 0);
  int at = 0;
  if (syscall(SYS_ioctl, fd, SIOCATMARK, &at) != 0 || !at) return 0;
  struct iovec v[IOV_MAX_LOCAL];
  struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)iov_slice(iov, iovcnt, 0, 1, v, IOV_MAX_LOCAL)};
  return syscall(SYS_recvmsg, fd, &m, MSG_DONTWAIT | (peek ? MSG_PEEK : 0)) == 1;
}


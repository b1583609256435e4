/* Reading an upgraded connection: the peer's plain bytes before its switch point,
 * then the ring; descriptor markers and credentials on AF_UNIX; urgent data; the
 * blocked reader's wait. */
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

static void parse_sock_bytes(struct shm_conn *c, const unsigned char *b, size_t n);
static void take_fds(struct shm_conn *c, struct msghdr *m);
static int reset_is_eof(struct shm_conn *c);

/* A read before we knew of the switch ran past it: the bytes beyond are kicks and
 * markers, not data, and descriptors that came with a marker are not the
 * application's (the kernel ends a read after the message carrying descriptors, so
 * they belong to a marker if one starts in the excess). */
static void plain_overrun(struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t keep,
                          size_t n, struct msghdr *mh) {
  unsigned char ex[512];
  size_t exn = 0, pos = 0;
  int marker = 0;
  for (int i = 0; i < iovcnt && pos < n; i++) {
    for (size_t j = 0; j < iov[i].iov_len && pos < n; j++, pos++) {
      if (pos < keep) continue;
      unsigned char b = ((unsigned char *)iov[i].iov_base)[j];
      if (b == 'A' || c->mk_len) marker = 1;
      if (exn == sizeof ex) {
        parse_sock_bytes(c, ex, exn);
        exn = 0;
      }
      ex[exn++] = b;
    }
  }
  if (marker && mh && mh->msg_controllen) {
    take_fds(c, mh);
    mh->msg_controllen = 0;
  }
  parse_sock_bytes(c, ex, exn);
}

/* Before the peer's switch point: socket bytes are data. Returns bytes, 0 at EOF,
 * -1 with errno, or -2 when the socket's data is exhausted (continue on the ring). */
/* The peer's plain bytes are all read: what its socket holds now is kicks,
 * markers, and maybe its end of file. Those that came while the socket still held
 * data were left there (the epoll and poll drains leave a socket that carries data
 * to the reader), and their edges are spent: take them now, or a peer that died
 * right after its switch-over would never be noticed (redis kept a killed
 * pipelining client for good, 1 run in about 20: tests/integration/redis.sh's
 * kill). Read lock held. */
static void plain_done(int fd, struct shm_conn *c) { drain_sock(fd, c, 0); }

static ssize_t recv_plain(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                          struct msghdr *mh, size_t ctl_cap) {
  /* A signal handler on top of our own check of the client's answer cannot wait
   * for its verdict, and without it cannot tell data from kicks: EAGAIN, as for a
   * handler that finds its thread inside a read (docs/design.md, Signal handlers). */
  if (c->role == SHM_SERVER && shm_conn_proving_here(c)) {
    errno = EAGAIN;
    return -1;
  }
  if (refresh_switch(c) < 0) {
    errno = ECONNRESET;
    return -1;
  }
  int sw = shm_conn_rx_switched(c);
  if (sw && CONN_WORD(c->sock_read) >= CONN_WORD(c->rx_plain)) return -2;
  size_t limit = sw ? (size_t)(CONN_WORD(c->rx_plain) - CONN_WORD(c->sock_read)) : SIZE_MAX;
  struct iovec v[IOV_MAX_LOCAL];
  int k = iov_slice(iov, iovcnt, 0, limit, v, IOV_MAX_LOCAL);
  struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)k};
  if (mh) { /* plain bytes may carry the client's ancillary data, as without us */
    m.msg_control = mh->msg_control;
    m.msg_controllen = ctl_cap;
  }
  /* A reader about to sleep on the socket declares itself asleep on the ring too:
   * the peer's first ring write then kicks it awake even if its switch-over kick
   * never came (the peer exec'd between its switch and its first write). */
  int armed = shm_conn_state(c) == SHM_CONN_UPGRADED && !(flags & MSG_DONTWAIT) && !conn_nonblock(fd, c);
  if (armed) armed = arm_rx(c);
  struct sleep_undo u = {c, armed, 0, &c->rlock, 0}; /* the caller holds rlock */
  ssize_t n = recvmsg_locked(&u, fd, &m, flags & (MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
  int e = errno;
  if (armed) disarm_rx(c);
  errno = e;
  if (mh) {
    mh->msg_controllen = n >= 0 ? m.msg_controllen : 0;
    mh->msg_flags = m.msg_flags;
  }
  /* Our kicks that reached the peer's socket after its close: the kernel's reset
   * follows its plain bytes, which were all read (a reset never overtakes data
   * queued before it), as its FIN did (proofrace: the server wrote everything
   * through the socket and closed as our switch-over kick was on its way). */
  if (n < 0 && e == ECONNRESET && reset_is_eof(c)) n = 0;
  if (n <= 0) {
    if (n == 0) CONN_SET(c->sock_eof, 1);
    return n;
  }
  if (!sw) {
    if (refresh_switch(c) < 0) {
      errno = ECONNRESET;
      return -1;
    }
    /* The peer switched while we read: bytes past its switch point are kicks and
     * ancillary-data markers. */
    if (shm_conn_rx_switched(c) && CONN_WORD(c->sock_read) + (uint64_t)n > CONN_WORD(c->rx_plain)) {
      size_t keep = (size_t)(CONN_WORD(c->rx_plain) - CONN_WORD(c->sock_read));
      if (!(flags & MSG_PEEK)) plain_overrun(c, v, k, keep, (size_t)n, mh);
      n = (ssize_t)keep;
    }
    if (n == 0) {
      if (!(flags & MSG_PEEK)) plain_done(fd, c);
      return -2;
    }
  }
  if (!(flags & MSG_PEEK)) {
    CONN_SET(c->sock_read, c->sock_read + (uint64_t)n); /* one writer (rlock); pollers read it */
    SHM_STAT_ADD(c->st, rx_sock, n); /* stats */
    if (shm_conn_rx_switched(c) && CONN_WORD(c->sock_read) == CONN_WORD(c->rx_plain)) plain_done(fd, c);
  }
  return n;
}

/* The socket of an upgraded connection carries kick bytes ('k') and, on AF_UNIX,
 * ancillary-data markers: 'A' and the 8-byte stream offset of the first data byte
 * the descriptors attached to the marker go with. The kernel hands over a marker's
 * descriptors with the read that returns its first byte, and ends that read after
 * the marker, so they belong to the next marker completed.
 *
 * What a peer can make us hold is bounded, as the kernel bounds it by message and
 * socket buffer: a marker's offset lies within two rings of our read position (its
 * sender wrote it before data that had to fit in the ring, ahead of a tail we had
 * published; the second ring covers a reader thread that published its tail but
 * not yet rx_total), offsets strictly increase (each marker precedes at least one
 * byte), and a connection queues at most ANC_MAX_MARKERS markers and
 * anc_max_fds() descriptors. Anything else is a corrupt stream: the connection is
 * reset (ECONNRESET on the next read or write, logged) and what the peer sends
 * after is closed at once. */
#define ANC_MAX_MARKERS 4096
#define ANC_MAX_FDS 4096

/* Descriptors one connection may hold for the application: a quarter of the
 * descriptor limit (never EMFILE for the application because of one peer). */
static uint64_t anc_max_fds(void) {
  struct rlimit rl;
  uint64_t m = ANC_MAX_FDS;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < m)
    m = rl.rlim_cur / 4 > 16 ? rl.rlim_cur / 4 : 16;
  return m;
}

static uint64_t anc_queued_fds(const struct shm_conn *c) {
  return c->anc_head ? c->anc_tail->fdsum - c->anc_head->fdsum + (uint64_t)c->anc_head->nfds : 0;
}

static void anc_violation(struct shm_conn *c, const char *why, unsigned long long v) {
  if (!CONN_WORD(c->sock_err)) SHM_LOG(WARN, "peer broke the descriptor-marker rules (%s %llu): connection reset", why, v);
  CONN_SET(c->sock_err, ECONNRESET);
}

/* The connection is reset or ended: nothing the peer sends is queued any more. */
static int anc_closed(const struct shm_conn *c) { return CONN_WORD(c->sock_err) || CONN_WORD(c->sock_eof); }

static void queue_anc(struct shm_conn *c, uint64_t off) {
  struct shm_anc *a = NULL;
  if (anc_closed(c)) {
  } else if (off > c->rx_total + 2 * (uint64_t)c->seg.ring_size) {
    anc_violation(c, "offset beyond what the ring can hold ahead of us:", (unsigned long long)off);
  } else if (c->anc_head && off <= c->anc_tail->off) {
    anc_violation(c, "offset not after the previous marker's:", (unsigned long long)off);
  } else if (c->anc_head && c->anc_tail->seq - c->anc_head->seq + 1 >= ANC_MAX_MARKERS) {
    anc_violation(c, "markers queued, at most", ANC_MAX_MARKERS);
  } else {
    a = malloc(sizeof *a + (size_t)c->mk_nfds * sizeof(int));
  }
  if (!a) {
    for (int i = 0; i < c->mk_nfds; i++) syscall(SYS_close, c->mk_fds[i]);
  } else {
    a->next = NULL;
    a->off = off;
    a->has_cred = c->mk_has_cred;
    a->cred = c->mk_cred;
    a->nfds = c->mk_nfds;
    if (c->mk_nfds) memcpy(a->fds, c->mk_fds, (size_t)c->mk_nfds * sizeof(int));
    /* The tail stays valid while the list is not empty: entries leave from the head. */
    if (c->anc_head) {
      a->seq = c->anc_tail->seq + 1;
      a->fdsum = c->anc_tail->fdsum + (uint64_t)a->nfds;
      c->anc_tail->next = a;
    } else {
      a->seq = 0;
      a->fdsum = (uint64_t)a->nfds;
      c->anc_head = a;
    }
    c->anc_tail = a;
  }
  free(c->mk_fds);
  c->mk_fds = NULL;
  c->mk_nfds = 0;
  c->mk_has_cred = 0;
}

static void close_cmsg_fds(const struct cmsghdr *cm, int k) {
  for (int i = 0; i < k; i++) {
    int x;
    memcpy(&x, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof x);
    syscall(SYS_close, x);
  }
}

static void take_fds(struct shm_conn *c, struct msghdr *m) {
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
        cm->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
      /* With SO_PASSCRED the kernel attaches credentials to every message: those
       * of a kick say nothing, a marker's go with its data. The last seen wins. */
      memcpy(&c->mk_cred, CMSG_DATA(cm), sizeof c->mk_cred);
      c->mk_has_cred = 1;
      continue;
    }
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (!anc_closed(c) && anc_queued_fds(c) + (uint64_t)c->mk_nfds + (uint64_t)k > anc_max_fds())
      anc_violation(c, "descriptors queued, at most", (unsigned long long)anc_max_fds());
    if (anc_closed(c)) {
      close_cmsg_fds(cm, k);
      continue;
    }
    int *n = realloc(c->mk_fds, (size_t)(c->mk_nfds + k) * sizeof(int));
    if (!n) {
      close_cmsg_fds(cm, k);
      continue;
    }
    memcpy(n + c->mk_nfds, CMSG_DATA(cm), (size_t)k * sizeof(int));
    c->mk_fds = n;
    c->mk_nfds += k;
  }
}

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

static void parse_sock_bytes(struct shm_conn *c, const unsigned char *b, size_t n) {
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
 * queue of descriptors) is the readers'. quick: see drain_sock. */
static void drain_locked_how(int fd, struct shm_conn *c, int quick) {
  /* A call that outlived another thread's close() leaves the number alone. */
  if (!__atomic_load_n(&c->dead, __ATOMIC_RELAXED)) drain_sock(fd, c, quick);
}
static void drain_locked(int fd, struct shm_conn *c) { drain_locked_how(fd, c, 0); }

static void drain_trylock(int fd, struct shm_conn *c, int quick) {
  /* From a poller or a writer: with the read lock, or not at all. A reader that
   * holds it consumes the socket's bytes itself (the marker parser must never run
   * in two threads at once: the D15). */
  if (pthread_mutex_trylock(&c->rlock) != 0) return;
  /* Nor while a blocked reader sleeps on the socket (it let the lock go for its
   * sleep): the bytes there are what wakes it, and it consumes them once awake.
   * Taken by another thread first, they would leave it asleep with its data in
   * the ring (a lost wake-up). Looked at under the lock: a reader counts itself
   * before it lets the lock go and uncounts itself once it has it back. */
  if (!__atomic_load_n(&c->rx_asleep, __ATOMIC_RELAXED)) drain_locked_how(fd, c, quick);
  pthread_mutex_unlock(&c->rlock);
}

void shm_conn_drain(int fd, struct shm_conn *c) { drain_trylock(fd, c, 0); }

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

void shm_conn_drain_for(int fd, struct shm_conn *c, int wants_input, int quick) {
  if (!wants_input && __atomic_load_n(&c->sleepers_rx, __ATOMIC_RELAXED) > 0) return;
  drain_trylock(fd, c, quick);
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
static int reset_is_eof(struct shm_conn *c) { return peer_took_all(c) && peer_left(c) != 2; }
static void note_sock_result(struct shm_conn *c, long n, int e) {
  if (n == 0) CONN_SET(c->sock_eof, 1);
  else if (n < 0 && e == ECONNRESET && reset_is_eof(c)) CONN_SET(c->sock_eof, 1);
  else if (n < 0 && e != EAGAIN && e != EINTR) CONN_SET(c->sock_err, e);
}

/* One read of kicks and markers from the socket, in two halves: the receive
 * (sock_recv: no lock needed, nothing of the connection is touched) and what it
 * brought (sock_took: under the read lock). */
struct sock_take {
  unsigned char buf[256];
  struct iovec v;
  struct msghdr m;
  union { /* last: clang takes CMSG_SPACE for a variable size */
    struct cmsghdr h;
    char b[CMSG_SPACE(253 * sizeof(int))];
  } ctl;
};
static long sock_recv(int fd, int family, struct sock_take *t, int flags) {
  t->v = (struct iovec){t->buf, sizeof t->buf};
  t->m = (struct msghdr){.msg_iov = &t->v, .msg_iovlen = 1};
  if (family == AF_UNIX) {
    t->m.msg_control = t->ctl.b;
    t->m.msg_controllen = sizeof t->ctl.b;
  }
  return syscall(SYS_recvmsg, fd, &t->m, flags | MSG_CMSG_CLOEXEC);
}
/* n, e: what sock_recv returned. EOF and errors other than EAGAIN/EINTR are
 * recorded. Returns *more: the socket may hold more right now (a short read of a
 * stream took everything it had, unless it stopped at descriptors or, with
 * SO_PASSCRED, at another sender's credentials). */
static int sock_took(struct shm_conn *c, struct sock_take *t, long n, int e) {
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

/* Both halves at once (flags: MSG_DONTWAIT or 0 to block), read lock held.
 * Returns what recvmsg returned. */
static long take_sock_bytes(int fd, struct shm_conn *c, int flags, int *more) {
  struct sock_take t;
  long n = sock_recv(fd, c->family, &t, flags);
  int e = errno;
  *more = sock_took(c, &t, n, e);
  errno = e;
  return n;
}

/* A blocked reader's sleep without the read lock, in the receive that consumes
 * what wakes it (released if the thread is cancelled in it). */
static __attribute__((noinline)) long sleep_consuming(struct sleep_undo *u, int fd, int family,
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

static int passcred_on(int fd, struct shm_conn *c);

/* Consumes what the socket holds now: to EAGAIN (or end of file), or, quick, to
 * the first short read, which saves the system call that would only have said
 * EAGAIN, one per wake-up. Quick only for a waiter that hears of what comes after
 * the short read anyway: an epoll member whose event did not say the peer shut
 * down (the socket's end of file would be a new edge then), a blocked reader (its
 * next sleep ends at once on what is left). A peer killed with its kicks unread
 * left [kicks, FIN] on our socket: a quick drain stops before the FIN. */
void drain_sock(int fd, struct shm_conn *c, int quick) {
  if (shm_conn_sock_is_data(c)) return;
  if (c->family == AF_UNIX) passcred_on(fd, c); /* known once: whether reads stop at credentials */
  int more = 1;
  while (more && !at_urgent_mark(fd, c) && take_sock_bytes(fd, c, MSG_DONTWAIT, &more) > 0) {
    /* The peer is letting go: read on to its end of file (POLLHUP, reset). */
    if (!more && (!quick || peer_left(c) || __atomic_load_n(&c->rx.ctl->wr_closed, __ATOMIC_ACQUIRE)))
      more = 1;
  }
}

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
static int at_new_mark(struct shm_conn *c, uint64_t um) { return um && um - 1 == c->rx_total && um != c->inline_urg; }
static int oob_inline(int fd) {
  int on = 0;
  socklen_t l = sizeof on;
  return syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_OOBINLINE, &on, &l) == 0 && on;
}
/* With SO_OOBINLINE, the byte of the mark um is the stream's next byte: at it,
 * not delivered inline yet, not taken with recv(MSG_OOB). */
static int inline_byte_next(int fd, struct shm_conn *c, uint64_t um) {
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
static int take_inline_urgent(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int peek) {
  drain_sock(fd, c, 0);
  int at = 0;
  if (syscall(SYS_ioctl, fd, SIOCATMARK, &at) != 0 || !at) return 0;
  struct iovec v[IOV_MAX_LOCAL];
  struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)iov_slice(iov, iovcnt, 0, 1, v, IOV_MAX_LOCAL)};
  return syscall(SYS_recvmsg, fd, &m, MSG_DONTWAIT | (peek ? MSG_PEEK : 0)) == 1;
}

void close_fds(struct shm_anc *a) {
  for (int i = 0; i < a->nfds; i++) syscall(SYS_close, a->fds[i]);
}

/* Control messages for a ring read, as the kernel builds them for a unix stream:
 * the sender's credentials first when SO_PASSCRED is on (those the sender
 * attached to this data, else the peer's), then the descriptors that came with
 * the data (as many as fit: MSG_CTRUNC and the rest closed when they do not;
 * kept for the real read when peeking). */
static int passcred_on(int fd, struct shm_conn *c) {
  int v = __atomic_load_n(&c->passcred, __ATOMIC_RELAXED);
  if (!v) {
    int on = 0;
    socklen_t l = sizeof on;
    v = syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PASSCRED, &on, &l) == 0 && on ? 2 : 1;
    __atomic_store_n(&c->passcred, v, __ATOMIC_RELAXED);
    if (v == 2 && c->seg.base) __atomic_store_n(&c->seg.base->conn.want_cred[c->role - 1], 1, __ATOMIC_RELEASE);
  }
  return v == 2;
}

void shm_conn_want_cred(int fd, struct shm_conn *c) {
  if (c->family == AF_UNIX && c->seg.base) passcred_on(fd, c);
}



static void deliver_anc(int fd, struct shm_conn *c, struct shm_anc *a, struct msghdr *mh,
                        size_t ctl_cap, int flags) {
  int peek = flags & MSG_PEEK;
  size_t used = 0;
  /* A marker's credentials are the writer's until its next marker (cred_due). */
  if (a && a->has_cred && !peek) c->rx_cred = a->cred;
  if (mh && passcred_on(fd, c)) {
    struct ucred cr;
    if (a && a->has_cred) {
      cr = a->cred;
    } else if (c->rx_cred.pid) {
      cr = c->rx_cred;
    } else {
      if (!c->peer_cred.pid) {
        socklen_t l = sizeof c->peer_cred;
        syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &c->peer_cred, &l);
      }
      cr = c->peer_cred;
    }
    if (mh->msg_control && ctl_cap >= CMSG_LEN(sizeof cr)) {
      struct cmsghdr *cm = mh->msg_control;
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_CREDENTIALS;
      cm->cmsg_len = CMSG_LEN(sizeof cr);
      memcpy(CMSG_DATA(cm), &cr, sizeof cr);
      used = CMSG_SPACE(sizeof cr);
    } else {
      mh->msg_flags |= MSG_CTRUNC;
    }
  }
  if (a && a->nfds && !peek) {
    size_t room = ctl_cap > used ? ctl_cap - used : 0;
    int fit = mh && mh->msg_control && room >= CMSG_LEN(sizeof(int))
                  ? (int)((room - CMSG_LEN(0)) / sizeof(int))
                  : 0;
    if (fit > a->nfds) fit = a->nfds;
    if (fit) {
      struct cmsghdr *cm = (struct cmsghdr *)((char *)mh->msg_control + used);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN((size_t)fit * sizeof(int));
      memcpy(CMSG_DATA(cm), a->fds, (size_t)fit * sizeof(int));
      used += CMSG_SPACE((size_t)fit * sizeof(int));
    }
    for (int i = 0; i < fit; i++)
      if (!(flags & MSG_CMSG_CLOEXEC)) syscall(SYS_fcntl, a->fds[i], F_SETFD, 0);
    for (int i = fit; i < a->nfds; i++) syscall(SYS_close, a->fds[i]);
    if (fit < a->nfds && mh) mh->msg_flags |= MSG_CTRUNC;
  }
  if (mh) mh->msg_controllen = used < ctl_cap ? used : ctl_cap;
}

/* AF_UNIX: how many ring bytes this read may take so that descriptors arrive with
 * the first byte of the data they were sent with; *at is set when they go with
 * this read. SIZE_MAX: no limit. */
static size_t anc_limit(int fd, struct shm_conn *c, struct shm_anc **at) {
  *at = NULL;
  /* Markers are on the socket before the anc_seq bump, which precedes the head
   * store that made the data we are about to read visible. */
  uint32_t seq = __atomic_load_n(&c->rx.ctl->anc_seq, __ATOMIC_ACQUIRE); /* A2, after R1 */
  if (seq != c->anc_seen) {
    drain_locked(fd, c);
    c->anc_seen = seq;
  }
  while (c->anc_head && c->anc_head->off < c->rx_total) { /* impossible unless hostile */
    struct shm_anc *a = c->anc_head;
    c->anc_head = a->next;
    close_fds(a);
    free(a);
  }
  struct shm_anc *a = c->anc_head;
  if (!a) return SIZE_MAX;
  if (a->off > c->rx_total) return (size_t)(a->off - c->rx_total);
  *at = a;
  if (!a->next) return SIZE_MAX;
  if (a->next->off <= a->off) {
    /* An honest sender's markers advance (each precedes at least one byte). A
     * repeated offset would make this read take 0 bytes, which the caller would
     * report as end of file: fail the connection instead (reset, not EOF). */
    c->rx.err = EPROTO;
    return 0;
  }
  return (size_t)(a->next->off - c->rx_total);
}

static int data_ready(void *a) {
  struct shm_conn *c = a;
  return shm_ring_readable(&c->rx, 1) != 0 || __atomic_load_n(&c->rx.ctl->wr_closed, __ATOMIC_ACQUIRE);
}


/* A blocking read found the ring empty: spin, then sleep until a kick, the
 * peer's exit, a signal or SO_RCVTIMEO. Called, and returns, with the read lock
 * held (tl_rheld == c; rprev: the caller's previous tl_rheld). 1: look again;
 * 0: the call ends with *err (EINTR, EAGAIN). */
/* Another reader of ours already sleeps on the socket, in the receive that
 * consumes the kick (below): the kernel wakes every sleeper on it, but the kick is
 * gone before a second one looks, which then slept on with the data in the ring
 * (conc tworead: two threads in read(1 byte), two bytes come). So a second reader
 * sleeps on the ring's futex: the peer's publish wakes it (armed as a futex
 * sleeper), and so does a reader of ours that leaves data behind
 * (wake_co_readers). In steps of at most 50 ms, after each of which the caller
 * looks again (the peer's exit is seen by the socket's sleeper, or by us once we
 * are the only one). SO_RCVTIMEO counts from the first sleep; a signal ends the
 * wait as the kernel's blocked recv: restarted with SA_RESTART, unless
 * SO_RCVTIMEO is set. Read lock held on entry and return; armed (arm_rx). */
static int recv_wait_second(int fd, struct shm_conn *c, struct shm_conn *rprev, uint32_t seq,
                            uint64_t *first_sleep_ns, int *err) {
  shm_wait_arm_data(&c->rx, SHM_SLEEP_FUTEX);
  int step = 50, tmo = timeout_ms(fd, SO_RCVTIMEO);
  if (!*first_sleep_ns) *first_sleep_ns = shm_now_ns();
  int64_t left = timeout_left_ns(tmo, *first_sleep_ns);
  int64_t left_ms = left < 0 ? -1 : (left + 999999) / 1000000; /* rounded up: 0 only when none is left */
  if (left_ms >= 0 && left_ms < step) step = (int)left_ms;
  int r = 0, e = 0;
  if (step && !data_ready(c)) {
    struct sleep_undo u = {c, 1, 0, NULL, 0};
    pthread_mutex_unlock(&c->rlock);
    tl_rheld = rprev;
    r = space_sleep(&u, &c->rx.ctl->data_seq, seq, step, tmo < 0);
    e = errno;
    tl_rheld = c;
    pthread_mutex_lock(&c->rlock);
  }
  shm_wait_disarm_data(&c->rx, SHM_SLEEP_FUTEX);
  disarm_rx(c);
  if (data_ready(c)) return 1;
  if (r < 0 && e == EINTR) {
    *err = EINTR;
    return 0;
  }
  if (timeout_left_ns(tmo, *first_sleep_ns) == 0) {
    *err = EAGAIN;
    return 0;
  }
  return 1;
}

/* A read that returns with data still in the ring wakes our other readers asleep
 * on its futex (recv_wait_second): the kick that announced it is gone. */
static void wake_co_readers(struct shm_conn *c) {
  if (__atomic_load_n(&c->rx.ctl->cons_armed, __ATOMIC_RELAXED) & SHM_SLEEP_FUTEX && data_ready(c))
    shm_futex_wake(&c->rx.ctl->data_seq);
}

static int recv_wait(int fd, struct shm_conn *c, struct shm_conn *rprev, uint64_t *first_sleep_ns, int *err) {
  shm_wait_spinning(&c->rx, 1);
  int won = shm_spin(&c->spin_rx, data_ready, c);
  shm_wait_spinning(&c->rx, 0);
  if (won) {
    SHM_STAT_ADD(c->st, spins_won, 1); /* stats */
    return 1;
  }
  uint32_t seq = __atomic_load_n(&c->rx.ctl->data_seq, __ATOMIC_ACQUIRE); /* before the last look */
  if (!arm_rx(c)) { /* a signal handler on top of its thread's c->lock: it cannot sleep unarmed */
    *err = EAGAIN;
    return 0;
  }
  if (data_ready(c)) {
    disarm_rx(c);
    return 1;
  }
  if (__atomic_load_n(&c->rx_asleep, __ATOMIC_RELAXED) > 0)
    return recv_wait_second(fd, c, rprev, seq, first_sleep_ns, err);
  /* Sleep in the kernel on the real socket, in a blocking receive of what the
   * peer sends there (or a peek, see below): a kick or the peer's exit ends the
   * sleep, and SO_RCVTIMEO and SA_RESTART behave exactly as for a plain recv().
   * Without the read lock: another thread's non-blocking read (or one with its
   * own timeout) must not wait for our sleep, as with the kernel. The system
   * call is interposed by nobody: the number stays the file we sleep on even if
   * another thread closes it meanwhile. */
  /* With SO_RCVTIMEO, the timeout bounds the whole call, as the kernel's: a
   * wake-up that brings no data (a kick for room, for another thread of ours
   * waiting to write) must not start it again. Then the sleep is a poll for
   * the time left: the kernel's recv() with a timeout, like poll(), is never
   * restarted after a signal handler, so EINTR is the same.
   * The first sleep asks nothing: the kernel applies SO_RCVTIMEO to the peek
   * itself, and most calls end with that sleep (one system call less per
   * blocked read). Only a wake-up without data makes us ask, and the time
   * left is then counted from the first sleep's start. */
  int64_t left = -1;
  if (!*first_sleep_ns) *first_sleep_ns = shm_now_ns();
  else left = timeout_left_ns(timeout_ms(fd, SO_RCVTIMEO), *first_sleep_ns);
  shm_spin_sleeping();
  struct sleep_undo u = {c, 1, 0, NULL, 1};
  /* The only sleeper, and no urgent data: the sleep consumes what wakes it, as a
   * blocked read() consumes its data (one system call per wake-up, as plain,
   * where a peek and the drain after it made two). A peek leaves the kick
   * unread, and a reader whose descriptor another thread closed meanwhile holds
   * the file's last reference: the kernel then closes the socket with the kick
   * unread, a reset for the peer instead of end of file (matrix closerace, 2 runs
   * in 15). What it took is looked at under the lock afterwards: nobody else
   * drains meanwhile (rx_asleep), so markers stay in order. Not once the peer has
   * sent urgent data: a read that starts at the urgent mark steps over the byte,
   * and the kernel forgets it (the peer kicks before an urgent byte it sends while
   * we are armed, so that this read stops at the mark: shm_conn_send_oob). */
  int consume = __atomic_fetch_add(&c->rx_asleep, 1, __ATOMIC_RELAXED) == 0 && left < 0 && !peer_urg(c);
  struct sock_take t;
  pthread_mutex_unlock(&c->rlock);
  tl_rheld = rprev;
  long r = left == 0 ? 0 : consume ? sleep_consuming(&u, fd, c->family, &t) : sleep_on_sock(&u, fd, left);
  int e = errno;
  if (left >= 0 && r == 0) r = -1, e = EAGAIN; /* SO_RCVTIMEO ran out */
  tl_rheld = c;
  pthread_mutex_lock(&c->rlock);
  __atomic_sub_fetch(&c->rx_asleep, 1, __ATOMIC_RELAXED);
  disarm_rx(c);
  if (r < 0 && (e == EINTR || e == EAGAIN || e == EWOULDBLOCK)) {
    *err = e;
    return 0;
  }
  if (consume) {
    int more = sock_took(c, &t, r, e);
    if (r > 0) {
      if (more) drain_locked_how(fd, c, 1);
      shm_spin_woke_at(&c->spin_rx, __atomic_load_n(&c->rx.ctl->woke_ns, __ATOMIC_RELAXED));
    }
    return 1;
  }
  if (left < 0) note_sock_result(c, r, e); /* the peek took the socket's error: keep it */
  if (r > 0) {
    /* A reader still asleep in the consuming receive takes the bytes itself:
     * a kick drained here would leave it asleep with data in the ring. */
    if (!__atomic_load_n(&c->rx_asleep, __ATOMIC_RELAXED)) drain_locked_how(fd, c, 1);
    shm_spin_woke_at(&c->spin_rx, __atomic_load_n(&c->rx.ctl->woke_ns, __ATOMIC_RELAXED));
  }
  return 1;
}

enum { RECV_DONE, RECV_AGAIN, RECV_WAIT, RECV_RING };

/* The ring is empty (got: bytes this call has already): end the call (*ret),
 * look again, or wait. *nonblock: -1 until known. Read lock held. */
static int recv_empty(int fd, struct shm_conn *c, int flags, size_t got, int waitall, int *nonblock,
                      ssize_t *ret) {
  /* Empty. Shut down for reading? */
  if (CONN_WORD(c->rd_shut) || (got && !waitall)) {
    *ret = (ssize_t)got;
    return RECV_DONE;
  }
  if (*nonblock < 0) *nonblock = (flags & MSG_DONTWAIT) || conn_nonblock(fd, c);
  if (*nonblock || CONN_WORD(c->sock_eof) || CONN_WORD(c->sock_err)) {
    /* Anything the socket has to say (the peer's exit)? A blocking reader does
     * not ask: its sleep on the socket would end at once for the same news. */
    drain_locked(fd, c);
    if (shm_ring_readable(&c->rx, 1) > 0) return RECV_AGAIN;
    if (CONN_WORD(c->sock_err)) {
      /* As the kernel does: a read that already has bytes returns them, and the
       * error is reported by the next call (clearing it here would turn that
       * call into end of file: the reset would be lost). */
      if (got) {
        *ret = (ssize_t)got;
        return RECV_DONE;
      }
      int e = __atomic_exchange_n(&c->sock_err, 0, __ATOMIC_RELAXED); /* reported once */
      CONN_SET(c->sock_eof, 1);
      if (!e) { /* another thread reported it just now: what is left is the end */
        *ret = 0;
        return RECV_DONE;
      }
      errno = e;
      *ret = -1;
      return RECV_DONE;
    }
    if (CONN_WORD(c->sock_eof) || *nonblock) {
      if (got) *ret = (ssize_t)got;
      else if (CONN_WORD(c->sock_eof)) *ret = 0;
      else {
        errno = EAGAIN;
        *ret = -1;
      }
      return RECV_DONE;
    }
  }
  return RECV_WAIT;
}

/* Before the peer's switch point the socket holds its data: read it (and, past
 * the point, go on into the ring: RECV_RING). Read lock held. */
static int recv_sock_part(int fd, struct shm_conn *c, const struct iovec *cur, int cnt, int flags,
                          struct msghdr *mh, size_t ctl_cap, size_t total, size_t *got, int *waitall,
                          ssize_t *ret) {
  int peek = flags & MSG_PEEK;
  ssize_t n = recv_plain(fd, c, cur, cnt, flags, mh, ctl_cap);
  if (n > 0) {
    *got += (size_t)n;
    /* The kernel ends a read at a message carrying descriptors; reading on
     * would also overwrite them in the control buffer (lost, and leaked). */
    if (mh && mh->msg_controllen) *waitall = 0;
    if (*waitall && *got < total) return RECV_AGAIN;
    /* Ring data right behind the switch point belongs to this read, as the
     * kernel would return it: a short read tells edge-triggered programs
     * (nginx) that the socket is drained, and they wait for an edge that
     * never comes, the data being there already. */
    if (!peek && *got < total && !shm_conn_sock_is_data(c) && !(mh && mh->msg_controllen)) return RECV_AGAIN;
    *ret = (ssize_t)*got;
    return RECV_DONE;
  }
  if (n == 0 && !*got && shm_conn_state(c) == SHM_CONN_UPGRADED) {
    /* The peer reset the connection: not end of file. */
    int e = peek ? 0 : shm_conn_take_error(c);
    if (e) {
      errno = e;
      n = -1;
    }
  }
  if (n == 0 || (n == -1 && !(*got && (errno == EAGAIN || errno == EINTR)))) {
    *ret = *got ? (ssize_t)*got : n;
    return RECV_DONE;
  }
  if (n == -1) {
    *ret = (ssize_t)*got;
    return RECV_DONE;
  }
  return RECV_RING; /* n == -2: the rest comes from the ring */
}

/* The peer's urgent mark ahead (its place in the stream, as urg[] has it): a read
 * stops there, as the kernel's does, so that SIOCATMARK can tell the application
 * it got there; with SO_OOBINLINE the urgent byte, from the socket, is the next
 * byte of the stream. Narrows *cur and *cnt (into v), or ends the call (*ret,
 * RECV_DONE), or took the inline byte (RECV_AGAIN); *hold: the byte has not come
 * yet, the ring counts as empty. */
static int recv_urgent_part(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int peek,
                            size_t total, size_t *got, struct iovec *v, const struct iovec **cur, int *cnt,
                            int *hold, ssize_t *ret) {
  uint64_t um = peer_urg(c);
  if (um && um - 1 > c->rx_total && um - 1 - c->rx_total < total - *got) {
    *cnt = iov_slice(iov, iovcnt, *got, (size_t)(um - 1 - c->rx_total), v, IOV_MAX_LOCAL);
    *cur = v;
  } else if (at_new_mark(c, um) && *got) {
    *ret = (ssize_t)*got;
    return RECV_DONE;
  } else if (inline_byte_next(fd, c, um)) {
    /* Nothing past the mark before the urgent byte. */
    if (!take_inline_urgent(fd, c, iov, iovcnt, peek)) {
      *hold = 1;
      return RECV_RING;
    }
    *got = 1;
    if (peek) {
      *ret = 1;
      return RECV_DONE;
    }
    c->inline_urg = um;
    return RECV_AGAIN;
  }
  return RECV_RING;
}

/* AF_UNIX: a read ends before the next message that brings descriptors (*at: the
 * queued descriptors this read starts with), and goes no further than the data
 * seen before the markers were looked for (*seen: readable then; what the writer
 * published since may begin with descriptors not collected yet). RECV_DONE with
 * *ret: descriptors start a new read, as in the kernel. */
static int recv_anc_part(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, size_t total, size_t got,
                         struct iovec *v, const struct iovec **cur, int *cnt, struct shm_anc **at, ssize_t *seen,
                         ssize_t *ret) {
  if (c->family != AF_UNIX || (*seen = shm_ring_readable(&c->rx, total - got)) <= 0) return RECV_RING;
  size_t lim = anc_limit(fd, c, at);
  if (*at && got) {
    *ret = (ssize_t)got;
    return RECV_DONE;
  }
  if (lim > (size_t)*seen) lim = (size_t)*seen;
  if (lim < iov_total(*cur, *cnt)) {
    *cnt = iov_slice(iov, iovcnt, got, lim, v, IOV_MAX_LOCAL);
    *cur = v;
  }
  return RECV_RING;
}

/* n ring bytes read (got before them): their descriptors and credentials to the
 * application (or closed when it gave no room), the count, the writer's wake-up. */
static void recv_took(int fd, struct shm_conn *c, struct shm_anc *at, struct msghdr *mh, size_t ctl_cap, int flags,
                      ssize_t n, size_t got, int *waitall) {
  int peek = flags & MSG_PEEK;
  if (c->family == AF_UNIX && mh && !got) deliver_anc(fd, c, at, mh, ctl_cap, flags);
  else if (at && !peek) deliver_anc(fd, c, at, NULL, 0, flags); /* no room: closed */
  if (peek) return;
  c->rx_total += (uint64_t)n;
  SHM_STAT_ADD(c->st, rx_ring, n); /* stats */
  if (at) {
    c->anc_head = at->next;
    free(at);
    *waitall = 0; /* the kernel ends a read at a message carrying descriptors */
  }
  wake_producer(fd, c);
}

/* The peer shut down its writing side and the ring is read out (got: this call's
 * bytes): end of file, or the reset that comes after the data instead. Before end
 * of file, one look at the socket: bytes written around the shim (a raw write(2)
 * before the peer's last libc writes) are there by now, and must fail the
 * connection loudly rather than vanish. */
static ssize_t recv_ring_end(int fd, struct shm_conn *c, size_t got, int peek) {
  if (!got && !CONN_WORD(c->sock_eof) && !CONN_WORD(c->sock_err)) drain_locked(fd, c);
  int e = got || peek ? 0 : shm_conn_take_error(c);
  if (!e) return (ssize_t)got;
  errno = e;
  return -1;
}

/* The common read: data in the ring, past the peer's switch point, no urgent
 * byte ever sent, no descriptors on their way (AF_UNIX), no flags that change
 * what a read takes. The general path below would do exactly this (the read
 * goes no further than the data seen before the markers were looked at). In a
 * process that has never had a second thread (SHM_ONE_THREAD) without the read
 * lock: only a signal handler can come between, and REENTERED keeps it off this
 * connection as it does with the lock. -2: not that case, nothing taken. */
static ssize_t recv_fast(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                         const struct msghdr *mh) {
  size_t total = iov_total(iov, iovcnt);
  if (mh || (flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL)) || tl_rheld == c || total == 0 ||
      (c->role == SHM_SERVER && !__atomic_load_n(&c->attach_seen, __ATOMIC_RELAXED)) ||
      shm_conn_sock_is_data(c) || peer_urg(c))
    return -2;
  int locked = !SHM_ONE_THREAD();
  struct shm_conn *rprev = tl_rheld;
  tl_rheld = c;
  if (locked) pthread_mutex_lock(&c->rlock);
  ssize_t n = -2;
  /* Asked for the whole buffer: the cached head answers only when it covers
   * that much, else the head is loaded (with 1, a cached byte kept the head
   * unread, and an AF_UNIX read was cut to the stale count: a short read that an
   * edge-triggered reader takes for drained). */
  ssize_t seen = shm_ring_readable(&c->rx, total); /* R1 */
  /* Markers go on the socket before the anc_seq bump, which precedes the head
   * store just seen (A2 after R1). */
  if (seen > 0 && (c->family != AF_UNIX || (!c->anc_head && __atomic_load_n(&c->rx.ctl->anc_seq, __ATOMIC_ACQUIRE) ==
                                                                  c->anc_seen))) {
    struct iovec v[IOV_MAX_LOCAL];
    const struct iovec *cur = iov;
    int cnt = iovcnt;
    if (c->family == AF_UNIX && (size_t)seen < total) {
      cnt = iov_slice(iov, iovcnt, 0, (size_t)seen, v, IOV_MAX_LOCAL);
      cur = v;
    }
    n = shm_ring_readv(&c->rx, cur, cnt, 0);
    if (n > 0) {
      c->rx_total += (uint64_t)n;
      SHM_STAT_ADD(c->st, rx_ring, n); /* stats */
      wake_producer(fd, c);
      wake_co_readers(c);
    } else {
      n = -2; /* failed: the general path says how */
    }
  }
  if (locked) pthread_mutex_unlock(&c->rlock);
  tl_rheld = rprev;
  return n;
}

ssize_t shm_conn_recv(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      struct msghdr *mh) {
  ssize_t fast = recv_fast(fd, c, iov, iovcnt, flags, mh);
  if (fast != -2) return fast;
  /* The application's control buffer: its capacity, then what we put in it. */
  size_t ctl_cap = mh ? mh->msg_controllen : 0;
  if (mh) {
    mh->msg_flags = 0;
    mh->msg_controllen = 0;
  }
  size_t total = iov_total(iov, iovcnt);
  int peek = flags & MSG_PEEK;
  int waitall = (flags & MSG_WAITALL) && !peek;
  if (total == 0) return 0;
  note_attach(fd, c);
  if (REENTERED(tl_rheld, c)) return -1;
  struct shm_conn *rprev = tl_rheld;
  tl_rheld = c;
  pthread_mutex_lock(&c->rlock);
  size_t got = 0;
  ssize_t ret;
  int nonblock = -1, err;
  uint64_t first_sleep_ns = 0; /* SO_RCVTIMEO counts from the first sleep */
  for (;;) {
    struct iovec v[IOV_MAX_LOCAL];
    const struct iovec *cur = iov;
    int cnt = iovcnt, hold = 0, step = RECV_RING;
    if (got) {
      cnt = iov_slice(iov, iovcnt, got, total - got, v, IOV_MAX_LOCAL);
      cur = v;
    }
    if (shm_conn_sock_is_data(c))
      step = recv_sock_part(fd, c, cur, cnt, flags, mh, ctl_cap, total, &got, &waitall, &ret);
    if (step == RECV_RING) step = recv_urgent_part(fd, c, iov, iovcnt, peek, total, &got, v, &cur, &cnt, &hold, &ret);
    struct shm_anc *at = NULL;
    ssize_t seen = -1;
    if (step == RECV_RING) step = recv_anc_part(fd, c, iov, iovcnt, total, got, v, &cur, &cnt, &at, &seen, &ret);
    if (step == RECV_DONE) break;
    if (step == RECV_AGAIN) continue;
    ssize_t n;
    if (hold || (seen == 0 && !shm_ring_eof(&c->rx))) {
      /* The urgent byte has not come; or the ring was empty when we looked, and
       * data published since may begin with descriptors nobody has looked for
       * yet: the empty path below looks again. */
      n = -1;
      errno = EAGAIN;
    } else {
      n = shm_ring_readv(&c->rx, cur, cnt, peek);
    }
    if (n > 0) {
      recv_took(fd, c, at, mh, ctl_cap, flags, n, got, &waitall);
      got += (size_t)n;
      if (waitall && got < total) continue;
      ret = (ssize_t)got;
      break;
    }
    if (n == 0) {
      ret = recv_ring_end(fd, c, got, peek);
      break;
    }
    if (errno == EPROTO) {
      SHM_LOG(WARN, "fd=%d: peer corrupted the ring (or its switch point): connection reset", fd);
      ret = got ? (ssize_t)got : (errno = ECONNRESET, -1);
      break;
    }
    step = recv_empty(fd, c, flags, got, waitall, &nonblock, &ret);
    if (step == RECV_DONE) break;
    if (step == RECV_AGAIN || recv_wait(fd, c, rprev, &first_sleep_ns, &err)) continue;
    ret = got ? (ssize_t)got : (errno = err, -1);
    break;
  }
  if (ret > 0 && !peek) wake_co_readers(c);
  pthread_mutex_unlock(&c->rlock);
  tl_rheld = rprev;
  if (ret <= 0) note_attach(fd, c); /* the client may have attached while we slept */
  return ret;
}


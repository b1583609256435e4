/* Data path of an upgraded connection: ring reads and writes, the server's
 * switch-over from socket bytes to ring bytes, blocking waits, kicks, readiness. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
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
#include "fdtab.h"
#include "log.h"
#include "real.h"
#include "stats.h"

#define IOV_MAX_LOCAL 64
#define PUBLISH_CHUNK (64u << 10)

static int sock_nonblock(int fd) {
  long fl = syscall(SYS_fcntl, fd, F_GETFL, 0);
  return fl >= 0 && (fl & O_NONBLOCK);
}

/* O_NONBLOCK, without a system call once the socket was seen blocking: this
 * process's own changes (fcntl F_SETFL, ioctl FIONBIO) clear the memory. (If
 * another process sharing the socket sets O_NONBLOCK, a blocking-style wait here
 * spins, then gets EAGAIN from the kernel: the same answer, a little later.) */
static int conn_nonblock(int fd, struct shm_conn *c) {
  if (__atomic_load_n(&c->blocking_seen, __ATOMIC_RELAXED)) return 0;
  int nb = sock_nonblock(fd);
  if (!nb) __atomic_store_n(&c->blocking_seen, 1, __ATOMIC_RELAXED);
  return nb;
}

/* One kick byte. Counted first in the segment (our producer line, `kicks`), so
 * that an epoll waiter that hears an edge can tell a kick, which it may leave
 * unread for a while, from anything else (shm_conn_edge_explained). */
static int kick(int fd, struct shm_conn *c) {
  if (c && c->tx.ctl) __atomic_fetch_add(&c->tx.ctl->kicks, 1, __ATOMIC_RELEASE);
  return syscall(SYS_sendto, fd, "k", 1, MSG_DONTWAIT | MSG_NOSIGNAL, NULL, 0) == 1 ? 0 : -1;
}

/* After a publish or a consume: wake whoever the peer said sleeps. Futex sleepers
 * were woken inside shm_wait_*_sleeper; socket sleepers get one kick byte. */
/* A side that has not switched yet may have a plain write of another thread in
 * flight on the socket: a kick byte would land in the middle of its data. So it
 * switches first if no write is in flight (the switch-over sends a kick of its
 * own), else that writer switches, and kicks, as its socket write returns. */
/* Nor does a call that outlived another thread's close(): the number may name
 * another file by now. */
static int may_kick(int fd, struct shm_conn *c) {
  if (__atomic_load_n(&c->dead, __ATOMIC_RELAXED)) return 0;
  if (shm_conn_tx_switched(c)) return 1;
  if (pthread_mutex_trylock(&c->wlock) == 0) {
    shm_conn_switch_tx(fd, c);
    shm_conn_kick_owed(fd, c);
    pthread_mutex_unlock(&c->wlock);
  }
  return 0;
}
/* The switch-over's kick (shm_conn_switch_tx), if not sent yet; caller holds wlock. */
void shm_conn_kick_owed(int fd, struct shm_conn *c) {
  if (!c->kick_owed) return;
  c->kick_owed = 0;
  if (__atomic_load_n(&c->dead, __ATOMIC_RELAXED)) return;
  kick(fd, c);
  SHM_STAT_ADD(c->st, kicks_tx, 1); /* stats */
}
static void wake_consumer(int fd, struct shm_conn *c) {
  if (c->kick_owed) {
    shm_wait_data_sleeper(&c->tx); /* woken by this kick, whatever it armed */
    shm_conn_kick_owed(fd, c);
    return;
  }
  if ((shm_wait_data_sleeper(&c->tx) & SHM_SLEEP_SOCKET) && may_kick(fd, c)) {
    kick(fd, c);
    SHM_STAT_ADD(c->st, kicks_tx, 1); /* stats */
  }
}
void shm_conn_attach_wake(int fd, struct shm_conn *c) {
  if (!shm_conn_tx_switched(c)) return;
  if (shm_wait_data_sleeper(&c->tx) & SHM_SLEEP_SOCKET) { /* a sleeper: worth a kick now */
    if (c->kick_owed) {
      shm_conn_kick_owed(fd, c);
    } else if (may_kick(fd, c)) {
      kick(fd, c);
      SHM_STAT_ADD(c->st, kicks_tx, 1); /* stats */
    }
  }
}
static void wake_producer(int fd, struct shm_conn *c) {
  if ((shm_wait_space_sleeper(&c->rx) & SHM_SLEEP_SOCKET) && may_kick(fd, c)) {
    kick(fd, c);
    SHM_STAT_ADD(c->st, kicks_tx, 1); /* stats */
  }
}

static size_t iov_total(const struct iovec *iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

/* Copies iov[] into out[] skipping the first `skip` bytes and keeping at most
 * `limit` bytes. Returns the number of entries. */
static int iov_slice(const struct iovec *iov, int n, size_t skip, size_t limit, struct iovec *out,
                     int max) {
  int k = 0;
  for (int i = 0; i < n && k < max && limit; i++) {
    size_t len = iov[i].iov_len;
    char *base = iov[i].iov_base;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    base += skip;
    len -= skip;
    skip = 0;
    if (len > limit) len = limit;
    out[k].iov_base = base;
    out[k].iov_len = len;
    limit -= len;
    k++;
  }
  return k;
}

static int timeout_ms(int fd, int opt) {
  struct timeval tv;
  socklen_t l = sizeof tv;
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, opt, &tv, &l) < 0) return -1;
  if (tv.tv_sec == 0 && tv.tv_usec == 0) return -1;
  long ms = tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

static void raise_sigpipe(int flags) {
  if (!(flags & MSG_NOSIGNAL)) syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGPIPE);
}

/* Signal handlers. A handler that reads or writes a connection while its own
 * thread is inside a read or a write of it, holding that side's lock (not
 * recursive), deadlocked. Each thread notes which connection's read and write
 * lock it holds; such a call fails with EAGAIN instead (as from a socket that
 * cannot take it now), touching nothing the interrupted call is changing. The
 * blocking sleeps run without the lock and the note, so a handler that
 * interrupts a blocked read or write goes through, as with the kernel. */
/* Set before the lock is taken and cleared after it is released (volatile: a
 * handler must see them in program order), so that no instant of holding it is
 * left uncovered. */
static __thread struct shm_conn *volatile tl_rheld __attribute__((tls_model("initial-exec")));
static __thread struct shm_conn *volatile tl_wheld __attribute__((tls_model("initial-exec")));
#define REENTERED(held, c) (__builtin_expect((held) == (c), 0) ? (errno = EAGAIN, 1) : 0)

/* A look at the socket that is no cancellation point (libc's poll() is one: a
 * pending pthread_cancel would act there, with our locks held). */
static int poll_now(struct pollfd *p) {
  struct timespec zero = {0, 0};
  return (int)syscall(SYS_ppoll, p, 1, &zero, NULL, (size_t)8);
}

/* Cancellation (pthread_cancel). The data path's system calls are raw ones and so
 * no cancellation points; the calls that sleep (a blocked read's wait on the
 * socket, a blocked write's wait for room) are made cancellable for their
 * duration, as libc makes its own: asynchronous cancellation around the one
 * system call, with no lock of ours held. If the thread is cancelled there, this
 * undoes what the sleep had set up and gives back the hold its caller took on the
 * connection (preload/: pl_conn_read, pl_conn_write), whose frame is unwound. */
struct sleep_undo {
  struct shm_conn *c;
  int rx;       /* armed as a socket sleeper for data (arm_rx) */
  int space;    /* armed as a futex sleeper for room */
  pthread_mutex_t *held; /* a lock held across a blocking libc call */
  int asleep;   /* counted in rx_asleep (a blocked read's sleep) */
};
static void disarm_rx(struct shm_conn *c);
static void sleep_cancelled(void *arg) {
  struct sleep_undo *u = arg;
  if (u->rx) disarm_rx(u->c);
  if (u->asleep) __atomic_sub_fetch(&u->c->rx_asleep, 1, __ATOMIC_RELAXED);
  if (u->space) shm_wait_disarm_space(&u->c->tx, SHM_SLEEP_FUTEX);
  if (u->held) pthread_mutex_unlock(u->held);
  shm_conn_put(u->c);
}
#define CANCELLABLE(u, call)                                                \
  ({                                                                        \
    long r_;                                                                \
    int old_, e_;                                                           \
    pthread_cleanup_push(sleep_cancelled, (u));                             \
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old_);              \
    r_ = (call);                                                            \
    e_ = errno;                                                             \
    pthread_setcanceltype(old_, NULL);                                      \
    pthread_cleanup_pop(0);                                                 \
    errno = e_;                                                             \
    r_;                                                                     \
  })

/* A libc call that may block (and so is a cancellation point, acting inside it)
 * made with one of our locks held: if the thread is cancelled there, the lock is
 * released on the way out. */
#define CANCEL_CLEANUP(u, call)                                             \
  ({                                                                        \
    long r_;                                                                \
    pthread_cleanup_push(sleep_cancelled, (u));                             \
    r_ = (call);                                                            \
    pthread_cleanup_pop(0);                                                 \
    r_;                                                                     \
  })

/* The calls above, each in a function of its own (the clean-up's setjmp then
 * clobbers no variable of the data path). */
static __attribute__((noinline)) ssize_t recvmsg_locked(struct sleep_undo *u, int fd, struct msghdr *m, int fl) {
  return CANCEL_CLEANUP(u, REAL(recvmsg)(fd, m, fl));
}
static __attribute__((noinline)) ssize_t sendmsg_locked(struct sleep_undo *u, int fd, const struct msghdr *m,
                                                        int fl) {
  return CANCEL_CLEANUP(u, REAL(sendmsg)(fd, m, fl));
}
/* A blocked read's sleep on the socket: a one-byte peek (SO_RCVTIMEO and
 * SA_RESTART as the kernel's), or with left_ns >= 0 a poll for that long. */
static __attribute__((noinline)) long sleep_on_sock(struct sleep_undo *u, int fd, int64_t left_ns) {
  if (left_ns < 0) {
    char b;
    return CANCELLABLE(u, syscall(SYS_recvfrom, fd, &b, 1, MSG_PEEK, NULL, NULL));
  }
  struct timespec ts = {(time_t)(left_ns / 1000000000), (long)(left_ns % 1000000000)};
  struct pollfd p = {fd, POLLIN, 0};
  return CANCELLABLE(u, syscall(SYS_ppoll, &p, 1, &ts, NULL, (size_t)8));
}

/* Waits for the futex word to change, for at most step_ms. restartable: no
 * SO_SNDTIMEO, so that a signal whose handler has SA_RESTART restarts the wait,
 * as it restarts the kernel's own blocked send (futex_waitv with a timeout is
 * restarted by the kernel according to SA_RESTART; FUTEX_WAIT with one never is).
 * With SO_SNDTIMEO the kernel's send is never restarted: FUTEX_WAIT. 0 on a wake
 * or change, -1 with ETIMEDOUT or EINTR. */
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
struct shm_futex_waitv {
  uint64_t val;
  uint64_t uaddr;
  uint32_t flags;
  uint32_t reserved;
};
static int futex_waitv_ok = 1;
static int space_sleep(struct sleep_undo *u, uint32_t *word, uint32_t seq, int step_ms, int restartable) {
  if (restartable && __atomic_load_n(&futex_waitv_ok, __ATOMIC_RELAXED)) {
    struct shm_futex_waitv w = {seq, (uint64_t)(uintptr_t)word, 2 /* FUTEX2_SIZE_U32, shared */, 0};
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)step_ms * 1000000;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    long r = CANCELLABLE(u, syscall(SYS_futex_waitv, &w, 1, 0, &ts, CLOCK_MONOTONIC));
    if (r >= 0 || errno == EAGAIN) return 0;
    if (errno != ENOSYS) return -1;
    __atomic_store_n(&futex_waitv_ok, 0, __ATOMIC_RELAXED); /* before Linux 5.16 */
  }
  struct timespec ts = {step_ms / 1000, (long)(step_ms % 1000) * 1000000};
  long r = CANCELLABLE(u, syscall(SYS_futex, word, FUTEX_WAIT, seq, &ts, NULL, 0));
  return r == 0 || errno == EAGAIN ? 0 : -1;
}

/* Socket-kind sleepers. The shared flag is one bit per direction, but several
 * waiters of this process may sleep on one connection at once (a thread in a
 * blocking read, another in poll, an epoll set): each counts itself in, under
 * c->lock, and only the last one out clears the bit. One that leaves while others
 * still sleep sets it again, since a kick that woke it consumed the bit (the
 * waker clears it), and the others must be kicked for the next data. Arm and
 * disarm must pair exactly: shm_conn_arm reports what it armed. */
static void sleeper_in(struct shm_conn *c, int *count, int tx) {
  pthread_mutex_lock(&c->lock);
  (*count)++;
  if (tx) shm_wait_arm_space(&c->tx, SHM_SLEEP_SOCKET);
  else shm_wait_arm_data(&c->rx, SHM_SLEEP_SOCKET);
  pthread_mutex_unlock(&c->lock);
}
static void sleeper_out(struct shm_conn *c, int *count, int tx) {
  pthread_mutex_lock(&c->lock);
  if (*count == 0) { /* not ours: armed by a thread of the parent before fork() */
    pthread_mutex_unlock(&c->lock);
    return;
  }
  int others = --(*count);
  if (others && tx) shm_wait_arm_space(&c->tx, SHM_SLEEP_SOCKET);
  else if (others) shm_wait_arm_data(&c->rx, SHM_SLEEP_SOCKET);
  else if (tx) shm_wait_disarm_space(&c->tx, SHM_SLEEP_SOCKET);
  else shm_wait_disarm_data(&c->rx, SHM_SLEEP_SOCKET);
  pthread_mutex_unlock(&c->lock);
}
static void arm_rx(struct shm_conn *c) { sleeper_in(c, &c->sleepers_rx, 0); }
static void disarm_rx(struct shm_conn *c) { sleeper_out(c, &c->sleepers_rx, 0); }
static void arm_tx(struct shm_conn *c) { sleeper_in(c, &c->sleepers_tx, 1); }
static void disarm_tx(struct shm_conn *c) { sleeper_out(c, &c->sleepers_tx, 1); }

static int refresh_switch(struct shm_conn *c);
static uint32_t peer_left(struct shm_conn *c);
static void note_peer_reset(struct shm_conn *c);

int shm_conn_sock_is_data(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED) return 1;
  /* Look at the segment, not only at what our last read learnt: the peer's
   * switch-over kick can be lost (its socket buffer full of plain bytes), and a
   * readiness check must still see the ring's data once the plain bytes are read. */
  if (!shm_conn_rx_switched(c) && refresh_switch(c) < 0) return 0;
  if (!shm_conn_rx_switched(c)) return 1;
  return c->sock_read < c->rx_plain;
}

/* Has the peer switched, and where do its socket bytes end? */
static int refresh_switch(struct shm_conn *c) {
  if (shm_conn_rx_switched(c)) return 0;
  struct shm_seg_conn *sc = &c->seg.base->conn;
  int server = c->role == SHM_SERVER;
  if (!__atomic_load_n(server ? &sc->switched : &sc->s_switched, __ATOMIC_ACQUIRE)) /* S2, pairs with S1 */
    return 0;
  if (server) {
    /* Only a client that proved it holds the other end switches (negotiate.c):
     * whoever else took the offer is not our peer, and its bytes are not read. */
    int p = shm_conn_peer_proven(-1, c);
    if (p < 0) c->rx.err = EPROTO; /* its answer was lost: fail loudly, never kick bytes as data */
    if (p != 1) return p;
  }
  uint64_t plain = __atomic_load_n(server ? &sc->c2s_plain : &sc->s2c_plain, __ATOMIC_RELAXED);
  if (plain < c->sock_read) {
    /* We already delivered more socket bytes than the peer says it wrote there
     * before switching: it wrote some around its shim (stdio, a raw system call),
     * where the shim could not count them. Said once; the connection fails. */
    if (!__atomic_load_n(&c->rx.err, __ATOMIC_RELAXED))
      SHM_LOG(WARN, "the peer says it wrote %llu plain bytes to the socket before switching to the ring, but %llu "
                    "were read: written around its shim (stdio, raw system calls)? connection reset",
              (unsigned long long)plain, (unsigned long long)c->sock_read);
    c->rx.err = EPROTO;
    return -1;
  }
  c->rx_plain = plain;
  __atomic_store_n(&c->rx_switched, 1, __ATOMIC_RELEASE);
  return 0;
}

/* Server: log and count the upgrade once the client has taken the offer. */
static inline void note_attach(int fd, struct shm_conn *c) {
  if (c->role == SHM_SERVER && !__atomic_load_n(&c->attach_seen, __ATOMIC_RELAXED)) shm_conn_seen_attached(fd, c, 0);
}

static void parse_sock_bytes(struct shm_conn *c, const unsigned char *b, size_t n);
static void take_fds(struct shm_conn *c, struct msghdr *m);

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
static ssize_t recv_plain(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                          struct msghdr *mh, size_t ctl_cap) {
  if (refresh_switch(c) < 0) {
    errno = ECONNRESET;
    return -1;
  }
  int sw = shm_conn_rx_switched(c);
  if (sw && c->sock_read >= c->rx_plain) return -2;
  size_t limit = sw ? (size_t)(c->rx_plain - c->sock_read) : SIZE_MAX;
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
  if (armed) arm_rx(c);
  struct sleep_undo u = {c, armed, 0, &c->rlock, 0}; /* the caller holds rlock */
  ssize_t n = recvmsg_locked(&u, fd, &m, flags & (MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
  int e = errno;
  if (armed) disarm_rx(c);
  errno = e;
  if (mh) {
    mh->msg_controllen = n >= 0 ? m.msg_controllen : 0;
    mh->msg_flags = m.msg_flags;
  }
  if (n <= 0) {
    if (n == 0) c->sock_eof = 1;
    return n;
  }
  if (!sw) {
    if (refresh_switch(c) < 0) {
      errno = ECONNRESET;
      return -1;
    }
    /* The peer switched while we read: bytes past its switch point are kicks and
     * ancillary-data markers. */
    if (shm_conn_rx_switched(c) && c->sock_read + (uint64_t)n > c->rx_plain) {
      size_t keep = (size_t)(c->rx_plain - c->sock_read);
      if (!(flags & MSG_PEEK)) plain_overrun(c, v, k, keep, (size_t)n, mh);
      n = (ssize_t)keep;
    }
    if (n == 0) return -2;
  }
  if (!(flags & MSG_PEEK)) {
    c->sock_read += (uint64_t)n;
    SHM_STAT_ADD(c->st, rx_sock, n); /* stats */
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
  if (!c->sock_err) SHM_LOG(WARN, "peer broke the descriptor-marker rules (%s %llu): connection reset", why, v);
  c->sock_err = ECONNRESET;
}

/* The connection is reset or ended: nothing the peer sends is queued any more. */
static int anc_closed(const struct shm_conn *c) { return c->sock_err || c->sock_eof; }

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
  if (!c->sock_err)
    SHM_LOG(WARN, "byte 0x%02x on the socket of an upgraded connection (written around the shim?): reset",
            b);
  c->sock_err = ECONNRESET;
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

static void drain_sock(int fd, struct shm_conn *c, int quick);

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
static void note_sock_result(struct shm_conn *c, long n, int e) {
  if (n == 0) c->sock_eof = 1;
  else if (n < 0 && e == ECONNRESET && peer_took_all(c) && peer_left(c) != 2) c->sock_eof = 1;
  else if (n < 0 && e != EAGAIN && e != EINTR) c->sock_err = e;
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
  uint64_t um = __atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_RELAXED);
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
static void drain_sock(int fd, struct shm_conn *c, int quick) {
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
  c->oob_taken = __atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_ACQUIRE);
}

/* Is a read at the peer's urgent mark um (as urg[] has it: position + 1), whose
 * byte no read of ours has delivered inline yet? */
static int at_new_mark(struct shm_conn *c, uint64_t um) { return um && um - 1 == c->rx_total && um != c->inline_urg; }
static int oob_inline(int fd) {
  int on = 0;
  socklen_t l = sizeof on;
  return syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_OOBINLINE, &on, &l) == 0 && on;
}
/* A read would start at the peer's urgent mark, whose byte, with SO_OOBINLINE
 * on, is data waiting in the socket (the kernel reports POLLPRI for it). */
static int inline_urgent_due(int fd, struct shm_conn *c) {
  uint64_t um = __atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_ACQUIRE);
  if (!at_new_mark(c, um) || um == c->oob_taken || !oob_inline(fd)) return 0;
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

static void close_fds(struct shm_anc *a) {
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

/* Writer, AF_UNIX: must the next data be preceded by a marker that carries our
 * credentials? With SO_PASSCRED the kernel gives every message the writer's
 * credentials at the time of the write (pid, real uid and gid): after a
 * setuid() to drop privileges, in a fork() child, or after an explicit
 * SCM_CREDENTIALS, they are not those of the connection's first writer. Only
 * when the reader asked (want_cred), and only when ours changed: three system
 * calls per write to such a reader. */
static int cred_due(struct shm_conn *c, struct ucred *now) {
  if (c->family != AF_UNIX || !__atomic_load_n(&c->seg.base->conn.want_cred[2 - c->role], __ATOMIC_ACQUIRE))
    return 0;
  now->pid = (pid_t)syscall(SYS_getpid);
  now->uid = (uid_t)syscall(SYS_getuid);
  now->gid = (gid_t)syscall(SYS_getgid);
  return now->pid != c->tx_cred.pid || now->uid != c->tx_cred.uid || now->gid != c->tx_cred.gid;
}

static int has_explicit_cred(const struct msghdr *mh) {
  for (struct cmsghdr *cm = CMSG_FIRSTHDR((struct msghdr *)mh); cm; cm = CMSG_NXTHDR((struct msghdr *)mh, cm))
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS) return 1;
  return 0;
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

static int space_ready(void *a) {
  struct shm_conn *c = a;
  return shm_ring_look_writable(&c->tx, 1) != 0;
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
  uint64_t now = shm_now_ns();
  if (!*first_sleep_ns) *first_sleep_ns = now;
  if (tmo >= 0) {
    uint64_t end = *first_sleep_ns + (uint64_t)tmo * 1000000;
    int64_t left_ms = end > now ? (int64_t)((end - now + 999999) / 1000000) : 0;
    if (left_ms == 0) step = 0;
    else if (left_ms < step) step = (int)left_ms;
  }
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
  if (tmo >= 0 && shm_now_ns() >= *first_sleep_ns + (uint64_t)tmo * 1000000) {
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
  arm_rx(c);
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
  if (!*first_sleep_ns) {
    *first_sleep_ns = shm_now_ns();
  } else {
    int tmo = timeout_ms(fd, SO_RCVTIMEO);
    if (tmo >= 0) {
      uint64_t now = shm_now_ns(), end = *first_sleep_ns + (uint64_t)tmo * 1000000;
      left = end > now ? (int64_t)(end - now) : 0;
    }
  }
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
  int consume = __atomic_fetch_add(&c->rx_asleep, 1, __ATOMIC_RELAXED) == 0 && left < 0 &&
                !__atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_ACQUIRE);
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
  if (c->rd_shut || (got && !waitall)) {
    *ret = (ssize_t)got;
    return RECV_DONE;
  }
  if (*nonblock < 0) *nonblock = (flags & MSG_DONTWAIT) || conn_nonblock(fd, c);
  if (*nonblock || c->sock_eof || c->sock_err) {
    /* Anything the socket has to say (the peer's exit)? A blocking reader does
     * not ask: its sleep on the socket would end at once for the same news. */
    drain_locked(fd, c);
    if (shm_ring_readable(&c->rx, 1) > 0) return RECV_AGAIN;
    if (c->sock_err) {
      /* As the kernel does: a read that already has bytes returns them, and the
       * error is reported by the next call (clearing it here would turn that
       * call into end of file: the reset would be lost). */
      if (got) {
        *ret = (ssize_t)got;
        return RECV_DONE;
      }
      int e = c->sock_err;
      c->sock_err = 0;
      c->sock_eof = 1;
      errno = e;
      *ret = -1;
      return RECV_DONE;
    }
    if (c->sock_eof || *nonblock) {
      if (got) *ret = (ssize_t)got;
      else if (c->sock_eof) *ret = 0;
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

ssize_t shm_conn_recv(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      struct msghdr *mh) {
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
  int nonblock = -1;
  uint64_t first_sleep_ns = 0; /* SO_RCVTIMEO counts from the first sleep */
  for (;;) {
    struct iovec v[IOV_MAX_LOCAL];
    const struct iovec *cur = iov;
    int cnt = iovcnt;
    int hold = 0;
    if (got) {
      cnt = iov_slice(iov, iovcnt, got, total - got, v, IOV_MAX_LOCAL);
      cur = v;
    }
    if (shm_conn_sock_is_data(c)) {
      switch (recv_sock_part(fd, c, cur, cnt, flags, mh, ctl_cap, total, &got, &waitall, &ret)) {
        case RECV_DONE:
          goto out;
        case RECV_AGAIN:
          continue;
      }
    }
    {
      /* Urgent data: a read stops at the peer's urgent mark, as the kernel's
       * does, so that SIOCATMARK can tell the application it got there. */
      uint64_t um = __atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_ACQUIRE);
      if (um && um - 1 > c->rx_total && um - 1 - c->rx_total < total - got) {
        cnt = iov_slice(iov, iovcnt, got, (size_t)(um - 1 - c->rx_total), v, IOV_MAX_LOCAL);
        cur = v;
      } else if (at_new_mark(c, um) && got) {
        ret = (ssize_t)got;
        goto out;
      } else if (at_new_mark(c, um) && um != c->oob_taken && oob_inline(fd)) {
        /* SO_OOBINLINE: the urgent byte, from the socket, is the next byte of
         * the stream; nothing past the mark before it. */
        if (take_inline_urgent(fd, c, iov, iovcnt, peek)) {
          got = 1;
          if (peek) {
            ret = 1;
            goto out;
          }
          c->inline_urg = um;
          continue;
        }
        hold = 1; /* not there yet: as if the ring were empty */
      }
    }
    struct shm_anc *at = NULL;
    ssize_t seen = -1;
    if (c->family == AF_UNIX && (seen = shm_ring_readable(&c->rx, total - got)) > 0) {
      size_t lim = anc_limit(fd, c, &at);
      if (at && got) {
        ret = (ssize_t)got; /* descriptors start a new read, as in the kernel */
        goto out;
      }
      /* No further than the data seen before anc_limit looked for markers: what
       * the writer published since may begin with descriptors it has not
       * collected (read without them, then closed as stale). */
      if (lim > (size_t)seen) lim = (size_t)seen;
      if (lim < iov_total(cur, cnt)) {
        cnt = iov_slice(iov, iovcnt, got, lim, v, IOV_MAX_LOCAL);
        cur = v;
      }
    }
    ssize_t n;
    if (hold) {
      n = -1;
      errno = EAGAIN;
    } else if (seen == 0 && !shm_ring_eof(&c->rx)) {
      /* Empty when we looked: data published since may begin with descriptors
       * nobody has looked for yet. The empty path below looks again. */
      n = -1;
      errno = EAGAIN;
    } else {
      n = shm_ring_readv(&c->rx, cur, cnt, peek);
    }
    if (n > 0) {
      if (c->family == AF_UNIX && mh && !got) deliver_anc(fd, c, at, mh, ctl_cap, flags);
      else if (at && !peek) deliver_anc(fd, c, at, NULL, 0, flags); /* no room: closed */
      if (!peek) {
        c->rx_total += (uint64_t)n;
        SHM_STAT_ADD(c->st, rx_ring, n); /* stats */
        if (at) {
          c->anc_head = at->next;
          free(at);
          waitall = 0; /* the kernel ends a read at a message carrying descriptors */
        }
        wake_producer(fd, c);
      }
      got += (size_t)n;
      if (waitall && got < total) continue;
      ret = (ssize_t)got;
      goto out;
    }
    if (n == 0) { /* the peer shut down its writing side */
      /* Before end of file, one look at the socket: bytes written around the
       * shim (a raw write(2) before the peer's last libc writes) are there by now,
       * and must fail the connection loudly rather than vanish. */
      if (!got && !c->sock_eof && !c->sock_err) drain_locked(fd, c);
      int e = got || peek ? 0 : shm_conn_take_error(c); /* a reset comes after the data, instead of EOF */
      if (e) {
        errno = e;
        ret = -1;
        goto out;
      }
      ret = (ssize_t)got;
      goto out;
    }
    if (errno == EPROTO) {
      SHM_LOG(WARN, "fd=%d: peer corrupted the ring (or its switch point): connection reset", fd);
      ret = got ? (ssize_t)got : (errno = ECONNRESET, -1);
      goto out;
    }
    switch (recv_empty(fd, c, flags, got, waitall, &nonblock, &ret)) {
      case RECV_DONE:
        goto out;
      case RECV_AGAIN:
        continue;
    }
    int err;
    if (recv_wait(fd, c, rprev, &first_sleep_ns, &err)) continue;
    if (got) {
      ret = (ssize_t)got;
    } else {
      errno = err;
      ret = -1;
    }
    goto out;
  }
out:
  if (ret > 0 && !peek) wake_co_readers(c);
  pthread_mutex_unlock(&c->rlock);
  tl_rheld = rprev;
  if (ret <= 0) note_attach(fd, c); /* the client may have attached while we slept */
  return ret;
}

static int linger_zero(int fd) {
  struct linger lg = {0, 0};
  socklen_t l = sizeof lg;
  return syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_LINGER, &lg, &l) == 0 && lg.l_onoff && !lg.l_linger;
}

/* How the peer's last holder let go: 0 not yet, 1 closed, 2 reset (shm_seg_conn.gone). */
static uint32_t peer_left(struct shm_conn *c) {
  if (c->role == SHM_SERVER && __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) != SHM_PROOF_OK)
    return 0; /* not our peer's word yet */
  uint32_t g = __atomic_load_n(&c->seg.base->conn.gone[2 - c->role], __ATOMIC_ACQUIRE);
  return g > 2 ? 2 : g; /* anything else from a peer: the harsher reading */
}

/* The peer reset the connection (closed with unread data, or abortively): report it
 * once, as the kernel reports a received reset (ECONNRESET from the next read or
 * SO_ERROR, POLLERR until then). */
static void note_peer_reset(struct shm_conn *c) {
  if (c->reset_seen || peer_left(c) != 2) return;
  c->reset_seen = 1;
  if (!c->sock_err) c->sock_err = ECONNRESET;
}

int shm_conn_take_error(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED) return 0;
  note_peer_reset(c);
  int e = c->sock_err;
  if (e) {
    c->sock_err = 0;
    c->sock_eof = c->hup = 1;
  }
  return e;
}

/* A peer that only shut down its writing side (socket EOF) still reads: writes
 * fail only once its reading side is gone (ring flag) or the socket was reset. */
static int peer_gone(struct shm_conn *c) {
  return c->sock_err || __atomic_load_n(&c->tx.ctl->rd_closed, __ATOMIC_RELAXED);
}

/* Before our switch-over (a pending client; a server whose client has not attached
 * yet): the socket carries our bytes; they are counted under the write lock, so
 * the switch point recorded is exact. */
static ssize_t send_plain(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                          const struct msghdr *mh, int *done) {
  *done = 0;
  if (shm_conn_tx_switched(c)) return 0;
  if (shm_conn_state(c) == SHM_CONN_PENDING) shm_conn_resolve_for_write(fd, c);
  if (REENTERED(tl_wheld, c)) {
    *done = 1;
    return -1;
  }
  struct shm_conn *wprev = tl_wheld;
  tl_wheld = c;
  pthread_mutex_lock(&c->wlock);
  size_t total = iov_total(iov, iovcnt), sent = 0;
  ssize_t n = 0;
  int blocking = -1, err = 0;
  for (;;) {
    shm_conn_switch_tx(fd, c); /* if upgraded and the peer reads the ring */
    int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
    if (shm_conn_tx_switched(c) || st == SHM_CONN_BROKEN) break;
    /* Pending, found plain meanwhile, or a server whose client has not attached:
     * the socket it is. */
    struct iovec v[IOV_MAX_LOCAL];
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    if (sent) {
      m.msg_iov = v;
      m.msg_iovlen = (size_t)iov_slice(iov, iovcnt, sent, total - sent, v, IOV_MAX_LOCAL);
    } else if (mh) {
      m.msg_control = mh->msg_control;
      m.msg_controllen = mh->msg_controllen;
    }
    if (blocking < 0) blocking = !(flags & MSG_DONTWAIT) && !conn_nonblock(fd, c);
    /* A blocking write sleeps in the kernel, as without us: SO_SNDTIMEO and
     * SA_RESTART are the kernel's. An offer that comes meanwhile changes nothing
     * for these bytes (the peer reads the socket up to our switch point), and the
     * offer's proof no longer keeps a dead peer's socket open. */
    struct sleep_undo u = {c, 0, 0, &c->wlock, 0};
    n = sendmsg_locked(&u, fd, &m, flags);
    if (n > 0) {
      /* An urgent byte leaves the peer's normal stream (SO_OOBINLINE off): it is
       * not one of the bytes the peer reads before our switch point. */
      c->plain_sent += (uint64_t)n - ((flags & MSG_OOB) ? 1 : 0);
      SHM_STAT_ADD(c->st, tx_sock, n); /* stats */
      size_t asked = total - sent;
      sent += (size_t)n;
      /* A blocking write the kernel cut short was interrupted (a signal, even
       * with SA_RESTART, or SO_SNDTIMEO): the partial count is the answer. */
      if (sent == total || !blocking || (size_t)n < asked) break;
      continue;
    }
    err = n < 0 ? errno : 0;
    break;
  }
  /* Attached meanwhile (by a reader thread that could not take our lock, or by
   * us above)? The rest, if any, goes to the ring. */
  shm_conn_switch_tx(fd, c);
  if (sent == total || err) shm_conn_kick_owed(fd, c); /* nothing will be published now */
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE), on_ring = shm_conn_tx_switched(c);
  pthread_mutex_unlock(&c->wlock);
  tl_wheld = wprev;
  if (sent == total || (!on_ring && st != SHM_CONN_BROKEN) || err) {
    *done = 1;
    if (sent) return (ssize_t)sent;
    if (err) errno = err;
    return n < 0 || err ? -1 : 0;
  }
  return (ssize_t)sent;
}

/* Sends the descriptors of mh ahead of the data they go with: a marker on the
 * socket carrying them and our stream offset, then anc_seq, then (by the caller)
 * the data. Only SCM_RIGHTS travels this way. */
static int send_marker(int fd, struct shm_conn *c, const struct msghdr *mh, int nonblock) {
  for (struct cmsghdr *cm = CMSG_FIRSTHDR((struct msghdr *)mh); cm;
       cm = CMSG_NXTHDR((struct msghdr *)mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || (cm->cmsg_type != SCM_RIGHTS && cm->cmsg_type != SCM_CREDENTIALS)) {
      SHM_LOG(WARN, "fd=%d: ancillary data other than SCM_RIGHTS/SCM_CREDENTIALS on an upgraded connection", fd);
      errno = EOPNOTSUPP;
      return -1;
    }
  }
  unsigned char mk[9] = {'A'};
  memcpy(mk + 1, &c->tx_total, sizeof c->tx_total);
  SHM_LOG(DEBUG, "fd=%d marker at %llu", fd, (unsigned long long)c->tx_total);
  struct iovec v = {mk, sizeof mk};
  struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = mh->msg_control,
                     .msg_controllen = mh->msg_controllen};
  /* A blocking writer waits, as the kernel would, while the peer's socket is
   * full of markers it has not read yet. */
  struct sleep_undo u = {c, 0, 0, &c->wlock, 0}; /* the caller holds wlock */
  if (sendmsg_locked(&u, fd, &m, (nonblock ? MSG_DONTWAIT : 0) | MSG_NOSIGNAL) != (ssize_t)sizeof mk) return -1;
  __atomic_store_n(&c->tx.ctl->anc_seq, __atomic_load_n(&c->tx.ctl->anc_seq, __ATOMIC_RELAXED) + 1,
                   __ATOMIC_RELEASE); /* A1, pairs with A2 (and precedes W1) */
  return 0;
}

ssize_t shm_conn_send(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      const struct msghdr *mh) {
  int done;
  if (mh && !mh->msg_controllen) mh = NULL;
  ssize_t pn = send_plain(fd, c, iov, iovcnt, flags, mh, &done);
  if (done) return pn;
  if (shm_conn_state(c) == SHM_CONN_BROKEN) {
    if (pn > 0) return pn;
    errno = ECONNRESET;
    return -1;
  }
  if (pn > 0) mh = NULL; /* its descriptors went with the plain bytes */
  if (mh && c->family != AF_UNIX) {
    errno = EINVAL; /* as the kernel: no ancillary data on TCP */
    return -1;
  }
  size_t total = iov_total(iov, iovcnt);
  if (c->wr_shut) {
    raise_sigpipe(flags);
    errno = EPIPE;
    return -1;
  }
  uint32_t gone = peer_left(c);
  if (__builtin_expect(gone != 0, 0) && !pn) {
    note_peer_reset(c);
    if (c->family != AF_UNIX && gone == 1 && !c->tcp_rst_owed) {
      /* TCP: the kernel takes the first send after the peer closed, and the
       * peer's kernel answers it with a reset: reported from now on. A send of
       * nothing puts no segment on the wire: nothing to answer, no reset owed. */
      if (total == 0) return 0;
      c->tcp_rst_owed = 1;
      if (!c->sock_err) c->sock_err = ECONNRESET;
      c->hup = 1;
      return (ssize_t)total;
    }
    shm_conn_take_error(c); /* the failing send consumes a pending reset, as the kernel's does */
    c->hup = 1;
    raise_sigpipe(flags);
    errno = EPIPE;
    return -1;
  }
  if (total == 0) return 0;
  if (REENTERED(tl_wheld, c)) return pn > 0 ? pn : -1;
  struct shm_conn *wprev = tl_wheld;
  tl_wheld = c;
  pthread_mutex_lock(&c->wlock);
  size_t sent = (size_t)pn; /* the first bytes went through the socket before the switch */
  ssize_t ret;
  int nonblock = -1;
  uint64_t slept_since = 0; /* first sleep of this call, for SO_SNDTIMEO */
  for (;;) {
    struct iovec v[IOV_MAX_LOCAL];
    const struct iovec *cur = iov;
    int cnt = iovcnt;
    /* Large writes are published in pieces: the reader starts copying out while
     * we copy in, instead of the two taking turns over the whole ring. */
    if (sent || total - sent > PUBLISH_CHUNK) {
      size_t left = total - sent;
      cnt = iov_slice(iov, iovcnt, sent, left < PUBLISH_CHUNK ? left : PUBLISH_CHUNK, v, IOV_MAX_LOCAL);
      cur = v;
    }
    struct ucred now;
    if (mh && !sent && shm_ring_writable(&c->tx, 1) > 0) {
      /* Room for at least one byte, and we are the only writer: the descriptors
       * can go now, and their data right after. */
      if (nonblock < 0) nonblock = (flags & MSG_DONTWAIT) || conn_nonblock(fd, c);
      int due = cred_due(c, &now);
      if (send_marker(fd, c, mh, nonblock) < 0) {
        ret = -1;
        goto out;
      }
      /* The kernel gave the marker our credentials, unless the application chose
       * them: then the next data must say ours again. */
      if (has_explicit_cred(mh)) memset(&c->tx_cred, 0, sizeof c->tx_cred);
      else if (due) c->tx_cred = now;
      mh = NULL;
    } else if (!mh && !sent && cred_due(c, &now) && shm_ring_writable(&c->tx, 1) > 0) {
      /* Our credentials changed since the reader last learnt them: a marker without
       * descriptors, which the kernel gives our credentials, before the data. */
      if (nonblock < 0) nonblock = (flags & MSG_DONTWAIT) || conn_nonblock(fd, c);
      struct msghdr none = {0};
      if (send_marker(fd, c, &none, nonblock) < 0) {
        ret = -1;
        goto out;
      }
      c->tx_cred = now;
    }
    ssize_t n = mh && !sent ? 0 : shm_ring_writev(&c->tx, cur, cnt);
    if (n > 0) {
      c->tx_total += (uint64_t)n;
      SHM_STAT_ADD(c->st, tx_ring, n); /* stats */
      wake_consumer(fd, c);
      sent += (size_t)n;
      if (sent == total) {
        ret = (ssize_t)sent;
        goto out;
      }
      continue;
    }
    if (n < 0 && errno == EPROTO) {
      SHM_LOG(WARN, "fd=%d: peer corrupted the ring (or its switch point): connection reset", fd);
      ret = sent ? (ssize_t)sent : (errno = ECONNRESET, -1);
      goto out;
    }
    if (n < 0 || peer_gone(c)) {
      if (sent) {
        ret = (ssize_t)sent;
        goto out;
      }
      raise_sigpipe(flags);
      errno = EPIPE;
      ret = -1;
      goto out;
    }
    /* Full. */
    if (nonblock < 0) nonblock = (flags & MSG_DONTWAIT) || conn_nonblock(fd, c);
    if (nonblock) {
      shm_conn_drain(fd, c); /* a dead peer must turn EAGAIN into EPIPE */
      if (peer_gone(c)) continue;
      ret = sent ? (ssize_t)sent : (errno = EAGAIN, -1);
      goto out;
    }
    if (shm_spin(&c->spin_tx, space_ready, c)) {
      SHM_STAT_ADD(c->st, spins_won, 1); /* stats */
      continue;
    }
    /* Sleep on the segment's futex, not on the socket: a reader thread of ours may
     * be asleep on the socket and consume the kicks. The futex wait is bounded so
     * that a peer that died (socket EOF or reset) is noticed. */
    uint32_t seq = __atomic_load_n(&c->tx.ctl->space_seq, __ATOMIC_ACQUIRE);
    shm_wait_arm_space(&c->tx, SHM_SLEEP_FUTEX);
    if (space_ready(c)) {
      shm_wait_disarm_space(&c->tx, SHM_SLEEP_FUTEX);
      continue;
    }
    int tmo = timeout_ms(fd, SO_SNDTIMEO), step = tmo < 0 || tmo > 50 ? 50 : tmo;
    if (!slept_since) slept_since = shm_now_ns();
    /* Without the write lock, as the kernel's send sleeps without the socket's:
     * a signal handler of this thread may write to the same connection (it
     * deadlocked on the lock), another thread may write meanwhile (its bytes go
     * between ours, as with the kernel), and fork() never waits for us. */
    struct sleep_undo u = {c, 0, 1, NULL, 0};
    pthread_mutex_unlock(&c->wlock);
    tl_wheld = wprev;
    int r = space_sleep(&u, &c->tx.ctl->space_seq, seq, step, tmo < 0);
    int e = errno;
    tl_wheld = c;
    pthread_mutex_lock(&c->wlock);
    shm_wait_disarm_space(&c->tx, SHM_SLEEP_FUTEX);
    if (r == 0) shm_spin_woke(&c->spin_tx);
    if (r < 0 && e == EINTR) {
      ret = sent ? (ssize_t)sent : (errno = EINTR, -1);
      goto out;
    }
    if (space_ready(c)) continue;
    /* The timeout counts time, not sleeps: wake-ups that bring no room (a peer
     * bumping the futex word without consuming) must not stretch it. */
    if (tmo >= 0 && shm_now_ns() - slept_since >= (uint64_t)tmo * 1000000) {
      ret = sent ? (ssize_t)sent : (errno = EAGAIN, -1);
      goto out;
    }
    shm_conn_probe(fd, c);
  }
out:
  pthread_mutex_unlock(&c->wlock);
  tl_wheld = wprev;
  return ret;
}

ssize_t shm_conn_send_oob(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags) {
  size_t total = iov_total(iov, iovcnt);
  if (total == 0 || !shm_conn_tx_switched(c)) return shm_conn_send(fd, c, iov, iovcnt, flags, NULL);
  /* Everything but the last byte through the ring, the mark, then the urgent byte
   * through the socket, where the peer's recv(MSG_OOB), select's exceptfds and
   * POLLPRI find it as without us. */
  struct iovec v[IOV_MAX_LOCAL];
  int k = iov_slice(iov, iovcnt, 0, total - 1, v, IOV_MAX_LOCAL);
  if (total > 1) {
    ssize_t n = shm_conn_send(fd, c, v, k, flags & ~MSG_OOB, NULL);
    if (n < 0 || (size_t)n < total - 1) return n;
  }
  unsigned char last = 0;
  k = iov_slice(iov, iovcnt, total - 1, 1, v, IOV_MAX_LOCAL);
  if (k == 1) last = *(unsigned char *)v[0].iov_base;
  if (REENTERED(tl_wheld, c)) return total > 1 ? (ssize_t)(total - 1) : -1;
  pthread_mutex_lock(&c->wlock);
  __atomic_store_n(&c->seg.base->conn.urg[c->role - 1], c->tx_total + 1, __ATOMIC_RELEASE);
  /* A reader asleep in a consuming read (shm_conn_recv's recv_wait) gets a
   * kick first: its read then stops at the mark instead of stepping over the
   * urgent byte. F2 in the sleeper check pairs with its arm's F1 before it
   * looked at urg. */
  if ((shm_wait_data_sleeper(&c->tx) & SHM_SLEEP_SOCKET) && !__atomic_load_n(&c->dead, __ATOMIC_RELAXED))
    kick(fd, c);
  struct sleep_undo u = {c, 0, 0, &c->wlock, 0};
  struct iovec lv = {&last, 1};
  struct msghdr lm = {.msg_iov = &lv, .msg_iovlen = 1};
  ssize_t r = sendmsg_locked(&u, fd, &lm, (flags & (MSG_DONTWAIT | MSG_NOSIGNAL)) | MSG_OOB);
  pthread_mutex_unlock(&c->wlock);
  if (r < 0) return total > 1 ? (ssize_t)(total - 1) : -1;
  return (ssize_t)total;
}

int shm_conn_at_mark(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || shm_conn_sock_is_data(c)) return -1;
  uint64_t um = __atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_ACQUIRE);
  return um && um - 1 == c->rx_total;
}

ssize_t shm_conn_send_from_fd(int fd, struct shm_conn *c, int in_fd, off_t *off, size_t len) {
  /* Through a bounce buffer: the ring is shared memory, and the kernel's sendfile
   * cannot target it. The caller's offset semantics are kept. */
  char buf[65536];
  size_t want = len < sizeof buf ? len : sizeof buf;
  ssize_t n = off ? pread(in_fd, buf, want, *off) : REAL(read)(in_fd, buf, want);
  if (n <= 0) return n;
  struct iovec v = {buf, (size_t)n};
  ssize_t w = shm_conn_send(fd, c, &v, 1, 0, NULL);
  if (w < 0) {
    if (!off) lseek(in_fd, -n, SEEK_CUR);
    return -1;
  }
  if (off) *off += w;
  else if (w < n) lseek(in_fd, (off_t)w - n, SEEK_CUR);
  return w;
}

uint64_t shm_conn_rx_woke_ns(struct shm_conn *c) {
  return shm_conn_state(c) == SHM_CONN_UPGRADED ? __atomic_load_n(&c->rx.ctl->woke_ns, __ATOMIC_RELAXED) : 0;
}

int shm_conn_rx_ready(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || shm_conn_sock_is_data(c)) return 0;
  return shm_ring_look_readable(&c->rx, 1) != 0 || __atomic_load_n(&c->rx.ctl->wr_closed, __ATOMIC_RELAXED);
}

/* Room for a writer, as the kernel reports it: not as soon as one byte is free, but
 * once a good part of the buffer is (TCP: free space at least half of what is
 * queued; AF_UNIX: at most a quarter of the buffer in use). A program that writes a
 * large block whenever it is told it can (socat: 64 KiB, blocking) would otherwise
 * block in that write, and with it its reading side. */
static int tx_room(struct shm_conn *c) {
  /* Enough room by either rule (a third of the ring free for TCP, three quarters
   * for AF_UNIX) is decided without the shared line when the cache shows it. */
  ssize_t w = shm_ring_look_writable(&c->tx, c->family == AF_UNIX ? c->tx.size / 4 * 3 : c->tx.size / 3 + 1);
  if (w <= 0) return (int)w;
  size_t used = c->tx.size - (size_t)w;
  return c->family == AF_UNIX ? used * 4 <= c->tx.size : (size_t)w * 2 >= used;
}

/* Is our room still the socket's? Before our switch-over, yes. After it, while
 * the plain bytes we wrote before it still wait in the socket for the peer: the
 * kernel would not report room yet, and neither do we (a program that filled the
 * socket would otherwise be told at once that it can write again, into the ring).
 * The socket's queue also holds our kicks: a few bytes left count as drained. */
static int tx_sock(int fd, struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || !shm_conn_tx_switched(c)) return 1;
  if (__atomic_load_n(&c->plain_out_done, __ATOMIC_RELAXED)) return 0;
  int q = 0;
  if (c->plain_sent && syscall(SYS_ioctl, fd, SIOCOUTQ, &q) == 0 && q >= 256) return 1;
  __atomic_store_n(&c->plain_out_done, 1, __ATOMIC_RELAXED);
  return 0;
}

int shm_conn_poll_bits(int fd, struct shm_conn *c) {
  int bits = 0;
  note_attach(fd, c);
  int sock_tx = tx_sock(fd, c), sock_rx = shm_conn_sock_is_data(c);
  if (sock_rx || sock_tx) {
    /* What the socket itself says: its data before the peer's switch point, and
     * room in it before ours. */
    struct pollfd p = {fd, (short)((sock_rx ? POLLIN | POLLRDHUP : 0) | (sock_tx ? POLLOUT : 0)), 0};
    if (poll_now(&p) > 0)
      bits |= p.revents & (POLLIN | POLLRDNORM | POLLRDHUP | POLLHUP | POLLERR | POLLOUT | POLLWRNORM);
  }
  if (sock_rx) {
    if (shm_conn_state(c) == SHM_CONN_UPGRADED && !(bits & POLLIN) && shm_ring_look_readable(&c->rx, 1) > 0 &&
        shm_conn_rx_switched(c))
      bits |= POLLIN | POLLRDNORM;
  } else {
    ssize_t r = shm_ring_look_readable(&c->rx, 1);
    if (r != 0) bits |= POLLIN | POLLRDNORM;
    if (r < 0) bits |= POLLERR;
    if (__atomic_load_n(&c->rx.ctl->wr_closed, __ATOMIC_ACQUIRE)) bits |= POLLIN | POLLRDNORM | POLLRDHUP;
    if (c->sock_err) bits |= POLLIN | POLLERR | POLLHUP;
    if (c->sock_eof) bits |= POLLIN | POLLRDNORM | POLLRDHUP | (c->family == AF_UNIX ? POLLHUP : 0);
    if (!(bits & POLLIN) && inline_urgent_due(fd, c)) bits |= POLLIN | POLLRDNORM;
  }
  if (c->rd_shut) bits |= POLLIN | POLLRDNORM | POLLRDHUP;
  if (shm_conn_state(c) == SHM_CONN_UPGRADED) {
    note_peer_reset(c); /* before and after the switch point alike */
    if (c->sock_err) bits |= POLLIN | POLLERR | POLLHUP;
    if (c->hup) bits |= POLLHUP;
  }
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || !shm_conn_tx_switched(c)) return bits;
  int w = tx_room(c);
  /* Switched with plain bytes still queued: room in both, as the socket says. */
  if (sock_tx && w > 0 && !(bits & POLLOUT)) w = 0;
  bits &= ~(POLLOUT | POLLWRNORM);
  if (w != 0 || c->wr_shut) bits |= POLLOUT | POLLWRNORM;
  if (w < 0) bits |= errno == EPIPE ? POLLHUP : POLLERR;
  if ((bits & POLLRDHUP) && c->wr_shut) bits |= POLLHUP;
  return bits;
}

int shm_conn_arm(int fd, struct shm_conn *c, int events, int *armed) {
  *armed = 0;
  if (events & POLLIN) {
    arm_rx(c);
    *armed |= POLLIN;
  }
  /* Room is only worth a kick when there was too little: a ring with room is
   * reported writable by the re-check below anyway. Before our switch-over the
   * socket's own room is what counts (the caller polls the socket for it). */
  if ((events & POLLOUT) && shm_conn_tx_switched(c) && tx_room(c) == 0) {
    arm_tx(c);
    *armed |= POLLOUT;
  }
  return shm_conn_poll_bits(fd, c);
}

void shm_conn_probe(int fd, struct shm_conn *c) {
  /* Without draining (a reader thread may be asleep on the socket's kicks): has
   * the peer shut down its side? Then a kick tells a live half-closed peer from a
   * dead one: unix refuses it, TCP answers it with a reset (seen next time). */
  struct pollfd p = {fd, POLLRDHUP, 0};
  if (poll_now(&p) <= 0) return;
  if (p.revents & (POLLHUP | POLLERR)) {
    c->sock_err = ECONNRESET;
  } else if (p.revents & POLLRDHUP) {
    c->sock_eof = 1;
    if (kick(fd, c) < 0 && errno != EAGAIN) c->sock_err = errno;
  }
}

int shm_conn_needs_timed_wait(struct shm_conn *c, int events) {
  /* A half-closed peer cannot kick our socket when it frees space: whoever waits
   * for POLLOUT must look again by itself. */
  /* Likewise while our socket still holds the client's plain bytes: its socket
   * buffer may be full, and its kick for room then fails with EAGAIN. */
  return (events & POLLOUT) && !c->sock_err && shm_conn_tx_switched(c) && tx_room(c) == 0 &&
         (c->sock_eof || shm_conn_sock_is_data(c));
}

/* Written since the last release: below this, the pages touched are few. */
#define SHM_RELEASE_MIN (16u << 10)

int shm_conn_tx_used(struct shm_conn *c) {
  if (!shm_cfg.idle_ms || shm_conn_state(c) != SHM_CONN_UPGRADED || !c->tx.ctl) return 0;
  /* Our own head, in shared memory (atomic): only a hint, a hostile peer changing
   * it costs at most a try. */
  uint32_t h = __atomic_load_n(&c->tx.ctl->head, __ATOMIC_RELAXED);
  return (uint32_t)(h - __atomic_load_n(&c->tx_released, __ATOMIC_RELAXED)) >= SHM_RELEASE_MIN;
}

void shm_conn_release_idle(struct shm_conn *c, uint64_t now) {
  if (!shm_conn_tx_used(c) || c->let_go || __atomic_load_n(&c->dead, __ATOMIC_RELAXED)) return;
  /* A forked child writing to the same ring is beyond our lock. */
  if (__atomic_load_n(&c->seg.base->conn.holders[c->role - 1], __ATOMIC_RELAXED) != 1) return;
  if (pthread_mutex_trylock(&c->wlock)) return; /* a writer: not idle after all */
  size_t freed = 0;
  if (c->tx.pos != c->idle_head || !c->idle_since) {
    c->idle_head = c->tx.pos; /* written since the last look: idle from now on */
    c->idle_since = now;
  } else if (now - c->idle_since >= (uint64_t)SHM_IDLE_NS) {
    freed = shm_ring_release_idle(&c->tx);
    if (freed) __atomic_store_n(&c->tx_released, c->tx.pos, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&c->wlock);
  if (freed) SHM_LOG(DEBUG, "idle: released %zu bytes of ring memory", freed);
}

void shm_conn_disarm(struct shm_conn *c, int events) {
  if (events & POLLIN) disarm_rx(c);
  if (events & POLLOUT) disarm_tx(c);
}

static void count_poller(struct shm_conn *c, int events, int delta) {
  if (events & POLLIN) __atomic_add_fetch(&c->pollers_rx, delta, __ATOMIC_RELAXED);
  if (events & POLLOUT) __atomic_add_fetch(&c->pollers_tx, delta, __ATOMIC_RELAXED);
}
int shm_conn_arm_poller(int fd, struct shm_conn *c, int events, int *armed) {
  count_poller(c, events, 1); /* before the arm: counted whenever it can be kicked */
  int bits = shm_conn_arm(fd, c, events, armed);
  count_poller(c, events & ~*armed, -1);
  return bits;
}
void shm_conn_disarm_poller(struct shm_conn *c, int armed) {
  shm_conn_disarm(c, armed);
  count_poller(c, armed, -1);
}

/* The kernel wakes every thread in poll on the socket; the first to consume the
 * kick left the others asleep with the data in the ring, until their timeout
 * (conc twopoll: every round). So a poller leaves the kicks where they are while
 * they are still news for another poller of ours: data in the ring for one that
 * waits for input, room for one that waits to write. They wake it, and it reports
 * what they announced; whoever finds them announcing nothing to anyone drains
 * them (no poller spins on a stale kick). Not covered: a kick for data that
 * arrives between that look and the drain (the others then sleep on). */
void shm_conn_drain_polled(int fd, struct shm_conn *c, int wants_input) {
  if (__atomic_load_n(&c->pollers_rx, __ATOMIC_RELAXED) > 0 && shm_conn_rx_ready(c)) return;
  if (__atomic_load_n(&c->pollers_tx, __ATOMIC_RELAXED) > 0 && shm_conn_state(c) == SHM_CONN_UPGRADED &&
      shm_conn_tx_switched(c) && tx_room(c) != 0)
    return;
  shm_conn_drain_for(fd, c, wants_input, 0);
}

int shm_conn_shutdown(int fd, struct shm_conn *c, int how) {
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
    errno = EINVAL;
    return -1;
  }
  if (how != SHUT_WR && !c->rd_shut) {
    c->rd_shut = 1;
    /* Wakes our threads asleep on the socket (their recv returns 0). */
    syscall(SYS_shutdown, fd, SHUT_RD);
  }
  if (how != SHUT_RD && !c->wr_shut) {
    pthread_mutex_lock(&c->wlock);
    shm_conn_switch_tx(fd, c);
    c->wr_shut = 1;
    if (shm_conn_tx_switched(c)) {
      shm_ring_close_write(&c->tx);
      /* The peer may sleep waiting for data that will now never come. */
      wake_consumer(fd, c);
    } else {
      /* Our bytes still go through the socket (the client has not attached): its
       * FIN ends them, and we never switch now. */
      syscall(SYS_shutdown, fd, SHUT_WR);
    }
    pthread_mutex_unlock(&c->wlock);
  }
  return 0;
}

/* Everything a read could return now, as the kernel counts it: programs size their
 * reads by it and stop when they have read that much (nginx does, and then waits
 * for the next edge), so it must not be a stale count. */
int shm_conn_fionread(int fd, struct shm_conn *c, int *out) {
  int v = 0;
  if (shm_conn_sock_is_data(c)) {
    if (syscall(SYS_ioctl, fd, FIONREAD, &v) < 0) return -1;
    if (shm_conn_state(c) != SHM_CONN_UPGRADED || !shm_conn_rx_switched(c)) {
      *out = v;
      return 0;
    }
    /* Plain bytes up to the switch point, then whatever the ring holds. */
    uint64_t left = c->rx_plain - c->sock_read;
    if ((uint64_t)v > left) v = (int)left;
  }
  ssize_t r = shm_ring_look_readable(&c->rx, SIZE_MAX); /* exact: the shared head */
  if (r > 0) v += (int)r; /* at most 64 MiB, plus at most a socket buffer */
  *out = v;
  return 0;
}

void shm_conn_ref(struct shm_conn *c) { __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED); }

void shm_conn_hold(struct shm_conn *c, int delta) {
  if (delta > 0 && shm_conn_state(c) == SHM_CONN_PENDING) c->fork_shared = 1; /* see conn_release */
  if (shm_conn_state(c) == SHM_CONN_UPGRADED && c->seg.base)
    __atomic_add_fetch(&c->seg.base->conn.holders[c->role - 1], (uint32_t)delta, __ATOMIC_ACQ_REL);
}

void shm_conn_forked_child(struct shm_conn *c) {
  c->busy = 0; /* the calls in flight were the parent's other threads' */
  c->born_ns = 0; /* its life is the parent's to judge */
  c->sleepers_rx = c->sleepers_tx = c->pollers_rx = c->pollers_tx = c->resolve_waiters = c->rx_asleep = 0; /* the parent's other threads */
  if (c->peer_proven == SHM_PROOF_BUSY) c->peer_proven = SHM_PROOF_NONE; /* a parent thread was checking */
  pthread_mutex_init(&c->rlock, NULL);
  pthread_mutex_init(&c->wlock, NULL);
  pthread_mutex_init(&c->lock, NULL);
}

/* This process lets go of the connection. The last holder anywhere marks both
 * rings closed (EOF for the peer after our data, EPIPE for its writes) and
 * consumes the kicks waiting on the socket: an unread byte would turn the
 * kernel's close into a reset. */
static void let_go(int fd, struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || !c->seg.base || c->let_go) return;
  shm_conn_seen_attached(fd, c, 1); /* the last holder reports the outcome */
  c->let_go = 1;
  uint32_t *h = &c->seg.base->conn.holders[c->role - 1];
  /* While another process still holds it (a child after fork(), sharing our open
   * socket), its waiters may be armed and asleep on that socket: the flags and the
   * kicks are theirs, and our close does not end the socket. */
  if (__atomic_sub_fetch(h, 1, __ATOMIC_ACQ_REL) != 0) return;
  /* As the kernel: a close with data still unread, or after SO_LINGER {1,0}, is
   * a reset for the peer; otherwise an orderly close. Unread as the shared
   * indices say, not our own position: the reader may have been another process
   * (a fork child, an image we spawned, which read it all and exited first). */
  uint32_t unread = __atomic_load_n(&c->rx.ctl->head, __ATOMIC_ACQUIRE) - __atomic_load_n(&c->rx.ctl->tail, __ATOMIC_ACQUIRE);
  int reset = unread != 0 || (fd >= 0 && c->family != AF_UNIX && linger_zero(fd));
  __atomic_store_n(&c->seg.base->conn.gone[c->role - 1], reset ? 2u : 1u, __ATOMIC_RELEASE);
  shm_ring_close_write(&c->tx);
  shm_ring_close_read(&c->rx);
  shm_wait_disarm_data(&c->rx, SHM_SLEEP_SOCKET);
  shm_wait_disarm_space(&c->tx, SHM_SLEEP_SOCKET);
  if (fd >= 0) drain_sock(fd, c, 0);
}

void shm_conn_exit(int fd, struct shm_conn *c) { let_go(fd, c); }

/* Connections are never freed: a call that loaded the pointer just before another
 * thread's close() must find valid memory when it takes its hold (and then sees
 * that the fd changed). */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shm_conn *pool;

/* Taken around a pending connection's change to UPGRADED, and by fork()'s prepare
 * handler after every other lock: so a fork() child has a connection upgraded
 * exactly when the prepare handler counted it as a holder. */
static pthread_mutex_t upgrade_lock = PTHREAD_MUTEX_INITIALIZER;

void shm_conn_pool_forked_child(void) {
  pthread_mutex_init(&pool_lock, NULL);
  pthread_mutex_init(&upgrade_lock, NULL);
}

void shm_conn_fork_lock(int op) {
  switch (op) {
  case 0: pthread_mutex_lock(&pool_lock); pthread_mutex_lock(&upgrade_lock); break;
  case 1: pthread_mutex_unlock(&upgrade_lock); pthread_mutex_unlock(&pool_lock); break;
  case 2: pthread_mutex_lock(&upgrade_lock); break;
  default: pthread_mutex_unlock(&upgrade_lock); break;
  }
}

struct shm_conn *shm_conn_alloc(void) {
  pthread_mutex_lock(&pool_lock);
  struct shm_conn *c = pool;
  if (c) pool = c->pool_next;
  pthread_mutex_unlock(&pool_lock);
  if (!c && !(c = calloc(1, sizeof *c))) return NULL;
  /* Not `busy`: a late caller of the previous life may still be moving it. */
  memset((char *)c + offsetof(struct shm_conn, dead), 0, sizeof *c - offsetof(struct shm_conn, dead));
  pthread_mutex_init(&c->rlock, NULL);
  pthread_mutex_init(&c->wlock, NULL);
  pthread_mutex_init(&c->lock, NULL);
  c->refs = 1;
  c->endpoint = -1;
  c->seg.fd = -1;
  c->st = &shm_stat_sink;
  return c;
}

/* The end of a connection, by whoever is last: the closer (fd still open: the
 * kicks on the socket are consumed) or the last call in flight (fd -1). */
static void conn_release(struct shm_conn *c, int fd) {
  if (__atomic_exchange_n(&c->finishing, 1, __ATOMIC_ACQ_REL)) return;
  int saved = errno;
  if (c->role == SHM_SERVER && shm_conn_state(c) == SHM_CONN_PENDING && !c->fork_shared) {
    /* Never used through the library (io_uring, stdio, or nothing at all): plain.
     * After a fork the other process may still use it, and speaks for it. */
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: closed before any use through the library", fd);
  }
  shm_stat_close(c->st); /* stats */
  c->st = &shm_stat_sink;
  if (shm_conn_state(c) == SHM_CONN_UPGRADED && c->born_ns) shm_conn_note_life(c);
  /* Before the endpoint goes: a server's last look at the client's answer is there. */
  if (shm_conn_state(c) == SHM_CONN_UPGRADED && c->seg.base) let_go(fd, c);
  shm_conn_free_endpoint(c);
  if (c->seg.base) shm_seg_destroy(&c->seg);
  while (c->anc_head) { /* descriptors that never reached the application */
    struct shm_anc *a = c->anc_head;
    c->anc_head = a->next;
    close_fds(a);
    free(a);
  }
  for (int i = 0; i < c->mk_nfds; i++) syscall(SYS_close, c->mk_fds[i]);
  free(c->mk_fds);
  c->mk_fds = NULL;
  pthread_mutex_destroy(&c->rlock);
  pthread_mutex_destroy(&c->wlock);
  pthread_mutex_destroy(&c->lock);
  pthread_mutex_lock(&pool_lock);
  c->pool_next = pool;
  pool = c;
  pthread_mutex_unlock(&pool_lock);
  errno = saved;
}

void shm_conn_put(struct shm_conn *c) {
  if (__atomic_sub_fetch(&c->busy, 1, __ATOMIC_SEQ_CST) == 0 && __atomic_load_n(&c->dead, __ATOMIC_SEQ_CST))
    conn_release(c, -1);
}

void shm_conn_unref(int fd, struct shm_conn *c) {
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  int saved = errno;
  /* The fd table no longer leads here (the caller cleared the slot): a call in
   * flight either took its hold before, and ends the connection when it returns
   * (as the kernel lets a blocked recv() finish after another thread's close()),
   * or sees the change and lets go without touching it. */
  __atomic_store_n(&c->dead, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&c->busy, __ATOMIC_SEQ_CST) == 0) conn_release(c, fd);
  errno = saved;
}

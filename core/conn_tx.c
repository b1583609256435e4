/* Writing an upgraded connection: our plain bytes before the switch-over, then the
 * ring (published in pieces, waiting for room); markers, urgent data, sendfile;
 * the peer's end (linger, reset, EPIPE). */
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

/* Large writes are published in pieces of this size (shm_conn_send). */
#define PUBLISH_CHUNK (64u << 10)

/* Writer, AF_UNIX: must the next data be preceded by a marker that carries our
 * credentials? With SO_PASSCRED the kernel gives every message the writer's
 * credentials at the time of the write (pid, real uid and gid): after a
 * setuid() to drop privileges, in a fork() child, or after an explicit
 * SCM_CREDENTIALS, they are not those of the connection's first writer. Only
 * when the reader asked (want_cred), and only when ours changed: three system
 * calls per write to such a reader. */
static int reader_wants_cred(struct shm_conn *c) {
  return c->family == AF_UNIX && __atomic_load_n(&c->seg.base->conn.want_cred[2 - c->role], __ATOMIC_ACQUIRE);
}
static int cred_due(struct shm_conn *c, struct ucred *now) {
  if (!reader_wants_cred(c)) return 0;
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

static int space_ready(void *a) {
  struct shm_conn *c = a;
  uint32_t want = c->tx_want ? c->tx_want : 1;
  ssize_t n = shm_ring_look_writable(&c->tx, want);
  return n < 0 || (size_t)n >= want; /* (an error ends the wait: the write says which) */
}

int linger_zero(int fd) {
  struct linger lg = {0, 0};
  socklen_t l = sizeof lg;
  return syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_LINGER, &lg, &l) == 0 && lg.l_onoff && !lg.l_linger;
}

/* How the peer's last holder let go: 0 not yet, 1 closed, 2 reset (shm_seg_conn.gone). */
uint32_t peer_left(struct shm_conn *c) {
  if (c->role == SHM_SERVER && __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) != SHM_PROOF_OK)
    return 0; /* not our peer's word yet */
  uint32_t g = __atomic_load_n(&c->seg.base->conn.gone[2 - c->role], __ATOMIC_ACQUIRE);
  return g > 2 ? 2 : g; /* anything else from a peer: the harsher reading */
}

/* The peer reset the connection (closed with unread data, or abortively): report it
 * once, as the kernel reports a received reset (ECONNRESET from the next read or
 * SO_ERROR, POLLERR until then). */
void note_peer_reset(struct shm_conn *c) {
  if (conn_flag(c, SHM_F_RESET_SEEN) || peer_left(c) != 2 || !conn_flag_claim(c, SHM_F_RESET_SEEN)) return;
  if (!CONN_WORD(c->sock_err)) CONN_SET(c->sock_err, ECONNRESET);
}

int shm_conn_take_error(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED) return 0;
  note_peer_reset(c);
  int e = __atomic_exchange_n(&c->sock_err, 0, __ATOMIC_RELAXED); /* reported once */
  if (e) {
    conn_flag_set(c, SHM_F_SOCK_EOF);
    conn_flag_set(c, SHM_F_HUP);
  }
  return e;
}

/* A peer that only shut down its writing side (socket EOF) still reads: writes
 * fail only once its reading side is gone (ring flag) or the socket was reset. */
static int peer_gone(struct shm_conn *c) {
  return CONN_WORD(c->sock_err) || __atomic_load_n(&c->tx.ctl->rd_closed, __ATOMIC_RELAXED);
}

/* send_plain's send on the socket, unless our direction is on the ring by now (or
 * the connection is broken): one sendmsg, as the program's own would be. A
 * blocking one the kernel cut short was interrupted (a signal, even with
 * SA_RESTART, or SO_SNDTIMEO): the partial count is the answer, as without us.
 * Its result (0: nothing sent, and *err its errno if it failed). Write lock held. */
static ssize_t send_on_socket(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                              const struct msghdr *mh, int *err) {
  shm_conn_switch_tx(fd, c); /* if upgraded and the peer reads the ring */
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (shm_conn_tx_switched(c) || st == SHM_CONN_BROKEN) return 0;
  /* Pending, found plain meanwhile, or a server whose client has not attached:
   * the socket it is. */
  struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  if (mh) {
    m.msg_control = mh->msg_control;
    m.msg_controllen = mh->msg_controllen;
  }
  /* A blocking write sleeps in the kernel, as without us: SO_SNDTIMEO and
   * SA_RESTART are the kernel's. An offer that comes meanwhile changes nothing
   * for these bytes (the peer reads the socket up to our switch point), and the
   * offer's proof no longer keeps a dead peer's socket open. */
  struct sleep_undo u = {c, 0, 0, &c->wlock, 0};
  ssize_t n = sendmsg_locked(&u, fd, &m, flags);
  if (n <= 0) {
    *err = n < 0 ? errno : 0;
    return n;
  }
  /* An urgent byte leaves the peer's normal stream (SO_OOBINLINE off): it is not
   * one of the bytes the peer reads before our switch point. */
  c->plain_sent += (uint64_t)n - ((flags & MSG_OOB) ? 1 : 0);
  SHM_STAT_ADD(c->st, tx_sock, n); /* stats */
  return n;
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
  size_t total = iov_total(iov, iovcnt);
  int err = 0;
  ssize_t n = send_on_socket(fd, c, iov, iovcnt, flags, mh, &err);
  size_t sent = n > 0 ? (size_t)n : 0;
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

/* Before any byte goes to the ring: our side shut down, or the peer let go. 1 if
 * the call ends with *ret (pn: plain bytes this call already sent). */
static int send_refused(struct shm_conn *c, int flags, ssize_t pn, size_t total, ssize_t *ret) {
  *ret = -1;
  if (conn_flag(c, SHM_F_WR_SHUT)) {
    raise_sigpipe(flags);
    errno = EPIPE;
    return 1;
  }
  uint32_t gone = peer_left(c);
  if (__builtin_expect(gone == 0, 1) || pn) return 0;
  note_peer_reset(c);
  if (c->family != AF_UNIX && gone == 1 && !conn_flag(c, SHM_F_TCP_RST_OWED)) {
    /* TCP: the kernel takes the first send after the peer closed, and the peer's
     * kernel answers it with a reset: reported from now on. A send of nothing
     * puts no segment on the wire: nothing to answer, no reset owed. */
    if (total == 0) {
      *ret = 0;
      return 1;
    }
    if (conn_flag_claim(c, SHM_F_TCP_RST_OWED)) { /* (another thread's send may have been that one) */
      *ret = (ssize_t)total;
      if (!CONN_WORD(c->sock_err)) CONN_SET(c->sock_err, ECONNRESET);
      conn_flag_set(c, SHM_F_HUP);
      return 1;
    }
  }
  shm_conn_take_error(c); /* the failing send consumes a pending reset, as the kernel's does */
  conn_flag_set(c, SHM_F_HUP);
  raise_sigpipe(flags);
  errno = EPIPE;
  return 1;
}

/* Before this call's first ring byte, with room for one: the application's
 * descriptors (mh), or our credentials if they changed since the reader last
 * learnt them, in a marker on the socket. *mh is cleared once sent. -1: failed. */
static int send_markers_due(int fd, struct shm_conn *c, const struct msghdr **mh, int flags, int *nonblock) {
  struct ucred now;
  if (*mh) {
    /* We are the only writer: the descriptors can go now, their data right after. */
    int due = cred_due(c, &now);
    if (send_marker(fd, c, *mh, call_nonblock(nonblock, fd, c, flags)) < 0) return -1;
    /* The kernel gave the marker our credentials, unless the application chose
     * them: then the next data must say ours again. */
    if (has_explicit_cred(*mh)) memset(&c->tx_cred, 0, sizeof c->tx_cred);
    else if (due) c->tx_cred = now;
    *mh = NULL;
  } else if (cred_due(c, &now)) {
    /* A marker without descriptors, which the kernel gives our credentials. */
    struct msghdr none = {0};
    if (send_marker(fd, c, &none, call_nonblock(nonblock, fd, c, flags)) < 0) return -1;
    c->tx_cred = now;
  }
  return 0;
}

/* A blocking write found the ring full: spin, then sleep on the segment's futex,
 * not on the socket (a reader thread of ours may be asleep on the socket and
 * consume the kicks), in steps of at most 50 ms so that a peer that died (socket
 * EOF or reset) is noticed. Called, and returns, with the write lock held
 * (tl_wheld == c; wprev: the caller's previous one). 1: look again; 0: the call
 * ends with *err (EINTR, or EAGAIN when SO_SNDTIMEO ran out, counted from
 * *slept_since, the call's first sleep). */
static int send_wait(int fd, struct shm_conn *c, struct shm_conn *wprev, uint64_t *slept_since, int *err) {
  if (shm_spin(&c->spin_tx, space_ready, c)) {
    SHM_STAT_ADD(c->st, spins_won, 1); /* stats */
    return 1;
  }
  uint32_t seq = __atomic_load_n(&c->tx.ctl->space_seq, __ATOMIC_ACQUIRE);
  shm_wait_arm_space(&c->tx, SHM_SLEEP_FUTEX);
  if (space_ready(c)) {
    shm_wait_disarm_space(&c->tx, SHM_SLEEP_FUTEX);
    return 1;
  }
  int tmo = timeout_ms(fd, SO_SNDTIMEO), step = tmo < 0 || tmo > 50 ? 50 : tmo;
  if (!*slept_since) *slept_since = shm_now_ns();
  /* Without the write lock, as the kernel's send sleeps without the socket's: a
   * signal handler of this thread may write to the same connection (it
   * deadlocked on the lock), another thread may write meanwhile (its bytes go
   * between ours, as with the kernel), and fork() never waits for us. */
  struct sleep_undo u = {c, 0, 1, NULL, 0};
  tx_leave(c);
  pthread_mutex_unlock(&c->wlock);
  tl_wheld = wprev;
  shm_locks_settle(); /* (a handler's close left to us: before we sleep) */
  int r = space_sleep(&u, &c->tx.ctl->space_seq, seq, step, tmo < 0);
  int e = errno;
  tl_wheld = c;
  pthread_mutex_lock(&c->wlock);
  tx_enter(c); /* (a process of ours may have written meanwhile) */
  shm_wait_disarm_space(&c->tx, SHM_SLEEP_FUTEX);
  if (r == 0) shm_spin_woke(&c->spin_tx);
  if (r < 0 && e == EINTR) {
    *err = EINTR;
    return 0;
  }
  if (space_ready(c)) return 1;
  /* The timeout counts time, not sleeps: wake-ups that bring no room (a peer
   * bumping the futex word without consuming) must not stretch it. */
  if (timeout_left_ns(tmo, *slept_since) == 0) {
    *err = EAGAIN;
    return 0;
  }
  shm_conn_probe(fd, c);
  return 1;
}

/* The common write, whole in one go: our direction on the ring, nothing to send
 * on the socket first (descriptors, or credentials the reader asked for), the
 * peer still there, room for all of it, at most one publish chunk. The general
 * path below would do exactly this, through more steps. In a process that has
 * never had a second thread (SHM_ONE_THREAD) without the write lock: only a
 * signal handler can come between, and REENTERED keeps it off this connection
 * as it does with the lock. -2: not that case. */
static ssize_t send_fast(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, const struct msghdr *mh) {
  if (mh || !shm_conn_tx_switched(c) || shm_conn_state(c) != SHM_CONN_UPGRADED || conn_flag(c, SHM_F_WR_SHUT) ||
      peer_left(c) || tl_wheld == c || reader_wants_cred(c))
    return -2;
  size_t total = iov_total(iov, iovcnt);
  if (total - 1 >= PUBLISH_CHUNK) return -2; /* nothing, or more than a chunk */
  int locked = !SHM_ONE_THREAD();
  struct shm_conn *wprev = tl_wheld;
  tl_wheld = c;
  if (locked) pthread_mutex_lock(&c->wlock);
  tx_enter(c);
  ssize_t n = shm_ring_write_whole(&c->tx, iov, iovcnt, total);
  if (n > 0) {
    c->tx_total += (uint64_t)n;
    SHM_STAT_ADD(c->st, tx_ring, n); /* stats */
    wake_consumer(fd, c);
  } else {
    n = -2; /* full, or failed: the general path says how */
  }
  tx_leave(c);
  if (locked) pthread_mutex_unlock(&c->wlock);
  tl_wheld = wprev;
  return n;
}

/* One shm_conn_send call's state across its pieces (under the write lock). */
struct send_call {
  int fd, flags, iovcnt;
  struct shm_conn *c, *wprev; /* wprev: tl_wheld before the call */
  const struct iovec *iov;
  const struct msghdr *mh; /* its descriptors, until they went */
  size_t total, sent;      /* sent: the first bytes may have gone through the socket */
  int nonblock;            /* -1: not looked up yet */
  uint64_t slept_since;    /* first sleep of this call, for SO_SNDTIMEO */
  ssize_t ret;             /* the call's result, once decided */
};

/* The call ends: what was sent, or -1 with errno e. Returns 0 (for `return
 * end_call(...)` in a piece). */
static int end_call(struct send_call *s, int e) {
  s->ret = s->sent ? (ssize_t)s->sent : (errno = e, -1);
  return 0;
}

/* Before the first piece: the descriptor and credential markers due on the
 * socket. Shared (another process of ours writes too), the marker, under the side
 * lock, never waits in the kernel there (a sibling would take the lock over after
 * 2 s): a blocking call waits for room on the socket without it (SO_SNDTIMEO
 * counted, a signal ends it with EINTR), then begins again. 1: go on with the
 * piece; 0: begin again; -1: the call ends (s->ret). */
static int markers_first(struct send_call *s) {
  struct shm_conn *c = s->c;
  int shared = c->xheld[0], mnb = 1;
  if (send_markers_due(s->fd, c, &s->mh, s->flags, shared ? &mnb : &s->nonblock) == 0) {
    if (!c->xheld[0]) tx_enter(c); /* (a fork while the marker was in the kernel) */
    return 1;
  }
  int e = errno;
  s->ret = -1;
  if (!shared || (e != EAGAIN && e != EWOULDBLOCK) || call_nonblock(&s->nonblock, s->fd, s->c, s->flags)) return errno = e, -1;
  tx_leave(c);
  if (!s->slept_since) s->slept_since = shm_now_ns();
  int64_t left = timeout_left_ns(timeout_ms(s->fd, SO_SNDTIMEO), s->slept_since);
  if (left == 0) return -1; /* EAGAIN, as the kernel's send when SO_SNDTIMEO runs out */
  struct pollfd p = {s->fd, POLLOUT, 0};
  struct timespec ts = {0, left > 0 && left < 50000000 ? (long)left : 50000000};
  if (syscall(SYS_ppoll, &p, 1, &ts, NULL, (size_t)8) < 0 && errno == EINTR) return -1;
  return 0;
}

/* The ring had no room for the piece (n == 0), or failed: 1: look again; 0: the
 * call ends (s->ret). */
static int piece_refused(struct send_call *s, ssize_t n, int whole, size_t len) {
  struct shm_conn *c = s->c;
  if (n < 0 && errno == EPROTO) return end_call(s, ring_broken(s->fd));
  if (n < 0 || peer_gone(c)) {
    if (!s->sent) raise_sigpipe(s->flags);
    return end_call(s, EPIPE);
  }
  if (call_nonblock(&s->nonblock, s->fd, s->c, s->flags)) {
    shm_conn_drain(s->fd, c); /* a dead peer must turn EAGAIN into EPIPE */
    return peer_gone(c) ? 1 : end_call(s, EAGAIN);
  }
  int err;
  c->tx_want = whole ? (uint32_t)len : 1;
  int again = send_wait(s->fd, c, s->wprev, &s->slept_since, &err);
  c->tx_want = 0;
  return again ? 1 : end_call(s, err);
}

/* One piece into the ring. Large writes are published in pieces: the reader
 * starts copying out while we copy in, instead of the two taking turns over the
 * whole ring. Another process of ours writes too: each piece goes whole, as the
 * kernel's socket keeps each send (each of its buffers) whole between senders;
 * the side lock is let go only while we wait for room, so only there can
 * another's bytes come between two of our pieces. 1: another piece; 0: the call
 * ends (s->ret). */
static int send_piece(struct send_call *s) {
  struct shm_conn *c = s->c;
  struct iovec v[IOV_MAX_LOCAL];
  const struct iovec *cur = s->iov;
  int cnt = s->iovcnt;
  size_t len = s->total - s->sent;
  if (s->sent || len > PUBLISH_CHUNK) {
    if (len > PUBLISH_CHUNK) len = PUBLISH_CHUNK;
    cnt = iov_slice(s->iov, s->iovcnt, s->sent, len, v, IOV_MAX_LOCAL);
    cur = v;
  }
  /* (Each piece: the connection may have become shared since the last one, by a
   * fork whose prepare handler gave up waiting for us after its 2 ms.) */
  if (!c->xheld[0]) tx_enter(c);
  if (!s->sent && shm_ring_writable(&c->tx, 1) > 0) {
    int m = markers_first(s);
    if (m <= 0) return m == 0;
  }
  int whole = c->xheld[0] && len <= c->tx.size / 4; /* (below POLLOUT's threshold) */
  ssize_t n = s->mh && !s->sent ? 0
              : whole          ? shm_ring_write_whole(&c->tx, cur, cnt, len)
                               : shm_ring_writev(&c->tx, cur, cnt);
  if (n <= 0) return piece_refused(s, n, whole, len);
  c->tx_total += (uint64_t)n;
  SHM_STAT_ADD(c->st, tx_ring, n); /* stats */
  wake_consumer(s->fd, c);
  s->sent += (size_t)n;
  if (s->sent < s->total) return 1;
  s->ret = (ssize_t)s->sent;
  return 0;
}

ssize_t shm_conn_send(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      const struct msghdr *mh) {
  int done;
  if (mh && !mh->msg_controllen) mh = NULL;
  if (CONN_WORD(c->rx_batch)) CONN_SET(c->rx_batch, 0); /* an answer: not a stream of reads (recv_fast) */
  ssize_t fast = send_fast(fd, c, iov, iovcnt, mh);
  if (fast != -2) return fast;
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
  ssize_t ret;
  if (send_refused(c, flags, pn, total, &ret)) return ret;
  if (total == 0) return 0;
  if (REENTERED(tl_wheld, c)) return pn > 0 ? pn : -1;
  struct send_call s = {.fd = fd, .flags = flags, .iovcnt = iovcnt, .c = c, .wprev = tl_wheld, .iov = iov,
                        .mh = mh, .total = total, .sent = (size_t)pn, .nonblock = -1};
  tl_wheld = c;
  pthread_mutex_lock(&c->wlock);
  while (send_piece(&s)) {
  }
  tx_leave(c);
  pthread_mutex_unlock(&c->wlock);
  tl_wheld = s.wprev;
  return s.ret;
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
  tx_enter(c);
  __atomic_store_n(&c->seg.base->conn.urg[c->role - 1], c->tx_total + 1, __ATOMIC_RELEASE);
  /* A reader asleep in a consuming read (shm_conn_recv's recv_wait) gets a
   * kick first: its read then stops at the mark instead of stepping over the
   * urgent byte. F2 in the sleeper check pairs with its arm's F1 before it
   * looked at urg. */
  if ((shm_wait_data_sleeper(&c->tx) & SHM_SLEEP_SOCKET) && !__atomic_load_n(&c->dead, __ATOMIC_RELAXED))
    kick(fd, c);
  tx_leave(c); /* the mark is placed; the urgent byte goes through the kernel */
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
  uint64_t um = peer_urg(c);
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


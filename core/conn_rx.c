/* Reading an upgraded connection: the peer's plain bytes before its switch point,
 * then the ring; the blocked reader's wait. What else its socket carries (kicks,
 * markers, urgent data): conn_sock.c; descriptors and credentials: conn_anc.c. */
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

/* The peer's plain bytes are all read: what its socket holds now is kicks,
 * markers, and maybe its end of file. Those that came while the socket still held
 * data were left there (the epoll and poll drains leave a socket that carries data
 * to the reader), and their edges are spent: take them now, or a peer that died
 * right after its switch-over would never be noticed (redis kept a killed
 * pipelining client for good, 1 run in about 20: tests/integration/redis.sh's
 * kill). Read lock held. */
static void plain_done(int fd, struct shm_conn *c) { drain_sock(fd, c, 0); }

/* What recv_plain_once's receive took (n > 0 bytes into v; sw: the peer had
 * switched before it), counted. The caller's plain bytes, or -2: none (the
 * ring's turn). */
static ssize_t plain_took(int fd, struct shm_conn *c, const struct iovec *v, int k, ssize_t n, int sw, int flags,
                          struct msghdr *mh) {
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
    plain_read_add(c, (uint64_t)n);
    SHM_STAT_ADD(c->st, rx_sock, n); /* stats */
    if (shm_conn_rx_switched(c) && CONN_WORD(c->sock_read) == CONN_WORD(c->rx_plain)) plain_done(fd, c);
  }
  return n;
}

/* Before the peer's switch point: socket bytes are data. Returns bytes, 0 at EOF,
 * -1 with errno, or -2 when the socket's data is exhausted (continue on the ring). */
static ssize_t recv_plain_once(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
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
    if (n == 0) conn_flag_set(c, SHM_F_SOCK_EOF);
    return n;
  }
  return plain_took(fd, c, v, k, n, sw, flags, mh);
}

/* The peer's plain bytes (before its switch point) on a connection several of our
 * processes hold: each read of them and its count (plain_read, shared) are made
 * under our readers' side lock, and never wait in the kernel there (MSG_DONTWAIT):
 * a blocking read sleeps in a one-byte peek without it (SO_RCVTIMEO, SA_RESTART
 * and cancellation as the kernel's), armed on the ring, then looks again. Two
 * processes reading at once each counted from the same start: the count came out
 * short by one read, and both slept in the kernel for plain bytes already read
 * while the ring filled (forkshare concr, about 1 run in 20); or one read kick
 * bytes as data. */
static ssize_t recv_plain(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                          struct msghdr *mh, size_t ctl_cap) {
  if (!c->seg.base || __atomic_load_n(&c->seg.base->conn.holders[c->role - 1], __ATOMIC_ACQUIRE) <= 1 ||
      (c->role == SHM_SERVER && shm_conn_proving_here(c)))
    return recv_plain_once(fd, c, iov, iovcnt, flags, mh, ctl_cap);
  int blocking = !(flags & MSG_DONTWAIT) && !conn_nonblock(fd, c);
  for (;;) {
    conn_xlock(c, 1);
    plain_read_sync(c);
    ssize_t n = recv_plain_once(fd, c, iov, iovcnt, flags | MSG_DONTWAIT, mh, ctl_cap);
    int e = errno;
    conn_xleave(c, 1);
    errno = e;
    if (n != -1 || (e != EAGAIN && e != EWOULDBLOCK) || !blocking) return n;
    int armed = arm_rx(c);
    struct sleep_undo u = {c, armed, 0, &c->rlock, 0}; /* the caller holds rlock */
    long r = sleep_on_sock(&u, fd, -1);
    e = errno;
    if (armed) disarm_rx(c);
    if (r < 0 && e != EAGAIN && e != EWOULDBLOCK) {
      errno = e;
      return -1; /* a signal, or the socket's error (the next read reports it) */
    }
    if (r < 0) {
      errno = EAGAIN; /* SO_RCVTIMEO ran out */
      return -1;
    }
  }
}

static int data_ready(void *a) {
  struct shm_conn *c = a;
  return shm_ring_readable(&c->rx, 1) != 0 || __atomic_load_n(&c->rx.ctl->wr_closed, __ATOMIC_ACQUIRE);
}


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
    rx_leave(c);
    pthread_mutex_unlock(&c->rlock);
    tl_rheld = rprev;
    shm_locks_settle();
    r = space_sleep(&u, &c->rx.ctl->data_seq, seq, step, tmo < 0);
    e = errno;
    tl_rheld = c;
    pthread_mutex_lock(&c->rlock);
    rx_enter(c); /* (a process of ours may have read meanwhile) */
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

/* After recv_wait_sock's sleep (t: what a consuming sleep took, else NULL; r, e:
 * its result; left: the time it was given, -1 none). Read lock held. */
static int recv_woke(int fd, struct shm_conn *c, struct sock_take *t, long r, int e, int64_t left) {
  if (t) {
    int more = sock_took(c, t, r, e);
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

/* No other reader of ours sleeps on the socket (as recv_wait saw it): sleep in
 * the kernel on it, armed. Read lock held on entry and return. */
static int recv_wait_sock(int fd, struct shm_conn *c, struct shm_conn *rprev, uint64_t *first_sleep_ns, int *err) {
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
  rx_leave(c);
  pthread_mutex_unlock(&c->rlock);
  tl_rheld = rprev;
  shm_locks_settle();
  long r = left == 0 ? 0 : consume ? sleep_consuming(&u, fd, c->family, &t) : sleep_on_sock(&u, fd, left);
  int e = errno;
  if (left >= 0 && r == 0) r = -1, e = EAGAIN; /* SO_RCVTIMEO ran out */
  tl_rheld = c;
  pthread_mutex_lock(&c->rlock);
  __atomic_sub_fetch(&c->rx_asleep, 1, __ATOMIC_RELAXED);
  disarm_rx(c);
  rx_enter(c);
  if (r < 0 && (e == EINTR || e == EAGAIN || e == EWOULDBLOCK)) {
    *err = e;
    return 0;
  }
  return recv_woke(fd, c, consume ? &t : NULL, r, e, left);
}

/* A blocking read found the ring empty: spin, then sleep until a kick, the
 * peer's exit, a signal or SO_RCVTIMEO. Called, and returns, with the read lock
 * held (tl_rheld == c; rprev: the caller's previous tl_rheld). 1: look again;
 * 0: the call ends with *err (EINTR, EAGAIN). */
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
  return recv_wait_sock(fd, c, rprev, first_sleep_ns, err);
}

enum { RECV_DONE, RECV_AGAIN, RECV_WAIT, RECV_RING };

/* The ring is empty (got: bytes this call has already): end the call (*ret),
 * look again, or wait. *nonblock: -1 until known. Read lock held. */
static int recv_empty(int fd, struct shm_conn *c, int flags, size_t got, int waitall, int *nonblock,
                      ssize_t *ret) {
  /* Empty. Shut down for reading? */
  if (conn_flag(c, SHM_F_RD_SHUT) || (got && !waitall)) {
    *ret = (ssize_t)got;
    return RECV_DONE;
  }
  if (call_nonblock(nonblock, fd, c, flags) || conn_flag(c, SHM_F_SOCK_EOF) || CONN_WORD(c->sock_err)) {
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
      conn_flag_set(c, SHM_F_SOCK_EOF);
      if (!e) { /* another thread reported it just now: what is left is the end */
        *ret = 0;
        return RECV_DONE;
      }
      errno = e;
      *ret = -1;
      return RECV_DONE;
    }
    if (conn_flag(c, SHM_F_SOCK_EOF) || *nonblock) {
      if (got) *ret = (ssize_t)got;
      else if (conn_flag(c, SHM_F_SOCK_EOF)) *ret = 0;
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
  if (!got && !conn_flag(c, SHM_F_SOCK_EOF) && !CONN_WORD(c->sock_err)) drain_locked(fd, c);
  int e = got || peek ? 0 : shm_conn_take_error(c);
  if (!e) return (ssize_t)got;
  errno = e;
  return -1;
}

/* recv_fast's batching: a read that found fewer than RX_BATCH_BELOW bytes, with
 * room for twice as many, from a producer in fast mode makes the next such read
 * wait RX_BATCH_PAUSES pauses (about 0.9 us on this VM; shm_cpu_relax's length
 * differs between CPUs) before it looks. */
#define RX_BATCH_BELOW 1024
#define RX_BATCH_PAUSES 32

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
  /* A reader that keeps up with a producer that streams in small writes takes
   * a few of them per read, and each read moves the head's line and the data's
   * between the CPUs while the producer writes them: let it write more first
   * (docs/design.md, Ring protocol, fast mode). Only in a row of reads: a
   * write on the connection (a request answered) ends it. Before the locks:
   * nobody else waits for this one. */
  if (CONN_WORD(c->rx_batch))
    for (int i = 0; i < RX_BATCH_PAUSES; i++) shm_cpu_relax();
  int locked = !SHM_ONE_THREAD();
  struct shm_conn *rprev = tl_rheld;
  tl_rheld = c;
  if (locked) pthread_mutex_lock(&c->rlock);
  rx_enter(c);
  ssize_t n = -2;
  /* Asked for the whole buffer: the cached head answers only when it covers
   * that much, else the head is loaded (with 1, a cached byte kept the head
   * unread, and an AF_UNIX read was cut to the stale count: a short read that an
   * edge-triggered reader takes for drained). */
  ssize_t seen = shm_ring_readable(&c->rx, total); /* R1 */
  int batch = seen > 0 && (size_t)seen < RX_BATCH_BELOW && total >= 2 * RX_BATCH_BELOW && shm_wait_producer_fast(&c->rx);
  if (batch != CONN_WORD(c->rx_batch)) CONN_SET(c->rx_batch, batch);
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
  rx_leave(c);
  if (locked) pthread_mutex_unlock(&c->rlock);
  tl_rheld = rprev;
  return n;
}

/* One shm_conn_recv call's state across its passes (under the read lock). */
struct recv_call {
  int fd, flags, iovcnt, peek, waitall;
  int nonblock; /* -1 until known */
  struct shm_conn *c, *rprev; /* rprev: tl_rheld before the call */
  const struct iovec *iov;
  struct msghdr *mh;
  size_t ctl_cap;          /* the application's control buffer's capacity */
  size_t total, got;
  uint64_t first_sleep_ns; /* SO_RCVTIMEO counts from the first sleep */
  ssize_t ret;             /* the call's result, once decided */
};

/* The ring gave this pass nothing (n: 0, the peer's end; -1 with errno): 1:
 * another pass; 0: the call ends (r->ret). */
static int recv_nothing(struct recv_call *r, ssize_t n) {
  struct shm_conn *c = r->c;
  if (n == 0) {
    r->ret = recv_ring_end(r->fd, c, r->got, r->peek);
    return 0;
  }
  if (errno == EPROTO) {
    int e = ring_broken(r->fd);
    r->ret = r->got ? (ssize_t)r->got : (errno = e, -1);
    return 0;
  }
  int err, step = recv_empty(r->fd, c, r->flags, r->got, r->waitall, &r->nonblock, &r->ret);
  if (step == RECV_DONE) return 0;
  if (step == RECV_AGAIN || recv_wait(r->fd, c, r->rprev, &r->first_sleep_ns, &err)) return 1;
  r->ret = r->got ? (ssize_t)r->got : (errno = err, -1);
  return 0;
}

/* One pass: the peer's plain bytes on the socket, then the ring (the urgent
 * byte, descriptors, data). 1: another pass; 0: the call ends (r->ret). */
static int recv_pass(struct recv_call *r) {
  struct shm_conn *c = r->c;
  struct iovec v[IOV_MAX_LOCAL];
  const struct iovec *cur = r->iov;
  int cnt = r->iovcnt, hold = 0, step = RECV_RING;
  if (r->got) {
    cnt = iov_slice(r->iov, r->iovcnt, r->got, r->total - r->got, v, IOV_MAX_LOCAL);
    cur = v;
  }
  if (shm_conn_sock_is_data(c))
    step = recv_sock_part(r->fd, c, cur, cnt, r->flags, r->mh, r->ctl_cap, r->total, &r->got, &r->waitall, &r->ret);
  /* The ring from here on (the peer's plain bytes are all read, and stay so):
   * with our other processes' readers, under the side lock, which a blocked
   * read of plain bytes (in the kernel, which orders those) must not hold. */
  if (step == RECV_RING && c->seg.base && !c->xheld[1]) rx_enter(c);
  if (step == RECV_RING)
    step = recv_urgent_part(r->fd, c, r->iov, r->iovcnt, r->peek, r->total, &r->got, v, &cur, &cnt, &hold, &r->ret);
  struct shm_anc *at = NULL;
  ssize_t seen = -1, n;
  if (step == RECV_RING)
    step = recv_anc_part(r->fd, c, r->iov, r->iovcnt, r->total, r->got, v, &cur, &cnt, &at, &seen, &r->ret);
  if (step != RECV_RING) return step == RECV_AGAIN;
  if (hold || (seen == 0 && !shm_ring_eof(&c->rx))) {
    /* The urgent byte has not come; or the ring was empty when we looked, and
     * data published since may begin with descriptors nobody has looked for
     * yet: the empty path looks again. */
    n = -1;
    errno = EAGAIN;
  } else {
    n = shm_ring_readv(&c->rx, cur, cnt, r->peek);
  }
  if (n <= 0) return recv_nothing(r, n);
  recv_took(r->fd, c, at, r->mh, r->ctl_cap, r->flags, n, r->got, &r->waitall);
  r->got += (size_t)n;
  if (r->waitall && r->got < r->total) return 1;
  r->ret = (ssize_t)r->got;
  return 0;
}

ssize_t shm_conn_recv(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      struct msghdr *mh) {
  ssize_t fast = recv_fast(fd, c, iov, iovcnt, flags, mh);
  if (fast != -2) return fast;
  struct recv_call r = {.fd = fd, .flags = flags, .iovcnt = iovcnt, .peek = flags & MSG_PEEK, .nonblock = -1,
                        .c = c, .rprev = tl_rheld, .iov = iov, .mh = mh, .ctl_cap = mh ? mh->msg_controllen : 0,
                        .total = iov_total(iov, iovcnt)};
  r.waitall = (flags & MSG_WAITALL) && !r.peek;
  if (mh) {
    mh->msg_flags = 0;
    mh->msg_controllen = 0; /* (then what we put in it) */
  }
  if (r.total == 0) return 0;
  note_attach(fd, c);
  if (REENTERED(tl_rheld, c)) return -1;
  tl_rheld = c;
  pthread_mutex_lock(&c->rlock);
  if (c->seg.base) {
    plain_read_sync(c); /* (recv_fast reads the ring only: no plain bytes left) */
    rx_resync(c);
  }
  while (recv_pass(&r)) {
  }
  if (r.ret > 0 && !r.peek) wake_co_readers(c);
  rx_leave(c);
  pthread_mutex_unlock(&c->rlock);
  tl_rheld = r.rprev;
  if (r.ret <= 0) note_attach(fd, c); /* the client may have attached while we slept */
  return r.ret;
}


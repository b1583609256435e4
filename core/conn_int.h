/* Inside core/conn*.c only: what the connection's files (life and shared helpers
 * in conn.c, reading in conn_rx.c, the socket's kicks, markers and urgent byte in
 * conn_sock.c, descriptors and credentials in conn_anc.c, writing in conn_tx.c,
 * readiness in conn_ready.c) share. Not for preload/ (which sees conn.h). */
#ifndef SHMSHIM_CONN_INT_H
#define SHMSHIM_CONN_INT_H

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "conn.h"

#define IOV_MAX_LOCAL 64

/* Set before the lock is taken and cleared after it is released (volatile: a
 * handler must see them in program order), so that no instant of holding it is
 * left uncovered. */
extern __thread struct shm_conn *volatile tl_rheld __attribute__((tls_model("initial-exec")));
extern __thread struct shm_conn *volatile tl_wheld __attribute__((tls_model("initial-exec")));
#define REENTERED(held, c) (__builtin_expect((held) == (c), 0) ? (errno = EAGAIN, 1) : 0)

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

void sleep_cancelled(void *arg);
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

/* Server: log and count the upgrade once the client has taken the offer. */
static inline void note_attach(int fd, struct shm_conn *c) {
  if (c->role == SHM_SERVER && !__atomic_load_n(&c->attach_seen, __ATOMIC_RELAXED)) shm_conn_seen_attached(fd, c, 0);
}

/* conn.c: kicks and wake-ups, iovecs, options, sleeps, sleeper counts, the
 * switch-over state. */
int conn_nonblock(int fd, struct shm_conn *c);
/* One call's answer, looked up at its first need (*nb: -1 until then): does this
 * call return rather than wait (MSG_DONTWAIT, or O_NONBLOCK on the file)? */
static inline int call_nonblock(int *nb, int fd, struct shm_conn *c, int flags) {
  if (*nb < 0) *nb = (flags & MSG_DONTWAIT) || conn_nonblock(fd, c);
  return *nb;
}
int kick(int fd, struct shm_conn *c);
int may_kick(int fd, struct shm_conn *c);
void wake_consumer(int fd, struct shm_conn *c);
void wake_producer(int fd, struct shm_conn *c);
size_t iov_total(const struct iovec *iov, int n);
int iov_slice(const struct iovec *iov, int n, size_t skip, size_t limit, struct iovec *out, int outmax);
int timeout_ms(int fd, int opt);
/* What is left of a timeout of tmo ms (timeout_ms's answer) counted from
 * start_ns: -1 without one, else nanoseconds, 0 once it ran out. */
int64_t timeout_left_ns(int tmo, uint64_t start_ns);
/* The peer's urgent mark in its stream, as urg[] has it (position + 1; 0: none). */
static inline uint64_t peer_urg(struct shm_conn *c) {
  return __atomic_load_n(&c->seg.base->conn.urg[2 - c->role], __ATOMIC_ACQUIRE);
}
void raise_sigpipe(int flags);
/* The peer broke the ring or its switch point (EPROTO from the ring): says so;
 * the call that saw it fails with ECONNRESET. Returns ECONNRESET. */
int ring_broken(int fd);
int poll_now(struct pollfd *p);
ssize_t recvmsg_locked(struct sleep_undo *u, int fd, struct msghdr *m, int fl);
ssize_t sendmsg_locked(struct sleep_undo *u, int fd, const struct msghdr *m, int fl);
long sleep_on_sock(struct sleep_undo *u, int fd, int64_t left_ns);
int space_sleep(struct sleep_undo *u, uint32_t *word, uint32_t seq, int step_ms, int restartable);
int arm_rx(struct shm_conn *c); /* 0: not armed (a handler on top of c->lock) */
void disarm_rx(struct shm_conn *c);
int arm_tx(struct shm_conn *c);
void disarm_tx(struct shm_conn *c);
int refresh_switch(struct shm_conn *c);

/* Another process of ours (a fork child, a new image the connection was carried
 * into, the process that made us; alive or gone since) may have used the ring
 * since we did: our own index in the segment then differs from our private
 * position, which is taken from it before we use the ring (each process keeps
 * its own, docs/design.md "Close, fork, exit"). One load of a line we write
 * ourselves. Caller holds the ring's lock. */
static inline void tx_resync(struct shm_conn *c) {
  if (__builtin_expect(__atomic_load_n(&c->tx.ctl->head, __ATOMIC_RELAXED) != c->tx.pos, 0))
    c->tx_total += shm_ring_resync(&c->tx);
}
/* Several of our processes hold the connection (core/conn_share.c): a ring
 * section is then also entered under the segment's side lock of its direction
 * (0: our writers, 1: our readers). Alone, one load. Caller holds the ring's
 * process lock (wlock, rlock), or is alone in a process of one thread. */
void conn_xlock_slow(struct shm_conn *c, int which);
void conn_xunlock(struct shm_conn *c, int which);
static inline void conn_xlock(struct shm_conn *c, int which) {
  if (__builtin_expect(__atomic_load_n(&c->seg.base->conn.holders[c->role - 1], __ATOMIC_ACQUIRE) > 1, 0))
    conn_xlock_slow(c, which);
}
static inline void conn_xleave(struct shm_conn *c, int which) {
  if (__builtin_expect(c->xheld[which], 0)) conn_xunlock(c, which);
}
/* Enter and leave a section of our direction's ring (wlock held). */
static inline void tx_enter(struct shm_conn *c) {
  conn_xlock(c, 0);
  tx_resync(c);
}
static inline void tx_leave(struct shm_conn *c) { conn_xleave(c, 0); }

/* The peer's plain bytes our processes have read from the socket: ours, or more
 * if a sibling read some since (shm_seg_conn.plain_read). A look: changes nothing. */
static inline uint64_t plain_read_now(struct shm_conn *c) {
  uint64_t mine = CONN_WORD(c->sock_read);
  if (!c->seg.base) return mine;
  uint64_t all = __atomic_load_n(&c->seg.base->conn.plain_read[c->role - 1], __ATOMIC_ACQUIRE);
  return all > mine ? all : mine;
}
/* n more plain bytes read (read lock held). */
static inline void plain_read_add(struct shm_conn *c, uint64_t n) {
  uint64_t v = CONN_WORD(c->sock_read) + n;
  CONN_SET(c->sock_read, v); /* one writer (rlock); pollers read it */
  if (!c->seg.base) return;
  uint64_t *all = &c->seg.base->conn.plain_read[c->role - 1];
  uint64_t cur = __atomic_load_n(all, __ATOMIC_RELAXED);
  while (cur < v && !__atomic_compare_exchange_n(all, &cur, v, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}
/* Before reading the socket's plain bytes (read lock held): our count brought up
 * to what our siblings read. */
static inline void plain_read_sync(struct shm_conn *c) {
  uint64_t all = plain_read_now(c);
  if (all != CONN_WORD(c->sock_read)) CONN_SET(c->sock_read, all);
}
static inline void rx_resync(struct shm_conn *c) {
  if (__builtin_expect(__atomic_load_n(&c->rx.ctl->tail, __ATOMIC_RELAXED) != c->rx.pos, 0))
    c->rx_total += shm_ring_resync(&c->rx);
}
/* Enter and leave a section of the peer's ring (rlock held). */
static inline void rx_enter(struct shm_conn *c) {
  conn_xlock(c, 1);
  rx_resync(c);
}
static inline void rx_leave(struct shm_conn *c) { conn_xleave(c, 1); }

/* conn_sock.c: the socket of an upgraded connection */
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
int sock_took(struct shm_conn *c, struct sock_take *t, long n, int e);
long sleep_consuming(struct sleep_undo *u, int fd, int family, struct sock_take *t);
void parse_sock_bytes(struct shm_conn *c, const unsigned char *b, size_t n);
void drain_sock(int fd, struct shm_conn *c, int quick);
long drain_sock_upto(int fd, struct shm_conn *c, int quick, long limit);
/* shm_conn_drain_for, reading at most limit bytes (limit < 0: no bound). */
long shm_conn_drain_upto(int fd, struct shm_conn *c, int wants_input, int quick, long limit);
void drain_locked_how(int fd, struct shm_conn *c, int quick); /* read lock held */
void drain_locked(int fd, struct shm_conn *c);
int reset_is_eof(struct shm_conn *c);
void note_sock_result(struct shm_conn *c, long n, int e);
int at_new_mark(struct shm_conn *c, uint64_t um);
int inline_byte_next(int fd, struct shm_conn *c, uint64_t um);
int inline_urgent_due(int fd, struct shm_conn *c);
int take_inline_urgent(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int peek);

/* conn_anc.c: descriptors and credentials (AF_UNIX) */
void queue_anc(struct shm_conn *c, uint64_t off);
void take_fds(struct shm_conn *c, struct msghdr *m);
void close_fds(struct shm_anc *a);
int passcred_on(int fd, struct shm_conn *c);
void deliver_anc(int fd, struct shm_conn *c, struct shm_anc *a, struct msghdr *mh, size_t ctl_cap, int flags);
size_t anc_limit(int fd, struct shm_conn *c, struct shm_anc **at);

/* conn_tx.c */
int linger_zero(int fd);
uint32_t peer_left(struct shm_conn *c);
void note_peer_reset(struct shm_conn *c);

/* conn_ready.c */
int tx_sock(int fd, struct shm_conn *c);

#endif

/* A connection's life and what its data path shares: kicks and wake-ups, iovecs,
 * the cancellable sleeps, sleeper counts, the switch-over state, shutdown, FIONREAD,
 * references, fork and the last holder's let-go, the pool. Reading is in
 * conn_rx.c (its socket in conn_sock.c, descriptors in conn_anc.c), writing in
 * conn_tx.c, readiness in conn_ready.c (conn_int.h). */
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
#include "conn_int.h"
#include "fdtab.h"
#include "log.h"
#include "real.h"
#include "stats.h"


static int sock_nonblock(int fd) {
  long fl = syscall(SYS_fcntl, fd, F_GETFL, 0);
  return fl >= 0 && (fl & O_NONBLOCK);
}

/* O_NONBLOCK, without a system call once the socket was seen blocking: this
 * process's own changes (fcntl F_SETFL, ioctl FIONBIO) clear the memory. (If
 * another process sharing the socket sets O_NONBLOCK, a blocking-style wait here
 * spins, then gets EAGAIN from the kernel: the same answer, a little later.) */
int conn_nonblock(int fd, struct shm_conn *c) {
  if (__atomic_load_n(&c->blocking_seen, __ATOMIC_RELAXED)) return 0;
  int nb = sock_nonblock(fd);
  if (!nb) __atomic_store_n(&c->blocking_seen, 1, __ATOMIC_RELAXED);
  return nb;
}

/* One kick byte. Counted first in the segment (our producer line, `kicks`), so
 * that an epoll waiter that hears an edge can tell a kick, which it may leave
 * unread for a while, from anything else (shm_conn_edge_explained). */
int kick(int fd, struct shm_conn *c) {
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
int may_kick(int fd, struct shm_conn *c) {
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
void wake_consumer(int fd, struct shm_conn *c) {
  if (c->kick_owed) {
    shm_wait_data_sleeper(&c->tx); /* woken by this kick, whatever it armed */
    shm_conn_kick_owed(fd, c);
    return;
  }
  int alone = __atomic_load_n(&c->seg.base->conn.holders[c->role - 1], __ATOMIC_RELAXED) == 1;
  if ((shm_wait_published(&c->tx, alone) & SHM_SLEEP_SOCKET) && may_kick(fd, c)) {
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
void wake_producer(int fd, struct shm_conn *c) {
  if ((shm_wait_space_sleeper(&c->rx) & SHM_SLEEP_SOCKET) && may_kick(fd, c)) {
    kick(fd, c);
    SHM_STAT_ADD(c->st, kicks_tx, 1); /* stats */
  }
}

size_t iov_total(const struct iovec *iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

/* Copies iov[] into out[] skipping the first `skip` bytes and keeping at most
 * `limit` bytes. Returns the number of entries. */
int iov_slice(const struct iovec *iov, int n, size_t skip, size_t limit, struct iovec *out,
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

int timeout_ms(int fd, int opt) {
  struct timeval tv;
  socklen_t l = sizeof tv;
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, opt, &tv, &l) < 0) return -1;
  if (tv.tv_sec == 0 && tv.tv_usec == 0) return -1;
  long ms = tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int64_t timeout_left_ns(int tmo, uint64_t start_ns) {
  if (tmo < 0) return -1;
  uint64_t now = shm_now_ns(), end = start_ns + (uint64_t)tmo * 1000000;
  return end > now ? (int64_t)(end - now) : 0;
}

void raise_sigpipe(int flags) {
  if (!(flags & MSG_NOSIGNAL)) syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGPIPE);
}

void shm_conn_rings(struct shm_conn *c) {
  int out = c->role == SHM_CLIENT ? SHM_DIR_C2S : SHM_DIR_S2C;
  shm_seg_ring(&c->seg, out, SHM_RING_PRODUCER, &c->tx);
  shm_seg_ring(&c->seg, !out, SHM_RING_CONSUMER, &c->rx);
  shm_wait_consent(&c->rx);
}

int ring_broken(int fd) {
  SHM_LOG(WARN, "fd=%d: peer corrupted the ring (or its switch point): connection reset", fd);
  return ECONNRESET;
}

/* Signal handlers. A handler that reads or writes a connection while its own
 * thread is inside a read or a write of it, holding that side's lock (not
 * recursive), deadlocked. Each thread notes which connection's read and write
 * lock it holds; such a call fails with EAGAIN instead (as from a socket that
 * cannot take it now), touching nothing the interrupted call is changing. The
 * blocking sleeps run without the lock and the note, so a handler that
 * interrupts a blocked read or write goes through, as with the kernel. */

__thread struct shm_conn *volatile tl_rheld __attribute__((tls_model("initial-exec")));
__thread struct shm_conn *volatile tl_wheld __attribute__((tls_model("initial-exec")));
__thread struct shm_conn *volatile tl_lheld __attribute__((tls_model("initial-exec")));

/* A look at the socket that is no cancellation point (libc's poll() is one: a
 * pending pthread_cancel would act there, with our locks held). */
int poll_now(struct pollfd *p) {
  struct timespec zero = {0, 0};
  return (int)syscall(SYS_ppoll, p, 1, &zero, NULL, (size_t)8);
}

void sleep_cancelled(void *arg) {
  struct sleep_undo *u = arg;
  if (u->rx) disarm_rx(u->c);
  if (u->asleep) __atomic_sub_fetch(&u->c->rx_asleep, 1, __ATOMIC_RELAXED);
  if (u->space) shm_wait_disarm_space(&u->c->tx, SHM_SLEEP_FUTEX);
  if (u->held == &u->c->wlock) conn_xleave(u->c, 0); /* (a marker's send, with the side lock) */
  if (u->held == &u->c->rlock) conn_xleave(u->c, 1);
  if (u->held) pthread_mutex_unlock(u->held);
  shm_conn_put(u->c);
}

/* The calls above, each in a function of its own (the clean-up's setjmp then
 * clobbers no variable of the data path). */
__attribute__((noinline)) ssize_t recvmsg_locked(struct sleep_undo *u, int fd, struct msghdr *m, int fl) {
  return CANCEL_CLEANUP(u, REAL(recvmsg)(fd, m, fl));
}
__attribute__((noinline)) ssize_t sendmsg_locked(struct sleep_undo *u, int fd, const struct msghdr *m,
                                                        int fl) {
  return CANCEL_CLEANUP(u, REAL(sendmsg)(fd, m, fl));
}
/* A blocked read's sleep on the socket: a one-byte peek (SO_RCVTIMEO and
 * SA_RESTART as the kernel's), or with left_ns >= 0 a poll for that long. */
__attribute__((noinline)) long sleep_on_sock(struct sleep_undo *u, int fd, int64_t left_ns) {
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
int space_sleep(struct sleep_undo *u, uint32_t *word, uint32_t seq, int step_ms, int restartable) {
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
 * disarm must pair exactly: shm_conn_arm reports what it armed. A signal handler
 * on top of its own thread's section arms nothing (0): it must not sleep unarmed
 * (conn_lock). */
static int sleeper_in(struct shm_conn *c, int *count, int tx) {
  if (conn_lock_mine(c)) return 0;
  struct shm_conn *prev = conn_lock(c);
  (*count)++;
  if (tx) shm_wait_arm_space(&c->tx, SHM_SLEEP_SOCKET);
  else shm_wait_arm_data(&c->rx, SHM_SLEEP_SOCKET);
  conn_unlock(c, prev);
  return 1;
}
static void sleeper_out(struct shm_conn *c, int *count, int tx) {
  struct shm_conn *prev = conn_lock(c);
  if (*count == 0) { /* not ours: armed by a thread of the parent before fork() */
    conn_unlock(c, prev);
    return;
  }
  int others = --(*count);
  if (others && tx) shm_wait_arm_space(&c->tx, SHM_SLEEP_SOCKET);
  else if (others) shm_wait_arm_data(&c->rx, SHM_SLEEP_SOCKET);
  else if (tx) shm_wait_disarm_space(&c->tx, SHM_SLEEP_SOCKET);
  else shm_wait_disarm_data(&c->rx, SHM_SLEEP_SOCKET);
  conn_unlock(c, prev);
}
int arm_rx(struct shm_conn *c) { return sleeper_in(c, &c->sleepers_rx, 0); }
void disarm_rx(struct shm_conn *c) { sleeper_out(c, &c->sleepers_rx, 0); }
int arm_tx(struct shm_conn *c) { return sleeper_in(c, &c->sleepers_tx, 1); }
void disarm_tx(struct shm_conn *c) { sleeper_out(c, &c->sleepers_tx, 1); }


int shm_conn_sock_is_data(struct shm_conn *c) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED) return 1;
  /* Look at the segment, not only at what our last read learnt: the peer's
   * switch-over kick can be lost (its socket buffer full of plain bytes), and a
   * readiness check must still see the ring's data once the plain bytes are read. */
  if (!shm_conn_rx_switched(c) && refresh_switch(c) < 0) return 0;
  if (!shm_conn_rx_switched(c)) return 1;
  return plain_read_now(c) < CONN_WORD(c->rx_plain);
}

/* Has the peer switched, and where do its socket bytes end? */
int refresh_switch(struct shm_conn *c) {
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
  if (plain < CONN_WORD(c->sock_read)) {
    /* We already delivered more socket bytes than the peer says it wrote there
     * before switching: it wrote some around its shim (stdio, a raw system call),
     * where the shim could not count them. Said once; the connection fails. */
    if (!__atomic_load_n(&c->rx.err, __ATOMIC_RELAXED))
      SHM_LOG(WARN, "the peer says it wrote %llu plain bytes to the socket before switching to the ring, but %llu "
                    "were read: written around its shim (stdio, raw system calls)? connection reset",
              (unsigned long long)plain, (unsigned long long)CONN_WORD(c->sock_read));
    c->rx.err = EPROTO;
    return -1;
  }
  CONN_SET(c->rx_plain, plain);
  conn_flag_set(c, SHM_F_RX_SWITCHED);
  return 0;
}


int shm_conn_shutdown(int fd, struct shm_conn *c, int how) {
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
    errno = EINVAL;
    return -1;
  }
  if (how != SHUT_WR && conn_flag_claim(c, SHM_F_RD_SHUT)) {
    /* Wakes our threads asleep on the socket (their recv returns 0). */
    syscall(SYS_shutdown, fd, SHUT_RD);
  }
  if (how != SHUT_RD && !conn_flag(c, SHM_F_WR_SHUT)) {
    pthread_mutex_lock(&c->wlock);
    shm_conn_switch_tx(fd, c);
    conn_flag_set(c, SHM_F_WR_SHUT);
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
    uint64_t left = CONN_WORD(c->rx_plain) - plain_read_now(c);
    if ((uint64_t)v > left) v = (int)left;
  }
  ssize_t r = shm_ring_look_readable(&c->rx, SIZE_MAX); /* exact: the shared head */
  if (r > 0) v += (int)r; /* at most 64 MiB, plus at most a socket buffer */
  *out = v;
  return 0;
}

void shm_conn_ref(struct shm_conn *c) { __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED); }

int shm_conn_hold(struct shm_conn *c, int delta) {
  /* A pending connection another process holds now: a server's speaks for it
   * (conn_release); a client's is never attached, in either process
   * (negotiate_client.c take_segment), and its endpoint is shut: no offer is
   * made to it any more. */
  if (delta > 0 && shm_conn_state(c) == SHM_CONN_PENDING) {
    c->fork_shared = 1;
    if (c->role == SHM_CLIENT) shm_conn_endpoint_shut(c);
  }
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || !c->seg.base) return 0;
  __atomic_add_fetch(&c->seg.base->conn.holders[c->role - 1], (uint32_t)delta, __ATOMIC_ACQ_REL);
  return 1;
}

void shm_conn_forked_child(struct shm_conn *c) {
  c->busy = 0; /* the calls in flight were the parent's other threads' */
  c->fork_quiesced = 0; /* (the locks are new) */
  c->xheld[0] = c->xheld[1] = 0; /* a parent thread's sections, not ours */
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
int shm_conn_thread_inside(void) { return tl_rheld || tl_wheld || tl_lheld; }

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
  shm_conn_share_forked_child();
  pthread_mutex_init(&pool_lock, NULL);
  pthread_mutex_init(&upgrade_lock, NULL);
}

void shm_conn_fork_lock(int op) {
  switch (op) {
  case 0: shm_lock(&pool_lock); shm_lock(&upgrade_lock); break;
  case 1: shm_unlock(&upgrade_lock); shm_unlock(&pool_lock); break;
  case 2: shm_lock(&upgrade_lock); break;
  default: shm_unlock(&upgrade_lock); break;
  }
}

struct shm_conn *shm_conn_alloc(void) {
  shm_lock(&pool_lock);
  struct shm_conn *c = pool;
  if (c) pool = c->pool_next;
  shm_unlock(&pool_lock);
  if (!c && !(c = calloc(1, sizeof *c))) return NULL;
  /* Not `busy`: a late caller of the previous life may still be moving it. */
  memset((char *)c + offsetof(struct shm_conn, dead), 0, sizeof *c - offsetof(struct shm_conn, dead));
  pthread_mutex_init(&c->rlock, NULL);
  pthread_mutex_init(&c->wlock, NULL);
  pthread_mutex_init(&c->lock, NULL);
  c->refs = 1;
  c->endpoint = -1;
  c->offer_wait = -1;
  c->seg.fd = -1;
  c->st = &shm_stat_sink;
  return c;
}

/* The end of a connection, by whoever is last: the closer (fd still open: the
 * kicks on the socket are consumed) or the last call in flight (fd -1). */
static void conn_release(struct shm_conn *c, int fd) {
  if (__atomic_exchange_n(&c->finishing, 1, __ATOMIC_ACQ_REL)) return;
  int saved = errno;
  if (c->uncounted) {
    /* Our copy of the record, in a process the library never counted as a
     * holder: everything shared (the holders, the rings' ends, the sleep flags,
     * the kicks on the socket, the statistics table, the short-lived record's
     * outcome) is the counted processes' business; only what is ours goes: our
     * copies of the descriptors, our mapping, the record. */
    c->st = &shm_stat_sink;
  } else if (c->role == SHM_SERVER && shm_conn_state(c) == SHM_CONN_PENDING && !c->fork_shared) {
    /* Never used through the library (io_uring, stdio, or nothing at all): plain.
     * After a fork the other process may still use it, and speaks for it. */
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: closed before any use through the library", fd);
  }
  shm_stat_close(c->st); /* stats */
  c->st = &shm_stat_sink;
  if (!c->uncounted && shm_conn_state(c) == SHM_CONN_UPGRADED && c->born_ns) shm_conn_note_life(c);
  /* Before the endpoint goes: a server's last look at the client's answer is there. */
  if (!c->uncounted && shm_conn_state(c) == SHM_CONN_UPGRADED && c->seg.base) let_go(fd, c);
  shm_conn_free_endpoint(c);
  if (c->seg.base) shm_seg_destroy(&c->seg);
  while (c->anc_head) { /* descriptors that never reached the application */
    struct shm_anc *a = c->anc_head;
    c->anc_head = a->next;
    close_fds(a);
    free(a);
  }
  for (int i = 0; i < c->mk_nfds; i++) shm_sys_close(c->mk_fds[i]);
  free(c->mk_fds);
  c->mk_fds = NULL;
  pthread_mutex_destroy(&c->rlock);
  pthread_mutex_destroy(&c->wlock);
  pthread_mutex_destroy(&c->lock);
  shm_lock(&pool_lock);
  c->pool_next = pool;
  pool = c;
  shm_unlock(&pool_lock);
  errno = saved;
}

void shm_conn_put(struct shm_conn *c) {
  int left = SHM_ONE_THREAD() ? SHM_ONE_THREAD_ADD(&c->busy, -1) - 1 : __atomic_sub_fetch(&c->busy, 1, __ATOMIC_SEQ_CST);
  if (left == 0 && __atomic_load_n(&c->dead, __ATOMIC_SEQ_CST)) conn_release(c, -1);
}

/* The last reference went (the caller cleared the slot): the fd table no longer
 * leads here. A call in flight either took its hold before, and ends the
 * connection when it returns (as the kernel lets a blocked recv() finish after
 * another thread's close()), or sees the change and lets go without touching it. */
static void last_ref_gone(int fd, struct shm_conn *c) {
  int saved = errno;
  __atomic_store_n(&c->dead, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&c->busy, __ATOMIC_SEQ_CST) == 0) conn_release(c, fd);
  errno = saved;
}

void shm_conn_unref_uncounted(struct shm_conn *c) {
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  c->uncounted = 1; /* only now: a copy of the record that lives on is a normal one */
  last_ref_gone(-1, c);
}

void shm_conn_unref(int fd, struct shm_conn *c) {
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  last_ref_gone(fd, c);
}


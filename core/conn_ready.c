/* Readiness of an upgraded connection as the kernel would report it (poll bits,
 * room by the kernel's rule), the arming of sleepers, probes of a quiet peer, and
 * the release of idle ring memory. */
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
int tx_sock(int fd, struct shm_conn *c) {
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
    if (CONN_WORD(c->sock_err)) bits |= POLLIN | POLLERR | POLLHUP;
    if (conn_flag(c, SHM_F_SOCK_EOF)) bits |= POLLIN | POLLRDNORM | POLLRDHUP | (c->family == AF_UNIX ? POLLHUP : 0);
    if (!(bits & POLLIN) && inline_urgent_due(fd, c)) bits |= POLLIN | POLLRDNORM;
  }
  if (conn_flag(c, SHM_F_RD_SHUT)) bits |= POLLIN | POLLRDNORM | POLLRDHUP;
  if (shm_conn_state(c) == SHM_CONN_UPGRADED) {
    note_peer_reset(c); /* before and after the switch point alike */
    if (CONN_WORD(c->sock_err)) bits |= POLLIN | POLLERR | POLLHUP;
    if (conn_flag(c, SHM_F_HUP)) bits |= POLLHUP;
  }
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || !shm_conn_tx_switched(c)) return bits;
  int w = tx_room(c);
  /* Switched with plain bytes still queued: room in both, as the socket says. */
  if (sock_tx && w > 0 && !(bits & POLLOUT)) w = 0;
  bits &= ~(POLLOUT | POLLWRNORM);
  if (w != 0 || conn_flag(c, SHM_F_WR_SHUT)) bits |= POLLOUT | POLLWRNORM;
  if (w < 0) bits |= errno == EPIPE ? POLLHUP : POLLERR;
  if ((bits & POLLRDHUP) && conn_flag(c, SHM_F_WR_SHUT)) bits |= POLLHUP;
  return bits;
}

int shm_conn_arm(int fd, struct shm_conn *c, int events, int *armed) {
  *armed = 0;
  if ((events & POLLIN) && arm_rx(c)) *armed |= POLLIN;
  /* Room is only worth a kick when there was too little: a ring with room is
   * reported writable by the re-check below anyway. Before our switch-over the
   * socket's own room is what counts (the caller polls the socket for it). */
  if ((events & POLLOUT) && shm_conn_tx_switched(c) && tx_room(c) == 0 && arm_tx(c)) *armed |= POLLOUT;
  return shm_conn_poll_bits(fd, c);
}

void shm_conn_probe(int fd, struct shm_conn *c) {
  /* Without draining (a reader thread may be asleep on the socket's kicks): has
   * the peer shut down its side? Then a kick tells a live half-closed peer from a
   * dead one: unix refuses it, TCP answers it with a reset (seen next time). */
  struct pollfd p = {fd, POLLRDHUP, 0};
  if (poll_now(&p) <= 0) return;
  if (p.revents & (POLLHUP | POLLERR)) {
    CONN_SET(c->sock_err, ECONNRESET);
  } else if (p.revents & POLLRDHUP) {
    conn_flag_set(c, SHM_F_SOCK_EOF);
    if (kick(fd, c) < 0 && errno != EAGAIN) CONN_SET(c->sock_err, errno);
  }
}

int shm_conn_needs_timed_wait(struct shm_conn *c, int events) {
  /* A signal handler on top of its thread's c->lock could not arm: nobody kicks it. */
  if (conn_lock_mine(c)) return 1;
  /* A half-closed peer cannot kick our socket when it frees space: whoever waits
   * for POLLOUT must look again by itself. */
  /* Likewise while our socket still holds the client's plain bytes: its socket
   * buffer may be full, and its kick for room then fails with EAGAIN. */
  return (events & POLLOUT) && !CONN_WORD(c->sock_err) && shm_conn_tx_switched(c) && tx_room(c) == 0 &&
         (conn_flag(c, SHM_F_SOCK_EOF) || shm_conn_sock_is_data(c));
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
  /* A writer: not idle after all. Our own thread's, too, when a signal handler
   * got here (its poll's idle probe) on top of a write that took no lock (one
   * thread, send_fast): the pages it is copying into would be given back. */
  if (tl_wheld == c || pthread_mutex_trylock(&c->wlock)) return;
  /* A process of ours that wrote since (a child that has exited, a program the
   * connection was carried into) moved the head: from there, or the pages of
   * its bytes the peer has not read yet would be given back. */
  tx_resync(c);
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
 * them (no poller spins on a stale kick). A kick that arrives between that look
 * and the drain is news the look did not see: with other pollers, the drain
 * takes no more than the socket held before the look (SIOCINQ, one system call
 * more, only then), and what came after wakes them. Taken too, it left a poller
 * asleep in the kernel with the data it announced in the ring (the kernel's poll,
 * woken by the kick, looked again after the drain, found the socket empty and
 * slept on): conc pollrace, a thread in poll(POLLIN|POLLOUT) woken by a kick for
 * room while another sleeps in poll(POLLIN), the peer's byte and its kick
 * arriving between the first one's look and its drain. */
long shm_conn_drain_polled(int fd, struct shm_conn *c, int wants_input, int hup) {
  int rx_others = __atomic_load_n(&c->pollers_rx, __ATOMIC_RELAXED) > 0;
  int tx_others = __atomic_load_n(&c->pollers_tx, __ATOMIC_RELAXED) > 0;
  int before = -1;
  /* (Not when the socket reported its end or an error: no kick can come after
   * that, and what is there must be read to the end for it to be seen.) */
  if ((rx_others || tx_others) && !hup && syscall(SYS_ioctl, fd, SIOCINQ, &before) < 0) before = -1;
  if (rx_others && shm_conn_rx_ready(c)) return 0;
  if (tx_others && shm_conn_state(c) == SHM_CONN_UPGRADED && shm_conn_tx_switched(c) && tx_room(c) != 0) return 0;
  return shm_conn_drain_upto(fd, c, wants_input, 0, before);
}


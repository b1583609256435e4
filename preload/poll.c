/* poll, ppoll, select, pselect. For an upgraded socket the ring is the truth and
 * the real socket only carries kicks: readiness comes from the ring; to sleep we
 * arm (so the peer will kick), re-check, and let the kernel poll the socket. */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <time.h>

#include "preload.h"

/* glibc declares poll()'s array write-only (access attribute); we read it, as the
 * kernel does, and GCC then warns about reading "uninitialised" memory. */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int any_tracked(const struct pollfd *f, nfds_t n) {
  for (nfds_t i = 0; i < n; i++)
    if (SHM_UNLIKELY(pl_tracked(f[i].fd))) return 1;
  return 0;
}

/* Upgraded connection behind a pollfd, resolving pending clients without waiting. */
/* Held busy (shm_conn_put) when not NULL. */
static struct shm_conn *upgraded(int fd) {
  struct shm_conn *c = pl_conn_any(fd);
  if (!c) return NULL;
  if (shm_conn_state(c) == SHM_CONN_PENDING) {
    int st = shm_conn_resolve(fd, c, 0);
    if (st == SHM_CONN_PLAIN) pl_epoll_conn_plain(fd, c);
    if (st == SHM_CONN_UPGRADED) pl_epoll_conn_upgraded(fd, c);
  }
  if (shm_conn_state(c) == SHM_CONN_UPGRADED) return c;
  shm_conn_put(c);
  return NULL;
}

/* Room for more entries than the stack holds comes from mmap, never malloc: poll,
 * ppoll, select and pselect are async-signal-safe, malloc is not (a signal handler
 * that polled while its thread was inside malloc deadlocked or corrupted the heap). */
static void *scratch(size_t bytes) {
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* The sleep, with what it holds: a thread cancelled in it (ppoll is a cancellation
 * point) disarms and gives back its holds on the way out. */
struct poll_sleep {
  struct pollfd *f;
  nfds_t n;
  struct shm_conn **cs;
  short *armed;
  short *quiet; /* select: the entry's socket reports only what select ignores (for good) */
  int sel;      /* for select/pselect: count by their sets, not poll's events */
  void *map;
  size_t map_len;
};

/* What puts a descriptor in each of select's sets, as the kernel's select maps
 * poll's events (the read set takes hang-up and error too, the write set error,
 * the exception set urgent data alone). pl_select stands for the sets with
 * POLLIN, POLLOUT and POLLPRI in an entry's events. */
#define SEL_READ (POLLIN | POLLHUP | POLLERR)
#define SEL_WRITE (POLLOUT | POLLERR)
#define SEL_EXCEPT POLLPRI

/* The events that make an entry count. poll: what it asked for, and hang-up and
 * error always. select: what puts it in one of the sets it is in; a hang-up in
 * an entry only in the write or exception set is nothing to it, and it sleeps
 * on. */
static short counted(short events, int sel) {
  if (!sel) return (short)(events | POLLERR | POLLHUP);
  return (short)(((events & POLLIN) ? SEL_READ : 0) | ((events & POLLOUT) ? SEL_WRITE : 0) |
                 ((events & POLLPRI) ? SEL_EXCEPT : 0));
}
static void poll_cancelled(void *arg) {
  struct poll_sleep *s = arg;
  for (nfds_t i = 0; i < s->n; i++) {
    if (!s->cs[i]) continue;
    if (s->armed[i]) shm_conn_disarm_poller(s->cs[i], s->armed[i]);
    shm_conn_put(s->cs[i]);
  }
  if (s->map) munmap(s->map, s->map_len);
}
static __attribute__((noinline)) int poll_sleep(struct poll_sleep *s, struct pollfd *k, const struct timespec *ts,
                                                const sigset_t *mask) {
  int r;
  pthread_cleanup_push(poll_cancelled, s);
  r = REAL(ppoll)(k, s->n, ts, mask);
  pthread_cleanup_pop(0);
  return r;
}

/* Each entry's connection (held busy), and what the kernel is asked for it (k):
 * for an upgraded socket, its kicks and the peer's exit, not the application's
 * events. 1 if an upgraded entry is ready now; *internal: an entry names one of
 * our own descriptors. */
static int poll_prepare(struct poll_sleep *sl, struct pollfd *k, int *internal) {
  struct pollfd *f = sl->f;
  int ready = 0;
  *internal = 0;
  for (nfds_t i = 0; i < sl->n; i++) {
    struct shm_conn *c = sl->cs[i] = f[i].fd >= 0 ? upgraded(f[i].fd) : NULL;
    sl->armed[i] = 0;
    k[i] = f[i];
    k[i].revents = 0;
    if (sl->quiet[i]) k[i].fd = -1; /* the kernel would only repeat what select ignores */
    if (shm_fd_kind(f[i].fd) == SHM_FD_INTERNAL) {
      k[i].fd = -1; /* reported POLLNVAL below, as for a closed fd */
      *internal = 1;
    }
    if (!c) continue;
    /* Kicks and the peer's exit; once the socket is at EOF only errors. */
    k[i].events = shm_conn_sock_done(c) ? 0 : POLLIN;
    /* Before the switch point the socket holds data: only a reader waits for it. */
    if (shm_conn_sock_is_data(c) && !(f[i].events & POLLIN)) k[i].events = 0;
    /* Urgent data always comes through the socket (shm_conn_send_oob). */
    k[i].events |= (short)(f[i].events & POLLPRI);
    /* Before our own switch-over, our writes go to the socket: its room counts. */
    if (!shm_conn_tx_on_ring(c)) k[i].events |= (short)(f[i].events & POLLOUT);
    if (shm_conn_poll_bits(f[i].fd, c) & counted(f[i].events, sl->sel)) ready = 1;
  }
  return ready;
}

/* Nothing upgraded is ready: declare ourselves asleep, then look once more. 1 if
 * an entry turned out ready; *timed: one nobody can kick (a short sleep). */
static int poll_arm(struct poll_sleep *sl, int *timed) {
  struct pollfd *f = sl->f;
  int ready = 0;
  *timed = 0;
  for (nfds_t i = 0; i < sl->n; i++) {
    struct shm_conn *c = sl->cs[i];
    if (!c) continue;
    int a;
    if (shm_conn_arm_poller(f[i].fd, c, f[i].events & (POLLIN | POLLOUT), &a) & counted(f[i].events, sl->sel))
      ready = 1;
    sl->armed[i] = (short)a;
    if (shm_conn_needs_timed_wait(c, f[i].events)) {
      if (conn_flag(c, SHM_F_SOCK_EOF)) shm_conn_probe(f[i].fd, c); /* a dead peer: POLLERR|POLLHUP */
      *timed = 1;
    }
  }
  return ready;
}

/* After the kernel's answer (r): disarm, consume kicks, and report each entry's
 * events; gives back the holds. Returns how many entries count (counted). */
static int poll_report(struct poll_sleep *sl, const struct pollfd *k, int r, int internal) {
  struct pollfd *f = sl->f;
  int count = 0;
  for (nfds_t i = 0; i < sl->n; i++) {
    struct shm_conn *c = sl->cs[i];
    if (c) {
      if (sl->armed[i]) shm_conn_disarm_poller(c, sl->armed[i]);
      if (k[i].revents &&
          shm_conn_drain_polled(f[i].fd, c, f[i].events & POLLIN, k[i].revents & (POLLHUP | POLLERR | POLLRDHUP)) > 0)
        pl_epoll_kicks_taken(c);
      f[i].revents = (short)((shm_conn_poll_bits(f[i].fd, c) & (f[i].events | POLLERR | POLLHUP)) |
                             (k[i].revents & f[i].events & POLLPRI));
      shm_conn_put(c);
    } else if (internal && shm_fd_kind(f[i].fd) == SHM_FD_INTERNAL) {
      f[i].revents = POLLNVAL;
    } else {
      f[i].revents = r > 0 ? k[i].revents : 0;
    }
    if (f[i].revents & (counted(f[i].events, sl->sel) | POLLNVAL)) {
      count++;
    } else if (sl->sel && r > 0 && k[i].fd >= 0 && (k[i].revents & (POLLHUP | POLLERR))) {
      /* A hang-up or an error select does not count stays: asked again, the
       * kernel would answer at once, and we would spin until the time is up. */
      sl->quiet[i] = 1;
    }
  }
  return count;
}

/* timeout_ns < 0: forever. sel: for select/pselect (f's events stand for the
 * sets: POLLIN read, POLLOUT write, POLLPRI exception); an entry counts as
 * select counts it, and f's revents of one that does not are left for the caller
 * to ignore. */
static int pl_poll(struct pollfd *f, nfds_t n, int64_t timeout_ns, const sigset_t *mask, int sel) {
  struct pollfd stackbuf[64], *k = stackbuf;
  struct shm_conn *cstack[64], **cs = cstack;
  short astack[64], *armed = astack, qstack[64] = {0}, *quiet = qstack;
  void *map = NULL;
  size_t map_len = 0;
  if (n > 64) {
    map_len = n * (sizeof *cs + sizeof *k + sizeof *armed + sizeof *quiet);
    if (!(map = scratch(map_len))) {
      errno = ENOMEM;
      return -1;
    }
    cs = map;
    k = (struct pollfd *)(cs + n);
    armed = (short *)(k + n);
    quiet = armed + n; /* (fresh from mmap: zero) */
  }
  struct poll_sleep sl = {f, n, cs, armed, quiet, sel, map, map_len};
  int64_t deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
  int ret;
  for (;;) {
    int internal, timed = 0;
    int ready = poll_prepare(&sl, k, &internal);
    if (!ready) ready = poll_arm(&sl, &timed);
    int64_t left = -1;
    if (ready || timeout_ns == 0) left = 0;
    else if (timeout_ns > 0 && (left = deadline - now_ns()) < 0) left = 0;
    if (timed && (left < 0 || left > 5000000)) left = 5000000;
    /* About to sleep for long with rings that carried data: after SHMSHIM_IDLE_MS of
     * nothing, give their memory back, then sleep on. */
    int idle_probe = 0;
    if (!ready && left != 0) {
      for (nfds_t i = 0; i < n && !idle_probe; i++) idle_probe = cs[i] && shm_conn_tx_used(cs[i]);
      if (idle_probe && (left < 0 || left > SHM_IDLE_NS)) left = SHM_IDLE_NS;
    }
    struct timespec ts = {left / 1000000000, left % 1000000000};
    if (left != 0) shm_spin_sleeping();
    int r = poll_sleep(&sl, k, left < 0 ? NULL : &ts, mask);
    int e = errno;
    if (idle_probe && r == 0) {
      uint64_t t = (uint64_t)now_ns();
      for (nfds_t i = 0; i < n; i++)
        if (cs[i]) shm_conn_release_idle(cs[i], t);
    }
    int count = poll_report(&sl, k, r, internal);
    if (r < 0 && count == 0) {
      errno = e;
      ret = -1;
      break;
    }
    if (count || timeout_ns == 0 || (timeout_ns > 0 && now_ns() >= deadline)) {
      ret = count;
      break;
    }
    /* Nothing to report before the time is up: the kernel's poll never returns 0
     * early, so look again and sleep on. A kick with nothing behind it (the peer
     * raced with our disarm), or an entry that was ready when we looked and no
     * longer is (another thread read the byte: conc pollsteal). It returned 0 at
     * once, and a Python TLS server, whose socket has a timeout, takes that for
     * its handshake's timeout. */
  }
  if (map) munmap(map, map_len);
  return ret;
}

SHM_EXPORT int poll(struct pollfd *f, nfds_t n, int timeout) {
  if (SHM_LIKELY(!any_tracked(f, n))) return REAL(poll)(f, n, timeout);
  return pl_poll(f, n, timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL, 0);
}

SHM_EXPORT int __poll_chk(struct pollfd *f, nfds_t n, int timeout, size_t flen) {
  return poll(f, n, timeout);
}

SHM_EXPORT int ppoll(struct pollfd *f, nfds_t n, const struct timespec *ts, const sigset_t *mask) {
  if (SHM_LIKELY(!any_tracked(f, n))) return REAL(ppoll)(f, n, ts, mask);
  return pl_poll(f, n, ts ? (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec : -1, mask, 0);
}

/* select in terms of poll, only when a tracked fd is in one of the sets. */
static int pl_select(int nfds, fd_set *r, fd_set *w, fd_set *x, int64_t timeout_ns, const sigset_t *mask,
                     int *handled) {
  *handled = 0;
  int tracked = 0, cnt = 0;
  for (int fd = 0; fd < nfds; fd++) {
    int in = (r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (x && FD_ISSET(fd, x));
    if (!in) continue;
    cnt++;
    if (pl_tracked(fd)) tracked = 1;
  }
  if (!tracked) return 0;
  *handled = 1;
  struct pollfd stackbuf[64], *p = stackbuf;
  size_t map_len = (size_t)cnt * sizeof *p;
  if (cnt > 64 && !(p = scratch(map_len))) {
    errno = ENOMEM;
    return -1;
  }
  int i = 0;
  for (int fd = 0; fd < nfds; fd++) {
    short ev = 0;
    if (r && FD_ISSET(fd, r)) ev |= POLLIN;
    if (w && FD_ISSET(fd, w)) ev |= POLLOUT;
    if (x && FD_ISSET(fd, x)) ev |= POLLPRI;
    if (!ev) continue;
    p[i].fd = fd;
    p[i].events = ev;
    i++;
  }
  int rc = pl_poll(p, (nfds_t)cnt, timeout_ns, mask, 1);
  for (i = 0; rc >= 0 && i < cnt; i++)
    if (p[i].revents & POLLNVAL) {
      errno = EBADF;
      rc = -1;
    }
  if (rc < 0) {
    if (p != stackbuf) {
      int e = errno;
      munmap(p, map_len);
      errno = e;
    }
    return -1;
  }
  /* Only the longs that nfds covers, as the kernel writes them: a caller may size
   * its sets so (libev's select backend does); FD_ZERO would clear a whole
   * fd_set, past the end of a shorter one. */
  size_t set_bytes = ((size_t)nfds + NFDBITS - 1) / NFDBITS * sizeof(fd_mask);
  if (r) memset(r, 0, set_bytes);
  if (w) memset(w, 0, set_bytes);
  if (x) memset(x, 0, set_bytes);
  int n = 0;
  for (i = 0; i < cnt; i++) {
    short re = p[i].revents;
    /* The sets, as counted() counts them (SEL_*). */
    if (re & SEL_READ && (p[i].events & POLLIN)) FD_SET(p[i].fd, r), n++;
    if (re & SEL_WRITE && (p[i].events & POLLOUT)) FD_SET(p[i].fd, w), n++;
    if (re & SEL_EXCEPT && (p[i].events & POLLPRI)) FD_SET(p[i].fd, x), n++;
  }
  if (p != stackbuf) munmap(p, map_len);
  return n;
}

SHM_EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv) {
  if (SHM_LIKELY(shm_fdtab_get() == NULL)) return REAL(select)(nfds, r, w, x, tv);
  int handled;
  int64_t t = tv ? (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000 : -1;
  int64_t start = tv ? now_ns() : 0;
  int rc = pl_select(nfds, r, w, x, t, NULL, &handled);
  if (!handled) return REAL(select)(nfds, r, w, x, tv);
  if (tv) { /* Linux select reports the time left */
    int64_t left = t - (now_ns() - start);
    if (left < 0) left = 0;
    tv->tv_sec = left / 1000000000;
    tv->tv_usec = (left % 1000000000) / 1000;
  }
  return rc;
}

SHM_EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *x, const struct timespec *ts,
                       const sigset_t *mask) {
  if (SHM_LIKELY(shm_fdtab_get() == NULL)) return REAL(pselect)(nfds, r, w, x, ts, mask);
  int handled;
  int rc = pl_select(nfds, r, w, x, ts ? (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec : -1, mask,
                     &handled);
  if (!handled) return REAL(pselect)(nfds, r, w, x, ts, mask);
  return rc;
}

/* epoll for upgraded sockets.
 *
 * An upgraded socket's readiness lives in its rings, which the kernel cannot see.
 * Each application epoll instance that has tracked members gets an inner epoll set
 * (one of our hidden fds) holding those members' real sockets; the inner set is
 * registered in the application's set under a tag only we produce (the address of
 * our instance record). epoll_wait reports ring readiness itself, arms the members
 * (so peers kick their sockets) before sleeping in the real epoll_wait, and turns
 * the tag into ring events when it fires. The application's epoll_data is kept in
 * our member record and handed back unchanged. */
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>

#include "log.h"
#include "preload.h"

struct shm_member {
  struct shm_member *inst_next, *inst_prev, *conn_next;
  struct pl_epinst *inst;
  int fd;
  struct shm_conn *c;
  uint32_t events; /* the application's interest and flags */
  epoll_data_t data;
  int disabled;      /* EPOLLONESHOT has fired */
  int deleted;       /* EPOLL_CTL_DEL'd; the inner registration is kept for a re-ADD */
  int armed;         /* what cool() armed while the member is cold (undone by heat) */
  int hot;           /* on its instance's hot list (collect looks at it) */
  struct shm_member *hot_next, *hot_prev;
  /* Cooled before the last sleep while still active (see rewarm): */
  struct shm_member *recent_next;
  int in_recent;
  int idle_sleeps; /* sleeps it was re-warmed after without reporting anything */
  int kick_mode;     /* inner registration waits for kicks (upgraded) */
  uint32_t pending_bits;
  uint32_t sock_edge; /* the events the kernel reported on the real socket since the last collect */
  uint32_t last_bits, last_head, last_tail, last_end; /* edge detection for EPOLLET */
  /* Reported by the epoll_wait call whose token is rep_call, as *rep_at (that
   * call's array): what the kernel reports for it later in the same call is
   * merged into that entry, as the kernel's one ready-list entry would be. */
  uint64_t rep_call;
  struct epoll_event *rep_at;
};

struct pl_epinst {
  struct pl_epinst *next;
  /* Everything below, and the fields of this instance's members, under `lock`
   * (lock order: ep_lock, then one instance's lock, then a connection's). */
  pthread_mutex_t lock;
  int busy; /* epoll_wait calls in flight (under ep_lock): free only at 0 */
  int dead; /* its last descriptor is closed: no members, no inner set */
  int epfd, inner;
  /* An eventfd in the inner set (data 0), made at its first use: rung when a
   * member made hot outside epoll_wait has something to report while threads
   * sleep in the kernel on this set (see heated_outside). -1: none yet. */
  int bell;
  int sleepers; /* epoll_wait calls asleep in the kernel on this set, counted here */
  int refs; /* descriptors of the application that name this instance (dup) */
  struct shm_member *members, *members_tail; /* in the order they were added */
  int nmembers;
  /* The live member of each descriptor number (by_fd[fd], below by_fd_cap):
   * epoll_ctl finds it without a walk of the members, which cost O(members) per
   * call (an event loop that changes a connection's interest per request, with
   * thousands of idle members beside it). Zombies are not in it. Its size
   * follows the highest member number: 8 bytes per number, about 1 MB for a
   * set with members up to 100,000. */
  struct shm_member **by_fd;
  int by_fd_cap;
  /* Members whose descriptor number was freed behind our back: their socket may
   * live on elsewhere (a copy in another process), and with it their inner
   * registration, which we cannot remove without a descriptor for it. Kept (and
   * ignored when they fire) until the inner set is rebuilt without them. */
  struct shm_member *zombies;
  int nzombies;
  int want_rebuild; /* leave_stale found it due (pl_epoll_forget_stale rebuilds) */
  /* Another process may use the same kernel instance (it was created before a
   * fork): its set must not be rebuilt, which would take the old inner set out
   * of the instance the other process still waits on. */
  int shared;
  /* Consecutive epoll_wait calls whose answer left the kernel no room (ring
   * events filled maxevents, or the kernel was not asked): bounds how long the
   * other descriptors of the set can wait behind always-ready rings. */
  unsigned ring_streak;
  struct shm_spin spin; /* adaptive spin before sleeping, as for blocking reads */
  /* The members collect looks at: the ones that may be ready without a kick.
   * Every other member is cold: armed, so that its peer kicks its socket in the
   * inner set when it publishes (or frees room), which makes it hot again. The
   * cost of a call follows the hot members, not all of them. Reported members
   * go to the tail (round-robin when more are ready than maxevents). */
  struct shm_member *hot_head, *hot_tail;
  int nhot;
  int cool_timed;  /* the last cooling pass kept a member that needs a timed sleep */
  int idle_pending; /* a member went cold with ring memory to give back (sticky) */
  int cool_racy;   /* ... kept a member found ready while being armed */
  uint64_t woke_first; /* earliest peer wake-up among the members the kernel reported */
  int pending_reported; /* this round reported a pending member (its readiness is the kernel's) */
  uint64_t tokens;     /* the last epoll_wait call's token */
  uint64_t cur_token;  /* the token of the call that holds the lock */
  struct shm_member *recent; /* cooled by the last pass before a sleep (rewarm) */
  int64_t last_kernel;  /* when the kernel was last asked about the other fds (atomic:
                         * read and written around the sleep, without `lock`) */
};

/* The registry: the list of instances, each connection's list of members
 * (c->members), member and instance creation and release, and instance refs and
 * busy counts. Never held while waiting: epoll_wait takes it only to pin its
 * instance (busy) and, with trylock, to move a member out that turned plain;
 * each instance has its own lock for its members, so threads with a set each
 * (memcached's workers) do not contend. Lock order: ep_lock, then an instance's
 * lock, then a connection's (core/conn.c); never two instances' locks at once. */
static pthread_mutex_t ep_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pl_epinst *instances;

/* How many of the registry's and instances' locks this thread holds. A signal
 * handler runs on top of its thread, which may hold them: a call of the handler's
 * that would take one (pl_epoll_kicks_taken, from its poll) leaves its work to
 * the thread, which does it once it has let go of the last one (tl_deferred). */
static __thread int tl_ep_depth __attribute__((tls_model("initial-exec")));
static __thread struct shm_conn *tl_deferred[128] __attribute__((tls_model("initial-exec")));
static __thread int tl_ndeferred __attribute__((tls_model("initial-exec")));
static __thread int tl_deferred_lost __attribute__((tls_model("initial-exec"))); /* more than fit */
int pl_epoll_thread_inside(void) { return tl_ep_depth > 0; }
static void run_deferred(void);
/* Counted before the lock is taken (a handler between the two saw 0 and waited
 * for its own thread: conc sigepoll) and uncounted after it is let go; among
 * the library's locks too (core/locks.h: a handler's close). */
static void ep_mlock(pthread_mutex_t *l) {
  tl_ep_depth++;
  shm_lock(l);
}
static int ep_mtrylock(pthread_mutex_t *l) {
  tl_ep_depth++;
  int r = shm_trylock(l);
  if (r != 0) tl_ep_depth--;
  return r;
}
static void ep_munlock(pthread_mutex_t *l) {
  pthread_mutex_unlock(l);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (--tl_ep_depth == 0 && tl_ndeferred) run_deferred();
  shm_locks_leave();
}

/* fork(): from now on both processes hold every existing instance. */
static void mark_shared(void) {
  for (struct pl_epinst *in = instances; in; in = in->next) in->shared = 1;
}
/* fork()'s prepare and parent handlers (preload/process.c): the lock is held
 * across the fork. */
void pl_epoll_fork_lock(int take) {
  if (take) {
    /* The registry, then every instance (a thread in epoll_wait holds its
     * instance's lock only while it collects, never while it sleeps): the child
     * gets no hot list or arm half-changed. */
    tl_ep_depth++; /* held across the fork: no deferred work runs in its handlers */
    shm_locks_enter();
    pthread_mutex_lock(&ep_lock);
    for (struct pl_epinst *in = instances; in; in = in->next) pthread_mutex_lock(&in->lock);
  } else {
    mark_shared();
    for (struct pl_epinst *in = instances; in; in = in->next) pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&ep_lock);
    tl_ep_depth--;
    shm_locks_leave();
  }
}

#define FLAG_BITS (EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP)
/* Edge-triggered: every kick is a new edge, and a socket at EOF does not keep the
 * inner set (and with it the application's) permanently ready. */
#define KICK_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)

static uint64_t tag_of(struct pl_epinst *in) { return (uint64_t)(uintptr_t)in; }

static uint32_t inner_events(struct shm_member *m) {
  if (m->kick_mode) return KICK_EVENTS;
  return m->events & ~(uint32_t)(EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP);
}

static int inner_ctl(struct shm_member *m, int op) {
  struct epoll_event ev = {.events = inner_events(m), .data.ptr = m};
  return REAL(epoll_ctl)(m->inst->inner, op, m->fd, &ev);
}

static void hot_unlink(struct shm_member *m) {
  struct pl_epinst *in = m->inst;
  if (!m->hot) return;
  if (m->hot_prev) m->hot_prev->hot_next = m->hot_next;
  else in->hot_head = m->hot_next;
  if (m->hot_next) m->hot_next->hot_prev = m->hot_prev;
  else in->hot_tail = m->hot_prev;
  m->hot_next = m->hot_prev = NULL;
  m->hot = 0;
  in->nhot--;
}

static void hot_append(struct shm_member *m) {
  struct pl_epinst *in = m->inst;
  m->hot_prev = in->hot_tail;
  m->hot_next = NULL;
  if (in->hot_tail) in->hot_tail->hot_next = m;
  else in->hot_head = m;
  in->hot_tail = m;
  m->hot = 1;
  in->nhot++;
}

/* m may be ready without a kick (new interest, a kick or socket event, a state
 * change, our own write that filled its ring): the next collect looks at it.
 * Caller holds m's instance lock (the hot list is the instance's; ep_lock is
 * held too when it comes through each_member, not from epoll_wait's passes). */
static void heat(struct shm_member *m) {
  if (m->armed) {
    shm_conn_disarm(m->c, m->armed);
    m->armed = 0;
  }
  if (!m->hot) hot_append(m);
}

/* Takes m out of its instance's and its connection's lists. */
static void detach_member(struct shm_member *m) {
  struct shm_member **pp;
  m->inst->nmembers--;
  hot_unlink(m);
  if (m->in_recent)
    for (pp = &m->inst->recent; *pp; pp = &(*pp)->recent_next)
      if (*pp == m) {
        *pp = m->recent_next;
        m->in_recent = 0;
        break;
      }
  if (m->armed) shm_conn_disarm(m->c, m->armed);
  m->armed = 0;
  struct pl_epinst *in = m->inst;
  if (m->inst_prev) m->inst_prev->inst_next = m->inst_next;
  else in->members = m->inst_next;
  if (m->inst_next) m->inst_next->inst_prev = m->inst_prev;
  else in->members_tail = m->inst_prev;
  m->inst_next = m->inst_prev = NULL;
  if (m->fd >= 0 && m->fd < in->by_fd_cap && in->by_fd[m->fd] == m) in->by_fd[m->fd] = NULL;
  for (pp = &m->c->members; *pp; pp = &(*pp)->conn_next)
    if (*pp == m) {
      *pp = m->conn_next;
      __atomic_sub_fetch(&m->c->nmembers, 1, __ATOMIC_RELAXED);
      break;
    }
}

static void unlink_member(struct shm_member *m) {
  detach_member(m);
  free(m);
}

static struct pl_epinst *instance(int epfd, int create) {
  struct pl_epinst *in = shm_fd_get(epfd, SHM_FD_EPOLL);
  if (in || !create) return in;
  in = calloc(1, sizeof *in);
  if (!in) {
    errno = ENOMEM;
    return NULL;
  }
  in->epfd = epfd;
  in->bell = -1;
  in->refs = 1;
  pthread_mutex_init(&in->lock, NULL);
  shm_spin_init(&in->spin, shm_cfg.spin_us);
  int inner = REAL(epoll_create1)(EPOLL_CLOEXEC);
  if (inner < 0 || (inner = shm_fd_hide(inner)) < 0) {
    free(in);
    return NULL;
  }
  in->inner = inner;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag_of(in)};
  if (REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, inner, &ev) < 0) {
    int e = errno; /* epfd is not an epoll instance, or is gone */
    shm_fd_set(inner, SHM_FD_NONE, NULL);
    REAL(close)(inner);
    free(in);
    errno = e;
    return NULL;
  }
  if (shm_fd_set(epfd, SHM_FD_EPOLL, in) < 0) {
    shm_fd_set(inner, SHM_FD_NONE, NULL);
    REAL(close)(inner);
    free(in);
    errno = ENOMEM;
    return NULL;
  }
  in->next = instances;
  instances = in;
  return in;
}

static struct shm_member *find(struct pl_epinst *in, int fd) {
  return in && fd >= 0 && fd < in->by_fd_cap ? in->by_fd[fd] : NULL;
}

/* Room in in->by_fd for fd. 0, or -1 (ENOMEM). */
static int by_fd_room(struct pl_epinst *in, int fd) {
  if (fd < in->by_fd_cap) return 0;
  size_t cap = in->by_fd_cap ? (size_t)in->by_fd_cap : 64;
  while (cap <= (size_t)fd) cap *= 2;
  struct shm_member **n = cap <= INT_MAX ? realloc(in->by_fd, cap * sizeof *n) : NULL;
  if (!n) {
    errno = ENOMEM;
    return -1;
  }
  memset(n + in->by_fd_cap, 0, (cap - (size_t)in->by_fd_cap) * sizeof *n);
  in->by_fd = n;
  in->by_fd_cap = (int)cap;
  return 0;
}

/* Caller holds ep_lock and m's instance lock. The member leaves the inner set for
 * the application's. */
static void migrate_plain(struct shm_member *m) {
  REAL(epoll_ctl)(m->inst->inner, EPOLL_CTL_DEL, m->fd, NULL);
  struct epoll_event ev = {.events = m->disabled ? 0 : m->events, .data = m->data};
  if (!m->deleted && REAL(epoll_ctl)(m->inst->epfd, EPOLL_CTL_ADD, m->fd, &ev) < 0)
    SHM_LOG(WARN, "fd=%d: could not move to epoll fd %d: %s", m->fd, m->inst->epfd, strerror(errno));
  unlink_member(m);
}

static void to_kick_mode(struct shm_member *m) {
  if (m->kick_mode) return;
  m->kick_mode = 1;
  inner_ctl(m, EPOLL_CTL_MOD);
  heat(m);
}

static void heated_outside(struct pl_epinst *in, struct shm_member *m, int epfd);

/* to_kick_mode for a connection-wide change (another thread's read or write
 * switched it): see heated_outside. */
static void to_kick_mode_outside(struct shm_member *m) {
  if (m->kick_mode) return;
  to_kick_mode(m);
  heated_outside(m->inst, m, m->inst->epfd);
}

/* Connection-wide changes: act(m) on each of c's members (only those for number
 * fd, if fd >= 0), under the registry lock and, in turn, each member's instance
 * lock (the lock order). act may free m. */
static void each_member(struct shm_conn *c, int fd, void (*act)(struct shm_member *)) {
  if (!c->members) return;
  ep_mlock(&ep_lock);
  struct shm_member *m = c->members, *next;
  for (; m; m = next) {
    next = m->conn_next;
    if (fd >= 0 && m->fd != fd) continue;
    pthread_mutex_t *l = &m->inst->lock;
    ep_mlock(l);
    act(m);
    ep_munlock(l);
  }
  ep_munlock(&ep_lock);
}

static void heat_for_room(struct shm_member *m) {
  if (m->hot || !(m->events & EPOLLOUT)) return;
  heat(m);
  heated_outside(m->inst, m, m->inst->epfd);
}

static void leave(struct shm_member *m) {
  REAL(epoll_ctl)(m->inst->inner, EPOLL_CTL_DEL, m->fd, NULL);
  unlink_member(m);
}

static void zombify(struct shm_member *m);
static void rebuild_inner(struct pl_epinst *in);

static void leave_stale(struct shm_member *m) {
  struct pl_epinst *in = m->inst;
  zombify(m);
  /* Rebuilding costs one epoll_ctl per live member: do it when the zombies
   * outnumber them, so that its cost per stale member stays bounded. Not here:
   * the rebuild frees other members of the connection each_member walks (a
   * second number of it, freed behind our back too), whose next it holds. */
  if (in->nzombies >= 64 && in->nzombies > in->nmembers && !in->shared) in->want_rebuild = 1;
}

void pl_epoll_conn_plain(int fd, struct shm_conn *c) { each_member(c, fd, migrate_plain); }

void pl_epoll_conn_upgraded(int fd, struct shm_conn *c) {
  (void)fd;
  if (c->members && shm_conn_tx_on_ring(c)) each_member(c, -1, to_kick_mode_outside);
}

void pl_epoll_tx_short(struct shm_conn *c) { each_member(c, -1, heat_for_room); }

/* A poll of ours took kicks from c's socket. The kernel's epoll looks at a
 * socket again when it hands over its event, so an inner set that had not handed
 * over the kick's event yet (its epoll_wait asleep, woken, not run) found the
 * socket empty and slept on: a member waiting for room, or for data, missed its
 * wake-up (conc epollrace: epoll_wait for EPOLLIN|EPOLLOUT on a full ring beside a
 * poll(POLLIN) of the connection in another thread, the peer's kick for room
 * taken by the poll, about 1 round in 10). Each cold member is made hot for its
 * set's sleepers (heated_outside: cooled again at once if it has nothing to
 * report, else the bell). */
static void heat_after_kick(struct shm_member *m) {
  if (m->hot || m->disabled || m->deleted || shm_conn_state(m->c) != SHM_CONN_UPGRADED) return;
  heat(m);
  heated_outside(m->inst, m, m->inst->epfd);
}
void pl_epoll_kicks_taken(struct shm_conn *c) {
  if (tl_ep_depth == 0) {
    each_member(c, -1, heat_after_kick);
    return;
  }
  /* On top of this thread's epoll code, which holds the locks each_member would
   * wait for (a signal handler's poll, or a set's own drain of kicks of a
   * connection that other sets hold too: process_inner): the thread does it when
   * it lets go of them. */
  for (int i = 0; i < tl_ndeferred; i++)
    if (tl_deferred[i] == c) return;
  if (tl_ndeferred < (int)(sizeof tl_deferred / sizeof tl_deferred[0])) tl_deferred[tl_ndeferred++] = c;
  else tl_deferred_lost = 1;
}
/* Connection records are never freed (core/conn.c: a pool), so a deferred one
 * that was closed meanwhile is valid memory: at worst another connection's
 * members get one look too many. More than fit: every member of a connection
 * held by several sets, in every set. */
static void run_deferred(void) {
  struct shm_conn *d[sizeof tl_deferred / sizeof tl_deferred[0]];
  int n = tl_ndeferred, lost = tl_deferred_lost;
  for (int i = 0; i < n; i++) d[i] = tl_deferred[i];
  tl_ndeferred = 0;
  tl_deferred_lost = 0;
  for (int i = 0; i < n; i++) each_member(d[i], -1, heat_after_kick);
  if (!lost) return;
  ep_mlock(&ep_lock);
  for (struct pl_epinst *in = instances; in; in = in->next) {
    ep_mlock(&in->lock);
    for (struct shm_member *m = in->members; m; m = m->inst_next)
      if (m->c && __atomic_load_n(&m->c->nmembers, __ATOMIC_RELAXED) > 1) heat_after_kick(m);
    ep_munlock(&in->lock);
  }
  ep_munlock(&ep_lock);
}

void pl_epoll_forget_fd(int fd, struct shm_conn *c) { each_member(c, fd, leave); }

static void free_zombies(struct pl_epinst *in) {
  while (in->zombies) {
    struct shm_member *z = in->zombies;
    in->zombies = z->inst_next;
    free(z);
  }
  in->nzombies = 0;
}

/* m's descriptor number was freed behind our back: m leaves the instance, but
 * its record stays until no inner set can report it any more. */
static void zombify(struct shm_member *m) {
  struct pl_epinst *in = m->inst;
  detach_member(m);
  m->c = NULL;
  m->inst_next = in->zombies;
  in->zombies = m;
  in->nzombies++;
}

/* A new inner set holding the live members only: closing the old one drops the
 * registrations of sockets whose numbers were freed behind our back. Caller
 * holds ep_lock and the instance's lock. */
static void rebuild_inner(struct pl_epinst *in) {
  int raw = REAL(epoll_create1)(EPOLL_CLOEXEC);
  if (raw < 0) return;
  int ni = shm_fd_hide(raw);
  if (ni < 0) {
    REAL(close)(raw);
    return;
  }
  struct shm_member *m, *next;
  for (m = in->members; m; m = next) {
    next = m->inst_next;
    struct epoll_event ev = {.events = inner_events(m), .data.ptr = m};
    if (REAL(epoll_ctl)(ni, EPOLL_CTL_ADD, m->fd, &ev) == 0) continue;
    if (errno == EBADF) {
      /* Closed behind our back as well, its number not reused yet: the kernel
       * dropped it from the set, so does ours (its fd entry goes when the
       * number comes back). The old inner set, its only registration, goes. */
      SHM_LOG(DEBUG, "fd=%d: closed behind our back: leaves epoll fd %d", m->fd, in->epfd);
      zombify(m);
    } else {
      SHM_LOG(WARN, "fd=%d: could not move to a new inner epoll set: %s", m->fd, strerror(errno));
    }
  }
  struct epoll_event bev = {.events = EPOLLIN, .data.u64 = 0};
  if (in->bell >= 0 && REAL(epoll_ctl)(ni, EPOLL_CTL_ADD, in->bell, &bev) < 0)
    SHM_LOG(WARN, "epfd=%d: could not move the bell to a new inner epoll set: %s", in->epfd, strerror(errno));
  struct epoll_event tag = {.events = EPOLLIN, .data.u64 = tag_of(in)};
  if (REAL(epoll_ctl)(in->epfd, EPOLL_CTL_ADD, ni, &tag) < 0) {
    shm_fd_set(ni, SHM_FD_NONE, NULL);
    REAL(close)(ni);
    return;
  }
  REAL(epoll_ctl)(in->epfd, EPOLL_CTL_DEL, in->inner, NULL);
  shm_fd_set(in->inner, SHM_FD_NONE, NULL);
  REAL(close)(in->inner);
  in->inner = ni;
  SHM_LOG(DEBUG, "epfd=%d: inner set rebuilt without %d stale members", in->epfd, in->nzombies);
  free_zombies(in);
}

void pl_epoll_forget_stale(int fd, struct shm_conn *c) {
  each_member(c, fd, leave_stale);
  ep_mlock(&ep_lock);
  for (struct pl_epinst *in = instances; in; in = in->next) {
    if (!in->want_rebuild) continue;
    ep_mlock(&in->lock);
    in->want_rebuild = 0;
    if (!in->dead) rebuild_inner(in);
    ep_munlock(&in->lock);
  }
  ep_munlock(&ep_lock);
}

/* Another number of the application's refers to instance in (if it has one). */
static int other_number(struct pl_epinst *in) {
  for (unsigned i = 0; shm_fdtab_get() && i < shm_fdcap && i <= shm_fdhigh; i++)
    if (__atomic_load_n(&shm_fdtab_get()[i].kind, __ATOMIC_ACQUIRE) == SHM_FD_EPOLL && shm_fdtab_get()[i].p == in)
      return (int)i;
  return -1;
}

void pl_epoll_dup(int oldfd, int newfd) {
  ep_mlock(&ep_lock);
  struct pl_epinst *in = shm_fd_get(oldfd, SHM_FD_EPOLL);
  if (in && shm_fd_set(newfd, SHM_FD_EPOLL, in) == 0) in->refs++;
  else if (in) SHM_LOG(WARN, "epoll fd=%d: copy fd=%d beyond the fd table: it sees our inner set", oldfd, newfd);
  ep_munlock(&ep_lock);
}

void pl_epoll_instance_unref(int epfd, void *p) {
  struct pl_epinst *in = p;
  if (!in) return;
  ep_mlock(&ep_lock);
  if (--in->refs > 0) {
    /* The kernel's instance lives on in the other copies: so does ours. */
    if (in->epfd == epfd) {
      int o = other_number(in);
      if (o >= 0) in->epfd = o;
    }
    ep_munlock(&ep_lock);
    return;
  }
  ep_mlock(&in->lock);
  while (in->members) unlink_member(in->members);
  free_zombies(in);
  free(in->by_fd);
  in->by_fd = NULL;
  in->by_fd_cap = 0;
  shm_fd_set(in->inner, SHM_FD_NONE, NULL);
  REAL(close)(in->inner);
  in->inner = -1;
  if (in->bell >= 0) {
    shm_fd_set(in->bell, SHM_FD_NONE, NULL);
    REAL(close)(in->bell);
    in->bell = -1;
  }
  in->dead = 1;
  ep_munlock(&in->lock);
  for (struct pl_epinst **pp = &instances; *pp; pp = &(*pp)->next)
    if (*pp == in) {
      *pp = in->next;
      break;
    }
  int last = in->busy == 0; /* else the last epoll_wait in flight frees it */
  ep_munlock(&ep_lock);
  if (last) {
    pthread_mutex_destroy(&in->lock);
    free(in);
  }
}

/* The instance of epfd, pinned for an epoll_wait (NULL: none). */
static struct pl_epinst *inst_get(int epfd) {
  ep_mlock(&ep_lock);
  struct pl_epinst *in = shm_fd_get(epfd, SHM_FD_EPOLL);
  if (in) in->busy++;
  ep_munlock(&ep_lock);
  return in;
}

static void inst_put(struct pl_epinst *in) {
  ep_mlock(&ep_lock);
  int last = --in->busy == 0 && in->dead;
  ep_munlock(&ep_lock);
  if (last) {
    pthread_mutex_destroy(&in->lock);
    free(in);
  }
}

void pl_epoll_atfork_child(void) {
  pthread_mutex_init(&ep_lock, NULL);
  tl_ep_depth = 0; /* the locks the prepare handler took are new ones */
  tl_ndeferred = 0;
  tl_deferred_lost = 0;
  mark_shared();
  /* Arms of the parent are not the child's to undo; the child arms its own when
   * its members go cold, so every member starts hot. */
  for (struct pl_epinst *in = instances; in; in = in->next) {
    pthread_mutex_init(&in->lock, NULL);
    in->busy = 0; /* the parent's waiters */
    in->sleepers = 0;
    for (struct shm_member *m = in->members; m; m = m->inst_next) {
      m->armed = 0;
      if (!m->hot) hot_append(m);
    }
  }
}

void pl_epoll_renumber_inner(int from, int to) {
  ep_mlock(&ep_lock);
  for (struct pl_epinst *in = instances; in; in = in->next) {
    ep_mlock(&in->lock);
    if (in->inner == from) in->inner = to;
    if (in->bell == from) in->bell = to;
    ep_munlock(&in->lock);
  }
  ep_munlock(&ep_lock);
}

/* The fd table exists before any epoll_wait on a new set, so that the set's
 * untracked waiters can be counted in it (untracked_wait). */
SHM_EXPORT int epoll_create(int size) {
  int r = PL_EMFILE_RETRY(REAL(epoll_create)(size));
  if (r >= 0) pl_new_fd(r);
  if (r >= 0 && !shm_cfg.disable) shm_fdtab_ensure();
  return r;
}

SHM_EXPORT int epoll_create1(int flags) {
  int r = PL_EMFILE_RETRY(REAL(epoll_create1)(flags));
  if (r >= 0) pl_new_fd(r);
  if (r >= 0 && !shm_cfg.disable) shm_fdtab_ensure();
  return r;
}

/* New interest and data for a member (EPOLL_CTL_MOD, or ADD of a dormant one):
 * re-enables EPOLLONESHOT and starts edge detection afresh. */
static int set_interest(struct shm_member *m, const struct epoll_event *ev) {
  m->events = ev->events;
  m->data = ev->data;
  m->disabled = 0;
  m->last_bits = 0;
  m->pending_bits = 0;
  heat(m);
  return m->kick_mode ? 0 : inner_ctl(m, EPOLL_CTL_MOD);
}

static int ctl_conn(int epfd, int op, int fd, struct epoll_event *ev, struct shm_conn *c);

static int pl_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
  if (shm_fd_kind(epfd) == SHM_FD_INTERNAL || shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  struct shm_conn *c = pl_conn_any(fd);
  /* An accepted connection's first use: the offer is made now. */
  if (c && op != EPOLL_CTL_DEL && shm_conn_state(c) == SHM_CONN_PENDING && c->role == SHM_SERVER)
    shm_conn_server_offer(fd, c);
  if (c && shm_conn_state(c) == SHM_CONN_PLAIN) {
    pl_epoll_conn_plain(fd, c);
    shm_conn_put(c);
    c = NULL;
  }
  if (!c) {
    int r = REAL(epoll_ctl)(epfd, op, fd, ev);
    if (r == 0 && op == EPOLL_CTL_ADD) pl_note_epoll_add(epfd, fd);
    return r;
  }
  int rc = ctl_conn(epfd, op, fd, ev, c);
  int e = errno;
  shm_conn_put(c);
  errno = e;
  return rc;
}

/* EPOLL_CTL_ADD of connection c as fd (m: the member fd already has, or NULL).
 * Caller holds ep_lock and the instance's lock. 0, or -1 with errno. */
static int member_add(struct pl_epinst *in, int epfd, int fd, struct epoll_event *ev, struct shm_conn *c,
                      struct shm_member *m) {
  if (m && m->deleted && m->c == c) { /* revive: no system call */
    m->deleted = 0;
    int rc = set_interest(m, ev);
    if (rc == 0) heated_outside(in, m, epfd);
    return rc;
  }
  if (m && m->deleted) { /* the number now names another connection */
    REAL(epoll_ctl)(in->inner, EPOLL_CTL_DEL, fd, NULL);
    unlink_member(m);
    m = NULL;
  }
  if (m) {
    errno = EEXIST;
    return -1;
  }
  if (shm_fd_get(fd, SHM_FD_CONN) != c) {
    /* Closed by another thread since we looked: its teardown (which takes
     * ep_lock after clearing the slot) would never see this member. */
    errno = EBADF;
    return -1;
  }
  if (by_fd_room(in, fd) < 0) return -1;
  m = calloc(1, sizeof *m);
  if (!m) {
    errno = ENOMEM;
    return -1;
  }
  m->inst = in;
  m->fd = fd;
  m->c = c;
  m->events = ev->events;
  m->data = ev->data;
  /* Kicks only once our writes go to the ring: before, the socket's own
   * room is what EPOLLOUT waits for. */
  m->kick_mode = shm_conn_tx_on_ring(c);
  if (inner_ctl(m, EPOLL_CTL_ADD) < 0) {
    free(m);
    return -1;
  }
  /* At the end: members ready together are reported in the order they were
   * added, as the kernel's ready list does. */
  m->inst_next = NULL;
  m->inst_prev = in->members_tail;
  if (in->members_tail) in->members_tail->inst_next = m;
  else in->members = m;
  in->members_tail = m;
  in->by_fd[fd] = m;
  in->nmembers++;
  m->conn_next = c->members;
  c->members = m;
  __atomic_add_fetch(&c->nmembers, 1, __ATOMIC_RELAXED);
  hot_append(m);
  heated_outside(in, m, epfd);
  return 0;
}

/* EPOLL_CTL_MOD and EPOLL_CTL_DEL of member m (NULL: none). Same locks. */
static int member_mod(struct pl_epinst *in, int epfd, struct epoll_event *ev, struct shm_member *m) {
  if (!m || m->deleted) {
    errno = ENOENT;
    return -1;
  }
  if ((m->events & EPOLLEXCLUSIVE) || (ev->events & EPOLLEXCLUSIVE)) {
    errno = EINVAL; /* as the kernel: exclusive entries cannot be modified */
    return -1;
  }
  int rc = set_interest(m, ev);
  if (rc == 0) heated_outside(in, m, epfd);
  return rc;
}

static int member_del(struct pl_epinst *in, int fd, struct shm_member *m) {
  if (!m || m->deleted) {
    errno = ENOENT;
    return -1;
  }
  if (m->kick_mode) {
    /* Event loops delete and re-add a socket whenever its interest becomes
     * empty (redis does, per request): keep the inner registration. */
    m->deleted = 1;
    return 0;
  }
  REAL(epoll_ctl)(in->inner, EPOLL_CTL_DEL, fd, NULL);
  unlink_member(m);
  return 0;
}

static int ctl_conn(int epfd, int op, int fd, struct epoll_event *ev, struct shm_conn *c) {
  if (epfd == fd) {
    errno = EINVAL;
    return -1;
  }
  if (op != EPOLL_CTL_DEL && !ev) {
    errno = EFAULT;
    return -1;
  }
  ep_mlock(&ep_lock);
  int rc = -1;
  struct pl_epinst *in = instance(epfd, op == EPOLL_CTL_ADD);
  if (in) {
    ep_mlock(&in->lock);
    struct shm_member *m = find(in, fd);
    if (op == EPOLL_CTL_ADD) rc = member_add(in, epfd, fd, ev, c, m);
    else if (op == EPOLL_CTL_MOD) rc = member_mod(in, epfd, ev, m);
    else if (op == EPOLL_CTL_DEL) rc = member_del(in, fd, m);
    else errno = EINVAL;
    ep_munlock(&in->lock);
  } else if (op != EPOLL_CTL_ADD) {
    /* Not a set of ours (yet): nothing of fd is in it. */
    errno = op == EPOLL_CTL_MOD || op == EPOLL_CTL_DEL ? ENOENT : EINVAL;
  }
  ep_munlock(&ep_lock);
  return rc;
}

SHM_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
  if (SHM_LIKELY(!pl_tracked(fd) && !pl_tracked(epfd))) {
    int r = REAL(epoll_ctl)(epfd, op, fd, ev);
    if (r == 0 && op == EPOLL_CTL_ADD) pl_note_epoll_add(epfd, fd);
    return r;
  }
  return pl_epoll_ctl(epfd, op, fd, ev);
}

/* Will m report input? Not while EPOLLONESHOT has fired (or it is deleted): then
 * a kick on its socket is another waiter's of ours, if one sleeps on it (a thread
 * in poll or a blocking read), and must be left to it (shm_conn_drain_for):
 * MariaDB's thread pool reads a query's further packets with poll while the
 * connection's member is disabled, and the listener's epoll_wait, woken by the
 * same kick, drained it before that poll looked again: the poll slept to its
 * timeout (net_read_timeout, 30 s). */
static int wants_input(struct shm_member *m) { return (m->events & EPOLLIN) && !m->disabled && !m->deleted; }

/* Kicks arrived on some members' sockets: consume them, settle pending clients,
 * and make those members hot. Caller holds the instance's lock. */
static void process_inner(struct pl_epinst *in) {
  struct epoll_event tmp[128];
  in->woke_first = UINT64_MAX;
  if (in->inner < 0) return;
  int n = REAL(epoll_wait)(in->inner, tmp, 128, 0);
  for (int i = 0; i < n; i++) {
    if (tmp[i].data.u64 == 0) { /* the bell (heated_outside): its ring is heard */
      uint64_t v;
      if (REAL(read)(in->bell, &v, sizeof v) < 0 && errno != EAGAIN)
        SHM_LOG(DEBUG, "epfd=%d: bell: %s", in->epfd, strerror(errno));
      continue;
    }
    struct shm_member *m = tmp[i].data.ptr;
    struct shm_conn *c = m->c;
    if (!c) continue; /* a zombie's socket, alive in another process */
    m->sock_edge |= tmp[i].events;
    heat(m);
    if (shm_conn_state(c) == SHM_CONN_PENDING) {
      m->pending_bits |= tmp[i].events;
      int st = shm_conn_resolve(m->fd, c, 0);
      /* Only this member: another instance's (under its own lock) switches at its
       * own next collect, its socket's events making it hot. */
      if (st == SHM_CONN_UPGRADED && shm_conn_tx_on_ring(c)) to_kick_mode(m);
      /* A connection found plain is moved out at collect time. */
    } else if (shm_conn_state(c) == SHM_CONN_UPGRADED) {
      /* A kick (edge-triggered, kick mode) may stay unread for a while: one
       * system call less per wake-up. Anything else is drained now. */
      int hup = tmp[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
      /* Beside threads of ours in poll on the connection, the kicks that are news
       * for them stay, and no more is taken than came before the look, as for a
       * poll (shm_conn_drain_polled; conc epollrace over TCP: the poll slept on
       * with the byte its kick announced). */
      if (hup || !m->kick_mode || !shm_conn_edge_explained(c)) {
        if (__atomic_load_n(&c->pollers_rx, __ATOMIC_RELAXED) > 0 || __atomic_load_n(&c->pollers_tx, __ATOMIC_RELAXED) > 0)
          (void)shm_conn_drain_polled(m->fd, c, wants_input(m), hup);
        else
          shm_conn_drain_for(m->fd, c, wants_input(m), !hup);
        /* The connection is in other sets too (another thread's, say): the
         * kernel hands their inner sets the kick's event only if the socket
         * still has it when they collect, and we may just have taken it. Their
         * members are made hot (pl_epoll_kicks_taken, done once this set's lock
         * is let go). */
        if (__atomic_load_n(&c->nmembers, __ATOMIC_RELAXED) > 1) pl_epoll_kicks_taken(c);
      }
      uint64_t t = shm_conn_rx_woke_ns(c); /* was the peer only a little slow? */
      if (t && t < in->woke_first) in->woke_first = t;
    }
  }
}

/* The events m has to report now (0: none). commit: they are being reported (an
 * edge-triggered member's edge is used up); otherwise only a look. */
static uint32_t member_events(struct shm_member *m, int commit) {
  struct shm_conn *c = m->c;
  uint32_t ev;
  if (shm_conn_state(c) == SHM_CONN_PENDING && !(m->events & EPOLLET)) {
    /* Level-triggered: the socket's own readiness, now (the kernel's answer for
     * the inner set may come only after this collect). */
    struct pollfd p = {m->fd, (short)(m->events & (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI)), 0};
    ev = REAL(poll)(&p, 1, 0) > 0 ? (uint32_t)p.revents & (m->events | EPOLLERR | EPOLLHUP) : 0;
    if (commit) m->pending_bits = 0;
    return ev;
  }
  if (shm_conn_state(c) == SHM_CONN_PENDING) {
    ev = m->pending_bits & (m->events | EPOLLERR | EPOLLHUP);
    if (commit) m->pending_bits = 0;
    return ev;
  }
  uint32_t raw = (uint32_t)shm_conn_poll_bits(m->fd, c);
  ev = raw & (m->events | EPOLLERR | EPOLLHUP) & ~FLAG_BITS;
  if (!(m->events & EPOLLET)) return ev;
  uint32_t head = shm_conn_rx_head(c), tail = shm_conn_tx_tail(c);
  /* As the kernel does: new data is an edge for EPOLLIN, and room freed by the
   * reader an edge for EPOLLOUT. Without the latter, a writer that got EAGAIN on
   * a full ring, whose reader drained it before our next collect, finds EPOLLOUT
   * in the last reported bits already and is never told. */
  /* Before a switch-over the socket itself carries data (the peer's plain bytes)
   * or room (our plain writes): a new kernel edge on it is an edge for the
   * application too, though no ring index moved. Each for its own side: once
   * the peer's bytes come through the ring, a readable edge on the socket is a
   * kick, whose data the head already accounts for (a member whose own writes
   * were still plain was reported twice for one byte, once for the head and once
   * for the kick, by two threads on one set: semprobe epoll_two_waiters, 1 run
   * in 3 on a loaded machine). */
  uint32_t se = m->sock_edge;
  int sock_edge = ((se & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) && shm_conn_sock_is_data(c)) ||
                  ((se & EPOLLOUT) && !shm_conn_tx_on_ring(c));
  /* The end of the peer's stream (or our SHUT_RD) newly seen is an edge for
   * EPOLLIN, as the FIN is for the kernel, also for a member that did not ask for
   * EPOLLRDHUP: without it, a reader already at EAGAIN was never told of the
   * end (the peer's close, TCP, our own writes still plain; or a shutdown of a
   * switched peer). */
  uint32_t end = raw & (EPOLLRDHUP | EPOLLHUP);
  int edge = sock_edge || (ev & ~m->last_bits) || ((ev & EPOLLIN) && head != m->last_head) ||
             ((ev & EPOLLOUT) && tail != m->last_tail) || ((ev & EPOLLIN) && (end & ~m->last_end));
  if (commit) {
    m->last_end = end;
    m->sock_edge = 0;
    m->last_bits = ev;
    m->last_head = head;
    m->last_tail = tail;
  }
  return edge ? ev : 0;
}

/* A hot member with nothing to report goes cold: armed, so that its peer kicks
 * when it publishes or frees room, then looked at once more (the peer may have
 * published before it saw the arm: F1/F2 in core/wait.h). Caller holds the
 * instance's lock. */
static void cool(struct pl_epinst *in, struct shm_member *m) {
  struct shm_conn *c = m->c;
  if (m->disabled || m->deleted || shm_conn_state(c) != SHM_CONN_UPGRADED) {
    /* Disabled or deleted: back by EPOLL_CTL_MOD/ADD. Pending: the inner set
     * holds its socket with the application's interest, and reports it. */
    hot_unlink(m);
    return;
  }
  int want = (int)(m->events & (EPOLLIN | EPOLLOUT));
  if (shm_conn_tx_used(c)) in->idle_pending = 1; /* idle memory (shm_conn_release_idle) */
  shm_conn_arm(m->fd, c, want, &m->armed);
  if (shm_conn_needs_timed_wait(c, want)) {
    /* Nobody can kick it (a half-closed peer; a socket full of plain bytes): it
     * stays hot, and the sleep is short. */
    if (conn_flag(c, SHM_F_SOCK_EOF)) shm_conn_probe(m->fd, c); /* a dead peer: EPOLLERR|EPOLLHUP */
    in->cool_timed = 1;
    heat(m);
    return;
  }
  if (member_events(m, 0)) {
    in->cool_racy = 1; /* ready after all: reported by the next collect */
    heat(m);
    return;
  }
  hot_unlink(m);
  if (m->idle_sleeps < 1 && !m->in_recent) {
    m->in_recent = 1;
    m->recent_next = in->recent;
    in->recent = m;
  }
}

/* After a sleep: the members cooled just before it that were active (reported
 * since their last sleep) go back to hot, unarmed. A busy connection of a server
 * that sleeps now and then (redis with 50 clients) would otherwise stay armed
 * while the server works, and its peer would kick for each request (a system
 * call on each side, for nothing: the server is awake and looks anyway). One
 * that stays quiet through a whole sleep after that stays cold, armed, and costs
 * nothing per call: the idle pool. Caller holds the instance's lock. */
static void rewarm(struct pl_epinst *in) {
  struct shm_member *m = in->recent, *next;
  in->recent = NULL;
  for (; m; m = next) {
    next = m->recent_next;
    m->in_recent = 0;
    if (m->hot) continue; /* kicked meanwhile */
    m->idle_sleeps++;
    heat(m);
  }
}

/* Threads other than the caller may be asleep in the kernel on this set: counted
 * here (pl_epoll_wait), or in the set's fd slot while it was not tracked
 * (untracked_wait, which counts itself in, then looks whether the set is tracked:
 * the fence pairs with that, U1/U2, so that either it sees the set tracked and
 * comes through pl_epoll_wait, or we see it counted). Caller holds the lock. */
static int asleep_elsewhere(struct pl_epinst *in, int epfd) {
  if (in->sleepers > 0) return 1;
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* U2: pairs with U1 in untracked_wait */
  struct shm_fdslot *s = shm_fd_slot(epfd);
  if (s && __atomic_load_n(&s->epoll_waiters, __ATOMIC_RELAXED) > 0) return 1;
  s = epfd == in->epfd ? NULL : shm_fd_slot(in->epfd);
  return s && __atomic_load_n(&s->epoll_waiters, __ATOMIC_RELAXED) > 0;
}

/* Wakes the threads asleep in the kernel on this set: the bell, an eventfd in the
 * inner set, made at its first use. Caller holds the lock. */
static void ring_bell(struct pl_epinst *in) {
  if (in->bell < 0 && in->inner >= 0) {
    int raw = REAL(eventfd)(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int b = raw < 0 ? -1 : shm_fd_hide(raw);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (raw >= 0 && b < 0) REAL(close)(raw);
    if (b >= 0 && REAL(epoll_ctl)(in->inner, EPOLL_CTL_ADD, b, &ev) < 0) {
      shm_fd_set(b, SHM_FD_NONE, NULL);
      REAL(close)(b);
      b = -1;
    }
    if (b < 0) {
      SHM_LOG(WARN, "epfd=%d: no bell (%s): a thread asleep on it may not hear of a member", in->epfd,
              strerror(errno));
      return;
    }
    in->bell = b;
  }
  uint64_t one = 1;
  if (in->bell >= 0 && REAL(write)(in->bell, &one, sizeof one) < 0 && errno != EAGAIN)
    SHM_LOG(WARN, "epfd=%d: bell: %s", in->epfd, strerror(errno));
}

/* m goes cold for the threads asleep in the kernel on this set: armed, so that
 * its peer kicks when it publishes, then looked at once more. 1 if it stayed hot
 * (it has something to report, or nobody can kick it): then a sleeper must be
 * woken for it. Caller holds the lock. */
static int cool_for_sleepers(struct pl_epinst *in, struct shm_member *m) {
  if (!m->kick_mode && shm_conn_tx_on_ring(m->c)) to_kick_mode(m);
  /* cool() notes for the pass in progress; this is none. */
  int timed = in->cool_timed, racy = in->cool_racy;
  cool(in, m);
  in->cool_timed = timed;
  in->cool_racy = racy;
  return m->hot;
}

/* m was made hot by something other than an epoll_wait of this set (epoll_ctl ADD
 * or MOD, a switch to kick mode or a full ring found by a read or write). Only
 * epoll_wait looks at the hot list, before it sleeps: a thread already asleep in
 * the kernel on this set would never hear of m (MariaDB's thread pool: its
 * listener sleeps while a worker adds each connection, EPOLLONESHOT, and re-arms
 * it after each query: the query waited forever). If one may be asleep, m goes
 * cold at once; if it has something to report now, or nobody can kick it, the
 * bell wakes the sleepers, whose next pass reports or cools it. Nobody asleep (a
 * single-threaded event loop): nothing, no system call. Caller holds the lock. */
static void heated_outside(struct pl_epinst *in, struct shm_member *m, int epfd) {
  if (!m->hot || m->disabled || m->deleted || shm_conn_state(m->c) != SHM_CONN_UPGRADED) return;
  if (!asleep_elsewhere(in, epfd)) return;
  if (cool_for_sleepers(in, m)) ring_bell(in);
}

/* An epoll_wait call that may return to the application while other threads of
 * ours sleep in the kernel on this set: nobody would look at the hot list until
 * one of them wakes. The hot members this call did not report go cold; if one of
 * them has something to report (more were ready than maxevents) or nobody can
 * kick it, the bell wakes a sleeper for it. MariaDB's thread pool: a worker's
 * epoll_wait(0) took in a stale kick of a new member (which made it hot, unarmed)
 * and returned 0 while the listener slept on: that connection's next query was
 * never heard of (one connection in a few dozen). The sleepers are counted as
 * for heated_outside (asleep_elsewhere), not only those of pl_epoll_wait: a
 * listener that went to sleep while the set had no tracked member yet is
 * counted in the set's fd slot (untracked_wait) until it wakes, and the
 * group's first upgraded connection, taken in by a worker's epoll_wait(0)
 * right after the worker added it, lost its first query the same way (semprobe
 * epoll_first_member_asleep). epfd: the number the caller used. Caller holds
 * the lock. */
static void leave_to_sleepers(struct pl_epinst *in, int epfd) {
  if (in->dead || in->nhot <= 0) return;
  if (!asleep_elsewhere(in, epfd)) return;
  int ring = 0, left = in->nhot;
  struct shm_member *m = in->hot_head, *next;
  for (; m && left > 0; m = next, left--) {
    next = m->hot_next;
    if (m->disabled || m->deleted || shm_conn_state(m->c) != SHM_CONN_UPGRADED) continue;
    if (m->rep_call == in->cur_token) {
      /* Reported level-triggered: the kernel puts such a member back on its
       * ready list and wakes another waiter, which reports it too if it is still
       * ready (semprobe epoll_lt_two_waiters: two threads asleep on one set, a
       * byte nobody has read yet; the second slept on). It stays hot: the
       * sleeper's pass looks at it. */
      if (!(m->events & (EPOLLET | EPOLLONESHOT))) ring = 1;
      continue;
    }
    ring |= cool_for_sleepers(in, m);
  }
  if (ring) ring_bell(in);
}

/* m is reported as out[n] by this collect: it moves to the tail. */
static void report(struct pl_epinst *in, struct shm_member *m, uint32_t ev, struct epoll_event *out) {
  out->events = ev;
  out->data = m->data;
  m->rep_call = in->cur_token;
  m->rep_at = out;
  m->idle_sleeps = 0;
  if (m->events & EPOLLONESHOT) m->disabled = 1;
  hot_unlink(m);
  hot_append(m);
}

/* Ring readiness of the hot members, as epoll events; with cooling, those with
 * nothing to report go cold. Caller holds the instance's lock. */
static int collect(struct pl_epinst *in, struct epoll_event *out, int max, int cooling) {
  int n = 0, left = in->nhot;
  struct shm_member *m = in->hot_head, *next;
  if (cooling) in->cool_timed = in->cool_racy = 0;
  struct shm_member *first = NULL; /* the first one reported (moved to the tail) */
  /* Each hot member once: the ones reported move to the tail, past `left`. */
  for (; m && left > 0 && n < max; m = next, left--) {
    next = m->hot_next;
    struct shm_conn *c = m->c;
    if (shm_conn_state(c) == SHM_CONN_PLAIN) {
      /* Out to the application's set (the fd's own entry goes when the
       * application next uses it). That changes the connection's member list:
       * the registry lock, which comes first in the order, so only if it is free
       * now; else at a later call (the member stays hot). */
      if (ep_mtrylock(&ep_lock) == 0) {
        migrate_plain(m);
        ep_munlock(&ep_lock);
      }
      continue;
    }
    if (!m->kick_mode && shm_conn_tx_on_ring(c)) to_kick_mode(m); /* upgraded, or switched, by a write */
    if (m->rep_call == in->cur_token) continue; /* reported by this call (merge_reported) */
    uint32_t ev = m->disabled || m->deleted ? 0 : member_events(m, 1);
    if (!ev) {
      if (cooling || m->disabled || m->deleted) cool(in, m);
      continue;
    }
    if (shm_conn_state(c) == SHM_CONN_PENDING) in->pending_reported = 1;
    if (!first) first = m;
    report(in, m, ev, out + n++);
  }
  /* Ready together, reported together: a member found empty before another was
   * found ready may have been written first (a process writes on A, then on B:
   * we looked at A before its write and at B after both). The kernel would
   * report both; the application must not see B before A (the item 7:
   * a PUBLISH delivered before the UNSUBSCRIBE sent ahead of it). So the members
   * still hot ahead of the reported ones (they move to the tail) are looked at
   * once more, now that a later write has been seen. */
  if (n == 0 || n >= max) return n;
  left = in->nhot;
  for (m = in->hot_head; m && left > 0 && n < max; m = next, left--) {
    next = m->hot_next;
    if (m == first) break; /* the reported ones, at the tail */
    if (m->disabled || m->deleted || shm_conn_state(m->c) == SHM_CONN_PLAIN) continue;
    if (m->rep_call == in->cur_token) continue;
    uint32_t ev = member_events(m, 1);
    if (ev) report(in, m, ev, out + n++);
  }
  return n;
}

/* For the spin before sleeping, which runs with no lock held (epoll_wait holds
 * ep_lock only to pin its instance, and lets go of the instance's lock for the
 * spin: other threads' calls on this set must not wait for it): the hot members'
 * connections that wait for data, held busy (a close meanwhile cannot free them). */
#define SPIN_MAX 32
struct spin_set {
  int n;
  struct shm_conn *c[SPIN_MAX];
};

/* The members spun on are marked as such in their rings (shm_conn_spinning). */
static void spin_set_take(struct pl_epinst *in, struct spin_set *ss) {
  ss->n = 0;
  for (struct shm_member *m = in->hot_head; m && ss->n < SPIN_MAX; m = m->hot_next)
    if (!m->disabled && !m->deleted && (m->events & EPOLLIN) && shm_conn_state(m->c) == SHM_CONN_UPGRADED) {
      shm_conn_busy(m->c);
      shm_conn_spinning(m->c, 1);
      ss->c[ss->n++] = m->c;
    }
}

static void spin_set_put(struct spin_set *ss) {
  for (int i = 0; i < ss->n; i++) {
    shm_conn_spinning(ss->c[i], 0);
    shm_conn_put(ss->c[i]);
  }
  ss->n = 0;
}

/* Has a ring of the set got data for a reader? */
static int any_rx_ready(void *arg) {
  struct spin_set *ss = arg;
  for (int i = 0; i < ss->n; i++)
    if (shm_conn_rx_ready(ss->c[i])) {
      SHM_STAT_ADD(ss->c[i]->st, spins_won, 1); /* stats: ends the spin (or finds it ready at once) */
      return 1;
    }
  return 0;
}

/* Takes the inner set's entry out of the kernel's answer, keeping the order of
 * the others. Its position (the first, if the kernel reported it more than once),
 * or -1 when it was not there. */
static int strip_tag(struct pl_epinst *in, struct epoll_event *ev, int *n) {
  int at = -1, k = 0;
  for (int i = 0; i < *n; i++) {
    if (ev[i].data.u64 == tag_of(in)) {
      if (at < 0) at = k;
      continue;
    }
    ev[k++] = ev[i];
  }
  *n = k;
  return at;
}

/* [a, a+na) then [a+na, a+na+nb) become the second block, then the first. */
static void rotate_events(struct epoll_event *a, int na, int nb) {
  struct epoll_event t;
  for (int i = 0, j = na - 1; i < j; i++, j--) t = a[i], a[i] = a[j], a[j] = t;
  for (int i = na, j = na + nb - 1; i < j; i++, j--) t = a[i], a[i] = a[j], a[j] = t;
  for (int i = 0, j = na + nb - 1; i < j; i++, j--) t = a[i], a[i] = a[j], a[j] = t;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Idle memory (shm_conn_release_idle): after a sleep of SHMSHIM_IDLE_MS with
 * nothing, for every member; the instance stops probing once none is left to
 * give back. Caller holds the instance's lock. */
static void release_idle_all(struct pl_epinst *in, uint64_t now) {
  int left = 0;
  for (struct shm_member *m = in->members; m; m = m->inst_next)
    if (!m->deleted) {
      shm_conn_release_idle(m->c, now);
      left |= shm_conn_tx_used(m->c);
    }
  in->idle_pending = left;
}

/* After this many answers in a row that left the kernel no room, the next one
 * makes room for it (see ring_streak). */
#define KERNEL_EVERY 8

/* One round of an epoll_wait call: what the rings had, then what the kernel said. */
struct ep_round {
  int n;          /* ring events collected into the caller's array */
  int ready;      /* n > 0 before any sleep */
  int timed;      /* a member nobody can kick: a short sleep (5 ms) */
  int racy;       /* a member found ready while arming: look again, do not sleep */
  int used;       /* rings with memory to give back after SHMSHIM_IDLE_MS */
  int due;        /* the kernel's turn (fairness, KERNEL_EVERY) */
  int left_ms;    /* how long the kernel may sleep */
  int idle_probe; /* the sleep is cut short to give idle rings' memory back */
  int k;          /* the kernel's answer */
  int asked;      /* the kernel was asked at all */
  int pending;    /* a pending member was reported (its readiness is the kernel's) */
};

/* With maxevents 1 and the kernel's turn due, the kernel is asked first. 1: the
 * call is answered (*ret), 0: go on with the rings. Caller holds the lock; it is
 * let go. */
static int kernel_first(struct pl_epinst *in, int epfd, struct epoll_event *evs, const sigset_t *mask,
                        int *ret) {
  in->ring_streak = 0;
  ep_munlock(&in->lock);
  int k = REAL(epoll_pwait)(epfd, evs, 1, 0, mask);
  if (k > 0) {
    ep_mlock(&in->lock);
    if (!in->dead && strip_tag(in, evs, &k) >= 0) process_inner(in);
    leave_to_sleepers(in, epfd);
    ep_munlock(&in->lock);
  }
  *ret = k;
  return k != 0;
}

/* The rings' part of a round: collect; a call that may sleep first spins on its
 * hot members (a peer that answers within the budget costs no kick), then cools
 * those with nothing to report (a call that will not sleep cools as it goes).
 * Caller holds the lock, and still does on return; -1: the instance died while
 * it was let go for the spin (the lock is then let go). */
static int ring_part(struct pl_epinst *in, struct epoll_event *evs, int rmax, int64_t timeout_ns,
                     struct ep_round *r) {
  in->pending_reported = 0;
  r->n = collect(in, evs, rmax, timeout_ns == 0);
  r->ready = r->n > 0;
  r->timed = r->used = r->racy = 0;
  r->pending = in->pending_reported;
  if (r->ready || timeout_ns == 0) return 0;
  struct spin_set ss;
  spin_set_take(in, &ss);
  if (ss.n) {
    /* Without the lock: other threads' calls on this set need not wait. */
    struct shm_spin sp = in->spin;
    ep_munlock(&in->lock);
    int won = shm_spin(&sp, any_rx_ready, &ss);
    spin_set_put(&ss);
    ep_mlock(&in->lock);
    if (in->dead) {
      ep_munlock(&in->lock);
      return -1;
    }
    in->spin = sp;
    if (won) {
      r->n = collect(in, evs, rmax, 0);
      r->ready = r->n > 0;
    }
  }
  if (!r->ready) {
    /* Before sleeping, every hot member with nothing to report goes cold. */
    r->n = collect(in, evs, rmax, 1);
    r->ready = r->n > 0;
    r->timed = in->cool_timed;
    r->racy = in->cool_racy;
    if (!r->ready) r->used = in->idle_pending;
  }
  r->pending = in->pending_reported;
  return 0;
}

/* How long the kernel may sleep this round (r->left_ms, r->idle_probe). */
static void sleep_length(int64_t timeout_ns, int64_t deadline, struct ep_round *r) {
  if (r->ready || timeout_ns == 0 || r->racy) r->left_ms = 0;
  else if (timeout_ns < 0) r->left_ms = -1;
  else {
    int64_t l = deadline - now_ns();
    r->left_ms = l <= 0 ? 0 : (int)((l + 999999) / 1000000);
  }
  if (r->timed && (r->left_ms < 0 || r->left_ms > 5)) r->left_ms = 5;
  /* About to sleep for long with rings that carried data: after SHMSHIM_IDLE_MS of
   * nothing, give their memory back, then sleep on. */
  r->idle_probe = r->used && r->left_ms != 0;
  if (r->idle_probe && (r->left_ms < 0 || r->left_ms > (int)shm_cfg.idle_ms)) r->left_ms = (int)shm_cfg.idle_ms;
}

/* The kernel's part: the set's other descriptors, and the sleep (r->k, r->asked).
 * Without the lock. */
static void kernel_part(struct pl_epinst *in, int epfd, struct epoll_event *evs, int max,
                        int64_t deadline, int fine, const sigset_t *mask, struct ep_round *r) {
  int64_t now = now_ns();
  r->asked = 1;
  /* (A pending member reported from its socket: the kernel is asked too, for
   * what its ready list has before it.) */
  if (r->n == max || (r->left_ms == 0 && !r->due && !r->pending &&
                      now - __atomic_load_n(&in->last_kernel, __ATOMIC_RELAXED) < 50000)) {
    /* No room left for the kernel's events (its answer would be EINVAL), or
     * no sleep is due (ring events are ready, or the caller polls) and the
     * kernel was asked about the other fds less than 50 us ago: skip the system
     * call. Level-triggered events stay ready and edge-triggered ones stay
     * queued in the kernel: nothing is lost, at most delayed by 50 us or by
     * KERNEL_EVERY calls. */
    r->k = 0;
    r->asked = 0;
    return;
  }
  if (r->left_ms != 0) shm_spin_sleeping();
  if (fine && r->left_ms != 0) { /* epoll_pwait2: keep its nanoseconds */
    int64_t l = deadline - now_ns();
    if (r->timed && l > 5000000) l = 5000000;
    if (r->idle_probe && l > SHM_IDLE_NS) l = SHM_IDLE_NS;
    struct timespec ts = {l > 0 ? l / 1000000000 : 0, l > 0 ? l % 1000000000 : 0};
    r->k = REAL(epoll_pwait2)(epfd, evs + r->n, max - r->n, &ts, mask);
  } else {
    r->k = REAL(epoll_pwait)(epfd, evs + r->n, max - r->n, r->left_ms, mask);
  }
  __atomic_store_n(&in->last_kernel, now, __ATOMIC_RELAXED);
}

/* The kernel reported, in the call that reported them from the rings already,
 * members' sockets (a pending client's first EPOLLOUT, the mirrored socket
 * of a member not yet in kick mode): one ready-list entry per member and
 * call, as the kernel's, so their new bits join the entry already made instead
 * of a second report at the next call (an edge-triggered member would be
 * reported twice, and a pending one made ready by the same answer one call
 * late). Caller holds the lock. */
static void merge_reported(struct pl_epinst *in) {
  int left = in->nhot;
  for (struct shm_member *m = in->hot_head; m && left > 0; m = m->hot_next, left--) {
    if (m->rep_call != in->cur_token || m->deleted || shm_conn_state(m->c) == SHM_CONN_PLAIN) continue;
    if (!m->kick_mode && shm_conn_tx_on_ring(m->c)) to_kick_mode(m);
    uint32_t ev = member_events(m, 1);
    if (ev) m->rep_at->events |= ev;
  }
}

/* After the kernel answered: re-warm, give idle memory back, take in the kicks
 * it reported and the members they made ready. Caller holds the lock. */
static void after_kernel(struct pl_epinst *in, struct epoll_event *evs, int max, int64_t timeout_ns,
                         struct ep_round *r) {
  int slept = !r->ready && timeout_ns != 0;
  if (slept) rewarm(in);
  in->ring_streak = r->asked ? 0 : in->ring_streak + 1;
  if (r->idle_probe && r->k == 0) release_idle_all(in, (uint64_t)now_ns());
  int at = r->k > 0 ? strip_tag(in, evs + r->n, &r->k) : -1;
  if (at >= 0) {
    process_inner(in);
    /* Was the peer only a little slow? The earliest wake-up tells. */
    if (slept && in->woke_first != UINT64_MAX && in->woke_first > (uint64_t)in->spin.lost_at)
      shm_spin_woke_at(&in->spin, in->woke_first);
    /* Members reported already by this call: never twice (merged); the others
     * made ready by this answer now, as the kernel reports them. */
    if (r->ready) merge_reported(in);
    int got = r->n + r->k < max ? collect(in, evs + r->n + r->k, max - r->n - r->k, 0) : 0;
    /* In the kernel's order: the members where its ready list had the inner set
     * among the set's other descriptors (a listener ready before a client's
     * connect completed comes before the client, as without us; tornado's
     * test_stop_in_callback). From [members][kernel before][kernel after][new
     * members] to [kernel before][members][new members][kernel after]. */
    rotate_events(evs + r->n + at, r->k - at, got);
    rotate_events(evs, r->n, at);
    r->n += got;
  }
}

/* One pl_epoll_wait call. */
struct ep_call {
  int epfd, max, fine; /* fine: the caller is epoll_pwait2 (sleep with nanosecond precision) */
  struct epoll_event *evs;
  int64_t timeout_ns, deadline; /* deadline: 0 without a timeout */
  const sigset_t *mask;
  uint64_t token; /* the call's, from its first round */
  int ret;        /* the call's result, once decided */
};
enum { EP_DONE, EP_AGAIN, EP_DEAD };

/* One round: the rings, then the kernel (asleep if nothing was ready), then what
 * it reported. EP_DONE: the call returns w->ret; EP_AGAIN: another round (a
 * wake-up that brought the application nothing); EP_DEAD: the instance was
 * closed under us (by another thread). */
static int wait_round(struct pl_epinst *in, struct ep_call *w) {
  struct ep_round r;
  ep_mlock(&in->lock);
  if (in->dead) {
    ep_munlock(&in->lock);
    return EP_DEAD;
  }
  if (!w->token) w->token = ++in->tokens;
  in->cur_token = w->token;
  /* Fairness to the set's other descriptors: ring events are reported before
   * the kernel is asked, so with more ready members than maxevents a listener
   * or a timerfd in the same set would never get a turn. Once the kernel has
   * had no room for KERNEL_EVERY answers, this one keeps a slot for it (with
   * maxevents 1, the kernel is asked first). */
  r.due = in->ring_streak >= KERNEL_EVERY;
  if (r.due && w->max == 1) return kernel_first(in, w->epfd, w->evs, w->mask, &w->ret) ? EP_DONE : EP_AGAIN;
  if (ring_part(in, w->evs, r.due ? w->max - 1 : w->max, w->timeout_ns, &r) < 0) return EP_DEAD;
  sleep_length(w->timeout_ns, w->deadline, &r);
  /* Counted while asleep: another thread's epoll_ctl must then arm what it adds
   * (heated_outside), since this call no longer looks at the hot list. */
  if (r.left_ms != 0) in->sleepers++;
  ep_munlock(&in->lock);
  SHM_LOG(DEBUG, "epfd=%d collected=%d sleeping %d ms", w->epfd, r.n, r.left_ms);
  kernel_part(in, w->epfd, w->evs, w->max, w->deadline, w->fine, w->mask, &r);
  int e = errno;
  ep_mlock(&in->lock);
  if (r.left_ms != 0) in->sleepers--;
  in->cur_token = w->token;
  if (!in->dead) after_kernel(in, w->evs, w->max, w->timeout_ns, &r);
  leave_to_sleepers(in, w->epfd);
  ep_munlock(&in->lock);
  if (r.k < 0) {
    errno = e;
    w->ret = r.n > 0 ? r.n : -1;
    return EP_DONE;
  }
  w->ret = r.n + r.k;
  if (w->ret > 0 || (r.left_ms == 0 && !r.timed && !r.racy)) return EP_DONE;
  return w->timeout_ns > 0 && now_ns() >= w->deadline ? EP_DONE : EP_AGAIN; /* (ret 0) */
}

static int pl_epoll_wait(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns,
                         const sigset_t *mask, int fine) {
  if (max <= 0) {
    errno = EINVAL;
    return -1;
  }
  struct ep_call w = {.epfd = epfd, .max = max, .fine = fine && timeout_ns > 0, .evs = evs,
                      .timeout_ns = timeout_ns, .deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0,
                      .mask = mask};
  /* Pinned for the whole call: another thread's close() of epfd leaves it `dead`
   * (no members), and the last call in flight frees it. */
  struct pl_epinst *in = inst_get(epfd);
  int how = EP_DEAD;
  if (in) {
    while ((how = wait_round(in, &w)) == EP_AGAIN) {
    }
    inst_put(in);
  }
  if (how == EP_DONE) return w.ret;
  /* Not ours, or closed under us. */
  return REAL(epoll_pwait)(epfd, evs, max, timeout_ns < 0 ? -1 : (int)(timeout_ns / 1000000), mask);
}

/* The kernel's call, as the application made it: 0 epoll_wait, 1 epoll_pwait,
 * 2 epoll_pwait2. */
enum { W_WAIT, W_PWAIT, W_PWAIT2 };
static int real_wait(int how, int epfd, struct epoll_event *evs, int max, int timeout,
                     const struct timespec *ts, const sigset_t *mask) {
  if (how == W_WAIT) return REAL(epoll_wait)(epfd, evs, max, timeout);
  if (how == W_PWAIT) return REAL(epoll_pwait)(epfd, evs, max, timeout, mask);
  return REAL(epoll_pwait2)(epfd, evs, max, ts, mask);
}

static int64_t timeout_of(int how, int timeout, const struct timespec *ts) {
  if (how == W_PWAIT2) return ts ? (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec : -1;
  return timeout < 0 ? -1 : (int64_t)timeout * 1000000;
}

/* An untracked call's answer when the set got an inner set while the call was in
 * the kernel (another thread added the set's first upgraded member): the inner
 * set's entry carries our tag, never the application's data (MariaDB's thread
 * pool took it for a connection and crashed). It becomes the members' events, as
 * in after_kernel; if nothing is left, the call waits on, through pl_epoll_wait,
 * for what remains of its timeout (a listener waiting forever must not see 0). */
static int late_tracked(int how, int epfd, struct epoll_event *evs, int max, int k, int64_t timeout_ns,
                        int64_t start, const sigset_t *mask) {
  struct pl_epinst *in = inst_get(epfd);
  if (!in) return k;
  int at = -1;
  ep_mlock(&in->lock);
  if (!in->dead && (at = strip_tag(in, evs, &k)) >= 0) {
    process_inner(in);
    in->cur_token = ++in->tokens;
    int got = k < max ? collect(in, evs + k, max - k, 0) : 0;
    rotate_events(evs + at, k - at, got); /* where the kernel had the inner set */
    k += got;
    leave_to_sleepers(in, epfd);
  }
  ep_munlock(&in->lock);
  inst_put(in);
  if (at < 0 || k > 0) return k;
  int64_t left = timeout_ns;
  if (timeout_ns > 0) {
    left = start + timeout_ns - now_ns();
    if (left < 0) left = 0;
  }
  return pl_epoll_wait(epfd, evs, max, left, mask, how == W_PWAIT2);
}

/* A set the shim does not track: the kernel's call. A call that may sleep counts
 * itself in the set's fd slot meanwhile (U1), then looks once more: a set that
 * became tracked since goes through pl_epoll_wait after all; otherwise a member
 * another thread adds while we sleep is armed for us (heated_outside). Every
 * answer is looked at once more (late_tracked): a call without a sleep is not
 * counted, but its answer may hold our tag all the same. The cost for a set that
 * never gets an upgraded member: two atomic operations and a clock read per call
 * that may sleep, one load and one branch after each. */
static int untracked_wait(int how, int epfd, struct epoll_event *evs, int max, int timeout,
                          const struct timespec *ts, const sigset_t *mask) {
  int64_t timeout_ns = timeout_of(how, timeout, ts), start = 0;
  struct shm_fdslot *s = timeout_ns != 0 ? shm_fd_slot(epfd) : NULL;
  if (s) {
    __atomic_add_fetch(&s->epoll_waiters, 1, __ATOMIC_SEQ_CST); /* U1: pairs with U2 */
    if (__atomic_load_n(&s->kind, __ATOMIC_SEQ_CST) != SHM_FD_NONE) {
      __atomic_sub_fetch(&s->epoll_waiters, 1, __ATOMIC_RELEASE);
      return pl_epoll_wait(epfd, evs, max, timeout_ns, mask, how == W_PWAIT2);
    }
    if (timeout_ns > 0) start = now_ns();
  }
  int r = real_wait(how, epfd, evs, max, timeout, ts, mask);
  if (s) __atomic_sub_fetch(&s->epoll_waiters, 1, __ATOMIC_RELEASE);
  if (r > 0 && SHM_UNLIKELY(pl_tracked(epfd))) {
    int e = errno;
    r = late_tracked(how, epfd, evs, max, r, timeout_ns, start, mask);
    if (r >= 0) errno = e;
  }
  return r;
}

SHM_EXPORT int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout) {
  if (SHM_LIKELY(!pl_tracked(epfd))) return untracked_wait(W_WAIT, epfd, evs, max, timeout, NULL, NULL);
  return pl_epoll_wait(epfd, evs, max, timeout_of(W_WAIT, timeout, NULL), NULL, 0);
}

SHM_EXPORT int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *mask) {
  if (SHM_LIKELY(!pl_tracked(epfd))) return untracked_wait(W_PWAIT, epfd, evs, max, timeout, NULL, mask);
  return pl_epoll_wait(epfd, evs, max, timeout_of(W_PWAIT, timeout, NULL), mask, 0);
}

SHM_EXPORT int epoll_pwait2(int epfd, struct epoll_event *evs, int max, const struct timespec *ts,
                            const sigset_t *mask) {
  if (SHM_LIKELY(!pl_tracked(epfd))) return untracked_wait(W_PWAIT2, epfd, evs, max, 0, ts, mask);
  return pl_epoll_wait(epfd, evs, max, timeout_of(W_PWAIT2, 0, ts), mask, 1);
}

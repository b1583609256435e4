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
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "log.h"
#include "preload.h"

struct shm_member {
  struct shm_member *inst_next, *conn_next;
  struct pl_epinst *inst;
  int fd;
  struct shm_conn *c;
  uint32_t events; /* the application's interest and flags */
  epoll_data_t data;
  int disabled;      /* EPOLLONESHOT has fired */
  int deleted;       /* EPOLL_CTL_DEL'd; the inner registration is kept for a re-ADD */
  int armed;         /* the events this epoll_wait armed (undone by disarm_all) */
  int kick_mode;     /* inner registration waits for kicks (upgraded) */
  uint32_t pending_bits;
  int sock_edge;     /* the kernel reported the real socket since the last collect */
  uint32_t last_bits, last_head, last_tail; /* edge detection for EPOLLET */
};

struct pl_epinst {
  struct pl_epinst *next;
  int epfd, inner;
  int refs; /* descriptors of the application that name this instance (dup) */
  struct shm_member *members;
  int nmembers;
  /* Members whose descriptor number was freed behind our back: their socket may
   * live on elsewhere (a copy in another process), and with it their inner
   * registration, which we cannot remove without a descriptor for it. Kept (and
   * ignored when they fire) until the inner set is rebuilt without them. */
  struct shm_member *zombies;
  int nzombies;
  /* Another process may use the same kernel instance (it was created before a
   * fork): its set must not be rebuilt, which would take the old inner set out
   * of the instance the other process still waits on. */
  int shared;
  /* Consecutive epoll_wait calls whose answer left the kernel no room (ring
   * events filled maxevents, or the kernel was not asked): bounds how long the
   * other descriptors of the set can wait behind always-ready rings. */
  unsigned ring_streak;
  struct shm_spin spin; /* adaptive spin before sleeping, as for blocking reads */
  struct shm_member *last_reported; /* round-robin start of the next collect */
  int64_t last_kernel;  /* when the kernel was last asked about the other fds */
};

static pthread_mutex_t ep_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pl_epinst *instances;

/* fork(): from now on both processes hold every existing instance. */
static void mark_shared(void) {
  for (struct pl_epinst *in = instances; in; in = in->next) in->shared = 1;
}
/* fork()'s prepare and parent handlers (preload/process.c): the lock is held
 * across the fork. */
void pl_epoll_fork_lock(int take) {
  if (take) {
    pthread_mutex_lock(&ep_lock);
  } else {
    mark_shared();
    pthread_mutex_unlock(&ep_lock);
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

/* Takes m out of its instance's and its connection's lists. */
static void detach_member(struct shm_member *m) {
  struct shm_member **pp;
  m->inst->nmembers--;
  if (m->inst->last_reported == m) m->inst->last_reported = NULL;
  if (m->armed) shm_conn_disarm(m->c, m->armed);
  for (pp = &m->inst->members; *pp; pp = &(*pp)->inst_next)
    if (*pp == m) {
      *pp = m->inst_next;
      break;
    }
  for (pp = &m->c->members; *pp; pp = &(*pp)->conn_next)
    if (*pp == m) {
      *pp = m->conn_next;
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
  in->refs = 1;
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
  for (struct shm_member *m = in ? in->members : NULL; m; m = m->inst_next)
    if (m->fd == fd) return m;
  return NULL;
}

/* Caller holds ep_lock. The member leaves the inner set for the application's. */
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
}

void pl_epoll_conn_plain(int fd, struct shm_conn *c) {
  if (!c->members) return;
  pthread_mutex_lock(&ep_lock);
  struct shm_member *m = c->members, *next;
  for (; m; m = next) {
    next = m->conn_next;
    if (m->fd == fd) migrate_plain(m);
  }
  pthread_mutex_unlock(&ep_lock);
}

void pl_epoll_conn_upgraded(int fd, struct shm_conn *c) {
  if (!c->members || !shm_conn_tx_on_ring(c)) return;
  pthread_mutex_lock(&ep_lock);
  for (struct shm_member *m = c->members; m; m = m->conn_next) to_kick_mode(m);
  pthread_mutex_unlock(&ep_lock);
}

void pl_epoll_forget_fd(int fd, struct shm_conn *c) {
  if (!c->members) return;
  pthread_mutex_lock(&ep_lock);
  struct shm_member *m = c->members, *next;
  for (; m; m = next) {
    next = m->conn_next;
    if (m->fd == fd) {
      REAL(epoll_ctl)(m->inst->inner, EPOLL_CTL_DEL, fd, NULL);
      unlink_member(m);
    }
  }
  pthread_mutex_unlock(&ep_lock);
}

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
 * holds ep_lock. */
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
  if (!c->members) return;
  pthread_mutex_lock(&ep_lock);
  struct shm_member *m = c->members, *next;
  for (; m; m = next) {
    next = m->conn_next;
    if (m->fd != fd) continue;
    struct pl_epinst *in = m->inst;
    zombify(m);
    /* Rebuilding costs one epoll_ctl per live member: do it when the zombies
     * outnumber them, so that its cost per stale member stays bounded. */
    if (in->nzombies >= 64 && in->nzombies > in->nmembers && !in->shared) rebuild_inner(in);
  }
  pthread_mutex_unlock(&ep_lock);
}

/* Another number of the application's refers to instance in (if it has one). */
static int other_number(struct pl_epinst *in) {
  for (unsigned i = 0; shm_fdtab && i < shm_fdcap && i <= shm_fdhigh; i++)
    if (__atomic_load_n(&shm_fdtab[i].kind, __ATOMIC_ACQUIRE) == SHM_FD_EPOLL && shm_fdtab[i].p == in)
      return (int)i;
  return -1;
}

void pl_epoll_dup(int oldfd, int newfd) {
  pthread_mutex_lock(&ep_lock);
  struct pl_epinst *in = shm_fd_get(oldfd, SHM_FD_EPOLL);
  if (in && shm_fd_set(newfd, SHM_FD_EPOLL, in) == 0) in->refs++;
  else if (in) SHM_LOG(WARN, "epoll fd=%d: copy fd=%d beyond the fd table: it sees our inner set", oldfd, newfd);
  pthread_mutex_unlock(&ep_lock);
}

void pl_epoll_instance_unref(int epfd, void *p) {
  struct pl_epinst *in = p;
  if (!in) return;
  pthread_mutex_lock(&ep_lock);
  if (--in->refs > 0) {
    /* The kernel's instance lives on in the other copies: so does ours. */
    if (in->epfd == epfd) {
      int o = other_number(in);
      if (o >= 0) in->epfd = o;
    }
    pthread_mutex_unlock(&ep_lock);
    return;
  }
  while (in->members) unlink_member(in->members);
  free_zombies(in);
  for (struct pl_epinst **pp = &instances; *pp; pp = &(*pp)->next)
    if (*pp == in) {
      *pp = in->next;
      break;
    }
  shm_fd_set(in->inner, SHM_FD_NONE, NULL);
  REAL(close)(in->inner);
  pthread_mutex_unlock(&ep_lock);
  free(in);
}

void pl_epoll_atfork_child(void) {
  pthread_mutex_init(&ep_lock, NULL);
  mark_shared();
  /* Arms of a parent thread asleep in epoll_wait are not the child's to undo. */
  for (struct pl_epinst *in = instances; in; in = in->next)
    for (struct shm_member *m = in->members; m; m = m->inst_next) m->armed = 0;
}

void pl_epoll_renumber_inner(int from, int to) {
  pthread_mutex_lock(&ep_lock);
  for (struct pl_epinst *in = instances; in; in = in->next)
    if (in->inner == from) in->inner = to;
  pthread_mutex_unlock(&ep_lock);
}

SHM_EXPORT int epoll_create(int size) {
  int r = REAL(epoll_create)(size);
  if (r >= 0) pl_new_fd(r);
  return r;
}

SHM_EXPORT int epoll_create1(int flags) {
  int r = REAL(epoll_create1)(flags);
  if (r >= 0) pl_new_fd(r);
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

static int ctl_conn(int epfd, int op, int fd, struct epoll_event *ev, struct shm_conn *c) {
  if (epfd == fd) {
    errno = EINVAL;
    return -1;
  }
  if (op != EPOLL_CTL_DEL && !ev) {
    errno = EFAULT;
    return -1;
  }
  pthread_mutex_lock(&ep_lock);
  int rc = -1;
  struct pl_epinst *in = instance(epfd, op == EPOLL_CTL_ADD);
  struct shm_member *m = find(in, fd);
  if (!in && op == EPOLL_CTL_ADD) goto out; /* errno from instance() */
  switch (op) {
    case EPOLL_CTL_ADD:
      if (m && m->deleted && m->c == c) { /* revive: no system call */
        m->deleted = 0;
        rc = set_interest(m, ev);
        break;
      }
      if (m && m->deleted) { /* the number now names another connection */
        REAL(epoll_ctl)(in->inner, EPOLL_CTL_DEL, fd, NULL);
        unlink_member(m);
        m = NULL;
      }
      if (m) {
        errno = EEXIST;
        break;
      }
      if (shm_fd_get(fd, SHM_FD_CONN) != c) {
        /* Closed by another thread since we looked: its teardown (which takes
         * ep_lock after clearing the slot) would never see this member. */
        errno = EBADF;
        break;
      }
      m = calloc(1, sizeof *m);
      if (!m) {
        errno = ENOMEM;
        break;
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
        break;
      }
      /* At the end: members ready together are reported in the order they were
       * added, as the kernel's ready list does. */
      struct shm_member **tail = &in->members;
      while (*tail) tail = &(*tail)->inst_next;
      m->inst_next = NULL;
      *tail = m;
      in->nmembers++;
      m->conn_next = c->members;
      c->members = m;
      rc = 0;
      break;
    case EPOLL_CTL_MOD:
      if (!m || m->deleted) {
        errno = ENOENT;
        break;
      }
      if ((m->events & EPOLLEXCLUSIVE) || (ev->events & EPOLLEXCLUSIVE)) {
        errno = EINVAL; /* as the kernel: exclusive entries cannot be modified */
        break;
      }
      rc = set_interest(m, ev);
      break;
    case EPOLL_CTL_DEL:
      if (!m || m->deleted) {
        errno = ENOENT;
        break;
      }
      if (m->kick_mode) {
        /* Event loops delete and re-add a socket whenever its interest becomes
         * empty (redis does, per request): keep the inner registration. */
        m->deleted = 1;
        rc = 0;
        break;
      }
      REAL(epoll_ctl)(in->inner, EPOLL_CTL_DEL, fd, NULL);
      unlink_member(m);
      rc = 0;
      break;
    default:
      errno = EINVAL;
  }
out:
  pthread_mutex_unlock(&ep_lock);
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

/* Kicks arrived on some members' sockets: consume them, settle pending clients.
 * Caller holds ep_lock. */
static void process_inner(struct pl_epinst *in) {
  struct epoll_event tmp[128];
  int n = REAL(epoll_wait)(in->inner, tmp, 128, 0);
  for (int i = 0; i < n; i++) {
    struct shm_member *m = tmp[i].data.ptr;
    struct shm_conn *c = m->c;
    if (!c) continue; /* a zombie's socket, alive in another process */
    m->sock_edge = 1;
    if (shm_conn_state(c) == SHM_CONN_PENDING) {
      m->pending_bits |= tmp[i].events;
      int st = shm_conn_resolve(m->fd, c, 0);
      if (st == SHM_CONN_UPGRADED && shm_conn_tx_on_ring(c)) {
        for (struct shm_member *x = c->members; x; x = x->conn_next) to_kick_mode(x);
      }
      /* A connection found plain is moved out at collect time. */
    } else if (shm_conn_state(c) == SHM_CONN_UPGRADED) {
      shm_conn_drain_for(m->fd, c, m->events & EPOLLIN);
    }
  }
}

/* Ring readiness of the members, as epoll events. Caller holds ep_lock. */
/* Where the next collect starts: after the last member it reported, so that with
 * more ready members than maxevents every one gets its turn (the kernel's ready
 * list is round-robin too). NULL: the list head. */
static struct shm_member *resume_after(struct pl_epinst *in) {
  for (struct shm_member *m = in->members; m; m = m->inst_next)
    if (m == in->last_reported) return m->inst_next;
  return NULL;
}

static int collect(struct pl_epinst *in, struct epoll_event *out, int max) {
  int n = 0, left = 0;
  for (struct shm_member *x = in->members; x; x = x->inst_next) left++;
  struct shm_member *m = resume_after(in), *next;
  if (!m) m = in->members;
  /* Each member once, starting anywhere and wrapping at the end; counting steps
   * (not looking for the start again) stays right when a member leaves meanwhile. */
  for (; m && n < max && left > 0; m = next, left--) {
    next = m->inst_next ? m->inst_next : in->members;
    struct shm_conn *c = m->c;
    if (shm_conn_state(c) == SHM_CONN_PLAIN) {
      int fd = m->fd;
      migrate_plain(m);
      /* The fd's own entry goes when the application next uses it. */
      (void)fd;
      continue;
    }
    if (!m->kick_mode && shm_conn_tx_on_ring(c)) to_kick_mode(m); /* upgraded, or switched, by a write */
    if (m->disabled || m->deleted) continue;
    uint32_t ev;
    if (shm_conn_state(c) == SHM_CONN_PENDING && !(m->events & EPOLLET)) {
      /* Level-triggered: the socket's own readiness, now (the kernel's answer for
       * the inner set may come only after this collect). */
      struct pollfd p = {m->fd, (short)(m->events & (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI)), 0};
      ev = REAL(poll)(&p, 1, 0) > 0 ? (uint32_t)p.revents & (m->events | EPOLLERR | EPOLLHUP) : 0;
      m->pending_bits = 0;
    } else if (shm_conn_state(c) == SHM_CONN_PENDING) {
      ev = m->pending_bits & (m->events | EPOLLERR | EPOLLHUP);
      m->pending_bits = 0;
    } else {
      ev = (uint32_t)shm_conn_poll_bits(m->fd, c) & (m->events | EPOLLERR | EPOLLHUP) & ~FLAG_BITS;
      if (m->events & EPOLLET) {
        uint32_t head = __atomic_load_n(&c->rx.ctl->head, __ATOMIC_RELAXED);
        uint32_t tail = __atomic_load_n(&c->tx.ctl->tail, __ATOMIC_RELAXED);
        /* As the kernel does: new data is an edge for EPOLLIN, and room freed by
         * the reader an edge for EPOLLOUT. Without the latter, a writer that got
         * EAGAIN on a full ring, whose reader drained it before our next collect,
         * finds EPOLLOUT in the last reported bits already and is never told. */
        /* Before a switch-over the socket itself carries data (the peer's plain
         * bytes) or room (our plain writes): a new kernel edge on it is an edge
         * for the application too, though no ring index moved. */
        int sock_edge = m->sock_edge && (shm_conn_sock_is_data(c) || !shm_conn_tx_on_ring(c));
        m->sock_edge = 0;
        int edge = sock_edge || (ev & ~m->last_bits) || ((ev & EPOLLIN) && head != m->last_head) ||
                   ((ev & EPOLLOUT) && tail != m->last_tail);
        m->last_bits = ev;
        m->last_head = head;
        m->last_tail = tail;
        if (!edge) ev = 0;
      }
    }
    if (!ev) continue;
    out[n].events = ev;
    out[n].data = m->data;
    n++;
    in->last_reported = m;
    if (m->events & EPOLLONESHOT) m->disabled = 1;
  }
  return n;
}

/* For the spin before sleeping: has a member's ring got data for a reader?
 * Runs under ep_lock (the caller spins holding it: issue "Never slower than
 * plain" asks for that lock not to be held across a spin). */
static int any_rx_ready(void *arg) {
  struct pl_epinst *in = arg;
  for (struct shm_member *m = in->members; m; m = m->inst_next)
    if (!m->disabled && !m->deleted && (m->events & EPOLLIN) && shm_conn_rx_ready(m->c)) {
      SHM_STAT_ADD(m->c->st, spins_won, 1); /* stats: ends the spin (or finds it ready at once) */
      return 1;
    }
  return 0;
}

/* Arms the upgraded members for a sleep. Returns 1 if one was found ready, | 2 if
 * one needs a bounded sleep, | 4 if a ring carried enough since its last release
 * to be worth releasing when idle. Caller holds ep_lock. */
static int arm_all(struct pl_epinst *in) {
  int ready = 0;
  for (struct shm_member *m = in->members; m; m = m->inst_next) {
    if (m->deleted) continue;
    if (shm_conn_tx_used(m->c)) ready |= 4; /* idle memory (shm_conn_release_idle) */
    if (m->disabled || shm_conn_state(m->c) != SHM_CONN_UPGRADED) continue;
    int want = (int)(m->events & (EPOLLIN | EPOLLOUT));
    int bits = shm_conn_arm(m->fd, m->c, want, &m->armed);
    if (bits & (int)(m->events | EPOLLERR | EPOLLHUP)) ready |= 1;
    if (shm_conn_needs_timed_wait(m->c, want)) {
      if (m->c->sock_eof) shm_conn_probe(m->fd, m->c); /* a dead peer: EPOLLERR|EPOLLHUP */
      ready |= 2;
    }
  }
  return ready;
}

static void disarm_all(struct pl_epinst *in) {
  for (struct shm_member *m = in->members; m; m = m->inst_next)
    if (m->armed) {
      shm_conn_disarm(m->c, m->armed);
      m->armed = 0;
    }
}

/* Removes our tag from the kernel's answer; 1 if it was there. */
static int strip_tag(struct pl_epinst *in, struct epoll_event *ev, int *n) {
  int seen = 0;
  for (int i = 0; i < *n; i++)
    if (ev[i].data.u64 == tag_of(in)) {
      ev[i] = ev[*n - 1];
      (*n)--;
      i--;
      seen = 1;
    }
  return seen;
}

static int64_t in_last_kernel(int epfd) {
  struct pl_epinst *in = shm_fd_get(epfd, SHM_FD_EPOLL);
  return in ? __atomic_load_n(&in->last_kernel, __ATOMIC_RELAXED) : 0;
}

static void in_set_kernel(int epfd, int64_t t) {
  struct pl_epinst *in = shm_fd_get(epfd, SHM_FD_EPOLL);
  if (in) __atomic_store_n(&in->last_kernel, t, __ATOMIC_RELAXED);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Idle memory (shm_conn_release_idle). Caller holds ep_lock. */
static void release_idle_all(struct pl_epinst *in, uint64_t now) {
  for (struct shm_member *m = in->members; m; m = m->inst_next)
    if (!m->deleted) shm_conn_release_idle(m->c, now);
}

/* After this many answers in a row that left the kernel no room, the next one
 * makes room for it (see ring_streak). */
#define KERNEL_EVERY 8

/* fine: the caller is epoll_pwait2 (sleep with nanosecond precision). */
static int pl_epoll_wait(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns,
                         const sigset_t *mask, int fine) {
  int64_t left_ns_fine = fine && timeout_ns > 0 ? timeout_ns : -1;
  if (max <= 0) {
    errno = EINVAL;
    return -1;
  }
  int64_t deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
  for (;;) {
    pthread_mutex_lock(&ep_lock);
    struct pl_epinst *in = shm_fd_get(epfd, SHM_FD_EPOLL);
    if (!in) {
      pthread_mutex_unlock(&ep_lock);
      break;
    }
    /* Fairness to the set's other descriptors: ring events are reported before
     * the kernel is asked, so with more ready members than maxevents a listener
     * or a timerfd in the same set would never get a turn. Once the kernel has
     * had no room for KERNEL_EVERY answers, this one keeps a slot for it (with
     * maxevents 1, the kernel is asked first). */
    int due = in->ring_streak >= KERNEL_EVERY;
    if (due && max == 1) {
      in->ring_streak = 0;
      pthread_mutex_unlock(&ep_lock);
      int k = REAL(epoll_pwait)(epfd, evs, 1, 0, mask);
      if (k > 0) {
        pthread_mutex_lock(&ep_lock);
        in = shm_fd_get(epfd, SHM_FD_EPOLL);
        if (in && strip_tag(in, evs, &k)) process_inner(in);
        pthread_mutex_unlock(&ep_lock);
      }
      if (k != 0) return k;
      continue;
    }
    int rmax = due ? max - 1 : max;
    int n = collect(in, evs, rmax);
    int ready = n > 0, timed = 0, used = 0;
    if (!ready && timeout_ns != 0 && shm_spin(&in->spin, any_rx_ready, in)) {
      /* A peer answered within the spin budget: no kick, no sleep. */
      n = collect(in, evs, rmax);
      ready = n > 0;
    }
    if (!ready && timeout_ns != 0) { /* arming is for sleeping: a poll does not sleep */
      int a = arm_all(in);
      timed = a & 2;
      /* Something became ready between the first look and the arming. For an
       * edge-triggered member that may be no new edge: then sleep, armed. */
      if ((a & 1) && (n = collect(in, evs, rmax)) > 0) {
        disarm_all(in);
        ready = 1;
      }
      if (!ready) used = a & 4;
    }
    pthread_mutex_unlock(&ep_lock);
    int left_ms;
    if (ready || timeout_ns == 0) left_ms = 0;
    else if (timeout_ns < 0) left_ms = -1;
    else {
      int64_t l = deadline - now_ns();
      left_ms = l <= 0 ? 0 : (int)((l + 999999) / 1000000);
    }
    if (timed && (left_ms < 0 || left_ms > 5)) left_ms = 5;
    /* About to sleep for long with rings that carried data: after SHMSHIM_IDLE_MS of
     * nothing, give their memory back, then sleep on. */
    int idle_probe = used && left_ms != 0;
    if (idle_probe && (left_ms < 0 || left_ms > (int)shm_cfg.idle_ms)) left_ms = (int)shm_cfg.idle_ms;
    /* Safety net for a lost wake-up (a rare one under edge-triggered use is still
     * open, docs/design.md): while members are armed, never sleep more than 200 ms
     * at a time; ring events found after such a wake-up are counted and logged. */
    int capped = 0;
    if (!ready && timeout_ns != 0 && (left_ms < 0 || left_ms > 200)) {
      left_ms = 200;
      capped = 1;
    }
    SHM_LOG(DEBUG, "epfd=%d collected=%d sleeping %d ms", epfd, n, left_ms);
    int k, asked = 1;
    int64_t now = now_ns();
    if (n == max || (left_ms == 0 && !due && now - in_last_kernel(epfd) < 50000)) {
      /* No room left for the kernel's events (its answer would be EINVAL), or
       * no sleep is due (ring events are ready, or the caller polls) and the
       * kernel was asked about the other fds less than 50 us ago: skip the system
       * call. Level-triggered events stay ready and edge-triggered ones stay
       * queued in the kernel: nothing is lost, at most delayed by 50 us or by
       * KERNEL_EVERY calls. */
      k = 0;
      asked = 0;
    } else if (left_ns_fine >= 0 && left_ms != 0) { /* epoll_pwait2: keep its nanoseconds */
      int64_t l = deadline - now_ns();
      if (timed && l > 5000000) l = 5000000;
      if (idle_probe && l > SHM_IDLE_NS) l = SHM_IDLE_NS;
      struct timespec ts = {l > 0 ? l / 1000000000 : 0, l > 0 ? l % 1000000000 : 0};
      k = REAL(epoll_pwait2)(epfd, evs + n, max - n, &ts, mask);
    } else {
      k = REAL(epoll_pwait)(epfd, evs + n, max - n, left_ms, mask);
    }
    if (asked) in_set_kernel(epfd, now);
    int e = errno;
    pthread_mutex_lock(&ep_lock);
    in = shm_fd_get(epfd, SHM_FD_EPOLL);
    if (in) {
      in->ring_streak = asked ? 0 : in->ring_streak + 1;
      if (idle_probe && k == 0) release_idle_all(in, (uint64_t)now_ns());
      if (!ready && timeout_ns != 0) {
        disarm_all(in);
        if (k > 0) { /* was the peer only a little slow? the earliest wake-up tells */
          uint64_t first = UINT64_MAX;
          for (struct shm_member *m = in->members; m; m = m->inst_next) {
            uint64_t t = m->deleted ? 0 : shm_conn_rx_woke_ns(m->c);
            if (t > (uint64_t)in->spin.lost_at && t < first) first = t;
          }
          shm_spin_woke_at(&in->spin, first);
        }
      }
      if (k > 0 && strip_tag(in, evs + n, &k)) {
        process_inner(in);
        /* Members were collected already when `ready`: never report one twice. */
        if (!ready && n + k < max) n += collect(in, evs + n + k, max - n - k);
      } else if (capped && k == 0) {
        n = collect(in, evs, max);
        if (n > 0) {
          __atomic_add_fetch(&shm_stats.wakeups_recovered, 1, __ATOMIC_RELAXED);
          SHM_LOG(INFO, "epfd=%d: ring events %#x found without a wake-up (recovered)", epfd,
                  (unsigned)evs[0].events);
        }
      }
    }
    pthread_mutex_unlock(&ep_lock);
    if (k < 0) {
      if (n > 0) return n;
      errno = e;
      return -1;
    }
    if (n + k > 0 || (left_ms == 0 && !timed)) return n + k;
    if (timeout_ns > 0 && now_ns() >= deadline) return 0;
    /* Woken by a kick that carried nothing new for the application: sleep again. */
  }
  /* The instance vanished under us (closed by another thread). */
  return REAL(epoll_pwait)(epfd, evs, max, timeout_ns < 0 ? -1 : (int)(timeout_ns / 1000000), mask);
}

SHM_EXPORT int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout) {
  if (SHM_LIKELY(!pl_tracked(epfd))) return REAL(epoll_wait)(epfd, evs, max, timeout);
  return pl_epoll_wait(epfd, evs, max, timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL, 0);
}

SHM_EXPORT int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout, const sigset_t *mask) {
  if (SHM_LIKELY(!pl_tracked(epfd))) return REAL(epoll_pwait)(epfd, evs, max, timeout, mask);
  return pl_epoll_wait(epfd, evs, max, timeout < 0 ? -1 : (int64_t)timeout * 1000000, mask, 0);
}

SHM_EXPORT int epoll_pwait2(int epfd, struct epoll_event *evs, int max, const struct timespec *ts,
                            const sigset_t *mask) {
  if (SHM_LIKELY(!pl_tracked(epfd))) return REAL(epoll_pwait2)(epfd, evs, max, ts, mask);
  return pl_epoll_wait(epfd, evs, max, ts ? (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec : -1, mask, 1);
}

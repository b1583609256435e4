/* socket, socketpair, connect, accept, accept4: where connections become ours. */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "real.h"
#include "log.h"
#include "preload.h"

void pl_track(int fd, struct shm_conn *c) {
  shm_lock(&shm_fdtab_lock);
  int rc = shm_fd_set_locked(fd, SHM_FD_CONN, c);
  shm_unlock(&shm_fdtab_lock);
  if (rc < 0) {
    SHM_LOG(WARN, "fd=%d beyond the fd table: left plain", fd);
    shm_conn_unref(fd, c);
  }
}

struct shm_conn *pl_conn_any(int fd) {
  struct shm_fdslot *s = shm_fd_slot(fd);
  if (!s || __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) != SHM_FD_CONN) return NULL;
  struct shm_conn *c = __atomic_load_n((struct shm_conn **)&s->p, __ATOMIC_ACQUIRE);
  if (!c) return NULL;
  shm_conn_busy(c);
  /* Pairs with the close path: slot cleared, then `busy` read (shm_conn_unref).
   * Either it sees our hold, or we see the slot change and let go. */
  if (__atomic_load_n(&s->kind, __ATOMIC_SEQ_CST) != SHM_FD_CONN ||
      __atomic_load_n((struct shm_conn **)&s->p, __ATOMIC_SEQ_CST) != c) {
    shm_conn_put(c);
    return NULL;
  }
  return c;
}

/* A connection found plain keeps its (now inert) record until close(): another
 * thread may be using it this very moment. Calls on it cost two loads more. */
static struct shm_conn *settle(int fd, struct shm_conn *c, int st) {
  if (st == SHM_CONN_BROKEN) {
    shm_conn_put(c);
    errno = ECONNRESET;
    return NULL;
  }
  if (st == SHM_CONN_PLAIN) {
    pl_epoll_conn_plain(fd, c);
    shm_conn_put(c);
    errno = 0;
    return NULL;
  }
  if (st == SHM_CONN_UPGRADED) pl_epoll_conn_upgraded(fd, c);
  return c;
}

/* The connection behind fd; NULL with errno EBADF for our hidden fds, NULL with
 * errno 0 for anything that is libc's. */
static struct shm_conn *lookup(int fd) {
  int kind = shm_fd_kind(fd);
  if (kind == SHM_FD_INTERNAL) {
    errno = EBADF;
    return NULL;
  }
  errno = 0;
  return kind == SHM_FD_CONN ? pl_conn_any(fd) : NULL;
}

struct shm_conn *pl_conn_read(int fd, int flags) {
  struct shm_conn *c = lookup(fd);
  if (!c) return NULL;
  int st = shm_conn_state(c);
  if (SHM_LIKELY(st == SHM_CONN_UPGRADED)) return c;
  if (st == SHM_CONN_PENDING) {
    int wait = !(flags & MSG_DONTWAIT) && c->role == SHM_CLIENT;
    if (wait) {
      int fl = REAL(fcntl)(fd, F_GETFL);
      wait = fl >= 0 && !(fl & O_NONBLOCK);
    }
    st = shm_conn_resolve(fd, c, wait);
    if (st < 0 || st == SHM_CONN_PENDING) {
      int e = st < 0 ? errno : EAGAIN; /* EINTR, or EAGAIN */
      shm_conn_put(c);
      errno = e;
      return NULL;
    }
  }
  return settle(fd, c, st);
}

struct shm_conn *pl_conn_write(int fd) {
  struct shm_conn *c = lookup(fd);
  if (!c) return NULL;
  int st = shm_conn_state(c);
  if (st == SHM_CONN_PLAIN || st == SHM_CONN_BROKEN) return settle(fd, c, st);
  return c; /* pending clients write plainly inside shm_conn_send */
}

static int pl_socket(int domain, int type, int protocol) {
  int fd = PL_EMFILE_RETRY(REAL(socket)(domain, type, protocol));
  if (fd >= 0 && SHM_UNLIKELY(shm_fdtab_get() != NULL)) {
    pl_new_fd(fd);
    struct shm_fdslot *s = shm_fd_slot(fd);
    if (s) s->epoll_pre = 0;
  }
  return fd;
}
SHM_EXPORT int socket(int domain, int type, int protocol) { return pl_socket(domain, type, protocol); }

static int pl_socketpair(int d, int t, int p, int sv[2]) {
  int r = PL_EMFILE_RETRY(REAL(socketpair)(d, t, p, sv));
  if (r == 0 && SHM_UNLIKELY(shm_fdtab_get() != NULL)) {
    pl_new_fd(sv[0]);
    pl_new_fd(sv[1]);
  }
  return r;
}
SHM_EXPORT int socketpair(int d, int t, int p, int sv[2]) { return pl_socketpair(d, t, p, sv); }

/* Registrations made before connect().
 *
 * An application may add a socket to its epoll set before connecting it (nginx does
 * this for every upstream connection). The kernel then holds the registration, and
 * an upgraded connection's readiness, which lives in its rings, would never reach
 * the application: a writer waiting for EPOLLOUT after filling the ring would wait
 * forever. So epoll_ctl notes on which set an untracked fd was added, and connect()
 * takes such a registration over: it reads the events and data the kernel holds
 * (/proc/self/fdinfo of the epoll fd), removes the kernel's entry and adds the
 * connection through our epoll_ctl, as if the application had added it after
 * connecting. If that cannot be done (several sets, fdinfo unreadable), the
 * connection is not offered for upgrade at all: it stays plain, and says so. */
void pl_note_epoll_add(int epfd, int fd) {
  if (shm_cfg.disable || shm_fdtab_ensure() < 0) return;
  struct shm_fdslot *s = shm_fd_slot(fd);
  if (!s || s->kind != SHM_FD_NONE) return;
  s->epoll_pre = (s->epoll_pre == 0 || s->epoll_pre == epfd + 1) ? epfd + 1 : -1;
}

/* Parses one fdinfo line "tfd: N events: X data: Y  pos:P ino:I ...". */
static int parse_tfd(const char *l, int fd, unsigned long ino, struct epoll_event *ev) {
  int tfd;
  unsigned events;
  unsigned long long data;
  unsigned long lino;
  long long pos;
  if (sscanf(l, "tfd: %d events: %x data: %llx pos:%lld ino:%lx", &tfd, &events, &data, &pos, &lino) != 5)
    return 0;
  if (tfd != fd || lino != ino) return 0;
  ev->events = events;
  ev->data.u64 = data;
  return 1;
}

/* The registration of fd (inode ino) in epoll set epfd. 1: found; 0: none; -1:
 * cannot tell. */
static int epoll_registration(int epfd, int fd, unsigned long ino, struct epoll_event *ev) {
  char path[48], buf[4096];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
  int f = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return -1;
  size_t have = 0;
  int found = 0;
  for (;;) {
    long n = syscall(SYS_read, f, buf + have, sizeof buf - 1 - have);
    if (n < 0) {
      found = -1;
      break;
    }
    have += (size_t)n;
    buf[have] = 0;
    char *l = buf, *nl;
    while ((nl = strchr(l, '\n'))) {
      *nl = 0;
      if (parse_tfd(l, fd, ino, ev)) found = 1;
      l = nl + 1;
    }
    if (found || n == 0) break;
    have = strlen(l); /* a partial line: keep it for the next read */
    if (have == sizeof buf - 1) have = 0;
    memmove(buf, l, have);
  }
  shm_sys_close(f);
  return found;
}

static int pl_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  int kind = shm_fd_kind(fd);
  if (kind == SHM_FD_INTERNAL) return pl_ebadf();
  if (kind == SHM_FD_CONN || shm_cfg.disable || !addr) return REAL(connect)(fd, addr, len);
  struct shm_conn *c = shm_conn_client_prepare(fd, addr, len);
  struct shm_fdslot *s = shm_fd_slot(fd);
  int epfd = s ? s->epoll_pre - 1 : -1, pre = 0;
  struct epoll_event ev;
  if (c && s && s->epoll_pre) {
    struct stat st;
    pre = epfd < 0 || syscall(SYS_fstat, fd, &st) < 0 ? -1 : epoll_registration(epfd, fd, st.st_ino, &ev);
    if (pre < 0) {
      shm_conn_unref(-1, c); /* no endpoint: the server will leave it plain */
      c = NULL;
      SHM_COUNT(plain_client);
      SHM_LOG(INFO, "plain fd=%d role=client: added to %s before connect()", fd,
              epfd < 0 ? "several epoll sets" : "an epoll set that cannot be read");
    }
  }
  int r = REAL(connect)(fd, addr, len);
  int e = errno;
  if (c) {
    if (r == 0 || e == EINPROGRESS || e == EINTR) {
      pl_track(fd, c);
      if (pre == 1 && shm_fd_kind(fd) == SHM_FD_CONN) {
        REAL(epoll_ctl)(epfd, EPOLL_CTL_DEL, fd, NULL);
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
          /* Only ENOMEM gets here. Without translated readiness the connection
           * could hang: fail it instead, visibly. */
          SHM_LOG(WARN, "fd=%d: cannot take over its epoll registration (%s): connection reset", fd,
                  strerror(errno));
          REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, fd, &ev);
          syscall(SYS_shutdown, fd, SHUT_RDWR);
        }
      }
    } else {
      shm_conn_unref(-1, c);
    }
  }
  if (r == 0 || e == EINPROGRESS || e == EINTR) shm_conn_client_connected(fd, c, addr, len); /* stats */
  errno = e;
  return r;
}
SHM_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  return pl_connect(fd, addr, len);
}

static int pl_accept4(int lfd, struct sockaddr *addr, socklen_t *len, int flags) {
  if (shm_fd_kind(lfd) == SHM_FD_INTERNAL) return pl_ebadf();
  int fd = PL_EMFILE_RETRY(REAL(accept4)(lfd, addr, len, flags));
  if (fd < 0) return fd;
  int e = errno;
  pl_new_fd(fd);
  if (!shm_cfg.disable) {
    /* Only noted: the offer waits for this process's first use of the connection. */
    struct shm_conn *c = shm_conn_server_candidate(fd);
    if (c) pl_track(fd, c);
  }
  errno = e;
  return fd;
}
SHM_EXPORT int accept4(int lfd, struct sockaddr *addr, socklen_t *len, int flags) {
  return pl_accept4(lfd, addr, len, flags);
}
SHM_EXPORT int accept(int lfd, struct sockaddr *addr, socklen_t *len) {
  return pl_accept4(lfd, addr, len, 0);
}

/* socket, socketpair, connect, accept, accept4: where connections become ours. */
#include <sys/socket.h>

#include "log.h"
#include "preload.h"

void pl_track(int fd, struct shm_conn *c) {
  pthread_mutex_lock(&shm_fdtab_lock);
  int rc = shm_fd_set_locked(fd, SHM_FD_CONN, c);
  pthread_mutex_unlock(&shm_fdtab_lock);
  if (rc < 0) {
    SHM_LOG(WARN, "fd=%d beyond the fd table: left plain", fd);
    shm_conn_unref(fd, c);
  }
}

void pl_untrack(int fd) {
  struct shm_conn *c = NULL;
  pthread_mutex_lock(&shm_fdtab_lock);
  struct shm_fdslot *s = shm_fd_slot(fd);
  if (s && s->kind == SHM_FD_CONN) c = s->p;
  if (s && s->kind != SHM_FD_NONE) shm_fd_set_locked(fd, SHM_FD_NONE, NULL);
  pthread_mutex_unlock(&shm_fdtab_lock);
  if (c) {
    pl_epoll_forget_fd(fd, c);
    shm_conn_unref(fd, c);
  }
}

struct shm_conn *pl_conn_any(int fd) { return shm_fd_get(fd, SHM_FD_CONN); }

/* A connection found plain keeps its (now inert) record until close(): another
 * thread may be using it this very moment. Calls on it cost two loads more. */
static struct shm_conn *settle(int fd, struct shm_conn *c, int st) {
  if (st == SHM_CONN_BROKEN) {
    errno = ECONNRESET;
    return NULL;
  }
  if (st == SHM_CONN_PLAIN) {
    pl_epoll_conn_plain(fd, c);
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
  return kind == SHM_FD_CONN ? shm_fd_get(fd, SHM_FD_CONN) : NULL;
}

struct shm_conn *pl_conn_read(int fd, int flags) {
  struct shm_conn *c = lookup(fd);
  if (!c) return NULL;
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (SHM_LIKELY(st == SHM_CONN_UPGRADED)) return c;
  if (st == SHM_CONN_PENDING) {
    int wait = !(flags & MSG_DONTWAIT);
    if (wait) {
      int fl = REAL(fcntl)(fd, F_GETFL);
      wait = fl >= 0 && !(fl & O_NONBLOCK);
    }
    st = shm_conn_resolve(fd, c, wait);
    if (st < 0) return NULL; /* errno: EINTR or EAGAIN */
    if (st == SHM_CONN_PENDING) {
      errno = EAGAIN;
      return NULL;
    }
  }
  return settle(fd, c, st);
}

struct shm_conn *pl_conn_write(int fd) {
  struct shm_conn *c = lookup(fd);
  if (!c) return NULL;
  int st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (st == SHM_CONN_PLAIN || st == SHM_CONN_BROKEN) return settle(fd, c, st);
  return c; /* pending clients write plainly inside shm_conn_send */
}

static int pl_socket(int domain, int type, int protocol) {
  int fd = REAL(socket)(domain, type, protocol);
  if (fd >= 0 && SHM_UNLIKELY(shm_fdtab != NULL)) pl_untrack(fd);
  return fd;
}
SHM_EXPORT int socket(int domain, int type, int protocol) { return pl_socket(domain, type, protocol); }

static int pl_socketpair(int d, int t, int p, int sv[2]) {
  int r = REAL(socketpair)(d, t, p, sv);
  if (r == 0 && SHM_UNLIKELY(shm_fdtab != NULL)) {
    pl_untrack(sv[0]);
    pl_untrack(sv[1]);
  }
  return r;
}
SHM_EXPORT int socketpair(int d, int t, int p, int sv[2]) { return pl_socketpair(d, t, p, sv); }

static int pl_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  int kind = shm_fd_kind(fd);
  if (kind == SHM_FD_INTERNAL) return pl_ebadf();
  if (kind == SHM_FD_CONN || shm_cfg.disable || !addr) return REAL(connect)(fd, addr, len);
  struct shm_conn *c = shm_conn_client_prepare(fd, addr, len);
  int r = REAL(connect)(fd, addr, len);
  int e = errno;
  if (c) {
    if (r == 0 || e == EINPROGRESS || e == EINTR) pl_track(fd, c);
    else shm_conn_unref(-1, c);
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
  int fd = REAL(accept4)(lfd, addr, len, flags);
  if (fd < 0) return fd;
  int e = errno;
  if (shm_fdtab) pl_untrack(fd);
  if (!shm_cfg.disable) {
    struct shm_conn *c = shm_conn_server_offer(fd);
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

/* close, dup family, fcntl, ioctl, shutdown: keeping the fd table true to the
 * kernel's descriptor table, and hiding our own descriptors. */
#include <fcntl.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "preload.h"

/* Is fd still the socket connection c was made for? A raw close() system call
 * (libuv's), close_range() or stdio's fclose() frees the number without telling us,
 * and the kernel may have given it to anything since. One fstat(), paid only when a
 * tracked connection is torn down, which costs several system calls anyway. */
static int same_socket(int fd, struct shm_conn *c) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) < 0) return 0;
  return S_ISSOCK(st.st_mode) && (!c->ino || (uint32_t)st.st_ino == c->ino);
}

/* pl_forget in a copy of a counted process that the library never counted: the
 * record goes from our copy of the table, and our copy of the connection with
 * it, without a system call on anything shared. (An epoll instance's copy is
 * left as it is.) */
static void forget_uncounted(int fd) {
  shm_lock(&shm_fdtab_lock);
  struct shm_fdslot *s = shm_fd_slot(fd);
  int kind = s ? s->kind : SHM_FD_NONE;
  void *p = kind != SHM_FD_NONE ? s->p : NULL;
  if (kind == SHM_FD_CONN || kind == SHM_FD_EPOLL) shm_fd_set_locked(fd, SHM_FD_NONE, NULL);
  shm_unlock(&shm_fdtab_lock);
  /* A connection our copy of an epoll set still names (its members point to
   * it) stays: released, its record could be reused under them. */
  if (kind == SHM_FD_CONN && !((struct shm_conn *)p)->members) shm_conn_unref_uncounted(p);
}

/* The one teardown path: close, dup2/dup3's implicit close, fclose, close_range,
 * and every call that returns a new descriptor whose number we still track.
 *
 * live: fd is still what we track (the caller is about to close it): a last
 * holder consumes the kicks on its socket and the epoll members leave the inner
 * set. !live: the number was freed behind our back and may already name another
 * file (a new connection, a pipe): no system call may touch it. The record is
 * dropped and the connection let go as if another process had closed the socket
 * (rings closed, segment unmapped); an epoll member's inner registration, if the
 * old socket lives on elsewhere, is left to preload/epoll.c.
 *
 * In a process the library never counted (pl_process_kind), nothing shared is
 * touched: a copy with its own memory (clone() without CLONE_VM) drops its own
 * record only, for the counted processes still hold the connection, their
 * epoll sets name the socket, and their statistics table is shared (its close
 * gave up a hold it never had: the parent's connection ended, conc forkchild);
 * a vfork() child touches nothing at all, for the table it would change is its
 * parent's. Saves errno. */
void pl_forget(int fd, int live) {
  /* (pl_dup3 comes here for an untracked newfd too: nothing to do, no getpid.) */
  if (fd > 2 && shm_fd_kind(fd) == SHM_FD_NONE) return;
  int saved = errno;
  int own = pl_process_kind();
  if (own < 0) {
    errno = saved;
    return;
  }
  if (own == 0) {
    forget_uncounted(fd);
    errno = saved;
    return;
  }
  if (fd <= 2) pl_std_release(fd, live); /* while fd is still what it was */
  void *p = NULL;
  shm_lock(&shm_fdtab_lock);
  struct shm_fdslot *s = shm_fd_slot(fd);
  int kind = s ? s->kind : SHM_FD_NONE;
  if (kind != SHM_FD_NONE) {
    p = s->p;
    shm_fd_set_locked(fd, SHM_FD_NONE, NULL);
  }
  shm_unlock(&shm_fdtab_lock);
  if (kind == SHM_FD_CONN) {
    struct shm_conn *c = p;
    if (live && !same_socket(fd, c)) {
      SHM_LOG(INFO, "fd=%d: no longer the connection's socket (closed behind our back): dropped", fd);
      live = 0;
    }
    if (live) {
      pl_epoll_forget_fd(fd, c);
      shm_conn_unref(fd, c);
    } else {
      pl_epoll_forget_stale(fd, c);
      shm_conn_unref(-1, c);
    }
  } else if (kind == SHM_FD_EPOLL) {
    pl_epoll_instance_unref(fd, p); /* closes only our inner set, never fd */
  } else if (kind == SHM_FD_INTERNAL && !live) {
    /* One of ours was closed behind our back (a raw close_range): the number is
     * the application's now. Whatever used it is broken; say so. */
    SHM_LOG(WARN, "fd=%d: one of the library's descriptors was closed behind its back", fd);
  }
  errno = saved;
}

static int pl_close(int fd) {
  int kind = shm_fd_kind(fd);
  if (kind == SHM_FD_INTERNAL) return pl_ebadf(); /* the application never opened it */
  /* A signal handler on top of its thread's use of the library's locks (its
   * epoll_wait collecting, say): forgetting the connection or the set needs
   * them, and the thread holds them. The thread closes it when it lets go of
   * them, before it returns to the program or sleeps (core/locks.h). Before, the
   * handler waited for its own thread (conc sigclose). */
  if (kind != SHM_FD_NONE && shm_locks_held() && shm_defer_close(fd) == 0) return 0;
  if (kind != SHM_FD_NONE) pl_forget(fd, 1);
  return REAL(close)(fd);
}
static void close_deferred(int fd) { (void)pl_close(fd); }
__attribute__((constructor)) static void fdops_init(void) { shm_deferred_close_hook = close_deferred; }
SHM_EXPORT int close(int fd) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(close)(fd);
  return pl_close(fd);
}

/* newfd now refers to what oldfd refers to. Not in a vfork() child: the table
 * (and stdio, pl_std_adopt) are its parent's, and the copy is the child's own
 * (Python's subprocess dup2()s the socket onto the child's 0 or 1 after vfork:
 * the parent's standard output became the connection); what the child's new
 * image holds is found at exec (preload/exec.c). */
static void dup_track(int oldfd, int newfd) {
  if (pl_process_kind() < 0) return;
  if (shm_fd_kind(oldfd) == SHM_FD_EPOLL) {
    pl_epoll_dup(oldfd, newfd);
    return;
  }
  struct shm_conn *c = pl_conn_any(oldfd);
  if (!c) return;
  shm_conn_ref(c);
  pl_track(newfd, c);
  shm_conn_put(c);
  if (newfd <= 2) pl_std_adopt(newfd);
}

SHM_EXPORT int dup(int fd) {
  if (SHM_LIKELY(!pl_tracked(fd))) {
    int r = PL_EMFILE_RETRY(REAL(dup)(fd));
    if (r >= 0) pl_new_fd(r);
    return r;
  }
  if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  int r = PL_EMFILE_RETRY(REAL(dup)(fd));
  if (r >= 0) {
    pl_new_fd(r);
    dup_track(fd, r);
  }
  return r;
}

/* dup2/dup3 onto one of our hidden fds: move ours away first, so the application
 * gets exactly the number it asked for and we keep working. */
static int make_room(int newfd) {
  if (shm_fd_kind(newfd) != SHM_FD_INTERNAL) return 0;
  /* A vfork() child's copy of one of ours: ours stays where it is (the parent's). */
  if (pl_process_kind() < 0) return 0;
  int moved = shm_fd_hide(newfd);
  if (moved < 0) return -1;
  /* Whoever owned newfd must learn the new number, or it would use, close (or
   * truncate: the statistics table grows with ftruncate) the application's
   * descriptor from now on (fdreuse dup2hidden: a connection's segment memfd,
   * kept for exec, was closed with the connection). A connection's own
   * descriptors name their owner in the slot (shm_fd_own): found also for one
   * closed by the application whose release waits for a call in flight. */
  shm_fd_moved(newfd, moved);
  extern void pl_epoll_renumber_inner(int from, int to);
  pl_epoll_renumber_inner(newfd, moved);
  shm_log_renumber(newfd, moved);
  shm_stat_renumber(newfd, moved);
  shm_fd_set(newfd, SHM_FD_NONE, NULL);
  return 0;
}

static int pl_dup3(int oldfd, int newfd, int flags, int is_dup2) {
  if (shm_fd_kind(oldfd) == SHM_FD_INTERNAL) return pl_ebadf();
  if (oldfd == newfd) return is_dup2 ? REAL(dup2)(oldfd, newfd) : REAL(dup3)(oldfd, newfd, flags);
  if (make_room(newfd) < 0) return -1;
  /* Tear down what newfd was while newfd still is that (its socket's kicks are
   * consumed on the way out), but only once the call cannot fail on oldfd. */
  if (REAL(fcntl)(oldfd, F_GETFD) < 0) return -1;
  if (is_dup2 == 0 && (flags & ~O_CLOEXEC)) {
    errno = EINVAL;
    return -1;
  }
  pl_forget(newfd, 1);
  int r = is_dup2 ? REAL(dup2)(oldfd, newfd) : REAL(dup3)(oldfd, newfd, flags);
  if (r < 0) return r;
  dup_track(oldfd, newfd);
  return r;
}
SHM_EXPORT int dup2(int oldfd, int newfd) {
  if (SHM_LIKELY(!pl_tracked(oldfd) && !pl_tracked(newfd))) return REAL(dup2)(oldfd, newfd);
  return pl_dup3(oldfd, newfd, 0, 1);
}
SHM_EXPORT int dup3(int oldfd, int newfd, int flags) {
  if (SHM_LIKELY(!pl_tracked(oldfd) && !pl_tracked(newfd))) return REAL(dup3)(oldfd, newfd, flags);
  return pl_dup3(oldfd, newfd, flags, 0);
}

/* Does a descriptor of c other than fd stay open across exec? */
static int other_fd_inherited(int fd, struct shm_conn *c) {
  if (!shm_conn_has_copies(c)) return 0; /* fd is its only one */
  SHM_FOR_EACH_CONN_FD(i) {
    if ((int)i != fd && shm_fdtab_get()[i].p == c && pl_fd_inherited((int)i)) return 1;
  }
  return 0;
}

static int pl_fcntl(int fd, int cmd, void *arg) {
  if (SHM_LIKELY(!pl_tracked(fd))) {
    int r = PL_EMFILE_RETRY(REAL(fcntl)(fd, cmd, arg)); /* EMFILE: F_DUPFD* only */
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) pl_new_fd(r);
    return r;
  }
  if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  int r = PL_EMFILE_RETRY(REAL(fcntl)(fd, cmd, arg)); /* EMFILE: F_DUPFD* only */
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
    pl_new_fd(r);
    dup_track(fd, r);
  }
  if (r >= 0 && cmd == F_SETFL) {
    struct shm_conn *c = pl_conn_any(fd);
    if (c) {
      shm_conn_nonblock_changed(c);
      shm_conn_put(c);
    }
  }
  if (r >= 0 && cmd == F_SETFD && ((long)arg & FD_CLOEXEC) && pl_process_kind() >= 0) {
    /* No exec will carry it over now, unless through another descriptor of it
     * (bash saves fd 0 on a close-on-exec copy and goes on with fd 4): only then
     * can the segment's memfd kept for that go. */
    struct shm_conn *c = pl_conn_any(fd);
    if (c) {
      if (shm_conn_state(c) == SHM_CONN_UPGRADED && !other_fd_inherited(fd, c)) shm_conn_seg_fd_close(c);
      shm_conn_put(c);
    }
  }
  return r;
}
/* fcntl's third argument is an int or a pointer; both travel in one register. */
SHM_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return pl_fcntl(fd, cmd, arg);
}
/* The same entry point under its large-file name (both always went to pl_fcntl). */
SHM_EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

SHM_EXPORT int ioctl(int fd, unsigned long req, ...) {
  va_list ap;
  va_start(ap, req);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(ioctl)(fd, req, arg);
  if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  struct shm_conn *c = pl_conn_any(fd);
  if (!c) return REAL(ioctl)(fd, req, arg);
  int r, m;
  if (shm_conn_state(c) == SHM_CONN_UPGRADED && req == FIONREAD) {
    r = shm_conn_fionread(fd, c, arg);
  } else if (req == SIOCATMARK && arg && (m = shm_conn_at_mark(c)) >= 0) {
    *(int *)arg = m;
    r = 0;
  } else {
    r = REAL(ioctl)(fd, req, arg);
  }
  if (req == FIONBIO) shm_conn_nonblock_changed(c);
  int e = errno;
  shm_conn_put(c);
  errno = e;
  return r;
}

SHM_EXPORT int getsockopt(int fd, int level, int opt, void *val, socklen_t *len) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(getsockopt)(fd, level, opt, val, len);
  if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  int r = REAL(getsockopt)(fd, level, opt, val, len);
  if (r == 0 && level == SOL_SOCKET && opt == SO_ERROR && val && len && *len >= sizeof(int) && !*(int *)val) {
    struct shm_conn *c = pl_conn_any(fd);
    if (c) {
      int e = shm_conn_take_error(c);
      if (e) *(int *)val = e;
      shm_conn_put(c);
    }
  }
  return r;
}

SHM_EXPORT int setsockopt(int fd, int level, int opt, const void *val, socklen_t len) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(setsockopt)(fd, level, opt, val, len);
  if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  if (level == IPPROTO_TCP && (opt == TCP_NODELAY || opt == TCP_CORK)) {
    /* An upgraded connection's socket carries only kicks, which must not wait:
     * once we have set TCP_NODELAY for them (core/negotiate.c), the setting has
     * no data left to act on. Before that (a server whose offer the client has
     * not taken yet: it may still end plain), the application's setting is the
     * socket's, as it would be without us. */
    struct shm_conn *c = pl_conn_any(fd);
    int kicks = c && shm_conn_kicks_nodelay(c);
    if (c) shm_conn_put(c);
    if (kicks) {
      if (!val || len < (socklen_t)sizeof(int)) {
        errno = val ? EINVAL : EFAULT;
        return -1;
      }
      return 0;
    }
  }
  int r = REAL(setsockopt)(fd, level, opt, val, len);
  if (r == 0 && level == SOL_SOCKET && opt == SO_PASSCRED) {
    /* Ring reads attach credentials as the kernel does while it is on. */
    struct shm_conn *c = pl_conn_any(fd);
    if (c) {
      shm_conn_passcred_changed(c);
      shm_conn_put(c);
    }
  }
  return r;
}

SHM_EXPORT int shutdown(int fd, int how) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(shutdown)(fd, how);
  if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
  struct shm_conn *c = pl_conn_any(fd);
  if (!c) return REAL(shutdown)(fd, how);
  if (shm_conn_state(c) == SHM_CONN_PENDING && c->role == SHM_SERVER) {
    /* Shut down before this process ever used it: nothing to gain from an offer. */
    shm_conn_refuse(fd, c, "shut down before its first use");
  } else if (shm_conn_state(c) == SHM_CONN_PENDING && (how == SHUT_WR || how == SHUT_RDWR)) {
    /* Switch now if the offer is already queued: then the ring carries the EOF. */
    shm_conn_resolve_for_write(fd, c);
  }
  int r;
  if (shm_conn_state(c) == SHM_CONN_UPGRADED) {
    r = shm_conn_shutdown(fd, c, how);
  } else {
    r = REAL(shutdown)(fd, how);
    if (r == 0 && shm_conn_state(c) == SHM_CONN_PENDING && how != SHUT_RD) {
      /* The socket's FIN now marks the end of our data; if we switch later, the ring
       * starts closed and wake-ups to the server go by futex (no kick can leave). */
      shm_conn_pending_wr_shut(c);
    }
  }
  int e = errno;
  shm_conn_put(c);
  errno = e;
  return r;
}

void pl_new_fds_cmsg(const struct msghdr *m) {
  if (!m->msg_control || m->msg_controllen < sizeof(struct cmsghdr)) return;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(m); h; h = CMSG_NXTHDR((struct msghdr *)m, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS || h->cmsg_len < CMSG_LEN(0)) continue;
    size_t n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
      pl_new_fd(fd);
    }
  }
}

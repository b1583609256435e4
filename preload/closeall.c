/* Calls that close descriptors without going through close(): close_range,
 * closefrom, and fclose of a stream opened on a socket with fdopen (glibc closes
 * the descriptor with an internal call the shim cannot see). Each takes tracked
 * descriptors through the normal close path (pl_forget) and leaves the library's
 * own hidden descriptors open, as close() does when asked to close one: a daemon
 * that closes every descriptor at start must not take the shim's from under it.
 * And stdio on connections: fdopen, and the standard streams while a connection
 * is on descriptor 0, 1 or 2. */
#include <errno.h>
#include <linux/close_range.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "preload.h"

static int sys_close_range(unsigned first, unsigned last, int flags) {
  return (int)syscall(SYS_close_range, first, last, flags);
}

/* Closes [first, last] but our hidden descriptors, each tracked one after
 * pl_forget. The table is scanned only up to the highest number it ever tracked:
 * everything above is one close_range. */
static int pl_close_range(unsigned first, unsigned last, int flags) {
  unsigned high = __atomic_load_n(&shm_fdhigh, __ATOMIC_RELAXED);
  if (!shm_fdtab_get() || first > last || first > high) return sys_close_range(first, last, flags);
  if (flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) {
    errno = EINVAL;
    return -1;
  }
  if (flags & CLOSE_RANGE_CLOEXEC) {
    /* Nothing is closed; our own descriptors are close-on-exec already. As after
     * F_SETFD FD_CLOEXEC, no exec will carry a connection over now. */
    int r = sys_close_range(first, last, flags);
    if (r == 0 && pl_process_kind() >= 0) /* (a vfork child's: its own copies) */
      for (unsigned fd = first; fd <= high && fd <= last; fd++) {
        struct shm_conn *c = pl_conn_any((int)fd);
        if (!c) continue;
        if (shm_conn_state(c) == SHM_CONN_UPGRADED) shm_conn_seg_fd_close(c);
        shm_conn_put(c);
      }
    return r;
  }
  /* Unshare first, with a call that changes nothing that is not closed below
   * anyway: the pieces then all close in the table this thread ends up with. */
  if (flags & CLOSE_RANGE_UNSHARE) (void)sys_close_range(first, first, CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC);
  unsigned from = first;
  for (unsigned fd = first; fd <= high && fd <= last; fd++) {
    int kind = shm_fd_kind((int)fd);
    if (kind == SHM_FD_NONE) continue;
    if (kind == SHM_FD_INTERNAL) {
      if (fd > from && sys_close_range(from, fd - 1, 0) < 0) return -1;
      from = fd + 1;
      continue;
    }
    pl_forget((int)fd, 1);
  }
  if (from > last) return 0;
  return sys_close_range(from, last, 0);
}

SHM_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
  return pl_close_range(first, last, flags);
}

/* glibc's closefrom never fails: without close_range it closes one by one. */
SHM_EXPORT void closefrom(int lowfd) {
  if (lowfd < 0) lowfd = 0;
  if (pl_close_range((unsigned)lowfd, UINT_MAX, 0) == 0) return;
  long max = sysconf(_SC_OPEN_MAX);
  for (long fd = lowfd; fd < max; fd++)
    if (shm_fd_kind((int)fd) != SHM_FD_INTERNAL) close((int)fd);
}

/* stdio reads and writes a socket through libc-internal calls the shim never
 * sees. A connection not upgraded yet is kept plain for good. An upgraded one
 * cannot be taken back (its peer writes to the ring): its stream is one whose
 * reads and writes are the library's read() and write() (fopencookie), with the
 * descriptor's number for fileno(). */
static ssize_t conn_stream_read(void *p, char *b, size_t n) { return read((int)(intptr_t)p, b, n); }
static ssize_t conn_stream_write(void *p, const char *b, size_t n) {
  size_t done = 0; /* all of it, or an error, as libc's own file streams */
  while (done < n) {
    ssize_t w = write((int)(intptr_t)p, b + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return done ? (ssize_t)done : -1;
    done += (size_t)w;
  }
  return (ssize_t)done;
}
static int conn_stream_close(void *p) { return close((int)(intptr_t)p); }

FILE *pl_conn_stream(int fd, const char *mode) {
  cookie_io_functions_t io = {conn_stream_read, conn_stream_write, NULL, conn_stream_close};
  FILE *f = fopencookie((void *)(intptr_t)fd, mode, io);
  if (f) f->_fileno = fd;
  return f;
}

/* The standard streams. A program that dup2()s a connection onto 0, 1 or 2 and
 * then uses stdin, stdout or stderr (bash: `echo hi >&3` is dup2(3, 1), then the
 * builtin's fputs and fflush on stdout) reads and writes it through libc-internal
 * calls the library never sees: bytes the switch-over does not count (the peer
 * reset the connection on them as stray bytes) and, once upgraded, the socket
 * instead of the ring. So while a connection is on one of them, the stream is
 * replaced by one over the library's calls (as in an image a connection was
 * carried into: init.c), and given back when the descriptor stops being the
 * connection (dup2 onto it, close). What the program had written to the old
 * stream and not flushed yet is moved into the new one: it goes where the
 * descriptor goes now, as it would have. */
static pthread_mutex_t std_lock = PTHREAD_MUTEX_INITIALIZER; /* held for a few loads and stores only */
static FILE *std_orig[3];  /* the program's stream, while ours stands in */
static FILE *std_ours[3];  /* our stream for each, made once and never freed by us: a
                            * pointer the program saved keeps working, as libc's */
static int std_active[3];  /* the standard variable is ours now */
static FILE *std_gone[3];  /* ours, closed by the program: never looked at again */

static FILE **std_var(int fd) { return fd == 0 ? &stdin : fd == 1 ? &stdout : &stderr; }

void pl_std_adopt(int fd) {
  if (fd < 0 || fd > 2) return;
  pthread_mutex_lock(&std_lock);
  FILE **g = std_var(fd), *cur = *g;
  /* Not when the old stream still holds input read from what fd was before:
   * that comes first, as it would. */
  if (!std_active[fd] && cur && cur != std_gone[fd] && cur != std_ours[fd] && fileno(cur) == fd &&
      !(fd == 0 && cur->_IO_read_ptr < cur->_IO_read_end)) {
    FILE *f = std_ours[fd];
    if (!f && (f = pl_conn_stream(fd, fd == 0 ? "r" : "w")) && fd == 2) setvbuf(f, NULL, _IONBF, 0);
    if (f) {
      std_ours[fd] = f;
      if (fd != 0 && cur->_IO_write_ptr > cur->_IO_write_base) {
        fwrite(cur->_IO_write_base, 1, (size_t)(cur->_IO_write_ptr - cur->_IO_write_base), f);
        cur->_IO_write_ptr = cur->_IO_write_base;
      }
      std_orig[fd] = cur;
      std_active[fd] = 1;
      *g = f;
      SHM_LOG(DEBUG, "fd=%d: its standard stream reads and writes the connection through the library", fd);
    }
  }
  pthread_mutex_unlock(&std_lock);
}

void pl_std_release(int fd, int live) {
  if (fd < 0 || fd > 2 || !__atomic_load_n(&std_active[fd], __ATOMIC_RELAXED)) return;
  pthread_mutex_lock(&std_lock);
  FILE *f = std_active[fd] ? std_ours[fd] : NULL, **g = std_var(fd);
  if (f) {
    if (*g == f) *g = std_orig[fd]; /* (a program that set the variable itself keeps its own) */
    std_orig[fd] = NULL;
    std_active[fd] = 0;
  }
  pthread_mutex_unlock(&std_lock);
  /* Its bytes go to the connection while fd still is it (outside the lock: the
   * write may wait for room). */
  if (f && live && fd != 0) fflush(f);
}

/* The program closes a stream (fclose): if it is one of ours, we never look at it
 * again (it closes the descriptor too, as it would). */
static void std_forget(FILE *f) {
  for (int fd = 0; fd <= 2; fd++)
    if (__atomic_load_n(&std_ours[fd], __ATOMIC_RELAXED) == f) {
      pthread_mutex_lock(&std_lock);
      if (std_ours[fd] == f) {
        std_ours[fd] = NULL;
        std_gone[fd] = f;
        if (std_active[fd] && *std_var(fd) == f) std_active[fd] = 0; /* the program's variable: its business now */
        std_orig[fd] = NULL;
      }
      pthread_mutex_unlock(&std_lock);
    }
}

/* At exit, before the connections are let go (the program's unflushed output
 * would otherwise reach the peer after our end of file). */
void pl_std_flush(void) {
  for (int fd = 1; fd <= 2; fd++)
    if (__atomic_load_n(&std_active[fd], __ATOMIC_RELAXED) && std_ours[fd]) fflush(std_ours[fd]);
}

void pl_std_forked_child(void) { pthread_mutex_init(&std_lock, NULL); }

SHM_EXPORT FILE *fdopen(int fd, const char *mode) {
  if (SHM_UNLIKELY(pl_tracked(fd)) && shm_fd_kind(fd) == SHM_FD_CONN) {
    struct shm_conn *c = pl_conn_any(fd);
    int st = c ? shm_conn_refuse(fd, c, "opened as a stdio stream (fdopen)") : SHM_CONN_PLAIN;
    if (c) shm_conn_put(c);
    if (st == SHM_CONN_UPGRADED) {
      if (REAL(fcntl)(fd, F_GETFL) < 0) return NULL; /* EBADF, as fdopen */
      return pl_conn_stream(fd, mode);
    }
  }
  return REAL(fdopen)(fd, mode);
}

SHM_EXPORT int fclose(FILE *f) {
  if (SHM_UNLIKELY(f && (f == std_ours[0] || f == std_ours[1] || f == std_ours[2]))) std_forget(f);
  int fd = f && shm_fdtab_get() ? fileno(f) : -1;
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(fclose)(f);
  /* Buffered bytes go out while fd is still the socket; then the close path. */
  fflush(f);
  if (shm_fd_kind(fd) != SHM_FD_INTERNAL) pl_forget(fd, 1);
  return REAL(fclose)(f);
}

/* The application ran out of descriptors (EMFILE) while we hold some it does not
 * know of, one per connection: the endpoint of a client connection that waits
 * for its offer, and the segment memfd of an upgraded connection whose socket is
 * inheritable, kept in case of an exec (hiredis's sockets are both:
 * redis-benchmark -c 700 under `ulimit -n 1024` failed with "Too many open
 * files" at about 500 connections, where the kernel lets it open all 700). They
 * are given back, all of them, and none is spent for SHM_FDS_SCARCE_NS after
 * (shm_fds_scarce): a program at its limit needs its descriptors more than its
 * connections need an upgrade (the pending ones, and new ones meanwhile, stay
 * plain) or an exec needs them carried (those read ECONNRESET in a new image, as
 * past the spares). Our other hidden descriptors (an epoll set's inner set, the
 * stats table) stay. */
int pl_fds_give_back(void) {
  /* A vfork() child shares our memory but not our descriptors: nothing here is
   * its to give back. */
  if (!shm_fdtab_get() || (pid_t)syscall(SYS_getpid) != pl_pid) return 0;
  /* Once per period: what was kept is given back at the first EMFILE, and
   * nothing is kept for a while after it, so a later one meanwhile (an accept
   * loop at its limit) costs no scan; nor does one in another thread at once. */
  uint64_t now = shm_now_ns();
  uint64_t until = __atomic_load_n(&shm_fds_scarce_until, __ATOMIC_RELAXED);
  if ((until && now < until) || !__atomic_compare_exchange_n(&shm_fds_scarce_until, &until, now + SHM_FDS_SCARCE_NS,
                                                             0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    return 0;
  int e = errno, segs = 0, pending = 0;
  /* Said first: a log file opened at its first line would take a freed number. */
  SHM_LOG(WARN, "out of descriptors: giving back those kept for connections (segments kept for an exec, endpoints "
                "of connections waiting for an offer); new client connections stay plain for %llu s",
          SHM_FDS_SCARCE_NS / 1000000000ull);
  SHM_FOR_EACH_CONN_FD(fd) {
    struct shm_conn *c = pl_conn_any((int)fd);
    if (!c) continue;
    int st = shm_conn_state(c);
    if (st == SHM_CONN_UPGRADED && shm_conn_seg_fd(c) >= 0) {
      shm_conn_seg_fd_close(c);
      segs++;
    } else if (st == SHM_CONN_PENDING && c->role == SHM_CLIENT &&
               shm_conn_refuse((int)fd, c, "the process ran out of descriptors: its endpoint is given back") ==
                   SHM_CONN_PLAIN) {
      pending++;
    }
    shm_conn_put(c);
  }
  SHM_LOG(INFO, "out of descriptors: gave back %d kept for exec and %d endpoints", segs, pending);
  errno = e;
  return segs + pending;
}

/* Calls that close descriptors without going through close(): close_range,
 * closefrom, and fclose of a stream opened on a socket with fdopen (glibc closes
 * the descriptor with an internal call the shim cannot see). Each takes tracked
 * descriptors through the normal close path (pl_forget) and leaves the library's
 * own hidden descriptors open, as close() does when asked to close one: a daemon
 * that closes every descriptor at start must not take the shim's from under it. */
#include <linux/close_range.h>
#include <limits.h>
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
  if (!shm_fdtab || first > last || first > high) return sys_close_range(first, last, flags);
  if (flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) {
    errno = EINVAL;
    return -1;
  }
  if (flags & CLOSE_RANGE_CLOEXEC) {
    /* Nothing is closed; our own descriptors are close-on-exec already. As after
     * F_SETFD FD_CLOEXEC, no exec will carry a connection over now. */
    int r = sys_close_range(first, last, flags);
    if (r == 0)
      for (unsigned fd = first; fd <= high && fd <= last; fd++) {
        struct shm_conn *c = pl_conn_any((int)fd);
        if (!c) continue;
        if (shm_conn_state(c) == SHM_CONN_UPGRADED) shm_seg_close_fd(&c->seg);
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

/* stdio reads and writes a socket through libc-internal calls the shim never sees:
 * a connection not upgraded yet is kept plain for good; an upgraded one cannot be
 * taken back (its peer writes to the ring), and stdio will reset it at its first
 * read of a kick, so say so. */
SHM_EXPORT FILE *fdopen(int fd, const char *mode) {
  if (SHM_UNLIKELY(pl_tracked(fd)) && shm_fd_kind(fd) == SHM_FD_CONN) {
    struct shm_conn *c = pl_conn_any(fd);
    if (c) {
      if (shm_conn_refuse(fd, c, "opened as a stdio stream (fdopen)") == SHM_CONN_UPGRADED)
        SHM_LOG(INFO, "fd=%d: fdopen() of an upgraded connection: stdio bypasses the library (a read of a kick resets it)", fd);
      shm_conn_put(c);
    }
  }
  return REAL(fdopen)(fd, mode);
}

SHM_EXPORT int fclose(FILE *f) {
  int fd = f && shm_fdtab ? fileno(f) : -1;
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(fclose)(f);
  /* Buffered bytes go out while fd is still the socket; then the close path. */
  fflush(f);
  if (shm_fd_kind(fd) != SHM_FD_INTERNAL) pl_forget(fd, 1);
  return REAL(fclose)(f);
}

/* syscall(): libc's generic entry, which some programs use for calls they want
 * to make without libc's wrapper. libuv closes every descriptor with
 * syscall(SYS_close) (it avoids the wrapper's cancellation point): on a tracked
 * connection that close is routed through ours, so the connection is let go of
 * properly instead of being left behind for a later descriptor with the same
 * number. Everything else is passed on unchanged (our own code calls syscall()
 * too, and ends up here: one compare on the way). */
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload.h"

SHM_EXPORT long syscall(long nr, ...) {
  va_list ap;
  va_start(ap, nr);
  long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
  long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
  va_end(ap);
  if (SHM_UNLIKELY(nr == SYS_close) && shm_fd_kind((int)a) == SHM_FD_CONN) return close((int)a);
  return REAL(syscall)(nr, a, b, c, d, e, f);
}

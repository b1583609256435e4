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

#include "log.h"
#include "preload.h"

/* Six arguments are read whatever the call takes, as libc's own syscall() does
 * in assembly: those past the caller's are whatever is in their registers or on
 * its stack, and unused. Not instrumented by AddressSanitizer, which took the
 * sixth read for a stack underflow of a caller with an array on its frame
 * (exec's dead socket: the matrix's execbare cell under ASan). */
__attribute__((no_sanitize("address"))) SHM_EXPORT long syscall(long nr, ...) {
  va_list ap;
  va_start(ap, nr);
  long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
  long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
  va_end(ap);
  if (SHM_UNLIKELY(nr == SYS_close) && shm_fd_kind((int)a) == SHM_FD_CONN) return close((int)a);
  if (SHM_UNLIKELY(nr == SYS_io_uring_setup)) {
    long r = REAL(syscall)(nr, a, b, c, d, e, f);
    if (r >= 0 && !__atomic_exchange_n(&shm_uring_in_use, 1, __ATOMIC_RELAXED))
      SHM_LOG(INFO, "io_uring set up (fd=%ld): connections made from now on stay plain", r);
    return r;
  }
  return REAL(syscall)(nr, a, b, c, d, e, f);
}

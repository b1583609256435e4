/* A test preload, loaded before the library (LD_PRELOAD="drainhook.so
 * libshmshim.so"), for conc's pollrace scenario: it puts the peer's next write
 * exactly between a poller's look at the rings and its drain of the kicks.
 *
 * The library reads its socket's kick bytes with syscall(SYS_recvmsg, ...,
 * MSG_DONTWAIT) (core/conn_sock.c); syscall() is exported by the library and
 * looked up by name, so this one, first in the search order, sees those calls.
 * Once armed for a thread and a socket (drainhook_arm, found by the test with
 * dlsym), the first such non-peeking receive of that thread on that socket
 * first asks the peer to write (one byte on the control socket), waits until
 * the peer's kick has reached the socket (SIOCINQ grows; spinning, not
 * sleeping: a thread of lower priority on the same CPU must not run meanwhile),
 * and only then makes the receive. Every other call goes on unchanged. */
#include <dlfcn.h>
#include <linux/sockios.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

static atomic_int armed_tid;
static int ctl_fd = -1, sock_fd = -1;
static atomic_int fired; /* 1: the peer's kick came in the window; -1: it did not within 1 s */

EXPORT void drainhook_arm(int tid, int ctlfd, int sockfd) {
  ctl_fd = ctlfd;
  sock_fd = sockfd;
  atomic_store(&fired, 0);
  atomic_store(&armed_tid, tid);
}
EXPORT void drainhook_disarm(void) { atomic_store(&armed_tid, 0); }
EXPORT int drainhook_fired(void) { return atomic_load(&fired); }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Six arguments read whatever the call takes, as libc's syscall() does (not
 * instrumented by ASan, as the library's own interposer). */
__attribute__((no_sanitize("address"))) EXPORT long syscall(long nr, ...) {
  static long (*next)(long, ...);
  va_list ap;
  va_start(ap, nr);
  long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
  long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
  va_end(ap);
  if (!next) next = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
  int tid = atomic_load(&armed_tid);
  if (nr == SYS_recvmsg && tid && (int)a == sock_fd && (c & MSG_DONTWAIT) && !(c & MSG_PEEK) &&
      tid == (int)next(SYS_gettid) && atomic_compare_exchange_strong(&armed_tid, &tid, 0)) {
    int q0 = 0, q = 0;
    next(SYS_ioctl, sock_fd, SIOCINQ, &q0);
    next(SYS_write, ctl_fd, "w", 1);
    uint64_t end = now_ns() + 1000000000ull;
    do {
      q = 0;
      next(SYS_ioctl, sock_fd, SIOCINQ, &q);
    } while (q <= q0 && now_ns() < end);
    atomic_store(&fired, q > q0 ? 1 : -1);
  }
  return next(nr, a, b, c, d, e, f);
}

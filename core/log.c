#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char *program_invocation_short_name;

static const char *const level_name[] = {"off", "warn", "info", "debug"};

void shm_log_write(int level, const char *func, const char *fmt, ...) {
  int saved = errno; /* logging must never change what the application sees */
  char buf[512];
  int n = snprintf(buf, sizeof buf, "shmshim[%ld %s] %s %s: ", (long)syscall(SYS_getpid),
                   program_invocation_short_name, level_name[level & 3], func);
  if (n < 0) n = 0;
  if ((size_t)n < sizeof buf) {
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (m > 0) n += m;
  }
  if ((size_t)n > sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  if (shm_cfg.log_file[0]) {
    /* Opened per line: a daemon that closes every fd cannot close ours, and we never
     * hold a descriptor number the application might want. */
    long fd = syscall(SYS_openat, AT_FDCWD, shm_cfg.log_file,
                      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      syscall(SYS_write, fd, buf, n);
      syscall(SYS_close, fd);
    }
  } else {
    syscall(SYS_write, 2, buf, n);
  }
  errno = saved;
}

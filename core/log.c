#include "real.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdtab.h"

extern char *program_invocation_short_name;

static const char *const level_name[] = {"off", "warn", "info", "debug"};

/* SHMSHIM_LOG_FILE, opened once at the first line (an absolute path since
 * shm_config_load), never through a symbolic link as its last component, and kept
 * on a hidden high descriptor like the library's others. A daemon that closes
 * every descriptor behind our back (close_range) may hand the number to a file of
 * its own: the file's identity is checked before each line, and the log opened
 * again when it is not ours any more (never writing into the application's file). */
static int log_fd = -1;
static dev_t log_dev;
static ino_t log_ino;

/* The file cannot be opened (a process started as another user than the file's,
 * or one that gave up its user before its first line): say so once on stderr,
 * where such a line is allowed, rather than drop every line unseen. */
static int stderr_is_socket(void);
static void cannot_open(int e) {
  static int said;
  if (__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED) || stderr_is_socket()) return;
  char b[512];
  int n = snprintf(b, sizeof b, "shmshim[%ld %s] warn: cannot open SHMSHIM_LOG_FILE %s as uid %ld: %s; its lines are dropped\n",
                   (long)syscall(SYS_getpid), program_invocation_short_name, shm_cfg.log_file,
                   (long)syscall(SYS_geteuid), strerror(e));
  if (n > 0) syscall(SYS_write, 2, b, (size_t)n < sizeof b ? (size_t)n : sizeof b - 1);
}

/* owner: -1, or the user a file we create is given to (before a setuid: see
 * shm_log_open_now). */
static int log_file_fd(long owner) {
  int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
  struct stat st;
  if (fd >= 0) {
    if (syscall(SYS_fstat, fd, &st) == 0 && st.st_dev == log_dev && st.st_ino == log_ino) return fd;
    /* Not ours any more: forget the number (never close it: it is someone else's). */
    __atomic_compare_exchange_n(&log_fd, &fd, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  }
  int fl = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY;
  long nfd = syscall(SYS_openat, AT_FDCWD, shm_cfg.log_file, fl | (owner < 0 ? O_CREAT : 0), 0644);
  if (nfd < 0 && owner >= 0 && errno == ENOENT) {
    nfd = syscall(SYS_openat, AT_FDCWD, shm_cfg.log_file, fl | O_CREAT | O_EXCL, 0644);
    if (nfd >= 0) syscall(SYS_fchown, nfd, (uid_t)owner, (gid_t)-1);
  }
  if (nfd < 0) {
    if (owner < 0) cannot_open(errno);
    return -1;
  }
  if (syscall(SYS_fstat, nfd, &st) < 0) {
    shm_sys_close(nfd);
    return -1;
  }
  int h = shm_fd_hide_trylock((int)nfd);
  if (h < 0) h = (int)nfd;
  log_dev = st.st_dev;
  log_ino = st.st_ino;
  int expect = -1;
  if (!__atomic_compare_exchange_n(&log_fd, &expect, h, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    /* Another thread opened it first: use its descriptor. */
    shm_fd_set(h, SHM_FD_NONE, 0);
    shm_sys_close(h);
    return expect;
  }
  return h;
}

/* Before a setuid to `owner`: the file is opened now, while the user we are
 * about to give up may still open it (nginx's workers becoming nobody with a
 * root-made log). A file we create then is given to `owner`: a process that
 * changes users and execs (setpriv, su) closes our descriptor, and the program
 * it runs must be able to open the file again (postgres as its own user). */
void shm_log_open_now(long owner) {
  if (shm_cfg.log_level == SHM_LOG_OFF || !shm_cfg.log_file[0]) return;
  int saved = errno;
  (void)log_file_fd(owner);
  errno = saved;
}

/* For inetd-style services fd 2 is the client's socket: a log line there would be
 * data in the client's stream. Checked at each line (a process may dup2 a socket
 * onto 2 at any time); such lines are dropped. */
static int stderr_is_socket(void) {
  struct stat st;
  return syscall(SYS_fstat, 2, &st) < 0 || S_ISSOCK(st.st_mode);
}

void shm_log_raw(const char *buf, size_t n) {
  int saved = errno; /* logging must never change what the application sees */
  if (shm_cfg.log_file[0]) {
    int fd = log_file_fd(-1);
    if (fd >= 0) syscall(SYS_write, fd, buf, n);
  } else if (!stderr_is_socket()) {
    syscall(SYS_write, 2, buf, n);
  }
  errno = saved;
}

void shm_log_renumber(int from, int to) {
  int expect = from;
  __atomic_compare_exchange_n(&log_fd, &expect, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void shm_log_write(int level, const char *func, const char *fmt, ...) {
  int saved = errno;
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
  shm_log_raw(buf, (size_t)n);
  errno = saved;
}

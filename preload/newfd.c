/* Calls that return a new descriptor and nothing else: open, pipe, eventfd,
 * timerfd, signalfd, memfd, inotify. The shim has no business with what they
 * return; it only has to forget what it still knows about the number, which was
 * freed behind its back if it still knows anything (pl_new_fd: one load and one
 * branch otherwise). epoll_create* are in preload/epoll.c, socket, socketpair and
 * accept in preload/socket.c, dup* in preload/fdops.c. */
#include <errno.h>
#include <stdarg.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "preload.h"

/* Before libc's table is bound (a malloc called by dlsym during the binding may
 * open files), the system call itself: binding from here would deadlock. */
#define CALL0(name, args, sys) (__atomic_load_n(&shm_real.name, __ATOMIC_ACQUIRE) ? shm_real.name args : (int)(sys))
#define CALL(name, args, sys) PL_EMFILE_RETRY(CALL0(name, args, sys))

static int fresh(int fd) {
  if (fd >= 0) pl_new_fd(fd);
  return fd;
}

static int fresh2(int r, const int *fds) {
  if (r == 0) {
    pl_new_fd(fds[0]);
    pl_new_fd(fds[1]);
  }
  return r;
}

/* open's mode exists only with O_CREAT or O_TMPFILE. */
static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

SHM_EXPORT int open(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return fresh(CALL(open, (path, flags, mode), syscall(SYS_openat, AT_FDCWD, path, flags, mode)));
}
SHM_EXPORT int open64(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return fresh(CALL(open64, (path, flags, mode), syscall(SYS_openat, AT_FDCWD, path, flags | O_LARGEFILE, mode)));
}
SHM_EXPORT int openat(int dfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return fresh(CALL(openat, (dfd, path, flags, mode), syscall(SYS_openat, dfd, path, flags, mode)));
}
SHM_EXPORT int openat64(int dfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  return fresh(CALL(openat64, (dfd, path, flags, mode), syscall(SYS_openat, dfd, path, flags | O_LARGEFILE, mode)));
}
/* _FORTIFY_SOURCE's versions of open without a mode. */
SHM_EXPORT int __open_2(const char *path, int flags) { return fresh(CALL(__open_2, (path, flags), syscall(SYS_openat, AT_FDCWD, path, flags))); }
SHM_EXPORT int __open64_2(const char *path, int flags) { return fresh(CALL(__open64_2, (path, flags), syscall(SYS_openat, AT_FDCWD, path, flags | O_LARGEFILE))); }
SHM_EXPORT int __openat_2(int dfd, const char *path, int flags) {
  return fresh(CALL(__openat_2, (dfd, path, flags), syscall(SYS_openat, dfd, path, flags)));
}
SHM_EXPORT int __openat64_2(int dfd, const char *path, int flags) {
  return fresh(CALL(__openat64_2, (dfd, path, flags), syscall(SYS_openat, dfd, path, flags | O_LARGEFILE)));
}
SHM_EXPORT int creat(const char *path, mode_t mode) { return fresh(CALL(creat, (path, mode), syscall(SYS_openat, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode))); }
SHM_EXPORT int creat64(const char *path, mode_t mode) { return fresh(CALL(creat64, (path, mode), syscall(SYS_openat, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC | O_LARGEFILE, mode))); }

SHM_EXPORT int pipe(int fds[2]) { return fresh2(CALL(pipe, (fds), syscall(SYS_pipe2, fds, 0)), fds); }
SHM_EXPORT int pipe2(int fds[2], int flags) { return fresh2(CALL(pipe2, (fds, flags), syscall(SYS_pipe2, fds, flags)), fds); }

SHM_EXPORT int eventfd(unsigned int initval, int flags) { return fresh(CALL(eventfd, (initval, flags), syscall(SYS_eventfd2, initval, flags))); }
SHM_EXPORT int timerfd_create(int clock, int flags) { return fresh(CALL(timerfd_create, (clock, flags), syscall(SYS_timerfd_create, clock, flags))); }
/* With fd != -1, signalfd changes an existing signalfd and creates nothing. */
SHM_EXPORT int signalfd(int fd, const sigset_t *mask, int flags) {
  int r = CALL(signalfd, (fd, mask, flags), syscall(SYS_signalfd4, fd, mask, _NSIG / 8, flags));
  return fd == -1 ? fresh(r) : r;
}
SHM_EXPORT int memfd_create(const char *name, unsigned int flags) {
  return fresh(CALL(memfd_create, (name, flags), syscall(SYS_memfd_create, name, flags)));
}
SHM_EXPORT int inotify_init(void) { return fresh(CALL(inotify_init, (), syscall(SYS_inotify_init1, 0))); }
SHM_EXPORT int inotify_init1(int flags) { return fresh(CALL(inotify_init1, (flags), syscall(SYS_inotify_init1, flags))); }

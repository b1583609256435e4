/* The exec family. An upgraded connection whose descriptor is close-on-exec simply
 * ends for this process: its hold is given up first, so the peer still gets a clean
 * end of file. One that would be inherited cannot be carried into the new image yet
 * (docs/design.md, known limits): that is logged at warn level, every time. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "preload.h"

extern char **environ;

static void before_exec(void) {
  if (!shm_fdtab) return;
  for (unsigned fd = 0; fd < shm_fdcap && fd <= shm_fdhigh; fd++) {
    if (shm_fdtab[fd].kind != SHM_FD_CONN) continue;
    struct shm_conn *c = shm_fdtab[fd].p;
    if (c->state != SHM_CONN_UPGRADED) continue;
    int fl = REAL(fcntl)((int)fd, F_GETFD);
    if (fl >= 0 && (fl & FD_CLOEXEC)) shm_conn_exit((int)fd, c);
    else
      SHM_LOG(WARN, "fd=%u: upgraded connection inherited across exec: the new program must not use it",
              fd);
  }
}

/* exec only returns on failure. A connection given up above then stays usable
 * only if another process still holds it; if this process was its last holder,
 * the peer has been told end of file (as it would have been by the exec). */

SHM_EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
  before_exec();
  return REAL(execve)(path, argv, envp);
}
SHM_EXPORT int execv(const char *path, char *const argv[]) {
  before_exec();
  return REAL(execve)(path, argv, environ);
}
SHM_EXPORT int execvp(const char *file, char *const argv[]) {
  before_exec();
  return REAL(execvpe)(file, argv, environ);
}
SHM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
  before_exec();
  return REAL(execvpe)(file, argv, envp);
}
SHM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
  before_exec();
  return REAL(fexecve)(fd, argv, envp);
}

/* execl and friends: collect the variadic list into an argv array. */
#define COLLECT_ARGS(arg0, ap, argv, extra)                     \
  do {                                                          \
    size_t n = 1;                                               \
    va_list cp;                                                 \
    va_copy(cp, ap);                                            \
    while (va_arg(cp, char *)) n++;                             \
    va_end(cp);                                                 \
    argv = alloca((n + 1) * sizeof(char *));                    \
    argv[0] = (char *)(arg0);                                   \
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, char *); \
    extra;                                                      \
  } while (0)

SHM_EXPORT int execl(const char *path, const char *arg0, ...) {
  char **argv;
  va_list ap;
  va_start(ap, arg0);
  COLLECT_ARGS(arg0, ap, argv, (void)0);
  va_end(ap);
  return execv(path, argv);
}
SHM_EXPORT int execlp(const char *file, const char *arg0, ...) {
  char **argv;
  va_list ap;
  va_start(ap, arg0);
  COLLECT_ARGS(arg0, ap, argv, (void)0);
  va_end(ap);
  return execvp(file, argv);
}
SHM_EXPORT int execle(const char *path, const char *arg0, ...) {
  char **argv, **envp;
  va_list ap;
  va_start(ap, arg0);
  COLLECT_ARGS(arg0, ap, argv, envp = va_arg(ap, char **));
  va_end(ap);
  return execve(path, argv, envp);
}

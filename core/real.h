/* The table of libc's own functions, generated from one X-macro list and bound
 * once with dlsym(RTLD_NEXT). Binding aborts with a clear message if dlsym hands
 * back one of our own interposers (a second copy of the library in the chain). */
#ifndef SHMSHIM_REAL_H
#define SHMSHIM_REAL_H

#include <sys/syscall.h>
#include <unistd.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SHM_REAL_SYMS(X)                                                                    \
  X(int, socket, (int, int, int))                                                           \
  X(int, socketpair, (int, int, int, int *))                                                \
  X(int, connect, (int, const struct sockaddr *, socklen_t))                                \
  X(int, accept, (int, struct sockaddr *, socklen_t *))                                     \
  X(int, accept4, (int, struct sockaddr *, socklen_t *, int))                               \
  X(ssize_t, read, (int, void *, size_t))                                                   \
  X(ssize_t, write, (int, const void *, size_t))                                            \
  X(ssize_t, readv, (int, const struct iovec *, int))                                       \
  X(ssize_t, writev, (int, const struct iovec *, int))                                      \
  X(ssize_t, recv, (int, void *, size_t, int))                                              \
  X(ssize_t, send, (int, const void *, size_t, int))                                        \
  X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))          \
  X(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t))  \
  X(ssize_t, recvmsg, (int, struct msghdr *, int))                                          \
  X(ssize_t, sendmsg, (int, const struct msghdr *, int))                                    \
  X(ssize_t, sendfile, (int, int, off_t *, size_t))                                         \
  X(ssize_t, splice, (int, loff_t *, int, loff_t *, size_t, unsigned int))                  \
  X(int, close, (int))                                                                      \
  X(int, shutdown, (int, int))                                                              \
  X(int, dup, (int))                                                                        \
  X(int, dup2, (int, int))                                                                  \
  X(int, dup3, (int, int, int))                                                             \
  X(int, fcntl, (int, int, ...))                                                            \
  X(int, ioctl, (int, unsigned long, ...))                                                  \
  X(int, getsockopt, (int, int, int, void *, socklen_t *))                                  \
  X(int, setsockopt, (int, int, int, const void *, socklen_t))                              \
  X(int, poll, (struct pollfd *, nfds_t, int))                                              \
  X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *))       \
  X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *))                     \
  X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *,              \
                   const sigset_t *))                                                       \
  X(int, epoll_create, (int))                                                               \
  X(int, epoll_create1, (int))                                                              \
  X(int, epoll_ctl, (int, int, int, struct epoll_event *))                                  \
  X(int, epoll_wait, (int, struct epoll_event *, int, int))                                 \
  X(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *))              \
  X(int, epoll_pwait2, (int, struct epoll_event *, int, const struct timespec *,            \
                        const sigset_t *))                                                  \
  X(pid_t, fork, (void))                                                                    \
  X(int, execve, (const char *, char *const[], char *const[]))                              \
  X(int, execvpe, (const char *, char *const[], char *const[]))                             \
  X(int, fexecve, (int, char *const[], char *const[]))                                     \
  /* Images started inside libc (preload/spawn.c). */                                      \
  X(int, posix_spawn, (pid_t *, const char *, const posix_spawn_file_actions_t *,           \
                       const posix_spawnattr_t *, char *const[], char *const[]))            \
  X(int, posix_spawnp, (pid_t *, const char *, const posix_spawn_file_actions_t *,          \
                        const posix_spawnattr_t *, char *const[], char *const[]))           \
  X(int, posix_spawn_file_actions_init, (posix_spawn_file_actions_t *))                     \
  X(int, posix_spawn_file_actions_destroy, (posix_spawn_file_actions_t *))                  \
  X(int, posix_spawn_file_actions_addclose, (posix_spawn_file_actions_t *, int))            \
  X(int, posix_spawn_file_actions_adddup2, (posix_spawn_file_actions_t *, int, int))        \
  X(int, posix_spawn_file_actions_addopen, (posix_spawn_file_actions_t *, int,              \
                                            const char *, int, mode_t))                     \
  X(int, posix_spawn_file_actions_addchdir_np, (posix_spawn_file_actions_t *, const char *)) \
  X(int, posix_spawn_file_actions_addfchdir_np, (posix_spawn_file_actions_t *, int))        \
  X(int, posix_spawn_file_actions_addclosefrom_np, (posix_spawn_file_actions_t *, int))     \
  X(int, posix_spawn_file_actions_addtcsetpgrp_np, (posix_spawn_file_actions_t *, int))     \
  X(FILE *, popen, (const char *, const char *))                                            \
  X(int, system, (const char *))                                                            \
  /* Calls that only return new descriptors (preload/newfd.c, preload/closeall.c). */        \
  X(int, open, (const char *, int, ...))                                                    \
  X(int, open64, (const char *, int, ...))                                                  \
  X(int, openat, (int, const char *, int, ...))                                             \
  X(int, openat64, (int, const char *, int, ...))                                           \
  X(int, __open_2, (const char *, int))                                                     \
  X(int, __open64_2, (const char *, int))                                                   \
  X(int, __openat_2, (int, const char *, int))                                              \
  X(int, __openat64_2, (int, const char *, int))                                            \
  X(int, creat, (const char *, mode_t))                                                     \
  X(int, creat64, (const char *, mode_t))                                                   \
  X(int, pipe, (int *))                                                                     \
  X(int, pipe2, (int *, int))                                                               \
  X(int, eventfd, (unsigned int, int))                                                      \
  X(int, timerfd_create, (int, int))                                                        \
  X(int, signalfd, (int, const sigset_t *, int))                                            \
  X(int, memfd_create, (const char *, unsigned int))                                        \
  X(int, inotify_init, (void))                                                              \
  X(int, inotify_init1, (int))                                                              \
  X(int, fclose, (FILE *))                                                                  \
  X(FILE *, fdopen, (int, const char *))                                                    \
  X(long, syscall, (long, ...))                                                             \
  X(int, setuid, (uid_t))                                                                   \
  X(int, seteuid, (uid_t))                                                                  \
  X(int, setreuid, (uid_t, uid_t))                                                          \
  X(int, setresuid, (uid_t, uid_t, uid_t))

struct shm_real_table {
#define SHM_REAL_FIELD(ret, name, args) ret(*name) args;
  SHM_REAL_SYMS(SHM_REAL_FIELD)
#undef SHM_REAL_FIELD
};

extern struct shm_real_table shm_real;

/* Binds every symbol (idempotent, thread-safe). Called from the constructor and,
 * lazily, by any interposer that runs before it (another library's constructor). */
void shm_real_bind(void);

#define REAL(name) (__builtin_expect(shm_real.name != NULL, 1) ? shm_real.name : (shm_real_bind(), shm_real.name))

/* close(2) of one of the library's own descriptors, past the library's own
 * syscall() (preload/syscall.c), which routes SYS_close on a number the
 * descriptor table still holds as a connection to the application's close():
 * a number freed behind our back and reused by one of ours (an inner epoll set
 * made while the stale members of that set were being forgotten) was taken
 * through the application's close path, which took the epoll registry's lock
 * its caller held (a deadlock; fdreuse rawdup). The stale record stays for the
 * application's next descriptor with that number, as for any number freed
 * behind our back. */
static inline long shm_sys_close(int fd) {
  long (*f)(long, ...) = __atomic_load_n(&shm_real.syscall, __ATOMIC_ACQUIRE);
  return f ? f(SYS_close, fd) : syscall(SYS_close, fd);
}

#endif

/* Shared by the interposers: the exported-symbol marker and the few helpers that
 * turn an fd into "ours" or "libc's". Nothing here knows ring internals. */
#ifndef SHMSHIM_PRELOAD_H
#define SHMSHIM_PRELOAD_H

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "conn.h"
#include "fdtab.h"
#include "real.h"

/* The library's locks, outermost first: the one list (docs/design.md points
 * here). A thread that holds one may take only those below it. The global ones
 * from 1 on are taken through core/locks.h (shm_lock, or ep_mlock), which counts
 * them per thread: a signal handler's close() on top of them is left to the
 * thread. fork()'s prepare
 * handler (preload/process.c) takes the global ones in this order and holds them
 * across the fork, so the child never inherits one held by a thread that is not
 * there, nor a table half-changed; the child re-initialises them.
 *
 *  global (process-wide)
 *   0. std_lock           preload/closeall.c the standard streams stood in for (a few
 *                                            stores; taken under no other lock, not by
 *                                            fork; re-initialised in the child)
 *   1. fork_lock          preload/process.c  one fork at a time (two concurrent
 *                                            forks shared one scan's marks and
 *                                            left a child uncounted)
 *   2. fa_lock            preload/spawn.c    recorded spawn file actions
 *   3. ep_lock            preload/epoll.c    the epoll instance registry
 *                                            (instances, each connection's members)
 *   4. pl_epinst.lock     preload/epoll.c    one epoll instance's members (never
 *                                            two at once except in fork's prepare,
 *                                            never across a sleep)
 *   5. st_lock            core/stats.c       the statistics table (hides its
 *                                            descriptor through the fd table)
 *   6. shm_fdtab_lock     core/fdtab.c       the fd table's writers (held across
 *                                            fork: no connection is tracked between
 *                                            the holder count and the fork)
 *   7. short_lock         core/negotiate.c   the short-lived connection records
 *   8. pool_lock          core/conn.c        free connection records
 *   9. upgrade_lock       core/conn.c        a connection's change to UPGRADED
 *  per connection (core/conn.h), taken under 2 and 4, above 5, 7 and 9:
 *      rlock, then lock   the reader, then the connection's state (negotiation,
 *                         sleeper counts)
 *      wlock, then lock   the writer, then the connection's state
 *      rlock, then side lock 1, wlock, then side lock 0: the segment's lock of
 *                         our readers' (writers') ring sections, shared with our
 *                         other processes, taken only while several hold the
 *                         connection (core/conn_share.c); nothing is taken under it
 *  never rlock and wlock together. A reader that must switch the write side
 *  (may_kick) and the client taking an offer (under lock) only try wlock
 *  (trylock: the holder switches instead). fork()'s prepare handler only tries
 *  rlock and wlock, after everything above (so against the order, but it never
 *  waits: 2 ms of tries in all, then it leaves them), so that no ring section of
 *  ours is in flight when the child is counted: a write before the switch-over
 *  sleeps in the kernel's send holding wlock, and fork() must not wait for it;
 *  the child re-initialises them (it has only the forking thread).
 *  Blocking reads and ring writes sleep without them. Each of rlock, wlock and
 *  lock is noted per thread while held (tl_rheld, tl_wheld, tl_lheld): a signal
 *  handler on top of it gets EAGAIN, or negotiates and arms nothing, instead of
 *  waiting for itself (docs/design.md, "Threads, signals, fork"). */

#define SHM_EXPORT __attribute__((visibility("default")))
#define SHM_LIKELY(x) __builtin_expect(!!(x), 1)
#define SHM_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Returned by the slow paths: "this fd is libc's, make the real call". */
#define PL_PLAIN (-2)

/* One load and one branch for every fd the shim does not track. */
static inline int pl_tracked(int fd) { return SHM_UNLIKELY(shm_fd_kind(fd) != SHM_FD_NONE); }

/* Tracks fd as conn c (taking over the caller's reference). On failure the
 * connection is dropped and the fd stays plain. */
void pl_track(int fd, struct shm_conn *c);
/* The one teardown path (preload/fdops.c): drops whatever the table says about fd.
 * live: fd still is what we track, and is about to be closed (close, dup2 onto it,
 * fclose, close_range); checked once more against the socket's inode. !live: the
 * number was freed behind our back and may name another file already: no system
 * call touches it. Closes nothing of the application's; saves errno. */
void pl_forget(int fd, int live);
/* Every call that returns a new descriptor passes it here: if the table still
 * tracks that number, it was closed behind our back (a raw close system call,
 * stdio) and the entry is stale. One load and one branch when it is not. */
static inline void pl_new_fd(int fd) {
  if (SHM_UNLIKELY(pl_tracked(fd))) pl_forget(fd, 0);
}
/* The descriptors an SCM_RIGHTS message just delivered (preload/fdops.c). */
void pl_new_fds_cmsg(const struct msghdr *m);
/* A tracked, non-plain connection for fd, resolving a pending client for a read
 * (wait: block until decided). NULL with errno 0: use libc. NULL with errno set:
 * fail with it (EBADF for our own hidden fds, EAGAIN/EINTR while pending).
 * Every connection these return is held busy: give it back with shm_conn_put()
 * once the call is done with it (another thread may close the fd meanwhile). */
struct shm_conn *pl_conn_read(int fd, int flags);
/* Same for writes, which never wait for the decision. */
struct shm_conn *pl_conn_write(int fd);
/* Any tracked conn for fd, whatever its state (no resolution). */
struct shm_conn *pl_conn_any(int fd);

/* The application's call that makes a descriptor failed with EMFILE: the
 * descriptors we hold for its connections (segment memfds kept for an exec,
 * endpoints of clients waiting for an offer) are given back, so that our hidden
 * ones never make it fail before the kernel would; returns how many
 * (preload/closeall.c). PL_EMFILE_RETRY(call) makes the call once more then. */
int pl_fds_give_back(void);
#define PL_EMFILE_RETRY(expr)                                             \
  __extension__({                                                         \
    __typeof__(expr) r_ = (expr);                                         \
    if (r_ < 0 && errno == EMFILE && pl_fds_give_back()) r_ = (expr);     \
    r_;                                                                   \
  })

/* epoll bookkeeping hooks (preload/epoll.c). */
void pl_epoll_forget_fd(int fd, struct shm_conn *c);
/* Same for a number that was freed behind our back: no system call on fd. */
void pl_epoll_forget_stale(int fd, struct shm_conn *c);
void pl_epoll_conn_plain(int fd, struct shm_conn *c);
void pl_epoll_conn_upgraded(int fd, struct shm_conn *c);
/* A write on c's ring was short or found it full: members waiting for EPOLLOUT
 * must arm for room before their next sleep (a cold member armed only for data
 * would never hear of it). */
void pl_epoll_tx_short(struct shm_conn *c);
/* A poll of ours took kicks from c's socket: its epoll members may have missed them. */
void pl_epoll_kicks_taken(struct shm_conn *c);
/* Does this thread hold the epoll registry's or an instance's lock? */
int pl_epoll_thread_inside(void);
/* Descriptor epfd of an instance is gone; the instance goes with its last one. */
void pl_epoll_instance_unref(int epfd, void *inst);
/* newfd is a copy of epoll descriptor oldfd (dup, F_DUPFD, dup2, dup3). */
void pl_epoll_dup(int oldfd, int newfd);
void pl_epoll_atfork_child(void);
/* fork(): take=1 takes the epoll registry's lock and every instance's, 0 marks the
 * instances shared and releases them (the child re-initialises them). */
void pl_epoll_fork_lock(int take);

/* An untracked fd was added to epoll set epfd (preload/socket.c remembers it for
 * connect()). */
void pl_note_epoll_add(int epfd, int fd);

/* Will a new image with this environment load the library (not disabled)? */
int pl_target_shimmed(char *const envp[]);
/* A pending connection fd handed to a new image: plain at both ends (exec.c). */
void pl_pending_handed_on(int fd, struct shm_conn *c);
/* A socket whose reads fail with ECONNRESET (a fenced connection's stand-in). */
int pl_dead_socket(void);

/* A stdio stream on upgraded connection fd whose reads and writes go through
 * the library (fdopen; the standard streams of an image a connection was
 * carried into). */
FILE *pl_conn_stream(int fd, const char *mode);
/* Connection fd (0, 1 or 2) is now on that descriptor: its standard stream goes
 * through the library (closeall.c). */
void pl_std_adopt(int fd);
/* fd (0, 1 or 2) is about to stop being the connection (pl_forget): the program's
 * own stream is given back, and ours flushed to it if fd still is it (live). */
void pl_std_release(int fd, int live);
/* At exit: our standard output streams' bytes go out before the connections end. */
void pl_std_flush(void);
void pl_std_forked_child(void);
/* fork(): fa_lock taken (1) or released (0) around it; re-initialised in the child. */
void pl_spawn_fork_lock(int take);
void pl_spawn_forked_child(void);

/* This process's pid, as of the constructor or the last fork() (preload/exec.c
 * tells a vfork() child by it). */
extern pid_t pl_pid;
/* 1: this is the process the library counted (pl_pid); 0: a copy of it with its
 * own memory that the library never counted as a holder (clone() without
 * CLONE_VM, a raw fork system call); -1: a process that shares our memory
 * without being us (a vfork() child), or one the kernel would not say (kcmp). */
int pl_process_kind(void);
/* Binds _Fork and registers the fork handlers (the constructor calls it). */
void pl_process_init(void);

/* Does descriptor fd stay open across exec (open, and not close-on-exec)? */
static inline int pl_fd_inherited(int fd) {
  int fl = REAL(fcntl)(fd, F_GETFD);
  return fl >= 0 && !(fl & FD_CLOEXEC);
}

/* Internal fds are invisible: calls on them fail as on a closed descriptor. */
static inline int pl_ebadf(void) {
  errno = EBADF;
  return -1;
}

#endif

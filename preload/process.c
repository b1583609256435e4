/* fork and process exit. A forked child holds every connection too: it is
 * counted in the segment, so that only the last holder's close tells the peer.
 *
 * The counting and the child's re-initialisation are pthread_atfork handlers, so
 * they also run for the forks libc makes itself (daemon(), whose fork() is an
 * internal call no interposer sees). _Fork() runs no handlers: it is interposed
 * and runs them itself. The lock order is in preload/preload.h. */
#include <dlfcn.h>
#include <errno.h>
#include <linux/kcmp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "preload.h"

static unsigned fork_gen;
pid_t pl_pid;

/* One fork at a time: the holder count of one fork must not mix with another's. */
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
/* The generation whose child was counted, for undoing it when fork fails: this
 * thread's (prepare, the parent handler and fork's wrapper run in it; another
 * thread may fork in between). */
static __thread unsigned tl_counted_gen;

static void for_each_conn(void (*fn)(int fd, struct shm_conn *c)) {
  if (!shm_fdtab_get()) return;
  fork_gen++;
  SHM_FOR_EACH_CONN_FD(fd) {
    struct shm_conn *c = shm_fdtab_get()[fd].p;
    if (c->fork_gen == fork_gen) continue; /* a dup of one already seen */
    c->fork_gen = fork_gen;
    fn((int)fd, c);
  }
}

int pl_process_kind(void) {
  pid_t me = (pid_t)syscall(SYS_getpid);
  if (me == pl_pid) return 1;
  /* Our memory is pl_pid's (a vfork child: the parent waits until we exec or
   * exit), or a copy of it. A counted process that is gone cannot share it. */
  int e = errno;
  long r = syscall(SYS_kcmp, me, pl_pid, KCMP_VM, 0, 0);
  int kind = r > 0 || (r < 0 && errno == ESRCH) ? 0 : -1;
  errno = e;
  return kind;
}

/* Each upgraded connection, before its child is counted: no read or write of ours
 * inside its rings (core/conn_share.c); 2 ms of waiting for locks held by calls
 * asleep in the kernel, in all. */
static uint64_t quiesce_budget_ns;
static void hold_one_more(int fd, struct shm_conn *c) {
  if (shm_conn_state(c) == SHM_CONN_UPGRADED) shm_conn_fork_quiesce(c, &quiesce_budget_ns);
  /* Only a count that reached the segment is taken back if fork fails (a
   * pending connection upgraded meanwhile was never counted there). */
  c->fork_counted = shm_conn_hold(c, 1) ? fork_gen : 0;
}
static void release_quiesced(int fd, struct shm_conn *c) { shm_conn_fork_release(c); }
static void child_reinit(int fd, struct shm_conn *c) { shm_conn_forked_child(c); }

/* The forking thread's signal mask before the prepare handler blocked them all:
 * a handler on top of it (which holds every lock of ours, the connections'
 * rlock and wlock included) must not call into the library; restored in the
 * parent and in the child. Under fork_lock. */
static sigset_t fork_mask;

static void fork_prepare(void) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  shm_real_bind(); /* nothing to bind in the child, whose other threads are gone */
  shm_lock(&fork_lock);
  fork_mask = old;
  pl_spawn_fork_lock(1);
  pl_epoll_fork_lock(1);
  shm_stat_fork_lock(1);
  shm_lock(&shm_fdtab_lock);
  shm_negotiate_fork_lock(1);
  shm_conn_fork_lock(0);
  /* Count the child as a holder before it exists: if the parent closes its copy
   * first, it must not believe it was the last holder and close the rings. With
   * every lock held, no connection is tracked, untracked or upgraded until the
   * fork is done. */
  quiesce_budget_ns = 2000000;
  for_each_conn(hold_one_more);
  tl_counted_gen = fork_gen;
}

static void fork_parent(void) {
  for_each_conn(release_quiesced);
  shm_conn_fork_lock(1);
  shm_negotiate_fork_lock(0);
  shm_unlock(&shm_fdtab_lock);
  shm_stat_fork_lock(0);
  pl_epoll_fork_lock(0);
  pl_spawn_fork_lock(0);
  sigset_t mask = fork_mask;
  shm_unlock(&fork_lock);
  pthread_sigmask(SIG_SETMASK, &mask, NULL);
}

static void fork_child(void) {
  pl_pid = (pid_t)syscall(SYS_getpid);
  /* Only this thread exists in the child: the locks it holds are re-initialised,
   * and so are the connections' own, which threads that are gone may hold. */
  pthread_mutex_init(&fork_lock, NULL);
  pl_spawn_forked_child();
  pthread_mutex_init(&shm_fdtab_lock, NULL);
  pl_epoll_atfork_child();
  shm_conn_pool_forked_child();
  shm_negotiate_forked_child();
  shm_wait_forked_child(); /* not registered for membarrier (fast mode) */
  pl_std_forked_child();
  for_each_conn(child_reinit);
  shm_stat_forked_child(); /* stats: the child never writes the parent's table */
  shm_locks_forked_child(); /* the prepare handler's, counted, are new ones */
  pthread_sigmask(SIG_SETMASK, &fork_mask, NULL);
}

/* fork failed (the parent handler ran anyway): take the count back. Only for the
 * forks we see fail (fork, _Fork); a failed fork inside libc (daemon()) leaves
 * one hold too many: the peer then learns of the close from the socket alone. */
static void fork_failed(void) {
  shm_lock(&fork_lock);
  shm_lock(&shm_fdtab_lock);
  SHM_FOR_EACH_CONN_FD(fd) {
    struct shm_conn *c = shm_fdtab_get()[fd].p;
    if (!c->fork_counted || c->fork_counted != tl_counted_gen) continue;
    c->fork_counted = 0;
    shm_conn_hold(c, -1);
  }
  shm_unlock(&shm_fdtab_lock);
  shm_unlock(&fork_lock);
}

static pid_t (*real_Fork)(void);

void pl_process_init(void) {
  real_Fork = (pid_t(*)(void))dlsym(RTLD_NEXT, "_Fork"); /* glibc 2.34 and later */
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Giving up the user the process runs as (nginx's and php-fpm's workers): the log
 * file may be one only that user can open, so it is opened first. */
SHM_EXPORT int setuid(uid_t u) {
  shm_log_open_now(u);
  return REAL(setuid)(u);
}
SHM_EXPORT int seteuid(uid_t u) {
  shm_log_open_now(u);
  return REAL(seteuid)(u);
}
SHM_EXPORT int setreuid(uid_t r, uid_t e) {
  shm_log_open_now(e != (uid_t)-1 ? (long)e : (long)r);
  return REAL(setreuid)(r, e);
}
SHM_EXPORT int setresuid(uid_t r, uid_t e, uid_t s) {
  shm_log_open_now(e != (uid_t)-1 ? (long)e : (long)r);
  return REAL(setresuid)(r, e, s);
}

SHM_EXPORT pid_t fork(void) {
  pid_t p = REAL(fork)(); /* libc's fork runs the handlers above */
  if (p < 0) {
    int e = errno;
    fork_failed();
    errno = e;
  }
  return p;
}

/* _Fork runs no atfork handlers: the child would hold every connection uncounted
 * (its exit() let go of the parent's holds and closed the rings under it). */
SHM_EXPORT pid_t _Fork(void) {
  if (!real_Fork) {
    errno = ENOSYS;
    return -1;
  }
  fork_prepare();
  pid_t p = real_Fork();
  int e = errno;
  if (p == 0) {
    fork_child();
  } else {
    fork_parent();
    if (p < 0) fork_failed();
  }
  errno = e;
  return p;
}

static void exiting(int fd, struct shm_conn *c) { shm_conn_exit(fd, c); }

/* _exit() and _Exit() run no destructor: a process that leaves through them
 * (dash; many fork children, after their work or a failed exec) kept its hold on
 * every connection for good, so the others' last close was not the last
 * holder's: no end of the rings was written and the kicks on the socket were not
 * consumed, and the peer read a reset (tests/reliability/pysub.sh, the sh child:
 * about 1 run in 2). They give up their holds as exit() does, without flushing
 * stdio (that is _exit's promise), unless the process is not the one counted (a
 * vfork child's _exit after a failed exec: its parent's holds) or a signal
 * handler calls it on top of its thread's use of a connection or of an epoll
 * set, whose locks that thread holds (then, as before, nothing). */
static void give_up_all(void) {
  if ((pid_t)syscall(SYS_getpid) != pl_pid || shm_conn_thread_inside() || pl_epoll_thread_inside()) return;
  for_each_conn(exiting);
}
SHM_EXPORT __attribute__((noreturn)) void _exit(int status) {
  give_up_all();
  for (;;) syscall(SYS_exit_group, status);
}
SHM_EXPORT __attribute__((noreturn)) void _Exit(int status) __attribute__((alias("_exit")));

__attribute__((destructor)) static void shm_exit_conns(void) {
  int saved = errno;
  /* A process made without fork() or _Fork() (clone() without CLONE_VM, a raw
   * fork system call, a vfork() child that calls exit()) was never counted as a
   * holder: letting go would close the rings under the process that was. */
  if ((pid_t)syscall(SYS_getpid) != pl_pid) {
    errno = saved;
    return;
  }
  pl_std_flush(); /* what the program printed and libc would flush later, after our end of file */
  for_each_conn(exiting);
  errno = saved;
}

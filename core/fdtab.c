#include "fdtab.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "real.h"
#include "wait.h"

struct shm_fdslot *shm_fdtab;
unsigned shm_fdcap;
unsigned shm_fdhigh;
uint64_t shm_fds_scarce_until;
int shm_fds_scarce(void) {
  uint64_t u = __atomic_load_n(&shm_fds_scarce_until, __ATOMIC_RELAXED);
  return u != 0 && shm_now_ns() < u;
}
pthread_mutex_t shm_fdtab_lock = PTHREAD_MUTEX_INITIALIZER;

/* core/locks.h */
__thread int shm_tl_locks __attribute__((tls_model("initial-exec")));
__thread int shm_tl_ndeferred __attribute__((tls_model("initial-exec")));
static __thread int tl_deferred_fd[16] __attribute__((tls_model("initial-exec")));
void (*shm_deferred_close_hook)(int fd);

int shm_defer_close(int fd) {
  for (int i = 0; i < shm_tl_ndeferred; i++)
    if (tl_deferred_fd[i] == fd) return 0;
  if (!shm_deferred_close_hook || shm_tl_ndeferred == (int)(sizeof tl_deferred_fd / sizeof tl_deferred_fd[0]))
    return -1;
  tl_deferred_fd[shm_tl_ndeferred] = fd;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  shm_tl_ndeferred++;
  return 0;
}

static __thread int tl_running __attribute__((tls_model("initial-exec")));
void shm_run_deferred_closes(void) {
  /* A signal handler's read or write on top of this loop settles too: the loop
   * is this thread's, once (the handler's closes are appended, and made here). */
  if (tl_running) return;
  tl_running = 1;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  int e = errno;
  /* One at a time from the front: a handler that runs meanwhile (no lock is
   * held now) closes directly; one that defers (inside the hook's own locks)
   * appends, and is run by this loop or by the hook's last unlock. */
  while (shm_tl_ndeferred > 0) {
    int fd = tl_deferred_fd[0];
    for (int i = 1; i < shm_tl_ndeferred; i++) tl_deferred_fd[i - 1] = tl_deferred_fd[i];
    shm_tl_ndeferred--;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    shm_deferred_close_hook(fd);
  }
  errno = e;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  tl_running = 0;
}

void shm_locks_forked_child(void) {
  shm_tl_locks = 0;
  tl_running = 0;
  shm_locks_settle();
}

#define FDTAB_MAX (1u << 22)

static int ensure_table(void) {
  if (shm_fdtab_get()) return 0;
  struct rlimit rl;
  unsigned cap = 65536;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max > cap)
    cap = rl.rlim_max > FDTAB_MAX ? FDTAB_MAX : (unsigned)rl.rlim_max;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max == RLIM_INFINITY) cap = FDTAB_MAX;
  /* A large calloc is a fresh anonymous mapping: untouched pages cost nothing. It
   * is heap memory, so leak checkers see the connections it points to. */
  void *p = calloc(cap, sizeof(struct shm_fdslot));
  if (!p) return -1;
  __atomic_store_n(&shm_fdtab, (struct shm_fdslot *)p, __ATOMIC_RELEASE);
  __atomic_store_n(&shm_fdcap, cap, __ATOMIC_RELEASE);
  return 0;
}

int shm_fd_set_locked(int fd, int kind, void *p) {
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  if (kind == SHM_FD_NONE && !shm_fdtab_get()) return 0;
  if (ensure_table() < 0) return -1;
  if ((unsigned)fd >= shm_fdcap) {
    errno = EMFILE;
    return -1;
  }
  /* Readers check kind first, then p: publish p before kind, clear kind first. */
  if (kind == SHM_FD_NONE) {
    __atomic_store_n(&shm_fdtab_get()[fd].kind, SHM_FD_NONE, __ATOMIC_RELEASE);
    shm_fdtab_get()[fd].p = 0;
  } else {
    shm_fdtab_get()[fd].p = p;
    shm_fdtab_get()[fd].epoll_pre = 0;
    if ((unsigned)fd > __atomic_load_n(&shm_fdhigh, __ATOMIC_RELAXED)) /* read without the lock by scans */
      __atomic_store_n(&shm_fdhigh, (unsigned)fd, __ATOMIC_RELAXED);
    __atomic_store_n(&shm_fdtab_get()[fd].kind, kind, __ATOMIC_RELEASE);
  }
  return 0;
}

int shm_fdtab_ensure(void) {
  if (__atomic_load_n(&shm_fdcap, __ATOMIC_ACQUIRE)) return 0;
  shm_lock(&shm_fdtab_lock);
  int r = ensure_table();
  shm_unlock(&shm_fdtab_lock);
  return r;
}

int shm_fd_set(int fd, int kind, void *p) {
  shm_lock(&shm_fdtab_lock);
  int r = shm_fd_set_locked(fd, kind, p);
  shm_unlock(&shm_fdtab_lock);
  return r;
}

/* The top of the application's range (daemons and select() users live low),
 * from RLIMIT_NOFILE: read once, and again when the limit was lowered since (the
 * duplication then fails with EINVAL). Every negotiation hides one or two
 * descriptors: one system call less each. */
static long hide_floor(int reread) {
  static long cached;
  long floor = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (floor && !reread) return floor;
  struct rlimit rl;
  floor = 1024;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    floor = (long)rl.rlim_cur > 512 ? (long)rl.rlim_cur - 256 : (long)rl.rlim_cur / 2;
  __atomic_store_n(&cached, floor, __ATOMIC_RELAXED);
  return floor;
}

static int hide(int fd, int try_lock) {
  long nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, hide_floor(0));
  if (nfd < 0 && errno == EINVAL) nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, hide_floor(1));
  if (nfd < 0) nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 3);
  if (nfd < 0) return -1;
  shm_sys_close(fd);
  if (try_lock) {
    /* The logger may run with the table's lock held (by this very thread): mark
     * the number only if the lock is free, else it is still usable, unprotected. */
    if (shm_trylock(&shm_fdtab_lock) == 0) {
      shm_fd_set_locked((int)nfd, SHM_FD_INTERNAL, 0);
      shm_unlock(&shm_fdtab_lock);
    }
  } else if (shm_fd_set((int)nfd, SHM_FD_INTERNAL, 0) < 0) {
    /* Beyond the table: still usable, just not protected from dup2/close. */
  }
  return (int)nfd;
}

int shm_fd_hide(int fd) { return hide(fd, 0); }

void shm_fd_own(int fd, int *owner) {
  if (fd < 0) return;
  shm_lock(&shm_fdtab_lock);
  struct shm_fdslot *s = shm_fd_slot(fd);
  if (s && s->kind == SHM_FD_INTERNAL) s->p = owner;
  shm_unlock(&shm_fdtab_lock);
}

int *shm_fd_moved(int fd, int to) {
  shm_lock(&shm_fdtab_lock);
  struct shm_fdslot *s = shm_fd_slot(fd), *t = shm_fd_slot(to);
  int *owner = s && s->kind == SHM_FD_INTERNAL ? s->p : NULL;
  if (owner && __atomic_load_n(owner, __ATOMIC_RELAXED) == fd) {
    __atomic_store_n(owner, to, __ATOMIC_RELAXED);
    if (t && t->kind == SHM_FD_INTERNAL) t->p = owner;
  } else {
    owner = NULL;
  }
  if (s) s->p = NULL;
  shm_unlock(&shm_fdtab_lock);
  return owner;
}
int shm_fd_hide_trylock(int fd) { return hide(fd, 1); }

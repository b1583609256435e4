/* fork and process exit. A forked child holds every connection too: it is
 * counted in the segment, so that only the last holder's close tells the peer. */
#include <unistd.h>

#include "preload.h"

static unsigned fork_gen;
pid_t pl_pid;

static void for_each_conn(void (*fn)(int fd, struct shm_conn *c)) {
  if (!shm_fdtab) return;
  fork_gen++;
  for (unsigned fd = 0; fd < shm_fdcap && fd <= shm_fdhigh; fd++) {
    if (shm_fdtab[fd].kind != SHM_FD_CONN) continue;
    struct shm_conn *c = shm_fdtab[fd].p;
    if (c->fork_gen == fork_gen) continue; /* a dup of one already seen */
    c->fork_gen = fork_gen;
    fn((int)fd, c);
  }
}

static void hold_one_more(int fd, struct shm_conn *c) { shm_conn_hold(c, 1); }
static void hold_one_less(int fd, struct shm_conn *c) { shm_conn_hold(c, -1); }
static void child_reinit(int fd, struct shm_conn *c) { shm_conn_forked_child(c); }

SHM_EXPORT pid_t fork(void) {
  /* Count the child as a holder before it exists: if the parent closes its copy
   * first, it must not believe it was the last holder and close the rings. */
  for_each_conn(hold_one_more);
  pid_t p = REAL(fork)();
  if (p < 0) {
    int e = errno;
    for_each_conn(hold_one_less);
    errno = e;
  } else if (p == 0) {
    pl_pid = getpid();
    /* Only this thread exists in the child: locks held elsewhere are void. */
    pthread_mutex_init(&shm_fdtab_lock, NULL);
    pl_epoll_atfork_child();
    shm_conn_pool_forked_child();
    shm_negotiate_forked_child();
    for_each_conn(child_reinit);
    shm_stat_forked_child(); /* stats: the child never writes the parent's table */
  }
  return p;
}

static void exiting(int fd, struct shm_conn *c) { shm_conn_exit(fd, c); }

__attribute__((destructor)) static void shm_exit_conns(void) {
  int saved = errno;
  for_each_conn(exiting);
  errno = saved;
}

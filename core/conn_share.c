/* A connection that several of our processes hold (fork children, images it was
 * carried into by exec): each process keeps its own position in the rings and
 * takes it from the segment before it uses them (tx_resync, rx_resync). That is
 * enough for processes that take turns; two that write (or read) at the same time
 * copied into the same place of the ring and published over each other (bytes
 * lost, doubled or mixed, then a reset: tests/reliability/forkshare.sh `concw`).
 * The kernel keeps each send whole, whoever sends. So, while the segment counts
 * more than one holder on our side, a ring section is also entered under a word
 * of the segment that our processes share (shm_seg_side), besides the process's
 * own rlock or wlock. A process alone pays one load.
 *
 * The holder count only grows by a fork of a holder, whose prepare handler waits
 * for its own sections in flight first (shm_conn_fork_quiesce): a section that
 * began without the word (one holder) has ended before the child exists. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conn_int.h"
#include "log.h"
#include "wait.h"

/* Ours, for the word: set when the library is loaded (a new image too) and in a
 * fork child, never lazily (a vfork child would write its own into its parent's
 * memory). */
static uint32_t share_pid;
__attribute__((constructor)) static void share_init(void) { share_pid = (uint32_t)syscall(SYS_getpid); }
void shm_conn_share_forked_child(void) { share_init(); }
static uint32_t me(void) { return share_pid ? share_pid : (uint32_t)syscall(SYS_getpid); }

#define SIDE_HOLD_MAX_NS (2 * 1000000000ull)

static int take(uint32_t *w, uint32_t v) {
  uint32_t z = 0;
  return __atomic_compare_exchange_n(w, &z, v, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

/* The holder is gone (it died inside a section, or the word is a stale value of
 * ours): its section will never end. A zombie is gone too (its parent may be the
 * one waiting here, before it reaps). The pid may have been reused meanwhile;
 * then we wait for that process, which never takes the word, in steps. */
static int holder_gone(uint32_t v, uint32_t self) {
  pid_t p = (pid_t)(v & ~SHM_SIDE_WAITERS);
  if ((uint32_t)p == self) return 1; /* our threads take it under rlock or wlock only */
  if (p <= 0 || (kill(p, 0) < 0 && errno == ESRCH)) return 1;
  char path[32], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
  int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT;
  ssize_t n = syscall(SYS_read, fd, buf, sizeof buf - 1);
  syscall(SYS_close, fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *e = strrchr(buf, ')'); /* the state follows the command's name */
  return e && e[1] == ' ' && (e[2] == 'Z' || e[2] == 'X');
}

void conn_xlock_slow(struct shm_conn *c, int which) {
  uint32_t *w = &c->seg.base->side[c->role - 1].lock[which], self = me();
  if (take(w, self)) {
    c->xheld[which] = 1;
    return;
  }
  int e = errno;
  /* Sections are short (one copy of at most a publish chunk): yield to the
   * holder a few times before sleeping. */
  for (int i = 0; i < 16; i++) {
    sched_yield();
    if (take(w, self)) goto got;
  }
  uint64_t since = shm_now_ns();
  int timed_out = 0;
  for (;;) {
    uint32_t v = __atomic_load_n(w, __ATOMIC_RELAXED);
    if (v == 0) {
      /* Others may sleep too: whoever takes it after sleeping wakes them at the end. */
      if (take(w, self | SHM_SIDE_WAITERS)) goto got;
      continue;
    }
    /* Gone, or this wait has lasted SIDE_HOLD_MAX_NS, whoever held it meanwhile:
     * a section lasts a copy, so that is a process stopped inside one (SIGSTOP,
     * a debugger), or values the peer wrote (the segment is its to write too,
     * and it may change them, or wake us, to look busy): waiting longer would be
     * a hang the kernel never makes, even for a non-blocking call. Looked at on
     * every pass, whatever woke us. */
    int stuck = shm_now_ns() - since >= SIDE_HOLD_MAX_NS;
    if (stuck || (timed_out && holder_gone(v, self))) { /* (its process looked at after a 10 ms wait) */
      uint32_t was = __atomic_exchange_n(w, self | SHM_SIDE_WAITERS, __ATOMIC_ACQUIRE);
      if (stuck)
        SHM_LOG(WARN, "process %u held a section of a shared connection for 2 s (stopped, or the peer wrote it): taken over",
                (unsigned)(was & ~SHM_SIDE_WAITERS));
      else
        SHM_LOG(WARN, "process %u left a section of a shared connection unfinished: taken over",
                (unsigned)(was & ~SHM_SIDE_WAITERS));
      goto got;
    }
    if (!(v & SHM_SIDE_WAITERS) &&
        !__atomic_compare_exchange_n(w, &v, v | SHM_SIDE_WAITERS, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      continue;
    timed_out = shm_futex_wait(w, v | SHM_SIDE_WAITERS, 10 * 1000000) < 0 && errno == ETIMEDOUT;
  }
got:
  errno = e;
  c->xheld[which] = 1;
}

void conn_xunlock(struct shm_conn *c, int which) {
  c->xheld[which] = 0;
  uint32_t *w = &c->seg.base->side[c->role - 1].lock[which];
  if (__atomic_exchange_n(w, 0, __ATOMIC_RELEASE) & SHM_SIDE_WAITERS) {
    int e = errno;
    shm_futex_wake(w);
    errno = e;
  }
}

/* fork()'s prepare handler: no section of this process is in flight on c once
 * this returns 1 (its rlock and wlock taken; shm_conn_fork_release gives them
 * back). A lock held by a call asleep in the kernel before the switch-over (a
 * blocked plain send or receive: the kernel orders those) is waited for only a
 * while, shared by all connections of this fork (*budget_ns), then left: 0. */
int shm_conn_fork_quiesce(struct shm_conn *c, uint64_t *budget_ns) {
  pthread_mutex_t *l[2] = {&c->rlock, &c->wlock};
  int got = 0;
  for (int i = 0; i < 2; i++) {
    uint64_t t0 = 0, now = 0;
    for (;;) {
      if (pthread_mutex_trylock(l[i]) == 0) {
        got |= 1 << i;
        break;
      }
      now = shm_now_ns();
      if (!t0) t0 = now;
      if (now - t0 >= *budget_ns) break;
      sched_yield();
    }
    if (t0) *budget_ns = now - t0 >= *budget_ns ? 0 : *budget_ns - (now - t0);
  }
  c->fork_quiesced = got;
  return got == 3;
}

void shm_conn_fork_release(struct shm_conn *c) {
  if (c->fork_quiesced & 1) pthread_mutex_unlock(&c->rlock);
  if (c->fork_quiesced & 2) pthread_mutex_unlock(&c->wlock);
  c->fork_quiesced = 0;
}

/* The library's process-wide locks (the list and their order: preload/preload.h)
 * are taken through these, which count them per thread. A signal handler that
 * calls into the library on top of its own thread while that thread holds one
 * must not wait for it: it would wait for itself. close() is async-signal-safe
 * and a handler may close a connection (or an epoll set) at any moment, so such
 * a close is left to the thread, which makes it when it lets go of its last
 * counted lock (shm_defer_close; preload/fdops.c). The connections' own locks
 * are noted per thread instead (tl_rheld, tl_wheld, tl_lheld: core/conn.h). */
#ifndef SHMSHIM_LOCKS_H
#define SHMSHIM_LOCKS_H

#include <pthread.h>

extern __thread int shm_tl_locks __attribute__((tls_model("initial-exec")));
extern __thread int shm_tl_ndeferred __attribute__((tls_model("initial-exec")));
void shm_run_deferred_closes(void);
int shm_conn_thread_inside(void); /* core/conn.h: a connection's rlock, wlock or lock */

/* The deferred closes, if this thread holds none of the library's locks now (a
 * connection's included: a close takes the fd table's and the epoll locks, which
 * come before those). Also called where the library returns to the program. */
static inline void shm_locks_settle(void) {
  if (__builtin_expect(shm_tl_ndeferred != 0, 0) && !shm_tl_locks && !shm_conn_thread_inside())
    shm_run_deferred_closes();
}

/* Counted before the lock is taken (a handler between the two must see it) and
 * uncounted after it is let go. */
static inline void shm_locks_enter(void) {
  shm_tl_locks++;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
static inline void shm_locks_leave(void) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  --shm_tl_locks;
  shm_locks_settle();
}
static inline void shm_lock(pthread_mutex_t *l) {
  shm_locks_enter();
  pthread_mutex_lock(l);
}
static inline int shm_trylock(pthread_mutex_t *l) {
  shm_locks_enter();
  int r = pthread_mutex_trylock(l);
  if (r) shm_locks_leave();
  return r;
}
static inline void shm_unlock(pthread_mutex_t *l) {
  pthread_mutex_unlock(l);
  shm_locks_leave();
}

/* Inside a counted lock of this thread: the caller is a signal handler on top of
 * it (the library itself never calls the application's entry points there). */
static inline int shm_locks_held(void) { return shm_tl_locks > 0; }

/* close(fd) for later, when this thread lets go of its last counted lock: the
 * descriptor stays open until then. The hook does it (preload's close). 0, or -1
 * when the list (16 per thread) is full. */
extern void (*shm_deferred_close_hook)(int fd);
int shm_defer_close(int fd);
/* fork child: the only thread, the prepare handler's locks re-initialised; the
 * closes a handler left to the thread are made in the child too (its copies). */
void shm_locks_forked_child(void);

#endif

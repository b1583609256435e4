/* fd table: a flat array indexed by fd, so that the cost of an interposed call on a
 * file, pipe or untracked socket is one bounds check and one load.
 *
 * The array is reserved (not populated) the first time a socket is tracked, sized
 * from RLIMIT_NOFILE's hard limit; fds above it pass straight through to libc and
 * are simply never upgraded. Writers take shm_fdtab_lock; readers do not lock. */
#ifndef SHMSHIM_FDTAB_H
#define SHMSHIM_FDTAB_H

#include <pthread.h>
#include <stdint.h>

#include "locks.h"

enum shm_fd_kind {
  SHM_FD_NONE = 0,
  SHM_FD_CONN = 1,     /* application socket that is pending or upgraded */
  SHM_FD_INTERNAL = 2, /* one of ours: hidden from the application */
  SHM_FD_EPOLL = 3,    /* application epoll instance with upgraded members */
};

struct shm_fdslot {
  void *p;
  int kind;
  /* For an untracked fd: 1 + the epoll fd it was added to (-1: more than one), so
   * that connect() can take over a registration made before it (nginx adds its
   * upstream sockets to epoll before connecting them). Cleared by socket(). */
  int epoll_pre;
  /* For an epoll fd the shim does not track (yet): threads that may be asleep in
   * the kernel's epoll_wait on it (preload/epoll.c, untracked_wait). A member
   * added by another thread meanwhile must be armed, or they never hear of it. */
  int epoll_waiters;
};

extern struct shm_fdslot *shm_fdtab;
/* The table, made once (NULL before the first tracked descriptor): read through
 * this from any thread (its slots are then guarded as below). */
static inline struct shm_fdslot *shm_fdtab_get(void) { return __atomic_load_n(&shm_fdtab, __ATOMIC_ACQUIRE); }
extern unsigned shm_fdcap;
extern unsigned shm_fdhigh; /* highest fd ever tracked: bounds whole-table scans */
/* Until when (CLOCK_MONOTONIC ns; 0: never was) descriptors are scarce: the
 * application ran out of them (EMFILE) while we held some for its connections
 * (preload's pl_fds_give_back). Meanwhile none is spent on them beyond the
 * kernel's own: no segment memfd kept for an exec, no endpoint for a new client
 * connection (it stays plain). For SHM_FDS_SCARCE_NS after each give-back, not
 * for good: a program that ran out once, at a peak, upgrades again afterwards
 * (and if it runs out again, gives back again, at most once per period). */
#define SHM_FDS_SCARCE_NS 2000000000ull
extern uint64_t shm_fds_scarce_until; /* shm_now_ns() time */
int shm_fds_scarce(void);
extern pthread_mutex_t shm_fdtab_lock;

static inline struct shm_fdslot *shm_fd_slot(int fd) {
  return __builtin_expect((unsigned)fd < __atomic_load_n(&shm_fdcap, __ATOMIC_ACQUIRE), 0)
             ? &shm_fdtab_get()[fd]
             : 0;
}

/* Kind of fd (SHM_FD_NONE for anything untracked). */
static inline int shm_fd_kind(int fd) {
  struct shm_fdslot *s = shm_fd_slot(fd);
  return s ? __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) : SHM_FD_NONE;
}

/* Every descriptor the table tracks as a connection, lowest first (fd is an
 * unsigned declared by the loop; a dup of a connection is met once per number):
 *   SHM_FOR_EACH_CONN_FD(fd) { struct shm_conn *c = shm_fdtab_get()[fd].p; ... } */
#define SHM_FOR_EACH_CONN_FD(fd)                                                 \
  for (unsigned fd = 0; shm_fdtab_get() && fd < shm_fdcap && fd <= shm_fdhigh; fd++) \
    if (shm_fdtab_get()[fd].kind == SHM_FD_CONN)

static inline void *shm_fd_get(int fd, int kind) {
  struct shm_fdslot *s = shm_fd_slot(fd);
  if (!s || __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE) != kind) return 0;
  return s->p;
}

/* Sets (or with kind NONE clears) the slot for fd. -1/EMFILE when fd is beyond the
 * table (the caller then leaves the socket alone). Caller holds shm_fdtab_lock. */
int shm_fd_set_locked(int fd, int kind, void *p);
int shm_fd_set(int fd, int kind, void *p);

/* Makes sure the table exists (it is reserved at the first use). 0, or -1. */
int shm_fdtab_ensure(void);

/* Moves one of our own descriptors up out of the range applications use, marks it
 * internal and close-on-exec. Returns the new fd (the old one is closed), or -1. */
int shm_fd_hide(int fd);
/* (Nothing if fd is not one of our hidden ones.) The variable that holds hidden descriptor fd's number (a connection's endpoint,
 * kept endpoint connection or segment memfd): when the application dup2()s onto
 * fd, the library moves its descriptor and updates that variable
 * (shm_fd_moved). The variable must outlive the slot (connections are never
 * freed: a pool keeps them). */
void shm_fd_own(int fd, int *owner);
/* Hidden fd was moved to number to: its owner (if one was set and still names
 * fd) learns it. Returns the owner, or NULL. */
int *shm_fd_moved(int fd, int to);
/* The same, for the logger: marks the number only if the table's lock is free. */
int shm_fd_hide_trylock(int fd);

#endif

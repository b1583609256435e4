/* The reader's side of the published statistics (core/stats.h), for tools.
 *
 * A table is hostile input: another program may name a memfd "shmshim-stats", plant
 * one in a victim (through a unix socket), swap the descriptor for a FIFO or a
 * device between our listing and our look, or a broken process may scribble on
 * its own. The reader takes the descriptor without opening anything on the
 * process's behalf (pidfd_getfd, or an O_PATH handle proven to be a memfd before
 * it is reopened read-only: statread.c take_fd), requires a memfd created by one
 * of the process's uids (or root) and sealed against shrinking (so its mapping can
 * never fault), maps it PROT_READ, copies the header and each slot out (slots under
 * their sequence counter), and checks every field before anything is used. A slot
 * is shown only while the process still has that socket open, and each socket by
 * one slot at most: what a table costs the reader grows with the process's
 * sockets, not with what the table claims. */
#ifndef SHMSHIM_STATREAD_H
#define SHMSHIM_STATREAD_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

struct shm_statread_conn {
  struct shm_stat_slot s; /* validated copy */
  int fd;                 /* the process's descriptor for this socket now */
};

struct shm_statread_proc {
  int pid;
  char comm[32];
  struct shm_stat_hdr h; /* validated copy */
  uint64_t read_ns;      /* CLOCK_MONOTONIC when read */
  int nconns;
  struct shm_statread_conn *conns;
  unsigned invalid, unstable, stale; /* slots not shown: bad fields, changing, socket gone */
};

/* Which fd (if any) of the process is the socket with this inode: the fd, -1 if
 * none, -2 if another slot already claimed it (the slot is counted invalid). */
typedef int (*shm_statread_alive_fn)(uint32_t ino, void *arg);

/* Reads PID's table. 0, or -1 with errno: ESRCH no such process, EACCES not ours
 * to read, ENOENT no table (library not loaded, no connection yet, or
 * SHMSHIM_STATS=0), EPROTO/EPROTONOSUPPORT a table that fails validation (err says
 * why). */
int shm_statread_pid(int pid, struct shm_statread_proc *out, char *err, size_t errlen);
void shm_statread_free(struct shm_statread_proc *p);

/* Validates `size` bytes of a mapped table claimed by `pid` and copies the live
 * slots into out (the parts of shm_statread_pid that see the table's bytes). */
int shm_statread_parse(const void *map, size_t size, int pid, shm_statread_alive_fn alive, void *arg,
                       struct shm_statread_proc *out, char *err, size_t errlen);

/* Is libshmshim mapped in PID (per /proc/PID/maps)? 1 yes, 0 no, -1 with errno. */
int shm_statread_loaded(int pid);

#endif

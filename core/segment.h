/* The shared segment: one memfd per upgraded connection, created and sealed by the
 * accepting side, verified by the connecting side before it maps anything.
 *
 *   offset 0      struct shm_seg_hdr   written once by the creator
 *   offset 64     struct shm_seg_conn  the switch-over and each end's counts (2 lines)
 *   offset 192    ring ctl, client->server (4 lines)
 *   offset 448    ring ctl, server->client (4 lines)
 *   offset 704    each end's side locks (1 line each)
 *   offset 4096   data, client->server    (ring_size bytes)
 *   offset 4096+R data, server->client    (ring_size bytes)
 *
 * The geometry is a function of ring_size alone; the receiver computes it from its
 * own validated copy of the header and never re-reads header fields afterwards. */
#ifndef SHMSHIM_SEGMENT_H
#define SHMSHIM_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "ring.h"

#define SHM_SEG_MAGIC 0x314d4853484d4853ull /* "SHMSHM1" little-endian + '1' */
#define SHM_SEG_VERSION 5u /* 2: the server's direction switches too; 3: the client proves it holds its socket;
                             * 4: the armed flags on lines of their own; 5: the offer names the server's
                             * descriptor of its end */
#define SHM_SEG_HDR_SIZE 4096u
#define SHM_SEG_SEALS_REQUIRED 0x7 /* F_SEAL_SEAL|F_SEAL_SHRINK|F_SEAL_GROW */

enum { SHM_DIR_C2S = 0, SHM_DIR_S2C = 1 };

struct shm_seg_hdr {
  uint64_t magic;
  uint32_t version;
  uint32_t hdr_size;
  uint64_t seg_size;
  uint32_t ring_size;
  uint32_t flags;
};

/* The switch-over, one direction at a time (docs/design.md, Negotiation). A writer
 * switches from the socket to its ring only once it knows the reader will look at
 * the ring: the client when it takes the offer (the server made the segment), the
 * server once the client has said so here (`attached`). Each switch records how many
 * bytes went through the socket before it. */
struct shm_seg_conn {
  _Alignas(SHM_CACHELINE) uint32_t switched; /* client now writes to the ring */
  uint32_t attached;     /* client took the offer: it reads the ring once the server switches */
  uint64_t c2s_plain;    /* bytes the client wrote to the socket before switching */
  uint32_t holders[2];   /* processes holding each end (index: role - 1), for fork() */
  uint32_t s_switched;   /* server now writes to the ring */
  uint32_t srv_seen;     /* a server process has reported the outcome (logs, statistics) */
  uint64_t s2c_plain;    /* bytes the server wrote to the socket before switching */
  uint32_t gone[2];      /* each end's last holder has let go (index: role - 1): 1 closed,
                          * 2 reset (closed with unread data, or SO_LINGER {1,0}). Read by
                          * the other end's writers on every send: its own line stays
                          * shared, unlike the ring's consumer line */
  uint64_t urg[2];       /* TCP urgent data: 1 + the offset, in that end's ring stream, of its
                          * last urgent mark (0: none); the urgent byte itself travels
                          * through the socket as the kernel's out-of-band byte */
  uint32_t exec_ino[2];  /* each end's socket inode, written when it carries the connection
                          * over exec (core/inherit.c): ties the segment to that socket */
  uint32_t want_cred[2]; /* AF_UNIX: that end (index: role - 1) reads with SO_PASSCRED on: the
                          * other end's writer announces its credentials with a marker (the
                          * kernel fills them in) whenever they change. A lie only costs the
                          * liar's peer a marker per change of its credentials */
  uint64_t plain_read[2]; /* the other end's plain bytes that this end's processes have read
                           * from their socket (index: role - 1): a process that reads after a
                           * sibling did (fork) knows where the plain bytes end. Written and
                           * read by that end only (a lie moves the boundary of the liar's own
                           * stream) */
};

/* One end's own line (index: role - 1), written by that end's processes only:
 * while more than one of them holds the connection (fork children, images it was
 * carried into), a ring section (a write's, a read's) is entered under these
 * words, so that two processes never copy into, or out of, one place at once
 * (core/conn_share.c). 0: free; else the holder's pid, with SHM_SIDE_WAITERS
 * when a process sleeps on it. The peer can write them too: it can then make that
 * end's reads and writes wait, 2 s at most each (conn_xlock_slow). */
#define SHM_SIDE_WAITERS 0x80000000u
struct shm_seg_side {
  _Alignas(SHM_CACHELINE) uint32_t lock[2]; /* 0: the writers of our direction, 1: the readers of the peer's */
};

struct shm_seg_layout {
  _Alignas(SHM_CACHELINE) struct shm_seg_hdr hdr;
  struct shm_seg_conn conn;
  struct shm_ring_ctl ring[2];
  struct shm_seg_side side[2];
};

_Static_assert(sizeof(struct shm_seg_layout) <= SHM_SEG_HDR_SIZE, "header fits its page");

struct shm_seg {
  struct shm_seg_layout *base;
  size_t size;
  uint32_t ring_size;
  int fd; /* the memfd; -1 once closed (the mapping outlives it) */
  int spare; /* fd kept although the socket was close-on-exec (shm_seg_keep_spare) */
};

static inline size_t shm_seg_size_for(uint32_t ring_size) {
  return SHM_SEG_HDR_SIZE + 2 * (size_t)ring_size;
}

/* A connection whose socket is close-on-exec when it is upgraded needs its memfd
 * only if the program later makes the socket inheritable and execs or spawns
 * (python's sockets, accept4(SOCK_CLOEXEC) then a posix_spawn dup2 onto fd 1):
 * without it the new image cannot take the connection over, and it reads
 * ECONNRESET there. Such a memfd is kept as a spare while the process keeps
 * fewer than SHM_SEG_SPARES_MAX of them and fewer than a sixteenth of its
 * RLIMIT_NOFILE (a server with thousands of connections must not spend its
 * descriptors on them). 1: kept (s->spare set; shm_seg_close_fd gives it back). */
#define SHM_SEG_SPARES_MAX 64
int shm_seg_keep_spare(struct shm_seg *s);

/* Creates, sizes, seals, maps and initialises a segment. The memfd stays open in
 * s->fd (close-on-exec) until shm_seg_close_fd(). 0, or -1 with errno. */
int shm_seg_create(uint32_t ring_size, struct shm_seg *s);

/* Verifies and maps a segment received from a peer. Does not take ownership of fd.
 * Errors: EPERM not sealed against shrink/grow/re-sealing (or not a memfd);
 * EINVAL not a regular file or size out of range; EPROTO bad magic, header size or
 * geometry; EPROTONOSUPPORT other version; ENOMEM mapping failed. */
int shm_seg_attach(int fd, struct shm_seg *s);

/* The checks shm_seg_attach applies to its private copy of a peer's header, given
 * the size of the file it maps: 0, or the errno attach fails with (EPROTO,
 * EPROTONOSUPPORT). Pure, so that it can be fuzzed without a file. */
int shm_seg_hdr_check(const struct shm_seg_hdr *h, uint64_t file_size);

/* Local ring handle for one direction; producer or consumer role. */
void shm_seg_ring(const struct shm_seg *s, int dir, int role, struct shm_ring *r);

void shm_seg_close_fd(struct shm_seg *s);
/* Unmaps (and closes the fd if still open). */
void shm_seg_destroy(struct shm_seg *s);

#endif

/* Single-producer/single-consumer byte ring living in a shared segment.
 *
 * The shared part (struct shm_ring_ctl) holds two free-running 32-bit indices,
 * each on its own 64-byte line with the flags written by the same side. The
 * process-local part (struct shm_ring) holds the authoritative copy of our own
 * index and a validated cache of the peer's: the peer may be hostile, so nothing
 * it writes is trusted until checked, and our own index is never read back.
 * Memory-ordering argument and barrier pairing: docs/design.md, "Ring protocol". */
#ifndef SHMSHIM_RING_H
#define SHMSHIM_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SHM_CACHELINE 64

struct shm_ring_ctl {
  /* Line P: written by the producer only (a consumer going to sleep clears prod_fast). */
  _Alignas(SHM_CACHELINE) uint32_t head; /* bytes ever published, free-running */
  uint32_t wr_closed;                    /* producer shut down: EOF after the data */
  uint32_t data_seq;                     /* futex word, bumped to wake the consumer */
  uint32_t anc_seq;                      /* ancillary-data markers sent on the socket */
  uint32_t kicks;                        /* kick bytes this side sent on the socket (any reason): a hint */
  uint64_t woke_ns;                      /* CLOCK_MONOTONIC when the producer last woke a sleeper */
  uint32_t prod_fast;                    /* 1: the producer skips F2's fence; 2: a consumer is
                                          * answering with a membarrier (core/wait.c, fast mode) */
  /* Line C: written by the consumer only. */
  _Alignas(SHM_CACHELINE) uint32_t tail; /* bytes ever consumed, free-running */
  uint32_t rd_closed;                    /* consumer is gone: writes fail with EPIPE */
  uint32_t space_seq;                    /* futex word, bumped to wake the producer */
  /* Line PA: the producer's sleep (set by it, cleared by the consumer that wakes it). */
  _Alignas(SHM_CACHELINE) uint32_t prod_armed; /* producer is about to sleep for space */
  /* Line CA: the consumer's sleep and spin (the producer may clear cons_armed). */
  _Alignas(SHM_CACHELINE) uint32_t cons_armed; /* consumer is about to sleep for data */
  uint32_t spin_cpu;                     /* consumer waits for data, spinning, on CPU spin_cpu - 1
                                          * (0: not spinning): a hint */
  uint32_t cons_mb;                      /* this end's consumers can answer prod_fast (consent) */
};

_Static_assert(sizeof(struct shm_ring_ctl) == 4 * SHM_CACHELINE, "ring ctl is four lines");

enum shm_ring_role { SHM_RING_PRODUCER = 1, SHM_RING_CONSUMER = 2 };

struct shm_ring {
  struct shm_ring_ctl *ctl;
  unsigned char *data;
  uint32_t size; /* power of two, from the validated segment header copy */
  uint32_t mask;
  uint32_t pos;  /* our own index: head (producer) or tail (consumer) */
  uint32_t peer; /* last validated value of the other side's index */
  int role;
  int err;       /* sticky errno once the peer broke the ring */
  /* Producer, fast mode (core/wait.c): publishes in a row that found the
   * consumer awake, and whether this process set prod_fast. */
  uint32_t streak;
  int fast;
};

/* A contiguous piece of the data area: a reservation has at most two (wrap). */
struct shm_span {
  unsigned char *p;
  size_t len;
};

/* Sets up the local handle. ctl/data must lie inside a validated mapping. Does not
 * touch shared memory, so attaching never trusts the peer's indices as a start:
 * both sides start at 0 and the creator zeroes the segment. */
void shm_ring_init(struct shm_ring *r, struct shm_ring_ctl *ctl, unsigned char *data,
                   uint32_t size, int role);
/* Takes over a ring another process (this one before exec) was using: our index
 * and the cached peer index from the shared indices. -1/EPROTO if they are not
 * consistent. */
int shm_ring_resume(struct shm_ring *r);

/* Another process that holds the ring too (a fork child, a new image we
 * started) may have moved our index since we last used it: take it from the
 * shared index, forward only and only to a consistent pair (what a sibling of
 * ours can have done; anything else is ignored). Returns by how much it moved. */
uint32_t shm_ring_resync(struct shm_ring *r);

/* Producer. */
/* Free space, re-reading the consumer's index only when the cached value says less
 * than `want` is free. -1/EPROTO on a corrupt index, -1/EPIPE if the consumer left. */
ssize_t shm_ring_writable(struct shm_ring *r, size_t want);
/* Reserve up to `want` bytes as one or two spans; returns the total (0: full). */
ssize_t shm_ring_wreserve(struct shm_ring *r, size_t want, struct shm_span sp[2]);
/* Publish n reserved bytes with one release store. */
void shm_ring_wcommit(struct shm_ring *r, size_t n);
/* All `total` bytes of iov (total > 0, their sum) in one publish, or nothing:
 * total, 0 when the room is less, -1 (errno) when shm_ring_writable fails. */
ssize_t shm_ring_write_whole(struct shm_ring *r, const struct iovec *iov, int iovcnt, size_t total);
/* Gather write: copies as much as fits and publishes once. Returns bytes written,
 * 0 when full, -1 with errno (EPROTO, EPIPE). */
ssize_t shm_ring_writev(struct shm_ring *r, const struct iovec *iov, int iovcnt);
ssize_t shm_ring_write(struct shm_ring *r, const void *buf, size_t len);
/* Readiness looks, from any thread (a poller, a spinner) while the owner reads or
 * writes under its lock: bytes readable (consumer) / room (producer); the shared
 * index is read only when the owner's cached view shows less than want
 * (SIZE_MAX: always, for an exact count), and the owner's cache is left alone. -1 with errno once
 * the ring is broken or the peer's index is impossible. */
ssize_t shm_ring_look_readable(const struct shm_ring *r, size_t want);
ssize_t shm_ring_look_writable(const struct shm_ring *r, size_t want);
/* Half-close: after everything published so far the consumer sees EOF. */
void shm_ring_close_write(struct shm_ring *r);
/* Producer, while nothing else writes: if the consumer has taken every byte,
 * gives the data pages back to the kernel (MADV_REMOVE on the shared memory),
 * all but the page the next byte goes to. The consumer reads only published,
 * unconsumed bytes, so it never looks at them; the next writes fault fresh
 * zeroed pages in. Returns the bytes released, 0 if the ring is not empty. */
size_t shm_ring_release_idle(struct shm_ring *r);

/* Consumer. */
/* Bytes available, re-reading the producer's index only when the cache says fewer
 * than `want`. -1/EPROTO on a corrupt index. */
ssize_t shm_ring_readable(struct shm_ring *r, size_t want);
/* Up to `want` readable bytes as one or two spans, without consuming. */
ssize_t shm_ring_rpeek(struct shm_ring *r, size_t want, struct shm_span sp[2]);
/* Consume n bytes (n <= what rpeek returned) with one release store. */
void shm_ring_rconsume(struct shm_ring *r, size_t n);
/* Scatter read of everything available (up to the iovec's room), consumed with one
 * publish; with peek != 0 nothing is consumed. Returns bytes read; 0 at EOF (empty
 * and the producer closed); -1/EAGAIN when empty and open; -1/EPROTO when corrupt. */
ssize_t shm_ring_readv(struct shm_ring *r, const struct iovec *iov, int iovcnt, int peek);
ssize_t shm_ring_read(struct shm_ring *r, void *buf, size_t len, int peek);
/* The consumer is going away: the producer's next write fails with EPIPE. */
void shm_ring_close_read(struct shm_ring *r);
/* Producer has closed and every byte was consumed. */
int shm_ring_eof(struct shm_ring *r);

#endif

/* Per-process connection statistics, published for `shmshim stat`.
 *
 * Each process that tracks a connection keeps one table in a memfd named
 * "shmshim-stats", mapped MAP_SHARED and held on a hidden close-on-exec fd. A
 * reader (tools/, core/statread.c) finds it through /proc/PID/fd, opens that link
 * read-only and maps it PROT_READ: it sees exactly this table and nothing else of
 * the process, and the table disappears with the process (no file, no name).
 *
 * Nothing exists until the first tracked connection. Counters on the data path are
 * plain, unlocked adds into the connection's own slot (no system call, no atomic
 * read-modify-write): with several threads on one connection they are approximate.
 * Slots are taken and given back at connection set-up and teardown, under a lock.
 * Layout and the reader's rules: docs/design.md, "Statistics". */
#ifndef SHMSHIM_STATS_H
#define SHMSHIM_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SHM_STAT_MAGIC 0x53544154534d4853ull /* "SHMSTATS" little-endian */
#define SHM_STAT_VERSION 1u
#define SHM_STAT_MEMFD_NAME "shmshim-stats"
#define SHM_STAT_HDR_SIZE 512u
#define SHM_STAT_MAX_SLOTS 65536u

/* Why a candidate connection stayed plain (slot.why). */
enum shm_stat_why {
  SHM_WHY_NONE = 0,
  SHM_WHY_NOT_SHIMMED = 1,  /* the peer has no shim (no endpoint, or spoke without an offer) */
  SHM_WHY_DISABLED = 2,     /* excluded here by SHMSHIM_TCP, _UNIX, _PORTS_x or _PATHS_x */
  SHM_WHY_REFUSED = 3,      /* an offer or endpoint failed the credential/proof checks */
  SHM_WHY_FAILED = 4,       /* no resources for a segment, or the offer could not be sent/taken */
  SHM_WHY_UNKNOWN_PEER = 5, /* sock_diag could not identify the peer socket */
  SHM_WHY_SHORT = 6,        /* recent connections here were short-lived (SHMSHIM_SHORT_MS) */
  SHM_WHY_MAX = 6,
};

/* slot.state: the connection states of core/conn.h, 0 for a free slot. */
#define SHM_STAT_FREE 0

/* A socket address as getsockname/getpeername return it (truncated to fit). */
struct shm_stat_addr {
  uint16_t len;
  uint8_t sa[110];
};

struct shm_stat_slot {
  /* Line 0: counters, written only by the owning process, on the data path. */
  _Alignas(64) uint64_t tx_ring;          /* application bytes through the rings */
  uint64_t rx_ring;
  uint64_t tx_sock, rx_sock;              /* application bytes through the socket (before the switch-over) */
  uint64_t kicks_tx, kicks_rx;            /* wake-up bytes sent / consumed on the socket */
  uint64_t spins_won;                     /* waits that ended while spinning, without sleeping */
  uint64_t reserved0;
  /* Line 1 on: identity, written at set-up/teardown between two increments of seq
   * (odd while it changes: a reader retries). */
  _Alignas(64) uint32_t seq;
  uint8_t state, role, why, tracked; /* tracked: a connection record owns it (else: plain, watched by fd) */
  uint16_t family;
  uint16_t reserved1;
  int32_t fd;
  uint32_t ino, peer_ino; /* socket inodes: ours and, when known, the peer's */
  uint32_t ring_size;
  uint64_t opened_ns; /* CLOCK_MONOTONIC */
  struct shm_stat_addr local, peer;
};

struct shm_stat_hdr {
  uint64_t magic;
  uint32_t version;
  uint32_t hdr_size;  /* offset of slot 0 */
  uint32_t slot_size;
  uint32_t nslots;    /* slots that exist in the file (grows, never shrinks) */
  int32_t pid;        /* the owner, as getpid() saw it */
  uint32_t reserved;
  uint64_t created_ns; /* CLOCK_MONOTONIC */
  /* Process totals (copied at set-up and teardown, so up to one event late). */
  uint64_t upgraded_client, upgraded_server, plain_client, plain_server, offers_rejected;
  uint64_t reserved2;
  /* Connections whose slot was given back: how many, and what they moved. */
  uint64_t closed, closed_tx, closed_rx;
  uint64_t overflow; /* connections not shown because the table was full */
};

_Static_assert(sizeof(struct shm_stat_slot) == 384, "slot is six lines");
_Static_assert(sizeof(struct shm_stat_hdr) <= SHM_STAT_HDR_SIZE, "header fits");

/* Where counters go when there is no slot (stats off, table full, set-up failed):
 * process memory nobody reads, so the data path never tests for a slot. */
extern struct shm_stat_slot shm_stat_sink;

#define SHM_STAT_ADD(slot, field, n) ((slot)->field += (uint64_t)(n))

/* A tracked connection was created (state: pending or upgraded). Returns its slot,
 * or &shm_stat_sink. Never fails. */
struct shm_stat_slot *shm_stat_open(int fd, uint32_t ino, int role, int family, int state);
/* Addresses (NULL leaves one unchanged) and a new state for a connection's slot. */
void shm_stat_set_addr(struct shm_stat_slot *s, const struct sockaddr *local, socklen_t llen,
                       const struct sockaddr *peer, socklen_t plen);
void shm_stat_set_state(struct shm_stat_slot *s, int state, int why, uint32_t peer_ino,
                        uint32_t ring_size);
/* The connection is gone: its counts go to the closed totals, the slot is free. */
void shm_stat_close(struct shm_stat_slot *s);
/* A candidate connection the shim leaves to libc (no record tracks it): shown as
 * plain while fd still is that socket (checked by inode, here and by readers). */
void shm_stat_plain(int fd, uint32_t ino, int role, int family, int why, uint32_t peer_ino,
                    const struct sockaddr *local, socklen_t llen, const struct sockaddr *peer,
                    socklen_t plen);
/* In the child after fork(): the table as it was when the fork began becomes
 * private memory (the parent's is never written again), the process totals start
 * from zero, and the child publishes its own table at once if it holds any socket
 * of it (else at its next connection set-up). */
void shm_stat_forked_child(void);
/* Our hidden memfd was moved from one number to another (the application
 * dup2()ed onto it). */
void shm_stat_renumber(int from, int to);
/* fork(): the table's lock, taken before and released after (preload/preload.h);
 * taking it snapshots the table for the child. */
void shm_stat_fork_lock(int take);
/* SHMSHIM_STATS=2: one summary line on stderr (or SHMSHIM_LOG_FILE) at exit. */
void shm_stat_exit_summary(void);

/* v for a person to read, in at most n bytes of b: "9999", then "12.3K", "4.5M"
 * ... "1.2E" (powers of 1000), followed by unit when there is one, after a space
 * ("9999 B", "4.5 MB"). The one formatter of the exit summary and `shmshim stat`. */
void shm_stat_human(char *b, size_t n, uint64_t v, const char *unit);

#endif

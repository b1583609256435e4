/* A tracked connection: a pending client (waiting to learn whether its peer is
 * shimmed) or an upgraded one (bytes flow through the segment's rings).
 *
 * Every entry point takes the application's fd of the real socket, because the
 * socket stays the connection's identity: kicks travel through it, its readiness is
 * what the kernel's poll/epoll see, and its EOF is how a dead peer is noticed.
 * Protocol and invariants: docs/design.md. */
#ifndef SHMSHIM_CONN_H
#define SHMSHIM_CONN_H

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "config.h"
#include "locks.h"
#include "ring.h"
#include "segment.h"
#include "stats.h"
#include "wait.h"

/* A process that has never had a second thread: glibc's own flag, cleared by the
 * first pthread_create (glibc leaves out its stdio and malloc locks by it; a
 * program that makes threads with a bare clone() breaks those as well). Then
 * only a signal handler of the same thread can come between two instructions of
 * ours: a counter needs no bus lock, one instruction is enough
 * (SHM_ONE_THREAD_ADD: the old value, as __atomic_fetch_add), and a lock that
 * only threads of this process take (wlock, rlock) may be left out where the
 * per-thread notes (tl_wheld, tl_rheld) keep a handler off. x86-64 only, and
 * never under ThreadSanitizer, which would not see the instruction. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#include <sys/single_threaded.h>
#define SHM_ONE_THREAD() __builtin_expect(__libc_single_threaded, 0)
static inline int SHM_ONE_THREAD_ADD(int *p, int v) {
  __asm__ __volatile__("xaddl %0, %1" : "+r"(v), "+m"(*p) : : "memory", "cc");
  return v;
}
#else
#define SHM_ONE_THREAD() 0
static inline int SHM_ONE_THREAD_ADD(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
#endif

/* BROKEN: the peer's offer was valid but could not be taken; every call fails. */
enum shm_conn_state { SHM_CONN_PENDING = 1, SHM_CONN_UPGRADED = 2, SHM_CONN_PLAIN = 3, SHM_CONN_BROKEN = 4 };
enum shm_role { SHM_CLIENT = 1, SHM_SERVER = 2 };

struct shm_member;

/* Descriptors received through the socket, waiting for their stream position. */
struct shm_anc {
  struct shm_anc *next;
  uint64_t off; /* offset in the peer's ring stream of the first byte they go with */
  uint64_t seq;   /* markers queued on this connection up to this one (count: tail - head + 1) */
  uint64_t fdsum; /* descriptors queued on this connection up to this one, inclusive */
  int has_cred; /* the sender attached SCM_CREDENTIALS (checked by the kernel) */
  struct ucred cred;
  int nfds;
  int fds[];
};

struct shm_conn {
  /* Who may touch what: each group below names its guard. "atomic": read and
   * written with __atomic from any thread. "word": a flag written with one value
   * from any thread (CONN_WORD, CONN_SET). A field without a guard is set before
   * the connection is shared and only read after. */

  /* ---- Life: guarded as marked. ---- */
  /* Calls in flight on this connection (shm_conn_busy/put; an epoll_wait spin
   * holds the connections it watches). Never reset: the structure is never given back to malloc (a pool
   * keeps it), so a caller that raced with close() and lost only ever touches a
   * valid counter. Everything after `busy` is cleared when the pool reuses it. */
  int busy;
  int dead;      /* the last fd is closed: released when busy drops to 0 (atomic) */
  int finishing; /* claimed by whoever releases it (atomic) */
  int uncounted; /* released by a process the library never counted (shm_conn_unref_uncounted) */
  struct shm_conn *pool_next; /* pool_lock */
  pthread_mutex_t rlock, wlock, lock; /* order and per-thread notes: preload/preload.h */
  int refs;  /* fds in this process that refer to this connection (dup) (atomic) */
  int let_go;                 /* this process has given up its hold (exit) */
  unsigned fork_gen;          /* last walk of fork's handlers that saw it: a dup is skipped (fork_lock) */
  unsigned fork_counted;      /* the prepare walk whose count of the child reached the segment: a
                               * failed fork takes it back */
  int fork_quiesced;          /* rlock (1) and wlock (2) taken by fork's prepare handler (fork_lock) */
  int xheld[2];               /* the segment's side lock held: writers' (under wlock), readers' (rlock) */
  unsigned exec_gen;          /* last exec() that looked at it (preload/exec.c) */
  int exec_fd;                /* that exec carries it over as this fd (-1: not) */
  struct shm_member *members; /* epoll registrations (preload/epoll.c; ep_lock) */
  int nmembers;               /* how many (changed under ep_lock, read by anyone: atomic) */
  struct shm_stat_slot *st;   /* published counters (core/stats.h); never NULL */

  /* ---- Identity: set when the connection is tracked (or taken over after exec). ---- */
  int role;
  int family;
  uint32_t ino;        /* inode of our socket */
  uint64_t sock_dev;   /* server: our socket's device (the client's proof is on the same) */
  uint64_t dest_key;   /* client: its destination (negotiate.c, short-lived connections) */

  /* ---- Negotiation: under `lock`; state, attach_seen and peer_proven atomic. ---- */
  int state; /* SHM_CONN_* (atomic: shm_conn_state) */
  int endpoint;        /* client while pending: our hidden listener; server until the client has
                        * proved it holds its socket: the endpoint connection; else -1 */
  int offer_ignored;   /* client: an offer came from someone it could not verify */
  int offer_wait;      /* client while pending: an endpoint connection (hidden) from the
                        * right user on which no offer had come yet; else -1 */
  uint32_t offer_wait_ino; /* ... and the server socket's inode it was checked against */
  int fork_shared;     /* another process (a fork() child, a new image) got it while it was
                        * pending: a server's speaks for it too, a client's is never
                        * attached (upgrade lock) */
  uint32_t peer_ino;   /* server: the client's socket inode (statistics, the client's proof) */
  int peer_proven;     /* server: SHM_PROOF_* (atomic): may we believe what the segment says? */
  int attach_seen;     /* server: the client took the offer (atomic; logged once) */
  uint64_t born_ns;    /* server: when it was upgraded here (SHMSHIM_SHORT_MS), 0: not */
  int kicks_nodelay;   /* TCP: we set TCP_NODELAY (cleared TCP_CORK) for the kicks; from
                        * then on the application's settings are not passed on (atomic) */
  int resolve_waiters; /* threads asleep in shm_conn_resolve */
  int sleepers_rx, sleepers_tx; /* our waiters armed on the socket */
  /* Set under `lock` before state becomes UPGRADED, read-only after: */
  struct shm_seg seg;

  /* ---- Writing: under `wlock` (the producer side of `tx`). ---- */
  struct shm_ring tx;
  struct shm_spin spin_tx;     /* adaptive spin of a writer waiting for space */
  uint64_t plain_sent; /* bytes we wrote to the socket before our switch */
  int kick_owed;       /* the switch-over's kick, sent after the first publish */
  int plain_out_done;  /* our plain bytes have left the socket (atomic; conn.c tx_sock) */
  uint64_t tx_total;           /* bytes published to the ring */
  uint32_t tx_want;            /* room a blocked write waits for (0: one byte) */
  uint32_t tx_released;        /* tx head when its pages were last released (atomic) */
  uint32_t idle_head;          /* tx head seen by the last idle check */
  uint64_t idle_since;         /* ... and since when it has not moved */
  struct ucred tx_cred;        /* ours as last announced to the peer (pid 0: not yet, or stale) */

  /* ---- Reading: under `rlock` (the consumer side of `rx`). ---- */
  struct shm_ring rx;
  struct shm_spin spin_rx;     /* adaptive spin of a reader waiting for data */
  uint64_t sock_read;  /* data bytes we took from the socket (word: pollers read it) */
  uint64_t rx_plain;   /* how many socket bytes are data (valid once SHM_F_RX_SWITCHED; word:
                        * any thread that sees the switch first sets it) */
  uint64_t oob_taken;  /* the mark (urg value) whose byte the application read with
                        * recv(MSG_OOB): drains may pass it (a later byte's mark, not) */
  uint64_t inline_urg; /* SO_OOBINLINE: the mark (urg value) whose byte a read delivered */
  uint64_t rx_total;           /* bytes consumed from the ring */
  uint32_t anc_seen;           /* peer's anc_seq whose markers we collected */
  struct shm_anc *anc_head;    /* received descriptors, by stream offset */
  struct shm_anc *anc_tail;    /* the last one queued; valid while anc_head is not NULL */
  int *mk_fds, mk_nfds;        /* descriptors of a marker still being read */
  int mk_has_cred;             /* SCM_CREDENTIALS of a marker still being read */
  struct ucred mk_cred;
  unsigned char mk[9];         /* a marker split across socket reads */
  int mk_len;
  struct ucred rx_cred;        /* the credentials of the last marker read (pid 0: none yet) */
  struct ucred peer_cred;      /* the peer's SO_PEERCRED (pid 0: not read yet) */
  int passcred;                /* SO_PASSCRED on our socket: 0 unknown, 1 off, 2 on (atomic) */
  int rx_asleep;               /* blocked readers asleep on the socket, rlock let go (atomic) */
  uint32_t kicks_seen;         /* peer's kick count at the last epoll edge (atomic; shm_conn_edge_explained) */
  uint32_t edges_unread;       /* epoll edges left unread since the last drain (atomic) */
  int rx_batch;                /* the last common read (recv_fast) was short, from a producer in fast
                                * mode, and nothing was sent since: the next one lets it write more
                                * first (word) */

  /* ---- What the socket and the peer said, our shutdowns and switch-overs: one
   * word of SHM_F_* bits, from any thread, only through conn_flag, conn_flag_set
   * and conn_flag_claim; the pending error through CONN_WORD and CONN_SET (taken
   * with an exchange: reported once). ---- */
  unsigned flags;
  int sock_err;  /* errno the socket reported (ECONNRESET), 0 if none */

  /* ---- Readiness: atomic. ---- */
  int pollers_rx, pollers_tx;   /* of the sleepers, threads in poll/select */
  int blocking_seen;            /* O_NONBLOCK was seen clear (conn.c conn_nonblock) */
};

/* The status words of struct shm_conn: relaxed atomics (one value each, from any
 * thread, no order implied). */
#define CONN_WORD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define CONN_SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* shm_conn.flags: what happened to the connection, each bit set once and never
 * cleared while the structure serves it. */
enum {
  SHM_F_RD_SHUT = 1u << 0,      /* our reading side is shut down (shutdown SHUT_RD) */
  SHM_F_WR_SHUT = 1u << 1,      /* our writing side is shut down */
  SHM_F_SOCK_EOF = 1u << 2,     /* the socket reported end of file: the peer closed it */
  SHM_F_HUP = 1u << 3,          /* a reset was reported: POLLHUP from now on, as the kernel's closed socket */
  SHM_F_RESET_SEEN = 1u << 4,   /* the peer's reset (shm_seg_conn.gone == 2) was turned into sock_err */
  SHM_F_TCP_RST_OWED = 1u << 5, /* TCP: a send to a peer that closed was taken; the reset it provokes is due */
  SHM_F_TX_SWITCHED = 1u << 6,  /* we write to the ring (set under wlock; release) */
  SHM_F_RX_SWITCHED = 1u << 7,  /* the peer's switch point is known: rx_plain (release) */
};
/* Is bit f set? No order implied (the switch-overs have their own readers below). */
static inline int conn_flag(const struct shm_conn *c, unsigned f) {
  return (__atomic_load_n(&c->flags, __ATOMIC_RELAXED) & f) != 0;
}
/* Sets bit f; what was written before is visible to an acquiring reader of it. */
static inline void conn_flag_set(struct shm_conn *c, unsigned f) { __atomic_fetch_or(&c->flags, f, __ATOMIC_RELEASE); }
/* Sets bit f: 1 if this call set it, 0 if it was set already (one thread wins). */
static inline int conn_flag_claim(struct shm_conn *c, unsigned f) {
  return !(__atomic_fetch_or(&c->flags, f, __ATOMIC_ACQ_REL) & f);
}

/* c->lock, noted as held by this thread from just before it is taken to just after
 * it is let go: a signal handler of ours that finds the note must not take it (it
 * would wait for itself): it negotiates nothing, arms nothing, and its read fails
 * with EAGAIN (docs/design.md, Signal handlers). conn_lock returns the previous
 * note, for conn_unlock. */
extern __thread struct shm_conn *volatile tl_lheld __attribute__((tls_model("initial-exec")));
static inline struct shm_conn *conn_lock(struct shm_conn *c) {
  struct shm_conn *prev = tl_lheld;
  tl_lheld = c;
  pthread_mutex_lock(&c->lock);
  return prev;
}
static inline void conn_unlock(struct shm_conn *c, struct shm_conn *prev) {
  pthread_mutex_unlock(&c->lock);
  tl_lheld = prev;
  shm_locks_settle(); /* (a handler's close left to us while we held it) */
}
static inline int conn_lock_mine(const struct shm_conn *c) { return tl_lheld == c; }

/* Server: what the client's answer proved (shm_conn.peer_proven). Until PROVEN nothing
 * the client writes into the segment is honoured: it may come from whoever squatted
 * the endpoint's name (docs/security.md). */
enum { SHM_PROOF_NONE = 0, SHM_PROOF_OK = 1, SHM_PROOF_REFUSED = 2, SHM_PROOF_BUSY = 3, SHM_PROOF_LOST = 4 };

/* Server: has the client proved it holds the other end? Checks the answer queued
 * on the endpoint connection the first time the segment says "attached" (never
 * blocks). 1: yes (always for a client); 0: not (yet), or refused; -1: the answer
 * could not be read (no descriptor left): the connection must fail loudly. fd may
 * be -1 (then nothing is logged with a number). */
int shm_conn_verify_peer(int fd, struct shm_conn *c);
/* Server: is this thread inside that check for c (a signal handler on top of it)? */
int shm_conn_proving_here(struct shm_conn *c);

/* For preload/ (exec, spawn, dup2, close_range, shutdown), which does not reach
 * into the record: */
/* The segment's memfd kept for exec (-1: let go). */
int shm_conn_seg_fd(const struct shm_conn *c);
/* Lets the memfd kept for exec go (every descriptor of the connection is
 * close-on-exec now). */
void shm_conn_seg_fd_close(struct shm_conn *c);
/* Server whose client has not proved itself yet: the endpoint connection a new
 * image needs to check the answer (core/inherit.c); else -1. */
int shm_conn_unproven_endpoint(struct shm_conn *c);
/* Pending client handed to a new image that keeps it too: no server may connect to
 * its endpoint any more (shut in the open file both processes share). */
void shm_conn_endpoint_shut(struct shm_conn *c);
/* Pending connection whose writing side the application shut down on the socket:
 * if it switches later, its ring starts closed. */
void shm_conn_pending_wr_shut(struct shm_conn *c);
/* Server: looks up the other end's socket inode (c->peer_ino) from the kernel, for a
 * connection taken over after exec. 0, or -1. */
int shm_conn_learn_peer(int fd, struct shm_conn *c);
static inline int shm_conn_peer_proven(int fd, struct shm_conn *c) {
  if (c->role != SHM_SERVER || __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) == SHM_PROOF_OK) return 1;
  return shm_conn_verify_peer(fd, c);
}

/* AF_UNIX: if our socket has SO_PASSCRED on, ask the peer's writer to announce its
 * credentials (shm_seg_conn.want_cred). Called as the connection is upgraded, and
 * whenever a read finds the option on. */
void shm_conn_want_cred(int fd, struct shm_conn *c);

/* Process-wide counters, printed at exit with SHMSHIM_LOG=info. */
struct shm_stats {
  unsigned long upgraded_client, upgraded_server, plain_client, plain_server, offers_rejected;
};
extern struct shm_stats shm_stats;
/* Counted from any thread (a threaded server decides several connections at once). */
#define SHM_COUNT(field) __atomic_fetch_add(&shm_stats.field, 1, __ATOMIC_RELAXED)

/* Client, after the real connect() succeeded or started: records the local address
 * for the statistics, or (c NULL) a candidate connection the configuration
 * excludes. */
void shm_conn_client_connected(int fd, struct shm_conn *c, const struct sockaddr *addr, socklen_t len);
/* Client, before the real connect(): if the destination is eligible, listens on the
 * endpoint named after the socket's inode and returns a pending connection. NULL:
 * leave this socket alone. */
struct shm_conn *shm_conn_client_prepare(int fd, const struct sockaddr *addr, socklen_t len);
/* An upgraded connection ends here: remember whether it was short-lived. */
void shm_conn_note_life(struct shm_conn *c);
/* Server, right after the real accept(): a pending record if the connection is a
 * candidate (loopback TCP or AF_UNIX stream, allowed by the configuration); NULL:
 * leave it to libc. No offer yet, no system call on the peer's side: the offer is
 * made when this process first uses the connection through the interposed calls
 * (shm_conn_server_offer), so a connection handed to a new image by exec, or used
 * only through io_uring or stdio, stays plain. */
struct shm_conn *shm_conn_server_candidate(int fd);
/* Server, at the first use of a pending connection: offers a segment if the peer is
 * a shimmed process of the right user. Returns the new state (UPGRADED or PLAIN). */
int shm_conn_server_offer(int fd, struct shm_conn *c);
/* Server: the client has taken the offer (seen in the segment): the connection is
 * upgraded from now on, logged and counted once. At release (final), a client that
 * never took it is reported plain. */
void shm_conn_seen_attached(int fd, struct shm_conn *c, int final);
/* The connection must never be upgraded (it is about to be used where the shim does
 * not see: fdopen): a pending one settles plain now. Returns the state. */
int shm_conn_refuse(int fd, struct shm_conn *c, const char *why);

/* Pending client: look for an offer; decide plain if the peer has spoken without
 * one. wait: block until decided (honouring O_NONBLOCK/SO_RCVTIMEO is the caller's
 * business: it passes wait=0 for non-blocking sockets). Returns the new state, or
 * -1 with errno (EINTR, EAGAIN on timeout). With wait, the caller holds c busy
 * (one hold, taken by preload's pl_conn_any): a thread cancelled in the wait
 * gives that hold back. */
int shm_conn_resolve(int fd, struct shm_conn *c, int wait);
/* Pending client about to write: takes an offer that is already queued (never
 * waits, never looks at the socket). Returns the state. */
int shm_conn_resolve_for_write(int fd, struct shm_conn *c);
void shm_conn_free_endpoint(struct shm_conn *c);
/* Start writing to the ring if the peer will read it (caller holds c->wlock). The
 * kick that tells the peer is owed until the first publish, or until the caller
 * sends it with shm_conn_kick_owed() when nothing is to be published. */
void shm_conn_switch_tx(int fd, struct shm_conn *c);
void shm_conn_kick_owed(int fd, struct shm_conn *c);
/* The client has just attached (caller holds c->wlock): a server asleep on the
 * connection (an epoll member gone cold) is told now, by the switch-over kick if
 * one is owed, so that it sees the upgrade and switches its own direction without
 * waiting for our next write. */
void shm_conn_attach_wake(int fd, struct shm_conn *c);

/* Data path for a connection that is not PLAIN. flags: MSG_PEEK, MSG_DONTWAIT,
 * MSG_WAITALL, MSG_NOSIGNAL. Same return values and errno as the kernel's. */
/* mh (optional, recvmsg/sendmsg): its control buffer carries SCM_RIGHTS; on return
 * msg_controllen and msg_flags are set as the kernel would. */
ssize_t shm_conn_recv(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      struct msghdr *mh);
ssize_t shm_conn_send(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags,
                      const struct msghdr *mh);
/* send(MSG_OOB) on TCP: the data through the ring, the urgent byte through the
 * socket, its place in the stream recorded (the peer's reads stop there). */
ssize_t shm_conn_send_oob(int fd, struct shm_conn *c, const struct iovec *iov, int iovcnt, int flags);
/* SIOCATMARK for a connection whose reads come from the ring: 1 at the peer's urgent
 * mark, 0 not; -1: ask the kernel (its socket still carries the data). */
int shm_conn_at_mark(struct shm_conn *c);
/* The application took the urgent byte (recv(MSG_OOB) succeeded). */
void shm_conn_oob_taken(struct shm_conn *c);
/* Writes up to len bytes read from in_fd (sendfile/splice to an upgraded socket). */
ssize_t shm_conn_send_from_fd(int fd, struct shm_conn *c, int in_fd, off_t *off, size_t len);

/* Readiness as poll(2) bits (POLLIN, POLLOUT, POLLRDHUP, POLLHUP, POLLERR) for an
 * upgraded connection. */
int shm_conn_poll_bits(int fd, struct shm_conn *c);
/* Cheap check for spinning waiters: has the ring got data (or EOF) for us? */
int shm_conn_rx_ready(struct shm_conn *c);
/* When the peer last woke us for data (for the adaptive spin). */
uint64_t shm_conn_rx_woke_ns(struct shm_conn *c);
/* Declare we are about to sleep waiting for `events` (POLLIN/POLLOUT) so the peer
 * kicks the socket; *armed gets what was armed (POLLOUT only when the ring is
 * full); returns the readiness re-checked after the barrier. */
int shm_conn_arm(int fd, struct shm_conn *c, int events, int *armed);
/* Undo exactly one shm_conn_arm(): events is what it reported armed. */
void shm_conn_disarm(struct shm_conn *c, int events);
/* Idle rings give their memory back. A waiter that is about to sleep for longer
 * than SHMSHIM_IDLE_MS asks shm_conn_tx_used(); if so, it sleeps at most that
 * long, and whenever a sleep ends with nothing to report it calls
 * shm_conn_release_idle(), which returns the pages of our ring to the kernel once
 * nothing was written to it for SHMSHIM_IDLE_MS and the peer has read it all. */
#define SHM_IDLE_NS ((int64_t)shm_cfg.idle_ms * 1000000)
/* Has our ring carried enough since its pages were last released to be worth it? */
int shm_conn_tx_used(struct shm_conn *c); /* 0 when SHMSHIM_IDLE_MS is 0 */
void shm_conn_release_idle(struct shm_conn *c, uint64_t now_ns);
/* Waiting for `events` cannot rely on kicks (half-closed peer): the waiter must
 * bound its sleep and look again. */
int shm_conn_needs_timed_wait(struct shm_conn *c, int events);
/* Learns, without consuming kicks, whether the peer shut down or died. */
void shm_conn_probe(int fd, struct shm_conn *c);
/* A pending client's state changes under c->lock while other threads look at it
 * without the lock (fast paths, readiness): seeing UPGRADED must also show the
 * segment and rings set up before it (release in take_offer). */
static inline int shm_conn_state(struct shm_conn *c) { return __atomic_load_n(&c->state, __ATOMIC_ACQUIRE); }
/* Likewise the switch-over: our writer sets SHM_F_TX_SWITCHED under wlock; our
 * readers and pollers set SHM_F_RX_SWITCHED when they find the peer's switch in the
 * segment, after rx_plain. */
static inline int shm_conn_tx_switched(struct shm_conn *c) {
  return (__atomic_load_n(&c->flags, __ATOMIC_ACQUIRE) & SHM_F_TX_SWITCHED) != 0;
}
static inline int shm_conn_rx_switched(struct shm_conn *c) {
  return (__atomic_load_n(&c->flags, __ATOMIC_ACQUIRE) & SHM_F_RX_SWITCHED) != 0;
}
/* Our writes go to the ring (else to the socket, readiness for them is the socket's). */
/* (Once switched, our room is still the socket's until the plain bytes we wrote
 * before the switch have left it: plain_out_done, set by shm_conn_poll_bits.) */
static inline int shm_conn_tx_on_ring(struct shm_conn *c) {
  return shm_conn_state(c) == SHM_CONN_UPGRADED && shm_conn_tx_switched(c) &&
         __atomic_load_n(&c->plain_out_done, __ATOMIC_RELAXED);
}
/* For preload/, which does not reach into the record: */
/* Where the peer's writes (rx head) and our reader's consumption (tx tail) stand:
 * epoll's edge detection compares them with what it reported last. An upgraded
 * connection only. */
static inline uint32_t shm_conn_rx_head(struct shm_conn *c) {
  return __atomic_load_n(&c->rx.ctl->head, __ATOMIC_RELAXED);
}
static inline uint32_t shm_conn_tx_tail(struct shm_conn *c) {
  return __atomic_load_n(&c->tx.ctl->tail, __ATOMIC_RELAXED);
}
/* An epoll call spins on c's ring (on: 1) or stopped (0): its writer need not kick. */
static inline void shm_conn_spinning(struct shm_conn *c, int on) { shm_wait_spinning(&c->rx, on); }
/* More than one of our descriptors refers to c (dup). */
static inline int shm_conn_has_copies(struct shm_conn *c) { return __atomic_load_n(&c->refs, __ATOMIC_RELAXED) > 1; }
/* TCP: we set TCP_NODELAY (cleared TCP_CORK) for the kicks; the application's
 * settings are no longer passed on. */
static inline int shm_conn_kicks_nodelay(struct shm_conn *c) {
  return __atomic_load_n(&c->kicks_nodelay, __ATOMIC_ACQUIRE);
}
/* The kernel socket only signals the peer's exit now (it reached EOF): waiters
 * should not ask the kernel for POLLIN on it any more. */
static inline int shm_conn_sock_done(struct shm_conn *c) {
  return conn_flag(c, SHM_F_SOCK_EOF) || CONN_WORD(c->sock_err);
}
/* Consumes kick bytes waiting on the socket (only where the socket carries nothing
 * else) and records EOF/errors seen there. */
void shm_conn_drain(int fd, struct shm_conn *c);
/* The same for a waiter that woke on the socket: one that did not wait for input
 * leaves the kicks to our threads asleep waiting for data (a blocked read wakes on
 * them; consumed by another thread, they would leave it asleep with data there).
 * quick: up to the first short read (an epoll member whose event did not report
 * the peer's shutdown: a later end of file is a new edge). */
void shm_conn_drain_for(int fd, struct shm_conn *c, int wants_input, int quick);
/* poll/select: shm_conn_arm and shm_conn_disarm, counted as a poller; and the drain
 * after the kernel reported the socket, which leaves kicks that are still news for
 * another poller of ours. */
int shm_conn_arm_poller(int fd, struct shm_conn *c, int events, int *armed);
void shm_conn_disarm_poller(struct shm_conn *c, int armed);
/* Returns how many bytes it took from the socket (then the connection's epoll
 * members may have missed the kicks among them: pl_epoll_kicks_taken). Also
 * for an epoll_wait when pollers are counted. */
long shm_conn_drain_polled(int fd, struct shm_conn *c, int wants_input, int hup);
/* An epoll waiter heard an EPOLLIN edge on an upgraded connection's socket
 * (registered edge-triggered): 1 if the peer counted a kick since the last such
 * edge, so that the byte may stay unread for now; 0: drain (anything else may
 * have come, or SHM_EDGES_UNREAD edges were left unread in a row). */
int shm_conn_edge_explained(struct shm_conn *c);
/* True while socket bytes are still application data (pending, or before the peer's
 * switch-over point): readiness for reading is then the socket's own. */
int shm_conn_sock_is_data(struct shm_conn *c);

int shm_conn_shutdown(int fd, struct shm_conn *c, int how);
/* SO_ERROR: a reset the library learnt of (from the peer's close, or a socket
 * error its own reads consumed), returned once and cleared, as the kernel does. */
int shm_conn_take_error(struct shm_conn *c);
int shm_conn_fionread(int fd, struct shm_conn *c, int *out);
/* The application may have changed O_NONBLOCK (F_SETFL, FIONBIO). */
static inline void shm_conn_nonblock_changed(struct shm_conn *c) {
  __atomic_store_n(&c->blocking_seen, 0, __ATOMIC_RELAXED);
}
/* The application may have changed SO_PASSCRED (setsockopt). */
static inline void shm_conn_passcred_changed(struct shm_conn *c) {
  __atomic_store_n(&c->passcred, 0, __ATOMIC_RELAXED);
}

/* A zeroed connection (locks initialised, one fd reference), from the pool. */
struct shm_conn *shm_conn_alloc(void);

/* Our two rings in c->seg, by our role: the producer of our direction, the
 * consumer of the peer's, with our consent to the peer's fast mode (wait.c).
 * Once the segment is mapped: made, taken, or carried over exec. */
void shm_conn_rings(struct shm_conn *c);

/* Reference counting across dup() and fork(). */
void shm_conn_ref(struct shm_conn *c);
/* The fd is going away (its number is still open): when it was the last
 * reference, lets go of the connection now and releases its memory once no call
 * is in flight on it any more. */
void shm_conn_unref(int fd, struct shm_conn *c);
/* The same in a process the library never counted as a holder (clone() without
 * CLONE_VM, a raw fork system call): its copy of the record goes, nothing
 * shared is touched (no hold given up, no end of the rings, no drain). */
void shm_conn_unref_uncounted(struct shm_conn *c);
/* Is this thread inside a connection's read, write or negotiation (its locks)?
 * A signal handler that runs on top of that finds 1. */
int shm_conn_thread_inside(void);

/* Calls in flight: whoever holds a connection pointer across anything another
 * thread's close() could race with holds it busy. pl_conn_any() (preload/) is the
 * fd table look-up with that hold: NULL unless fd is (still) a connection. */
static inline void shm_conn_busy(struct shm_conn *c) {
  if (SHM_ONE_THREAD()) SHM_ONE_THREAD_ADD(&c->busy, 1);
  else __atomic_add_fetch(&c->busy, 1, __ATOMIC_SEQ_CST);
}
void shm_conn_put(struct shm_conn *c);
/* The process is exiting without closing: leave the peer a clean end of file. */
void shm_conn_exit(int fd, struct shm_conn *c);
/* fork(): one more (delta 1) or one fewer (-1, fork failed) process holds it.
 * 1: the segment's count changed (an upgraded connection). */
int shm_conn_hold(struct shm_conn *c, int delta);
/* In the child after fork(): re-initialise the connection's locks. */
void shm_conn_forked_child(struct shm_conn *c);
void shm_conn_pool_forked_child(void);
/* fork()'s prepare handler, before the child is counted (core/conn_share.c): no
 * read or write of this process is inside c's rings any more (its rlock and wlock
 * taken; a lock held by a call asleep in the kernel is waited for only while
 * *budget_ns lasts, shared by the fork's connections). 1: both taken. Given back
 * in the parent by shm_conn_fork_release; the child re-initialises them. */
int shm_conn_fork_quiesce(struct shm_conn *c, uint64_t *budget_ns);
void shm_conn_fork_release(struct shm_conn *c);
void shm_conn_share_forked_child(void);
/* fork() (preload/preload.h has the lock order): 0 takes the pool's lock and then
 * the upgrade lock, 1 releases both; 2/3 take and release the upgrade lock alone,
 * around a pending connection's change to UPGRADED (core/negotiate.c). */
void shm_conn_fork_lock(int op);
/* fork()'s prepare handler holds short_lock (core/negotiate.c) with take=1. */
void shm_negotiate_fork_lock(int take);
/* In a fork child: the short-lived record's lock may have been held by another
 * thread of the parent. */
void shm_negotiate_forked_child(void);

#endif

/* Negotiation: who is shimmed, and handing over the segment, without one byte in
 * the application's stream.
 *
 * Client (in connect): listens on the abstract name "\0shmshim/1/<inode of its
 * socket>", then connects. Server (at its first use of the connection): finds the
 * peer socket's inode and owner with sock_diag, connects to that name, checks that
 * the listener belongs to the peer socket's owner (a mapped uid), creates and
 * seals a segment and sends it with SCM_RIGHTS and its proof, keeping the endpoint
 * connection. The offer is queued before any byte the server sends: a client that
 * sees a byte (or EOF) on the socket and no offer knows its peer is not shimmed.
 * The client, taking the offer, answers with its own proof before it attaches; the
 * server believes nothing the segment says before it has checked that answer
 * (shm_conn_verify_peer). docs/design.md, "Negotiation", has the rest. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "negotiate_int.h"
#include "conn.h"
#include "diag.h"
#include "fdtab.h"
#include "log.h"
#include "offer.h"
#include "real.h"

struct shm_stats shm_stats;

socklen_t endpoint_name(uint32_t ino, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "shmshim/1/%u", ino);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int is_loopback(const struct sockaddr *a) {
  if (a->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
  if (a->sa_family == AF_INET6) {
    const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(x)) return 1;
    return IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127;
  }
  return 0;
}

static uint16_t port_of(const struct sockaddr *a) {
  return ntohs(a->sa_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
                                       : ((const struct sockaddr_in6 *)a)->sin6_port);
}

/* Short-lived connections (SHMSHIM_SHORT_MS).
 *
 * Negotiating costs about 0.25 ms (docs/design.md, Known limits): a connection
 * that carries one request and closes is several times slower upgraded than
 * plain. So each side watches how connections end and stops paying for those
 * that would not repay it:
 * - The server remembers whether each of its last SHORT_WIN upgraded connections
 *   was short-lived (closed within SHMSHIM_SHORT_MS, under SHORT_BYTES through
 *   the rings). While at least SHORT_SKIP of them were, and the last one ended
 *   less than SHORT_FORGET_NS ago, it offers only one new connection in
 *   SHORT_PROBE, and at most one per SHORT_PROBE_NS (whose fate keeps the
 *   record current); the others stay plain ("short-lived" in shmshim stat) and
 *   cost it no look-up at all. The probes are what churn still pays: one in 16
 *   alone was a negotiation every 16 connections, about 15 us per connection
 *   at 17,000 connections a second over AF_UNIX (0.82x plain).
 * - A client whose last SHORT_MISSES connections to one destination got no
 *   offer (an unshimmed server, or one that skips) does not set up its endpoint
 *   for new connections to it during SHORT_SKIP_NS, then tries again.
 * The price: a long-lived connection opened amid a stream of short ones to the
 * same server most likely stays plain, as it would be without the library. */
#define SHORT_WIN 16
#define SHORT_SKIP 12
#define SHORT_PROBE 16
#define SHORT_PROBE_NS 10000000ull
#define SHORT_BYTES (64u << 10)
#define SHORT_FORGET_NS 1000000000ull
#define SHORT_MISSES 8
#define SHORT_SKIP_NS 100000000ull
#define DEST_SLOTS 64

static pthread_mutex_t short_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  uint32_t bits;    /* bit i: the i-th last offer did not pay (short-lived, or no library at the other end) */
  uint32_t n;       /* outcomes recorded (saturates at SHORT_WIN) */
  uint32_t probe;   /* connections seen while skipping, since the last probe */
  uint64_t probe_ns; /* when the last probe was offered */
  uint64_t last_ns; /* when the last outcome was recorded */
} srv_short;
static struct {
  uint64_t key;        /* destination (dest_key), 0: free */
  uint32_t misses;     /* connections to it in a row that got no offer */
  uint64_t skip_until; /* no endpoint for it until then */
} dests[DEST_SLOTS];

/* Is /proc the one of our pid namespace (SO_PEERCRED's pids are ours)? Not in a
 * process that entered a pid namespace of its own without mounting a /proc for
 * it (unshare -p -f without --mount-proc): there /proc/self names us by the
 * outer number. -1: not looked at yet in this process (a fork child looks
 * again: it may be the first of a new pid namespace). */
static int proc_ours = -1;

int proc_is_ours(void) {
  int v = __atomic_load_n(&proc_ours, __ATOMIC_RELAXED);
  if (v >= 0) return v;
  char b[24];
  long n = syscall(SYS_readlinkat, AT_FDCWD, "/proc/self", b, sizeof b - 1);
  v = 0;
  if (n > 0) {
    b[n] = 0;
    v = strtol(b, NULL, 10) == (long)syscall(SYS_getpid);
  }
  __atomic_store_n(&proc_ours, v, __ATOMIC_RELAXED);
  return v;
}

void shm_negotiate_forked_child(void) {
  pthread_mutex_init(&short_lock, NULL);
  proc_ours = -1;
}
void shm_negotiate_fork_lock(int take) {
  if (take) shm_lock(&short_lock);
  else shm_unlock(&short_lock);
}

/* Returns 1 if this accepted connection should stay plain without a look-up. */
int server_skips(void) {
  if (!shm_cfg.short_ms) return 0;
  uint64_t now = shm_now_ns();
  shm_lock(&short_lock);
  int skip = srv_short.n >= SHORT_WIN && __builtin_popcount(srv_short.bits % (1u << SHORT_WIN)) >= SHORT_SKIP &&
             now - srv_short.last_ns < SHORT_FORGET_NS;
  if (skip && ++srv_short.probe >= SHORT_PROBE && now - srv_short.probe_ns >= SHORT_PROBE_NS) {
    skip = 0; /* the probe */
    srv_short.probe = 0;
    srv_short.probe_ns = now;
  }
  shm_unlock(&short_lock);
  return skip;
}

/* One outcome for the server's record: 1 if the offer did not pay. */
void note_outcome(int wasted) {
  uint64_t now = shm_now_ns();
  shm_lock(&short_lock);
  srv_short.bits = srv_short.bits << 1 | (uint32_t)wasted;
  if (srv_short.n < SHORT_WIN) srv_short.n++;
  srv_short.last_ns = now;
  shm_unlock(&short_lock);
}

void shm_conn_note_life(struct shm_conn *c) {
  if (!shm_cfg.short_ms) return;
  note_outcome(shm_now_ns() - c->born_ns < shm_cfg.short_ms * 1000000ull && c->tx_total + c->rx_total < SHORT_BYTES);
}

/* FNV-1a over what names the destination: family and port (TCP), path (unix). */
uint64_t dest_key(const struct sockaddr *a, socklen_t len) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char *p = (const unsigned char *)a;
  size_t n = len;
  unsigned char tcp[3];
  if (a->sa_family != AF_UNIX) {
    uint16_t port = port_of(a);
    tcp[0] = (unsigned char)a->sa_family;
    tcp[1] = (unsigned char)(port >> 8);
    tcp[2] = (unsigned char)port;
    p = tcp;
    n = sizeof tcp;
  }
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h ? h : 1;
}

int client_skips(uint64_t key) {
  if (!shm_cfg.short_ms) return 0;
  shm_lock(&short_lock);
  int skip = dests[key % DEST_SLOTS].key == key && shm_now_ns() < dests[key % DEST_SLOTS].skip_until;
  shm_unlock(&short_lock);
  return skip;
}

/* A pending client learnt its fate: offered (upgraded or not) or not offered. */
void client_offered(struct shm_conn *c, int offered) {
  if (!shm_cfg.short_ms || !c->dest_key) return;
  shm_lock(&short_lock);
  typeof(dests[0]) *d = &dests[c->dest_key % DEST_SLOTS];
  if (d->key != c->dest_key) {
    d->key = c->dest_key;
    d->misses = 0;
    d->skip_until = 0;
  }
  if (offered) d->misses = 0;
  else if (++d->misses >= SHORT_MISSES) {
    d->misses = 0;
    d->skip_until = shm_now_ns() + SHORT_SKIP_NS;
  }
  shm_unlock(&short_lock);
}


static int sock_int_opt(int fd, int level, int opt) {
  int v = -1;
  socklen_t l = sizeof v;
  if (syscall(SYS_getsockopt, fd, level, opt, &v, &l) < 0) return -1;
  return v;
}

/* Is a stream connection on this socket, to/from this address, ours to upgrade?
 * 1: yes. 0: not a candidate (not loopback TCP, not an AF_UNIX stream). -1: a
 * candidate that SHMSHIM_TCP, _UNIX, _PORTS_x or _PATHS_x exclude (shown as such by stat). */
int eligible(int fd, const struct sockaddr *a, socklen_t len) {
  if (shm_cfg.disable || len < sizeof(sa_family_t)) return 0;
  if (__atomic_load_n(&shm_uring_in_use, __ATOMIC_RELAXED)) return 0;
  if (sock_int_opt(fd, SOL_SOCKET, SO_TYPE) != SOCK_STREAM) return 0;
  switch (a->sa_family) {
    case AF_INET:
    case AF_INET6:
      if (!is_loopback(a)) return 0;
      if (sock_int_opt(fd, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP) return 0;
      return shm_cfg.tcp && shm_config_port_allowed(port_of(a)) ? 1 : -1;
    case AF_UNIX: {
      int plen = (int)len - (int)offsetof(struct sockaddr_un, sun_path);
      if (plen <= 0) return 0;
      const char *path = ((const struct sockaddr_un *)a)->sun_path;
      if (path[0] != '\0') plen = (int)strnlen(path, (size_t)plen);
      return shm_cfg.unix_ && shm_config_path_allowed(path, plen) ? 1 : -1;
    }
    default:
      return 0;
  }
}

/* Any setting that can exclude a candidate connection? */
int policy_set(void) {
  return !shm_cfg.tcp || !shm_cfg.unix_ || shm_cfg.n_ports_allow || shm_cfg.n_ports_deny ||
         shm_cfg.n_paths_allow || shm_cfg.n_paths_deny;
}

/* Ids that may name nobody in particular: the kernel reports a uid that is not
 * mapped in our user namespace as the overflow uid (/proc/sys/kernel/overflowuid,
 * 65534 by default), every foreign uid alike. Two of them comparing equal says
 * nothing: a server in a user namespace (systemd PrivateUsers=, a rootless
 * container on the host's network, unshare -U) would otherwise take any other user
 * for its peer. So the overflow uid matches only where no uid can be unmapped (our
 * user namespace maps all of them: the initial one, where 65534 is the real user
 * nobody, as for nginx's workers); -1 never (docs/security.md). Looked up only
 * when both ends read as the overflow uid, and then each time (a process may
 * enter another user namespace). */
static uint32_t overflow_uid(void) {
  static uint32_t cached; /* 0: not read yet (0 is never the overflow uid) */
  uint32_t v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (v) return v;
  v = 65534;
  int f = (int)syscall(SYS_openat, AT_FDCWD, "/proc/sys/kernel/overflowuid", O_RDONLY | O_CLOEXEC);
  if (f >= 0) {
    char b[16] = {0};
    long n = syscall(SYS_read, f, b, sizeof b - 1);
    shm_sys_close(f);
    if (n > 0) {
      unsigned long x = strtoul(b, NULL, 10);
      if (x > 0 && x < 0xffffffffu) v = (uint32_t)x;
    }
  }
  __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
  return v;
}

/* Does our user namespace map every uid (so that none reads as the overflow uid)? */
static int all_uids_mapped(void) {
  int f = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
  if (f < 0) return 0;
  char b[1024];
  long n = syscall(SYS_read, f, b, sizeof b - 1);
  shm_sys_close(f);
  if (n <= 0) return 0;
  b[n] = 0;
  unsigned long long total = 0;
  for (char *p = b; *p;) {
    char *end;
    strtoull(p, &end, 10); /* first uid inside */
    strtoull(end, &end, 10); /* first uid outside */
    unsigned long long count = strtoull(end, &end, 10);
    if (end == p) break;
    total += count;
    p = end;
    while (*p == ' ' || *p == '\n') p++;
  }
  return total >= 0xffffffffull;
}

/* Do uid a (as the kernel reported one end) and uid b (the other) name the same,
 * known user? */
int same_user(uint32_t a, uint32_t b) {
  if (a != b || a == UINT32_MAX) return 0;
  return a != overflow_uid() || all_uids_mapped();
}

int sock_ino(int fd, uint32_t *ino) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) < 0) return -1;
  *ino = (uint32_t)st.st_ino;
  return 0;
}

/* A connection whose descriptor would survive exec keeps its segment's memfd
 * (hidden, close-on-exec) so that exec can hand it to the new image
 * (core/inherit.c); the others keep it as a spare while few are kept
 * (shm_seg_keep_spare: the program may make the socket inheritable later), and
 * otherwise need no descriptor once mapped. Neither while the process has just
 * run out of descriptors (shm_fds_scarce). */
void keep_segfd_if_inheritable(int fd, struct shm_seg *seg) {
  long fl = syscall(SYS_fcntl, fd, F_GETFD);
  if (!shm_fds_scarce() &&
      ((fl >= 0 && !(fl & FD_CLOEXEC)) || shm_seg_keep_spare(seg))) {
    int h = shm_fd_hide(seg->fd);
    if (h >= 0) {
      seg->fd = h;
      return;
    }
  }
  shm_seg_close_fd(seg);
}

/* Once upgraded, a TCP socket carries only one-byte kicks, and each must leave at
 * once: Nagle's algorithm (with the peer's delayed ACK) or a cork would hold it
 * for up to 200 ms. The application's own TCP_NODELAY/TCP_CORK settings have
 * nothing left to act on, and are not passed on from now on (preload/fdops.c). */
void kicks_unbuffered(int fd, struct shm_conn *c) {
  if (c->family == AF_UNIX) return;
  int one = 1, zero = 0;
  syscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  syscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
  __atomic_store_n(&c->kicks_nodelay, 1, __ATOMIC_RELEASE);
}

struct shm_conn *conn_new(int role, int family) {
  struct shm_conn *c = shm_conn_alloc();
  if (!c) return NULL;
  c->role = role;
  c->family = family;
  shm_spin_init(&c->spin_rx, shm_cfg.spin_us);
  shm_spin_init(&c->spin_tx, shm_cfg.spin_us);
  return c;
}


/* Switch-over of our direction; caller holds c->wlock. Everything we wrote so far
 * went through the socket: tell the peer where the socket's data ends, then kick
 * once so that it looks. The client switches as soon as it has taken the offer
 * (the server made the segment, so it reads the ring); the server only once the
 * client has attached (A4, pairs with A3): before that the client may never look
 * at the ring (it exec'd, it reads through stdio), and our bytes must stay on the
 * socket, where it reads them. */
void shm_conn_switch_tx(int fd, struct shm_conn *c) {
  if (shm_conn_tx_switched(c) || shm_conn_state(c) != SHM_CONN_UPGRADED) return;
  struct shm_seg_conn *sc = &c->seg.base->conn;
  if (c->role == SHM_SERVER) {
    /* Our FIN already ended the stream on the socket: it stays the stream's end. */
    if (conn_flag(c, SHM_F_WR_SHUT) || __atomic_load_n(&sc->attached, __ATOMIC_ACQUIRE) != 1) return; /* A4 */
    /* ... and proved that it holds the other end (nothing before that). */
    if (shm_conn_peer_proven(fd, c) != 1) return;
    shm_conn_seen_attached(fd, c, 0);
    __atomic_store_n(&sc->s2c_plain, c->plain_sent, __ATOMIC_RELAXED);
    __atomic_store_n(&sc->s_switched, 1, __ATOMIC_RELEASE); /* S1, pairs with S2 */
  } else {
    __atomic_store_n(&sc->c2s_plain, c->plain_sent, __ATOMIC_RELAXED);
    __atomic_store_n(&sc->switched, 1, __ATOMIC_RELEASE); /* S1, pairs with S2 */
  }
  conn_flag_set(c, SHM_F_TX_SWITCHED);
  if (conn_flag(c, SHM_F_WR_SHUT)) shm_ring_close_write(&c->tx); /* the client half-closed while pending */
  /* The peer may be asleep on the socket waiting for our plain bytes: it needs a
   * kick, but one that finds the data behind it (a reader in flight while another
   * thread closes must not wake to an empty ring): the first publish sends it
   * (shm_conn_kick_owed), or the caller if nothing follows. */
  c->kick_owed = 1;
  SHM_LOG(DEBUG, "fd=%d: switched after %llu plain bytes", fd, (unsigned long long)c->plain_sent);
}

int shm_conn_seg_fd(const struct shm_conn *c) { return c->seg.fd; }
void shm_conn_seg_fd_close(struct shm_conn *c) { shm_seg_close_fd(&c->seg); }
int shm_conn_unproven_endpoint(struct shm_conn *c) {
  return c->role == SHM_SERVER && __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) == SHM_PROOF_NONE ? c->endpoint
                                                                                                      : -1;
}
void shm_conn_endpoint_shut(struct shm_conn *c) {
  if (c->endpoint >= 0) syscall(SYS_shutdown, c->endpoint, SHUT_RD);
}
void shm_conn_pending_wr_shut(struct shm_conn *c) { conn_flag_set(c, SHM_F_WR_SHUT); }

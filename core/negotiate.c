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
#include "conn.h"
#include "diag.h"
#include "fdtab.h"
#include "log.h"
#include "offer.h"
#include "real.h"

struct shm_stats shm_stats;

static void sys_close(int fd) { syscall(SYS_close, fd); }

static socklen_t endpoint_name(uint32_t ino, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "shmshim/1/%u", ino);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int is_loopback(const struct sockaddr *a) {
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
 *   SHORT_PROBE (whose fate keeps the record current); the others stay plain
 *   ("short-lived" in shmshim stat) and cost it no look-up at all.
 * - A client whose last SHORT_MISSES connections to one destination got no
 *   offer (an unshimmed server, or one that skips) does not set up its endpoint
 *   for new connections to it during SHORT_SKIP_NS, then tries again.
 * The price: a long-lived connection opened amid a stream of short ones to the
 * same server most likely stays plain, as it would be without the library. */
#define SHORT_WIN 16
#define SHORT_SKIP 12
#define SHORT_PROBE 16
#define SHORT_BYTES (64u << 10)
#define SHORT_FORGET_NS 1000000000ull
#define SHORT_MISSES 8
#define SHORT_SKIP_NS 100000000ull
#define DEST_SLOTS 64

static pthread_mutex_t short_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  uint32_t bits;    /* bit i: the i-th last offer did not pay (short-lived, or no library at the other end) */
  uint32_t n;       /* outcomes recorded (saturates at SHORT_WIN) */
  uint32_t probe;   /* connections seen while skipping */
  uint64_t last_ns; /* when the last outcome was recorded */
} srv_short;
static struct {
  uint64_t key;        /* destination (dest_key), 0: free */
  uint32_t misses;     /* connections to it in a row that got no offer */
  uint64_t skip_until; /* no endpoint for it until then */
} dests[DEST_SLOTS];
static __thread int client_skipped; /* the last client_prepare skipped (for the stats record) */

void shm_negotiate_forked_child(void) { pthread_mutex_init(&short_lock, NULL); }
void shm_negotiate_fork_lock(int take) {
  if (take) pthread_mutex_lock(&short_lock);
  else pthread_mutex_unlock(&short_lock);
}

/* Returns 1 if this accepted connection should stay plain without a look-up. */
static int server_skips(void) {
  if (!shm_cfg.short_ms) return 0;
  uint64_t now = shm_now_ns();
  pthread_mutex_lock(&short_lock);
  int skip = srv_short.n >= SHORT_WIN && __builtin_popcount(srv_short.bits % (1u << SHORT_WIN)) >= SHORT_SKIP &&
             now - srv_short.last_ns < SHORT_FORGET_NS && ++srv_short.probe % SHORT_PROBE != 0;
  pthread_mutex_unlock(&short_lock);
  return skip;
}

/* One outcome for the server's record: 1 if the offer did not pay. */
static void note_outcome(int wasted) {
  uint64_t now = shm_now_ns();
  pthread_mutex_lock(&short_lock);
  srv_short.bits = srv_short.bits << 1 | (uint32_t)wasted;
  if (srv_short.n < SHORT_WIN) srv_short.n++;
  srv_short.last_ns = now;
  pthread_mutex_unlock(&short_lock);
}

void shm_conn_note_life(struct shm_conn *c) {
  if (!shm_cfg.short_ms) return;
  note_outcome(shm_now_ns() - c->born_ns < shm_cfg.short_ms * 1000000ull && c->tx_total + c->rx_total < SHORT_BYTES);
}

/* FNV-1a over what names the destination: family and port (TCP), path (unix). */
static uint64_t dest_key(const struct sockaddr *a, socklen_t len) {
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

static int client_skips(uint64_t key) {
  if (!shm_cfg.short_ms) return 0;
  pthread_mutex_lock(&short_lock);
  int skip = dests[key % DEST_SLOTS].key == key && shm_now_ns() < dests[key % DEST_SLOTS].skip_until;
  pthread_mutex_unlock(&short_lock);
  return skip;
}

/* A pending client learnt its fate: offered (upgraded or not) or not offered. */
static void client_offered(struct shm_conn *c, int offered) {
  if (!shm_cfg.short_ms || !c->dest_key) return;
  pthread_mutex_lock(&short_lock);
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
  pthread_mutex_unlock(&short_lock);
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
static int eligible(int fd, const struct sockaddr *a, socklen_t len) {
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
static int policy_set(void) {
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
    sys_close(f);
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
  sys_close(f);
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
static int same_user(uint32_t a, uint32_t b) {
  if (a != b || a == UINT32_MAX) return 0;
  return a != overflow_uid() || all_uids_mapped();
}

static int sock_ino(int fd, uint32_t *ino) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) < 0) return -1;
  *ino = (uint32_t)st.st_ino;
  return 0;
}

/* A connection whose descriptor would survive exec keeps its segment's memfd
 * (hidden, close-on-exec) so that exec can hand it to the new image
 * (core/inherit.c); the others need no descriptor once mapped. */
static void keep_segfd_if_inheritable(int fd, struct shm_seg *seg) {
  long fl = syscall(SYS_fcntl, fd, F_GETFD);
  if (fl >= 0 && !(fl & FD_CLOEXEC)) {
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
static void kicks_unbuffered(int fd, struct shm_conn *c) {
  if (c->family == AF_UNIX) return;
  int one = 1, zero = 0;
  syscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  syscall(SYS_setsockopt, fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero);
  __atomic_store_n(&c->kicks_nodelay, 1, __ATOMIC_RELEASE);
}

static struct shm_conn *conn_new(int role, int family) {
  struct shm_conn *c = shm_conn_alloc();
  if (!c) return NULL;
  c->role = role;
  c->family = family;
  shm_spin_init(&c->spin_rx, shm_cfg.spin_us);
  shm_spin_init(&c->spin_tx, shm_cfg.spin_us);
  return c;
}

struct shm_conn *shm_conn_client_prepare(int fd, const struct sockaddr *addr, socklen_t len) {
  client_skipped = 0;
  uint64_t key = len >= sizeof(sa_family_t) ? dest_key(addr, len) : 0;
  /* Looked at before anything that costs a system call: while a destination
   * gives no offers, a connection to it costs what the kernel's does. */
  if (key && client_skips(key)) {
    client_skipped = 1;
    SHM_COUNT(plain_client);
    SHM_LOG(DEBUG, "plain fd=%d role=client: no offer on the last connections to this address", fd);
    return NULL;
  }
  if (eligible(fd, addr, len) <= 0) return NULL;
  uint32_t ino;
  if (sock_ino(fd, &ino) < 0) return NULL;
  int ep = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ep < 0) return NULL;
  struct sockaddr_un sa;
  socklen_t sl = endpoint_name(ino, &sa);
  /* A backlog above 1: an impostor's offer must not crowd out the real one. */
  if (syscall(SYS_bind, ep, &sa, sl) < 0 || syscall(SYS_listen, ep, 8) < 0) {
    SHM_LOG(DEBUG, "fd=%d: no endpoint (%s), staying plain", fd, strerror(errno));
    sys_close(ep);
    return NULL;
  }
  ep = shm_fd_hide(ep);
  if (ep < 0) return NULL;
  struct shm_conn *c = conn_new(SHM_CLIENT, addr->sa_family);
  if (!c) {
    shm_fd_set(ep, SHM_FD_NONE, NULL);
    sys_close(ep);
    return NULL;
  }
  c->state = SHM_CONN_PENDING;
  c->ino = ino;
  c->endpoint = ep;
  c->dest_key = key;
  c->st = shm_stat_open(fd, ino, SHM_CLIENT, addr->sa_family, SHM_CONN_PENDING); /* stats */
  shm_stat_set_addr(c->st, NULL, 0, addr, len);
  SHM_LOG(DEBUG, "fd=%d: pending, endpoint fd=%d ino=%u", fd, ep, ino);
  return c;
}

/* SO_PEERCRED's uid: for an accepted unix socket, the process that connected. */
static int peer_cred_uid(int fd, uint32_t *uid) {
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) return -1;
  *uid = cr.uid;
  return 0;
}

/* The peer socket's inode and its owner. AF_UNIX: the owner is the connecting
 * process's uid (SO_PEERCRED of our accepted socket; the client makes its
 * endpoint and its socket itself, before connect), which spares a second walk
 * of every unix socket in the kernel (docs/design.md, Known limits). */
static int peer_identity(int fd, int family, uint32_t own_ino, uint32_t *peer_ino, uint32_t *peer_uid) {
  if (family == AF_UNIX)
    return shm_diag_unix_peer_ino(own_ino, peer_ino) < 0 ? -1 : peer_uid ? peer_cred_uid(fd, peer_uid) : 0;
  struct sockaddr_storage self, peer;
  socklen_t l1 = sizeof self, l2 = sizeof peer;
  if (syscall(SYS_getsockname, fd, &self, &l1) < 0 || syscall(SYS_getpeername, fd, &peer, &l2) < 0)
    return -1;
  /* The peer's socket has the mirror image of our addresses. */
  return shm_diag_tcp(&peer, &self, peer_ino, peer_uid);
}

int shm_conn_learn_peer(int fd, struct shm_conn *c) {
  uint32_t uid;
  return peer_identity(fd, c->family, c->ino, &c->peer_ino, c->family == AF_UNIX ? NULL : &uid);
}

/* Statistics: an accepted candidate connection stays plain, for this reason. */
static void server_plain(int fd, int why, uint32_t ino, uint32_t peer_ino,
                         const struct sockaddr_storage *self, socklen_t sl,
                         const struct sockaddr_storage *peer, socklen_t pl) {
  if (!shm_cfg.stats || (!ino && sock_ino(fd, &ino) < 0)) return;
  shm_stat_plain(fd, ino, SHM_SERVER, self->ss_family, why, peer_ino, (const struct sockaddr *)self,
                 sl, self->ss_family == AF_UNIX ? NULL : (const struct sockaddr *)peer, pl);
}

/* Is an accepted connection a candidate? 1: yes (self/peer filled in); 0: not ours
 * to look at; -1: a candidate the configuration excludes. */
static int server_eligible(int fd, struct sockaddr_storage *self, socklen_t *sl,
                           struct sockaddr_storage *peer, socklen_t *pl) {
  if (syscall(SYS_getsockname, fd, self, sl) < 0) return 0;
  int el = eligible(fd, (struct sockaddr *)self, *sl);
  if (!el) return 0;
  if (self->ss_family != AF_UNIX &&
      (syscall(SYS_getpeername, fd, peer, pl) < 0 || !is_loopback((struct sockaddr *)peer)))
    return 0;
  return el;
}

struct shm_conn *shm_conn_server_candidate(int fd) {
  if (shm_cfg.disable) return NULL;
  if (server_skips()) {
    /* Decided here, first: a connection left plain is not tracked at all, and
     * costs nothing more than the kernel's (no look at its addresses, no record,
     * no statistics line, no offer path, no check at close). Counted only. */
    SHM_COUNT(plain_server);
    SHM_LOG(DEBUG, "plain fd=%d role=server: short-lived connections here lately (or clients without the library)", fd);
    return NULL;
  }
  struct sockaddr_storage self, peer;
  socklen_t sl = sizeof self, pl = sizeof peer;
  int el = server_eligible(fd, &self, &sl, &peer, &pl);
  if (el < 0) server_plain(fd, SHM_WHY_DISABLED, 0, 0, &self, sl, &peer, pl);
  if (el <= 0) return NULL;
  struct shm_conn *c = conn_new(SHM_SERVER, self.ss_family);
  if (c) c->state = SHM_CONN_PENDING;
  return c;
}

/* The offer's proof that it comes from whoever holds the server's end of the
 * connection: a descriptor of that very socket, opened O_PATH through our own
 * /proc/self/fd (only a holder of the descriptor, or someone allowed to ptrace us,
 * can open it). Unlike a duplicate of the socket it does not keep the socket open:
 * queued on the client's endpoint, it cannot hide our close or our death from a
 * client that has not taken the offer yet. fstat() on it gives the socket's inode. */
static int proof_fd(int fd) {
  char path[40];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return (int)syscall(SYS_openat, AT_FDCWD, path, O_PATH | O_CLOEXEC);
}

/* Creates the segment and sends the offer on endpoint connection es. Returns 0, or
 * -1 (logged; seg destroyed). */
static int send_offer(int fd, int es, uint32_t ino, uint32_t peer_ino, struct shm_seg *seg) {
  if (shm_seg_create((uint32_t)shm_cfg.ring_size, seg) < 0) {
    SHM_LOG(WARN, "fd=%d: cannot create segment: %s", fd, strerror(errno));
    return -1;
  }
  seg->base->conn.holders[SHM_CLIENT - 1] = 1;
  seg->base->conn.holders[SHM_SERVER - 1] = 1;
  int proof = proof_fd(fd);
  if (proof < 0) {
    SHM_LOG(WARN, "fd=%d: cannot open the offer's proof: %s", fd, strerror(errno));
    shm_seg_destroy(seg);
    return -1;
  }
  long n = shm_offer_send(es, seg->ring_size, peer_ino, ino, seg->fd, proof, MSG_DONTWAIT | MSG_NOSIGNAL);
  int e = errno;
  sys_close(proof);
  if (n != (long)sizeof(struct shm_offer)) {
    SHM_LOG(WARN, "fd=%d: offer not sent: %s", fd, strerror(e));
    shm_seg_destroy(seg);
    return -1;
  }
  return 0;
}

/* The offer, at the server's first use of the connection. Nothing reaches the
 * client's socket: until the client says it has attached, we write to the socket
 * (shm_conn_switch_tx), so a client that never takes the offer (it exec'd, reads
 * through stdio, closed) sees a plain connection, and one that closes without
 * reading never makes its kernel answer a byte of ours with a reset. */
/* Connects to the endpoint named after the peer socket's inode and checks that it
 * belongs to the peer socket's owner. The connected socket, or -1 (*why set,
 * logged and counted). */
static int reach_endpoint(int fd, uint32_t peer_ino, uint32_t peer_uid, int *why) {
  int es = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (es < 0) {
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: no socket for the offer: %s", fd, strerror(errno));
    return -1;
  }
  struct sockaddr_un sa;
  socklen_t alen = endpoint_name(peer_ino, &sa);
  if (syscall(SYS_connect, es, &sa, alen) < 0) {
    /* No endpoint: the peer is not shimmed (or not the kind we upgrade), or it
     * closed its socket (or exec'd), and with it its endpoint. */
    int e = errno;
    struct pollfd pf = {fd, POLLRDHUP, 0};
    int gone = syscall(SYS_poll, &pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
    *why = SHM_WHY_NOT_SHIMMED;
    /* An offer to a client without the library costs as much as a short-lived
     * upgrade (a look-up, an endpoint connect): a server whose clients mostly
     * run without it skips them as it skips short-lived ones (it used to run
     * connect-request-close from such clients at 0.55x plain). */
    if (shm_cfg.short_ms && !gone) note_outcome(1);
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: %s (%s)", fd, gone ? "peer closed its end" : "peer not shimmed",
            strerror(e));
    sys_close(es);
    return -1;
  }
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (syscall(SYS_getsockopt, es, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || !same_user(cr.uid, peer_uid)) {
    *why = SHM_WHY_REFUSED;
    SHM_COUNT(offers_rejected);
    SHM_LOG(WARN, "fd=%d: endpoint owned by uid %u, peer socket by uid %u%s: plain", fd, (unsigned)cr.uid,
            (unsigned)peer_uid, cr.uid == peer_uid ? " (the overflow uid: maybe not mapped in our user namespace)" : "");
    sys_close(es);
    return -1;
  }
  return es;
}

/* The offer was sent on es: the connection is offered (UPGRADED on our side,
 * waiting for the client's attach and answer). */
static void offered(int fd, struct shm_conn *c, int es, const struct stat *own, uint32_t peer_ino,
                    struct shm_seg *seg, const struct sockaddr_storage *self, socklen_t sl,
                    const struct sockaddr_storage *peer, socklen_t pl) {
  /* Kept until the client's answer proves that whoever took the offer holds the
   * other end of the connection (shm_conn_verify_peer): the endpoint's name may
   * have been squatted by a process of the same uid (a sandbox: abstract names
   * ignore mount namespaces and file permissions). */
  int kept = shm_fd_hide(es);
  if (kept < 0) {
    /* Without it no answer can be checked: the offer stands, but nothing the
     * segment says will ever be believed (plain at both ends). */
    SHM_LOG(WARN, "fd=%d: cannot keep the endpoint connection: %s", fd, strerror(errno));
    sys_close(es);
    c->peer_proven = SHM_PROOF_REFUSED;
  }
  c->endpoint = kept;
  c->sock_dev = (uint64_t)own->st_dev;
  keep_segfd_if_inheritable(fd, seg);
  c->ino = (uint32_t)own->st_ino;
  c->seg = *seg;
  shm_seg_ring(&c->seg, SHM_DIR_S2C, SHM_RING_PRODUCER, &c->tx);
  shm_seg_ring(&c->seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &c->rx);
  c->born_ns = shm_now_ns();
  c->peer_ino = peer_ino;
  shm_conn_want_cred(fd, c); /* before the client can write: it reads the segment once it attaches */
  /* Shown pending until the client takes the offer (shm_conn_seen_attached). */
  c->st = shm_stat_open(fd, c->ino, SHM_SERVER, self->ss_family, SHM_CONN_PENDING); /* stats */
  shm_stat_set_addr(c->st, (const struct sockaddr *)self, sl,
                    self->ss_family == AF_UNIX ? NULL : (const struct sockaddr *)peer, pl);
  shm_conn_fork_lock(2); /* a fork() child holds it iff it was counted */
  __atomic_store_n(&c->state, SHM_CONN_UPGRADED, __ATOMIC_RELEASE);
  shm_conn_fork_lock(3);
  SHM_LOG(DEBUG, "offered fd=%d role=server ring=%u", fd, seg->ring_size);
}

static int offer_locked(int fd, struct shm_conn *c) {
  struct sockaddr_storage self, peer;
  socklen_t sl = sizeof self, pl = sizeof peer;
  uint32_t ino = 0, peer_ino = 0, peer_uid;
  int why = SHM_WHY_FAILED; /* stats: why the connection stays plain if it does */
  int es = -1;
  struct shm_seg seg = {.fd = -1};
  if (server_eligible(fd, &self, &sl, &peer, &pl) <= 0) {
    /* It was a candidate at accept(): the peer has closed since (no peer name). */
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: peer closed its end before the first use", fd);
    __atomic_store_n(&c->state, SHM_CONN_PLAIN, __ATOMIC_RELEASE);
    return SHM_CONN_PLAIN;
  }
  struct stat own;
  if (syscall(SYS_fstat, fd, &own) < 0) {
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: fstat failed: %s", fd, strerror(errno));
    goto plain;
  }
  ino = (uint32_t)own.st_ino;
  if (peer_identity(fd, self.ss_family, ino, &peer_ino, &peer_uid) < 0) {
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: peer socket not found (closed already?): %s", fd, strerror(errno));
    why = SHM_WHY_UNKNOWN_PEER;
    goto plain;
  }
  if ((es = reach_endpoint(fd, peer_ino, peer_uid, &why)) < 0) goto plain;
  if (send_offer(fd, es, ino, peer_ino, &seg) < 0) {
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: the offer could not be made", fd);
    goto plain;
  }
  offered(fd, c, es, &own, peer_ino, &seg, &self, sl, &peer, pl);
  return SHM_CONN_UPGRADED;
plain:
  if (es >= 0) sys_close(es);
  server_plain(fd, why, ino, peer_ino, &self, sl, &peer, pl);
  __atomic_store_n(&c->state, SHM_CONN_PLAIN, __ATOMIC_RELEASE);
  return SHM_CONN_PLAIN;
}

static void drop_endpoint(struct shm_conn *c);

/* Reads (peeks: after a fork the other process checks the same answer) the client's
 * answer on the endpoint connection and checks it. SHM_PROOF_OK, _REFUSED (no
 * answer, or a wrong one: whoever attached did not prove it holds the other end),
 * or _LOST (a right client's answer could not be received: no descriptor left). */
static int check_answer(int fd, struct shm_conn *c) {
  if (c->endpoint < 0) return SHM_PROOF_REFUSED;
  struct shm_proof pr;
  int got = -1, nfds, mflags;
  /* The answer is queued before the client marks the segment attached (it sends it
   * first, and a unix send lands in our queue at once): nothing to wait for. */
  long n = shm_msg_recv(c->endpoint, &pr, sizeof pr, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC, &got, 1,
                        &nfds, &mflags);
  int e = errno;
  const char *why = n < 0 ? (e == EAGAIN ? "attached without an answer" : "answer unreadable")
                          : shm_proof_check(&pr, n, mflags, nfds, c->peer_ino, c->ino);
  int lost = n >= 0 && (mflags & MSG_CTRUNC) && nfds == 0;
  if (!why) {
    struct stat st;
    if (syscall(SYS_fstat, got, &st) < 0 || !S_ISSOCK(st.st_mode) || (uint64_t)st.st_dev != c->sock_dev ||
        (uint32_t)st.st_ino != c->peer_ino)
      why = "the answer's proof is not the other end of the connection";
  }
  if (got >= 0) sys_close(got);
  if (!why) return SHM_PROOF_OK;
  SHM_COUNT(offers_rejected);
  if (lost) {
    SHM_LOG(WARN, "fd=%d: the client's answer could not be received (no descriptor left): connection reset", fd);
    return SHM_PROOF_LOST;
  }
  SHM_LOG(WARN, "fd=%d: %s: whoever took the offer did not prove it holds the other end; "
                "nothing it writes is believed, the connection stays plain", fd, why);
  return SHM_PROOF_REFUSED;
}

int shm_conn_verify_peer(int fd, struct shm_conn *c) {
  if (c->role != SHM_SERVER) return 1;
  int p = __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE);
  if (p == SHM_PROOF_NONE) {
    /* Nothing to check before the segment says "attached" (the answer precedes it). */
    if (shm_conn_state(c) != SHM_CONN_UPGRADED || !c->seg.base ||
        __atomic_load_n(&c->seg.base->conn.attached, __ATOMIC_ACQUIRE) != 1)
      return 0;
    /* One thread checks; the others go on as if the client had not attached yet
     * (our bytes on the socket, its bytes read from the socket): still true. */
    if (!__atomic_compare_exchange_n(&c->peer_proven, &p, SHM_PROOF_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      return p == SHM_PROOF_OK ? 1 : p == SHM_PROOF_LOST ? -1 : 0;
    p = check_answer(fd, c);
    drop_endpoint(c); /* decided (a fork child checks its own copy) */
    __atomic_store_n(&c->peer_proven, p, __ATOMIC_RELEASE);
    if (p == SHM_PROOF_OK) SHM_LOG(DEBUG, "fd=%d: the client proved it holds the other end", fd);
    if (p == SHM_PROOF_LOST && fd >= 0) syscall(SYS_shutdown, fd, SHUT_RDWR); /* loudly, both ends */
  }
  return p == SHM_PROOF_OK ? 1 : p == SHM_PROOF_LOST ? -1 : 0;
}

void shm_conn_seen_attached(int fd, struct shm_conn *c, int final) {
  if (c->role != SHM_SERVER || shm_conn_state(c) != SHM_CONN_UPGRADED || !c->seg.base ||
      __atomic_load_n(&c->attach_seen, __ATOMIC_ACQUIRE))
    return;
  struct shm_seg_conn *sc = &c->seg.base->conn;
  /* At the end, only the last holder speaks for the connection: a fork child or an
   * exec'd image that holds it too sees the outcome itself. */
  if (final && __atomic_load_n(&sc->holders[SHM_SERVER - 1], __ATOMIC_ACQUIRE) > 1) return;
  int attached = __atomic_load_n(&sc->attached, __ATOMIC_ACQUIRE) == 1; /* A4 */
  if (attached) {
    int p = shm_conn_verify_peer(fd, c);
    if (p == 0 && __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) == SHM_PROOF_BUSY) return; /* another thread */
    attached = p == 1;
    if (!attached) final = 1; /* refused: decided */
  }
  if (!attached && !final) return;
  if (!attached && __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) == SHM_PROOF_NONE) {
    /* A client that never attached: withdraw the offer, so that it cannot attach
     * from now on (it would be upgraded alone: harmless for the bytes, which went
     * through the socket, but untrue), unless it attached just now. */
    uint32_t zero = 0;
    if (!__atomic_compare_exchange_n(&sc->attached, &zero, 2, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      attached = zero == 1 && shm_conn_verify_peer(fd, c) == 1;
  }
  __atomic_store_n(&c->attach_seen, 1, __ATOMIC_RELEASE);
  /* From now on our socket carries kicks only (we switch at our next write): as
   * the client does at its attach, never let Nagle or a cork hold one (rsync,
   * which sets no TCP_NODELAY, waited ~40 ms for each). */
  if (attached && fd >= 0 && !final) kicks_unbuffered(fd, c);
  /* Reported once per connection, by whichever of our processes sees it first. */
  if (__atomic_exchange_n(&sc->srv_seen, 1, __ATOMIC_ACQ_REL)) return;
  if (!attached) {
    int refused = __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE) >= SHM_PROOF_REFUSED;
    SHM_COUNT(plain_server);
    shm_stat_set_state(c->st, SHM_CONN_PLAIN, refused ? SHM_WHY_REFUSED : SHM_WHY_NOT_SHIMMED, c->peer_ino,
                       0); /* stats */
    SHM_LOG(INFO, "plain fd=%d role=server: %s", fd,
            refused ? "the offer was taken without proof of holding the other end"
                    : "the client never took the offer");
    return;
  }
  SHM_COUNT(upgraded_server);
  shm_stat_set_state(c->st, SHM_CONN_UPGRADED, SHM_WHY_NONE, c->peer_ino, c->seg.ring_size); /* stats */
  SHM_LOG(INFO, "upgraded fd=%d role=server family=%s ring=%u", fd,
          c->family == AF_UNIX ? "unix" : c->family == AF_INET ? "tcp4" : "tcp6", c->seg.ring_size);
}

int shm_conn_server_offer(int fd, struct shm_conn *c) {
  pthread_mutex_lock(&c->lock);
  int st = c->state == SHM_CONN_PENDING ? offer_locked(fd, c) : c->state;
  pthread_mutex_unlock(&c->lock);
  return st;
}

/* The socket at the other end of our connection: its inode and its owner. TCP:
 * sock_diag on the mirrored 4-tuple, in our network namespace (a pair built
 * elsewhere, or a UDP socket with the same addresses, is not it). AF_UNIX: the
 * peer unix_diag names; as its owner first the uid that SO_PEERCRED gives on our
 * socket (the process that called listen()), which is the offering process's in
 * the common case and costs no walk of every unix socket; take_offer asks
 * unix_diag for the real owner (the process that accepted it) only when that
 * one differs (*hint set): nginx's workers accept and offer as another user than
 * the master that listens. A server that has closed its socket since it offered is
 * answered "gone" (inode 0, or no such connection: never the listener on its
 * port, shm_diag_tcp), and its offer ignored as withdrawn: the offer's O_PATH
 * proof keeps the inode, not the connection. */
static int server_identity(int fd, struct shm_conn *c, uint32_t *ino, uint32_t *uid, int *hint) {
  *hint = c->family == AF_UNIX;
  if (c->family == AF_UNIX) return shm_diag_unix_peer_ino(c->ino, ino) < 0 ? -1 : peer_cred_uid(fd, uid);
  struct sockaddr_storage self, peer;
  socklen_t l1 = sizeof self, l2 = sizeof peer;
  if (syscall(SYS_getsockname, fd, &self, &l1) < 0 || syscall(SYS_getpeername, fd, &peer, &l2) < 0)
    return -1;
  return shm_diag_tcp(&peer, &self, ino, uid);
}

/* Reads one offer from an accepted endpoint connection and checks it. Returns the
 * segment fd, or -1 (the offer is ignored). */
static int read_offer(int fd, struct shm_conn *c, int a, uint32_t srv_ino, dev_t sock_dev) {
  struct shm_offer off;
  int got[2] = {-1, -1}, nfds, mflags;
  long n = shm_msg_recv(a, &off, sizeof off, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, got, 2, &nfds, &mflags);
  int rerr = errno;
  if (n < 0 && errno == EAGAIN) {
    /* Connected but not yet written: the server is inside accept(), between its
     * connect and its sendmsg. It is microseconds away; a server that died there
     * closes the connection, which ends the wait as well. */
    struct pollfd p = {a, POLLIN, 0};
    syscall(SYS_poll, &p, 1, 2000);
    n = shm_msg_recv(a, &off, sizeof off, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, got, 2, &nfds, &mflags);
    rerr = errno;
  }
  const char *why = shm_offer_check(&off, n, mflags, nfds, c->ino);
  if (!why) {
    struct stat st;
    if (syscall(SYS_fstat, got[1], &st) < 0 || !S_ISSOCK(st.st_mode) || st.st_dev != sock_dev ||
        (uint32_t)st.st_ino != srv_ino)
      why = "offer from a process without the other end of the connection";
  }
  if (got[1] >= 0) sys_close(got[1]);
  if (why) {
    if (got[0] >= 0) sys_close(got[0]);
    SHM_COUNT(offers_rejected);
    SHM_LOG(WARN, "fd=%d: %s, ignored", fd, why);
    /* Tell the caller whether the right process's offer was lost on our side. */
    errno = n < 0 ? rerr : (mflags & MSG_CTRUNC) ? EMFILE : EPROTO;
    return -1;
  }
  return got[0];
}

static void drop_endpoint(struct shm_conn *c) {
  if (c->endpoint >= 0) {
    shm_fd_set(c->endpoint, SHM_FD_NONE, NULL);
    sys_close(c->endpoint);
    c->endpoint = -1;
  }
}

static void go_plain(int fd, struct shm_conn *c, const char *why, int stat_why);

/* An offer from the right process could not be taken (no memory, no descriptor
 * left, a segment that fails the checks). The server writes to the socket until we
 * attach, so the connection simply stays plain, as with an unshimmed peer. */
static void offer_lost(int fd, struct shm_conn *c, const char *why, int e) {
  char b[96];
  snprintf(b, sizeof b, "the offer could not be taken (%s: %s)", why, strerror(e));
  SHM_LOG(WARN, "fd=%d: %s: staying plain", fd, b);
  go_plain(fd, c, b, SHM_WHY_FAILED);
}

/* Accepts queued offers until one is valid. 1: decided (upgraded, or plain because
 * the offer could not be taken); 0: no offer. */
static int take_offer(int fd, struct shm_conn *c) {
  uint32_t srv_ino = 0, srv_uid = 0;
  int known = 0, hint = 0;
  struct stat own;
  if (syscall(SYS_fstat, fd, &own) < 0) return 0;
  for (;;) {
    int a = (int)syscall(SYS_accept4, c->endpoint, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (a < 0) return 0;
    /* An endpoint shut down by a process that handed the connection to a new
     * image (preload/exec.c): bytes we did not count went through the socket. */
    struct pollfd hp = {c->endpoint, POLLRDHUP, 0};
    if (syscall(SYS_poll, &hp, 1, 0) > 0 && (hp.revents & (POLLRDHUP | POLLHUP))) {
      sys_close(a);
      go_plain(fd, c, "handed to a new image while waiting for an offer (its writes are not counted here)",
               SHM_WHY_FAILED);
      return 1;
    }
    /* Who connected? Checked before reading anything: descriptors from a stranger
     * are never received (closing one can block, and they cost us slots). */
    struct ucred cr;
    socklen_t cl = sizeof cr;
    /* Looked up once the other end exists as an accepted socket: a connection
     * from anyone else may come before the server's accept(), when the kernel
     * still reports inode 0 for it, and that answer must not be kept for the
     * real offer. */
    if (!known && server_identity(fd, c, &srv_ino, &srv_uid, &hint) == 0 && srv_ino != 0) known = 1;
    int cred = known ? (int)syscall(SYS_getsockopt, a, SOL_SOCKET, SO_PEERCRED, &cr, &cl) : -1;
    /* The listener's uid was only a guess at the owner: the real one, once. */
    if (cred == 0 && hint && !same_user(cr.uid, srv_uid)) {
      hint = 0;
      if (shm_diag_unix_owner(srv_ino, &srv_uid) < 0) known = 0;
    }
    if (!known || cred < 0 || !same_user(cr.uid, srv_uid)) {
      SHM_COUNT(offers_rejected);
      c->offer_ignored = 1;
      if (!known)
        SHM_LOG(INFO, "fd=%d: an offer, but the other end of the connection is gone: ignored", fd);
      else
        SHM_LOG(WARN, "fd=%d: offer from uid %u, the peer socket's owner is %u%s: ignored", fd,
                (unsigned)cr.uid, (unsigned)srv_uid,
                cr.uid == srv_uid ? " (the overflow uid: maybe not mapped in our user namespace)" : "");
      sys_close(a);
      continue;
    }
    int segfd = read_offer(fd, c, a, srv_ino, own.st_dev);
    int e = errno;
    if (segfd < 0) {
      sys_close(a);
      if (e == EAGAIN || e == EMFILE || e == ENFILE || e == ENOMEM) {
        offer_lost(fd, c, "reading the offer", e);
        return 1;
      }
      continue;
    }
    struct shm_seg seg;
    int rc = shm_seg_attach(segfd, &seg);
    e = errno;
    seg.fd = segfd;
    if (rc == 0) {
      /* Our answer, before we attach: the mirror of the offer's proof, our end of
       * the connection opened O_PATH. The server believes nothing we write into
       * the segment until it has checked it; sent only to a server that proved
       * itself, so it never reaches a stranger. */
      int proof = proof_fd(fd);
      long n = proof < 0 ? -1 : shm_proof_send(a, c->ino, srv_ino, proof, MSG_DONTWAIT | MSG_NOSIGNAL);
      e = errno;
      if (proof >= 0) sys_close(proof);
      if (n != (long)sizeof(struct shm_proof)) {
        shm_seg_destroy(&seg);
        sys_close(a);
        if (e == EPIPE || e == ECONNRESET) /* it let go of the connection meanwhile: withdrawn */
          go_plain(fd, c, "the server withdrew its offer as it closed", SHM_WHY_NOT_SHIMMED);
        else offer_lost(fd, c, "answering the offer", e);
        return 1;
      }
    }
    sys_close(a);
    if (rc == 0) keep_segfd_if_inheritable(fd, &seg);
    else sys_close(segfd);
    if (rc < 0) {
      SHM_COUNT(offers_rejected);
      offer_lost(fd, c, "mapping the segment", e);
      return 1;
    }
    c->seg = seg;
    shm_seg_ring(&c->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &c->tx);
    shm_seg_ring(&c->seg, SHM_DIR_S2C, SHM_RING_CONSUMER, &c->rx);
    shm_conn_want_cred(fd, c); /* before we attach: the server switches only after that */
    /* From now on we look at the segment before taking socket bytes as data: the
     * server may switch its direction to the ring (A3, pairs with A4). Unless the
     * server has withdrawn the offer as it closed: then plain. */
    uint32_t zero = 0;
    if (!__atomic_compare_exchange_n(&c->seg.base->conn.attached, &zero, 1, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
      shm_seg_destroy(&c->seg);
      memset(&c->seg, 0, sizeof c->seg);
      c->seg.fd = -1;
      memset(&c->tx, 0, sizeof c->tx);
      memset(&c->rx, 0, sizeof c->rx);
      go_plain(fd, c, "the server withdrew its offer as it closed", SHM_WHY_NOT_SHIMMED);
      return 1;
    }
    drop_endpoint(c);
    /* Threads asleep in shm_conn_resolve() wait on the socket for the server's first
     * byte or its switch-over kick: from now on they are ring readers asleep, and
     * must stay counted when another of our threads disarms. */
    c->sleepers_rx += c->resolve_waiters;
    c->resolve_waiters = 0;
    if (c->sleepers_rx) shm_wait_arm_data(&c->rx, SHM_SLEEP_SOCKET);
    kicks_unbuffered(fd, c);
    shm_conn_fork_lock(2); /* a fork() child holds it iff it was counted */
    __atomic_store_n(&c->state, SHM_CONN_UPGRADED, __ATOMIC_RELEASE);
    shm_conn_fork_lock(3);
    /* Reads use the ring from now on. Writes switch when no plain write is in
     * flight: now if we can take the write lock, else the writer that holds it
     * switches as soon as its socket write returns (shm_conn_send). Waiting for
     * that writer here could deadlock: it may be blocked until the server reads,
     * and the server until we read. */
    if (pthread_mutex_trylock(&c->wlock) == 0) {
      shm_conn_switch_tx(fd, c);
      shm_conn_attach_wake(fd, c);
      pthread_mutex_unlock(&c->wlock);
    }
    SHM_COUNT(upgraded_client);
    client_offered(c, 1);
    shm_stat_set_state(c->st, SHM_CONN_UPGRADED, SHM_WHY_NONE, srv_ino, seg.ring_size); /* stats */
    SHM_LOG(INFO, "upgraded fd=%d role=client family=%s ring=%u", fd,
            c->family == AF_UNIX ? "unix" : c->family == AF_INET ? "tcp4" : "tcp6", seg.ring_size);
    return 1;
  }
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
    if (c->wr_shut || __atomic_load_n(&sc->attached, __ATOMIC_ACQUIRE) != 1) return; /* A4 */
    /* ... and proved that it holds the other end (nothing before that). */
    if (shm_conn_peer_proven(fd, c) != 1) return;
    shm_conn_seen_attached(fd, c, 0);
    __atomic_store_n(&sc->s2c_plain, c->plain_sent, __ATOMIC_RELAXED);
    __atomic_store_n(&sc->s_switched, 1, __ATOMIC_RELEASE); /* S1, pairs with S2 */
  } else {
    __atomic_store_n(&sc->c2s_plain, c->plain_sent, __ATOMIC_RELAXED);
    __atomic_store_n(&sc->switched, 1, __ATOMIC_RELEASE); /* S1, pairs with S2 */
  }
  __atomic_store_n(&c->tx_switched, 1, __ATOMIC_RELEASE);
  if (c->wr_shut) shm_ring_close_write(&c->tx); /* the client half-closed while pending */
  /* The peer may be asleep on the socket waiting for our plain bytes: it needs a
   * kick, but one that finds the data behind it (a reader in flight while another
   * thread closes must not wake to an empty ring): the first publish sends it
   * (shm_conn_kick_owed), or the caller if nothing follows. */
  c->kick_owed = 1;
  SHM_LOG(DEBUG, "fd=%d: switched after %llu plain bytes", fd, (unsigned long long)c->plain_sent);
}

static void go_plain(int fd, struct shm_conn *c, const char *why, int stat_why) {
  drop_endpoint(c);
  client_offered(c, stat_why != SHM_WHY_NOT_SHIMMED);
  __atomic_store_n(&c->state, SHM_CONN_PLAIN, __ATOMIC_RELEASE);
  SHM_COUNT(plain_client);
  shm_stat_set_state(c->st, SHM_CONN_PLAIN, stat_why, 0, 0); /* stats */
  SHM_LOG(INFO, "plain fd=%d role=client: %s", fd, why);
}

int shm_conn_resolve(int fd, struct shm_conn *c, int wait) {
  if (c->role == SHM_SERVER) return shm_conn_server_offer(fd, c); /* its first use */
  int transferred = 0;
  pthread_mutex_lock(&c->lock);
  int st = c->state;
  while (st == SHM_CONN_PENDING) {
    if (take_offer(fd, c)) {
      st = c->state; /* upgraded, or broken */
      break;
    }
    /* Has the peer spoken (data or EOF) or failed? poll() tells without consuming
     * anything: a recv() would clear a pending SO_ERROR the application must see. */
    struct pollfd pf = {fd, POLLIN, 0};
    int pr = (int)syscall(SYS_poll, &pf, 1, 0);
    if (pr > 0 && (pf.revents & (POLLIN | POLLHUP | POLLERR))) {
      /* A shimmed server's offer would be queued by now: look once more, then settle. */
      if (take_offer(fd, c)) st = c->state;
      else {
        if (pf.revents & POLLIN)
          go_plain(fd, c,
                   c->offer_ignored ? "an offer came, but its sender no longer holds the other end (closed or gone)"
                                    : "data came without an offer (the peer is not shimmed, or did not use the "
                                      "connection through the library)",
                   SHM_WHY_NOT_SHIMMED);
        else go_plain(fd, c, "peer closed or failed", (pf.revents & POLLERR) ? SHM_WHY_FAILED : SHM_WHY_NOT_SHIMMED);
        st = SHM_CONN_PLAIN;
      }
      break;
    }
    if (!wait) break;
    c->resolve_waiters++;
    pthread_mutex_unlock(&c->lock);
    /* Blocking peek: honours SO_RCVTIMEO and SA_RESTART exactly as a read would. */
    char b;
    long r = REAL(recv)(fd, &b, 1, MSG_PEEK);
    int e = errno;
    pthread_mutex_lock(&c->lock);
    st = c->state;
    /* Upgraded meanwhile by another thread: it counted us as a ring sleeper. */
    if (st == SHM_CONN_UPGRADED) transferred = 1;
    else c->resolve_waiters--;
    if (r < 0 && (e == EINTR || e == EAGAIN || e == EWOULDBLOCK || st == SHM_CONN_PENDING)) {
      /* Timeout, signal, or the error a plain read would have reported. */
      pthread_mutex_unlock(&c->lock);
      if (transferred) shm_conn_disarm(c, POLLIN);
      errno = e;
      return -1;
    }
  }
  pthread_mutex_unlock(&c->lock);
  if (transferred) shm_conn_disarm(c, POLLIN);
  return st;
}


int shm_conn_refuse(int fd, struct shm_conn *c, const char *why) {
  pthread_mutex_lock(&c->lock);
  if (c->state == SHM_CONN_PENDING) {
    if (c->role == SHM_CLIENT) {
      go_plain(fd, c, why, SHM_WHY_FAILED);
    } else {
      __atomic_store_n(&c->state, SHM_CONN_PLAIN, __ATOMIC_RELEASE);
      SHM_COUNT(plain_server);
      SHM_LOG(INFO, "plain fd=%d role=server: %s", fd, why);
    }
  }
  int st = c->state;
  pthread_mutex_unlock(&c->lock);
  return st;
}

/* Pending client about to write: switch first if the offer is already there. */
int shm_conn_resolve_for_write(int fd, struct shm_conn *c) {
  if (c->role == SHM_SERVER) return shm_conn_server_offer(fd, c); /* its first use */
  pthread_mutex_lock(&c->lock);
  if (c->state == SHM_CONN_PENDING) take_offer(fd, c);
  int st = c->state;
  pthread_mutex_unlock(&c->lock);
  return st;
}

void shm_conn_free_endpoint(struct shm_conn *c) { drop_endpoint(c); }

void shm_conn_client_connected(int fd, struct shm_conn *c, const struct sockaddr *addr, socklen_t len) {
  if (!shm_cfg.stats || shm_cfg.disable) return;
  struct sockaddr_storage self;
  socklen_t sl = sizeof self;
  if (c) {
    if (c->st != &shm_stat_sink && syscall(SYS_getsockname, fd, &self, &sl) == 0)
      shm_stat_set_addr(c->st, (struct sockaddr *)&self, sl, NULL, 0);
    return;
  }
  /* Only a configured exclusion makes a candidate plain without a record; one
   * left plain by short-lived traffic is only counted (a statistics line would
   * cost three system calls per connection). */
  uint32_t ino;
  if (client_skipped) {
    client_skipped = 0;
    return;
  }
  if (!addr || !policy_set() || eligible(fd, addr, len) >= 0 || sock_ino(fd, &ino) < 0) return;
  if (syscall(SYS_getsockname, fd, &self, &sl) < 0) sl = 0;
  shm_stat_plain(fd, ino, SHM_CLIENT, addr->sa_family, SHM_WHY_DISABLED, 0, sl ? (struct sockaddr *)&self : NULL, sl,
                 addr, len);
}

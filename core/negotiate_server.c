/* Negotiation, the server's side: the candidate noted in accept(), the offer at
 * its first use (the peer's identity from sock_diag, the endpoint, the sealed
 * segment and the proof), the check of the client's answer, the upgrade seen
 * (docs/design.md, "Negotiation", steps 2, 3, 5). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
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

/* SO_PEERCRED: for an accepted unix socket, the process that connected (its uid,
 * and its pid as our pid namespace sees it, 0 where it cannot); for a socket
 * connected to a listener, the process that called listen(). */
static int peer_cred(int fd, uint32_t *uid, int32_t *pid) {
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) return -1;
  *uid = cr.uid;
  if (pid) *pid = cr.pid;
  return 0;
}

int peer_cred_uid(int fd, uint32_t *uid) { return peer_cred(fd, uid, NULL); }

/* The peer socket's inode and its owner. AF_UNIX: the owner is the connecting
 * process's uid (SO_PEERCRED of our accepted socket; the client makes its
 * endpoint and its socket itself, before connect), which spares a second walk
 * of every unix socket in the kernel (docs/design.md, Known limits); *peer_pid
 * is that process (0: outside our pid namespace). TCP: *peer_pid is -1
 * (unknown); self and peer are our addresses as the caller just read them, or
 * NULL to read them here. */
static int peer_identity(int fd, int family, uint32_t own_ino, uint32_t *peer_ino, uint32_t *peer_uid,
                         int32_t *peer_pid, const struct sockaddr_storage *self,
                         const struct sockaddr_storage *peer) {
  if (peer_pid) *peer_pid = -1;
  if (family == AF_UNIX)
    return shm_diag_unix_peer_ino(own_ino, peer_ino) < 0 ? -1 : peer_uid ? peer_cred(fd, peer_uid, peer_pid) : 0;
  struct sockaddr_storage s, p;
  if (!self || !peer) {
    socklen_t l1 = sizeof s, l2 = sizeof p;
    if (syscall(SYS_getsockname, fd, &s, &l1) < 0 || syscall(SYS_getpeername, fd, &p, &l2) < 0) return -1;
    self = &s;
    peer = &p;
  }
  /* The peer's socket has the mirror image of our addresses. */
  return shm_diag_tcp(peer, self, peer_ino, peer_uid);
}

int shm_conn_learn_peer(int fd, struct shm_conn *c) {
  uint32_t uid;
  return peer_identity(fd, c->family, c->ino, &c->peer_ino, c->family == AF_UNIX ? NULL : &uid, NULL, NULL, NULL);
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
int proof_fd(int fd) {
  char path[40];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return (int)syscall(SYS_openat, AT_FDCWD, path, O_PATH | O_CLOEXEC);
}

/* Creates the segment and sends the offer on endpoint connection es. Returns 0,
 * or a negative errno (seg destroyed): -EPIPE or -ECONNRESET if the client closed
 * meanwhile, its endpoint with it, which is no fault; any other failure logged. */
static int send_offer(int fd, int es, uint32_t ino, uint32_t peer_ino, struct shm_seg *seg) {
  if (shm_seg_create((uint32_t)shm_cfg.ring_size, seg) < 0) {
    int e = errno;
    SHM_LOG(WARN, "fd=%d: cannot create segment: %s", fd, strerror(e));
    return e ? -e : -EIO;
  }
  seg->base->conn.holders[SHM_CLIENT - 1] = 1;
  seg->base->conn.holders[SHM_SERVER - 1] = 1;
  int proof = proof_fd(fd);
  if (proof < 0) {
    int e = errno;
    SHM_LOG(WARN, "fd=%d: cannot open the offer's proof: %s", fd, strerror(e));
    shm_seg_destroy(seg);
    return e ? -e : -EIO;
  }
  long n = shm_offer_send(es, seg->ring_size, peer_ino, ino, fd, seg->fd, proof, MSG_DONTWAIT | MSG_NOSIGNAL);
  int e = n < 0 ? errno : EIO; /* (a short send: nothing to say but that) */
  shm_sys_close(proof);
  if (n != (long)sizeof(struct shm_offer)) {
    shm_seg_destroy(seg);
    if (e != EPIPE && e != ECONNRESET) SHM_LOG(WARN, "fd=%d: offer not sent: %s", fd, strerror(e));
    return -e;
  }
  return 0;
}

#if !defined(SO_PEERPIDFD) && !defined(__sparc__) && !defined(__hppa__)
#define SO_PEERPIDFD 77 /* Linux 6.5; its number everywhere but sparc and parisc */
#endif

static int peer_pidfd(int fd) {
#ifdef SO_PEERPIDFD
  int v = -1;
  socklen_t l = sizeof v;
  return syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERPIDFD, &v, &l) < 0 ? -1 : v;
#else
  (void)fd;
  return -1; /* (no way to tell: the answer check decides) */
#endif
}

/* The peers of unix sockets a and b, both outside our pid namespace (pid 0): the
 * same process? Their pidfds (SO_PEERPIDFD) say, from Linux 6.9 on, where each
 * process has its own pidfs inode. 0: two processes; 1: the same, or no way to
 * tell (an older kernel, a peer gone: the answer check decides, as over TCP). */
static int same_peer_process(int a, int b) {
  int pa = peer_pidfd(a), pb = pa < 0 ? -1 : peer_pidfd(b);
  struct stat sa, sb;
  int same = pa < 0 || pb < 0 || syscall(SYS_fstat, pa, &sa) < 0 || syscall(SYS_fstat, pb, &sb) < 0 ||
             sa.st_dev != sb.st_dev || sa.st_ino == sb.st_ino;
  if (pa >= 0) shm_sys_close(pa);
  if (pb >= 0) shm_sys_close(pb);
  return same;
}

/* Connects to the endpoint named after the peer socket's inode and checks that it
 * belongs to the peer socket's owner and, over AF_UNIX (peer_pid >= 0), that the
 * process listening on it is the one that connected. The connected socket, or -1
 * (*why set, logged and counted). */
static int reach_endpoint(int fd, uint32_t peer_ino, uint32_t peer_uid, int32_t peer_pid, int *why) {
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
    shm_sys_close(es);
    return -1;
  }
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (syscall(SYS_getsockopt, es, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || !same_user(cr.uid, peer_uid)) {
    *why = SHM_WHY_REFUSED;
    SHM_COUNT(offers_rejected);
    SHM_LOG(WARN, "fd=%d: endpoint owned by uid %u, peer socket by uid %u%s: plain", fd, (unsigned)cr.uid,
            (unsigned)peer_uid, cr.uid == peer_uid ? " (the overflow uid: maybe not mapped in our user namespace)" : "");
    shm_sys_close(es);
    return -1;
  }
  /* The client listens on its endpoint in connect(), just before it connects,
   * so over AF_UNIX both credentials name the same process. A squatter of the
   * name is another process, same uid or not, sandboxed or not: it gets nothing
   * from us, not even the empty segment and the proof (docs/security.md,
   * section 3). Both outside our pid namespace, both read pid 0: their pidfds
   * tell them apart where the kernel can (same_peer_process). */
  if (peer_pid >= 0 && (cr.pid != peer_pid || (cr.pid == 0 && !same_peer_process(fd, es)))) {
    *why = SHM_WHY_REFUSED;
    SHM_COUNT(offers_rejected);
    SHM_LOG(WARN, "fd=%d: endpoint listened on by pid %d, the connection made by pid %d%s: plain", fd, (int)cr.pid,
            (int)peer_pid, cr.pid || peer_pid ? "" : " (both outside our pid namespace: two processes by their pidfds)");
    shm_sys_close(es);
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
    shm_sys_close(es);
    c->peer_proven = SHM_PROOF_REFUSED;
  }
  c->endpoint = kept;
  shm_fd_own(kept, &c->endpoint);
  c->sock_dev = (uint64_t)own->st_dev;
  keep_segfd_if_inheritable(fd, seg);
  c->ino = (uint32_t)own->st_ino;
  c->seg = *seg;
  shm_fd_own(c->seg.fd, &c->seg.fd); /* if hidden (kept for exec or as a spare) */
  shm_conn_rings(c);
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

/* The offer, at the server's first use of the connection. Nothing reaches the
 * client's socket: until the client says it has attached, we write to the socket
 * (shm_conn_switch_tx), so a client that never takes the offer (it exec'd, reads
 * through stdio, closed) sees a plain connection, and one that closes without
 * reading never makes its kernel answer a byte of ours with a reset. */
static int offer_locked(int fd, struct shm_conn *c) {
  struct sockaddr_storage self, peer;
  socklen_t sl = sizeof self, pl = sizeof peer;
  uint32_t ino = 0, peer_ino = 0, peer_uid;
  int32_t peer_pid;
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
  if (peer_identity(fd, self.ss_family, ino, &peer_ino, &peer_uid, &peer_pid, &self, &peer) < 0) {
    SHM_COUNT(plain_server);
    SHM_LOG(INFO, "plain fd=%d role=server: peer socket not found (closed already?): %s", fd, strerror(errno));
    why = SHM_WHY_UNKNOWN_PEER;
    goto plain;
  }
  if ((es = reach_endpoint(fd, peer_ino, peer_uid, peer_pid, &why)) < 0) goto plain;
  int sent = send_offer(fd, es, ino, peer_ino, &seg);
  if (sent < 0) {
    int left = sent == -EPIPE || sent == -ECONNRESET;
    SHM_COUNT(plain_server);
    /* Said as reach_endpoint says it when the endpoint is gone already. */
    if (left) why = SHM_WHY_NOT_SHIMMED;
    SHM_LOG(INFO, "plain fd=%d role=server: %s", fd,
            left ? "peer closed its end as the offer was sent" : "the offer could not be made");
    goto plain;
  }
  offered(fd, c, es, &own, peer_ino, &seg, &self, sl, &peer, pl);
  return SHM_CONN_UPGRADED;
plain:
  if (es >= 0) shm_sys_close(es);
  server_plain(fd, why, ino, peer_ino, &self, sl, &peer, pl);
  __atomic_store_n(&c->state, SHM_CONN_PLAIN, __ATOMIC_RELEASE);
  return SHM_CONN_PLAIN;
}


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
  if (got >= 0) shm_sys_close(got);
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

/* The connection whose answer this thread is checking: a signal handler that
 * interrupted the check and reads the same connection cannot wait for it. */
static __thread struct shm_conn *volatile tl_proving __attribute__((tls_model("initial-exec")));

int shm_conn_proving_here(struct shm_conn *c) { return tl_proving == c; }

/* Another thread holds the check (SHM_PROOF_BUSY in p): its verdict. A handler
 * running on top of the checking thread gets "not proven yet" (its reads fail
 * with EAGAIN first: shm_conn_proving_here). */
static int await_verdict(struct shm_conn *c, int p) {
  if (shm_conn_proving_here(c)) return SHM_PROOF_NONE;
  while (p == SHM_PROOF_BUSY) {
    sched_yield();
    p = __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE);
  }
  return p;
}

int shm_conn_verify_peer(int fd, struct shm_conn *c) {
  if (c->role != SHM_SERVER) return 1;
  int p = __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE);
  if (p == SHM_PROOF_NONE) {
    /* Nothing to check before the segment says "attached" (the answer precedes it). */
    if (shm_conn_state(c) != SHM_CONN_UPGRADED || !c->seg.base ||
        __atomic_load_n(&c->seg.base->conn.attached, __ATOMIC_ACQUIRE) != 1)
      return 0;
    /* One thread checks; the others wait for its verdict. They may not go on as
     * if the client had not attached: it may have switched already, and a reader
     * would take its kicks for data (crash mid_server under ASan: the server's
     * reader returned the client's first kick byte while its writer thread held
     * the check). The check never blocks: the wait is a few system calls long. */
    struct shm_conn *outer = tl_proving;
    tl_proving = c;
    if (__atomic_compare_exchange_n(&c->peer_proven, &p, SHM_PROOF_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      p = check_answer(fd, c);
      drop_endpoint(c); /* decided (a fork child checks its own copy) */
      __atomic_store_n(&c->peer_proven, p, __ATOMIC_RELEASE);
      if (p == SHM_PROOF_OK) SHM_LOG(DEBUG, "fd=%d: the client proved it holds the other end", fd);
      if (p == SHM_PROOF_LOST && fd >= 0) syscall(SYS_shutdown, fd, SHUT_RDWR); /* loudly, both ends */
    }
    tl_proving = outer;
  }
  if (p == SHM_PROOF_BUSY) p = await_verdict(c, p);
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
  if (conn_lock_mine(c)) return shm_conn_state(c); /* a handler on top of our offer: as it stands */
  struct shm_conn *prev = conn_lock(c);
  int st = c->state == SHM_CONN_PENDING ? offer_locked(fd, c) : c->state;
  conn_unlock(c, prev);
  return st;
}


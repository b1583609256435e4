/* Negotiation, the client's side: the endpoint made in connect(), the look for
 * an offer whenever the client is about to interpret bytes, the check of the
 * server's proof, the answer and the attach; staying plain (docs/design.md,
 * "Negotiation", steps 1, 4, 5). */
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

static __thread int client_skipped; /* the last client_prepare skipped (for the stats record) */

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
  if (shm_fds_scarce()) {
    SHM_COUNT(plain_client);
    SHM_LOG(DEBUG, "plain fd=%d role=client: the process ran out of descriptors a moment ago", fd);
    return NULL;
  }
  uint32_t ino;
  if (sock_ino(fd, &ino) < 0) return NULL;
  int ep = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ep < 0) return NULL;
  struct sockaddr_un sa;
  socklen_t sl = endpoint_name(ino, &sa);
  /* A backlog above 1: an impostor's offer must not crowd out the real one. */
  if (syscall(SYS_bind, ep, &sa, sl) < 0 || syscall(SYS_listen, ep, 8) < 0) {
    SHM_LOG(DEBUG, "fd=%d: no endpoint (%s), staying plain", fd, strerror(errno));
    shm_sys_close(ep);
    return NULL;
  }
  ep = shm_fd_hide(ep);
  if (ep < 0) return NULL;
  struct shm_conn *c = conn_new(SHM_CLIENT, addr->sa_family);
  if (!c) {
    shm_fd_set(ep, SHM_FD_NONE, NULL);
    shm_sys_close(ep);
    return NULL;
  }
  c->state = SHM_CONN_PENDING;
  c->ino = ino;
  c->endpoint = ep;
  shm_fd_own(ep, &c->endpoint);
  c->dest_key = key;
  c->st = shm_stat_open(fd, ino, SHM_CLIENT, addr->sa_family, SHM_CONN_PENDING); /* stats */
  shm_stat_set_addr(c->st, NULL, 0, addr, len);
  SHM_LOG(DEBUG, "fd=%d: pending, endpoint fd=%d ino=%u", fd, ep, ino);
  return c;
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

/* What the client knows of the socket at the other end (server_identity), kept
 * across the offers of one look, and of the process that sent the offer being
 * looked at (offer_sender_ok). */
struct srv_id {
  uint32_t ino, uid;
  int known; /* looked up, and the other end exists as an accepted socket */
  int hint;  /* uid is only the listener's: unix_diag gives the real owner if it differs */
  int sender_known; /* sender_pid is that of the endpoint connection at hand */
  int32_t sender_pid;
};

/* A descriptor of process pid was not there (ENOENT): is the process alive but
 * hidden from us (/proc mounted hidepid=2 or invisible, where every process we
 * may not look into is missing), rather than its descriptor closed or the
 * process gone? */
static int proc_hidden(int32_t pid) {
  char path[32];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  if (access(path, F_OK) == 0) return 0; /* there: the descriptor is closed */
  return errno == ENOENT && !(syscall(SYS_kill, (pid_t)pid, 0) < 0 && errno == ESRCH);
}

/* Does the process that sent the offer on a hold the other end of our
 * connection (socket id->ino) under the descriptor number its record names?
 * Looked at in its /proc/PID/fd before anything is received (the record was
 * only peeked at, which takes no descriptor in): the descriptors of a stranger
 * we may look into are never received, same uid or not (docs/security.md,
 * section 3). NULL: yes, or no way to look, and the proof decides once received
 * (a sender outside our pid namespace reads pid 0; one we may not look into; a
 * /proc that is not our pid namespace's, where its pid names another process).
 * Else why not; *quiet when the descriptor is closed, or another socket while
 * the other end is gone (the server let go of the connection since, as likely
 * as a stranger naming nothing). */
static const char *sender_holds(int fd, struct shm_conn *c, int a, struct srv_id *id, const struct shm_offer *off,
                                int *quiet) {
  *quiet = 0;
  if (!id->sender_known) {
    struct ucred cr;
    socklen_t cl = sizeof cr;
    if (syscall(SYS_getsockopt, a, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) return "offer from a process we cannot name";
    id->sender_pid = cr.pid;
    id->sender_known = 1;
  }
  if (id->sender_pid == 0 || !proc_is_ours()) return NULL;
  char path[48], link[48], want[24];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)id->sender_pid, (int)off->server_fd);
  long n = syscall(SYS_readlinkat, AT_FDCWD, path, link, sizeof link - 1);
  if (n < 0) {
    /* Not ours to look at: a process that changed its credentials (php-fpm's
     * and nginx's workers, forked by root, are not dumpable: an nginx worker
     * of the same user may not look into php-fpm's), or another user's; with
     * /proc mounted hidepid=2 or invisible (systemd's ProtectProc=), such a
     * process is not there at all for us (ENOENT). */
    if (errno == EACCES || errno == EPERM || (errno == ENOENT && proc_hidden(id->sender_pid))) return NULL;
    *quiet = 1;
    return "offer from a process without the descriptor it names (closed since, or never had)";
  }
  link[n] = 0;
  snprintf(want, sizeof want, "socket:[%u]", (unsigned)id->ino);
  if (!strcmp(link, want)) return NULL;
  /* Something else under that number: a stranger's, or the server's number
   * reused after it closed the connection (a withdrawn offer, libuv.sh: fast
   * servers accept the next connection into it): quiet when the other end is
   * gone now. */
  uint32_t ino, uid;
  int hint;
  *quiet = server_identity(fd, c, &ino, &uid, &hint) < 0 || ino != id->ino;
  return "offer from a process whose descriptor is not the other end of the connection";
}

/* Reads one offer from an accepted endpoint connection and checks it. Returns the
 * segment fd, or -1: the offer is ignored, or (errno EAGAIN) nothing has come on
 * the connection yet. The record is peeked at and its sender looked at first
 * (sender_holds); only then are the record and its descriptors received. */
static int read_offer(int fd, struct shm_conn *c, int a, struct srv_id *id, dev_t sock_dev) {
  struct shm_offer off;
  int got[2] = {-1, -1}, nfds = 0, mflags = 0, quiet = 0, received = 0;
  struct iovec v = {&off, sizeof off};
  struct msghdr pm = {.msg_iov = &v, .msg_iovlen = 1};
  long n = syscall(SYS_recvmsg, a, &pm, MSG_PEEK | MSG_DONTWAIT);
  int rerr = errno;
  if (n < 0 && rerr == EAGAIN) return -1; /* never waited for: see keep_waiting */
  const char *why = shm_offer_head_check(&off, n, c->ino);
  if (!why) why = sender_holds(fd, c, a, id, &off, &quiet);
  if (!why) {
    received = 1;
    n = shm_msg_recv(a, &off, sizeof off, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, got, 2, &nfds, &mflags);
    rerr = errno;
    why = shm_offer_check(&off, n, mflags, nfds, c->ino);
  }
  if (!why) {
    struct stat st;
    if (syscall(SYS_fstat, got[1], &st) < 0 || !S_ISSOCK(st.st_mode) || st.st_dev != sock_dev ||
        (uint32_t)st.st_ino != id->ino)
      why = "offer from a process without the other end of the connection";
  }
  if (got[1] >= 0) shm_sys_close(got[1]);
  if (why) {
    if (got[0] >= 0) shm_sys_close(got[0]);
    SHM_COUNT(offers_rejected);
    if (!received) c->offer_ignored = 1; /* refused unread: go_plain says an offer came */
    if (received) SHM_LOG(WARN, "fd=%d: %s, ignored", fd, why);
    else if (quiet)
      SHM_LOG(INFO, "fd=%d: %s (pid %d, fd %d): ignored, nothing received", fd, why, (int)id->sender_pid,
              (int)off.server_fd);
    else if (id->sender_known)
      SHM_LOG(WARN, "fd=%d: %s (pid %d): ignored, nothing received", fd, why, (int)id->sender_pid);
    else SHM_LOG(WARN, "fd=%d: %s: ignored, nothing received", fd, why);
    /* Tell the caller whether the right process's offer was lost on our side. */
    errno = n < 0 ? rerr : (mflags & MSG_CTRUNC) ? EMFILE : EPROTO;
    return -1;
  }
  return got[0];
}

/* The number is forgotten before the descriptor is closed: fork's prepare
 * handler reading it in between would act on whatever gets that number next. */
static void close_hidden(int *fd) {
  int f = *fd;
  if (f >= 0) {
    __atomic_store_n(fd, -1, __ATOMIC_RELEASE);
    shm_fd_set(f, SHM_FD_NONE, NULL);
    shm_sys_close(f);
  }
}

void drop_endpoint(struct shm_conn *c) {
  close_hidden(&c->endpoint);
  close_hidden(&c->offer_wait);
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

/* Who connected to our endpoint (a): the owner of the other end of the
 * connection, by uid? Checked before reading anything: descriptors from a
 * stranger are never received (closing one can block, and they cost us slots).
 * 1: yes; 0: no (logged and counted; a is left to the caller). */
static int offer_sender_ok(int fd, struct shm_conn *c, int a, struct srv_id *id) {
  id->sender_known = 0;
  struct ucred cr;
  socklen_t cl = sizeof cr;
  /* Looked up once the other end exists as an accepted socket: a connection
   * from anyone else may come before the server's accept(), when the kernel
   * still reports inode 0 for it, and that answer must not be kept for the
   * real offer. */
  if (!id->known && server_identity(fd, c, &id->ino, &id->uid, &id->hint) == 0 && id->ino != 0) id->known = 1;
  int cred = id->known ? (int)syscall(SYS_getsockopt, a, SOL_SOCKET, SO_PEERCRED, &cr, &cl) : -1;
  /* The listener's uid was only a guess at the owner: the real one, once. */
  if (cred == 0 && id->hint && !same_user(cr.uid, id->uid)) {
    id->hint = 0;
    if (shm_diag_unix_owner(id->ino, &id->uid) < 0) id->known = 0;
  }
  if (id->known && cred == 0 && same_user(cr.uid, id->uid)) {
    id->sender_known = 1;
    id->sender_pid = cr.pid;
    return 1;
  }
  SHM_COUNT(offers_rejected);
  c->offer_ignored = 1;
  if (!id->known)
    SHM_LOG(INFO, "fd=%d: an offer, but the other end of the connection is gone: ignored", fd);
  else
    SHM_LOG(WARN, "fd=%d: offer from uid %u, the peer socket's owner is %u%s: ignored", fd, (unsigned)cr.uid,
            (unsigned)id->uid, cr.uid == id->uid ? " (the overflow uid: maybe not mapped in our user namespace)" : "");
  return 0;
}

/* The segment is mapped and the attach swapped in (the caller holds the upgrade
 * lock, shm_conn_fork_lock(2), and it is let go here): from now on we read the
 * ring once the server switches, and write to it as soon as no plain write is in
 * flight. */
static void attached_now(int fd, struct shm_conn *c, uint32_t srv_ino) {
  /* Threads asleep in shm_conn_resolve() wait on the socket for the server's first
   * byte or its switch-over kick: from now on they are ring readers asleep, and
   * must stay counted when another of our threads disarms. */
  c->sleepers_rx += c->resolve_waiters;
  c->resolve_waiters = 0;
  if (c->sleepers_rx) shm_wait_arm_data(&c->rx, SHM_SLEEP_SOCKET);
  kicks_unbuffered(fd, c);
  __atomic_store_n(&c->state, SHM_CONN_UPGRADED, __ATOMIC_RELEASE); /* a fork() child holds it iff counted */
  shm_conn_fork_lock(3);
  drop_endpoint(c); /* (takes the descriptor table's lock: after the upgrade lock, as fork's order has it) */
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
  shm_stat_set_state(c->st, SHM_CONN_UPGRADED, SHM_WHY_NONE, srv_ino, c->seg.ring_size); /* stats */
  SHM_LOG(INFO, "upgraded fd=%d role=client family=%s ring=%u", fd,
          c->family == AF_UNIX ? "unix" : c->family == AF_INET ? "tcp4" : "tcp6", c->seg.ring_size);
}

/* The server let go of the connection before we attached (its close swapped
 * attached to 2, or closed the endpoint connection under our answer). */
static void withdrawn(int fd, struct shm_conn *c) {
  go_plain(fd, c, "the server withdrew its offer as it closed", SHM_WHY_NOT_SHIMMED);
}

/* Our answer, before we attach: the mirror of the offer's proof, our end of the
 * connection opened O_PATH, on endpoint connection a. The server believes
 * nothing we write into the segment until it has checked it; sent only to a
 * server that proved itself, so it never reaches a stranger. 0, or -1: the
 * connection is decided (plain; seg destroyed, a closed). */
static int send_answer(int fd, struct shm_conn *c, int a, uint32_t srv_ino, struct shm_seg *seg) {
  int proof = proof_fd(fd);
  long n = proof < 0 ? -1 : shm_proof_send(a, c->ino, srv_ino, proof, MSG_DONTWAIT | MSG_NOSIGNAL);
  int e = errno;
  if (proof >= 0) shm_sys_close(proof);
  if (n == (long)sizeof(struct shm_proof)) return 0;
  shm_seg_destroy(seg);
  shm_sys_close(a);
  if (e == EPIPE || e == ECONNRESET) withdrawn(fd, c); /* it let go of the connection meanwhile */
  else offer_lost(fd, c, "answering the offer", e);
  return -1;
}

/* The attach did not happen (the server withdrew the offer, or a fork child shares
 * the pending connection): the segment goes, the connection is plain. */
static void attach_refused(int fd, struct shm_conn *c, int shared) {
  shm_seg_destroy(&c->seg);
  memset(&c->seg, 0, sizeof c->seg);
  c->seg.fd = -1;
  memset(&c->tx, 0, sizeof c->tx);
  memset(&c->rx, 0, sizeof c->rx);
  if (shared) go_plain(fd, c, "shared with a process forked while it waited for an offer", SHM_WHY_FAILED);
  else withdrawn(fd, c);
}

/* A verified offer (segfd) came on endpoint connection a: map the segment, answer,
 * attach. Always decides (upgraded, or plain); closes a. */
static void take_segment(int fd, struct shm_conn *c, int a, int segfd, uint32_t srv_ino) {
  struct shm_seg seg;
  int rc = shm_seg_attach(segfd, &seg);
  int e = errno;
  seg.fd = segfd;
  if (rc == 0 && send_answer(fd, c, a, srv_ino, &seg) < 0) return;
  shm_sys_close(a);
  if (rc < 0) {
    shm_sys_close(segfd);
    SHM_COUNT(offers_rejected);
    offer_lost(fd, c, "mapping the segment", e);
    return;
  }
  keep_segfd_if_inheritable(fd, &seg);
  c->seg = seg;
  shm_fd_own(c->seg.fd, &c->seg.fd); /* if hidden (kept for exec or as a spare) */
  shm_conn_rings(c);
  shm_conn_want_cred(fd, c); /* before we attach: the server switches only after that */
  /* From now on we look at the segment before taking socket bytes as data: the
   * server may switch its direction to the ring (A3, pairs with A4). Unless the
   * server has withdrawn the offer as it closed, or a fork() child shares the
   * connection since it was pending: then plain. The swap and our UPGRADED are one
   * step for fork (the upgrade lock, which fork's prepare handler takes): a child
   * either was counted as a holder of an upgraded connection, or has it pending
   * with fork_shared set, as we do, and never attaches. A child made while the
   * offer was pending used to stay plain alone: it read the kicks of its parent's
   * switch-over as data (reset), or waited for bytes that went to the ring
   * (tests/reliability/forkpend.sh). */
  shm_conn_fork_lock(2);
  uint32_t zero = 0;
  int shared = c->fork_shared;
  if (shared ||
      !__atomic_compare_exchange_n(&c->seg.base->conn.attached, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    shm_conn_fork_lock(3);
    attach_refused(fd, c, shared);
    return;
  }
  attached_now(fd, c, srv_ino);
}

/* An endpoint connection from the right user on which nothing has come yet: the
 * server between its connect and its sendmsg (microseconds), or a process of
 * that user that connected and stays silent. Kept (one, hidden) and looked at
 * again at the next look, never waited for: a wait inside a non-blocking call
 * was a stall anyone of that user could cause (2 s per look, then plain). An
 * honest server's offer always precedes its first byte on the connection, so
 * the rule "data without an offer is plain" still holds: the kept connection is
 * looked at before it is applied. The newest is kept (the one kept before is
 * closed): a silent process connects ahead of the server, which comes later
 * (one that keeps connecting can fill the endpoint's backlog anyway, and the
 * connection then stays plain). 1: kept (a is ours); 0: not (the caller closes
 * a). */
static int keep_waiting(struct shm_conn *c, int a, const struct srv_id *id) {
  close_hidden(&c->offer_wait);
  int h = shm_fd_hide(a);
  if (h < 0) return 0;
  c->offer_wait = h;
  shm_fd_own(h, &c->offer_wait);
  c->offer_wait_ino = id->ino;
  return 1;
}

/* An endpoint connection a from the right user (id): its offer, if it has come. 1:
 * decided (upgraded, or plain because the offer could not be taken); 0: not (a is
 * closed or kept for the next look). */
static int offer_from(int fd, struct shm_conn *c, int a, struct srv_id *id, dev_t dev) {
  int segfd = read_offer(fd, c, a, id, dev);
  int e = errno;
  if (segfd >= 0) {
    take_segment(fd, c, a, segfd, id->ino);
    return 1;
  }
  if (e == EAGAIN && keep_waiting(c, a, id)) return 0;
  shm_sys_close(a);
  if (e == EMFILE || e == ENFILE || e == ENOMEM) {
    offer_lost(fd, c, "reading the offer", e);
    return 1;
  }
  return 0;
}

/* An endpoint shut down by a process that handed the connection to a new image
 * (preload/exec.c): bytes we did not count went through the socket. Decided
 * plain (a closed). Looked at only once an offer may be taken: no system call
 * per look otherwise. */
static int endpoint_shut(int fd, struct shm_conn *c, int a) {
  struct pollfd hp = {c->endpoint, POLLRDHUP, 0};
  if (syscall(SYS_poll, &hp, 1, 0) <= 0 || !(hp.revents & (POLLRDHUP | POLLHUP))) return 0;
  shm_sys_close(a);
  go_plain(fd, c,
           c->fork_shared ? "shared with a process forked while it waited for an offer"
                          : "handed to a new image while waiting for an offer (its writes are not counted here)",
           SHM_WHY_FAILED);
  return 1;
}

/* The connection nothing had come on at an earlier look (keep_waiting): its
 * offer, if something has come now. 1: decided; 0: not (still silent and still
 * kept, or closed). */
static int kept_offer(int fd, struct shm_conn *c, dev_t dev) {
  struct pollfd p = {c->offer_wait, POLLIN, 0};
  if (syscall(SYS_poll, &p, 1, 0) == 0) return 0; /* still nothing: one system call per look */
  int a = c->offer_wait;
  shm_fd_set(a, SHM_FD_NONE, NULL);
  c->offer_wait = -1;
  struct srv_id kept = {.ino = c->offer_wait_ino, .known = 1}; /* (its sender asked again) */
  return endpoint_shut(fd, c, a) || offer_from(fd, c, a, &kept, dev);
}

/* Accepts queued offers until one is valid. 1: decided (upgraded, or plain because
 * the offer could not be taken); 0: no offer. */
static int take_offer(int fd, struct shm_conn *c) {
  struct srv_id id = {0};
  struct stat own;
  if (syscall(SYS_fstat, fd, &own) < 0) return 0;
  if (c->offer_wait >= 0 && kept_offer(fd, c, own.st_dev)) return 1;
  for (;;) {
    int a = (int)syscall(SYS_accept4, c->endpoint, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (a < 0) return 0;
    if (endpoint_shut(fd, c, a)) return 1;
    if (!offer_sender_ok(fd, c, a, &id)) {
      shm_sys_close(a);
      continue;
    }
    if (offer_from(fd, c, a, &id, own.st_dev)) return 1;
  }
}


static void go_plain(int fd, struct shm_conn *c, const char *why, int stat_why) {
  drop_endpoint(c);
  client_offered(c, stat_why != SHM_WHY_NOT_SHIMMED);
  __atomic_store_n(&c->state, SHM_CONN_PLAIN, __ATOMIC_RELEASE);
  SHM_COUNT(plain_client);
  shm_stat_set_state(c->st, SHM_CONN_PLAIN, stat_why, 0, 0); /* stats */
  SHM_LOG(INFO, "plain fd=%d role=client: %s", fd, why);
}

/* A thread cancelled in the blocking peek below (a cancellation point, reached
 * by a blocking read of a connection still waiting for its offer): it no longer
 * waits, and the hold its read took on the connection (pl_conn_read) is given
 * back, as sleep_cancelled does for the other sleeps. Without this, the hold
 * stayed: the connection was never released after its close (its descriptors
 * and mapping stayed: conc pendcancel). */
static void resolve_cancelled(void *arg) {
  struct shm_conn *c = arg;
  struct shm_conn *prev = conn_lock(c);
  /* Upgraded meanwhile by another thread: it counted us as a ring sleeper. */
  int transferred = c->state == SHM_CONN_UPGRADED;
  if (!transferred) c->resolve_waiters--;
  conn_unlock(c, prev);
  if (transferred) shm_conn_disarm(c, POLLIN);
  shm_conn_put(c);
}
__attribute__((noinline)) static long resolve_peek(int fd, struct shm_conn *c) {
  char b;
  long r;
  pthread_cleanup_push(resolve_cancelled, c);
  r = REAL(recv)(fd, &b, 1, MSG_PEEK);
  pthread_cleanup_pop(0);
  return r;
}

int shm_conn_resolve(int fd, struct shm_conn *c, int wait) {
  if (c->role == SHM_SERVER) return shm_conn_server_offer(fd, c); /* its first use */
  /* A signal handler on top of its thread's negotiation: as it stands (a read of a
   * pending connection then fails with EAGAIN, a poll looks at the socket). */
  if (conn_lock_mine(c)) return shm_conn_state(c);
  int transferred = 0;
  struct shm_conn *prev = conn_lock(c);
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
                   c->offer_ignored ? "an offer came, but its sender no longer holds the other end (closed or gone), or never did"
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
    conn_unlock(c, prev);
    /* Blocking peek: honours SO_RCVTIMEO and SA_RESTART exactly as a read would. */
    long r = resolve_peek(fd, c);
    int e = errno;
    prev = conn_lock(c);
    st = c->state;
    /* Upgraded meanwhile by another thread: it counted us as a ring sleeper. */
    if (st == SHM_CONN_UPGRADED) transferred = 1;
    else c->resolve_waiters--;
    if (r < 0 && (e == EINTR || e == EAGAIN || e == EWOULDBLOCK || st == SHM_CONN_PENDING)) {
      /* Timeout, signal, or the error a plain read would have reported. */
      conn_unlock(c, prev);
      if (transferred) shm_conn_disarm(c, POLLIN);
      errno = e;
      return -1;
    }
  }
  conn_unlock(c, prev);
  if (transferred) shm_conn_disarm(c, POLLIN);
  return st;
}


int shm_conn_refuse(int fd, struct shm_conn *c, const char *why) {
  if (conn_lock_mine(c)) return shm_conn_state(c);
  struct shm_conn *prev = conn_lock(c);
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
  conn_unlock(c, prev);
  return st;
}

/* Pending client about to write: switch first if the offer is already there. */
int shm_conn_resolve_for_write(int fd, struct shm_conn *c) {
  if (c->role == SHM_SERVER) return shm_conn_server_offer(fd, c); /* its first use */
  /* A handler on top of the negotiation writes plainly: counted, as any plain byte. */
  if (conn_lock_mine(c)) return shm_conn_state(c);
  struct shm_conn *prev = conn_lock(c);
  if (c->state == SHM_CONN_PENDING) take_offer(fd, c);
  int st = c->state;
  conn_unlock(c, prev);
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


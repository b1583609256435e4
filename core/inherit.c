/* Upgraded connections across exec: see inherit.h for the format. */
#include "real.h"
#include "inherit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "fdtab.h"
#include "log.h"
#include "stats.h"

int shm_inherit_encode(int fd, int as_fd, struct shm_conn *c, char *buf, size_t cap) {
  if (shm_conn_state(c) != SHM_CONN_UPGRADED || c->seg.fd < 0 || c->anc_head || c->mk_len || c->mk_nfds ||
      c->let_go)
    return -1;
  /* A server whose client has not proved itself yet hands its endpoint connection
   * on (the client's answer is checked there, by the new image); one that has, or
   * that refused, says so in two bits. */
  int proof = 0, ep = -1;
  if (c->role == SHM_SERVER) {
    shm_conn_peer_proven(fd, c); /* attached already: its answer is queued, check it now */
    int p = __atomic_load_n(&c->peer_proven, __ATOMIC_ACQUIRE);
    proof = p == SHM_PROOF_OK ? 4 : p == SHM_PROOF_NONE ? 0 : 8;
    if (p == SHM_PROOF_NONE) ep = c->endpoint;
    if (p == SHM_PROOF_NONE && ep < 0) proof = 8;
  }
  size_t used = strlen(buf);
  /* The new image accepts this segment for this socket only. */
  __atomic_store_n(&c->seg.base->conn.exec_ino[c->role - 1], c->ino, __ATOMIC_RELEASE);
  int n = snprintf(buf + used, cap - used,
                   "C,%d,%d,%d,%d,%" PRIu32 ",%d,%" PRIu64 ",%" PRIu64 ",%" PRIu64
                   ",%d,%d,%d,%d,%" PRIu64 ",%" PRIu64 ",%" PRIu32 ",%d;",
                   as_fd, c->seg.fd, c->role, c->family, c->ino,
                   shm_conn_tx_switched(c) | shm_conn_rx_switched(c) << 1 | proof, c->plain_sent,
                   CONN_WORD(c->sock_read), CONN_WORD(c->rx_plain), conn_flag(c, SHM_F_RD_SHUT), conn_flag(c, SHM_F_WR_SHUT),
                   conn_flag(c, SHM_F_SOCK_EOF), CONN_WORD(c->sock_err),
                   c->tx_total, c->rx_total, c->anc_seen, ep + 1);
  if (n < 0 || (size_t)n >= cap - used) {
    buf[used] = 0;
    return -1;
  }
  return 0;
}

int shm_inherit_encode_dup(int fd, int fd0, char *buf, size_t cap) {
  size_t used = strlen(buf);
  int n = snprintf(buf + used, cap - used, "D,%d,%d;", fd, fd0);
  if (n < 0 || (size_t)n >= cap - used) {
    buf[used] = 0;
    return -1;
  }
  return 0;
}

#define NFIELDS 18

/* Reads up to NFIELDS comma-separated numbers of one entry (after its letter). */
static int parse_fields(const char **pp, uint64_t *v, int max) {
  const char *p = *pp;
  int n = 0;
  while (*p && *p != ';' && n < max) {
    if (*p != ',') return -1;
    char *end;
    errno = 0;
    v[n++] = strtoull(p + 1, &end, 10);
    if (end == p + 1 || errno) return -1;
    p = end;
  }
  if (*p != ';') return -1;
  *pp = p + 1;
  return n;
}

/* The variable comes from whoever ran exec: every field is checked against the
 * kernel's view before anything is trusted. Fails with EINVAL (logged by the
 * caller) and leaves the descriptors alone. */
static int entry_ok(const uint64_t *v) {
  int fd = (int)v[0], dom = 0, type = 0;
  socklen_t l = sizeof dom;
  struct stat st;
  if (v[0] > INT32_MAX || v[1] > INT32_MAX || v[0] == v[1] || v[4] > UINT32_MAX) return 0;
  if ((v[2] != SHM_CLIENT && v[2] != SHM_SERVER) || (v[3] != AF_INET && v[3] != AF_INET6 && v[3] != AF_UNIX))
    return 0;
  /* v[5]: bit 0 our direction switched, bit 1 the peer's switch point known, bit 2
   * (server) the client proved it holds the other end, bit 3 (server) it did not
   * (refused); neither: not yet, and v[16] is the endpoint connection + 1. */
  if (v[5] > 15 || (v[5] & 12) == 12 || v[16] > INT32_MAX || v[9] > 1 || v[10] > 1 || v[11] > 1 || v[12] > 4095) return 0;
  if ((v[5] & 2) && v[7] > v[8]) return 0; /* read more plain bytes than were sent */
  /* Neither number may already be one of ours (a second entry for the same fd). */
  if (shm_fd_kind(fd) != SHM_FD_NONE || shm_fd_kind((int)v[1]) != SHM_FD_NONE) return 0;
  /* The descriptor must still be the socket the entry describes, of its family. */
  if (syscall(SYS_fstat, fd, &st) < 0 || !S_ISSOCK(st.st_mode) || (uint32_t)st.st_ino != (uint32_t)v[4]) return 0;
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0 || dom != (int)v[3]) return 0;
  l = sizeof type;
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM) return 0;
  return 1;
}

/* A carried server connection whose client's answer was not checked yet: its
 * endpoint connection, our socket's device, the peer socket. */
static void carried_endpoint(int fd, int segfd, struct shm_conn *c, const uint64_t *v) {
  /* The endpoint connection, on which the client's answer is (or will be)
   * queued: it must be a unix socket not already ours; else nothing the client
   * writes will be believed (plain at both ends). */
  int ep = (int)v[16] - 1;
  struct stat est;
  if (ep >= 0 && ep != fd && ep != segfd && shm_fd_kind(ep) == SHM_FD_NONE &&
      syscall(SYS_fstat, ep, &est) == 0 && S_ISSOCK(est.st_mode)) {
    c->endpoint = shm_fd_hide(ep);
    shm_fd_own(c->endpoint, &c->endpoint);
    if (c->endpoint < 0) shm_sys_close(ep);
  }
  if (c->endpoint < 0) c->peer_proven = SHM_PROOF_REFUSED;
  struct stat own;
  if (syscall(SYS_fstat, fd, &own) == 0) c->sock_dev = (uint64_t)own.st_dev;
  /* The other end, as the kernel names it now (not as the variable says). */
  if (c->peer_proven == SHM_PROOF_NONE && shm_conn_learn_peer(fd, c) < 0) c->peer_proven = SHM_PROOF_REFUSED;
}

/* The rest of a carried connection's state, as the entry says (entry_ok checked
 * the ranges), and its rings. */
static void carried_state(struct shm_conn *c, const uint64_t *v) {
  c->plain_sent = v[6];
  CONN_SET(c->sock_read, v[7]);
  CONN_SET(c->rx_plain, v[8]);
  c->flags |= (v[9] ? SHM_F_RD_SHUT : 0) | (v[10] ? SHM_F_WR_SHUT : 0) | (v[11] ? SHM_F_SOCK_EOF : 0);
  CONN_SET(c->sock_err, (int)v[12]);
  c->tx_total = v[13];
  c->rx_total = v[14];
  c->anc_seen = (uint32_t)v[15];
  shm_conn_rings(c);
  shm_spin_init(&c->spin_rx, shm_cfg.spin_us);
  shm_spin_init(&c->spin_tx, shm_cfg.spin_us);
}

static struct shm_conn *take_over(const uint64_t *v) {
  int fd = (int)v[0], segfd = (int)v[1];
  if (!entry_ok(v)) {
    SHM_LOG(WARN, "fd=%d: inherited entry does not describe this descriptor (or is out of range)", fd);
    /* If the descriptor is the socket the entry names, that connection was
     * upgraded and cannot be read plainly (kicks, data in a ring): fail it loudly
     * rather than hand kick bytes to the program as data. */
    struct stat st;
    if (v[0] <= INT32_MAX && syscall(SYS_fstat, fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
        (uint32_t)st.st_ino == (uint32_t)v[4])
      syscall(SYS_shutdown, fd, SHUT_RDWR);
    errno = EINVAL;
    return NULL;
  }
  struct shm_conn *c = shm_conn_alloc();
  if (!c) return NULL;
  if (shm_seg_attach(segfd, &c->seg) < 0) {
    int e = errno;
    syscall(SYS_shutdown, fd, SHUT_RDWR); /* as above: loudly, never kick bytes as data */
    shm_conn_unref(-1, c);
    errno = e;
    return NULL;
  }
  if (__atomic_load_n(&c->seg.base->conn.exec_ino[v[2] - 1], __ATOMIC_ACQUIRE) != (uint32_t)v[4]) {
    /* Not the segment this socket was carried with: end the connection loudly. */
    SHM_LOG(WARN, "fd=%d: the inherited segment was not carried with this socket: connection reset", fd);
    syscall(SYS_shutdown, fd, SHUT_RDWR);
    shm_conn_unref(-1, c); /* unmaps it */
    errno = EXDEV;
    return NULL;
  }
  c->seg.fd = shm_fd_hide(segfd); /* close-on-exec again: the next exec decides anew */
  if (c->seg.fd < 0) c->seg.fd = segfd;
  else shm_fd_own(c->seg.fd, &c->seg.fd);
  c->role = (int)v[2];
  c->family = (int)v[3];
  c->ino = (uint32_t)v[4];
  c->flags = (v[5] & 1 ? SHM_F_TX_SWITCHED : 0) | (v[5] >> 1 & 1 ? SHM_F_RX_SWITCHED : 0);
  /* A switched TCP connection's socket was set to send its kicks at once by the
   * previous image (negotiate.c kicks_unbuffered): the program's TCP_NODELAY and
   * TCP_CORK are kept from it here too. */
  c->kicks_nodelay = c->family != AF_UNIX && (c->flags & (SHM_F_TX_SWITCHED | SHM_F_RX_SWITCHED));
  c->peer_proven = c->role != SHM_SERVER ? SHM_PROOF_NONE
                  : v[5] & 4             ? SHM_PROOF_OK
                  : v[5] & 8             ? SHM_PROOF_REFUSED
                                         : SHM_PROOF_NONE;
  if (c->peer_proven == SHM_PROOF_NONE && c->role == SHM_SERVER) carried_endpoint(fd, segfd, c, v);
  carried_state(c, v);
  c->state = SHM_CONN_UPGRADED;
  c->st = shm_stat_open(fd, c->ino, c->role, c->family, SHM_CONN_UPGRADED); /* stats */
  shm_stat_set_state(c->st, SHM_CONN_UPGRADED, SHM_WHY_NONE, 0, c->seg.ring_size);
  if (shm_ring_resume(&c->tx) < 0 || shm_ring_resume(&c->rx) < 0) {
    /* Its bytes cannot be trusted: end it loudly (the peer sees the end of the
     * rings and of the socket) rather than let the program read kick bytes. */
    syscall(SYS_shutdown, fd, SHUT_RDWR);
    shm_conn_unref(-1, c);
    errno = EPROTO;
    return NULL;
  }
  return c;
}

void shm_inherit_load(const char *value, void (*track)(int fd, struct shm_conn *c)) {
  const char *p = value;
  while (*p) {
    char kind = *p++;
    uint64_t v[NFIELDS];
    int n = parse_fields(&p, v, NFIELDS);
    if (n < 0) {
      SHM_LOG(WARN, "%s: malformed, ignored from offset %d", SHM_INHERIT_VAR, (int)(p - value));
      return;
    }
    if (kind == 'C' && n == 17) {
      struct shm_conn *c = take_over(v);
      if (!c) {
        SHM_LOG(WARN, "fd=%d: inherited connection could not be taken over: %s", (int)v[0], strerror(errno));
        continue;
      }
      SHM_LOG(INFO, "inherited fd=%d role=%s: taken over after exec", (int)v[0],
              c->role == SHM_CLIENT ? "client" : "server");
      track((int)v[0], c);
    } else if (kind == 'D' && n == 2 && v[0] <= INT32_MAX && v[1] <= INT32_MAX && v[0] != v[1]) {
      struct shm_conn *c = shm_fd_get((int)v[1], SHM_FD_CONN);
      struct stat st;
      /* A dup is the same socket: same inode, and not one of ours already. */
      if (!c || shm_fd_kind((int)v[0]) != SHM_FD_NONE || syscall(SYS_fstat, (int)v[0], &st) < 0 ||
          !S_ISSOCK(st.st_mode) || (uint32_t)st.st_ino != c->ino) {
        SHM_LOG(WARN, "fd=%d: inherited as a dup of fd=%d, but it is not that socket: ignored", (int)v[0], (int)v[1]);
        continue;
      }
      shm_conn_ref(c);
      track((int)v[0], c);
    } else {
      SHM_LOG(WARN, "%s: malformed entry, ignored from offset %d", SHM_INHERIT_VAR, (int)(p - value));
      return;
    }
  }
}

void shm_inherit_take_env(int secure, void (*track)(int fd, struct shm_conn *c)) {
  const char *inh = getenv(SHM_INHERIT_VAR);
  if (!inh) return;
  /* A setuid/setgid image's environment belongs to whoever started it: never
   * used, and not passed on to its children either. */
  if (!secure && !shm_cfg.disable) shm_inherit_load(inh, track);
  unsetenv(SHM_INHERIT_VAR);
}

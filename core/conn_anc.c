/* Descriptors and credentials on an upgraded AF_UNIX connection (SCM_RIGHTS,
 * SCM_CREDENTIALS): the markers' queue, bounded, and their delivery with the
 * data they were sent with (docs/design.md, "Descriptors and credentials"). */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "conn_int.h"
#include "fdtab.h"
#include "log.h"
#include "real.h"
#include "stats.h"


/* The socket of an upgraded connection carries kick bytes ('k') and, on AF_UNIX,
 * ancillary-data markers: 'A' and the 8-byte stream offset of the first data byte
 * the descriptors attached to the marker go with. The kernel hands over a marker's
 * descriptors with the read that returns its first byte, and ends that read after
 * the marker, so they belong to the next marker completed.
 *
 * What a peer can make us hold is bounded, as the kernel bounds it by message and
 * socket buffer: a marker's offset lies within two rings of our read position (its
 * sender wrote it before data that had to fit in the ring, ahead of a tail we had
 * published; the second ring covers a reader thread that published its tail but
 * not yet rx_total), offsets strictly increase (each marker precedes at least one
 * byte), and a connection queues at most ANC_MAX_MARKERS markers and
 * anc_max_fds() descriptors. Anything else is a corrupt stream: the connection is
 * reset (ECONNRESET on the next read or write, logged) and what the peer sends
 * after is closed at once. */
#define ANC_MAX_MARKERS 4096
#define ANC_MAX_FDS 4096

/* Descriptors one connection may hold for the application: a quarter of the
 * descriptor limit (never EMFILE for the application because of one peer). */
static uint64_t anc_max_fds(void) {
  struct rlimit rl;
  uint64_t m = ANC_MAX_FDS;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < m)
    m = rl.rlim_cur / 4 > 16 ? rl.rlim_cur / 4 : 16;
  return m;
}

static uint64_t anc_queued_fds(const struct shm_conn *c) {
  return c->anc_head ? c->anc_tail->fdsum - c->anc_head->fdsum + (uint64_t)c->anc_head->nfds : 0;
}

static void anc_violation(struct shm_conn *c, const char *why, unsigned long long v) {
  if (!CONN_WORD(c->sock_err)) SHM_LOG(WARN, "peer broke the descriptor-marker rules (%s %llu): connection reset", why, v);
  CONN_SET(c->sock_err, ECONNRESET);
}

/* The connection is reset or ended: nothing the peer sends is queued any more. */
static int anc_closed(const struct shm_conn *c) { return CONN_WORD(c->sock_err) || conn_flag(c, SHM_F_SOCK_EOF); }

void queue_anc(struct shm_conn *c, uint64_t off) {
  struct shm_anc *a = NULL;
  if (anc_closed(c)) {
  } else if (off > c->rx_total + 2 * (uint64_t)c->seg.ring_size) {
    anc_violation(c, "offset beyond what the ring can hold ahead of us:", (unsigned long long)off);
  } else if (c->anc_head && off <= c->anc_tail->off) {
    anc_violation(c, "offset not after the previous marker's:", (unsigned long long)off);
  } else if (c->anc_head && c->anc_tail->seq - c->anc_head->seq + 1 >= ANC_MAX_MARKERS) {
    anc_violation(c, "markers queued, at most", ANC_MAX_MARKERS);
  } else {
    a = malloc(sizeof *a + (size_t)c->mk_nfds * sizeof(int));
  }
  if (!a) {
    for (int i = 0; i < c->mk_nfds; i++) shm_sys_close(c->mk_fds[i]);
  } else {
    a->next = NULL;
    a->off = off;
    a->has_cred = c->mk_has_cred;
    a->cred = c->mk_cred;
    a->nfds = c->mk_nfds;
    if (c->mk_nfds) memcpy(a->fds, c->mk_fds, (size_t)c->mk_nfds * sizeof(int));
    /* The tail stays valid while the list is not empty: entries leave from the head. */
    if (c->anc_head) {
      a->seq = c->anc_tail->seq + 1;
      a->fdsum = c->anc_tail->fdsum + (uint64_t)a->nfds;
      c->anc_tail->next = a;
    } else {
      a->seq = 0;
      a->fdsum = (uint64_t)a->nfds;
      c->anc_head = a;
    }
    c->anc_tail = a;
  }
  free(c->mk_fds);
  c->mk_fds = NULL;
  c->mk_nfds = 0;
  c->mk_has_cred = 0;
}

static void close_cmsg_fds(const struct cmsghdr *cm, int k) {
  for (int i = 0; i < k; i++) {
    int x;
    memcpy(&x, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof x);
    shm_sys_close(x);
  }
}

void take_fds(struct shm_conn *c, struct msghdr *m) {
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
        cm->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
      /* With SO_PASSCRED the kernel attaches credentials to every message: those
       * of a kick say nothing, a marker's go with its data. The last seen wins. */
      memcpy(&c->mk_cred, CMSG_DATA(cm), sizeof c->mk_cred);
      c->mk_has_cred = 1;
      continue;
    }
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    if (!anc_closed(c) && anc_queued_fds(c) + (uint64_t)c->mk_nfds + (uint64_t)k > anc_max_fds())
      anc_violation(c, "descriptors queued, at most", (unsigned long long)anc_max_fds());
    if (anc_closed(c)) {
      close_cmsg_fds(cm, k);
      continue;
    }
    int *n = realloc(c->mk_fds, (size_t)(c->mk_nfds + k) * sizeof(int));
    if (!n) {
      close_cmsg_fds(cm, k);
      continue;
    }
    memcpy(n + c->mk_nfds, CMSG_DATA(cm), (size_t)k * sizeof(int));
    c->mk_fds = n;
    c->mk_nfds += k;
  }
}

void close_fds(struct shm_anc *a) {
  for (int i = 0; i < a->nfds; i++) shm_sys_close(a->fds[i]);
}

/* Control messages for a ring read, as the kernel builds them for a unix stream:
 * the sender's credentials first when SO_PASSCRED is on (those the sender
 * attached to this data, else the peer's), then the descriptors that came with
 * the data (as many as fit: MSG_CTRUNC and the rest closed when they do not;
 * kept for the real read when peeking). */
int passcred_on(int fd, struct shm_conn *c) {
  int v = __atomic_load_n(&c->passcred, __ATOMIC_RELAXED);
  if (!v) {
    int on = 0;
    socklen_t l = sizeof on;
    v = syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PASSCRED, &on, &l) == 0 && on ? 2 : 1;
    __atomic_store_n(&c->passcred, v, __ATOMIC_RELAXED);
    if (v == 2 && c->seg.base) __atomic_store_n(&c->seg.base->conn.want_cred[c->role - 1], 1, __ATOMIC_RELEASE);
  }
  return v == 2;
}

void shm_conn_want_cred(int fd, struct shm_conn *c) {
  if (c->family == AF_UNIX && c->seg.base) passcred_on(fd, c);
}



void deliver_anc(int fd, struct shm_conn *c, struct shm_anc *a, struct msghdr *mh,
                 size_t ctl_cap, int flags) {
  int peek = flags & MSG_PEEK;
  size_t used = 0;
  /* A marker's credentials are the writer's until its next marker (cred_due). */
  if (a && a->has_cred && !peek) c->rx_cred = a->cred;
  if (mh && passcred_on(fd, c)) {
    struct ucred cr;
    if (a && a->has_cred) {
      cr = a->cred;
    } else if (c->rx_cred.pid) {
      cr = c->rx_cred;
    } else {
      if (!c->peer_cred.pid) {
        socklen_t l = sizeof c->peer_cred;
        syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &c->peer_cred, &l);
      }
      cr = c->peer_cred;
    }
    if (mh->msg_control && ctl_cap >= CMSG_LEN(sizeof cr)) {
      struct cmsghdr *cm = mh->msg_control;
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_CREDENTIALS;
      cm->cmsg_len = CMSG_LEN(sizeof cr);
      memcpy(CMSG_DATA(cm), &cr, sizeof cr);
      used = CMSG_SPACE(sizeof cr);
    } else {
      mh->msg_flags |= MSG_CTRUNC;
    }
  }
  if (a && a->nfds && !peek) {
    size_t room = ctl_cap > used ? ctl_cap - used : 0;
    int fit = mh && mh->msg_control && room >= CMSG_LEN(sizeof(int))
                  ? (int)((room - CMSG_LEN(0)) / sizeof(int))
                  : 0;
    if (fit > a->nfds) fit = a->nfds;
    if (fit) {
      struct cmsghdr *cm = (struct cmsghdr *)((char *)mh->msg_control + used);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN((size_t)fit * sizeof(int));
      memcpy(CMSG_DATA(cm), a->fds, (size_t)fit * sizeof(int));
      used += CMSG_SPACE((size_t)fit * sizeof(int));
    }
    for (int i = 0; i < fit; i++)
      if (!(flags & MSG_CMSG_CLOEXEC)) syscall(SYS_fcntl, a->fds[i], F_SETFD, 0);
    for (int i = fit; i < a->nfds; i++) shm_sys_close(a->fds[i]);
    if (fit < a->nfds && mh) mh->msg_flags |= MSG_CTRUNC;
  }
  if (mh) mh->msg_controllen = used < ctl_cap ? used : ctl_cap;
}

/* AF_UNIX: how many ring bytes this read may take so that descriptors arrive with
 * the first byte of the data they were sent with; *at is set when they go with
 * this read. SIZE_MAX: no limit. */
size_t anc_limit(int fd, struct shm_conn *c, struct shm_anc **at) {
  *at = NULL;
  /* Markers are on the socket before the anc_seq bump, which precedes the head
   * store that made the data we are about to read visible. */
  uint32_t seq = __atomic_load_n(&c->rx.ctl->anc_seq, __ATOMIC_ACQUIRE); /* A2, after R1 */
  if (seq != c->anc_seen) {
    drain_locked(fd, c);
    c->anc_seen = seq;
  }
  while (c->anc_head && c->anc_head->off < c->rx_total) { /* impossible unless hostile */
    struct shm_anc *a = c->anc_head;
    c->anc_head = a->next;
    close_fds(a);
    free(a);
  }
  struct shm_anc *a = c->anc_head;
  if (!a) return SIZE_MAX;
  if (a->off > c->rx_total) return (size_t)(a->off - c->rx_total);
  *at = a;
  if (!a->next) return SIZE_MAX;
  if (a->next->off <= a->off) {
    /* An honest sender's markers advance (each precedes at least one byte). A
     * repeated offset would make this read take 0 bytes, which the caller would
     * report as end of file: fail the connection instead (reset, not EOF). */
    c->rx.err = EPROTO;
    return 0;
  }
  return (size_t)(a->next->off - c->rx_total);
}

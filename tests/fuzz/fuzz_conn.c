/* libFuzzer target: the data path of an upgraded AF_UNIX connection facing a peer
 * that controls everything it can reach: the bytes on the real socket (kicks and
 * ancillary-data markers, with or without descriptors), the ring's shared indices,
 * anc_seq, the close flags, the server's switch-over point. The victim is a real
 * struct shm_conn over a real segment and a socketpair, driven through the same
 * entry points as the interposers (non-blocking only, so nothing can wait).
 * Input: 1 byte role, then operations of 6 bytes. Oracles: no sanitizer report;
 * no call returns more than asked; a read reports end of file only if the peer
 * set its close flag (anything else it does is an error, not an EOF); no
 * descriptor leaks (the process's open
 * descriptors return to their count before the input). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "segment.h"

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  if (!d) abort();
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

static void close_cmsg_fds(struct msghdr *m) {
  if (m->msg_controllen == 0) return;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k; i++) {
      int x;
      memcpy(&x, CMSG_DATA(cm) + i * sizeof(int), sizeof x);
      close(x);
    }
  }
}

static int devnull = -1; /* what travels as a descriptor */

/* Sends bytes on fd, with `nfds` duplicates of /dev/null attached when nfds > 0. */
static void send_with_fds(int fd, const void *b, size_t len, int nfds) {
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(3 * sizeof(int))];
  } ctl;
  struct iovec v = {(void *)b, len};
  struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
  int fds[3] = {-1, -1, -1};
  if (nfds > 0 && len > 0) {
    memset(&ctl, 0, sizeof ctl);
    for (int i = 0; i < nfds; i++) fds[i] = dup(devnull);
    m.msg_control = ctl.b;
    m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
  }
  sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  for (int i = 0; i < nfds; i++) close(fds[i]);
}

/* The peer reads whatever our side put on the socket (kicks, markers) and closes
 * the descriptors that came with markers. */
static void peer_drain(int fd) {
  char b[512];
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(64 * sizeof(int))];
  } ctl;
  for (int i = 0; i < 64; i++) {
    struct iovec v = {b, sizeof b};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    if (recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0) break;
    close_cmsg_fds(&m);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (devnull < 0) devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (n < 1) return 0;
  int base = count_fds();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) abort();
  struct shm_seg seg;
  if (shm_seg_create(4096, &seg) < 0) abort();
  shm_seg_close_fd(&seg);
  struct shm_conn *c = shm_conn_alloc();
  if (!c) abort();
  c->role = d[0] & 1 ? SHM_SERVER : SHM_CLIENT;
  c->family = AF_UNIX;
  c->state = SHM_CONN_UPGRADED;
  c->flags |= SHM_F_TX_SWITCHED; /* both ends write to the ring; the peer's switch-over is fuzzed */
  c->peer_proven = SHM_PROOF_OK; /* a server's client has proved itself (the negotiation is not fuzzed here) */
  shm_spin_init(&c->spin_rx, 0);
  shm_spin_init(&c->spin_tx, 0);
  c->seg = seg;
  int rxdir = c->role == SHM_CLIENT ? SHM_DIR_S2C : SHM_DIR_C2S;
  shm_seg_ring(&c->seg, rxdir, SHM_RING_CONSUMER, &c->rx);
  shm_seg_ring(&c->seg, !rxdir, SHM_RING_PRODUCER, &c->tx);
  seg.base->conn.holders[0] = seg.base->conn.holders[1] = 1;
  /* The peer's own (honest) handles on the same rings. */
  struct shm_ring ptx, prx;
  shm_seg_ring(&seg, rxdir, SHM_RING_PRODUCER, &ptx);
  shm_seg_ring(&seg, !rxdir, SHM_RING_CONSUMER, &prx);
  struct shm_ring_ctl *rxc = &seg.base->ring[rxdir], *txc = &seg.base->ring[!rxdir];
  unsigned char buf[6000];
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(8 * sizeof(int))];
  } ctl;
  int eof_said = 0;
  for (size_t i = 1; i + 6 <= n; i += 6) {
    uint8_t op = d[i], a = d[i + 1];
    uint32_t arg;
    memcpy(&arg, d + i + 2, 4);
    switch (op % 12) {
      case 0: { /* peer: raw bytes on the socket, taken from the input itself */
        size_t len = a % 32;
        if (i + 6 + len > n) len = n - i - 6;
        send_with_fds(sv[1], d + i + 6, len, (int)(arg % 4));
        i += len;
        break;
      }
      case 1: { /* peer: a well-formed marker ('A' + offset) */
        unsigned char mk[9] = {'A'};
        uint64_t off = arg % 2 ? (uint64_t)arg : c->rx_total + (arg % 64);
        memcpy(mk + 1, &off, 8);
        send_with_fds(sv[1], mk, 9, 1 + (int)(a % 3));
        __atomic_add_fetch(&rxc->anc_seq, 1, __ATOMIC_RELEASE);
        break;
      }
      case 2: { /* peer: ring data */
        memset(buf, a, sizeof buf);
        shm_ring_write(&ptx, buf, arg % 5000);
        break;
      }
      case 3: /* hostile anc_seq */
        rxc->anc_seq = arg;
        break;
      case 4: /* hostile indices */
        if (a & 1) rxc->head = arg;
        else txc->tail = arg;
        break;
      case 5: { /* victim: recvmsg */
        size_t len = 1 + arg % sizeof buf;
        size_t cap = (a % 4) == 0 ? 0 : (a % 4) * 12;
        struct iovec v[2] = {{buf, len / 2}, {buf + len / 2, len - len / 2}};
        struct msghdr m = {.msg_iov = v, .msg_iovlen = 2, .msg_control = cap ? ctl.b : NULL,
                           .msg_controllen = cap};
        int flags = MSG_DONTWAIT | (a & 16 ? MSG_PEEK : 0) | (a & 32 ? MSG_WAITALL : 0) |
                    (a & 64 ? MSG_CMSG_CLOEXEC : 0);
        ssize_t r = shm_conn_recv(sv[0], c, v, 2, flags, a & 128 ? NULL : &m);
        if (r > (ssize_t)len) abort();
        /* End of file only if the peer ever said so: a corrupt stream is an error
         * (reported once as ECONNRESET; reads after it see end of file, as after a
         * kernel reset). */
        if (r == 0 && !eof_said) abort();
        if (r < 0 && errno == ECONNRESET) eof_said = 1;
        if (!(a & 128)) {
          if (m.msg_controllen > cap) abort();
          close_cmsg_fds(&m);
        }
        break;
      }
      case 6: { /* victim: sendmsg, with descriptors sometimes */
        size_t len = arg % 6000;
        struct iovec v = {buf, len};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
        int fd = -1;
        if (a & 1) {
          fd = dup(devnull);
          m.msg_control = ctl.b;
          m.msg_controllen = CMSG_SPACE(sizeof(int));
          struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
          cm->cmsg_level = SOL_SOCKET;
          cm->cmsg_type = SCM_RIGHTS;
          cm->cmsg_len = CMSG_LEN(sizeof(int));
          memcpy(CMSG_DATA(cm), &fd, sizeof fd);
        }
        ssize_t r = shm_conn_send(sv[0], c, &v, 1, MSG_DONTWAIT | MSG_NOSIGNAL, fd >= 0 ? &m : NULL);
        if (r > (ssize_t)len) abort();
        if (r < 0 && errno == ECONNRESET) eof_said = 1;
        if (fd >= 0) close(fd);
        break;
      }
      case 7: /* peer consumes ring data and socket bytes */
        shm_ring_read(&prx, buf, arg % 5000, 0);
        peer_drain(sv[1]);
        break;
      case 8: /* hostile switch-over point and flags */
        if (a & 1) {
          seg.base->conn.c2s_plain = arg;
          seg.base->conn.switched = 1;
          seg.base->conn.s2c_plain = arg;
          seg.base->conn.s_switched = 1;
        }
        if (a & 32) seg.base->conn.attached = arg;
        if (a & 2) eof_said |= rxc->wr_closed = arg & 1;
        if (a & 4) txc->rd_closed = arg & 1;
        if (a & 8) rxc->cons_armed = arg;
        if (a & 16) txc->prod_armed = arg;
        if (a & 64) rxc->prod_fast = arg; /* fast mode: the victim answers with membarrier */
        if (a & 128) txc->cons_mb = arg;  /* consent: the victim's writes may skip their fence */
        break;
      case 9: { /* victim: readiness and FIONREAD, as poll and ioctl ask */
        int v;
        (void)shm_conn_poll_bits(sv[0], c);
        (void)shm_conn_fionread(sv[0], c, &v);
        (void)shm_conn_rx_ready(c);
        int armed;
        (void)shm_conn_arm(sv[0], c, POLLIN | POLLOUT, &armed);
        shm_conn_disarm(c, armed);
        break;
      }
      case 10: /* victim: drain and probe, as epoll and blocked writers do */
        shm_conn_drain(sv[0], c);
        shm_conn_probe(sv[0], c);
        break;
      case 11: /* victim: shutdown of its writing side */
        if (a & 1) shm_conn_shutdown(sv[0], c, SHUT_WR);
        break;
    }
  }
  shm_conn_unref(sv[0], c);
  close(sv[0]);
  peer_drain(sv[1]);
  close(sv[1]);
  /* Descriptors still in flight in a closed socket's queue are released by the
   * kernel asynchronously (unix garbage collection): give it a moment. */
  for (int k = 0; k < 100 && count_fds() != base; k++) usleep(1000);
  if (count_fds() != base) abort();
  return 0;
}

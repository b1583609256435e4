#include "real.h"
#include "offer.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "segment.h"

const char *shm_offer_head_check(const void *buf, long n, uint64_t client_ino) {
  struct shm_offer off;
  if (n != (long)sizeof off) return "malformed offer";
  memcpy(&off, buf, sizeof off); /* no alignment assumed of the caller's buffer */
  if (off.magic != SHM_OFFER_MAGIC || off.version != SHM_SEG_VERSION || off.reserved) return "bad offer header";
  if (off.client_ino != client_ino) return "offer for another connection";
  return NULL;
}

const char *shm_offer_check(const void *buf, long n, int msg_flags, int nfds, uint64_t client_ino) {
  if (n != (long)sizeof(struct shm_offer) || (msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds != 2)
    return "malformed offer";
  return shm_offer_head_check(buf, n, client_ino);
}

const char *shm_proof_check(const void *buf, long n, int msg_flags, int nfds, uint64_t client_ino,
                            uint64_t server_ino) {
  struct shm_proof pr;
  if (n != (long)sizeof pr || (msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds != 1) return "malformed answer";
  memcpy(&pr, buf, sizeof pr);
  if (pr.magic != SHM_PROOF_MAGIC) return "bad answer header";
  if (pr.client_ino != client_ino || pr.server_ino != server_ino) return "answer for another connection";
  return NULL;
}

/* One record with descriptors attached. Not through libc's sendmsg: inside the
 * library that is our own interposer. */
static long send_with_fds(int ep, const void *buf, size_t len, const int *fds, int nfds, int flags) {
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(2 * sizeof(int))];
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec v = {(void *)buf, len};
  struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b,
                     .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
  memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
  return syscall(SYS_sendmsg, ep, &m, flags);
}

long shm_offer_send(int ep, uint32_t ring_size, uint64_t client_ino, uint64_t server_ino, int server_fd,
                    int segfd, int proof, int flags) {
  struct shm_offer off = {SHM_OFFER_MAGIC, SHM_SEG_VERSION, ring_size, client_ino, server_ino, server_fd, 0};
  int fds[2] = {segfd, proof};
  return send_with_fds(ep, &off, sizeof off, fds, 2, flags);
}

long shm_proof_send(int ep, uint64_t client_ino, uint64_t server_ino, int proof, int flags) {
  struct shm_proof pr = {SHM_PROOF_MAGIC, client_ino, server_ino};
  return send_with_fds(ep, &pr, sizeof pr, &proof, 1, flags);
}

long shm_msg_recv(int ep, void *buf, size_t len, int flags, int *fds, int max, int *nfds, int *msg_flags) {
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(sizeof(int) * 4)];
  } ctl;
  struct iovec v = {buf, len};
  struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
  long n = syscall(SYS_recvmsg, ep, &m, flags);
  *nfds = 0;
  *msg_flags = n < 0 ? 0 : m.msg_flags;
  for (struct cmsghdr *cm = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; cm; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int x;
      memcpy(&x, CMSG_DATA(cm) + i * sizeof(int), sizeof x);
      if (*nfds < max) fds[*nfds] = x;
      else shm_sys_close(x); /* not close(): inside the library that is ours */
      ++*nfds;
    }
  }
  return n;
}

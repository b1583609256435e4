#include "offer.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "segment.h"

const char *shm_offer_check(const void *buf, long n, int msg_flags, int nfds, uint64_t client_ino) {
  struct shm_offer off;
  if (n != (long)sizeof off || (msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds != 2)
    return "malformed offer";
  memcpy(&off, buf, sizeof off); /* no alignment assumed of the caller's buffer */
  if (off.magic != SHM_OFFER_MAGIC || off.version != SHM_SEG_VERSION) return "bad offer header";
  if (off.client_ino != client_ino) return "offer for another connection";
  return NULL;
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

long shm_offer_send(int ep, const struct shm_offer *off, int segfd, int proof, int flags) {
  int fds[2] = {segfd, proof};
  return send_with_fds(ep, off, sizeof *off, fds, 2, flags);
}

long shm_proof_send(int ep, const struct shm_proof *pr, int proof, int flags) {
  return send_with_fds(ep, pr, sizeof *pr, &proof, 1, flags);
}

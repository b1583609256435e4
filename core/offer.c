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

long shm_offer_send(int ep, const struct shm_offer *off, int segfd, int proof, int flags) {
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(2 * sizeof(int))];
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec v = {(void *)off, sizeof *off};
  struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
  int fds[2] = {segfd, proof};
  memcpy(CMSG_DATA(cm), fds, sizeof fds);
  /* Not through libc's sendmsg: inside the library that is our own interposer. */
  return syscall(SYS_sendmsg, ep, &m, flags);
}

/* libFuzzer target: the offer message a pending client reads from its endpoint.
 * Input: 1 byte of message flags, 1 byte descriptor count, 8 bytes of the
 * client's inode, then the message as recvmsg returned it (any length). The
 * oracle restates the acceptance rule independently: an offer is taken only when
 * it is exactly one record, untruncated, with two descriptors, the right magic
 * and version, its reserved word zero, and addressed to this connection; the
 * peek's check (shm_offer_head_check) the same without flags and descriptors. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "offer.h"
#include "segment.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 10) return 0;
  int flags = (d[0] & 1 ? MSG_TRUNC : 0) | (d[0] & 2 ? MSG_CTRUNC : 0) | (d[0] & 4 ? MSG_EOR : 0);
  int nfds = d[1] % 5;
  uint64_t ino;
  memcpy(&ino, d + 2, sizeof ino);
  const uint8_t *msg = d + 10;
  long len = (long)(n - 10);
  if (d[0] & 8) len = -1; /* recvmsg failed */
  /* The message in a buffer of exactly its size, so that ASan sees any overread. */
  uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
  if (len > 0) memcpy(buf, msg, (size_t)len);
  const char *why = shm_offer_check(buf, len, flags, nfds, ino);
  const char *head = shm_offer_head_check(buf, len, ino);
  int fields = len == (long)sizeof(struct shm_offer);
  if (fields) {
    struct shm_offer o;
    memcpy(&o, buf, sizeof o);
    fields = o.magic == SHM_OFFER_MAGIC && o.version == SHM_SEG_VERSION && o.reserved == 0 && o.client_ino == ino;
  }
  int ok = fields && !(flags & (MSG_TRUNC | MSG_CTRUNC)) && nfds == 2;
  if (ok != (why == NULL) || fields != (head == NULL)) abort();
  free(buf);
  return 0;
}

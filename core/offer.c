#include "offer.h"

#include <string.h>
#include <sys/socket.h>

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

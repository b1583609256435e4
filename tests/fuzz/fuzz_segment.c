/* libFuzzer target: a segment handed over by a peer, through the whole of
 * shm_seg_attach on a real memfd. Input: 1 byte of seals, 1 byte choosing the file
 * size (near the sizes of small rings), then the header bytes. The oracle: attach
 * succeeds only on a fully sealed file whose header describes exactly the file's
 * geometry; when it does, the rings it hands out lie inside the mapping and work. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "segment.h"

static int check_hdr(const struct shm_seg_hdr *h, uint64_t size) {
  uint32_t r = h->ring_size;
  int pow2 = r && !(r & (r - 1));
  return h->magic == SHM_SEG_MAGIC && h->hdr_size == SHM_SEG_HDR_SIZE && h->version == SHM_SEG_VERSION &&
         pow2 && r >= 4096 && r <= (64u << 20) && h->seg_size == size && 4096 + 2 * (uint64_t)r == size;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 2) return 0;
  static const int64_t base[] = {4096 + 2 * 4096, 4096 + 2 * 8192, 4096 + 2 * 16384, 4096, 0};
  int64_t size = base[(d[1] >> 4) % 5] + ((int64_t)(d[1] & 15) - 8) * ((d[1] & 0x80) ? 1 : 4096);
  if (size < 0) size = 0;
  struct shm_seg_hdr h;
  memset(&h, 0, sizeof h);
  memcpy(&h, d + 2, n - 2 < sizeof h ? n - 2 : sizeof h);
  /* The pure check first: the same rule as the oracle. */
  if ((shm_seg_hdr_check(&h, (uint64_t)size) == 0) != check_hdr(&h, (uint64_t)size)) abort();

  int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return 0;
  if (ftruncate(fd, size) < 0) goto out;
  if (size >= (int64_t)sizeof h) pwrite(fd, &h, sizeof h, 0);
  int seals = d[0] & (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  if (seals) fcntl(fd, F_ADD_SEALS, seals);
  int all = (seals & (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW);
  struct shm_seg s;
  int rc = shm_seg_attach(fd, &s);
  int want = all && !(seals & F_SEAL_WRITE) && check_hdr(&h, (uint64_t)size);
  if ((rc == 0) != want) abort();
  if (rc == 0) {
    if (s.size != (size_t)size || s.ring_size != h.ring_size) abort();
    struct shm_ring p, c;
    for (int dir = 0; dir < 2; dir++) {
      shm_seg_ring(&s, dir, SHM_RING_PRODUCER, &p);
      shm_seg_ring(&s, dir, SHM_RING_CONSUMER, &c);
      if (p.data < (unsigned char *)s.base + 4096 || p.data + p.size > (unsigned char *)s.base + s.size) abort();
      /* Fill and drain the whole ring: every byte of the data area is touched. */
      unsigned char *b = malloc(p.size);
      memset(b, 0x5a, p.size);
      if (shm_ring_write(&p, b, p.size) != (ssize_t)p.size) abort();
      memset(b, 0, p.size);
      if (shm_ring_read(&c, b, p.size, 0) != (ssize_t)p.size || b[0] != 0x5a || b[p.size - 1] != 0x5a) abort();
      free(b);
    }
    shm_seg_destroy(&s);
  }
out:
  close(fd);
  return 0;
}

/* libFuzzer target: ring index validation against a peer that writes anything
 * into the shared control lines. The data area is a heap block of exactly the
 * ring's size, so ASan reports any access outside it. Input: 1 byte ring size
 * selector, then operations. Oracles:
 *   - until the first hostile store, the consumer reads exactly the bytes the
 *     producer wrote, in order (a model stream);
 *   - readable/writable never report more than the ring holds;
 *   - once a handle reports EPROTO it keeps reporting it (sticky). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

static uint8_t gen(uint64_t i) { return (uint8_t)(i * 131 + (i >> 8) * 7 + 1); }

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 1) return 0;
  uint32_t size = 16u << (d[0] % 6); /* 16 .. 512: small, so that wrap-around is common */
  struct shm_ring_ctl *ctl = calloc(1, sizeof *ctl);
  unsigned char *data = malloc(size);
  unsigned char buf[3 * 512], src[3 * 512];
  struct shm_ring p, c;
  shm_ring_init(&p, ctl, data, size, SHM_RING_PRODUCER);
  shm_ring_init(&c, ctl, data, size, SHM_RING_CONSUMER);
  uint64_t wrote = 0, read = 0;
  int hostile = 0;
  size_t i = 1;
  while (i + 5 <= n) {
    uint8_t op = d[i];
    uint32_t arg;
    memcpy(&arg, d + i + 1, 4);
    i += 5;
    int p_broken = p.err == EPROTO, c_broken = c.err == EPROTO;
    switch (op % 8) {
      case 0:
      case 1: { /* producer writes (one or three iovecs) */
        size_t len = arg % (2 * size + 1);
        for (size_t k = 0; k < len; k++) src[k] = gen(wrote + k);
        ssize_t w;
        if (op % 8 == 0) {
          w = shm_ring_write(&p, src, len);
        } else {
          size_t a = len / 3, b = len / 2 - a;
          struct iovec v[3] = {{src, a}, {src + a, b}, {src + a + b, len - a - b}};
          w = shm_ring_writev(&p, v, 3);
        }
        if (w > (ssize_t)size || w > (ssize_t)len) abort();
        if (w > 0) wrote += (uint64_t)w;
        break;
      }
      case 2:
      case 3: { /* consumer reads, peeks, or reads into three iovecs */
        size_t len = arg % (2 * size + 1);
        int peek = (arg >> 16) & 1;
        memset(buf, 0, sizeof buf);
        ssize_t r;
        if (op % 8 == 2) {
          r = shm_ring_read(&c, buf, len, peek);
        } else {
          size_t a = len / 3, b = len / 2 - a;
          struct iovec v[3] = {{buf, a}, {buf + a, b}, {buf + a + b, len - a - b}};
          r = shm_ring_readv(&c, v, 3, peek);
        }
        if (r > (ssize_t)size || r > (ssize_t)len) abort();
        if (r > 0 && !hostile) {
          for (ssize_t k = 0; k < r; k++)
            if (buf[k] != gen(read + (uint64_t)k)) abort();
          if (!peek) read += (uint64_t)r;
        }
        break;
      }
      case 4: /* hostile head */
        __atomic_store_n(&ctl->head, arg, __ATOMIC_RELEASE);
        hostile = 1;
        break;
      case 5: /* hostile tail */
        __atomic_store_n(&ctl->tail, arg, __ATOMIC_RELEASE);
        hostile = 1;
        break;
      case 6: { /* readiness, as a poll would ask it */
        ssize_t a = shm_ring_readable(&c, arg % (size + 2));
        ssize_t b = shm_ring_writable(&p, arg % (size + 2));
        if (a > (ssize_t)size || b > (ssize_t)size) abort();
        if (!hostile && a >= 0 && (uint64_t)a > wrote - read) abort(); /* a cached count may be lower */
        break;
      }
      case 7: /* flags: closes, and hostile flips of them */
        if (arg & 1) shm_ring_close_write(&p);
        if (arg & 2) shm_ring_close_read(&c);
        if (arg & 4) {
          ctl->wr_closed = arg >> 8;
          ctl->rd_closed = arg >> 16;
        }
        (void)shm_ring_eof(&c);
        break;
    }
    /* Sticky: a broken ring stays broken, whatever the peer writes next. */
    if ((p_broken && p.err != EPROTO) || (c_broken && c.err != EPROTO)) abort();
    if (p_broken && (shm_ring_writable(&p, 1) != -1 || errno != EPROTO)) abort();
    if (c_broken && (shm_ring_readable(&c, 1) != -1 || errno != EPROTO)) abort();
  }
  free(data);
  free(ctl);
  return 0;
}

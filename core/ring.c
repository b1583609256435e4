#include "ring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Barrier names (docs/design.md, "Ring protocol"):
 *   W1 producer publishes head (release)   pairs with R1 consumer loads head (acquire)
 *   R2 consumer publishes tail (release)   pairs with W2 producer loads tail (acquire)
 *   C1 producer sets wr_closed (release)   pairs with C2 consumer loads wr_closed (acquire)
 * W1/R1 make the bytes copied before head moved visible to the consumer; R2/W2 make
 * the consumer's reads of a region complete before the producer reuses it; C1/C2
 * make every byte published before the close visible before EOF is reported. */

void shm_ring_init(struct shm_ring *r, struct shm_ring_ctl *ctl, unsigned char *data,
                   uint32_t size, int role) {
  r->ctl = ctl;
  r->data = data;
  r->size = size;
  r->mask = size - 1;
  r->pos = 0;
  r->peer = 0;
  r->role = role;
  r->err = 0;
  r->streak = 0;
  r->fast = 0;
}

static ssize_t fail(struct shm_ring *r, int e) {
  __atomic_store_n(&r->err, e, __ATOMIC_RELAXED);
  errno = e;
  return -1;
}

int shm_ring_resume(struct shm_ring *r) {
  struct shm_ring_ctl *c = r->ctl;
  uint32_t head = __atomic_load_n(&c->head, __ATOMIC_ACQUIRE);
  uint32_t tail = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
  if ((uint32_t)(head - tail) > r->size) return (int)fail(r, EPROTO);
  r->pos = r->role == SHM_RING_PRODUCER ? head : tail;
  r->peer = r->role == SHM_RING_PRODUCER ? tail : head;
  return 0;
}

/* Our index in the segment, if it differs from pos and the pair of indices is
 * consistent (*peer: the other side's, read with it): 1; else 0. Any distance
 * (a sibling may have moved 3 GiB: indices are mod 2^32), which is all a hostile
 * peer could forge anyway. */
static int own_index_moved(const struct shm_ring *r, uint32_t pos, uint32_t *own, uint32_t *peer) {
  uint32_t head = __atomic_load_n(&r->ctl->head, __ATOMIC_ACQUIRE);
  uint32_t tail = __atomic_load_n(&r->ctl->tail, __ATOMIC_ACQUIRE);
  *own = r->role == SHM_RING_PRODUCER ? head : tail;
  *peer = r->role == SHM_RING_PRODUCER ? tail : head;
  return *own != pos && (uint32_t)(head - tail) <= r->size;
}

uint32_t shm_ring_resync(struct shm_ring *r) {
  uint32_t own, peer, d;
  if (!own_index_moved(r, r->pos, &own, &peer)) return 0;
  d = own - r->pos;
  r->pos = own;
  r->peer = peer;
  return d;
}

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t t = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len > SIZE_MAX - t) return SIZE_MAX;
    t += iov[i].iov_len;
  }
  return t;
}

/* Two spans covering n bytes starting at free-running index idx. */
static void spans(const struct shm_ring *r, uint32_t idx, size_t n, struct shm_span sp[2]) {
  uint32_t off = idx & r->mask;
  size_t first = r->size - off;
  if (first > n) first = n;
  sp[0].p = r->data + off;
  sp[0].len = first;
  sp[1].p = r->data;
  sp[1].len = n - first;
}

/* Copies n bytes between an iovec and the (one or two) spans of the ring: into the
 * ring when to_ring, out of it otherwise. Wrap-around is the second span. */
static void copy_spans(struct shm_span sp[2], const struct iovec *iov, int iovcnt, size_t n, int to_ring) {
  int s = 0;
  for (int i = 0; i < iovcnt && n; i++) {
    unsigned char *u = iov[i].iov_base;
    size_t len = iov[i].iov_len < n ? iov[i].iov_len : n;
    n -= len;
    while (len) {
      if (sp[s].len == 0) s++;
      size_t c = len < sp[s].len ? len : sp[s].len;
      if (to_ring) memcpy(sp[s].p, u, c);
      else memcpy(u, sp[s].p, c);
      sp[s].p += c;
      sp[s].len -= c;
      u += c;
      len -= c;
    }
  }
}

ssize_t shm_ring_writable(struct shm_ring *r, size_t want) {
  if (r->err) {
    errno = r->err;
    return -1;
  }
  uint32_t used = r->pos - r->peer;
  size_t room = r->size - used;
  if (room >= want && room > 0) return (ssize_t)room;
  uint32_t t = __atomic_load_n(&r->ctl->tail, __ATOMIC_ACQUIRE); /* W2, pairs with R2 */
  /* The tail may only move forward, and never past what we published. */
  if ((uint32_t)(t - r->peer) > used) return fail(r, EPROTO);
  __atomic_store_n(&r->peer, t, __ATOMIC_RELAXED); /* looked at by other threads */
  if (__atomic_load_n(&r->ctl->rd_closed, __ATOMIC_RELAXED)) {
    errno = EPIPE;
    return -1;
  }
  return (ssize_t)(r->size - (uint32_t)(r->pos - t));
}

/* The spans of up to `want` of the `have` bytes (room or data; < 0: the error)
 * that start at our own index: the reserve of either side. */
static ssize_t own_spans(struct shm_ring *r, ssize_t have, size_t want, struct shm_span sp[2]) {
  if (have < 0) return -1;
  size_t n = want < (size_t)have ? want : (size_t)have;
  spans(r, r->pos, n, sp);
  return (ssize_t)n;
}

/* Moves our own index on by n and publishes it in the shared index `pub` (head
 * for the producer: W1; tail for the consumer: R2): the commit of either side. */
static void advance(struct shm_ring *r, size_t n, uint32_t *pub) {
  __atomic_store_n(&r->pos, r->pos + (uint32_t)n, __ATOMIC_RELAXED); /* looked at by other threads */
  __atomic_store_n(pub, r->pos, __ATOMIC_RELEASE); /* W1 or R2, see the callers */
}

ssize_t shm_ring_wreserve(struct shm_ring *r, size_t want, struct shm_span sp[2]) {
  return own_spans(r, shm_ring_writable(r, want), want, sp);
}

void shm_ring_wcommit(struct shm_ring *r, size_t n) {
  advance(r, n, &r->ctl->head); /* W1, pairs with R1 */
}

ssize_t shm_ring_writev(struct shm_ring *r, const struct iovec *iov, int iovcnt) {
  struct shm_span sp[2];
  ssize_t n = shm_ring_wreserve(r, iov_total(iov, iovcnt), sp);
  if (n <= 0) return n;
  copy_spans(sp, iov, iovcnt, (size_t)n, 1);
  shm_ring_wcommit(r, (size_t)n);
  return n;
}

ssize_t shm_ring_write_whole(struct shm_ring *r, const struct iovec *iov, int iovcnt, size_t total) {
  ssize_t room = shm_ring_writable(r, total);
  if (room < 0 || (size_t)room < total) return room < 0 ? -1 : 0;
  uint32_t off = r->pos & r->mask;
  if (iovcnt == 1 && off + total <= r->size) {
    memcpy(r->data + off, iov[0].iov_base, total); /* one piece, no wrap: the usual write */
  } else {
    struct shm_span sp[2];
    spans(r, r->pos, total, sp);
    copy_spans(sp, iov, iovcnt, total, 1);
  }
  shm_ring_wcommit(r, total);
  return (ssize_t)total;
}

ssize_t shm_ring_write(struct shm_ring *r, const void *buf, size_t len) {
  struct iovec v = {(void *)buf, len};
  return shm_ring_writev(r, &v, 1);
}

void shm_ring_close_write(struct shm_ring *r) {
  /* head was already published by the last commit (W1); C1 orders this after it. */
  __atomic_store_n(&r->ctl->wr_closed, 1, __ATOMIC_RELEASE); /* C1, pairs with C2 */
}

ssize_t shm_ring_readable(struct shm_ring *r, size_t want) {
  if (r->err) {
    errno = r->err;
    return -1;
  }
  uint32_t avail = r->peer - r->pos;
  if (avail >= want && avail > 0) return (ssize_t)avail;
  uint32_t h = __atomic_load_n(&r->ctl->head, __ATOMIC_ACQUIRE); /* R1, pairs with W1 */
  uint32_t navail = h - r->pos;
  /* The head may only move forward, and never more than a ring ahead of us. */
  if (navail > r->size || (uint32_t)(h - r->peer) > navail) return fail(r, EPROTO);
  __atomic_store_n(&r->peer, h, __ATOMIC_RELAXED); /* looked at by other threads */
  return (ssize_t)navail;
}

ssize_t shm_ring_rpeek(struct shm_ring *r, size_t want, struct shm_span sp[2]) {
  return own_spans(r, shm_ring_readable(r, want), want, sp);
}

void shm_ring_rconsume(struct shm_ring *r, size_t n) {
  advance(r, n, &r->ctl->tail); /* R2, pairs with W2 */
}

/* Our position for a look, which changes nothing: the private one, or our index in
 * the segment when another process of ours moved it ahead since our last use
 * (shm_ring_resync does the same under the owner's lock). A moment behind the
 * private one while our own thread publishes: then the private one. */
static uint32_t look_pos(const struct shm_ring *r) {
  uint32_t pos = __atomic_load_n(&r->pos, __ATOMIC_ACQUIRE), own, peer;
  return own_index_moved(r, pos, &own, &peer) && (uint32_t)(own - pos) <= 0x7fffffffu ? own : pos;
}

ssize_t shm_ring_look_readable(const struct shm_ring *r, size_t want) {
  int e = __atomic_load_n(&r->err, __ATOMIC_RELAXED);
  /* First what the owner already knows (pos before peer: both only grow, pos never
   * past peer, so the difference read in this order never wraps): no look at the
   * shared line the producer keeps writing, while data is there. */
  uint32_t pos = look_pos(r);
  uint32_t known = __atomic_load_n(&r->peer, __ATOMIC_ACQUIRE) - pos;
  if (!e && known > 0 && known <= r->size && known >= want) return (ssize_t)known;
  uint32_t h = __atomic_load_n(&r->ctl->head, __ATOMIC_ACQUIRE); /* R1, pairs with W1 */
  uint32_t n = h - pos;
  if (!e && n > r->size) e = EPROTO; /* the owner's next read fails the ring */
  if (e) {
    errno = e;
    return -1;
  }
  return (ssize_t)n;
}

ssize_t shm_ring_look_writable(const struct shm_ring *r, size_t want) {
  int e = __atomic_load_n(&r->err, __ATOMIC_RELAXED);
  /* The owner's cached tail first (it can only say too little room: the reader
   * moves on), the shared line only when that is less than wanted. */
  uint32_t pos = look_pos(r);
  uint32_t known = pos - __atomic_load_n(&r->peer, __ATOMIC_ACQUIRE);
  if (!e && known <= r->size && r->size - known >= want && r->size - known > 0) return (ssize_t)(r->size - known);
  uint32_t t = __atomic_load_n(&r->ctl->tail, __ATOMIC_ACQUIRE); /* W2, pairs with R2 */
  uint32_t used = pos - t;
  if (!e && used > r->size) e = EPROTO;
  if (e) {
    errno = e;
    return -1;
  }
  return (ssize_t)(r->size - used);
}

int shm_ring_eof(struct shm_ring *r) {
  if (!__atomic_load_n(&r->ctl->wr_closed, __ATOMIC_ACQUIRE)) return 0; /* C2, pairs with C1 */
  return shm_ring_readable(r, 1) == 0;
}

ssize_t shm_ring_readv(struct shm_ring *r, const struct iovec *iov, int iovcnt, int peek) {
  struct shm_span sp[2];
  size_t room = iov_total(iov, iovcnt);
  ssize_t n = shm_ring_rpeek(r, room, sp);
  if (n < 0) return -1;
  if (n == 0) {
    if (room == 0) return 0;
    if (shm_ring_eof(r)) return 0;
    if (r->err) {
      errno = r->err;
      return -1;
    }
    /* Data published just before the close is picked up by the re-read above. */
    n = shm_ring_rpeek(r, room, sp);
    if (n < 0) return -1;
    if (n == 0) {
      errno = EAGAIN;
      return -1;
    }
  }
  copy_spans(sp, iov, iovcnt, (size_t)n, 0);
  if (!peek) shm_ring_rconsume(r, (size_t)n);
  return n;
}

ssize_t shm_ring_read(struct shm_ring *r, void *buf, size_t len, int peek) {
  struct iovec v = {buf, len};
  return shm_ring_readv(r, &v, 1, peek);
}

void shm_ring_close_read(struct shm_ring *r) {
  __atomic_store_n(&r->ctl->rd_closed, 1, __ATOMIC_RELEASE);
}

size_t shm_ring_release_idle(struct shm_ring *r) {
  int e = errno;
  ssize_t room = shm_ring_writable(r, r->size);
  errno = e;
  if (room != (ssize_t)r->size) return 0; /* bytes still unread, or a broken ring */
  uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  if (pg == 0 || (pg & (pg - 1))) return 0;
  uintptr_t lo = ((uintptr_t)r->data + pg - 1) & ~(pg - 1);
  uintptr_t hi = ((uintptr_t)r->data + r->size) & ~(pg - 1);
  uintptr_t keep = ((uintptr_t)r->data + (r->pos & r->mask)) & ~(pg - 1);
  size_t freed = 0;
  if (keep > lo && madvise((void *)lo, keep - lo, MADV_REMOVE) == 0) freed += keep - lo;
  if (hi > keep + pg && madvise((void *)(keep + pg), hi - keep - pg, MADV_REMOVE) == 0)
    freed += hi - keep - pg;
  errno = e;
  return freed;
}

/* SPSC ring semantics on the smallest ring (4 KiB) of a real segment: wrap-around at
 * every offset, full/empty, partial writes, iovec batches, peek, half-close,
 * close_read/EPIPE, and the zero-copy span APIs. */
#include "testutil.h"

#include <sys/mman.h>
#include <unistd.h>

#include "ring.h"
#include "segment.h"

#define RS 4096u

struct fx {
  struct shm_seg seg;
  struct shm_ring p, c; /* producer and consumer of the same direction (C2S) */
};

static void fx_open(struct fx *f) {
  memset(f, 0, sizeof *f);
  assert_int_equal(shm_seg_create(RS, &f->seg), 0);
  assert_int_equal(f->seg.ring_size, RS);
  shm_seg_ring(&f->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &f->p);
  shm_seg_ring(&f->seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &f->c);
  assert_int_equal(f->p.size, RS);
  assert_ptr_equal(f->p.data, f->c.data);
  assert_ptr_equal(f->p.data, (unsigned char *)f->seg.base + SHM_SEG_HDR_SIZE);
}

static void fx_close(struct fx *f) { shm_seg_destroy(&f->seg); }

static unsigned char pat(uint32_t i, uint32_t salt) {
  return (unsigned char)((i * 131u) ^ (i >> 8) ^ (salt * 7u + 1u));
}

static void expect_empty(struct shm_ring *c) {
  unsigned char b[8];
  errno = 0;
  assert_int_equal(shm_ring_read(c, b, sizeof b, 0), -1);
  assert_int_equal(errno, EAGAIN);
  assert_int_equal(shm_ring_readable(c, 1), 0);
}

/* Moves both indices to offset k without leaving data behind. */
static void advance(struct fx *f, uint32_t k) {
  unsigned char junk[RS];
  memset(junk, 0xee, sizeof junk);
  if (!k) return;
  assert_int_equal(shm_ring_write(&f->p, junk, k), (ssize_t)k);
  assert_int_equal(shm_ring_read(&f->c, junk, k, 0), (ssize_t)k);
}

static void test_wrap_every_offset(void **state) {
  (void)state;
  unsigned char in[RS], out[RS];
  for (uint32_t k = 0; k < RS; k++) {
    struct fx f;
    fx_open(&f);
    advance(&f, k);
    assert_int_equal(f.p.pos, k);
    assert_int_equal(f.c.pos, k);
    /* A full ring starting at k: spans the wrap for every k > 0. */
    for (uint32_t i = 0; i < RS; i++) in[i] = pat(i, k);
    assert_int_equal(shm_ring_write(&f.p, in, RS), (ssize_t)RS);
    assert_int_equal(shm_ring_write(&f.p, in, 1), 0); /* full */
    for (uint32_t i = 0; i < RS; i++)                  /* physical placement */
      if (f.p.data[(k + i) & (RS - 1)] != in[i])
        fail_msg("k=%u: byte %u stored at the wrong place", k, i);
    assert_int_equal(shm_ring_readable(&f.c, RS), (ssize_t)RS);
    uint32_t split = (k * 37u) % (RS + 1);
    memset(out, 0, sizeof out);
    if (split) assert_int_equal(shm_ring_read(&f.c, out, split, 0), (ssize_t)split);
    if (RS - split) assert_int_equal(shm_ring_read(&f.c, out + split, RS, 0), (ssize_t)(RS - split));
    if (memcmp(in, out, RS)) fail_msg("k=%u: full-ring round trip differs", k);
    expect_empty(&f.c);
    /* A shorter block read back through three iovecs. */
    uint32_t len = 1 + (k * 7919u) % RS;
    for (uint32_t i = 0; i < len; i++) in[i] = pat(i, k + 1);
    assert_int_equal(shm_ring_write(&f.p, in, len), (ssize_t)len);
    memset(out, 0, sizeof out);
    uint32_t a = len / 3, b = len / 3;
    struct iovec v[3] = {{out, a}, {out + a, b}, {out + a + b, RS}};
    assert_int_equal(shm_ring_readv(&f.c, v, 3, 0), (ssize_t)len);
    if (memcmp(in, out, len)) fail_msg("k=%u len=%u: iovec round trip differs", k, len);
    assert_int_equal(f.c.ctl->tail, k + RS + len);
    assert_int_equal(f.p.ctl->head, k + RS + len);
    expect_empty(&f.c);
    fx_close(&f);
  }
}

/* The free-running 32-bit indices overflow after 4 GiB: start just below 2^32. */
static void test_index_wrap_2_32(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  uint32_t start = UINT32_MAX - 5000;
  f.p.pos = f.p.peer = f.c.pos = f.c.peer = start;
  f.p.ctl->head = f.p.ctl->tail = start;
  uint64_t s = 42;
  struct tu_stream wr, rd;
  tu_stream_init(&wr, 7);
  tu_stream_init(&rd, 7);
  unsigned char buf[RS], exp[RS];
  uint64_t moved = 0;
  while (moved < 64 * RS) {
    size_t n = tu_rand_range(&s, 1, RS);
    ssize_t free_ = shm_ring_writable(&f.p, RS);
    assert_true(free_ >= 0);
    if ((size_t)free_ < n) n = (size_t)free_;
    tu_stream_fill(&wr, buf, n);
    assert_int_equal(shm_ring_write(&f.p, buf, n), (ssize_t)n);
    size_t m = tu_rand_range(&s, 1, RS);
    ssize_t r = shm_ring_read(&f.c, buf, m, 0);
    assert_true(r > 0);
    tu_stream_fill(&rd, exp, (size_t)r);
    assert_memory_equal(buf, exp, (size_t)r);
    moved += (uint64_t)r;
  }
  assert_true(f.c.pos < start); /* really went through 2^32 */
  fx_close(&f);
}

static void test_full_and_empty(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  expect_empty(&f.c);
  unsigned char chunk[1000], out[RS];
  size_t total = 0;
  ssize_t n;
  int rounds = 0;
  while ((n = shm_ring_write(&f.p, chunk, sizeof chunk)) > 0) {
    total += (size_t)n;
    assert_true(++rounds < 100);
  }
  assert_int_equal(n, 0);
  assert_int_equal(total, RS);
  assert_int_equal(rounds, 5); /* 4 x 1000 + 96 */
  assert_int_equal(shm_ring_writable(&f.p, 1), 0);
  assert_int_equal(shm_ring_readable(&f.c, 1), (ssize_t)RS);
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), (ssize_t)RS);
  expect_empty(&f.c);
  assert_int_equal(shm_ring_writable(&f.p, RS), (ssize_t)RS);
  /* Exactly RS bytes in one call fit; one more byte does not. */
  assert_int_equal(shm_ring_write(&f.p, out, RS), (ssize_t)RS);
  assert_int_equal(shm_ring_write(&f.p, out, 1), 0);
  fx_close(&f);
}

static void test_partial_write(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  unsigned char in[2 * RS], out[2 * RS];
  for (uint32_t i = 0; i < sizeof in; i++) in[i] = pat(i, 3);
  assert_int_equal(shm_ring_write(&f.p, in, 1000), 1000);
  assert_int_equal(shm_ring_write(&f.p, in + 1000, 5000), (ssize_t)(RS - 1000));
  assert_int_equal(shm_ring_read(&f.c, out, 500, 0), 500);
  assert_int_equal(shm_ring_write(&f.p, in + RS, 1000), 500); /* exactly the freed space */
  assert_int_equal(shm_ring_read(&f.c, out + 500, sizeof out, 0), (ssize_t)RS);
  assert_memory_equal(out, in, RS);
  assert_memory_equal(out + RS, in + RS, 500);
  /* A gather write larger than the free space copies a prefix of the iovecs. */
  assert_int_equal(shm_ring_write(&f.p, in, RS - 10), (ssize_t)(RS - 10));
  struct iovec v[3] = {{in + 100, 4}, {in + 200, 3}, {in + 300, 50}};
  assert_int_equal(shm_ring_writev(&f.p, v, 3), 10);
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), (ssize_t)RS);
  assert_memory_equal(out + RS - 10, in + 100, 4);
  assert_memory_equal(out + RS - 6, in + 200, 3);
  assert_memory_equal(out + RS - 3, in + 300, 3);
  assert_int_equal(shm_ring_write(&f.p, in, 0), 0);
  expect_empty(&f.c);
  fx_close(&f);
}

static void test_iovec_batches(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  uint64_t s = 0x1234;
  struct tu_stream wr, rd;
  tu_stream_init(&wr, 99);
  tu_stream_init(&rd, 99);
  static unsigned char src[64][64], dst[64][64];
  unsigned char flat[64 * 64], exp[64 * 64];
  uint64_t total = 0;
  for (int round = 0; round < 2000; round++) {
    struct iovec wv[64];
    int wn = (int)tu_rand_range(&s, 1, 64);
    size_t want = 0;
    for (int i = 0; i < wn; i++) {
      wv[i].iov_base = src[i];
      wv[i].iov_len = tu_rand_range(&s, 0, 63); /* zero-length iovecs included */
      want += wv[i].iov_len;
    }
    ssize_t room = shm_ring_writable(&f.p, RS);
    size_t exp_n = want < (size_t)room ? want : (size_t)room;
    /* The stream only advances by what is accepted: fill a flat copy, scatter it. */
    tu_stream_fill(&wr, flat, exp_n);
    memset(flat + exp_n, 0xcc, want - exp_n);
    size_t o = 0;
    for (int i = 0; i < wn; i++) {
      memcpy(src[i], flat + o, wv[i].iov_len);
      o += wv[i].iov_len;
    }
    assert_int_equal(shm_ring_writev(&f.p, wv, wn), (ssize_t)exp_n);
    struct iovec rv[64];
    int rn = (int)tu_rand_range(&s, 1, 64);
    size_t rroom = 0;
    for (int i = 0; i < rn; i++) {
      rv[i].iov_base = dst[i];
      rv[i].iov_len = tu_rand_range(&s, 0, 63);
      rroom += rv[i].iov_len;
    }
    ssize_t avail = shm_ring_readable(&f.c, RS);
    size_t exp_r = rroom < (size_t)avail ? rroom : (size_t)avail;
    ssize_t r = shm_ring_readv(&f.c, rv, rn, 0);
    if (exp_r == 0) {
      assert_int_equal(r, rroom ? -1 : 0);
      continue;
    }
    assert_int_equal(r, (ssize_t)exp_r);
    o = 0;
    for (int i = 0; i < rn && o < exp_r; i++) {
      size_t l = rv[i].iov_len < exp_r - o ? rv[i].iov_len : exp_r - o;
      memcpy(flat + o, dst[i], l);
      o += l;
    }
    tu_stream_fill(&rd, exp, exp_r);
    if (memcmp(flat, exp, exp_r)) fail_msg("round %d: scattered bytes differ", round);
    total += exp_r;
  }
  assert_true(total > 20 * RS); /* wrapped many times */
  fx_close(&f);
}

static void test_peek(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  unsigned char in[100], a[60], b[60], all[200];
  for (int i = 0; i < 100; i++) in[i] = pat((uint32_t)i, 9);
  advance(&f, RS - 30); /* the data spans the wrap */
  assert_int_equal(shm_ring_write(&f.p, in, 100), 100);
  assert_int_equal(shm_ring_read(&f.c, a, sizeof a, 1), 60);
  assert_memory_equal(a, in, 60);
  assert_int_equal(f.c.ctl->tail, RS - 30); /* not consumed */
  assert_int_equal(shm_ring_readable(&f.c, 1), 100);
  struct iovec v[2] = {{b, 10}, {b + 10, 50}};
  assert_int_equal(shm_ring_readv(&f.c, v, 2, 1), 60);
  assert_memory_equal(b, in, 60);
  assert_int_equal(shm_ring_read(&f.c, all, sizeof all, 0), 100);
  assert_memory_equal(all, in, 100);
  assert_int_equal(f.c.ctl->tail, RS + 70);
  expect_empty(&f.c);
  fx_close(&f);
}

static void test_half_close(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  unsigned char in[300], out[400];
  for (int i = 0; i < 300; i++) in[i] = pat((uint32_t)i, 5);
  assert_int_equal(shm_ring_eof(&f.c), 0);
  assert_int_equal(shm_ring_write(&f.p, in, 300), 300);
  shm_ring_close_write(&f.p);
  assert_int_equal(shm_ring_eof(&f.c), 0); /* data still pending */
  assert_int_equal(shm_ring_read(&f.c, out, 100, 0), 100);
  assert_int_equal(shm_ring_read(&f.c, out + 100, sizeof out, 0), 200);
  assert_memory_equal(out, in, 300);
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), 0); /* EOF */
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), 0); /* and stays EOF */
  assert_int_equal(shm_ring_eof(&f.c), 1);
  fx_close(&f);

  /* Data published before the close but never seen by the consumer's cache. */
  fx_open(&f);
  advance(&f, RS - 7);
  assert_int_equal(shm_ring_write(&f.p, in, 20), 20);
  shm_ring_close_write(&f.p);
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), 20);
  assert_memory_equal(out, in, 20);
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), 0);
  fx_close(&f);

  /* Close with nothing ever written: immediate EOF, not EAGAIN. */
  fx_open(&f);
  shm_ring_close_write(&f.p);
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), 0);
  assert_int_equal(shm_ring_eof(&f.c), 1);
  fx_close(&f);
}

static void test_close_read_epipe(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  unsigned char buf[RS];
  memset(buf, 1, sizeof buf);
  assert_int_equal(shm_ring_write(&f.p, buf, RS), (ssize_t)RS);
  shm_ring_close_read(&f.c);
  errno = 0;
  assert_int_equal(shm_ring_write(&f.p, buf, 1), -1); /* full: must refresh */
  assert_int_equal(errno, EPIPE);
  errno = 0;
  assert_int_equal(shm_ring_writable(&f.p, 1), -1);
  assert_int_equal(errno, EPIPE);
  fx_close(&f);

  /* Not full: a query for more than the cached free space refreshes and fails. */
  fx_open(&f);
  assert_int_equal(shm_ring_write(&f.p, buf, 100), 100);
  assert_int_equal(shm_ring_read(&f.c, buf, 50, 0), 50);
  shm_ring_close_read(&f.c);
  errno = 0;
  assert_int_equal(shm_ring_writable(&f.p, RS), -1);
  assert_int_equal(errno, EPIPE);
  errno = 0;
  assert_int_equal(shm_ring_write(&f.p, buf, RS), -1);
  assert_int_equal(errno, EPIPE);
  fx_close(&f);
}

static void test_reserve_commit(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  struct shm_span sp[2];
  advance(&f, RS - 100);
  assert_int_equal(shm_ring_wreserve(&f.p, 300, sp), 300);
  assert_ptr_equal(sp[0].p, f.p.data + RS - 100);
  assert_int_equal(sp[0].len, 100);
  assert_ptr_equal(sp[1].p, f.p.data);
  assert_int_equal(sp[1].len, 200);
  memset(sp[0].p, 0xa1, sp[0].len);
  memset(sp[1].p, 0xb2, sp[1].len);
  assert_int_equal(shm_ring_readable(&f.c, 1), 0); /* not yet published */
  shm_ring_wcommit(&f.p, 250);                      /* commit less than reserved */
  assert_int_equal(f.p.ctl->head, RS - 100 + 250);
  unsigned char out[400];
  assert_int_equal(shm_ring_read(&f.c, out, sizeof out, 0), 250);
  for (int i = 0; i < 250; i++) assert_int_equal(out[i], i < 100 ? 0xa1 : 0xb2);
  /* A reservation never exceeds the free space, and is 0 when full. */
  assert_int_equal(shm_ring_wreserve(&f.p, 10 * RS, sp), (ssize_t)RS);
  assert_int_equal(sp[0].len + sp[1].len, RS);
  shm_ring_wcommit(&f.p, RS);
  assert_int_equal(shm_ring_wreserve(&f.p, 1, sp), 0);
  /* Unaligned start: one span only when it does not reach the end. */
  assert_int_equal(shm_ring_read(&f.c, out, 10, 0), 10);
  assert_int_equal(shm_ring_wreserve(&f.p, 10, sp), 10);
  assert_int_equal(sp[0].len, 10);
  assert_int_equal(sp[1].len, 0);
  fx_close(&f);
}

static void test_rpeek_rconsume(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  struct shm_span sp[2];
  unsigned char in[500];
  for (int i = 0; i < 500; i++) in[i] = pat((uint32_t)i, 11);
  assert_int_equal(shm_ring_rpeek(&f.c, 10, sp), 0); /* empty: 0, not an error */
  advance(&f, RS - 123);
  assert_int_equal(shm_ring_write(&f.p, in, 500), 500);
  assert_int_equal(shm_ring_rpeek(&f.c, 1000, sp), 500);
  assert_ptr_equal(sp[0].p, f.c.data + RS - 123);
  assert_int_equal(sp[0].len, 123);
  assert_ptr_equal(sp[1].p, f.c.data);
  assert_int_equal(sp[1].len, 377);
  assert_memory_equal(sp[0].p, in, 123);
  assert_memory_equal(sp[1].p, in + 123, 377);
  assert_int_equal(shm_ring_rpeek(&f.c, 50, sp), 50); /* bounded by want */
  assert_int_equal(sp[0].len, 50);
  assert_int_equal(sp[1].len, 0);
  shm_ring_rconsume(&f.c, 200);
  assert_int_equal(f.c.ctl->tail, RS - 123 + 200);
  assert_int_equal(shm_ring_rpeek(&f.c, 1000, sp), 300);
  assert_ptr_equal(sp[0].p, f.c.data + 77);
  assert_int_equal(sp[1].len, 0);
  assert_memory_equal(sp[0].p, in + 200, 300);
  shm_ring_rconsume(&f.c, 300);
  assert_int_equal(shm_ring_writable(&f.p, RS), (ssize_t)RS); /* space came back */
  expect_empty(&f.c);
  fx_close(&f);
}

/* The two directions have disjoint data areas and control lines. */
static void test_directions_independent(void **state) {
  (void)state;
  struct shm_seg seg;
  assert_int_equal(shm_seg_create(RS, &seg), 0);
  struct shm_ring p0, c0, p1, c1;
  shm_seg_ring(&seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &p0);
  shm_seg_ring(&seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &c0);
  shm_seg_ring(&seg, SHM_DIR_S2C, SHM_RING_PRODUCER, &p1);
  shm_seg_ring(&seg, SHM_DIR_S2C, SHM_RING_CONSUMER, &c1);
  assert_ptr_equal(p1.data, p0.data + RS);
  assert_ptr_not_equal(p0.ctl, p1.ctl);
  assert_true(p1.data + RS == (unsigned char *)seg.base + seg.size);
  unsigned char a[RS], b[RS], o[RS];
  memset(a, 0x11, sizeof a);
  memset(b, 0x22, sizeof b);
  assert_int_equal(shm_ring_write(&p0, a, RS), (ssize_t)RS);
  assert_int_equal(shm_ring_write(&p1, b, RS), (ssize_t)RS);
  assert_int_equal(shm_ring_read(&c0, o, RS, 0), (ssize_t)RS);
  assert_memory_equal(o, a, RS);
  assert_int_equal(shm_ring_read(&c1, o, RS, 0), (ssize_t)RS);
  assert_memory_equal(o, b, RS);
  shm_ring_close_write(&p0);
  errno = 0;
  assert_int_equal(shm_ring_read(&c1, o, RS, 0), -1); /* the other direction stays open */
  assert_int_equal(errno, EAGAIN);
  assert_int_equal(shm_ring_read(&c0, o, RS, 0), 0);
  shm_seg_destroy(&seg);
}

/* Resident pages of [p, p + len) (mincore: for shared memory, present in the file). */
static size_t resident(const void *p, size_t len) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = len / pg, r = 0;
  unsigned char v[256];
  assert_true(n <= sizeof v);
  assert_int_equal(mincore((void *)p, len, v), 0);
  for (size_t i = 0; i < n; i++) r += v[i] & 1;
  return r;
}

/* An idle ring gives its pages back (all but the next write's), only once the
 * consumer has read everything, and carries bytes intact afterwards. */
static void test_release_idle(void **state) {
  (void)state;
  enum { BIG = 64 * 4096 };
  struct shm_seg seg;
  struct shm_ring p, c;
  assert_int_equal(shm_seg_create(BIG, &seg), 0);
  shm_seg_ring(&seg, SHM_DIR_S2C, SHM_RING_PRODUCER, &p);
  shm_seg_ring(&seg, SHM_DIR_S2C, SHM_RING_CONSUMER, &c);
  static unsigned char in[3 * BIG], out[3 * BIG];
  for (uint32_t i = 0; i < sizeof in; i++) in[i] = pat(i, 9);
  size_t w = 0, r = 0;
  assert_int_equal(shm_ring_write(&p, in, 200000), 200000);
  w = 200000;
  assert_int_equal(resident(p.data, BIG), (200000 + 4095) / 4096);
  assert_int_equal(shm_ring_read(&c, out, 100000, 0), 100000);
  r = 100000;
  assert_int_equal(shm_ring_release_idle(&p), 0); /* unread bytes: nothing released */
  assert_int_equal(resident(p.data, BIG), (200000 + 4095) / 4096);
  assert_int_equal(shm_ring_read(&c, out + r, sizeof out - r, 0), (ssize_t)(w - r));
  r = w;
  assert_int_equal(shm_ring_release_idle(&p), BIG - 4096);
  assert_int_equal(resident(p.data, BIG), 1); /* the page where byte 200000 goes */
  /* Across the wrap and over released pages, twice round the ring. */
  while (w < sizeof in) {
    size_t n = sizeof in - w < 50000 ? sizeof in - w : 50000;
    assert_int_equal(shm_ring_write(&p, in + w, n), (ssize_t)n);
    w += n;
    assert_int_equal(shm_ring_read(&c, out + r, sizeof out - r, 0), (ssize_t)n);
    r += n;
    if (w == 400000) assert_int_equal(shm_ring_release_idle(&p), BIG - 4096);
  }
  assert_memory_equal(out, in, sizeof in);
  assert_int_equal(shm_ring_release_idle(&p), BIG - 4096);
  assert_int_equal(shm_ring_release_idle(&p), BIG - 4096); /* harmless when repeated */
  assert_int_equal(resident(p.data, BIG), 1);
  shm_seg_destroy(&seg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wrap_every_offset),
      cmocka_unit_test(test_index_wrap_2_32),
      cmocka_unit_test(test_full_and_empty),
      cmocka_unit_test(test_partial_write),
      cmocka_unit_test(test_iovec_batches),
      cmocka_unit_test(test_peek),
      cmocka_unit_test(test_half_close),
      cmocka_unit_test(test_close_read_epipe),
      cmocka_unit_test(test_reserve_commit),
      cmocka_unit_test(test_rpeek_rconsume),
      cmocka_unit_test(test_directions_independent),
      cmocka_unit_test(test_release_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

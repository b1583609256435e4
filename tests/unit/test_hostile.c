/* A hostile peer: corrupt ring indices (EPROTO, sticky, never out of bounds) and
 * segments that must be refused by shm_seg_attach, or that the peer tries to change
 * after the fact. */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "config.h"
#include "ring.h"
#include "segment.h"
#include "wait.h"

#define RS 4096u
#define SEG_MIN ((off_t)(SHM_SEG_HDR_SIZE + 2 * RS))

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

/* ------------------------------------------------------------------ indices */

struct fx {
  struct shm_seg seg;
  struct shm_ring p, c;
};

static void fx_open(struct fx *f) {
  assert_int_equal(shm_seg_create(RS, &f->seg), 0);
  shm_seg_ring(&f->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &f->p);
  shm_seg_ring(&f->seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &f->c);
}

static void expect_rd_eproto(struct shm_ring *c) {
  unsigned char buf[2 * RS];
  struct shm_span sp[2];
  errno = 0;
  assert_int_equal(shm_ring_read(c, buf, sizeof buf, 0), -1);
  assert_int_equal(errno, EPROTO);
  errno = 0;
  assert_int_equal(shm_ring_read(c, buf, 1, 1), -1);
  assert_int_equal(errno, EPROTO);
  errno = 0;
  assert_int_equal(shm_ring_readable(c, 1), -1);
  assert_int_equal(errno, EPROTO);
  errno = 0;
  assert_int_equal(shm_ring_rpeek(c, 1, sp), -1);
  assert_int_equal(errno, EPROTO);
  assert_int_equal(shm_ring_eof(c), 0);
}

static void expect_wr_eproto(struct shm_ring *p) {
  unsigned char buf[2 * RS] = {0};
  struct shm_span sp[2];
  errno = 0;
  assert_int_equal(shm_ring_write(p, buf, sizeof buf), -1);
  assert_int_equal(errno, EPROTO);
  errno = 0;
  assert_int_equal(shm_ring_write(p, buf, 1), -1);
  assert_int_equal(errno, EPROTO);
  errno = 0;
  assert_int_equal(shm_ring_writable(p, 0), -1);
  assert_int_equal(errno, EPROTO);
  errno = 0;
  assert_int_equal(shm_ring_wreserve(p, 1, sp), -1);
  assert_int_equal(errno, EPROTO);
}

static void test_head_too_far_ahead(void **state) {
  (void)state;
  static const uint32_t bad[] = {RS + 1, 2 * RS, 0x80000000u, UINT32_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct fx f;
    fx_open(&f);
    f.c.ctl->head = bad[i];
    expect_rd_eproto(&f.c);
    f.c.ctl->head = 10; /* the peer "repairs" it: still failed (sticky) */
    expect_rd_eproto(&f.c);
    assert_int_equal(f.c.ctl->tail, 0); /* nothing was consumed */
    /* A waiter is woken (reported ready) instead of sleeping on a broken ring. */
    uint64_t t0 = tu_now_ns();
    assert_int_equal(shm_ring_wait_data(&f.c, NULL, 5 * TU_NS_PER_S), 0);
    assert_true(tu_now_ns() - t0 < 2 * (uint64_t)TU_NS_PER_S);
    shm_seg_destroy(&f.seg);
  }
  /* Boundary: exactly one ring ahead is a full ring, not an error. */
  struct fx f;
  fx_open(&f);
  memset(f.c.data, 0x5a, RS);
  f.c.ctl->head = RS;
  unsigned char buf[2 * RS];
  assert_int_equal(shm_ring_read(&f.c, buf, sizeof buf, 0), (ssize_t)RS);
  assert_int_equal(buf[RS - 1], 0x5a);
  shm_seg_destroy(&f.seg);
}

static void test_head_backwards(void **state) {
  (void)state;
  unsigned char buf[2 * RS];
  memset(buf, 3, sizeof buf);
  /* Partly consumed, cached head 100, head moves back to 80. */
  struct fx f;
  fx_open(&f);
  assert_int_equal(shm_ring_write(&f.p, buf, 100), 100);
  assert_int_equal(shm_ring_read(&f.c, buf, 50, 0), 50);
  f.c.ctl->head = 80;
  expect_rd_eproto(&f.c);
  f.c.ctl->head = 200;
  expect_rd_eproto(&f.c);
  shm_seg_destroy(&f.seg);
  /* Fully consumed, head moves back below our position. */
  fx_open(&f);
  assert_int_equal(shm_ring_write(&f.p, buf, 100), 100);
  assert_int_equal(shm_ring_read(&f.c, buf, 100, 0), 100);
  f.c.ctl->head = 99;
  expect_rd_eproto(&f.c);
  shm_seg_destroy(&f.seg);
}

static void test_tail_hostile(void **state) {
  (void)state;
  unsigned char buf[2 * RS];
  memset(buf, 4, sizeof buf);
  struct fx f;
  /* Tail moved past the head. */
  fx_open(&f);
  assert_int_equal(shm_ring_write(&f.p, buf, 100), 100);
  f.p.ctl->tail = 101;
  expect_wr_eproto(&f.p);
  f.p.ctl->tail = 100;
  expect_wr_eproto(&f.p); /* sticky */
  assert_int_equal(f.p.ctl->head, 100);
  /* A waiter for space is woken rather than left asleep. */
  assert_int_equal(shm_ring_wait_space(&f.p, NULL, 5 * TU_NS_PER_S), 0);
  shm_seg_destroy(&f.seg);
  /* Tail moved backwards after the producer saw it at 50. */
  fx_open(&f);
  assert_int_equal(shm_ring_write(&f.p, buf, 100), 100);
  assert_int_equal(shm_ring_read(&f.c, buf, 50, 0), 50);
  assert_int_equal(shm_ring_writable(&f.p, RS), (ssize_t)(RS - 50)); /* refresh: peer = 50 */
  f.p.ctl->tail = 40;
  expect_wr_eproto(&f.p);
  shm_seg_destroy(&f.seg);
  /* Wildly wrong tail on an empty ring. */
  fx_open(&f);
  f.p.ctl->tail = 0x80000000u;
  expect_wr_eproto(&f.p);
  shm_seg_destroy(&f.seg);
}

/* Rings over exactly-sized heap buffers, so ASan flags any access outside them, driven
 * by random hostile indices and checked against the validation rule. */
static void test_fuzz_indices_in_bounds(void **state) {
  (void)state;
  uint64_t s = tu_seed("hostile index fuzz");
  const uint32_t size = 256;
  struct shm_ring_ctl *ctl = aligned_alloc(SHM_CACHELINE, sizeof *ctl);
  unsigned char *data = malloc(size), out[3 * 256];
  assert_non_null(ctl);
  assert_non_null(data);
  for (uint32_t i = 0; i < size; i++) data[i] = (unsigned char)(i * 29 + 3);
  struct shm_ring c, p;
  unsigned eproto_rd = 0, eproto_wr = 0, ok_rd = 0, ok_wr = 0;
  for (int round = 0; round < 200000; round++) {
    if (round == 0 || (c.err && p.err)) {
      memset(ctl, 0, sizeof *ctl);
      uint32_t base = (uint32_t)tu_splitmix64(&s);
      shm_ring_init(&c, ctl, data, size, SHM_RING_CONSUMER);
      shm_ring_init(&p, ctl, data, size, SHM_RING_PRODUCER);
      c.pos = c.peer = p.pos = p.peer = base; /* both start at an arbitrary index */
    }
    /* Consumer against a hostile head. */
    if (!c.err) {
      uint32_t pos = c.pos, peer = c.peer, h;
      switch (tu_splitmix64(&s) % 32) { /* mostly plausible, sometimes hostile */
        case 0: h = pos + size + (uint32_t)tu_rand_range(&s, 1, 8); break;  /* too far */
        case 1: h = peer - (uint32_t)tu_rand_range(&s, 1, 8); break;        /* backwards */
        case 2: h = (uint32_t)tu_splitmix64(&s); break;                     /* garbage */
        case 3: h = peer + (uint32_t)tu_rand_range(&s, 0, 8); break;        /* near */
        default: h = pos + (uint32_t)tu_rand_range(&s, 0, size); break;     /* valid */
      }
      ctl->head = h;
      size_t want = tu_rand_range(&s, 0, sizeof out);
      uint32_t cached = peer - pos;
      int refresh = cached == 0 || cached < want; /* the cache cannot answer */
      errno = 0;
      ssize_t n = shm_ring_read(&c, out, want, (int)(tu_splitmix64(&s) & 1));
      int valid = (uint32_t)(h - pos) <= size && (uint32_t)(h - peer) <= (uint32_t)(h - pos);
      if (n < 0 && errno == EPROTO) {
        eproto_rd++;
        assert_false(valid); /* only a real violation is refused */
        assert_int_equal(c.err, EPROTO);
      } else {
        if (refresh && !valid)
          fail_msg("read accepted head %u (pos %u, cached head %u, size %u)", h, pos, peer, size);
        if (n < 0) {
          assert_int_equal(errno, EAGAIN);
        } else {
          ok_rd++;
          assert_true((size_t)n <= want && (size_t)n <= size);
          for (ssize_t i = 0; i < n; i++)
            if (out[i] != data[(pos + (uint32_t)i) & (size - 1)])
              fail_msg("read byte %zd differs from the ring's", i);
          assert_true((uint32_t)(c.peer - c.pos) <= size);
        }
      }
    }
    /* Producer against a hostile tail. */
    if (!p.err) {
      uint32_t pos = p.pos, peer = p.peer, t;
      switch (tu_splitmix64(&s) % 32) {
        case 0: t = pos + (uint32_t)tu_rand_range(&s, 1, 8); break;          /* past head */
        case 1: t = peer - (uint32_t)tu_rand_range(&s, 1, 8); break;         /* backwards */
        case 2: t = (uint32_t)tu_splitmix64(&s); break;                      /* garbage */
        default: t = peer + (uint32_t)tu_rand_range(&s, 0, pos - peer); break; /* valid */
      }
      ctl->tail = t;
      size_t want = tu_rand_range(&s, 0, sizeof out);
      uint32_t room = size - (pos - peer);
      int refresh = room == 0 || room < want;
      memset(out, 0x77, want);
      errno = 0;
      ssize_t n = shm_ring_write(&p, out, want);
      int valid = (uint32_t)(t - peer) <= (uint32_t)(pos - peer);
      if (n < 0) {
        eproto_wr++;
        assert_int_equal(errno, EPROTO);
        assert_false(valid);
      } else {
        if (refresh && !valid)
          fail_msg("write accepted tail %u (head %u, cached tail %u, size %u)", t, pos, peer, size);
        ok_wr++;
        assert_true((size_t)n <= want && (size_t)n <= size);
        assert_true((uint32_t)(p.pos - p.peer) <= size);
        if (n > 0) assert_int_equal(ctl->head, p.pos);
      }
    }
  }
  print_message("[ fuzz     ] reads ok %u eproto %u, writes ok %u eproto %u\n", ok_rd, eproto_rd,
                ok_wr, eproto_wr);
  assert_true(eproto_rd > 100 && ok_rd > 100 && eproto_wr > 100 && ok_wr > 100);
  free(data);
  free(ctl);
}

/* ----------------------------------------------------------------- segments */

static struct shm_seg_hdr good_hdr(uint32_t ring) {
  struct shm_seg_hdr h;
  memset(&h, 0, sizeof h);
  h.magic = SHM_SEG_MAGIC;
  h.version = SHM_SEG_VERSION;
  h.hdr_size = SHM_SEG_HDR_SIZE;
  h.ring_size = ring;
  h.seg_size = shm_seg_size_for(ring);
  return h;
}

/* A memfd of `size` bytes holding `h`, with the given seals. */
static int hostile_memfd(off_t size, unsigned mfd_flags, int seals, const struct shm_seg_hdr *h) {
  int fd = memfd_create("hostile", MFD_CLOEXEC | mfd_flags);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, size), 0);
  if (h && size >= (off_t)sizeof *h) assert_int_equal(pwrite(fd, h, sizeof *h, 0), sizeof *h);
  if (seals) assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
  return fd;
}

static void expect_attach(int fd, int err) {
  struct shm_seg s;
  memset(&s, 0, sizeof s);
  errno = 0;
  int rc = shm_seg_attach(fd, &s);
  if (err == 0) {
    assert_int_equal(rc, 0);
    shm_seg_destroy(&s);
  } else {
    if (rc == 0) fail_msg("attach accepted a segment it should refuse with errno %d", err);
    assert_int_equal(rc, -1);
    assert_int_equal(errno, err);
  }
  assert_true(fcntl(fd, F_GETFD) >= 0); /* the fd is not taken over */
  close(fd);
}

#define ALL_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW)

static void test_attach_control(void **state) {
  (void)state;
  /* The hand-built segment is accepted when nothing is wrong with it: the
   * rejections below are caused by the one field each of them breaks. */
  struct shm_seg_hdr h = good_hdr(RS);
  int fd = hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h);
  struct shm_seg s;
  assert_int_equal(shm_seg_attach(fd, &s), 0);
  assert_int_equal(s.ring_size, RS);
  assert_int_equal(s.size, (size_t)SEG_MIN);
  assert_int_equal(s.fd, -1);
  assert_non_null(s.base);
  shm_seg_destroy(&s);
  close(fd);
  /* Largest ring (sparse memfd). */
  h = good_hdr(SHM_RING_MAX);
  expect_attach(hostile_memfd((off_t)h.seg_size, MFD_ALLOW_SEALING, ALL_SEALS, &h), 0);
}

static void test_attach_seals(void **state) {
  (void)state;
  struct shm_seg_hdr h = good_hdr(RS);
  /* Sealing not allowed at all (the kernel pre-sets F_SEAL_SEAL). */
  expect_attach(hostile_memfd(SEG_MIN, 0, 0, &h), EPERM);
  /* Every proper subset of the required seals. */
  for (int seals = 0; seals < ALL_SEALS; seals++) {
    int fl = (seals & 1 ? F_SEAL_SEAL : 0) | (seals & 2 ? F_SEAL_SHRINK : 0) | (seals & 4 ? F_SEAL_GROW : 0);
    expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, fl, &h), EPERM);
  }
  /* Write-sealed: we could not use it; refused at mmap time. */
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS | F_SEAL_WRITE, &h), ENOMEM);
}

static void test_attach_not_memfd(void **state) {
  (void)state;
  struct shm_seg_hdr h = good_hdr(RS);
  /* tmpfile(3) on a disk file system: F_GET_SEALS fails. */
  FILE *tf = tmpfile();
  assert_non_null(tf);
  int fd = dup(fileno(tf));
  fclose(tf);
  assert_int_equal(ftruncate(fd, SEG_MIN), 0);
  assert_int_equal(pwrite(fd, &h, sizeof h, 0), sizeof h);
  expect_attach(fd, EPERM);
  /* O_TMPFILE in /tmp and in /dev/shm (tmpfs: F_GET_SEALS works, says F_SEAL_SEAL). */
  static const char *const dirs[] = {"/tmp", "/dev/shm", "."};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      print_message("[ note     ] O_TMPFILE in %s: %s (skipped)\n", dirs[i], strerror(errno));
      continue;
    }
    assert_int_equal(ftruncate(fd, SEG_MIN), 0);
    assert_int_equal(pwrite(fd, &h, sizeof h, 0), sizeof h);
    expect_attach(fd, EPERM);
  }
  /* Not a file at all. */
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  close(pfd[1]);
  expect_attach(pfd[0], EPERM);
}

static void test_attach_bad_header(void **state) {
  (void)state;
  struct shm_seg_hdr h;
  h = good_hdr(RS);
  h.magic ^= 1;
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  h = good_hdr(RS);
  h.magic = 0; /* a never-initialised segment */
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  h = good_hdr(RS);
  h.hdr_size = 8192;
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  h = good_hdr(RS);
  h.version = SHM_SEG_VERSION + 1;
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTONOSUPPORT);
  h.version = 0;
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTONOSUPPORT);
}

static void test_attach_bad_geometry(void **state) {
  (void)state;
  struct shm_seg_hdr h;
  /* ring_size not a power of two, everything else consistent with it. */
  h = good_hdr(6144);
  expect_attach(hostile_memfd((off_t)h.seg_size, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  /* seg_size does not match the file size. */
  h = good_hdr(RS);
  expect_attach(hostile_memfd(SEG_MIN + 4096, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  /* Ring and file agree, only the seg_size field is wrong. */
  h = good_hdr(RS);
  h.seg_size = (uint64_t)SEG_MIN + 4096;
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  h.seg_size = (uint64_t)SEG_MIN + (1ull << 32); /* equal modulo 2^32 */
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  /* seg_size matches the file but not the ring geometry. */
  h = good_hdr(RS);
  h.seg_size = (uint64_t)SEG_MIN + 4096;
  expect_attach(hostile_memfd(SEG_MIN + 4096, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  /* Bigger ring than the file holds (would put the data past the mapping). */
  h = good_hdr(2 * RS);
  h.seg_size = (uint64_t)SEG_MIN;
  expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  /* Power-of-two ring sizes outside 4K..64M. */
  static const uint32_t rings[] = {0, 1, 2048, 0x80000000u, SHM_RING_MAX * 2};
  for (size_t i = 0; i < sizeof rings / sizeof rings[0]; i++) {
    h = good_hdr(RS);
    h.ring_size = rings[i];
    expect_attach(hostile_memfd(SEG_MIN, MFD_ALLOW_SEALING, ALL_SEALS, &h), EPROTO);
  }
}

static void test_attach_size_range(void **state) {
  (void)state;
  struct shm_seg_hdr h = good_hdr(RS);
  static const off_t sizes[] = {0, 64, 4096, SEG_MIN - 1,
                                (off_t)(SHM_SEG_HDR_SIZE + 2 * (size_t)SHM_RING_MAX + 1),
                                (off_t)1 << 40};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    h.seg_size = (uint64_t)sizes[i];
    expect_attach(hostile_memfd(sizes[i], MFD_ALLOW_SEALING, ALL_SEALS, &h), EINVAL);
  }
}

static void test_peer_cannot_resize(void **state) {
  (void)state;
  struct shm_seg seg;
  assert_int_equal(shm_seg_create(RS, &seg), 0);
  assert_true(seg.fd >= 0);
  errno = 0;
  assert_int_equal(ftruncate(seg.fd, 4096), -1);
  assert_int_equal(errno, EPERM);
  errno = 0;
  assert_int_equal(ftruncate(seg.fd, 0), -1);
  assert_int_equal(errno, EPERM);
  errno = 0;
  assert_int_equal(ftruncate(seg.fd, (off_t)seg.size * 2), -1);
  assert_int_equal(errno, EPERM);
  errno = 0;
  assert_int_equal(fallocate(seg.fd, 0, 0, (off_t)seg.size * 2), -1);
  assert_int_equal(errno, EPERM);
  errno = 0; /* and cannot loosen or add seals any more */
  assert_int_equal(fcntl(seg.fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
  assert_int_equal(errno, EPERM);
  int seals = fcntl(seg.fd, F_GET_SEALS);
  assert_int_equal(seals & ALL_SEALS, ALL_SEALS);
  struct stat st;
  assert_int_equal(fstat(seg.fd, &st), 0);
  assert_int_equal(st.st_size, (off_t)seg.size);
  assert_int_equal(fcntl(seg.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  /* The created segment passes the peer's own checks. */
  struct shm_seg peer;
  assert_int_equal(shm_seg_attach(seg.fd, &peer), 0);
  assert_int_equal(peer.size, seg.size);
  shm_seg_destroy(&peer);
  shm_seg_destroy(&seg);
}

static void test_header_change_after_attach(void **state) {
  (void)state;
  struct shm_seg mine, theirs;
  assert_int_equal(shm_seg_create(RS, &theirs), 0);
  assert_int_equal(shm_seg_attach(theirs.fd, &mine), 0);
  assert_int_equal(mine.ring_size, RS);
  /* The peer rewrites the shared header to claim a bigger ring. */
  theirs.base->hdr.ring_size = 1u << 20;
  theirs.base->hdr.seg_size = shm_seg_size_for(1u << 20);
  theirs.base->hdr.magic = 0;
  assert_int_equal(mine.ring_size, RS);
  assert_int_equal(mine.size, shm_seg_size_for(RS));
  struct shm_ring c, p;
  shm_seg_ring(&mine, SHM_DIR_S2C, SHM_RING_CONSUMER, &c);
  shm_seg_ring(&theirs, SHM_DIR_S2C, SHM_RING_PRODUCER, &p);
  assert_int_equal(c.size, RS);
  assert_int_equal(c.mask, RS - 1);
  assert_ptr_equal(c.data, (unsigned char *)mine.base + SHM_SEG_HDR_SIZE + RS);
  assert_true(c.data + c.size == (unsigned char *)mine.base + mine.size);
  /* The ring still works across the two mappings. */
  unsigned char in[RS], out[2 * RS];
  for (uint32_t i = 0; i < RS; i++) in[i] = (unsigned char)(i ^ 0x5c);
  assert_int_equal(shm_ring_write(&p, in, RS), (ssize_t)RS);
  assert_int_equal(shm_ring_read(&c, out, sizeof out, 0), (ssize_t)RS);
  assert_memory_equal(in, out, RS);
  shm_seg_destroy(&mine);
  shm_seg_destroy(&theirs);
}

/* The peer flips ring_size while we attach: every attach that succeeds must have
 * the geometry that fits the file, never a value read after validation. */
struct flipper {
  struct shm_seg_hdr *hdr;
  int stop; /* atomic: read by the flipping thread */
};

static void *flip(void *a) {
  struct flipper *f = a;
  uint64_t s = 1;
  while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) { /* jittered hold times so that flips land anywhere in attach */
    uint64_t r = tu_splitmix64(&s);
    __atomic_store_n(&f->hdr->ring_size, (r & 1) ? 1u << 20 : RS, __ATOMIC_RELAXED);
    for (volatile unsigned i = (unsigned)(r >> 40) & 63; i; i--) {
    }
  }
  return NULL;
}

static void test_header_flipped_during_attach(void **state) {
  (void)state;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) skip();
  struct shm_seg theirs;
  assert_int_equal(shm_seg_create(RS, &theirs), 0);
  struct flipper f = {&theirs.base->hdr, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, flip, &f), 0);
  int ok = 0, refused = 0;
  for (int i = 0; i < 5000; i++) {
    struct shm_seg mine;
    errno = 0;
    if (shm_seg_attach(theirs.fd, &mine) == 0) {
      ok++;
      if (mine.ring_size != RS || mine.size != shm_seg_size_for(RS)) {
        __atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
        pthread_join(th, NULL);
        fail_msg("attach %d returned ring_size %u for a %zu-byte segment", i, mine.ring_size, mine.size);
      }
      shm_seg_destroy(&mine);
    } else {
      refused++;
      if (errno != EPROTO) {
        __atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
        pthread_join(th, NULL);
        fail_msg("attach %d failed with errno %d, want EPROTO", i, errno);
      }
    }
  }
  __atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
  pthread_join(th, NULL);
  print_message("[ flip     ] %d attaches accepted, %d refused\n", ok, refused);
  assert_true(ok > 0);
  shm_seg_destroy(&theirs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_head_too_far_ahead),
      cmocka_unit_test(test_head_backwards),
      cmocka_unit_test(test_tail_hostile),
      cmocka_unit_test(test_fuzz_indices_in_bounds),
      cmocka_unit_test(test_attach_control),
      cmocka_unit_test(test_attach_seals),
      cmocka_unit_test(test_attach_not_memfd),
      cmocka_unit_test(test_attach_bad_header),
      cmocka_unit_test(test_attach_bad_geometry),
      cmocka_unit_test(test_attach_size_range),
      cmocka_unit_test(test_peer_cannot_resize),
      cmocka_unit_test(test_header_change_after_attach),
      cmocka_unit_test(test_header_flipped_during_attach),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

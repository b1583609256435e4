/* Two processes stream a deterministic pseudo-random byte stream through a 64 KiB ring
 * of one segment (inherited across fork), with random write and read sizes. The
 * consumer compares every byte with the regenerated stream and both sides compute an
 * FNV-1a checksum. Waiting is done with shm_ring_wait_data/space (adaptive spin, then
 * futex); every publish/consume notifies the other side. A hang fails the test:
 * every wait has a timeout and the parent reaps the children with a deadline.
 *
 * Size: 1 GiB, also under ASan+UBSan (about 3 s there); 256 MiB under TSan only.
 * SHMSHIM_TEST_STREAM_MB overrides it. */
#include "testutil.h"

#include "ring.h"
#include "segment.h"
#include "wait.h"

#define RING (64u << 10)
#define MAXIO 65536u
#define WAIT_NS (10 * TU_NS_PER_S) /* a wait's timeout */
#define LOST_NS (3 * TU_NS_PER_S)  /* a wait this long was a lost wake-up, even if the
                                      re-check after the timed-out futex found data */
#define DEADLINE_S 120.0           /* whole stream */

enum { MODE_COPY, MODE_SPANS };

struct job {
  struct shm_seg seg;
  uint64_t seed;
  uint64_t total;
  int mode;
};

enum { V_BYTES, V_HASH, V_WAITS, V_CALLS };

static uint64_t stream_total(uint64_t normal_mb, uint64_t tsan_mb) {
  const char *e = getenv("SHMSHIM_TEST_STREAM_MB");
  uint64_t mb = e && *e ? strtoull(e, NULL, 0) : (TU_TSAN ? tsan_mb : normal_mb);
  return mb << 20;
}

static void producer(void *a) {
  struct job *j = a;
  struct shm_ring p;
  shm_seg_ring(&j->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &p);
  struct shm_spin spin;
  shm_spin_init(&spin, 20);
  uint64_t rs = j->seed ^ 0x5052u, sent = 0, h = TU_FNV_OFFSET, waits = 0, calls = 0;
  struct tu_stream st;
  tu_stream_init(&st, j->seed);
  unsigned char *buf = malloc(MAXIO);
  TU_CHECK(buf, "malloc");
  while (sent < j->total) {
    size_t want = tu_rand_range(&rs, 1, MAXIO);
    if (want > j->total - sent) want = (size_t)(j->total - sent);
    if (j->mode == MODE_COPY) {
      tu_stream_fill(&st, buf, want);
      h = tu_fnv1a(h, buf, want);
    }
    size_t off = 0;
    while (off < want) {
      ssize_t n;
      calls++;
      if (j->mode == MODE_COPY) {
        if (calls % 4 == 0 && want - off >= 3) { /* a gather write now and then */
          size_t l = want - off, a1 = l / 3, a2 = l / 3;
          struct iovec v[3] = {{buf + off, a1}, {buf + off + a1, a2}, {buf + off + a1 + a2, l - a1 - a2}};
          n = shm_ring_writev(&p, v, 3);
        } else {
          n = shm_ring_write(&p, buf + off, want - off);
        }
      } else {
        struct shm_span sp[2];
        n = shm_ring_wreserve(&p, want - off, sp);
        if (n > 0) {
          tu_stream_fill(&st, sp[0].p, sp[0].len);
          tu_stream_fill(&st, sp[1].p, sp[1].len);
          h = tu_fnv1a(h, sp[0].p, sp[0].len);
          h = tu_fnv1a(h, sp[1].p, sp[1].len);
          shm_ring_wcommit(&p, (size_t)n);
        }
      }
      TU_CHECK(n >= 0, "write after %llu bytes", (unsigned long long)(sent + off));
      TU_CHECK((size_t)n <= want - off, "wrote %zd of %zu", n, want - off);
      if (n > 0) {
        off += (size_t)n;
        shm_ring_notify_data(&p);
        continue;
      }
      waits++;
      uint64_t t0 = tu_now_ns();
      int rc = shm_ring_wait_space(&p, &spin, WAIT_NS);
      uint64_t el = tu_now_ns() - t0;
      TU_CHECK(rc == 0 && el < (uint64_t)LOST_NS, "lost wake-up: waited %.2f s for space after %llu bytes",
               (double)el / 1e9, (unsigned long long)(sent + off));
    }
    sent += want;
  }
  shm_ring_close_write(&p);
  shm_ring_notify_data(&p);
  struct tu_slot *r = tu_slot(tu_my_slot);
  r->v[V_BYTES] = sent;
  r->v[V_HASH] = h;
  r->v[V_WAITS] = waits;
  r->v[V_CALLS] = calls;
  free(buf);
}

static void check_bytes(const unsigned char *got, const unsigned char *exp, size_t n, uint64_t at) {
  if (memcmp(got, exp, n) == 0) return;
  size_t i = 0;
  while (got[i] == exp[i]) i++;
  TU_CHECK(0, "byte %llu of the stream is 0x%02x, expected 0x%02x",
           (unsigned long long)(at + i), got[i], exp[i]);
}

static void consumer(void *a) {
  struct job *j = a;
  struct shm_ring c;
  shm_seg_ring(&j->seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &c);
  struct shm_spin spin;
  shm_spin_init(&spin, 20);
  uint64_t rs = j->seed ^ 0x434fu, got = 0, h = TU_FNV_OFFSET, waits = 0, calls = 0;
  struct tu_stream st;
  tu_stream_init(&st, j->seed);
  unsigned char *buf = malloc(MAXIO), *exp = malloc(MAXIO);
  TU_CHECK(buf && exp, "malloc");
  for (;;) {
    size_t want = tu_rand_range(&rs, 1, MAXIO);
    ssize_t n;
    calls++;
    if (j->mode == MODE_COPY) {
      n = shm_ring_read(&c, buf, want, 0);
      if (n > 0) {
        shm_ring_notify_space(&c);
        TU_CHECK((size_t)n <= want, "read %zd > %zu", n, want);
        tu_stream_fill(&st, exp, (size_t)n);
        check_bytes(buf, exp, (size_t)n, got);
        h = tu_fnv1a(h, buf, (size_t)n);
      }
    } else {
      struct shm_span sp[2];
      n = shm_ring_rpeek(&c, want, sp);
      if (n > 0) {
        TU_CHECK((size_t)n <= want && sp[0].len + sp[1].len == (size_t)n, "rpeek %zd", n);
        for (int k = 0; k < 2; k++) {
          tu_stream_fill(&st, exp, sp[k].len);
          check_bytes(sp[k].p, exp, sp[k].len, got + (k ? sp[0].len : 0));
          h = tu_fnv1a(h, sp[k].p, sp[k].len);
        }
        shm_ring_rconsume(&c, (size_t)n);
        shm_ring_notify_space(&c);
      } else if (n == 0) {
        n = shm_ring_eof(&c) ? 0 : -1;
        errno = EAGAIN;
      }
    }
    if (n > 0) {
      got += (uint64_t)n;
      TU_CHECK(got <= j->total, "received %llu > %llu bytes", (unsigned long long)got,
               (unsigned long long)j->total);
      continue;
    }
    if (n == 0) break; /* EOF */
    TU_CHECK(errno == EAGAIN, "read failed after %llu bytes", (unsigned long long)got);
    waits++;
    uint64_t t0 = tu_now_ns();
    int rc = shm_ring_wait_data(&c, &spin, WAIT_NS);
    uint64_t el = tu_now_ns() - t0;
    TU_CHECK(rc == 0 && el < (uint64_t)LOST_NS, "lost wake-up: waited %.2f s for data after %llu bytes",
             (double)el / 1e9, (unsigned long long)got);
  }
  TU_CHECK(got == j->total, "EOF after %llu of %llu bytes", (unsigned long long)got,
           (unsigned long long)j->total);
  /* EOF is final and reported by every entry point. */
  TU_CHECK(shm_ring_read(&c, buf, MAXIO, 0) == 0, "second read at EOF");
  TU_CHECK(shm_ring_eof(&c) == 1, "shm_ring_eof at EOF");
  TU_CHECK(shm_ring_wait_data(&c, NULL, WAIT_NS) == 0, "wait_data at EOF");
  TU_CHECK(c.ctl->tail == (uint32_t)j->total, "tail %u", c.ctl->tail);
  struct tu_slot *r = tu_slot(tu_my_slot);
  r->v[V_BYTES] = got;
  r->v[V_HASH] = h;
  r->v[V_WAITS] = waits;
  r->v[V_CALLS] = calls;
  free(buf);
  free(exp);
}

static void run_stream(int mode, uint64_t total, const char *name) {
  struct job j;
  memset(&j, 0, sizeof j);
  assert_int_equal(shm_seg_create(RING, &j.seg), 0);
  j.seed = tu_seed(name);
  j.total = total;
  j.mode = mode;
  tu_shared_reset();
  uint64_t t0 = tu_now_ns();
  pid_t pids[2];
  int slots[2] = {0, 1};
  pids[0] = tu_spawn(0, producer, &j, (unsigned)DEADLINE_S + 10);
  pids[1] = tu_spawn(1, consumer, &j, (unsigned)DEADLINE_S + 10);
  tu_reap(pids, slots, 2, DEADLINE_S);
  double secs = (double)(tu_now_ns() - t0) / 1e9;
  struct tu_slot *p = tu_slot(0), *c = tu_slot(1);
  print_message("[ stream   ] %s: %llu MiB in %.2f s (%.0f MiB/s); producer %llu calls %llu waits, "
                "consumer %llu calls %llu waits; fnv1a %016llx\n",
                name, (unsigned long long)(total >> 20), secs, (double)(total >> 20) / secs,
                (unsigned long long)p->v[V_CALLS], (unsigned long long)p->v[V_WAITS],
                (unsigned long long)c->v[V_CALLS], (unsigned long long)c->v[V_WAITS],
                (unsigned long long)c->v[V_HASH]);
  assert_int_equal(p->v[V_BYTES], total);
  assert_int_equal(c->v[V_BYTES], total);
  assert_int_equal(p->v[V_HASH], c->v[V_HASH]);
  assert_true(p->v[V_CALLS] > total / MAXIO); /* random sizes really were used */
  /* The parent's view of the shared control lines agrees. */
  assert_int_equal(j.seg.base->ring[SHM_DIR_C2S].head, (uint32_t)total);
  assert_int_equal(j.seg.base->ring[SHM_DIR_C2S].tail, (uint32_t)total);
  assert_int_equal(j.seg.base->ring[SHM_DIR_C2S].wr_closed, 1);
  shm_seg_destroy(&j.seg);
}

static void test_stream_copy(void **state) {
  (void)state;
  run_stream(MODE_COPY, stream_total(1024, 256), "write/read 64K ring");
}

static void test_stream_spans(void **state) {
  (void)state;
  run_stream(MODE_SPANS, stream_total(1024, 256) / 4, "wreserve/rpeek 64K ring");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stream_copy),
      cmocka_unit_test(test_stream_spans),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

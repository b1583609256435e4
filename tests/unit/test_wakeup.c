/* Wake-ups: a million sleep/wake hand-offs with no lost wake-up, the arm/notify
 * protocol step by step, futex timeouts and the adaptive spin budget.
 *
 * In the ping-pong the waiter never spins (NULL spin or a zero budget), so every
 * hand-off goes through arm / fence / re-check / futex_wait on one side against
 * publish / fence / armed? / wake on the other. Each wait has a 5 s timeout, and a
 * wait that lasted more than LOST_NS counts as a lost wake-up even if the timeout
 * then found the data (wait_on re-checks after a timed-out futex_wait): it fails
 * with the hand-off number instead of hanging or passing slowly. */
#include "testutil.h"

#include <linux/filter.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ring.h"
#include "segment.h"
#include "wait.h"

#define WAIT_NS (5 * TU_NS_PER_S)
#define LOST_NS (2 * TU_NS_PER_S)
#define PP_DEADLINE_S 120.0

static uint64_t handoffs(uint64_t normal, uint64_t sanitized) {
  const char *e = getenv("SHMSHIM_TEST_HANDOFFS");
  return e && *e ? strtoull(e, NULL, 0) : (TU_SANITIZED ? sanitized : normal);
}

/* ------------------------------------------------------------ ping-pong */

struct pp {
  struct shm_seg seg;
  uint64_t messages; /* total hand-offs, both directions */
  uint64_t deadline; /* tu_now_ns() value after which the ping-pong gives up */
  volatile int abort; /* threads: the other side failed */
};

enum { V_SENT, V_SLEPT };

/* side 0 (client) sends even numbers on C2S, side 1 (server) answers n+1 on S2C. */
static int pp_side(struct pp *g, int side, char *err, size_t errlen, uint64_t *slept_out) {
  struct shm_ring in, out;
  shm_seg_ring(&g->seg, side ? SHM_DIR_C2S : SHM_DIR_S2C, SHM_RING_CONSUMER, &in);
  shm_seg_ring(&g->seg, side ? SHM_DIR_S2C : SHM_DIR_C2S, SHM_RING_PRODUCER, &out);
  struct shm_spin zero;
  shm_spin_init(&zero, 0);
  struct shm_spin *sp = side ? &zero : NULL; /* both ways of saying "never spin" */
  uint64_t slept = 0;
  for (uint64_t v = (uint64_t)side; v < g->messages; v += 2) {
    if (v > 0) { /* first receive the peer's v - 1 */
      /* Always through the waiter's path (arm, fence, re-check, futex_wait), even
       * when the reply may already be there. */
      uint32_t before = __atomic_load_n(&in.ctl->data_seq, __ATOMIC_RELAXED);
      uint64_t t0 = tu_now_ns();
      int rc = shm_ring_wait_data(&in, sp, WAIT_NS);
      uint64_t el = tu_now_ns() - t0;
      if (rc != 0 || el > (uint64_t)LOST_NS) {
        snprintf(err, errlen, "side %d: lost wake-up: message %llu took %.2f s (wait rc %d errno %d)",
                 side, (unsigned long long)(v - 1), (double)el / 1e9, rc, errno);
        return -1;
      }
      if (__atomic_load_n(&in.ctl->data_seq, __ATOMIC_RELAXED) != before) slept++; /* futex-woken */
      uint32_t got;
      ssize_t n = shm_ring_read(&in, &got, sizeof got, 0);
      if (n != (ssize_t)sizeof got) { /* wait_data said ready: the data must be there */
        snprintf(err, errlen, "side %d: read returned %zd (errno %d) after wait_data at hand-off %llu",
                 side, n, errno, (unsigned long long)v);
        return -1;
      }
      shm_ring_notify_space(&in);
      if (got != (uint32_t)(v - 1)) {
        snprintf(err, errlen, "side %d: got %u, expected %llu", side, got, (unsigned long long)(v - 1));
        return -1;
      }
      if (g->abort) {
        snprintf(err, errlen, "side %d: aborted (peer failed)", side);
        return -1;
      }
      if ((v & 1023) < 2 && tu_now_ns() > g->deadline) {
        snprintf(err, errlen, "side %d: watchdog: still at hand-off %llu after %.0f s", side,
                 (unsigned long long)v, PP_DEADLINE_S);
        return -1;
      }
    }
    uint32_t m = (uint32_t)v;
    if (shm_ring_write(&out, &m, sizeof m) != (ssize_t)sizeof m) {
      snprintf(err, errlen, "side %d: write of %u failed", side, m);
      return -1;
    }
    shm_ring_notify_data(&out);
  }
  *slept_out = slept;
  return 0;
}

static void pp_child(void *a) {
  struct tu_slot *s = tu_slot(tu_my_slot);
  uint64_t slept = 0;
  if (pp_side(a, tu_my_slot, s->msg, sizeof s->msg, &slept)) _exit(1);
  s->v[V_SLEPT] = slept;
}

static void test_pingpong_processes(void **state) {
  (void)state;
  struct pp g;
  g.messages = handoffs(1000000, 200000);
  g.abort = 0;
  assert_int_equal(shm_seg_create(4096, &g.seg), 0);
  tu_shared_reset();
  uint64_t t0 = tu_now_ns();
  g.deadline = t0 + (uint64_t)(PP_DEADLINE_S * 1e9);
  pid_t pids[2];
  int slots[2] = {0, 1};
  pids[0] = tu_spawn(0, pp_child, &g, (unsigned)PP_DEADLINE_S + 20);
  pids[1] = tu_spawn(1, pp_child, &g, (unsigned)PP_DEADLINE_S + 20);
  tu_reap(pids, slots, 2, PP_DEADLINE_S + 10);
  double secs = (double)(tu_now_ns() - t0) / 1e9;
  uint64_t slept = tu_slot(0)->v[V_SLEPT] + tu_slot(1)->v[V_SLEPT];
  print_message("[ pingpong ] processes: %llu hand-offs in %.2f s (%.2f us each), %llu futex wake-ups (%.0f%%)\n",
                (unsigned long long)g.messages, secs, secs * 1e6 / (double)g.messages,
                (unsigned long long)slept, 100.0 * (double)slept / (double)g.messages);
  /* Every message crossed: the final indices count them (4 bytes each). */
  uint64_t c2s = (g.messages + 1) / 2, s2c = g.messages / 2;
  assert_int_equal(g.seg.base->ring[SHM_DIR_C2S].head, (uint32_t)(4 * c2s));
  assert_int_equal(g.seg.base->ring[SHM_DIR_S2C].head, (uint32_t)(4 * s2c));
  /* All but the very last message were received; that one is still in its ring. */
  int last_c2s = (g.messages & 1) != 0;
  assert_int_equal(g.seg.base->ring[SHM_DIR_C2S].tail, (uint32_t)(4 * (c2s - last_c2s)));
  assert_int_equal(g.seg.base->ring[SHM_DIR_S2C].tail, (uint32_t)(4 * (s2c - !last_c2s)));
  /* Each wait counted as futex-woken saw its own data_seq bump (a bump that lands
   * after its wait already returned may go uncounted, so this is an upper bound). */
  uint64_t bumps = (uint64_t)g.seg.base->ring[SHM_DIR_C2S].data_seq + g.seg.base->ring[SHM_DIR_S2C].data_seq;
  assert_true(slept <= bumps);
  assert_true(bumps <= g.messages);
  assert_true(slept > 0);
  shm_seg_destroy(&g.seg);
}

struct thr {
  struct pp *g;
  int side, rc;
  uint64_t slept;
  char err[256];
};

static void *pp_thread(void *a) {
  struct thr *t = a;
  t->rc = pp_side(t->g, t->side, t->err, sizeof t->err, &t->slept);
  if (t->rc) t->g->abort = 1;
  return NULL;
}

static void test_pingpong_threads(void **state) {
  (void)state;
  struct pp g;
  g.messages = handoffs(1000000, 200000) / 5;
  g.abort = 0;
  assert_int_equal(shm_seg_create(4096, &g.seg), 0);
  struct thr t[2] = {{.g = &g, .side = 0}, {.g = &g, .side = 1}};
  pthread_t th[2];
  uint64_t t0 = tu_now_ns();
  g.deadline = t0 + (uint64_t)(PP_DEADLINE_S * 1e9);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, pp_thread, &t[i]), 0);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
  double secs = (double)(tu_now_ns() - t0) / 1e9;
  print_message("[ pingpong ] threads: %llu hand-offs in %.2f s, %llu futex wake-ups\n",
                (unsigned long long)g.messages, secs, (unsigned long long)(t[0].slept + t[1].slept));
  for (int i = 0; i < 2; i++)
    if (t[i].rc) fail_msg("%s", t[i].err);
  uint64_t recv = g.seg.base->ring[SHM_DIR_C2S].tail / 4 + g.seg.base->ring[SHM_DIR_S2C].tail / 4;
  assert_int_equal(recv, g.messages - 1);
  shm_seg_destroy(&g.seg);
}

/* ----------------------------------------------------- protocol, step by step */

struct fx {
  struct shm_seg seg;
  struct shm_ring p, c;
};

static void fx_open(struct fx *f) {
  assert_int_equal(shm_seg_create(4096, &f->seg), 0);
  shm_seg_ring(&f->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &f->p);
  shm_seg_ring(&f->seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &f->c);
}

/* Fast mode, step by step (core/wait.c): a producer that keeps finding its
 * consumer awake stops fencing after its publishes, with the consumer's consent
 * only, never while another process holds its end, and a consumer that goes to
 * sleep ends it. Where the kernel has no MEMBARRIER_CMD_GLOBAL_EXPEDITED (or a
 * sandbox refuses it: valgrind), nobody consents and it never starts. */
static int mb_global_expedited(void) {
  long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  return q >= 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}
static int publish_n(struct shm_ring *p, int n, int alone) {
  int woke = 0;
  for (int i = 0; i < n; i++) woke |= shm_wait_published(p, alone);
  return woke;
}
static void test_fast_mode(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  struct shm_ring_ctl *ctl = f.p.ctl;
  int can = mb_global_expedited();
  /* No consent yet: 1000 publishes to an awake consumer, no fast mode. */
  assert_int_equal(publish_n(&f.p, 1000, 1), 0);
  assert_int_equal(f.p.fast, 0);
  assert_int_equal(ctl->prod_fast, 0);
  shm_wait_consent(&f.c);
  assert_int_equal(ctl->cons_mb, (uint32_t)can);
  /* Another process holds our end: never (and the count starts again). */
  assert_int_equal(publish_n(&f.p, 1000, 0), 0);
  assert_int_equal(f.p.fast, 0);
  /* Alone, with consent: after SHM_FAST_AFTER (256) publishes. */
  uint64_t runs = shm_wait_fast_runs;
  publish_n(&f.p, 255, 1);
  assert_int_equal(f.p.fast, 0);
  publish_n(&f.p, 1, 1);
  assert_int_equal(f.p.fast, can);
  assert_int_equal(ctl->prod_fast, (uint32_t)can);
  assert_true(shm_wait_fast_runs == runs + (uint64_t)can);
  /* The consumer goes to sleep: it ends fast mode (prod_fast clear at once), and
   * the next publish finds it armed and wakes it, fenced again. */
  shm_wait_arm_data(&f.c, SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->prod_fast, 0);
  assert_int_equal(shm_wait_published(&f.p, 1), SHM_SLEEP_FUTEX);
  assert_int_equal(f.p.fast, 0);
  assert_int_equal(ctl->cons_armed, 0);
  /* Again; and this time the producer finds the consumer armed itself (a sleeper
   * that armed before fast mode began): it leaves fast mode too. */
  publish_n(&f.p, 256, 1);
  assert_int_equal(f.p.fast, can);
  __atomic_store_n(&ctl->cons_armed, SHM_SLEEP_SOCKET, __ATOMIC_RELAXED);
  assert_int_equal(shm_wait_published(&f.p, 1), SHM_SLEEP_SOCKET);
  assert_int_equal(f.p.fast, 0);
  /* A consumer is answering (2) or has answered (0) while our copy says fast:
   * the next publish fences and forgets it. */
  for (uint32_t v = 0; v <= 2; v += 2) {
    publish_n(&f.p, 256, 1);
    assert_int_equal(f.p.fast, can);
    __atomic_store_n(&ctl->prod_fast, v, __ATOMIC_RELAXED);
    assert_int_equal(shm_wait_published(&f.p, 1), 0);
    assert_int_equal(f.p.fast, 0);
  }
  /* The producer leaves fast mode itself (another process came to hold its
   * end): it takes prod_fast back to 0 after its fence. */
  publish_n(&f.p, 256, 1);
  assert_int_equal(f.p.fast, can);
  assert_int_equal(shm_wait_published(&f.p, 0), 0);
  assert_int_equal(f.p.fast, 0);
  assert_int_equal(ctl->prod_fast, 0);
  /* ... but never over a consumer's answer (2) */
  publish_n(&f.p, 256, 1);
  __atomic_store_n(&ctl->prod_fast, 2, __ATOMIC_RELAXED);
  assert_int_equal(shm_wait_published(&f.p, 0), 0);
  assert_int_equal(ctl->prod_fast, 2);
  /* A consumer that arms while another is answering (2) answers too, with a
   * membarrier of its own (it must not look before the producer's publishes
   * show), and the value ends at 0. */
  uint64_t answers = shm_wait_fast_answers;
  shm_wait_arm_data(&f.c, SHM_SLEEP_SOCKET);
  assert_true(shm_wait_fast_answers == answers + 1);
  assert_int_equal(ctl->prod_fast, 0);
  assert_int_equal(shm_wait_published(&f.p, 1), SHM_SLEEP_SOCKET);
  /* and with prod_fast 0 an arm makes no system call */
  shm_wait_arm_data(&f.c, SHM_SLEEP_SOCKET);
  assert_true(shm_wait_fast_answers == answers + 1);
  assert_int_equal(shm_wait_published(&f.p, 1), SHM_SLEEP_SOCKET);
  /* Consent withdrawn: no new fast mode. */
  __atomic_store_n(&ctl->cons_mb, 0, __ATOMIC_RELAXED);
  publish_n(&f.p, 1000, 1);
  assert_int_equal(f.p.fast, 0);
  assert_int_equal(ctl->prod_fast, 0);
  shm_seg_destroy(&f.seg);
}

/* A consumer whose membarrier is refused after it consented (a seccomp filter
 * installed after the process set up its rings, returning an error): it
 * withdraws its consent, ends fast mode, waits out a publish whose fence was
 * skipped, and the producer never goes into fast mode again. In a child
 * process, whose filter dies with it. */
static void fast_refused_child(void *a) {
  (void)a;
  struct fx f;
  TU_CHECK(shm_seg_create(4096, &f.seg) == 0, "segment");
  shm_seg_ring(&f.seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &f.p);
  shm_seg_ring(&f.seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &f.c);
  struct shm_ring_ctl *ctl = f.p.ctl;
  shm_wait_consent(&f.c);
  publish_n(&f.p, 256, 1);
  TU_CHECK(f.p.fast == 1 && ctl->prod_fast == 1, "fast mode (fast %d, prod_fast %u)", f.p.fast, ctl->prod_fast);
  /* membarrier fails with EPERM from now on, everything else is allowed */
  struct sock_filter flt[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof flt / sizeof flt[0], flt};
  TU_CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0,
           "seccomp filter: %s", strerror(errno));
  TU_CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) < 0 && errno == EPERM, "filter works");
  uint64_t t0 = tu_now_ns();
  shm_wait_arm_data(&f.c, SHM_SLEEP_FUTEX);
  TU_CHECK(tu_now_ns() - t0 >= 1000000, "waited out the unfenced publishes (%.3f ms)", (double)(tu_now_ns() - t0) / 1e6);
  TU_CHECK(ctl->cons_mb == 0 && ctl->prod_fast == 0, "consent withdrawn (cons_mb %u, prod_fast %u)", ctl->cons_mb,
           ctl->prod_fast);
  TU_CHECK(shm_wait_published(&f.p, 1) == SHM_SLEEP_FUTEX && f.p.fast == 0, "the armed consumer woken, fenced");
  publish_n(&f.p, 1000, 1);
  TU_CHECK(f.p.fast == 0 && ctl->prod_fast == 0, "no fast mode without consent");
  shm_wait_consent(&f.c); /* a new connection of this process: no consent either */
  TU_CHECK(ctl->cons_mb == 0, "consent once refused");
}
static void test_fast_refused(void **state) {
  (void)state;
  if (!mb_global_expedited()) skip();
  tu_shared_reset();
  pid_t pid = tu_spawn(0, fast_refused_child, NULL, 20);
  int slot = 0;
  tu_reap(&pid, &slot, 1, 20);
}

/* Bursts through the write path's check (shm_wait_published), each answered
 * through the other ring once the consumer, reading fewer bytes at a time than
 * the producer writes, has it all: the producer spends most of each burst in
 * fast mode, and the consumer goes to sleep (no spin) in the producer's pauses
 * and at each burst's end. A wake-up lost there leaves both waiting: the wait's
 * 5 s timeout (LOST_NS: 2 s) ends the test with the burst's number. */
#define FB_BURSTS 4000
struct fb {
  struct shm_seg seg;
  int rc;
  char err[200];
};
static uint64_t fb_h(uint64_t a, uint64_t b) { /* the same for both threads */
  uint64_t s = a << 32 ^ b;
  return tu_splitmix64(&s);
}
static int fb_wait(struct shm_ring *r, const char *who, uint64_t burst, char *err, size_t errlen) {
  uint64_t t0 = tu_now_ns();
  int rc = shm_ring_wait_data(r, NULL, WAIT_NS);
  if (rc == 0 && tu_now_ns() - t0 <= (uint64_t)LOST_NS) return 0;
  snprintf(err, errlen, "%s: lost wake-up in burst %llu (wait rc %d)", who, (unsigned long long)burst, rc);
  return -1;
}
static void *fb_producer(void *a) {
  struct fb *g = a;
  struct shm_ring out, ack;
  shm_seg_ring(&g->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &out);
  shm_seg_ring(&g->seg, SHM_DIR_S2C, SHM_RING_CONSUMER, &ack);
  unsigned char b[48];
  uint64_t off = 0;
  for (uint64_t r = 0; r < FB_BURSTS; r++) {
    uint64_t n = 1 + fb_h(r, 0) % 600;
    for (uint64_t j = 0; j < n; j++) {
      size_t m = 1 + fb_h(r, j + 1) % sizeof b;
      for (size_t i = 0; i < m; i++) b[i] = (unsigned char)(off + i);
      size_t done = 0;
      while (done < m) {
        ssize_t w = shm_ring_write(&out, b + done, m - done);
        if (w > 0) {
          done += (size_t)w;
          shm_wait_published(&out, 1);
        } else if (shm_ring_wait_space(&out, NULL, WAIT_NS) != 0) {
          snprintf(g->err, sizeof g->err, "producer: no room in burst %llu", (unsigned long long)r);
          g->rc = -1;
          return NULL;
        }
      }
      off += m;
      if (fb_h(r, j + 100000) % 97 == 0) sched_yield();
    }
    unsigned char k;
    while (shm_ring_read(&ack, &k, 1, 0) != 1)
      if (fb_wait(&ack, "producer", r, g->err, sizeof g->err)) return g->rc = -1, NULL;
  }
  return NULL;
}
static void test_fast_bursts(void **state) {
  (void)state;
  struct fb g = {.rc = 0};
  assert_int_equal(shm_seg_create(4096, &g.seg), 0);
  struct shm_ring in, ack;
  shm_seg_ring(&g.seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &in);
  shm_seg_ring(&g.seg, SHM_DIR_S2C, SHM_RING_PRODUCER, &ack);
  shm_wait_consent(&in);
  uint64_t runs = shm_wait_fast_runs;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, fb_producer, &g), 0);
  unsigned char b[24];
  uint64_t off = 0, reads = 0;
  char err[200] = "";
  for (uint64_t r = 0; r < FB_BURSTS && !err[0]; r++) {
    uint64_t left = 0;
    for (uint64_t j = 0, n = 1 + fb_h(r, 0) % 600; j < n; j++) left += 1 + fb_h(r, j + 1) % 48;
    while (left && !err[0]) {
      size_t want = 1 + fb_h(r, reads++ + 200000) % sizeof b;
      if (want > left) want = (size_t)left;
      ssize_t n = shm_ring_read(&in, b, want, 0);
      if (n <= 0) {
        if (fb_wait(&in, "consumer", r, err, sizeof err)) break;
        continue;
      }
      shm_ring_notify_space(&in);
      for (ssize_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(off + (uint64_t)i)) snprintf(err, sizeof err, "consumer: wrong byte at %llu", (unsigned long long)(off + (uint64_t)i));
      off += (uint64_t)n;
      left -= (uint64_t)n;
    }
    if (!err[0]) {
      assert_int_equal(shm_ring_write(&ack, "k", 1), 1);
      shm_ring_notify_data(&ack);
    }
  }
  if (err[0]) fail_msg("%s (fast mode entered %llu times)", err, (unsigned long long)(shm_wait_fast_runs - runs));
  assert_int_equal(pthread_join(th, NULL), 0);
  if (g.rc) fail_msg("%s", g.err);
  print_message("[ fastburst ] %d bursts, %llu bytes in %llu reads, fast mode entered %llu times\n", FB_BURSTS,
                (unsigned long long)off, (unsigned long long)reads, (unsigned long long)(shm_wait_fast_runs - runs));
  if (mb_global_expedited()) assert_true(shm_wait_fast_runs > runs);
  shm_seg_destroy(&g.seg);
}

static void test_notify_only_armed(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  struct shm_ring_ctl *ctl = f.p.ctl;
  /* Nobody asleep: notify costs no wake and changes nothing. */
  assert_int_equal(shm_wait_data_sleeper(&f.p), 0);
  shm_ring_notify_data(&f.p);
  assert_int_equal(ctl->data_seq, 0);
  /* Armed futex sleeper: woken (futex word bumped) exactly once. */
  shm_wait_arm_data(&f.c, SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->cons_armed, SHM_SLEEP_FUTEX);
  shm_ring_notify_data(&f.p);
  assert_int_equal(ctl->data_seq, 1);
  assert_int_equal(ctl->cons_armed, 0);
  shm_ring_notify_data(&f.p);
  assert_int_equal(ctl->data_seq, 1);
  /* A socket sleeper is reported to the caller (who kicks it); no futex bump. */
  shm_wait_arm_data(&f.c, SHM_SLEEP_SOCKET);
  assert_int_equal(shm_wait_data_sleeper(&f.p), SHM_SLEEP_SOCKET);
  assert_int_equal(ctl->data_seq, 1);
  assert_int_equal(shm_wait_data_sleeper(&f.p), 0);
  /* Both kinds at once: both reported, the futex one woken, each only once. */
  shm_wait_arm_data(&f.c, SHM_SLEEP_SOCKET);
  shm_wait_arm_data(&f.c, SHM_SLEEP_FUTEX);
  assert_int_equal(shm_wait_data_sleeper(&f.p), SHM_SLEEP_SOCKET | SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->data_seq, 2);
  assert_int_equal(shm_wait_data_sleeper(&f.p), 0);
  /* Disarm withdraws only its own kind. */
  shm_wait_arm_data(&f.c, SHM_SLEEP_SOCKET);
  shm_wait_arm_data(&f.c, SHM_SLEEP_FUTEX);
  shm_wait_disarm_data(&f.c, SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->cons_armed, SHM_SLEEP_SOCKET);
  shm_wait_disarm_data(&f.c, SHM_SLEEP_SOCKET);
  assert_int_equal(shm_wait_data_sleeper(&f.p), 0);
  assert_int_equal(ctl->data_seq, 2);
  /* Mirror image for space. */
  shm_ring_notify_space(&f.c);
  assert_int_equal(ctl->space_seq, 0);
  shm_wait_arm_space(&f.p, SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->prod_armed, SHM_SLEEP_FUTEX);
  assert_int_equal(shm_wait_space_sleeper(&f.c), SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->space_seq, 1);
  assert_int_equal(shm_wait_space_sleeper(&f.c), 0);
  shm_wait_arm_space(&f.p, SHM_SLEEP_SOCKET);
  shm_ring_notify_space(&f.c);
  assert_int_equal(ctl->space_seq, 1);
  assert_int_equal(ctl->prod_armed, 0);
  shm_wait_arm_space(&f.p, SHM_SLEEP_FUTEX | SHM_SLEEP_SOCKET);
  shm_wait_disarm_space(&f.p, SHM_SLEEP_SOCKET);
  assert_int_equal(ctl->prod_armed, SHM_SLEEP_FUTEX);
  shm_wait_disarm_space(&f.p, SHM_SLEEP_FUTEX);
  assert_int_equal(ctl->prod_armed, 0);
  /* A hostile peer setting unknown bits gets at most the two known kinds back. */
  ctl->cons_armed = 0xfffffffcu;
  assert_int_equal(shm_wait_data_sleeper(&f.p), 0);
  assert_int_equal(ctl->data_seq, 2);
  shm_seg_destroy(&f.seg);
}

static void test_wait_timeouts_and_ready(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  struct shm_spin sp;
  shm_spin_init(&sp, 20);
  uint64_t t0 = tu_now_ns();
  errno = 0;
  assert_int_equal(shm_ring_wait_data(&f.c, &sp, 50 * 1000000ll), -1);
  assert_int_equal(errno, ETIMEDOUT);
  uint64_t el = tu_now_ns() - t0;
  assert_true(el >= 50 * 1000000ull);
  assert_true(el < 3 * (uint64_t)TU_NS_PER_S);
  assert_int_equal(f.c.ctl->cons_armed, 0); /* left disarmed */
  errno = 0;
  assert_int_equal(shm_ring_wait_data(&f.c, NULL, 0), -1);
  assert_int_equal(errno, ETIMEDOUT);
  /* Ready cases return at once. */
  unsigned char b[4096] = {0};
  assert_int_equal(shm_ring_write(&f.p, b, 1), 1);
  assert_int_equal(shm_ring_wait_data(&f.c, NULL, WAIT_NS), 0);
  assert_int_equal(shm_ring_write(&f.p, b, 4095), 4095);
  errno = 0;
  assert_int_equal(shm_ring_wait_space(&f.p, NULL, 20 * 1000000ll), -1); /* full */
  assert_int_equal(errno, ETIMEDOUT);
  assert_int_equal(f.p.ctl->prod_armed, 0);
  shm_ring_close_read(&f.c); /* EPIPE to report: the producer must not sleep */
  t0 = tu_now_ns();
  assert_int_equal(shm_ring_wait_space(&f.p, NULL, WAIT_NS), 0);
  assert_true(tu_now_ns() - t0 < (uint64_t)TU_NS_PER_S);
  shm_seg_destroy(&f.seg);
  fx_open(&f);
  shm_ring_close_write(&f.p); /* EOF to report */
  t0 = tu_now_ns();
  assert_int_equal(shm_ring_wait_data(&f.c, NULL, WAIT_NS), 0);
  assert_true(tu_now_ns() - t0 < (uint64_t)TU_NS_PER_S);
  shm_seg_destroy(&f.seg);
}

struct waker {
  struct fx *f;
  int delay_ms;
};

static void *late_writer(void *a) {
  struct waker *w = a;
  usleep((useconds_t)w->delay_ms * 1000);
  unsigned char x = 42;
  shm_ring_write(&w->f->p, &x, 1);
  shm_ring_notify_data(&w->f->p);
  return NULL;
}

static void test_wait_woken_by_notify(void **state) {
  (void)state;
  struct fx f;
  fx_open(&f);
  struct waker w = {&f, 100};
  pthread_t th;
  uint64_t t0 = tu_now_ns();
  assert_int_equal(pthread_create(&th, NULL, late_writer, &w), 0);
  assert_int_equal(shm_ring_wait_data(&f.c, NULL, WAIT_NS), 0);
  uint64_t el = tu_now_ns() - t0;
  pthread_join(th, NULL);
  assert_true(el >= 90 * 1000000ull); /* it really slept */
  assert_true(el < 4 * (uint64_t)TU_NS_PER_S);
  assert_int_equal(f.c.ctl->data_seq, 1); /* woken through the futex word */
  unsigned char x = 0;
  assert_int_equal(shm_ring_read(&f.c, &x, 1, 0), 1);
  assert_int_equal(x, 42);
  shm_seg_destroy(&f.seg);
}

/* ------------------------------------------------------------------ futex */

static void test_futex_timeout(void **state) {
  (void)state;
  uint32_t word = 5;
  uint64_t t0 = tu_now_ns();
  errno = 0;
  assert_int_equal(shm_futex_wait(&word, 5, 30 * 1000000ll), -1);
  assert_int_equal(errno, ETIMEDOUT);
  uint64_t el = tu_now_ns() - t0;
  assert_true(el >= 30 * 1000000ull);
  assert_true(el < 3 * (uint64_t)TU_NS_PER_S);
  errno = 0;
  assert_int_equal(shm_futex_wait(&word, 5, 0), -1); /* zero timeout: poll */
  assert_int_equal(errno, ETIMEDOUT);
  /* 1.1 s: the seconds/nanoseconds split of the timeout. */
  t0 = tu_now_ns();
  assert_int_equal(shm_futex_wait(&word, 5, 1100 * 1000000ll), -1);
  el = tu_now_ns() - t0;
  assert_true(el >= 1100 * 1000000ull);
  assert_true(el < 4 * (uint64_t)TU_NS_PER_S);
  /* Value already changed: returns 0 at once, even with no timeout. */
  t0 = tu_now_ns();
  assert_int_equal(shm_futex_wait(&word, 6, -1), 0);
  assert_true(tu_now_ns() - t0 < (uint64_t)TU_NS_PER_S);
}

/* ------------------------------------------------------------------- spin */

struct counter {
  int calls, ready_at;
};

static int ready_after(void *a) {
  struct counter *c = a;
  return ++c->calls >= c->ready_at;
}

/* Not ready, and on its first call away for 100 us, as if preempted. */
static int ready_after_gap(void *a) {
  struct counter *c = a;
  if (++c->calls == 2) {
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* With more runnable threads than CPUs, a spin that was off the CPU for longer
 * than preempt_ns ends at once, at the floor budget, and its long wait does not
 * count as a slow peer. */
static void test_spin_preempted(void **state) {
  (void)state;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) skip();
  shm_spin_assume_crowded = 1;
  shm_spin_ignore_load = 1;
  struct shm_spin s;
  shm_spin_init(&s, 1000); /* a 1 ms budget: without the rule it would spin on */
  assert_int_equal(s.preempt_ns, 40000);
  struct counter c = {0, 0};
  uint64_t t0 = tu_now_ns();
  assert_int_equal(shm_spin(&s, ready_after_gap, &c), 0);
  uint64_t took = tu_now_ns() - t0;
  assert_true(took >= 100000);
  assert_true(c.calls < 200); /* ended at the first look after the gap */
  assert_int_equal(s.budget_ns, s.max_ns / 16);
  assert_int_equal(s.lost_at, 0);
  /* Without the rule, the same spin runs its whole budget. */
  shm_spin_init(&s, 1000);
  s.preempt_ns = 0;
  c.calls = 0;
  t0 = tu_now_ns();
  assert_int_equal(shm_spin(&s, ready_after_gap, &c), 0);
  assert_true(tu_now_ns() - t0 >= 1000000);
  /* It ended as a spin that lost, not as a preempted one (a count of looks would
   * depend on how much of that millisecond the machine gave us: it failed with
   * the test suite compiling beside it). */
  assert_int_not_equal(s.lost_at, 0);
  assert_true(c.calls > 2);
  shm_spin_assume_crowded = 0;
  shm_spin_ignore_load = 0;
}

/* With more runnable threads than CPUs a spin would only take the CPU from the
 * peer: none at all, and the budget is kept for when the machine is quiet. */
static void test_spin_crowded(void **state) {
  (void)state;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) skip();
  shm_spin_assume_crowded = 2;
  struct shm_spin s;
  shm_spin_init(&s, 1000);
  struct counter never = {0, 1 << 30};
  uint64_t t0 = tu_now_ns();
  assert_int_equal(shm_spin(&s, ready_after, &never), 0);
  assert_true(tu_now_ns() - t0 < 1000000); /* not the 1 ms budget */
  assert_int_equal(never.calls, 1);        /* one look, no spin */
  assert_int_equal(s.budget_ns, s.max_ns);
  assert_int_equal(s.lost_at, 0);
  struct counter now = {0, 1};
  assert_int_equal(shm_spin(&s, ready_after, &now), 1); /* ready at once: still reported */
  shm_spin_assume_crowded = 0;
}

static void test_spin_adaptive(void **state) {
  (void)state;
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    struct shm_spin s1;
    shm_spin_init(&s1, 20);
    assert_int_equal(s1.max_ns, 0); /* never spin on one CPU */
    skip();
  }
  shm_spin_ignore_load = 1; /* the spin's own rules, whatever else runs here */
  struct shm_spin s;
  shm_spin_init(&s, 20);
  assert_int_equal(s.max_ns, 20000);
  assert_int_equal(s.budget_ns, 20000);
  struct counter never = {0, 1 << 30};
  /* A gap between two looks (a real preemption on a loaded machine, the first
   * spin's page faults, TSan's shadow memory) would end a spin early at the
   * floor budget: test_spin_preempted tests that; here it must not interfere. */
  s.preempt_ns = 0;
  /* Failed spins halve the budget, down to a floor of max/16, and last >= budget. */
  static const uint32_t down[] = {10000, 5000, 2500, 1250, 1250};
  for (size_t i = 0; i < sizeof down / sizeof down[0]; i++) {
    uint32_t before = s.budget_ns;
    uint64_t t0 = tu_now_ns();
    assert_int_equal(shm_spin(&s, ready_after, &never), 0);
    assert_true(tu_now_ns() - t0 >= before);
    assert_int_equal(s.budget_ns, down[i]);
  }
  assert_true(never.calls > 5);
  /* Successful spins double it back, never past max. */
  static const uint32_t up[] = {2500, 5000, 10000, 20000, 20000, 20000};
  for (size_t i = 0; i < sizeof up / sizeof up[0]; i++) {
    struct counter soon = {0, 3}; /* not ready on entry: a real spin that wins */
    assert_int_equal(shm_spin(&s, ready_after, &soon), 1);
    assert_int_equal(soon.calls, 3);
    assert_int_equal(s.budget_ns, up[i]);
    assert_true(s.budget_ns <= s.max_ns);
  }
  /* Ready on entry: reported without spinning. */
  struct counter now = {0, 1};
  assert_int_equal(shm_spin(&s, ready_after, &now), 1);
  assert_int_equal(now.calls, 1);
  assert_true(s.budget_ns <= s.max_ns);
  /* Budget 0: one check, no spinning, budget stays 0. */
  struct shm_spin z;
  shm_spin_init(&z, 0);
  assert_int_equal(z.budget_ns, 0);
  struct counter once = {0, 1 << 30};
  assert_int_equal(shm_spin(&z, ready_after, &once), 0);
  assert_int_equal(once.calls, 1);
  assert_int_equal(z.budget_ns, 0);
  /* The largest configurable budget (SHMSHIM_SPIN_US <= 1 s) does not overflow. */
  struct shm_spin big;
  shm_spin_init(&big, 1000000);
  assert_int_equal(big.max_ns, 1000000000u);
  big.budget_ns = big.max_ns / 2 + 1;
  struct counter soon = {0, 2};
  assert_int_equal(shm_spin(&big, ready_after, &soon), 1);
  assert_int_equal(big.budget_ns, big.max_ns);
  shm_spin_ignore_load = 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_notify_only_armed),
      cmocka_unit_test(test_fast_mode),
      cmocka_unit_test(test_fast_refused),
      cmocka_unit_test(test_fast_bursts),
      cmocka_unit_test(test_wait_timeouts_and_ready),
      cmocka_unit_test(test_wait_woken_by_notify),
      cmocka_unit_test(test_futex_timeout),
      cmocka_unit_test(test_spin_adaptive),
      cmocka_unit_test(test_spin_preempted),
      cmocka_unit_test(test_spin_crowded),
      cmocka_unit_test(test_pingpong_processes),
      cmocka_unit_test(test_pingpong_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

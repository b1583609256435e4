#include "wait.h"

#include <errno.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "real.h"

/* An armed flag: set, then the full fence that orders it before the sleeper's
 * last look at the ring (F1 for data, F3 for room; see the callers). */
static void arm_flag(uint32_t *flag, int kind) {
  __atomic_fetch_or(flag, (uint32_t)kind, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
static void disarm_flag(uint32_t *flag, int kind) {
  if (__atomic_load_n(flag, __ATOMIC_RELAXED) & (uint32_t)kind)
    __atomic_fetch_and(flag, ~(uint32_t)kind, __ATOMIC_RELAXED);
}

/* Fast mode (docs/design.md, Ring protocol): a producer that keeps finding its
 * consumer awake stops paying F2's full fence after each publish, which waits
 * for the consumer's copies of the head and data lines to be given up (two
 * thirds of a 64-byte write's time while the reader keeps up). The fence moves
 * to the sleeper's side, where it is rare: a consumer that arms while prod_fast
 * is not 0 runs membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) before its last
 * look, a full barrier on every CPU that runs a thread of a registered process
 * at that moment (a producer that is not running passed one when it was
 * switched out). Either the consumer's look sees the publish or the producer's
 * look sees the flag.
 * prod_fast: 0 off; 1 on (only the producer stores 1, then fences once, so a
 * consumer whose arm read 0 before that had its flag seen by every later
 * check); 2 a consumer is answering (stored before its membarrier, taken back
 * to 0 with a release CAS after it; a producer that leaves fast mode while it
 * reads 1 takes it to 0 the same way, after a fence). A producer skips the
 * fence only on 1; an arm that reads 1 or 2 answers with a membarrier of its
 * own: one that read
 * another consumer's 0 before that one's membarrier had run could look before
 * the producer's skipped publish showed, and sleep on it (two processes, or
 * two threads, asleep on one ring). A producer enters only with its process
 * registered and the consumer's consent (cons_mb: its process has the
 * command). */
#define SHM_FAST_AFTER 256 /* publishes in a row that found the consumer awake */
#define SHM_FAST_ON 1u
#define SHM_FAST_ANSWERING 2u
static int mb_usable;      /* the process has MEMBARRIER_CMD_GLOBAL_EXPEDITED: 1, not: -1, unknown: 0 */
static int mb_registered;  /* registered for it (producer side): 1, failed: -1, not yet: 0 */
uint64_t shm_wait_fast_runs, shm_wait_fast_answers;

static int membarrier_usable(void) {
  int u = __atomic_load_n(&mb_usable, __ATOMIC_RELAXED);
  if (u) return u > 0;
  long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  u = q >= 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) ? 1 : -1;
  __atomic_store_n(&mb_usable, u, __ATOMIC_RELAXED);
  return u > 0;
}

void shm_wait_consent(struct shm_ring *c) {
  __atomic_store_n(&c->ctl->cons_mb, membarrier_usable() ? 1u : 0u, __ATOMIC_RELAXED);
}

void shm_wait_forked_child(void) {
  __atomic_store_n(&mb_registered, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&shm_wait_fast_runs, 0, __ATOMIC_RELAXED); /* the child's own, for its summary */
}

/* The consumer's side of fast mode, after F1 (prod_fast read non-zero). A
 * consumer that goes to sleep has caught up: the stream paused, and fast mode
 * ends (the producer sees 2, then 0, at its next publish). Otherwise every
 * later arm would pay for this one (13 us on a VM, and an interrupt on each CPU
 * that runs a registered process): a poll loop on a connection whose producer
 * went quiet.
 * A membarrier that fails (a seccomp filter installed since we gave our
 * consent) withdraws the consent, for good in this process. A publish whose
 * fence was skipped before the producer saw that is at most a store still in
 * its CPU's store buffer: the millisecond waited then is far more than that
 * takes to show (no architecture promises a bound: docs/design.md, Known
 * limits). */
static void answer_fast(struct shm_ring *c) {
  __atomic_store_n(&c->ctl->prod_fast, SHM_FAST_ANSWERING, __ATOMIC_RELAXED);
  __atomic_add_fetch(&shm_wait_fast_answers, 1, __ATOMIC_RELAXED);
  if (!membarrier_usable() || syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0) {
    __atomic_store_n(&mb_usable, -1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->ctl->cons_mb, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t until = shm_now_ns() + 1000000;
    for (uint64_t now; (now = shm_now_ns()) < until;) { /* (a signal cuts a nanosleep short) */
      struct timespec ts = {0, (long)(until - now)};
      nanosleep(&ts, NULL);
    }
  }
  uint32_t answering = SHM_FAST_ANSWERING;
  __atomic_compare_exchange_n(&c->ctl->prod_fast, &answering, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

void shm_wait_arm_data(struct shm_ring *c, int kind) {
  arm_flag(&c->ctl->cons_armed, kind); /* F1, pairs with F2 */
  /* acquire: a 0 stored by another consumer's answer comes after its membarrier */
  if (__atomic_load_n(&c->ctl->prod_fast, __ATOMIC_ACQUIRE)) answer_fast(c);
}
void shm_wait_disarm_data(struct shm_ring *c, int kind) { disarm_flag(&c->ctl->cons_armed, kind); }
void shm_wait_arm_space(struct shm_ring *p, int kind) { arm_flag(&p->ctl->prod_armed, kind); /* F3, pairs with F4 */ }
void shm_wait_disarm_space(struct shm_ring *p, int kind) { disarm_flag(&p->ctl->prod_armed, kind); }

/* A spin whose clock jumps by more than this was preempted. */
#define SHM_SPIN_PREEMPTED_NS 40000u
/* How often a thread looks at the number of runnable threads. */
#define SHM_SPIN_LOAD_NS 100000000u
/* When this thread last woke a sleeping peer (see shm_spin). */
static __thread uint64_t woke_peer_ns;

/* F2's check found the consumer awake. Is it spinning on our CPU, i.e. queued
 * behind us? Then it is as good as woken by us: our next spin lets it run
 * first. Any value the peer wrote costs at most one sched_yield. */
static int consumer_awake(struct shm_ring *p) {
  uint32_t cpu = __atomic_load_n(&p->ctl->spin_cpu, __ATOMIC_RELAXED);
  if (cpu && (int)cpu - 1 == sched_getcpu()) woke_peer_ns = shm_now_ns();
  return 0;
}
/* F2's check found it armed: take the flag, wake a futex sleeper. The value read
 * from shared memory is only ever tested bit by bit. */
static int wake_armed(struct shm_ring *p) {
  int v = (int)(__atomic_exchange_n(&p->ctl->cons_armed, 0, __ATOMIC_ACQ_REL) & 3);
  if (v) __atomic_store_n(&p->ctl->woke_ns, woke_peer_ns = shm_now_ns(), __ATOMIC_RELAXED);
  if (v & SHM_SLEEP_FUTEX) {
    __atomic_fetch_add(&p->ctl->data_seq, 1, __ATOMIC_RELEASE);
    shm_futex_wake(&p->ctl->data_seq);
  }
  return v;
}

int shm_wait_data_sleeper(struct shm_ring *p) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* F2, pairs with F1 */
  if (!__atomic_load_n(&p->ctl->cons_armed, __ATOMIC_RELAXED)) return consumer_awake(p);
  return wake_armed(p);
}

void shm_wait_spinning(struct shm_ring *c, int on) {
  int cpu = on ? sched_getcpu() : -1;
  __atomic_store_n(&c->ctl->spin_cpu, cpu >= 0 ? (uint32_t)cpu + 1 : 0, __ATOMIC_RELAXED);
}

static void enter_fast(struct shm_ring *p) {
  p->streak = 0; /* (refused: ask again after as many) */
  if (!__atomic_load_n(&p->ctl->cons_mb, __ATOMIC_RELAXED)) return;
  int reg = __atomic_load_n(&mb_registered, __ATOMIC_RELAXED);
  if (!reg) {
    reg = membarrier_usable() && syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0 ? 1 : -1;
    __atomic_store_n(&mb_registered, reg, __ATOMIC_RELAXED);
  }
  if (reg < 0) return;
  __atomic_store_n(&p->ctl->prod_fast, SHM_FAST_ON, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* prod_fast before our next looks at cons_armed */
  p->fast = 1;
  __atomic_add_fetch(&shm_wait_fast_runs, 1, __ATOMIC_RELAXED);
}

int shm_wait_published(struct shm_ring *p, int alone) {
  /* prod_fast is read each time: a consumer that went to sleep has ended fast
   * mode (answer_fast). alone: not needed by the argument (a fork child is not
   * registered until it registers itself, and a fenced publish is always
   * safe), but a connection several processes write goes without. */
  if (p->fast && alone && __atomic_load_n(&mb_registered, __ATOMIC_RELAXED) > 0 &&
      __atomic_load_n(&p->ctl->prod_fast, __ATOMIC_RELAXED) == SHM_FAST_ON &&
      __atomic_load_n(&p->ctl->cons_mb, __ATOMIC_RELAXED)) {
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* F2 in fast mode: the consumer's membarrier is the fence */
    if (!__atomic_load_n(&p->ctl->cons_armed, __ATOMIC_RELAXED)) return consumer_awake(p);
    p->fast = 0;
    p->streak = 0;
    return wake_armed(p);
  }
  int was_fast = p->fast;
  p->fast = 0;
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* F2, pairs with F1 */
  /* Left fast mode with prod_fast still 1 (another process holds our end now,
   * or the consent went): say so, after the fence, so that an arm that reads
   * the 0 also sees every publish made without one; never over a consumer's 2. */
  if (was_fast) {
    uint32_t on = SHM_FAST_ON;
    __atomic_compare_exchange_n(&p->ctl->prod_fast, &on, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
  }
  if (!__atomic_load_n(&p->ctl->cons_armed, __ATOMIC_RELAXED)) {
    if (!alone) p->streak = 0;
    else if (++p->streak >= SHM_FAST_AFTER) enter_fast(p);
    return consumer_awake(p);
  }
  p->streak = 0;
  return wake_armed(p);
}

int shm_wait_space_sleeper(struct shm_ring *c) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* F4, pairs with F3 */
  if (!__atomic_load_n(&c->ctl->prod_armed, __ATOMIC_RELAXED)) return 0;
  int v = (int)(__atomic_exchange_n(&c->ctl->prod_armed, 0, __ATOMIC_ACQ_REL) & 3);
  if (v) woke_peer_ns = shm_now_ns();
  if (v & SHM_SLEEP_FUTEX) {
    __atomic_fetch_add(&c->ctl->space_seq, 1, __ATOMIC_RELEASE);
    shm_futex_wake(&c->ctl->space_seq);
  }
  return v;
}

int shm_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts, *tp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tp = &ts;
  }
  /* Not FUTEX_PRIVATE_FLAG: the word is shared with another process. */
  long rc = syscall(SYS_futex, word, FUTEX_WAIT, expected, tp, NULL, 0);
  if (rc == 0 || errno == EAGAIN) return 0;
  return -1;
}

void shm_futex_wake(uint32_t *word) { syscall(SYS_futex, word, FUTEX_WAKE, 1 << 30, NULL, NULL, 0); }

uint64_t shm_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t ncpus(void) {
  static uint32_t n; /* any thread may fill it in: the same value */
  uint32_t v = __atomic_load_n(&n, __ATOMIC_RELAXED);
  if (!v) {
    long l = sysconf(_SC_NPROCESSORS_ONLN);
    v = l > 0 ? (uint32_t)l : 1;
    __atomic_store_n(&n, v, __ATOMIC_RELAXED);
  }
  return v;
}

void shm_spin_init(struct shm_spin *s, uint64_t max_us) {
  /* On one CPU the peer cannot run while we spin: spinning only delays it. */
  if (max_us > 1000000) max_us = 1000000;
  s->max_ns = ncpus() > 1 ? (uint32_t)(max_us * 1000) : 0;
  s->budget_ns = s->max_ns;
  s->lost_at = 0;
  s->preempt_ns = SHM_SPIN_PREEMPTED_NS;
}

void shm_spin_woke(struct shm_spin *s) { shm_spin_woke_at(s, shm_now_ns()); }

void shm_spin_woke_at(struct shm_spin *s, uint64_t published_ns) {
  if (!s->lost_at) return;
  /* A value from shared memory: anything out of range just means "no news". */
  uint64_t waited = published_ns > s->lost_at ? published_ns - s->lost_at : UINT64_MAX;
  s->lost_at = 0;
  if (waited > s->max_ns) return;
  uint64_t want = waited + waited / 4;
  if (want < (uint64_t)s->budget_ns * 2) want = (uint64_t)s->budget_ns * 2;
  s->budget_ns = want > s->max_ns ? s->max_ns : (uint32_t)want;
}

int shm_spin_assume_crowded;
int shm_spin_ignore_load;

/* A small /proc file, NUL-terminated, through system calls of our own (errno
 * kept). Returns its length, or -1. */
static long read_small(const char *path, char *b, size_t size) {
  int e = errno;
  long n = -1;
  int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    n = syscall(SYS_read, fd, b, size - 1);
    shm_sys_close(fd);
  }
  b[n > 0 ? n : 0] = 0;
  errno = e;
  return n;
}

/* What the last looks below said, for this thread (nothing yet: not crowded). */
static __thread int oversubscribed, cpu_starved;

/* Are there more runnable threads than CPUs? The kernel's count of runnable
 * threads (/proc/loadavg). */
static void look_oversubscribed(void) {
  char b[128];
  oversubscribed = 0;
  if (read_small("/proc/loadavg", b, sizeof b) > 0) { /* "0.12 0.34 0.56 RUNNABLE/TOTAL LASTPID" */
    const char *p = b;
    for (int f = 0; f < 3 && p; f++) p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
    if (p) oversubscribed = strtoul(p, NULL, 10) > ncpus();
  }
}

/* Does this thread wait for a CPU? The share of its runnable time it spent
 * queued (/proc/thread-self/schedstat: time on a CPU, time waiting for one) since
 * the last look. A busy pair on a quiet machine (each on its own CPU) waits
 * almost never; with more work than CPUs a thread waits a good part of the time,
 * and a spin would only take a CPU from the peer or from another program. (The
 * machine-wide count of runnable threads said "crowded" too often for a busy
 * pair: a kernel thread is enough on 2 CPUs.) */
static void look_cpu_starved(void) {
  static __thread uint64_t ran, waited, at;
  char b[96];
  if (read_small("/proc/thread-self/schedstat", b, sizeof b) > 0) { /* "RAN_NS WAITED_NS TIMESLICES" */
    char *end;
    uint64_t r = strtoull(b, &end, 10), w = strtoull(end, NULL, 10), now = shm_now_ns();
    uint64_t dr = r - ran, dw = w - waited, dt = now - at;
    /* Waited more than a fifth of the time it wanted a CPU, and for a
     * twentieth of the time since the last look at least. A thread that
     * sleeps most of the time (a client with a request every 100 ms) runs
     * some 50 us per wake-up and is queued some 10 to 30 us at each: that is
     * the wake-up's latency, not a CPU taken by others, and the first rule
     * alone said starved, so such a thread never spun for its answer and
     * renewed these looks (six system calls) at every request. */
    cpu_starved = ran && dr + dw > 0 && dw * 5 > dr + dw && dw * 20 > dt;
    ran = r;
    waited = w;
    at = now;
  }
}

/* The two looks above cost three system calls each. A spin decides with what
 * the last looks said; the looks are renewed, at most every SHM_SPIN_LOAD_NS, by
 * a thread that is about to sleep (armed, and nothing came), where they delay
 * nobody: before a spin they delayed every sparse request by the time of six
 * system calls. A thread that slept fewer than SHM_SPIN_LOAD_SLEEPS times in
 * such a period is idle most of the time, and the looks were its dearest system
 * calls (redis with a request every 10 or 100 ms: six more per request than
 * plain): it renews them only every SHM_SPIN_LOAD_MAX_NS, unless the last ones
 * said crowded (then it does not spin, and they cost a path that sleeps anyway;
 * a reading kept from a busy moment would keep it from spinning for good). */
#define SHM_SPIN_LOAD_SLEEPS 20
#define SHM_SPIN_LOAD_MAX_NS 1000000000ull
void shm_spin_sleeping(void) {
  static __thread uint64_t at, looked;
  static __thread unsigned sleeps;
  sleeps++;
  uint64_t now = shm_now_ns();
  if (at && now - at < SHM_SPIN_LOAD_NS) return;
  int look = !looked || sleeps >= SHM_SPIN_LOAD_SLEEPS || cpu_starved || oversubscribed ||
             now - looked >= SHM_SPIN_LOAD_MAX_NS;
  at = now;
  sleeps = 0;
  if (!look) return;
  looked = now;
  look_cpu_starved();
  look_oversubscribed();
}

int shm_spin(struct shm_spin *s, int (*ready)(void *), void *arg) {
  int r = ready(arg);
  if (r || s->budget_ns == 0) {
    if (!r && s->max_ns) s->budget_ns = s->max_ns / 16 ? s->max_ns / 16 : 1; /* retry later */
    return r;
  }
  uint64_t start = shm_now_ns(), deadline = start + s->budget_ns, last = start;
  /* This thread waits for a CPU: a spin would take the CPU from the peer or from
   * another program, and the peer's answer would come later, not sooner
   * (redis-benchmark -c 1 on a busy 2-CPU machine: 0.24x plain with spinning,
   * about 1x without). Sleep at once; the budget is kept for when the machine
   * is quiet again. */
  if (!shm_spin_ignore_load && (shm_spin_assume_crowded > 1 || cpu_starved)) return 0;
  /* Socket wake-ups hint the kernel that the waker is about to sleep, so a peer
   * we have just woken is often queued on this very CPU, where our spin would
   * keep it from running: let it run first (if it is not queued here, this costs
   * one system call). Not when there are more runnable threads than CPUs: then
   * whatever runs in our place is likely another program, and the kernel
   * charges a yield with a time slice. */
  if (start - woke_peer_ns < s->max_ns && !oversubscribed) {
    sched_yield();
    if ((r = ready(arg))) goto won;
    last = shm_now_ns();
  }
  for (;;) {
    for (int i = 0; i < 32; i++) {
      shm_cpu_relax();
      if ((r = ready(arg))) goto won;
    }
    uint64_t now = shm_now_ns();
    /* Preempted mid-spin, with other threads waiting for the CPUs (without them,
     * a gap is the hypervisor's or an interrupt's, and says nothing of the peer). */
    if (s->preempt_ns && now - last > s->preempt_ns && (shm_spin_assume_crowded || oversubscribed))
      goto contended;
    last = now;
    if (now >= deadline) break;
  }
  /* Lost: the peer is idle or descheduled, spin less next time. The floor keeps us
   * probing; shm_spin_woke() grows the budget back when the peer was only slow. */
  s->lost_at = start;
  s->budget_ns /= 2;
  if (s->budget_ns < s->max_ns / 16) s->budget_ns = s->max_ns / 16;
  return 0;
contended:
  /* Preempted mid-spin: others compete for the CPU, and spinning only steals from
   * them (and from the peer). Sleep, and spin little for a while. */
  s->lost_at = 0; /* a wait that ran long because we were off the CPU says nothing */
  s->budget_ns = s->max_ns / 16 ? s->max_ns / 16 : 1;
  return 0;
won:
  s->budget_ns = s->budget_ns * 2 > s->max_ns ? s->max_ns : s->budget_ns * 2;
  return r;
}

struct rdy {
  struct shm_ring *r;
};

static int data_ready(void *a) {
  struct shm_ring *r = a;
  return shm_ring_readable(r, 1) != 0 || __atomic_load_n(&r->ctl->wr_closed, __ATOMIC_ACQUIRE);
}

static int space_ready(void *a) {
  struct shm_ring *r = a;
  return shm_ring_writable(r, 1) != 0;
}

static int wait_sleep(struct shm_ring *r, int64_t timeout_ns, int (*ready)(void *), uint32_t *seqw,
                      void (*arm)(struct shm_ring *, int), void (*disarm)(struct shm_ring *, int));

static int wait_on(struct shm_ring *r, struct shm_spin *sp, int64_t timeout_ns, int (*ready)(void *),
                   uint32_t *seqw, void (*arm)(struct shm_ring *, int), void (*disarm)(struct shm_ring *, int)) {
  if (sp && shm_spin(sp, ready, r)) return 0;
  int rc = wait_sleep(r, timeout_ns, ready, seqw, arm, disarm);
  if (sp && rc == 0) shm_spin_woke_at(sp, __atomic_load_n(&r->ctl->woke_ns, __ATOMIC_RELAXED));
  return rc;
}

static int wait_sleep(struct shm_ring *r, int64_t timeout_ns, int (*ready)(void *), uint32_t *seqw,
                      void (*arm)(struct shm_ring *, int), void (*disarm)(struct shm_ring *, int)) {
  uint64_t deadline = timeout_ns >= 0 ? shm_now_ns() + (uint64_t)timeout_ns : 0;
  for (;;) {
    uint32_t seq = __atomic_load_n(seqw, __ATOMIC_ACQUIRE);
    arm(r, SHM_SLEEP_FUTEX);
    if (ready(r)) {
      disarm(r, SHM_SLEEP_FUTEX);
      return 0;
    }
    int64_t left = -1;
    if (timeout_ns >= 0) {
      uint64_t now = shm_now_ns();
      if (now >= deadline) {
        disarm(r, SHM_SLEEP_FUTEX);
        errno = ETIMEDOUT;
        return -1;
      }
      left = (int64_t)(deadline - now);
    }
    shm_spin_sleeping();
    if (shm_futex_wait(seqw, seq, left) < 0 && errno == EINTR) {
      disarm(r, SHM_SLEEP_FUTEX);
      return -1;
    }
    disarm(r, SHM_SLEEP_FUTEX);
    if (ready(r)) return 0;
  }
}

int shm_ring_wait_data(struct shm_ring *c, struct shm_spin *sp, int64_t timeout_ns) {
  return wait_on(c, sp, timeout_ns, data_ready, &c->ctl->data_seq, shm_wait_arm_data,
                 shm_wait_disarm_data);
}

int shm_ring_wait_space(struct shm_ring *p, struct shm_spin *sp, int64_t timeout_ns) {
  return wait_on(p, sp, timeout_ns, space_ready, &p->ctl->space_seq, shm_wait_arm_space,
                 shm_wait_disarm_space);
}

void shm_ring_notify_data(struct shm_ring *p) { shm_wait_data_sleeper(p); }

void shm_ring_notify_space(struct shm_ring *c) { shm_wait_space_sleeper(c); }

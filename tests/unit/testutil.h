/* Shared helpers for the cmocka unit tests: a seeded PRNG and a deterministic byte
 * stream, FNV-1a, sanitizer detection, and a small supervisor for tests that fork.
 *
 * Forked children must never use cmocka's assert_* (a failure would longjmp into the
 * child's copy of the test runner and go on running the remaining tests there), so
 * they use TU_CHECK, which records a message in a shared page and _exit()s. The
 * parent reaps them with a deadline (tu_reap) and turns any failure or timeout into
 * a cmocka failure, so a hung child fails the test instead of hanging it. */
#ifndef SHMSHIM_TESTUTIL_H
#define SHMSHIM_TESTUTIL_H

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- sanitizer detection (workloads are scaled down under ASan/TSan only) ---- */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#ifndef TU_SANITIZED
#define TU_SANITIZED 0
#endif
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif

#define TU_NS_PER_S 1000000000ll

static inline uint64_t tu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- PRNG ---- */
static inline uint64_t tu_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform-enough integer in [lo, hi] (inclusive). */
static inline uint64_t tu_rand_range(uint64_t *s, uint64_t lo, uint64_t hi) {
  return lo + tu_splitmix64(s) % (hi - lo + 1);
}

/* Seed from SHMSHIM_TEST_SEED (to replay a failure) or from the clock; logged. */
static inline uint64_t tu_seed(const char *what) {
  const char *e = getenv("SHMSHIM_TEST_SEED");
  uint64_t seed = e && *e ? strtoull(e, NULL, 0) : (tu_now_ns() ^ ((uint64_t)getpid() << 32));
  print_message("[ seed     ] %s: seed=0x%016llx (replay: SHMSHIM_TEST_SEED=0x%016llx)\n", what,
                (unsigned long long)seed, (unsigned long long)seed);
  return seed;
}

/* Deterministic byte stream: byte i is byte (i % 8) of the (i / 8)-th splitmix64
 * output, least significant first, independent of how it is chunked. */
struct tu_stream {
  uint64_t state;
  uint64_t word;
  unsigned left; /* unused bytes still in word */
};

static inline void tu_stream_init(struct tu_stream *st, uint64_t seed) {
  st->state = seed;
  st->word = 0;
  st->left = 0;
}

static inline void tu_stream_fill(struct tu_stream *st, unsigned char *p, size_t n) {
  while (n && st->left) {
    *p++ = (unsigned char)st->word;
    st->word >>= 8;
    st->left--;
    n--;
  }
  while (n >= 8) {
    uint64_t w = tu_splitmix64(&st->state);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(w >> (8 * i));
    p += 8;
    n -= 8;
  }
  if (n) {
    st->word = tu_splitmix64(&st->state);
    st->left = 8;
    while (n) {
      *p++ = (unsigned char)st->word;
      st->word >>= 8;
      st->left--;
      n--;
    }
  }
}

/* ---- FNV-1a 64 ---- */
#define TU_FNV_OFFSET 0xcbf29ce484222325ull
static inline uint64_t tu_fnv1a(uint64_t h, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* ---- forked children ---- */
#define TU_MAX_CHILD 4
struct tu_slot {
  char msg[512];
  uint64_t v[8]; /* results reported by the child */
};
struct tu_shared {
  struct tu_slot slot[TU_MAX_CHILD];
};

static struct tu_shared *tu_sh; /* MAP_SHARED page visible to the children */
static int tu_my_slot = -1;     /* set in a child */

static inline void tu_shared_reset(void) {
  if (!tu_sh) {
    void *p = mmap(NULL, sizeof *tu_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    tu_sh = p;
  }
  memset(tu_sh, 0, sizeof *tu_sh);
}

static inline struct tu_slot *tu_slot(int i) { return &tu_sh->slot[i]; }

__attribute__((noreturn, format(printf, 4, 5))) static inline void tu_child_fail(const char *file,
                                                                                 int line,
                                                                                 const char *cond,
                                                                                 const char *fmt,
                                                                                 ...) {
  int e = errno;
  char *m = tu_sh->slot[tu_my_slot].msg;
  size_t cap = sizeof tu_sh->slot[0].msg;
  int n = snprintf(m, cap, "%s:%d: check `%s` failed (errno %d %s): ", file, line, cond, e,
                   strerror(e));
  if (n > 0 && (size_t)n < cap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
  }
  _exit(1);
}

#define TU_CHECK(cond, ...)                                              \
  do {                                                                   \
    if (!(cond)) tu_child_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);  \
  } while (0)

/* Runs fn(arg) in a child with a SIGALRM backstop of alarm_s seconds. */
static inline pid_t tu_spawn(int slot, void (*fn)(void *), void *arg, unsigned alarm_s) {
  assert_true(slot >= 0 && slot < TU_MAX_CHILD);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* cmocka's handlers would longjmp into the child's copy of the runner. */
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGABRT, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
    tu_my_slot = slot;
    alarm(alarm_s);
    fn(arg);
    _exit(0);
  }
  return pid;
}

/* Reaps n children within timeout_s seconds. On the first failure, or at the
 * deadline, the others are killed; any failure fails the test with the children's
 * messages. slots[i] is the result slot of pids[i]. */
static inline void tu_reap(const pid_t *pids, const int *slots, int n, double timeout_s) {
  int status[TU_MAX_CHILD], done[TU_MAX_CHILD] = {0}, left = n, bad = 0, timed_out = 0;
  uint64_t deadline = tu_now_ns() + (uint64_t)(timeout_s * 1e9);
  while (left) {
    int progressed = 0;
    for (int i = 0; i < n; i++) {
      if (done[i]) continue;
      pid_t r = waitpid(pids[i], &status[i], WNOHANG);
      if (r == pids[i]) {
        done[i] = 1;
        left--;
        progressed = 1;
        if (!WIFEXITED(status[i]) || WEXITSTATUS(status[i]) != 0) bad = 1;
      }
    }
    if (!left) break;
    if (bad || tu_now_ns() > deadline) {
      timed_out = !bad;
      for (int i = 0; i < n; i++)
        if (!done[i]) kill(pids[i], SIGKILL);
      for (int i = 0; i < n; i++)
        if (!done[i]) {
          waitpid(pids[i], &status[i], 0);
          done[i] = 1;
          left--;
        }
      break;
    }
    if (!progressed) usleep(2000);
  }
  if (!bad && !timed_out) return;
  char all[2048];
  size_t off = 0;
  all[0] = '\0';
  for (int i = 0; i < n; i++) {
    const char *m = tu_sh->slot[slots[i]].msg;
    char how[64];
    if (WIFEXITED(status[i])) snprintf(how, sizeof how, "exit %d", WEXITSTATUS(status[i]));
    else snprintf(how, sizeof how, "signal %d (%s)", WTERMSIG(status[i]), strsignal(WTERMSIG(status[i])));
    int k = snprintf(all + off, sizeof all - off, "\n  child %d [%s]: %s", i, how,
                     m[0] ? m : "(no message)");
    if (k > 0) off += (size_t)k < sizeof all - off ? (size_t)k : sizeof all - off - 1;
  }
  if (timed_out)
    fail_msg("watchdog: children still running after %.0f s (hang or lost wake-up)%s", timeout_s, all);
  fail_msg("child failed:%s", all);
}

#endif

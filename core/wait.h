/* Wake-up primitives: the armed flags that make lost wake-ups impossible, a futex
 * in the segment, and bounded adaptive spinning.
 *
 * Sleeper (consumer waiting for data)      Waker (producer after publishing)
 *   seq = data_seq                           publish head            (W1)
 *   cons_armed = 1                           full fence              (F2)
 *   full fence                    (F1)       if cons_armed: clear it, bump data_seq, wake
 *   re-check head; data? disarm, return
 *   futex_wait(data_seq, seq)
 * F1 pairs with F2 (a store-load "Dekker" pair): either the sleeper's re-check sees
 * the new head, or the waker sees the armed flag. In fast mode (a producer that
 * streams, wait.c) F2 is a compiler barrier, and a sleeper that finds prod_fast
 * set adds membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) before its re-check. Waiting for space is the mirror
 * image with prod_armed/space_seq. The interposition layer uses the same flags but
 * kicks through the real socket instead of the futex (so epoll sees it). */
#ifndef SHMSHIM_WAIT_H
#define SHMSHIM_WAIT_H

#include <stdint.h>
#include <time.h>

#include "ring.h"

/* Who sleeps, and so how to wake it: a waiter in poll/epoll/recv on the real socket
 * needs a kick byte; a waiter on the segment's futex needs FUTEX_WAKE. Several
 * sleepers of different kinds may be armed at once (a blocking writer thread and
 * an epoll thread), so the flag is a bit set. */
enum { SHM_SLEEP_SOCKET = 1, SHM_SLEEP_FUTEX = 2 };

/* Consumer about to sleep for data / producer about to sleep for space. */
void shm_wait_arm_data(struct shm_ring *consumer, int kind);
void shm_wait_disarm_data(struct shm_ring *consumer, int kind);
void shm_wait_arm_space(struct shm_ring *producer, int kind);
void shm_wait_disarm_space(struct shm_ring *producer, int kind);
/* After publishing (producer) / consuming (consumer): the kinds of sleeper the other
 * side declared (0: none); the flag is cleared so that each is woken once. Futex
 * sleepers are woken here; socket sleepers are the caller's to kick. */
int shm_wait_data_sleeper(struct shm_ring *producer);
/* After publishing, on the write path (wake_consumer): shm_wait_data_sleeper, in
 * fast mode without its full fence (wait.c). alone: no other process holds our
 * end. Producer's lock held. */
int shm_wait_published(struct shm_ring *producer, int alone);
/* Consumer, once its ring is set up: our process can answer fast mode (one
 * membarrier query per process). */
void shm_wait_consent(struct shm_ring *consumer);
/* In a fork child: its process is not registered for membarrier (re-registers
 * when it needs to). */
void shm_wait_forked_child(void);
/* Consumer: is the producer in fast mode (streaming)? A look at the line its
 * head is on: make it right after a look at the head. */
static inline int shm_wait_producer_fast(const struct shm_ring *consumer) {
  return __atomic_load_n(&consumer->ctl->prod_fast, __ATOMIC_RELAXED) == 1u;
}
/* Times a producer of this process went into fast mode (the exit summary), and
 * times a consumer of this process answered one with a membarrier (tests). */
extern uint64_t shm_wait_fast_runs, shm_wait_fast_answers;
/* Consumer: about to spin for data (on: 1), or done (0). A producer that publishes
 * while the consumer spins on the producer's own CPU (it can only be queued
 * there, waiting for us) lets it run before its own next spin (shm_spin). */
void shm_wait_spinning(struct shm_ring *consumer, int on);
int shm_wait_space_sleeper(struct shm_ring *consumer);

/* Shared (not process-private) futex on a word in the segment. timeout_ns < 0:
 * forever. 0 on wake or value change, -1 with ETIMEDOUT or EINTR. */
int shm_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);
void shm_futex_wake(uint32_t *word);

/* Adaptive spinning: the budget doubles (up to SHMSHIM_SPIN_US) after a spin that
 * succeeded and halves after one that did not, so a peer that answers quickly is
 * waited for on-CPU and an idle one costs almost nothing before we sleep. */
struct shm_spin {
  uint32_t budget_ns;
  uint32_t max_ns;
  uint64_t lost_at;    /* when the last lost spin started (0: none pending) */
  uint32_t preempt_ns; /* a gap this long between two looks means we were preempted (0: never) */
};
void shm_spin_init(struct shm_spin *s, uint64_t max_us);
/* Tests: act as if there were more runnable threads than CPUs: 1, for the rule
 * that ends a preempted spin; 2, for the rule that does not spin at all. */
extern int shm_spin_assume_crowded;
/* Tests of the spin itself: spin even when the machine has more runnable threads
 * than CPUs (otherwise shm_spin sleeps at once then). */
extern int shm_spin_ignore_load;
/* Spins while ready(arg) == 0 for at most the current budget. Returns ready()'s last
 * value (non-zero: ready). */
int shm_spin(struct shm_spin *s, int (*ready)(void *), void *arg);
/* Called by a thread about to sleep (armed, nothing came): renews, when due, what
 * shm_spin knows of the machine's load (system calls, kept off the way of a
 * spin). Async-signal-safe. */
void shm_spin_sleeping(void);
/* After a lost spin, the waiter slept and is now ready: if the whole wait was
 * shorter than the maximum budget, a longer spin would have won, so grow the
 * budget again (otherwise it could stay at its floor for a peer that always
 * answers just after it). */
void shm_spin_woke(struct shm_spin *s);
/* Same, knowing when the peer published what woke us (its ring's woke_ns): the
 * peer's real answer time, not our wake-up latency, decides. */
void shm_spin_woke_at(struct shm_spin *s, uint64_t published_ns);

uint64_t shm_now_ns(void);

/* One iteration of a spin-wait: tells the CPU (and a hyperthread sibling) we wait. */
static inline void shm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Futex-based blocking on a ring (used by tests, bench and any waiter that has no
 * socket to poll). Return 0 when readable/writable (or EOF/error to report), -1 with
 * ETIMEDOUT or EINTR. */
int shm_ring_wait_data(struct shm_ring *consumer, struct shm_spin *sp, int64_t timeout_ns);
int shm_ring_wait_space(struct shm_ring *producer, struct shm_spin *sp, int64_t timeout_ns);
/* Wake the other side if it sleeps: call after every publish / consume. */
void shm_ring_notify_data(struct shm_ring *producer);
void shm_ring_notify_space(struct shm_ring *consumer);

#endif

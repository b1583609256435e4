/* The library's side of the published statistics (core/stats.h): a table of slots
 * in a sealed-against-shrinking memfd, created at the first tracked connection.
 *
 * The table lives at the start of an address range reserved once (PROT_NONE), so
 * growing it maps more of the file behind the part already mapped and slot
 * pointers held by connections never move. The file only grows (F_SEAL_SHRINK):
 * a reader's mapping can never turn into SIGBUS. */
#include "real.h"
#include "stats.h"
#include "wait.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "fdtab.h"
#include "log.h"
#include "wait.h"

struct shm_stat_slot shm_stat_sink;

#define PAGE 4096u
#define FIRST_SIZE (4 * PAGE)
/* Whole pages: the file grows by mapping its next part at a page-aligned offset. */
#define RESERVE                                                                              \
  (((size_t)SHM_STAT_HDR_SIZE + (size_t)SHM_STAT_MAX_SLOTS * sizeof(struct shm_stat_slot) + \
    PAGE - 1) & ~(size_t)(PAGE - 1))

static pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *st_base; /* reserved range; the table is mapped at its start */
static size_t st_mapped;       /* bytes of table mapped there */
static int st_fd = -1;         /* our memfd (hidden), -1 while the table is private */
static pid_t st_pid;           /* the process the table belongs to */
static int st_dead;            /* could not be created: do not try again */
static uint32_t *st_free, st_nfree, st_free_cap;
static uint32_t st_untracked; /* live slots no connection record owns */

static struct shm_stat_hdr *hdr(void) { return (struct shm_stat_hdr *)st_base; }
static struct shm_stat_slot *slot_at(uint32_t i) {
  return (struct shm_stat_slot *)(st_base + SHM_STAT_HDR_SIZE) + i;
}
static uint32_t slots_for(size_t size) {
  size_t n = (size - SHM_STAT_HDR_SIZE) / sizeof(struct shm_stat_slot);
  return n > SHM_STAT_MAX_SLOTS ? SHM_STAT_MAX_SLOTS : (uint32_t)n; /* the last page's tail stays unused */
}

/* Identity fields change between two increments of seq (odd meanwhile); the
 * reader retries when it sees an odd value or a change across its copy. */
static void id_begin(struct shm_stat_slot *s) {
  __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
}
static void id_end(struct shm_stat_slot *s) { __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE); }

static void copy_totals(void) {
  struct shm_stat_hdr *h = hdr();
  h->upgraded_client = __atomic_load_n(&shm_stats.upgraded_client, __ATOMIC_RELAXED);
  h->upgraded_server = __atomic_load_n(&shm_stats.upgraded_server, __ATOMIC_RELAXED);
  h->plain_client = __atomic_load_n(&shm_stats.plain_client, __ATOMIC_RELAXED);
  h->plain_server = __atomic_load_n(&shm_stats.plain_server, __ATOMIC_RELAXED);
  h->offers_rejected = __atomic_load_n(&shm_stats.offers_rejected, __ATOMIC_RELAXED);
}

static int push_free_range(uint32_t from, uint32_t to) {
  if (to > st_free_cap) {
    uint32_t *n = realloc(st_free, to * sizeof *n);
    if (!n) return -1;
    st_free = n;
    st_free_cap = to;
  }
  for (uint32_t i = to; i > from; i--) st_free[st_nfree++] = i - 1; /* lowest first */
  return 0;
}

static void detach_private(void);
static void *st_snap;

/* Maps a memfd over the table's place. In a forked child the private copy's
 * contents are carried over first (counts added meanwhile by other threads may be
 * lost: they are approximate anyway). 0, or -1 and the table stays as it was. */
static int publish(void) {
  size_t size = st_mapped ? st_mapped : FIRST_SIZE;
  int fd = (int)syscall(SYS_memfd_create, SHM_STAT_MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  void *m = MAP_FAILED;
  if (syscall(SYS_ftruncate, fd, (long)size) < 0 ||
      syscall(SYS_fcntl, fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
    goto fail;
  m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) goto fail;
  if (st_mapped) {
    memcpy(m, st_base, st_mapped);
  } else {
    struct shm_stat_hdr *h = m;
    h->version = SHM_STAT_VERSION;
    h->hdr_size = SHM_STAT_HDR_SIZE;
    h->slot_size = sizeof(struct shm_stat_slot);
    h->nslots = slots_for(size);
    h->created_ns = shm_now_ns();
  }
  ((struct shm_stat_hdr *)m)->pid = st_pid;
  __atomic_store_n(&((struct shm_stat_hdr *)m)->magic, SHM_STAT_MAGIC, __ATOMIC_RELEASE);
  /* Replaces whatever is at st_base (the reservation, or the private copy) in one
   * step: connections counting meanwhile land in one mapping or the other. */
  if (mremap(m, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, st_base) == MAP_FAILED) goto fail;
  /* Without room for the free list the table is published empty: every set-up
   * then counts as overflow, and the next one tries to grow it again. */
  if (!st_mapped && push_free_range(0, slots_for(size)) < 0) hdr()->nslots = 0;
  st_mapped = size;
  int hidden = shm_fd_hide(fd); /* close-on-exec, out of the application's way */
  st_fd = hidden >= 0 ? hidden : fd;
  return 0;
fail:
  if (m != MAP_FAILED) munmap(m, size);
  shm_sys_close(fd);
  return -1;
}

/* The table, created or (after a fork) made our own. Caller holds st_lock. */
static int ensure(void) {
  if (st_dead || !shm_cfg.stats) return -1;
  pid_t pid = (pid_t)syscall(SYS_getpid);
  if (st_base && st_pid != pid) detach_private(); /* forked without our fork(): daemon(3) */
  if (st_fd >= 0) return 0;
  if (!st_base) {
    void *p = mmap(NULL, RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      st_dead = 1;
      return -1;
    }
    st_base = p;
  }
  st_pid = pid;
  if (publish() < 0) {
    SHM_LOG(WARN, "statistics table not published: %s", strerror(errno));
    if (!st_mapped) st_dead = 1; /* else: keep counting privately, try again next time */
    return st_mapped ? 0 : -1;
  }
  copy_totals();
  return 0;
}

static int same_socket(int fd, uint32_t ino) {
  struct stat st;
  return syscall(SYS_fstat, fd, &st) == 0 && S_ISSOCK(st.st_mode) && (uint32_t)st.st_ino == ino;
}

static void release(struct shm_stat_slot *s) {
  struct shm_stat_hdr *h = hdr();
  if (s->tracked) {
    h->closed++;
    h->closed_tx += s->tx_ring + s->tx_sock;
    h->closed_rx += s->rx_ring + s->rx_sock;
  } else {
    st_untracked--;
  }
  id_begin(s);
  s->state = SHM_STAT_FREE;
  memset(&s->tx_ring, 0, offsetof(struct shm_stat_slot, seq));
  id_end(s);
  st_free[st_nfree++] = (uint32_t)(s - slot_at(0));
}

/* Plain connections nobody tracks are given back once their fd is no longer that
 * socket. One fstat per such slot, only when the free list is empty. */
static uint32_t sweep(void) {
  uint32_t freed = 0, n = hdr()->nslots;
  for (uint32_t i = 0; i < n && st_untracked; i++) {
    struct shm_stat_slot *s = slot_at(i);
    if (s->state != SHM_STAT_FREE && !s->tracked && !same_socket(s->fd, s->ino)) {
      release(s);
      freed++;
    }
  }
  return freed;
}

static int grow(void) {
  if (st_fd < 0) return -1; /* private (forked, not yet published): no room to grow */
  size_t nsize = st_mapped * 2 > RESERVE ? RESERVE : st_mapped * 2;
  if (nsize <= st_mapped) return -1;
  if (syscall(SYS_ftruncate, st_fd, (long)nsize) < 0) return -1;
  if (mmap(st_base + st_mapped, nsize - st_mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
           st_fd, (off_t)st_mapped) == MAP_FAILED)
    return -1;
  uint32_t old = hdr()->nslots, n = slots_for(nsize);
  if (push_free_range(old, n) < 0) return -1;
  st_mapped = nsize;
  __atomic_store_n(&hdr()->nslots, n, __ATOMIC_RELEASE); /* new slots are zero: free */
  return 0;
}

/* A free slot, or NULL (counted as overflow). Caller holds st_lock. */
static struct shm_stat_slot *take(void) {
  if (ensure() < 0) return NULL;
  if (!st_nfree) {
    /* Amortised: either a quarter of the table comes back, or it doubles. */
    uint32_t freed = st_untracked ? sweep() : 0;
    if (freed < hdr()->nslots / 4) grow();
  }
  if (!st_nfree) {
    hdr()->overflow++;
    return NULL;
  }
  return slot_at(st_free[--st_nfree]);
}

static void put_addr(struct shm_stat_addr *a, const struct sockaddr *sa, socklen_t len) {
  if (!sa) return;
  if (len > sizeof a->sa) len = sizeof a->sa;
  memcpy(a->sa, sa, len);
  a->len = (uint16_t)len;
}

static struct shm_stat_slot *fill(int fd, uint32_t ino, int role, int family, int state, int tracked) {
  struct shm_stat_slot *s = take();
  if (!s) return NULL;
  id_begin(s);
  memset(&s->tx_ring, 0, offsetof(struct shm_stat_slot, seq));
  s->state = (uint8_t)state;
  s->role = (uint8_t)role;
  s->why = SHM_WHY_NONE;
  s->tracked = (uint8_t)tracked;
  s->family = (uint16_t)family;
  s->fd = fd;
  s->ino = ino;
  s->peer_ino = 0;
  s->ring_size = 0;
  s->opened_ns = shm_now_ns();
  memset(&s->local, 0, sizeof s->local);
  memset(&s->peer, 0, sizeof s->peer);
  return s; /* the caller finishes with id_end() */
}

struct shm_stat_slot *shm_stat_open(int fd, uint32_t ino, int role, int family, int state) {
  if (!shm_cfg.stats || st_dead) return &shm_stat_sink;
  shm_lock(&st_lock);
  struct shm_stat_slot *s = fill(fd, ino, role, family, state, 1);
  if (s) {
    id_end(s);
    copy_totals();
  }
  shm_unlock(&st_lock);
  return s ? s : &shm_stat_sink;
}

void shm_stat_set_addr(struct shm_stat_slot *s, const struct sockaddr *local, socklen_t llen,
                       const struct sockaddr *peer, socklen_t plen) {
  if (s == &shm_stat_sink) return;
  shm_lock(&st_lock);
  id_begin(s);
  put_addr(&s->local, local, llen);
  put_addr(&s->peer, peer, plen);
  id_end(s);
  shm_unlock(&st_lock);
}

void shm_stat_set_state(struct shm_stat_slot *s, int state, int why, uint32_t peer_ino,
                        uint32_t ring_size) {
  if (s == &shm_stat_sink) return;
  shm_lock(&st_lock);
  id_begin(s);
  s->state = (uint8_t)state;
  s->why = (uint8_t)why;
  if (peer_ino) s->peer_ino = peer_ino;
  if (ring_size) s->ring_size = ring_size;
  id_end(s);
  copy_totals();
  shm_unlock(&st_lock);
}

void shm_stat_close(struct shm_stat_slot *s) {
  if (!s || s == &shm_stat_sink) return;
  shm_lock(&st_lock);
  /* A slot inherited across a fork lies in our private copy: still ours to free. */
  if (s->state != SHM_STAT_FREE) release(s);
  copy_totals();
  shm_unlock(&st_lock);
}

void shm_stat_plain(int fd, uint32_t ino, int role, int family, int why, uint32_t peer_ino,
                    const struct sockaddr *local, socklen_t llen, const struct sockaddr *peer,
                    socklen_t plen) {
  if (!shm_cfg.stats || st_dead) return;
  shm_lock(&st_lock);
  struct shm_stat_slot *s = fill(fd, ino, role, family, SHM_CONN_PLAIN, 0);
  if (s) {
    s->why = (uint8_t)why;
    s->peer_ino = peer_ino;
    put_addr(&s->local, local, llen);
    put_addr(&s->peer, peer, plen);
    id_end(s);
    st_untracked++;
    copy_totals();
  }
  shm_unlock(&st_lock);
}

void shm_stat_renumber(int from, int to) {
  int expect = from;
  __atomic_compare_exchange_n(&st_fd, &expect, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* The table we inherited is the parent's: move it into private memory at the same
 * address (connections keep their slot pointers), forget the parent's memfd, and
 * count from zero. */
static void detach_private(void) {
  st_pid = (pid_t)syscall(SYS_getpid);
  if (st_fd >= 0) {
    /* fork(): the parent's snapshot; daemon(3)-like forks: copied now. */
    void *copy = st_snap ? st_snap : mmap(NULL, st_mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy != MAP_FAILED) {
      if (!st_snap) memcpy(copy, st_base, st_mapped);
      if (mremap(copy, st_mapped, st_mapped, MREMAP_MAYMOVE | MREMAP_FIXED, st_base) == MAP_FAILED) {
        munmap(copy, st_mapped);
        copy = MAP_FAILED;
      }
    }
    st_snap = NULL; /* moved into place, or gone */
    if (copy == MAP_FAILED) {
      /* Never write into the parent's table: zero pages are better than that. */
      if (mmap(st_base, st_mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
               -1, 0) == MAP_FAILED)
        st_mapped = 0;
      st_dead = 1;
      st_nfree = 0;
    }
    int fd = st_fd;
    st_fd = -1;
    shm_fd_set(fd, SHM_FD_NONE, NULL); /* fork(): its lock was re-initialised before us */
    shm_sys_close(fd);
  }
  if (!st_mapped) return;
  struct shm_stat_hdr *h = hdr();
  h->pid = st_pid;
  h->closed = h->closed_tx = h->closed_rx = h->overflow = 0;
  for (uint32_t i = 0; i < h->nslots; i++) {
    struct shm_stat_slot *s = slot_at(i);
    if (s->seq & 1) s->seq++; /* a set-up interrupted by the fork, in another thread */
    memset(&s->tx_ring, 0, offsetof(struct shm_stat_slot, seq));
  }
}

/* fork(): the published table as it was when the fork began, taken under st_lock
 * by the parent for the child. The child cannot copy the table itself: it shares
 * the parent's mapping until it has, and the parent goes on meanwhile (a close
 * right after fork() freed the slot of the connection the child holds). */
void shm_stat_fork_lock(int take) {
  if (take) {
    shm_lock(&st_lock);
    if (st_fd >= 0 && st_mapped) {
      st_snap = mmap(NULL, st_mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (st_snap == MAP_FAILED) st_snap = NULL;
      else memcpy(st_snap, st_base, st_mapped);
    }
  } else {
    if (st_snap) munmap(st_snap, st_mapped);
    st_snap = NULL;
    shm_unlock(&st_lock);
  }
}

/* Does the (private) table list any socket? */
static int holds_slots(void) {
  for (uint32_t i = 0; i < hdr()->nslots; i++)
    if (slot_at(i)->state != SHM_STAT_FREE) return 1;
  return 0;
}

void shm_stat_forked_child(void) {
  pthread_mutex_init(&st_lock, NULL);
  /* The child's totals count what it sets up itself, not its parent's. */
  memset(&shm_stats, 0, sizeof shm_stats);
  if (!st_base) return;
  detach_private();
  /* Sockets it holds from the parent are published at once (not at its next
   * set-up, which may never come): `shmshim stat` shows them with this process,
   * and their peers' rows name it. */
  if (!st_dead && st_mapped && holds_slots() && publish() == 0) copy_totals();
}

void shm_stat_human(char *b, size_t n, uint64_t v, const char *unit) {
  static const char prefix[] = "KMGTPE"; /* 2^64 < 20E */
  const char *sp = *unit ? " " : "";
  if (v < 10000) {
    snprintf(b, n, "%llu%s%s", (unsigned long long)v, sp, unit);
    return;
  }
  double d = (double)v;
  int u = -1;
  while (d >= 1000 && u < 5) {
    d /= 1000;
    u++;
  }
  snprintf(b, n, "%.1f%s%c%s", d, sp, prefix[u], unit);
}

void shm_stat_exit_summary(void) {
  if (shm_cfg.stats < 2 || !st_base || !st_mapped) return;
  struct shm_stat_hdr *h = hdr();
  uint64_t up = 0, plain = 0, tx = h->closed_tx, rx = h->closed_rx, kt = 0, kr = 0, sp = 0;
  for (uint32_t i = 0; i < h->nslots; i++) {
    struct shm_stat_slot *s = slot_at(i);
    if (s->state == SHM_STAT_FREE) continue;
    if (s->state == SHM_CONN_UPGRADED) up++;
    if (s->state == SHM_CONN_PLAIN) plain++;
    tx += s->tx_ring + s->tx_sock;
    rx += s->rx_ring + s->rx_sock;
    kt += s->kicks_tx;
    kr += s->kicks_rx;
    sp += s->spins_won;
  }
  char a[32], b[32], line[512];
  shm_stat_human(a, sizeof a, tx, "B");
  shm_stat_human(b, sizeof b, rx, "B");
  extern char *program_invocation_short_name;
  /* Bytes are those the shim carried (upgraded connections, and a client's bytes
   * before it learnt its peer was plain); plain connections' bytes go to libc. */
  int n = snprintf(line, sizeof line,
                   "shmshim[%d %s] summary: connections upgraded %lu (client %lu, server %lu), "
                   "plain %lu (client %lu, server %lu), open at exit %llu upgraded + %llu plain; "
                   "shim carried %s out, %s in; kicks sent %llu, received %llu; spins won %llu; "
                   "writers in fast mode %llu times\n",
                   (int)st_pid, program_invocation_short_name,
                   shm_stats.upgraded_client + shm_stats.upgraded_server, shm_stats.upgraded_client,
                   shm_stats.upgraded_server, shm_stats.plain_client + shm_stats.plain_server,
                   shm_stats.plain_client, shm_stats.plain_server, (unsigned long long)up,
                   (unsigned long long)plain, a, b, (unsigned long long)kt, (unsigned long long)kr,
                   (unsigned long long)sp, (unsigned long long)__atomic_load_n(&shm_wait_fast_runs, __ATOMIC_RELAXED));
  if (n <= 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  shm_log_raw(line, (size_t)n); /* where log lines go, with the same rules */
}

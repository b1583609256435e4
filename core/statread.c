/* Reading another process's statistics table: see statread.h for the rules. */
#include "statread.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

#define MEMFD_LINK "/memfd:" SHM_STAT_MEMFD_NAME " (deleted)"
#define MAX_CANDIDATES 8 /* memfds with our name tried per process */
#define MAX_TABLE ((size_t)SHM_STAT_HDR_SIZE + (size_t)SHM_STAT_MAX_SLOTS * sizeof(struct shm_stat_slot) + 4096)

static int fail(char *err, size_t n, int e, const char *fmt, ...) {
  if (err && n) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
  }
  errno = e;
  return -1;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A copy of slot i, consistent (same even seq before and after): 1; 0 if it kept
 * changing. */
static int copy_slot(const struct shm_stat_slot *src, struct shm_stat_slot *dst) {
  for (int tries = 0; tries < 64; tries++) {
    uint32_t s1 = __atomic_load_n(&src->seq, __ATOMIC_ACQUIRE);
    if (s1 & 1) continue;
    memcpy(dst, src, sizeof *dst);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&src->seq, __ATOMIC_RELAXED) == s1) return 1;
  }
  return 0;
}

static int addr_ok(struct shm_stat_addr *a, int family) {
  if (a->len == 0) return 1;
  if (a->len > sizeof a->sa || a->len < sizeof(sa_family_t)) return 0;
  sa_family_t f;
  memcpy(&f, a->sa, sizeof f);
  return f == family;
}

static int slot_ok(struct shm_stat_slot *s) {
  if (s->state < 1 || s->state > 4 || s->role < 1 || s->role > 2 || s->why > SHM_WHY_MAX || s->tracked > 1)
    return 0;
  if (s->family != AF_INET && s->family != AF_INET6 && s->family != AF_UNIX) return 0;
  if (s->ring_size && (s->ring_size < SHM_RING_MIN || s->ring_size > SHM_RING_MAX ||
                       (s->ring_size & (s->ring_size - 1))))
    return 0;
  if (s->fd < 0) return 0;
  /* An address that does not match the family is dropped, not trusted. */
  if (!addr_ok(&s->local, s->family)) s->local.len = 0;
  if (!addr_ok(&s->peer, s->family)) s->peer.len = 0;
  return 1;
}

int shm_statread_parse(const void *map, size_t size, int pid, shm_statread_alive_fn alive, void *arg,
                       struct shm_statread_proc *out, char *err, size_t errlen) {
  out->nconns = 0;
  out->conns = NULL;
  out->invalid = out->unstable = out->stale = 0;
  if (size < SHM_STAT_HDR_SIZE) return fail(err, errlen, EPROTO, "table of %zu bytes is too small", size);
  struct shm_stat_hdr h;
  memcpy(&h, map, sizeof h);
  if (h.magic == 0) return fail(err, errlen, ENOENT, "table not initialised yet");
  if (h.magic != SHM_STAT_MAGIC) return fail(err, errlen, EPROTO, "bad magic %#llx", (unsigned long long)h.magic);
  if (h.version != SHM_STAT_VERSION)
    return fail(err, errlen, EPROTONOSUPPORT, "table version %u, this reader knows %u", h.version,
                SHM_STAT_VERSION);
  if (h.hdr_size != SHM_STAT_HDR_SIZE || h.slot_size != sizeof(struct shm_stat_slot))
    return fail(err, errlen, EPROTO, "bad geometry: header %u, slot %u", h.hdr_size, h.slot_size);
  if (h.nslots > SHM_STAT_MAX_SLOTS) return fail(err, errlen, EPROTO, "bad slot count %u", h.nslots);
  if (h.pid != pid) return fail(err, errlen, EPROTO, "table belongs to pid %d, found in pid %d", h.pid, pid);
  /* The table may have grown since we mapped it: read what we have. */
  uint32_t n = h.nslots, fit = (uint32_t)((size - SHM_STAT_HDR_SIZE) / sizeof(struct shm_stat_slot));
  if (n > fit) n = fit;
  out->h = h;
  out->h.nslots = n;
  /* Memory grows with the slots that name a live socket of the process, not with
   * what the table claims: a hostile table of 65,536 slots costs one pass. */
  int cap = 0;
  const struct shm_stat_slot *slots = (const void *)((const char *)map + SHM_STAT_HDR_SIZE);
  for (uint32_t i = 0; i < n; i++) {
    struct shm_stat_slot tmp;
    if (!copy_slot(&slots[i], &tmp)) {
      out->unstable++;
      continue;
    }
    if (tmp.state == SHM_STAT_FREE) continue;
    if (!slot_ok(&tmp)) {
      out->invalid++;
      continue;
    }
    int fd = alive(tmp.ino, arg);
    if (fd == -2) { /* a second slot for a socket already shown: forged or broken */
      out->invalid++;
      continue;
    }
    if (fd < 0) {
      out->stale++;
      continue;
    }
    if (out->nconns == cap) {
      int nc = cap ? cap * 2 : 16;
      void *ne = realloc(out->conns, (size_t)nc * sizeof *out->conns);
      if (!ne) {
        free(out->conns);
        out->conns = NULL;
        out->nconns = 0;
        return fail(err, errlen, ENOMEM, "out of memory");
      }
      out->conns = ne;
      cap = nc;
    }
    out->conns[out->nconns].s = tmp;
    out->conns[out->nconns].fd = fd;
    out->nconns++;
  }
  return 0;
}

/* The process's sockets, by inode, from its /proc/PID/fd links: sorted, so that
 * each slot costs a binary search; each socket is claimed by one slot at most. */
struct sockmap {
  size_t n, cap;
  struct sock_ent {
    uint32_t ino;
    int fd;
    int claimed;
  } *e;
};

static int cmp_sock(const void *a, const void *b) {
  const struct sock_ent *x = a, *y = b;
  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static int sockmap_alive(uint32_t ino, void *arg) {
  struct sockmap *m = arg;
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (m->e[mid].ino < ino) lo = mid + 1;
    else hi = mid;
  }
  if (lo == m->n || m->e[lo].ino != ino) return -1;
  if (m->e[lo].claimed) return -2;
  m->e[lo].claimed = 1;
  return m->e[lo].fd;
}

static void sockmap_unclaim(struct sockmap *m) {
  for (size_t i = 0; i < m->n; i++) m->e[i].claimed = 0;
}

static void read_comm(int pid, char *buf, size_t n) {
  char p[64];
  snprintf(p, sizeof p, "/proc/%d/comm", pid);
  buf[0] = '\0';
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t k = read(fd, buf, n - 1);
  close(fd);
  if (k < 0) k = 0;
  if (k > 0 && buf[k - 1] == '\n') k--;
  buf[k] = '\0';
  for (ssize_t i = 0; i < k; i++) /* the program chooses its name: print it safely */
    if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e || buf[i] == '"' || buf[i] == '\\')
      buf[i] = '?';
}

/* What the process's own user may have planted: a table in a memfd created by
 * another user (sent to it, say, through a unix socket) is not its own. Root's
 * are accepted (root is not an adversary here), as are those of each of its
 * uids (real, effective, saved, file system: a daemon that dropped privileges
 * after its first connection). */
struct owner {
  int n;
  uid_t uid[4];
};

static void read_owner(int pid, struct owner *o) {
  char p[64], line[256];
  o->n = 0;
  snprintf(p, sizeof p, "/proc/%d/status", pid);
  FILE *f = fopen(p, "re");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    unsigned long u[4];
    if (sscanf(line, "Uid: %lu %lu %lu %lu", &u[0], &u[1], &u[2], &u[3]) == 4) {
      for (int i = 0; i < 4; i++) o->uid[i] = (uid_t)u[i];
      o->n = 4;
      break;
    }
  }
  fclose(f);
}

static int owner_ok(const struct owner *o, uid_t u) {
  if (u == 0) return 1;
  for (int i = 0; i < o->n; i++)
    if (o->uid[i] == u) return 1;
  return 0;
}

/* The device of memfds (the kernel's internal tmpfs): a table must live there. */
static dev_t memfd_dev(void) {
  static dev_t dev;
  static int known;
  if (!known) {
    int f = (int)syscall(SYS_memfd_create, "shmshim-probe", MFD_CLOEXEC);
    struct stat st;
    if (f >= 0 && fstat(f, &st) == 0) {
      dev = st.st_dev;
      known = 1;
    }
    if (f >= 0) close(f);
  }
  return known ? dev : (dev_t)-1;
}

/* The process's descriptor `fd`, taken without opening anything on its behalf:
 * the same open file through pidfd_getfd, or, where that is not available or not
 * permitted (Yama's ptrace_scope), an O_PATH handle (which opens nothing: no FIFO
 * or device is ever opened) that must be a regular file on the memfd device
 * before it is reopened read-only through our own /proc/self/fd. The process may
 * have swapped the descriptor since its link was listed: whatever it is now is
 * checked, never opened blindly with our credentials. -1 with errno and err. */
static int take_fd(int pid, int *pidfd, int fd, char *err, size_t errlen) {
  if (*pidfd == -2) {
    *pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (*pidfd < 0 && errno == ESRCH) return fail(err, errlen, ESRCH, "no such process");
  }
  if (*pidfd >= 0) {
    int f = (int)syscall(SYS_pidfd_getfd, *pidfd, fd, 0); /* close-on-exec */
    if (f >= 0) return f;
    if (errno == EBADF) return fail(err, errlen, EBADF, "fd %d: closed meanwhile", fd);
    if (errno == ESRCH) return fail(err, errlen, ESRCH, "no such process");
    /* ENOSYS, EPERM (ptrace policy): the O_PATH way below. */
  }
  char p[64];
  snprintf(p, sizeof p, "/proc/%d/fd/%d", pid, fd);
  int o = open(p, O_PATH | O_CLOEXEC);
  if (o < 0) return fail(err, errlen, errno, "%s: %s", p, strerror(errno));
  struct stat st;
  if (fstat(o, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != memfd_dev()) {
    close(o);
    return fail(err, errlen, EPROTO, "fd %d is not a memfd (swapped?): not opened", fd);
  }
  snprintf(p, sizeof p, "/proc/self/fd/%d", o);
  int f = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  int e = errno;
  close(o);
  if (f < 0) return fail(err, errlen, e, "fd %d: %s", fd, strerror(e));
  struct stat st2;
  if (fstat(f, &st2) < 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino) {
    close(f);
    return fail(err, errlen, EPROTO, "fd %d changed while opened", fd);
  }
  return f;
}

/* Maps one candidate read-only: 0 with map and size set, or -1 with errno and err. */
static int map_candidate(int pid, int *pidfd, const struct owner *own, int fd, const void **map, size_t *size,
                         char *err, size_t errlen) {
  int f = take_fd(pid, pidfd, fd, err, errlen);
  if (f < 0) return -1;
  struct stat st;
  int seals = fcntl(f, F_GET_SEALS);
  if (fstat(f, &st) < 0 || !S_ISREG(st.st_mode) || st.st_dev != memfd_dev()) {
    close(f);
    return fail(err, errlen, EPROTO, "fd %d is not a memfd", fd);
  }
  if (!owner_ok(own, st.st_uid)) {
    close(f);
    return fail(err, errlen, EPROTO, "fd %d: table created by uid %u, not by the process's user (planted?)", fd,
                (unsigned)st.st_uid);
  }
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
    close(f);
    return fail(err, errlen, EPROTO, "fd %d: table not sealed against shrinking", fd);
  }
  if (st.st_size < (off_t)SHM_STAT_HDR_SIZE || (size_t)st.st_size > MAX_TABLE) {
    close(f);
    return fail(err, errlen, EPROTO, "fd %d: table size %lld out of range", fd, (long long)st.st_size);
  }
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, f, 0);
  int e = errno;
  close(f);
  if (m == MAP_FAILED) return fail(err, errlen, e, "fd %d: mmap: %s", fd, strerror(e));
  *map = m;
  *size = (size_t)st.st_size;
  return 0;
}

int shm_statread_pid(int pid, struct shm_statread_proc *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->pid = pid;
  if (err && errlen) err[0] = '\0';
  char p[64];
  snprintf(p, sizeof p, "/proc/%d/fd", pid);
  DIR *d = opendir(p);
  if (!d) {
    int e = errno == ENOENT ? ESRCH : errno;
    return fail(err, errlen, e, "%s", e == ESRCH ? "no such process" : strerror(e));
  }
  struct sockmap sm = {0, 0, NULL};
  int cand[MAX_CANDIDATES], ncand = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    char *end;
    long fd = strtol(de->d_name, &end, 10);
    if (*end || end == de->d_name || fd < 0 || fd > 0x7fffffff) continue;
    char link[128];
    ssize_t k = readlinkat(dirfd(d), de->d_name, link, sizeof link - 1);
    if (k <= 0) continue;
    link[k] = '\0';
    unsigned long ino;
    if (sscanf(link, "socket:[%lu]", &ino) == 1) {
      if (sm.n == sm.cap) {
        size_t nc = sm.cap ? sm.cap * 2 : 64;
        void *ne = realloc(sm.e, nc * sizeof *sm.e);
        if (!ne) break;
        sm.e = ne;
        sm.cap = nc;
      }
      sm.e[sm.n].ino = (uint32_t)ino;
      sm.e[sm.n].fd = (int)fd;
      sm.e[sm.n].claimed = 0;
      sm.n++;
    } else if (!strcmp(link, MEMFD_LINK) && ncand < MAX_CANDIDATES) {
      cand[ncand++] = (int)fd;
    }
  }
  closedir(d);
  if (sm.n) qsort(sm.e, sm.n, sizeof *sm.e, cmp_sock);
  read_comm(pid, out->comm, sizeof out->comm);
  struct owner own;
  read_owner(pid, &own);
  int pidfd = -2;
  int rc = fail(err, errlen, ENOENT, "no statistics table (not shimmed, no connection yet, or SHMSHIM_STATS=0)");
  /* Several candidates: a fork child between fork and detaching, or an impostor.
   * The first table that passes every check and names this pid wins. */
  for (int i = 0; i < ncand; i++) {
    const void *map = NULL;
    size_t size = 0;
    if (map_candidate(pid, &pidfd, &own, cand[i], &map, &size, err, errlen) < 0) {
      rc = -1;
      if (errno == ESRCH) break;
      continue;
    }
    sockmap_unclaim(&sm);
    rc = shm_statread_parse(map, size, pid, sockmap_alive, &sm, out, err, errlen);
    int e = errno;
    munmap((void *)map, size);
    errno = e;
    if (rc == 0) break;
    shm_statread_free(out);
  }
  if (pidfd >= 0) close(pidfd);
  out->read_ns = now_ns();
  free(sm.e);
  return rc;
}

void shm_statread_free(struct shm_statread_proc *p) {
  free(p->conns);
  p->conns = NULL;
  p->nconns = 0;
}

int shm_statread_loaded(int pid) {
  char p[64], line[512];
  snprintf(p, sizeof p, "/proc/%d/maps", pid);
  FILE *f = fopen(p, "re");
  if (!f) return -1;
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, "/libshmshim") != NULL;
  fclose(f);
  return found;
}

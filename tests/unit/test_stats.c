/* Published statistics (core/stats.c) and their reader (core/statread.c), without
 * LD_PRELOAD: nothing exists before the first slot; the table is a hidden,
 * close-on-exec memfd; the reader shows exactly the live sockets with their
 * counts; untracked plain entries are reclaimed once their socket is gone; growth
 * keeps slot pointers valid; a fork child never writes the parent's table; and
 * hostile tables (bad header, bad slots, unsealed file, wrong pid) are refused or
 * filtered without reading outside the mapping. Tests run in order: the first one
 * needs a process that has not created a table yet. */
#include "testutil.h"

#include <dirent.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "config.h"
#include "conn.h"
#include "fdtab.h"
#include "stats.h"
#include "statread.h"

static uint32_t ino_of(int fd) {
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  return (uint32_t)st.st_ino;
}

/* Our stats memfds: how many, and the last one's number. */
static int stats_fds(int *last) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *de;
  while (d && (de = readdir(d))) {
    char link[128];
    ssize_t k = readlinkat(dirfd(d), de->d_name, link, sizeof link - 1);
    if (k <= 0) continue;
    link[k] = '\0';
    if (!strcmp(link, "/memfd:" SHM_STAT_MEMFD_NAME " (deleted)")) {
      n++;
      if (last) *last = atoi(de->d_name);
    }
  }
  if (d) closedir(d);
  return n;
}

static int sock(int *peer) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  if (peer) *peer = sv[1];
  else close(sv[1]);
  return sv[0];
}

static struct shm_statread_conn *find(struct shm_statread_proc *p, uint32_t ino) {
  for (int i = 0; i < p->nconns; i++)
    if (p->conns[i].s.ino == ino) return &p->conns[i];
  return NULL;
}

static void read_self(struct shm_statread_proc *p) {
  char err[256];
  int rc = shm_statread_pid(getpid(), p, err, sizeof err);
  if (rc != 0) fail_msg("reading our own table: %s", err);
}

static void test_lazy_hidden_cloexec(void **state) {
  (void)state;
  assert_int_equal(stats_fds(NULL), 0); /* nothing before the first connection */
  int fd = sock(NULL);
  struct shm_stat_slot *s = shm_stat_open(fd, ino_of(fd), SHM_CLIENT, AF_UNIX, SHM_CONN_PENDING);
  assert_ptr_not_equal(s, &shm_stat_sink);
  int mfd = -1;
  assert_int_equal(stats_fds(&mfd), 1);
  assert_true(fcntl(mfd, F_GETFD) & FD_CLOEXEC);
  assert_int_equal(shm_fd_kind(mfd), SHM_FD_INTERNAL);
  assert_true(mfd > fd); /* moved out of the application's low numbers */
  int seals = fcntl(mfd, F_GET_SEALS);
  assert_true(seals >= 0 && (seals & F_SEAL_SHRINK));
  shm_stat_close(s);
  close(fd);
  assert_int_equal(stats_fds(NULL), 1); /* one table, reused */
}

static void test_roundtrip(void **state) {
  (void)state;
  int peer, fd = sock(&peer);
  struct shm_stat_slot *s = shm_stat_open(fd, ino_of(fd), SHM_CLIENT, AF_UNIX, SHM_CONN_PENDING);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, "/run/test.sock");
  shm_stat_set_addr(s, NULL, 0, (struct sockaddr *)&sa, sizeof sa);
  shm_stat_set_state(s, SHM_CONN_UPGRADED, SHM_WHY_NONE, ino_of(peer), 1u << 16);
  SHM_STAT_ADD(s, tx_ring, 1000);
  SHM_STAT_ADD(s, tx_sock, 24);
  SHM_STAT_ADD(s, rx_ring, 77);
  SHM_STAT_ADD(s, kicks_tx, 3);
  SHM_STAT_ADD(s, kicks_rx, 4);
  SHM_STAT_ADD(s, spins_won, 5);
  struct shm_statread_proc p;
  read_self(&p);
  assert_int_equal(p.h.pid, getpid());
  struct shm_statread_conn *c = find(&p, ino_of(fd));
  assert_non_null(c);
  assert_int_equal(c->fd, fd);
  assert_int_equal(c->s.state, SHM_CONN_UPGRADED);
  assert_int_equal(c->s.role, SHM_CLIENT);
  assert_int_equal(c->s.peer_ino, ino_of(peer));
  assert_int_equal(c->s.ring_size, 1u << 16);
  assert_int_equal(c->s.tx_ring + c->s.tx_sock, 1024);
  assert_int_equal(c->s.rx_ring, 77);
  assert_int_equal(c->s.kicks_tx, 3);
  assert_int_equal(c->s.kicks_rx, 4);
  assert_int_equal(c->s.spins_won, 5);
  assert_int_equal(c->s.peer.len, sizeof sa);
  assert_string_equal((char *)c->s.peer.sa + offsetof(struct sockaddr_un, sun_path), "/run/test.sock");
  assert_int_equal(c->s.local.len, 0);
  uint64_t closed = p.h.closed, closed_tx = p.h.closed_tx;
  shm_statread_free(&p);

  /* The socket is closed but the record not yet: not shown (stale). */
  uint32_t ino = ino_of(fd);
  close(fd);
  read_self(&p);
  assert_null(find(&p, ino));
  assert_true(p.stale >= 1);
  shm_statread_free(&p);
  shm_stat_close(s);
  read_self(&p);
  assert_int_equal(p.h.closed, closed + 1);
  assert_int_equal(p.h.closed_tx, closed_tx + 1024);
  assert_int_equal(p.stale, 0);
  shm_statread_free(&p);
  close(peer);
}

static void test_plain_sweep_and_growth(void **state) {
  (void)state;
  enum { N = 200 };
  int keep = sock(NULL);
  struct shm_stat_slot *t = shm_stat_open(keep, ino_of(keep), SHM_SERVER, AF_UNIX, SHM_CONN_UPGRADED);
  int fds[N];
  for (int i = 0; i < N; i++) {
    fds[i] = sock(NULL);
    shm_stat_plain(fds[i], ino_of(fds[i]), SHM_SERVER, AF_UNIX, SHM_WHY_NOT_SHIMMED, 0, NULL, 0, NULL, 0);
  }
  /* The table grew behind the slot we hold: the pointer must still be good. */
  SHM_STAT_ADD(t, rx_ring, 4242);
  struct shm_statread_proc p;
  read_self(&p);
  uint32_t grown = p.h.nslots;
  assert_true(grown >= N + 1);
  int plain = 0;
  for (int i = 0; i < p.nconns; i++)
    if (p.conns[i].s.state == SHM_CONN_PLAIN && p.conns[i].s.why == SHM_WHY_NOT_SHIMMED && !p.conns[i].s.tracked)
      plain++;
  assert_int_equal(plain, N);
  assert_int_equal(find(&p, ino_of(keep))->s.rx_ring, 4242);
  shm_statread_free(&p);

  /* Their sockets go away; the next set-ups reclaim the slots instead of growing. */
  for (int i = 0; i < N; i++) close(fds[i]);
  read_self(&p);
  assert_int_equal(p.nconns, 1);
  assert_int_equal(p.stale, N);
  shm_statread_free(&p);
  for (int i = 0; i < N; i++) {
    fds[i] = sock(NULL);
    shm_stat_plain(fds[i], ino_of(fds[i]), SHM_SERVER, AF_UNIX, SHM_WHY_DISABLED, 0, NULL, 0, NULL, 0);
  }
  read_self(&p);
  assert_int_equal(p.h.nslots, grown);
  assert_int_equal(p.nconns, N + 1);
  assert_int_equal(p.stale, 0);
  shm_statread_free(&p);
  for (int i = 0; i < N; i++) close(fds[i]);
  shm_stat_close(t);
  close(keep);
}

/* Shared with the fork children: what they saw. */
struct forkres {
  uint32_t child_ino;
  uint64_t inherited_tx;
  int child_pid;
};
static struct forkres *fr;

static int raw_alive(uint32_t ino, void *arg) {
  (void)ino;
  (void)arg;
  return 0; /* show every slot, live or not */
}

/* Our own table as it is, including slots whose socket is not ours. */
static void read_raw(struct shm_statread_proc *p) {
  int mfd = -1;
  assert_int_equal(stats_fds(&mfd), 1);
  struct stat st;
  assert_int_equal(fstat(mfd, &st), 0);
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, mfd, 0);
  assert_true(m != MAP_FAILED);
  char err[256];
  assert_int_equal(shm_statread_parse(m, (size_t)st.st_size, getpid(), raw_alive, NULL, p, err, sizeof err), 0);
  munmap(m, (size_t)st.st_size);
}

static struct shm_stat_slot *inherited;
static int inherited_fd;

static void fork_child(void *arg) {
  int via_fork_hook = arg != NULL;
  if (via_fork_hook) {
    struct stat parent_table;
    int pfd = -1;
    TU_CHECK(stats_fds(&pfd) == 1 && fstat(pfd, &parent_table) == 0, "the parent's table is not inherited");
    shm_stat_forked_child(); /* what preload/process.c does */
    /* It holds a socket of the parent's: its own table is published at once. */
    int cfd = -1;
    struct stat child_table;
    TU_CHECK(stats_fds(&cfd) == 1 && fstat(cfd, &child_table) == 0, "the child has %d tables", stats_fds(NULL));
    TU_CHECK(child_table.st_ino != parent_table.st_ino, "the parent's table is still open in the child");
    SHM_STAT_ADD(inherited, tx_ring, 5); /* before the child's first set-up: its own table */
  } else {
    TU_CHECK(stats_fds(NULL) == 1, "daemon(3)-style child still has the parent's table fd");
  }
  int fd = sock(NULL);
  struct stat st;
  fstat(fd, &st);
  struct shm_stat_slot *s = shm_stat_open(fd, (uint32_t)st.st_ino, SHM_CLIENT, AF_UNIX, SHM_CONN_UPGRADED);
  TU_CHECK(s != &shm_stat_sink, "child got no slot");
  /* Without our fork() hook the child detaches at its first set-up (known limit:
   * counts of inherited connections before that land in the parent's table). */
  if (!via_fork_hook) SHM_STAT_ADD(inherited, tx_ring, 5);
  TU_CHECK(stats_fds(NULL) == 1, "child has %d tables", stats_fds(NULL));
  struct shm_statread_proc p;
  char err[256];
  TU_CHECK(shm_statread_pid(getpid(), &p, err, sizeof err) == 0, "child reads its table: %s", err);
  TU_CHECK(p.h.pid == getpid(), "child table pid %d", p.h.pid);
  struct shm_statread_conn *c = find(&p, (uint32_t)st.st_ino), *i = find(&p, ino_of(inherited_fd));
  TU_CHECK(c != NULL, "child's own connection missing");
  TU_CHECK(i != NULL, "inherited connection missing");
  fr->child_ino = (uint32_t)st.st_ino;
  fr->inherited_tx = i->s.tx_ring;
  fr->child_pid = getpid();
}

static void run_fork_case(int via_hook) {
  inherited_fd = sock(NULL);
  inherited = shm_stat_open(inherited_fd, ino_of(inherited_fd), SHM_SERVER, AF_UNIX, SHM_CONN_UPGRADED);
  SHM_STAT_ADD(inherited, tx_ring, 100);
  tu_shared_reset();
  memset(fr, 0, sizeof *fr);
  pid_t pid = tu_spawn(0, fork_child, via_hook ? (void *)1 : NULL, 20);
  int slot = 0;
  tu_reap(&pid, &slot, 1, 20);
  assert_int_equal(fr->inherited_tx, 5); /* the child counts from zero, in its own table */
  struct shm_statread_proc p;
  read_raw(&p);
  for (int i = 0; i < p.nconns; i++) assert_int_not_equal(p.conns[i].s.ino, fr->child_ino);
  shm_statread_free(&p);
  read_self(&p);
  assert_int_equal(find(&p, ino_of(inherited_fd))->s.tx_ring, 100);
  shm_statread_free(&p);
  shm_stat_close(inherited);
  close(inherited_fd);
}

static void test_fork_child_own_table(void **state) {
  (void)state;
  run_fork_case(1);
}

static void test_daemon_style_child(void **state) {
  (void)state;
  run_fork_case(0);
}

/* ---- hostile tables ---- */

#define NS 4
static unsigned char *table(void) {
  unsigned char *b = calloc(1, SHM_STAT_HDR_SIZE + NS * sizeof(struct shm_stat_slot));
  struct shm_stat_hdr *h = (void *)b;
  h->magic = SHM_STAT_MAGIC;
  h->version = SHM_STAT_VERSION;
  h->hdr_size = SHM_STAT_HDR_SIZE;
  h->slot_size = sizeof(struct shm_stat_slot);
  h->nslots = NS;
  h->pid = 1234;
  return b;
}
static struct shm_stat_slot *tslot(unsigned char *b, int i) {
  return (struct shm_stat_slot *)(b + SHM_STAT_HDR_SIZE) + i;
}
static void good_slot(struct shm_stat_slot *s, uint32_t ino) {
  memset(s, 0, sizeof *s);
  s->state = SHM_CONN_UPGRADED;
  s->role = SHM_SERVER;
  s->family = AF_INET;
  s->fd = 7;
  s->ino = ino;
  s->ring_size = 1u << 18;
}
static int alive_even(uint32_t ino, void *arg) {
  (void)arg;
  return ino % 2 == 0 ? 9 : -1;
}
static int parse(unsigned char *b, size_t size, int pid, struct shm_statread_proc *p) {
  char err[256];
  return shm_statread_parse(b, size, pid, alive_even, NULL, p, err, sizeof err);
}

static void test_hostile_headers(void **state) {
  (void)state;
  size_t size = SHM_STAT_HDR_SIZE + NS * sizeof(struct shm_stat_slot);
  struct shm_statread_proc p;
  unsigned char *b = table();
  assert_int_equal(parse(b, size, 1234, &p), 0);
  assert_int_equal(p.nconns, 0);
  shm_statread_free(&p);
  assert_int_equal(parse(b, SHM_STAT_HDR_SIZE - 1, 1234, &p), -1);
  assert_int_equal(errno, EPROTO);
  assert_int_equal(parse(b, size, 999, &p), -1); /* another process's table */
  assert_int_equal(errno, EPROTO);
  struct shm_stat_hdr *h = (void *)b;
#define BAD(field, value, err)                      \
  do {                                              \
    struct shm_stat_hdr saved = *h;                 \
    h->field = value;                               \
    assert_int_equal(parse(b, size, 1234, &p), -1); \
    assert_int_equal(errno, err);                   \
    *h = saved;                                     \
  } while (0)
  BAD(magic, 0, ENOENT);
  BAD(magic, 0x1234, EPROTO);
  BAD(version, 2, EPROTONOSUPPORT);
  BAD(hdr_size, 64, EPROTO);
  BAD(slot_size, 1, EPROTO);
  BAD(nslots, SHM_STAT_MAX_SLOTS + 1, EPROTO);
  /* A count larger than the mapping: read what is there, nothing beyond (ASan). */
  h->nslots = SHM_STAT_MAX_SLOTS;
  good_slot(tslot(b, NS - 1), 2);
  assert_int_equal(parse(b, size, 1234, &p), 0);
  assert_int_equal(p.h.nslots, NS);
  assert_int_equal(p.nconns, 1);
  shm_statread_free(&p);
  free(b);
}

static void test_hostile_slots(void **state) {
  (void)state;
  size_t size = SHM_STAT_HDR_SIZE + NS * sizeof(struct shm_stat_slot);
  unsigned char *b = table();
  struct shm_statread_proc p;
  struct shm_stat_slot *s0 = tslot(b, 0), *s1 = tslot(b, 1), *s2 = tslot(b, 2), *s3 = tslot(b, 3);
  good_slot(s0, 2);
  s0->local.len = 200; /* longer than the field: dropped, not trusted */
  s0->peer.len = sizeof(struct sockaddr_in);
  s0->peer.sa[0] = AF_UNIX; /* wrong family for the slot: dropped */
  good_slot(s1, 4);
  s1->state = 9;
  good_slot(s2, 6);
  s2->family = 99;
  good_slot(s3, 8);
  s3->ring_size = 3;
  assert_int_equal(parse(b, size, 1234, &p), 0);
  assert_int_equal(p.nconns, 1);
  assert_int_equal(p.invalid, 3);
  assert_int_equal(p.conns[0].fd, 9);
  assert_int_equal(p.conns[0].s.local.len, 0);
  assert_int_equal(p.conns[0].s.peer.len, 0);
  shm_statread_free(&p);

  good_slot(s1, 4);
  s1->role = 0;
  good_slot(s2, 6);
  s2->why = SHM_WHY_MAX + 1;
  good_slot(s3, 8);
  s3->seq = 1; /* forever "being written" */
  assert_int_equal(parse(b, size, 1234, &p), 0);
  assert_int_equal(p.nconns, 1);
  assert_int_equal(p.invalid, 2);
  assert_int_equal(p.unstable, 1);
  shm_statread_free(&p);

  good_slot(s1, 5); /* odd inode: the process no longer has that socket */
  good_slot(s2, 0);
  s2->state = SHM_STAT_FREE;
  s3->seq = 2;
  s3->fd = -5;
  assert_int_equal(parse(b, size, 1234, &p), 0);
  assert_int_equal(p.nconns, 1);
  assert_int_equal(p.stale, 1);
  assert_int_equal(p.invalid, 1);
  shm_statread_free(&p);
  free(b);
}

/* A process that names an unsealed memfd like ours: refused before mapping. */
static void impostor(void *arg) {
  (void)arg;
  shm_stat_forked_child();
  /* A child that holds sockets of its parent's publishes its own table at once:
   * closed here, so that only the impostor's is left. */
  for (int own; stats_fds(&own) > 0;) syscall(SYS_close, own);
  int fd = (int)syscall(SYS_memfd_create, SHM_STAT_MEMFD_NAME, 0);
  TU_CHECK(fd >= 0, "memfd_create");
  unsigned char *b = table();
  ((struct shm_stat_hdr *)b)->pid = getpid();
  TU_CHECK(write(fd, b, SHM_STAT_HDR_SIZE + NS * sizeof(struct shm_stat_slot)) > 0, "write");
  fr->child_pid = getpid();
  pause(); /* until the parent has looked */
}

static void test_hostile_files(void **state) {
  (void)state;
  tu_shared_reset();
  memset(fr, 0, sizeof *fr);
  pid_t pid = tu_spawn(0, impostor, NULL, 20);
  for (int i = 0; i < 2000 && !__atomic_load_n(&fr->child_pid, __ATOMIC_ACQUIRE); i++) usleep(1000);
  struct shm_statread_proc p;
  char err[256];
  int rc = shm_statread_pid(pid, &p, err, sizeof err), e = errno;
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  assert_int_equal(rc, -1);
  assert_int_equal(e, EPROTO);
  assert_non_null(strstr(err, "sealed"));
  /* Gone: no such process. A process without a table: ENOENT. */
  assert_int_equal(shm_statread_pid(pid, &p, err, sizeof err), -1);
  assert_int_equal(errno, ESRCH);
  assert_int_equal(shm_statread_pid(1, &p, err, sizeof err) == -1 && (errno == ENOENT || errno == EACCES), 1);
}

static void test_stats_off(void **state) {
  (void)state;
  int saved = shm_cfg.stats;
  shm_cfg.stats = 0;
  int fd = sock(NULL);
  assert_ptr_equal(shm_stat_open(fd, ino_of(fd), SHM_CLIENT, AF_UNIX, SHM_CONN_PENDING), &shm_stat_sink);
  shm_stat_plain(fd, ino_of(fd), SHM_SERVER, AF_UNIX, SHM_WHY_DISABLED, 0, NULL, 0, NULL, 0);
  shm_cfg.stats = saved;
  struct shm_statread_proc p;
  read_self(&p);
  assert_null(find(&p, ino_of(fd)));
  shm_statread_free(&p);
  close(fd);
}

/* A writer changing a slot's identity while a reader copies it: the reader never
 * sees a mixture (state and why always belong together). */
static int stop; /* atomic: the flipper thread polls it */
static struct shm_stat_slot *flip;
static void *flipper(void *arg) {
  (void)arg;
  for (unsigned i = 0; !__atomic_load_n(&stop, __ATOMIC_RELAXED) && i < 2000000; i++)
    shm_stat_set_state(flip, i & 1 ? SHM_CONN_PLAIN : SHM_CONN_UPGRADED,
                       i & 1 ? SHM_WHY_REFUSED : SHM_WHY_NONE, 0, 0);
  return NULL;
}

static void test_seqlock(void **state) {
  (void)state;
  int fd = sock(NULL);
  flip = shm_stat_open(fd, ino_of(fd), SHM_CLIENT, AF_UNIX, SHM_CONN_UPGRADED);
  __atomic_store_n(&stop, 0, __ATOMIC_RELAXED);
  pthread_t t;
  pthread_create(&t, NULL, flipper, NULL);
  int seen = 0;
  for (int i = 0; i < (TU_SANITIZED ? 50 : 300); i++) {
    struct shm_statread_proc p;
    read_self(&p);
    struct shm_statread_conn *c = find(&p, ino_of(fd));
    assert_int_equal(p.invalid, 0);
    if (c) {
      seen++;
      if (c->s.state == SHM_CONN_PLAIN) assert_int_equal(c->s.why, SHM_WHY_REFUSED);
      else assert_int_equal(c->s.why, SHM_WHY_NONE);
    }
    shm_statread_free(&p);
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
  pthread_join(t, NULL);
  assert_true(seen > 0);
  shm_stat_close(flip);
  close(fd);
}

static void test_config_check(void **state) {
  (void)state;
  struct shm_config saved = shm_cfg;
  assert_int_equal(shm_config_check("RING_SIZE", "1M"), 0);
  assert_int_equal(shm_config_check("RING_SIZE", "3M"), -1);
  assert_int_equal(shm_config_check("RING_SIZE", "128M"), -1);
  assert_int_equal(shm_config_check("SPIN_US", "0"), 0);
  assert_int_equal(shm_config_check("SPIN_US", "x"), -1);
  assert_int_equal(shm_config_check("PORTS_ALLOW", "6379,8000-8100"), 0);
  assert_int_equal(shm_config_check("PORTS_ALLOW", "70000"), -1);
  assert_int_equal(shm_config_check("LOG", "info"), 0);
  assert_int_equal(shm_config_check("LOG", "loud"), -1);
  assert_int_equal(shm_config_check("STATS", "2"), 0);
  assert_int_equal(shm_config_check("STATS", "3"), -1);
  assert_int_equal(shm_config_check("NOPE", "1"), -2);
  assert_true(memcmp(&saved, &shm_cfg, sizeof saved) == 0); /* checking changes nothing */
}

/* The one size formatter: plain below 10,000, then powers of 1000 up to E. */
static void test_human(void **st) {
  char b[32];
  shm_stat_human(b, sizeof b, 9999, "B");
  assert_string_equal(b, "9999 B");
  shm_stat_human(b, sizeof b, 1500000, "B");
  assert_string_equal(b, "1.5 MB");
  shm_stat_human(b, sizeof b, 9999, "");
  assert_string_equal(b, "9999");
  shm_stat_human(b, sizeof b, 12345, "");
  assert_string_equal(b, "12.3K");
  shm_stat_human(b, sizeof b, UINT64_MAX, "B");
  assert_string_equal(b, "18.4 EB");
}

int main(void) {
  fr = mmap(NULL, sizeof *fr, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(fr != MAP_FAILED);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lazy_hidden_cloexec),
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_plain_sweep_and_growth),
      cmocka_unit_test(test_fork_child_own_table),
      cmocka_unit_test(test_daemon_style_child),
      cmocka_unit_test(test_hostile_headers),
      cmocka_unit_test(test_hostile_slots),
      cmocka_unit_test(test_hostile_files),
      cmocka_unit_test(test_stats_off),
      cmocka_unit_test(test_seqlock),
      cmocka_unit_test(test_config_check),
      cmocka_unit_test(test_human),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* ring_bench: the raw shared-memory ring against AF_UNIX and loopback TCP, side by
 * side in one run.
 *
 *   1. ping-pong: the client (this process) sends N bytes, the server (a forked
 *      child) reads all N and echoes them, the client reads all N; median and p99
 *      round-trip time per transport.
 *   2. streaming: the child writes a fixed number of bytes in W-byte writes, this
 *      process reads them with large reads; GB/s per transport.
 *
 * Transports: an AF_UNIX stream socketpair, TCP over 127.0.0.1 (TCP_NODELAY), and a
 * segment from shm_seg_create() shared across fork() with one ring per direction
 * (C2S: client produces, S2C: server produces). The ring runs in two flavours:
 * "spin+sleep" (shm_ring_wait_data/space with an adaptive shm_spin budget, and
 * shm_ring_notify_* after every publish/consume, the way a blocking user waits) and
 * "pure spin" (both sides busy-poll the indices and never sleep, no notify: the
 * ceiling of the data structure itself).
 *
 * Every cell is interleaved across transports (size -> repetition -> transport), is
 * bounded in iterations and time, and runs under a 60 s alarm() watchdog. Each
 * message carries its sequence number in its first and last 8 bytes (checked on
 * every iteration); the first and the last message of each cell use a second
 * pattern and are checksummed in full by the receiver (server and client), and the
 * streaming consumer checks the first, the last and every 1024th read byte for
 * byte. Any mismatch ends the run with exit status 4.
 *
 * Also reported: how often the spin+sleep ring waiters lost their spin and slept, a
 * core-to-core cache-line probe at every phase boundary (on a VM the host may move
 * the vCPUs between, e.g., different CCDs and SMT siblings mid-run, which changes
 * the ring numbers several-fold), and CPU time used by other processes.
 *
 * Exit status: 0 ok, 1 error, 2 usage, 3 watchdog, 4 data verification failed. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#include "config.h"
#include "ring.h"
#include "segment.h"
#include "wait.h"

/* ------------------------------------------------------------------ settings */

enum { T_UNIX, T_TCP, T_RING, T_RING_PURE, T_N };
static const char *const tname[T_N] = {"AF_UNIX", "TCP", "ring (spin+sleep)", "ring (pure spin)"};
static const char *const tkey[T_N] = {"unix", "tcp", "ring", "ring_spin"};

#define MAXSIZES 32
#define WATCHDOG_S 60
#define WAIT_SLICE_NS (100 * 1000 * 1000LL)   /* ring waits time out to check the peer */
#define STUCK_NS (20ull * 1000 * 1000 * 1000) /* a single transfer stalled this long: fail */
#define STREAM_MAX_BYTES (16ull << 30)
#define PP_MIN_SAMPLES 10
#define PP_WARM_MAX 2000
#define STAMP_LAST (1ull << 63)
#define STAMP_TAILX 0x5a5aa5a5c3c33c3cull

static struct opts {
  uint32_t ring_size;
  size_t read_size; /* streaming consumer read size */
  uint64_t spin_us;
  int quick;
  int no_pin;
  int reps;
  int tmask; /* transports to run */
  int only;  /* 0 both tests, 1 ping-pong only, 2 streaming only */
  uint64_t time_ms; /* cell time target override (0: the mode's default) */
  const char *csv;
  size_t pp_sizes[MAXSIZES];
  int n_pp;
  size_t st_sizes[MAXSIZES];
  int n_st;
  uint64_t pp_target_ns, pp_hard_ns, st_target_ns;
  size_t pp_max_samples;
} O;

/* ------------------------------------------------------------------ process state */

static int g_is_child;
static const char *g_role = "client";
static pid_t g_children[T_N];
static char g_cell[160] = "setup"; /* what the watchdog reports */
static int g_pin_client = -1, g_pin_server = -1;

#define MAXPROBES (2 * MAXSIZES + 2)
static double g_probe[MAXPROBES]; /* placement probe results, ns (-1: not run) */
static void fmt_probe(int k, char *buf, size_t len);

static unsigned char *g_pat0, *g_pat1; /* message patterns, identical in every process */
static size_t g_pat_len;

static void kill_children(void) {
  if (g_is_child) return;
  for (int t = 0; t < T_N; t++)
    if (g_children[t] > 0) kill(g_children[t], SIGKILL);
}

static void die_code(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_code(int code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "ring_bench [%s, cell: %s]: %s\n", g_role, g_cell, buf);
  if (code == 4) fprintf(stderr, "ring_bench: DATA VERIFICATION FAILED\n");
  kill_children();
  _exit(code);
}
#define die(...) die_code(1, __VA_ARGS__)
#define die_verify(...) die_code(4, __VA_ARGS__)

/* One write(2), so that the message is not interleaved with the other process's. */
static void on_alarm(int sig) {
  (void)sig;
  char m[512];
  size_t n = cat(m, 0, sizeof m, "\nring_bench [");
  n = cat(m, n, sizeof m, g_role);
  n = cat(m, n, sizeof m, "]: WATCHDOG: a cell made no progress for more than 60 s: '");
  n = cat(m, n, sizeof m, g_cell);
  n = cat(m, n, sizeof m, "' - killing the run\n");
  ssize_t rc = write(2, m, n);
  (void)rc;
  kill_children();
  _exit(3);
}

static void *xmalloc(size_t n) {
  void *p = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
  if (!p) die("out of memory (%zu bytes)", n);
  memset(p, 0, n); /* fault the pages in before timing */
  return p;
}

/* ------------------------------------------------------------------ channels */

struct chan {
  int kind;
  int fd;
  struct shm_ring tx, rx;
  struct shm_spin sp_data, sp_space;
  pid_t peer; /* child pid (client side) or parent pid (server side) */
  /* ring (spin+sleep): waits this cell, and how many of them lost the spin and slept */
  uint64_t waits, sleeps;
};

/* Per-cell counters of one side's ring waits. */
struct wstat {
  uint64_t waits, sleeps;
  uint32_t budget_ns; /* data-wait spin budget at the end of the cell */
};

static void peer_check(struct chan *c) {
  if (g_is_child) {
    if (getppid() != c->peer) die("the client process went away");
    return;
  }
  int st;
  pid_t r = waitpid(c->peer, &st, WNOHANG);
  if (r == c->peer) {
    for (int t = 0; t < T_N; t++)
      if (g_children[t] == r) g_children[t] = 0;
    if (WIFEXITED(st)) die_code(WEXITSTATUS(st) == 4 ? 4 : 1, "server process exited with status %d", WEXITSTATUS(st));
    die("server process killed by signal %d", WTERMSIG(st));
  }
}

/* Blocking wait on a ring in slices, so that a dead or stuck peer is noticed. */
static void ring_wait(struct chan *c, int space) {
  uint64_t start = 0;
  struct shm_spin *sp = space ? &c->sp_space : &c->sp_data;
  uint32_t before = sp->budget_ns, lowest = sp->max_ns / 16 ? sp->max_ns / 16 : 1;
  int first = 1;
  for (;;) {
    int rc = space ? shm_ring_wait_space(&c->tx, sp, WAIT_SLICE_NS) : shm_ring_wait_data(&c->rx, sp, WAIT_SLICE_NS);
    if (first) {
      /* shm_spin doubles the budget after a won spin and halves it (down to max/16)
       * after a lost one, after which the waiter sleeps on the futex: infer which
       * happened without adding a clock read to the wake-up path. */
      uint32_t after = sp->budget_ns;
      c->waits++;
      if (sp->max_ns == 0 || after < before || (after == lowest && before == lowest && after != sp->max_ns))
        c->sleeps++;
      first = 0;
    }
    if (rc == 0) return;
    if (errno != ETIMEDOUT && errno != EINTR) die("shm_ring_wait_%s: %s", space ? "space" : "data", strerror(errno));
    peer_check(c);
    uint64_t t = now_ns();
    if (!start) start = t;
    else if (t - start > STUCK_NS) die("ring wait for %s stuck for 20 s", space ? "space" : "data");
  }
}

/* Pure spin: poll the index with pause until ready (or an error to report). */
static void ring_poll(struct chan *c, int space) {
  uint64_t start = 0;
  for (uint32_t k = 1;; k++) {
    ssize_t a = space ? shm_ring_writable(&c->tx, 1) : shm_ring_readable(&c->rx, 1);
    if (a != 0) return;
    shm_cpu_relax();
    if ((k & 0xfffff) == 0) {
      peer_check(c);
      uint64_t t = now_ns();
      if (!start) start = t;
      else if (t - start > STUCK_NS) die("ring poll for %s stuck for 20 s", space ? "space" : "data");
    }
  }
}

static void send_all(struct chan *c, const unsigned char *p, size_t n) {
  if (c->kind == T_UNIX || c->kind == T_TCP) {
    while (n) {
      ssize_t w = write(c->fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        die("%s write: %s", tname[c->kind], strerror(errno));
      }
      p += w;
      n -= (size_t)w;
    }
    return;
  }
  int pure = c->kind == T_RING_PURE;
  while (n) {
    ssize_t w = shm_ring_write(&c->tx, p, n);
    if (w > 0) {
      if (!pure) shm_ring_notify_data(&c->tx);
      p += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0) die("shm_ring_write: %s", strerror(errno));
    if (pure) ring_poll(c, 1);
    else ring_wait(c, 1);
  }
}

/* Reads between 1 and n bytes, blocking until at least one is there. */
static size_t recv_some(struct chan *c, unsigned char *p, size_t n) {
  if (c->kind == T_UNIX || c->kind == T_TCP) {
    for (;;) {
      ssize_t r = read(c->fd, p, n);
      if (r > 0) return (size_t)r;
      if (r == 0) {
        if (!g_is_child) peer_check(c);
        die("%s read: unexpected EOF", tname[c->kind]);
      }
      if (errno != EINTR) die("%s read: %s", tname[c->kind], strerror(errno));
    }
  }
  int pure = c->kind == T_RING_PURE;
  for (;;) {
    ssize_t r = shm_ring_read(&c->rx, p, n, 0);
    if (r > 0) {
      if (!pure) shm_ring_notify_space(&c->rx);
      return (size_t)r;
    }
    if (r == 0) die("ring read: unexpected EOF");
    if (errno != EAGAIN) die("shm_ring_read: %s", strerror(errno));
    if (pure) ring_poll(c, 0);
    else ring_wait(c, 0);
  }
}

static void recv_all(struct chan *c, unsigned char *p, size_t n) {
  while (n) {
    size_t r = recv_some(c, p, n);
    p += r;
    n -= r;
  }
}

/* ------------------------------------------------------------------ control */

enum { OP_PP = 1, OP_STREAM = 2, OP_QUIT = 3 };
struct cmd {
  uint32_t op;
  uint32_t pad;
  uint64_t size;
  uint64_t total;
};
struct ack {
  uint64_t count;
  struct wstat w; /* the server's ring waits during the cell */
};

static int read_full(int fd, void *buf, size_t n) {
  unsigned char *p = buf;
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 1;
}

static void write_full(int fd, const void *buf, size_t n) {
  const unsigned char *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("control pipe write: %s", strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
}

struct peer {
  int used;
  struct chan ch;
  int cmd_fd, ack_fd;
  struct shm_seg seg;
};
static struct peer P[T_N];

/* ------------------------------------------------------------------ server side */

static uint64_t server_pingpong(struct chan *c, size_t n, unsigned char *rb) {
  uint64_t ref = csum(g_pat1 + 8, n - 16);
  for (uint64_t i = 0;; i++) {
    recv_all(c, rb, n);
    uint64_t h = ld64(rb), tl = ld64(rb + n - 8);
    if ((h & ~STAMP_LAST) != i || tl != (h ^ STAMP_TAILX))
      die_verify("server: message %llu of %zu bytes has stamps %#llx/%#llx", (unsigned long long)i, n,
                 (unsigned long long)h, (unsigned long long)tl);
    int last = (h & STAMP_LAST) != 0;
    if ((i == 0 || last) && csum(rb + 8, n - 16) != ref)
      die_verify("server: checksum mismatch in message %llu of %zu bytes", (unsigned long long)i, n);
    send_all(c, rb, n);
    if (last) return i + 1;
  }
}

static uint64_t server_stream(struct chan *c, size_t w, uint64_t total, unsigned char *wb) {
  memcpy(wb, g_pat0, w);
  uint64_t sent = 0, k = 0;
  for (; sent < total; k++) {
    size_t len = total - sent < w ? (size_t)(total - sent) : w;
    st64(wb, k);
    send_all(c, wb, len);
    sent += len;
  }
  return k;
}

static void child_main(struct peer *pe, int cmd_fd, int ack_fd) {
  struct chan *c = &pe->ch;
  unsigned char *buf = xmalloc(g_pat_len);
  for (;;) {
    struct cmd cm;
    int r = read_full(cmd_fd, &cm, sizeof cm);
    if (r <= 0) _exit(r == 0 ? 0 : 1);
    snprintf(g_cell, sizeof g_cell, "%s op %u size %llu", tname[c->kind], cm.op, (unsigned long long)cm.size);
    alarm(WATCHDOG_S + 5); /* the client's watchdog should fire first and name the cell */
    struct ack a = {0};
    c->waits = c->sleeps = 0;
    if (cm.op == OP_PP) a.count = server_pingpong(c, cm.size, buf);
    else if (cm.op == OP_STREAM) a.count = server_stream(c, cm.size, cm.total, buf);
    else _exit(0);
    a.w.waits = c->waits;
    a.w.sleeps = c->sleeps;
    a.w.budget_ns = cm.op == OP_STREAM ? c->sp_space.budget_ns : c->sp_data.budget_ns;
    alarm(0);
    write_full(ack_fd, &a, sizeof a);
  }
}

/* ------------------------------------------------------------------ setup */

static void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  if (sched_setaffinity(0, sizeof s, &s) < 0) die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

static void set_nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY: %s", strerror(errno));
}

/* Creates the connection for transport t, forks its server. */
static void start_peer(int t) {
  struct peer *pe = &P[t];
  int cfd = -1, sfd = -1;
  pe->seg.base = NULL;
  pe->seg.fd = -1;
  if (t == T_UNIX) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair: %s", strerror(errno));
    cfd = sv[0];
    sfd = sv[1];
  } else if (t == T_TCP) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
      die("tcp listen on 127.0.0.1: %s", strerror(errno));
    cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof a) < 0) die("tcp connect: %s", strerror(errno));
    sfd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (sfd < 0) die("accept: %s", strerror(errno));
    close(l);
    set_nodelay(cfd);
    set_nodelay(sfd);
  } else {
    if (shm_seg_create(O.ring_size, &pe->seg) < 0)
      die("shm_seg_create(%u): %s", O.ring_size, strerror(errno));
  }
  int cp[2], ap[2];
  if (pipe2(cp, O_CLOEXEC) < 0 || pipe2(ap, O_CLOEXEC) < 0) die("pipe: %s", strerror(errno));
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    g_is_child = 1;
    g_role = "server";
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    for (int u = 0; u < T_N; u++) {
      if (u == t || !P[u].used) continue;
      if (P[u].ch.fd >= 0) close(P[u].ch.fd);
      close(P[u].cmd_fd);
      close(P[u].ack_fd);
    }
    memset(g_children, 0, sizeof g_children);
    pin_to(g_pin_server);
    close(cp[1]);
    close(ap[0]);
    if (cfd >= 0) close(cfd);
    struct chan *c = &pe->ch;
    c->kind = t;
    c->fd = sfd;
    c->peer = parent;
    if (t == T_RING || t == T_RING_PURE) {
      shm_seg_close_fd(&pe->seg);
      shm_seg_ring(&pe->seg, SHM_DIR_C2S, SHM_RING_CONSUMER, &c->rx);
      shm_seg_ring(&pe->seg, SHM_DIR_S2C, SHM_RING_PRODUCER, &c->tx);
      shm_spin_init(&c->sp_data, O.spin_us);
      shm_spin_init(&c->sp_space, O.spin_us);
    }
    child_main(pe, cp[0], ap[1]);
    _exit(0);
  }
  g_children[t] = pid;
  close(cp[0]);
  close(ap[1]);
  if (sfd >= 0) close(sfd);
  pe->used = 1;
  pe->cmd_fd = cp[1];
  pe->ack_fd = ap[0];
  struct chan *c = &pe->ch;
  c->kind = t;
  c->fd = cfd;
  c->peer = pid;
  if (t == T_RING || t == T_RING_PURE) {
    shm_seg_close_fd(&pe->seg);
    shm_seg_ring(&pe->seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &c->tx);
    shm_seg_ring(&pe->seg, SHM_DIR_S2C, SHM_RING_CONSUMER, &c->rx);
    shm_spin_init(&c->sp_data, O.spin_us);
    shm_spin_init(&c->sp_space, O.spin_us);
  }
}

static void send_cmd(struct peer *pe, uint32_t op, uint64_t size, uint64_t total) {
  struct cmd cm = {.op = op, .size = size, .total = total};
  write_full(pe->cmd_fd, &cm, sizeof cm);
}

static struct ack get_ack(struct peer *pe) {
  struct ack a;
  int r = read_full(pe->ack_fd, &a, sizeof a);
  if (r <= 0) {
    peer_check(&pe->ch);
    die("server for %s closed its control pipe", tname[pe->ch.kind]);
  }
  return a;
}

/* ------------------------------------------------------------------ client cells */

/* One ping-pong cell: appends round-trip samples (µs) to out; returns the count. */
static size_t client_pingpong(struct peer *pe, size_t n, float *out, unsigned char *sb0, unsigned char *sb1,
                              unsigned char *rb, struct wstat ws[2]) {
  struct chan *c = &pe->ch;
  c->waits = c->sleeps = 0;
  memcpy(sb0, g_pat0, n);
  memcpy(sb1, g_pat1, n);
  uint64_t ref = csum(g_pat1 + 8, n - 16);
  send_cmd(pe, OP_PP, n, 0);
  uint64_t warm_ns = O.pp_target_ns / 10;
  uint64_t t0 = now_ns(), t = t0, mstart = 0;
  int measuring = 0;
  size_t m = 0;
  uint64_t i;
  for (i = 0;; i++) {
    if (!measuring && i > 0 && (i >= PP_WARM_MAX || t - t0 >= warm_ns)) {
      measuring = 1;
      mstart = t;
    }
    int last = 0;
    if (measuring) {
      uint64_t el = t - mstart;
      if (m + 1 >= O.pp_max_samples || (el >= O.pp_target_ns && m >= PP_MIN_SAMPLES) ||
          (el >= O.pp_hard_ns && m >= 2))
        last = 1;
    }
    unsigned char *sb = (i == 0 || last) ? sb1 : sb0;
    uint64_t h = i | (last ? STAMP_LAST : 0);
    st64(sb, h);
    st64(sb + n - 8, h ^ STAMP_TAILX);
    send_all(c, sb, n);
    recv_all(c, rb, n);
    uint64_t t2 = now_ns();
    if (ld64(rb) != h || ld64(rb + n - 8) != (h ^ STAMP_TAILX))
      die_verify("client: echo %llu of %zu bytes has stamps %#llx/%#llx, sent %#llx", (unsigned long long)i, n,
                 (unsigned long long)ld64(rb), (unsigned long long)ld64(rb + n - 8), (unsigned long long)h);
    if (i == 0 || last) {
      if (csum(rb + 8, n - 16) != ref)
        die_verify("client: checksum mismatch in echo %llu of %zu bytes", (unsigned long long)i, n);
    }
    if (last) break;
    if (measuring) out[m++] = (float)((double)(t2 - t) / 1000.0);
    t = i == 0 ? now_ns() : t2;
  }
  struct ack a = get_ack(pe);
  if (a.count != i + 1)
    die_verify("server echoed %llu messages, client sent %llu", (unsigned long long)a.count,
               (unsigned long long)(i + 1));
  ws[0].waits += c->waits;
  ws[0].sleeps += c->sleeps;
  ws[0].budget_ns = c->sp_data.budget_ns;
  ws[1].waits += a.w.waits;
  ws[1].sleeps += a.w.sleeps;
  ws[1].budget_ns = a.w.budget_ns;
  return m;
}

/* Checks bytes [off, off+len) of the stream: block k = k's 8-byte stamp, then pattern. */
static void verify_stream(const unsigned char *p, size_t len, uint64_t off, size_t w) {
  while (len) {
    uint64_t k = off / w;
    size_t in = (size_t)(off % w), take = w - in < len ? w - in : len;
    unsigned char stamp[8];
    st64(stamp, k);
    for (size_t j = in; j < in + take; j++) {
      unsigned char want = j < 8 ? stamp[j] : g_pat0[j];
      if (j >= 8) {
        /* The rest of the block in one memcmp. */
        if (memcmp(p + (j - in), g_pat0 + j, in + take - j) != 0) goto bad;
        break;
      }
      if (p[j - in] != want) goto bad;
    }
    p += take;
    len -= take;
    off += take;
  }
  return;
bad:
  die_verify("client: stream byte mismatch in block at offset %llu (write size %zu)", (unsigned long long)off, w);
}

/* One streaming run of `total` bytes; returns seconds. */
static double client_stream(struct peer *pe, size_t w, uint64_t total, unsigned char *rb, struct wstat ws[2]) {
  struct chan *c = &pe->ch;
  c->waits = c->sleeps = 0;
  uint64_t t0 = now_ns(), t1 = 0;
  send_cmd(pe, OP_STREAM, w, total);
  uint64_t got = 0, nreads = 0;
  while (got < total) {
    uint64_t left = total - got;
    size_t cap = left < O.read_size ? (size_t)left : O.read_size;
    size_t r = recv_some(c, rb, cap);
    nreads++;
    int fin = got + r == total;
    if (fin) t1 = now_ns();
    if (nreads == 1 || fin || (nreads & 1023) == 0) verify_stream(rb, r, got, w);
    got += r;
  }
  struct ack a = get_ack(pe);
  if (a.count != (total + w - 1) / w) die_verify("server reports %llu writes", (unsigned long long)a.count);
  if (ws) {
    ws[0].waits += c->waits;
    ws[0].sleeps += c->sleeps;
    ws[0].budget_ns = c->sp_data.budget_ns;
    ws[1].waits += a.w.waits;
    ws[1].sleeps += a.w.sleeps;
    ws[1].budget_ns = a.w.budget_ns;
  }
  return (double)(t1 - t0) / 1e9;
}

/* ------------------------------------------------------------------ stats, output */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct ppstat {
  int have;
  size_t n;
  double med, p99, mean, min, max;
};
struct ststat {
  int have;
  double med, min, max; /* GB/s */
  uint64_t bytes;
};

static struct ppstat pp_stats(float *s, size_t n) {
  struct ppstat r = {0};
  if (!n) return r;
  qsort(s, n, sizeof *s, cmp_float);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += s[i];
  r.have = 1;
  r.n = n;
  r.med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
  size_t k = (size_t)((double)n * 0.99 + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  r.p99 = s[k - 1];
  r.mean = sum / (double)n;
  r.min = s[0];
  r.max = s[n - 1];
  return r;
}

static void size_label(size_t n, char *buf, size_t len) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) snprintf(buf, len, "%zu MiB", n >> 20);
  else if (n >= 1024 && n % 1024 == 0) snprintf(buf, len, "%zu KiB", n >> 10);
  else snprintf(buf, len, "%zu B", n);
}

static void fmt_us(double v, char *buf, size_t len) {
  if (v < 10) snprintf(buf, len, "%.2f", v);
  else if (v < 1000) snprintf(buf, len, "%.1f", v);
  else snprintf(buf, len, "%.0f", v);
}

static void fmt_ratio(int ok, double v, char *buf, size_t len) {
  if (!ok || !(v > 0)) snprintf(buf, len, "-");
  else if (v < 0.1) snprintf(buf, len, "%.3fx", v);
  else snprintf(buf, len, "%.2fx", v);
}

static struct ppstat PPS[MAXSIZES][T_N];
static struct ststat STS[MAXSIZES][T_N];
/* ring (spin+sleep) wait behaviour: [0] client, [1] server */
static struct wstat PPW[MAXSIZES][2], STW[MAXSIZES][2];

static void print_pp_table(int p99) {
  printf("\n### Ping-pong round trip, %s µs (lower is better)\n\n", p99 ? "p99" : "median");
  if (!p99)
    printf("line RT ns: placement probe (one cache line bounced between the two CPUs) before and after the row;\n"
           "\"a→b\" means the host moved the vCPUs while the row ran.\n\n");
  printf("| size | AF_UNIX | TCP | ring (spin+sleep) | ring (pure spin) | ring/AF_UNIX | ring pure/AF_UNIX | line RT ns |\n");
  printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int s = 0; s < O.n_pp; s++) {
    char lab[32], cell[T_N][32], r1[32], r2[32], pr[48];
    fmt_probe(s, pr, sizeof pr);
    size_label(O.pp_sizes[s], lab, sizeof lab);
    for (int t = 0; t < T_N; t++) {
      if (!PPS[s][t].have) snprintf(cell[t], sizeof cell[t], "-");
      else fmt_us(p99 ? PPS[s][t].p99 : PPS[s][t].med, cell[t], sizeof cell[t]);
    }
    double u = p99 ? PPS[s][T_UNIX].p99 : PPS[s][T_UNIX].med;
    double a = p99 ? PPS[s][T_RING].p99 : PPS[s][T_RING].med;
    double b = p99 ? PPS[s][T_RING_PURE].p99 : PPS[s][T_RING_PURE].med;
    fmt_ratio(PPS[s][T_UNIX].have && PPS[s][T_RING].have, a / u, r1, sizeof r1);
    fmt_ratio(PPS[s][T_UNIX].have && PPS[s][T_RING_PURE].have, b / u, r2, sizeof r2);
    printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", lab, cell[0], cell[1], cell[2], cell[3], r1, r2, pr);
  }
}

static void print_st_table(void) {
  printf("\n### One-way streaming throughput, GB/s (10^9 bytes/s, median of %d; higher is better)\n\n", O.reps);
  printf("| write size | AF_UNIX | TCP | ring (spin+sleep) | ring (pure spin) | ring/AF_UNIX | ring pure/AF_UNIX | line RT ns |\n");
  printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int s = 0; s < O.n_st; s++) {
    char lab[32], cell[T_N][32], r1[32], r2[32], pr[48];
    fmt_probe(O.n_pp + s, pr, sizeof pr);
    size_label(O.st_sizes[s], lab, sizeof lab);
    for (int t = 0; t < T_N; t++) {
      if (!STS[s][t].have) snprintf(cell[t], sizeof cell[t], "-");
      else snprintf(cell[t], sizeof cell[t], "%.2f", STS[s][t].med);
    }
    double u = STS[s][T_UNIX].med;
    fmt_ratio(STS[s][T_UNIX].have && STS[s][T_RING].have, STS[s][T_RING].med / u, r1, sizeof r1);
    fmt_ratio(STS[s][T_UNIX].have && STS[s][T_RING_PURE].have, STS[s][T_RING_PURE].med / u, r2, sizeof r2);
    printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", lab, cell[0], cell[1], cell[2], cell[3], r1, r2, pr);
  }
}

static void fmt_wait(const struct wstat *w, char *buf, size_t len) {
  if (!w->waits) snprintf(buf, len, "0 waits");
  else
    snprintf(buf, len, "%.1f%% of %llu", 100.0 * (double)w->sleeps / (double)w->waits, (unsigned long long)w->waits);
}

static void print_wait_table(void) {
  if (!(O.tmask & (1 << T_RING))) return;
  printf("\n### ring (spin+sleep): waits that lost the %llu µs spin and slept on the futex\n\n",
         (unsigned long long)O.spin_us);
  printf("Waits happen only when a read/write found nothing to do; \"slept\" is inferred from shm_spin's budget\n"
         "update (a lost spin halves the budget, floor max/16). Budget = data-wait (ping-pong) or space-wait\n"
         "(stream producer) spin budget at the end of the last repetition.\n\n");
  printf("| test | size | client: slept / waits | client budget µs | server: slept / waits | server budget µs |\n");
  printf("|---|---:|---:|---:|---:|---:|\n");
  for (int k = 0; k < 2; k++) {
    int ns = k ? O.n_st : O.n_pp;
    for (int s = 0; s < ns; s++) {
      struct wstat *w = k ? STW[s] : PPW[s];
      char lab[32], a[64], b[64];
      size_label(k ? O.st_sizes[s] : O.pp_sizes[s], lab, sizeof lab);
      fmt_wait(&w[0], a, sizeof a);
      fmt_wait(&w[1], b, sizeof b);
      printf("| %s | %s | %s | %.2f | %s | %.2f |\n", k ? "stream" : "ping-pong", lab, a, w[0].budget_ns / 1e3, b,
             w[1].budget_ns / 1e3);
    }
  }
}

static void csv_waits(FILE *f, int t, const struct wstat *w) {
  if (t == T_RING)
    fprintf(f, ",%llu,%llu,%llu,%llu\n", (unsigned long long)w[0].waits, (unsigned long long)w[0].sleeps,
            (unsigned long long)w[1].waits, (unsigned long long)w[1].sleeps);
  else fprintf(f, ",,,,\n");
}

static void write_csv(void) {
  if (!O.csv) return;
  FILE *f = fopen(O.csv, "w");
  if (!f) die("--csv %s: %s", O.csv, strerror(errno));
  fprintf(f, "test,transport,size_bytes,ring_bytes,spin_us,pinned,samples,median_us,p99_us,mean_us,min_us,max_us,"
             "gbps_median,gbps_min,gbps_max,bytes_per_run,client_waits,client_slept,server_waits,server_slept\n");
  int pinned = g_pin_client >= 0;
  for (int s = 0; s < O.n_pp; s++)
    for (int t = 0; t < T_N; t++) {
      struct ppstat *r = &PPS[s][t];
      if (!r->have) continue;
      fprintf(f, "pingpong,%s,%zu,%u,%llu,%d,%zu,%.3f,%.3f,%.3f,%.3f,%.3f,,,,", tkey[t], O.pp_sizes[s],
              O.ring_size, (unsigned long long)O.spin_us, pinned, r->n, r->med, r->p99, r->mean, r->min, r->max);
      csv_waits(f, t, PPW[s]);
    }
  for (int s = 0; s < O.n_st; s++)
    for (int t = 0; t < T_N; t++) {
      struct ststat *r = &STS[s][t];
      if (!r->have) continue;
      fprintf(f, "stream,%s,%zu,%u,%llu,%d,%d,,,,,,%.4f,%.4f,%.4f,%llu", tkey[t], O.st_sizes[s], O.ring_size,
              (unsigned long long)O.spin_us, pinned, O.reps, r->med, r->min, r->max, (unsigned long long)r->bytes);
      csv_waits(f, t, STW[s]);
    }
  if (fclose(f) != 0) die("--csv %s: %s", O.csv, strerror(errno));
}

/* ------------------------------------------------------------------ header */

static void cpu_model(char *buf, size_t len) {
  snprintf(buf, len, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512], model[256] = "", fam[32] = "", mod[32] = "";
  while (fgets(line, sizeof line, f)) {
    char *v = strchr(line, ':');
    if (!v) continue;
    v++;
    while (*v == ' ' || *v == '\t') v++;
    v[strcspn(v, "\n")] = 0;
    if (!model[0] && !strncmp(line, "model name", 10)) snprintf(model, sizeof model, "%s", v);
    else if (!fam[0] && !strncmp(line, "cpu family", 10)) snprintf(fam, sizeof fam, "%s", v);
    else if (!mod[0] && !strncmp(line, "model\t", 6)) snprintf(mod, sizeof mod, "%s", v);
    if (line[0] == '\n') break;
  }
  fclose(f);
  if (model[0] && fam[0]) snprintf(buf, len, "%s (family %s, model %s)", model, fam, mod[0] ? mod : "?");
  else if (model[0]) snprintf(buf, len, "%s", model);
}

/* First line of a small sysfs/proc file, or "" */
static void read_line(const char *path, char *buf, size_t len) {
  buf[0] = 0;
  FILE *f = fopen(path, "r");
  if (!f) return;
  if (fgets(buf, (int)len, f)) buf[strcspn(buf, "\n")] = 0;
  fclose(f);
}

/* The machine should be otherwise idle: show what else wants CPU. */
static void print_load(const char *what) {
  char la[128], line[256];
  read_line("/proc/loadavg", la, sizeof la);
  int running = -1;
  FILE *f = fopen("/proc/stat", "r");
  if (f) {
    while (fgets(line, sizeof line, f))
      if (!strncmp(line, "procs_running ", 14)) running = atoi(line + 14);
    fclose(f);
  }
  printf("- %s: loadavg %s; runnable now: %d (this process included)%s\n", what, la, running,
         running > 1 ? "  ** WARNING: something else is running **" : "");
}

/* Machine-wide busy and steal time (seconds) from /proc/stat. */
static void cpu_times(double *busy, double *steal) {
  unsigned long long v[10] = {0};
  *busy = *steal = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                 &v[5], &v[6], &v[7], &v[8], &v[9]);
  fclose(f);
  if (n < 8) return;
  double hz = (double)sysconf(_SC_CLK_TCK);
  *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
  *steal = (double)v[7] / hz;
}

static double own_cpu(void) {
  struct rusage a, b;
  getrusage(RUSAGE_SELF, &a);
  getrusage(RUSAGE_CHILDREN, &b);
  return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
         (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec) / 1e6;
}

/* Does the sibling list of `a` (e.g. "0-1" or "0,4") contain cpu b? */
static int smt_siblings(int a, int b) {
  char path[128], l[256];
  snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", a);
  read_line(path, l, sizeof l);
  for (char *p = l; *p;) {
    char *e;
    long lo = strtol(p, &e, 10), hi = lo;
    if (e == p) break;
    if (*e == '-') hi = strtol(e + 1, &e, 10);
    if (b >= lo && b <= hi) return 1;
    p = *e == ',' ? e + 1 : e;
    if (*e != ',') break;
  }
  return 0;
}

static void choose_cpus(char *desc, size_t len) {
  cpu_set_t s;
  if (sched_getaffinity(0, sizeof s, &s) < 0) CPU_ZERO(&s);
  int cpus[CPU_SETSIZE], n = 0;
  for (int i = 0; i < CPU_SETSIZE; i++)
    if (CPU_ISSET(i, &s)) cpus[n++] = i;
  if (O.no_pin) {
    snprintf(desc, len, "no (--no-pin; %d CPUs allowed)", n);
    return;
  }
  if (n < 2) {
    snprintf(desc, len, "no (only %d CPU allowed)", n);
    return;
  }
  g_pin_client = cpus[0];
  g_pin_server = cpus[1];
  for (int i = 1; i < n; i++)
    if (!smt_siblings(cpus[0], cpus[i])) {
      g_pin_server = cpus[i];
      break;
    }
  snprintf(desc, len, "yes (client cpu %d, server cpu %d%s)", g_pin_client, g_pin_server,
           smt_siblings(g_pin_client, g_pin_server) ? ", SMT siblings" : ", not SMT siblings");
}

/* ------------------------------------------------------------------ placement probe */

/* A cache line bounced between this process and a child on the server CPU: ns per
 * round trip (two line transfers). On a VM the host decides where the vCPUs really
 * run (separate cores, SMT siblings, other CCDs), and that changes the ring numbers
 * a lot, so the probe runs at every phase boundary. Returns -1 if it could not run. */
static double c2c_probe(void) {
  if (g_pin_server < 0) return -1; /* only meaningful (and cheap) on two pinned CPUs */
  uint64_t *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) return -1;
  const uint64_t STOP = ~0ull, N = 20000;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    munmap(sh, 4096);
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pin_to(g_pin_server);
    uint64_t seen = 0, t0 = now_ns();
    for (uint32_t k = 1;; k++) {
      uint64_t v = __atomic_load_n(sh, __ATOMIC_ACQUIRE);
      if (v == STOP) _exit(0);
      if ((v & 1) && v != seen) {
        seen = v;
        __atomic_store_n(sh, v + 1, __ATOMIC_RELEASE);
        t0 = now_ns();
      }
      shm_cpu_relax();
      if ((k & 0xffff) == 0 && now_ns() - t0 > 5000000000ull) _exit(1);
    }
  }
  /* Bounded: at most ~1 s whatever happens (e.g. both ends on one CPU). */
  double best = -1;
  uint64_t v = 1, deadline = now_ns() + 1000000000ull;
  int ok = 1;
  for (int batch = 0; batch < 3 && ok; batch++) {
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < N && ok; i++) {
      __atomic_store_n(sh, v, __ATOMIC_RELEASE);
      for (uint32_t k = 1; __atomic_load_n(sh, __ATOMIC_ACQUIRE) != v + 1; k++) {
        shm_cpu_relax();
        if ((k & 0xfff) == 0 && now_ns() > deadline) {
          ok = 0;
          break;
        }
      }
      v += 2;
      if ((i & 63) == 0 && now_ns() > deadline) ok = 0;
    }
    double ns = (double)(now_ns() - t0) / (double)N;
    if (ok && (best < 0 || ns < best)) best = ns;
  }
  __atomic_store_n(sh, STOP, __ATOMIC_RELEASE);
  int st;
  waitpid(pid, &st, 0);
  munmap(sh, 4096);
  return ok ? best : -1;
}

static void run_probe(int *n) {
  snprintf(g_cell, sizeof g_cell, "placement probe");
  alarm(WATCHDOG_S);
  double v = c2c_probe();
  alarm(0);
  if (*n < MAXPROBES) g_probe[(*n)++] = v;
}

/* "425" or "61-425": the probes before and after a row. */
static void fmt_probe(int k, char *buf, size_t len) {
  double a = k < MAXPROBES ? g_probe[k] : -1, b = k + 1 < MAXPROBES ? g_probe[k + 1] : -1;
  if (a <= 0 || b <= 0) snprintf(buf, len, "-");
  else if (a > 1.5 * b || b > 1.5 * a) snprintf(buf, len, "%.0f→%.0f", a, b);
  else snprintf(buf, len, "%.0f", (a + b) / 2);
}

/* ------------------------------------------------------------------ options */

static size_t parse_size(const char *s, const char *what) {
  char *e;
  errno = 0;
  unsigned long long v = strtoull(s, &e, 10);
  if (e == s || errno) goto bad;
  switch (*e) {
  case 'k': case 'K': v <<= 10; e++; break;
  case 'm': case 'M': v <<= 20; e++; break;
  case 'g': case 'G': v <<= 30; e++; break;
  default: break;
  }
  if (*e == 'i') e++;
  if (*e == 'B' || *e == 'b') e++;
  if (*e) goto bad;
  return (size_t)v;
bad:
  fprintf(stderr, "ring_bench: bad %s '%s'\n", what, s);
  exit(2);
}

static int parse_list(const char *arg, size_t *out, const char *what, size_t min) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", arg);
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (n == MAXSIZES) {
      fprintf(stderr, "ring_bench: at most %d %s\n", MAXSIZES, what);
      exit(2);
    }
    size_t v = parse_size(tok, what);
    if (v < min || v > (256u << 20)) {
      fprintf(stderr, "ring_bench: %s %zu out of range [%zu, 256M]\n", what, v, min);
      exit(2);
    }
    out[n++] = v;
  }
  if (!n) {
    fprintf(stderr, "ring_bench: empty %s list\n", what);
    exit(2);
  }
  return n;
}

static void usage(int code) {
  fprintf(code ? stderr : stdout,
          "usage: ring_bench [options]\n"
          "  --quick              fewer sizes and iterations (whole run < 30 s)\n"
          "  --sizes LIST         ping-pong message sizes, e.g. 64,4K,1M (min 16)\n"
          "  --stream-sizes LIST  streaming write sizes, e.g. 64,64K (min 8)\n"
          "  --ring BYTES         ring size per direction, power of two (default 256K)\n"
          "  --spin-us N          spin budget before sleeping, ring spin+sleep (default 20)\n"
          "  --read-size BYTES    streaming consumer read size (default 1M)\n"
          "  --reps N             repetitions per cell, interleaved (default 3, quick 1)\n"
          "  --transports LIST    subset of unix,tcp,ring,ring_spin (default all)\n"
          "  --only pp|stream     run one of the two tests\n"
          "  --time MS            cell time target (default 200, quick 60; streaming +25%%)\n"
          "  --no-pin             do not pin client and server to different CPUs\n"
          "  --csv FILE           also write machine-readable results\n");
  exit(code);
}

static void parse_opts(int argc, char **argv) {
  static const size_t pp_full[] = {64, 512, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20};
  static const size_t pp_quick[] = {64, 4 << 10, 64 << 10, 1 << 20, 4 << 20};
  static const size_t st_all[] = {64, 4 << 10, 64 << 10, 1 << 20};
  const char *sizes = NULL, *ssizes = NULL;
  O.ring_size = 256u << 10;
  O.spin_us = 20;
  O.read_size = 1u << 20;
  O.reps = -1;
  O.tmask = (1 << T_N) - 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                          \
  do {                                                                   \
    if (!v) {                                                            \
      fprintf(stderr, "ring_bench: %s needs a value\n", a);              \
      exit(2);                                                           \
    }                                                                    \
    i++;                                                                 \
  } while (0)
    if (!strcmp(a, "--quick")) O.quick = 1;
    else if (!strcmp(a, "--no-pin")) O.no_pin = 1;
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) usage(0);
    else if (!strcmp(a, "--sizes")) { NEEDV(); sizes = v; }
    else if (!strcmp(a, "--stream-sizes")) { NEEDV(); ssizes = v; }
    else if (!strcmp(a, "--csv")) { NEEDV(); O.csv = v; }
    else if (!strcmp(a, "--only")) {
      NEEDV();
      if (!strcmp(v, "pp")) O.only = 1;
      else if (!strcmp(v, "stream")) O.only = 2;
      else {
        fprintf(stderr, "ring_bench: --only must be pp or stream\n");
        exit(2);
      }
    } else if (!strcmp(a, "--time")) {
      NEEDV();
      char *e;
      O.time_ms = strtoull(v, &e, 10);
      if (*e || e == v || O.time_ms < 1 || O.time_ms > 60000) {
        fprintf(stderr, "ring_bench: --time must be 1..60000 ms\n");
        exit(2);
      }
    }
    else if (!strcmp(a, "--read-size")) {
      NEEDV();
      O.read_size = parse_size(v, "read size");
      if (O.read_size < 1 || O.read_size > (256u << 20)) {
        fprintf(stderr, "ring_bench: --read-size must be 1..256M\n");
        exit(2);
      }
    }
    else if (!strcmp(a, "--ring")) {
      NEEDV();
      size_t r = parse_size(v, "ring size");
      if (r < SHM_RING_MIN || r > SHM_RING_MAX || (r & (r - 1))) {
        fprintf(stderr, "ring_bench: --ring must be a power of two in [%u, %u]\n", SHM_RING_MIN, SHM_RING_MAX);
        exit(2);
      }
      O.ring_size = (uint32_t)r;
    } else if (!strcmp(a, "--spin-us")) {
      NEEDV();
      char *e;
      unsigned long long s = strtoull(v, &e, 10);
      if (*e || e == v || s > 1000000) {
        fprintf(stderr, "ring_bench: bad --spin-us '%s'\n", v);
        exit(2);
      }
      O.spin_us = s;
    } else if (!strcmp(a, "--reps")) {
      NEEDV();
      O.reps = atoi(v);
      if (O.reps < 1 || O.reps > 20) {
        fprintf(stderr, "ring_bench: --reps must be 1..20\n");
        exit(2);
      }
    } else if (!strcmp(a, "--transports")) {
      NEEDV();
      char tmp[256];
      snprintf(tmp, sizeof tmp, "%s", v);
      O.tmask = 0;
      for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int t;
        for (t = 0; t < T_N; t++)
          if (!strcmp(tok, tkey[t])) break;
        if (t == T_N) {
          fprintf(stderr, "ring_bench: unknown transport '%s' (unix,tcp,ring,ring_spin)\n", tok);
          exit(2);
        }
        O.tmask |= 1 << t;
      }
    } else {
      fprintf(stderr, "ring_bench: unknown option '%s'\n", a);
      usage(2);
    }
#undef NEEDV
  }
  if (sizes) O.n_pp = parse_list(sizes, O.pp_sizes, "sizes", 16);
  else if (O.quick) {
    O.n_pp = (int)(sizeof pp_quick / sizeof *pp_quick);
    memcpy(O.pp_sizes, pp_quick, sizeof pp_quick);
  } else {
    O.n_pp = (int)(sizeof pp_full / sizeof *pp_full);
    memcpy(O.pp_sizes, pp_full, sizeof pp_full);
  }
  if (ssizes) O.n_st = parse_list(ssizes, O.st_sizes, "stream sizes", 8);
  else {
    O.n_st = (int)(sizeof st_all / sizeof *st_all);
    memcpy(O.st_sizes, st_all, sizeof st_all);
  }
  if (O.reps < 0) O.reps = O.quick ? 1 : 3;
  if (O.quick) {
    O.pp_target_ns = 60ull * 1000 * 1000;
    O.pp_hard_ns = 400ull * 1000 * 1000;
    O.st_target_ns = 80ull * 1000 * 1000;
    O.pp_max_samples = 50000;
  } else {
    O.pp_target_ns = 200ull * 1000 * 1000;
    O.pp_hard_ns = 1000ull * 1000 * 1000;
    O.st_target_ns = 250ull * 1000 * 1000;
    O.pp_max_samples = 200000;
  }
  if (O.time_ms) {
    O.pp_target_ns = O.time_ms * 1000000ull;
    O.pp_hard_ns = 5 * O.pp_target_ns;
    O.st_target_ns = O.pp_target_ns + O.pp_target_ns / 4;
  }
  if (O.only == 2) O.n_pp = 0;
  if (O.only == 1) O.n_st = 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
  parse_opts(argc, argv);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  uint64_t run_t0 = now_ns();
  double busy0, steal0;
  cpu_times(&busy0, &steal0);
  double own0 = own_cpu();

  if (O.csv) { /* fail early on an unwritable path */
    FILE *f = fopen(O.csv, "w");
    if (!f) die("--csv %s: %s", O.csv, strerror(errno));
    fclose(f);
  }

  size_t maxpp = 16, maxst = 8;
  for (int s = 0; s < O.n_pp; s++)
    if (O.pp_sizes[s] > maxpp) maxpp = O.pp_sizes[s];
  for (int s = 0; s < O.n_st; s++)
    if (O.st_sizes[s] > maxst) maxst = O.st_sizes[s];
  g_pat_len = maxpp > maxst ? maxpp : maxst;
  g_pat0 = xmalloc(g_pat_len);
  g_pat1 = xmalloc(g_pat_len);
  fill_pattern(g_pat0, g_pat_len, 0x243f6a8885a308d3ull);
  fill_pattern(g_pat1, g_pat_len, 0x13198a2e03707344ull);

  char cpu[300], pin[128], clk[64];
  struct utsname un;
  cpu_model(cpu, sizeof cpu);
  choose_cpus(pin, sizeof pin);
  read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource", clk, sizeof clk);
  if (uname(&un) < 0) snprintf(un.release, sizeof un.release, "?");

  printf("# shmshim ring_bench (%s run)\n\n", O.quick ? "quick" : "full");
  printf("- nproc: %ld online\n", sysconf(_SC_NPROCESSORS_ONLN));
  printf("- CPU: %s\n", cpu);
  printf("- kernel: %s, clocksource: %s\n", un.release, clk[0] ? clk : "?");
  printf("- pinned: %s\n", pin);
  printf("- ring size: %u bytes per direction (%u KiB)\n", O.ring_size, O.ring_size >> 10);
  printf("- spin budget (ring spin+sleep): %llu µs%s\n", (unsigned long long)O.spin_us,
         sysconf(_SC_NPROCESSORS_ONLN) < 2 ? " (ignored by shm_spin_init: 1 CPU)" : "");
  printf("- repetitions per cell: %d (interleaved across transports); ping-pong cell target %.0f ms "
         "(max %zu samples, hard stop %.0f ms); stream cell target %.0f ms\n",
         O.reps, O.pp_target_ns / 1e6, O.pp_max_samples, O.pp_hard_ns / 1e6, O.st_target_ns / 1e6);
  printf("- streaming: the child writes W-byte writes, the client reads with %zu-byte reads\n", O.read_size);
  printf("- ring (pure spin): both sides busy-poll the indices, never sleep, no notify calls\n");
  print_load("load at start");

  if (g_pin_client >= 0) pin_to(g_pin_client);
  for (int t = 0; t < T_N; t++)
    if (O.tmask & (1 << t)) start_peer(t);

  unsigned char *sb0 = xmalloc(g_pat_len), *sb1 = xmalloc(g_pat_len), *rb = xmalloc(g_pat_len);
  unsigned char *srb = xmalloc(O.read_size);
  float *samples[T_N] = {0};
  size_t nsamp[T_N];
  for (int t = 0; t < T_N; t++)
    if (O.tmask & (1 << t)) samples[t] = xmalloc(sizeof(float) * O.pp_max_samples * (size_t)O.reps);

  /* Placement probe before every row and at the end: row s of ping-pong lies between
   * probes s and s+1, row s of streaming between probes n_pp+s and n_pp+s+1. */
  int nprobe = 0;
  run_probe(&nprobe);
  if (g_probe[0] > 0) printf("- core-to-core cache-line round trip (placement probe) at start: %.0f ns\n", g_probe[0]);

  /* 1. ping-pong */
  uint64_t ph_t0 = now_ns();
  for (int s = 0; s < O.n_pp; s++) {
    size_t n = O.pp_sizes[s];
    memset(nsamp, 0, sizeof nsamp);
    if (s) run_probe(&nprobe);
    for (int rep = 0; rep < O.reps; rep++)
      for (int t = 0; t < T_N; t++) {
        if (!(O.tmask & (1 << t))) continue;
        snprintf(g_cell, sizeof g_cell, "ping-pong %zu B, %s, rep %d", n, tname[t], rep + 1);
        alarm(WATCHDOG_S);
        struct wstat dummy[2] = {{0}};
        nsamp[t] += client_pingpong(&P[t], n, samples[t] + nsamp[t], sb0, sb1, rb, t == T_RING ? PPW[s] : dummy);
        alarm(0);
      }
    char lab[32];
    size_label(n, lab, sizeof lab);
    fprintf(stderr, "  ping-pong %-8s", lab);
    for (int t = 0; t < T_N; t++) {
      if (!(O.tmask & (1 << t))) continue;
      PPS[s][t] = pp_stats(samples[t], nsamp[t]);
      fprintf(stderr, " | %s %.2f µs (%zu)", tkey[t], PPS[s][t].med, nsamp[t]);
    }
    fprintf(stderr, "\n");
  }
  double pp_secs = (double)(now_ns() - ph_t0) / 1e9;

  /* 2. streaming */
  uint64_t st_t0 = now_ns();
  for (int s = 0; s < O.n_st; s++) {
    size_t w = O.st_sizes[s];
    double gbps[T_N][20];
    run_probe(&nprobe);
    for (int rep = 0; rep < O.reps; rep++)
      for (int t = 0; t < T_N; t++) {
        if (!(O.tmask & (1 << t))) continue;
        snprintf(g_cell, sizeof g_cell, "stream %zu B writes, %s, rep %d", w, tname[t], rep + 1);
        alarm(WATCHDOG_S);
        /* Probe (growing until it lasts >= 1/8 of the target) to size the run, then
         * the measured run; both bounded in bytes. */
        uint64_t probe = 8 * (uint64_t)w > (256u << 10) ? 8 * (uint64_t)w : (256u << 10);
        double ps;
        for (;;) {
          probe = probe / w * w;
          ps = client_stream(&P[t], w, probe, srb, NULL);
          if (ps * 1e9 >= (double)O.st_target_ns / 8 || probe >= STREAM_MAX_BYTES / 64) break;
          probe *= 8;
        }
        double rate = (double)probe / (ps > 1e-9 ? ps : 1e-9);
        uint64_t total = (uint64_t)(rate * (double)O.st_target_ns / 1e9);
        uint64_t lo = 4 * (uint64_t)w > (256u << 10) ? 4 * (uint64_t)w : (256u << 10);
        if (total < lo) total = lo;
        if (total > STREAM_MAX_BYTES) total = STREAM_MAX_BYTES;
        total = total / w * w;
        double secs = client_stream(&P[t], w, total, srb, t == T_RING ? STW[s] : NULL);
        gbps[t][rep] = (double)total / secs / 1e9;
        STS[s][t].bytes = total;
        alarm(0);
      }
    char lab[32];
    size_label(w, lab, sizeof lab);
    fprintf(stderr, "  stream %-8s", lab);
    for (int t = 0; t < T_N; t++) {
      if (!(O.tmask & (1 << t))) continue;
      qsort(gbps[t], (size_t)O.reps, sizeof(double), cmp_double);
      STS[s][t].have = 1;
      STS[s][t].min = gbps[t][0];
      STS[s][t].max = gbps[t][O.reps - 1];
      STS[s][t].med = O.reps % 2 ? gbps[t][O.reps / 2] : (gbps[t][O.reps / 2 - 1] + gbps[t][O.reps / 2]) / 2;
      fprintf(stderr, " | %s %.2f GB/s", tkey[t], STS[s][t].med);
    }
    fprintf(stderr, "\n");
  }
  double st_secs = (double)(now_ns() - st_t0) / 1e9;

  run_probe(&nprobe);
  snprintf(g_cell, sizeof g_cell, "shutdown");
  alarm(WATCHDOG_S);
  for (int t = 0; t < T_N; t++) {
    if (!P[t].used) continue;
    send_cmd(&P[t], OP_QUIT, 0, 0);
    int st;
    if (waitpid(g_children[t], &st, 0) == g_children[t]) {
      g_children[t] = 0;
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("server for %s ended badly (status %#x)", tname[t], st);
    }
  }
  alarm(0);

  printf("\n");
  if (g_probe[0] > 0) {
    double lo = 0, hi = 0;
    for (int k = 0; k < nprobe; k++) {
      if (g_probe[k] <= 0) continue;
      if (!lo || g_probe[k] < lo) lo = g_probe[k];
      if (g_probe[k] > hi) hi = g_probe[k];
    }
    printf("- core-to-core cache-line round trip (placement probe before every row): %.0f..%.0f ns over %d probes%s\n",
           lo, hi, nprobe,
           hi > 1.5 * lo ? "  ** WARNING: the host moved the vCPUs during the run; rows are comparable across "
                           "columns (interleaved), not necessarily with each other (see the probe column) **"
                         : "");
  }
  print_load("load at end");
  {
    double busy1, steal1;
    cpu_times(&busy1, &steal1);
    double wall = (double)(now_ns() - run_t0) / 1e9, other = (busy1 - busy0) - (own_cpu() - own0);
    if (other < 0) other = 0;
    printf("- CPU used by other processes during the run: %.1f s over %.1f s wall (%.0f%% of one CPU)%s; "
           "hypervisor steal: %.2f s\n",
           other, wall, 100.0 * other / wall,
           other / wall > 0.05 ? "  ** WARNING: the machine was not idle, numbers may be disturbed **" : "",
           steal1 - steal0);
  }
  print_pp_table(0);
  print_pp_table(1);
  print_st_table();
  print_wait_table();
  write_csv();
  printf("\nAll data verified (stamps on every message, full checksums on the first and last message of "
         "every ping-pong cell, byte-exact stream checks on the first, last and every 1024th read).\n");
  printf("Run time: %.1f s (ping-pong %.1f s, streaming %.1f s)\n", (double)(now_ns() - run_t0) / 1e9, pp_secs,
         st_secs);
  if (O.csv) printf("CSV written to %s\n", O.csv);
  return 0;
}

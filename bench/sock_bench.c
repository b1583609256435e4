/* sock_bench: one measurement cell over the plain socket API, so that the same
 * binary runs with and without LD_PRELOAD=libshmshim.so (bench/sock_bench.sh runs
 * the four variants plain/shim x TCP/AF_UNIX, interleaved, and makes the tables).
 *
 *   sock_bench ADDR TEST SIZE [options]          fork mode: sets up the listener,
 *                                                forks the server child (which
 *                                                inherits the environment, hence
 *                                                LD_PRELOAD), runs the client
 *   sock_bench server ADDR TEST SIZE [options]   the server side of one cell
 *   sock_bench client ADDR TEST SIZE [options]   the client side of one cell
 *
 * ADDR: tcp4:PORT (127.0.0.1) or unix:PATH.
 * TEST:
 *   pp      ping-pong: the client writes SIZE bytes, the server reads all of them
 *           and writes them back, the client reads all of them; round-trip median,
 *           p99, mean, min, max in µs.
 *   stream  one-way: the client writes SIZE-byte writes for the cell time, then
 *           shuts down its writing side; the server reads with --read-size reads
 *           (default 256 KiB) until EOF and answers with a 32-byte receipt; the
 *           time runs from the first write to the receipt. MB/s = 10^6 B/s.
 *   conn    connection set-up: socket, connect, one SIZE-byte request and
 *           response, close (the client first; the server closes at its EOF),
 *           repeated for the cell time; conns/s and the median and p99 of one
 *           whole connection in µs.
 * Blocking sockets everywhere, TCP_NODELAY on every TCP socket (unless --nagle 1).
 *
 * Every cell is bounded in count (--max) and time (--time, with a hard stop at 4x),
 * and both processes run under an alarm() watchdog (--watchdog, default 30 s).
 * Verification: ping-pong and conn messages carry their sequence number in their
 * first and last 8 bytes (checked on every message, both sides); the first and the
 * last message of a cell use a second pattern and are checksummed in full (both
 * sides); conn requests and responses are checked in full. Streaming blocks carry
 * their index; the server checks the first, the last and every 64th read byte for
 * byte and the total count; the client checks the receipt.
 *
 * Output: one line per cell on stdout (fork mode and client mode), e.g.
 *   SOCKBENCH label=plain-tcp test=pp fam=tcp4 size=64 samples=... median_us=... p99_us=...
 *   SOCKBENCH label=... test=stream fam=unix size=65536 bytes=... writes=... secs=... MBps=...
 *   SOCKBENCH label=... test=conn fam=tcp4 size=64 conns=... secs=... conns_per_s=... median_us=...
 *
 * Exit status: 0 ok, 1 error, 2 usage, 3 watchdog, 4 data verification failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

/* ------------------------------------------------------------------ settings */

enum { T_PP, T_STREAM, T_CONN };
static const char *const test_name[] = {"pp", "stream", "conn"};

#define STAMP_LAST (1ull << 63)
#define STAMP_TAILX 0x5a5aa5a5c3c33c3cull
#define RECEIPT_MAGIC 0x54504945434552ull /* "RECEIPT" */
#define PP_WARM_MAX 2000
#define PP_MIN_SAMPLES 20
#define STREAM_MAX_BYTES (32ull << 30)
#define MAX_SIZE (64u << 20)

static struct opts {
  int mode; /* 0 fork, 1 server, 2 client */
  int fam;  /* AF_INET or AF_UNIX */
  int port;
  char path[108];
  int test;
  size_t size;
  uint64_t time_ns, warm_ns;
  uint64_t max; /* samples / conns; stream: bytes */
  size_t read_size;
  size_t write_chunk; /* diagnostic: split every write into writes of at most this */
  int nagle;          /* leave TCP_NODELAY off, as many programs do */
  int pin_client, pin_server;
  unsigned watchdog_s;
  const char *label;
} O;

/* ------------------------------------------------------------------ process state */

static const char *g_role = "client";
static pid_t g_child;
static char g_cell[160] = "setup";
static unsigned char *g_pat0, *g_pat1; /* identical in both processes */

static void die_code(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_code(int code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "sock_bench [%s, %s]: %s\n", g_role, g_cell, buf);
  if (code == 4) fprintf(stderr, "sock_bench: DATA VERIFICATION FAILED\n");
  if (g_child > 0) kill(g_child, SIGKILL);
  _exit(code);
}
#define die(...) die_code(1, __VA_ARGS__)
#define die_verify(...) die_code(4, __VA_ARGS__)

static void on_alarm(int sig) {
  (void)sig;
  char m[400];
  size_t n = cat(m, 0, sizeof m, "\nsock_bench [");
  n = cat(m, n, sizeof m, g_role);
  n = cat(m, n, sizeof m, "]: WATCHDOG: the cell '");
  n = cat(m, n, sizeof m, g_cell);
  n = cat(m, n, sizeof m, "' ran too long - killing it\n");
  ssize_t rc = write(2, m, n);
  (void)rc;
  if (g_child > 0) kill(g_child, SIGKILL);
  _exit(3);
}

static void *xmalloc(size_t n) {
  void *p = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);
  if (!p) die("out of memory (%zu bytes)", n);
  memset(p, 0, n); /* fault the pages in before timing */
  return p;
}

static void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  if (sched_setaffinity(0, sizeof s, &s) < 0) die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

/* ------------------------------------------------------------------ socket helpers */

static void set_nodelay(int fd) {
  if (O.fam != AF_INET || O.nagle) return;
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY: %s", strerror(errno));
}

static socklen_t make_addr(struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (O.fam == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)O.port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sizeof *a;
  }
  struct sockaddr_un *u = (struct sockaddr_un *)ss;
  u->sun_family = AF_UNIX;
  memcpy(u->sun_path, O.path, strlen(O.path));
  return (socklen_t)sizeof *u;
}

static int make_listener(void) {
  struct sockaddr_storage ss;
  socklen_t sl = make_addr(&ss);
  int l = socket(O.fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) die("socket: %s", strerror(errno));
  if (O.fam == AF_INET) {
    int one = 1;
    if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR: %s", strerror(errno));
  } else {
    struct stat st;
    if (lstat(O.path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(O.path); /* a stale socket of ours */
  }
  if (bind(l, (struct sockaddr *)&ss, sl) < 0) die("bind: %s", strerror(errno));
  if (listen(l, 128) < 0) die("listen: %s", strerror(errno));
  if (O.fam == AF_INET) set_nodelay(l);
  return l;
}

/* retry: keep trying for a while when nobody listens yet (client mode). */
static int dial(int retry) {
  struct sockaddr_storage ss;
  socklen_t sl = make_addr(&ss);
  uint64_t deadline = now_ns() + 5000000000ull;
  for (;;) {
    int fd = socket(O.fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    set_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&ss, sl) == 0) return fd;
    int e = errno;
    close(fd);
    if (e == EINTR) continue;
    if (!retry || (e != ECONNREFUSED && e != ENOENT) || now_ns() > deadline) die("connect: %s", strerror(e));
    usleep(10000);
  }
}

static void send_all(int fd, const unsigned char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n < O.write_chunk ? n : O.write_chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write: %s", strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
}

/* 1: all n bytes; 0: EOF before the first byte. EOF in the middle is an error. */
static int recv_all(int fd, unsigned char *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (r == 0) {
      if (got == 0) return 0;
      die("unexpected EOF after %zu of %zu bytes", got, n);
    }
    if (errno != EINTR) die("read: %s", strerror(errno));
  }
  return 1;
}

static int accept_one(int l) {
  for (;;) {
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
      set_nodelay(fd);
      return fd;
    }
    if (errno != EINTR) die("accept: %s", strerror(errno));
  }
}

/* ------------------------------------------------------------------ messages */

/* A message of n bytes: stamp h in the first 8 bytes, h^X in the last 8, body from
 * the pattern (pat1 for the first and the last message of a cell). */
static void stamp_msg(unsigned char *m, size_t n, uint64_t h) {
  st64(m, h);
  st64(m + n - 8, h ^ STAMP_TAILX);
}

static void check_msg(const char *who, const unsigned char *m, size_t n, uint64_t want_seq, int full) {
  uint64_t h = ld64(m), t = ld64(m + n - 8);
  if ((h & ~STAMP_LAST) != want_seq || t != (h ^ STAMP_TAILX))
    die_verify("%s: message %llu of %zu bytes has stamps %#llx/%#llx", who, (unsigned long long)want_seq, n,
               (unsigned long long)h, (unsigned long long)t);
  if (full) {
    const unsigned char *pat = (want_seq == 0 || (h & STAMP_LAST)) ? g_pat1 : g_pat0;
    if (csum(m + 8, n - 16) != csum(pat + 8, n - 16))
      die_verify("%s: checksum mismatch in message %llu of %zu bytes", who, (unsigned long long)want_seq, n);
  }
}

/* ------------------------------------------------------------------ server */

static void server_pp(int l) {
  int fd = accept_one(l);
  unsigned char *b = xmalloc(O.size);
  for (uint64_t i = 0;; i++) {
    if (!recv_all(fd, b, O.size)) die("ping-pong: EOF before the last message (%llu received)", (unsigned long long)i);
    int last = (ld64(b) & STAMP_LAST) != 0;
    check_msg("server", b, O.size, i, i == 0 || last);
    send_all(fd, b, O.size);
    if (last) break;
  }
  close(fd);
  free(b);
}

/* Bytes [off, off+len) of the stream: block k = its 8-byte index, then g_pat0. */
static void verify_stream(const unsigned char *p, size_t len, uint64_t off, size_t w) {
  while (len) {
    uint64_t k = off / w;
    size_t in = (size_t)(off % w), take = w - in < len ? w - in : len;
    size_t j = in;
    if (j < 8) {
      unsigned char stamp[8];
      st64(stamp, k);
      size_t e = take + in < 8 ? take + in : 8;
      if (memcmp(p, stamp + j, e - j) != 0) goto bad;
      j = e;
    }
    if (j < in + take && memcmp(p + (j - in), g_pat0 + j, in + take - j) != 0) goto bad;
    p += take;
    len -= take;
    off += take;
  }
  return;
bad:
  die_verify("server: stream byte mismatch in the block at offset %llu (write size %zu)", (unsigned long long)off, w);
}

struct receipt {
  uint64_t magic, bytes, reads, status;
};

static void server_stream(int l) {
  int fd = accept_one(l);
  unsigned char *b[2] = {xmalloc(O.read_size), xmalloc(O.read_size)};
  uint64_t off = 0, reads = 0, prev_off = 0;
  size_t prev_len = 0;
  int cur = 0;
  for (;;) {
    ssize_t r = read(fd, b[cur], O.read_size);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("stream read: %s", strerror(errno));
    }
    if (r == 0) break;
    reads++;
    if (reads == 1 || (reads & 63) == 0) verify_stream(b[cur], (size_t)r, off, O.size);
    prev_off = off;
    prev_len = (size_t)r;
    off += (uint64_t)r;
    cur ^= 1;
  }
  if (!reads) die("stream: no data");
  verify_stream(b[cur ^ 1], prev_len, prev_off, O.size); /* the last read */
  if (off % O.size) die_verify("server: stream of %llu bytes is not whole %zu-byte writes", (unsigned long long)off, O.size);
  struct receipt rc = {RECEIPT_MAGIC, off, reads, 0};
  send_all(fd, (unsigned char *)&rc, sizeof rc);
  close(fd);
  free(b[0]);
  free(b[1]);
}

static void server_conn(int l) {
  unsigned char *b = xmalloc(O.size);
  for (uint64_t i = 0;; i++) {
    int fd = accept_one(l);
    if (!recv_all(fd, b, O.size)) die("conn %llu: EOF before the request", (unsigned long long)i);
    int last = (ld64(b) & STAMP_LAST) != 0;
    check_msg("server", b, O.size, i, 1);
    send_all(fd, b, O.size);
    /* The client closes first (as keep-alive HTTP and redis clients do): a server
     * that closed right after its response would find its client not attached
     * yet, and the offer withdrawn leaves the connection plain at both ends
     * (docs/design.md, Negotiation, 8): the shimmed cell would not measure an
     * upgrade. */
    unsigned char eof;
    ssize_t r;
    while ((r = recv(fd, &eof, 1, 0)) < 0 && errno == EINTR) {
    }
    if (r != 0) die("conn %llu: %s after the response instead of EOF", (unsigned long long)i, r > 0 ? "data" : strerror(errno));
    close(fd);
    if (last) break;
  }
  free(b);
}

static void run_server(int l) {
  snprintf(g_cell, sizeof g_cell, "%s %zu B server", test_name[O.test], O.size);
  alarm(O.watchdog_s + 2); /* the client's watchdog should fire first and name the cell */
  if (O.test == T_PP) server_pp(l);
  else if (O.test == T_STREAM) server_stream(l);
  else server_conn(l);
  alarm(0);
}

/* ------------------------------------------------------------------ client */

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

struct stats {
  double med, p99, mean, min, max;
};

static struct stats stats_of(float *s, size_t n) {
  struct stats r = {0, 0, 0, 0, 0};
  if (!n) return r;
  qsort(s, n, sizeof *s, cmp_float);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += s[i];
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

static char g_result[600]; /* printed once the whole cell (server included) succeeded */

static const char *fam_name(void) { return O.fam == AF_INET ? "tcp4" : "unix"; }

static void client_pp(void) {
  size_t n = O.size;
  unsigned char *sb0 = xmalloc(n), *sb1 = xmalloc(n), *rb = xmalloc(n);
  memcpy(sb0, g_pat0, n);
  memcpy(sb1, g_pat1, n);
  size_t cap = (size_t)O.max;
  float *out = xmalloc(sizeof(float) * cap);
  int fd = dial(O.mode == 2);
  uint64_t t0 = now_ns(), t = t0, mstart = 0, hard = 4 * O.time_ns;
  int measuring = 0;
  size_t m = 0;
  uint64_t i;
  for (i = 0;; i++) {
    if (!measuring && i > 0 && (i >= PP_WARM_MAX || t - t0 >= O.warm_ns)) {
      measuring = 1;
      mstart = t;
    }
    int last = 0;
    if (measuring) {
      uint64_t el = t - mstart;
      if (m + 1 >= cap || (el >= O.time_ns && m >= PP_MIN_SAMPLES) || (el >= hard && m >= 2)) last = 1;
    }
    unsigned char *sb = (i == 0 || last) ? sb1 : sb0;
    uint64_t h = i | (last ? STAMP_LAST : 0);
    stamp_msg(sb, n, h);
    send_all(fd, sb, n);
    if (!recv_all(fd, rb, n)) die("ping-pong: EOF from the server");
    uint64_t t2 = now_ns();
    if (ld64(rb) != h) die_verify("client: echo %llu has stamp %#llx", (unsigned long long)i, (unsigned long long)ld64(rb));
    check_msg("client", rb, n, i, i == 0 || last);
    if (last) break;
    if (measuring) out[m++] = (float)((double)(t2 - t) / 1000.0);
    t = i == 0 ? now_ns() : t2;
  }
  double secs = (double)(now_ns() - mstart) / 1e9;
  close(fd);
  struct stats s = stats_of(out, m);
  free(sb0);
  free(sb1);
  free(rb);
  free(out);
  snprintf(g_result, sizeof g_result, "SOCKBENCH label=%s test=pp fam=%s size=%zu samples=%zu messages=%llu secs=%.3f median_us=%.3f p99_us=%.3f "
         "mean_us=%.3f min_us=%.3f max_us=%.3f\n",
         O.label, fam_name(), n, m, (unsigned long long)(i + 1), secs, s.med, s.p99, s.mean, s.min, s.max);
}

static void client_stream(void) {
  size_t w = O.size;
  unsigned char *wb = xmalloc(w);
  memcpy(wb, g_pat0, w);
  int fd = dial(O.mode == 2);
  /* Look at the clock about every 256 KiB, so that it costs nothing at 64 B. */
  uint64_t every = w >= (256u << 10) ? 1 : (256u << 10) / w;
  uint64_t k = 0, sent = 0, t0 = now_ns();
  for (;; k++) {
    st64(wb, k);
    send_all(fd, wb, w);
    sent += w;
    if ((k + 1) % every == 0 && (now_ns() - t0 >= O.time_ns || sent + w > O.max)) break;
  }
  k++;
  if (shutdown(fd, SHUT_WR) < 0) die("shutdown: %s", strerror(errno));
  struct receipt rc;
  if (!recv_all(fd, (unsigned char *)&rc, sizeof rc)) die("stream: EOF instead of the receipt");
  uint64_t t1 = now_ns();
  if (rc.magic != RECEIPT_MAGIC || rc.status != 0 || rc.bytes != sent)
    die_verify("client: receipt says %llu bytes (magic %#llx, status %llu), sent %llu", (unsigned long long)rc.bytes,
               (unsigned long long)rc.magic, (unsigned long long)rc.status, (unsigned long long)sent);
  unsigned char x;
  ssize_t r = read(fd, &x, 1);
  if (r != 0) die("stream: expected EOF after the receipt (read returned %zd)", r);
  close(fd);
  free(wb);
  double secs = (double)(t1 - t0) / 1e9;
  snprintf(g_result, sizeof g_result, "SOCKBENCH label=%s test=stream fam=%s size=%zu bytes=%llu writes=%llu server_reads=%llu secs=%.4f "
         "MBps=%.1f\n",
         O.label, fam_name(), w, (unsigned long long)sent, (unsigned long long)k, (unsigned long long)rc.reads, secs,
         (double)sent / secs / 1e6);
}

static void client_conn(void) {
  size_t n = O.size;
  unsigned char *sb0 = xmalloc(n), *sb1 = xmalloc(n), *rb = xmalloc(n);
  memcpy(sb0, g_pat0, n);
  memcpy(sb1, g_pat1, n);
  size_t cap = (size_t)O.max;
  float *out = xmalloc(sizeof(float) * cap);
  struct sockaddr_storage ss;
  socklen_t sl = make_addr(&ss);
  uint64_t t0 = now_ns(), hard = 4 * O.time_ns;
  uint64_t i = 0;
  size_t m = 0;
  for (;; i++) {
    uint64_t a = now_ns(), el = a - t0;
    int last = m + 1 >= cap || el >= O.time_ns || el >= hard;
    unsigned char *sb = (i == 0 || last) ? sb1 : sb0;
    uint64_t h = i | (last ? STAMP_LAST : 0);
    stamp_msg(sb, n, h);
    int fd;
    if (i == 0) {
      fd = dial(O.mode == 2); /* client mode: wait for the server to listen */
      a = t0 = now_ns();
    } else {
      fd = socket(O.fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) die("socket: %s", strerror(errno));
      set_nodelay(fd);
      while (connect(fd, (struct sockaddr *)&ss, sl) < 0)
        if (errno != EINTR) die("connect %llu: %s", (unsigned long long)i, strerror(errno));
    }
    send_all(fd, sb, n);
    if (!recv_all(fd, rb, n)) die("conn %llu: EOF instead of the response", (unsigned long long)i);
    close(fd);
    uint64_t b = now_ns();
    if (ld64(rb) != h) die_verify("client: response %llu has stamp %#llx", (unsigned long long)i, (unsigned long long)ld64(rb));
    check_msg("client", rb, n, i, 1);
    out[m++] = (float)((double)(b - a) / 1000.0);
    if (last) break;
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  struct stats s = stats_of(out, m);
  free(sb0);
  free(sb1);
  free(rb);
  free(out);
  snprintf(g_result, sizeof g_result, "SOCKBENCH label=%s test=conn fam=%s size=%zu conns=%zu secs=%.3f conns_per_s=%.1f median_us=%.3f "
         "p99_us=%.3f\n",
         O.label, fam_name(), n, m, secs, (double)m / secs, s.med, s.p99);
}

static void run_client(void) {
  snprintf(g_cell, sizeof g_cell, "%s %zu B client", test_name[O.test], O.size);
  alarm(O.watchdog_s);
  if (O.test == T_PP) client_pp();
  else if (O.test == T_STREAM) client_stream();
  else client_conn();
  alarm(0);
}

/* ------------------------------------------------------------------ options */

static int parse_size(const char *s, uint64_t *out) {
  char *e;
  errno = 0;
  unsigned long long v = strtoull(s, &e, 10);
  if (e == s || errno) return -1;
  switch (*e) {
  case 'k': case 'K': v <<= 10; e++; break;
  case 'm': case 'M': v <<= 20; e++; break;
  case 'g': case 'G': v <<= 30; e++; break;
  default: break;
  }
  if (*e == 'i') e++;
  if (*e == 'B' || *e == 'b') e++;
  if (*e) return -1;
  *out = v;
  return 0;
}

static void usage(int code) {
  fprintf(code ? stderr : stdout,
          "usage: sock_bench ADDR TEST SIZE [options]          (forks the server)\n"
          "       sock_bench server ADDR TEST SIZE [options]\n"
          "       sock_bench client ADDR TEST SIZE [options]\n"
          "  ADDR  tcp4:PORT (127.0.0.1) | unix:PATH\n"
          "  TEST  pp (ping-pong) | stream (one-way, SIZE-byte writes) | conn (connect+request+close)\n"
          "  SIZE  bytes, e.g. 64, 4K, 1M (pp/conn: at least 16; stream: at least 8)\n"
          "options:\n"
          "  --time MS        cell time target (default 300; hard stop at 4x)\n"
          "  --warm MS        ping-pong warm-up (default time/10, at most %d round trips)\n"
          "  --max N          at most N samples (pp) / connections (conn) / bytes (stream)\n"
          "  --read-size N    stream server read size (default 256K)\n"
          "  --write-chunk N  diagnostic: issue every write as write() calls of at most N bytes\n"
          "  --nagle 1        leave TCP_NODELAY off (default: on for every TCP socket)\n"
          "  --pin C[,S]      pin the client to CPU C (and the forked server to S)\n"
          "  --label STR      echoed in the result line (default: none)\n"
          "  --watchdog S     alarm() watchdog per process (default 30)\n",
          PP_WARM_MAX);
  exit(code);
}

static void parse_opts(int argc, char **argv) {
  int a = 1;
  if (argc > 1 && !strcmp(argv[1], "server")) O.mode = 1, a++;
  else if (argc > 1 && !strcmp(argv[1], "client")) O.mode = 2, a++;
  else if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) usage(0);
  if (argc - a < 3) usage(2);
  const char *addr = argv[a], *test = argv[a + 1], *size = argv[a + 2];
  a += 3;
  if (!strncmp(addr, "tcp4:", 5)) {
    char *e;
    long p = strtol(addr + 5, &e, 10);
    if (*e || e == addr + 5 || p < 1 || p > 65535) usage(2);
    O.fam = AF_INET;
    O.port = (int)p;
  } else if (!strncmp(addr, "unix:", 5)) {
    if (!addr[5] || strlen(addr + 5) >= sizeof O.path) {
      fprintf(stderr, "sock_bench: unix path empty or too long\n");
      exit(2);
    }
    O.fam = AF_UNIX;
    snprintf(O.path, sizeof O.path, "%s", addr + 5);
  } else {
    fprintf(stderr, "sock_bench: ADDR must be tcp4:PORT or unix:PATH\n");
    exit(2);
  }
  if (!strcmp(test, "pp")) O.test = T_PP;
  else if (!strcmp(test, "stream")) O.test = T_STREAM;
  else if (!strcmp(test, "conn")) O.test = T_CONN;
  else {
    fprintf(stderr, "sock_bench: TEST must be pp, stream or conn\n");
    exit(2);
  }
  uint64_t v;
  if (parse_size(size, &v) || v < (O.test == T_STREAM ? 8u : 16u) || v > MAX_SIZE) {
    fprintf(stderr, "sock_bench: bad SIZE '%s' (16..64M; stream 8..64M)\n", size);
    exit(2);
  }
  O.size = (size_t)v;
  O.time_ns = 300ull * 1000 * 1000;
  O.warm_ns = 0;
  O.max = 0;
  O.read_size = 256u << 10;
  O.write_chunk = SIZE_MAX;
  O.pin_client = O.pin_server = -1;
  O.watchdog_s = 30;
  O.label = "-";
  for (; a < argc; a++) {
    const char *k = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;
    if (!val) {
      fprintf(stderr, "sock_bench: %s needs a value\n", k);
      exit(2);
    }
    a++;
    if (!strcmp(k, "--time") || !strcmp(k, "--warm")) {
      char *e;
      unsigned long ms = strtoul(val, &e, 10);
      if (*e || e == val || ms > 600000) usage(2);
      if (k[2] == 't') O.time_ns = ms * 1000000ull;
      else O.warm_ns = ms * 1000000ull;
    } else if (!strcmp(k, "--max")) {
      if (parse_size(val, &O.max) || O.max < 1) usage(2);
    } else if (!strcmp(k, "--read-size")) {
      if (parse_size(val, &v) || v < 1 || v > MAX_SIZE) usage(2);
      O.read_size = (size_t)v;
    } else if (!strcmp(k, "--write-chunk")) {
      if (parse_size(val, &v) || v < 1 || v > MAX_SIZE) usage(2);
      O.write_chunk = (size_t)v;
    } else if (!strcmp(k, "--pin")) {
      char *e;
      O.pin_client = (int)strtol(val, &e, 10);
      if (e == val || O.pin_client < 0) usage(2);
      if (*e == ',') {
        const char *s = e + 1;
        O.pin_server = (int)strtol(s, &e, 10);
        if (e == s || O.pin_server < 0) usage(2);
      }
      if (*e) usage(2);
    } else if (!strcmp(k, "--nagle")) {
      O.nagle = atoi(val) != 0;
    } else if (!strcmp(k, "--label")) {
      O.label = val;
    } else if (!strcmp(k, "--watchdog")) {
      O.watchdog_s = (unsigned)atoi(val);
      if (O.watchdog_s < 1 || O.watchdog_s > 3600) usage(2);
    } else {
      fprintf(stderr, "sock_bench: unknown option '%s'\n", k);
      usage(2);
    }
  }
  if (!O.warm_ns) O.warm_ns = O.time_ns / 10;
  if (!O.max) O.max = O.test == T_STREAM ? STREAM_MAX_BYTES : 200000;
  if (O.test != T_STREAM && O.max > 10000000) O.max = 10000000;
  if (O.test == T_STREAM && O.max < O.size) O.max = O.size;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
  parse_opts(argc, argv);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);

  size_t plen = O.size > 64 ? O.size : 64;
  g_pat0 = xmalloc(plen);
  g_pat1 = xmalloc(plen);
  fill_pattern(g_pat0, plen, 0x243f6a8885a308d3ull);
  fill_pattern(g_pat1, plen, 0x13198a2e03707344ull);

  if (O.mode == 2) {
    pin_to(O.pin_client);
    run_client();
    fputs(g_result, stdout);
    free(g_pat0);
    free(g_pat1);
    return 0;
  }
  alarm(O.watchdog_s + 5); /* set-up */
  int l = make_listener();
  if (O.mode == 1) {
    g_role = "server";
    pin_to(O.pin_client);
    printf("sock_bench server ready on %s\n", O.fam == AF_INET ? "tcp4" : O.path);
    run_server(l);
    close(l);
    if (O.fam == AF_UNIX) unlink(O.path);
    return 0;
  }

  /* Fork mode: the child serves, the parent measures. */
  fflush(NULL);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    g_role = "server";
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    pin_to(O.pin_server);
    run_server(l);
    close(l);
    exit(0); /* through exit(): the shim's destructors run, as in a real server */
  }
  g_child = pid;
  close(l);
  pin_to(O.pin_client);
  run_client();
  snprintf(g_cell, sizeof g_cell, "waiting for the server to exit");
  alarm(O.watchdog_s);
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) die("waitpid: %s", strerror(errno));
  g_child = 0;
  alarm(0);
  if (O.fam == AF_UNIX) unlink(O.path);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "sock_bench: server %s %d\n", WIFEXITED(st) ? "exited with status" : "killed by signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return WIFEXITED(st) && WEXITSTATUS(st) == 4 ? 4 : 1;
  }
  fputs(g_result, stdout);
  free(g_pat0);
  free(g_pat1);
  return 0;
}

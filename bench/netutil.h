/* Socket helpers for the small bench clients (loadgen, io_loop): an address given
 * as tcp4:PORT (127.0.0.1) or unix:PATH, dial with retry, listen, whole-buffer
 * send and receive, and one error exit. Header-only: each bench is one binary. */
#ifndef SHMSHIM_NETUTIL_H
#define SHMSHIM_NETUTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "benchutil.h"

static const char *g_prog = "bench";

/* Exit status: 1 error, 2 usage, 3 watchdog, 4 data verification failed. */
static void die_code(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_code(int code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n", g_prog, buf);
  if (code == 4) fprintf(stderr, "%s: DATA VERIFICATION FAILED\n", g_prog);
  _exit(code);
}
#define die(...) die_code(1, __VA_ARGS__)
#define die_verify(...) die_code(4, __VA_ARGS__)

static void on_alarm(int sig) {
  (void)sig;
  char m[200];
  size_t n = cat(m, 0, sizeof m, g_prog);
  n = cat(m, n, sizeof m, ": WATCHDOG: ran too long, giving up\n");
  ssize_t rc = write(2, m, n); /* async-signal-safe: no stdio here */
  (void)rc;
  _exit(3);
}

static inline void watchdog(unsigned secs) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  alarm(secs);
}

struct addr {
  struct sockaddr_storage ss;
  socklen_t len;
  int fam;
};

static void parse_addr(const char *s, struct addr *a) {
  memset(a, 0, sizeof *a);
  if (!strncmp(s, "tcp4:", 5)) {
    char *e;
    long p = strtol(s + 5, &e, 10);
    if (*e || e == s + 5 || p < 1 || p > 65535) die_code(2, "bad port in '%s'", s);
    struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)p);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->len = sizeof *in;
    a->fam = AF_INET;
  } else if (!strncmp(s, "unix:", 5)) {
    struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(s + 5);
    if (!n || n >= sizeof un->sun_path) die_code(2, "unix path empty or too long in '%s'", s);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, s + 5, n);
    a->len = (socklen_t)sizeof *un;
    a->fam = AF_UNIX;
  } else {
    die_code(2, "address must be tcp4:PORT or unix:PATH, not '%s'", s);
  }
}

static inline void nodelay(const struct addr *a, int fd) {
  int one = 1;
  if (a->fam == AF_INET && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
    die("TCP_NODELAY: %s", strerror(errno));
}

/* Connect, retrying for up to 5 s while nobody listens yet. */
static inline int dial(const struct addr *a) {
  uint64_t deadline = now_ns() + 5000000000ull;
  for (;;) {
    int fd = socket(a->fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    nodelay(a, fd);
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) return fd;
    int e = errno;
    close(fd);
    if (e == EINTR) continue;
    if ((e != ECONNREFUSED && e != ENOENT) || now_ns() > deadline) die("connect: %s", strerror(e));
    usleep(10000);
  }
}

static inline int listen_on(const struct addr *a) {
  int l = socket(a->fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) die("socket: %s", strerror(errno));
  if (a->fam == AF_INET) {
    int one = 1;
    if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR: %s", strerror(errno));
  } else {
    const char *path = ((const struct sockaddr_un *)&a->ss)->sun_path;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path); /* a stale socket of ours */
  }
  if (bind(l, (const struct sockaddr *)&a->ss, a->len) < 0) die("bind: %s", strerror(errno));
  if (listen(l, 512) < 0) die("listen: %s", strerror(errno));
  return l;
}

static inline void send_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write: %s", strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
}

/* 1: all n bytes; 0: EOF before the first byte. EOF in the middle is an error. */
static inline int recv_all(int fd, void *buf, size_t n) {
  char *p = buf;
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

static inline int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of n samples, sorting them in place. */
static inline double quantile(float *s, size_t n, double q) {
  if (!n) return 0;
  qsort(s, n, sizeof *s, cmp_float);
  size_t k = (size_t)((double)n * q + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return s[k - 1];
}

#endif

/* loadgen: small clients for real servers, for the bench driver (bench/run.sh).
 *
 *   loadgen ADDR mc   [--conns N] [--time MS] [--keys K] [--value B] [--set-pct P]
 *       memcached text protocol: N connections (one thread, epoll), each with one
 *       request outstanding at a time, random keys, P% sets and the rest gets,
 *       for MS milliseconds. Every response is compared byte for byte with the
 *       one it must be (values are a function of the key). Prints
 *       LOADGEN mode=mc conns= ops= secs= ops_per_s= p50_us= p99_us= gets= sets=
 *   loadgen ADDR lat  [--time MS] [--interval-ms I | --interval-us U] [--samples N]
 *       redis: one connection, a PING every I ms (10, as redis-cli --latency) or
 *       U µs, round trips timed to the nanosecond, for MS milliseconds or N
 *       samples, whichever comes first. Prints
 *       LOADGEN mode=lat samples= p50_us= p99_us= avg_us= min_us= max_us=
 *   loadgen ADDR churn [--time MS] [--samples N]
 *       redis: for MS milliseconds, one connection at a time: connect, PING,
 *       close; right after, one long connection with N PINGs back to back.
 *       Prints LOADGEN mode=churn conns= secs= conns_per_s= long_samples=
 *       long_p50_us= long_p99_us= long_fd= (the long connection's descriptor: the
 *       driver finds it in the shim's log).
 *   loadgen ADDR hold [--conns N] [--value B]
 *       redis: opens N connections; on each, SET hold:<i> to a B-byte value and GET
 *       it back (checked), or a PING when B is 0; prints "LOADGEN hold ready"
 *       with setup_ms= (the time those took, one connection after the other),
 *       then sleeps in poll() on all of them and on stdin until stdin is closed
 *       (the driver measures memory and CPU meanwhile; a connection becoming
 *       readable while idle is an error), then on every connection SETs and GETs
 *       a new value (checked; a PING when B is 0) and prints "LOADGEN hold done".
 *
 * ADDR: tcp4:PORT (127.0.0.1) or unix:PATH. A watchdog (--watchdog S, default 120)
 * bounds every mode. The soft RLIMIT_NOFILE is raised to the hard one (hold with
 * 10,000 connections). Exit status: 0 ok, 1 error, 2 usage, 3 watchdog, 4 data
 * verification failed. */
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#include "netutil.h"

static struct {
  struct addr a;
  unsigned conns, keys, set_pct, interval_ms, interval_us, samples;
  size_t value;
  uint64_t time_ms;
} O = {.conns = 50, .keys = 1000, .set_pct = 10, .interval_ms = 10, .value = 100, .time_ms = 1000};

#define MAX_SAMPLES 4000000

static uint64_t rng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* ------------------------------------------------------------------ memcached */

static void mc_value(char *v, size_t n, unsigned key) {
  for (size_t j = 0; j < n; j++) v[j] = (char)('a' + (key + j) % 26);
}

struct mconn {
  int fd;
  char req[2048], exp[2048];
  size_t req_len, exp_len, got;
  uint64_t t0;
  int is_set;
};

/* Builds the next request and the exact response it must get. */
static void mc_prepare(struct mconn *c, unsigned key, int is_set) {
  char val[1024];
  mc_value(val, O.value, key);
  int h;
  if (is_set) {
    h = snprintf(c->req, sizeof c->req, "set key:%u 0 0 %zu\r\n", key, O.value);
    memcpy(c->req + h, val, O.value);
    memcpy(c->req + h + O.value, "\r\n", 2);
    c->req_len = (size_t)h + O.value + 2;
    c->exp_len = (size_t)snprintf(c->exp, sizeof c->exp, "STORED\r\n");
  } else {
    c->req_len = (size_t)snprintf(c->req, sizeof c->req, "get key:%u\r\n", key);
    h = snprintf(c->exp, sizeof c->exp, "VALUE key:%u 0 %zu\r\n", key, O.value);
    memcpy(c->exp + h, val, O.value);
    memcpy(c->exp + h + O.value, "\r\nEND\r\n", 7);
    c->exp_len = (size_t)h + O.value + 7;
  }
  c->is_set = is_set;
  c->got = 0;
}

static void mc_check(struct mconn *c, const char *buf) {
  if (memcmp(buf, c->exp, c->exp_len) != 0)
    die_verify("memcached answered '%.40s' to '%.40s'", buf, c->req);
}

static void run_mc(void) {
  if (O.value < 1 || O.value > 1000 || O.conns < 1 || O.keys < 1) die_code(2, "mc: bad --value/--conns/--keys");
  struct mconn *cs = calloc(O.conns, sizeof *cs);
  float *lat = malloc(sizeof(float) * MAX_SAMPLES);
  char *rbuf = malloc(4096);
  if (!cs || !lat || !rbuf) die("out of memory");
  for (unsigned i = 0; i < O.conns; i++) cs[i].fd = dial(&O.a);

  /* Load every key through the first connection, then check one. */
  for (unsigned k = 0; k < O.keys; k++) {
    mc_prepare(&cs[0], k, 1);
    send_all(cs[0].fd, cs[0].req, cs[0].req_len);
    if (!recv_all(cs[0].fd, rbuf, cs[0].exp_len)) die("EOF while loading keys");
    mc_check(&cs[0], rbuf);
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1: %s", strerror(errno));
  uint64_t seed = 0x9e3779b97f4a7c15ull, ops = 0, sets = 0;
  size_t ns = 0;
  uint64_t t_start = now_ns(), t_end = t_start + O.time_ms * 1000000ull;
  unsigned outstanding = 0;
  for (unsigned i = 0; i < O.conns; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    uint64_t r = rng_next(&seed);
    mc_prepare(&cs[i], (unsigned)(r % O.keys), (unsigned)(r >> 32) % 100 < O.set_pct);
    cs[i].t0 = now_ns();
    send_all(cs[i].fd, cs[i].req, cs[i].req_len);
    outstanding++;
  }
  struct epoll_event evs[256];
  char *acc = malloc(O.conns * 2048u);
  if (!acc) die("out of memory");
  while (outstanding) {
    int n = epoll_wait(ep, evs, 256, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    uint64_t now = now_ns();
    for (int e = 0; e < n; e++) {
      struct mconn *c = &cs[evs[e].data.u32];
      char *b = acc + (size_t)evs[e].data.u32 * 2048u;
      ssize_t r = read(c->fd, b + c->got, 2048u - c->got);
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        die("read: %s", strerror(errno));
      }
      if (r == 0) die("memcached closed a connection");
      c->got += (size_t)r;
      if (c->got > c->exp_len) die_verify("memcached sent %zu bytes for a %zu-byte answer", c->got, c->exp_len);
      if (c->got < c->exp_len) continue;
      mc_check(c, b);
      ops++;
      sets += (uint64_t)c->is_set;
      if (ns < MAX_SAMPLES) lat[ns++] = (float)((double)(now - c->t0) / 1000.0);
      if (now >= t_end) {
        outstanding--;
        continue;
      }
      uint64_t x = rng_next(&seed);
      mc_prepare(c, (unsigned)(x % O.keys), (unsigned)(x >> 32) % 100 < O.set_pct);
      c->t0 = now_ns();
      send_all(c->fd, c->req, c->req_len);
    }
  }
  double secs = (double)(now_ns() - t_start) / 1e9;
  for (unsigned i = 0; i < O.conns; i++) close(cs[i].fd);
  double p50 = quantile(lat, ns, 0.50), p99 = quantile(lat, ns, 0.99);
  printf("LOADGEN mode=mc conns=%u ops=%llu secs=%.4f ops_per_s=%.1f p50_us=%.2f p99_us=%.2f gets=%llu sets=%llu\n",
         O.conns, (unsigned long long)ops, secs, (double)ops / secs, p50, p99, (unsigned long long)(ops - sets),
         (unsigned long long)sets);
}

/* ------------------------------------------------------------------ redis */

static const char PING[] = "*1\r\n$4\r\nPING\r\n";

static void redis_ping(int fd) {
  char r[7];
  send_all(fd, PING, sizeof PING - 1);
  if (!recv_all(fd, r, sizeof r)) die("redis closed the connection");
  if (memcmp(r, "+PONG\r\n", 7)) die_verify("PING answered '%.7s'", r);
}

static void run_lat(void) {
  uint64_t us = O.interval_us ? O.interval_us : (uint64_t)O.interval_ms * 1000u;
  size_t cap = O.time_ms * 1000u / (us ? us : 1) + 16;
  if (O.samples && O.samples < cap) cap = O.samples;
  float *s = malloc(sizeof(float) * cap);
  if (!s) die("out of memory");
  int fd = dial(&O.a);
  redis_ping(fd); /* the connection set-up is not a sample */
  struct timespec gap = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  uint64_t end = now_ns() + O.time_ms * 1000000ull;
  size_t n = 0;
  double sum = 0;
  while (n < cap && now_ns() < end) {
    nanosleep(&gap, NULL);
    uint64_t t0 = now_ns();
    redis_ping(fd);
    s[n] = (float)((double)(now_ns() - t0) / 1000.0);
    sum += s[n++];
  }
  close(fd);
  if (!n) die("no samples");
  double avg = sum / (double)n, p50 = quantile(s, n, 0.5), p99 = quantile(s, n, 0.99);
  printf("LOADGEN mode=lat samples=%zu p50_us=%.2f p99_us=%.2f avg_us=%.2f min_us=%.2f max_us=%.2f\n", n, p50, p99,
         avg, s[0], s[n - 1]);
}

/* Short connections one at a time, then a long one (see the header). */
static void run_churn(void) {
  size_t cap = O.samples ? O.samples : 2000;
  float *s = malloc(sizeof(float) * cap);
  if (!s) die("out of memory");
  uint64_t t0 = now_ns(), end = t0 + O.time_ms * 1000000ull, conns = 0;
  do {
    int fd = dial(&O.a);
    redis_ping(fd);
    close(fd);
    conns++;
  } while (now_ns() < end);
  double secs = (double)(now_ns() - t0) / 1e9;
  int fd = dial(&O.a);
  for (size_t i = 0; i < cap; i++) {
    uint64_t a = now_ns();
    redis_ping(fd);
    s[i] = (float)((double)(now_ns() - a) / 1000.0);
  }
  printf("LOADGEN mode=churn conns=%llu secs=%.4f conns_per_s=%.1f long_samples=%zu long_p50_us=%.2f "
         "long_p99_us=%.2f long_fd=%d\n",
         (unsigned long long)conns, secs, (double)conns / secs, cap, quantile(s, cap, 0.5), quantile(s, cap, 0.99), fd);
  close(fd);
}

/* SET hold:<i> to a value stamped with i and round, GET it back. */
static void hold_fill(int fd, unsigned i, unsigned round, char *req, char *resp, size_t v) {
  char key[32];
  int kl = snprintf(key, sizeof key, "hold:%u", i);
  int h = snprintf(req, 128, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%zu\r\n", kl, key, v);
  char *val = req + h;
  fill_pattern((unsigned char *)val, v, 0x243f6a8885a308d3ull + i + ((uint64_t)round << 32));
  memcpy(val + v, "\r\n", 2);
  send_all(fd, req, (size_t)h + v + 2);
  if (!recv_all(fd, resp, 5)) die("redis closed the connection");
  if (memcmp(resp, "+OK\r\n", 5)) die_verify("SET answered '%.5s'", resp);
  int g = snprintf(req + h + v + 2, 128, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, key);
  send_all(fd, req + h + v + 2, (size_t)g);
  char want[32];
  int wl = snprintf(want, sizeof want, "$%zu\r\n", v);
  if (!recv_all(fd, resp, (size_t)wl + v + 2)) die("redis closed the connection");
  if (memcmp(resp, want, (size_t)wl) || memcmp(resp + wl, val, v) || memcmp(resp + wl + v, "\r\n", 2))
    die_verify("GET hold:%u did not return the value that was set", i);
}

static void run_hold(void) {
  int *fds = calloc(O.conns, sizeof *fds);
  struct pollfd *p = calloc(O.conns + 1, sizeof *p);
  char *req = malloc(O.value + 512), *resp = malloc(O.value + 64);
  if (!fds || !p || !req || !resp) die("out of memory");
  uint64_t t0 = now_ns(); /* the set-up, timed here: the bench's polling of this output has 50 ms steps */
  for (unsigned i = 0; i < O.conns; i++) {
    fds[i] = dial(&O.a);
    if (O.value) hold_fill(fds[i], i, 0, req, resp, O.value);
    else redis_ping(fds[i]);
  }
  printf("LOADGEN hold ready conns=%u setup_ms=%.2f\n", O.conns, (double)(now_ns() - t0) / 1e6);
  fflush(stdout);
  p[0].fd = 0;
  p[0].events = POLLIN;
  for (unsigned i = 0; i < O.conns; i++) {
    p[i + 1].fd = fds[i];
    p[i + 1].events = POLLIN;
  }
  for (;;) {
    int n = poll(p, O.conns + 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("poll: %s", strerror(errno));
    }
    for (unsigned i = 0; i < O.conns; i++)
      if (p[i + 1].revents) die("connection %u became ready while idle (revents %#x)", i, p[i + 1].revents);
    if (p[0].revents) break;
  }
  for (unsigned i = 0; i < O.conns; i++) {
    if (O.value) hold_fill(fds[i], i, 1, req, resp, O.value); /* new bytes, after the idle time */
    else redis_ping(fds[i]);
    close(fds[i]);
  }
  printf("LOADGEN hold done conns=%u\n", O.conns);
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
  fprintf(stderr, "usage: loadgen ADDR mc|lat|churn|hold [--conns N] [--time MS] [--keys K] [--value B] [--set-pct P]\n"
                  "                              [--interval-ms I] [--interval-us U] [--samples N] [--watchdog S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  g_prog = "loadgen";
  if (argc < 3) usage();
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  parse_addr(argv[1], &O.a);
  const char *mode = argv[2];
  unsigned wd = 120;
  for (int i = 3; i < argc; i += 2) {
    if (i + 1 >= argc) usage();
    char *e;
    unsigned long long v = strtoull(argv[i + 1], &e, 10);
    if (*e || e == argv[i + 1]) usage();
    if (!strcmp(argv[i], "--conns")) O.conns = (unsigned)v;
    else if (!strcmp(argv[i], "--time")) O.time_ms = v;
    else if (!strcmp(argv[i], "--keys")) O.keys = (unsigned)v;
    else if (!strcmp(argv[i], "--value")) O.value = (size_t)v;
    else if (!strcmp(argv[i], "--set-pct")) O.set_pct = (unsigned)v;
    else if (!strcmp(argv[i], "--interval-ms")) O.interval_ms = (unsigned)v;
    else if (!strcmp(argv[i], "--interval-us")) O.interval_us = (unsigned)v;
    else if (!strcmp(argv[i], "--samples")) O.samples = (unsigned)v;
    else if (!strcmp(argv[i], "--watchdog")) wd = (unsigned)v;
    else usage();
  }
  if (O.conns < 1 || O.conns > 100000 || O.value > (64u << 20) || wd < 1) usage();
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl); /* failure shows as dial's EMFILE */
  }
  if (O.samples > MAX_SAMPLES) usage();
  watchdog(wd);
  if (!strcmp(mode, "mc")) run_mc();
  else if (!strcmp(mode, "lat")) run_lat();
  else if (!strcmp(mode, "churn")) run_churn();
  else if (!strcmp(mode, "hold")) run_hold();
  else usage();
  return 0;
}

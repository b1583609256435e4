/* Load: many concurrent connections, every byte checked.
 *
 *   load echo ADDR                      epoll echo server (level-triggered, one
 *                                       thread, any number of connections)
 *   load client ADDR CONNS BYTES SEED   opens CONNS connections at once; each sends
 *                                       its own stream of a random size (BYTES in
 *                                       all) in random-sized writes and checks the
 *                                       echo byte by byte
 *   load redis PORT CONNS BYTES SEED    CONNS concurrent redis connections; each
 *                                       SETs random-sized values (BYTES in all) under
 *                                       its own key and GETs them back, checked
 * Clients print "load: CONNS connections, BYTES bytes checked, MS ms, ERRORS
 * errors" and exit 0 only when every connection completed with every byte right. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relutil.h"

#define CHUNK 65536

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void raise_nofile(void) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

/* ------------------------------------------------------------- echo server */

struct econn {
  int fd;
  size_t len, off; /* pending echo bytes in buf[off..len) */
  unsigned char buf[CHUNK];
};

static int echo_server(const char *addr) {
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(addr, &ss, &fam);
  int l = socket(fam, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 4096) < 0) {
    perror("load echo: listen");
    return 2;
  }
  nonblock(l);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
  printf("ready\n");
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct econn *c = evs[i].data.ptr;
      if (!c) {
        int fd;
        while ((fd = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event e2 = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
        }
        continue;
      }
      int closed = 0;
      if (c->len == c->off && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        ssize_t r = read(c->fd, c->buf, sizeof c->buf);
        if (r > 0) {
          c->len = (size_t)r;
          c->off = 0;
        } else if (r == 0 || errno != EAGAIN) {
          closed = 1;
        }
      }
      while (!closed && c->off < c->len) {
        ssize_t w = write(c->fd, c->buf + c->off, c->len - c->off);
        if (w > 0) c->off += (size_t)w;
        else if (w < 0 && errno == EAGAIN) break;
        else closed = 1;
      }
      if (closed) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        free(c);
        continue;
      }
      /* Wait for room while echo bytes are pending, for input otherwise. */
      struct epoll_event e2 = {.events = c->off < c->len ? EPOLLOUT : EPOLLIN | EPOLLRDHUP, .data.ptr = c};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e2);
    }
  }
}

/* ------------------------------------------------------------ echo clients */

struct cconn {
  int fd;
  uint64_t seed, size, sent, got;
  int out_on, done;
};

static int dial_nb(const struct sockaddr_storage *ss, socklen_t sl, int fam) {
  int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (connect(fd, (const struct sockaddr *)ss, sl) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Random sizes that add up to `total` over n connections (each at least 1 byte). */
static uint64_t *split(uint64_t total, int n) {
  uint64_t *sz = calloc((size_t)n, sizeof *sz), sum = 0;
  for (int i = 0; i < n; i++) sum += sz[i] = 1 + rnd() % 1000;
  uint64_t left = total;
  for (int i = 0; i < n; i++) {
    sz[i] = i == n - 1 ? (left ? left : 1) : 1 + total * sz[i] / sum;
    left -= sz[i] < left ? sz[i] : left;
  }
  return sz;
}

static int echo_clients(const char *addr, int n, uint64_t total) {
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(addr, &ss, &fam);
  uint64_t *sz = split(total, n);
  struct cconn *cs = calloc((size_t)n, sizeof *cs);
  int ep = epoll_create1(0), active = 0, errors = 0;
  uint64_t checked = 0, t0 = rel_now_ns();
  for (int i = 0; i < n; i++) {
    cs[i].fd = dial_nb(&ss, sl, fam);
    if (cs[i].fd < 0) {
      fprintf(stderr, "load: connect %d: %s\n", i, strerror(errno));
      errors++;
      cs[i].done = 1;
      continue;
    }
    cs[i].seed = rnd();
    cs[i].size = sz[i];
    cs[i].out_on = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    active++;
  }
  static unsigned char buf[CHUNK];
  struct epoll_event evs[256];
  while (active > 0) {
    int k = epoll_wait(ep, evs, 256, 30000);
    if (k == 0) {
      fprintf(stderr, "load: no progress for 30 s with %d connections active\n", active);
      errors += active;
      break;
    }
    for (int i = 0; i < k; i++) {
      struct cconn *c = evs[i].data.ptr;
      if (c->done) continue;
      int fail = 0;
      if ((evs[i].events & EPOLLOUT) && c->sent < c->size) {
        size_t want = 1 + rnd() % CHUNK;
        if (want > c->size - c->sent) want = (size_t)(c->size - c->sent);
        for (size_t j = 0; j < want; j++) buf[j] = rel_gen(c->seed, c->sent + j);
        ssize_t w = write(c->fd, buf, want);
        if (w > 0) c->sent += (uint64_t)w;
        else if (!(w < 0 && (errno == EAGAIN || errno == ENOTCONN))) fail = 1;
      }
      if (!fail && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r > 0) {
          for (ssize_t j = 0; j < r; j++)
            if (buf[j] != rel_gen(c->seed, c->got + (uint64_t)j)) {
              fprintf(stderr, "load: connection %ld: byte %llu differs\n", (long)(c - cs),
                      (unsigned long long)(c->got + (uint64_t)j));
              fail = 1;
              break;
            }
          c->got += (uint64_t)r;
        } else if (r == 0 || errno != EAGAIN) {
          fprintf(stderr, "load: connection %ld ended after %llu of %llu bytes: %s\n", (long)(c - cs),
                  (unsigned long long)c->got, (unsigned long long)c->size, r == 0 ? "EOF" : strerror(errno));
          fail = 1;
        }
      }
      if (!fail && c->out_on && c->sent == c->size) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->out_on = 0;
      }
      if (fail || c->got == c->size) {
        if (fail) errors++;
        else checked += c->size;
        c->done = 1;
        active--;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
      }
    }
  }
  printf("load: %d connections, %llu bytes checked, %.0f ms, %d errors\n", n, (unsigned long long)checked,
         (double)(rel_now_ns() - t0) / 1e6, errors);
  return errors ? 1 : 0;
}

/* ----------------------------------------------------------- redis clients */

struct rconn {
  int fd;
  uint64_t seed, left, vlen, vbase; /* bytes still to SET; current value; its offset */
  int phase;                         /* 0 send SET, 1 read +OK, 2 send GET, 3 read value */
  unsigned char *out, *in;
  size_t outlen, outoff, inlen, incap;
  char key[32];
  int done;
};

static void redis_cmd(struct rconn *c, int set) {
  size_t klen = strlen(c->key), v = set ? (size_t)c->vlen : 0;
  free(c->out);
  c->out = malloc(v + 128);
  int h = set ? sprintf((char *)c->out, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", klen, c->key, v)
              : sprintf((char *)c->out, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", klen, c->key);
  if (set) {
    for (size_t j = 0; j < v; j++) c->out[h + (int)j] = rel_gen(c->seed, c->vbase + j);
    memcpy(c->out + h + v, "\r\n", 2);
    h += (int)v + 2;
  }
  c->outlen = (size_t)h;
  c->outoff = 0;
  c->inlen = 0;
}

/* 1: a complete, correct reply is in; 0: need more; -1: wrong. */
static int redis_reply(struct rconn *c) {
  if (c->phase == 1) {
    if (c->inlen < 5) return 0;
    return memcmp(c->in, "+OK\r\n", 5) == 0 && c->inlen == 5 ? 1 : -1;
  }
  char hdr[32];
  int h = snprintf(hdr, sizeof hdr, "$%llu\r\n", (unsigned long long)c->vlen);
  if (c->inlen < (size_t)h + c->vlen + 2) return 0;
  if (memcmp(c->in, hdr, (size_t)h) || c->inlen != (size_t)h + c->vlen + 2) return -1;
  for (uint64_t j = 0; j < c->vlen; j++)
    if (c->in[h + j] != rel_gen(c->seed, c->vbase + j)) return -1;
  return 1;
}

static int redis_clients(int port, int n, uint64_t total) {
  struct sockaddr_storage ss;
  int fam;
  char a[32];
  snprintf(a, sizeof a, "tcp4:%d", port);
  socklen_t sl = rel_parse_addr(a, &ss, &fam);
  uint64_t *sz = split(total, n);
  struct rconn *cs = calloc((size_t)n, sizeof *cs);
  int ep = epoll_create1(0), active = 0, errors = 0;
  uint64_t checked = 0, t0 = rel_now_ns();
  for (int i = 0; i < n; i++) {
    struct rconn *c = &cs[i];
    c->fd = dial_nb(&ss, sl, fam);
    if (c->fd < 0) {
      errors++;
      c->done = 1;
      continue;
    }
    c->seed = rnd();
    c->left = sz[i];
    snprintf(c->key, sizeof c->key, "shmshim:load:%d:%llu", i, (unsigned long long)(c->seed % 100000));
    c->vlen = 1 + rnd() % (c->left < CHUNK ? c->left : CHUNK);
    redis_cmd(c, 1);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    active++;
  }
  struct epoll_event evs[256];
  while (active > 0) {
    int k = epoll_wait(ep, evs, 256, 30000);
    if (k == 0) {
      fprintf(stderr, "load redis: no progress for 30 s with %d connections active\n", active);
      errors += active;
      break;
    }
    for (int i = 0; i < k; i++) {
      struct rconn *c = evs[i].data.ptr;
      if (c->done) continue;
      int fail = 0, finished = 0;
      if (c->phase == 0 || c->phase == 2) {
        ssize_t w = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w > 0) c->outoff += (size_t)w;
        else if (!(w < 0 && (errno == EAGAIN || errno == ENOTCONN))) fail = 1;
        if (!fail && c->outoff == c->outlen) {
          c->phase++;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
      } else {
        size_t want = (size_t)c->vlen + 64;
        if (c->incap < want) {
          c->in = realloc(c->in, want);
          c->incap = want;
        }
        ssize_t r = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
        if (r > 0) c->inlen += (size_t)r;
        else if (r == 0 || errno != EAGAIN) fail = 1;
        int rep = fail ? -1 : redis_reply(c);
        if (rep < 0) {
          fprintf(stderr, "load redis: connection %ld: wrong reply (phase %d, %zu bytes)\n", (long)(c - cs), c->phase,
                  c->inlen);
          fail = 1;
        } else if (rep == 1) {
          if (c->phase == 1) {
            c->phase = 2;
            redis_cmd(c, 0);
          } else {
            checked += c->vlen;
            c->left -= c->vlen < c->left ? c->vlen : c->left;
            c->vbase += c->vlen;
            if (c->left == 0) {
              finished = 1;
            } else {
              c->vlen = 1 + rnd() % (c->left < CHUNK ? c->left : CHUNK);
              c->phase = 0;
              redis_cmd(c, 1);
            }
          }
          if (!finished) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
          }
        }
      }
      if (fail || finished) {
        if (fail) errors++;
        c->done = 1;
        active--;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        free(c->out);
        free(c->in);
      }
    }
  }
  printf("load: %d connections, %llu bytes checked, %.0f ms, %d errors\n", n, (unsigned long long)checked,
         (double)(rel_now_ns() - t0) / 1e6, errors);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  if (argc == 3 && !strcmp(argv[1], "echo")) return echo_server(argv[2]);
  if (argc == 6) {
    rng ^= strtoull(argv[5], NULL, 0) * 0x9E3779B97F4A7C15ull;
    if (!rng) rng = 1;
    alarm(600);
    if (!strcmp(argv[1], "client")) return echo_clients(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 0));
    if (!strcmp(argv[1], "redis")) return redis_clients(atoi(argv[2]), atoi(argv[3]), strtoull(argv[4], NULL, 0));
  }
  fprintf(stderr, "usage: see load.c\n");
  return 2;
}

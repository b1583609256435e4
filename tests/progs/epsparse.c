/* epsparse: many connections, few of them active at a time, through one
 * single-threaded epoll server, for tests/preload/epsparse.sh (the shim's hot and
 * cold epoll members: docs/design.md "Readiness translation").
 *
 *   epsparse server ADDR N      ADDR: tcp:PORT (127.0.0.1) or unix:PATH
 *   epsparse client ADDR N OPS SEED
 *
 * The client opens N connections, says which one each is (a 4-byte id), then in
 * OPS rounds picks one to four of them in a pseudo-random order and, after a
 * pseudo-random sparse delay, sends each a request (a 4-byte length and 1 B to
 * 300 KB of pseudo-random bytes; some sent in two parts; for some, the reply is
 * read only once the request is sent, so that the server's writes find the ring
 * and the socket full). The server echoes every byte XOR a key of the
 * connection and the byte's position. Its connections, by id modulo 8: 0-2
 * level-triggered EPOLLIN (EPOLLOUT added while output is pending), 3-5
 * edge-triggered EPOLLIN|EPOLLOUT|EPOLLRDHUP registered once (read and write until
 * EAGAIN; for half of them the reply is written only after the next epoll_wait,
 * when the shim has made the member cold, then on EPOLLOUT), 6 EPOLLONESHOT re-armed with EPOLL_CTL_MOD after each event, 7
 * level-triggered, deleted when a reply is complete and added again after the
 * next epoll_wait (as redis's event loop does). The level-triggered and one-shot
 * ones read at most 16 KiB per event.
 * Then some connections half-close after a request (the server must see EOF,
 * EPOLLRDHUP for the edge-triggered ones, and close after the reply; the client
 * must read the whole reply, then EOF), some idle (cold) ones are closed abruptly
 * (SO_LINGER {1,0} on TCP for half of them), more rounds run on the rest, and the
 * client checks that no idle connection holds stray bytes and closes the rest.
 * Every reply byte is checked. A reply that makes no progress for 5 s, or a
 * server with no event for 10 s, is a failure that names the connection and
 * what it waited for. Outputs (per-connection totals and digests) are the same
 * with and without the shim; exit status 0 means every check passed. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "listen.h"

#define MAXREQ (300 * 1024)
#define STALL_MS 5000
#define SERVER_IDLE_MS 10000

static uint8_t key(uint32_t id, uint64_t i) { return (uint8_t)(id * 37u + (uint32_t)(i % 251) * 13u + 1u); }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint32_t fnv(uint32_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Requests sent in two parts would otherwise wait for delayed ACKs (TCP). */
static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---------------------------------------------------------------- server --- */

enum { M_LT, M_ET, M_ONESHOT, M_DELADD };
static const char *mode_name[] = {"level", "edge", "oneshot", "del/add"};

struct sconn {
  int fd, id, mode;
  uint8_t hdr[4];
  int hdr_got;
  uint32_t left;   /* payload bytes of the current request still to read */
  uint64_t pos;    /* position in the current request */
  uint8_t *out;    /* transformed bytes still to write */
  size_t out_len, out_off, out_cap;
  int eof, rdhup, deleted;
  int queued;  /* on the deferred-write list (since loop iteration queued - 1) */
  int blocked; /* a deferred write found no room: EPOLLOUT goes on */
  uint32_t events; /* as registered */
  uint64_t reqs, bytes;
  uint32_t sum;
};

static int ep, s_n, s_closed;
static uint64_t s_reqs, s_bytes;
static uint32_t s_sum[4096], s_cnt[4096];
static uint64_t s_b[4096];

static int s_fail(struct sconn *c, const char *what) {
  printf("server FAIL conn %d (%s, fd %d): %s: %s\n", c->id, c->id >= 0 ? mode_name[c->mode] : "-", c->fd, what,
         strerror(errno));
  fflush(stdout);
  exit(1);
}

static void s_ctl(struct sconn *c, int op, uint32_t ev) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &e) < 0) s_fail(c, op == EPOLL_CTL_ADD ? "EPOLL_CTL_ADD" : op == EPOLL_CTL_MOD ? "EPOLL_CTL_MOD" : "EPOLL_CTL_DEL");
  c->events = ev;
}

/* The interest a level-triggered or one-shot connection wants now. */
static uint32_t s_want(struct sconn *c) {
  uint32_t ev = (c->eof ? 0 : EPOLLIN) | (c->out_len > c->out_off ? EPOLLOUT : 0);
  if (c->mode == M_ONESHOT) ev |= EPOLLONESHOT;
  return ev;
}

static struct sconn *readd[4096], *deferred[4096];
static int nreadd, ndeferred;
static int iter; /* of the server's loop */

/* Edge-triggered connections that write their replies only after the next
 * epoll_wait (as a server that answers from a timer or a backend), when the shim
 * has made their members cold: the write that finds the ring full must make the
 * member arm for room (pl_epoll_tx_short), or the EPOLLOUT edge is lost. */
static int defers(struct sconn *c) { return c->mode == M_ET && (c->id / 8) % 2 == 0; }

static void s_close(struct sconn *c) {
  if (c->queued) {
    for (int i = 0; i < ndeferred; i++)
      if (deferred[i] == c) {
        deferred[i] = deferred[--ndeferred];
        break;
      }
  }
  if (c->id >= 0 && c->id < 4096) {
    s_sum[c->id] = c->sum;
    s_cnt[c->id] = (uint32_t)c->reqs;
    s_b[c->id] = c->bytes;
  }
  close(c->fd); /* also leaves the epoll set (also a deleted one) */
  free(c->out);
  free(c);
  s_closed++;
}

/* Consumes n received bytes: the id, then headers and payloads. */
static void s_consume(struct sconn *c, const uint8_t *p, size_t n) {
  while (n) {
    if (c->id < 0 || c->left == 0) {
      size_t k = 4 - (size_t)c->hdr_got;
      if (k > n) k = n;
      memcpy(c->hdr + c->hdr_got, p, k);
      c->hdr_got += (int)k, p += k, n -= k;
      if (c->hdr_got < 4) return;
      uint32_t v;
      memcpy(&v, c->hdr, 4);
      c->hdr_got = 0;
      if (c->id < 0) {
        if (v >= (uint32_t)s_n) { errno = EPROTO; s_fail(c, "bad id"); }
        c->id = (int)v;
        int m = c->id % 8;
        c->mode = m < 3 ? M_LT : m < 6 ? M_ET : m == 6 ? M_ONESHOT : M_DELADD;
        continue;
      }
      if (v == 0 || v > MAXREQ) { errno = EPROTO; s_fail(c, "bad request length"); }
      c->left = v;
      c->pos = 0;
      c->reqs++;
      s_reqs++;
      continue;
    }
    size_t k = n < c->left ? n : c->left;
    if (c->out_len + k > c->out_cap) {
      if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off, c->out_off = 0;
      }
      if (c->out_len + k > c->out_cap) {
        c->out_cap = (c->out_len + k) * 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) s_fail(c, "realloc");
      }
    }
    for (size_t i = 0; i < k; i++) c->out[c->out_len + i] = p[i] ^ key((uint32_t)c->id, c->pos + i);
    c->sum = fnv(c->sum, p, k);
    c->out_len += k;
    c->pos += k, c->left -= (uint32_t)k, c->bytes += k, s_bytes += k;
    p += k, n -= k;
  }
}

/* Reads once, or until EAGAIN; sets eof at EOF or a reset. */
static void s_read(struct sconn *c, int until_eagain) {
  uint8_t buf[16384];
  while (!c->eof) {
    ssize_t r = read(c->fd, buf, sizeof buf);
    if (r > 0) {
      s_consume(c, buf, (size_t)r);
      if (!until_eagain) return;
      continue;
    }
    if (r == 0) {
      if (c->left || c->hdr_got) { errno = EPROTO; s_fail(c, "EOF inside a request"); }
      c->eof = 1;
      return;
    }
    if (errno == EAGAIN) return;
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) { /* the abrupt close: output is void */
      c->eof = 1;
      c->out_len = c->out_off = 0;
      return;
    }
    s_fail(c, "read");
  }
}

static void s_write(struct sconn *c) {
  while (c->out_off < c->out_len) {
    ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (w > 0) {
      c->out_off += (size_t)w;
      continue;
    }
    if (w < 0 && errno == EAGAIN) return;
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EPIPE || errno == ECONNRESET) && c->eof) {
      c->out_len = c->out_off = 0;
      return;
    }
    s_fail(c, "write");
  }
  c->out_len = c->out_off = 0;
}

static int s_done(struct sconn *c) {
  return c->eof && c->out_len == c->out_off && (c->mode != M_ET || c->rdhup);
}

static void s_event(struct sconn *c, uint32_t ev) {
  if (c->mode == M_ET && c->id >= 0) {
    if (ev & EPOLLRDHUP) c->rdhup = 1;
    s_read(c, 1);
    if (!defers(c) || ((ev & EPOLLOUT) && c->blocked)) {
      s_write(c);
      c->blocked = c->out_len > c->out_off;
    } else if (c->out_len > c->out_off && !c->queued && !c->blocked) {
      c->queued = iter + 1;
      deferred[ndeferred++] = c;
    }
    if (s_done(c)) s_close(c);
    return;
  }
  int had_id = c->id >= 0;
  if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) s_read(c, 0);
  s_write(c);
  if (!had_id && c->id >= 0 && c->mode != M_LT) {
    /* Registered level-triggered until the id came: its own interest now. */
    if (c->mode == M_ET) {
      s_ctl(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
      return; /* the rest of what is buffered is reported by the MOD */
    }
  }
  if (s_done(c)) {
    s_close(c);
    return;
  }
  if (c->mode == M_DELADD && c->id >= 0 && c->left == 0 && c->hdr_got == 0 && c->out_len == c->out_off && !c->eof) {
    /* A reply complete: out of the set until after the next epoll_wait. */
    s_ctl(c, EPOLL_CTL_DEL, 0);
    c->deleted = 1;
    readd[nreadd++] = c;
    return;
  }
  uint32_t want = s_want(c);
  if (c->mode == M_ONESHOT || want != c->events) s_ctl(c, EPOLL_CTL_MOD, want);
}

static int server(const char *addr, int n) {
  s_n = n;
  int lfd = listen_on(addr);
  if (lfd < 0) {
    perror("listen");
    return 2;
  }
  nonblock(lfd);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &e);
  printf("ready\n");
  fflush(stdout);
  int accepted = 0;
  uint64_t last = now_ms();
  struct epoll_event evs[64];
  while (s_closed < n) {
    int r = epoll_wait(ep, evs, 64, nreadd ? 0 : ndeferred ? 1 : 1000);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < nreadd; i++) {
      readd[i]->deleted = 0;
      s_ctl(readd[i], EPOLL_CTL_ADD, EPOLLIN);
    }
    nreadd = 0;
    if (r > 0) {
      last = now_ms();
    } else if (now_ms() - last > SERVER_IDLE_MS) {
      printf("server FAIL: no event for %d ms with %d of %d connections closed\n", SERVER_IDLE_MS, s_closed, n);
      return 1;
    }
    for (int i = 0; i < r; i++) {
      if (!evs[i].data.ptr) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          struct sconn *c = calloc(1, sizeof *c);
          c->fd = fd, c->id = -1, c->sum = 2166136261u;
          if (!strncmp(addr, "tcp:", 4)) nodelay(fd);
          s_ctl(c, EPOLL_CTL_ADD, EPOLLIN);
          accepted++;
        }
        continue;
      }
      s_event(evs[i].data.ptr, evs[i].events);
    }
    /* The replies deferred before this iteration's epoll_wait. */
    for (int i = 0; i < ndeferred;) {
      struct sconn *c = deferred[i];
      if (c->queued > iter) {
        i++;
        continue;
      }
      deferred[i] = deferred[--ndeferred];
      c->queued = 0;
      s_write(c);
      c->blocked = c->out_len > c->out_off;
      if (s_done(c)) s_close(c);
    }
    iter++;
  }
  uint32_t d = 2166136261u;
  for (int i = 0; i < n; i++) {
    d = fnv(d, (uint8_t *)&s_sum[i], 4);
    d = fnv(d, (uint8_t *)&s_cnt[i], 4);
    d = fnv(d, (uint8_t *)&s_b[i], 8);
  }
  printf("server accepted %d closed %d requests %llu bytes %llu digest %08x\n", accepted, s_closed,
         (unsigned long long)s_reqs, (unsigned long long)s_bytes, d);
  return 0;
}

/* ---------------------------------------------------------------- client --- */

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

struct cconn {
  int fd, open;
  uint64_t reqs, bytes;
  uint32_t sum;
};

struct req {
  int id;
  uint8_t *buf; /* header and payload */
  size_t len, sent, pause_at, got;
  int lazy; /* read the reply only once the request is sent */
  uint64_t last;
};

static struct cconn *cc;
static int c_n;

static int c_fail(int id, const char *fmt, const char *detail) {
  printf("client FAIL conn %d (%s): %s: %s\n", id, mode_name[id % 8 < 3 ? 0 : id % 8 < 6 ? 1 : id % 8 == 6 ? 2 : 3],
         fmt, detail);
  fflush(stdout);
  exit(1);
}

static void make_req(struct req *q, int id) {
  uint64_t r = rnd() % 100;
  /* A few larger than the default ring (256 KiB): those replies cannot fit. */
  size_t n = r < 50   ? 1 + rnd() % 100
             : r < 75 ? 1 + rnd() % 4096
             : r < 88 ? 1 + rnd() % 65536
             : r < 94 ? 65536 + rnd() % (262144 - 65536)
                      : 262144 + rnd() % (MAXREQ - 262144 + 1);
  q->id = id;
  q->len = n + 4;
  q->buf = malloc(q->len);
  uint32_t v = (uint32_t)n;
  memcpy(q->buf, &v, 4);
  uint64_t s = rnd();
  for (size_t i = 0; i < n; i++) {
    if (i % 8 == 0) s = s * 6364136223846793005ull + 1442695040888963407ull;
    q->buf[4 + i] = (uint8_t)(s >> (8 * (i % 8)));
  }
  q->sent = q->got = 0;
  q->pause_at = rnd() % 10 == 0 ? 1 + rnd() % (q->len - 1 ? q->len - 1 : 1) : 0;
  q->lazy = rnd() % 4 == 0;
}

/* Runs the requests of a round to completion: every reply byte checked. */
static void run_reqs(struct req *q, int k, uint64_t op) {
  for (int i = 0; i < k; i++) q[i].last = now_ms();
  uint8_t buf[65536];
  for (;;) {
    struct pollfd p[8];
    int np = 0, left = 0;
    for (int i = 0; i < k; i++) {
      size_t plen = q[i].len - 4;
      if (q[i].got == plen) continue;
      left++;
      short ev = 0;
      if (q[i].sent < q[i].len) ev |= POLLOUT;
      if (!q[i].lazy || q[i].sent == q[i].len) ev |= POLLIN;
      p[np].fd = cc[q[i].id].fd, p[np].events = ev, p[np].revents = 0;
      np++;
    }
    if (!left) break;
    int r = poll(p, (nfds_t)np, 100);
    if (r < 0 && errno != EINTR) c_fail(-1, "poll", strerror(errno));
    np = 0;
    for (int i = 0; i < k; i++) {
      struct req *x = &q[i];
      size_t plen = x->len - 4;
      if (x->got == plen) continue;
      struct pollfd *pp = &p[np++];
      int fd = cc[x->id].fd;
      if ((pp->revents & POLLOUT) && x->sent < x->len) {
        size_t end = x->pause_at && x->sent < x->pause_at ? x->pause_at : x->len;
        ssize_t w = write(fd, x->buf + x->sent, end - x->sent);
        if (w < 0 && errno != EAGAIN && errno != EINTR) c_fail(x->id, "write", strerror(errno));
        if (w > 0) {
          x->sent += (size_t)w, x->last = now_ms();
          if (x->sent == x->pause_at) usleep(1000); /* the rest a little later */
        }
      }
      if (pp->revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t rd = read(fd, buf, sizeof buf);
        if (rd == 0) c_fail(x->id, "EOF while waiting for the reply", "");
        if (rd < 0 && errno != EAGAIN && errno != EINTR) c_fail(x->id, "read", strerror(errno));
        if (rd > 0) {
          if ((size_t)rd > plen - x->got) {
            char d[64];
            snprintf(d, sizeof d, "%zd bytes where %zu were left", rd, plen - x->got);
            c_fail(x->id, "stray bytes after a reply", d);
          }
          for (ssize_t j = 0; j < rd; j++) {
            uint8_t want = x->buf[4 + x->got + (size_t)j] ^ key((uint32_t)x->id, x->got + (size_t)j);
            if (buf[j] != want) {
              char d[96];
              snprintf(d, sizeof d, "round %llu offset %zu of %zu: got %02x, want %02x", (unsigned long long)op,
                       x->got + (size_t)j, plen, buf[j], want);
              c_fail(x->id, "wrong byte", d);
            }
          }
          cc[x->id].sum = fnv(cc[x->id].sum, buf, (size_t)rd);
          x->got += (size_t)rd, x->last = now_ms();
        }
      }
      if (x->got < plen && now_ms() - x->last > STALL_MS) {
        char d[160];
        snprintf(d, sizeof d, "round %llu: no progress for %d ms; request sent %zu of %zu, reply got %zu of %zu%s",
                 (unsigned long long)op, STALL_MS, x->sent, x->len, x->got, plen,
                 x->sent < x->len ? " (waiting for room to send)" : " (waiting for reply bytes)");
        c_fail(x->id, "timeout", d);
      }
    }
  }
  for (int i = 0; i < k; i++) {
    cc[q[i].id].reqs++;
    cc[q[i].id].bytes += q[i].len - 4;
    free(q[i].buf);
  }
}

static void sparse_delay(void) {
  uint64_t r = rnd() % 100;
  if (r < 60) return;
  usleep(r < 85 ? 100 : r < 98 ? 1000 : 20000);
}

static int pick_open(void) {
  for (;;) {
    int id = (int)(rnd() % (uint64_t)c_n);
    if (cc[id].open) return id;
  }
}

static void rounds(int ops, uint64_t *op) {
  struct req q[4];
  for (int done = 0; done < ops; (*op)++) {
    int k = rnd() % 10 < 7 ? 1 : 2 + (int)(rnd() % 3);
    if (k > ops - done) k = ops - done;
    for (int i = 0; i < k; i++) {
      int id, dup;
      do {
        id = pick_open(), dup = 0;
        for (int j = 0; j < i; j++) dup |= q[j].id == id;
      } while (dup);
      make_req(&q[i], id);
    }
    sparse_delay();
    run_reqs(q, k, *op);
    done += k;
  }
}

static int c_connect(const char *addr) {
  int fd;
  if (!strncmp(addr, "tcp:", 4)) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(addr + 4))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
    nodelay(fd);
  } else {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", addr + 5);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  }
  return fd;
}

/* Reads what is left of a reply, then EOF, on a half-closed connection. */
static int half_closed(int id) { return id % 25 == 3; }
static int abrupt(int id) { return id % 25 == 11; }

static int client(const char *addr, int n, int ops, uint64_t seed) {
  c_n = n;
  rng ^= seed * 0x9E3779B97F4A7C15ull;
  if (!rng) rng = 1;
  cc = calloc((size_t)n, sizeof *cc);
  for (int i = 0; i < n; i++) {
    cc[i].fd = c_connect(addr);
    if (cc[i].fd < 0) c_fail(i, "connect", strerror(errno));
    uint32_t v = (uint32_t)i;
    if (write(cc[i].fd, &v, 4) != 4) c_fail(i, "write id", strerror(errno));
    nonblock(cc[i].fd);
    cc[i].open = 1, cc[i].sum = 2166136261u;
  }
  uint64_t op = 0;
  rounds(ops * 2 / 3, &op);

  /* Half-close after a request: the reply, then EOF. */
  struct req q[4];
  int hq = 0;
  for (int id = 0; id < n; id++) {
    if (!half_closed(id)) continue;
    make_req(&q[hq], id);
    q[hq].lazy = 0, q[hq].pause_at = 0;
    while (q[hq].sent < q[hq].len) { /* the whole request first: the reply may be large */
      ssize_t w = write(cc[id].fd, q[hq].buf + q[hq].sent, q[hq].len - q[hq].sent);
      if (w > 0) q[hq].sent += (size_t)w;
      else if (w < 0 && errno == EAGAIN) {
        /* The server keeps reading while its reply is pending: room comes. */
        struct pollfd p = {.fd = cc[id].fd, .events = POLLOUT};
        if (poll(&p, 1, STALL_MS) == 0) c_fail(id, "timeout", "no room to send a request for 5 s");
      } else c_fail(id, "write", strerror(errno));
    }
    shutdown(cc[id].fd, SHUT_WR);
    if (++hq == 4) {
      run_reqs(q, hq, op++);
      hq = 0;
    }
  }
  if (hq) run_reqs(q, hq, op++);
  for (int id = 0; id < n; id++) {
    if (!half_closed(id)) continue;
    struct pollfd p = {.fd = cc[id].fd, .events = POLLIN};
    uint8_t b[16];
    if (poll(&p, 1, STALL_MS) == 0) c_fail(id, "timeout", "no EOF 5 s after the reply to a half-close");
    ssize_t rd = read(cc[id].fd, b, sizeof b);
    if (rd != 0) c_fail(id, "after a half-close", rd > 0 ? "bytes where EOF was due" : strerror(errno));
    close(cc[id].fd);
    cc[id].open = 0;
  }

  /* Abrupt close of idle connections (cold at the server by now). */
  usleep(50000);
  for (int id = 0; id < n; id++) {
    if (!abrupt(id) || !cc[id].open) continue;
    if (!strncmp(addr, "tcp:", 4) && (id / 25) % 2) {
      struct linger l = {1, 0};
      setsockopt(cc[id].fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(cc[id].fd);
    cc[id].open = 0;
  }
  rounds(ops - ops * 2 / 3, &op);

  /* No stray bytes on any connection left, then close. */
  for (int id = 0; id < n; id++) {
    if (!cc[id].open) continue;
    uint8_t b[16];
    ssize_t rd = read(cc[id].fd, b, sizeof b);
    if (rd >= 0 || errno != EAGAIN) c_fail(id, "at the end", rd > 0 ? "stray bytes" : rd == 0 ? "EOF" : strerror(errno));
    close(cc[id].fd);
  }
  uint32_t d = 2166136261u;
  uint64_t reqs = 0, bytes = 0;
  for (int id = 0; id < n; id++) {
    printf("conn %d %s requests %llu bytes %llu sum %08x\n", id, mode_name[id % 8 < 3 ? 0 : id % 8 < 6 ? 1 : id % 8 == 6 ? 2 : 3],
           (unsigned long long)cc[id].reqs, (unsigned long long)cc[id].bytes, cc[id].sum);
    d = fnv(d, (uint8_t *)&cc[id].sum, 4);
    reqs += cc[id].reqs, bytes += cc[id].bytes;
  }
  printf("client connections %d requests %llu bytes %llu digest %08x\n", n, (unsigned long long)reqs,
         (unsigned long long)bytes, d);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && !strcmp(argv[1], "server")) return server(argv[2], atoi(argv[3]));
  if (argc == 6 && !strcmp(argv[1], "client"))
    return client(argv[2], atoi(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 0));
  fprintf(stderr, "usage: epsparse server ADDR N | epsparse client ADDR N OPS SEED\n");
  return 2;
}

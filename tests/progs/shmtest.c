/* One client/server test program for the transparency matrix. The same binary runs
 * with and without LD_PRELOAD; every byte is checked.
 *
 *   shmtest server ADDR MODE SCENARIO SIZE   (prints "ready" once listening)
 *   shmtest client ADDR MODE SCENARIO SIZE
 *
 * ADDR: tcp4:PORT | tcp6:PORT | unix:PATH
 * MODE: block | poll | select | epoll | epollet
 * SCENARIO:
 *   echo     client streams SIZE bytes in random-sized writes, server echoes them,
 *            client half-closes, server answers EOF with EOF
 *   banner   server speaks first (SIZE bytes), then echo as above with SIZE bytes
 *   halfclose client sends SIZE bytes and shuts down writing; server reads to EOF,
 *            then sends back SIZE*2 bytes derived from what it read
 *   peek     like echo, but the server peeks before every read and checks it
 *   fork     like echo, but the server forks after accept: the child serves the
 *            connection, the parent closes its copy and waits for the child
 *   dup2     like echo, but the server moves the connection with dup2 onto a
 *            high number (over an open file), closes the original and uses the copy
 *   threads  two client threads each write SIZE/64 records of 64 bytes; the server
 *            checks every record and each thread's order, then replies with the count
 *   scm      (unix) after a one-byte greeting from the server, the client sends
 *            SIZE/100 records of 100 bytes; every 10th goes
 *            with sendmsg and SCM_RIGHTS of a memfd holding the record's number; the
 *            server's reads must get each descriptor with its record's first byte
 *   cred     (unix) both ends turn SO_PASSCRED on; the client sends SIZE/100 records
 *            of 100 bytes, every 10th with explicit SCM_CREDENTIALS; every read of
 *            the server must carry the client's pid, uid and gid
 *   kill     the client streams; the server kills itself (SIGKILL) after SIZE/2
 *            bytes; the client must see EOF, ECONNRESET or EPIPE, not hang
 *   exec     the server waits for the client's first bytes, then a forked child
 *            execs this program with the connection, which echoes (the library
 *            carries an upgraded connection over into the new image)
 *   execbare the same, into an image without the library: an upgraded connection
 *            ends (reset), it never hangs or hands kick bytes over as data
 *   execfresh the child execs with the connection before the server ever used it
 *            (inetd): the connection stays plain, and the echo works
 *   pollrace a client thread sits in a blocking read while another thread polls the
 *            same socket with short timeouts and then stops; only afterwards does
 *            the server send SIZE bytes: the reader must still be woken for them
 * Exit status 0 only if every byte matched. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stddef.h>
#include <unistd.h>

static const char *mode;
static int use_poll, use_select, use_epoll, use_et;

#define DIE(...) do { fprintf(stderr, "shmtest: " __VA_ARGS__); fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno)); exit(2); } while (0)

/* Deterministic byte stream: byte i of stream `seed`. */
static unsigned char gen(uint64_t seed, uint64_t i) {
  uint64_t x = (i / 8 + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
  return (unsigned char)(x >> ((i % 8) * 8));
}

static __thread uint64_t rng_state = 88172645463325252ull; /* per thread: the blocking mode reads in a second thread */
static uint64_t rnd(void) { rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17; return rng_state; }

static socklen_t parse_addr(const char *a, struct sockaddr_storage *ss, int *fam) {
  memset(ss, 0, sizeof *ss);
  if (!strncmp(a, "tcp4:", 5)) {
    struct sockaddr_in *s = (void *)ss;
    s->sin_family = AF_INET; s->sin_port = htons((uint16_t)atoi(a + 5)); s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fam = AF_INET; return sizeof *s;
  }
  if (!strncmp(a, "tcp6:", 5)) {
    struct sockaddr_in6 *s = (void *)ss;
    s->sin6_family = AF_INET6; s->sin6_port = htons((uint16_t)atoi(a + 5)); s->sin6_addr = in6addr_loopback;
    *fam = AF_INET6; return sizeof *s;
  }
  if (!strncmp(a, "unix:", 5)) {
    struct sockaddr_un *s = (void *)ss;
    s->sun_family = AF_UNIX; snprintf(s->sun_path, sizeof s->sun_path, "%s", a + 5);
    *fam = AF_UNIX; return (socklen_t)sizeof *s;
  }
  fprintf(stderr, "bad address %s\n", a); exit(2);
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Waits until fd is readable (want & 1) and/or writable (want & 2); returns what is. */
static int epfd = -1;
/* ET: a direction may only be waited for once it reported EAGAIN; any event
 * clears both (the kernel reports all current readiness with an edge). */
static int rd_blocked, wr_blocked;
static int wait_fd(int fd, int want) {
  if (use_poll) {
    struct pollfd p = {fd, (short)((want & 1 ? POLLIN : 0) | (want & 2 ? POLLOUT : 0)), 0};
    int r = poll(&p, 1, 20000);
    if (r == 0) DIE("poll timed out");
    if (r < 0) { if (errno == EINTR) return 0; DIE("poll"); }
    return (p.revents & (POLLIN | POLLHUP | POLLERR) ? 1 : 0) | (p.revents & (POLLOUT | POLLERR) ? 2 : 0);
  }
  if (use_select) {
    fd_set r, w; FD_ZERO(&r); FD_ZERO(&w);
    if (want & 1) FD_SET(fd, &r);
    if (want & 2) FD_SET(fd, &w);
    struct timeval tv = {20, 0};
    int n = select(fd + 1, &r, &w, NULL, &tv);
    if (n == 0) DIE("select timed out");
    if (n < 0) { if (errno == EINTR) return 0; DIE("select"); }
    return (FD_ISSET(fd, &r) ? 1 : 0) | (FD_ISSET(fd, &w) ? 2 : 0);
  }
  /* epoll: registered once with both directions; ET reports edges only, and the
   * callers always work until EAGAIN, as ET requires. */
  static int registered = -1; static int last_want;
  if (registered != fd || (!use_et && last_want != want)) {
    struct epoll_event ev = {.events = (uint32_t)((use_et ? EPOLLIN | EPOLLOUT | EPOLLET : 0) | (!use_et && (want & 1) ? EPOLLIN : 0) | (!use_et && (want & 2) ? EPOLLOUT : 0) | EPOLLRDHUP), .data.u64 = 0xfeedf00d00000000ull | (unsigned)fd};
    if (epoll_ctl(epfd, registered == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) DIE("epoll_ctl");
    registered = fd; last_want = want;
  }
  if (use_et) {
    int free_dirs = ((want & 1) && !rd_blocked ? 1 : 0) | ((want & 2) && !wr_blocked ? 2 : 0);
    if (free_dirs) return free_dirs;
  }
  struct epoll_event out[4];
  struct timespec tmo = {20, 0};
  int n = rnd() % 2 ? epoll_wait(epfd, out, 4, 20000) : epoll_pwait2(epfd, out, 4, &tmo, NULL);
  if (n == 0) DIE("epoll_wait timed out");
  if (n < 0) { if (errno == EINTR) return 0; DIE("epoll_wait"); }
  rd_blocked = wr_blocked = 0;
  int got = 0;
  for (int i = 0; i < n; i++) {
    if (out[i].data.u64 != (0xfeedf00d00000000ull | (unsigned)fd)) DIE("epoll_data changed: %llx", (unsigned long long)out[i].data.u64);
    if (out[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) got |= 1;
    if (out[i].events & (EPOLLOUT | EPOLLERR)) got |= 2;
  }
  return use_et ? want : got;
}

struct reader { int fd; uint64_t seed, got; int peek; };

/* Blocking mode's receiving half, in its own thread: two threads share the socket. */
static void *reader_main(void *arg) {
  struct reader *r = arg;
  static unsigned char buf[1 << 20];
  for (;;) {
    size_t n = 1 + rnd() % sizeof buf;
    ssize_t k = rnd() % 2 ? recv(r->fd, buf, n, 0) : read(r->fd, buf, n);
    if (k == 0) return NULL;
    if (k < 0) { if (errno == EINTR) continue; DIE("reader"); }
    for (ssize_t i = 0; i < k; i++)
      if (buf[i] != gen(r->seed, r->got + (uint64_t)i)) DIE("byte mismatch at offset %llu", (unsigned long long)(r->got + (uint64_t)i));
    r->got += (uint64_t)k;
  }
}

/* Full-duplex transfer: send `out_len` bytes of stream out_seed (random write sizes),
 * receive until EOF, checking every byte against stream in_seed; half-close after
 * sending when shut_after. Returns bytes received. */
static uint64_t transfer(int fd, uint64_t out_seed, uint64_t out_len, uint64_t in_seed, int shut_after, int peek) {
  static unsigned char buf[1 << 20], obuf[1 << 20];
  uint64_t sent = 0, recvd = 0; int eof = 0, shut = 0;
  int blocking = !strcmp(mode, "block");
  pthread_t th; struct reader rd = {fd, in_seed, 0, peek};
  if (blocking) {
    if (pthread_create(&th, NULL, reader_main, &rd)) DIE("pthread_create");
  } else {
    set_nonblock(fd);
  }
  while (sent < out_len || (!blocking && !eof)) {
    if (sent == out_len && shut_after && !shut) { if (shutdown(fd, SHUT_WR) < 0) DIE("shutdown"); shut = 1; }
    int want = (eof || blocking ? 0 : 1) | (sent < out_len ? 2 : 0);
    if (!want) break;
    int can = blocking ? want : wait_fd(fd, want);
    if (can & 2) {
      size_t n = 1 + rnd() % (rnd() % 4 == 0 ? 65536 : 1500);
      if (n > out_len - sent) n = (size_t)(out_len - sent);
      for (size_t i = 0; i < n; i++) obuf[i] = gen(out_seed, sent + i);
      ssize_t w = rnd() % 2 ? write(fd, obuf, n) : send(fd, obuf, n, MSG_NOSIGNAL);
      if (w < 0 && !(wr_blocked = errno == EAGAIN) && errno != EINTR) DIE("write");
      if (w > 0) sent += (uint64_t)w;
    }
    if (can & 1) {
      for (;;) {
        size_t n = 1 + rnd() % sizeof buf;
        ssize_t r = rnd() % 2 ? recv(fd, buf, n, 0) : read(fd, buf, n);
        if (r == 0) { eof = 1; break; }
        if (r < 0) { if ((rd_blocked = errno == EAGAIN) || errno == EINTR) break; DIE("read"); }
        for (ssize_t i = 0; i < r; i++)
          if (buf[i] != gen(in_seed, recvd + (uint64_t)i)) DIE("byte mismatch at offset %llu", (unsigned long long)(recvd + (uint64_t)i));
        recvd += (uint64_t)r;
      }
    }
  }
  if (shut_after && !shut && shutdown(fd, SHUT_WR) < 0) DIE("shutdown");
  if (blocking) {
    pthread_join(th, NULL);
    recvd = rd.got;
  }
  return recvd;
}

/* Echo server side of a full-duplex exchange: read, check, write back the same
 * bytes; with peek, every read is preceded by a MSG_PEEK that must match it. */
static uint64_t echo(int fd, uint64_t in_seed, int peek) {
  static unsigned char buf[1 << 18], pbuf[1 << 18];
  uint64_t total = 0, off = 0, len = 0;
  int eof = 0, blocking = !strcmp(mode, "block");
  if (!blocking) set_nonblock(fd);
  while (!eof || len) {
    int want = len ? 2 : 1;
    int can = blocking ? want : wait_fd(fd, want);
    if (len) {
      if (!(can & 2)) continue;
      ssize_t w = write(fd, buf + off, (size_t)len);
      if (w < 0 && !(wr_blocked = errno == EAGAIN) && errno != EINTR) DIE("echo write");
      if (w > 0) { off += (uint64_t)w; len -= (uint64_t)w; }
      continue;
    }
    if (!(can & 1)) continue;
    size_t n = 1 + rnd() % sizeof buf;
    ssize_t p = 0;
    if (peek) {
      p = recv(fd, pbuf, n, MSG_PEEK);
      if (p < 0) { if ((rd_blocked = errno == EAGAIN) || errno == EINTR) continue; DIE("peek"); }
      if (p == 0) { eof = 1; continue; }
      n = (size_t)p;
    }
    ssize_t r = peek ? recv(fd, buf, n, MSG_WAITALL) : read(fd, buf, n);
    if (r == 0) { eof = 1; continue; }
    if (r < 0) { if ((rd_blocked = errno == EAGAIN) || errno == EINTR) continue; DIE("echo read"); }
    if (peek && (r != p || memcmp(buf, pbuf, (size_t)r))) DIE("read after peek differs (%zd vs %zd)", r, p);
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != gen(in_seed, total + (uint64_t)i)) DIE("server: byte mismatch at %llu", (unsigned long long)(total + (uint64_t)i));
    total += (uint64_t)r; off = 0; len = (uint64_t)r;
  }
  return total;
}

/* Sends len bytes of stream seed, whatever the mode. */
static void send_all(int fd, uint64_t seed, uint64_t len) {
  static unsigned char b[65536];
  uint64_t done = 0;
  while (done < len) {
    size_t n = sizeof b < len - done ? sizeof b : (size_t)(len - done);
    for (size_t i = 0; i < n; i++) b[i] = gen(seed, done + i);
    size_t k = 0;
    while (k < n) {
      ssize_t w = write(fd, b + k, n - k);
      if (w < 0) { if ((wr_blocked = errno == EAGAIN) || errno == EINTR) { if (strcmp(mode, "block")) wait_fd(fd, 2); continue; } DIE("send_all"); }
      k += (size_t)w;
    }
    done += n;
  }
}

/* Receives exactly len bytes of stream seed. */
static void recv_exact(int fd, uint64_t seed, uint64_t len) {
  static unsigned char b[65536];
  uint64_t done = 0;
  while (done < len) {
    size_t n = sizeof b < len - done ? sizeof b : (size_t)(len - done);
    ssize_t r = read(fd, b, n);
    if (r == 0) DIE("early EOF after %llu of %llu", (unsigned long long)done, (unsigned long long)len);
    if (r < 0) { if ((rd_blocked = errno == EAGAIN) || errno == EINTR) { if (strcmp(mode, "block")) wait_fd(fd, 1); continue; } DIE("recv_exact"); }
    for (ssize_t i = 0; i < r; i++) if (b[i] != gen(seed, done + (uint64_t)i)) DIE("mismatch at %llu", (unsigned long long)(done + (uint64_t)i));
    done += (uint64_t)r;
  }
}

static void expect_eof(int fd) {
  char c;
  for (;;) {
    ssize_t r = read(fd, &c, 1);
    if (r == 0) return;
    if (r > 0) DIE("expected EOF, got data");
    if ((rd_blocked = errno == EAGAIN) || errno == EINTR) { if (strcmp(mode, "block")) wait_fd(fd, 1); continue; }
    DIE("expected EOF");
  }
}

/* threads scenario: record = thread id, sequence number, 52 bytes of pattern, checksum */
struct rec { uint32_t tid, seq; unsigned char pat[52]; uint32_t sum; };
_Static_assert(sizeof(struct rec) == 64, "64-byte records");
static uint32_t rec_sum(const struct rec *r) {
  uint32_t h = 2166136261u;
  const unsigned char *p = (const unsigned char *)r;
  for (size_t i = 0; i < offsetof(struct rec, sum); i++) h = (h ^ p[i]) * 16777619u;
  return h;
}
struct twriter { int fd; uint32_t tid, n; };
static void *twriter_main(void *a) {
  struct twriter *w = a;
  for (uint32_t i = 0; i < w->n; i++) {
    struct rec r = {w->tid, i, {0}, 0};
    for (int k = 0; k < 52; k++) r.pat[k] = gen(w->tid, (uint64_t)i * 52 + (uint64_t)k);
    r.sum = rec_sum(&r);
    size_t off = 0;
    while (off < sizeof r) { /* a blocking send of 64 bytes is whole, but be exact */
      ssize_t k = send(w->fd, (char *)&r + off, sizeof r - off, 0);
      if (k < 0) { if (errno == EINTR) continue; DIE("thread send"); }
      off += (size_t)k;
      if (off != sizeof r) DIE("partial 64-byte send (%zu)", off);
    }
  }
  return NULL;
}

/* pollrace: polls the socket another thread is blocked reading, then goes away.
 * Its wake-up declarations must not cancel the reader's. */
static void *poller_main(void *arg) {
  int fd = *(int *)arg;
  usleep(50000); /* let the reader go to sleep first */
  for (int i = 0; i < 20; i++) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 2) < 0 && errno != EINTR) DIE("pollrace poll");
  }
  return NULL;
}

/* closerace: one blocking read, in flight while another thread closes the fd. */
struct closer_arg { int fd; uint64_t size; ssize_t got; };
static void *blocked_reader(void *arg) {
  struct closer_arg *a = arg;
  static unsigned char b[1 << 20];
  size_t want = a->size < sizeof b ? (size_t)a->size : sizeof b;
  do a->got = read(a->fd, b, want); while (a->got < 0 && errno == EINTR);
  for (ssize_t i = 0; i < a->got; i++)
    if (b[i] != gen(0x2222, (uint64_t)i)) DIE("closerace: byte %zd differs", i);
  return NULL;
}

static int expect_upgraded(void) {
  const char *e = getenv("SHMTEST_UPGRADED");
  return e && !strcmp(e, "1");
}

enum { SEED_C2S = 0x1111, SEED_S2C = 0x2222, SEED_BANNER = 0x3333 };

/* The exec'd image of the exec scenarios: serves the inherited descriptor. */
static int exec_serve(char **argv) {
  int fd = atoi(argv[2]);
  uint64_t size = strtoull(argv[4], NULL, 0);
  mode = "block";
  if (!strcmp(argv[3], "execbare") && expect_upgraded()) {
    char b[16];
    ssize_t r = read(fd, b, sizeof b);
    if (r >= 0 || errno != ECONNRESET) DIE("execbare: inherited upgraded socket read gave %zd", r);
    printf("execserve ok: fenced\n");
    return 0;
  }
  uint64_t got = echo(fd, SEED_C2S, 0);
  if (got != size) DIE("execserve: echoed %llu of %llu", (unsigned long long)got, (unsigned long long)size);
  close(fd);
  printf("execserve ok %llu\n", (unsigned long long)size);
  return 0;
}


int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "execserve")) return exec_serve(argv);
  if (argc != 6) { fprintf(stderr, "usage: shmtest server|client ADDR MODE SCENARIO SIZE\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  alarm(60); /* never hang a test run */
  const char *role = argv[1], *scen = argv[4];
  mode = argv[3];
  uint64_t size = strtoull(argv[5], NULL, 0);
  use_poll = !strcmp(mode, "poll"); use_select = !strcmp(mode, "select");
  use_epoll = !strncmp(mode, "epoll", 5); use_et = !strcmp(mode, "epollet");
  if (!use_poll && !use_select && !use_epoll && strcmp(mode, "block")) { fprintf(stderr, "bad mode\n"); return 2; }
  if (use_epoll && (epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) DIE("epoll_create1");
  rng_state ^= (uint64_t)getpid() * 0x2545F4914F6CDD1Dull;
  struct sockaddr_storage ss; int fam;
  socklen_t sl = parse_addr(argv[2], &ss, &fam);
  int peek = !strcmp(scen, "peek");
  if (!strcmp(role, "server")) {
    int l = socket(fam, SOCK_STREAM, 0), one = 1;
    if (l < 0) DIE("socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fam == AF_UNIX) unlink(((struct sockaddr_un *)&ss)->sun_path);
    if (bind(l, (struct sockaddr *)&ss, sl) < 0) DIE("bind");
    if (listen(l, 16) < 0) DIE("listen");
    printf("ready\n"); fflush(stdout);
    int fd = accept(l, NULL, NULL);
    if (fd < 0) DIE("accept");
    if (!strcmp(scen, "fork")) {
      pid_t child = fork();
      if (child < 0) DIE("fork");
      if (child > 0) { /* the parent lets go of the connection at once */
        close(fd);
        int st;
        if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) DIE("child failed (%d)", st);
        close(l);
        if (fam == AF_UNIX) unlink(((struct sockaddr_un *)&ss)->sun_path);
        printf("server ok %llu (forked)\n", (unsigned long long)size);
        return 0;
      }
      close(l);
    }
    if (!strcmp(scen, "exec") || !strcmp(scen, "execbare") || !strcmp(scen, "execfresh")) {
      /* exec, execbare: the server uses the connection (waits for the client's
       * first bytes) before handing it to the new image, which then has to carry
       * an upgraded connection over (exec) or end it (execbare, no library);
       * execfresh hands it over untouched, as inetd does: it must stay plain. */
      struct pollfd first = {fd, POLLIN, 0};
      /* exec, execbare: a hello first (the offer goes before it), then the
       * client's first bytes: it read the hello through the library, so it
       * attached before it wrote them (an upgraded connection is handed over;
       * without the hello the client could look again only after our exec, and
       * find the offer withdrawn: plain, under load 1 run in about 400). */
      if (strcmp(scen, "execfresh") && write(fd, "h", 1) != 1) DIE("exec: hello");
      if (strcmp(scen, "execfresh") && poll(&first, 1, 10000) != 1) DIE("exec: waiting for the first bytes");
      pid_t child = fork();
      if (child < 0) DIE("fork");
      if (child == 0) {
        char fds[16], sz[32];
        snprintf(fds, sizeof fds, "%d", fd);
        snprintf(sz, sizeof sz, "%llu", (unsigned long long)size);
        if (!strcmp(scen, "execbare")) unsetenv("LD_PRELOAD");
        execl("/proc/self/exe", "shmtest", "execserve", fds, scen, sz, (char *)NULL);
        DIE("exec");
      }
      close(fd);
      int st;
      if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) DIE("exec'd child failed (%d)", st);
      close(l);
      if (fam == AF_UNIX) unlink(((struct sockaddr_un *)&ss)->sun_path);
      printf("server ok (exec)\n");
      return 0;
    }
    if (!strcmp(scen, "dup2")) {
      int blocker = open("/dev/null", O_RDONLY);
      if (blocker < 0 || dup2(blocker, 200) != 200) DIE("dup2 setup");
      if (dup2(fd, 200) != 200) DIE("dup2 onto an open fd");
      close(fd);
      close(blocker);
      fd = 200;
    }
    if (!strcmp(scen, "threads")) {
      uint32_t next[2] = {0, 0}, total = 0, want = (uint32_t)(size / 64) * 2;
      struct rec r;
      while (total < want) {
        size_t off = 0;
        while (off < sizeof r) {
          ssize_t k = read(fd, (char *)&r + off, sizeof r - off);
          if (k == 0) DIE("EOF after %u records", total);
          if (k < 0) { if (errno == EINTR) continue; DIE("read records"); }
          off += (size_t)k;
        }
        if (r.tid > 1 || r.sum != rec_sum(&r) || r.seq != next[r.tid]) DIE("bad record %u: tid %u seq %u", total, r.tid, r.seq);
        for (int k = 0; k < 52; k++) if (r.pat[k] != gen(r.tid, (uint64_t)r.seq * 52 + (uint64_t)k)) DIE("record pattern");
        next[r.tid]++, total++;
      }
      if (write(fd, &total, sizeof total) != sizeof total) DIE("reply");
      expect_eof(fd);
      close(fd);
      printf("server ok %u records\n", total);
      return 0;
    }
    if (!strcmp(scen, "scm")) {
      static unsigned char b[4096];
      uint64_t off = 0, nrec = size / 100, got_fds = 0;
      /* A greeting the client reads before it sends: both ends have then used the
       * connection after the offer, so the records go through the ring. */
      if (write(fd, "g", 1) != 1) DIE("scm greeting");
      for (;;) {
        union { struct cmsghdr h; char c[CMSG_SPACE(4 * sizeof(int))]; } ctl;
        struct iovec v = {b, 1 + rnd() % sizeof b};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.c, .msg_controllen = sizeof ctl.c};
        ssize_t k = recvmsg(fd, &m, 0);
        if (k < 0) { if (errno == EINTR) continue; DIE("scm recvmsg"); }
        if (k == 0) break;
        for (ssize_t i = 0; i < k; i++) if (b[i] != (unsigned char)((off + (uint64_t)i) / 100)) DIE("scm data at %llu", (unsigned long long)(off + (uint64_t)i));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        if (!cm && got_fds * 10 < nrec && got_fds * 1000 >= off && got_fds * 1000 < off + (uint64_t)k) DIE("scm: record %llu read without its descriptor", (unsigned long long)(got_fds * 10));
        if (cm) {
          if (cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int))) DIE("scm: bad control message");
          int rfd; memcpy(&rfd, CMSG_DATA(cm), sizeof rfd);
          /* The descriptor comes with the read that holds the first byte of the
           * record it was sent with (the kernel may put earlier bytes before it). */
          uint64_t rec = got_fds * 10;
          if (rec * 100 < off || rec * 100 >= off + (uint64_t)k) DIE("scm: descriptor %llu with bytes %llu..%llu", (unsigned long long)got_fds, (unsigned long long)off, (unsigned long long)(off + (uint64_t)k));
          uint64_t val = 0;
          if (pread(rfd, &val, sizeof val, 0) != sizeof val || val != rec) DIE("scm: descriptor for record %llu holds %llu", (unsigned long long)rec, (unsigned long long)val);
          close(rfd);
          got_fds++;
        }
        off += (uint64_t)k;
      }
      if (off != nrec * 100 || got_fds != (nrec + 9) / 10) DIE("scm: %llu bytes, %llu descriptors", (unsigned long long)off, (unsigned long long)got_fds);
      close(fd);
      printf("server ok %llu descriptors\n", (unsigned long long)got_fds);
      return 0;
    }
    if (!strcmp(scen, "cred")) {
      int one1 = 1;
      if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one1, sizeof one1) < 0) DIE("SO_PASSCRED");
      struct ucred peer;
      socklen_t pl = sizeof peer;
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &pl) < 0) DIE("SO_PEERCRED");
      static unsigned char b[4096];
      uint64_t off = 0, reads = 0;
      for (;;) {
        union { struct cmsghdr h; char c[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(4 * sizeof(int))]; } ctl;
        struct iovec v = {b, 1 + rnd() % sizeof b};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.c, .msg_controllen = sizeof ctl.c};
        ssize_t k = recvmsg(fd, &m, 0);
        if (k < 0) { if (errno == EINTR) continue; DIE("cred recvmsg"); }
        if (k == 0) break;
        for (ssize_t i = 0; i < k; i++) if (b[i] != (unsigned char)((off + (uint64_t)i) / 100)) DIE("cred data at %llu", (unsigned long long)(off + (uint64_t)i));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_CREDENTIALS || cm->cmsg_len != CMSG_LEN(sizeof(struct ucred)))
          DIE("cred: read %llu of bytes %llu.. without credentials", (unsigned long long)reads, (unsigned long long)off);
        struct ucred cr;
        memcpy(&cr, CMSG_DATA(cm), sizeof cr);
        if (cr.pid != peer.pid || cr.uid != peer.uid || cr.gid != peer.gid)
          DIE("cred: got pid %d uid %d gid %d, the peer is %d/%d/%d", cr.pid, cr.uid, cr.gid, peer.pid, peer.uid, peer.gid);
        if (CMSG_NXTHDR(&m, cm)) DIE("cred: unexpected second control message");
        off += (uint64_t)k;
        reads++;
      }
      if (off != size / 100 * 100) DIE("cred: %llu bytes", (unsigned long long)off);
      close(fd);
      printf("server ok %llu reads with credentials\n", (unsigned long long)reads);
      return 0;
    }
    if (!strcmp(scen, "kill")) {
      static unsigned char b[65536];
      uint64_t got = 0;
      while (got < size / 2) {
        ssize_t k = read(fd, b, sizeof b);
        if (k <= 0) DIE("kill: read");
        got += (uint64_t)k;
      }
      printf("server dying\n");
      fflush(stdout);
      raise(SIGKILL);
    }
    if (!strcmp(scen, "pollrace") || !strcmp(scen, "closerace")) {
      if (!strcmp(scen, "closerace") && write(fd, "!", 1) != 1) DIE("closerace: first byte");
      usleep(300000); /* until the client's poller has come and gone */
      send_all(fd, SEED_S2C, size);
      expect_eof(fd);
      close(fd);
      printf("server ok %llu\n", (unsigned long long)size);
      return 0;
    }
    if (!strcmp(scen, "banner")) send_all(fd, SEED_BANNER, size);
    if (!strcmp(scen, "halfclose")) {
      uint64_t got = transfer(fd, 0, 0, SEED_C2S, 0, 0);
      if (got != size) DIE("server: got %llu of %llu", (unsigned long long)got, (unsigned long long)size);
      if (strcmp(mode, "block")) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      mode = "block";
      send_all(fd, SEED_S2C, size * 2);
    } else {
      uint64_t got = echo(fd, SEED_C2S, peek);  /* echo, fork, dup2 */
      if (got != size) DIE("server: echoed %llu of %llu", (unsigned long long)got, (unsigned long long)size);
    }
    close(fd);
    close(l);
    if (fam == AF_UNIX) unlink(((struct sockaddr_un *)&ss)->sun_path);
    printf("server ok %llu\n", (unsigned long long)size);
    return 0;
  }
  int fd = socket(fam, SOCK_STREAM, 0);
  if (fd < 0) DIE("socket");
  int cred_on = 1; /* cred: the kernel attaches our credentials to every message */
  if (!strcmp(scen, "cred") && setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &cred_on, sizeof cred_on) < 0) DIE("SO_PASSCRED");
  if (connect(fd, (struct sockaddr *)&ss, sl) < 0) DIE("connect");
  if (!strcmp(scen, "exec") || !strcmp(scen, "execbare")) {
    /* The server's hello: read through the library, so the client has taken the
     * offer (made before it) when it starts streaming, whatever the scheduling:
     * the connection the server hands over is upgraded at both ends. */
    char h;
    if (recv(fd, &h, 1, MSG_WAITALL) != 1 || h != 'h') DIE("exec: no hello from the server");
  }
  if (!strcmp(scen, "cred")) {
    for (uint64_t r = 0; r < size / 100; r++) {
      unsigned char rec[100];
      memset(rec, (unsigned char)r, sizeof rec);
      struct iovec v = {rec, sizeof rec};
      struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
      union { struct cmsghdr h; char c[CMSG_SPACE(sizeof(struct ucred))]; } ctl;
      if (r % 10 == 0) {
        struct ucred me = {getpid(), getuid(), getgid()};
        memset(&ctl, 0, sizeof ctl);
        m.msg_control = ctl.c; m.msg_controllen = sizeof ctl.c;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_CREDENTIALS; cm->cmsg_len = CMSG_LEN(sizeof me);
        memcpy(CMSG_DATA(cm), &me, sizeof me);
      }
      ssize_t k = sendmsg(fd, &m, 0);
      if (k != sizeof rec) DIE("cred sendmsg returned %zd", k);
    }
    shutdown(fd, SHUT_WR);
    expect_eof(fd);
    close(fd);
    printf("client ok\n");
    return 0;
  }
  if (!strcmp(scen, "threads")) {
    struct twriter w[2] = {{fd, 0, (uint32_t)(size / 64)}, {fd, 1, (uint32_t)(size / 64)}};
    pthread_t t[2];
    for (int k = 0; k < 2; k++) if (pthread_create(&t[k], NULL, twriter_main, &w[k])) DIE("pthread_create");
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    uint32_t total;
    ssize_t k = read(fd, &total, sizeof total);
    if (k != sizeof total || total != 2 * (uint32_t)(size / 64)) DIE("server counted %u", k == sizeof total ? total : 0);
    close(fd);
    printf("client ok %u records\n", total);
    return 0;
  }
  if (!strcmp(scen, "scm")) {
    char g;
    if (read(fd, &g, 1) != 1 || g != 'g') DIE("scm greeting");
    for (uint64_t r = 0; r < size / 100; r++) {
      unsigned char rec[100];
      memset(rec, (unsigned char)r, sizeof rec);
      struct iovec v = {rec, sizeof rec};
      struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
      union { struct cmsghdr h; char c[CMSG_SPACE(sizeof(int))]; } ctl;
      int mfd = -1;
      if (r % 10 == 0) {
        mfd = memfd_create("scm", MFD_CLOEXEC);
        if (mfd < 0 || pwrite(mfd, &r, sizeof r, 0) != sizeof r) DIE("memfd");
        memset(&ctl, 0, sizeof ctl);
        m.msg_control = ctl.c; m.msg_controllen = sizeof ctl.c;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &mfd, sizeof mfd);
      }
      ssize_t k = sendmsg(fd, &m, 0);
      if (k != sizeof rec) DIE("scm sendmsg returned %zd", k);
      if (mfd >= 0) close(mfd);
    }
    shutdown(fd, SHUT_WR);
    expect_eof(fd);
    close(fd);
    printf("client ok\n");
    return 0;
  }
  if (!strcmp(scen, "kill")) {
    /* Write until the dead server is noticed; reads must then see EOF or a reset. */
    static unsigned char b[65536];
    memset(b, 'x', sizeof b);
    uint64_t sent = 0;
    for (;;) {
      ssize_t w = send(fd, b, sizeof b, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EPIPE || errno == ECONNRESET) break;
        if (errno == EINTR) continue;
        DIE("kill: unexpected write error");
      }
      sent += (uint64_t)w;
      if (sent > size * 64) DIE("kill: wrote %llu bytes to a dead peer", (unsigned long long)sent);
    }
    ssize_t r = read(fd, b, sizeof b);
    if (r > 0 || (r < 0 && errno != ECONNRESET)) DIE("kill: read after peer death gave %zd", r);
    close(fd);
    printf("client ok: peer death seen after %llu bytes\n", (unsigned long long)sent);
    return 0;
  }
  if (!strcmp(scen, "pollrace")) {
    pthread_t t;
    if (pthread_create(&t, NULL, poller_main, &fd)) DIE("pthread_create");
    recv_exact(fd, SEED_S2C, size); /* blocking: mode is "block" */
    pthread_join(t, NULL);
    close(fd);
    printf("client ok %llu\n", (unsigned long long)size);
    return 0;
  }
  if (!strcmp(scen, "closerace")) {
    char first;
    if (read(fd, &first, 1) != 1 || first != '!') DIE("closerace: first byte"); /* decided by now */
    pthread_t t;
    static struct closer_arg ca;
    ca.fd = fd;
    ca.size = size;
    if (pthread_create(&t, NULL, blocked_reader, &ca)) DIE("pthread_create");
    usleep(100000); /* the reader is asleep in read() by now */
    if (close(fd) < 0) DIE("close");
    pthread_join(t, NULL);
    if (ca.got <= 0) DIE("closerace: the read in flight returned %zd", ca.got);
    printf("client ok: read in flight got %zd bytes\n", ca.got);
    return 0;
  }
  if (!strcmp(scen, "execbare") && expect_upgraded()) {
    /* The server's new image cannot use the connection: it must end, not hang. */
    static unsigned char b[65536];
    for (;;) {
      ssize_t w = send(fd, b, sizeof b, MSG_NOSIGNAL);
      if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
      if (w < 0 && errno != EINTR) DIE("execbare: send");
      ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno == ECONNRESET)) break;
      if (r > 0) DIE("execbare: got data from a fenced server");
    }
    close(fd);
    printf("client ok: connection ended\n");
    return 0;
  }
  if (!strcmp(scen, "banner")) recv_exact(fd, SEED_BANNER, size);
  if (!strcmp(scen, "halfclose")) {
    send_all(fd, SEED_C2S, size);
    if (shutdown(fd, SHUT_WR) < 0) DIE("shutdown");
    if (strcmp(mode, "block")) set_nonblock(fd);
    recv_exact(fd, SEED_S2C, size * 2);
    expect_eof(fd);
  } else {
    uint64_t got = transfer(fd, SEED_C2S, size, SEED_C2S, 1, 0);
    if (got != size) DIE("client: got back %llu of %llu", (unsigned long long)got, (unsigned long long)size);
  }
  close(fd);
  printf("client ok %llu\n", (unsigned long long)size);
  return 0;
}

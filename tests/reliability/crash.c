/* Crashes and exits: one end of a connection is SIGKILLed at a chosen point (or
 * exits on its own), and the survivor must see EOF or ECONNRESET/EPIPE promptly,
 * with every byte before that point intact.
 *
 *   crash CASE ADDR SEED        the driver (not preloaded); ADDR tcp4:PORT|unix:PATH
 *
 * The driver forks both ends, which re-execute this program as "end ROLE ..." with
 * LD_PRELOAD=$CRASH_PRELOAD (empty: the same test without the shim, for
 * comparison). Each end tells the driver where it is through a status pipe; the
 * driver kills the victim with SIGKILL, then writes the kill time (CLOCK_MONOTONIC,
 * system-wide) into the survivor's pipe, so that the survivor measures the time
 * from the kill to the moment its call returned.
 * CASE (victim: the end that is killed):
 *   pre_accept         server never accepts; killed while the client waits in read
 *   nego_server        server killed after accept (offer queued), before the
 *                      client has read anything; then the client reads
 *   nego_client        client killed after connect, before it took the offer;
 *                      the server waits in read
 *   block_S_M          S (client|server) waits for input in M (read|poll|epoll)
 *                      after one exchange; the other end is killed
 *   full_S             S (client|server) is blocked writing into a full ring (the
 *                      other end never reads); the other end is killed
 *   wfull_S            the same after one exchange (both ends upgraded and
 *                      switched before the ring fills)
 *   full_writer        the server fills the ring and blocks; it is killed; the
 *                      client then reads: every byte write() accepted must arrive
 *   mid_S              both ends stream both ways (two threads each); the other
 *                      end than S is killed at a random moment (SEED), 1-300 ms
 *                      after both ends received their first bytes
 *   late_close         no kill: the server accepts 300 ms late, reads the client's
 *                      1000 bytes to EOF and closes without writing; the client
 *                      (which wrote, shut down its side and waits in read) must
 *                      see EOF (it used to hang: the offer's proof kept the
 *                      server's socket open and nothing woke the client)
 *   exit_close | exit_noclose | exit_underscore | exit_kill
 *                      after a one-byte round trip (both ends upgraded), the
 *                      server writes 3 MiB then close()+exit(0) / exit(0) /
 *                      _exit(0) / raise(SIGKILL); the client must get all of it
 * Output: "crash CASE: survivor=ROLE result=R detect_ms=MS bytes=N ok|BAD ..." and
 * exit 0 when the survivor's result is in the expected set, the bytes are right,
 * and it returned within 3 s of the kill (a hang bound, not a latency target). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "relutil.h"

#define SEED_C2S 0x11ull
#define SEED_S2C 0x22ull
#define EXIT_BYTES (3ull << 20)
#define HANG_BOUND_NS (3 * REL_NS_PER_S)

static const char *cas;
static int st_fd = -1, ts_fd = -1; /* in an end: status pipe (write), kill time (read) */
static int say_at_first; /* read_stream says "streaming" when its first bytes come */

static int is(const char *c) { return !strcmp(cas, c); }
static int starts(const char *p) { return !strncmp(cas, p, strlen(p)); }

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char b[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b, sizeof b - 1, fmt, ap);
  va_end(ap);
  b[n++] = '\n';
  if (write(st_fd, b, (size_t)n) < 0) _exit(3);
}

/* ------------------------------------------------------------------ the ends */

static uint64_t kill_time(void) {
  uint64_t t = 0;
  if (read(ts_fd, &t, sizeof t) != sizeof t) return 0;
  return t;
}

/* The survivor's verdict: what its call returned and when, relative to the kill. */
static void verdict(const char *what, int err, uint64_t returned, uint64_t bytes, int bytes_ok) {
  uint64_t k = kill_time();
  double ms = k && returned > k ? (double)(returned - k) / 1e6 : 0.0;
  say("result %s %s %.2f %llu %d", what, rel_errname(err), ms, (unsigned long long)bytes, bytes_ok);
}

/* Reads the peer's stream until EOF/error, checking every byte; returns errno (0: EOF). */
static int read_stream(int fd, uint64_t seed, uint64_t *got, int *ok, int method) {
  static unsigned char buf[65536];
  int ep = -1;
  if (method == 2) {
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = 7};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  for (;;) {
    if (method == 1) {
      struct pollfd p = {fd, POLLIN, 0};
      poll(&p, 1, -1);
    } else if (method == 2) {
      struct epoll_event ev;
      epoll_wait(ep, &ev, 1, -1);
    }
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r == 0 ? 0 : errno;
    if (say_at_first) {
      say_at_first = 0;
      say("streaming");
    }
    for (ssize_t i = 0; i < r && *ok; i++)
      if (buf[i] != rel_gen(seed, *got + (uint64_t)i)) *ok = 0;
    *got += (uint64_t)r;
  }
}

/* Writes the stream until an error; returns errno. Reports progress if asked. */
static int write_stream(int fd, uint64_t seed, uint64_t *sent, int report) {
  static __thread unsigned char buf[65536];
  for (;;) {
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = rel_gen(seed, *sent + i);
    ssize_t w = write(fd, buf, sizeof buf);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w == 0 ? EIO : errno;
    *sent += (uint64_t)w;
    if (report) say("progress %llu", (unsigned long long)*sent);
  }
}

struct streamer {
  int fd;
  uint64_t seed, n;
  int ok, err;
  uint64_t done_at;
};

static void *writer_main(void *a) {
  struct streamer *s = a;
  s->err = write_stream(s->fd, s->seed, &s->n, 0);
  s->done_at = rel_now_ns();
  return NULL;
}

static int method_of(const char *m) { return !strcmp(m, "poll") ? 1 : !strcmp(m, "epoll") ? 2 : 0; }

static int end_main(const char *role, const char *addr) {
  signal(SIGPIPE, SIG_IGN);
  int server = !strcmp(role, "server");
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(addr, &ss, &fam);
  int fd;
  if (server) {
    int l = socket(fam, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 4) < 0) {
      say("error listen %s", strerror(errno));
      return 2;
    }
    say("ready");
    if (is("pre_accept")) pause();
    if (is("late_close")) usleep(300000);
    fd = accept(l, NULL, NULL);
  } else {
    fd = socket(fam, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
      say("error connect %s", strerror(errno));
      return 2;
    }
  }
  if (fd < 0) return 2;
  uint64_t got = 0, sent = 0;
  int ok = 1, err;
  uint64_t in_seed = server ? SEED_C2S : SEED_S2C, out_seed = server ? SEED_S2C : SEED_C2S;

  if (is("pre_accept")) { /* client */
    say("blocking");
    err = read_stream(fd, in_seed, &got, &ok, 0);
    verdict("read", err, rel_now_ns(), got, ok);
    return 0;
  }
  if (is("nego_server")) {
    if (server) {
      say("accepted");
      pause();
    }
    say("connected");
    uint64_t k = kill_time(); /* go: the server is dead now */
    err = read_stream(fd, in_seed, &got, &ok, 0);
    uint64_t now = rel_now_ns();
    say("result read %s %.2f %llu %d", rel_errname(err), k ? (double)(now - k) / 1e6 : 0.0,
        (unsigned long long)got, ok);
    return 0;
  }
  if (is("nego_client")) {
    if (!server) {
      say("connected");
      pause();
    }
    say("blocking");
    err = read_stream(fd, in_seed, &got, &ok, 0);
    verdict("read", err, rel_now_ns(), got, ok);
    return 0;
  }
  if (starts("block_") || starts("wfull_")) {
    /* One exchange first (the connection is upgraded and in its steady state). */
    char b[1024];
    memset(b, 'x', sizeof b);
    if (server) {
      if (rel_write_all(fd, b, sizeof b) < 0 || rel_read_all(fd, b, sizeof b) < 0) return 2;
    } else {
      if (rel_read_all(fd, b, sizeof b) < 0 || rel_write_all(fd, b, sizeof b) < 0) return 2;
    }
    char s_role[16], method[16] = "write";
    if (starts("wfull_") ? sscanf(cas, "wfull_%15s", s_role) != 1
                         : sscanf(cas, "block_%15[a-z]_%15s", s_role, method) != 2)
      return 2;
    if (strcmp(s_role, role)) { /* the one to be killed */
      say("idle");
      pause();
    }
    say("blocking");
    if (starts("wfull_")) {
      err = write_stream(fd, out_seed, &sent, 0);
      verdict("write", err, rel_now_ns(), sent, 1);
      return 0;
    }
    err = read_stream(fd, in_seed, &got, &ok, method_of(method));
    verdict(method, err, rel_now_ns(), got, ok);
    return 0;
  }
  if (starts("full_") && !is("full_writer")) {
    const char *s_role = cas + 5;
    if (strcmp(s_role, role)) { /* the one to be killed: never reads */
      say("idle");
      pause();
    }
    say("blocking");
    err = write_stream(fd, out_seed, &sent, 0);
    verdict("write", err, rel_now_ns(), sent, 1);
    return 0;
  }
  if (is("full_writer")) {
    if (server) {
      write_stream(fd, out_seed, &sent, 1);
      pause();
    }
    say("idle");
    uint64_t k = kill_time(); /* go: the writer is dead */
    err = read_stream(fd, in_seed, &got, &ok, 0);
    uint64_t now = rel_now_ns();
    say("result read %s %.2f %llu %d", rel_errname(err), k ? (double)(now - k) / 1e6 : 0.0,
        (unsigned long long)got, ok);
    return 0;
  }
  if (starts("mid_")) {
    struct streamer w = {.fd = fd, .seed = out_seed};
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    /* "streaming" once the first bytes came: the client has taken the offer (made
     * before the server's first byte) while the server was alive, so it is
     * upgraded whenever the kill comes. Said before the first read, a kill 1 ms
     * later could come before the client looked at all (both ends plain). */
    say_at_first = 1;
    err = read_stream(fd, in_seed, &got, &ok, 0);
    uint64_t rd_at = rel_now_ns();
    /* The writer must end too (EPIPE/ECONNRESET), within the hang bound. */
    uint64_t t0 = rel_now_ns();
    while (!__atomic_load_n(&w.done_at, __ATOMIC_ACQUIRE) && rel_now_ns() - t0 < HANG_BOUND_NS) usleep(1000);
    uint64_t k = kill_time();
    double rd_ms = k && rd_at > k ? (double)(rd_at - k) / 1e6 : 0.0;
    double wr_ms = w.done_at && k && w.done_at > k ? (double)(w.done_at - k) / 1e6 : -1.0;
    say("result read %s %.2f %llu %d writer=%s/%.2f", rel_errname(err), rd_ms, (unsigned long long)got, ok,
        w.done_at ? rel_errname(w.err) : "HANG", wr_ms);
    return 0;
  }
  if (is("late_close")) {
    char b[1000];
    if (server) {
      while (read(fd, b, sizeof b) > 0) {
      }
      close(fd);
      say("closed");
      return 0;
    }
    memset(b, 'c', sizeof b);
    if (rel_write_all(fd, b, sizeof b) < 0) return 2;
    shutdown(fd, SHUT_WR);
    say("blocking");
    err = read_stream(fd, in_seed, &got, &ok, 0);
    say("result read %s 0 %llu %d", rel_errname(err), (unsigned long long)got, ok);
    return 0;
  }
  if (starts("exit_")) {
    /* A round trip first, so that the connection is upgraded at both ends before
     * the 3 MiB (docs/design.md, Negotiation), whatever the socket buffers could
     * hold plainly: the server's read of 'h' makes the offer, the client's read of
     * 'H' takes it while the server waits for 'g', and the server's read of 'g'
     * (written after the attach) sees the attach. With one byte from the client
     * only, that byte usually went out before the offer; a client that did not
     * read again before a server that had written all 3 MiB into loopback TCP's
     * buffers exited found the offer's sender gone and stayed plain (exit_* over
     * TCP: 5 runs of crash.sh in 40, beside another loop). */
    char h = 'h', r = 0;
    if (server ? rel_read_all(fd, &r, 1) < 0 || r != 'h' || rel_write_all(fd, "H", 1) < 0 ||
                     rel_read_all(fd, &r, 1) < 0 || r != 'g'
               : rel_write_all(fd, &h, 1) < 0 || rel_read_all(fd, &r, 1) < 0 || r != 'H' ||
                     rel_write_all(fd, "g", 1) < 0)
      return 2;
    if (server) {
      static unsigned char buf[65536];
      for (uint64_t off = 0; off < EXIT_BYTES; off += sizeof buf) {
        for (size_t i = 0; i < sizeof buf; i++) buf[i] = rel_gen(out_seed, off + i);
        if (rel_write_all(fd, buf, sizeof buf) < 0) return 2;
      }
      say("written");
      if (is("exit_close")) {
        close(fd);
        exit(0);
      }
      if (is("exit_noclose")) exit(0);
      if (is("exit_underscore")) _exit(0);
      raise(SIGKILL);
    }
    say("blocking");
    err = read_stream(fd, in_seed, &got, &ok, 0);
    say("result read %s 0 %llu %d", rel_errname(err), (unsigned long long)got, ok && got == EXIT_BYTES);
    return 0;
  }
  say("error unknown case");
  return 2;
}

/* ---------------------------------------------------------------- the driver */

struct child {
  pid_t pid;
  int st, ts; /* driver's ends: status (read), kill time (write) */
  char buf[4096];
  size_t len;
};

static void spawn(struct child *c, const char *self, const char *role, const char *addr, const char *seed) {
  int st[2], ts[2];
  if (pipe2(st, O_CLOEXEC) < 0 || pipe(ts) < 0) exit(2);
  c->pid = fork();
  if (c->pid == 0) {
    dup2(st[1], 3);
    dup2(ts[0], 4);
    const char *pre = getenv("CRASH_PRELOAD"), *logp = getenv("CRASH_LOG");
    if (pre && *pre) setenv("LD_PRELOAD", pre, 1);
    if (logp && *logp) {
      char lf[512];
      snprintf(lf, sizeof lf, "%s.%s", logp, role);
      setenv("SHMSHIM_LOG", "info", 1);
      setenv("SHMSHIM_LOG_FILE", lf, 1);
    }
    execl(self, self, "end", role, addr, cas, seed, (char *)NULL);
    _exit(127);
  }
  close(st[1]);
  close(ts[0]);
  c->st = st[0];
  c->ts = ts[1];
  c->len = 0;
}

/* Next status line from c, waiting at most ms; NULL on timeout or EOF. */
static char *next_line(struct child *c, int ms, char *out, size_t outlen) {
  uint64_t end = rel_now_ns() + (uint64_t)ms * 1000000;
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl) {
      size_t n = (size_t)(nl - c->buf);
      snprintf(out, outlen, "%.*s", (int)n, c->buf);
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return out;
    }
    uint64_t now = rel_now_ns();
    if (now >= end) return NULL;
    struct pollfd p = {c->st, POLLIN, 0};
    if (poll(&p, 1, (int)((end - now) / 1000000) + 1) <= 0) continue;
    ssize_t r = read(c->st, c->buf + c->len, sizeof c->buf - c->len - 1);
    if (r <= 0) return NULL;
    c->len += (size_t)r;
  }
}

/* Waits for a line starting with `what` (other lines are kept in *last). */
static int expect(struct child *c, const char *what, int ms, char *last, size_t ll) {
  char line[512];
  uint64_t end = rel_now_ns() + (uint64_t)ms * 1000000;
  while (rel_now_ns() < end) {
    if (!next_line(c, (int)((end - rel_now_ns()) / 1000000) + 1, line, sizeof line)) return -1;
    if (!strncmp(line, "error", 5)) {
      fprintf(stderr, "crash %s: %s\n", cas, line);
      return -1;
    }
    if (last) snprintf(last, ll, "%s", line);
    if (!strncmp(line, what, strlen(what))) return 0;
  }
  return -1;
}

static void kill_and_stamp(struct child *victim, struct child *survivor) {
  kill(victim->pid, SIGKILL);
  uint64_t t = rel_now_ns();
  if (write(survivor->ts, &t, sizeof t) != sizeof t) exit(2);
}

int main(int argc, char **argv) {
  if (argc == 6 && !strcmp(argv[1], "end")) {
    cas = argv[4];
    st_fd = 3;
    ts_fd = 4;
    alarm(60);
    return end_main(argv[2], argv[3]);
  }
  if (argc != 4) {
    fprintf(stderr, "usage: crash CASE ADDR SEED\n");
    return 2;
  }
  cas = argv[1];
  const char *addr = argv[2];
  uint64_t seed = strtoull(argv[3], NULL, 0);
  signal(SIGPIPE, SIG_IGN);
  alarm(60);
  char self[512];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (sl <= 0) return 2;
  self[sl] = 0;
  struct child s, c;
  spawn(&s, self, "server", addr, argv[3]);
  if (expect(&s, "ready", 5000, NULL, 0) < 0) return 2;
  spawn(&c, self, "client", addr, argv[3]);

  struct child *victim = NULL, *survivor = NULL;
  int blocked_wait_ms = 150; /* long enough that the survivor is asleep in its call */
  char last[512] = "";
  if (is("pre_accept")) {
    victim = &s, survivor = &c;
    if (expect(&c, "blocking", 5000, NULL, 0) < 0) goto setup;
    usleep(blocked_wait_ms * 1000);
    kill_and_stamp(victim, survivor);
  } else if (is("nego_server")) {
    victim = &s, survivor = &c;
    if (expect(&s, "accepted", 5000, NULL, 0) < 0 || expect(&c, "connected", 5000, NULL, 0) < 0) goto setup;
    kill_and_stamp(victim, survivor);
  } else if (is("nego_client")) {
    victim = &c, survivor = &s;
    if (expect(&c, "connected", 5000, NULL, 0) < 0 || expect(&s, "blocking", 5000, NULL, 0) < 0) goto setup;
    usleep(blocked_wait_ms * 1000);
    kill_and_stamp(victim, survivor);
  } else if (starts("block_") || starts("wfull_") || (starts("full_") && !is("full_writer"))) {
    int surv_server = strstr(cas, "_server") != NULL;
    survivor = surv_server ? &s : &c;
    victim = surv_server ? &c : &s;
    if (expect(victim, "idle", 5000, NULL, 0) < 0 || expect(survivor, "blocking", 5000, NULL, 0) < 0) goto setup;
    /* A full ring: give the writer time to fill it and fall asleep. */
    usleep((starts("block_") ? blocked_wait_ms : 500) * 1000);
    kill_and_stamp(victim, survivor);
  } else if (is("full_writer")) {
    victim = &s, survivor = &c;
    if (expect(&c, "idle", 5000, NULL, 0) < 0) goto setup;
    /* Let the server fill the ring and block: progress stops growing. */
    uint64_t last_n = 0, n = 0;
    for (int quiet = 0; quiet < 3;) {
      char line[512];
      if (!next_line(&s, 200, line, sizeof line)) {
        quiet++;
        continue;
      }
      if (sscanf(line, "progress %llu", (unsigned long long *)&n) == 1 && n != last_n) {
        last_n = n;
        quiet = 0;
      }
    }
    kill_and_stamp(victim, survivor);
    snprintf(last, sizeof last, "progress %llu", (unsigned long long)last_n);
  } else if (starts("mid_")) {
    int surv_server = !strcmp(cas + 4, "server");
    survivor = surv_server ? &s : &c;
    victim = surv_server ? &c : &s;
    if (expect(&s, "streaming", 5000, NULL, 0) < 0 || expect(&c, "streaming", 5000, NULL, 0) < 0) goto setup;
    usleep((useconds_t)(1000 + (seed * 7919) % 300000)); /* random point: 1..300 ms in */
    kill_and_stamp(victim, survivor);
  } else if (starts("exit_") || is("late_close")) {
    victim = &s, survivor = &c;
    uint64_t t = 0;
    if (write(c.ts, &t, sizeof t) != sizeof t) return 2; /* no kill time: nothing to measure */
  } else {
    fprintf(stderr, "crash: unknown case %s\n", cas);
    return 2;
  }

  char res[512];
  if (expect(survivor, "result", (int)(HANG_BOUND_NS / 1000000) + 2000, res, sizeof res) < 0) {
    printf("crash %s: survivor=%s HANG (no result within the bound)\n", cas, survivor == &s ? "server" : "client");
    kill(s.pid, SIGKILL);
    kill(c.pid, SIGKILL);
    return 1;
  }
  int status;
  waitpid(victim->pid, &status, 0);
  waitpid(survivor->pid, &status, 0);
  int surv_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

  /* result WHAT ERR MS BYTES OK [writer=ERR/MS] */
  char what[32], err[32], extra[128] = "";
  double ms;
  unsigned long long bytes;
  int ok;
  if (sscanf(res, "result %31s %31s %lf %llu %d %127[^\n]", what, err, &ms, &bytes, &ok, extra) < 5) {
    printf("crash %s: unparsable result '%s'\n", cas, res);
    return 1;
  }
  const char *allowed;
  if ((starts("full_") && !is("full_writer")) || starts("wfull_")) allowed = "|EPIPE|ECONNRESET|";
  else if (is("exit_close") || is("exit_noclose") || is("late_close")) allowed = "|EOF|";
  /* A process that dies without running the library's exit path leaves the kick
   * bytes it never read in its socket, and the kernel answers its close with a
   * reset; the survivor knows the dead peer had taken every byte it sent, and
   * reports end of file, as plain sockets do (docs/security.md, "Crashed peer"). */
  else if (starts("exit_")) allowed = "|EOF|";
  else if (is("full_writer")) allowed = "|EOF|ECONNRESET|";
  else allowed = "|EOF|ECONNRESET|";
  char key[40];
  snprintf(key, sizeof key, "|%s|", err);
  int good = strstr(allowed, key) != NULL && ok && surv_rc == 0 && ms * 1e6 < (double)HANG_BOUND_NS;
  if (is("full_writer")) {
    unsigned long long accepted = 0;
    sscanf(last, "progress %llu", &accepted);
    good &= bytes >= accepted && accepted > 0;
    snprintf(extra, sizeof extra, "writer had written %llu", accepted);
  }
  if (starts("mid_")) good &= strstr(extra, "HANG") == NULL;
  printf("crash %s: survivor=%s %s result=%s detect_ms=%.2f bytes=%llu %s%s%s\n", cas,
         survivor == &s ? "server" : "client", what, err, ms, bytes, good ? "ok" : "BAD", *extra ? " " : "", extra);
  return good ? 0 : 1;
setup:
  printf("crash %s: could not stage the case\n", cas);
  kill(s.pid, SIGKILL);
  kill(c.pid, SIGKILL);
  return 2;
}

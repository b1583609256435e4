/* Descriptor numbers reused behind the shim's back, and epoll corner cases
 * (tests/preload/fdreuse.sh runs it; every byte is checked).
 *
 *   fdreuse server SCENARIO PORT1 PORT2   (prints "ready" once listening)
 *   fdreuse client SCENARIO PORT1 PORT2
 *
 * PORT2 is the second listener; the script may exclude it from upgrading
 * (SHMSHIM_PORTS_DENY) to make connections to it plain.
 * SCENARIO:
 *   rawclose1  the server closes upgraded connection A with a raw close system
 *              call (as libuv does), then accept4 on PORT1 returns the same number
 *              for connection B, whose client had already sent bytes: B's bytes
 *              must arrive intact, none eaten as kicks of A
 *   rawclose2  the same with B accepted on PORT2
 *   closerange close_range(A, ~0U, 0) (after a CLOSE_RANGE_CLOEXEC pass that must
 *              change nothing), then a pipe reuses A's number and must carry its
 *              bytes; the client must see a clean end of file on A; a new
 *              connection C afterwards must still work
 *   closefrom  the same with closefrom(A)
 *   fclose     fclose() of fdopen(A): the same checks
 *   rawmany    70 upgraded connections in one epoll set, each closed with a raw
 *              system call, their numbers reused by eventfds (which must work);
 *              then a new connection added to the same set must be reported with
 *              its epoll_data and bytes (the shim rebuilds its inner set on the way)
 *   rawdup     the same with a copy (dup) of each connection in the set too, added
 *              before it, all closed with the system call instruction (rawmany's
 *              syscall(SYS_close) goes through the library's syscall() and never
 *              reached the rebuild): the new inner set took a freed number, and
 *              closing it on the way up went through the application's close
 *              path, which took the lock its caller held (a hang); the rebuild,
 *              made while the first number of a connection was being forgotten,
 *              also freed the member of its copy, which the walk over that
 *              connection's members went on to
 *   epmax1, epmax2  8 upgraded connections always readable (the server writes
 *              one byte first, which the client reads, taking the offer) and a
 *              listener with a pending
 *              connection in one epoll set; epoll_wait with maxevents 1 (2) must
 *              report the listener within 40 calls, and every connection too
 *   epdup      epoll fd copies (dup, F_DUPFD_CLOEXEC, dup2), the original closed:
 *              each copy must report the connection's ring event with the
 *              application's epoll_data
 *   dup2hidden the server dup2()s a pipe onto every number the library holds
 *              hidden (its memfds: the upgraded connection's segment, kept for
 *              exec, and the statistics table), as a program that puts its own
 *              descriptors at fixed high numbers does; the connection must go on,
 *              and after its close each of those numbers must still be the
 *              program's pipe and carry its bytes (the library used to close
 *              them, and could have truncated one: it did not follow the move)
 *   dup2closing the same while the connection is closed but not released yet
 *              (a thread is blocked in read() on it); B, a second connection,
 *              tells the client when to end A, which wakes the reader and
 *              releases A: the pipes must survive that release
 * Exit status 0 only if everything matched. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DIE(...)                                                                   \
  do {                                                                             \
    fprintf(stderr, "fdreuse: " __VA_ARGS__);                                      \
    fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno));                   \
    exit(2);                                                                       \
  } while (0)

static unsigned char gen(uint64_t seed, uint64_t i) {
  uint64_t x = (i / 8 + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return (unsigned char)(x >> ((i % 8) * 8));
}

/* Writes bytes [from, to) of stream seed. */
static void send_stream(int fd, uint64_t seed, uint64_t from, uint64_t to) {
  unsigned char buf[8192];
  while (from < to) {
    size_t n = to - from < sizeof buf ? (size_t)(to - from) : sizeof buf;
    for (size_t i = 0; i < n; i++) buf[i] = gen(seed, from + i);
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) DIE("write fd=%d", fd);
    from += (uint64_t)w;
  }
}

/* Reads exactly len bytes of stream seed, checking each. */
/* close(2) by the system call instruction itself: syscall(SYS_close, fd) goes
 * through libc's syscall(), which the library interposes (libuv's raw close is
 * seen as a close); Go's runtime and static programs close without libc. */
static void raw_close(int fd) {
#if defined(__x86_64__)
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_close), "D"((long)fd) : "rcx", "r11", "memory");
  (void)r;
#else
  syscall(SYS_close, fd);
#endif
}

static void recv_check(int fd, uint64_t seed, uint64_t len) {
  unsigned char buf[8192];
  uint64_t got = 0;
  while (got < len) {
    size_t n = len - got < sizeof buf ? (size_t)(len - got) : sizeof buf;
    ssize_t r = read(fd, buf, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) DIE("read fd=%d after %llu of %llu bytes", fd, (unsigned long long)got, (unsigned long long)len);
    if (r == 0) DIE("early end of file on fd=%d after %llu of %llu bytes", fd, (unsigned long long)got, (unsigned long long)len);
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != gen(seed, got + (uint64_t)i))
        DIE("byte mismatch on fd=%d at offset %llu", fd, (unsigned long long)(got + (uint64_t)i));
    got += (uint64_t)r;
  }
}

static void expect_eof(int fd, const char *what) {
  char c;
  ssize_t r;
  while ((r = read(fd, &c, 1)) < 0 && errno == EINTR) {
  }
  if (r != 0) DIE("%s: expected a clean end of file, read returned %zd", what, r);
}

/* The client has read everything (and so looked at the offer) before the server
 * closes: both ends then see the upgrade, not the withdrawn offer of a client that
 * had not looked yet (both plain: right, but not what these scenarios test). */
static void give_ack(int fd) {
  if (write(fd, "a", 1) != 1) DIE("write ack");
}
static void take_ack(int fd, const char *what) {
  char a;
  if (read(fd, &a, 1) != 1 || a != 'a') DIE("no ack on %s", what);
}

static struct sockaddr_in addr_of(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int listen_on(int port) {
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = addr_of(port);
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 16) < 0) DIE("listen %d", port);
  return l;
}

static int connect_to(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = addr_of(port);
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) DIE("connect %d", port);
  return s;
}

static int accept_on(int l) {
  int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) DIE("accept4");
  return fd;
}

#define A_LEN 65536
#define B_LEN 300000
#define B_EARLY 16384 /* B's bytes queued before the server accepts it */
#define P_LEN 4096

/* The number of a closed connection now names a pipe: it must carry its bytes. */
static void check_pipe_reuses(int num) {
  int p[2];
  if (pipe(p) < 0) DIE("pipe");
  if (p[0] != num) DIE("pipe got fd %d, not the freed number %d", p[0], num);
  send_stream(p[1], 77, 0, P_LEN);
  recv_check(p[0], 77, P_LEN);
  close(p[0]);
  close(p[1]);
}

/* Numbers of the library's hidden memfds (up to max), found in /proc/self/fd. */
static int hidden_memfds(int *out, int max) {
  int n = 0;
  for (int fd = 3; fd < 65536 && n < max; fd++) {
    char path[64], link[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t l = readlink(path, link, sizeof link - 1);
    if (l <= 0) continue;
    link[l] = 0;
    if (strstr(link, "memfd:shmshim")) out[n++] = fd;
  }
  return n;
}

static int blocked_fd;
static pid_t reader_tid;
static void *blocked_reader(void *arg) {
  char b;
  (void)arg;
  __atomic_store_n(&reader_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
  if (read(blocked_fd, &b, 1) != 0) DIE("the blocked reader: expected end of file");
  return NULL;
}
/* Waits (bounded) until thread tid sleeps in the kernel. */
static void until_asleep(pid_t tid) {
  for (int i = 0; i < 5000; i++) {
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(st, 1, sizeof st - 1, f) : 0;
    if (f) fclose(f);
    st[n] = 0;
    char *p = strrchr(st, ')');
    if (p && p[1] == ' ' && p[2] == 'S') return;
    usleep(1000);
  }
  DIE("the reader never slept");
}

static void take_over_hidden(int *hid, int *pr, int n) {
  for (int i = 0; i < n; i++) {
    int p[2];
    if (pipe(p) < 0) DIE("pipe");
    if (dup2(p[1], hid[i]) != hid[i]) DIE("dup2 onto %d", hid[i]);
    close(p[1]);
    pr[i] = p[0];
  }
}
static void check_taken_over(int *hid, int *pr, int n) {
  for (int i = 0; i < n; i++) {
    if (write(hid[i], "x", 1) != 1) DIE("fd %d (the program's pipe) after the connection's release", hid[i]);
    char x = 0;
    if (read(pr[i], &x, 1) != 1 || x != 'x') DIE("pipe behind fd %d", hid[i]);
    close(hid[i]);
    close(pr[i]);
  }
}

static void server(const char *scen, int port1, int port2) {
  int l1 = listen_on(port1), l2 = listen_on(port2);
  printf("ready\n");
  fflush(stdout);
  if (!strncmp(scen, "rawclose", 8)) {
    int a = accept_on(l1);
    recv_check(a, 1, A_LEN);
    send_stream(a, 2, 0, A_LEN);
    char g;
    if (read(a, &g, 1) != 1 || g != 'g') DIE("no go on A");
    raw_close(a); /* behind the shim's back */
    int b = accept_on(scen[8] == '2' ? l2 : l1);
    if (b != a) DIE("accept4 returned %d, not the freed number %d", b, a);
    recv_check(b, 3, B_LEN);
    send_stream(b, 4, 0, B_LEN);
    take_ack(b, "B");
    close(b);
  } else if (!strcmp(scen, "closerange") || !strcmp(scen, "closefrom") || !strcmp(scen, "fclose")) {
    int a = accept_on(l1);
    recv_check(a, 1, A_LEN);
    send_stream(a, 2, 0, A_LEN);
    if (!strcmp(scen, "closerange")) {
      if (close_range((unsigned)a, UINT_MAX, CLOSE_RANGE_CLOEXEC) < 0) DIE("close_range cloexec");
      send_stream(a, 5, 0, P_LEN); /* the connection is untouched by that */
      recv_check(a, 6, P_LEN);
      if (close_range((unsigned)a, UINT_MAX, 0) < 0) DIE("close_range");
    } else if (!strcmp(scen, "closefrom")) {
      send_stream(a, 5, 0, P_LEN);
      recv_check(a, 6, P_LEN);
      closefrom(a);
    } else {
      send_stream(a, 5, 0, P_LEN);
      recv_check(a, 6, P_LEN);
      FILE *f = fdopen(a, "r+");
      if (!f) DIE("fdopen");
      if (fclose(f) != 0) DIE("fclose");
    }
    check_pipe_reuses(a);
    int c = accept_on(l1); /* the library still works for new connections */
    recv_check(c, 7, A_LEN);
    send_stream(c, 8, 0, A_LEN);
    take_ack(c, "C");
    close(c);
  } else if (!strcmp(scen, "rawmany") || !strcmp(scen, "rawdup")) {
    enum { N = 70 };
    int dups = !strcmp(scen, "rawdup"), k = dups ? 2 * N : N;
    int conns[2 * N], efds[2 * N], ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) DIE("epoll_create1");
    for (int i = 0; i < k; i += 1 + dups) {
      conns[i] = accept_on(l1);
      if (dups) {
        /* The copy goes into the set first: the connection's member list then
         * has the original's member before the copy's. */
        conns[i + 1] = dup(conns[i]);
        struct epoll_event dv = {.events = EPOLLIN, .data.u64 = (uint64_t)i + 1};
        if (conns[i + 1] < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, conns[i + 1], &dv) < 0) DIE("epoll_ctl dup");
      }
      struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i], &ev) < 0) DIE("epoll_ctl");
    }
    for (int i = 0; i < k; i++) raw_close(conns[i]);
    /* The freed numbers come back lowest first. */
    for (int i = 1; i < k; i++)
      for (int j = i; j > 0 && conns[j - 1] > conns[j]; j--) {
        int t = conns[j];
        conns[j] = conns[j - 1];
        conns[j - 1] = t;
      }
    for (int i = 0; i < k; i++) {
      efds[i] = eventfd(0, 0);
      if (efds[i] != conns[i]) DIE("eventfd got fd %d, not the freed number %d", efds[i], conns[i]);
      uint64_t v = (uint64_t)i + 1, w = 0;
      if (write(efds[i], &v, 8) != 8 || read(efds[i], &w, 8) != 8 || w != v) DIE("eventfd %d", efds[i]);
    }
    int c = accept_on(l1);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xC0FFEE};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) DIE("epoll_ctl C");
    if (write(c, "g", 1) != 1) DIE("write go");
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 5000);
    if (n != 1 || out[0].data.u64 != 0xC0FFEE)
      DIE("epoll_wait returned %d, epoll_data %#llx", n, n > 0 ? (unsigned long long)out[0].data.u64 : 0ull);
    recv_check(c, 9, A_LEN);
    for (int i = 0; i < k; i++) close(efds[i]);
    close(c);
    close(ep);
  } else if (!strncmp(scen, "epmax", 5)) {
    int max = atoi(scen + 5), conns[8], ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) DIE("epoll_create1");
    for (int i = 0; i < 8; i++) {
      conns[i] = accept_on(l1);
      struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i], &ev) < 0) DIE("epoll_ctl");
      /* The client reads this first, and so takes the offer the epoll_ctl made:
       * its bytes then come through the ring. */
      if (write(conns[i], "o", 1) != 1) DIE("write o");
    }
    struct epoll_event lev = {.events = EPOLLIN, .data.u64 = 100};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, l2, &lev) < 0) DIE("epoll_ctl listener");
    /* Every connection has data and the listener a pending connection before
     * the counting starts. */
    for (int i = 0; i < 8; i++) {
      char c;
      if (recv(conns[i], &c, 1, MSG_PEEK) != 1) DIE("peek");
    }
    struct pollfd pl = {l2, POLLIN, 0};
    if (poll(&pl, 1, 10000) != 1) DIE("the listener has no pending connection");
    int seen = 0, listener_at = -1;
    for (int call = 1; call <= 40; call++) {
      struct epoll_event evs[2];
      int n = epoll_wait(ep, evs, max, 5000);
      if (n <= 0) DIE("epoll_wait returned %d at call %d", n, call);
      for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == 100) {
          if (listener_at < 0) listener_at = call;
        } else if (evs[i].data.u64 < 8) {
          seen |= 1 << evs[i].data.u64;
        } else {
          DIE("epoll_data %#llx is not the application's", (unsigned long long)evs[i].data.u64);
        }
      }
    }
    if (listener_at < 0) DIE("listener never reported in 40 calls with maxevents %d", max);
    if (seen != 0xff) DIE("connections reported: %#x of 0xff", seen);
    printf("listener reported at call %d\n", listener_at);
    int d = accept_on(l2);
    for (int i = 0; i < 8; i++) {
      recv_check(conns[i], 10 + (uint64_t)i, 1024);
      close(conns[i]);
    }
    close(d);
    close(ep);
  } else if (!strcmp(scen, "dup2hidden")) {
    int a = accept_on(l1);
    recv_check(a, 1, A_LEN);
    send_stream(a, 2, 0, A_LEN);
    take_ack(a, "A"); /* the client has taken the offer: the segment is mapped here */
    int hid[8], pr[8], n = hidden_memfds(hid, 8);
    if (n < 1) DIE("no hidden memfd of the library found (no segment kept for exec?)");
    take_over_hidden(hid, pr, n);
    if (write(a, "g", 1) != 1) DIE("write go");
    recv_check(a, 5, P_LEN); /* the connection goes on */
    send_stream(a, 6, 0, P_LEN);
    take_ack(a, "A, after the dup2");
    close(a);
    check_taken_over(hid, pr, n);
    printf("%d hidden numbers taken over\n", n);
  } else if (!strcmp(scen, "dup2closing")) {
    int a = accept_on(l1), b = accept_on(l1);
    recv_check(a, 1, A_LEN);
    send_stream(a, 2, 0, A_LEN);
    take_ack(a, "A");
    pthread_t t;
    blocked_fd = a;
    if (pthread_create(&t, NULL, blocked_reader, NULL)) DIE("pthread_create");
    while (!__atomic_load_n(&reader_tid, __ATOMIC_ACQUIRE)) usleep(1000);
    until_asleep(reader_tid);
    close(a); /* the reader is inside its call: A's release waits for it */
    int hid[8], pr[8], n = hidden_memfds(hid, 8);
    if (n < 1) DIE("no hidden memfd of the library found");
    take_over_hidden(hid, pr, n);
    if (write(b, "g", 1) != 1) DIE("write go on B"); /* the client ends A: the reader returns, A is released */
    if (pthread_join(t, NULL)) DIE("pthread_join");
    check_taken_over(hid, pr, n);
    take_ack(b, "B");
    close(b);
    printf("%d hidden numbers taken over\n", n);
  } else if (!strcmp(scen, "epdup")) {
    int ep = epoll_create1(0), a = accept_on(l1);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xA11CE};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) < 0) DIE("epoll_ctl");
    int copies[3];
    copies[0] = dup(ep);
    copies[1] = fcntl(ep, F_DUPFD_CLOEXEC, 20);
    if (copies[0] < 0 || copies[1] < 0) DIE("dup");
    close(ep); /* the copies keep the instance */
    copies[2] = dup2(copies[1], 30);
    if (copies[2] != 30) DIE("dup2");
    for (int step = 0; step < 3; step++) {
      if (write(a, "g", 1) != 1) DIE("write go");
      struct epoll_event out[4];
      int n = epoll_wait(copies[step], out, 4, 5000);
      if (n != 1) DIE("step %d: epoll_wait on copy %d returned %d", step, copies[step], n);
      if (out[0].data.u64 != 0xA11CE || !(out[0].events & EPOLLIN))
        DIE("step %d: event %#x with epoll_data %#llx, not the application's", step, out[0].events,
            (unsigned long long)out[0].data.u64);
      recv_check(a, 20 + (uint64_t)step, P_LEN);
      if (step < 2) close(copies[step]); /* the last copy alone keeps it at the end */
    }
    close(copies[2]);
    close(a);
  } else {
    DIE("unknown scenario %s", scen);
  }
}

static void client(const char *scen, int port1, int port2) {
  if (!strncmp(scen, "rawclose", 8)) {
    int a = connect_to(port1);
    send_stream(a, 1, 0, A_LEN);
    recv_check(a, 2, A_LEN);
    int b = connect_to(scen[8] == '2' ? port2 : port1);
    send_stream(b, 3, 0, B_EARLY); /* queued on B's socket before the accept */
    if (write(a, "g", 1) != 1) DIE("write go");
    send_stream(b, 3, B_EARLY, B_LEN);
    recv_check(b, 4, B_LEN);
    give_ack(b);
    expect_eof(b, "B");
    close(b);
    close(a); /* A ended behind the shims' backs: whatever it reports is fine */
  } else if (!strcmp(scen, "closerange") || !strcmp(scen, "closefrom") || !strcmp(scen, "fclose")) {
    int a = connect_to(port1);
    send_stream(a, 1, 0, A_LEN);
    recv_check(a, 2, A_LEN);
    recv_check(a, 5, P_LEN);
    send_stream(a, 6, 0, P_LEN);
    expect_eof(a, "A");
    close(a);
    int c = connect_to(port1);
    send_stream(c, 7, 0, A_LEN);
    recv_check(c, 8, A_LEN);
    give_ack(c);
    expect_eof(c, "C");
    close(c);
  } else if (!strcmp(scen, "rawmany") || !strcmp(scen, "rawdup")) {
    int conns[70];
    for (int i = 0; i < 70; i++) conns[i] = connect_to(port1);
    int c = connect_to(port1);
    char g;
    if (read(c, &g, 1) != 1 || g != 'g') DIE("no go");
    send_stream(c, 9, 0, A_LEN);
    expect_eof(c, "C");
    close(c);
    for (int i = 0; i < 70; i++) close(conns[i]);
  } else if (!strncmp(scen, "epmax", 5)) {
    int conns[8];
    for (int i = 0; i < 8; i++) {
      conns[i] = connect_to(port1);
      char o;
      if (read(conns[i], &o, 1) != 1 || o != 'o') DIE("no o");
      send_stream(conns[i], 10 + (uint64_t)i, 0, 1024);
    }
    int d = connect_to(port2);
    expect_eof(d, "the listener's connection");
    for (int i = 0; i < 8; i++) {
      expect_eof(conns[i], "a connection");
      close(conns[i]);
    }
    close(d);
  } else if (!strcmp(scen, "dup2closing")) {
    int a = connect_to(port1), b = connect_to(port1);
    send_stream(a, 1, 0, A_LEN);
    recv_check(a, 2, A_LEN);
    give_ack(a);
    char g;
    if (read(b, &g, 1) != 1 || g != 'g') DIE("no go on B");
    shutdown(a, SHUT_WR);
    expect_eof(a, "A");
    close(a);
    give_ack(b);
    expect_eof(b, "B");
    close(b);
  } else if (!strcmp(scen, "dup2hidden")) {
    int a = connect_to(port1);
    send_stream(a, 1, 0, A_LEN);
    recv_check(a, 2, A_LEN);
    give_ack(a);
    char g;
    if (read(a, &g, 1) != 1 || g != 'g') DIE("no go");
    send_stream(a, 5, 0, P_LEN);
    recv_check(a, 6, P_LEN);
    give_ack(a);
    expect_eof(a, "A");
    close(a);
  } else if (!strcmp(scen, "epdup")) {
    int a = connect_to(port1);
    for (int step = 0; step < 3; step++) {
      char g;
      if (read(a, &g, 1) != 1 || g != 'g') DIE("no go");
      send_stream(a, 20 + (uint64_t)step, 0, P_LEN);
    }
    expect_eof(a, "A");
    close(a);
  } else {
    DIE("unknown scenario %s", scen);
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: fdreuse server|client SCENARIO PORT1 PORT2\n");
    return 2;
  }
  alarm(30);
  if (!strcmp(argv[1], "server")) server(argv[2], atoi(argv[3]), atoi(argv[4]));
  else client(argv[2], atoi(argv[3]), atoi(argv[4]));
  return 0;
}

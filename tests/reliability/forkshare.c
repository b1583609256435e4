/* A connection a client shares with its fork child after the upgrade, where the
 * parent learns of the child's reads and writes only from the segment
 * (tests/reliability/forkshare.sh runs each case plain and shimmed and compares):
 *
 *   forkshare idle DIR     the child writes 64 KiB to a slow reader and exits; the
 *                          parent sleeps in poll(): its idle-memory release must
 *                          not give back the pages of the child's unread bytes
 *   forkshare look N DIR   the server sends N bytes; the child reads them all and
 *                          exits; the parent's poll and FIONREAD must say nothing
 *                          is there (N beyond the ring: the server's plain bytes
 *                          and its switch-over kick)
 *   forkshare concw FAM DIR   parent and child write 20,000 records of 100 bytes
 *                          each at the same time (FAM: unix or tcp); the server
 *                          counts each writer's bytes, and over AF_UNIX checks
 *                          that every record arrived whole (the kernel keeps such a
 *                          send whole; over TCP it may split one under memory
 *                          pressure)
 *   forkshare concwkill FAM DIR  the child writes (up to 2,000,000 records) until the parent kills it
 *                          (SIGKILL), then, before reaping it, the parent writes
 *                          its 20,000: they must all arrive, and the child's
 *                          records whole (a child killed inside its ring section
 *                          must not keep the parent waiting)
 *   forkshare forkfail unix DIR  fork() fails (a seccomp filter answers EAGAIN) after
 *                          the upgrade; then the client writes and closes with 10
 *                          of the server's bytes unread: the server must read every
 *                          byte, then a reset, as the kernel's (the failed fork's
 *                          hold must have been given back: a holder that is not the
 *                          last ends nothing)
 *   forkshare concr FAM DIR   parent and child read one stream at the same time;
 *                          together they must have read every byte once
 *   forkshare stdsaved DIR a stream pointer saved while the connection was on fd 1
 *                          (dup2), used after fd 1 was given back: it writes
 *                          where fd 1 is now, as libc's does
 * Prints what the program sees; exit 0 if it ran. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_un sa = {.sun_family = AF_UNIX};
static struct sockaddr_in sin4 = {.sin_family = AF_INET};
static int fam = AF_UNIX;
static unsigned char pat(size_t i) { return (unsigned char)((i * 7 + 3) | 1); }

/* A listener (in DIR, or on a free loopback port) and a server child running fn
 * on the accepted connection. */
static pid_t serve(const char *dir, void (*fn)(int, size_t), size_t n) {
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s", dir);
  sin4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l = socket(fam, SOCK_STREAM, 0);
  socklen_t sl = sizeof sin4;
  if (l < 0) exit(2);
  if (fam == AF_UNIX ? bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 4)
                     : bind(l, (struct sockaddr *)&sin4, sizeof sin4) || listen(l, 4) ||
                           getsockname(l, (struct sockaddr *)&sin4, &sl))
    exit(2);
  pid_t p = fork();
  if (p == 0) {
    int a = accept(l, NULL, NULL);
    fn(a, n);
    exit(0);
  }
  close(l);
  return p;
}
static int dial(void) {
  int s = socket(fam, SOCK_STREAM, 0);
  if (s < 0 || (fam == AF_UNIX ? connect(s, (struct sockaddr *)&sa, sizeof sa)
                               : connect(s, (struct sockaddr *)&sin4, sizeof sin4)))
    exit(2);
  return s;
}

enum { RECS = 20000, REC = 100 };

/* concw's server: each writer's bytes counted, each record looked at, as they
 * come (the killed child's count is not known beforehand). */
static void record_reader(int a, size_t n) {
  if (write(a, "x", 1) != 1) exit(1);
  size_t got = 0, from[2] = {0, 0}, mixed = 0;
  unsigned char b[65536], first = 0;
  int bad = 0;
  ssize_t r;
  while ((r = read(a, b, sizeof b)) > 0)
    for (ssize_t i = 0; i < r; i++, got++) {
      from[0] += b[i] == 'P', from[1] += b[i] == 'C';
      if (got % REC == 0) {
        mixed += bad;
        first = b[i], bad = 0;
      }
      bad |= b[i] != first;
    }
  mixed += bad;
  if (n && fam == AF_UNIX) /* concwkill: how much the child wrote before it was killed varies */
    printf("server: %zu from the parent, the child's a multiple of %d: %s", from[0], REC,
           from[1] % REC ? "no" : "yes");
  else if (n) /* (TCP: the kernel may have taken part of the child's last record) */
    printf("server: %zu from the parent", from[0]);
  else
    printf("server: %zu bytes, %zu from the parent, %zu from the child", got, from[0], from[1]);
  if (fam == AF_UNIX) printf(", %zu records not whole", mixed);
  printf("\n");
}

/* forkfail's server: 10 bytes the client never reads, then its records counted;
 * how they ended: a close with our bytes unread is a reset, as the kernel's. */
static void unread_reader(int a, size_t n) {
  char y;
  /* (after the client's byte, ours go through the ring: it has taken the offer) */
  if (write(a, "x", 1) != 1 || read(a, &y, 1) != 1 || write(a, "0123456789", 10) != 10) exit(1);
  size_t got = 0;
  unsigned char b[65536];
  ssize_t r;
  while ((r = read(a, b, sizeof b)) > 0) got += (size_t)r;
  printf("server: %zu bytes, then %s\n", got, r == 0 ? "end of file" : errno == ECONNRESET ? "ECONNRESET" : "an error");
}

/* concr's server: RECS records, record i all (i % 251). */
static void record_writer(int a, size_t n) {
  if (write(a, "x", 1) != 1) exit(1);
  unsigned char rec[REC];
  for (size_t i = 0; i < RECS; i++) {
    memset(rec, (int)(i % 251), REC);
    for (size_t d = 0; d < REC;) {
      ssize_t w = write(a, rec + d, REC - d);
      if (w <= 0) exit(1);
      d += (size_t)w;
    }
  }
}

static void write_all(int s, const unsigned char *b, size_t n) {
  for (size_t d = 0; d < n;) {
    ssize_t w = write(s, b + d, n - d);
    if (w <= 0) _exit(1);
    d += (size_t)w;
  }
}

static void slow_reader(int a, size_t n) {
  if (write(a, "x", 1) != 1) exit(1);
  sleep(2);
  unsigned char *b = malloc(n + 100);
  size_t got = 0, bad = 0;
  ssize_t r;
  while ((r = read(a, b + got, n + 100 - got)) > 0) got += (size_t)r;
  for (size_t i = 0; i < got && i < n; i++) bad += b[i] != pat(i);
  printf("server: %zu bytes, %zu wrong\n", got, bad);
}
static void sender(int a, size_t n) {
  if (write(a, "x", 1) != 1) exit(1);
  unsigned char *b = calloc(1, n);
  for (size_t d = 0; d < n;) {
    ssize_t w = write(a, b + d, n - d);
    if (w <= 0) exit(1);
    d += (size_t)w;
  }
  char c;
  while (read(a, &c, 1) > 0) { /* until the client closes */
  }
}
static void sink(int a, size_t n) {
  char b[64];
  (void)n;
  while (read(a, b, sizeof b) > 0) {
  }
}

/* The client's end: its output out, its connection closed, the server reaped. */
static int finish(int s, pid_t srv) {
  fflush(stdout);
  close(s);
  int st;
  waitpid(srv, &st, 0);
  return 0;
}

int main(int argc, char **argv) {
  alarm(30);
  if (argc == 3 && !strcmp(argv[1], "idle")) {
    size_t n = 65536;
    pid_t srv = serve(argv[2], slow_reader, n);
    int s = dial();
    char c;
    if (read(s, &c, 1) != 1) return 2; /* the client takes the offer here */
    pid_t k = fork();
    if (k == 0) {
      unsigned char *w = malloc(n);
      for (size_t i = 0; i < n; i++) w[i] = pat(i);
      for (size_t d = 0; d < n;) {
        ssize_t r = write(s, w + d, n - d);
        if (r <= 0) _exit(1);
        d += (size_t)r;
      }
      _exit(0);
    }
    waitpid(k, NULL, 0);
    struct pollfd p = {s, POLLIN, 0};
    int r = poll(&p, 1, 1000); /* long enough for an idle-memory release */
    printf("client: poll %d revents %#x\n", r, p.revents);
    return finish(s, srv);
  }
  if (argc == 4 && !strcmp(argv[1], "look")) {
    size_t n = (size_t)atol(argv[2]);
    pid_t srv = serve(argv[3], sender, n);
    int s = dial();
    char c;
    if (read(s, &c, 1) != 1) return 2;
    pid_t k = fork();
    if (k == 0) {
      char b[65536];
      for (size_t got = 0; got < n;) {
        ssize_t r = read(s, b, sizeof b);
        if (r <= 0) _exit(1);
        got += (size_t)r;
      }
      _exit(0);
    }
    waitpid(k, NULL, 0);
    struct pollfd p = {s, POLLIN, 0};
    int r = poll(&p, 1, 200), q = -1;
    ioctl(s, FIONREAD, &q);
    printf("parent after the child read %zu bytes: poll %d revents %#x FIONREAD %d\n", n, r, p.revents, q);
    close(s);
    waitpid(srv, NULL, 0);
    return 0;
  }
  if (argc == 4 && !strcmp(argv[1], "forkfail")) {
    fam = !strcmp(argv[2], "tcp") ? AF_INET : AF_UNIX;
    pid_t srv = serve(argv[3], unread_reader, 0);
    int s = dial();
    char c;
    if (read(s, &c, 1) != 1 || write(s, "y", 1) != 1) return 2;
    /* fork (clone, clone3, fork) fails from now on, as at a process limit */
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fork, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAGAIN & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) return 2;
    pid_t k = fork();
    int fe = errno;
    if (k == 0) _exit(0);
    unsigned char rec[REC];
    memset(rec, 'P', REC);
    for (int i = 0; i < RECS; i++) write_all(s, rec, REC);
    printf("fork: %s\n", k < 0 && fe == EAGAIN ? "failed with EAGAIN" : "did not fail");
    return finish(s, srv);
  }
  if (argc == 4 && !strcmp(argv[1], "concwkill")) {
    fam = !strcmp(argv[2], "tcp") ? AF_INET : AF_UNIX;
    pid_t srv = serve(argv[3], record_reader, 1);
    int s = dial();
    char c;
    if (read(s, &c, 1) != 1) return 2;
    unsigned char rec[REC];
    pid_t k = fork();
    if (k == 0) {
      memset(rec, 'C', REC);
      for (int i = 0; i < 100 * RECS; i++) write_all(s, rec, REC);
      for (;;) pause();
    }
    usleep(20000);
    kill(k, SIGKILL);
    usleep(20000); /* a zombie now, not reaped */
    memset(rec, 'P', REC);
    for (int i = 0; i < RECS; i++) write_all(s, rec, REC);
    int st;
    waitpid(k, &st, 0);
    printf("child killed: %s\n", WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? "yes" : "no");
    fflush(stdout);
    close(s);
    waitpid(srv, &st, 0);
    return 0;
  }
  if (argc == 4 && (!strcmp(argv[1], "concw") || !strcmp(argv[1], "concr"))) {
    fam = !strcmp(argv[2], "tcp") ? AF_INET : AF_UNIX;
    int w = argv[1][4] == 'w';
    pid_t srv = serve(argv[3], w ? record_reader : record_writer, 0);
    int s = dial(), pp[2];
    char c;
    if (read(s, &c, 1) != 1 || pipe(pp)) return 2; /* the client takes the offer here */
    pid_t k = fork();
    size_t count[256] = {0}, total = 0;
    if (w) {
      unsigned char rec[REC];
      memset(rec, k == 0 ? 'C' : 'P', REC);
      for (int i = 0; i < RECS; i++) write_all(s, rec, REC);
      if (k == 0) _exit(0);
    } else {
      unsigned char b[777];
      ssize_t r;
      while ((r = read(s, b, sizeof b)) > 0)
        for (ssize_t i = 0; i < r; i++) count[b[i]]++, total++;
      if (k == 0) {
        write_all(pp[1], (unsigned char *)count, sizeof count);
        _exit(0);
      }
    }
    int st;
    waitpid(k, &st, 0);
    if (!w) {
      size_t theirs[256];
      close(pp[1]);
      if (read(pp[0], theirs, sizeof theirs) != (ssize_t)sizeof theirs) return 2;
      int same = 1;
      for (int v = 0; v < 256; v++) {
        count[v] += theirs[v];
        total += theirs[v];
        size_t want = v < 251 ? (RECS / 251 + (size_t)(v < RECS % 251)) * REC : 0;
        same &= count[v] == want;
      }
      printf("client: %zu bytes read by the two, each byte once: %s\n", total, same ? "yes" : "no");
    }
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    fflush(stdout);
    close(s);
    waitpid(srv, &st, 0);
    return 0;
  }
  if (argc == 3 && !strcmp(argv[1], "stdsaved")) {
    pid_t srv = serve(argv[2], sink, 0);
    int s = dial(), save = dup(1);
    fflush(stdout);
    dup2(s, 1);
    FILE *o = stdout; /* the program keeps the pointer */
    dup2(save, 1);
    void *p[64]; /* the heap reused meanwhile */
    for (int i = 0; i < 64; i++) memset(p[i] = malloc(256), 0x41, 256);
    fprintf(o, "through the saved stream\n");
    fflush(o);
    for (int i = 0; i < 64; i++) free(p[i]);
    close(s);
    waitpid(srv, NULL, 0);
    return 0;
  }
  fprintf(stderr, "usage: forkshare idle DIR | look N DIR | concw|concwkill|concr|forkfail unix|tcp DIR | stdsaved DIR\n");
  return 2;
}

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
 *   forkshare stdsaved DIR a stream pointer saved while the connection was on fd 1
 *                          (dup2), used after fd 1 was given back: it writes
 *                          where fd 1 is now, as libc's does
 * Prints what the program sees; exit 0 if it ran. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_un sa = {.sun_family = AF_UNIX};
static unsigned char pat(size_t i) { return (unsigned char)((i * 7 + 3) | 1); }

/* A listener in DIR and a server child running fn on the accepted connection. */
static pid_t serve(const char *dir, void (*fn)(int, size_t), size_t n) {
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s", dir);
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 4)) exit(2);
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
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa)) exit(2);
  return s;
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
    fflush(stdout);
    close(s);
    int st;
    waitpid(srv, &st, 0);
    return 0;
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
  fprintf(stderr, "usage: forkshare idle DIR | look N DIR | stdsaved DIR\n");
  return 2;
}

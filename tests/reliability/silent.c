/* Processes of the same user connect to a pending client's endpoint and stay
 * silent (tests/reliability/silent.sh runs this plain and shimmed and compares).
 * Both ends of one connection live in this process; the intruders are raw system
 * calls (the library never sees them), connected to the endpoint named after the
 * client socket's inode before the client's first look.
 *
 *   silent tcp|unix DIR
 *
 * Prints what the program sees: the client's non-blocking recv() before any
 * byte came (EAGAIN, as without the library), then 10 round trips of checked
 * bytes. The library used to wait up to 2 s inside that non-blocking call for
 * the first silent connection to say something, then gave the connection up as
 * plain. On stderr: how long the non-blocking call took (not compared). Exit 0
 * if every byte matched. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DIE(...)                                                                   \
  do {                                                                             \
    fprintf(stderr, "silent: " __VA_ARGS__);                                       \
    fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno));                   \
    exit(2);                                                                       \
  } while (0)

#define INTRUDERS 3

static unsigned char pat(unsigned seed, size_t i) { return (unsigned char)(seed * 131u + i * 7u + (i >> 9)); }

static void send_all(int fd, unsigned seed, size_t len) {
  unsigned char b[4096];
  size_t off = 0;
  while (off < len) {
    size_t n = len - off < sizeof b ? len - off : sizeof b;
    for (size_t i = 0; i < n; i++) b[i] = pat(seed, off + i);
    ssize_t w = write(fd, b, n);
    if (w <= 0) DIE("write");
    off += (size_t)w;
  }
}

static void recv_all(int fd, unsigned seed, size_t len) {
  unsigned char b[4096];
  size_t off = 0;
  while (off < len) {
    size_t n = len - off < sizeof b ? len - off : sizeof b;
    ssize_t r = read(fd, b, n);
    if (r <= 0) DIE("read after %zu of %zu bytes", off, len);
    for (ssize_t i = 0; i < r; i++)
      if (b[i] != pat(seed, off + (size_t)i)) DIE("byte %zu differs", off + (size_t)i);
    off += (size_t)r;
  }
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[1], "tcp") && strcmp(argv[1], "unix"))) {
    fprintf(stderr, "usage: silent tcp|unix DIR\n");
    return 2;
  }
  alarm(30);
  int unix_ = !strcmp(argv[1], "unix");
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof ss);
  int l = socket(unix_ ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
  if (unix_) {
    struct sockaddr_un *u = (struct sockaddr_un *)&ss;
    u->sun_family = AF_UNIX;
    snprintf(u->sun_path, sizeof u->sun_path, "%s/s", argv[2]);
    sl = sizeof *u;
  } else {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sl = sizeof *in;
  }
  if (l < 0 || bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 4) < 0) DIE("listen");
  if (getsockname(l, (struct sockaddr *)&ss, &sl) < 0) DIE("getsockname");
  int c = socket(unix_ ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
  if (c < 0 || connect(c, (struct sockaddr *)&ss, sl) < 0) DIE("connect");
  int a = accept(l, NULL, NULL);
  if (a < 0) DIE("accept");

  /* The intruders: the name of the client's endpoint, as the library makes it.
   * Without the library nothing listens there and they are refused. */
  struct stat st;
  if (fstat(c, &st) < 0) DIE("fstat");
  struct sockaddr_un ep = {.sun_family = AF_UNIX};
  int n = snprintf(ep.sun_path + 1, sizeof ep.sun_path - 1, "shmshim/1/%u", (unsigned)st.st_ino);
  socklen_t el = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  int in[INTRUDERS], connected = 0;
  for (int i = 0; i < INTRUDERS; i++) {
    in[i] = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (in[i] >= 0 && syscall(SYS_connect, in[i], &ep, el) == 0) connected++;
  }
  fprintf(stderr, "silent: %d of %d intruders connected to the client's endpoint\n", connected, INTRUDERS);

  /* The client's first look, before any byte came: a non-blocking recv. */
  int fl = fcntl(c, F_GETFL);
  if (fl < 0 || fcntl(c, F_SETFL, fl | O_NONBLOCK) < 0) DIE("O_NONBLOCK");
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char b;
  ssize_t r = recv(c, &b, 1, 0);
  int e = errno;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("non-blocking recv before any byte: %s\n", r < 0 ? (e == EAGAIN ? "EAGAIN" : strerror(e)) : "data");
  fprintf(stderr, "silent: that call took %.1f ms\n",
          (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
  if (fcntl(c, F_SETFL, fl) < 0) DIE("blocking");

  for (unsigned round = 1; round <= 10; round++) {
    size_t len = 1000 * round;
    send_all(a, round, len); /* the server speaks first: its first use is here */
    recv_all(c, round, len);
    send_all(c, round + 100, len);
    recv_all(a, round + 100, len);
    printf("round %u: %zu bytes each way\n", round, len);
  }
  close(c);
  if (read(a, &b, 1) != 0) DIE("no end of file");
  close(a);
  for (int i = 0; i < INTRUDERS; i++)
    if (in[i] >= 0) close(in[i]);
  close(l);
  return 0;
}

/* io_loop: what being preloaded costs where nothing is accelerated.
 *
 *   io_loop pipe|file:PATH|tcp4:PORT|unix:PATH [--time MS | --iters N] [--size B]
 *   io_loop serve tcp4:PORT|unix:PATH [--watchdog S]
 *
 * One operation is a SIZE-byte write followed by a SIZE-byte read of the same
 * bytes: through a pipe within this process, through a file (write, lseek, read,
 * lseek), or through a socket to an echo peer (`io_loop serve`, run without the
 * library, so that a preloaded client's connection stays plain: the shim's work on
 * every call is then pure overhead). Run it with and without LD_PRELOAD and compare
 * ns per operation; under `valgrind --tool=callgrind --toggle-collect=io_ops` the
 * instruction count of io_ops() is a noise-free second measure.
 *
 * Every read is checked against the stamp of its write. Output, one line:
 *   IOLOOP kind=pipe size=64 iters=N secs=S ns_per_op=X
 * Exit status: 0 ok, 1 error, 2 usage, 3 watchdog, 4 data verification failed. */
#include <fcntl.h>
#include <sys/wait.h>

#include "netutil.h"

struct ctx {
  int wfd, rfd; /* write here, read the same bytes back from there */
  int file;     /* rewind both after every operation */
  size_t size;
  unsigned char *wb, *rb;
};

/* Not static and not inlined: callgrind's --toggle-collect names it. */
__attribute__((noinline)) void io_ops(struct ctx *c, uint64_t first, uint64_t n);

void io_ops(struct ctx *c, uint64_t first, uint64_t n) {
  for (uint64_t i = first; i < first + n; i++) {
    st64(c->wb, i);
    send_all(c->wfd, c->wb, c->size);
    if (c->file && lseek(c->wfd, 0, SEEK_SET) < 0) die("lseek: %s", strerror(errno));
    if (!recv_all(c->rfd, c->rb, c->size)) die("EOF from the peer");
    if (c->file && lseek(c->rfd, 0, SEEK_SET) < 0) die("lseek: %s", strerror(errno));
    if (ld64(c->rb) != i) die_verify("operation %llu read back stamp %llu", (unsigned long long)i,
                                     (unsigned long long)ld64(c->rb));
  }
}

static void serve(const char *where) {
  struct addr a;
  parse_addr(where, &a);
  int l = listen_on(&a);
  unsigned char buf[65536];
  printf("io_loop serve ready\n");
  fflush(stdout);
  for (;;) {
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept: %s", strerror(errno));
    }
    nodelay(&a, fd);
    for (;;) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      send_all(fd, buf, (size_t)r);
    }
    close(fd);
  }
}

static void usage(void) {
  fprintf(stderr, "usage: io_loop pipe|file:PATH|tcp4:PORT|unix:PATH [--time MS | --iters N] [--size B]\n"
                  "       io_loop serve tcp4:PORT|unix:PATH [--watchdog S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  g_prog = "io_loop";
  if (argc < 2) usage();
  uint64_t time_ms = 200, iters = 0;
  size_t size = 64;
  unsigned wd = 60;
  int a0 = !strcmp(argv[1], "serve") ? 3 : 2;
  if (argc < a0) usage();
  for (int i = a0; i < argc; i++) {
    if (i + 1 >= argc) usage();
    unsigned long long v = strtoull(argv[i + 1], NULL, 10);
    if (!strcmp(argv[i], "--time")) time_ms = v;
    else if (!strcmp(argv[i], "--iters")) iters = v;
    else if (!strcmp(argv[i], "--size")) size = (size_t)v;
    else if (!strcmp(argv[i], "--watchdog")) wd = (unsigned)v;
    else usage();
    i++;
  }
  if (size < 8 || size > 65536 || wd < 1) usage();
  signal(SIGPIPE, SIG_IGN);
  if (a0 == 3) {
    watchdog(wd);
    serve(argv[2]);
  }
  watchdog(wd);

  const char *kind = argv[1];
  struct ctx c = {.size = size};
  c.wb = calloc(1, size);
  c.rb = calloc(1, size);
  if (!c.wb || !c.rb) die("out of memory");
  fill_pattern(c.wb, size, 0x243f6a8885a308d3ull);
  const char *label = kind;
  if (!strcmp(kind, "pipe")) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) die("pipe: %s", strerror(errno));
    c.rfd = p[0];
    c.wfd = p[1];
  } else if (!strncmp(kind, "file:", 5)) {
    c.wfd = c.rfd = open(kind + 5, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (c.wfd < 0) die("open %s: %s", kind + 5, strerror(errno));
    c.file = 1;
    label = "file";
  } else {
    struct addr a;
    parse_addr(kind, &a);
    c.wfd = c.rfd = dial(&a);
    label = a.fam == AF_INET ? "tcp4" : "unix";
  }

  uint64_t done = 0;
  double secs;
  if (iters) {
    uint64_t t0 = now_ns();
    io_ops(&c, 0, iters);
    secs = (double)(now_ns() - t0) / 1e9;
    done = iters;
  } else {
    io_ops(&c, 0, 1000); /* warm-up: page faults, lazy binding, caches */
    uint64_t t0 = now_ns(), t = t0;
    while (t - t0 < time_ms * 1000000ull) {
      io_ops(&c, 1000 + done, 256);
      done += 256;
      t = now_ns();
    }
    secs = (double)(t - t0) / 1e9;
  }
  printf("IOLOOP kind=%s size=%zu iters=%llu secs=%.4f ns_per_op=%.1f\n", label, size, (unsigned long long)done, secs,
         secs * 1e9 / (double)done);
  if (c.file) unlink(kind + 5);
  return 0;
}

/* uring_echo: an echo server whose connections carry their bytes through
 * io_uring, for tests/integration/uring.sh. It accepts with libc's accept(),
 * then moves every byte with IORING_OP_RECV and IORING_OP_SEND (never read,
 * write, recv or send from libc) until the client shuts down its side, and
 * closes. One connection at a time.
 *
 *   uring_echo tcp:PORT|unix:PATH
 *
 * Prints "uring_echo: listening" once ready and "uring_echo: accepted N" and
 * "uring_echo: done N BYTES" for each connection, on standard error. Runs until
 * killed. */
#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listen.h"

static struct io_uring ring;

/* One operation, submitted and waited for; returns its result (bytes or -errno). */
static int run_op(void) {
  struct io_uring_cqe *cqe;
  if (io_uring_submit(&ring) != 1) return -EIO;
  int r = io_uring_wait_cqe(&ring, &cqe);
  if (r < 0) return r;
  r = cqe->res;
  io_uring_cqe_seen(&ring, cqe);
  return r;
}

static long long serve(int c) {
  static char buf[65536];
  long long total = 0;
  for (;;) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv(sqe, c, buf, sizeof buf, 0);
    int n = run_op();
    if (n == -EINTR || n == -EAGAIN) continue;
    if (n < 0) {
      fprintf(stderr, "uring_echo: recv: %s\n", strerror(-n));
      return -1;
    }
    if (n == 0) return total;
    for (int off = 0; off < n;) {
      sqe = io_uring_get_sqe(&ring);
      io_uring_prep_send(sqe, c, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
      int w = run_op();
      if (w == -EINTR || w == -EAGAIN) continue;
      if (w <= 0) {
        fprintf(stderr, "uring_echo: send: %s\n", w < 0 ? strerror(-w) : "0 bytes");
        return -1;
      }
      off += w;
    }
    total += n;
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: uring_echo tcp:PORT|unix:PATH\n");
    return 2;
  }
  int r = io_uring_queue_init(8, &ring, 0);
  if (r < 0) {
    fprintf(stderr, "uring_echo: io_uring_queue_init: %s\n", strerror(-r));
    return 1;
  }
  int l = listen_on(argv[1]);
  if (l < 0) {
    perror("uring_echo: listen");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  fprintf(stderr, "uring_echo: listening\n");
  for (unsigned long n = 1;; n++) {
    int c = accept(l, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      perror("uring_echo: accept");
      return 1;
    }
    fprintf(stderr, "uring_echo: accepted %lu\n", n);
    long long total = serve(c);
    fprintf(stderr, "uring_echo: done %lu %lld\n", n, total);
    close(c);
  }
}

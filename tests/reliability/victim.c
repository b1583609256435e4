/* The shimmed side of the hostile-peer test (run under LD_PRELOAD), and a healthy
 * shimmed echo server for its second connection.
 *
 *   victim echo ADDR DELAY_MS       echo server; the first accept waits DELAY_MS
 *   victim run HOSTILE ECHO OP      connection B to ECHO, then A to HOSTILE
 *   victim client ECHO N            N connections to ECHO one after the other,
 *                                   each 256 KiB of echo rounds (exit 1 on any error;
 *                                   VICTIM_PAUSE_MS: a pause before each first write)
 *
 * run: reads "HELLO\n" on A (the hostile's first ring bytes), puts PROT_NONE guard
 * pages right before and after the hostile's segment mapping (an access just
 * outside it becomes SIGSEGV instead of going unnoticed), writes "READY\n",
 * echoes 256 KiB over B (checked), then does OP on A until it fails or ends:
 *   read   blocking reads           poll   poll(POLLIN) then read
 *   epoll  epoll_wait then read     write  blocking 64 KiB writes (SO_SNDTIMEO 1 s)
 * then echoes 256 KiB over B again. Reads and writes time out after 5 s
 * (SO_RCVTIMEO), so a hang shows as EAGAIN, never as a stuck test.
 * Output: "victim: phase=P A=RESULT a_ms=MS a_bytes=N pattern=ok|bad|none
 * B=ok guards=G a_fds=F"; RESULT is EOF or the errno name; F is how many more
 * descriptors were open when OP ended than when it began. Exit 0 when B's bytes
 * were all right (A's outcome is judged by the caller), 1 when not, 2 on set-up
 * error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "relutil.h"

#define DIE(...) do { fprintf(stderr, "victim: " __VA_ARGS__); fprintf(stderr, " (%s)\n", strerror(errno)); exit(2); } while (0)

static int echo_server(const char *addr, int delay_ms) {
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(addr, &ss, &fam);
  int l = socket(fam, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 16) < 0) DIE("listen");
  signal(SIGCHLD, SIG_IGN);
  printf("ready\n");
  fflush(stdout);
  if (delay_ms) usleep((useconds_t)delay_ms * 1000);
  for (;;) {
    int fd = accept(l, NULL, NULL);
    if (fd < 0) continue;
    if (fork() == 0) {
      close(l);
      char b[65536];
      ssize_t r;
      while ((r = read(fd, b, sizeof b)) > 0)
        if (rel_write_all(fd, b, (size_t)r) < 0) break;
      _exit(0);
    }
    close(fd);
  }
}

static int dial(const char *addr) {
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(addr, &ss, &fam);
  int fd = socket(fam, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&ss, sl) < 0) DIE("connect %s", addr);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

/* 256 KiB through the echo server in 64 KiB steps, every byte checked. */
static uint64_t echo_seq;
static int echo_round(int fd) {
  size_t n = 65536;
  unsigned char *out = malloc(n), *in = malloc(n);
  int ok = 1;
  for (int k = 0; k < 4 && ok; k++) {
    for (size_t i = 0; i < n; i++) out[i] = rel_gen(7, echo_seq + i);
    if (rel_write_all(fd, out, n) < 0) {
      fprintf(stderr, "victim: echo write failed at %llu: %s\n", (unsigned long long)echo_seq, rel_errname(errno));
      ok = 0;
    } else if (rel_read_all(fd, in, n) < 0) {
      fprintf(stderr, "victim: echo read failed at %llu: %s\n", (unsigned long long)echo_seq, rel_errname(errno));
      ok = 0;
    } else if (memcmp(in, out, n)) {
      size_t i = 0;
      while (in[i] == out[i]) i++;
      fprintf(stderr, "victim: echo differs at %llu\n", (unsigned long long)(echo_seq + i));
      ok = 0;
    }
    echo_seq += n;
  }
  free(out);
  free(in);
  return ok;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  while (d && readdir(d)) n++;
  if (d) closedir(d);
  return n;
}

/* PROT_NONE pages adjacent to the hostile's segment, where the address space
 * there is free. */
static int place_guards(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int placed = 0;
  while (f && fgets(line, sizeof line, f)) {
    if (!strstr(line, "shmshim-hostile")) continue;
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) != 2) continue;
    size_t g = 16 * 4096;
    void *a = mmap((void *)(lo - g), g, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    void *b = mmap((void *)hi, g, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    placed += (a == (void *)(lo - g)) + (b == (void *)hi);
    break;
  }
  if (f) fclose(f);
  return placed;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "echo")) return echo_server(argv[2], atoi(argv[3]));
  if (argc == 4 && !strcmp(argv[1], "client")) {
    alarm(600);
    /* VICTIM_PAUSE_MS: wait that long after each connect before the first write
     * (a client that thinks first: the server's offer is then out, and waiting). */
    const char *pause = getenv("VICTIM_PAUSE_MS");
    for (int i = 0, n = atoi(argv[3]); i < n; i++) {
      int fd = dial(argv[2]);
      if (pause) usleep((useconds_t)atoi(pause) * 1000);
      echo_seq = 0;
      if (!echo_round(fd)) {
        fprintf(stderr, "victim: connection %d of %d failed\n", i + 1, n);
        return 1;
      }
      close(fd);
    }
    return 0;
  }
  if (argc != 5 || strcmp(argv[1], "run")) {
    fprintf(stderr, "usage: see victim.c\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  alarm(60);
  const char *op = argv[4];
  int b = dial(argv[3]);
  int a = dial(argv[2]);
  const char *phase = "hello";
  int err = -1, guards = 0, bok = 1, afds = 0;
  uint64_t abytes = 0, t0 = rel_now_ns(), t1 = 0;
  int pattern = 1, is_pattern_run = 0;
  char hello[7] = {0};
  if (rel_read_all(a, hello, 6) < 0) {
    err = errno;
    t1 = rel_now_ns();
    goto report;
  }
  if (strcmp(hello, "HELLO\n")) {
    fprintf(stderr, "victim: first bytes on A are not HELLO\n");
    err = EBADMSG;
    goto report;
  }
  guards = place_guards();
  phase = "ready";
  if (rel_write_all(a, "READY\n", 6) < 0) {
    err = errno;
    t1 = rel_now_ns();
    goto report;
  }
  bok &= echo_round(b);
  phase = op;
  size_t cap = 65536;
  unsigned char *buf = malloc(cap); /* exact size: ASan sees an overflow into it */
  int ep = -1;
  if (!strcmp(op, "epoll")) {
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = 42};
    epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev);
  }
  if (!strcmp(op, "write")) {
    struct timeval tv = {1, 0};
    setsockopt(a, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    memset(buf, 'w', cap);
  }
  int fds0 = count_fds();
  t0 = rel_now_ns();
  for (;;) {
    ssize_t r;
    if (!strcmp(op, "write")) {
      r = write(a, buf, cap);
      if (r > 0) {
        abytes += (uint64_t)r;
        continue;
      }
      err = r == 0 ? EIO : errno;
      break;
    }
    if (!strcmp(op, "poll")) {
      struct pollfd p = {a, POLLIN, 0};
      if (poll(&p, 1, 5000) == 0) {
        err = ETIMEDOUT;
        break;
      }
    } else if (ep >= 0) {
      struct epoll_event ev;
      int n = epoll_wait(ep, &ev, 1, 5000);
      if (n == 0) {
        err = ETIMEDOUT;
        break;
      }
      if (n == 1 && ev.data.u64 != 42) DIE("epoll_data changed");
    }
    if (!strcmp(op, "scm")) {
      /* Messages of 5 bytes with one descriptor each: each read must be one of
       * them with its descriptor (the kernel ends a read at a message that
       * brings descriptors). */
      union {
        struct cmsghdr h;
        char b[CMSG_SPACE(8 * sizeof(int))];
      } cb;
      struct iovec v = {buf, cap};
      struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b};
      r = recvmsg(a, &m, 0);
      int got = 0;
      for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
          for (size_t k = 0; k < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
            int fd;
            memcpy(&fd, CMSG_DATA(h) + k * sizeof(int), sizeof fd);
            close(fd);
            got++;
          }
      if (r > 0 && (r != 5 || got != 1)) pattern = 0;
      if (r == 0 && got) pattern = 0;
    } else {
      r = read(a, buf, cap);
    }
    if (r > 0) {
      is_pattern_run = 1;
      for (ssize_t i = 0; i < r && pattern; i++)
        if (buf[i] != rel_gen(REL_SEED_HOSTILE, abytes + (uint64_t)i)) pattern = 0;
      abytes += (uint64_t)r;
      continue;
    }
    err = r == 0 ? 0 : errno;
    break;
  }
  t1 = rel_now_ns();
  afds = count_fds() - fds0;
  free(buf);
  bok &= echo_round(b);
report:
  if (t1 == 0) t1 = rel_now_ns();
  close(a);
  if (!strcmp(phase, "hello")) bok &= echo_round(b);
  close(b);
  const char *pat = !is_pattern_run ? "none" : pattern && abytes == (strcmp(op, "scm") ? REL_PATTERN_BYTES : 10) ? "ok" : "bad";
  printf("victim: phase=%s A=%s a_ms=%.1f a_bytes=%llu pattern=%s B=%s guards=%d a_fds=%d\n", phase,
         rel_errname(err), (double)(t1 - t0) / 1e6, (unsigned long long)abytes, pat, bok ? "ok" : "BAD", guards,
         afds);
  return bok ? 0 : 1;
}

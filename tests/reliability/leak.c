/* Leaks: many upgraded connections opened and closed, one after the other; the
 * process's descriptors, mappings and RSS must come back to their level after a
 * warm-up.
 *
 *   leak server ADDR WARM N    serves WARM+N connections (read a request, echo it,
 *                              close), measuring itself after WARM and after all
 *   leak client ADDR WARM N    makes WARM+N connections (random request of 1 B to
 *                              16 KiB, echo checked), measuring itself likewise
 * Output: "leak ROLE: N connections: fds A -> B, maps C -> D, rss E -> F KiB"; exit
 * 0 when fds and mappings are back exactly and RSS grew by at most RSS_SLACK_KIB
 * (LEAK_RSS_SLACK_KIB overrides it: under ASan the allocator's quarantine and
 * shadow grow, and LeakSanitizer is the leak check there). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relutil.h"

/* A leak of one connection's state is at least ~1 KiB (its record and ring
 * handles); 10,000 of them would be 10 MiB. What may legitimately move: the
 * allocator's heap top and free lists (freed chunks are not always returned to
 * the kernel), and stack/page-table pages touched by the deepest call. */
#define RSS_SLACK_KIB 256

struct usage {
  long fds, maps, rss_kib;
};

static struct usage measure(void) {
  struct usage u = {0, 0, 0};
  DIR *d = opendir("/proc/self/fd");
  while (d && readdir(d)) u.fds++;
  if (d) closedir(d);
  char line[512];
  FILE *f = fopen("/proc/self/maps", "r");
  while (f && fgets(line, sizeof line, f)) u.maps++;
  if (f) fclose(f);
  f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) u.rss_kib = atol(line + 6);
  if (f) fclose(f);
  return u;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int one(int fd, int server) {
  static unsigned char out[16384], in[16384];
  uint32_t n;
  /* One byte from the server first, read by the client: both ends have used the
   * connection after the offer, so it is upgraded (docs/design.md, Negotiation). */
  char g;
  if (server) {
    if (rel_write_all(fd, "g", 1) < 0) return -1;
  } else if (rel_read_all(fd, &g, 1) < 0 || g != 'g') {
    return -1;
  }
  if (server) {
    if (rel_read_all(fd, &n, sizeof n) < 0 || n > sizeof in || rel_read_all(fd, in, n) < 0) return -1;
    return rel_write_all(fd, in, n);
  }
  n = 1 + (uint32_t)(rnd() % sizeof out);
  for (uint32_t i = 0; i < n; i++) out[i] = (unsigned char)rnd();
  if (rel_write_all(fd, &n, sizeof n) < 0 || rel_write_all(fd, out, n) < 0 || rel_read_all(fd, in, n) < 0) return -1;
  return memcmp(in, out, n) ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: leak server|client ADDR WARM N\n");
    return 2;
  }
  int server = !strcmp(argv[1], "server");
  long warm = atol(argv[3]), n = atol(argv[4]);
  alarm(600);
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(argv[2], &ss, &fam);
  int l = -1;
  if (server) {
    l = socket(fam, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 64) < 0) {
      perror("leak: listen");
      return 2;
    }
    printf("ready\n");
    fflush(stdout);
  }
  struct usage before = {0, 0, 0};
  for (long i = 0; i < warm + n; i++) {
    if (i == warm) before = measure();
    int fd;
    if (server) {
      fd = accept(l, NULL, NULL);
    } else {
      fd = socket(fam, SOCK_STREAM, 0);
      if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
        fprintf(stderr, "leak: connect %ld: %s\n", i, strerror(errno));
        return 2;
      }
    }
    if (fd < 0 || one(fd, server) < 0) {
      fprintf(stderr, "leak %s: connection %ld failed: %s\n", argv[1], i, strerror(errno));
      return 2;
    }
    close(fd);
  }
  struct usage after = measure();
  const char *sl_env = getenv("LEAK_RSS_SLACK_KIB");
  long slack = sl_env && *sl_env ? atol(sl_env) : RSS_SLACK_KIB;
  int ok = after.fds == before.fds && after.maps == before.maps && after.rss_kib <= before.rss_kib + slack;
  printf("leak %s: %ld connections: fds %ld -> %ld, maps %ld -> %ld, rss %ld -> %ld KiB%s\n", argv[1], n, before.fds,
         after.fds, before.maps, after.maps, before.rss_kib, after.rss_kib, ok ? "" : " LEAK");
  return ok ? 0 : 1;
}

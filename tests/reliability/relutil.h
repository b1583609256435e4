/* Helpers shared by the reliability test programs: addresses, a deterministic
 * byte stream, a monotonic clock, exact writes, the endpoint naming rule. */
#ifndef SHMSHIM_RELUTIL_H
#define SHMSHIM_RELUTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REL_NS_PER_S 1000000000ull
#define REL_PATTERN_BYTES (4ull << 20)
#define REL_SEED_HOSTILE 0x486f7374696c65ull

static inline uint64_t rel_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * REL_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Byte i of stream `seed`: any offset can be checked on its own. */
static inline unsigned char rel_gen(uint64_t seed, uint64_t i) {
  uint64_t x = (i / 8 + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return (unsigned char)(x >> ((i % 8) * 8));
}

/* tcp4:PORT | tcp6:PORT | unix:PATH */
static inline socklen_t rel_parse_addr(const char *a, struct sockaddr_storage *ss, int *fam) {
  memset(ss, 0, sizeof *ss);
  if (!strncmp(a, "tcp4:", 5)) {
    struct sockaddr_in *s = (struct sockaddr_in *)ss;
    s->sin_family = AF_INET;
    s->sin_port = htons((uint16_t)atoi(a + 5));
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fam = AF_INET;
    return sizeof *s;
  }
  if (!strncmp(a, "tcp6:", 5)) {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)atoi(a + 5));
    s->sin6_addr = in6addr_loopback;
    *fam = AF_INET6;
    return sizeof *s;
  }
  if (!strncmp(a, "unix:", 5)) {
    struct sockaddr_un *s = (struct sockaddr_un *)ss;
    s->sun_family = AF_UNIX;
    snprintf(s->sun_path, sizeof s->sun_path, "%s", a + 5);
    *fam = AF_UNIX;
    return (socklen_t)sizeof *s;
  }
  fprintf(stderr, "bad address %s\n", a);
  exit(2);
}

static inline int rel_write_all(int fd, const void *b, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, (const char *)b + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return 0;
}

static inline int rel_read_all(int fd, void *b, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)b + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r == 0 ? (errno = 0, -1) : -1;
    got += (size_t)r;
  }
  return 0;
}

/* The library's endpoint naming rule (core/negotiate.c): what a squatter or a
 * forger has to get right. */
static inline socklen_t rel_endpoint_name(uint64_t ino, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "shmshim/1/%u", (unsigned)ino);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* "ECONNRESET", "EOF" (e == 0) ... */
static inline const char *rel_errname(int e) {
  if (e == 0) return "EOF";
  const char *s = strerrorname_np(e);
  return s ? s : "E?";
}

#endif

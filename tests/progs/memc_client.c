/* memc_client: many connections to one memcached, set then get of random values,
 * every byte checked. Used by tests/integration/memcached.sh.
 *
 *   memc_client tcp:PORT|unix:PATH PROCS CONNS ROUNDS MAXSIZE SEED
 *
 * PROCS processes each open CONNS connections (all open at once) and run ROUNDS
 * rounds: a set on every connection, then every reply, then a get on every
 * connection, then every value, compared with what was stored. Value sizes run from
 * 0 to MAXSIZE (both ends included in every process). Prints one line and exits 0
 * when every byte came back; exits 1 on the first difference or error. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAIL(...)                                \
  do {                                           \
    fprintf(stderr, "memc_client: " __VA_ARGS__); \
    fprintf(stderr, "\n");                       \
    exit(1);                                     \
  } while (0)

static const char *where;

static int dial(void) {
  int fd;
  if (!strncmp(where, "tcp:", 4)) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(where + 4))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) FAIL("connect %s: %s", where, strerror(errno));
  } else if (!strncmp(where, "unix:", 5)) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", where + 5);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) FAIL("connect %s: %s", where, strerror(errno));
  } else {
    FAIL("bad address %s", where);
  }
  return fd;
}

static void write_all(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) FAIL("write: %s", strerror(errno));
    b += w;
    n -= (size_t)w;
  }
}

static void read_all(int fd, void *p, size_t n) {
  char *b = p;
  while (n) {
    ssize_t r = read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) FAIL("read: %s", r ? strerror(errno) : "EOF");
    b += r;
    n -= (size_t)r;
  }
}

/* One reply line, without its \r\n. */
static void read_line(int fd, char *line, size_t cap) {
  size_t n = 0;
  for (;;) {
    char c;
    read_all(fd, &c, 1);
    if (c == '\n' && n && line[n - 1] == '\r') {
      line[n - 1] = 0;
      return;
    }
    if (n + 1 >= cap) FAIL("reply line too long");
    line[n++] = c;
  }
}

/* The value of (proc, conn, round): deterministic, so the get can be checked. */
static void fill(unsigned char *b, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = (unsigned char)(x >> 24);
  }
}

static size_t size_of(int round, int conn, int conns, size_t max, uint64_t seed) {
  if (round == 0 && conn == 0) return 0;
  if (round == 0 && conn == conns - 1) return max;
  uint64_t x = seed ^ ((uint64_t)round << 32) ^ (uint64_t)conn * 2654435761u;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 32;
  /* Mostly small values, some large: a cube of a uniform number. */
  double u = (double)(x % 1000000) / 1000000.0;
  return (size_t)(u * u * u * (double)max);
}

static int worker(int proc, int conns, int rounds, size_t max, uint64_t seed, uint64_t *bytes) {
  int *fd = calloc((size_t)conns, sizeof *fd);
  unsigned char *want = malloc(max + 1), *got = malloc(max + 2);
  char line[256], key[64];
  if (!fd || !want || !got) FAIL("out of memory");
  for (int c = 0; c < conns; c++) fd[c] = dial();
  for (int r = 0; r < rounds; r++) {
    for (int c = 0; c < conns; c++) {
      size_t n = size_of(r, c, conns, max, seed + (uint64_t)proc);
      fill(want, n, seed ^ ((uint64_t)proc << 40) ^ ((uint64_t)c << 20) ^ (uint64_t)r);
      snprintf(key, sizeof key, "k%" PRIu64 "-%d-%d-%d", seed, proc, c, r);
      int h = snprintf(line, sizeof line, "set %s 0 0 %zu\r\n", key, n);
      write_all(fd[c], line, (size_t)h);
      write_all(fd[c], want, n);
      write_all(fd[c], "\r\n", 2);
    }
    for (int c = 0; c < conns; c++) {
      read_line(fd[c], line, sizeof line);
      if (strcmp(line, "STORED")) FAIL("set on connection %d: %s", c, line);
    }
    for (int c = 0; c < conns; c++) {
      snprintf(key, sizeof key, "k%" PRIu64 "-%d-%d-%d", seed, proc, c, r);
      int h = snprintf(line, sizeof line, "get %s\r\n", key);
      write_all(fd[c], line, (size_t)h);
    }
    for (int c = 0; c < conns; c++) {
      size_t n = size_of(r, c, conns, max, seed + (uint64_t)proc), len = 0;
      fill(want, n, seed ^ ((uint64_t)proc << 40) ^ ((uint64_t)c << 20) ^ (uint64_t)r);
      snprintf(key, sizeof key, "k%" PRIu64 "-%d-%d-%d", seed, proc, c, r);
      read_line(fd[c], line, sizeof line);
      char vkey[64];
      unsigned flags;
      if (sscanf(line, "VALUE %63s %u %zu", vkey, &flags, &len) != 3 || strcmp(vkey, key))
        FAIL("get %s: %s", key, line);
      if (len != n) FAIL("get %s: %zu bytes, stored %zu", key, len, n);
      read_all(fd[c], got, n + 2);
      if (memcmp(got, want, n) || got[n] != '\r' || got[n + 1] != '\n') FAIL("get %s: different bytes", key);
      read_line(fd[c], line, sizeof line);
      if (strcmp(line, "END")) FAIL("get %s: %s after the value", key, line);
      *bytes += n;
    }
  }
  for (int c = 0; c < conns; c++) close(fd[c]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: memc_client tcp:PORT|unix:PATH PROCS CONNS ROUNDS MAXSIZE SEED\n");
    return 2;
  }
  where = argv[1];
  int procs = atoi(argv[2]), conns = atoi(argv[3]), rounds = atoi(argv[4]);
  size_t max = (size_t)strtoul(argv[5], NULL, 10);
  uint64_t seed = strtoull(argv[6], NULL, 10);
  if (procs < 1 || conns < 1 || rounds < 1) return 2;
  int pfd[2];
  if (pipe(pfd)) FAIL("pipe");
  for (int p = 0; p < procs; p++) {
    pid_t pid = fork();
    if (pid < 0) FAIL("fork");
    if (pid == 0) {
      uint64_t bytes = 0;
      worker(p, conns, rounds, max, seed, &bytes);
      if (write(pfd[1], &bytes, sizeof bytes) != sizeof bytes) _exit(1);
      exit(0);
    }
  }
  close(pfd[1]);
  int bad = 0;
  for (int p = 0; p < procs; p++) {
    int st;
    if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) bad++;
  }
  uint64_t total = 0, b;
  while (read(pfd[0], &b, sizeof b) == sizeof b) total += b;
  if (bad) {
    fprintf(stderr, "memc_client: %d of %d processes failed\n", bad, procs);
    return 1;
  }
  printf("ok %d connections, %d values checked, %" PRIu64 " bytes\n", procs * conns, procs * conns * rounds, total);
  return 0;
}

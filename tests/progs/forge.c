/* Offer-forgery regression test: a process other than the server sends a pending
 * client a forged offer, with a UDP socket whose addresses mirror the connection's
 * as "proof" and a well-formed sealed segment. The client must ignore it.
 *
 *   forge server PORT          plain TCP server: reads 16 bytes, answers 16, closes
 *   forge victim PORT          connects, prints "INO LOCALPORT", waits for a line on
 *                              stdin, then writes 16 bytes and checks the answer
 *   forge attack INO CPORT SPORT [hold|nodump]   sends the forged offer to the
 *                              victim's endpoint; with hold, prints "forged offer
 *                              sent" and stays alive (holding the UDP socket the
 *                              offer names as its descriptor) until stdin closes;
 *                              nodump: the same, made non-dumpable first (its
 *                              /proc/PID/fd closed to processes of its uid)
 * The segment and the offer are made by the library's own core (core/segment.h,
 * core/offer.h): the forgery differs from a genuine offer only by its proof and
 * the descriptor it names (the UDP socket). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "offer.h"
#include "segment.h"

#define DIE(...) do { fprintf(stderr, "forge: " __VA_ARGS__); fprintf(stderr, " (%s)\n", strerror(errno)); exit(2); } while (0)

static struct sockaddr_in lo(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static void read_all(int fd, char *b, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r <= 0) DIE("short read (%zd after %zu)", r, got);
    got += (size_t)r;
  }
}

int main(int argc, char **argv) {
  alarm(30);
  if (argc == 3 && !strcmp(argv[1], "server")) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = lo(atoi(argv[2]));
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) DIE("listen");
    printf("ready\n");
    fflush(stdout);
    int fd = accept(l, NULL, NULL);
    char b[16];
    read_all(fd, b, sizeof b);
    if (memcmp(b, "CLIENT-PAYLOAD-1", 16)) DIE("server got other bytes: %.16s", b);
    if (write(fd, "REAL-SERVER-DATA", 16) != 16) DIE("server write");
    close(fd);
    printf("server ok\n");
    return 0;
  }
  if (argc == 3 && !strcmp(argv[1], "victim")) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = lo(atoi(argv[2])), me;
    socklen_t ml = sizeof me;
    if (connect(fd, (void *)&a, sizeof a) || getsockname(fd, (void *)&me, &ml)) DIE("connect");
    struct stat st;
    fstat(fd, &st);
    printf("%lu %d\n", (unsigned long)st.st_ino, ntohs(me.sin_port));
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) DIE("no go");
    if (write(fd, "CLIENT-PAYLOAD-1", 16) != 16) DIE("victim write");
    char b[17] = {0};
    read_all(fd, b, 16);
    if (memcmp(b, "REAL-SERVER-DATA", 16)) {
      fprintf(stderr, "forge: victim read %.16s instead of the server's data\n", b);
      return 1;
    }
    if (read(fd, b, 1) != 0) DIE("victim: expected EOF");
    printf("victim ok\n");
    return 0;
  }
  if ((argc == 5 || argc == 6) && !strcmp(argv[1], "attack")) {
    unsigned long ino = strtoul(argv[2], NULL, 10);
    int cport = atoi(argv[3]), sport = atoi(argv[4]);
    /* "Proof": a UDP socket with the server's address, connected to the client's. */
    int u = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
    setsockopt(u, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* a second attacker too */
    struct sockaddr_in sa = lo(sport), ca = lo(cport);
    if (bind(u, (void *)&sa, sizeof sa) || connect(u, (void *)&ca, sizeof ca)) DIE("udp proof");
    /* A well-formed, sealed segment with a 4 KiB ring, made as the library makes
     * it, so that nothing but the proof can give the forgery away. */
    if (argc > 5 && !strcmp(argv[5], "nodump") && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) DIE("prctl");
    uint32_t rs = 4096;
    struct shm_seg seg;
    if (shm_seg_create(rs, &seg)) DIE("segment");
    /* Injected data, already "published" in the server->client ring. */
    memcpy((char *)seg.base + SHM_SEG_HDR_SIZE + rs, "INJECTED-BY-EVIL", 16);
    seg.base->ring[SHM_DIR_S2C].head = 16;
    int e = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un ea = {.sun_family = AF_UNIX};
    int n = snprintf(ea.sun_path + 1, sizeof ea.sun_path - 1, "shmshim/1/%lu", ino);
    if (connect(e, (void *)&ea, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n))) {
      printf("no endpoint\n");
      return 3;
    }
    if (shm_offer_send(e, rs, ino, 0, u, seg.fd, u, 0) != (long)sizeof(struct shm_offer)) DIE("sendmsg");
    printf("forged offer sent\n");
    fflush(stdout);
    if (argc > 5) {
      char b;
      while (read(0, &b, 1) > 0) {
      }
    }
    return 0;
  }
  fprintf(stderr, "usage: see the comment at the top of forge.c\n");
  return 2;
}

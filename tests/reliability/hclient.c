/* A hostile client: the client side of the real negotiation (endpoint, offer,
 * switch-over), spoken with the core's own functions toward a shimmed server, then
 * a protocol violation. The other half of hostile.c, for the server's code paths
 * (epoll, the switch-over point, echo writes into a corrupt ring).
 *
 *   hclient ADDR CASE
 *
 * After the handshake (HELLO through the c2s ring, echoed back through s2c):
 *   c_head_beyond   c2s head more than a ring ahead of the server's tail
 *   c_head_back     1000 bytes published and echoed, then the c2s head moved back
 *   c_tail_past     s2c tail set four rings ahead, then 300 KiB sent that the
 *                   server echoes into a ring it must not trust any more
 *   c_plain_back    c2s_plain rewritten below what the server already read, before
 *                   the server has seen the switch (it must reset, not misread)
 *   c_flags         every flag and counter flipped at random for 1.5 s
 *   c_futex         both futex words hammered for 2 s while the echo piles up
 * Output: "hclient CASE: server closed after MS ms (RESULT)" or "hclient CASE:
 * server kept the connection (RESULT)"; exit 0 if the case could be staged. */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "offer.h"
#include "relutil.h"
#include "ring.h"
#include "segment.h"
#include "wait.h"

static const char *cas;
static int fd = -1;
static struct shm_seg_layout *L;
static struct shm_ring tx, rx; /* c2s producer, s2c consumer */

static void die(const char *what) {
  printf("hclient %s: cannot stage: %s (%s)\n", cas, what, strerror(errno));
  exit(2);
}

static int is(const char *c) { return !strcmp(cas, c); }
static void kick(void) { send(fd, "k", 1, MSG_DONTWAIT | MSG_NOSIGNAL); }

/* Reads whatever the server put on the socket; -1 once it closed or reset it. */
static int drain(int *err) {
  char b[4096];
  for (;;) {
    ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
    if (r > 0) continue;
    if (r == 0) {
      *err = 0;
      return -1;
    }
    if (errno == EAGAIN) return 0;
    *err = errno;
    return -1;
  }
}

static void publish(const void *b, size_t n) {
  size_t done = 0;
  uint64_t t0 = rel_now_ns();
  int e;
  while (done < n) {
    ssize_t w = shm_ring_write(&tx, (const char *)b + done, n - done);
    if (w < 0) die("ring write");
    done += (size_t)w;
    if (shm_wait_data_sleeper(&tx) & SHM_SLEEP_SOCKET) kick();
    if (w == 0) {
      if (rel_now_ns() - t0 > 20 * REL_NS_PER_S) die("server does not read");
      usleep(200);
      if (drain(&e) < 0) die("server closed while we wrote");
    }
  }
}

static void take(void *b, size_t n) {
  size_t got = 0;
  uint64_t t0 = rel_now_ns();
  int e;
  while (got < n) {
    ssize_t r = shm_ring_read(&rx, (char *)b + got, n - got, 0);
    if (r > 0) {
      got += (size_t)r;
      if (shm_wait_space_sleeper(&rx) & SHM_SLEEP_SOCKET) kick();
      continue;
    }
    if (rel_now_ns() - t0 > 20 * REL_NS_PER_S) die("no echo");
    usleep(200);
    if (drain(&e) < 0) die("server closed while we read");
  }
}

static volatile int stop;
static void *flipper(void *a) {
  uint64_t s = 12345;
  (void)a;
  while (!stop) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    struct shm_ring_ctl *r = &L->ring[s & 1];
    uint32_t v = (s >> 8) % 4 == 0 ? (uint32_t)(s >> 20) : (uint32_t)(s >> 20) % 3;
    switch ((s >> 4) % 9) {
      case 0: __atomic_store_n(&r->wr_closed, v, __ATOMIC_RELEASE); break;
      case 1: __atomic_store_n(&r->rd_closed, v, __ATOMIC_RELEASE); break;
      case 2: __atomic_store_n(&r->cons_armed, v, __ATOMIC_RELEASE); break;
      case 3: __atomic_store_n(&r->prod_armed, v, __ATOMIC_RELEASE); break;
      case 4: __atomic_store_n(&r->anc_seq, v, __ATOMIC_RELEASE); break;
      case 5: __atomic_store_n(&L->conn.holders[s & 1], v, __ATOMIC_RELEASE); break;
      case 6: __atomic_store_n(&L->conn.switched, v, __ATOMIC_RELEASE); break;
      case 7: __atomic_store_n(&L->conn.c2s_plain, (uint64_t)v, __ATOMIC_RELEASE); break;
      case 8: kick(); break;
    }
    if ((s >> 30) % 64 == 0) usleep(50);
  }
  return NULL;
}

static void *hammer(void *a) {
  (void)a;
  while (!stop)
    for (int d = 0; d < 2; d++) {
      __atomic_add_fetch(&L->ring[d].data_seq, 1, __ATOMIC_RELEASE);
      __atomic_add_fetch(&L->ring[d].space_seq, 1, __ATOMIC_RELEASE);
      syscall(SYS_futex, &L->ring[d].data_seq, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
      syscall(SYS_futex, &L->ring[d].space_seq, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
    }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: hclient ADDR CASE\n");
    return 2;
  }
  cas = argv[2];
  alarm(60);
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(argv[1], &ss, &fam);
  fd = socket(fam, SOCK_STREAM, 0);
  struct stat st;
  fstat(fd, &st);
  /* The endpoint, as the library's connect() makes it. */
  int ep = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  socklen_t al = rel_endpoint_name(st.st_ino, &sa);
  if (bind(ep, (struct sockaddr *)&sa, al) < 0 || listen(ep, 8) < 0) die("endpoint");
  if (connect(fd, (struct sockaddr *)&ss, sl) < 0) die("connect");
  struct pollfd p = {ep, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) die("no offer (server not shimmed?)");
  int a = accept(ep, NULL, NULL);
  struct shm_offer off;
  int fds[2], nfds, mflags;
  long n = shm_msg_recv(a, &off, sizeof off, 0, fds, 2, &nfds, &mflags);
  if (shm_offer_check(&off, n, mflags, nfds, (uint64_t)st.st_ino)) die("offer");
  close(fds[1]);
  /* As the library's client: its answer, before it attaches (the server believes
   * nothing in the segment until it has checked it). */
  char pp[40];
  snprintf(pp, sizeof pp, "/proc/self/fd/%d", fd);
  int own = open(pp, O_PATH | O_CLOEXEC);
  if (own < 0 || shm_proof_send(a, (uint64_t)st.st_ino, off.server_ino, own, MSG_NOSIGNAL) !=
                     (long)sizeof(struct shm_proof))
    die("answer");
  close(own);
  close(a);
  close(ep);
  struct stat sst;
  fstat(fds[0], &sst);
  L = mmap(NULL, (size_t)sst.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  if (L == MAP_FAILED) die("mmap");
  struct shm_seg seg = {.base = L, .size = (size_t)sst.st_size, .ring_size = L->hdr.ring_size, .fd = -1};
  shm_seg_ring(&seg, SHM_DIR_C2S, SHM_RING_PRODUCER, &tx);
  shm_seg_ring(&seg, SHM_DIR_S2C, SHM_RING_CONSUMER, &rx);
  uint32_t R = seg.ring_size;
  /* As a real client taking the offer: attached, so the server writes its
   * direction to the ring from its next write on. */
  __atomic_store_n(&L->conn.attached, 1, __ATOMIC_RELEASE);

  if (is("c_plain_back")) {
    /* Three plain bytes first, read by the server as data; then a switch-over
     * point that claims fewer. */
    if (write(fd, "abc", 3) != 3) die("plain write");
    char e[3];
    take(e, 3); /* the server read them (its echo comes through the ring) */
    __atomic_store_n(&L->conn.c2s_plain, 1, __ATOMIC_RELAXED);
  }
  __atomic_store_n(&L->conn.switched, 1, __ATOMIC_RELEASE);
  kick();
  char hello[7] = {0};
  publish("HELLO\n", 6);
  if (!is("c_plain_back")) {
    take(hello, 6);
    if (strcmp(hello, "HELLO\n")) die("bad echo");
  }
  pthread_t th;
  if (is("c_head_beyond")) {
    __atomic_store_n(&L->ring[SHM_DIR_C2S].head, tx.pos + R + 1, __ATOMIC_RELEASE);
  } else if (is("c_head_back")) {
    static char junk[1000], back[1000];
    publish(junk, sizeof junk);
    take(back, sizeof back);
    __atomic_store_n(&L->ring[SHM_DIR_C2S].head, tx.pos - 500, __ATOMIC_RELEASE);
  } else if (is("c_tail_past")) {
    /* Further than anything the server can have published when it next looks
     * (it looks when its cached room runs out, after about one ring). */
    __atomic_store_n(&L->ring[SHM_DIR_S2C].tail, rx.pos + 4 * R, __ATOMIC_RELEASE);
    static char big[300 << 10];
    size_t done = 0;
    int e;
    uint64_t t0 = rel_now_ns();
    while (done < sizeof big && rel_now_ns() - t0 < 10 * REL_NS_PER_S) { /* until it stops reading */
      ssize_t w = shm_ring_write(&tx, big + done, sizeof big - done);
      if (w > 0) done += (size_t)w;
      kick();
      usleep(200);
      if (drain(&e) < 0) break;
    }
  } else if (is("c_plain_back")) {
    /* nothing more: the server looks at the switch point when it reads */
  } else if (is("c_flags") || is("c_futex")) {
    pthread_create(&th, NULL, is("c_flags") ? flipper : hammer, NULL);
    if (is("c_futex")) { /* echo piling up: the server's writes must not hang it */
      static char big[300 << 10];
      shm_ring_write(&tx, big, sizeof big);
      kick();
    }
    usleep(is("c_flags") ? 1500000 : 2000000);
    stop = 1;
    pthread_join(th, NULL);
  } else {
    die("unknown case");
  }
  kick();
  /* Did the server close the connection, and when? */
  uint64_t t0 = rel_now_ns();
  int err = -1;
  while (rel_now_ns() - t0 < 5 * REL_NS_PER_S) {
    struct pollfd q = {fd, POLLIN, 0};
    poll(&q, 1, 50);
    if (drain(&err) < 0) break;
    if (__atomic_load_n(&L->ring[SHM_DIR_C2S].rd_closed, __ATOMIC_ACQUIRE) == 1 &&
        !is("c_flags")) { /* the server let go of the connection (it closed it) */
      err = -2;
      break;
    }
  }
  double ms = (double)(rel_now_ns() - t0) / 1e6;
  if (err == -1)
    printf("hclient %s: server kept the connection\n", cas);
  else
    printf("hclient %s: server closed after %.1f ms (%s)\n", cas, ms, err == -2 ? "rd_closed" : rel_errname(err));
  return 0;
}

/* A hostile peer: plays the server side of the real negotiation toward a shimmed
 * client (it is not preloaded itself; it speaks the protocol with the library's
 * own core functions), then breaks the rules in one way per CASE.
 *
 *   hostile ADDR CASE      (prints "ready" once listening; serves one connection)
 *
 * ADDR: tcp4:PORT | unix:PATH. After the handshake (see victim.c: HELLO through
 * the ring, READY back) it applies CASE:
 *   control        no fault: streams PATTERN_BYTES of the pattern, then closes
 *   head_beyond    s2c head one byte more than a full ring ahead of the tail
 *   head_garbage   s2c head set to 0x80000000
 *   head_back      publishes 1000 bytes, waits until they are consumed, then
 *                  moves the head back by 500
 *   tail_past      c2s tail 100000 bytes past the victim's head
 *   tail_back      consumes three rings' worth of the victim's writes, then moves
 *                  the c2s tail back by more than a ring and stops consuming
 *   flags          a thread flips every flag and counter of both rings and of
 *                  the switch-over area at random for 1.5 s, then exits
 *   futex          a thread hammers both futex words (increment + FUTEX_WAKE)
 *                  for 3 s while never consuming (the victim's writes block)
 *   side_lock      the victim's end made to look shared by two of its processes
 *                  (holders 2), its side locks held by pid 1 for good; then the
 *                  pattern: the victim's read waits 2 s at most, then takes them
 *   kick_flood     kick bytes on the socket, one every 200 us, for 2 s
 *   seg_unsealed   the segment is not sealed (and is truncated after the offer)
 *   seg_small      file one page smaller than its header's geometry
 *   seg_big        file one page larger than its header's geometry
 *   seg_tmpfile    a regular file on a disk file system, not a memfd
 *   seg_magic      wrong magic in the segment header
 *   seg_version    a later version in the segment header
 *   offer_ino      offer addressed to another connection's inode, then the
 *                  connection is served plainly (HELLO/READY/pattern on the socket)
 *   offer_proof    offer whose proof is another socket of ours (not the
 *                  connection's), then served plainly
 *   offer_steal    after the handshake, offers a forged segment to every other
 *                  shimmed endpoint it can see (/proc/net/unix), then control
 *   marker_far     (AF_UNIX) 40,000 well-formed descriptor markers whose offsets
 *                  lie far beyond anything the ring can hold ahead of the victim
 *   marker_many    (AF_UNIX) 5,000 markers at increasing offsets within the ring
 *                  ahead of the victim, more than a connection may queue
 *   marker_fds     (AF_UNIX) 24 markers within the ring, each carrying 253
 *                  descriptors (6,072 in all), more than a connection may hold
 *   marker_cut     (AF_UNIX) 250 kick bytes, then two well-formed messages of 5
 *                  bytes with one descriptor each (a marker, then the ring data):
 *                  the first marker is cut by the reader's 256-byte drain
 *                  buffer, and each message must still get its own descriptor
 *                  (victim op scm; the second got both before 0a3d3ce)
 * Output: one line "hostile CASE: ..." on stdout; exit 0 if it could stage the
 * case (the victim's reaction is judged by victim.c and the script). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "diag.h"
#include "offer.h"
#include "relutil.h"
#include "ring.h"
#include "segment.h"
#include "wait.h"

#define RING 65536u

static const char *cas;
static int conn_fd = -1;
static struct shm_seg_layout *L;
static struct shm_ring tx, rx; /* s2c producer, c2s consumer */

static void die(const char *what) __attribute__((noreturn));
static void die(const char *what) {
  printf("hostile %s: cannot stage: %s (%s)\n", cas, what, strerror(errno));
  exit(2);
}

static int is(const char *c) { return !strcmp(cas, c); }

/* A segment laid out as the library's, built by hand so that each case can break
 * one property. Named so that the victim can find its mapping (guard pages). */
static int make_segment(uint32_t ring, off_t delta, int seal, uint64_t magic, uint32_t version) {
  size_t size = shm_seg_size_for(ring);
  int fd;
  if (is("seg_tmpfile")) {
    char path[] = "/var/tmp/shmshim-hostile-XXXXXX";
    fd = mkstemp(path);
    if (fd < 0) die("mkstemp");
    unlink(path);
  } else {
    fd = (int)syscall(SYS_memfd_create, "shmshim-hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) die("memfd_create");
  }
  if (ftruncate(fd, (off_t)size + delta) < 0) die("ftruncate");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  L = p;
  L->hdr.magic = magic;
  L->hdr.version = version;
  L->hdr.hdr_size = SHM_SEG_HDR_SIZE;
  L->hdr.seg_size = size;
  L->hdr.ring_size = ring;
  L->conn.holders[0] = L->conn.holders[1] = 1;
  if (seal && !is("seg_tmpfile") && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) die("seal");
  struct shm_seg s = {.base = L, .size = size, .ring_size = ring, .fd = -1};
  shm_seg_ring(&s, SHM_DIR_S2C, SHM_RING_PRODUCER, &tx);
  shm_seg_ring(&s, SHM_DIR_C2S, SHM_RING_CONSUMER, &rx);
  return fd;
}

/* 0 sent; -1 the other side closed first (a victim may reject a connection before
 * reading it); other failures end the run. */
static int send_offer(int ep, uint64_t client_ino, uint64_t own_ino, int segfd, int proof) {
  /* The descriptor named is always our end of our own connection, which we do
   * hold: offer_proof then reaches the proof's check, offer_steal (our end,
   * named to another connection's client) is refused before anything is
   * received. */
  if (shm_offer_send(ep, RING, client_ino, own_ino, conn_fd, segfd, proof, MSG_NOSIGNAL) ==
      (long)sizeof(struct shm_offer))
    return 0;
  if (errno == EPIPE || errno == ECONNRESET) return -1;
  die("sendmsg offer");
}

static int connect_endpoint(uint64_t ino) {
  int ep = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  socklen_t sl = rel_endpoint_name(ino, &sa);
  if (connect(ep, (struct sockaddr *)&sa, sl) < 0) {
    close(ep);
    return -1;
  }
  return ep;
}

/* Descriptor markers as the library's send_marker writes them ('A' + the 64-bit
 * stream offset), n of them at first, first+1, ..., each with nfds copies of one
 * descriptor; anc_seq is bumped as a sender does. Stops when the victim closes. */
static int send_markers(uint64_t first, int n, int nfds) {
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC), sent = 0;
  if (devnull < 0) die("/dev/null");
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(253 * sizeof(int))];
  } ctl;
  static unsigned char buf[9 * 1024];
  for (int i = 0; i < n;) {
    int k = nfds ? 1 : (n - i < 1024 ? n - i : 1024); /* the kernel ends a read at descriptors */
    for (int j = 0; j < k; j++) {
      uint64_t off = first + (uint64_t)i + (uint64_t)j;
      buf[9 * j] = 'A';
      memcpy(buf + 9 * j + 1, &off, 8);
    }
    struct iovec v = {buf, 9 * (size_t)k};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    if (nfds) {
      memset(&ctl, 0, sizeof ctl);
      m.msg_control = ctl.b;
      m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
      struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
      for (int j = 0; j < nfds; j++) memcpy(CMSG_DATA(cm) + (size_t)j * sizeof(int), &devnull, sizeof(int));
    }
    ssize_t w = sendmsg(conn_fd, &m, MSG_NOSIGNAL);
    if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) break; /* the victim gave up */
    if (w != (ssize_t)v.iov_len) die("sendmsg marker"); /* blocking: whole or error */
    __atomic_add_fetch(&L->ring[SHM_DIR_S2C].anc_seq, 1, __ATOMIC_RELEASE);
    i += k;
    sent += k;
  }
  close(devnull);
  return sent;
}

static void kick(void) { send(conn_fd, "k", 1, MSG_DONTWAIT | MSG_NOSIGNAL); }

/* Kick bytes pile up on our socket; unread bytes at close would turn our FIN into
 * a reset and change what the victim sees. */
static void drain_socket(void) {
  char b[4096];
  while (recv(conn_fd, b, sizeof b, MSG_DONTWAIT) > 0) {
  }
}

static void publish(const void *b, size_t n) {
  size_t done = 0;
  uint64_t t0 = rel_now_ns();
  while (done < n) {
    ssize_t w = shm_ring_write(&tx, (const char *)b + done, n - done);
    if (w < 0) die("ring write");
    done += (size_t)w;
    if (shm_wait_data_sleeper(&tx) & SHM_SLEEP_SOCKET) kick();
    if (w == 0) {
      if (rel_now_ns() - t0 > 20 * REL_NS_PER_S) die("victim does not read");
      usleep(500);
      drain_socket();
    }
  }
}

/* Reads exactly n bytes from the c2s ring (the victim has switched) or, for the
 * plain cases, from the socket. */
static void take(void *b, size_t n, int plain) {
  size_t got = 0;
  uint64_t t0 = rel_now_ns();
  while (got < n) {
    ssize_t r = plain ? recv(conn_fd, (char *)b + got, n - got, MSG_DONTWAIT)
                      : shm_ring_read(&rx, (char *)b + got, n - got, 0);
    if (r == 0 && plain) die("victim closed");
    if (r > 0) {
      got += (size_t)r;
      if (!plain && (shm_wait_space_sleeper(&rx) & SHM_SLEEP_SOCKET)) kick();
      continue;
    }
    if (rel_now_ns() - t0 > 20 * REL_NS_PER_S) die("no READY from the victim");
    usleep(500);
    if (!plain) drain_socket();
  }
}

static void stream_pattern(int plain) {
  static unsigned char buf[65536];
  for (uint64_t off = 0; off < REL_PATTERN_BYTES; off += sizeof buf) {
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = rel_gen(REL_SEED_HOSTILE, off + i);
    if (plain) {
      if (rel_write_all(conn_fd, buf, sizeof buf) < 0) die("plain write");
    } else {
      publish(buf, sizeof buf);
    }
  }
  if (!plain) shm_ring_close_write(&tx);
}

/* Keeps the connection open until the victim closes it (or 20 s), so that what
 * the victim reports is the corruption, not our exit. */
static void linger(void) {
  uint64_t t0 = rel_now_ns();
  while (rel_now_ns() - t0 < 20 * REL_NS_PER_S) {
    struct pollfd p = {conn_fd, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char b[4096];
      ssize_t r = recv(conn_fd, b, sizeof b, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN)) return;
    }
  }
}

static volatile int stop;
static uint64_t rnd_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return (uint32_t)rnd_state;
}

static void *flipper(void *a) {
  (void)a;
  while (!stop) {
    struct shm_ring_ctl *r = &L->ring[rnd() & 1];
    uint32_t v = rnd() % 4 == 0 ? rnd() : rnd() % 3;
    switch (rnd() % 12) {
      case 0: __atomic_store_n(&r->wr_closed, v, __ATOMIC_RELEASE); break;
      case 1: __atomic_store_n(&r->rd_closed, v, __ATOMIC_RELEASE); break;
      case 2: __atomic_store_n(&r->cons_armed, v, __ATOMIC_RELEASE); break;
      case 3: __atomic_store_n(&r->prod_armed, v, __ATOMIC_RELEASE); break;
      case 4: __atomic_store_n(&r->anc_seq, v, __ATOMIC_RELEASE); break;
      case 5: __atomic_store_n(&r->woke_ns, (uint64_t)rnd() << 20, __ATOMIC_RELEASE); break;
      case 6: __atomic_store_n(&L->conn.holders[rnd() & 1], v, __ATOMIC_RELEASE); break;
      case 7: __atomic_store_n(&L->conn.switched, v, __ATOMIC_RELEASE); break;
      case 8: __atomic_store_n(&L->conn.c2s_plain, (uint64_t)rnd(), __ATOMIC_RELEASE); break;
      case 9: kick(); break;
      case 10: __atomic_store_n(&r->prod_fast, v, __ATOMIC_RELEASE); break; /* fast mode (core/wait.c) */
      case 11: __atomic_store_n(&r->cons_mb, v, __ATOMIC_RELEASE); break;
    }
    if (rnd() % 64 == 0) usleep(50);
  }
  return NULL;
}

static void *hammer(void *a) {
  (void)a;
  while (!stop) {
    for (int d = 0; d < 2; d++) {
      __atomic_add_fetch(&L->ring[d].data_seq, 1, __ATOMIC_RELEASE);
      __atomic_add_fetch(&L->ring[d].space_seq, 1, __ATOMIC_RELEASE);
      syscall(SYS_futex, &L->ring[d].data_seq, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
      syscall(SYS_futex, &L->ring[d].space_seq, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
    }
  }
  return NULL;
}

/* Every shimmed client endpoint this process can see, except `skip`. */
static int steal_offers(uint64_t skip, int proof) {
  FILE *f = fopen("/proc/net/unix", "r");
  if (!f) die("/proc/net/unix");
  char line[512];
  int sent = 0;
  while (fgets(line, sizeof line, f)) {
    char *p = strstr(line, "@shmshim/1/");
    if (!p) continue;
    uint64_t ino = strtoull(p + 11, NULL, 10);
    if (ino == skip) continue;
    int ep = connect_endpoint(ino);
    if (ep < 0) continue;
    /* A forged segment with bytes already published in it; our own connection's
     * segment and handles are kept aside meanwhile. */
    struct shm_seg_layout *keep_l = L;
    struct shm_ring keep_tx = tx, keep_rx = rx;
    int seg = make_segment(RING, 0, 1, SHM_SEG_MAGIC, SHM_SEG_VERSION);
    static const char evil[] = "STOLEN-STOLEN-STOLEN";
    shm_ring_write(&tx, evil, sizeof evil - 1);
    L = keep_l;
    tx = keep_tx;
    rx = keep_rx;
    /* Sent, or refused before being read (the victim looked before its real
     * server had accepted, when no offer can be verified): both are attempts. */
    send_offer(ep, ino, 0, seg, proof);
    close(seg);
    close(ep);
    sent++;
  }
  fclose(f);
  return sent;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: hostile ADDR CASE\n");
    return 2;
  }
  cas = argv[2];
  alarm(60);
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(argv[1], &ss, &fam);
  int l = socket(fam, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 4) < 0) die("listen");
  printf("ready\n");
  fflush(stdout);
  conn_fd = accept(l, NULL, NULL);
  if (conn_fd < 0) die("accept");

  /* The negotiation, as the library's accept() does it. */
  struct stat own;
  fstat(conn_fd, &own);
  uint32_t peer_ino = 0, peer_uid = 0;
  if (fam == AF_UNIX) {
    if (shm_diag_unix_peer_ino((uint32_t)own.st_ino, &peer_ino) < 0 || shm_diag_unix_owner(peer_ino, &peer_uid) < 0)
      die("unix_diag");
  } else {
    struct sockaddr_storage self, peer;
    socklen_t l1 = sizeof self, l2 = sizeof peer;
    getsockname(conn_fd, (struct sockaddr *)&self, &l1);
    getpeername(conn_fd, (struct sockaddr *)&peer, &l2);
    if (shm_diag_tcp(&peer, &self, &peer_ino, &peer_uid) < 0) die("sock_diag");
  }
  int ep = connect_endpoint(peer_ino);
  if (ep < 0) die("victim has no endpoint (not shimmed?)");

  /* A victim that ignores the offer, or cannot take it (a bad segment), stays
   * plain: so do we, as a real server does until its client attaches. */
  int plain = is("offer_ino") || is("offer_proof") || strncmp(cas, "seg_", 4) == 0;
  int segfd;
  if (is("seg_unsealed")) segfd = make_segment(RING, 0, 0, SHM_SEG_MAGIC, SHM_SEG_VERSION);
  else if (is("seg_small")) segfd = make_segment(RING, -4096, 1, SHM_SEG_MAGIC, SHM_SEG_VERSION);
  else if (is("seg_big")) segfd = make_segment(RING, 4096, 1, SHM_SEG_MAGIC, SHM_SEG_VERSION);
  else if (is("seg_magic")) segfd = make_segment(RING, 0, 1, 0x4141414141414141ull, SHM_SEG_VERSION);
  else if (is("seg_version")) segfd = make_segment(RING, 0, 1, SHM_SEG_MAGIC, SHM_SEG_VERSION + 1);
  else segfd = make_segment(RING, 0, 1, SHM_SEG_MAGIC, SHM_SEG_VERSION);
  int proof = conn_fd, other = -1;
  if (is("offer_proof")) {
    other = socket(fam == AF_UNIX ? AF_UNIX : fam, SOCK_STREAM, 0);
    proof = other;
  }
  if (send_offer(ep, is("offer_ino") ? peer_ino + 1 : peer_ino, own.st_ino, segfd, proof) < 0)
    die("the victim closed its endpoint");
  /* Kept open until the victim has attached, as a real server keeps it: the
   * victim answers on it before it attaches (and stays plain if it cannot). */
  /* The victim must refuse this segment and stay plain. If it had mapped the
   * unsealed one, shrinking it now would make its next access SIGBUS. */
  if (is("seg_unsealed") && ftruncate(segfd, 0) < 0) die("truncate");

  /* Handshake: HELLO to the victim, READY back. */
  static const char hello[] = "HELLO\n";
  char ready[7] = {0};
  /* As a real server: our first bytes go through the socket (they wake the victim,
   * which then looks for the offer), and our direction switches to the ring once
   * the victim has attached. */
  if (rel_write_all(conn_fd, hello, 6) < 0) die("plain hello");
  if (!plain) {
    uint64_t t0 = rel_now_ns();
    while (__atomic_load_n(&L->conn.attached, __ATOMIC_ACQUIRE) != 1) {
      if (rel_now_ns() - t0 > 20 * REL_NS_PER_S) die("the victim never attached");
      usleep(500);
    }
    __atomic_store_n(&L->conn.s2c_plain, 6, __ATOMIC_RELAXED);
    __atomic_store_n(&L->conn.s_switched, 1, __ATOMIC_RELEASE);
  }
  close(ep);
  take(ready, 6, plain);
  if (strcmp(ready, "READY\n")) die("bad READY");

  pthread_t th;
  if (is("control") || plain) {
    stream_pattern(plain);
    drain_socket();
    printf("hostile %s: streamed %llu bytes%s\n", cas, (unsigned long long)REL_PATTERN_BYTES,
           plain ? " plainly" : " through the ring");
    close(conn_fd);
    return 0;
  }
  if (is("side_lock")) {
    /* The victim's end (index 0: the client) made to look shared with another
     * process of its own, which holds both its side locks and never lets go
     * (pid 1: alive, not a zombie). Its reads must still end, the wait bounded. */
    __atomic_store_n(&L->conn.holders[0], 2, __ATOMIC_RELAXED);
    __atomic_store_n(&L->side[0].lock[0], 1u, __ATOMIC_RELEASE);
    __atomic_store_n(&L->side[0].lock[1], 1u, __ATOMIC_RELEASE);
    stream_pattern(0);
    drain_socket();
    printf("hostile %s: the victim's side locks held by pid 1, then streamed\n", cas);
    close(conn_fd);
    return 0;
  }
  if (is("offer_steal")) {
    int n = steal_offers(peer_ino, conn_fd);
    stream_pattern(0);
    drain_socket();
    printf("hostile %s: forged offers sent to %d other endpoint(s), then streamed\n", cas, n);
    close(conn_fd);
    return n > 0 ? 0 : 3;
  }
  struct shm_ring_ctl *s2c = &L->ring[SHM_DIR_S2C], *c2s = &L->ring[SHM_DIR_C2S];
  if (is("head_beyond")) {
    __atomic_store_n(&s2c->head, tx.pos + RING + 1, __ATOMIC_RELEASE);
  } else if (is("head_garbage")) {
    __atomic_store_n(&s2c->head, 0x80000000u, __ATOMIC_RELEASE);
  } else if (is("head_back")) {
    static char junk[1000];
    publish(junk, sizeof junk);
    uint64_t t0 = rel_now_ns();
    while (__atomic_load_n(&s2c->tail, __ATOMIC_ACQUIRE) != tx.pos) {
      if (rel_now_ns() - t0 > 20 * REL_NS_PER_S) die("victim did not consume");
      usleep(500);
    }
    __atomic_store_n(&s2c->head, tx.pos - 500, __ATOMIC_RELEASE);
  } else if (is("tail_past")) {
    __atomic_store_n(&c2s->tail, rx.pos + 100000, __ATOMIC_RELEASE);
  } else if (is("tail_back")) {
    /* The victim must have seen our tail move (its cache refreshed) before we move
     * it back: a ring's worth of room is all its cache can cover. */
    static char sink[3 * RING];
    take(sink, sizeof sink, 0);
    __atomic_store_n(&c2s->tail, rx.pos - RING - 1, __ATOMIC_RELEASE);
  } else if (is("flags") || is("futex")) {
    pthread_create(&th, NULL, is("flags") ? flipper : hammer, NULL);
    usleep(is("flags") ? 1500000 : 3000000);
    stop = 1;
    pthread_join(th, NULL);
    drain_socket();
    printf("hostile %s: done, exiting\n", cas);
    return 0;
  } else if (is("marker_cut")) {
    static char kicks[250];
    memset(kicks, 'k', sizeof kicks);
    if (send(conn_fd, kicks, sizeof kicks, MSG_NOSIGNAL) != (ssize_t)sizeof kicks) die("kicks");
    unsigned char msg[10];
    for (int i = 0; i < 10; i++) msg[i] = (unsigned char)rel_gen(REL_SEED_HOSTILE, (uint64_t)i);
    uint64_t at = tx.pos;
    if (send_markers(at, 1, 1) != 1 || send_markers(at + 5, 1, 1) != 1) die("markers");
    publish(msg, sizeof msg);
    __atomic_store_n(&s2c->wr_closed, 1, __ATOMIC_RELEASE); /* then end of file */
    kick();
    linger();
    printf("hostile %s: two messages with a descriptor each after 250 kick bytes\n", cas);
    return 0;
  } else if (!strncmp(cas, "marker_", 7)) {
    int n;
    if (is("marker_far")) n = send_markers((uint64_t)1 << 40, 40000, 0);
    else if (is("marker_many")) n = send_markers(tx.pos + 1, 5000, 0);
    else if (is("marker_fds")) n = send_markers(tx.pos + 1, 24, 253);
    else die("unknown case");
    linger();
    printf("hostile %s: %d markers sent, victim closed\n", cas, n);
    return 0;
  } else if (is("kick_flood")) {
    uint64_t t0 = rel_now_ns();
    int n = 0;
    while (rel_now_ns() - t0 < 2 * REL_NS_PER_S) {
      kick();
      n++;
      usleep(200);
    }
    printf("hostile %s: %d kicks sent, exiting\n", cas, n);
    return 0;
  } else {
    die("unknown case");
  }
  kick();
  linger();
  printf("hostile %s: corrupted, victim closed\n", cas);
  return 0;
}

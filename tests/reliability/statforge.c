/* Processes that lie to `shmshim stat` (tests/reliability/statsafe.sh).
 *
 *   statforge swap FIFO          holds a memfd named like the statistics table;
 *                                on SIGUSR1 puts an O_PATH descriptor of FIFO in
 *                                its place (same number) and prints "swapped"
 *   statforge big                holds a forged table of 65,536 slots that all
 *                                name its one socket
 *   statforge plant UID_A UID_B  (root) runs as UID_A holding a forged table
 *                                naming its own pid and socket, created by a
 *                                child running as UID_B and sent to it through
 *                                a unix socket (as another user could plant one)
 *   statforge nopidfd CMD ARGS   runs CMD with pidfd_open and pidfd_getfd failing
 *                                with ENOSYS (seccomp), as in old kernels and
 *                                some sandboxes
 * Each holding mode prints "ready PID FD" (FD: the table's descriptor) and waits
 * to be killed. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stats.h"

#define DIE(what)                                                      \
  do {                                                                 \
    fprintf(stderr, "statforge: %s: %s\n", what, strerror(errno));     \
    exit(2);                                                           \
  } while (0)

/* A table that passes every check of the reader's parser: nslots slots, each
 * naming socket inode `ino` at descriptor `fd`, owner `pid`. */
static int forge_table(int pid, uint32_t nslots, uint32_t ino, int fd) {
  int m = (int)syscall(SYS_memfd_create, SHM_STAT_MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (m < 0) DIE("memfd_create");
  size_t size = SHM_STAT_HDR_SIZE + (size_t)nslots * sizeof(struct shm_stat_slot);
  if (ftruncate(m, (off_t)size) < 0) DIE("ftruncate");
  char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  if (p == MAP_FAILED) DIE("mmap");
  struct shm_stat_hdr *h = (void *)p;
  h->magic = SHM_STAT_MAGIC;
  h->version = SHM_STAT_VERSION;
  h->hdr_size = SHM_STAT_HDR_SIZE;
  h->slot_size = sizeof(struct shm_stat_slot);
  h->nslots = nslots;
  h->pid = pid;
  h->upgraded_client = 424242; /* recognisable */
  struct shm_stat_slot *s = (void *)(p + SHM_STAT_HDR_SIZE);
  for (uint32_t i = 0; i < nslots; i++) {
    s[i].state = 2; /* upgraded */
    s[i].role = 1;
    s[i].tracked = 1;
    s[i].family = AF_UNIX;
    s[i].fd = fd;
    s[i].ino = ino;
    s[i].tx_ring = 0x4242424242ull;
  }
  munmap(p, size);
  if (fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) DIE("seal");
  return m;
}

static uint32_t ino_of(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) DIE("fstat");
  return (uint32_t)st.st_ino;
}

static void hold(int fd) {
  printf("ready %d %d\n", (int)getpid(), fd);
  fflush(stdout);
  for (;;) pause();
}

static int swap_mode(const char *fifo) {
  int m = (int)syscall(SYS_memfd_create, SHM_STAT_MEMFD_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (m < 0) DIE("memfd_create");
  if (ftruncate(m, SHM_STAT_HDR_SIZE) < 0) DIE("ftruncate");
  int o = open(fifo, O_PATH | O_CLOEXEC); /* needs no permission on the FIFO itself */
  if (o < 0) DIE("open O_PATH");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, NULL);
  printf("ready %d %d\n", (int)getpid(), m);
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  if (dup2(o, m) < 0) DIE("dup2");
  printf("swapped\n");
  fflush(stdout);
  for (;;) pause();
}

static int plant_mode(uid_t a, uid_t b) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) DIE("socketpair");
  int parent = (int)getpid();
  pid_t c = fork();
  if (c < 0) DIE("fork");
  if (c == 0) {
    if (setresgid(b, b, b) < 0 || setresuid(b, b, b) < 0) DIE("setresuid B");
    int t = forge_table(parent, 1, ino_of(sv[0]), sv[0]);
    union {
      struct cmsghdr h;
      char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec v = {"T", 1};
    struct msghdr msg = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &t, sizeof t);
    if (sendmsg(sv[1], &msg, 0) != 1) DIE("sendmsg");
    _exit(0);
  }
  if (setgroups(0, NULL) < 0 || setresgid(a, a, a) < 0 || setresuid(a, a, a) < 0) DIE("setresuid A");
  union {
    struct cmsghdr h;
    char b[CMSG_SPACE(sizeof(int))];
  } ctl;
  char x;
  struct iovec v = {&x, 1};
  struct msghdr msg = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
  if (recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC) != 1 || !CMSG_FIRSTHDR(&msg)) DIE("recvmsg");
  int t;
  memcpy(&t, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof t);
  waitpid(c, NULL, 0);
  hold(t);
  return 0;
}

static int nopidfd_mode(char **argv) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_getfd, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
    DIE("seccomp");
  execvp(argv[0], argv);
  DIE("exec");
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "swap")) return swap_mode(argv[2]);
  if (argc == 2 && !strcmp(argv[1], "big")) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) DIE("socketpair");
    hold(forge_table((int)getpid(), SHM_STAT_MAX_SLOTS, ino_of(sv[0]), sv[0]));
  }
  if (argc == 4 && !strcmp(argv[1], "plant")) return plant_mode((uid_t)atol(argv[2]), (uid_t)atol(argv[3]));
  if (argc >= 3 && !strcmp(argv[1], "nopidfd")) return nopidfd_mode(argv + 2);
  fprintf(stderr, "usage: see statforge.c\n");
  return 2;
}

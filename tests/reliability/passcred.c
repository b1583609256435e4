/* Credentials of data on an AF_UNIX stream read with SO_PASSCRED (docs/security.md).
 *
 *   passcred server PATH      accept one connection, SO_PASSCRED on, read records
 *   passcred client PATH UID  connect, then write records as described below
 *
 * The kernel gives every message the credentials of the process that wrote it,
 * at the time it wrote it (pid, real uid and gid), unless the writer attached
 * SCM_CREDENTIALS itself. Each record says who wrote it: "R pid uid gid\n", from
 * getpid(), getuid(), getgid() at the time of the write. The server checks every
 * record against the SCM_CREDENTIALS of the read that returned it (the kernel
 * never returns data of two writers in one read) and prints
 *   passcred: records=N mismatches=M writers=W
 * (W: distinct pid/uid pairs seen), exit 0 when M is 0 and N is 4.
 *
 * The client (started as root): record 1, then reads the server's one-byte reply
 * (taking the offer: its writes go to the ring from then on), record 2, drops its
 * gid and uid to UID (setresgid, setresuid: a privilege drop), record 3, forks a
 * child that writes record 4 and exits, closes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define DIE(...) do { fprintf(stderr, "passcred: " __VA_ARGS__); fprintf(stderr, " (%s)\n", strerror(errno)); exit(2); } while (0)

static socklen_t addr_of(const char *path, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  snprintf(sa->sun_path, sizeof sa->sun_path, "%s", path);
  return (socklen_t)sizeof *sa;
}

static void record(int fd) {
  char b[96];
  int n = snprintf(b, sizeof b, "R %d %u %u\n", (int)getpid(), (unsigned)getuid(), (unsigned)getgid());
  if (write(fd, b, (size_t)n) != n) DIE("write");
}

static int server(const char *path) {
  struct sockaddr_un sa;
  socklen_t sl = addr_of(path, &sa);
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(path);
  if (bind(l, (struct sockaddr *)&sa, sl) < 0 || listen(l, 4) < 0) DIE("listen");
  printf("ready\n");
  fflush(stdout);
  int fd = accept(l, NULL, NULL), one = 1;
  if (fd < 0) DIE("accept");
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) DIE("SO_PASSCRED");
  char buf[4096];
  size_t have = 0;
  int records = 0, bad = 0, replied = 0, nw = 0;
  struct ucred seen[16];
  for (;;) {
    union {
      struct cmsghdr h;
      char b[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec v = {buf + have, sizeof buf - have - 1};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(fd, &m, 0);
    if (n < 0) DIE("recvmsg");
    if (n == 0) break;
    struct ucred cr = {0, (uid_t)-1, (gid_t)-1};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS) memcpy(&cr, CMSG_DATA(cm), sizeof cr);
    if (have) {
      /* A record split across reads: its start came with other credentials. */
      fprintf(stderr, "passcred: a record split across reads\n");
      bad++;
    }
    have += (size_t)n;
    buf[have] = 0;
    char *p = buf, *nl;
    while ((nl = strchr(p, '\n'))) {
      int pid;
      unsigned uid, gid;
      if (sscanf(p, "R %d %u %u", &pid, &uid, &gid) != 3) DIE("bad record '%.*s'", (int)(nl - p), p);
      records++;
      if (getenv("PASSCRED_VERBOSE")) printf("record %d: pid %d uid %u (read with pid %d uid %u)\n", records, pid, uid, (int)cr.pid, (unsigned)cr.uid);
      if (pid != cr.pid || uid != cr.uid || gid != cr.gid) {
        bad++;
        printf("mismatch: record %d written by pid %d uid %u gid %u, read with pid %d uid %u gid %u\n", records, pid,
               uid, gid, (int)cr.pid, (unsigned)cr.uid, (unsigned)cr.gid);
      }
      int known = 0;
      for (int i = 0; i < nw; i++) known |= seen[i].pid == pid && seen[i].uid == uid;
      if (!known && nw < 16) seen[nw++] = (struct ucred){pid, uid, gid};
      p = nl + 1;
    }
    have = (size_t)(buf + have - p);
    memmove(buf, p, have);
    if (records >= 1 && !replied) {
      if (write(fd, "g", 1) != 1) DIE("reply");
      replied = 1;
    }
  }
  printf("passcred: records=%d mismatches=%d writers=%d\n", records, bad, nw);
  return bad == 0 && records == 4 ? 0 : 1;
}

static int client(const char *path, unsigned uid) {
  struct sockaddr_un sa;
  socklen_t sl = addr_of(path, &sa);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0), one = 1;
  /* On our side too: the kernel then gives record 1 our credentials even if the
   * server has not turned the option on yet when it is sent. */
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) DIE("SO_PASSCRED");
  if (connect(fd, (struct sockaddr *)&sa, sl) < 0) DIE("connect");
  record(fd);
  char g;
  if (read(fd, &g, 1) != 1 || g != 'g') DIE("no reply");
  record(fd);
  if (setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0) DIE("privilege drop");
  record(fd);
  /* The child is the last writer: a parent and a child that both write to one
   * upgraded connection are not supported (docs/design.md, Close, fork, exit). */
  pid_t c = fork();
  if (c < 0) DIE("fork");
  if (c == 0) {
    record(fd);
    exit(0);
  }
  int st;
  if (waitpid(c, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) DIE("child");
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  alarm(30);
  if (argc == 3 && !strcmp(argv[1], "server")) return server(argv[2]);
  if (argc == 4 && !strcmp(argv[1], "client")) return client(argv[2], (unsigned)atoi(argv[3]));
  fprintf(stderr, "usage: passcred server PATH | client PATH UID\n");
  return 2;
}

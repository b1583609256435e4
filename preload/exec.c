/* The exec family. An upgraded connection whose descriptors are all close-on-exec
 * simply ends for this process: its hold is given up first, so the peer still
 * gets a clean end of file. One that the new image inherits is either carried
 * over (the new image loads the library: core/inherit.h) or, when that cannot
 * be, replaced by a socket that fails with ECONNRESET, so that the new program
 * never reads kick bytes as data. Everything is undone if exec fails. */
#include <alloca.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "real.h"
#include "inherit.h"
#include "log.h"
#include "preload.h"

extern char **environ;

/* Connections one exec can carry over or fence (beyond: a warning, as before). */
#define MAX_CARRY 64
#define VAR_CAP (MAX_CARRY * 128)

struct exec_undo {
  int n;
  struct {
    int fd, saved; /* saved >= 0: fd was replaced, saved holds the original */
    int segfd;     /* >= 0: its close-on-exec flag was cleared */
    int epfd;      /* >= 0: the same, for a server's endpoint connection (client not proven yet) */
    int held;      /* one more hold was taken for the new image */
    struct shm_conn *c;
  } e[MAX_CARRY];
};

static unsigned exec_gen;

/* What the new image will hold of our connections: (descriptor, connection)
 * pairs, in descriptor order. Ours are the table's. A vfork() child shares our
 * memory, the table included, but not our descriptors, and changes nothing in
 * the table (preload/fdops.c: it is its parent's): what it moved since (Python's
 * subprocess: the socket dup2'ed onto 0 or 1, then every other descriptor
 * closed) is found from its own descriptors, each socket by its inode. Before,
 * its dup2 went into the table and its parent's standard output became the
 * connection. */
struct held {
  int fd;
  struct shm_conn *c;
};
#define MAX_HELD 256
static struct shm_conn *conn_of_ino(uint64_t ino) {
  SHM_FOR_EACH_CONN_FD(fd) {
    struct shm_conn *c = shm_fdtab_get()[fd].p;
    if (c->ino && c->ino == (uint32_t)ino) return c;
  }
  return NULL;
}
static void held_check(int fd, struct held *h, int *n) {
  struct stat st;
  if (*n >= MAX_HELD || shm_fd_kind(fd) == SHM_FD_INTERNAL || syscall(SYS_fstat, fd, &st) < 0 || !S_ISSOCK(st.st_mode))
    return;
  struct shm_conn *c = conn_of_ino((uint64_t)st.st_ino);
  if (c) h[(*n)++] = (struct held){fd, c};
}
static int held_of_vfork_child(struct held *h) {
  int n = 0;
  int d = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d < 0) { /* no /proc: every number the table has ever known */
    unsigned high = __atomic_load_n(&shm_fdhigh, __ATOMIC_RELAXED);
    for (unsigned fd = 0; fd <= high && fd < 65536; fd++) held_check((int)fd, h, &n);
    return n;
  }
  struct raw_dirent {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[];
  };
  char buf[4096] __attribute__((aligned(8)));
  long r;
  while ((r = syscall(SYS_getdents64, d, buf, sizeof buf)) > 0) {
    for (long off = 0; off < r;) {
      struct raw_dirent *e = (struct raw_dirent *)(buf + off);
      off += e->reclen;
      if (e->name[0] < '0' || e->name[0] > '9') continue;
      int fd = 0;
      for (const char *p = e->name; *p >= '0' && *p <= '9' && fd < (1 << 24); p++) fd = fd * 10 + (*p - '0');
      if (fd != d) held_check(fd, h, &n);
    }
  }
  shm_sys_close(d);
  return n;
}
/* The next pair (1) or none left (0): from h (a vfork child's), else from the
 * table; *pos is where to look next. */
static int next_held(const struct held *h, int nh, unsigned *pos, int *fd, struct shm_conn **c) {
  if (h) {
    if (*pos >= (unsigned)nh) return 0;
    *fd = h[*pos].fd;
    *c = h[(*pos)++].c;
    return 1;
  }
  for (; shm_fdtab_get() && *pos < shm_fdcap && *pos <= shm_fdhigh; (*pos)++)
    if (shm_fdtab_get()[*pos].kind == SHM_FD_CONN) {
      *fd = (int)*pos;
      *c = shm_fdtab_get()[(*pos)++].p;
      return 1;
    }
  return 0;
}

/* Will the new image load this library (and not have it disabled)? */
int pl_target_shimmed(char *const envp[]) {
  int pre = 0;
  for (char *const *e = envp; e && *e; e++) {
    if (!strncmp(*e, "LD_PRELOAD=", 11) && strstr(*e, "libshmshim")) pre = 1;
    if (!strncmp(*e, "SHMSHIM_DISABLE=", 16) && strcmp(*e + 16, "0") && (*e)[16]) return 0;
  }
  return pre;
}

/* A pending connection handed to a new image (by exec, or by a spawn inside
 * libc) becomes plain at both ends:
 * - a server's, accepted and never used here (inetd, sshd, git daemon): the new
 *   image's library does not know it; say so;
 * - a client's (a shell's child writing to the shell's connection): its plain
 *   bytes are not counted by this process, which keeps the connection, so the
 *   switch point it would announce would be wrong. The endpoint is shut down in
 *   the open file both processes share: no server can connect to it any more,
 *   and an offer queued already is refused (core/negotiate.c take_offer). */
void pl_pending_handed_on(int fd, struct shm_conn *c) {
  if (c->role == SHM_SERVER) shm_conn_refuse(fd, c, "handed to a new image before its first use");
  else shm_conn_endpoint_shut(c);
}

/* A socket whose reads fail with ECONNRESET: a unix pair whose other end was
 * closed with data unread. */
int pl_dead_socket(void) {
  int sv[2];
  if (syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -1;
  syscall(SYS_write, sv[0], "x", 1);
  shm_sys_close(sv[1]);
  return sv[0];
}

static void replace_with_dead(int fd, struct shm_conn *c, struct exec_undo *u, int vforked, const char *why) {
  /* Given up first, while fd still is the connection's socket (its kicks are
   * consumed there, not the dead socket's error). A vfork() child was never
   * counted as a holder: it has nothing to give up. */
  if (!vforked) shm_conn_exit(fd, c);
  int saved = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 3);
  int d = pl_dead_socket();
  if (saved < 0 || d < 0 || syscall(SYS_dup2, d, fd) < 0) {
    SHM_LOG(WARN, "fd=%d: upgraded connection inherited across exec could not be fenced", fd);
    if (saved >= 0) shm_sys_close(saved);
    if (d >= 0) shm_sys_close(d);
    return;
  }
  shm_sys_close(d);
  SHM_LOG(WARN, "fd=%d: upgraded connection inherited by a new image that cannot take it over (%s): "
                "it will read ECONNRESET there", fd, why);
  if (u->n < MAX_CARRY) u->e[u->n++] = (typeof(u->e[0])){fd, saved, -1, -1, 0, c};
  else shm_sys_close(saved);
}

/* Returns the environment the new image gets (envp itself, or a copy with our
 * variable, in *storage). */
static size_t env_count(char *const envp[]) {
  size_t n = 0;
  while (envp && envp[n]) n++;
  return n;
}

/* Environments larger than this are passed on as they are (nothing carried). */
#define ENV_MAX 16384

/* Returns the environment the new image gets: envp itself, or ne (room for
 * env_count(envp) + 2 pointers, on the caller's stack: no malloc, which a vfork()
 * child must not call) filled with envp and our variable. */
/* envp without any SHMSHIM_INHERIT (a copy the program kept from before our
 * constructor removed it, or one it made up): only ours, describing this exec,
 * may reach the new image. */
static char *const *strip_inherit(char *const envp[], size_t n, char **ne) {
  static const char name[] = SHM_INHERIT_VAR "=";
  size_t k = 0;
  if (n > ENV_MAX) return envp;
  for (size_t i = 0; i < n; i++)
    if (strncmp(envp[i], name, sizeof name - 1)) ne[k++] = envp[i];
  if (k == n) return envp;
  ne[k] = NULL;
  return ne;
}

/* One connection an inherited descriptor (fd) hands to the new image: carried
 * (described in val, whose size is cap; its segment and any unchecked endpoint
 * connection made inheritable, noted in u), or replaced with a dead descriptor.
 * carry: the new image can take connections at all (else no_carry says why). */
static void carry_one(int fd, struct shm_conn *c, struct exec_undo *u, int vforked, int carry, const char *no_carry,
                      char *val, size_t cap) {
  if (shm_conn_state(c) == SHM_CONN_PENDING) {
    /* (A vfork() child leaves a server's state alone: the parent keeps it.) */
    if (pl_fd_inherited(fd) && !(vforked && c->role == SHM_SERVER)) pl_pending_handed_on(fd, c);
    return;
  }
  if (shm_conn_state(c) != SHM_CONN_UPGRADED) return;
  if (!pl_fd_inherited(fd)) return;
  if (c->exec_gen == exec_gen) { /* a dup of one seen already */
    if (carry && c->exec_fd >= 0 && shm_inherit_encode_dup(fd, c->exec_fd, val, cap) == 0)
      return;
    replace_with_dead(fd, c, u, vforked, carry ? "a copy of one that could not be carried, or no room left" : no_carry);
    return;
  }
  c->exec_gen = exec_gen;
  c->exec_fd = -1;
  if (carry && u->n < MAX_CARRY && shm_inherit_encode(fd, fd, c, val, cap) == 0 &&
      syscall(SYS_fcntl, shm_conn_seg_fd(c), F_SETFD, 0) == 0) {
    c->exec_fd = fd;
    /* The new image holds it from now on: in place of this process after a
     * fork(), in addition to the parent after a vfork(). */
    if (vforked) shm_conn_hold(c, 1);
    /* A server whose client has not proved itself yet: the new image checks its
     * answer on the endpoint connection (core/inherit.c). */
    int ep = shm_conn_unproven_endpoint(c);
    if (ep >= 0 && syscall(SYS_fcntl, ep, F_SETFD, 0) < 0) ep = -1;
    u->e[u->n++] = (typeof(u->e[0])){fd, -1, shm_conn_seg_fd(c), ep, vforked, c};
    return;
  }
  replace_with_dead(fd, c, u, vforked,
                    !carry                 ? no_carry
                    : shm_conn_seg_fd(c) < 0 ? "its segment was let go when every descriptor of it was close-on-exec"
                    : u->n >= MAX_CARRY    ? "more connections than one exec carries"
                                           : "no room left to describe it");
}

static char *const *before_exec(char *const envp[], struct exec_undo *u, char *var, char **ne) {
  u->n = 0;
  size_t n = env_count(envp);
  if (!shm_fdtab_get()) return strip_inherit(envp, n, ne);
  int carry = n <= ENV_MAX && pl_target_shimmed(envp);
  const char *no_carry = n > ENV_MAX ? "its environment is too large" : "the library is not in its LD_PRELOAD, or disabled there";
  /* After vfork() the child runs in our memory until exec: it must leave the
   * process's state alone (the segment's counts are the exception: it will be a
   * holder of what it carries). */
  int vforked = (pid_t)syscall(SYS_getpid) != pl_pid;
  strcpy(var, SHM_INHERIT_VAR "=");
  size_t vlen0 = strlen(var);
  char *val = var + vlen0;
  exec_gen++;
  struct held h[MAX_HELD];
  int nh = vforked ? held_of_vfork_child(h) : 0;
  unsigned pos = 0;
  int fd;
  struct shm_conn *c;
  /* First the inherited descriptors: the connections they carry over. */
  while (next_held(vforked ? h : NULL, nh, &pos, &fd, &c))
    carry_one(fd, c, u, vforked, carry, no_carry, val, VAR_CAP - vlen0);
  /* Then the connections this process gives up: no descriptor of theirs goes on
   * into the new image (or only dead ones). */
  pos = 0;
  while (!vforked && next_held(NULL, 0, &pos, &fd, &c)) {
    if (shm_conn_state(c) != SHM_CONN_UPGRADED || c->exec_gen == exec_gen) continue; /* seen above */
    shm_conn_exit(fd, c); /* (see replace_with_dead) */
  }
  if (!*val) return strip_inherit(envp, n, ne);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(envp[i], var, vlen0)) ne[k++] = envp[i];
  ne[k++] = var;
  ne[k] = NULL;
  return ne;
}

/* exec failed: this process goes on with its connections as they were. (Those
 * given up with every descriptor close-on-exec stay given up: the peer was told
 * end of file, as an exec would have done.) */
static void exec_failed(struct exec_undo *u) {
  int e = errno;
  for (int i = 0; i < u->n; i++) {
    if (u->e[i].saved >= 0) {
      syscall(SYS_dup2, u->e[i].saved, u->e[i].fd);
      shm_sys_close(u->e[i].saved);
    }
    if (u->e[i].segfd >= 0) syscall(SYS_fcntl, u->e[i].segfd, F_SETFD, FD_CLOEXEC);
    if (u->e[i].epfd >= 0) syscall(SYS_fcntl, u->e[i].epfd, F_SETFD, FD_CLOEXEC);
    if (u->e[i].held) shm_conn_hold(u->e[i].c, -1);
  }
  errno = e;
}

#define EXEC_WITH(envp, call)                                                 \
  do {                                                                        \
    struct exec_undo u;                                                       \
    char var[VAR_CAP + 32];                                                   \
    size_t n_ = env_count(envp);                                              \
    char **ne_ = alloca(((n_ <= ENV_MAX ? n_ : 0) + 2) * sizeof(char *));     \
    char *const *env_ = before_exec((envp), &u, var, ne_);                    \
    int r_ = (call);                                                          \
    exec_failed(&u);                                                          \
    return r_;                                                                \
  } while (0)

SHM_EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
  EXEC_WITH(envp, REAL(execve)(path, argv, env_));
}
SHM_EXPORT int execv(const char *path, char *const argv[]) {
  EXEC_WITH(environ, REAL(execve)(path, argv, env_));
}
SHM_EXPORT int execvp(const char *file, char *const argv[]) {
  EXEC_WITH(environ, REAL(execvpe)(file, argv, env_));
}
SHM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
  EXEC_WITH(envp, REAL(execvpe)(file, argv, env_));
}
SHM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
  EXEC_WITH(envp, REAL(fexecve)(fd, argv, env_));
}

/* execl and friends: the variadic list collected into an argv array on this
 * stack, handed to the v form (execle: the environment follows the list's NULL). */
enum { EXEC_L, EXEC_LP, EXEC_LE };
static int exec_list(int form, const char *file, const char *arg0, va_list ap) {
  size_t n = 1;
  va_list cp;
  va_copy(cp, ap);
  while (va_arg(cp, char *)) n++;
  va_end(cp);
  char **argv = alloca((n + 1) * sizeof(char *));
  argv[0] = (char *)arg0;
  for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, char *);
  if (form == EXEC_LE) return execve(file, argv, va_arg(ap, char **));
  return form == EXEC_LP ? execvp(file, argv) : execv(file, argv);
}

/* The three variadic forms, which differ only in how the list ends. */
#define EXEC_VARIADIC(name, form, first)                          \
  SHM_EXPORT int name(const char *first, const char *arg0, ...) { \
    va_list ap;                                                   \
    va_start(ap, arg0);                                           \
    int r = exec_list(form, first, arg0, ap);                     \
    va_end(ap);                                                   \
    return r;                                                     \
  }
EXEC_VARIADIC(execl, EXEC_L, path)
EXEC_VARIADIC(execlp, EXEC_LP, file)
EXEC_VARIADIC(execle, EXEC_LE, path)

/* shmshim doctor: try, on this machine and in this environment, each thing the
 * shim relies on (with the library's own code where there is some), then say
 * plainly what will and will not be accelerated. Loopback only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "diag.h"
#include "segment.h"

extern char **environ;

static int failed;

static void report(int ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(int ok, const char *what, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%-5s %-26s ", ok > 0 ? "ok" : ok == 0 ? "FAIL" : "note", what);
  vprintf(fmt, ap);
  putchar('\n');
  va_end(ap);
  if (ok == 0) failed = 1;
}

static int check_memfd(void) {
  struct shm_seg seg, peer;
  if (shm_seg_create(SHM_RING_MIN, &seg) < 0) {
    report(0, "memfd + seals", "cannot create a sealed segment: %s", strerror(errno));
    return 0;
  }
  /* The receiving side's checks, on the same descriptor. */
  int rc = shm_seg_attach(seg.fd, &peer);
  int e = errno;
  if (rc == 0) shm_seg_destroy(&peer);
  shm_seg_destroy(&seg);
  if (rc < 0) {
    report(0, "memfd + seals", "segment created but refused by the attach checks: %s", strerror(e));
    return 0;
  }
  report(1, "memfd + seals", "memfd_create, F_SEAL_SHRINK|GROW|SEAL, shared mapping");
  return 1;
}

static int check_abstract(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int n = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "shmshim-doctor/%d", (int)getpid());
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, a = -1, ok = 0;
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (l >= 0 && bind(l, (struct sockaddr *)&sa, len) == 0 && listen(l, 1) == 0 &&
      (c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 && connect(c, (struct sockaddr *)&sa, len) == 0 &&
      (a = accept(l, NULL, NULL)) >= 0 && getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 &&
      cr.uid == getuid())
    ok = 1;
  int e = errno;
  if (ok) report(1, "abstract unix sockets", "bind, connect, SO_PEERCRED");
  else report(0, "abstract unix sockets", "%s (negotiation needs them: nothing can be upgraded)", strerror(e));
  if (a >= 0) close(a);
  if (c >= 0) close(c);
  if (l >= 0) close(l);
  return ok;
}

static uint32_t ino_of(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? (uint32_t)st.st_ino : 0;
}

/* A loopback TCP pair, then the look-up the server side of the negotiation does. */
static int check_diag_tcp(int family) {
  const char *what = family == AF_INET ? "sock_diag, TCP over IPv4" : "sock_diag, TCP over IPv6";
  struct sockaddr_storage ss = {0};
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in *s = (void *)&ss;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (void *)&ss;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    len = sizeof *s;
  }
  int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, a = -1, ok = 0;
  if (l < 0 || bind(l, (struct sockaddr *)&ss, len) < 0 || listen(l, 1) < 0) {
    report(family == AF_INET ? 0 : -1, what, "no loopback %s here: %s", family == AF_INET ? "127.0.0.1" : "::1",
           strerror(errno));
    if (l >= 0) close(l);
    return 0;
  }
  socklen_t sl = sizeof ss;
  getsockname(l, (struct sockaddr *)&ss, &sl);
  struct sockaddr_storage self, peer;
  socklen_t l1 = sizeof self, l2 = sizeof peer;
  uint32_t ino = 0, uid = 0;
  int e = 0;
  if ((c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 && connect(c, (struct sockaddr *)&ss, sl) == 0 &&
      (a = accept(l, NULL, NULL)) >= 0 && getsockname(a, (struct sockaddr *)&self, &l1) == 0 &&
      getpeername(a, (struct sockaddr *)&peer, &l2) == 0) {
    /* From the accepted end, find the connecting socket: inode and owner. */
    if (shm_diag_tcp(&peer, &self, &ino, &uid) == 0) ok = ino == ino_of(c) && uid == getuid();
    else e = errno;
  } else {
    e = errno;
  }
  if (ok) report(1, what, "the peer socket's inode and owner are found");
  else report(0, what, "%s (loopback TCP cannot be upgraded)", e ? strerror(e) : "wrong socket found");
  if (a >= 0) close(a);
  if (c >= 0) close(c);
  close(l);
  return ok;
}

static int check_diag_unix(void) {
  int sv[2], ok = 0, e = 0;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    report(0, "sock_diag, AF_UNIX", "socketpair: %s", strerror(errno));
    return 0;
  }
  uint32_t peer = 0, owner = UINT32_MAX;
  if (shm_diag_unix_peer_ino(ino_of(sv[0]), &peer) == 0 && shm_diag_unix_owner(peer, &owner) == 0)
    ok = peer == ino_of(sv[1]) && owner == (uint32_t)geteuid();
  else e = errno;
  if (ok) report(1, "sock_diag, AF_UNIX", "the peer socket's inode is found");
  else report(0, "sock_diag, AF_UNIX", "%s (AF_UNIX cannot be upgraded)", e ? strerror(e) : "wrong socket found");
  close(sv[0]);
  close(sv[1]);
  return ok;
}

static void check_cpus(void) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  int usable = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
  if (online <= 1) {
    report(-1, "CPUs for spinning", "1 CPU online: waiters never spin (a spinning waiter would only delay its peer)");
  } else if (usable <= 1) {
    report(-1, "CPUs for spinning", "%ld CPUs online but this process may use %d: the shim still spins; "
           "consider --spin-us 0", online, usable);
  } else {
    report(1, "CPUs for spinning", "%ld online, %d usable here: waiters spin up to %llu us before sleeping",
           online, usable, (unsigned long long)shm_cfg.spin_us);
  }
}

/* Runs this program again with the library preloaded; the child checks that the
 * dynamic loader mapped it. */
static int check_preload(const char *lib) {
  pid_t p = fork();
  if (p == 0) {
    setenv("LD_PRELOAD", lib, 1);
    execl("/proc/self/exe", "shmshim", "doctor", "--probe", (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (p < 0 || waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    report(0, "LD_PRELOAD", "the loader did not load %s", lib);
    return 0;
  }
  report(1, "LD_PRELOAD", "the loader maps %s", lib);
  return 1;
}

static int probe_self(void) {
  FILE *f = fopen("/proc/self/maps", "re");
  char line[512];
  int found = 0;
  while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, "/libshmshim") != NULL;
  if (f) fclose(f);
  return found ? 0 : 1;
}

static void check_env(void) {
  int any = 0;
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, "SHMSHIM_", 8)) continue;
    any = 1;
    const char *eq = strchr(*e, '=');
    if (!eq) continue;
    char name[64];
    size_t n = (size_t)(eq - *e - 8);
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, *e + 8, n);
    name[n] = '\0';
    int r = shm_config_check(name, eq + 1);
    if (r == -2) report(0, "environment", "SHMSHIM_%s is not a variable the library knows", name);
    else if (r < 0) report(0, "environment", "SHMSHIM_%s=%s is invalid: the library would ignore it", name, eq + 1);
    else report(-1, "environment", "%s", *e);
  }
  if (!any) report(1, "environment", "no SHMSHIM_* variable set: defaults");
  if (shm_cfg.disable) report(-1, "environment", "SHMSHIM_DISABLE=1: the library passes every call to libc");
}

int cmd_doctor(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "--probe")) return probe_self();
  if (argc > 1) {
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
      puts("usage: shmshim doctor\nChecks what the shim needs here and says what will be accelerated.");
      return 0;
    }
    cmd_err("doctor", "unexpected argument '%s'", argv[1]);
    return CMD_USAGE;
  }
  shm_config_load(NULL); /* the environment the programs we start would see */
  struct utsname u;
  if (uname(&u) == 0) report(-1, "kernel", "%s %s %s", u.sysname, u.release, u.machine);
  char path[4096], tried[8192];
  const char *lib = cmd_find_library(path, sizeof path, tried, sizeof tried);
  int lib_ok = 0;
  if (lib) lib_ok = check_preload(lib);
  else report(0, "library", "libshmshim.so not found (looked for %s)", tried);
  int mem = check_memfd(), abs = check_abstract();
  int tcp4 = check_diag_tcp(AF_INET), tcp6 = check_diag_tcp(AF_INET6), unx = check_diag_unix();
  check_cpus();
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    report(-1, "descriptors", "soft limit %llu: the shim keeps its own few descriptors near the top of it",
           (unsigned long long)rl.rlim_cur);
  check_env();

  int base = lib_ok && mem && abs && !shm_cfg.disable;
  printf("\nAccelerated here, between two processes both started with `shmshim run` (each\n"
         "checks that the other owns the other end of the connection; the users may differ):\n");
  if (!base) printf("  nothing (see FAIL above)\n");
  if (base && tcp4 && shm_cfg.tcp) printf("  loopback TCP over IPv4 (127.0.0.0/8)\n");
  if (base && tcp4 && tcp6 && shm_cfg.tcp) printf("  loopback TCP over IPv6 (::1, ::ffff:127.x)\n");
  if (base && unx && shm_cfg.unix_) printf("  AF_UNIX stream sockets (paths and abstract names)\n");
  printf("Not accelerated (passed to libc unchanged):\n");
  if (base && !(tcp4 && shm_cfg.tcp)) printf("  loopback TCP (%s)\n", shm_cfg.tcp ? "sock_diag failed" : "SHMSHIM_TCP=0");
  if (base && tcp4 && !tcp6 && shm_cfg.tcp) printf("  loopback TCP over IPv6 (no ::1 here)\n");
  if (base && !(unx && shm_cfg.unix_)) printf("  AF_UNIX (%s)\n", shm_cfg.unix_ ? "sock_diag failed" : "SHMSHIM_UNIX=0");
  printf("  TCP to other hosts, UDP and datagram sockets, pipes and files\n"
         "  connections to processes without the shim\n"
         "  statically linked and setuid programs (the loader ignores LD_PRELOAD)\n"
         "  connections used only through io_uring, raw system calls or stdio (fdopen)\n"
         "Not safe (run such programs without the shim, or exclude their ports or paths:\n"
         "SHMSHIM_PORTS_DENY, SHMSHIM_PATHS_DENY):\n"
         "  a connection used through libc, and so upgraded, then through io_uring or raw\n"
         "  system calls: bytes written that way make the peer reset the connection\n"
         "  (ECONNRESET); reads that way get wake-up bytes instead of the data, or wait\n"
         "  for data that never comes through the socket\n");
  return failed ? 1 : 0;
}

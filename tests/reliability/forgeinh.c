/* Forged SHMSHIM_INHERIT variables (tests/reliability/inherit.sh).
 *
 *   forgeinh parent ADDR CASE    (preloaded) opens two connections A and B to the
 *                                echo server at ADDR, echoes once on each (they
 *                                upgrade), makes a pipe, then execs "tamper"
 *                                through the library's exec (which carries A and B
 *                                over: SHMSHIM_INHERIT)
 *   forgeinh tamper CASE A B R W PRELOAD
 *                                (not preloaded: its LD_PRELOAD names a library
 *                                that does not exist, which still makes the
 *                                parent's exec carry the connections) rewrites
 *                                the variable as CASE says and execs "child"
 *                                with the real library preloaded
 *   forgeinh child CASE A B R W  (preloaded) writes "PIPE" to the pipe's write
 *                                end W and reads it back from R, then echoes once
 *                                on A and on B (2 s timeouts)
 * CASEs: none (the variable as the library wrote it), dup_alias (a D entry
 * making the pipe's write end a dup of A), family (A's entry says AF_INET),
 * swapseg (A's and B's segment descriptors exchanged).
 * Output of child: "child: pipe=ok|lost A=ok|ERR B=ok|ERR". */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relutil.h"

#define DIE(...) do { fprintf(stderr, "forgeinh: " __VA_ARGS__); fprintf(stderr, " (%s)\n", strerror(errno)); exit(2); } while (0)

static int echo_once(int fd, const char *tag) {
  char out[32], in[32];
  int n = snprintf(out, sizeof out, "ping-%s", tag);
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (rel_write_all(fd, out, (size_t)n) < 0) return 0;
  if (rel_read_all(fd, in, (size_t)n) < 0) return 0;
  return memcmp(in, out, (size_t)n) == 0;
}

/* The C entry for fd in v (a copy), split into fields; returns its start or NULL. */
static char *entry_for(char *v, int fd) {
  char key[32];
  int k = snprintf(key, sizeof key, "C,%d,", fd);
  for (char *p = v; p && *p; p = strchr(p, ';') ? strchr(p, ';') + 1 : NULL)
    if (!strncmp(p, key, (size_t)k)) return p;
  return NULL;
}

/* Replaces field i (0: the letter) of the entry at e with val, in v (cap bytes). */
static void set_field(char *v, size_t cap, char *e, int i, const char *val) {
  char *s = e;
  for (int f = 0; f < i; f++) s = strchr(s, ',') + 1;
  char *end = s + strcspn(s, ",;");
  char rest[8192];
  snprintf(rest, sizeof rest, "%s", end);
  snprintf(s, cap - (size_t)(s - v), "%s%s", val, rest);
}

static char *field(char *e, int i, char *buf, size_t n) {
  char *s = e;
  for (int f = 0; f < i; f++) s = strchr(s, ',') + 1;
  size_t l = strcspn(s, ",;");
  snprintf(buf, n, "%.*s", (int)l, s);
  return buf;
}

int main(int argc, char **argv) {
  alarm(30);
  if (argc == 4 && !strcmp(argv[1], "parent")) {
    struct sockaddr_storage ss;
    int fam;
    socklen_t sl = rel_parse_addr(argv[2], &ss, &fam);
    int c[2];
    for (int i = 0; i < 2; i++) {
      c[i] = socket(fam, SOCK_STREAM, 0);
      if (connect(c[i], (struct sockaddr *)&ss, sl) < 0) DIE("connect");
      if (!echo_once(c[i], i ? "B0" : "A0")) DIE("echo before exec");
    }
    int p[2];
    if (pipe(p) < 0) DIE("pipe");
    char a[16], b[16], r[16], w[16];
    snprintf(a, sizeof a, "%d", c[0]);
    snprintf(b, sizeof b, "%d", c[1]);
    snprintf(r, sizeof r, "%d", p[0]);
    snprintf(w, sizeof w, "%d", p[1]);
    const char *pre = getenv("LD_PRELOAD");
    setenv("FORGEINH_PRELOAD", pre ? pre : "", 1);
    setenv("LD_PRELOAD", "/nonexistent/libshmshim-absent.so", 1);
    execl("/proc/self/exe", "forgeinh", "tamper", argv[3], a, b, r, w, (char *)NULL);
    DIE("exec tamper");
  }
  if (argc == 7 && !strcmp(argv[1], "tamper")) {
    const char *cas = argv[2];
    const char *inh = getenv("SHMSHIM_INHERIT");
    if (!inh) DIE("no SHMSHIM_INHERIT: the parent carried nothing");
    static char v[8192];
    snprintf(v, sizeof v, "%s", inh);
    char *ea = entry_for(v, atoi(argv[3])), *eb = entry_for(v, atoi(argv[4]));
    if (!ea || !eb) DIE("no entries for A and B in %s", v);
    char f1[32], f2[32];
    if (!strcmp(cas, "dup_alias")) {
      size_t l = strlen(v);
      snprintf(v + l, sizeof v - l, "D,%s,%s;", argv[6], argv[3]);
    } else if (!strcmp(cas, "family")) {
      set_field(v, sizeof v, ea, 4, "2"); /* AF_INET for a unix socket */
    } else if (!strcmp(cas, "swapseg")) {
      field(ea, 2, f1, sizeof f1);
      field(eb, 2, f2, sizeof f2);
      set_field(v, sizeof v, ea, 2, f2);
      eb = entry_for(v, atoi(argv[4]));
      set_field(v, sizeof v, eb, 2, f1);
    } else if (strcmp(cas, "none")) {
      DIE("unknown case");
    }
    fprintf(stderr, "forgeinh tamper %s: %s -> %s\n", cas, inh, v);
    setenv("SHMSHIM_INHERIT", v, 1);
    setenv("LD_PRELOAD", getenv("FORGEINH_PRELOAD"), 1);
    execl("/proc/self/exe", "forgeinh", "child", cas, argv[3], argv[4], argv[5], argv[6], (char *)NULL);
    DIE("exec child");
  }
  if (argc == 7 && !strcmp(argv[1], "child")) {
    int a = atoi(argv[3]), b = atoi(argv[4]), r = atoi(argv[5]), w = atoi(argv[6]);
    signal(SIGPIPE, SIG_IGN); /* a connection reset loudly is an error here, not a death */
    char buf[16] = {0};
    (void)!write(w, "PIPE", 4);
    fcntl(r, F_SETFL, O_NONBLOCK);
    ssize_t n = read(r, buf, sizeof buf - 1);
    int pipe_ok = n == 4 && !memcmp(buf, "PIPE", 4);
    int aok = echo_once(a, "A1"), bok = echo_once(b, "B1");
    printf("child: pipe=%s A=%s B=%s\n", pipe_ok ? "ok" : "lost", aok ? "ok" : "ERR", bok ? "ok" : "ERR");
    return 0;
  }
  fprintf(stderr, "usage: see forgeinh.c\n");
  return 2;
}

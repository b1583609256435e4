/* spawnsrv: a server that hands each connection it used to a stdio program
 * started inside libc (posix_spawn, system(), popen()), for tests/preload/spawn.sh.
 *
 *   spawnsrv serve tcp:PORT|unix:PATH MODE [nopreload]   (one connection, then exits)
 *   spawnsrv client tcp:PORT|unix:PATH FILE              (echo of FILE on stdout)
 *
 * The server reads the client's header line ("hdr\n") and answers "go\n" through
 * the library (so the connection is offered, and the client attaches before it
 * sends its data), reads the client's "ok\n" (it has attached), then starts `cat`
 * on the connection (cat reads and writes
 * with read(2) and write(2), through the library):
 *   actions  posix_spawnp, file actions dup2(conn, 0), dup2(conn, 1), close(conn)
 *   inherit  posix_spawnp, no file actions, `sh -c 'exec cat <&N >&N'` on the
 *            connection's own number (not close-on-exec)
 *   system   system("exec cat <&N >&N")
 *   popen    popen("cat <&N", "r"), the output copied to the connection by us
 *   sed      as actions, with `sed -e ''` (stdio reads and writes)
 *   fdopen   no program: the server echoes through fdopen(conn, "r") and
 *            fdopen(dup(conn), "w") itself
 * closes its copy and waits for the program. `nopreload`: the program runs without
 * the library (LD_PRELOAD removed from its environment): the connection must end
 * with an error there, never with kick bytes as data.
 * The client writes "hdr\n", reads "go\n", writes "ok\n", then FILE, shuts down its writing
 * side and copies everything it receives to stdout; exit 0 at end of file, 3 on a
 * read error (the error is printed). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listen.h"

extern char **environ;

static int connect_to(const char *where) {
  int fd;
  if (!strncmp(where, "tcp:", 4)) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(where + 4))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  } else {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", where + 5);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  }
  return fd;
}

static int write_all(int fd, const char *b, size_t n) {
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int client(const char *where, const char *file) {
  int fd = connect_to(where), in = open(file, O_RDONLY);
  if (fd < 0 || in < 0) {
    perror("spawnsrv client: connect/open");
    return 2;
  }
  char go[3];
  if (write_all(fd, "hdr\n", 4) < 0 || recv(fd, go, 3, MSG_WAITALL) != 3 || memcmp(go, "go\n", 3) ||
      write_all(fd, "ok\n", 3) < 0) {
    perror("spawnsrv client: handshake");
    return 2;
  }
  /* Reads and writes alternate so that a large file cannot deadlock the echo. */
  static char b[65536];
  int in_open = 1;
  for (;;) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {fd, in_open ? POLLOUT : 0, 0}};
    if (poll(p, 2, 30000) <= 0) {
      fprintf(stderr, "spawnsrv client: stalled\n");
      return 4;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(fd, b, sizeof b);
      if (r == 0) return 0;
      if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        fprintf(stderr, "spawnsrv client: read: %s\n", strerror(errno));
        return 3;
      }
      if (write_all(1, b, (size_t)r) < 0) return 2;
    }
    if (in_open && (p[1].revents & POLLOUT)) {
      ssize_t r = read(in, b, 16384);
      if (r <= 0) {
        shutdown(fd, SHUT_WR);
        in_open = 0;
      } else if (write_all(fd, b, (size_t)r) < 0) {
        fprintf(stderr, "spawnsrv client: write: %s\n", strerror(errno));
        return 3;
      }
    }
  }
}

/* environ without LD_PRELOAD (for nopreload). */
static char **env_without_preload(void) {
  size_t n = 0;
  while (environ[n]) n++;
  char **e = calloc(n + 1, sizeof *e);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "LD_PRELOAD=", 11)) e[k++] = environ[i];
  return e;
}

static int serve(const char *where, const char *mode, int nopreload) {
  int l = listen_on(where);
  if (l < 0) {
    perror("spawnsrv: listen");
    return 1;
  }
  fprintf(stderr, "spawnsrv: listening\n");
  int c = accept(l, NULL, NULL); /* not close-on-exec */
  if (c < 0) return 1;
  char h[4];
  for (size_t got = 0; got < 4;) { /* byte by byte: nothing past the header */
    ssize_t r = read(c, h + got, 1);
    if (r <= 0) return 1;
    got++;
  }
  if (memcmp(h, "hdr\n", 4) || write_all(c, "go\n", 3) < 0) return 1;
  /* The client's "ok\n", written once it has read "go\n" (and taken the offer
   * there): read through the library, it tells that the client attached. Without
   * it the hand-off could come first, and the offer was withdrawn (plain at both
   * ends, 1 run in a few hundred on a loaded machine). */
  for (size_t got = 0; got < 3;) {
    ssize_t r = read(c, h + got, 1);
    if (r <= 0) return 1;
    got++;
  }
  if (memcmp(h, "ok\n", 3)) return 1;
  char **env = nopreload ? env_without_preload() : environ;
  char cmd[160];
  int status = 0;
  pid_t pid = -1;
  if (!strcmp(mode, "actions")) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, c, 0);
    posix_spawn_file_actions_adddup2(&fa, c, 1);
    posix_spawn_file_actions_addclose(&fa, c);
    char *argv[] = {"cat", NULL};
    int rc = posix_spawnp(&pid, "cat", &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) {
      fprintf(stderr, "spawnsrv: posix_spawnp: %s\n", strerror(rc));
      return 1;
    }
  } else if (!strcmp(mode, "sed")) { /* a program that reads and writes through stdio */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, c, 0);
    posix_spawn_file_actions_adddup2(&fa, c, 1);
    posix_spawn_file_actions_addclose(&fa, c);
    char *argv[] = {"sed", "-e", "", NULL};
    int rc = posix_spawnp(&pid, "sed", &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) {
      fprintf(stderr, "spawnsrv: posix_spawnp: %s\n", strerror(rc));
      return 1;
    }
  } else if (!strcmp(mode, "fdopen")) { /* the echo through stdio, here */
    FILE *in = fdopen(c, "r"), *out = fdopen(dup(c), "w");
    if (!in || !out) return 1;
    char b[5000];
    size_t n;
    while ((n = fread(b, 1, sizeof b, in)) > 0)
      if (fwrite(b, 1, n, out) != n || fflush(out)) break;
    if (ferror(in)) fprintf(stderr, "spawnsrv: stdio read error: %s\n", strerror(errno));
    c = -1;
    fclose(out);
    fclose(in);
  } else if (!strcmp(mode, "inherit")) {
    snprintf(cmd, sizeof cmd, "exec cat <&%d >&%d", c, c);
    char *argv[] = {"sh", "-c", cmd, NULL};
    int rc = posix_spawnp(&pid, "sh", NULL, NULL, argv, env);
    if (rc) {
      fprintf(stderr, "spawnsrv: posix_spawnp: %s\n", strerror(rc));
      return 1;
    }
  } else if (!strcmp(mode, "system")) {
    if (nopreload) unsetenv("LD_PRELOAD");
    snprintf(cmd, sizeof cmd, "exec cat <&%d >&%d", c, c);
    status = system(cmd);
  } else if (!strcmp(mode, "popen")) {
    if (nopreload) unsetenv("LD_PRELOAD");
    snprintf(cmd, sizeof cmd, "exec cat <&%d", c);
    FILE *f = popen(cmd, "r");
    if (!f) return 1;
    char b[8192];
    size_t n;
    while ((n = fread(b, 1, sizeof b, f)) > 0)
      if (write_all(c, b, n) < 0) break;
    status = pclose(f);
  } else {
    fprintf(stderr, "spawnsrv: unknown mode %s\n", mode);
    return 2;
  }
  if (pid > 0) {
    close(c);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  } else if (c >= 0) {
    close(c);
  }
  fprintf(stderr, "spawnsrv: program status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 4 && !strcmp(argv[1], "client")) return client(argv[2], argv[3]);
  if (argc >= 4 && !strcmp(argv[1], "serve")) return serve(argv[2], argv[3], argc > 4 && !strcmp(argv[4], "nopreload"));
  fprintf(stderr, "usage: spawnsrv serve ADDR actions|inherit|system|popen [nopreload] | spawnsrv client ADDR FILE\n");
  return 2;
}

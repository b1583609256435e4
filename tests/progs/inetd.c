/* inetd: a minimal inetd-style server for tests/integration/inetd.sh. For every
 * connection it accepts, it forks a child that moves the connection onto its
 * standard input and output (dup2) and executes the given program, which talks
 * to the client through stdio without knowing about sockets; the parent closes
 * its copy and goes on accepting.
 *
 *   inetd tcp:PORT|unix:PATH PROGRAM [ARG...]
 *
 * Prints "inetd: listening" once ready and "inetd: accepted N" for each
 * connection, on standard error. Runs until killed. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "listen.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: inetd tcp:PORT|unix:PATH PROGRAM [ARG...]\n");
    return 2;
  }
  int l = listen_on(argv[1]);
  if (l < 0) {
    perror("inetd: listen");
    return 1;
  }
  signal(SIGCHLD, SIG_IGN); /* no zombies: nobody waits for the children */
  fprintf(stderr, "inetd: listening\n");
  for (unsigned long n = 1;; n++) {
    int c = accept(l, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      perror("inetd: accept");
      return 1;
    }
    fprintf(stderr, "inetd: accepted %lu\n", n);
    pid_t pid = fork();
    if (pid == 0) {
      if (dup2(c, 0) < 0 || dup2(c, 1) < 0) _exit(127);
      if (c > 1) close(c);
      signal(SIGCHLD, SIG_DFL);
      execvp(argv[2], argv + 2);
      perror("inetd: exec");
      _exit(127);
    }
    if (pid < 0) perror("inetd: fork");
    close(c);
  }
}

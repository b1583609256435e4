/* listen.h: the listening socket of the test servers in tests/progs/ (inetd,
 * uring_echo): "tcp:PORT" (127.0.0.1) or "unix:PATH". */
#ifndef TESTPROGS_LISTEN_H
#define TESTPROGS_LISTEN_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int listen_on(const char *where) {
  int fd, one = 1;
  if (!strncmp(where, "tcp:", 4)) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(where + 4))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  } else if (!strncmp(where, "unix:", 5)) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(where + 5) >= sizeof a.sun_path) return -1;
    strcpy(a.sun_path, where + 5);
    unlink(a.sun_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  } else {
    return -1;
  }
  if (listen(fd, 64) < 0) return -1;
  return fd;
}
#endif

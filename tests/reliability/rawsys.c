/* A program that bypasses libc on a connection: what happens today.
 *
 *   rawsys server ADDR        reads 16 bytes with libc and answers them; then
 *                             reads to EOF with libc and prints what it got and
 *                             how the reading ended
 *   rawsys client ADDR CASE   exchanges 16 bytes with libc (the connection is
 *                             upgraded and switched), then:
 *     rawwrite   writes "RAW-BYTES" with syscall(SYS_write), then "LIBC" with write()
 *     rawonly    writes "RAW-BYTES" with syscall(SYS_write), waits 200 ms, closes
 *     rawread    reads with syscall(SYS_read) (non-blocking) what is on the socket
 * Output: "server got '<bytes>' END" (END: EOF or the errno name) / "client rawread
 * <n> '<bytes>'". */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "relutil.h"

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  alarm(20);
  struct sockaddr_storage ss;
  int fam;
  socklen_t sl = rel_parse_addr(argv[2], &ss, &fam);
  char b[256];
  if (!strcmp(argv[1], "server")) {
    int l = socket(fam, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 1) < 0) return 2;
    printf("ready\n");
    fflush(stdout);
    int fd = accept(l, NULL, NULL);
    if (rel_read_all(fd, b, 16) < 0 || rel_write_all(fd, b, 16) < 0) return 2;
    size_t n = 0;
    ssize_t r;
    while (n < sizeof b - 1 && (r = read(fd, b + n, sizeof b - 1 - n)) > 0) n += (size_t)r;
    b[n] = 0;
    printf("server got '%s' %s\n", b, rel_errname(r < 0 ? errno : 0));
    return 0;
  }
  int fd = socket(fam, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&ss, sl) < 0) return 2;
  if (rel_write_all(fd, "0123456789abcdef", 16) < 0 || rel_read_all(fd, b, 16) < 0) return 2;
  if (argc == 4 && !strcmp(argv[3], "rawwrite")) {
    if (syscall(SYS_write, fd, "RAW-BYTES", 9) != 9) return 2;
    /* The peer may have found the raw bytes and reset the connection already. */
    signal(SIGPIPE, SIG_IGN);
    if (write(fd, "LIBC", 4) != 4 && errno != EPIPE && errno != ECONNRESET) return 2;
  } else if (argc == 4 && !strcmp(argv[3], "rawonly")) {
    if (syscall(SYS_write, fd, "RAW-BYTES", 9) != 9) return 2;
    usleep(200000);
  } else if (argc == 4 && !strcmp(argv[3], "rawread")) {
    fcntl(fd, F_SETFL, O_NONBLOCK); /* libc's fcntl: the shim lets it through */
    long n = syscall(SYS_read, fd, b, sizeof b - 1);
    int e = errno;
    b[n > 0 ? n : 0] = 0;
    printf("client rawread %ld '%s' %s\n", n, b, n < 0 ? rel_errname(e) : "");
  }
  close(fd);
  return 0;
}

/* sock_diag look-ups (core/diag.c) against real loopback sockets: the client's
 * check of who offers names the server's socket by the connection's mirrored
 * addresses, and must get that socket or nothing. The kernel's exact look-up falls
 * back to the listener on the local port when the connection is gone; taking the
 * listener for the server's socket made the client reject a withdrawn offer as a
 * forgery ("offer from a process without the other end", a warning where the
 * kernel's behaviour was fine: tests/preload/libuv.sh failed about 1 run in 5). */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "diag.h"

struct trio {
  int lst, cli, srv;
  struct sockaddr_storage cli_self, cli_peer;
};

static uint32_t ino_of(int fd) {
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  return (uint32_t)st.st_ino;
}

static void trio_open(struct trio *t, int family) {
  struct sockaddr_storage a;
  memset(&a, 0, sizeof a);
  socklen_t al;
  if (family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&a;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    al = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&a;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    al = sizeof *s;
  }
  t->lst = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(t->lst >= 0);
  assert_int_equal(bind(t->lst, (struct sockaddr *)&a, al), 0);
  assert_int_equal(listen(t->lst, 4), 0);
  assert_int_equal(getsockname(t->lst, (struct sockaddr *)&a, &al), 0);
  t->cli = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(t->cli >= 0);
  assert_int_equal(connect(t->cli, (struct sockaddr *)&a, al), 0);
  t->srv = accept4(t->lst, NULL, NULL, SOCK_CLOEXEC);
  assert_true(t->srv >= 0);
  socklen_t l1 = sizeof t->cli_self, l2 = sizeof t->cli_peer;
  assert_int_equal(getsockname(t->cli, (struct sockaddr *)&t->cli_self, &l1), 0);
  assert_int_equal(getpeername(t->cli, (struct sockaddr *)&t->cli_peer, &l2), 0);
}

static void trio_close(struct trio *t) {
  close(t->lst);
  close(t->cli);
  if (t->srv >= 0) close(t->srv);
}

/* As the client looks up the server's socket: local = its peer, remote = itself. */
static int server_side(struct trio *t, uint32_t *ino, uint32_t *uid) {
  return shm_diag_tcp(&t->cli_peer, &t->cli_self, ino, uid);
}

static void connected_found(int family) {
  struct trio t;
  trio_open(&t, family);
  uint32_t ino = 0, uid = 1;
  assert_int_equal(server_side(&t, &ino, &uid), 0);
  assert_int_equal(ino, ino_of(t.srv));
  assert_int_equal(uid, (uint32_t)geteuid());
  assert_int_equal(shm_diag_tcp(&t.cli_self, &t.cli_peer, &ino, &uid), 0);
  assert_int_equal(ino, ino_of(t.cli));
  trio_close(&t);
}

static void test_connected_v4(void **state) {
  (void)state;
  connected_found(AF_INET);
}

static void test_connected_v6(void **state) {
  (void)state;
  connected_found(AF_INET6);
}

/* The server closes its end (abort: SO_LINGER {1, 0}, a reset; else a FIN), and
 * the client has seen it. */
static void server_closes(struct trio *t, int abort) {
  struct linger lg = {1, 0};
  if (abort) assert_int_equal(setsockopt(t->srv, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(t->srv);
  t->srv = -1;
  struct pollfd p = {t->cli, POLLIN, 0};
  assert_int_equal(poll(&p, 1, 5000), 1);
}

/* The server's end reset and gone: the listener still holds the port. The
 * answer is "no such connection", never the listener's inode. */
static void gone_not_listener(int family) {
  struct trio t;
  trio_open(&t, family);
  uint32_t lst_ino = ino_of(t.lst);
  /* Once the reset has reached the client, the connection is gone from the
   * kernel's tables at both ends (no time-wait after an abort). */
  server_closes(&t, 1);
  uint32_t ino = 0, uid = 0;
  int rc = server_side(&t, &ino, &uid);
  if (rc == 0) assert_int_not_equal(ino, lst_ino);
  else assert_int_equal(errno, ENOENT);
  trio_close(&t);
}

static void test_gone_v4(void **state) {
  (void)state;
  gone_not_listener(AF_INET);
}

static void test_gone_v6(void **state) {
  (void)state;
  gone_not_listener(AF_INET6);
}

/* Closed in order by the server (FIN): while it is closing, the look-up may still
 * find it, but with no descriptor (inode 0), which the negotiation takes for gone;
 * never the listener. */
static void test_closing_not_listener(void **state) {
  (void)state;
  struct trio t;
  trio_open(&t, AF_INET);
  uint32_t lst_ino = ino_of(t.lst);
  server_closes(&t, 0);
  uint32_t ino = 1, uid = 0;
  int rc = server_side(&t, &ino, &uid);
  if (rc == 0) assert_int_equal(ino, 0);
  assert_int_not_equal(ino, lst_ino);
  trio_close(&t);
}

/* AF_UNIX: the peer's inode (one walk of every unix socket in the kernel), and
 * its owner (a second one, asked only when SO_PEERCRED's uid does not match). */
static void test_unix_peer_and_owner(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  uint32_t peer = 0, owner = UINT32_MAX;
  assert_int_equal(shm_diag_unix_peer_ino(ino_of(sv[0]), &peer), 0);
  assert_int_equal(peer, ino_of(sv[1]));
  assert_int_equal(shm_diag_unix_owner(peer, &owner), 0);
  assert_int_equal(owner, (uint32_t)geteuid());
  close(sv[1]);
  /* The peer gone: no inode for it (an unconnected socket has no peer). */
  int rc = shm_diag_unix_peer_ino(ino_of(sv[0]), &peer);
  if (rc == 0) assert_int_not_equal(peer, ino_of(sv[0]));
  close(sv[0]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_connected_v4),
      cmocka_unit_test(test_connected_v6),
      cmocka_unit_test(test_gone_v4),
      cmocka_unit_test(test_gone_v6),
      cmocka_unit_test(test_closing_not_listener),
      cmocka_unit_test(test_unix_peer_and_owner),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "real.h"
#include "diag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* One request, one answer, on a netlink socket that lives only for the call: a
 * cached one could be closed or dup2'd over by the application. */
static int query(const void *req, size_t len, int want_type, void *resp, size_t resp_len) {
  int nl = (int)syscall(SYS_socket, AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return -1;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  int rc = -1;
  if (syscall(SYS_sendto, nl, req, len, 0, &sa, sizeof sa) != (long)len) goto out;
  long n = syscall(SYS_recvfrom, nl, resp, resp_len, 0, NULL, NULL);
  if (n < (long)sizeof(struct nlmsghdr)) goto out;
  struct nlmsghdr *h = resp;
  if (!NLMSG_OK(h, (unsigned long)n)) goto out;
  if (h->nlmsg_type == NLMSG_ERROR) {
    struct nlmsgerr *e = NLMSG_DATA(h);
    errno = e->error ? -e->error : ENOENT;
    goto out;
  }
  if (h->nlmsg_type != want_type) {
    errno = EPROTO;
    goto out;
  }
  rc = (int)n;
out:;
  int e = errno;
  shm_sys_close(nl);
  errno = e;
  return rc;
}

static int put_addr(const struct sockaddr_storage *ss, __be16 *port, __be32 addr[4], int *fam) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)ss;
    *port = a->sin_port;
    addr[0] = a->sin_addr.s_addr;
    *fam = AF_INET;
    return 0;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)ss;
    *port = a->sin6_port;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      /* Dual-stack sockets talking IPv4 live in the IPv4 tables. */
      memcpy(&addr[0], &a->sin6_addr.s6_addr[12], 4);
      *fam = AF_INET;
    } else {
      memcpy(addr, &a->sin6_addr, 16);
      *fam = AF_INET6;
    }
    return 0;
  }
  errno = EAFNOSUPPORT;
  return -1;
}

int shm_diag_tcp(const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
                 uint32_t *ino, uint32_t *uid) {
  struct {
    struct nlmsghdr h;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  int fs, fd;
  if (put_addr(src, &req.r.id.idiag_sport, req.r.id.idiag_src, &fs) ||
      put_addr(dst, &req.r.id.idiag_dport, req.r.id.idiag_dst, &fd))
    return -1;
  if (fs != fd) {
    errno = EAFNOSUPPORT;
    return -1;
  }
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.r.sdiag_family = (uint8_t)fs;
  req.r.sdiag_protocol = IPPROTO_TCP;
  req.r.idiag_states = ~0u;
  req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  union {
    struct nlmsghdr h;
    char buf[1024];
  } resp;
  int n = query(&req, sizeof req, SOCK_DIAG_BY_FAMILY, &resp, sizeof resp);
  if (n < 0) return -1;
  if (resp.h.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)) || resp.h.nlmsg_len > (unsigned)n) {
    errno = EPROTO;
    return -1;
  }
  struct inet_diag_msg *m = NLMSG_DATA(&resp.h);
  /* An exact look-up that finds no connected socket with these addresses falls
   * back, in the kernel, to the listener on the local port: a connection whose
   * other end is gone (closed with a reset, or its time-wait over) would be
   * answered with the listener, another socket with an inode and the same owner.
   * Only the connection itself is an answer. */
  if (m->idiag_state == TCP_LISTEN || m->id.idiag_dport != req.r.id.idiag_dport ||
      m->id.idiag_sport != req.r.id.idiag_sport) {
    errno = ENOENT;
    return -1;
  }
  *ino = m->idiag_inode;
  *uid = m->idiag_uid;
  return 0;
}

/* One unix_diag exact look-up of the socket with inode `ino`; returns the length of
 * the answer in `resp`, or -1 with errno. */
static int unix_query(uint32_t ino, uint32_t show, void *resp, size_t resp_len) {
  struct {
    struct nlmsghdr h;
    struct unix_diag_req r;
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_ino = ino;
  req.r.udiag_show = show;
  req.r.udiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.r.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
  int n = query(&req, sizeof req, SOCK_DIAG_BY_FAMILY, resp, resp_len);
  if (n < 0) return -1;
  unsigned len = ((struct nlmsghdr *)resp)->nlmsg_len;
  if (len > (unsigned)n || len < NLMSG_LENGTH(sizeof(struct unix_diag_msg))) {
    errno = EPROTO;
    return -1;
  }
  return (int)len;
}

/* The payload of attribute `type` (at least 4 bytes) in a unix_diag answer. */
static int unix_attr_u32(const struct nlmsghdr *h, int len, int type, uint32_t *out) {
  const struct unix_diag_msg *m = NLMSG_DATA(h);
  int alen = (int)(len - NLMSG_LENGTH(sizeof *m));
  for (const struct rtattr *a = (const struct rtattr *)(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
    if (a->rta_type == type && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
      memcpy(out, RTA_DATA(a), sizeof *out);
      return 0;
    }
  }
  errno = ENOENT;
  return -1;
}

/* Attribute `type` of unix socket `ino`, asked with `show`. Each look-up by
 * inode walks every unix socket of the network namespace in the kernel
 * (unix_lookup_by_ino): callers make as few as they can. */
static int unix_lookup(uint32_t ino, uint32_t show, int type, uint32_t *out) {
  union {
    struct nlmsghdr h;
    char buf[1024];
  } resp;
  int n = unix_query(ino, show, &resp, sizeof resp);
  return n < 0 ? -1 : unix_attr_u32(&resp.h, n, type, out);
}

int shm_diag_unix_peer_ino(uint32_t ino, uint32_t *peer_ino) {
  return unix_lookup(ino, UDIAG_SHOW_PEER, UNIX_DIAG_PEER, peer_ino);
}

int shm_diag_unix_owner(uint32_t ino, uint32_t *uid) {
  return unix_lookup(ino, UDIAG_SHOW_UID, UNIX_DIAG_UID, uid);
}

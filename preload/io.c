/* The read and write families. Each exported function is one test of the fd table
 * and a call to libc, unless the fd is tracked. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

extern void __chk_fail(void) __attribute__((noreturn));
#include "preload.h"

static void stream_src_addr(int fd, struct shm_conn *c, struct sockaddr *a, socklen_t *len) {
  if (!a || !len) return;
  if (c->family == AF_UNIX) {
    /* The sender's name; an unbound sender has none, and the length is 0. */
    if (getpeername(fd, a, len) < 0 || *len <= sizeof(sa_family_t)) *len = 0;
  } else {
    *len = 0;
  }
}

static size_t iov_len_sum(const struct iovec *iov, int cnt) {
  size_t t = 0;
  for (int i = 0; i < cnt; i++) t += iov[i].iov_len;
  return t;
}

/* Receive on a tracked fd. PL_PLAIN: the caller makes the real call. */
static ssize_t pl_recv(int fd, const struct iovec *iov, int cnt, int flags, struct msghdr *mh) {
  /* Urgent data always travels as the kernel's out-of-band byte (shm_conn_send_oob):
   * the socket has it, or nobody does. */
  if (flags & MSG_OOB) {
    if (shm_fd_kind(fd) == SHM_FD_INTERNAL) return pl_ebadf();
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
    if (mh) m = *mh;
    ssize_t r = REAL(recvmsg)(fd, &m, flags);
    int e = errno;
    if (mh) *mh = m;
    struct shm_conn *c = r >= 0 && !(flags & MSG_PEEK) ? pl_conn_any(fd) : NULL;
    if (c) {
      shm_conn_oob_taken(c);
      shm_conn_put(c);
    }
    errno = e;
    return r;
  }
  pthread_testcancel(); /* a cancellation point, as libc's (acts before any hold is taken) */
  struct shm_conn *c = pl_conn_read(fd, flags);
  if (!c) return errno ? -1 : PL_PLAIN;
  ssize_t r = shm_conn_recv(fd, c, iov, cnt, flags, mh);
  if (r >= 0 && mh && mh->msg_name) stream_src_addr(fd, c, mh->msg_name, &mh->msg_namelen);
  else if (r >= 0 && mh) mh->msg_namelen = 0;
  int e = errno;
  shm_conn_put(c);
  shm_locks_settle(); /* (a signal handler's close left to us inside the call) */
  errno = e;
  return r;
}

static ssize_t pl_send(int fd, const struct iovec *iov, int cnt, int flags, const struct msghdr *mh) {
  pthread_testcancel();
  struct shm_conn *c = pl_conn_write(fd);
  if (!c) return errno ? -1 : PL_PLAIN;
  ssize_t r;
  if ((flags & MSG_OOB) && shm_conn_state(c) == SHM_CONN_UPGRADED) {
    r = shm_conn_send_oob(fd, c, iov, cnt, flags);
  } else {
    r = shm_conn_send(fd, c, iov, cnt, flags, mh);
  }
  int e = errno;
  if (SHM_UNLIKELY(c->members != NULL) && ((r < 0 && e == EAGAIN) || (r >= 0 && (size_t)r < iov_len_sum(iov, cnt))))
    pl_epoll_tx_short(c);
  shm_conn_put(c);
  shm_locks_settle();
  errno = e;
  return r;
}

SHM_EXPORT ssize_t read(int fd, void *buf, size_t n) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(read)(fd, buf, n);
  struct iovec v = {buf, n};
  ssize_t r = pl_recv(fd, &v, 1, 0, NULL);
  return r == PL_PLAIN ? REAL(read)(fd, buf, n) : r;
}

SHM_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail(); /* what glibc's fortify check does, minus the message */
  return read(fd, buf, n);
}

SHM_EXPORT ssize_t write(int fd, const void *buf, size_t n) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(write)(fd, buf, n);
  struct iovec v = {(void *)buf, n};
  ssize_t r = pl_send(fd, &v, 1, 0, NULL);
  return r == PL_PLAIN ? REAL(write)(fd, buf, n) : r;
}

/* readv/writev's own check of the vector's length (EINVAL), as the kernel's. */
static int bad_iovcnt(int cnt) {
  if (cnt >= 0 && cnt <= IOV_MAX) return 0;
  errno = EINVAL;
  return 1;
}

SHM_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(readv)(fd, iov, cnt);
  if (bad_iovcnt(cnt)) return -1;
  ssize_t r = pl_recv(fd, iov, cnt, 0, NULL);
  return r == PL_PLAIN ? REAL(readv)(fd, iov, cnt) : r;
}

SHM_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(writev)(fd, iov, cnt);
  if (bad_iovcnt(cnt)) return -1;
  ssize_t r = pl_send(fd, iov, cnt, 0, NULL);
  return r == PL_PLAIN ? REAL(writev)(fd, iov, cnt) : r;
}

SHM_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(recv)(fd, buf, n, flags);
  struct iovec v = {buf, n};
  ssize_t r = pl_recv(fd, &v, 1, flags, NULL);
  return r == PL_PLAIN ? REAL(recv)(fd, buf, n, flags) : r;
}

SHM_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags) {
  if (n > buflen) __chk_fail();
  return recv(fd, buf, n, flags);
}

SHM_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(send)(fd, buf, n, flags);
  struct iovec v = {(void *)buf, n};
  ssize_t r = pl_send(fd, &v, 1, flags, NULL);
  return r == PL_PLAIN ? REAL(send)(fd, buf, n, flags) : r;
}

/* A connected stream socket reports no source address: TCP leaves the length at
 * 0; AF_UNIX reports the peer's name, which getpeername() gives. */

SHM_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *a, socklen_t *alen) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(recvfrom)(fd, buf, n, flags, a, alen);
  struct iovec v = {buf, n};
  ssize_t r = pl_recv(fd, &v, 1, flags, NULL);
  if (r == PL_PLAIN) return REAL(recvfrom)(fd, buf, n, flags, a, alen);
  if (r >= 0) {
    struct shm_conn *c = pl_conn_any(fd);
    if (c) {
      stream_src_addr(fd, c, a, alen);
      shm_conn_put(c);
    }
  }
  return r;
}

SHM_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                                  struct sockaddr *a, socklen_t *alen) {
  if (n > buflen) __chk_fail();
  return recvfrom(fd, buf, n, flags, a, alen);
}

SHM_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *a,
                          socklen_t alen) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(sendto)(fd, buf, n, flags, a, alen);
  /* On a connected stream socket the kernel ignores the address. */
  struct iovec v = {(void *)buf, n};
  ssize_t r = pl_send(fd, &v, 1, flags, NULL);
  return r == PL_PLAIN ? REAL(sendto)(fd, buf, n, flags, a, alen) : r;
}

/* Descriptors that arrive with SCM_RIGHTS are new numbers (pl_new_fd). */
SHM_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags) {
  if (SHM_LIKELY(!pl_tracked(fd))) {
    ssize_t r = REAL(recvmsg)(fd, m, flags);
    if (r >= 0 && SHM_UNLIKELY(m->msg_controllen != 0 && shm_fdtab_get() != NULL)) pl_new_fds_cmsg(m);
    return r;
  }
  if ((int)m->msg_iovlen < 0 || m->msg_iovlen > IOV_MAX) {
    errno = EMSGSIZE;
    return -1;
  }
  ssize_t r = pl_recv(fd, m->msg_iov, (int)m->msg_iovlen, flags, m);
  if (r == PL_PLAIN) r = REAL(recvmsg)(fd, m, flags);
  if (r >= 0 && m->msg_controllen != 0) pl_new_fds_cmsg(m);
  return r;
}

SHM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags) {
  if (SHM_LIKELY(!pl_tracked(fd))) return REAL(sendmsg)(fd, m, flags);
  if ((int)m->msg_iovlen < 0 || m->msg_iovlen > IOV_MAX) {
    errno = EMSGSIZE;
    return -1;
  }
  ssize_t r = pl_send(fd, m->msg_iov, (int)m->msg_iovlen, flags, m);
  return r == PL_PLAIN ? REAL(sendmsg)(fd, m, flags) : r;
}

/* sendfile to an upgraded socket copies through the ring; from one (the socket as
 * in_fd) is not allowed by Linux either (in_fd must support mmap-like reads). */
static ssize_t pl_sendfile(int out, int in, off_t *off, size_t n) {
  if (SHM_LIKELY(!pl_tracked(out) && !pl_tracked(in))) return REAL(sendfile)(out, in, off, n);
  if (shm_fd_kind(out) == SHM_FD_INTERNAL || shm_fd_kind(in) == SHM_FD_INTERNAL) return pl_ebadf();
  if (pl_tracked(in)) {
    errno = EINVAL;
    return -1;
  }
  struct shm_conn *c = pl_conn_write(out);
  if (!c) return errno ? -1 : REAL(sendfile)(out, in, off, n);
  /* Upgraded, or a pending client whose plain bytes must be counted under its
   * write lock: both through shm_conn_send. */
  ssize_t r = shm_conn_send_from_fd(out, c, in, off, n);
  int e = errno;
  if (SHM_UNLIKELY(c->members != NULL) && ((r < 0 && e == EAGAIN) || (r >= 0 && (size_t)r < n)))
    pl_epoll_tx_short(c);
  shm_conn_put(c);
  shm_locks_settle();
  errno = e;
  return r;
}
SHM_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n) { return pl_sendfile(out, in, off, n); }
SHM_EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t n) { return pl_sendfile(out, in, off, n); }

SHM_EXPORT ssize_t splice(int in, loff_t *ioff, int out, loff_t *ooff, size_t n, unsigned fl) {
  if (SHM_LIKELY(!pl_tracked(in) && !pl_tracked(out))) return REAL(splice)(in, ioff, out, ooff, n, fl);
  if (shm_fd_kind(out) == SHM_FD_INTERNAL || shm_fd_kind(in) == SHM_FD_INTERNAL) return pl_ebadf();
  /* One side is an upgraded socket and the other (by splice's rules) a pipe: copy
   * through a buffer with the same partial-transfer semantics. */
  char buf[65536];
  size_t want = n < sizeof buf ? n : sizeof buf;
  if (pl_tracked(in)) {
    ssize_t r = recv(in, buf, want, (fl & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT | MSG_PEEK : MSG_PEEK);
    if (r <= 0) return r;
    ssize_t w = ooff ? pwrite(out, buf, (size_t)r, *ooff) : REAL(write)(out, buf, (size_t)r);
    if (w <= 0) return w;
    if (ooff) *ooff += w;
    return recv(in, buf, (size_t)w, MSG_DONTWAIT); /* consume exactly what was written */
  }
  ssize_t r = ioff ? pread(in, buf, want, *ioff) : REAL(read)(in, buf, want);
  if (r <= 0) return r;
  ssize_t w = send(out, buf, (size_t)r, (fl & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT : 0);
  if (ioff && w > 0) *ioff += w;
  /* A pipe cannot un-read: bytes read but not sent would be lost, so send waits. */
  if (w >= 0 && w < r && !ioff) {
    ssize_t more = send(out, buf + w, (size_t)(r - w), 0);
    if (more > 0) w += more;
  }
  return w;
}

#include "segment.h"

#include "fdtab.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "real.h"

/* Raw system calls: this file runs inside interposed calls (accept, connect) and
 * must not re-enter the interposition layer through fcntl() (or close():
 * shm_sys_close). */
static long sys_fcntl(int fd, int cmd, long arg) { return syscall(SYS_fcntl, fd, cmd, arg); }

static int ring_size_ok(uint32_t rs) {
  return rs >= SHM_RING_MIN && rs <= SHM_RING_MAX && (rs & (rs - 1)) == 0;
}

int shm_seg_create(uint32_t ring_size, struct shm_seg *s) {
  if (!ring_size_ok(ring_size)) {
    errno = EINVAL;
    return -1;
  }
  size_t size = shm_seg_size_for(ring_size);
  int fd = (int)syscall(SYS_memfd_create, "shmshim", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (syscall(SYS_ftruncate, fd, (off_t)size) < 0) goto fail;
  if (sys_fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) goto fail;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) goto fail;
  /* A fresh memfd reads as zeroes: indices, flags and switch state start at 0. */
  struct shm_seg_layout *L = p;
  L->hdr.version = SHM_SEG_VERSION;
  L->hdr.hdr_size = SHM_SEG_HDR_SIZE;
  L->hdr.seg_size = size;
  L->hdr.ring_size = ring_size;
  __atomic_store_n(&L->hdr.magic, SHM_SEG_MAGIC, __ATOMIC_RELEASE);
  s->base = L;
  s->size = size;
  s->ring_size = ring_size;
  s->fd = fd;
  s->spare = 0;
  return 0;
fail:;
  int e = errno;
  shm_sys_close(fd);
  errno = e;
  return -1;
}

int shm_seg_hdr_check(const struct shm_seg_hdr *h, uint64_t file_size) {
  if (h->magic != SHM_SEG_MAGIC || h->hdr_size != SHM_SEG_HDR_SIZE) return EPROTO;
  if (h->version != SHM_SEG_VERSION) return EPROTONOSUPPORT;
  if (!ring_size_ok(h->ring_size) || h->seg_size != file_size ||
      shm_seg_size_for(h->ring_size) != file_size)
    return EPROTO;
  return 0;
}

int shm_seg_attach(int fd, struct shm_seg *s) {
  long seals = sys_fcntl(fd, F_GET_SEALS, 0);
  if (seals < 0) {
    /* Not a memfd (or a file system without sealing): a peer could truncate it
     * under us and turn every ring access into SIGBUS. */
    errno = EPERM;
    return -1;
  }
  if ((seals & SHM_SEG_SEALS_REQUIRED) != SHM_SEG_SEALS_REQUIRED) {
    errno = EPERM;
    return -1;
  }
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) < 0) return -1;
  if (!S_ISREG(st.st_mode) || st.st_size < (off_t)shm_seg_size_for(SHM_RING_MIN) ||
      st.st_size > (off_t)shm_seg_size_for(SHM_RING_MAX)) {
    errno = EINVAL;
    return -1;
  }
  size_t size = (size_t)st.st_size;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    errno = ENOMEM;
    return -1;
  }
  /* Copy the header once; from here on only the copy is used. */
  struct shm_seg_hdr h;
  memcpy(&h, p, sizeof h);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  int e = shm_seg_hdr_check(&h, size);
  if (e) {
    munmap(p, size);
    errno = e;
    return -1;
  }
  s->base = p;
  s->size = size;
  s->ring_size = h.ring_size;
  s->fd = -1;
  s->spare = 0;
  return 0;
}

void shm_seg_ring(const struct shm_seg *s, int dir, int role, struct shm_ring *r) {
  unsigned char *data = (unsigned char *)s->base + SHM_SEG_HDR_SIZE + (size_t)dir * s->ring_size;
  shm_ring_init(r, &s->base->ring[dir], data, s->ring_size, role);
}

static int seg_spares; /* memfds kept as spares (atomic) */

int shm_seg_keep_spare(struct shm_seg *s) {
  if (s->spare) return 1;
  /* All taken already (a server with many connections): no system call. */
  if (__atomic_load_n(&seg_spares, __ATOMIC_RELAXED) >= SHM_SEG_SPARES_MAX) return 0;
  struct rlimit rl;
  long cap = SHM_SEG_SPARES_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (long)(rl.rlim_cur / 16) < cap)
    cap = (long)(rl.rlim_cur / 16);
  if (__atomic_add_fetch(&seg_spares, 1, __ATOMIC_RELAXED) > cap) {
    __atomic_sub_fetch(&seg_spares, 1, __ATOMIC_RELAXED);
    return 0;
  }
  s->spare = 1;
  return 1;
}

void shm_seg_close_fd(struct shm_seg *s) {
  /* Exchanged: two threads may give it back at once (a close-on-exec flag set
   * while another thread's call ran out of descriptors): one closes. */
  if (__atomic_exchange_n(&s->spare, 0, __ATOMIC_RELAXED)) __atomic_sub_fetch(&seg_spares, 1, __ATOMIC_RELAXED);
  int fd = __atomic_exchange_n(&s->fd, -1, __ATOMIC_ACQ_REL);
  if (fd >= 0) {
    /* A memfd kept for exec was hidden (core/fdtab.h): its number becomes free. */
    if (shm_fd_kind(fd) == SHM_FD_INTERNAL) shm_fd_set(fd, SHM_FD_NONE, NULL);
    shm_sys_close(fd);
  }
}

void shm_seg_destroy(struct shm_seg *s) {
  shm_seg_close_fd(s);
  if (s->base) munmap(s->base, s->size);
  s->base = NULL;
}

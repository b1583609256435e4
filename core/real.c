#include "real.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct shm_real_table shm_real;

static void die(const char *what, const char *name) {
  char buf[160];
  size_t n = 0;
  const char *parts[] = {"shmshim: ", what, " ", name, "\n"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    size_t l = strlen(parts[i]);
    if (n + l > sizeof buf) break;
    memcpy(buf + n, parts[i], l);
    n += l;
  }
  syscall(SYS_write, 2, buf, n);
  abort();
}

static void bind_all(void) {
  Dl_info self;
  if (!dladdr((void *)bind_all, &self)) self.dli_fbase = NULL;
  /* RTLD_NEXT searches the objects loaded after us. When libc itself comes first
   * (LD_PRELOAD=libc.so.6:libshmshim.so), ask libc directly. */
  void *libc = NULL;
#define SHM_REAL_BIND(ret, name, args)                                             \
  {                                                                                \
    void *p = dlsym(RTLD_NEXT, #name);                                             \
    Dl_info info;                                                                  \
    if (!p && (libc || (libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD))))     \
      p = dlsym(libc, #name);                                                      \
    if (!p) die("libc symbol not found:", #name);                                  \
    if (self.dli_fbase && dladdr(p, &info) && info.dli_fbase == self.dli_fbase)    \
      die("dlsym returned our own interposer for", #name);                         \
    __atomic_store_n(&shm_real.name, (ret(*) args)p, __ATOMIC_RELEASE);            \
  }
  SHM_REAL_SYMS(SHM_REAL_BIND)
#undef SHM_REAL_BIND
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

void shm_real_bind(void) { pthread_once(&once, bind_all); }

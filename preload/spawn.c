/* Images started inside libc: posix_spawn(p), system() and popen(). glibc runs
 * them with clone and its internal execve, past the exec wrappers of
 * preload/exec.c: a connection the new image inherits would reach it unannounced
 * (an upgraded one read there as plain, kick bytes as data; a pending client's
 * bytes written there uncounted). So the same rules are applied here, in the
 * parent, before the spawn:
 * - posix_spawn: what the new image will hold is worked out from the file
 *   actions (recorded as the application adds them: the object is opaque), and
 *   each connection it inherits is carried over (the image loads the library:
 *   SHMSHIM_INHERIT in its environment, the segment passed by one more file
 *   action), or fenced (replaced, by file actions, with a socket that fails with
 *   ECONNRESET). A pending client's endpoint is shut (plain at both ends), a
 *   server connection never used is refused (plain), as for exec.
 * - system(): run through the posix_spawn path above when a connection would be
 *   inherited (the shell gets its connections carried or fenced), otherwise libc's.
 * - popen(): libc's, with the inherited connections that cannot be handed over
 *   kept from the child (close-on-exec during the call): the program gets EBADF
 *   on such a descriptor, never kick bytes. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "real.h"
#include "inherit.h"
#include "log.h"
#include "preload.h"

extern char **environ;

/* ---- the file actions, as the application added them ---- */

enum { FA_CLOSE, FA_DUP2, FA_OPEN, FA_CHDIR, FA_FCHDIR, FA_CLOSEFROM, FA_TCSETPGRP };
struct fa_act {
  int tag, fd, newfd, oflag;
  mode_t mode;
  char *path;
};
struct fa_rec {
  const posix_spawn_file_actions_t *key;
  int n, cap, lost; /* lost: an action could not be recorded */
  struct fa_act *a;
  struct fa_rec *next;
};
static pthread_mutex_t fa_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fa_rec *fa_list;

void pl_spawn_fork_lock(int take) {
  if (take) shm_lock(&fa_lock);
  else shm_unlock(&fa_lock);
}
void pl_spawn_forked_child(void) { pthread_mutex_init(&fa_lock, NULL); }

static struct fa_rec **fa_find(const posix_spawn_file_actions_t *key) {
  struct fa_rec **r = &fa_list;
  while (*r && (*r)->key != key) r = &(*r)->next;
  return r;
}

static void fa_free(struct fa_rec *r) {
  for (int i = 0; i < r->n; i++) free(r->a[i].path);
  free(r->a);
  free(r);
}

static void fa_forget(const posix_spawn_file_actions_t *key) {
  shm_lock(&fa_lock);
  struct fa_rec **r = fa_find(key), *x = *r;
  if (x) *r = x->next;
  shm_unlock(&fa_lock);
  if (x) fa_free(x);
}

static void fa_note(const posix_spawn_file_actions_t *key, struct fa_act act) {
  shm_lock(&fa_lock);
  struct fa_rec *r = *fa_find(key);
  if (!r && (r = calloc(1, sizeof *r))) {
    r->key = key;
    r->next = fa_list;
    fa_list = r;
  }
  if (r && r->n == r->cap) {
    int cap = r->cap ? r->cap * 2 : 8;
    struct fa_act *a = realloc(r->a, (size_t)cap * sizeof *a);
    if (a) {
      r->a = a;
      r->cap = cap;
    }
  }
  if (r && r->n < r->cap && (!act.path || (act.path = strdup(act.path)))) r->a[r->n++] = act;
  else if (r) r->lost = 1;
  shm_unlock(&fa_lock);
}

SHM_EXPORT int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa) {
  fa_forget(fa); /* an object re-initialised without destroy */
  return REAL(posix_spawn_file_actions_init)(fa);
}
SHM_EXPORT int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *fa) {
  fa_forget(fa);
  return REAL(posix_spawn_file_actions_destroy)(fa);
}

#define FA_ADD(call, ...)                     \
  do {                                        \
    int r_ = (call);                          \
    if (r_ == 0) fa_note(fa, (struct fa_act){__VA_ARGS__}); \
    return r_;                                \
  } while (0)

SHM_EXPORT int posix_spawn_file_actions_addclose(posix_spawn_file_actions_t *fa, int fd) {
  FA_ADD(REAL(posix_spawn_file_actions_addclose)(fa, fd), .tag = FA_CLOSE, .fd = fd);
}
SHM_EXPORT int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int newfd) {
  FA_ADD(REAL(posix_spawn_file_actions_adddup2)(fa, fd, newfd), .tag = FA_DUP2, .fd = fd, .newfd = newfd);
}
SHM_EXPORT int posix_spawn_file_actions_addopen(posix_spawn_file_actions_t *fa, int fd, const char *path,
                                                int oflag, mode_t mode) {
  FA_ADD(REAL(posix_spawn_file_actions_addopen)(fa, fd, path, oflag, mode), .tag = FA_OPEN, .fd = fd,
         .oflag = oflag, .mode = mode, .path = (char *)path);
}
SHM_EXPORT int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *fa, const char *path) {
  FA_ADD(REAL(posix_spawn_file_actions_addchdir_np)(fa, path), .tag = FA_CHDIR, .path = (char *)path);
}
SHM_EXPORT int posix_spawn_file_actions_addfchdir_np(posix_spawn_file_actions_t *fa, int fd) {
  FA_ADD(REAL(posix_spawn_file_actions_addfchdir_np)(fa, fd), .tag = FA_FCHDIR, .fd = fd);
}
SHM_EXPORT int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *fa, int from) {
  FA_ADD(REAL(posix_spawn_file_actions_addclosefrom_np)(fa, from), .tag = FA_CLOSEFROM, .fd = from);
}
SHM_EXPORT int posix_spawn_file_actions_addtcsetpgrp_np(posix_spawn_file_actions_t *fa, int fd) {
  FA_ADD(REAL(posix_spawn_file_actions_addtcsetpgrp_np)(fa, fd), .tag = FA_TCSETPGRP, .fd = fd);
}

/* Replays one recorded action onto another object. */
static int fa_replay(posix_spawn_file_actions_t *to, const struct fa_act *a) {
  switch (a->tag) {
    case FA_CLOSE: return REAL(posix_spawn_file_actions_addclose)(to, a->fd);
    case FA_DUP2: return REAL(posix_spawn_file_actions_adddup2)(to, a->fd, a->newfd);
    case FA_OPEN: return REAL(posix_spawn_file_actions_addopen)(to, a->fd, a->path, a->oflag, a->mode);
    case FA_CHDIR: return REAL(posix_spawn_file_actions_addchdir_np)(to, a->path);
    case FA_FCHDIR: return REAL(posix_spawn_file_actions_addfchdir_np)(to, a->fd);
    case FA_CLOSEFROM: return REAL(posix_spawn_file_actions_addclosefrom_np)(to, a->fd);
    default: return REAL(posix_spawn_file_actions_addtcsetpgrp_np)(to, a->fd);
  }
}

/* ---- what the new image will hold ---- */

/* Connections one spawn handles (beyond: a warning, as for exec). */
#define SP_MAX 64
#define SP_SLOTS 256
#define SP_VAR_CAP (SP_MAX * 128)

/* One descriptor of the child that refers to a tracked connection. */
struct sp_slot {
  int fd, from; /* child fd; the parent fd it was a copy of */
  int cloexec, moved; /* moved: put there by an action (not the parent's own number) */
  struct shm_conn *c;
};
struct sp_plan {
  struct sp_slot s[SP_SLOTS];
  int n, overflow;
};

static struct sp_slot *sp_at(struct sp_plan *p, int fd) {
  for (int i = 0; i < p->n; i++)
    if (p->s[i].fd == fd) return &p->s[i];
  return NULL;
}
static void sp_drop(struct sp_plan *p, int fd) {
  struct sp_slot *x = sp_at(p, fd);
  if (x) *x = p->s[--p->n];
}
static void sp_put(struct sp_plan *p, struct sp_slot v) {
  sp_drop(p, v.fd);
  if (p->n < SP_SLOTS) p->s[p->n++] = v;
  else p->overflow = 1;
}

/* The parent's tracked connections, then the recorded actions in order. */
static void sp_simulate(struct sp_plan *p, const struct fa_rec *r) {
  p->n = p->overflow = 0;
  SHM_FOR_EACH_CONN_FD(fd) {
    struct shm_conn *c = shm_fdtab_get()[fd].p;
    int st = shm_conn_state(c);
    if (st != SHM_CONN_UPGRADED && st != SHM_CONN_PENDING) continue;
    int fl = REAL(fcntl)((int)fd, F_GETFD);
    if (fl < 0) continue;
    sp_put(p, (struct sp_slot){(int)fd, (int)fd, !!(fl & FD_CLOEXEC), 0, c});
  }
  for (int i = 0; r && i < r->n; i++) {
    const struct fa_act *a = &r->a[i];
    switch (a->tag) {
      case FA_CLOSE:
      case FA_OPEN:
        sp_drop(p, a->fd);
        break;
      case FA_DUP2: {
        struct sp_slot *x = sp_at(p, a->fd);
        if (a->fd == a->newfd) {
          if (x) x->cloexec = 0; /* the same number: its close-on-exec flag cleared */
        } else if (x) {
          sp_put(p, (struct sp_slot){a->newfd, x->from, 0, 1, x->c});
        } else {
          sp_drop(p, a->newfd);
        }
        break;
      }
      case FA_CLOSEFROM:
        for (int k = p->n - 1; k >= 0; k--)
          if (p->s[k].fd >= a->fd) p->s[k] = p->s[--p->n];
        break;
      default:
        break;
    }
  }
}

/* What the spawn does to each connection the child holds: carried (entries in
 * var, the segment passed by a prepended action) or fenced (every descriptor of
 * it the child may copy from is replaced by the dead socket first). */
struct sp_job {
  struct sp_plan plan;
  posix_spawn_file_actions_t fa;
  int fa_made, dead;
  int nheld;
  struct shm_conn *held[SP_MAX];
  char var[SP_VAR_CAP + 32];
  char **env;
};

/* Pending connections the child inherits become plain, as across exec. */
static void settle_pending(struct sp_plan *p) {
  for (int i = 0; i < p->n; i++) {
    struct shm_conn *c = p->s[i].c;
    if (!p->s[i].cloexec && shm_conn_state(c) == SHM_CONN_PENDING) pl_pending_handed_on(p->s[i].from, c);
  }
}

/* Encodes every upgraded connection the child holds into j->var; those that
 * cannot be carried are listed in fence[] (returns their number). */
static int plan_carry(struct sp_job *j, int carry, struct shm_conn **fence) {
  struct sp_plan *p = &j->plan;
  int nf = 0;
  strcpy(j->var, SHM_INHERIT_VAR "=");
  size_t v0 = strlen(j->var);
  for (int i = 0; i < p->n; i++) {
    struct sp_slot *s = &p->s[i];
    struct shm_conn *c = s->c;
    if (s->cloexec || shm_conn_state(c) != SHM_CONN_UPGRADED) continue;
    int first = -1, fenced = 0;
    for (int k = 0; k < i; k++)
      if (p->s[k].c == c && !p->s[k].cloexec) first = p->s[k].fd;
    for (int k = 0; k < nf; k++) fenced |= fence[k] == c;
    if (fenced) continue;
    if (first >= 0) { /* a second descriptor of one carried already */
      if (shm_inherit_encode_dup(s->fd, first, j->var, sizeof j->var - v0) < 0)
        SHM_LOG(WARN, "fd=%d: no room to describe a second descriptor of a carried connection", s->fd);
      continue;
    }
    if (carry && j->nheld < SP_MAX && shm_conn_seg_fd(c) >= 0 &&
               shm_inherit_encode(s->from, s->fd, c, j->var, sizeof j->var - v0) == 0) {
      j->held[j->nheld++] = c;
      continue;
    }
    if (nf < SP_MAX) fence[nf++] = c;
  }
  return nf;
}

/* The child's file actions: the segments (and unproven servers' endpoint
 * connections) of carried connections first, then each fenced connection's
 * descriptors replaced by the dead socket, then the application's own. */
static int build_actions(struct sp_job *j, const struct fa_rec *r, struct shm_conn **fence, int nf) {
  if (REAL(posix_spawn_file_actions_init)(&j->fa)) return -1;
  j->fa_made = 1;
  int rc = 0;
  for (int i = 0; i < j->nheld && !rc; i++) {
    struct shm_conn *c = j->held[i];
    rc = REAL(posix_spawn_file_actions_adddup2)(&j->fa, shm_conn_seg_fd(c), shm_conn_seg_fd(c));
    int ep = shm_conn_unproven_endpoint(c);
    if (!rc && ep >= 0) rc = REAL(posix_spawn_file_actions_adddup2)(&j->fa, ep, ep);
  }
  if (nf && !rc && (j->dead = pl_dead_socket()) < 0) rc = -1;
  /* The parent's descriptors of a fenced connection (the child's copies come
   * from them): the dead socket in their place from the start. */
  if (nf && !rc) {
    SHM_FOR_EACH_CONN_FD(fd) {
      for (int k = 0; k < nf && !rc; k++)
        if (shm_fdtab_get()[fd].p == fence[k]) {
          rc = REAL(posix_spawn_file_actions_adddup2)(&j->fa, j->dead, (int)fd);
          break;
        }
    }
  }
  for (int i = 0; r && i < r->n && !rc; i++) rc = fa_replay(&j->fa, &r->a[i]);
  /* A close-on-exec descriptor that the dead socket replaced stays out of the
   * child, as it would have. */
  for (int i = 0; i < j->plan.n && !rc; i++) {
    struct sp_slot *s = &j->plan.s[i];
    if (!s->cloexec || s->moved) continue;
    for (int k = 0; k < nf; k++)
      if (s->c == fence[k]) rc = REAL(posix_spawn_file_actions_addclose)(&j->fa, s->fd);
  }
  return rc ? -1 : 0;
}

/* envp without any SHMSHIM_INHERIT, with ours. */
static char **with_var(char *const envp[], char *var) {
  static const char name[] = SHM_INHERIT_VAR "=";
  size_t n = 0;
  while (envp && envp[n]) n++;
  char **e = malloc((n + 2) * sizeof *e);
  if (!e) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(envp[i], name, sizeof name - 1)) e[k++] = envp[i];
  e[k++] = var;
  e[k] = NULL;
  return e;
}

/* Prepares the spawn. 0: nothing to do (spawn as asked); 1: spawn with j->fa and
 * j->env; -1: could not be prepared (errno; nothing changed but pending
 * connections made plain). */
static int sp_prepare(struct sp_job *j, const posix_spawn_file_actions_t *fa, char *const envp[]) {
  j->fa_made = 0;
  j->dead = -1;
  j->nheld = 0;
  j->env = NULL;
  if (!shm_fdtab_get()) return 0;
  shm_lock(&fa_lock);
  struct fa_rec *r = fa ? *fa_find(fa) : NULL;
  if (fa && (!r || r->lost))
    SHM_LOG(WARN, "posix_spawn: file actions %s: the descriptors the new image gets are worked out without them",
            r ? "not all recorded (no memory)" : "not made through this library");
  sp_simulate(&j->plan, r);
  if (j->plan.overflow) SHM_LOG(WARN, "posix_spawn: more connections than one spawn can follow; some not handled");
  settle_pending(&j->plan);
  int any = 0;
  for (int i = 0; i < j->plan.n; i++)
    any |= !j->plan.s[i].cloexec && shm_conn_state(j->plan.s[i].c) == SHM_CONN_UPGRADED;
  if (!any) {
    shm_unlock(&fa_lock);
    return 0;
  }
  struct shm_conn *fence[SP_MAX];
  int carry = pl_target_shimmed(envp);
  int nf = plan_carry(j, carry, fence);
  int rc = build_actions(j, r, fence, nf);
  shm_unlock(&fa_lock);
  if (rc == 0 && j->nheld && !(j->env = with_var(envp, j->var))) rc = -1;
  if (rc < 0) {
    int e = errno ? errno : ENOMEM;
    if (j->fa_made) REAL(posix_spawn_file_actions_destroy)(&j->fa);
    if (j->dead >= 0) shm_sys_close(j->dead);
    errno = e;
    return -1;
  }
  for (int i = 0; i < j->nheld; i++) shm_conn_hold(j->held[i], 1); /* the new image holds it too */
  for (int k = 0; k < nf; k++)
    SHM_LOG(WARN, "upgraded connection inherited by a new image started by posix_spawn or system() that cannot take "
                  "it over (%s): it reads ECONNRESET there",
            carry ? "no room to describe it, or no segment kept" : "the library is not in its LD_PRELOAD, or disabled there");
  return 1;
}

static void sp_finish(struct sp_job *j, int failed) {
  if (failed)
    for (int i = 0; i < j->nheld; i++) shm_conn_hold(j->held[i], -1);
  if (j->fa_made) REAL(posix_spawn_file_actions_destroy)(&j->fa);
  if (j->dead >= 0) shm_sys_close(j->dead);
  free(j->env);
}

typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]);

static int spawn_with(spawn_fn real, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  struct sp_job *j = malloc(sizeof *j);
  if (!j) return real(pid, path, fa, attr, argv, envp);
  int prep = sp_prepare(j, fa, envp);
  if (prep < 0) {
    int e = errno;
    free(j);
    return e;
  }
  int rc = prep ? real(pid, path, &j->fa, attr, argv, j->env ? j->env : envp) : real(pid, path, fa, attr, argv, envp);
  if (prep) sp_finish(j, rc != 0);
  free(j);
  return rc;
}

SHM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  return spawn_with(REAL(posix_spawn), pid, path, fa, attr, argv, envp);
}
SHM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  return spawn_with(REAL(posix_spawnp), pid, file, fa, attr, argv, envp);
}

/* Would a child started now inherit a tracked connection that needs handling? */
static int any_inherited(void) {
  SHM_FOR_EACH_CONN_FD(fd) {
    int st = shm_conn_state(shm_fdtab_get()[fd].p);
    if ((st == SHM_CONN_UPGRADED || st == SHM_CONN_PENDING) && pl_fd_inherited((int)fd)) return 1;
  }
  return 0;
}

/* system(), as the standard describes it (the shell with SIGINT and SIGQUIT
 * ignored and SIGCHLD blocked in the caller while it runs), through the spawn
 * above, when a connection would be inherited; libc's otherwise. */
SHM_EXPORT int system(const char *cmd) {
  if (!cmd || !any_inherited()) return REAL(system)(cmd);
  struct sigaction ign = {.sa_handler = SIG_IGN}, old_int, old_quit;
  sigemptyset(&ign.sa_mask);
  sigset_t chld, old_mask, dfl;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigaction(SIGINT, &ign, &old_int);
  sigaction(SIGQUIT, &ign, &old_quit);
  pthread_sigmask(SIG_BLOCK, &chld, &old_mask);
  sigemptyset(&dfl);
  if (old_int.sa_handler != SIG_IGN) sigaddset(&dfl, SIGINT);
  if (old_quit.sa_handler != SIG_IGN) sigaddset(&dfl, SIGQUIT);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  posix_spawnattr_setsigmask(&at, &old_mask);
  posix_spawnattr_setsigdefault(&at, &dfl);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  char *argv[] = {"sh", "-c", (char *)cmd, NULL};
  pid_t pid;
  int status = -1, rc = posix_spawn(&pid, "/bin/sh", NULL, &at, argv, environ);
  posix_spawnattr_destroy(&at);
  if (rc == 0) {
    while (waitpid(pid, &status, 0) < 0)
      if (errno != EINTR) {
        status = -1;
        break;
      }
  } else {
    status = 127 << 8; /* as a shell that could not be run */
  }
  int e = errno;
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGQUIT, &old_quit, NULL);
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
  errno = e;
  return status;
}

/* popen(): libc's. A connection that cannot be handed to its child is kept from
 * it (close-on-exec during the call, as libc keeps its other popen streams). */
SHM_EXPORT FILE *popen(const char *cmd, const char *mode) {
  if (!any_inherited()) return REAL(popen)(cmd, mode);
  int hidden[SP_MAX], nh = 0;
  struct sp_plan *p = malloc(sizeof *p);
  if (p) {
    sp_simulate(p, NULL);
    settle_pending(p);
    for (int i = 0; i < p->n && nh < SP_MAX; i++) {
      if (p->s[i].cloexec || shm_conn_state(p->s[i].c) != SHM_CONN_UPGRADED) continue;
      if (REAL(fcntl)(p->s[i].fd, F_SETFD, FD_CLOEXEC) == 0) {
        hidden[nh++] = p->s[i].fd;
        SHM_LOG(WARN, "fd=%d: upgraded connection not passed to popen()'s child (the library cannot hand it over "
                      "there): the child gets EBADF on it", p->s[i].fd);
      }
    }
    free(p);
  }
  FILE *f = REAL(popen)(cmd, mode);
  int e = errno;
  for (int i = 0; i < nh; i++) REAL(fcntl)(hidden[i], F_SETFD, 0);
  errno = e;
  return f;
}

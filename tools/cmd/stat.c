/* shmshim stat: every shimmed process and its connections, as a table, as JSON, or
 * refreshed like top. Tables are read with core/statread.c (read-only mappings of
 * what each process published, validated); the two ends of an upgraded connection
 * are paired by socket inode, which gives the peer's pid and the rings' fill. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "conn.h"
#include "statread.h"

struct proc {
  struct shm_statread_proc r;
  int table;  /* 0: shimmed, no table yet */
  int wanted; /* shown (all, or named on the command line) */
};

struct view {
  struct proc *p;
  int n, cap;
  struct shm_statread_conn **by_ino; /* every connection of every process, sorted */
  struct proc **owner;               /* parallel to by_ino */
  int nconn;
};

/* Previous refresh, for rates in --watch. */
struct prev {
  int pid;
  uint32_t ino;
  uint64_t opened, tx, rx;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct proc *add_proc(struct view *v) {
  if (v->n == v->cap) {
    int nc = v->cap ? v->cap * 2 : 16;
    struct proc *np = realloc(v->p, (size_t)nc * sizeof *np);
    if (!np) return NULL;
    v->p = np;
    v->cap = nc;
  }
  struct proc *p = &v->p[v->n++];
  memset(p, 0, sizeof *p);
  return p;
}

static void free_view(struct view *v) {
  for (int i = 0; i < v->n; i++) shm_statread_free(&v->p[i].r);
  free(v->p);
  free(v->by_ino);
  free(v->owner);
  memset(v, 0, sizeof *v);
}

static int in_list(int pid, const int *pids, int npids) {
  for (int i = 0; i < npids; i++)
    if (pids[i] == pid) return 1;
  return 0;
}

static struct shm_statread_conn **sort_base;
static int cmp_ino(const void *a, const void *b) {
  uint32_t x = sort_base[*(const int *)a]->s.ino, y = sort_base[*(const int *)b]->s.ino;
  return x < y ? -1 : x > y;
}

/* Index of every connection by inode, for pairing. */
static void index_conns(struct view *v) {
  int total = 0;
  for (int i = 0; i < v->n; i++) total += v->p[i].r.nconns;
  v->nconn = 0;
  if (!total) return;
  struct shm_statread_conn **c = malloc((size_t)total * sizeof *c);
  struct proc **o = malloc((size_t)total * sizeof *o);
  int *idx = malloc((size_t)total * sizeof *idx);
  if (!c || !o || !idx) {
    free(c);
    free(o);
    free(idx);
    return;
  }
  for (int i = 0; i < v->n; i++)
    for (int j = 0; j < v->p[i].r.nconns; j++) {
      c[v->nconn] = &v->p[i].r.conns[j];
      o[v->nconn] = &v->p[i];
      v->nconn++;
    }
  for (int i = 0; i < total; i++) idx[i] = i;
  sort_base = c;
  qsort(idx, (size_t)total, sizeof *idx, cmp_ino);
  v->by_ino = malloc((size_t)total * sizeof *v->by_ino);
  v->owner = malloc((size_t)total * sizeof *v->owner);
  if (v->by_ino && v->owner)
    for (int i = 0; i < total; i++) {
      v->by_ino[i] = c[idx[i]];
      v->owner[i] = o[idx[i]];
    }
  else
    v->nconn = 0;
  free(c);
  free(o);
  free(idx);
}

/* The other end of an upgraded connection, if its process is visible. */
static struct shm_statread_conn *peer_of(struct view *v, struct shm_statread_conn *c, struct proc **owner) {
  if (!c->s.peer_ino || !v->by_ino) return NULL;
  int lo = 0, hi = v->nconn;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (v->by_ino[mid]->s.ino < c->s.peer_ino) lo = mid + 1;
    else hi = mid;
  }
  for (int i = lo; i < v->nconn && v->by_ino[i]->s.ino == c->s.peer_ino; i++)
    if (v->by_ino[i]->s.peer_ino == c->s.ino && v->by_ino[i]->s.role != c->s.role) {
      *owner = v->owner[i];
      return v->by_ino[i];
    }
  return NULL;
}

/* Reads every process we may read (pairing needs the peers too), marks the ones to
 * show. Returns how many named PIDs could not be shown. quiet: no messages. */
static int collect(struct view *v, const int *pids, int npids, int quiet) {
  int me = (int)getpid(), missing = 0;
  DIR *d = opendir("/proc");
  if (!d) {
    cmd_err("stat", "/proc: %s", strerror(errno));
    return npids ? npids : 1;
  }
  struct dirent *de;
  char err[256];
  while ((de = readdir(d))) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    if (*end || end == de->d_name || pid <= 0 || pid == me) continue;
    struct proc *p = add_proc(v);
    if (!p) break;
    if (shm_statread_pid((int)pid, &p->r, err, sizeof err) == 0) {
      p->table = 1;
      p->wanted = !npids || in_list((int)pid, pids, npids);
    } else {
      v->n--;
    }
  }
  closedir(d);
  for (int i = 0; i < npids; i++) {
    int found = 0;
    for (int j = 0; j < v->n; j++) found |= v->p[j].r.pid == pids[i];
    if (found) continue;
    struct shm_statread_proc r;
    int rc = shm_statread_pid(pids[i], &r, err, sizeof err), e = errno;
    if (rc == 0) { /* appeared meanwhile */
      struct proc *p = add_proc(v);
      if (p) {
        p->r = r;
        p->table = p->wanted = 1;
      }
      continue;
    }
    if (e == ENOENT && shm_statread_loaded(pids[i]) == 1) {
      struct proc *p = add_proc(v);
      if (p) {
        p->r = r;
        p->wanted = 1;
      }
      continue;
    }
    missing++;
    if (quiet) continue;
    if (e == ESRCH) cmd_err("stat", "pid %d: no such process", pids[i]);
    else if (e == EACCES || e == EPERM) cmd_err("stat", "pid %d: permission denied (another user's process?)", pids[i]);
    else if (e == ENOENT) cmd_err("stat", "pid %d (%s): not shimmed (libshmshim.so is not loaded)", pids[i], r.comm);
    else cmd_err("stat", "pid %d (%s): %s", pids[i], r.comm, err);
  }
  return missing;
}

static const char *family_name(int f) { return f == AF_INET ? "tcp4" : f == AF_INET6 ? "tcp6" : "unix"; }
static const char *role_name(int r) { return r == SHM_CLIENT ? "client" : "server"; }
static const char *state_name(int s) {
  return s == SHM_CONN_PENDING ? "pending" : s == SHM_CONN_UPGRADED ? "upgraded" : s == SHM_CONN_PLAIN ? "plain" : "broken";
}
static const char *why_name(int w) {
  static const char *const n[] = {"", "peer not shimmed", "disabled", "refused", "failed", "peer unknown",
                                  "short-lived"};
  return w >= 0 && w <= SHM_WHY_MAX ? n[w] : "?";
}
static const char *why_key(int w) {
  static const char *const n[] = {"", "peer_not_shimmed", "disabled", "refused", "failed", "peer_unknown",
                                  "short_lived"};
  return w >= 0 && w <= SHM_WHY_MAX ? n[w] : "unknown";
}

static void printable(char *dst, size_t n, const char *src, size_t len) {
  size_t k = 0;
  for (size_t i = 0; i < len && k + 1 < n; i++) {
    unsigned char ch = (unsigned char)src[i];
    dst[k++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
  }
  dst[k] = '\0';
}

static void fmt_addr(const struct shm_stat_addr *a, int family, char *buf, size_t n) {
  if (!a->len) {
    snprintf(buf, n, "-");
    return;
  }
  if (family == AF_INET && a->len >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in s;
    memcpy(&s, a->sa, sizeof s);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &s.sin_addr, ip, sizeof ip);
    snprintf(buf, n, "%s:%u", ip, ntohs(s.sin_port));
  } else if (family == AF_INET6 && a->len >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 s;
    memcpy(&s, a->sa, sizeof s);
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &s.sin6_addr, ip, sizeof ip);
    snprintf(buf, n, "[%s]:%u", ip, ntohs(s.sin6_port));
  } else if (family == AF_UNIX) {
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t plen = a->len > off ? a->len - off : 0;
    const char *path = (const char *)a->sa + off;
    if (plen == 0) {
      snprintf(buf, n, "(unnamed)");
    } else if (path[0] == '\0') {
      buf[0] = '@';
      printable(buf + 1, n - 1, path + 1, plen - 1);
    } else {
      printable(buf, n, path, strnlen(path, plen));
    }
  } else {
    snprintf(buf, n, "?");
  }
}

static void fmt_age(char *b, size_t n, uint64_t opened, uint64_t now) {
  if (!opened || opened > now) {
    snprintf(b, n, "?");
    return;
  }
  uint64_t s = (now - opened) / 1000000000u;
  if (s < 60) snprintf(b, n, "%llus", (unsigned long long)s);
  else if (s < 3600) snprintf(b, n, "%llum%02llus", (unsigned long long)s / 60, (unsigned long long)s % 60);
  else if (s < 86400) snprintf(b, n, "%lluh%02llum", (unsigned long long)s / 3600, (unsigned long long)s / 60 % 60);
  else snprintf(b, n, "%llud%02lluh", (unsigned long long)s / 86400, (unsigned long long)s / 3600 % 24);
}

static uint64_t tx_of(const struct shm_stat_slot *s) { return s->tx_ring + s->tx_sock; }
static uint64_t rx_of(const struct shm_stat_slot *s) { return s->rx_ring + s->rx_sock; }

/* Bytes in the ring towards us (in) and from us (out), from both ends' counts:
 * read at slightly different moments, so clamped to the ring. -1: unknown. */
static void fills(const struct shm_stat_slot *me, const struct shm_stat_slot *peer, int64_t *in, int64_t *out) {
  *in = *out = -1;
  if (!peer || me->state != SHM_CONN_UPGRADED || !me->ring_size) return;
  int64_t r = me->ring_size;
  int64_t i = (int64_t)(peer->tx_ring - me->rx_ring), o = (int64_t)(me->tx_ring - peer->rx_ring);
  *in = i < 0 ? 0 : i > r ? r : i;
  *out = o < 0 ? 0 : o > r ? r : o;
}

static int cmp_conn_fd(const void *a, const void *b) {
  const struct shm_statread_conn *x = a, *y = b;
  return x->fd - y->fd;
}
static int cmp_proc_pid(const void *a, const void *b) {
  const struct proc *x = a, *y = b;
  return x->r.pid - y->r.pid;
}

/* The previous round's counts, sorted by (pid, inode, opened): a binary search per
 * connection, not a comparison with every other one. */
static int cmp_prev(const void *a, const void *b) {
  const struct prev *x = a, *y = b;
  if (x->pid != y->pid) return x->pid < y->pid ? -1 : 1;
  if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
  return x->opened < y->opened ? -1 : x->opened > y->opened;
}

static const struct prev *find_prev(const struct prev *pv, int npv, int pid, const struct shm_stat_slot *s) {
  struct prev key = {pid, s->ino, s->opened_ns, 0, 0};
  return pv && npv ? bsearch(&key, pv, (size_t)npv, sizeof *pv, cmp_prev) : NULL;
}

static void print_table(struct view *v, const struct prev *pv, int npv, double dt) {
  int nprocs = 0, nconns = 0, nup = 0, nplain = 0;
  for (int i = 0; i < v->n; i++) {
    if (!v->p[i].wanted) continue;
    nprocs++;
    for (int j = 0; j < v->p[i].r.nconns; j++) {
      int st = v->p[i].r.conns[j].s.state;
      nconns++;
      nup += st == SHM_CONN_UPGRADED;
      nplain += st == SHM_CONN_PLAIN;
    }
  }
  printf("%d shimmed process%s, %d connection%s: %d upgraded, %d plain, %d other\n", nprocs,
         nprocs == 1 ? "" : "es", nconns, nconns == 1 ? "" : "s", nup, nplain, nconns - nup - nplain);
  if (!nprocs) return;
  printf("%-7s %-15s %5s %-6s %-5s %-22s %-22s %-24s %7s %7s", "PID", "PROGRAM", "FD", "ROLE", "PROTO",
         "LOCAL", "PEER", "STATE", "SENT", "RECV");
  if (pv) printf(" %7s %7s", "SENT/s", "RECV/s");
  printf(" %15s %7s %11s %7s\n", "KICKS OUT/IN", "SPINS", "FILL IN/OUT", "AGE");
  for (int i = 0; i < v->n; i++) {
    struct proc *p = &v->p[i];
    if (!p->wanted) continue;
    if (!p->r.nconns)
      printf("%-7d %-15.15s %s\n", p->r.pid, p->r.comm,
             p->table ? "(no open connection)" : "(no connection tracked yet, or SHMSHIM_STATS=0)");
    for (int j = 0; j < p->r.nconns; j++) {
      struct shm_statread_conn *c = &p->r.conns[j];
      const struct shm_stat_slot *s = &c->s;
      char local[128], peer[128], state[64], tx[16], rx[16], kicks[32], spins[16], fill[24], age[16];
      fmt_addr(&s->local, s->family, local, sizeof local);
      fmt_addr(&s->peer, s->family, peer, sizeof peer);
      struct proc *po = NULL;
      struct shm_statread_conn *pc = peer_of(v, c, &po);
      if (s->state == SHM_CONN_PLAIN || s->state == SHM_CONN_BROKEN)
        snprintf(state, sizeof state, "%s: %s", state_name(s->state), why_name(s->why));
      else if (s->state == SHM_CONN_UPGRADED && po)
        snprintf(state, sizeof state, "upgraded (peer %d)", po->r.pid);
      else
        snprintf(state, sizeof state, "%s", state_name(s->state));
      int counted = s->tracked && s->state != SHM_CONN_PLAIN; /* plain: libc's bytes, not counted */
      if (counted) {
        shm_stat_human(tx, sizeof tx, tx_of(s), "");
        shm_stat_human(rx, sizeof rx, rx_of(s), "");
        char a[16], b[16];
        shm_stat_human(a, sizeof a, s->kicks_tx, "");
        shm_stat_human(b, sizeof b, s->kicks_rx, "");
        snprintf(kicks, sizeof kicks, "%s/%s", a, b);
        shm_stat_human(spins, sizeof spins, s->spins_won, "");
      } else {
        strcpy(tx, "-");
        strcpy(rx, "-");
        strcpy(kicks, "-");
        strcpy(spins, "-");
      }
      int64_t in, out;
      fills(s, pc ? &pc->s : NULL, &in, &out);
      if (in >= 0)
        snprintf(fill, sizeof fill, "%d%%/%d%%", (int)(in * 100 / s->ring_size), (int)(out * 100 / s->ring_size));
      else
        strcpy(fill, "-");
      fmt_age(age, sizeof age, s->opened_ns, p->r.read_ns);
      printf("%-7d %-15.15s %5d %-6s %-5s %-22.22s %-22.22s %-24.24s %7s %7s", p->r.pid, p->r.comm, c->fd,
             role_name(s->role), family_name(s->family), local, peer, state, tx, rx);
      if (pv) {
        const struct prev *q = find_prev(pv, npv, p->r.pid, s);
        char a[16] = "-", b[16] = "-";
        if (q && counted && dt > 0) {
          shm_stat_human(a, sizeof a, (uint64_t)((double)(tx_of(s) - q->tx) / dt), "");
          shm_stat_human(b, sizeof b, (uint64_t)((double)(rx_of(s) - q->rx) / dt), "");
        }
        printf(" %7s %7s", a, b);
      }
      printf(" %15s %7s %11s %7s\n", kicks, spins, fill, age);
    }
    const struct shm_stat_hdr *h = &p->r.h;
    if (h->closed || h->overflow || p->r.invalid) {
      char a[16], b[16];
      shm_stat_human(a, sizeof a, h->closed_tx, "");
      shm_stat_human(b, sizeof b, h->closed_rx, "");
      printf("%-7s closed: %llu connection%s, sent %s, received %s", "", (unsigned long long)h->closed,
             h->closed == 1 ? "" : "s", a, b);
      if (h->overflow) printf("; %llu not shown (table full)", (unsigned long long)h->overflow);
      if (p->r.invalid) printf("; %u invalid slots ignored", p->r.invalid);
      printf("\n");
    }
  }
}

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

#define U(x) ((unsigned long long)(x))

static void print_json(struct view *v) {
  printf("{\"processes\":[");
  int first = 1;
  for (int i = 0; i < v->n; i++) {
    struct proc *p = &v->p[i];
    if (!p->wanted) continue;
    const struct shm_stat_hdr *h = &p->r.h;
    printf("%s{\"pid\":%d,\"program\":", first ? "" : ",", p->r.pid);
    json_str(p->r.comm);
    printf(",\"table\":%s", p->table ? "true" : "false");
    printf(",\"totals\":{\"upgraded_client\":%llu,\"upgraded_server\":%llu,\"plain_client\":%llu,"
           "\"plain_server\":%llu,\"offers_rejected\":%llu,\"closed\":%llu,"
           "\"closed_tx_bytes\":%llu,\"closed_rx_bytes\":%llu,\"overflow\":%llu}",
           U(h->upgraded_client), U(h->upgraded_server), U(h->plain_client), U(h->plain_server),
           U(h->offers_rejected), U(h->closed), U(h->closed_tx), U(h->closed_rx),
           U(h->overflow));
    printf(",\"skipped\":{\"invalid\":%u,\"unstable\":%u,\"stale\":%u}", p->r.invalid, p->r.unstable, p->r.stale);
    printf(",\"connections\":[");
    for (int j = 0; j < p->r.nconns; j++) {
      struct shm_statread_conn *c = &p->r.conns[j];
      const struct shm_stat_slot *s = &c->s;
      char local[256], peer[256];
      fmt_addr(&s->local, s->family, local, sizeof local);
      fmt_addr(&s->peer, s->family, peer, sizeof peer);
      struct proc *po = NULL;
      struct shm_statread_conn *pc = peer_of(v, c, &po);
      int64_t in, out;
      fills(s, pc ? &pc->s : NULL, &in, &out);
      printf("%s{\"fd\":%d,\"role\":\"%s\",\"family\":\"%s\",\"local\":", j ? "," : "", c->fd, role_name(s->role),
             family_name(s->family));
      json_str(local);
      printf(",\"peer\":");
      json_str(peer);
      printf(",\"state\":\"%s\",\"why\":", state_name(s->state));
      if (s->why) printf("\"%s\"", why_key(s->why));
      else printf("null");
      printf(",\"counted\":%s", s->tracked && s->state != SHM_CONN_PLAIN ? "true" : "false");
      printf(",\"tx_bytes\":%llu,\"rx_bytes\":%llu,\"tx_ring_bytes\":%llu,\"rx_ring_bytes\":%llu,"
             "\"tx_socket_bytes\":%llu,\"rx_socket_bytes\":%llu,\"kicks_sent\":%llu,\"kicks_received\":%llu,"
             "\"spins_won\":%llu,\"ring_size\":%u",
             U(tx_of(s)), U(rx_of(s)), U(s->tx_ring), U(s->rx_ring), U(s->tx_sock), U(s->rx_sock),
             U(s->kicks_tx), U(s->kicks_rx), U(s->spins_won), s->ring_size);
      if (in >= 0) printf(",\"ring_fill_in\":%lld,\"ring_fill_out\":%lld", (long long)in, (long long)out);
      else printf(",\"ring_fill_in\":null,\"ring_fill_out\":null");
      if (po) printf(",\"peer_pid\":%d,\"peer_fd\":%d", po->r.pid, pc->fd);
      else printf(",\"peer_pid\":null,\"peer_fd\":null");
      double age = s->opened_ns && s->opened_ns <= p->r.read_ns ? (double)(p->r.read_ns - s->opened_ns) / 1e9 : -1;
      printf(",\"age_s\":%.3f,\"inode\":%u,\"peer_inode\":%u}", age, s->ino, s->peer_ino);
    }
    printf("]}");
    first = 0;
  }
  printf("]}\n");
}

static void stat_usage(FILE *f) {
  fputs("usage: shmshim stat [--json] [--watch [--interval S] [--count N]] [PID...]\n"
        "  --json          machine-readable output (one document per refresh)\n"
        "  --watch         refresh like top until interrupted\n"
        "  --interval S    seconds between refreshes (default 1)\n"
        "  --count N       stop after N refreshes\n"
        "Without PIDs: every shimmed process this user may read.\n",
        f);
}

int cmd_stat(int argc, char **argv) {
  static const struct option opts[] = {{"json", no_argument, 0, 'j'},         {"watch", no_argument, 0, 'w'},
                                       {"interval", required_argument, 0, 'i'}, {"count", required_argument, 0, 'n'},
                                       {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  int json = 0, watch = 0;
  long count = -1;
  double interval = 1.0;
  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, ":jwi:n:h", opts, NULL)) != -1) {
    char *end;
    switch (c) {
      case 'j': json = 1; break;
      case 'w': watch = 1; break;
      case 'i':
        interval = strtod(optarg, &end);
        if (*end || end == optarg || !(interval >= 0.05 && interval <= 3600)) {
          cmd_err("stat", "invalid --interval '%s': seconds from 0.05 to 3600", optarg);
          return CMD_USAGE;
        }
        break;
      case 'n':
        count = strtol(optarg, &end, 10);
        if (*end || end == optarg || count < 1) {
          cmd_err("stat", "invalid --count '%s': a positive number", optarg);
          return CMD_USAGE;
        }
        break;
      case 'h': stat_usage(stdout); return 0;
      case ':': cmd_err("stat", "option %s needs a value", argv[optind - 1]); return CMD_USAGE;
      default: cmd_err("stat", "unknown option '%s' (see shmshim stat --help)", argv[optind - 1]); return CMD_USAGE;
    }
  }
  int npids = argc - optind;
  int *pids = calloc((size_t)(npids ? npids : 1), sizeof *pids);
  if (!pids) return 1;
  for (int i = 0; i < npids; i++) {
    char *end;
    long v = strtol(argv[optind + i], &end, 10);
    if (*end || end == argv[optind + i] || v <= 0 || v > 0x7fffffff) {
      cmd_err("stat", "'%s' is not a process id", argv[optind + i]);
      free(pids);
      return CMD_USAGE;
    }
    pids[i] = (int)v;
  }
  if (!watch) count = 1;
  int tty = isatty(1), missing = 0;
  struct prev *pv = NULL;
  int npv = 0;
  uint64_t last = 0;
  for (long round = 0; count < 0 || round < count; round++) {
    if (round) {
      struct timespec ts = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
      nanosleep(&ts, NULL);
    }
    struct view v = {0};
    missing = collect(&v, pids, npids, watch && round > 0);
    /* Sorted before the index is built: it points into these arrays. */
    qsort(v.p, (size_t)v.n, sizeof *v.p, cmp_proc_pid);
    for (int i = 0; i < v.n; i++)
      qsort(v.p[i].r.conns, (size_t)v.p[i].r.nconns, sizeof *v.p[i].r.conns, cmp_conn_fd);
    index_conns(&v);
    uint64_t t = now_ns();
    if (json) {
      print_json(&v);
    } else {
      if (watch && tty) printf("\033[H\033[2J");
      if (watch) {
        time_t wall = time(NULL);
        char when[32];
        strftime(when, sizeof when, "%H:%M:%S", localtime(&wall));
        printf("shmshim stat  %s  every %.2gs\n", when, interval);
      }
      print_table(&v, watch ? pv : NULL, npv, last ? (double)(t - last) / 1e9 : 0);
    }
    fflush(stdout);
    if (watch) { /* remember this round's counts for the next one's rates */
      free(pv);
      npv = 0;
      int total = 0;
      for (int i = 0; i < v.n; i++) total += v.p[i].r.nconns;
      pv = calloc((size_t)(total ? total : 1), sizeof *pv);
      for (int i = 0; pv && i < v.n; i++)
        for (int j = 0; j < v.p[i].r.nconns; j++) {
          const struct shm_stat_slot *s = &v.p[i].r.conns[j].s;
          pv[npv++] = (struct prev){v.p[i].r.pid, s->ino, s->opened_ns, tx_of(s), rx_of(s)};
        }
      if (pv) qsort(pv, (size_t)npv, sizeof *pv, cmp_prev);
      last = t;
    }
    free_view(&v);
  }
  free(pv);
  free(pids);
  return missing ? 1 : 0;
}

#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/auxv.h>

#include "log.h"

int shm_uring_in_use;
struct shm_config shm_cfg = {
    .disable = 0,
    .tcp = 1,
    .unix_ = 1,
    .ring_size = SHM_DEF_RING_SIZE,
    .spin_us = SHM_DEF_SPIN_US,
    .idle_ms = SHM_DEF_IDLE_MS,
    .short_ms = SHM_DEF_SHORT_MS,
    .log_level = SHM_LOG_OFF,
    .stats = 1,
};

static int checking, bad_seen; /* shm_config_check: count complaints, print none */

static const char *env_lookup(const char *name) { return getenv(name); }

/* "1k", "256K", "4M", "1G" or plain digits. Returns -1 on garbage or overflow. */
static int parse_size(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return -1;
  uint64_t mul = 1;
  switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    default: break;
  }
  if (*end != '\0' || v > UINT64_MAX / mul) return -1;
  *out = v * mul;
  return 0;
}

static int parse_bool(const char *s, int *out) {
  if (!strcmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcasecmp(s, "true")) {
    *out = 1;
    return 0;
  }
  if (!strcmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "off") || !strcasecmp(s, "false")) {
    *out = 0;
    return 0;
  }
  return -1;
}

/* "6379,8000-8100". On garbage -1, and *n is 0: no half list. */
static int parse_ports(const char *s, struct shm_port_range *r, int *n) {
  int k = 0;
  *n = 0;
  while (*s) {
    char *end;
    unsigned long lo = strtoul(s, &end, 10), hi;
    if (end == s || lo > 65535) return -1;
    hi = lo;
    if (*end == '-') {
      s = end + 1;
      hi = strtoul(s, &end, 10);
      if (end == s || hi > 65535 || hi < lo) return -1;
    }
    if (k == SHM_CFG_MAXLIST) return -1;
    r[k].lo = (uint16_t)lo;
    r[k].hi = (uint16_t)hi;
    k++;
    if (*end == ',') end++;
    else if (*end) return -1;
    s = end;
  }
  *n = k;
  return 0;
}

/* "/run/app,/tmp/x" (prefixes). On garbage -1, and *n is 0. */
static int parse_paths(const char *s, char (*p)[108], int *n) {
  int k = 0;
  *n = 0;
  while (*s) {
    size_t len = strcspn(s, ",");
    if (len == 0 || len >= 108 || k == SHM_CFG_MAXLIST) return -1;
    memcpy(p[k], s, len);
    p[k][len] = '\0';
    k++;
    s += len;
    if (*s == ',') s++;
  }
  *n = k;
  return 0;
}

static void bad(const char *name, const char *val) {
  bad_seen++;
  if (checking) return;
  SHM_LOG(WARN, "ignoring invalid SHMSHIM_%s=%s (default kept)", name, val);
}

/* SHMSHIM_<name>, a number no larger than max, into *out when set and valid. */
static void load_uint(const char *(*lookup)(const char *name), const char *name, uint64_t max, uint64_t *out) {
  char full[48];
  snprintf(full, sizeof full, "SHMSHIM_%s", name);
  const char *v = lookup(full);
  uint64_t x;
  if (!v || !*v) return;
  if (parse_size(v, &x) || x > max) bad(name, v);
  else *out = x;
}

void shm_config_load(const char *(*lookup)(const char *name)) {
  if (!lookup) {
    /* The environment of a setuid program belongs to whoever started it. */
    if (getauxval(AT_SECURE)) return;
    lookup = env_lookup;
  }
  const char *v;
  /* LOG first so that complaints about the other variables can be seen. */
  if ((v = lookup("SHMSHIM_LOG")) && *v) {
    if (!strcmp(v, "debug")) shm_cfg.log_level = SHM_LOG_DEBUG;
    else if (!strcmp(v, "info")) shm_cfg.log_level = SHM_LOG_INFO;
    else if (!strcmp(v, "warn")) shm_cfg.log_level = SHM_LOG_WARN;
    else if (!strcmp(v, "off")) shm_cfg.log_level = SHM_LOG_OFF;
    else {
      shm_cfg.log_level = SHM_LOG_WARN;
      bad("LOG", v);
    }
  }
  if ((v = lookup("SHMSHIM_LOG_FILE")) && *v) {
    /* Absolute from here on: a later chdir() must not move the log. */
    char cwd[SHM_CFG_STRMAX];
    int n = -1;
    if (v[0] == '/') n = snprintf(shm_cfg.log_file, sizeof shm_cfg.log_file, "%s", v);
    else if (syscall(SYS_getcwd, cwd, sizeof cwd) > 0 && cwd[0] == '/')
      n = snprintf(shm_cfg.log_file, sizeof shm_cfg.log_file, "%s%s%s", cwd, cwd[1] ? "/" : "", v);
    if (n < 0 || (size_t)n >= sizeof shm_cfg.log_file) {
      shm_cfg.log_file[0] = '\0';
      bad("LOG_FILE", v);
    }
  }
  if ((v = lookup("SHMSHIM_DISABLE")) && *v && parse_bool(v, &shm_cfg.disable)) bad("DISABLE", v);
  if ((v = lookup("SHMSHIM_TCP")) && *v && parse_bool(v, &shm_cfg.tcp)) bad("TCP", v);
  if ((v = lookup("SHMSHIM_UNIX")) && *v && parse_bool(v, &shm_cfg.unix_)) bad("UNIX", v);
  if ((v = lookup("SHMSHIM_RING_SIZE")) && *v) {
    uint64_t sz;
    if (parse_size(v, &sz) || sz < SHM_RING_MIN || sz > SHM_RING_MAX || (sz & (sz - 1)))
      bad("RING_SIZE", v);
    else
      shm_cfg.ring_size = sz;
  }
  load_uint(lookup, "SPIN_US", 1000000, &shm_cfg.spin_us);
  load_uint(lookup, "IDLE_MS", 86400000, &shm_cfg.idle_ms);
  load_uint(lookup, "SHORT_MS", 3600000, &shm_cfg.short_ms);
  uint64_t stats = (uint64_t)shm_cfg.stats;
  load_uint(lookup, "STATS", 2, &stats);
  shm_cfg.stats = (int)stats;
  /* A list with garbage in it counts as empty (parse_*: *n is 0). */
  if ((v = lookup("SHMSHIM_PORTS_ALLOW")) && *v && parse_ports(v, shm_cfg.ports_allow, &shm_cfg.n_ports_allow))
    bad("PORTS_ALLOW", v);
  if ((v = lookup("SHMSHIM_PORTS_DENY")) && *v && parse_ports(v, shm_cfg.ports_deny, &shm_cfg.n_ports_deny))
    bad("PORTS_DENY", v);
  if ((v = lookup("SHMSHIM_PATHS_ALLOW")) && *v && parse_paths(v, shm_cfg.paths_allow, &shm_cfg.n_paths_allow))
    bad("PATHS_ALLOW", v);
  if ((v = lookup("SHMSHIM_PATHS_DENY")) && *v && parse_paths(v, shm_cfg.paths_deny, &shm_cfg.n_paths_deny))
    bad("PATHS_DENY", v);
}

static const char *check_name, *check_value;
static const char *check_lookup(const char *name) {
  return strcmp(name + 8, check_name) == 0 ? check_value : NULL; /* past "SHMSHIM_" */
}

int shm_config_check(const char *name, const char *value) {
#define KNOWN(n, kind, d, help) || strcmp(name, #n) == 0
  if (!(0 SHM_CONFIG_VARS(KNOWN))) return -2;
#undef KNOWN
  /* The same parser on a scratch copy: the rules cannot drift apart. */
  struct shm_config saved = shm_cfg;
  check_name = name;
  check_value = value;
  checking = 1;
  bad_seen = 0;
  shm_config_load(check_lookup);
  int r = bad_seen ? -1 : 0;
  checking = 0;
  shm_cfg = saved;
  return r;
}

static int in_ranges(uint16_t port, const struct shm_port_range *r, int n) {
  for (int i = 0; i < n; i++)
    if (port >= r[i].lo && port <= r[i].hi) return 1;
  return 0;
}

int shm_config_port_allowed(uint16_t port) {
  if (in_ranges(port, shm_cfg.ports_deny, shm_cfg.n_ports_deny)) return 0;
  return shm_cfg.n_ports_allow == 0 || in_ranges(port, shm_cfg.ports_allow, shm_cfg.n_ports_allow);
}

/* path/len: a sun_path as the application gave it; abstract names start with '\0'
 * and are matched with a leading '@', the way ss(8) prints them. */
static int path_match(const char *path, int len, const char *prefix) {
  size_t pl = strlen(prefix);
  if (len > 0 && path[0] == '\0') {
    if (prefix[0] != '@') return 0;
    return (size_t)len >= pl && memcmp(path + 1, prefix + 1, pl - 1) == 0;
  }
  return (size_t)len >= pl && memcmp(path, prefix, pl) == 0;
}

int shm_config_path_allowed(const char *path, int len) {
  for (int i = 0; i < shm_cfg.n_paths_deny; i++)
    if (path_match(path, len, shm_cfg.paths_deny[i])) return 0;
  if (shm_cfg.n_paths_allow == 0) return 1;
  for (int i = 0; i < shm_cfg.n_paths_allow; i++)
    if (path_match(path, len, shm_cfg.paths_allow[i])) return 1;
  return 0;
}

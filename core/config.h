/* Every SHMSHIM_* environment variable, in one place.
 *
 * Read once, from the library constructor (nginx wipes its workers' environment,
 * so a later getenv() would see nothing), and ignored entirely in setuid/setgid
 * processes (AT_SECURE), where the environment belongs to another user.
 * The README's configuration table is generated from the same list (tools/). */
#ifndef SHMSHIM_CONFIG_H
#define SHMSHIM_CONFIG_H

#include <stdint.h>

#define SHM_DEF_RING_SIZE 262144
#define SHM_DEF_SPIN_US 50
#define SHM_DEF_IDLE_MS 100
#define SHM_DEF_SHORT_MS 5

/* X(name, kind, default, help): kind is BOOL, UINT, SIZE (accepts K/M/G) or STR. */
#define SHM_CONFIG_VARS(X)                                                              \
  X(DISABLE, BOOL, 0, "1: the library passes every call straight to libc")             \
  X(TCP, BOOL, 1, "0: never upgrade loopback TCP connections")                         \
  X(UNIX, BOOL, 1, "0: never upgrade AF_UNIX stream connections")                      \
  X(PORTS_ALLOW, STR, "", "comma list of server ports/ranges to upgrade (empty: all)") \
  X(PORTS_DENY, STR, "", "comma list of server ports/ranges never to upgrade")         \
  X(PATHS_ALLOW, STR, "", "comma list of unix path prefixes to upgrade (empty: all)")  \
  X(PATHS_DENY, STR, "", "comma list of unix path prefixes never to upgrade")          \
  X(RING_SIZE, SIZE, SHM_DEF_RING_SIZE, "bytes per direction, power of two, 4K..64M")             \
  X(SPIN_US, UINT, SHM_DEF_SPIN_US, "max microseconds a waiter spins before sleeping (0: never)")   \
  X(IDLE_MS, UINT, SHM_DEF_IDLE_MS, "after this many ms of nothing, a waiter gives its idle rings' memory back (0: never)") \
  X(SHORT_MS, UINT, SHM_DEF_SHORT_MS, "connections that live less than this (and carry under 64 KiB) are short-lived; when most are, new ones stay plain (0: always upgrade)") \
  X(LOG, STR, "", "`debug`, `info` or `warn`: log to stderr, never when stderr is a socket (default: off)")                     \
  X(LOG_FILE, STR, "", "append log lines to this file instead of stderr (relative to the directory at start; never through a symbolic link; opened at the first line, or before the process gives up its user with setuid and the like; one it cannot open is named once on stderr)")                        \
  X(STATS, UINT, 1, "0: publish nothing; 1: publish per-connection counters for `shmshim stat`; 2: also print a summary on stderr at exit")

enum shm_log_level { SHM_LOG_OFF = 0, SHM_LOG_WARN = 1, SHM_LOG_INFO = 2, SHM_LOG_DEBUG = 3 };

#define SHM_CFG_STRMAX 256

struct shm_port_range {
  uint16_t lo, hi;
};

#define SHM_CFG_MAXLIST 16

struct shm_config {
  int disable;
  int tcp;
  int unix_;
  uint64_t ring_size;
  uint64_t spin_us;
  uint64_t idle_ms;
  uint64_t short_ms;
  int log_level;
  int stats; /* SHMSHIM_STATS: 0 off, 1 publish, 2 publish and summarise at exit */
  char log_file[SHM_CFG_STRMAX];
  int n_ports_allow, n_ports_deny;
  struct shm_port_range ports_allow[SHM_CFG_MAXLIST], ports_deny[SHM_CFG_MAXLIST];
  int n_paths_allow, n_paths_deny;
  char paths_allow[SHM_CFG_MAXLIST][108], paths_deny[SHM_CFG_MAXLIST][108];
};

extern struct shm_config shm_cfg;
/* Set once this process has set up an io_uring (through syscall()): readiness it
 * takes from there would never see a ring, so new connections stay plain. */
extern int shm_uring_in_use;

/* Fills shm_cfg from getenv-style lookup (NULL: the process environment).
 * Invalid values are reported (log) and replaced by the default. */
void shm_config_load(const char *(*lookup)(const char *name));

/* Checks one variable's value (name without the SHMSHIM_ prefix) with the same
 * rules as shm_config_load: 0 valid, -1 invalid, -2 unknown name. For tools. */
int shm_config_check(const char *name, const char *value);

/* Policy helpers used by the interposition layer. */
int shm_config_port_allowed(uint16_t port);
int shm_config_path_allowed(const char *path, int len);

#define SHM_RING_MIN (4u << 10)
#define SHM_RING_MAX (64u << 20)

#endif

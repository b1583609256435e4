/* shm_config_load with a custom lookup: defaults, sizes, booleans, spin, port and path
 * lists (incl. abstract unix names), log levels. shm_cfg is a global: it is restored
 * from a copy taken at startup before every test. */
#include "testutil.h"

#include "config.h"
#include "inherit.h"

static struct shm_config initial;

/* The fake environment: NAME=value pairs, NULL-terminated. */
static const char *const *env;

static const char *lookup(const char *name) {
  size_t nl = strlen(name);
  for (const char *const *e = env; e && *e; e++)
    if (!strncmp(*e, name, nl) && (*e)[nl] == '=') return *e + nl + 1;
  return NULL;
}

static int lookups;
static const char *counting_lookup(const char *name) {
  lookups++;
  assert_memory_equal(name, "SHMSHIM_", 8); /* only our own namespace is read */
  return lookup(name);
}

#define LOAD(...)                                            \
  do {                                                       \
    static const char *const e_[] = {__VA_ARGS__, NULL};     \
    env = e_;                                                \
    shm_config_load(lookup);                                 \
  } while (0)

static int reset(void **state) {
  (void)state;
  shm_cfg = initial;
  env = NULL;
  return 0;
}

static void test_defaults(void **state) {
  (void)state;
  lookups = 0;
  env = NULL;
  shm_config_load(counting_lookup);
  assert_true(lookups >= 11); /* every variable was asked for */
  assert_int_equal(shm_cfg.disable, 0);
  assert_int_equal(shm_cfg.tcp, 1);
  assert_int_equal(shm_cfg.unix_, 1);
  assert_int_equal(shm_cfg.ring_size, 262144);
  assert_int_equal(shm_cfg.spin_us, SHM_DEF_SPIN_US);
  assert_int_equal(shm_cfg.log_level, SHM_LOG_OFF);
  assert_string_equal(shm_cfg.log_file, "");
  assert_int_equal(shm_cfg.n_ports_allow, 0);
  assert_int_equal(shm_cfg.n_ports_deny, 0);
  assert_int_equal(shm_cfg.n_paths_allow, 0);
  assert_int_equal(shm_cfg.n_paths_deny, 0);
  assert_true(memcmp(&shm_cfg, &initial, sizeof initial) == 0);
  assert_true(shm_config_port_allowed(1));
  assert_true(shm_config_port_allowed(65535));
  assert_true(shm_config_path_allowed("/run/x.sock", 11));
  assert_true(shm_config_path_allowed("\0abstract", 9));
  /* Empty values are the same as unset. */
  LOAD("SHMSHIM_RING_SIZE=", "SHMSHIM_SPIN_US=", "SHMSHIM_TCP=", "SHMSHIM_LOG=", "SHMSHIM_PORTS_ALLOW=");
  assert_true(memcmp(&shm_cfg, &initial, sizeof initial) == 0);
}

static void test_ring_size(void **state) {
  (void)state;
  static const struct {
    const char *v;
    uint64_t want;
  } ok[] = {{"1M", 1048576}, {"1m", 1048576}, {"4K", 4096}, {"4096", 4096}, {"256k", 262144},
            {"64M", 64u << 20}, {"8192", 8192}, {"2m", 2u << 20}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    reset(NULL);
    const char *e[] = {NULL, NULL};
    char buf[64];
    snprintf(buf, sizeof buf, "SHMSHIM_RING_SIZE=%s", ok[i].v);
    e[0] = buf;
    env = e;
    shm_config_load(lookup);
    if (shm_cfg.ring_size != ok[i].want)
      fail_msg("RING_SIZE=%s gave %llu, want %llu", ok[i].v, (unsigned long long)shm_cfg.ring_size,
               (unsigned long long)ok[i].want);
  }
  static const char *const bad[] = {"3000", "4097", "6K", "2K", "2048", "0", "1", "128M", "1G",
                                    "abc", "1MB", "1M ", "M", "-4096", "4K4",
                                    "99999999999999999999999", "18014398509481984K"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reset(NULL);
    const char *e[] = {NULL, NULL};
    char buf[64];
    snprintf(buf, sizeof buf, "SHMSHIM_RING_SIZE=%s", bad[i]);
    e[0] = buf;
    env = e;
    shm_config_load(lookup);
    if (shm_cfg.ring_size != 262144)
      fail_msg("invalid RING_SIZE=%s was accepted as %llu", bad[i], (unsigned long long)shm_cfg.ring_size);
  }
  /* An invalid value does not disturb the others. */
  reset(NULL);
  LOAD("SHMSHIM_RING_SIZE=garbage", "SHMSHIM_SPIN_US=7");
  assert_int_equal(shm_cfg.ring_size, 262144);
  assert_int_equal(shm_cfg.spin_us, 7);
}

static void test_spin_and_bools(void **state) {
  (void)state;
  LOAD("SHMSHIM_SPIN_US=0");
  assert_int_equal(shm_cfg.spin_us, 0);
  reset(NULL);
  LOAD("SHMSHIM_SPIN_US=37");
  assert_int_equal(shm_cfg.spin_us, 37);
  reset(NULL);
  LOAD("SHMSHIM_SPIN_US=1000000");
  assert_int_equal(shm_cfg.spin_us, 1000000);
  static const char *const bad[] = {"SHMSHIM_SPIN_US=1000001", "SHMSHIM_SPIN_US=x",
                                    "SHMSHIM_SPIN_US=5us", "SHMSHIM_SPIN_US=1G"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reset(NULL);
    const char *e[] = {bad[i], NULL};
    env = e;
    shm_config_load(lookup);
    if (shm_cfg.spin_us != SHM_DEF_SPIN_US) fail_msg("%s accepted as %llu", bad[i], (unsigned long long)shm_cfg.spin_us);
  }
  reset(NULL);
  LOAD("SHMSHIM_DISABLE=1", "SHMSHIM_TCP=0", "SHMSHIM_UNIX=off");
  assert_int_equal(shm_cfg.disable, 1);
  assert_int_equal(shm_cfg.tcp, 0);
  assert_int_equal(shm_cfg.unix_, 0);
  reset(NULL);
  LOAD("SHMSHIM_DISABLE=yes", "SHMSHIM_TCP=no", "SHMSHIM_UNIX=FALSE");
  assert_int_equal(shm_cfg.disable, 1);
  assert_int_equal(shm_cfg.tcp, 0);
  assert_int_equal(shm_cfg.unix_, 0);
  reset(NULL);
  LOAD("SHMSHIM_DISABLE=TRUE", "SHMSHIM_TCP=on");
  assert_int_equal(shm_cfg.disable, 1);
  assert_int_equal(shm_cfg.tcp, 1);
  reset(NULL);
  LOAD("SHMSHIM_DISABLE=2", "SHMSHIM_TCP=nope", "SHMSHIM_UNIX=01");
  assert_int_equal(shm_cfg.disable, 0);
  assert_int_equal(shm_cfg.tcp, 1);
  assert_int_equal(shm_cfg.unix_, 1);
}

static void test_ports(void **state) {
  (void)state;
  LOAD("SHMSHIM_PORTS_ALLOW=6379,8000-8100");
  assert_int_equal(shm_cfg.n_ports_allow, 2);
  assert_int_equal(shm_cfg.ports_allow[0].lo, 6379);
  assert_int_equal(shm_cfg.ports_allow[0].hi, 6379);
  assert_int_equal(shm_cfg.ports_allow[1].lo, 8000);
  assert_int_equal(shm_cfg.ports_allow[1].hi, 8100);
  assert_true(shm_config_port_allowed(6379));
  assert_false(shm_config_port_allowed(6378));
  assert_false(shm_config_port_allowed(6380));
  assert_false(shm_config_port_allowed(7999));
  assert_true(shm_config_port_allowed(8000));
  assert_true(shm_config_port_allowed(8050));
  assert_true(shm_config_port_allowed(8100));
  assert_false(shm_config_port_allowed(8101));
  assert_false(shm_config_port_allowed(0));
  /* Deny wins over allow. */
  reset(NULL);
  LOAD("SHMSHIM_PORTS_ALLOW=8000-8100", "SHMSHIM_PORTS_DENY=8050-8060,22");
  assert_int_equal(shm_cfg.n_ports_deny, 2);
  assert_true(shm_config_port_allowed(8049));
  assert_false(shm_config_port_allowed(8050));
  assert_false(shm_config_port_allowed(8055));
  assert_false(shm_config_port_allowed(8060));
  assert_true(shm_config_port_allowed(8061));
  assert_false(shm_config_port_allowed(22));
  /* Deny only: everything else is allowed. */
  reset(NULL);
  LOAD("SHMSHIM_PORTS_DENY=0-1023,65535");
  assert_false(shm_config_port_allowed(0));
  assert_false(shm_config_port_allowed(1023));
  assert_true(shm_config_port_allowed(1024));
  assert_true(shm_config_port_allowed(65534));
  assert_false(shm_config_port_allowed(65535));
  /* Exactly SHM_CFG_MAXLIST entries (and a trailing comma) are fine. */
  reset(NULL);
  LOAD("SHMSHIM_PORTS_ALLOW=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,");
  assert_int_equal(shm_cfg.n_ports_allow, 16);
  assert_true(shm_config_port_allowed(16));
  assert_false(shm_config_port_allowed(17));
  /* Invalid lists are dropped as a whole: back to "all ports". */
  static const char *const bad[] = {"80-70", "abc", "70000", "80,,81", "80-", "-80", "80 ", "80;81",
                                    "1-2-3", "65536", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    reset(NULL);
    char buf[128];
    snprintf(buf, sizeof buf, "SHMSHIM_PORTS_ALLOW=%s", bad[i]);
    const char *e[] = {buf, NULL};
    env = e;
    shm_config_load(lookup);
    if (shm_cfg.n_ports_allow != 0) fail_msg("invalid port list \"%s\" was accepted", bad[i]);
    assert_true(shm_config_port_allowed(4242));
  }
}

#define P(s) s, (int)(sizeof s - 1) /* a sun_path literal and its length */

static void test_paths(void **state) {
  (void)state;
  LOAD("SHMSHIM_PATHS_ALLOW=/run/app/,@myabs");
  assert_int_equal(shm_cfg.n_paths_allow, 2);
  assert_string_equal(shm_cfg.paths_allow[0], "/run/app/");
  assert_string_equal(shm_cfg.paths_allow[1], "@myabs");
  assert_true(shm_config_path_allowed(P("/run/app/db.sock")));
  assert_true(shm_config_path_allowed(P("/run/app/db.sock\0"))); /* length incl. the NUL */
  assert_false(shm_config_path_allowed(P("/run/other.sock")));
  assert_false(shm_config_path_allowed(P("/run/app")));          /* shorter than the prefix */
  assert_true(shm_config_path_allowed(P("\0myabs")));             /* abstract, exact */
  assert_true(shm_config_path_allowed(P("\0myabs.42")));
  assert_false(shm_config_path_allowed(P("\0myab")));
  assert_false(shm_config_path_allowed(P("\0other")));
  assert_false(shm_config_path_allowed(P("\0/run/app/db.sock"))); /* a path prefix never matches an abstract name */
  assert_false(shm_config_path_allowed(P("\0run/app/db.sock")));  /* not even minus its first byte */
  /* Only the first len bytes count, even when the buffer goes on. */
  assert_false(shm_config_path_allowed("\0myabs", 5));             /* abstract name "myab" */
  assert_false(shm_config_path_allowed("/run/app/db.sock", 8));     /* "/run/app" */
  assert_true(shm_config_path_allowed("/run/app/db.sock", 9));
  /* Deny wins, '@' works there too. */
  reset(NULL);
  LOAD("SHMSHIM_PATHS_ALLOW=/run/", "SHMSHIM_PATHS_DENY=/run/secret,@bad");
  assert_int_equal(shm_cfg.n_paths_deny, 2);
  assert_true(shm_config_path_allowed(P("/run/ok.sock")));
  assert_false(shm_config_path_allowed(P("/run/secret.sock")));
  assert_false(shm_config_path_allowed(P("\0bad-thing")));
  assert_false(shm_config_path_allowed(P("\0good"))); /* not in the allow list */
  reset(NULL);
  LOAD("SHMSHIM_PATHS_DENY=@bad,/tmp/");
  assert_true(shm_config_path_allowed(P("\0good")));
  assert_false(shm_config_path_allowed(P("\0badger")));
  assert_true(shm_config_path_allowed(P("/var/run/x")));
  assert_false(shm_config_path_allowed(P("/tmp/x")));
  assert_true(shm_config_path_allowed(P("\0tmp/x"))); /* "/tmp/" does not deny an abstract name */
  assert_true(shm_config_path_allowed("\0bad", 3));   /* abstract "ba" is shorter than "@bad" */
  /* '@' alone matches every abstract name and no file-system path. */
  reset(NULL);
  LOAD("SHMSHIM_PATHS_ALLOW=@");
  assert_true(shm_config_path_allowed(P("\0anything")));
  assert_false(shm_config_path_allowed(P("/run/x")));
  /* Invalid lists are dropped. */
  char longp[160]; /* a 108-character prefix cannot match any sun_path (108 bytes incl. NUL) */
  memset(longp, 'a', sizeof longp);
  memcpy(longp, "SHMSHIM_PATHS_ALLOW=/", 21);
  longp[20 + 108] = '\0';
  static const char *const bad[] = {"SHMSHIM_PATHS_ALLOW=/a,,/b", "SHMSHIM_PATHS_ALLOW=,/a",
                                    "SHMSHIM_PATHS_ALLOW=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", NULL};
  for (size_t i = 0; i < 4; i++) {
    reset(NULL);
    const char *e[] = {bad[i] ? bad[i] : longp, NULL};
    env = e;
    shm_config_load(lookup);
    if (shm_cfg.n_paths_allow != 0) fail_msg("invalid path list %zu was accepted", i);
    assert_true(shm_config_path_allowed(P("/anything")));
  }
  reset(NULL);
  longp[20 + 107] = '\0'; /* 107 characters still fit */
  const char *e107[] = {longp, NULL};
  env = e107;
  shm_config_load(lookup);
  assert_int_equal(shm_cfg.n_paths_allow, 1);
  assert_int_equal(strlen(shm_cfg.paths_allow[0]), 107);
  assert_true(shm_config_path_allowed(longp + 20, 107));
  reset(NULL);
  LOAD("SHMSHIM_PATHS_ALLOW=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p");
  assert_int_equal(shm_cfg.n_paths_allow, 16);
  assert_true(shm_config_path_allowed(P("pqr")));
  assert_false(shm_config_path_allowed(P("qrs")));
}

static void test_log(void **state) {
  (void)state;
  static const struct {
    const char *v;
    int level;
  } lv[] = {{"debug", SHM_LOG_DEBUG}, {"info", SHM_LOG_INFO}, {"warn", SHM_LOG_WARN}, {"off", SHM_LOG_OFF}};
  for (size_t i = 0; i < sizeof lv / sizeof lv[0]; i++) {
    reset(NULL);
    shm_cfg.log_level = SHM_LOG_INFO; /* so that "off" visibly changes it */
    char buf[64];
    snprintf(buf, sizeof buf, "SHMSHIM_LOG=%s", lv[i].v);
    const char *e[] = {buf, NULL};
    env = e;
    shm_config_load(lookup);
    assert_int_equal(shm_cfg.log_level, lv[i].level);
  }
  /* An unknown level turns warnings on so that the complaint itself is seen. */
  reset(NULL);
  strcpy(shm_cfg.log_file, "/dev/null"); /* keep the complaint out of the test output */
  LOAD("SHMSHIM_LOG=verbose");
  assert_int_equal(shm_cfg.log_level, SHM_LOG_WARN);
  reset(NULL);
  LOAD("SHMSHIM_LOG_FILE=/var/log/shmshim.log");
  assert_string_equal(shm_cfg.log_file, "/var/log/shmshim.log");
  assert_int_equal(shm_cfg.log_level, SHM_LOG_OFF);
  reset(NULL);
  char longf[300 + 17];
  memcpy(longf, "SHMSHIM_LOG_FILE=", 17);
  memset(longf + 17, 'x', 299);
  longf[17 + 299] = '\0';
  const char *e[] = {longf, NULL};
  env = e;
  shm_config_load(lookup);
  assert_string_equal(shm_cfg.log_file, ""); /* too long: ignored, not truncated */
  /* Relative: made absolute at load, so that a later chdir() does not move it. */
  reset(NULL);
  char cwd[256], want[300];
  assert_non_null(getcwd(cwd, sizeof cwd));
  snprintf(want, sizeof want, "%s%srel.log", cwd, cwd[1] ? "/" : "");
  LOAD("SHMSHIM_LOG_FILE=rel.log");
  assert_string_equal(shm_cfg.log_file, want);
}

static int tracked;
static void track_none(int fd, struct shm_conn *c) {
  (void)fd;
  (void)c;
  tracked++;
}

/* SHMSHIM_INHERIT leaves the environment in every case: a setuid/setgid image
 * (AT_SECURE) neither uses it nor passes it on to its children. */
static void test_inherit_env(void **state) {
  (void)state;
  for (int secure = 0; secure < 2; secure++) {
    tracked = 0;
    assert_int_equal(setenv(SHM_INHERIT_VAR, secure ? "C,0,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0;" : "garbage", 1), 0);
    shm_inherit_take_env(secure, track_none);
    assert_null(getenv(SHM_INHERIT_VAR));
    assert_int_equal(tracked, 0);
  }
}

static void test_process_environment(void **state) {
  (void)state;
  /* NULL lookup reads the real environment. */
  assert_int_equal(setenv("SHMSHIM_RING_SIZE", "1M", 1), 0);
  assert_int_equal(setenv("SHMSHIM_PORTS_DENY", "9000", 1), 0);
  shm_config_load(NULL);
  unsetenv("SHMSHIM_RING_SIZE");
  unsetenv("SHMSHIM_PORTS_DENY");
  assert_int_equal(shm_cfg.ring_size, 1048576);
  assert_false(shm_config_port_allowed(9000));
  assert_true(shm_config_port_allowed(9001));
}

int main(void) {
  initial = shm_cfg; /* before anything touched it */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_defaults, reset),
      cmocka_unit_test_setup(test_ring_size, reset),
      cmocka_unit_test_setup(test_spin_and_bools, reset),
      cmocka_unit_test_setup(test_ports, reset),
      cmocka_unit_test_setup(test_paths, reset),
      cmocka_unit_test_setup(test_log, reset),
      cmocka_unit_test_setup(test_process_environment, reset),
      cmocka_unit_test_setup(test_inherit_env, reset),
  };
  return cmocka_run_group_tests(tests, NULL, reset);
}

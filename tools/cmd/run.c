/* shmshim run: preload the library and exec the program (no wrapper process stays).
 * Options become SHMSHIM_* variables, checked with the library's own parser
 * (shm_config_check) so that a value the library would ignore is refused here. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"

const char *cmd_find_library(char *buf, size_t n, char *tried, size_t tn) {
  char self[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  if (tried && tn) tried[0] = '\0';
  if (k <= 0) {
    if (tried && tn) snprintf(tried, tn, "(cannot read /proc/self/exe: %s)", strerror(errno));
    return NULL;
  }
  self[k] = '\0';
  const char *dir = dirname(self);
  /* Installed layout first, then the build tree (build/tools/ next to build/). */
  static const char *const rel[] = {"../lib/libshmshim.so", "../libshmshim.so"};
  size_t used = 0;
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    char cand[PATH_MAX + 32];
    snprintf(cand, sizeof cand, "%s/%s", dir, rel[i]);
    if (access(cand, R_OK) == 0 && realpath(cand, buf) && strlen(buf) < n) return buf;
    if (tried && used < tn) used += (size_t)snprintf(tried + used, tn - used, "%s%s", i ? ", " : "", cand);
  }
  return NULL;
}

/* The file execvp would run for prog (a name without '/' is looked up in PATH). */
static int resolve(const char *prog, char *out, size_t n) {
  if (strchr(prog, '/')) return snprintf(out, n, "%s", prog) < (int)n ? 0 : -1;
  const char *path = getenv("PATH");
  if (!path) path = "/bin:/usr/bin";
  while (*path) {
    size_t len = strcspn(path, ":");
    if (snprintf(out, n, "%.*s%s%s", (int)len, path, len ? "/" : "", prog) < (int)n && access(out, X_OK) == 0)
      return 0;
    path += len + (path[len] == ':');
  }
  return -1;
}

/* 1 if path is an ELF executable without a program interpreter (static or
 * static-pie): the dynamic loader never runs, so LD_PRELOAD does nothing. */
static int elf_static(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  unsigned char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n < (ssize_t)sizeof(Elf32_Ehdr) || memcmp(buf, ELFMAG, SELFMAG)) return 0;
  size_t off, num, ent;
  if (buf[EI_CLASS] == ELFCLASS64 && n >= (ssize_t)sizeof(Elf64_Ehdr)) {
    Elf64_Ehdr h;
    memcpy(&h, buf, sizeof h);
    if (h.e_type != ET_EXEC && h.e_type != ET_DYN) return 0;
    off = h.e_phoff, num = h.e_phnum, ent = h.e_phentsize;
    if (ent < sizeof(Elf64_Phdr)) return 0;
  } else if (buf[EI_CLASS] == ELFCLASS32) {
    Elf32_Ehdr h;
    memcpy(&h, buf, sizeof h);
    if (h.e_type != ET_EXEC && h.e_type != ET_DYN) return 0;
    off = h.e_phoff, num = h.e_phnum, ent = h.e_phentsize;
    if (ent < sizeof(Elf32_Phdr)) return 0;
  } else {
    return 0;
  }
  /* Program headers beyond the first page: do not guess. */
  if (off > (size_t)n || num > ((size_t)n - off) / ent) return 0;
  for (size_t i = 0; i < num; i++) {
    uint32_t type;
    memcpy(&type, buf + off + i * ent, sizeof type); /* p_type comes first in both classes */
    if (type == PT_INTERP) return 0;
  }
  /* A shared library run as a program has no interpreter either, but no entry point
   * meant for it: only executables get here (e_type checked above). */
  return 1;
}

/* What would make the preload silently useless for this program. */
static void warn_unshimmable(const char *prog) {
  char path[PATH_MAX];
  struct stat st;
  if (resolve(prog, path, sizeof path) < 0 || stat(path, &st) < 0) return; /* exec will say */
  if (elf_static(path))
    cmd_err("run", "warning: %s is statically linked: LD_PRELOAD cannot act on it, nothing will be upgraded", path);
  if (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) || ((st.st_mode & S_ISGID) && st.st_gid != getegid()))
    cmd_err("run", "warning: %s is set-user/group-ID: the loader ignores LD_PRELOAD for it", path);
}

static void run_usage(FILE *f) {
  fputs("usage: shmshim run [options] [--] program [args...]\n"
        "  --tcp-only          upgrade loopback TCP only        (SHMSHIM_UNIX=0)\n"
        "  --unix-only         upgrade AF_UNIX only             (SHMSHIM_TCP=0)\n"
        "  --ports LIST        only these server ports, e.g. 6379,8000-8100 (SHMSHIM_PORTS_ALLOW)\n"
        "  --ring-size SIZE    bytes per direction, power of two 4K..64M, e.g. 1M (SHMSHIM_RING_SIZE)\n"
        "  --spin-us N         spin at most N microseconds before sleeping (SHMSHIM_SPIN_US)\n"
        "  --log LEVEL         warn, info or debug (SHMSHIM_LOG)\n"
        "  --log-file FILE     log there instead of stderr (SHMSHIM_LOG_FILE)\n"
        "  --stats             print each process's summary on stderr at exit (SHMSHIM_STATS=2)\n"
        "  --no-stats          publish no counters for `shmshim stat` (SHMSHIM_STATS=0)\n"
        "  --library PATH      preload this library instead of the one next to shmshim\n",
        f);
}

struct opt_var {
  const char *opt;
  const char *var; /* without SHMSHIM_ */
  const char *rule;
};

int cmd_run(int argc, char **argv) {
  enum { O_TCP = 256, O_UNIX, O_PORTS, O_RING, O_SPIN, O_LOG, O_LOGFILE, O_STATS, O_NOSTATS, O_LIB };
  static const struct option opts[] = {
      {"tcp-only", no_argument, 0, O_TCP},       {"unix-only", no_argument, 0, O_UNIX},
      {"ports", required_argument, 0, O_PORTS},  {"ring-size", required_argument, 0, O_RING},
      {"spin-us", required_argument, 0, O_SPIN}, {"log", required_argument, 0, O_LOG},
      {"log-file", required_argument, 0, O_LOGFILE}, {"stats", no_argument, 0, O_STATS},
      {"no-stats", no_argument, 0, O_NOSTATS},   {"library", required_argument, 0, O_LIB},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  static const struct opt_var vars[] = {
      [O_PORTS - O_TCP] = {"--ports", "PORTS_ALLOW", "a comma list of ports or ranges, e.g. 6379,8000-8100"},
      [O_RING - O_TCP] = {"--ring-size", "RING_SIZE", "a power of two from 4K to 64M, e.g. 256K or 1M"},
      [O_SPIN - O_TCP] = {"--spin-us", "SPIN_US", "microseconds from 0 to 1000000"},
      [O_LOG - O_TCP] = {"--log", "LOG", "one of warn, info, debug, off"},
      [O_LOGFILE - O_TCP] = {"--log-file", "LOG_FILE", "a path shorter than 256 bytes"},
  };
  int tcp_only = 0, unix_only = 0;
  const char *lib = NULL;
  opterr = 0;
  optind = 1;
  int c;
  /* "+": options end at the program's name; what follows is the program's. */
  while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
    switch (c) {
      case 'h':
        run_usage(stdout);
        return 0;
      case O_TCP: tcp_only = 1; break;
      case O_UNIX: unix_only = 1; break;
      case O_STATS: setenv("SHMSHIM_STATS", "2", 1); break;
      case O_NOSTATS: setenv("SHMSHIM_STATS", "0", 1); break;
      case O_LIB: lib = optarg; break;
      case O_PORTS: case O_RING: case O_SPIN: case O_LOG: case O_LOGFILE: {
        const struct opt_var *v = &vars[c - O_TCP];
        if (!*optarg || shm_config_check(v->var, optarg) != 0) {
          cmd_err("run", "invalid value '%s' for %s: expected %s", optarg, v->opt, v->rule);
          return CMD_USAGE;
        }
        char name[64];
        snprintf(name, sizeof name, "SHMSHIM_%s", v->var);
        setenv(name, optarg, 1);
        break;
      }
      case ':':
        cmd_err("run", "option %s needs a value (see shmshim run --help)", argv[optind - 1]);
        return CMD_USAGE;
      default:
        cmd_err("run", "unknown option '%s' (see shmshim run --help)", argv[optind - 1]);
        return CMD_USAGE;
    }
  }
  if (tcp_only && unix_only) {
    cmd_err("run", "--tcp-only and --unix-only exclude each other");
    return CMD_USAGE;
  }
  if (optind >= argc) {
    cmd_err("run", "no program given (usage: shmshim run [options] [--] program [args...])");
    return CMD_USAGE;
  }
  if (tcp_only) setenv("SHMSHIM_UNIX", "0", 1);
  if (unix_only) setenv("SHMSHIM_TCP", "0", 1);

  char path[PATH_MAX], tried[2 * PATH_MAX];
  if (lib) {
    if (access(lib, R_OK) != 0 || !realpath(lib, path)) {
      cmd_err("run", "library %s: %s", lib, strerror(errno));
      return 1;
    }
    lib = path;
  } else if (!(lib = cmd_find_library(path, sizeof path, tried, sizeof tried))) {
    cmd_err("run", "libshmshim.so not found (looked for %s); reinstall, or pass --library PATH", tried);
    return 1;
  }
  if (strpbrk(lib, " :")) {
    cmd_err("run", "library path '%s' contains a space or a colon, which LD_PRELOAD cannot express", lib);
    return 1;
  }
  /* Appended, so that whatever must come first (a sanitizer's runtime) still does. */
  const char *old = getenv("LD_PRELOAD");
  int present = 0;
  if (old) {
    char *copy = strdup(old), *save = NULL;
    for (char *t = copy ? strtok_r(copy, " :", &save) : NULL; t; t = strtok_r(NULL, " :", &save))
      if (!strcmp(t, lib)) present = 1;
    free(copy);
  }
  if (!present) {
    size_t len = (old ? strlen(old) + 1 : 0) + strlen(lib) + 1;
    char *v = malloc(len);
    if (!v) return 1;
    snprintf(v, len, "%s%s%s", old && *old ? old : "", old && *old ? ":" : "", lib);
    setenv("LD_PRELOAD", v, 1);
    free(v);
  }
  warn_unshimmable(argv[optind]);
  execvp(argv[optind], argv + optind);
  int e = errno;
  cmd_err("run", "cannot run '%s': %s", argv[optind], strerror(e));
  return e == ENOENT ? 127 : 126;
}

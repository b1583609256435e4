/* shmshim: run programs under the library, see what it does, check the machine.
 *
 *   shmshim run [options] [--] program [args...]
 *   shmshim stat [--json] [--watch] [PID...]
 *   shmshim doctor
 *
 * Subcommands live in tools/cmd/; the manual is tools/shmshim.1. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"

#ifndef SHMSHIM_VERSION
#define SHMSHIM_VERSION "0.1"
#endif

void cmd_err(const char *sub, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "shmshim %s: ", sub);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void usage(FILE *f) {
  fputs("usage: shmshim run [options] [--] program [args...]\n"
        "       shmshim stat [--json] [--watch [--interval S] [--count N]] [PID...]\n"
        "       shmshim doctor\n"
        "\n"
        "  run     start a program with the shim preloaded (options: shmshim run --help)\n"
        "  stat    show shimmed processes and their connections, upgraded or plain and why\n"
        "  doctor  check what this machine and environment let the shim accelerate\n"
        "\n"
        "See shmshim(1).\n",
        f);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CMD_USAGE;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "run")) return cmd_run(argc - 1, argv + 1);
  if (!strcmp(sub, "stat")) return cmd_stat(argc - 1, argv + 1);
  if (!strcmp(sub, "doctor")) return cmd_doctor(argc - 1, argv + 1);
  if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(sub, "--version")) {
    printf("shmshim %s\n", SHMSHIM_VERSION);
    return 0;
  }
  fprintf(stderr, "shmshim: unknown command '%s'\n", sub);
  usage(stderr);
  return CMD_USAGE;
}

/* The shmshim command's subcommands (tools/shmshim.c dispatches to them).
 * Exit statuses: 0 success, 1 failure (the thing asked for is not so), 2 bad
 * usage; `run` returns 126/127 when the program cannot be executed, like env(1). */
#ifndef SHMSHIM_CMD_H
#define SHMSHIM_CMD_H

#include <stddef.h>

#define CMD_USAGE 2

int cmd_run(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

/* The library to preload, found next to this executable: PREFIX/lib/libshmshim.so
 * when installed (PREFIX/bin/shmshim), else the build tree's build/libshmshim.so
 * (build/tools/shmshim). Absolute path in buf, or NULL with the places tried. */
const char *cmd_find_library(char *buf, size_t n, char *tried, size_t tn);

/* Prints "shmshim <sub>: ..." on stderr. */
void cmd_err(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

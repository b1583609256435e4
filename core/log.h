/* One logging macro: format-checked, off by default, written with a raw write(2)
 * to fd 2 (never when fd 2 is a socket) or to SHMSHIM_LOG_FILE (opened once, at the
 * first line or before a setuid, O_NOFOLLOW, kept on a hidden descriptor), never through stdio and never through
 * our own interposed write(). Each line carries pid, program name and function. */
#ifndef SHMSHIM_LOG_H
#define SHMSHIM_LOG_H

#include <stddef.h>

#include "config.h"

void shm_log_write(int level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes one finished line where log lines go (the exit summary uses it). */
void shm_log_raw(const char *buf, size_t n);
/* dup2 onto the log's hidden descriptor moved it from `from` to `to`. */
void shm_log_renumber(int from, int to);
/* Opens SHMSHIM_LOG_FILE now, if lines go there and it is not open yet: called
 * before the process gives up the user it runs as (nginx's and php-fpm's workers),
 * who may be the only one allowed to open it. A file it creates is given to
 * `owner`, the user the process becomes. Keeps errno. */
void shm_log_open_now(long owner);

#define SHM_LOG(lvl, ...)                                                    \
  do {                                                                       \
    if (__builtin_expect(shm_cfg.log_level >= SHM_LOG_##lvl, 0))             \
      shm_log_write(SHM_LOG_##lvl, __func__, __VA_ARGS__);                   \
  } while (0)

#endif

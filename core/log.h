/* One logging macro: format-checked, off by default, written with a raw write(2)
 * to fd 2 (or SHMSHIM_LOG_FILE), never through stdio and never through our own
 * interposed write(). Each line carries pid, program name and function. */
#ifndef SHMSHIM_LOG_H
#define SHMSHIM_LOG_H

#include "config.h"

void shm_log_write(int level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SHM_LOG(lvl, ...)                                                    \
  do {                                                                       \
    if (__builtin_expect(shm_cfg.log_level >= SHM_LOG_##lvl, 0))             \
      shm_log_write(SHM_LOG_##lvl, __func__, __VA_ARGS__);                   \
  } while (0)

#endif

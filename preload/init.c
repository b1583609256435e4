/* Library start-up and exit. The constructor binds libc's symbols and reads the
 * environment (nginx wipes its workers' environment later) and creates nothing:
 * no file, no thread, no descriptor, no output, until a socket is used. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "inherit.h"

#include "log.h"
#include "preload.h"

static void track_inherited(int fd, struct shm_conn *c) { pl_track(fd, c); }

/* A program a connection was handed to on its standard input or output (an
 * inetd-style server that read a request line, then exec'd or spawned sed)
 * reads it through stdio, whose reads are libc-internal calls the library never
 * sees: on an upgraded connection they would return kick bytes. Its standard
 * stream is replaced, before main(), by one that reads and writes through the
 * library (the same buffering as libc's for a socket; fileno() unchanged). */
static void adopt_std_streams(void) {
  for (int fd = 0; fd <= 2; fd++) {
    struct shm_conn *c = shm_fd_get(fd, SHM_FD_CONN);
    if (c && shm_conn_state(c) == SHM_CONN_UPGRADED) pl_std_adopt(fd);
  }
}

__attribute__((constructor)) static void shm_init(void) {
  shm_real_bind();
  shm_config_load(NULL);
  pl_pid = getpid();
  pl_process_init(); /* fork handlers (preload/process.c) */
  /* Connections the previous image carried over exec (core/inherit.h); never in
   * a setuid/setgid process, whose environment belongs to another user. */
  shm_inherit_take_env(getauxval(AT_SECURE) != 0, track_inherited);
  adopt_std_streams();
}

__attribute__((destructor)) static void shm_fini(void) {
  shm_stat_exit_summary(); /* SHMSHIM_STATS=2 */
  if (shm_stats.upgraded_client || shm_stats.upgraded_server || shm_stats.plain_client ||
      shm_stats.plain_server || shm_stats.offers_rejected)
    SHM_LOG(INFO,
            "stats upgraded_client=%lu upgraded_server=%lu plain_client=%lu plain_server=%lu "
            "offers_rejected=%lu",
            shm_stats.upgraded_client, shm_stats.upgraded_server, shm_stats.plain_client,
            shm_stats.plain_server, shm_stats.offers_rejected);
}

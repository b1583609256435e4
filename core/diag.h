/* sock_diag look-ups: who owns the socket at the other end of a connection.
 * The negotiation names endpoints after the connecting socket's inode and checks
 * credentials against the socket's owner; both facts come from here. */
#ifndef SHMSHIM_DIAG_H
#define SHMSHIM_DIAG_H

#include <stdint.h>
#include <sys/socket.h>

/* The TCP socket whose local address is `src` and remote address is `dst` (IPv4,
 * IPv6 or v4-mapped). Fills its inode and owner uid (inode 0: the socket has no
 * descriptor any more, it is closing or in time-wait). 0, or -1 with errno
 * (ENOENT: no such connection, even if a listener has the local address). */
int shm_diag_tcp(const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
                 uint32_t *ino, uint32_t *uid);

/* The unix socket connected to our socket with inode `ino`: its inode. */
int shm_diag_unix_peer_ino(uint32_t ino, uint32_t *peer_ino);

/* The owner of unix socket `ino` (the owner of its socket inode: whoever created
 * it, or for an accepted socket whoever called accept(), as sock_diag reports for
 * TCP; not the SO_PEERCRED of the listener, which is the process that called
 * listen() and differs when a server accepts in privilege-dropped workers, as
 * nginx does). Each of these two look-ups walks every unix socket in the kernel. */
int shm_diag_unix_owner(uint32_t ino, uint32_t *uid);

#endif

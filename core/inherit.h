/* Upgraded connections across exec.
 *
 * A descriptor without close-on-exec survives execve, but the shim's state (the
 * mapping, the private ring indices, the switch-over counts) does not. When the new
 * image loads the library too, the exec wrapper passes that state in one
 * environment variable, SHMSHIM_INHERIT, and keeps the segment's memfd open across
 * the exec; the new image's constructor maps it again and takes the connection
 * over where the old image left it. Format (all numbers decimal):
 *   entry;entry;...   entry = C,fd,segfd,role,family,ino,fields...   (a connection)
 *                           | D,fd,fd0                                (fd is a dup of fd0)
 * Everything in it is checked against the kernel's view (each field's range; the
 * socket's inode, family and type; a dup's inode; the memfd's seals and size; the
 * ring indices) and the segment must name the socket it was carried with
 * (exec_ino, written by the old image). Ignored in setuid/setgid processes, and
 * removed from their environment. */
#ifndef SHMSHIM_INHERIT_H
#define SHMSHIM_INHERIT_H

#include <stddef.h>

#include "conn.h"

#define SHM_INHERIT_VAR "SHMSHIM_INHERIT"

/* Appends c's entry for fd (as_fd in the new image: a spawn's file actions may
 * move it) to buf (NUL-terminated). -1 when c cannot be carried
 * (no memfd kept, descriptors or a marker half-read, or buf too small). */
int shm_inherit_encode(int fd, int as_fd, struct shm_conn *c, char *buf, size_t cap);
int shm_inherit_encode_dup(int fd, int fd0, char *buf, size_t cap);

/* Parses the variable's value and re-creates each connection; track(fd, c) takes
 * each one (dups come with one more reference). Entries that fail a check are
 * skipped (logged): their descriptors stay as they are. */
void shm_inherit_load(const char *value, void (*track)(int fd, struct shm_conn *c));

/* The constructor's part: loads the variable from the environment unless secure
 * (AT_SECURE) or disabled, and removes it from the environment in every case. */
void shm_inherit_take_env(int secure, void (*track)(int fd, struct shm_conn *c));

#endif

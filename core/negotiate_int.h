/* Inside core/negotiate*.c only: what the negotiation's files share (the
 * helpers, eligibility, uid rules and the short-lived policy in negotiate.c; the
 * client's side in negotiate_client.c; the server's in negotiate_server.c). */
#ifndef SHMSHIM_NEGOTIATE_INT_H
#define SHMSHIM_NEGOTIATE_INT_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "conn.h"
#include "segment.h"

/* negotiate.c */
socklen_t endpoint_name(uint32_t ino, struct sockaddr_un *sa);
int is_loopback(const struct sockaddr *a);
int server_skips(void);
void note_outcome(int wasted);
uint64_t dest_key(const struct sockaddr *a, socklen_t len);
int client_skips(uint64_t key);
void client_offered(struct shm_conn *c, int offered);
int eligible(int fd, const struct sockaddr *a, socklen_t len);
int policy_set(void);
int same_user(uint32_t a, uint32_t b);
int proc_is_ours(void);
int sock_ino(int fd, uint32_t *ino);
void keep_segfd_if_inheritable(int fd, struct shm_seg *seg);
void kicks_unbuffered(int fd, struct shm_conn *c);
struct shm_conn *conn_new(int role, int family);

/* negotiate_client.c */
void drop_endpoint(struct shm_conn *c);

/* negotiate_server.c */
int peer_cred_uid(int fd, uint32_t *uid);
int proof_fd(int fd);

#endif

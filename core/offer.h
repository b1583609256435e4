/* The offer message (server -> client, over the endpoint) and its pure checks.
 *
 * Kept apart from the socket code so that the parsing of peer-controlled bytes can
 * be tested and fuzzed on its own (tests/fuzz/). The message is one fixed-size
 * record with two descriptors attached: the segment, and the server's end of the
 * connection, opened O_PATH, as proof (checked by the caller, which needs fstat).
 * The record also names the descriptor number under which the sending process
 * holds its end: the client peeks at the record (which receives no descriptor)
 * and looks at that number in the sender's /proc/PID/fd before it takes the
 * record and its descriptors in (docs/security.md, section 3). */
#ifndef SHMSHIM_OFFER_H
#define SHMSHIM_OFFER_H

#include <stddef.h>
#include <stdint.h>

#define SHM_OFFER_MAGIC 0x524546464f4d4853ull /* "SHMOFFER" */

struct shm_offer {
  uint64_t magic;
  uint32_t version;
  uint32_t ring_size;
  uint64_t client_ino; /* the connection this offer is for */
  uint64_t server_ino;
  int32_t server_fd; /* the sender's descriptor of its end (a claim, checked) */
  uint32_t reserved; /* zero */
};

/* The record's own fields, as a peek (MSG_PEEK, no descriptor received) or a
 * receive returned n bytes of it in buf: NULL when its size, header and
 * connection are right, else why not. */
const char *shm_offer_head_check(const void *buf, long n, uint64_t client_ino);

/* Checks what recvmsg returned for an offer: n bytes in buf, the message flags,
 * and how many descriptors came with it. NULL when well-formed and addressed to
 * the connection whose socket has inode client_ino, else why not (for the log).
 * Reads at most n bytes of buf (n may be anything recvmsg returned, even < 0);
 * so does shm_offer_head_check. */
const char *shm_offer_check(const void *buf, long n, int msg_flags, int nfds, uint64_t client_ino);

/* Builds the offer for the connection whose client socket has inode client_ino
 * and sends it on endpoint connection ep, with the segment and the proof
 * descriptors; server_fd is the sender's descriptor of the server's end (the one
 * place the message is made, shared by the library and the tests that play a
 * hostile peer). Returns what sendmsg returned (-1 with errno). */
long shm_offer_send(int ep, uint32_t ring_size, uint64_t client_ino, uint64_t server_ino, int server_fd,
                    int segfd, int proof, int flags);

/* The client's answer (client -> server, over the same endpoint connection, once it
 * has verified the offer and before it attaches): one fixed-size record with one
 * descriptor, the client's end of the connection opened O_PATH through its own
 * /proc/self/fd, the mirror of the offer's proof. The server honours nothing the
 * segment says (attached, switched, c2s_plain, gone) until it has checked it. */
#define SHM_PROOF_MAGIC 0x464f4f5250484d53ull /* "SMHPROOF" */

struct shm_proof {
  uint64_t magic;
  uint64_t client_ino; /* the connection, as in the offer */
  uint64_t server_ino;
};

/* NULL when what recvmsg returned is a well-formed answer for this connection
 * (one descriptor, nothing truncated, both inodes right), else why not. */
const char *shm_proof_check(const void *buf, long n, int msg_flags, int nfds, uint64_t client_ino,
                            uint64_t server_ino);

/* Builds the answer and sends it with its one descriptor. Returns what sendmsg
 * returned. */
long shm_proof_send(int ep, uint64_t client_ino, uint64_t server_ino, int proof, int flags);

/* Receives one record (an offer or an answer) of at most len bytes into buf, with
 * the descriptors that came with it: the first max of them go to fds[] (the others
 * are closed at once), *nfds counts them all, *msg_flags has recvmsg's flags. Room
 * is made for more descriptors than any record carries, so that a sender's extras
 * are counted (and the record refused) rather than cut off unseen. Returns what
 * recvmsg returned (-1 with errno, and then *nfds is 0). */
long shm_msg_recv(int ep, void *buf, size_t len, int flags, int *fds, int max, int *nfds, int *msg_flags);

#endif

#!/bin/bash
# Concurrency as the kernel does it (tests/reliability/conc.c; the issue "Exactly
# the kernel's behaviour, or plain", items 20, 22, 23; docs/design.md "Threads,
# signals, fork"). Each scenario runs over TCP and AF_UNIX, with the other end in
# a thread and in another process: first without the library (the assertions are
# the kernel's behaviour, so they must hold there), then with it on both ends,
# where every connection the scenario counts must also be upgraded at both ends.
#   forkchild   children made by _Fork(), clone() without CLONE_VM and fork() exit
#               through exit(): the parent's connection keeps working
#   forkrace    two threads fork (children exit) while a third accepts and upgrades
#               connections and a fourth does round trips on long-lived ones
#   sarestart / norestart  a blocking write into a full connection, interrupted by
#               a signal: restarted with SA_RESTART, EINTR without
#   rcvtimeo    SO_RCVTIMEO ends a blocked recv on time while wake-ups for room
#               (kicks) keep arriving
#   cancel_OP   pthread_cancel of a thread blocked in read, recv, write, send, poll,
#               select, epoll_wait: it is cancelled, and the connection works on
#   pendcancel  pthread_cancel of a thread blocked in read of a client connection still
#               waiting for its server's offer: the connection works afterwards and,
#               closed, is gone (descriptors and shared mappings as before it; its
#               segment stayed mapped before, 4 cells of 4)
#   sigwrite    a signal handler writes to the socket its thread is blocked writing to
#   sigreenter  timer signals whose handler writes to the socket its thread keeps writing to
#   sigpoll     a handler polls a tracked socket while its thread is inside malloc
#   sigepoll    round trips through epoll_wait while timer signals every 20 us run a
#               handler that polls the same connection (SHMSHIM_SPIN_US=0: each answer
#               kicked): the handler's poll, taking kicks, heats the connection's epoll
#               members, which takes the set's lock its thread may hold (it waited for
#               itself); and it took the kicks the epoll_wait was woken for
#   sigclose    the same round trips, while the handler closes one of 40 other members
#               of the set at every 25th signal: the close needs the set's lock its thread
#               may hold (it waited for itself; every shimmed run hung); the thread
#               closes it once it lets go (core/locks.h)
#   scmpoll     (AF_UNIX only) 2000 messages of one descriptor each to a thread in
#               blocking recvmsg while two threads poll/ppoll/select/epoll_wait/
#               FIONREAD the socket: each descriptor once, with its message's first
#               byte (the issue's D15: markers parsed outside the read lock)
#   twopoll     a byte to two threads asleep in poll(POLLIN) on one connection, 300
#               rounds: both must see it, as with the kernel
#   twoepoll    the same with two threads each in epoll_wait on an edge-triggered set of
#               its own: the set that collected first took the kick, and the kernel,
#               looking at the socket again for the other, found it empty
#   tworead     two bytes in one write to two threads blocked in read(1 byte) on one
#               connection, 300 rounds: each gets one, as with the kernel
#   oneshotpoll a byte per round to a thread in poll(POLLIN) while a listener sleeps
#               in epoll_wait on the connection's fired (disabled) EPOLLONESHOT
#               member, 300 rounds (MariaDB's thread pool): the listener drained
#               the kick and the poll slept to its timeout (5 of 12 cells before)
#   sigoffer    a handler polls the connection its thread serves, every 20 µs, while
#               the thread makes the offer and sleeps in reads (200 connections of
#               10 round trips): it took the lock its own thread held and hung, 4 of 4
#   pollrace    a byte and its kick that come between a poller's look at the rings and
#               its drain of the kicks, while another thread sleeps in poll(POLLIN):
#               that one must see the byte, 20 rounds; the window is made by a test
#               preload loaded before the library (hook/drainhook.c), with
#               SHMSHIM_IDLE_MS=0 (the idle-memory timer would wake the sleeper after
#               100 ms and hide the lost kick): it slept to its 5 s timeout before,
#               4 cells of 4; needs two CPUs and SCHED_FIFO (root)
#   epollrace   the same with the first thread in epoll_wait (EPOLLIN|EPOLLOUT) instead
#               of poll: over TCP its drain took the poll's kick (4 cells of 4); over
#               AF_UNIX, where it leaves kicks unread, the poll took its kick for room
#               and the epoll_wait slept to its timeout (9 runs of 10, no hook needed)
#   pollsteal   a thread polls for input (timeout 200 ms) in a loop while another reads
#               the connection a byte at a time (20000 bytes, a few µs apart): no poll
#               may return 0 before its timeout, as the kernel's never does (one that
#               saw a byte the reader then took returned 0 at once)
#   epollsteal  the same with epoll_wait on a level-triggered set
#   fastburst   120 bursts of up to 4000 writes of 1 to 48 bytes, each answered by
#               a byte once the reader, slower, reading 1 to 24 bytes at a time, has
#               it all: the writer goes into fast mode (no fence after its
#               publishes; the exit summary must say it did, SHMSHIM_STATS=2) and the
#               reader goes to sleep (SHMSHIM_SPIN_US=0) in its pauses and at each
#               burst's end: every byte right, no read left asleep (SO_RCVTIMEO)
#   proofrace   3000 connections whose server reads with one thread while another
#               writes a byte at a time (and so checks the client's answer): every
#               byte right (a reader that did not wait for the check read the
#               client's switch-over kick as data: TCP cells failed 8 of 8)
# CONC=scenario... runs a subset; CONC_SKIP=scenario... leaves some out.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/rel/conc
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ALL="forkchild forkrace sarestart norestart rcvtimeo cancel_read cancel_recv cancel_write cancel_send cancel_poll cancel_select cancel_epoll_wait pendcancel sigwrite sigreenter sigpoll sigepoll sigclose scmpoll twopoll twoepoll tworead oneshotpoll pollrace epollrace pollsteal epollsteal proofrace sigoffer fastburst"
# pollrace's test preload goes right before the library (after ASan's runtime,
# which must come first when SHM_PRELOAD names it).
read -ra PRE_LIST <<<"$PRE"
HOOKED="${PRE_LIST[*]:0:${#PRE_LIST[@]}-1} $ROOT/$BUILD/tests/rel/drainhook.so ${PRE_LIST[-1]}"
pass=0; fail=0
for sc in ${CONC:-$ALL}; do
  case " ${CONC_SKIP:-} " in *" $sc "*) echo "conc: $sc not run (CONC_SKIP)"; continue ;; esac
  fams="tcp4 unix"
  [ $sc = scmpoll ] && fams=unix # descriptors pass over AF_UNIX only
  pre=$PRE extra=()
  case $sc in pollrace | epollrace) pre=$HOOKED extra=(SHMSHIM_IDLE_MS=0) ;; sigepoll | sigclose) extra=(SHMSHIM_SPIN_US=0) ;; fastburst) extra=(SHMSHIM_SPIN_US=0 SHMSHIM_STATS=2) ;; esac
  for fam in $fams; do
    for peer in threads procs; do
      for mode in plain shim; do
        rm -f "$TMP"/log
        if [ $mode = plain ]; then
          out=$(timeout 30 "$P" $sc $fam $peer "$TMP" 2>&1); rc=$?
        else
          out=$(env "LD_PRELOAD=$pre" "${extra[@]}" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$TMP/log" timeout 30 "$P" $sc $fam $peer "$TMP" 2>&1); rc=$?
        fi
        line=$(grep -E '^(ok|FAIL) ' <<<"$out" | head -1)
        why=""
        [ $rc = 0 ] || why="exit $rc${line:+: $line}"
        [ -n "$line" ] || why="$why no result line"
        if [ $mode = shim ] && [ -z "$why" ]; then
          want=$(sed -n 's/^conns //p' <<<"$out")
          srv=$(grep -c ' upgraded fd=[0-9]* role=server' "$TMP/log" 2>/dev/null)
          cli=$(grep -c ' upgraded fd=[0-9]* role=client' "$TMP/log" 2>/dev/null)
          [ "${srv:-0}" -ge "${want:-1}" ] && [ "${cli:-0}" -ge "${want:-1}" ] ||
            why="upgraded: $srv server and $cli client ends, expected at least $want each"
          if [ -z "$why" ] && [ $sc = fastburst ] &&
            ! grep -Eq 'writers in fast mode [1-9][0-9]* times' "$TMP/log"; then
            why="the writer never went into fast mode: $(grep -o 'writers in fast mode.*' "$TMP/log" | tr '\n' ' ')"
          fi
        fi
        if [ -n "$why" ]; then
          fail=$((fail + 1)); echo "FAIL conc $sc $fam $peer $mode: $why"
          [ -z "$line" ] && tail -5 <<<"$out"
          grep '^conc: ' <<<"$out" | head -4 # what a scenario says of its failure (pendcancel: its descriptors)
        else
          pass=$((pass + 1)); echo "ok conc $mode: ${line#ok }"
        fi
      done
    done
  done
done
echo "conc: $pass passed, $fail failed"
[ $fail = 0 ]

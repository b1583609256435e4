#!/bin/bash
# A third-party socket test suite, differentially: modules of CPython's own
# regression tests (Debian's libpython3.11-testsuite, run by the system's
# interpreter through its test driver, `python3 -m test -v MODULE`) run once
# plain, then with the library twice: with SHMSHIM_SHORT_MS=0 (every connection
# offered) and with the library's defaults. Their servers and clients are
# threads or child processes of the test process, so both ends are shimmed.
#
# Every test's outcome is recorded as it ends (ok, FAIL, ERROR, skip, xfail,
# XPASS; a test that started and never ended is a HANG). Fails if any test that
# passed plain (ok, or an expected failure) has another outcome shimmed, naming
# it; tests that fail or are skipped plain are left out by that comparison
# itself. Fails too if a module's run with SHMSHIM_SHORT_MS=0 upgraded no
# connection (the shim's log, "upgraded fd="), if one with the defaults tracked
# none, or if the plain run loaded the library (it logged).
#   PYSUITE_MODULES="test_epoll test_ftplib"   another set of modules
#   PYSUITE_PYTHON=...                         another interpreter with the test package
#   SUITE_MODES=shim                           no run with the defaults
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/suitelib.sh"
it_init pysuite
it_need timeout

# Debian's interpreter, whose standard library the test package belongs to (not
# whatever python3 comes first in PATH).
PY=${PYSUITE_PYTHON:-/usr/bin/python3}
# Chosen for their sockets (loopback TCP and AF_UNIX; blocking, timeouts,
# selectors, epoll, asyncio, TLS, socketserver and servers in threads) and for a
# run of under two minutes each way on 2 cores. Left out for their time, though
# they passed alike in a longer run: test_xmlrpc, test_imaplib, test_logging and
# the rest of test_asyncio; for connecting nothing the shim would upgrade
# (socketpair, pipes, connections closed unused): test_selectors, test_poll,
# test_select, test_telnetlib.
MODULES=${PYSUITE_MODULES:-"test_socket test_epoll test_ssl test_ftplib test_socketserver
  test_asyncio.test_sock_lowlevel test_asyncio.test_streams test_asyncio.test_events
  test_asyncio.test_unix_events test_asyncio.test_sendfile test_asyncio.test_server
  test_httplib test_urllib2_localnet test_asyncore test_asynchat test_smtplib test_wsgiref test_poplib"}
# A module that hangs is stopped after this (the slowest, test_ssl, takes about 40 s).
MOD_SECS=${PYSUITE_MODULE_SECS:-240}

if ! [ -x "$PY" ] || ! "$PY" -c 'import test.libregrtest, test.test_socket' 2>/dev/null; then
  echo "[$IT_NAME] FAIL: $PY has no regression test package (make deps: libpython3.11-testsuite)"
  exit 1
fi

# Arguments for the test driver beyond the module. test_socketserver asks for
# the "network" resource as a whole, but its servers and clients use the
# loopback address only. (Never for a module that reaches other hosts:
# test_httplib's network tests stay skipped.) test_socket's VSOCK tests are left
# out (the same in both runs): in a VM guest they connect to the guest's own
# context id through the hypervisor's transport, not a local socket, and on this
# kind of machine their client never connects and the module hangs, plain too.
extra_args() {
  case $1 in
    test_socketserver) echo "-u network" ;;
    test_socket) echo "-i *VSOCK*" ;;
  esac
}

SUITE_PY=$PY
suite_init
for mod in $MODULES; do
  read -r -a xa <<<"$(extra_args "$mod")" # no globbing: -i takes a pattern
  # --timeout: the driver prints every thread's stack and exits if the module
  # hangs; the outer timeout is for a driver that cannot.
  suite_each "$mod" "$((MOD_SECS + 20))" test -v --timeout "$MOD_SECS" "${xa[@]}" "$mod"
done
suite_finish

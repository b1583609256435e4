#!/bin/bash
# Third-party event-loop frameworks' own test suites, differentially (the
# machinery of pysuite.sh, tests/integration/suitelib.sh): Debian's
# python3-tornado (tornado.test, through unittest) and python3-twisted (trial,
# with its epoll, poll and select reactors), run once plain and once with the
# library, with SHMSHIM_SHORT_MS=0 and with the library's defaults.
# Their servers and clients live in the test process, so both ends are shimmed.
# Fails if any test that passed plain has another outcome shimmed (naming it),
# if a shimmed run upgraded no connection, or if the plain run loaded the library.
#   EVSUITE_SETS="tornado twisted-epoll"   a subset of the runs below
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/suitelib.sh"
it_init evsuite
it_need timeout

SUITE_PY=${PYSUITE_PYTHON:-/usr/bin/python3}
suite_init
# The modules that open sockets (loopback TCP and AF_UNIX: streams, servers,
# clients, HTTP, websockets, the loops themselves); about 15 s a run on 2 cores.
TORNADO="iostream_test tcpserver_test tcpclient_test httpserver_test simple_httpclient_test
  netutil_test web_test websocket_test ioloop_test concurrent_test"
# twisted.internet.test's modules build their tests for every reactor themselves;
# --reactor chooses the one of twisted.test's. About 7 s a run.
TWISTED="twisted.internet.test.test_tcp twisted.internet.test.test_unix twisted.test.test_tcp
  twisted.test.test_unix twisted.test.test_loopback twisted.internet.test.test_epollreactor
  twisted.test.test_protocols"
SETS=${EVSUITE_SETS:-"tornado twisted-epoll twisted-poll twisted-select"}
SECS=${EVSUITE_SECS:-240}

if ! "$SUITE_PY" -c 'import tornado.test.runtests, twisted.trial.runner' 2>/dev/null; then
  echo "[$IT_NAME] FAIL: $SUITE_PY lacks tornado's or twisted's tests (make deps: python3-tornado python3-twisted)"
  exit 1
fi

args() {
  local m
  case $1 in
    tornado) echo unittest -v; for m in $TORNADO; do echo "tornado.test.$m"; done ;;
    twisted-*) echo twisted.trial "--reactor=${1#twisted-}" $TWISTED ;;
  esac
}

for set in $SETS; do
  read -r -a a <<<"$(args "$set" | tr '\n' ' ')"
  [ ${#a[@]} -gt 1 ] || { it_check "$set: a known set" 0; continue; }
  suite_each "$set" "$SECS" "${a[@]}"
done
suite_finish

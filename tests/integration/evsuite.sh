#!/bin/bash
# Third-party event-loop frameworks' own test suites, differentially (the
# machinery of pysuite.sh, tests/integration/suitelib.sh): Debian's
# python3-tornado (tornado.test, through unittest), python3-twisted (trial,
# with its epoll, poll and select reactors) and python3-trio (trio's tests,
# through pytest: python3-pytest, python3-trustme for its TLS tests), run once
# plain and then with the library, with SHMSHIM_SHORT_MS=0 and with the
# library's defaults. (Debian packages no tests of python3-gevent or
# python3-anyio: tests/integration/gevent.sh runs gevent itself.)
# Their servers and clients live in the test process, so both ends are shimmed.
# Fails if any test that passed plain has another outcome shimmed (naming it),
# if a shimmed run upgraded no connection, or if the plain run loaded the library.
#   EVSUITE_SETS="tornado twisted-epoll trio"   a subset of the runs below
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
# trio's: sockets and their streams, listeners and servers, TLS over TCP, its
# epoll loop (_core test_io, test_run; test_guest_mode: in asyncio's), the
# testing helpers' real-socket streams, child processes and pipes; the
# slow tests too (--run-slow: named by their files, not their modules, for
# trio's conftest.py, which adds that option, to be read before the command
# line). About 10 s a run.
TRIO="tests/test_socket.py tests/test_highlevel_socket.py tests/test_highlevel_open_tcp_listeners.py
  tests/test_highlevel_open_tcp_stream.py tests/test_highlevel_open_unix_stream.py
  tests/test_highlevel_serve_listeners.py tests/test_ssl.py tests/test_highlevel_ssl_helpers.py
  tests/test_testing.py tests/test_subprocess.py tests/test_unix_pipes.py _core/tests/test_io.py
  _core/tests/test_run.py _core/tests/test_guest_mode.py"
# pytest's results, written to $PYSUITE_OUT the way suitelib's recorder writes
# unittest's (a plugin that pytest loads: -p evpytest; the recorder's directory,
# $T, is first in sys.path). A test's ID is its module and its name in it; a
# failed setup or teardown is an ERROR.
cat >"$T/evpytest.py" <<'PY'
import os

out = open(os.environ["PYSUITE_OUT"], "a", buffering=1)
ids = {}

def pytest_collection_modifyitems(items):
    for it in items:
        mod = getattr(it, "module", None)
        ids[it.nodeid] = "%s::%s" % (mod.__name__ if mod else "?", it.nodeid.partition("::")[2])

def pytest_runtest_logstart(nodeid, location):
    out.write("start %s\n" % ids.get(nodeid, nodeid))

def pytest_runtest_logreport(report):
    tid = ids.get(report.nodeid, report.nodeid)
    xf = hasattr(report, "wasxfail")
    if report.failed:
        tag = "FAIL" if report.when == "call" else "ERROR"
    elif report.skipped:
        tag = "xfail" if xf else "skip"
    elif report.when == "call":
        tag = "XPASS" if xf else "ok"
    else:
        return
    out.write("%s %s\n" % (tag, tid))
PY
SETS=${EVSUITE_SETS:-"tornado twisted-epoll twisted-poll twisted-select trio"}
SECS=${EVSUITE_SECS:-240}

if ! "$SUITE_PY" -c 'import tornado.test.runtests, twisted.trial.runner, pytest, trustme, trio.tests.test_socket' 2>/dev/null; then
  echo "[$IT_NAME] FAIL: $SUITE_PY lacks tornado's, twisted's or trio's tests (make deps: python3-tornado python3-twisted python3-trio python3-pytest python3-trustme)"
  exit 1
fi

args() {
  local m
  case $1 in
    tornado) echo unittest -v; for m in $TORNADO; do echo "tornado.test.$m"; done ;;
    twisted-*) echo twisted.trial "--reactor=${1#twisted-}" $TWISTED ;;
    # No cache directory, no output capture, every thread's stack printed for a
    # test that takes a minute (a hang: the verdict shows it), the recorder's
    # plugin, the slow tests.
    trio)
      local d
      d=$("$SUITE_PY" -c 'import os, trio; print(os.path.dirname(trio.__file__))')
      echo pytest -p no:cacheprovider -s -o faulthandler_timeout=60 -p evpytest -v --run-slow
      for m in $TRIO; do echo "$d/$m"; done ;;
  esac
}

for set in $SETS; do
  read -r -a a <<<"$(args "$set" | tr '\n' ' ')"
  [ ${#a[@]} -gt 1 ] || { it_check "$set: a known set" 0; continue; }
  suite_each "$set" "$SECS" "${a[@]}"
done
suite_finish

#!/bin/bash
# A third-party socket test suite, differentially: modules of CPython's own
# regression tests (Debian's libpython3.11-testsuite, run by the system's
# interpreter through its test driver, `python3 -m test -v MODULE`) run once
# plain and once with the library (SHMSHIM_SHORT_MS=0: every connection offered;
# IT_DEFAULT_SETTINGS=1: the library's defaults). Their servers and clients are
# threads or child processes of the test process, so both ends are shimmed.
#
# Every test's outcome is recorded as it ends (ok, FAIL, ERROR, skip, xfail,
# XPASS; a test that started and never ended is a HANG). Fails if any test that
# passed plain (ok, or an expected failure) has another outcome shimmed, naming
# it; tests that fail or are skipped plain are left out by that comparison
# itself. Fails too if a module's shimmed run upgraded no connection (the shim's
# log, "upgraded fd="), or if the plain run loaded the library (it logged).
#   PYSUITE_MODULES="test_epoll test_ftplib"   another set of modules
#   PYSUITE_PYTHON=...                         another interpreter with the test package
source "$(dirname "$0")/lib.sh"
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

# The recorder: the test driver, with every unittest result written to
# $PYSUITE_OUT as it happens ("start ID" first, so that a hang names its test).
cat >"$T/record.py" <<'PY'
import os, runpy, sys, unittest

out = open(os.environ["PYSUITE_OUT"], "a", buffering=1)

def hook(name, tag):
    orig = getattr(unittest.TestResult, name)
    def f(self, test, *args):
        if name == "addSubTest":
            err = args[1]
            if err is not None:
                out.write("%s %s\n" % ("FAIL" if issubclass(err[0], test.failureException) else "ERROR", test.id()))
        else:
            out.write("%s %s\n" % (tag, test.id()))
        return orig(self, test, *args)
    setattr(unittest.TestResult, name, f)

for name, tag in (("startTest", "start"), ("addSuccess", "ok"), ("addFailure", "FAIL"),
                  ("addError", "ERROR"), ("addSkip", "skip"), ("addExpectedFailure", "xfail"),
                  ("addUnexpectedSuccess", "XPASS"), ("addSubTest", None)):
    hook(name, tag)

sys.argv = ["test"] + sys.argv[1:]
runpy.run_module("test", run_name="__main__", alter_sys=True)
PY

# compare.py PLAIN SHIM: one outcome per test for each run (the worst it got: a
# failed subtest fails its test; started and never ended: HANG), the counts,
# then every test that passed plain and did not pass shimmed.
cat >"$T/compare.py" <<'PY'
import collections, sys

RANK = {"ok": 0, "xfail": 0, "skip": 1, "FAIL": 2, "ERROR": 2, "XPASS": 2}

def outcomes(path):
    res, started = {}, []
    for line in open(path):
        tag, _, tid = line.rstrip("\n").partition(" ")
        if tag == "start":
            started.append(tid)
        elif tid not in res or RANK[tag] > RANK[res[tid]]:
            res[tid] = tag
    for tid in started:
        res.setdefault(tid, "HANG")
    return res

plain, shim = outcomes(sys.argv[1]), outcomes(sys.argv[2])
def counts(r):
    c = collections.Counter(r.values())
    return " ".join("%s=%d" % (k, c[k]) for k in ("ok", "xfail", "skip", "FAIL", "ERROR", "XPASS", "HANG") if c[k])
passed = [t for t, o in plain.items() if o in ("ok", "xfail")]
print("counts plain: %s; shimmed: %s; compared: %d" % (counts(plain) or "none", counts(shim) or "none", len(passed)))
for t in sorted(passed):
    if shim.get(t) != plain[t]:
        print("lost %s: plain %s, shimmed %s" % (t, plain[t], shim.get(t, "never ran")))
PY

# run_module SHIM MODULE: one run of the test driver on MODULE, plain (SHIM 0) or
# shimmed, in its own working and temporary directory.
run_module() {
  local shim=$1 mod=$2 tag
  tag=$([ "$shim" = 1 ] && echo shim || echo plain)
  local dir=$T/$tag/$mod
  mkdir -p "$dir/tmp"
  : >"$dir/record"
  it_env "$shim" "$T/log/$tag.$mod.log"
  [ "$shim" = 1 ] && [ "${IT_DEFAULT_SETTINGS:-0}" != 1 ] && IT_ENV+=(SHMSHIM_SHORT_MS=0)
  # --timeout: the driver prints every thread's stack and exits if the module
  # hangs; the outer timeout is for a driver that cannot.
  local -a xa
  read -r -a xa <<<"$(extra_args "$mod")" # no globbing: -i takes a pattern
  (cd "$dir" && "${IT_ENV[@]}" TMPDIR="$dir/tmp" PYSUITE_OUT="$dir/record" \
    timeout -k 10 "$((MOD_SECS + 20))" "$PY" "$T/record.py" -v --timeout "$MOD_SECS" \
    "${xa[@]}" "$mod" >"$dir/out" 2>&1)
  echo $?
}

upgraded_total=0
for mod in $MODULES; do
  t0=$(date +%s)
  rp=$(run_module 0 "$mod")
  t1=$(date +%s)
  rs=$(run_module 1 "$mod")
  t2=$(date +%s)
  res=$("$PY" "$T/compare.py" "$T/plain/$mod/record" "$T/shim/$mod/record")
  slog=$T/log/shim.$mod.log
  ups=$(it_count ' upgraded fd=[0-9]+ role=server ' "$slog")
  upc=$(it_count ' upgraded fd=[0-9]+ role=client ' "$slog")
  pls=$(it_count ' plain fd=[0-9]+ role=' "$slog")
  warns=$(it_count ' warn ' "$slog")
  upgraded_total=$((upgraded_total + ups))
  it_log "$mod: plain $((t1 - t0))s (exit $rp), shimmed $((t2 - t1))s (exit $rs); $(echo "$res" | head -1);" \
    "upgraded server/client $ups/$upc, plain $pls, warnings $warns"
  lost=$(echo "$res" | grep -c '^lost ')
  it_check "$mod: every test that passes plain passes shimmed" "$([ "$lost" = 0 ] && echo 1 || echo 0)" \
    "$lost test(s) lost"
  echo "$res" | grep '^lost ' | sed "s/^/    [$IT_NAME] /"
  if [ "$lost" != 0 ]; then
    # What the driver said about them (first lines of each traceback).
    grep -E -A12 '^(FAIL|ERROR): ' "$T/shim/$mod/out" | head -40 | sed "s/^/    | /"
    grep -E '^Timeout \(|^Thread 0x|^  File ' "$T/shim/$mod/out" | head -20 | sed "s/^/    | /"
  fi
  it_check "$mod: the plain run passed tests" "$(echo "$res" | head -1 | grep -qE 'compared: [1-9]' && echo 1 || echo 0)"
  it_check "$mod: the shimmed run upgraded connections" "$([ "$ups" -ge 1 ] && [ "$upc" -ge 1 ] && echo 1 || echo 0)" \
    "upgraded server/client $ups/$upc"
  it_check "$mod: the plain run ran without the library" "$([ -s "$T/log/plain.$mod.log" ] && echo 0 || echo 1)"
done
it_log "upgraded connections in all shimmed runs: $upgraded_total"
it_finish

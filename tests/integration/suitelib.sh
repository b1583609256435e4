# Shared by pysuite.sh and evsuite.sh (sourced after lib.sh's it_init): a
# unittest-based test suite run differentially, plain and shimmed, test by test.
#   suite_init                      writes the recorder and the comparer into $T
#   suite_each LABEL SECS DRIVER ARGS...
#                                   runs DRIVER (a module run as __main__: test,
#                                   unittest, twisted.trial) with ARGS plain, then
#                                   in each of $SUITE_MODES, each run in
#                                   $T/MODE/LABEL and stopped after SECS, and
#                                   counts the checks: the plain run passed tests
#                                   without the library; in each mode every test
#                                   that passed plain passes, and the library was
#                                   at work
#   suite_finish                    the checks over all modules, then it_finish
# The modes: "shim" (SHMSHIM_SHORT_MS=0: every connection offered, so the run
# must upgrade connections) and "default" (the library's defaults: the
# short-lived policy leaves many plain, which hid failures before; the run must
# have tracked connections, upgraded or left plain, and all default runs
# together must have upgraded some). SUITE_MODES="shim" runs one.
# SUITE_PY: the interpreter.

# The recorder: the driver, with every test result written to $PYSUITE_OUT as it
# happens ("start ID" first, so that a hang names its test). unittest's results,
# or trial's (whose result class does not pass them on to unittest's).
suite_init() {
  suite_up_shim=0 suite_up_default=0
  cat >"$T/record.py" <<'PY'
import os, runpy, sys, unittest

out = open(os.environ["PYSUITE_OUT"], "a", buffering=1)
driver = os.environ["PYSUITE_DRIVER"]

def hook(cls, name, tag):
    orig = getattr(cls, name)
    def f(self, test, *args, **kw):
        if name == "addSubTest":
            err = args[1]
            if err is not None:
                out.write("%s %s\n" % ("FAIL" if issubclass(err[0], test.failureException) else "ERROR", test.id()))
        else:
            out.write("%s %s\n" % (tag, test.id()))
        return orig(self, test, *args, **kw)
    setattr(cls, name, f)

cls = unittest.TestResult
if driver == "twisted.trial":
    from twisted.trial.reporter import TestResult as cls
for name, tag in (("startTest", "start"), ("addSuccess", "ok"), ("addFailure", "FAIL"),
                  ("addError", "ERROR"), ("addSkip", "skip"), ("addExpectedFailure", "xfail"),
                  ("addUnexpectedSuccess", "XPASS"), ("addSubTest", None)):
    if hasattr(cls, name):
        hook(cls, name, tag)

sys.argv = [driver] + sys.argv[1:]
runpy.run_module(driver, run_name="__main__", alter_sys=True)
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
}

# suite_run MODE LABEL SECS DRIVER ARGS... (MODE plain, shim or default): prints
# the driver's exit status.
suite_run() {
  local mode=$1 label=$2 secs=$3 driver=$4
  shift 4
  local dir=$T/$mode/$label
  mkdir -p "$dir/tmp"
  : >"$dir/record"
  IT_DEFAULT_SETTINGS=$([ "$mode" = default ] && echo 1 || echo 0) \
    it_env "$([ "$mode" = plain ] && echo 0 || echo 1)" "$T/log/$mode.$label.log"
  [ "$mode" = shim ] && IT_ENV+=(SHMSHIM_SHORT_MS=0)
  (cd "$dir" && "${IT_ENV[@]}" TMPDIR="$dir/tmp" PYSUITE_OUT="$dir/record" PYSUITE_DRIVER="$driver" \
    timeout -k 10 "$secs" "$SUITE_PY" "$T/record.py" "$@" >"$dir/out" 2>&1)
  echo $?
}

suite_each() {
  local label=$1 t0 t1 rp rm mode
  t0=$(date +%s)
  rp=$(suite_run plain "$@")
  t1=$(date +%s)
  it_log "$label: plain $((t1 - t0))s (exit $rp)"
  it_check "$label: the plain run ran without the library" "$([ -s "$T/log/plain.$label.log" ] && echo 0 || echo 1)"
  for mode in ${SUITE_MODES:-shim default}; do
    t0=$(date +%s)
    rm=$(suite_run "$mode" "$@")
    t1=$(date +%s)
    suite_verdict "$label" "$mode" "$((t1 - t0))" "$rm"
  done
}

# suite_verdict LABEL MODE SECS RC: the run of MODE against the plain one.
suite_verdict() {
  local mod=$1 mode=$2 res slog ups upc pls warns lost
  res=$("$SUITE_PY" "$T/compare.py" "$T/plain/$mod/record" "$T/$mode/$mod/record")
  slog=$T/log/$mode.$mod.log
  ups=$(it_count ' upgraded fd=[0-9]+ role=server ' "$slog")
  upc=$(it_count ' upgraded fd=[0-9]+ role=client ' "$slog")
  pls=$(it_count ' plain fd=[0-9]+ role=' "$slog")
  warns=$(it_count ' warn ' "$slog")
  if [ "$mode" = shim ]; then suite_up_shim=$((suite_up_shim + ups)); else suite_up_default=$((suite_up_default + ups)); fi
  it_log "$mod, $mode: ${3}s (exit $4); $(echo "$res" | head -1);" \
    "upgraded server/client $ups/$upc, plain $pls, warnings $warns"
  lost=$(echo "$res" | grep -c '^lost ')
  it_check "$mod, $mode: every test that passes plain passes" "$([ "$lost" = 0 ] && echo 1 || echo 0)" \
    "$lost test(s) lost"
  echo "$res" | grep '^lost ' | sed "s/^/    [$IT_NAME] /"
  if [ "$lost" != 0 ]; then
    # What the driver said about them (first lines of each traceback).
    grep -E -A12 '^(FAIL|ERROR): |^\[(FAIL|ERROR)\]$' "$T/$mode/$mod/out" | head -40 | sed "s/^/    | /"
    grep -E '^Timeout \(|^Thread 0x|^  File ' "$T/$mode/$mod/out" | head -20 | sed "s/^/    | /"
  fi
  it_check "$mod, $mode: tests compared" "$(echo "$res" | head -1 | grep -qE 'compared: [1-9]' && echo 1 || echo 0)"
  if [ "$mode" = shim ]; then
    # A connection is upgraded only once both ends used it after the offer: one
    # that carried one request and closed may end plain at both ends, the offer
    # withdrawn. A module with one or two connections (test_asyncio.test_server:
    # 1 or 2 upgraded in 15 runs) may see that for all of them; then every plain
    # one must say so, or the library was not at work.
    local wd
    wd=$(it_count ' plain fd=[0-9]+ role=(server: the client never took the offer|client: (the server withdrew its offer|an offer came, but its sender no longer holds))' "$slog")
    if [ "$ups" -ge 1 ] && [ "$upc" -ge 1 ]; then
      it_check "$mod, $mode: connections upgraded" 1
    elif [ "$ups" = 0 ] && [ "$upc" = 0 ] && [ "$pls" -ge 1 ] && [ "$wd" = "$pls" ]; then
      it_check "$mod, $mode: connections upgraded, or every offer withdrawn" 1
      it_log "note: $mod, $mode: no connection upgraded, every one of the $pls plain ends says its offer was withdrawn"
    else
      it_check "$mod, $mode: connections upgraded" 0 "upgraded server/client $ups/$upc, plain $pls ($wd withdrawn)"
    fi
  else
    it_check "$mod, $mode: the library tracked connections" "$([ $((ups + upc + pls)) -ge 1 ] && echo 1 || echo 0)" \
      "upgraded server/client $ups/$upc, plain $pls"
  fi
}

suite_finish() {
  it_log "upgraded server ends: $suite_up_shim with SHMSHIM_SHORT_MS=0, $suite_up_default with the defaults"
  case " ${SUITE_MODES:-shim default} " in
    *" default "*) it_check "the runs with the defaults upgraded connections" "$([ "$suite_up_default" -ge 1 ] && echo 1 || echo 0)" ;;
  esac
  it_finish
}

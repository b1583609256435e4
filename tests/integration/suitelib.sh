# Shared by pysuite.sh and evsuite.sh (sourced after lib.sh's it_init): a
# unittest-based test suite run differentially, plain and shimmed, test by test.
#   suite_init                      writes the recorder and the comparer into $T
#   suite_run SHIM LABEL SECS DRIVER ARGS...
#                                   one run of DRIVER (a module run as __main__:
#                                   test, unittest, twisted.trial) with ARGS, in
#                                   $T/{plain,shim}/LABEL, stopped after SECS;
#                                   prints the exit status
#   suite_verdict LABEL PLAINSECS SHIMSECS RCPLAIN RCSHIM
#                                   compares the two runs of LABEL and counts the
#                                   checks (every test that passed plain passes
#                                   shimmed; the shimmed run upgraded connections;
#                                   the plain run did not load the library)
# SUITE_PY: the interpreter. suite_upgraded: upgraded server ends so far.

# The recorder: the driver, with every test result written to $PYSUITE_OUT as it
# happens ("start ID" first, so that a hang names its test). unittest's results,
# or trial's (whose result class does not pass them on to unittest's).
suite_init() {
  suite_upgraded=0
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

# suite_run SHIM LABEL SECS DRIVER ARGS...
suite_run() {
  local shim=$1 label=$2 secs=$3 driver=$4 tag
  shift 4
  tag=$([ "$shim" = 1 ] && echo shim || echo plain)
  local dir=$T/$tag/$label
  mkdir -p "$dir/tmp"
  : >"$dir/record"
  it_env "$shim" "$T/log/$tag.$label.log"
  [ "$shim" = 1 ] && [ "${IT_DEFAULT_SETTINGS:-0}" != 1 ] && IT_ENV+=(SHMSHIM_SHORT_MS=0)
  (cd "$dir" && "${IT_ENV[@]}" TMPDIR="$dir/tmp" PYSUITE_OUT="$dir/record" PYSUITE_DRIVER="$driver" \
    timeout -k 10 "$secs" "$SUITE_PY" "$T/record.py" "$@" >"$dir/out" 2>&1)
  echo $?
}

# suite_verdict LABEL PLAINSECS SHIMSECS RCPLAIN RCSHIM
suite_verdict() {
  local mod=$1 res slog ups upc pls warns lost
  res=$("$SUITE_PY" "$T/compare.py" "$T/plain/$mod/record" "$T/shim/$mod/record")
  slog=$T/log/shim.$mod.log
  ups=$(it_count ' upgraded fd=[0-9]+ role=server ' "$slog")
  upc=$(it_count ' upgraded fd=[0-9]+ role=client ' "$slog")
  pls=$(it_count ' plain fd=[0-9]+ role=' "$slog")
  warns=$(it_count ' warn ' "$slog")
  suite_upgraded=$((suite_upgraded + ups))
  it_log "$mod: plain ${2}s (exit $4), shimmed ${3}s (exit $5); $(echo "$res" | head -1);" \
    "upgraded server/client $ups/$upc, plain $pls, warnings $warns"
  lost=$(echo "$res" | grep -c '^lost ')
  it_check "$mod: every test that passes plain passes shimmed" "$([ "$lost" = 0 ] && echo 1 || echo 0)" \
    "$lost test(s) lost"
  echo "$res" | grep '^lost ' | sed "s/^/    [$IT_NAME] /"
  if [ "$lost" != 0 ]; then
    # What the driver said about them (first lines of each traceback).
    grep -E -A12 '^(FAIL|ERROR): |^\[(FAIL|ERROR)\]$' "$T/shim/$mod/out" | head -40 | sed "s/^/    | /"
    grep -E '^Timeout \(|^Thread 0x|^  File ' "$T/shim/$mod/out" | head -20 | sed "s/^/    | /"
  fi
  it_check "$mod: the plain run passed tests" "$(echo "$res" | head -1 | grep -qE 'compared: [1-9]' && echo 1 || echo 0)"
  it_check "$mod: the shimmed run upgraded connections" "$([ "$ups" -ge 1 ] && [ "$upc" -ge 1 ] && echo 1 || echo 0)" \
    "upgraded server/client $ups/$upc"
  it_check "$mod: the plain run ran without the library" "$([ -s "$T/log/plain.$mod.log" ] && echo 0 || echo 1)"
}

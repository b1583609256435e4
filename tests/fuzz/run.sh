#!/bin/bash
# Runs every libFuzzer target in $FUZZ_BIN for $FUZZ_SECONDS each (default 60):
# first the regression inputs kept in tests/fuzz/regress/<target>/ (each must run
# clean), then a fresh fuzzing run seeded from tests/fuzz/seeds/<target>/. A crash
# fails the run; the input is kept under $FUZZ_BIN/crashes/ to be added to
# tests/fuzz/regress/ once fixed. Prints the executions of each target.
#   FUZZ_SECONDS=30 tests/fuzz/run.sh build/fuzz
set -u
BIN=${1:-build/fuzz}
SECS=${FUZZ_SECONDS:-60}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$BIN/crashes"
fail=0; total=0
for f in "$BIN"/fuzz_*; do
  [ -x "$f" ] || continue
  t=${f##*/fuzz_}
  reg=$ROOT/tests/fuzz/regress/$t
  nreg=$(ls "$reg" 2>/dev/null | wc -l)
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    if ! "$f" -runs=1 "$reg"/* >"$TMP/$t.reg" 2>&1; then
      echo "FAIL fuzz $t: regression input crashes again"; grep -m3 'ERROR\|SUMMARY' "$TMP/$t.reg"; fail=$((fail + 1))
      continue
    fi
  fi
  mkdir -p "$TMP/corpus.$t"
  cp "$ROOT/tests/fuzz/seeds/$t"/* "$TMP/corpus.$t/" 2>/dev/null
  # -timeout: an input running for 10 s is a hang; rss limit: a leak.
  timeout $((SECS + 120)) "$f" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$BIN/crashes/$t-" -print_final_stats=1 "$TMP/corpus.$t" >"$TMP/$t.log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$TMP/$t.log")
  total=$((total + ${runs:-0}))
  if [ $rc != 0 ]; then
    echo "FAIL fuzz $t (exit $rc) after ${runs:-?} executions:"; grep -m5 'ERROR\|SUMMARY\|Test unit written' "$TMP/$t.log"
    fail=$((fail + 1))
  else
    echo "ok fuzz $t: $runs executions in ${SECS}s, $(ls "$TMP/corpus.$t" | wc -l) corpus inputs, $nreg regression input(s) clean"
  fi
done
echo "fuzz: $total executions in all; $fail target(s) failed"
[ $fail = 0 ]

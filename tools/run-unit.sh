#!/bin/sh
# Runs every cmocka binary in the given directory; fails if any fails or none ran.
dir=$1
n=0; fail=0
for t in "$dir"/test_*; do
  [ -x "$t" ] || continue
  n=$((n + 1))
  echo "== $t"
  if ! "$t"; then fail=$((fail + 1)); echo "FAILED: $t"; fi
done
if [ "$n" = 0 ]; then echo "no unit test binaries in $dir"; exit 1; fi
echo "unit suites: $((n - fail)) passed, $fail failed"
[ "$fail" = 0 ]

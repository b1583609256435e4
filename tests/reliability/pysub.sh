#!/bin/bash
# Python's subprocess with an upgraded connection as the child's standard output
# (tests/reliability/pysub.py): subprocess vforks on Linux, and the child's
# dup2() of the socket onto its descriptor 1 went into the library's table,
# which a vfork() child shares with its parent: the parent's own standard output
# became the connection (its prints went into the ring, the server's too), and
# the child's exec found the table describing its parent's descriptors. Each
# cell (TCP and unix; subprocess's vfork and, with a preexec_fn, fork; the child
# with the library or without) runs plain, then with the library
# (SHMSHIM_SHORT_MS=0). Checked: the parent's own line is on its standard output
# in every run; what the server read is the parent's two lines around the
# child's line, as plain, when the child runs with the library (the connection is
# carried into it), and the parent's two lines when it runs without (the child's
# descriptor is fenced: its write fails, nothing of it reaches the stream); the
# connection upgraded at both ends. The sh child (dash) leaves through _exit(),
# which gave up nothing: the parent's close was then not the last holder's, the
# kicks on its socket stayed unread, and the server's read failed with
# ECONNRESET about 1 run in 2.
#   BUILD=build SHM_PRELOAD=... tests/reliability/pysub.sh
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRE=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
PY=$ROOT/tests/reliability/pysub.py
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
PARENT_LINE="parent line after the child (exit 0)"
for fam in tcp unix; do
  for how in vfork fork; do
    for child in lib sh bare; do
      rm -f "$TMP/log"
      timeout 60 python3 "$PY" $fam $how $child "$TMP" >"$TMP/plain.out" 2>&1
      prc=$?
      env LD_PRELOAD="$PRE" SHMSHIM_SHORT_MS=0 SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$TMP/log" \
        timeout 60 python3 "$PY" $fam $how $child "$TMP" >"$TMP/shim.out" 2>&1
      src=$?
      why=""
      want_child=$(hex $'from parent\nfrom child\nparent again\n')
      [ $prc = 0 ] && grep -qx "$PARENT_LINE" "$TMP/plain.out" && grep -qx "server=$want_child" "$TMP/plain.out" ||
        why="$why the plain run itself failed ($(tr '\n' ' ' <"$TMP/plain.out" | cut -c1-200))"
      [ $src = 0 ] || why="$why shimmed exit $src ($(tail -2 "$TMP/shim.out" | tr '\n' ' ' | cut -c1-200))"
      grep -q "^parent line after the child" "$TMP/shim.out" ||
        why="$why the parent's own line is not on its standard output"
      if [ $child != bare ]; then want=$want_child; else want=$(hex $'from parent\nparent again\n'); fi
      grep -qx "server=$want" "$TMP/shim.out" ||
        why="$why the server read (hex) '$(sed -n 's/^server=//p' "$TMP/shim.out")', want '$want'"
      uc=$(grep -c ' upgraded fd=[0-9]* role=client' "$TMP/log" 2>/dev/null)
      us=$(grep -c ' upgraded fd=[0-9]* role=server' "$TMP/log" 2>/dev/null)
      [ "${uc:-0}" = 1 ] && [ "${us:-0}" = 1 ] || why="$why upgraded: $uc client and $us server ends, want 1 each"
      if [ $child != bare ]; then
        grep -q 'taken over after exec' "$TMP/log" 2>/dev/null || why="$why the child did not take the connection over"
      fi
      if [ -n "$why" ]; then
        fail=$((fail + 1)); echo "FAIL pysub $fam $how $child:$why"
      else
        pass=$((pass + 1)); echo "ok pysub $fam $how $child"
      fi
    done
  done
done
echo "pysub: $pass passed, $fail failed"
[ $fail = 0 ]

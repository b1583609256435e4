#!/bin/bash
# Two background jobs of a bash script writing lines to one /dev/tcp connection
# at the same time, then the script reading the echo back: run plain and under
# `shmshim run` against a shimmed echo server; the lines read back (sorted) must
# be the same, the connection upgraded at both ends. The jobs are fork children
# of bash that share the upgraded connection with it; each `echo` is one write,
# which the kernel keeps whole whoever else writes. Before (core/conn_share.c):
# the two jobs copied into the same place of the ring, and lines were lost,
# doubled or mixed, or the server reset the connection.
source "$(dirname "$0")/lib.bash"
cat >"$TMP/script.sh" <<'SCRIPT'
exec 3<>/dev/tcp/127.0.0.1/$1
echo hello >&3; read -r x <&3; echo "got: $x"
for j in A B C; do
  (for ((i = 1; i <= 3000; i++)); do echo "$j $i"; done >&3) &
done
wait
echo END >&3
n=0
while read -r l <&3; do
  [ "$l" = END ] && break
  echo "$l"
  n=$((n + 1))
done | sort
exec 3>&-
SCRIPT
echo_pair bash_jobs "$TMP/script.sh" 30
check "bash_jobs: the plain run read every line back" test "$(grep -c '^[ABC] [0-9]*$' "$TMP/plain.out")" = 9000
check "bash_jobs: the same lines under the library" cmp -s "$TMP/plain.out" "$TMP/shim.out"
shim_log_checks bash_jobs
[ "$fail" = 0 ] || { echo "--- plain:"; head -5 "$TMP/plain.out"; echo "--- shim:"; diff "$TMP/plain.out" "$TMP/shim.out" | head -10; grep -h ' warn \|plain fd' "$TMP/shim.log" | head -5; }
finish

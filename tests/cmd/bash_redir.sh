#!/bin/bash
# bash's /dev/tcp the way scripts use it, against a shimmed echo server, run
# plain and under `shmshim run` (the outputs must be the same, the connection
# upgraded at both ends): `exec 3<>/dev/tcp/...`, then in turn a builtin's
# output redirected to it (`echo ... >&3`: dup2(3, 1), then stdio on stdout, which
# no interposer sees), an external program's (/bin/echo, carried over exec), a
# subshell's (a fork child), each answer read back with `read <&3`. Before: the
# builtin's bytes were never counted (the server reset the connection on them),
# and once the connection was upgraded, a process that wrote after another one
# had (bash after its child) wrote from a stale position in the ring.
source "$(dirname "$0")/lib.bash"
cat >"$TMP/script.sh" <<'SCRIPT'
exec 3<>/dev/tcp/127.0.0.1/$1
for i in 1 2 3; do
  echo "builtin $i" >&3; read -r x <&3; echo "got: $x"
  /bin/echo "external $i" >&3; read -r y <&3; echo "got: $y"
  ( echo "subshell $i" >&3 ); read -r z <&3; echo "got: $z"
  printf 'printf %s %05d\n' "$i" "$((i * 7))" >&3; read -r w <&3; echo "got: $w"
done
exec 3>&-
SCRIPT
echo_pair bash_redir "$TMP/script.sh" 20
check "bash_redir: the plain run read every line back" test "$(grep -c '^got: [a-z]' "$TMP/plain.out")" = 12
check "bash_redir: the same output under the library" cmp -s "$TMP/plain.out" "$TMP/shim.out"
shim_log_checks bash_redir
[ "$fail" = 0 ] || { echo "--- plain:"; cat "$TMP/plain.out"; echo "--- shim:"; cat "$TMP/shim.out"; grep -h ' warn \|plain fd' "$TMP/shim.log" | head -5; }
finish

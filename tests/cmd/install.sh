#!/bin/bash
# `make install DESTDIR=... PREFIX=/usr` gives a working layout: the installed
# command preloads the installed library (not the build's), a redis pair started
# with it is upgraded at both ends and returns a value byte-identical, doctor
# passes with it, the manual page is there and well-formed, and `make uninstall`
# removes exactly what was installed.
source "$(dirname "$0")/lib.bash"

dest=$TMP/dest
make -s -C "$ROOT" install BUILD="$BUILD" DESTDIR="$dest" PREFIX=/usr >"$TMP/make.out" 2>&1 ||
  { bad "make install failed: $(tail -5 "$TMP/make.out")"; finish; exit 1; }
files=$(cd "$dest" && find . -type f -printf '%m %p\n' | sort | tr '\n' ' ')
check "install: bin/shmshim, lib/libshmshim.so, share/man/man1/shmshim.1 with their modes ($files)" \
  [ "$files" = "644 ./usr/share/man/man1/shmshim.1 755 ./usr/bin/shmshim 755 ./usr/lib/libshmshim.so " ]
IS=$dest/usr/bin/shmshim
ILIB=$(readlink -f "$dest/usr/lib/libshmshim.so")
lp=$("$IS" run -- sh -c 'printf %s "$LD_PRELOAD"')
check "installed run preloads the installed library ($lp)" [ "$lp" = "$ILIB" ]

S=$IS start_redis
check "the server maps the installed library, not the build's" \
  eval 'grep -qF "$ILIB" /proc/$spid/maps && ! grep -qF "$LIB" /proc/$spid/maps'
head -c 300000 /dev/urandom | base64 -w0 >"$TMP/value"
want=$(sha256sum <"$TMP/value" | cut -d' ' -f1)
"$IS" run -- redis-cli -p "$port" -x SET k <"$TMP/value" >"$TMP/set.out"
mkfifo "$TMP/in"
"$IS" run -- redis-cli -p "$port" <"$TMP/in" >"$TMP/get.out" 2>&1 &
cpid=$!; pids+=("$cpid")
exec 3>"$TMP/in"
printf 'GET k\n' >&3
until_true 10 test "$(wc -c <"$TMP/get.out")" -gt 400000
got=$(head -c 400000 "$TMP/get.out" | sha256sum | cut -d' ' -f1)
both=$("$IS" stat --json "$spid" "$cpid" |
  jq -r --argjson s "$spid" --argjson c "$cpid" '[(.processes[] | select(.pid == $c) | .connections[0] | .state, .peer_pid), (.processes[] | select(.pid == $s) | .connections[] | select(.peer_pid == $c) | .state)] | map(tostring) | join(" ")')
check "installed: SET/GET of 400000 bytes byte-identical, upgraded at both ends per the installed stat ($both)" \
  [ "$(cat "$TMP/set.out") $got $both" = "OK $want upgraded $spid upgraded" ]
exec 3>&-
"$IS" doctor >"$TMP/doc" 2>&1
rc=$?
check "installed doctor passes, with the installed library" \
  eval '[ $rc = 0 ] && grep -qF "ok    LD_PRELOAD                 the loader maps $ILIB" "$TMP/doc"'
if command -v groff >/dev/null; then
  groff -man -Tutf8 -ww "$dest/usr/share/man/man1/shmshim.1" >"$TMP/man.txt" 2>"$TMP/man.err"
  check "the manual page renders without warnings" eval '[ ! -s "$TMP/man.err" ] && grep -q "shmshim stat" "$TMP/man.txt"'
fi
make -s -C "$ROOT" uninstall BUILD="$BUILD" DESTDIR="$dest" PREFIX=/usr >/dev/null 2>&1
check "uninstall removes every installed file" [ "$(find "$dest" -type f | wc -l)" = 0 ]
finish

#!/bin/bash
# shmshim's answers to bad input and missing pieces: exit status and message for
# every kind of mistake, the library reported when absent, LD_PRELOAD appended to
# (never duplicated in) an existing one, the program's own exit status passed
# through, and doctor's verdict on this machine and on an invalid environment.
source "$(dirname "$0")/lib.bash"

# expect STATUS PATTERN COMMAND...: exit status and a line of stderr matching PATTERN.
expect() {
  local want=$1 pat=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local got=$?
  if [ "$got" = "$want" ] && grep -qE -- "$pat" "$TMP/err"; then
    ok "$(printf '%q ' "${@:2}")-> $got, \"$(grep -m1 -E -- "$pat" "$TMP/err")\""
  else
    bad "$(printf '%q ' "$@")-> $got (want $want), stderr: $(head -c 300 "$TMP/err")"
  fi
}

expect 2 "^usage: shmshim run" "$S"
expect 2 "unknown command 'frobnicate'" "$S" frobnicate
expect 2 "unknown option '--bogus'" "$S" run --bogus -- true
expect 2 "invalid value '3M' for --ring-size: expected a power of two" "$S" run --ring-size 3M -- true
expect 2 "invalid value '128M' for --ring-size" "$S" run --ring-size 128M -- true
expect 2 "invalid value '70000' for --ports" "$S" run --ports 70000 -- true
expect 2 "invalid value '' for --ports" "$S" run --ports= -- true
expect 2 "invalid value 'abc' for --spin-us" "$S" run --spin-us abc -- true
expect 2 "invalid value 'loud' for --log: expected one of warn, info, debug" "$S" run --log loud -- true
expect 2 "--tcp-only and --unix-only exclude each other" "$S" run --tcp-only --unix-only -- true
expect 2 "option --ring-size needs a value" "$S" run --ring-size
expect 2 "no program given" "$S" run --tcp-only --
expect 127 "cannot run '/nonexistent/prog': No such file or directory" "$S" run -- /nonexistent/prog
printf 'data\n' >"$TMP/noexec"
chmod 600 "$TMP/noexec"
expect 126 "cannot run '.*/noexec': Permission denied" "$S" run -- "$TMP/noexec"
expect 1 "library /nonexistent.so: No such file" "$S" run --library /nonexistent.so -- true
expect 2 "unknown option '--bogus'" "$S" stat --bogus
expect 2 "'abc' is not a process id" "$S" stat abc
expect 2 "invalid --interval '0'" "$S" stat --watch --interval 0
expect 2 "invalid --count 'x'" "$S" stat --watch --count x
expect 2 "unexpected argument 'now'" "$S" doctor now

# The command without its library: reported, not silently run plain.
mkdir -p "$TMP/bare/bin"
cp "$S" "$TMP/bare/bin/shmshim"
expect 1 "libshmshim.so not found \(looked for .*/bare/bin/\.\./lib/libshmshim.so" "$TMP/bare/bin/shmshim" run -- true
"$TMP/bare/bin/shmshim" doctor >"$TMP/doc" 2>&1
rc=$?
check "doctor without the library: fails and says so" \
  eval '[ $rc = 1 ] && grep -q "^FAIL  library .*libshmshim.so not found" "$TMP/doc" && grep -q "^  nothing" "$TMP/doc"'

# What the program sees, and what it returns.
lp=$("$S" run -- sh -c 'printf %s "$LD_PRELOAD"')
check "run: LD_PRELOAD is the build's library, absolute ($lp)" [ "$lp" = "$LIB" ]
# (Any library that does not itself define the socket calls: the shim binds the
# real ones with RTLD_NEXT, i.e. from libraries loaded after it.)
other=$(/sbin/ldconfig -p | awk '$1 == "libm.so.6" {print $NF; exit}')
lp=$(LD_PRELOAD=$other "$S" run -- sh -c 'printf %s "$LD_PRELOAD"')
check "run: appended to an existing LD_PRELOAD ($lp)" [ "$lp" = "$other:$LIB" ]
lp=$(LD_PRELOAD=$LIB "$S" run -- sh -c 'printf %s "$LD_PRELOAD"')
check "run: not added twice ($lp)" [ "$lp" = "$LIB" ]
vars=$(env -u SHMSHIM_SHORT_MS "$S" run --tcp-only --ports 6379,8000-8100 --ring-size 1M --spin-us 7 --log warn --stats -- env | grep ^SHMSHIM_ | sort | tr '\n' ' ')
check "run: options become variables ($vars)" \
  [ "$vars" = "SHMSHIM_LOG=warn SHMSHIM_PORTS_ALLOW=6379,8000-8100 SHMSHIM_RING_SIZE=1M SHMSHIM_SPIN_US=7 SHMSHIM_STATS=2 SHMSHIM_UNIX=0 " ]
"$S" run -- /sbin/ldconfig -p >/dev/null 2>"$TMP/err"
rc=$?
check "run: warns that a statically linked program cannot be shimmed, and still runs it" \
  eval '[ $rc = 0 ] && grep -q "ldconfig is statically linked: LD_PRELOAD cannot act on it" "$TMP/err"'
"$S" run -- true 2>"$TMP/err"
check "run: no warning for a dynamically linked program" [ ! -s "$TMP/err" ]
"$S" run -- sh -c 'exit 7'
check "run: the program's exit status comes back" [ $? = 7 ]
args=$("$S" run -- printf '%s|' --tcp-only -- 'a b')
check "run: options after the program's name are the program's ($args)" [ "$args" = "--tcp-only|--|a b|" ]

"$S" doctor >"$TMP/doc" 2>&1
rc=$?
check "doctor: passes here and says what is accelerated" \
  eval '[ $rc = 0 ] && grep -q "^ok    memfd + seals" "$TMP/doc" && grep -q "^ok    sock_diag, TCP over IPv4" "$TMP/doc" && grep -q "^  loopback TCP over IPv4" "$TMP/doc"'
SHMSHIM_RING_SIZE=3M SHMSHIM_UNIX=0 "$S" doctor >"$TMP/doc" 2>&1
rc=$?
check "doctor: an invalid variable fails the check and is named; SHMSHIM_UNIX=0 is reflected" \
  eval '[ $rc = 1 ] && grep -q "SHMSHIM_RING_SIZE=3M is invalid" "$TMP/doc" && grep -q "^  AF_UNIX (SHMSHIM_UNIX=0)" "$TMP/doc"'
finish

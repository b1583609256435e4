#!/bin/bash
# Differential test of socket semantics (tests/progs/semprobe.c): every scenario
# runs plain (the kernel: the reference), then with the library on both ends, once
# with the environment's settings (make test-diff: SHMSHIM_SHORT_MS=0) and once
# with the defaults (env -u SHMSHIM_SHORT_MS). Each shimmed run must print exactly
# what the plain run printed, and must really have been upgraded: the library's log
# must show "upgraded fd=N role=client" and "role=server" lines (with
# SHMSHIM_SHORT_MS=0, one per connection each side made; with the defaults, at
# least one each, since short connections are then kept plain on purpose). `oob`
# also runs with only the client shimmed (procs mode), which must stay plain and
# pass urgent data through as the kernel does.
#   BUILD=build tests/diff/run.sh [SCENARIO...]
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB=${SHM_PRELOAD:-$ROOT/$BUILD/libshmshim.so}
P=$ROOT/$BUILD/tests/progs/semprobe
[ -x "$P" ] || { echo "tests/diff: $P missing (make all)"; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0; failed=()
# Scenarios about what happens before (or instead of) an upgrade: a connection is
# upgraded only once both processes have used it after the offer, so these may
# end plain at both ends (never at one).
LAZY="prewrite_close accept_close et_stall"
start=$SECONDS

# run OUT SCEN FAM MODE SHIM(none|both|client) SETTINGS(env|default)
# Writes OUT (stdout: server lines, then client lines; a non-zero exit status is
# appended as a line), OUT.err (stderr) and OUT.log (the library's log).
run() {
  local out=$1 scen=$2 fam=$3 mode=$4 shim=$5 settings=$6
  local log=$out.log; rm -f "$out" "$out.err" "$log"
  local envs=(env)
  [ "$settings" = default ] && envs+=(-u SHMSHIM_SHORT_MS)
  envs+=("LD_PRELOAD=$LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$log")
  local senv=(env) cenv=(env)
  case $shim in
    both) senv=("${envs[@]}"); cenv=("${envs[@]}") ;;
    client) cenv=("${envs[@]}") ;;
  esac
  if [ "$mode" = threads ]; then
    "${cenv[@]}" timeout 120 "$P" "$scen" "$fam" threads >"$out" 2>"$out.err"
    local rc=$?
    [ $rc = 0 ] || echo "exit status $rc" >>"$out"
    return
  fi
  local d; d=$(mktemp -d "$TMP/p.XXXXXX")
  "${senv[@]}" timeout 120 "$P" "$scen" "$fam" server "$d" >"$out.srv" 2>"$out.err" &
  local sp=$!
  "${cenv[@]}" timeout 120 "$P" "$scen" "$fam" client "$d" >"$out.cli" 2>"$out.cerr"
  local crc=$?
  wait $sp; local src=$?
  cat "$out.srv" "$out.cli" >"$out"; cat "$out.cerr" >>"$out.err"
  [ $src = 0 ] || echo "server exit status $src" >>"$out"
  [ $crc = 0 ] || echo "client exit status $crc" >>"$out"
  rm -rf "$d" "$out.srv" "$out.cli" "$out.cerr"
}

# check NAME REF OUT SHIM SETTINGS: same output as REF, and upgraded as expected.
check() {
  local name=$1 ref=$2 out=$3 shim=$4 settings=$5 why=""
  if ! cmp -s "$ref" "$out"; then
    why="output differs from the plain run"
  fi
  local uc=0 us=0 nc ns
  [ -f "$out.log" ] && uc=$(grep -c ' upgraded fd=[0-9]* role=client' "$out.log")
  [ -f "$out.log" ] && us=$(grep -c ' upgraded fd=[0-9]* role=server' "$out.log")
  nc=$(sed -n 's/^semprobe: role=client connections=//p' "$out.err" | head -1)
  ns=$(sed -n 's/^semprobe: role=server connections=//p' "$out.err" | head -1)
  local scen=${name%% *}
  if [ "$shim" = client ]; then
    [ "$uc$us" = 00 ] || why="$why; upgraded with a plain server ($uc client, $us server ends)"
  elif [[ " $LAZY " == *" $scen "* ]]; then
    # Before any upgrade by design (data before the switch, an accept closed at
    # once): upgraded or not, both ends must agree.
    [ "$uc" = "$us" ] || why="$why; upgraded $uc client but $us server ends"
  elif [ "$settings" = env ] && [ "${SHMSHIM_SHORT_MS:-}" = 0 ]; then
    [ "$uc" = "${nc:-?}" ] && [ "$us" = "${ns:-?}" ] ||
      why="$why; not tested: upgraded $uc of ${nc:-?} client and $us of ${ns:-?} server ends"
  else
    [ "$uc" -ge 1 ] && [ "$us" -ge 1 ] ||
      why="$why; not tested: upgraded $uc client and $us server ends"
  fi
  if [ -z "$why" ]; then
    pass=$((pass + 1)); return
  fi
  fail=$((fail + 1)); failed+=("$name")
  echo "FAIL $name: ${why#; }"
  diff "$ref" "$out" | grep '^[<>]' | sed 's/^</    plain:/; s/^>/    shim: /' | head -20
  if [ -f "$out.log" ] && grep -qv -e ' upgraded fd=' -e ' plain fd=' -e 'exit stats\|stats:' "$out.log"; then
    grep -v -e ' upgraded fd=' "$out.log" | grep -i -e warn -e error -e reset -e fail | head -5 | sed 's/^/    log: /'
  fi
}

scens=("$@")
[ ${#scens[@]} = 0 ] && mapfile -t scens < <("$P" list | cut -d' ' -f1)
for scen in "${scens[@]}"; do
  modes=$("$P" list | sed -n "s/^$scen //p" | tr , ' ')
  [ -n "$modes" ] || { echo "tests/diff: no scenario $scen"; exit 2; }
  for fam in tcp4 tcp6 unix; do
    for mode in $modes; do
      t=$TMP/$scen.$fam.$mode
      run "$t.plain" "$scen" "$fam" "$mode" none env
      if grep -q -e FATAL -e 'exit status' "$t.plain"; then  # the probe itself failed
        fail=$((fail + 1)); failed+=("$scen $fam $mode plain")
        echo "FAIL $scen $fam $mode: the plain run failed"; sed 's/^/    /' "$t.plain" | tail -5
        continue
      fi
      run "$t.shim" "$scen" "$fam" "$mode" both env
      check "$scen $fam $mode" "$t.plain" "$t.shim" both env
      run "$t.shimd" "$scen" "$fam" "$mode" both default
      check "$scen $fam $mode (default settings)" "$t.plain" "$t.shimd" both default
      if [ "$scen" = oob ] && [ "$mode" = procs ]; then
        run "$t.mixed" "$scen" "$fam" "$mode" client env
        check "$scen $fam $mode (client shimmed only)" "$t.plain" "$t.mixed" client env
      fi
    done
  done
done
echo "semantics diff: $pass passed, $fail failed ($((SECONDS - start)) s)"
[ $fail = 0 ] || printf '  failed: %s\n' "${failed[@]}"
[ $fail = 0 ]

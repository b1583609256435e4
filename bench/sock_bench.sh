#!/bin/bash
# sock_bench.sh: plain vs shimmed sockets, side by side, in one run.
#
# Four variants: plain TCP, plain AF_UNIX, shim TCP, shim AF_UNIX (shim =
# LD_PRELOAD=libshmshim.so on both processes: sock_bench forks its server, which
# inherits the environment). Every cell (test x size) runs all variants, rep after
# rep, the variant order rotating each rep, so that a drift of the machine hits all
# variants alike. Reported values are medians over the repetitions.
#
# Tests (bench/sock_bench.c has the details): ping-pong round trip (median, p99),
# one-way streaming throughput (server reads 256 KiB at a time), connection set-up
# rate (connect + one 64-byte request/response + close).
#
# Every run of a shimmed variant logs with SHMSHIM_LOG=info into its own file, which
# must show every connection upgraded at both ends (' upgraded fd=' lines: 2 per
# connection, the right family, no warnings, no plain connection); the plain
# variants run with the same variables and must log nothing. Any failure, watchdog
# or data mismatch stops the run with a non-zero status.
#
# Logging costs an open/write/close per upgraded connection end, which shows in the
# connection rate (not in the other tests: one connection per cell), so that cell
# also runs the shimmed variants with logging off ("log off" columns, not verified
# by the log; the same binary and environment otherwise).
#
# Diagnostic cells (skip with --no-diag): ping-pong 1 MiB and 4 MiB and streaming
# 1 MiB writes again, with every write issued as write() calls of at most 64 KiB
# (same bytes, same reads): shows how much of a large write's cost is the write
# granularity: the shim copies as much of one write as fits in the ring and
# publishes it at once, so its reader cannot start before the whole copy is done.
#
#   bench/sock_bench.sh [--quick] [--reps N] [--time MS] [--no-pin] [--no-diag] [--raw FILE]
#   BUILD=build (default) selects build/libshmshim.so and build/bench/sock_bench
#   (make lib bench-bin). SHMSHIM_RING_SIZE / SHMSHIM_SPIN_US are passed through.
set -u
export LC_ALL=C

usage() {
  cat <<EOF
usage: $0 [--quick] [--reps N] [--time MS] [--no-pin] [--no-diag] [--raw FILE]
  --quick      shorter cells (whole run < 60 s)
  --reps N     repetitions per cell (default 3)
  --time MS    cell time target in ms (default 500, quick 100)
  --no-pin     do not pin client and server to different CPUs
  --no-diag    skip the diagnostic cells (1 MiB / 4 MiB messages as 64 KiB write calls)
  --raw FILE   also keep every result line (SOCKBENCH ...) in FILE
EOF
  exit "$1"
}

QUICK=0 REPS=3 CELL_MS="" PIN=1 RAW="" DIAG=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --reps) REPS=${2:?}; shift ;;
    --time) CELL_MS=${2:?}; shift ;;
    --no-pin) PIN=0 ;;
    --no-diag) DIAG=0 ;;
    --raw) RAW=${2:?}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "sock_bench.sh: unknown argument '$1'" >&2; usage 2 ;;
  esac
  shift
done
case $REPS in ''|*[!0-9]*) usage 2 ;; esac
[ "$REPS" -ge 1 ] && [ "$REPS" -le 15 ] || usage 2
[ -n "$CELL_MS" ] || { [ $QUICK = 1 ] && CELL_MS=100 || CELL_MS=500; }
case $CELL_MS in ''|*[!0-9]*) usage 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
for f in "$BUILD/libshmshim.so" "$BUILD/bench/sock_bench"; do
  [ -f "$f" ] || { echo "sock_bench.sh: $f missing: run 'make lib bench-bin' first" >&2; exit 2; }
done

T0=$(date +%s.%N)
TMP=$(mktemp -d /tmp/sock_bench.XXXXXX) || exit 1
CUR=""
cleanup() {
  # Only the run we started (timeout, which takes sock_bench and its child with it).
  if [ -n "$CUR" ] && kill -0 "$CUR" 2>/dev/null; then kill -TERM "$CUR" 2>/dev/null; wait "$CUR" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "sock_bench.sh: interrupted" >&2; exit 130' INT TERM

# Snapshot the binaries: others may rebuild build/ while we run.
cp "$BUILD/libshmshim.so" "$TMP/libshmshim.so" && cp "$BUILD/bench/sock_bench" "$TMP/sock_bench" || exit 1
LIB=$TMP/libshmshim.so
BIN=$TMP/sock_bench
RESULTS=$TMP/results
: >"$RESULTS"

# Pinning: the first two allowed CPUs that are not SMT siblings, if any.
PINARG=() PINDESC="no"
if [ $PIN = 1 ]; then
  cpus=$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)
  list=()
  IFS=, read -ra parts <<<"$cpus"
  for p in "${parts[@]}"; do
    if [[ $p == *-* ]]; then for ((c = ${p%-*}; c <= ${p#*-}; c++)); do list+=("$c"); done; else list+=("$p"); fi
  done
  if [ ${#list[@]} -ge 2 ]; then
    c0=${list[0]} c1=${list[1]} smt="SMT siblings"
    for c in "${list[@]:1}"; do
      sib=$(cat "/sys/devices/system/cpu/cpu$c0/topology/thread_siblings_list" 2>/dev/null)
      if ! echo ",$sib," | tr '-' ',' | grep -q ",$c,"; then c1=$c smt="not SMT siblings"; break; fi
    done
    PINARG=(--pin "$c0,$c1")
    PINDESC="yes: client on CPU $c0, server on CPU $c1 ($smt; sched_setaffinity in sock_bench)"
  else
    PINDESC="no (only ${#list[@]} CPU allowed)"
  fi
else
  PINDESC="no (--no-pin)"
fi

PORT=$((10000 + RANDOM % 12000)) # private, below the ephemeral range; one fresh port per run
NRUN=0
WATCHDOG=$((CELL_MS * 4 / 1000 + 20))

# run VARIANT TEST SIZE: one sock_bench run; appends its result line to $RESULTS.
# VARIANT may end in "/wc" (diagnostic: --write-chunk 64K) or "/1w" (the same
# cell without it, a control measured in the same interleaving); it is the label.
run() {
  local lab=$1 test=$2 size=$3 fam shim log addr try rc line
  local v=${lab%/*} extra=()
  case $lab in */wc) extra=(--write-chunk 64K) ;; esac
  case $v in
    plain-tcp) fam=tcp4 shim=0 log=1 ;;
    plain-unix) fam=unix shim=0 log=1 ;;
    shim-tcp) fam=tcp4 shim=1 log=1 ;;
    shim-unix) fam=unix shim=1 log=1 ;;
    shimnolog-tcp) fam=tcp4 shim=1 log=0 ;;
    shimnolog-unix) fam=unix shim=1 log=0 ;;
  esac
  for try in 1 2 3; do
    NRUN=$((NRUN + 1))
    PORT=$((PORT + 1)); [ $PORT -gt 24999 ] && PORT=10001
    if [ $fam = tcp4 ]; then addr=tcp4:$PORT; else addr=unix:$TMP/s.$NRUN; fi
    local lf=$TMP/log.$NRUN out=$TMP/out.$NRUN err=$TMP/err.$NRUN
    local envs=(env -u LD_PRELOAD -u SHMSHIM_LOG -u SHMSHIM_LOG_FILE)
    [ $shim = 1 ] && envs+=(LD_PRELOAD="$LIB")
    [ $log = 1 ] && envs+=(SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$lf")
    timeout -k 5 $((WATCHDOG + 15)) "${envs[@]}" "$BIN" "$addr" "$test" "$size" --time "$CELL_MS" \
      --label "$lab" --watchdog $WATCHDOG "${PINARG[@]}" "${extra[@]}" >"$out" 2>"$err" &
    CUR=$!
    wait $CUR; rc=$?
    CUR=""
    # A TCP port somebody else holds: take the next one.
    if [ $rc = 1 ] && [ $fam = tcp4 ] && grep -q 'bind: Address already in use' "$err"; then continue; fi
    break
  done
  line=$(grep '^SOCKBENCH ' "$out")
  if [ $rc != 0 ] || [ -z "$line" ] || [ -s "$err" ]; then
    echo "sock_bench.sh: FAILED: $v $test $size (exit $rc)" >&2
    sed 's/^/    /' "$err" "$out" | head -20 >&2
    [ -f "$lf" ] && sed 's/^/    log: /' "$lf" | head -10 >&2
    exit 1
  fi
  # Upgrade check.
  local up=0 upc=0 ups=0 want=0 bad=""
  if [ -f "$lf" ]; then
    up=$(grep -c ' upgraded fd=' "$lf")
    upc=$(grep -c " upgraded fd=[0-9]* role=client family=$fam " "$lf")
    ups=$(grep -c " upgraded fd=[0-9]* role=server family=$fam " "$lf")
    grep -q -e ' warn ' -e ' plain fd=' "$lf" && bad="warnings or plain connections in the log"
    grep -q -e 'plain_client=[1-9]' -e 'plain_server=[1-9]' -e 'offers_rejected=[1-9]' "$lf" &&
      bad="plain connections or rejected offers in the stats"
  fi
  if [ $shim = 1 ] && [ $log = 1 ]; then
    local nconn=1
    [ "$test" = conn ] && nconn=$(sed -n 's/.* conns=\([0-9]*\) .*/\1/p' <<<"$line")
    want=$nconn
    if [ "$upc" != "$want" ] || [ "$ups" != "$want" ] || [ "$up" != $((2 * want)) ]; then
      bad="$bad; expected $want connection(s) upgraded at both ends ($fam), log has $upc client + $ups server ($up ' upgraded fd=' lines)"
    fi
    local r
    r=$(sed -n 's/.* upgraded fd=.* ring=\([0-9]*\).*/\1/p' "$lf" 2>/dev/null | sort -u | tr '\n' ' ')
    echo "$r" >>"$TMP/rings"
  elif [ $shim = 0 ] && [ "$up" != 0 ]; then
    bad="$bad; plain variant, but the log has $up ' upgraded fd=' lines"
  elif [ $shim = 0 ] && [ -s "$lf" ]; then
    bad="$bad; plain variant, but the shim logged something"
  fi
  if [ -n "$bad" ]; then
    echo "sock_bench.sh: UPGRADE CHECK FAILED: $v $test $size: ${bad#; }" >&2
    if [ -f "$lf" ]; then sed 's/^/    log: /' "$lf" | head -10 >&2; else echo "    (no log file: the shim was not loaded, or logged nothing)" >&2; fi
    exit 1
  fi
  echo "$line" >>"$RESULTS"
  rm -f "$lf" "$out" "$err"
}

# CPU accounting, in clock ticks: the machine's busy time and our runs' (waited-for
# children of this shell). The difference is what other processes used.
cpu_snap() {
  local busy ours
  busy=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat)
  ours=$(sed 's/^.*) //' /proc/$$/stat | awk '{print $12 + $13 + $14 + $15}')
  echo "$busy $ours $(date +%s.%N)"
}
# other_cpu SNAP0 SNAP1: percent of one CPU used by other processes in between.
other_cpu() {
  awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); o = (y[1] - x[1]) - (y[2] - x[2]); if (o < 0) o = 0
    w = y[3] - x[3]; printf "%.0f", (w > 0 ? 100 * o / hz / w : 0) }'
}
DISTURBED=""

# cell TEST SIZE VARIANT...: every repetition runs every variant, rotating the order.
cell() {
  local test=$1 size=$2 rep i k c0 c1 pct
  shift 2
  local vs=("$@") n=$#
  c0=$(cpu_snap)
  for ((rep = 0; rep < REPS; rep++)); do
    for ((i = 0; i < n; i++)); do
      k=$(((i + rep) % n))
      run "${vs[$k]}" "$test" "$size"
    done
  done
  c1=$(cpu_snap)
  pct=$(other_cpu "$c0" "$c1")
  local tag=""
  [[ ${vs[0]} == */* ]] && tag="/${vs[0]#*/}"
  [ "$pct" -ge 10 ] && DISTURBED="$DISTURBED $test-$size$tag:${pct}%"
  printf '.' >&2
}

# ---------------------------------------------------------------- header
model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
fam_mod=$(awk -F': *' '/^cpu family/ {f=$2} /^model\t/ {m=$2} END {print "family " f ", model " m}' /proc/cpuinfo)
echo "# shmshim sock_bench ($([ $QUICK = 1 ] && echo quick || echo full) run, $(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "- nproc: $(nproc) ($(getconf _NPROCESSORS_ONLN) online)"
echo "- CPU: ${model:-unknown} ($fam_mod)"
echo "- kernel: $(uname -r); clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?')"
echo "- pinned: $PINDESC"
echo "- SHMSHIM_RING_SIZE: ${SHMSHIM_RING_SIZE:-unset (default 256 KiB per direction)}; SHMSHIM_SPIN_US: ${SHMSHIM_SPIN_US:-unset (default 50 µs)}"
echo "- variants: plain TCP (127.0.0.1, TCP_NODELAY), plain AF_UNIX (path socket), shim TCP, shim AF_UNIX (LD_PRELOAD=libshmshim.so in client and forked server); blocking sockets"
echo "- repetitions: $REPS per cell, variants interleaved per cell and rotated per repetition; values are medians over the repetitions"
echo "- cell time target: $CELL_MS ms (ping-pong: plus $((CELL_MS / 10)) ms warm-up, at most 200000 samples; hard stop 4x); watchdog ${WATCHDOG} s per process"
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
dirty=$(git -C "$ROOT" status --porcelain -- core preload 2>/dev/null | grep -q . && echo ", core/ or preload/ modified")
echo "- library: $BUILD/libshmshim.so (snapshot copied at start; md5 $(md5sum "$LIB" | cut -c1-12)); source tree: git $rev${dirty}"
echo "- load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- cells
CPU0=$(cpu_snap)
PP_SIZES="64 512 1K 4K 16K 64K 256K 1M 4M"
ST_SIZES="64 4K 64K 1M"
V4=(plain-tcp plain-unix shim-tcp shim-unix)

echo >&2
printf 'sock_bench.sh: ping-pong ' >&2
for s in $PP_SIZES; do cell pp "$s" "${V4[@]}"; done
printf ' streaming ' >&2
for s in $ST_SIZES; do cell stream "$s" "${V4[@]}"; done
printf ' connections ' >&2
cell conn 64 "${V4[@]}" shimnolog-tcp shimnolog-unix
if [ $DIAG = 1 ]; then
  printf ' diagnostic ' >&2
  VD=(plain-tcp/wc plain-unix/wc shim-tcp/wc shim-unix/wc shim-tcp/1w shim-unix/1w)
  cell pp 1M "${VD[@]}"
  cell pp 4M "${VD[@]}"
  cell stream 1M "${VD[@]}"
fi
echo " done" >&2

[ -n "$RAW" ] && cp "$RESULTS" "$RAW"
CPU1=$(cpu_snap)
OTHER=$(other_cpu "$CPU0" "$CPU1")
rings=$(tr ' ' '\n' <"$TMP/rings" | grep . | sort -u | tr '\n' ' ')
echo "- ring size used by the shim (from its log): ${rings:-?}bytes per direction"
echo "- load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$OTHER" -ge 5 ]; then
  echo "- CPU used by other processes during the run: ${OTHER}% of one CPU  ** WARNING: the machine was not idle; numbers may be disturbed (cells where others used >= 10%:${DISTURBED:- none}) **"
else
  echo "- CPU used by other processes during the run: ${OTHER}% of one CPU"
fi
NSHIM=$(grep -c -e 'label=shim' "$RESULTS")
echo "- upgrade check: every one of the $NSHIM shimmed runs logged every connection upgraded at both ends; the $(grep -c 'label=plain-' "$RESULTS") plain runs logged nothing"

# ---------------------------------------------------------------- tables
# median of field F for label L, test T, size S over the repetitions
awk -v QUICK=$QUICK -v DIAG=$DIAG -v REPS=$REPS -v PP="$PP_SIZES" -v ST="$ST_SIZES" '
function kv(line, key,   n, i, a, b) {
  n = split(line, a, " ")
  for (i = 1; i <= n; i++) { split(a[i], b, "="); if (b[1] == key) return b[2] }
  return ""
}
function bytes(s,   n) {
  n = s + 0
  if (s ~ /K$/) n *= 1024; else if (s ~ /M$/) n *= 1048576
  return n
}
function label(n) {
  if (n >= 1048576 && n % 1048576 == 0) return (n / 1048576) " MiB"
  if (n >= 1024 && n % 1024 == 0) return (n / 1024) " KiB"
  return n " B"
}
function median(key,   n, i, j, t, a, m) {
  n = split(vals[key], a, " ")
  if (n == 0) return -1
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
  if (n % 2) return a[(n + 1) / 2]
  return (a[n / 2] + a[n / 2 + 1]) / 2
}
function us(v) {
  if (v < 0) return "-"
  if (v < 10) return sprintf("%.2f", v)
  if (v < 1000) return sprintf("%.1f", v)
  return sprintf("%.0f", v)
}
function ratio(a, b) {
  if (a <= 0 || b <= 0) return "-"
  return sprintf("%.2fx", a / b)
}
function add(key, v) { vals[key] = (key in vals) ? vals[key] " " v : v }
{
  lab = kv($0, "label"); t = kv($0, "test"); s = kv($0, "size")
  if (t == "pp") { add(lab SUBSEP t SUBSEP s SUBSEP "med", kv($0, "median_us")); add(lab SUBSEP t SUBSEP s SUBSEP "p99", kv($0, "p99_us")) }
  if (t == "stream") add(lab SUBSEP t SUBSEP s SUBSEP "mbps", kv($0, "MBps"))
  if (t == "conn") { add(lab SUBSEP t SUBSEP s SUBSEP "rate", kv($0, "conns_per_s")); add(lab SUBSEP t SUBSEP s SUBSEP "med", kv($0, "median_us")); add(lab SUBSEP t SUBSEP s SUBSEP "p99", kv($0, "p99_us")) }
}
END {
  np = split(PP, pp, " "); ns = split(ST, st, " ")
  for (q = 0; q < 2; q++) {
    f = q ? "p99" : "med"
    printf "\n### Ping-pong round trip, %s µs (median of %d runs; lower is better)\n\n", q ? "p99" : "median", REPS
    if (!q) printf "shim/plain < 1: the shim is faster.\n\n"
    print "| size | plain TCP | shim TCP | shim/plain TCP | plain unix | shim unix | shim/plain unix |"
    print "|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= np; i++) {
      b = bytes(pp[i])
      pt = median("plain-tcp" SUBSEP "pp" SUBSEP b SUBSEP f); st_ = median("shim-tcp" SUBSEP "pp" SUBSEP b SUBSEP f)
      pu = median("plain-unix" SUBSEP "pp" SUBSEP b SUBSEP f); su = median("shim-unix" SUBSEP "pp" SUBSEP b SUBSEP f)
      printf "| %s | %s | %s | %s | %s | %s | %s |\n", label(b), us(pt), us(st_), ratio(st_, pt), us(pu), us(su), ratio(su, pu)
    }
  }
  printf "\n### One-way streaming throughput, MB/s (10^6 B/s, median of %d runs; higher is better)\n\n", REPS
  printf "The client writes W-byte writes, the server reads 256 KiB at a time. shim/plain > 1: the shim is faster.\n\n"
  print "| write size | plain TCP | shim TCP | shim/plain TCP | plain unix | shim unix | shim/plain unix |"
  print "|---:|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= ns; i++) {
    b = bytes(st[i])
    pt = median("plain-tcp" SUBSEP "stream" SUBSEP b SUBSEP "mbps"); st_ = median("shim-tcp" SUBSEP "stream" SUBSEP b SUBSEP "mbps")
    pu = median("plain-unix" SUBSEP "stream" SUBSEP b SUBSEP "mbps"); su = median("shim-unix" SUBSEP "stream" SUBSEP b SUBSEP "mbps")
    printf "| %s | %.0f | %.0f | %s | %.0f | %.0f | %s |\n", label(b), pt, st_, ratio(st_, pt), pu, su, ratio(su, pu)
  }
  if (DIAG) {
    printf "\n### Diagnostic: large writes issued as 64 KiB write() calls (median of %d runs)\n\n", REPS
    printf "Same cells as above, but the client (and the ping-pong server'"'"'s echo) writes in write() calls of at most\n"
    printf "64 KiB. \"as 1 write\": the shimmed variants without it, interleaved in the same cells as controls.\n\n"
    print "| cell | plain TCP | shim TCP | shim/plain TCP | plain unix | shim unix | shim/plain unix | shim TCP as 1 write | shim unix as 1 write |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    split("pp:1M pp:4M stream:1M", dc, " ")
    for (i = 1; i <= 3; i++) {
      split(dc[i], x, ":"); t = x[1]; b = bytes(x[2]); f = t == "pp" ? "med" : "mbps"
      pt = median("plain-tcp/wc" SUBSEP t SUBSEP b SUBSEP f); st_ = median("shim-tcp/wc" SUBSEP t SUBSEP b SUBSEP f)
      pu = median("plain-unix/wc" SUBSEP t SUBSEP b SUBSEP f); su = median("shim-unix/wc" SUBSEP t SUBSEP b SUBSEP f)
      s1 = median("shim-tcp/1w" SUBSEP t SUBSEP b SUBSEP f); s2 = median("shim-unix/1w" SUBSEP t SUBSEP b SUBSEP f)
      if (t == "pp")
        printf "| ping-pong %s, median µs | %s | %s | %s | %s | %s | %s | %s | %s |\n", label(b), us(pt), us(st_), ratio(st_, pt), us(pu), us(su), ratio(su, pu), us(s1), us(s2)
      else
        printf "| stream %s writes, MB/s | %.0f | %.0f | %s | %.0f | %.0f | %s | %.0f | %.0f |\n", label(b), pt, st_, ratio(st_, pt), pu, su, ratio(su, pu), s1, s2
    }
  }
  printf "\n### Connection set-up rate, connections/s (connect + 64 B request/response + close, one at a time; median of %d runs; higher is better)\n\n", REPS
  printf "\"log off\": the shimmed run without SHMSHIM_LOG (the verified runs log one line per connection end).\n\n"
  print "| family | plain | shim | shim/plain | shim, log off | shim log off/plain | plain: µs per conn (median / p99) | shim: µs per conn (median / p99) | shim log off: µs per conn (median / p99) |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  split("tcp unix", fams, " ")
  for (i = 1; i <= 2; i++) {
    fm = fams[i]
    p = median("plain-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "rate"); s_ = median("shim-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "rate")
    n_ = median("shimnolog-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "rate")
    printf "| %s | %.0f | %.0f | %s | %.0f | %s | %s / %s | %s / %s | %s / %s |\n", fm == "tcp" ? "TCP" : "AF_UNIX", p, s_, ratio(s_, p), n_, ratio(n_, p),
      us(median("plain-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "med")), us(median("plain-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "p99")),
      us(median("shim-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "med")), us(median("shim-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "p99")),
      us(median("shimnolog-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "med")), us(median("shimnolog-" fm SUBSEP "conn" SUBSEP 64 SUBSEP "p99"))
  }
}' "$RESULTS"

echo
echo "All data verified (sequence stamps on every ping-pong/conn message, full checksums of the first and last message"
echo "of every cell, byte-exact checks of the first, last and every 64th streaming read, byte counts)."
awk -v a="$T0" -v b="$(date +%s.%N)" -v n="$(wc -l <"$RESULTS")" 'BEGIN {printf "Run time: %.1f s (%d sock_bench runs)\n", b - a, n}'

#!/bin/bash
# bench/run.sh: every plain-vs-shim comparison of the project in one run.
#
#   1. ping-pong round trip 64 B .. 4 MiB: plain TCP, plain AF_UNIX, shim TCP, shim
#      AF_UNIX, and the raw ring (the ceiling)                      (sec_sock.sh)
#   2. one-way streaming throughput, 64 B / 4 KiB / 64 KiB / 1 MiB writes
#   3. connection set-up rate (connect, one request, close)
#   4. unmodified redis-benchmark, the redis-cli --latency pattern, nginx+wrk,
#      memcached with many connections                              (sec_apps.sh)
#   5. cost of being preloaded where nothing is accelerated         (sec_cost.sh)
#   6. CPU per request (recorded with section 4) and of an idle shimmed server
#   7. resident memory per upgraded connection, busy and idle
#   8. contention: one busy loop per CPU beside the benchmark   (sec_contention.sh)
#   9. regimes that must be no slower than plain, with CPU per request: idle
#      members x redis-benchmark, sparse requests, connection churn then a long
#      connection, memcached -t 4, rsync pull/push, haproxy -> nginx (sec_regimes.sh)
#
# Every cell runs every variant once per repetition, the variants' order rotating
# from one repetition to the next; tables show the median over the repetitions and
# the min-max spread. Every shimmed run must show its connections upgraded (the
# shim's log), every plain run must not have the library; a run failing its check
# is reported as invalid, never shown as a number. Writes results.md (tables and the
# targets), headline.md, regimes.md (section 9's table, when it ran), results.tsv
# (every measurement) and PNG plots to the output directory. Exit status: 0, or 1 if any run was invalid.
#
#   bench/run.sh [--quick] [--reps N] [--only LIST] [--no-pin] [--out DIR] [--lowlat-env 'VAR=VAL ...']
#   BUILD=build (default): uses $BUILD/libshmshim.so and $BUILD/bench/* (make all).
#   SHMSHIM_RING_SIZE / SHMSHIM_SPIN_US in the environment are passed to every
#   shimmed process (the targets are defined for the defaults: leave them unset).
set -u
export LC_ALL=C

usage() {
  cat <<EOF
usage: $0 [--quick] [--reps N] [--only LIST] [--no-pin] [--out DIR] [--lowlat-env 'VAR=VAL ...']
  --quick        short cells: the whole run in about three minutes on an idle 2-core machine
  --reps N       repetitions per cell (default 5, quick 3)
  --only LIST    comma list of sections: sock,apps,preload,idle,contention,regimes (default all)
  --no-pin       do not pin sock_bench/ring_bench client and server to different CPUs
  --out DIR      output directory (default bench/results)
  --lowlat-env S environment of the opt-in low-latency variant (default '$LOWLAT_DEFAULT')
EOF
  exit "$1"
}

LOWLAT_DEFAULT="SHMSHIM_SPIN_US=20000"
QUICK=0 REPS="" ONLY="sock,apps,preload,idle,contention,regimes" PIN=1 OUT="" LOWLAT_ENV=$LOWLAT_DEFAULT
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --reps) REPS=${2:?}; shift ;;
    --only) ONLY=${2:?}; shift ;;
    --no-pin) PIN=0 ;;
    --out) OUT=${2:?}; shift ;;
    --lowlat-env) LOWLAT_ENV=${2?}; shift ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage 2 ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/bench
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OUT=${OUT:-$HERE/results}
for f in libshmshim.so bench/sock_bench bench/ring_bench bench/loadgen bench/io_loop; do
  [ -f "$BUILD/$f" ] || { echo "run.sh: $BUILD/$f missing: run 'make all' first" >&2; exit 2; }
done
for c in redis-server redis-benchmark redis-cli nginx wrk memcached curl gnuplot rsync haproxy; do
  command -v $c >/dev/null || { echo "run.sh: $c missing: run 'tools/deps.sh bench' (as root)" >&2; exit 2; }
done

# ------------------------------------------------------------------ settings
cfg_default() { sed -n "s/^#define SHM_DEF_$1 \([0-9]*\).*/\1/p" "$ROOT/core/config.h"; }
SPIN_US=${SHMSHIM_SPIN_US:-$(cfg_default SPIN_US)}
RING_SIZE=${SHMSHIM_RING_SIZE:-$(cfg_default RING_SIZE)}
PP_SIZES="64 512 1K 4K 16K 64K 256K 512K 1M 4M"
ST_SIZES="64 4K 64K 1M"
MC_CONNS=50 WRK_CONNS=32 WRK_THREADS=2 NGINX_WORKERS=2 IDLE_CONNS=100 IDLE_SETTLE=0.5
IDLE_VALUE=$((2 * RING_SIZE)) # more than the ring each way: every ring page is touched
# regimes (section 9): idle member counts and family (the quick run leaves out
# 10,000: setting them up takes minutes with the shim); how long their set-up may
# take (s); sparse intervals as µs:samples; churn time; PINGs on the long
# connection after it; wrk connections through haproxy
RG_IDLE_COUNTS="0 100 1000 10000" RG_IDLE_FAM=unix RG_HOLD_WAIT=300 RG_HA_CONNS=8
if [ $QUICK = 1 ]; then
  REPS=${REPS:-3} SOCK_MS=30 APP_S=0.1 LAT_MS=300 LAT_REPS=2 WRK_S=1 WRK_REPS=2 MC_MS=200 CONT_REPS=2
  PRE_REPS=7 PRE_MS=60 CG_ITERS=2000 IDLE_S=1.5 IDLE_REPS=1 CONT_MAX_S=120
  RG_REPS=2 RG_SPARSE="100:500 1000:200 10000:60 100000:12" RG_CHURN_MS=300 RG_LONG_N=500 RG_IDLE_COUNTS="0 100 1000"
else
  REPS=${REPS:-5} SOCK_MS=300 APP_S=1 LAT_MS=3000 LAT_REPS=3 WRK_S=3 WRK_REPS=3 MC_MS=2000 CONT_REPS=$REPS
  PRE_REPS=21 PRE_MS=300 CG_ITERS=20000 IDLE_S=5 IDLE_REPS=2 CONT_MAX_S=900
  RG_REPS=3 RG_SPARSE="100:3000 1000:1000 10000:300 100000:50" RG_CHURN_MS=1000 RG_LONG_N=2000
fi
case $REPS in '' | *[!0-9]*) usage 2 ;; esac
[ "$REPS" -ge 1 ] && [ "$REPS" -le 21 ] || usage 2
SOCK_WD=$((SOCK_MS * 6 / 1000 + 20))

# ------------------------------------------------------------------ set-up
T0=$(date +%s.%N)
TMP=$(mktemp -d /tmp/shmshim-bench.XXXXXX) || exit 1
RAW=$TMP/results.tsv
: >"$RAW"
NINVALID=0 NRUN=0
source "$HERE/lib.sh"
source "$HERE/sec_sock.sh"
source "$HERE/sec_apps.sh"
source "$HERE/sec_cost.sh"
source "$HERE/sec_contention.sh"
source "$HERE/sec_regimes.sh"
cleanup() {
  exec 9>&- 2>/dev/null
  bg_stop_all
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'say "run.sh: interrupted"; exit 130' INT TERM

# Snapshot the binaries: others may rebuild build/ while we run.
BIN=$TMP/bin
mkdir -p "$BIN"
cp "$BUILD/libshmshim.so" "$BIN/" && cp "$BUILD"/bench/{sock_bench,ring_bench,loadgen,io_loop} "$BIN/" || exit 1
LIB=$BIN/libshmshim.so

# Pinning of sock_bench and ring_bench: the first two allowed CPUs, preferring two
# that are not SMT siblings. The real programs (section 4) are never pinned.
SOCK_PIN=() RING_PIN=(--no-pin) PINDESC="no (--no-pin)" PINDESC_SHORT="not pinned (--no-pin)"
if [ $PIN = 1 ]; then
  mapfile -t cpus < <(taskset -pc $$ 2>/dev/null | sed 's/.*: //' | tr ',' '\n' |
    awk -F- '{if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1}')
  [ ${#cpus[@]} -ge 1 ] || mapfile -t cpus < <(seq 0 $(($(nproc) - 1)))
  if [ ${#cpus[@]} -ge 2 ]; then
    c0=${cpus[0]} c1=${cpus[1]} smt="SMT siblings"
    for c in "${cpus[@]:1}"; do
      sib=$(cat "/sys/devices/system/cpu/cpu$c0/topology/thread_siblings_list" 2>/dev/null)
      if ! echo ",$sib," | tr '-' ',' | grep -q ",$c,"; then c1=$c smt="not SMT siblings"; break; fi
    done
    SOCK_PIN=(--pin "$c0,$c1") RING_PIN=()
    PINDESC="sections 1-3 and the ping-pong of 8: client on CPU $c0, server on CPU $c1 ($smt); sections 4-8 otherwise not pinned"
    PINDESC_SHORT="pinned, client on CPU $c0, server on CPU $c1 ($smt)"
  else
    PINDESC="no (only ${#cpus[@]} CPU allowed)" PINDESC_SHORT="not pinned (one CPU allowed)"
  fi
fi

# ------------------------------------------------------------------ run
mkdir -p "$OUT"
rm -rf "$OUT/invalid"
HDR=$TMP/header.md
model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  dirty=$(git -C "$ROOT" status --porcelain -- core preload 2>/dev/null | grep -q . && echo " (core/ or preload/ modified)")
  echo "# shmshim benchmark ($([ $QUICK = 1 ] && echo quick || echo full) run)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); source: git $rev$dirty; library md5 $(md5sum "$LIB" | cut -c1-12)"
  echo "- machine: nproc $(nproc), CPU ${model:-unknown}, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo)"
  echo "- CPU placement: $PINDESC"
  echo "- settings: ring ${RING_SIZE} bytes per direction$([ -n "${SHMSHIM_RING_SIZE:-}" ] && echo " (SHMSHIM_RING_SIZE set)" || echo " (default)"), spin ${SPIN_US} µs$([ -n "${SHMSHIM_SPIN_US:-}" ] && echo " (SHMSHIM_SPIN_US set)" || echo " (default)"); low-latency variant: \`$LOWLAT_ENV\`"
  echo "- repetitions: $REPS per cell (latency $LAT_REPS, nginx $WRK_REPS, preload $PRE_REPS, idle $IDLE_REPS, contention $CONT_REPS, regimes $RG_REPS), variants alternated, order rotated per repetition; cells show median (min–max)"
  echo "- cell length: sockets $SOCK_MS ms, redis-benchmark ~$APP_S s per test, latency $LAT_MS ms, wrk $WRK_S s, memcached $MC_MS ms, preload $PRE_MS ms, idle $IDLE_S s"
  echo "- load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$HDR"
cat "$HDR" >&2
CPU0=$(cpu_snap)
SEC_INFO=""
for s in sock apps preload idle contention regimes; do
  [[ ,$ONLY, == *,$s,* ]] || continue
  c0=$(cpu_snap)
  t0=$(date +%s)
  section_$s
  SEC_INFO="$SEC_INFO $s $(($(date +%s) - t0)) s (others ${s:+$(other_cpu "$c0" "$(cpu_snap)")}%),"
  say "   $s: $(($(date +%s) - t0)) s"
done
for v in "${!NGX_PID[@]}"; do bg_stop "${NGX_PID[$v]}" QUIT; done
CPU1=$(cpu_snap)

# ------------------------------------------------------------------ report
{
  cat "$HDR"
  echo "- load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  other=$(other_cpu "$CPU0" "$CPU1")
  echo "- CPU used by other processes meanwhile: ${other}% of one CPU$([ "$other" -ge 5 ] && echo "  **the machine was not idle: numbers are disturbed**")"
  echo "- sections:${SEC_INFO%,}"
  awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "- run time: %.0f s\n", b - a}'
  echo
  awk -F'\t' -v OUT="$TMP" -v REPS="$REPS" -v SPIN="$SPIN_US" -v MC="$MC_CONNS" -v IC="$IDLE_CONNS" \
    -v LOWLAT="$LOWLAT_ENV" -v HAC="$RG_HA_CONNS" -v MACH="nproc $(nproc), ${model:-unknown CPU}" -v PIN="$PINDESC_SHORT" \
    -f "$HERE/report.awk" "$RAW"
} >"$TMP/results.md"
cp "$TMP/results.md" "$OUT/results.md"
cp "$RAW" "$OUT/results.tsv"
{ grep -E '^- (date|machine|CPU placement|settings|CPU used by other)' "$TMP/results.md"; echo; cat "$TMP/targets.md"; } >"$OUT/headline.md"
# the regimes table (section 9) with its run's header, for the README beside the headline
rm -f "$OUT/regimes.md"
[ -s "$TMP/regimes.md" ] && { grep -E '^- (date|machine|settings|repetitions|CPU used by other|sections)' "$TMP/results.md"; echo; cat "$TMP/regimes.md"; } >"$OUT/regimes.md"
bash "$HERE/plot.sh" "$TMP" "$OUT" || say "run.sh: plotting failed"
say ""
cat "$TMP/targets.md" >&2
say ""
say "run.sh: wrote $OUT/results.md, headline.md,$([ -s "$OUT/regimes.md" ] && echo " regimes.md,") results.tsv and plots; $NINVALID invalid run(s)$([ -d "$OUT/invalid" ] && echo " (their logs: $OUT/invalid/)")"
[ "$NINVALID" = 0 ]

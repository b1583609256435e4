#!/bin/bash
# redis_demo.sh: the same unmodified redis-server, redis-benchmark and redis-cli,
# with and without the library, side by side (make demo).
#
# Two redis-servers, each on a loopback TCP port and a unix socket: one plain, one
# started with LD_PRELOAD=libshmshim.so (default configuration). The clients run
# plain against the plain one and shimmed against the shimmed one. Variants are
# interleaved (plain, shimmed, plain, shimmed...) and every cell is the median of
# its repetitions, so that the machine's drift hits both alike.
#
#   redis-benchmark -t set,get, 1 client, 50 clients, 50 clients pipelining 16:
#                   requests/s, and p50/p99 latency
#   redis-cli --latency (one PING every 10 ms, 2 s): average latency
#
# The shimmed runs log with SHMSHIM_LOG=info (one line per connection end): every
# connection must show up upgraded at both ends, or the demo fails. Any
# redis-benchmark error fails it too. Prints one markdown table.
#
#   bench/redis_demo.sh [--reps N] [--budget S]   (default 3 repetitions; none starts
#   after S seconds, default 70, so that the demo stays under two minutes)
#   BUILD=build selects build/libshmshim.so (make lib).
set -u
export LC_ALL=C
REPS=3
BUDGET=70 # seconds: no new repetition starts after this (the whole demo: < 2 min)
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=${2:?}; shift ;;
    --budget) BUDGET=${2:?}; shift ;;
    *) echo "usage: $0 [--reps N] [--budget SECONDS]" >&2; exit 2 ;;
  esac
  shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
for c in redis-server redis-benchmark redis-cli; do
  command -v $c >/dev/null || { echo "redis_demo: $c missing (make deps)" >&2; exit 2; }
done
[ -f "$BUILD/libshmshim.so" ] || { echo "redis_demo: $BUILD/libshmshim.so missing (make lib)" >&2; exit 2; }

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
T=$(mktemp -d /tmp/redis_demo.XXXXXX) || exit 1
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'echo "redis_demo: interrupted" >&2; exit 130' INT TERM
# A private copy: others may rebuild build/ meanwhile.
cp "$BUILD/libshmshim.so" "$T/libshmshim.so"
LIB=$T/libshmshim.so
SLOG=$T/server.log CLOG=$T/client.log

port_free() { ! awk 'FNR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 | grep -qx "$(printf %04X "$1")"; }
pick_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    port_free "$p" && { echo "$p"; return; }
  done
  echo "redis_demo: no free port" >&2
  exit 1
}

# start NAME SHIM: one redis-server on a TCP port and a unix socket.
start() {
  local name=$1 shim=$2 port
  port=$(pick_port)
  local envs=(env -u LD_PRELOAD)
  [ "$shim" = 1 ] && envs=(env "LD_PRELOAD=$LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$SLOG")
  "${envs[@]}" redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$T/$name.sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$T" --daemonize no --loglevel warning --logfile "$T/$name.out" &
  PIDS+=($!)
  local i
  for i in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$port" PING >/dev/null 2>&1 || { echo "redis_demo: $name redis-server did not start" >&2; exit 1; }
  printf -v "PORT_$name" '%s' "$port"
}
start plain 0
start shim 1
# The readiness probes above were plain clients: start counting from here.
: >"$SLOG"

# One measurement. run VARIANT(plain|shim) TRANSPORT(tcp|unix) -> lines into $T/results:
#   VARIANT TRANSPORT KEY VALUE
run() {
  local v=$1 tr=$2 where envs out
  if [ "$tr" = tcp ]; then
    local pv=PORT_$v
    where=(-h 127.0.0.1 -p "${!pv}")
  else
    where=(-s "$T/$v.sock")
  fi
  envs=(env -u LD_PRELOAD)
  [ "$v" = shim ] && envs=(env "LD_PRELOAD=$LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$CLOG")
  local cfg n c p
  for cfg in "c1:20000:1:1" "c50:50000:50:1" "c50p16:200000:50:16"; do
    IFS=: read -r name n c p <<<"$cfg"
    out=$("${envs[@]}" timeout 120 redis-benchmark "${where[@]}" -t set,get -n "$n" -c "$c" -P "$p" --csv 2>&1)
    if [ $? != 0 ] || ! grep -q '^"GET"' <<<"$out" || grep -qi error <<<"$out"; then
      echo "redis_demo: redis-benchmark failed ($v $tr $name):" >&2
      echo "$out" | tail -n 5 >&2
      exit 1
    fi
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    awk -F'"' -v v="$v" -v tr="$tr" -v name="$name" '$2 == "SET" || $2 == "GET" {
      print v, tr, $2 "-" name "-rps", $4; print v, tr, $2 "-" name "-p50", $10 * 1000; print v, tr, $2 "-" name "-p99", $14 * 1000 }' \
      <<<"$out" >>"$T/results"
  done
  # redis-cli --latency until interrupted; --raw prints "min max avg samples" (ms).
  out=$("${envs[@]}" timeout -s INT 2 redis-cli "${where[@]}" --latency --raw 2>&1 | tail -n 1)
  read -r lmin lmax lavg lsamples <<<"$out"
  if [ -z "${lsamples:-}" ]; then
    echo "redis_demo: redis-cli --latency printed '$out' ($v $tr)" >&2
    exit 1
  fi
  echo "$v $tr lat-avg $(awk -v a="$lavg" 'BEGIN { print a * 1000 }')" >>"$T/results"
}

reps=0
for ((r = 1; r <= REPS; r++)); do
  for tr in tcp unix; do
    # Alternate which variant goes first.
    if [ $((r % 2)) = 1 ]; then run plain $tr; run shim $tr; else run shim $tr; run plain $tr; fi
  done
  reps=$r
  [ $(($(date +%s) - T0)) -gt $BUDGET ] && break
done

# Upgrade check: every connection of the shimmed runs upgraded at both ends.
bad=""
for fam in tcp4 unix; do
  s=$(grep -c " upgraded fd=[0-9]* role=server family=$fam " "$SLOG")
  c=$(grep -c " upgraded fd=[0-9]* role=client family=$fam " "$CLOG")
  eval "UP_$fam=$s"
  [ "$s" -gt 0 ] && [ "$s" = "$c" ] || bad="$bad $fam: $s server ends, $c client ends;"
done
plain=$(cat "$SLOG" "$CLOG" | grep -c -e ' plain fd=' -e ' warn ')
[ "$plain" = 0 ] || bad="$bad $plain plain connections or warnings;"
if [ -n "$bad" ]; then
  echo "redis_demo: UPGRADE CHECK FAILED:$bad" >&2
  grep -h -e ' plain fd=' -e ' warn ' "$SLOG" "$CLOG" | head -5 >&2
  exit 1
fi

# The table: medians, then ratios.
awk -v reps="$reps" '
  function median(k,   n, i, j, t, a) {
    n = split(vals[k], a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function ops(x) { return x >= 1e6 ? sprintf("%.2fM", x / 1e6) : x >= 1e4 ? sprintf("%.0fk", x / 1e3) : sprintf("%.1fk", x / 1e3) }
  function us(x) { return x < 10 ? sprintf("%.1f", x) : sprintf("%.0f", x) }
  function ratio(x) { return x >= 10 ? sprintf("%.0fx", x) : sprintf("%.1fx", x) }
  { vals[$1 " " $2 " " $3] = vals[$1 " " $2 " " $3] " " $4 }
  function rps_row(title, key,   line, tr, p, s) {
    line = "| " title
    for (tr = 1; tr <= 2; tr++) {
      p = median("plain " T[tr] " " key); s = median("shim " T[tr] " " key)
      line = line " | " ops(p) " | " ops(s) " | " ratio(s / p)
    }
    print line " |"
  }
  function lat_row(title, key,   line, tr, p50, s50, p99, s99) {
    line = "| " title
    for (tr = 1; tr <= 2; tr++) {
      p50 = median("plain " T[tr] " " key "-p50"); s50 = median("shim " T[tr] " " key "-p50")
      p99 = median("plain " T[tr] " " key "-p99"); s99 = median("shim " T[tr] " " key "-p99")
      line = line " | " us(p50) " / " us(p99) " µs | " us(s50) " / " us(s99) " µs | " \
        (s50 > 0 && s99 > 0 ? ratio(p50 / s50) " / " ratio(p99 / s99) : "-")
    }
    print line " |"
  }
  END {
    T[1] = "tcp"; T[2] = "unix"
    print "| redis-benchmark (or redis-cli) | TCP plain | TCP shimmed | speed-up | unix plain | unix shimmed | speed-up |"
    print "|---|---:|---:|---:|---:|---:|---:|"
    rps_row("SET, 1 client: requests/s", "SET-c1-rps")
    rps_row("GET, 1 client: requests/s", "GET-c1-rps")
    lat_row("GET, 1 client: p50 / p99 latency", "GET-c1")
    rps_row("SET, 50 clients: requests/s", "SET-c50-rps")
    rps_row("GET, 50 clients: requests/s", "GET-c50-rps")
    lat_row("GET, 50 clients: p50 / p99 latency", "GET-c50")
    rps_row("SET, 50 clients, pipeline 16: requests/s", "SET-c50p16-rps")
    rps_row("GET, 50 clients, pipeline 16: requests/s", "GET-c50p16-rps")
    line = "| `redis-cli --latency` (PING every 10 ms): average"
    for (tr = 1; tr <= 2; tr++) {
      p = median("plain " T[tr] " lat-avg"); s = median("shim " T[tr] " lat-avg")
      line = line " | " us(p) " µs | " us(s) " µs | " (s > 0 ? ratio(p / s) : "-")
    }
    print line " |"
  }' "$T/results"
echo
echo "redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p'), $(nproc) CPUs (machine load average $LOAD0" \
  "before, $(cut -d' ' -f1 /proc/loadavg) after), default shim configuration; median of $reps interleaved runs" \
  "per cell; \"shimmed\": LD_PRELOAD on server and client. Latency percentiles are redis-benchmark's own."
echo "Upgrades verified in the shim's logs: all $UP_tcp4 TCP and $UP_unix unix connections of the shimmed runs" \
  "upgraded at both ends, none plain. Run time: $(($(date +%s) - T0)) s."

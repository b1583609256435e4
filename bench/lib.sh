# Helpers shared by the bench sections (sourced by bench/run.sh; bash).
#
# Results go to $RAW, one measurement per line, tab-separated:
#   SECTION  CELL  VARIANT  REP  METRIC  VALUE
# and a run that failed or whose upgrade check failed as
#   SECTION  CELL  VARIANT  REP  INVALID  REASON
# bench/report.awk turns them into tables: medians over the repetitions with their
# min-max spread, ratios, and the targets.

# ------------------------------------------------------------------ records

say() { printf '%s\n' "$*" >&2; }

# rec SECTION CELL VARIANT REP METRIC VALUE
rec() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$RAW"; }

# invalid SECTION CELL VARIANT REP REASON...: records the run as invalid and keeps
# the last 300 lines of the logs named in KEEP (set by the run functions) in
# $OUT/invalid/, for the post-mortem.
KEEP=()
invalid() {
  local s=$1 c=$2 v=$3 r=$4 f
  shift 4
  local why
  why=$(printf '%s' "$*" | tr '\t\n' '  ' | cut -c1-300)
  printf '%s\t%s\t%s\t%s\tINVALID\t%s\n' "$s" "$c" "$v" "$r" "$why" >>"$RAW"
  NINVALID=$((NINVALID + 1))
  say "  INVALID: $s $c $v rep $r: $why"
  for f in "${KEEP[@]}"; do
    [ -s "$f" ] || continue
    mkdir -p "$OUT/invalid"
    tail -300 "$f" >"$OUT/invalid/$NINVALID-$s-$c-$v-$r-$(basename "$f")"
  done
}

# kv KEY LINE: the value of KEY=value in a line of key=value words.
kv() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<" $2" | head -1; }

# rotate REP ITEMS...: the items, starting at REP modulo their count, so that every
# variant runs first, second, ... equally often over the repetitions.
rotate() {
  local r=$1
  shift
  local a=("$@") n=$# i
  for ((i = 0; i < n; i++)); do printf '%s\n' "${a[$(((i + r) % n))]}"; done
}

# ------------------------------------------------------------------ ports and processes

# next_port: sets PORT to a TCP port nobody uses, from a private range (not the
# ephemeral one). new_port: the same, printed.
next_port() {
  local i hex
  for ((i = 0; i < 50; i++)); do
    PORT=$((20000 + RANDOM % 9000))
    printf -v hex ':%04X ' "$PORT"
    grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null || return 0
  done
  say "lib.sh: no free port found"
  return 1
}
new_port() { next_port && echo "$PORT"; }

BG_PIDS=()
# bg_start OUTFILE CMD...: starts CMD in the background (stdout+stderr to OUTFILE)
# and sets BG to its PID (env and timeout exec or wait for the real program).
bg_start() {
  local out=$1
  shift
  "$@" >"$out" 2>&1 &
  BG=$!
  BG_PIDS+=("$BG")
}

# bg_stop PID [SIGNAL]: ends one process we started and waits for it (bounded).
bg_stop() {
  local pid=$1 sig=${2:-TERM} i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -"$sig" "$pid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

bg_stop_all() {
  local p
  for p in "${BG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null; done
  sleep 0.2
  for p in "${BG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  BG_PIDS=()
}

# wait_until SECONDS CMD...: polls CMD every 50 ms until it succeeds; 1 on timeout.
wait_until() {
  local n=$(($1 * 20))
  shift
  while ((n-- > 0)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  return 1
}

# children PID: the direct children of a process (nginx workers).
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep .; }

# cpu_ns PID...: nanoseconds on CPU of every thread of these processes so far
# (schedstat: exact, unlike the tick-sampled utime/stime).
cpu_ns() {
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{s += $1} END {printf "%.0f", s}'
}

# timed OUT ERR CMD...: runs CMD (stdout to OUT, stderr to ERR); sets RC and CPU_S,
# the user+system CPU seconds of CMD and its children (getrusage, via bash's time).
timed() {
  local out=$1 err=$2 tf=$TMP/time.$$
  shift 2
  local TIMEFORMAT='%3U %3S'
  { time "$@" >"$out" 2>"$err"; } 2>"$tf"
  RC=$?
  # time's line is the last of the file (a killed command's shell message may precede it)
  CPU_S=$(tail -1 "$tf" | awk 'NF == 2 {printf "%.3f", $1 + $2}')
  [ -n "$CPU_S" ] || CPU_S=0
  rm -f "$tf"
  return 0
}

# ------------------------------------------------------------------ variants

# venv VARIANT LOGFILE: sets ENVV, the env(1) prefix of a process of this variant:
# plain-* without the library, shim-* with it and logging to LOGFILE (the upgrade
# check reads it), shimnolog-* with it and no log (default settings), lowlat-* with
# it, the log, and $LOWLAT_ENV.
venv() {
  local v=$1 lf=$2
  ENVV=(env -u LD_PRELOAD -u SHMSHIM_LOG -u SHMSHIM_LOG_FILE)
  case $v in
    plain*) ;;
    shimnolog*) ENVV+=(LD_PRELOAD="$LIB") ;;
    shim*) ENVV+=(LD_PRELOAD="$LIB" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$lf") ;;
    lowlat*) ENVV+=(LD_PRELOAD="$LIB" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$lf" $LOWLAT_ENV) ;;
    *) say "lib.sh: unknown variant $v"; return 1 ;;
  esac
}

is_shim() { case $1 in shim* | lowlat*) return 0 ;; esac; return 1; }
logged() { case $1 in shim-* | lowlat-*) return 0 ;; esac; return 1; }
fam_of() { case $1 in *tcp*) echo tcp4 ;; *) echo unix ;; esac; }

# ------------------------------------------------------------------ upgrade checks
# Each prints nothing when the check passes, else the reason.

# log_sum LOG FAMILY [SKIP]: one pass over a shim log (after its first SKIP lines): "C S U B" = client-side and
# server-side upgrades of this family, the exit statistics' upgraded_client sum,
# and plain connections + rejected offers + warnings (sum); then the first bad line.
log_sum() {
  awk -v fam="family=$2" -v skip="${3:-0}" 'NR <= skip {next}
    / upgraded fd=[0-9]* role=client / && index($0, " " fam " ") { c++ }
    / upgraded fd=[0-9]* role=server / && index($0, " " fam " ") { s++ }
    / stats upgraded_client=/ {
      for (i = 1; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "upgraded_client") u += kv[2]
        if (kv[1] == "plain_client" || kv[1] == "plain_server" || kv[1] == "offers_rejected") { b += kv[2]; if (kv[2] > 0 && bad == "") bad = $0 }
      }
      st++
    }
    / warn / || / plain fd=/ { b++; if (bad == "") bad = $0 }
    END { printf "%d %d %d %d %d %s\n", c, s, u, b, st, bad }' "$1" 2>/dev/null
}

# check_client_log LOG FAMILY MIN: a shimmed client's log (possibly shared with its
# forked server): at least MIN client connections upgraded with this family, as
# many as the exit statistics of all its processes say, and no plain connection,
# rejected offer or warning.
check_client_log() {
  local c s u b st bad
  [ -s "$1" ] || { echo "no shim log (library not loaded?)"; return; }
  read -r c s u b st bad < <(log_sum "$1" "$2")
  if [ "$st" = 0 ]; then
    echo "no exit statistics in the client's log"
  elif [ "$c" -lt "$3" ] || [ "$c" != "$u" ]; then
    echo "client log: $c connection(s) upgraded (stats: $u), expected at least $3 ($2)"
  elif [ "$b" != 0 ]; then
    echo "log has plain connections, rejected offers or warnings: $bad"
  fi
}

# log_mark LOG: how many lines a (server's) log holds so far.
log_mark() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# check_server_log LOG FAMILY MARK WANT [EXTRA [IGNORE]]: the lines the server's log
# gained since it held MARK lines show WANT (up to WANT+EXTRA) upgrades and no
# warning or plain connection, except warnings matching the regex IGNORE. (EXTRA:
# connections a client opens and closes without a byte, such as wrk's reachability
# probe, are offered by the server but never taken by the client.)
check_server_log() {
  local c s u b st bad
  if [ -n "${6:-}" ]; then
    # the mark counts lines of the whole log: skip them before leaving any out
    read -r c s u b st bad < <(tail -n +$(($3 + 1)) "$1" | grep -v -E "$6" | log_sum /dev/stdin "$2" 0)
  else
    read -r c s u b st bad < <(log_sum "$1" "$2" "$3")
  fi
  if [ "$s" -lt "$4" ] || [ "$s" -gt $(($4 + ${5:-0})) ]; then
    echo "server log: $s server-side upgrades during the run, expected $4$([ "${5:-0}" != 0 ] && echo " to $(($4 + $5))")"
  elif [ "$b" != 0 ]; then
    echo "server log has warnings or plain connections: $bad"
  fi
}

# check_maps PID 0|1: the library is (1) or is not (0) mapped in the process.
check_maps() {
  local has=0
  grep -q 'libshmshim' /proc/"$1"/maps 2>/dev/null && has=1
  [ "$has" = "$2" ] || echo "pid $1: libshmshim $([ "$2" = 1 ] && echo not) mapped"
}

# check_plain_log LOG: a plain process logs nothing (the library is not there).
check_plain_log() { [ -s "$1" ] && echo "plain variant, but the shim logged: $(head -1 "$1")"; return 0; }

# ------------------------------------------------------------------ machine

# CPU accounting of the whole machine (USER_HZ ticks) and of everything we run: our
# process group's live processes plus what their waited-for children used, so that
# a section can say how much of the machine others used meanwhile.
cpu_snap() {
  local busy ours pg
  busy=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat)
  pg=$(sed 's/^.*) //' /proc/$$/stat | awk '{print $3}')
  ours=$(cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^.*) //' |
    awk -v pg="$pg" '$3 == pg {s += $12 + $13 + $14 + $15} END {print s + 0}')
  echo "$busy $ours $(date +%s.%N)"
}
# other_cpu SNAP0 SNAP1: percent of one CPU used by processes other than ours.
other_cpu() {
  awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, x, " "); split(b, y, " "); o = (y[1] - x[1]) - (y[2] - x[2]); if (o < 0) o = 0
    w = y[3] - x[3]; printf "%.0f", (w > 0 ? 100 * o / hz / w : 0) }'
}

# smaps KEY PID: a field of /proc/PID/smaps_rollup, in kB (0 if absent).
smaps() { awk -v k="$1:" '$1 == k {print $2; f = 1} END {if (!f) print 0}' /proc/"$2"/smaps_rollup 2>/dev/null; }

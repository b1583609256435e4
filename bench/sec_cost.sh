# Sections 5-7 (sourced by bench/run.sh): what the library costs.
#   5. preloaded where nothing is accelerated: bench/io_loop on a pipe, a file and
#      sockets to an unshimmed peer, with and without LD_PRELOAD (time per
#      operation, alternated, many repetitions; and callgrind instruction counts);
#   6+7. an idle shimmed server: a fresh redis-server and bench/loadgen (hold) with
#      IDLE_CONNS connections that each carried IDLE_VALUE bytes each way: CPU of
#      both processes while idle, and the resident memory per connection right
#      after the traffic (busy) and after IDLE_S seconds without any.

# ------------------------------------------------------------------ 5. preload cost

# io_run KIND CELL VARIANT REP: one timed io_loop run (plain: no library; preloaded:
# the library and its log, which must show no upgrade, and for sockets the
# connection judged plain).
io_run() {
  local kind=$1 cell=$2 v=$3 rep=$4 lf=$TMP/io.log out=$TMP/io.out err=$TMP/io.err line why=""
  rm -f "$lf"
  local e=(env -u LD_PRELOAD -u SHMSHIM_LOG -u SHMSHIM_LOG_FILE)
  [ "$v" = preloaded ] && e+=(LD_PRELOAD="$LIB" SHMSHIM_LOG=info SHMSHIM_LOG_FILE="$lf")
  timeout -k 5 60 "${e[@]}" "$BIN/io_loop" "$kind" --time "$PRE_MS" --watchdog 50 >"$out" 2>"$err"
  RC=$?
  line=$(grep '^IOLOOP ' "$out")
  KEEP=("$lf" "$err")
  if [ $RC != 0 ] || [ -z "$line" ]; then
    why="io_loop exit $RC: $(head -2 "$err")"
  elif [ "$v" = preloaded ]; then
    grep -q ' upgraded fd=' "$lf" 2>/dev/null && why="preloaded run upgraded a connection"
    case $cell in tcp4 | unix) grep -q 'stats .*plain_client=1 ' "$lf" 2>/dev/null ||
      why="$why; the library did not see the socket as a plain connection: $(head -2 "$lf" 2>/dev/null)" ;; esac
  else
    why=$(check_plain_log "$lf")
  fi
  if [ -n "$why" ]; then
    invalid preload "$cell" "$v" "$rep" "${why#; }"
    return
  fi
  rec preload "$cell" "$v" "$rep" ns_op "$(kv ns_per_op "$line")"
}

# ir_run KIND CELL VARIANT: instructions per operation in io_ops() (callgrind).
ir_run() {
  KEEP=()
  local kind=$1 cell=$2 v=$3 cg=$TMP/cg.out ir
  local e=(env -u LD_PRELOAD -u SHMSHIM_LOG -u SHMSHIM_LOG_FILE)
  [ "$v" = preloaded ] && e+=(LD_PRELOAD="$LIB")
  rm -f "$cg"
  timeout -k 5 120 "${e[@]}" valgrind --tool=callgrind --toggle-collect=io_ops --callgrind-out-file="$cg" \
    "$BIN/io_loop" "$kind" --iters "$CG_ITERS" --watchdog 110 >"$TMP/cg.stdout" 2>"$TMP/cg.err"
  RC=$?
  ir=$(awk '/^summary:/ {print $2}' "$cg" 2>/dev/null)
  if [ $RC != 0 ] || [ -z "$ir" ]; then
    invalid preload-ir "$cell" "$v" 1 "valgrind exit $RC: $(grep -v '^==' "$TMP/cg.err" | head -2)"
    return
  fi
  rec preload-ir "$cell" "$v" 1 ir_op "$(awk -v i="$ir" -v n="$CG_ITERS" 'BEGIN {printf "%.1f", i / n}')"
}

section_preload() {
  KEEP=()
  say "== 5. preloaded, nothing accelerated"
  local tport pid1 pid2 rep k v kinds
  tport=$(new_port) || return
  bg_start "$TMP/echo1.out" env -u LD_PRELOAD "$BIN/io_loop" serve "tcp4:$tport" --watchdog 3600
  pid1=$BG
  bg_start "$TMP/echo2.out" env -u LD_PRELOAD "$BIN/io_loop" serve "unix:$TMP/echo.sock" --watchdog 3600
  pid2=$BG
  wait_until 10 grep -q ready "$TMP/echo1.out" && wait_until 10 grep -q ready "$TMP/echo2.out" || {
    invalid preload all all 0 "io_loop echo servers did not start"
    return
  }
  kinds=("pipe pipe" "file:$TMP/io.file file" "tcp4:$tport tcp4" "unix:$TMP/echo.sock unix")
  for ((rep = 1; rep <= PRE_REPS; rep++)); do
    for k in "${kinds[@]}"; do
      for v in $(rotate "$rep" plain preloaded); do io_run ${k% *} ${k#* } "$v" "$rep"; done
    done
    printf '.' >&2
  done
  if command -v valgrind >/dev/null; then
    for k in "${kinds[@]}"; do
      for v in plain preloaded; do ir_run ${k% *} ${k#* } "$v"; done
    done
  else
    invalid preload-ir all all 1 "valgrind not installed"
  fi
  bg_stop "$pid1"
  bg_stop "$pid2"
  say ""
}

# ------------------------------------------------------------------ 6+7. idle CPU and memory

# hold_run SERVER VARIANT REP: see the header (SERVER: a redis_start name).
# Records idle CPU (% of one CPU) of server and client, and per connection:
# resident ring memory (shared memory of both processes: Pss_Shmem, so a page
# mapped by both counts once) and the server's and client's whole Rss, busy and idle.
hold_run() {
  local name=$1 v=$2 rep=$3 clf=$TMP/hold.log.$3.$2 fifo=$TMP/hold.fifo out=$TMP/hold.out
  local spid where before s0 s1 c0 c1 w0 w1 cpid why="" n=$IDLE_CONNS
  spid=${REDIS_PID[$name]}
  where=$([[ $v == *tcp* ]] && echo "tcp4:${REDIS_TCP[$name]}" || echo "unix:$TMP/redis-$name/sock")
  rm -f "$clf" "$fifo"
  mkfifo "$fifo"
  venv "$v" "$clf"
  before=$(log_mark "${REDIS_LOG[$name]}")
  KEEP=("$clf" "$out" "${REDIS_LOG[$name]}")
  local base_rss base_shm
  base_rss=$(smaps Rss "$spid") base_shm=$(smaps Pss_Shmem "$spid")
  "${ENVV[@]}" "$BIN/loadgen" "$where" hold --conns "$n" --value "$IDLE_VALUE" --watchdog 300 \
    <"$fifo" >"$out" 2>&1 &
  cpid=$!
  BG_PIDS+=("$cpid")
  exec 9>"$fifo"
  if ! wait_until 60 grep -q 'hold ready' "$out"; then
    exec 9>&-
    bg_stop "$cpid"
    invalid idle "redis-${n}c" "$v" "$rep" "loadgen hold did not get ready: $(head -2 "$out")"
    return
  fi
  # busy: right after every connection carried its traffic
  local b_srv b_cli b_shm
  b_srv=$(smaps Rss "$spid") b_cli=$(smaps Rss "$cpid")
  b_shm=$(($(smaps Pss_Shmem "$spid") - base_shm + $(smaps Pss_Shmem "$cpid")))
  sleep "$IDLE_SETTLE"
  s0=$(cpu_ns "$spid") c0=$(cpu_ns "$cpid") w0=$(date +%s%N)
  sleep "$IDLE_S"
  s1=$(cpu_ns "$spid") c1=$(cpu_ns "$cpid") w1=$(date +%s%N)
  local i_srv i_cli i_shm
  i_srv=$(smaps Rss "$spid") i_cli=$(smaps Rss "$cpid")
  i_shm=$(($(smaps Pss_Shmem "$spid") - base_shm + $(smaps Pss_Shmem "$cpid")))
  exec 9>&- # loadgen wakes up, PINGs every connection once more and exits
  local t
  for t in $(seq 200); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.05; done
  wait "$cpid"
  RC=$?
  grep -q 'hold done' "$out" && [ $RC = 0 ] || why="loadgen hold exit $RC: $(grep -v LOADGEN "$out" | head -2)"
  if [ -z "$why" ]; then
    if is_shim "$v"; then
      why=$(check_client_log "$clf" "$(fam_of "$v")" "$n")
      [ -z "$why" ] && why=$(check_server_log "${REDIS_LOG[$name]}" "$(fam_of "$v")" "$before" "$n")
    else
      why=$(check_plain_log "$clf")$(check_maps "$spid" 0)
    fi
  fi
  if [ -n "$why" ]; then
    invalid idle "redis-${n}c" "$v" "$rep" "$why"
    return
  fi
  local c="redis-${n}c"
  rec idle "$c" "$v" "$rep" srv_pct "$(awk -v a="$s0" -v b="$s1" -v w="$((w1 - w0))" 'BEGIN {printf "%.3f", 100 * (b - a) / w}')"
  rec idle "$c" "$v" "$rep" cli_pct "$(awk -v a="$c0" -v b="$c1" -v w="$((w1 - w0))" 'BEGIN {printf "%.3f", 100 * (b - a) / w}')"
  rec mem "$c" "$v" "$rep" ring_busy_kb "$(awk -v a="$b_shm" -v n="$n" 'BEGIN {printf "%.1f", a / n}')"
  rec mem "$c" "$v" "$rep" ring_idle_kb "$(awk -v a="$i_shm" -v n="$n" 'BEGIN {printf "%.1f", a / n}')"
  rec mem "$c" "$v" "$rep" srv_busy_kb "$(awk -v a="$b_srv" -v z="$base_rss" -v n="$n" 'BEGIN {printf "%.1f", (a - z) / n}')"
  rec mem "$c" "$v" "$rep" srv_idle_kb "$(awk -v a="$i_srv" -v z="$base_rss" -v n="$n" 'BEGIN {printf "%.1f", (a - z) / n}')"
  rec mem "$c" "$v" "$rep" cli_busy_kb "$(awk -v a="$b_cli" -v n="$n" 'BEGIN {printf "%.1f", a / n}')"
  rec mem "$c" "$v" "$rep" cli_idle_kb "$(awk -v a="$i_cli" -v n="$n" 'BEGIN {printf "%.1f", a / n}')"
}

section_idle() {
  KEEP=()
  say "== 6+7. idle server: CPU and memory per connection"
  local rep v name
  for ((rep = 1; rep <= IDLE_REPS; rep++)); do
    for v in $(rotate "$rep" plain-unix shim-unix shim-tcp); do
      # a fresh server per run, so that its memory growth is this run's alone
      name=idle$rep${v//-/}
      if redis_start "$name" "$v"; then
        hold_run "$name" "$v" "$rep"
      else
        invalid idle "redis-${IDLE_CONNS}c" "$v" "$rep" "redis-server did not start"
      fi
      bg_stop "${REDIS_PID[$name]}"
    done
    printf '.' >&2
  done
  say ""
}

# Section 9 (sourced by bench/run.sh): regimes where the shim must be no slower
# than plain (issue 13), each cell with CPU per request of server and client:
#   a. idle members: redis-server holding RG_IDLE_COUNTS idle upgraded connections
#      over RG_IDLE_FAM (tcp or unix; bench/loadgen hold: each SET and GET a 16-byte
#      value, so both directions switched to the ring, then asleep in poll()),
#      measured with redis-benchmark -t get -c 1 and -c 50 over the unix socket;
#      and how long setting up the idle members took;
#   b. sparse requests: one PING every 100 µs, 1 ms, 10 ms, 100 ms (bench/loadgen
#      lat), p50 and p99, TCP and unix;
#   c. churn: connect + PING + close, one at a time, for RG_CHURN_MS, then one long
#      connection right after (RG_LONG_N PINGs back to back), TCP and unix, with
#      default settings (the short-connection heuristic at work);
#   d. memcached -t 4, 50 connections (bench/loadgen mc), TCP and unix;
#   e. rsync daemon over TCP, pull and push of a 100 MB file;
#   f. haproxy (HTTP) -> nginx, 1 MiB responses, wrk -c RG_HA_CONNS.
# Servers of this section are its own (fresh redis-servers, a memcached per
# variant, an rsync daemon, haproxy and nginx), on private ports and in $TMP.
# Every shimmed run must show its connections upgraded at both ends (the shim's
# logs; for (a) also the idle ones), every plain run no library. The churn cell
# records how many short connections and whether the long one were upgraded:
# staying plain there is the heuristic's decision, reported, not a failure.
# RG_PARTS (environment, comma list) runs only some of the parts: idle, sparse,
# churn, memcached, rsync, haproxy (default all).
# Rows: SECTION regimes, CELL ending in the family (tcp or unix), variants
# plain-FAM and shim-FAM; srv_us / cli_us: CPU µs per request of server(s) and client.

RG_VARIANTS_TCP="plain-tcp shim-tcp"
RG_VARIANTS_UNIX="plain-unix shim-unix"

# rg_cpu_ticks PID: user+system CPU of a process and its reaped children, in µs
# (/proc stat fields utime stime cutime cstime; tick resolution).
rg_cpu_ticks() {
  sed 's/^.*) //' /proc/"$1"/stat 2>/dev/null |
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.0f", ($12 + $13 + $14 + $15) * 1e6 / hz}'
}

# ------------------------------------------------------------------ a. idle members

declare -A RG_HOLD_PID RG_HOLD_FD RG_HOLD_LOG RG_HOLD_OUT
# rg_hold_start VARIANT N: loadgen hold with N connections to the variant's
# rg server; checks that every one is upgraded at both ends (shim) once ready.
rg_hold_start() {
  local v=$1 n=$2 name=rg${1%%-*} fifo=$TMP/rghold.fifo.$1 out=$TMP/rghold.out.$1 clf=$TMP/rghold.log.$1.$2
  local before why="" fd c where lf
  where=$([ "$RG_IDLE_FAM" = tcp ] && echo "tcp4:${REDIS_TCP[$name]}" || echo "unix:$TMP/redis-$name/sock")
  lf=$([ "$RG_IDLE_FAM" = tcp ] && echo tcp4 || echo unix)
  rm -f "$fifo" "$clf"
  mkfifo "$fifo"
  venv "$v" "$clf"
  before=$(log_mark "${REDIS_LOG[$name]}")
  KEEP=("$clf" "$out" "${REDIS_LOG[$name]}")
  # the other hold's fifo must not stay open in this one (it would never see EOF)
  (
    for fd in "${RG_HOLD_FD[@]}"; do eval "exec $fd>&-"; done
    exec "${ENVV[@]}" "$BIN/loadgen" "$where" hold --conns "$n" --value 16 --watchdog 900
  ) <"$fifo" >"$out" 2>&1 &
  RG_HOLD_PID[$v]=$!
  BG_PIDS+=("$!")
  exec {fd}>"$fifo"
  RG_HOLD_FD[$v]=$fd RG_HOLD_LOG[$v]=$clf RG_HOLD_OUT[$v]=$out
  RG_HOLD_MS=""
  if ! wait_until "$RG_HOLD_WAIT" grep -q 'hold ready' "$out"; then
    why="loadgen hold ($n connections) did not get ready in $RG_HOLD_WAIT s: $(head -2 "$out")"
  elif is_shim "$v"; then
    c=$(grep -c " upgraded fd=[0-9]* role=client family=$lf " "$clf")
    [ "$c" = "$n" ] || why="idle client: $c of $n connections upgraded"
    [ -z "$why" ] && why=$(check_server_log "${REDIS_LOG[$name]}" "$lf" "$before" "$n")
  else
    why=$(check_plain_log "$clf")
  fi
  # connect + SET + GET of all N, one after the other, as loadgen timed it (the
  # clock here, around a 50 ms polling loop and the log checks, made the 100
  # members' cell mostly noise)
  [ -z "$why" ] && RG_HOLD_MS=$(kv setup_ms "$(grep 'hold ready' "$out")")
  [ -z "$why" ] && [ -z "$RG_HOLD_MS" ] && why="loadgen hold gave no setup_ms"
  RG_HOLD_WHY=$why
}

# rg_hold_stop VARIANT N: wakes the hold up (it checks every connection once more)
# and checks its exit and its log; sets RG_HOLD_WHY to the reason if a check failed.
rg_hold_stop() {
  local v=$1 n=$2 pid=${RG_HOLD_PID[$1]} t fd=${RG_HOLD_FD[$1]}
  RG_HOLD_WHY=""
  exec {fd}>&-
  unset "RG_HOLD_FD[$v]"
  for t in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && { bg_stop "$pid"; RG_HOLD_WHY="loadgen hold did not finish"; return; }
  wait "$pid"
  t=$?
  grep -q 'hold done' "${RG_HOLD_OUT[$v]}" && [ $t = 0 ] ||
    { RG_HOLD_WHY="loadgen hold exit $t: $(grep -v LOADGEN "${RG_HOLD_OUT[$v]}" | head -2)"; return; }
  is_shim "$v" && RG_HOLD_WHY=$(check_client_log "${RG_HOLD_LOG[$v]}" "$([ "$RG_IDLE_FAM" = tcp ] && echo tcp4 || echo unix)" "$n")
}

rg_idle() {
  local n rep v c cfg inv
  for n in $RG_IDLE_COUNTS; do
    inv=""
    if [ "$n" -gt 0 ]; then
      for v in $RG_VARIANTS_UNIX; do
        rg_hold_start "$v" "$n"
        if [ -n "$RG_HOLD_WHY" ]; then
          inv="$inv $v:$RG_HOLD_WHY"
          invalid regimes "setup$n-$RG_IDLE_FAM" "$v" 1 "$RG_HOLD_WHY"
        else
          rec regimes "setup$n-$RG_IDLE_FAM" "$v" 1 setup_ms "$RG_HOLD_MS"
        fi
      done
    fi
    for c in 1 50; do
      cfg=c${c}P1
      for ((rep = 1; rep <= RG_REPS; rep++)); do
        for v in $(rotate "$rep" $RG_VARIANTS_UNIX); do
          RB_SRV=rg RB_CELL=idle$n$RG_IDLE_FAM-c$c-unix redis_bench "$v" "$cfg" "$rep" regimes get
          [ "$n" -gt 0 ] && is_shim "$v" && rec regimes "idle$n$RG_IDLE_FAM-c$c-unix-GET" "$v" "$rep" idle_upg \
            "$(grep -c " upgraded fd=[0-9]* role=client family=$([ "$RG_IDLE_FAM" = tcp ] && echo tcp4 || echo unix) " "${RG_HOLD_LOG[$v]}")"
        done
      done
    done
    if [ "$n" -gt 0 ]; then
      for v in $RG_VARIANTS_UNIX; do
        rg_hold_stop "$v" "$n"
        [ -n "$RG_HOLD_WHY" ] && inv="$inv $v:$RG_HOLD_WHY"
      done
    fi
    # an idle set that was not what it must be invalidates its cells
    if [ -n "$inv" ]; then
      for c in 1 50; do for v in $RG_VARIANTS_UNIX; do
        [[ $inv == *" $v:"* ]] && invalid regimes "idle$n$RG_IDLE_FAM-c$c-unix-GET" "$v" 0 "idle connections: ${inv#* }"
      done; done
    fi
    printf '.' >&2
  done
}

# ------------------------------------------------------------------ b. sparse requests

# rg_lat VARIANT INTERVAL_US SAMPLES REP: loadgen lat against the variant's rg server.
rg_lat() {
  local v=$1 us=$2 ns=$3 rep=$4 name=rg${1%%-*} fam cell clf=$TMP/rglat.log out=$TMP/rglat.out err=$TMP/rglat.err
  local where before s0 s1 line why
  fam=${v#*-}
  cell=sparse-$(rg_us_label "$us")-$fam
  where=$([ "$fam" = tcp ] && echo "tcp4:${REDIS_TCP[$name]}" || echo "unix:$TMP/redis-$name/sock")
  rm -f "$clf"
  venv "$v" "$clf"
  before=$(log_mark "${REDIS_LOG[$name]}")
  KEEP=("$clf" "$err" "${REDIS_LOG[$name]}")
  s0=$(cpu_ns "${REDIS_PID[$name]}")
  timed "$out" "$err" timeout -k 5 120 "${ENVV[@]}" "$BIN/loadgen" "$where" lat --interval-us "$us" \
    --samples "$ns" --time $((us * ns / 1000 * 3 + 1000))
  s1=$(cpu_ns "${REDIS_PID[$name]}")
  line=$(grep '^LOADGEN ' "$out")
  if [ $RC != 0 ] || [ -z "$line" ]; then
    why="loadgen exit $RC: $(head -2 "$err")"
  else
    why=$(redis_verify "$name" "$v" "$clf" 1 "$before")
  fi
  if [ -n "$why" ]; then
    invalid regimes "$cell" "$v" "$rep" "$why"
    return
  fi
  local k
  k=$(kv samples "$line")
  rec regimes "$cell" "$v" "$rep" p50_us "$(kv p50_us "$line")"
  rec regimes "$cell" "$v" "$rep" p99_us "$(kv p99_us "$line")"
  # the first PING (connection set-up) is one request more
  rec regimes "$cell" "$v" "$rep" srv_us "$(awk -v a="$s0" -v b="$s1" -v n="$k" 'BEGIN {printf "%.3f", (b - a) / 1e3 / (n + 1)}')"
  rec regimes "$cell" "$v" "$rep" cli_us "$(awk -v c="$CPU_S" -v n="$k" 'BEGIN {printf "%.3f", c * 1e6 / (n + 1)}')"
}
rg_us_label() { if [ "$1" -ge 1000 ]; then echo "$(($1 / 1000))ms"; else echo "${1}us"; fi; }

rg_sparse() {
  local rep v iv us ns
  for ((rep = 1; rep <= RG_REPS; rep++)); do
    for iv in $RG_SPARSE; do
      us=${iv%:*} ns=${iv#*:}
      for v in $(rotate "$rep" plain-tcp shim-tcp plain-unix shim-unix); do rg_lat "$v" "$us" "$ns" "$rep"; done
    done
    printf '.' >&2
  done
}

# ------------------------------------------------------------------ c. churn, then a long connection

# rg_churn VARIANT REP: loadgen churn against the variant's rgc server (its own:
# the server's short-connection statistics must not leak into other cells).
rg_churn() {
  local v=$1 rep=$2 name=rgc${1%%-*} fam clf=$TMP/rgchurn.log.$1.$2 out=$TMP/rgchurn.out err=$TMP/rgchurn.err
  local where before s0 s1 line why="" cell
  fam=${v#*-}
  cell=churn-$fam
  where=$([ "$fam" = tcp ] && echo "tcp4:${REDIS_TCP[$name]}" || echo "unix:$TMP/redis-$name/sock")
  rm -f "$clf"
  venv "$v" "$clf"
  before=$(log_mark "${REDIS_LOG[$name]}")
  KEEP=("$clf" "$err" "${REDIS_LOG[$name]}")
  s0=$(cpu_ns "${REDIS_PID[$name]}")
  timed "$out" "$err" timeout -k 5 120 "${ENVV[@]}" "$BIN/loadgen" "$where" churn --time "$RG_CHURN_MS" --samples "$RG_LONG_N"
  s1=$(cpu_ns "${REDIS_PID[$name]}")
  line=$(grep '^LOADGEN ' "$out")
  local conns lfd up_short=0 long_up=0 lf
  lf=$([ "$fam" = tcp ] && echo tcp4 || echo unix)
  conns=$(kv conns "$line") lfd=$(kv long_fd "$line")
  if [ $RC != 0 ] || [ -z "$line" ]; then
    why="loadgen exit $RC: $(head -2 "$err")"
  elif is_shim "$v"; then
    # the long connection is the last one the client decided on
    local last
    last=$(grep -E " (upgraded|plain) fd=$lfd role=client" "$clf" | tail -1)
    [[ $last == *" upgraded fd=$lfd role=client family=$lf "* ]] && long_up=1
    up_short=$(($(grep -c " upgraded fd=[0-9]* role=client family=$lf " "$clf") - long_up))
    # no warning in either log (plain connections are the heuristic's choice here)
    if ! grep -q ' stats upgraded_client=' "$clf"; then
      why="no exit statistics in the client's log"
    elif grep -q ' warn ' "$clf"; then
      why="client log: $(grep -m1 ' warn ' "$clf")"
    elif tail -n +$((before + 1)) "${REDIS_LOG[$name]}" | grep -q ' warn '; then
      why="server log: $(tail -n +$((before + 1)) "${REDIS_LOG[$name]}" | grep -m1 ' warn ')"
    else
      why=$(check_maps "${REDIS_PID[$name]}" 1)
    fi
  else
    why=$(check_plain_log "$clf")$(check_maps "${REDIS_PID[$name]}" 0)
  fi
  if [ -n "$why" ]; then
    invalid regimes "$cell" "$v" "$rep" "$why"
    return
  fi
  local nreq=$((conns + RG_LONG_N + 1))
  rec regimes "$cell" "$v" "$rep" cps "$(kv conns_per_s "$line")"
  rec regimes "$cell" "$v" "$rep" long_p50_us "$(kv long_p50_us "$line")"
  rec regimes "$cell" "$v" "$rep" long_p99_us "$(kv long_p99_us "$line")"
  rec regimes "$cell" "$v" "$rep" srv_us "$(awk -v a="$s0" -v b="$s1" -v n="$nreq" 'BEGIN {printf "%.3f", (b - a) / 1e3 / n}')"
  rec regimes "$cell" "$v" "$rep" cli_us "$(awk -v c="$CPU_S" -v n="$nreq" 'BEGIN {printf "%.3f", c * 1e6 / n}')"
  if is_shim "$v"; then
    rec regimes "$cell" "$v" "$rep" short_upg_pct "$(awk -v a="$up_short" -v n="$conns" 'BEGIN {printf "%.1f", 100 * a / n}')"
    rec regimes "$cell" "$v" "$rep" long_upg "$long_up"
  fi
}

rg_churn_all() {
  local rep v
  for ((rep = 1; rep <= RG_REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp shim-tcp plain-unix shim-unix); do rg_churn "$v" "$rep"; done
    printf '.' >&2
  done
}

# ------------------------------------------------------------------ d. memcached -t 4

rg_memcached() {
  local v rep
  for v in plain-tcp shim-tcp plain-unix shim-unix; do
    rm -rf "$TMP/mc-$v" # section 4's servers are gone; their socket path is reused
    mc_start "$v" || invalid regimes "memcached-t4-c$MC_CONNS-${v#*-}" "$v" 0 "memcached did not start"
  done
  for ((rep = 1; rep <= RG_REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp shim-tcp plain-unix shim-unix); do
      [ -n "${MC_PID[$v]:-}" ] && kill -0 "${MC_PID[$v]}" 2>/dev/null && mc_run "$v" "$rep" regimes "memcached-t4-c$MC_CONNS-${v#*-}"
    done
  done
  for v in plain-tcp shim-tcp plain-unix shim-unix; do [ -n "${MC_PID[$v]:-}" ] && bg_stop "${MC_PID[$v]}"; done
  printf '.' >&2
}

# ------------------------------------------------------------------ e. rsync

declare -A RS_PID RS_PORT RS_LOG
rsyncd_start() { # VARIANT
  local v=$1 d=$TMP/rsyncd-$1 port
  mkdir -p "$d/mod"
  port=$(new_port) || return 1
  cat >"$d/rsyncd.conf" <<EOF
use chroot = no
uid = $(id -u)
gid = $(id -g)
[m]
  path = $d/mod
  read only = no
EOF
  ln -f "$TMP/rsync.src" "$d/mod/src.bin" 2>/dev/null || cp "$TMP/rsync.src" "$d/mod/src.bin"
  venv "$v" "$d/shim.log"
  bg_start "$d/out" "${ENVV[@]}" rsync --daemon --no-detach --address=127.0.0.1 --port="$port" \
    --config="$d/rsyncd.conf" --log-file="$d/rsyncd.log"
  RS_PID[$v]=$BG RS_PORT[$v]=$port RS_LOG[$v]=$d/shim.log
  wait_until 10 grep -q "$(printf ':%04X 00000000:0000 0A' "$port")" /proc/net/tcp ||
    { say "rsync daemon ($v) did not start: $(tail -3 "$d/out")"; return 1; }
}

# rg_rsync VARIANT DIR(pull|push) REP: one whole-file transfer of rsync.src, timed,
# checked (sha256 of the copy) and the upgrade check on both sides.
rg_rsync() {
  local v=$1 dir=$2 rep=$3 d=$TMP/rsyncd-$1 clf=$TMP/rsync.log out=$TMP/rsync.out err=$TMP/rsync.err
  local cell=rsync-$2-tcp before s0 s1 w0 w1 why="" got dst t
  rm -rf "$clf" "$TMP/rsync.pull" "$d/mod/push"
  mkdir -p "$TMP/rsync.pull" "$d/mod/push"
  venv "$v" "$clf"
  before=$(log_mark "${RS_LOG[$v]}")
  KEEP=("$clf" "$err" "${RS_LOG[$v]}" "$d/rsyncd.log")
  s0=$(rg_cpu_ticks "${RS_PID[$v]}") w0=$(date +%s%N)
  if [ "$dir" = pull ]; then
    dst=$TMP/rsync.pull/src.bin
    timed "$out" "$err" timeout -k 5 120 "${ENVV[@]}" rsync -a --whole-file "rsync://127.0.0.1:${RS_PORT[$v]}/m/src.bin" "$TMP/rsync.pull/"
  else
    dst=$d/mod/push/src.bin
    timed "$out" "$err" timeout -k 5 120 "${ENVV[@]}" rsync -a --whole-file "$TMP/rsync.src" "rsync://127.0.0.1:${RS_PORT[$v]}/m/push/src.bin"
  fi
  w1=$(date +%s%N)
  # the daemon's child must be reaped for its CPU to count
  for t in $(seq 100); do [ -z "$(children "${RS_PID[$v]}")" ] && break; sleep 0.05; done
  s1=$(rg_cpu_ticks "${RS_PID[$v]}")
  if [ $RC != 0 ]; then
    why="rsync exit $RC: $(head -2 "$err")"
  else
    got=$(sha256sum <"$dst" 2>/dev/null | cut -d' ' -f1)
    [ "$got" = "$RS_SUM" ] || why="the copy differs from the source (sha256)"
  fi
  if [ -z "$why" ]; then
    if is_shim "$v"; then
      why=$(check_client_log "$clf" tcp4 1)
      [ -z "$why" ] && why=$(check_server_log "${RS_LOG[$v]}" tcp4 "$before" "$(grep -c ' role=client family=tcp4 ' "$clf")")
    else
      why=$(check_plain_log "$clf")$(check_maps "${RS_PID[$v]}" 0)
    fi
  fi
  if [ -n "$why" ]; then
    invalid regimes "$cell" "$v" "$rep" "$why"
    return
  fi
  rec regimes "$cell" "$v" "$rep" mbps "$(awk -v b="$RS_BYTES" -v w="$((w1 - w0))" 'BEGIN {printf "%.1f", b / (w / 1e9) / 1e6}')"
  rec regimes "$cell" "$v" "$rep" srv_us "$((s1 - s0))"
  rec regimes "$cell" "$v" "$rep" cli_us "$(awk -v c="$CPU_S" 'BEGIN {printf "%.0f", c * 1e6}')"
}

rg_rsync_all() {
  local v rep dir
  RS_BYTES=$((100 * 1000 * 1000))
  head -c "$RS_BYTES" /dev/urandom >"$TMP/rsync.src"
  RS_SUM=$(sha256sum <"$TMP/rsync.src" | cut -d' ' -f1)
  for v in plain-tcp shim-tcp; do
    rsyncd_start "$v" || { invalid regimes rsync-pull-tcp "$v" 0 "rsync daemon did not start"; invalid regimes rsync-push-tcp "$v" 0 "rsync daemon did not start"; }
  done
  for dir in pull push; do
    for ((rep = 1; rep <= RG_REPS; rep++)); do
      for v in $(rotate "$rep" plain-tcp shim-tcp); do
        [ -n "${RS_PID[$v]:-}" ] && kill -0 "${RS_PID[$v]}" 2>/dev/null && rg_rsync "$v" "$dir" "$rep"
      done
    done
    printf '.' >&2
  done
  for v in plain-tcp shim-tcp; do [ -n "${RS_PID[$v]:-}" ] && bg_stop "${RS_PID[$v]}"; done
  rm -rf "$TMP/rsync.src" "$TMP/rsync.pull" "$TMP"/rsyncd-*/mod
}

# ------------------------------------------------------------------ f. haproxy -> nginx

declare -A HA_PID HA_PORT HA_LOG
haproxy_start() { # VARIANT: haproxy in HTTP mode in front of the rg nginx of the variant
  local v=$1 d=$TMP/haproxy-$1 port
  mkdir -p "$d"
  port=$(new_port) || return 1
  cat >"$d/haproxy.cfg" <<EOF
global
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$port
  default_backend b
backend b
  server n1 127.0.0.1:${NGX_PORT[rg-$v]}
EOF
  venv "$v" "$d/shim.log"
  bg_start "$d/out" "${ENVV[@]}" haproxy -db -f "$d/haproxy.cfg"
  HA_PID[$v]=$BG HA_PORT[$v]=$port HA_LOG[$v]=$d/shim.log
  wait_until 10 grep -q "$(printf ':%04X 00000000:0000 0A' "$port")" /proc/net/tcp ||
    { say "haproxy ($v) did not start: $(tail -3 "$d/out")"; return 1; }
  # the file must come back byte-identical through this variant
  local got lf=$d/curl.log
  venv "$v" "$lf"
  got=$(timeout 10 "${ENVV[@]}" curl -sf "http://127.0.0.1:$port/1M.bin" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$(sha256sum <"$TMP/nginx-rg-$v/www/1M.bin" | cut -d' ' -f1)" ] || { say "haproxy ($v): 1M.bin came back different"; return 1; }
}

# rg_haproxy VARIANT REP: wrk through haproxy to nginx, 1 MiB responses.
rg_haproxy() {
  local v=$1 rep=$2 clf=$TMP/ha.log.$2.$1 out=$TMP/ha.out err=$TMP/ha.err cell=haproxy-nginx-1M-tcp
  local hb nb s0 s1 why="" pids
  rm -f "$clf"
  venv "$v" "$clf"
  hb=$(log_mark "${HA_LOG[$v]}") nb=$(log_mark "${NGX_LOG[rg-$v]}")
  KEEP=("$clf" "$err" "$out" "${HA_LOG[$v]}" "${NGX_LOG[rg-$v]}")
  pids="${HA_PID[$v]} $(nginx_pids "rg-$v")"
  s0=$(cpu_ns $pids)
  timed "$out" "$err" timeout -k 5 $((WRK_S + 30)) "${ENVV[@]}" wrk -t 2 -c "$RG_HA_CONNS" -d "${WRK_S}s" \
    --latency "http://127.0.0.1:${HA_PORT[$v]}/1M.bin"
  s1=$(cpu_ns $pids)
  local rps reqs mb p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  reqs=$(awk '/requests in/ {print $1}' "$out")
  p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else m = 1000; sub(/[a-z]+$/, "", v); print v * m}' "$out")
  mb=$(awk '/requests in/ {v = $(NF - 1); u = v; sub(/[0-9.]+/, "", u); sub(/[A-Z]+$/, "", v)
    m = (u == "GB") ? 2^30 : (u == "MB") ? 2^20 : (u == "KB") ? 2^10 : 1; print v * m}' "$out")
  # wrk's reachability probe (connect, close): haproxy may offer it or not
  local ign='plain fd=[0-9]* role=server: (the client never took the offer|peer closed its end)'
  if [ $RC != 0 ] || [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
    why="wrk exit $RC: $(head -2 "$err")"
  elif grep -q -e 'Non-2xx' -e 'Socket errors' "$out"; then
    why="wrk: $(grep -e 'Non-2xx' -e 'Socket errors' "$out" | tr '\n' ' ')"
  elif ! awk -v b="$mb" -v n="$reqs" -v s=1048576 'BEGIN {x = b / n; exit !(x >= s * 0.98 && x <= s * 1.02 + 400)}'; then
    why="wrk read $mb bytes for $reqs responses of 1 MiB"
  elif is_shim "$v"; then
    why=$(check_client_log "$clf" tcp4 "$RG_HA_CONNS")
    # haproxy: the wrk connections (and wrk's probe) as server; its connections to nginx as client
    [ -z "$why" ] && why=$(check_server_log "${HA_LOG[$v]}" tcp4 "$hb" "$(grep -c ' role=client family=tcp4 ' "$clf")" 1 "$ign")
    local hc
    hc=$(tail -n +$((hb + 1)) "${HA_LOG[$v]}" | grep -c ' upgraded fd=[0-9]* role=client family=tcp4 ')
    [ -z "$why" ] && [ "$hc" -lt 1 ] && why="haproxy's connections to nginx: none upgraded during the run"
    [ -z "$why" ] && why=$(check_server_log "${NGX_LOG[rg-$v]}" tcp4 "$nb" "$hc" 0 "$ign")
  else
    why=$(check_plain_log "$clf")$(check_maps "${HA_PID[$v]}" 0)$(check_maps "${NGX_PID[rg-$v]}" 0)
  fi
  if [ -n "$why" ]; then
    invalid regimes "$cell" "$v" "$rep" "$why"
    return
  fi
  rec regimes "$cell" "$v" "$rep" rps "$rps"
  rec regimes "$cell" "$v" "$rep" p99_ms "$p99"
  rec regimes "$cell" "$v" "$rep" srv_us "$(awk -v a="$s0" -v b="$s1" -v n="$reqs" 'BEGIN {printf "%.1f", (b - a) / 1e3 / n}')"
  rec regimes "$cell" "$v" "$rep" cli_us "$(awk -v a="$CPU_S" -v n="$reqs" 'BEGIN {printf "%.1f", a * 1e6 / n}')"
}

rg_haproxy_all() {
  local v rep ok=()
  for v in plain-tcp shim-tcp; do
    if nginx_start "$v" "rg-$v" && head -c 1048576 /dev/urandom >"$TMP/nginx-rg-$v/www/1M.bin" && haproxy_start "$v"; then
      ok+=("$v")
    else
      invalid regimes haproxy-nginx-1M-tcp "$v" 0 "haproxy or nginx did not start"
    fi
  done
  for ((rep = 1; rep <= RG_REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp shim-tcp); do
      [[ " ${ok[*]} " == *" $v "* ]] && rg_haproxy "$v" "$rep"
    done
  done
  for v in plain-tcp shim-tcp; do
    [ -n "${HA_PID[$v]:-}" ] && bg_stop "${HA_PID[$v]}"
    [ -n "${NGX_PID[rg-$v]:-}" ] && bg_stop "${NGX_PID[rg-$v]}" QUIT && unset "NGX_PID[rg-$v]"
  done
  printf '.' >&2
}

# ------------------------------------------------------------------ section

# rg_part NAME: whether RG_PARTS (environment; default all) names this part
# (idle, sparse, churn, memcached, rsync, haproxy).
rg_part() { [[ ,${RG_PARTS:-idle,sparse,churn,memcached,rsync,haproxy}, == *,$1,* ]]; }

section_regimes() {
  KEEP=()
  local v t=$SECONDS maxc
  say "== 9. regimes: idle members, sparse requests, churn, memcached -t 4, rsync, haproxy -> nginx"
  if rg_part idle || rg_part sparse; then
    # 10,000 idle connections: the server needs as many descriptors (redis asks for
    # maxclients + 32 itself; loadgen raises its own soft limit to the hard one).
    # Root may raise the hard limit too; others get their hard limit.
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
    maxc=0
    for v in $RG_IDLE_COUNTS; do [ "$v" -gt "$maxc" ] && maxc=$v; done
    if [ $((maxc + 200)) -gt "$(ulimit -n)" ]; then
      say "   RLIMIT_NOFILE $(ulimit -n) is too low for $maxc idle connections"
      invalid regimes idle all 0 "RLIMIT_NOFILE $(ulimit -n) < $((maxc + 200))"
    else
      for v in plain shim; do redis_start "rg$v" "$v-unix" $((maxc + 100)) || invalid regimes idle "$v" 0 "redis-server did not start"; done
      if rg_part idle; then
        rg_idle
        printf ' (idle %d s) ' $((SECONDS - t)) >&2; t=$SECONDS
      fi
      if rg_part sparse; then
        rg_sparse
        printf ' (sparse %d s) ' $((SECONDS - t)) >&2; t=$SECONDS
      fi
      for v in plain shim; do bg_stop "${REDIS_PID[rg$v]}"; done
    fi
  fi
  if rg_part churn; then
    for v in plain shim; do redis_start "rgc$v" "$v-unix" || invalid regimes churn "$v" 0 "redis-server did not start"; done
    rg_churn_all
    for v in plain shim; do bg_stop "${REDIS_PID[rgc$v]}"; done
    printf ' (churn %d s) ' $((SECONDS - t)) >&2; t=$SECONDS
  fi
  if rg_part memcached; then
    rg_memcached
    printf ' (memcached %d s) ' $((SECONDS - t)) >&2; t=$SECONDS
  fi
  if rg_part rsync; then
    rg_rsync_all
    printf ' (rsync %d s) ' $((SECONDS - t)) >&2; t=$SECONDS
  fi
  if rg_part haproxy; then
    rg_haproxy_all
    printf ' (haproxy %d s) ' $((SECONDS - t)) >&2
  fi
  say ""
}

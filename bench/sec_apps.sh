# Section 4 (sourced by bench/run.sh): unmodified programs, plain vs shimmed on both
# sides: redis-benchmark, the redis-cli --latency pattern, nginx+wrk, memcached.
# The CPU both processes used is recorded with every run (section 6).
#
# Servers run for the whole section, one per variant (a shimmed server logs to its
# own file); each client run logs to a file of its own. A shimmed run is valid when
# the client's log shows at least the connections it opens upgraded (and as many
# as its exit statistics), nothing plain, no warning, and the server's log gained
# exactly as many server-side upgrades; a plain run when neither process maps the
# library.

# ------------------------------------------------------------------ redis

declare -A REDIS_PID REDIS_LOG REDIS_N REDIS_TCP
redis_start() { # NAME VARIANT [MAXCLIENTS]: a redis-server listening on a TCP port and a unix socket
  local name=$1 v=$2 port d=$TMP/redis-$1
  mkdir -p "$d"
  port=$(new_port) || return 1
  venv "$v" "$d/shim.log"
  bg_start "$d/out" "${ENVV[@]}" redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$d/sock" \
    --save '' --appendonly no --dir "$d" --daemonize no --maxclients "${3:-1000}"
  REDIS_PID[$name]=$BG REDIS_LOG[$name]=$d/shim.log REDIS_TCP[$name]=$port
  # probe as the same variant: an unshimmed client would be a plain connection in the server's log
  venv "$v" "$d/probe.log"
  wait_until 10 "${ENVV[@]}" redis-cli -s "$d/sock" ping || { say "redis-server ($name) did not start: $(tail -3 "$d/out")"; return 1; }
}

# redis_where NAME VARIANT: the redis-cli/redis-benchmark address arguments.
redis_where() {
  case $2 in
    *tcp*) echo "-h 127.0.0.1 -p ${REDIS_TCP[$1]}" ;;
    *) echo "-s $TMP/redis-$1/sock" ;;
  esac
}

# redis_verify NAME VARIANT CLIENTLOG MIN BEFORE: the upgrade check of one run.
redis_verify() {
  local name=$1 v=$2 clf=$3 min=$4 before=$5 why fam
  fam=$(fam_of "$v")
  if is_shim "$v"; then
    why=$(check_client_log "$clf" "$fam" "$min")
    [ -z "$why" ] && why=$(check_server_log "${REDIS_LOG[$name]}" "$fam" "$before" "$(grep -c " role=client family=$fam " "$clf")")
    [ -z "$why" ] && why=$(check_maps "${REDIS_PID[$name]}" 1)
  else
    why=$(check_plain_log "$clf")$(check_maps "${REDIS_PID[$name]}" 0)
  fi
  echo "$why"
}

# redis_bench VARIANT CONFIG REP [SECTION [TESTS]]: redis-benchmark -t TESTS
# (default set,get) with -c/-P from CONFIG (c1P1, c50P1, c50P16); the request count
# adapts so that a test lasts about APP_S. SECTION (default redis) names the rows;
# CPU per request goes to the cpu section for the redis section, to the section's
# own rows (srv_us, cli_us) for the regimes section, nowhere else. RB_CELL (default
# CONFIG) is the rows' cell name before -TEST; RB_SRV, prefixed to the variant's
# first word, names the redis_start server (default: none).
redis_bench() {
  local v=$1 cfg=$2 rep=$3 sec=${4:-redis} tests=${5:-set,get} name c p n clf out err before s0 s1 why
  local cellp=${RB_CELL:-$cfg}
  name=${RB_SRV:-}${v%%-*}
  c=${cfg#c}; c=${c%P*}; p=${cfg#*P}
  if [ -z "${REDIS_N[$sec,$cfg,$v]:-}" ]; then
    # a short unrecorded run sizes the first recorded one
    n=$((c * p * 20 > 100 ? c * p * 20 : 100))
    venv "$v" /dev/null
    timeout -k 5 60 "${ENVV[@]}" SHMSHIM_LOG= redis-benchmark $(redis_where "$name" "$v") -t "$tests" -n "$n" -c "$c" -P "$p" --csv >"$TMP/rb.cal" 2>&1
    REDIS_N[$sec,$cfg,$v]=$(awk -F, -v t="$APP_S" '/^"[A-Z]+"/ {gsub(/"/, "", $2); if (r == "" || $2 + 0 < r) r = $2 + 0}
      END {n = int(r * t); if (n < 100) n = 100; if (n > 5000000) n = 5000000; print n}' "$TMP/rb.cal")
  fi
  n=${REDIS_N[$sec,$cfg,$v]}
  clf=$TMP/rb.log.$rep.$v.$cfg out=$TMP/rb.out err=$TMP/rb.err
  rm -f "$clf"
  venv "$v" "$clf"
  before=$(log_mark "${REDIS_LOG[$name]}")
  KEEP=("$clf" "$err" "${REDIS_LOG[$name]}")
  s0=$(cpu_ns "${REDIS_PID[$name]}")
  timed "$out" "$err" timeout -k 5 120 "${ENVV[@]}" redis-benchmark $(redis_where "$name" "$v") \
    -t "$tests" -n "$n" -c "$c" -P "$p" --csv
  s1=$(cpu_ns "${REDIS_PID[$name]}")
  local t T lines=() ntests=0 line
  for t in ${tests//,/ }; do
    T=${t^^}
    line=$(grep "^\"$T\"" "$out")
    if [ $RC != 0 ] || [ -z "$line" ]; then
      for t in ${tests//,/ }; do invalid "$sec" "$cellp-${t^^}" "$v" "$rep" "redis-benchmark exit $RC: $(head -2 "$err")"; done
      return
    fi
    lines+=("$T $line")
    ntests=$((ntests + 1))
  done
  why=$(redis_verify "$name" "$v" "$clf" $((ntests * c)) "$before")
  if [[ $tests == *set* ]]; then
    # the values the SETs stored must be there (shimmed reader for shimmed servers)
    local got vlf=$TMP/rb.vlog
    rm -f "$vlf"
    venv "$v" "$vlf"
    got=$(printf 'GET key:__rand_int__\nDEL key:__rand_int__\n' |
      timeout 10 "${ENVV[@]}" redis-cli $(redis_where "$name" "$v") 2>&1 | tr '\n' ' ')
    [ "$got" = "VXK 1 " ] || why="$why; GET after the run returned '$got', expected VXK"
  fi
  if [ -n "$why" ]; then
    for t in ${tests//,/ }; do invalid "$sec" "$cellp-${t^^}" "$v" "$rep" "${why#; }"; done
    return
  fi
  local minr="" rps p99 x
  for line in "${lines[@]}"; do
    T=${line%% *} line=${line#* }
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    IFS=, read -r x rps x x x x p99 x <<<"${line//\"/}"
    rec "$sec" "$cellp-$T" "$v" "$rep" rps "$rps"
    rec "$sec" "$cellp-$T" "$v" "$rep" p99_ms "$p99"
    minr="$minr $rps"
  done
  # CPU per request, and the next run's count: about APP_S per test at the slower test's rate
  local cpu
  cpu=$(awk -v r="$minr" -v t="$APP_S" -v a="$s0" -v b="$s1" -v c="$CPU_S" -v q=$((ntests * n)) 'BEGIN {
    k = split(r, x, " "); m = x[1]; for (i = 2; i <= k; i++) if (x[i] + 0 < m + 0) m = x[i]
    n = int(m * t); if (n < 100) n = 100; if (n > 5000000) n = 5000000
    printf "%d %.3f %.3f", n, (b - a) / 1e3 / q, c * 1e6 / q }')
  REDIS_N[$sec,$cfg,$v]=${cpu%% *}
  cpu=${cpu#* }
  if [ "$sec" = redis ]; then
    rec cpu "redis-$cfg" "$v" "$rep" srv "${cpu% *}"
    rec cpu "redis-$cfg" "$v" "$rep" cli "${cpu#* }"
  elif [ "$sec" = regimes ]; then
    for T in ${tests//,/ }; do
      rec "$sec" "$cellp-${T^^}" "$v" "$rep" srv_us "${cpu% *}"
      rec "$sec" "$cellp-${T^^}" "$v" "$rep" cli_us "${cpu#* }"
    done
  fi
}

# redis_latency VARIANT REP: a PING every 10 ms for LAT_MS (loadgen lat: µs timing),
# then unmodified redis-cli --latency for the same time (it reports ms).
redis_latency() {
  local v=$1 rep=$2 name clf out err before s0 s1 why="" line cli w0 w1
  name=${v%%-*}
  clf=$TMP/lat.log.$rep.$v out=$TMP/lat.out err=$TMP/lat.err
  rm -f "$clf"
  venv "$v" "$clf"
  local where
  where=$([[ $v == *tcp* ]] && echo "tcp4:${REDIS_TCP[$name]}" || echo "unix:$TMP/redis-$name/sock")
  before=$(log_mark "${REDIS_LOG[$name]}")
  KEEP=("$clf" "$err" "${REDIS_LOG[$name]}")
  s0=$(cpu_ns "${REDIS_PID[$name]}") w0=$(date +%s%N)
  timed "$out" "$err" timeout -k 5 60 "${ENVV[@]}" "$BIN/loadgen" "$where" lat --time "$LAT_MS" --interval-ms 10
  s1=$(cpu_ns "${REDIS_PID[$name]}") w1=$(date +%s%N)
  line=$(grep '^LOADGEN ' "$out")
  if [ $RC != 0 ] || [ -z "$line" ]; then
    invalid latency redis-ping "$v" "$rep" "loadgen exit $RC: $(head -2 "$err")"
    return
  fi
  local cpu_cli=$CPU_S
  timed "$out" "$err" timeout -k 5 60 "${ENVV[@]}" redis-cli $(redis_where "$name" "$v") --latency --raw \
    -i "$(awk -v m="$LAT_MS" 'BEGIN {print m / 1000}')"
  cli=$(awk 'NF == 4 {print $3}' "$out")
  [ $RC = 0 ] && [ -n "$cli" ] || why="redis-cli --latency exit $RC: $(head -2 "$err")"
  [ -z "$why" ] && why=$(redis_verify "$name" "$v" "$clf" 2 "$before")
  if [ -n "$why" ]; then
    invalid latency redis-ping "$v" "$rep" "$why"
    return
  fi
  rec latency redis-ping "$v" "$rep" p50_us "$(kv p50_us "$line")"
  rec latency redis-ping "$v" "$rep" p99_us "$(kv p99_us "$line")"
  rec latency redis-ping "$v" "$rep" avg_us "$(kv avg_us "$line")"
  rec latency redis-ping "$v" "$rep" cli_avg_us "$(awk -v a="$cli" 'BEGIN {print a * 1000}')"
  rec latency redis-ping "$v" "$rep" srv_pct "$(awk -v a="$s0" -v b="$s1" -v w="$((w1 - w0))" 'BEGIN {printf "%.2f", 100 * (b - a) / w}')"
  rec latency redis-ping "$v" "$rep" cli_pct "$(awk -v c="$cpu_cli" -v w="$((w1 - w0))" 'BEGIN {printf "%.2f", 100 * c * 1e9 / w}')"
}

# ------------------------------------------------------------------ nginx + wrk

declare -A NGX_PID NGX_PORT NGX_LOG
nginx_start() { # VARIANT [NAME]: NAME (default VARIANT) keys NGX_* and the directory
  local v=$1 k=${2:-$1} port user=""
  local d=$TMP/nginx-$k
  mkdir -p "$d/www" "$d/tmp" "$d/logs"
  port=$(new_port) || return 1
  [ "$(id -u)" = 0 ] && user="user root;"
  head -c 1024 /dev/urandom >"$d/www/1K.bin"
  head -c 65536 /dev/urandom >"$d/www/64K.bin"
  cat >"$d/nginx.conf" <<EOF
$user
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$port; root $d/www; }
}
EOF
  venv "$v" "$d/shim.log"
  bg_start "$d/out" "${ENVV[@]}" nginx -p "$d" -c "$d/nginx.conf"
  NGX_PID[$k]=$BG NGX_PORT[$k]=$port NGX_LOG[$k]=$d/shim.log
  venv "$v" "$d/probe.log"
  wait_until 10 "${ENVV[@]}" curl -sf -o /dev/null "http://127.0.0.1:$port/1K.bin" ||
    { say "nginx ($v) did not start: $(tail -3 "$d/out" "$d/logs/error.log")"; return 1; }
  # the files must come back byte-identical through this variant
  local f got lf=$d/curl.log
  for f in 1K 64K; do
    venv "$v" "$lf"
    got=$(timeout 10 "${ENVV[@]}" curl -sf "http://127.0.0.1:$port/$f.bin" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$(sha256sum <"$d/www/$f.bin" | cut -d' ' -f1)" ] || { say "nginx ($v): $f.bin came back different"; return 1; }
  done
}

nginx_pids() { echo "${NGX_PID[$1]}" $(children "${NGX_PID[$1]}"); }

# wrk_run VARIANT FILE REP [SECTION]: wrk with keep-alive for WRK_S seconds.
wrk_run() {
  local v=$1 f=$2 rep=$3 sec=${4:-nginx} clf out err before s0 s1 why
  clf=$TMP/wrk.log.$rep.$v.$f out=$TMP/wrk.out err=$TMP/wrk.err
  rm -f "$clf"
  venv "$v" "$clf"
  before=$(log_mark "${NGX_LOG[$v]}")
  KEEP=("$clf" "$err" "$out" "${NGX_LOG[$v]}")
  local pids
  pids=$(nginx_pids "$v")
  s0=$(cpu_ns $pids)
  timed "$out" "$err" timeout -k 5 $((WRK_S + 30)) "${ENVV[@]}" wrk -t "$WRK_THREADS" -c "$WRK_CONNS" \
    -d "${WRK_S}s" --latency "http://127.0.0.1:${NGX_PORT[$v]}/$f.bin"
  s1=$(cpu_ns $pids)
  local rps reqs mb p99 size
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  reqs=$(awk '/requests in/ {print $1}' "$out")
  p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) m = 0.001; else if (v ~ /ms$/) m = 1; else m = 1000; sub(/[a-z]+$/, "", v); print v * m}' "$out")
  mb=$(awk '/requests in/ {v = $(NF - 1); u = v; sub(/[0-9.]+/, "", u); sub(/[A-Z]+$/, "", v)
    m = (u == "GB") ? 2^30 : (u == "MB") ? 2^20 : (u == "KB") ? 2^10 : 1; print v * m}' "$out")
  size=$([ "$f" = 1K ] && echo 1024 || echo 65536)
  if [ $RC != 0 ] || [ -z "$rps" ] || [ -z "$reqs" ]; then
    why="wrk exit $RC: $(head -2 "$err")"
  elif grep -q -e 'Non-2xx' -e 'Socket errors' "$out"; then
    why="wrk: $(grep -e 'Non-2xx' -e 'Socket errors' "$out" | tr '\n' ' ')"
  elif ! awk -v b="$mb" -v n="$reqs" -v s="$size" 'BEGIN {x = b / n; exit !(x >= s * 0.99 && x <= s * 1.01 + 400)}'; then
    why="wrk read $mb bytes for $reqs responses of $size bytes"
  elif is_shim "$v"; then
    why=$(check_client_log "$clf" tcp4 "$WRK_CONNS")
    # wrk connects once and closes before starting (its reachability check): the
    # server logs it as it finds it (closed before accept, before the offer, or
    # offered and never taken); the client's log shows every measured connection upgraded
    [ -z "$why" ] && why=$(check_server_log "${NGX_LOG[$v]}" tcp4 "$before" "$(grep -c ' role=client family=tcp4 ' "$clf")" 1 \
      'plain fd=[0-9]* role=server: (the client never took the offer|peer closed its end)')
  else
    why=$(check_plain_log "$clf")$(check_maps "${NGX_PID[$v]}" 0)
  fi
  if [ -n "$why" ]; then
    invalid "$sec" "$f" "$v" "$rep" "$why"
    return
  fi
  rec "$sec" "$f" "$v" "$rep" rps "$rps"
  rec "$sec" "$f" "$v" "$rep" p99_ms "$p99"
  [ "$sec" = nginx ] || return 0
  rec cpu "nginx-$f" "$v" "$rep" srv "$(awk -v a="$s0" -v b="$s1" -v n="$reqs" 'BEGIN {printf "%.3f", (b - a) / 1e3 / n}')"
  rec cpu "nginx-$f" "$v" "$rep" cli "$(awk -v a="$CPU_S" -v n="$reqs" 'BEGIN {printf "%.3f", a * 1e6 / n}')"
}

# ------------------------------------------------------------------ memcached

declare -A MC_PID MC_ADDR MC_LOG
mc_start() { # VARIANT
  local v=$1 d=$TMP/mc-$1 where
  mkdir -p "$d"
  if [[ $v == *tcp* ]]; then
    local port
    port=$(new_port) || return 1
    where=(-l 127.0.0.1 -p "$port") MC_ADDR[$v]=tcp4:$port
  else
    where=(-s "$d/sock") MC_ADDR[$v]=unix:$d/sock
  fi
  venv "$v" "$d/shim.log"
  bg_start "$d/out" "${ENVV[@]}" memcached -u "$(id -un)" -m 64 -U 0 -c 1024 -t 4 "${where[@]}"
  MC_PID[$v]=$BG MC_LOG[$v]=$d/shim.log
  # an unshimmed probe would leave a plain connection in a shimmed server's log: wait for the socket
  if [[ $v == *tcp* ]]; then
    wait_until 10 grep -q "$(printf ':%04X 00000000:0000 0A' "${MC_ADDR[$v]#tcp4:}")" /proc/net/tcp
  else
    wait_until 10 test -S "$d/sock"
  fi || { say "memcached ($v) did not start: $(tail -3 "$d/out")"; return 1; }
}

mc_run() { # VARIANT REP [SECTION CELL]: SECTION regimes records CPU in its own rows
  local v=$1 rep=$2 clf=$TMP/mc.log.$2.$1 out=$TMP/mc.out err=$TMP/mc.err before s0 s1 why line
  local sec=${3:-memcached} cell=${4:-${MC_CONNS}c}
  rm -f "$clf"
  venv "$v" "$clf"
  before=$(log_mark "${MC_LOG[$v]}")
  KEEP=("$clf" "$err" "$out" "${MC_LOG[$v]}")
  s0=$(cpu_ns "${MC_PID[$v]}")
  timed "$out" "$err" timeout -k 5 60 "${ENVV[@]}" "$BIN/loadgen" "${MC_ADDR[$v]}" mc --conns "$MC_CONNS" \
    --time "$MC_MS" --keys 1000 --value 100 --set-pct 10
  s1=$(cpu_ns "${MC_PID[$v]}")
  line=$(grep '^LOADGEN ' "$out")
  if [ $RC != 0 ] || [ -z "$line" ]; then
    why="loadgen exit $RC: $(head -2 "$err")"
  elif is_shim "$v"; then
    why=$(check_client_log "$clf" "$(fam_of "$v")" "$MC_CONNS")
    [ -z "$why" ] && why=$(check_server_log "${MC_LOG[$v]}" "$(fam_of "$v")" "$before" "$MC_CONNS")
  else
    why=$(check_plain_log "$clf")$(check_maps "${MC_PID[$v]}" 0)
  fi
  if [ -n "$why" ]; then
    invalid "$sec" "$cell" "$v" "$rep" "$why"
    return
  fi
  local ops srv cli
  ops=$(kv ops "$line")
  rec "$sec" "$cell" "$v" "$rep" ops "$(kv ops_per_s "$line")"
  rec "$sec" "$cell" "$v" "$rep" p99_us "$(kv p99_us "$line")"
  srv=$(awk -v a="$s0" -v b="$s1" -v n="$ops" 'BEGIN {printf "%.3f", (b - a) / 1e3 / n}')
  cli=$(awk -v a="$CPU_S" -v n="$ops" 'BEGIN {printf "%.3f", a * 1e6 / n}')
  if [ "$sec" = regimes ]; then
    rec "$sec" "$cell" "$v" "$rep" srv_us "$srv"
    rec "$sec" "$cell" "$v" "$rep" cli_us "$cli"
  else
    rec cpu "memcached-${MC_CONNS}c" "$v" "$rep" srv "$srv"
    rec cpu "memcached-${MC_CONNS}c" "$v" "$rep" cli "$cli"
  fi
}

# ------------------------------------------------------------------ section

section_apps() {
  KEEP=()
  local rep v cfg f t=$SECONDS
  say "== 4. redis-benchmark, redis latency, nginx+wrk, memcached"
  redis_start plain plain-unix && redis_start shim shim-unix && redis_start lowlat lowlat-unix || {
    invalid redis all all 0 "redis-server did not start"
    return
  }
  for cfg in c1P1 c50P1 c50P16; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for v in $(rotate "$rep" plain-tcp plain-unix shim-tcp shim-unix); do redis_bench "$v" "$cfg" "$rep"; done
    done
    printf '.' >&2
  done
  printf ' (redis-benchmark %d s) ' $((SECONDS - t)) >&2; t=$SECONDS
  for ((rep = 1; rep <= LAT_REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp plain-unix shim-tcp shim-unix lowlat-unix); do redis_latency "$v" "$rep"; done
    printf '.' >&2
  done
  for v in plain shim lowlat; do bg_stop "${REDIS_PID[$v]}"; done
  printf ' (latency %d s) ' $((SECONDS - t)) >&2; t=$SECONDS

  if nginx_start plain-tcp && nginx_start shim-tcp; then
    for f in 1K 64K; do
      for ((rep = 1; rep <= WRK_REPS; rep++)); do
        for v in $(rotate "$rep" plain-tcp shim-tcp); do wrk_run "$v" "$f" "$rep"; done
      done
      printf '.' >&2
    done
  else
    invalid nginx all all 0 "nginx did not start"
  fi
  # nginx stays up for the contention section; run.sh stops it
  printf ' (nginx %d s) ' $((SECONDS - t)) >&2; t=$SECONDS

  for v in plain-tcp plain-unix shim-tcp shim-unix; do
    mc_start "$v" || { invalid memcached "${MC_CONNS}c" "$v" 0 "memcached did not start"; }
  done
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp plain-unix shim-tcp shim-unix); do
      [ -n "${MC_PID[$v]:-}" ] && mc_run "$v" "$rep"
    done
  done
  for v in plain-tcp plain-unix shim-tcp shim-unix; do [ -n "${MC_PID[$v]:-}" ] && bg_stop "${MC_PID[$v]}"; done
  say " (memcached $((SECONDS - t)) s)"
}

# Sections 1-3 (sourced by bench/run.sh): ping-pong round trip, one-way streaming,
# connection set-up rate, with bench/sock_bench (the same binary with and without
# the library) and bench/ring_bench (the raw ring: the ceiling).
#
# Variants: plain-tcp plain-unix shim-tcp shim-unix (client and forked server both
# preloaded, logging: every run's log must show its connections upgraded at both
# ends), shimnolog-* (preloaded, default settings, no log: the connection-rate
# target, since logging costs file operations per connection), ring and ring-spin
# (ring_bench: the ring with the shim's wait discipline, and both sides busy-polling;
# run once per repetition over all sizes, after the socket variants' cells).

# sock_run SECTION CELL VARIANT REP TEST SIZE [EXTRA...]: one sock_bench cell; its
# result line's key=value words land in F (and the line in LINE). Few forks per
# run: this runs a few hundred times.
declare -A F
sock_run() {
  local sec=$1 cell=$2 v=$3 rep=$4 test=$5 size=$6 fam addr why try w
  local lf=$TMP/sock.log out=$TMP/sock.out err=$TMP/sock.err
  shift 6
  [[ $v == *tcp* ]] && fam=tcp4 || fam=unix
  LINE="" F=()
  for try in 1 2 3; do
    NRUN=$((NRUN + 1))
    if [ "$fam" = tcp4 ]; then next_port; addr=tcp4:$PORT; else addr=unix:$TMP/s.$NRUN; fi
    : >"$lf"
    venv "$v" "$lf"
    # The logged variant upgrades every connection (its log proves it): the cost
    # of the negotiation itself. shimnolog keeps the default, where short-lived
    # connections soon stay plain (SHMSHIM_SHORT_MS).
    [ "$test" = conn ] && [[ $v == shim-* ]] && ENVV+=(SHMSHIM_SHORT_MS=0)
    timeout -k 5 $((SOCK_WD + 15)) "${ENVV[@]}" "$BIN/sock_bench" "$addr" "$test" "$size" --time "$SOCK_MS" \
      --label "$v" --watchdog "$SOCK_WD" "${SOCK_PIN[@]}" "$@" >"$out" 2>"$err"
    RC=$?
    # a TCP port taken between our check and the bind: take another
    [ $RC = 1 ] && [ "$fam" = tcp4 ] && grep -q 'Address already in use' "$err" && continue
    break
  done
  LINE=$(<"$out")
  KEEP=("$lf" "$err")
  if [ $RC != 0 ] || [[ $LINE != SOCKBENCH* ]] || [ -s "$err" ]; then
    invalid "$sec" "$cell" "$v" "$rep" "sock_bench exit $RC: $(head -3 "$err")"
    LINE=""
    return 1
  fi
  for w in $LINE; do [[ $w == *=* ]] && F[${w%%=*}]=${w#*=}; done
  why=""
  if logged "$v"; then
    # client and forked server log to the same file: both ends of every connection
    local c s u b st bad n=1
    [ "$test" = conn ] && n=${F[conns]}
    read -r c s u b st bad < <(log_sum "$lf" "$fam")
    if [ "$c" != "$n" ] || [ "$s" != "$n" ] || [ "$u" != "$n" ] || [ "$st" != 2 ]; then
      why="expected $n connection(s) upgraded at both ends ($fam): log has $c client and $s server upgrades, stats $u ($st processes)"
    elif [ "$b" != 0 ]; then
      why="plain connections, rejected offers or warnings: $bad"
    fi
  elif ! is_shim "$v"; then
    [ -s "$lf" ] && why="plain variant, but the shim logged: $(head -1 "$lf")"
  fi
  if [ -n "$why" ]; then
    invalid "$sec" "$cell" "$v" "$rep" "upgrade check: $why"
    LINE=""
    return 1
  fi
  return 0
}

# ring_run pp|stream REP SIZES...: one ring_bench run over all the sizes (both ring
# flavours, interleaved per size inside ring_bench). Once per repetition rather than
# per cell: its start-up (peer processes, placement probes) costs more than a cell.
ring_run() {
  KEEP=()
  local test=$1 rep=$2 csv=$TMP/ring.csv list
  shift 2
  list=$(tr ' ' ',' <<<"$*")
  local sz
  [ "$test" = pp ] && sz=(--sizes "$list") || sz=(--stream-sizes "$list")
  timeout -k 5 300 "$BIN/ring_bench" --transports ring,ring_spin --only "$test" "${sz[@]}" --reps 1 \
    --time "$SOCK_MS" --spin-us "$SPIN_US" --ring "$RING_SIZE" "${RING_PIN[@]}" --csv "$csv" >/dev/null 2>"$TMP/ring.err"
  local rc=$? c
  if [ $rc != 0 ]; then
    for c in "$@"; do
      invalid "$test" "$c" ring "$rep" "ring_bench exit $rc: $(head -3 "$TMP/ring.err")"
      invalid "$test" "$c" ring-spin "$rep" "ring_bench exit $rc"
    done
    return
  fi
  # columns: test,transport,size_bytes,...,median_us(8),p99_us(9),...,gbps_median(13)
  awk -F, -v r="$rep" 'NR > 1 {
      v = ($2 == "ring_spin") ? "ring-spin" : "ring"
      b = $3 + 0; c = b % 1048576 == 0 ? b / 1048576 "M" : b % 1024 == 0 ? b / 1024 "K" : b
      if ($1 == "pingpong") {
        printf "pp\t%s\t%s\t%s\tmed_us\t%s\n", c, v, r, $8
        printf "pp\t%s\t%s\t%s\tp99_us\t%s\n", c, v, r, $9
      } else printf "stream\t%s\t%s\t%s\tmbps\t%.1f\n", c, v, r, $13 * 1000
    }' "$csv" >>"$RAW"
}

section_sock() {
  KEEP=()
  local s v rep
  say "== 1. ping-pong round trip"
  for s in $PP_SIZES; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for v in $(rotate "$rep" plain-tcp plain-unix shim-tcp shim-unix); do
        sock_run pp "$s" "$v" "$rep" pp "$s" || continue
        rec pp "$s" "$v" "$rep" med_us "${F[median_us]}"
        rec pp "$s" "$v" "$rep" p99_us "${F[p99_us]}"
      done
    done
    printf '.' >&2
  done
  # TCP without TCP_NODELAY, as redis-benchmark's and many programs' connections
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp shim-tcp); do
      sock_run pp-nagle 64 "$v" "$rep" pp 64 --nagle 1 || continue
      rec pp-nagle 64 "$v" "$rep" med_us "${F[median_us]}"
      rec pp-nagle 64 "$v" "$rep" p99_us "${F[p99_us]}"
      rec pp-nagle 64 "$v" "$rep" mean_us "${F[mean_us]}"
      rec pp-nagle 64 "$v" "$rep" max_us "${F[max_us]}"
    done
  done
  for ((rep = 1; rep <= REPS; rep++)); do ring_run pp "$rep" $PP_SIZES; done
  say ""
  say "== 2. one-way streaming"
  for s in $ST_SIZES; do
    for ((rep = 1; rep <= REPS; rep++)); do
      for v in $(rotate "$rep" plain-tcp plain-unix shim-tcp shim-unix); do
        sock_run stream "$s" "$v" "$rep" stream "$s" || continue
        rec stream "$s" "$v" "$rep" mbps "${F[MBps]}"
      done
    done
    printf '.' >&2
  done
  for ((rep = 1; rep <= REPS; rep++)); do ring_run stream "$rep" $ST_SIZES; done
  say ""
  say "== 3. connection set-up rate"
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" plain-tcp plain-unix shim-tcp shim-unix shimnolog-tcp shimnolog-unix); do
      sock_run conn 64 "$v" "$rep" conn 64 || continue
      rec conn 64 "$v" "$rep" cps "${F[conns_per_s]}"
      rec conn 64 "$v" "$rep" med_us "${F[median_us]}"
      rec conn 64 "$v" "$rep" p99_us "${F[p99_us]}"
    done
    printf '.' >&2
  done
  say ""
}

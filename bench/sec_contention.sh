# Section 8 (sourced by bench/run.sh): spinning under contention. One busy-looping
# process per CPU runs beside the benchmark (so there are more runnable threads
# than cores), and the shim must still do no worse than plain sockets, in
# throughput and in p99: ping-pong 64 B (sock_bench, pinned as in section 1),
# redis-benchmark -c 50 -P 1 GET over the unix socket, nginx+wrk 1 KiB over TCP
# (nginx's master and workers and wrk's threads are already more than 2 cores).

# loopers_start: NPROC busy loops, each bounded by CONT_MAX_S; sets LOOPERS.
loopers_start() {
  local i
  LOOPERS=()
  for ((i = 0; i < $(nproc); i++)); do
    bg_start /dev/null timeout "$CONT_MAX_S" bash -c 'while :; do :; done'
    LOOPERS+=("$BG")
  done
}
loopers_stop() { local p; for p in "${LOOPERS[@]}"; do bg_stop "$p"; done; LOOPERS=(); }

section_contention() {
  KEEP=()
  say "== 8. contention: one busy loop per CPU beside the benchmark"
  local rep v
  redis_start plain plain-unix && redis_start shim shim-unix || {
    invalid contention all all 0 "redis-server did not start"
    return
  }
  if [ -z "${NGX_PID[plain-tcp]:-}" ] || [ -z "${NGX_PID[shim-tcp]:-}" ]; then
    nginx_start plain-tcp && nginx_start shim-tcp || invalid contention 1K all 0 "nginx did not start"
  fi
  loopers_start
  for ((rep = 1; rep <= CONT_REPS; rep++)); do
    for v in $(rotate "$rep" plain-unix shim-unix); do
      sock_run contention pp64 "$v" "$rep" pp 64 || continue
      rec contention pp64 "$v" "$rep" tput "$(awk -v m="${F[samples]}" -v s="${F[secs]}" 'BEGIN {printf "%.1f", m / s}')"
      rec contention pp64 "$v" "$rep" p99_us "${F[p99_us]}"
    done
    for v in $(rotate "$rep" plain-unix shim-unix); do redis_bench "$v" c50P1 "$rep" contention get; done
    printf '.' >&2
  done
  if [ -n "${NGX_PID[plain-tcp]:-}" ] && [ -n "${NGX_PID[shim-tcp]:-}" ]; then
    for ((rep = 1; rep <= CONT_REPS; rep++)); do
      for v in $(rotate "$rep" plain-tcp shim-tcp); do wrk_run "$v" 1K "$rep" contention; done
    done
  fi
  loopers_stop
  bg_stop "${REDIS_PID[plain]}"
  bg_stop "${REDIS_PID[shim]}"
  say ""
}

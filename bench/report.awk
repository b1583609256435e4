# report.awk: bench/run.sh's measurements (results.tsv) -> markdown tables, the
# targets table (also written to OUT/targets.md) and gnuplot data (OUT/*.dat).
# Input lines: SECTION CELL VARIANT REP METRIC VALUE, or ... INVALID REASON.
# Variables: OUT (directory), REPS, SPIN, MC (memcached connections), IC (idle
# connections), LOWLAT (low-latency variant's settings), MACH (the machine, one
# line), PIN (CPU placement of sock_bench/ring_bench). POSIX awk (mawk).

function key(s, c, v, m) { return s SUBSEP c SUBSEP v SUBSEP m }

# The machine and CPU placement line printed under every table's title.
function where(p) { print "*Machine: " MACH "; CPU placement: " p ".*\n" }
function pinned() { where(PIN) }
function unpinned() { where("not pinned (the scheduler places every process)") }

# Sorts the values of k into S[1..n]; returns n.
function sortk(k, n, i, j, t) {
  n = N[k] + 0
  for (i = 1; i <= n; i++) S[i] = V[k, i] + 0
  for (i = 2; i <= n; i++) { t = S[i]; for (j = i - 1; j >= 1 && S[j] > t; j--) S[j + 1] = S[j]; S[j + 1] = t }
  return n
}
function qs(n, q, x) { x = int(n * q + 0.999999); if (x < 1) x = 1; if (x > n) x = n; return S[x] }
function mid(n) { return n % 2 ? S[(n + 1) / 2] : (S[n / 2] + S[n / 2 + 1]) / 2 }
function isinv(s, c, v) { return (s SUBSEP c SUBSEP v) in INV }
function has(s, c, v, m) { return !isinv(s, c, v) && N[key(s, c, v, m)] > 0 }
function med(s, c, v, m, n) { if (!has(s, c, v, m)) return ""; n = sortk(key(s, c, v, m)); return mid(n) }

function fmt(x, a) {
  if (x == "") return "–"
  a = x < 0 ? -x : x
  if (a >= 1e6) return sprintf("%.2fM", x / 1e6)
  if (a >= 1e5) return sprintf("%.0fk", x / 1e3)
  if (a >= 1e4) return sprintf("%.1fk", x / 1e3)
  if (a >= 100) return sprintf("%.0f", x)
  if (a >= 10) return sprintf("%.1f", x)
  if (a >= 1) return sprintf("%.2f", x)
  return sprintf("%.3f", x)
}
function fx(r) {
  if (r == "") return "–"
  return (r >= 10 ? sprintf("%.1f", r) : r >= 1 ? sprintf("%.2f", r) : sprintf("%.3f", r)) "×"
}

# "median (min–max)" of one cell, or why there is none.
function cell(s, c, v, m, k, n) {
  if (isinv(s, c, v)) { INVUSED = 1; return "**invalid**" }
  k = key(s, c, v, m)
  n = sortk(k)
  if (!n) return "–"
  if (n == 1) return fmt(S[1])
  return fmt(mid(n)) " (" fmt(S[1]) "–" fmt(S[n]) ")"
}

# Ratio a/b of two variants' medians, the per-repetition ratios' spread in RLO/RHI
# (repetitions in which both ran), and their median in RMED.
function ratio(s, c, va, vb, m, ka, kb, r, n, x, ma, mb) {
  RLO = RHI = RMED = ""
  ma = med(s, c, va, m); mb = med(s, c, vb, m)
  if (ma == "" || mb == "" || mb == 0) return ""
  ka = key(s, c, va, m); kb = key(s, c, vb, m); n = 0
  for (r = 1; r <= MAXREP; r++)
    if (((ka, "r", r) in BYREP) && ((kb, "r", r) in BYREP) && BYREP[kb, "r", r] != 0)
      Q[++n] = BYREP[ka, "r", r] / BYREP[kb, "r", r]
  if (n) {
    for (x = 1; x <= n; x++) V["_q", x] = Q[x]
    N["_q"] = n; n = sortk("_q")
    RLO = S[1]; RHI = S[n]; RMED = mid(n)
  }
  return ma / mb
}
function rcell(x) {
  if (x == "") return "–"
  if (RLO == "" || RLO == RHI) return fx(x)
  return fx(x) " (" fx(RLO) "–" fx(RHI) ")"
}

function sizelabel(c) {
  if (c ~ /K$/) return substr(c, 1, length(c) - 1) " KiB"
  if (c ~ /M$/) return substr(c, 1, length(c) - 1) " MiB"
  return c " B"
}
function bytes(c) { return c ~ /K$/ ? c * 1024 : c ~ /M$/ ? c * 1048576 : c + 0 }

# One targets row. ok: 1 met, 0 not met, "" no data.
function target(desc, measured, req, ok, note, st) {
  NT++
  if (ok == "") st = "no data"
  else st = ok ? "met" : "**NOT met**"
  if (ok != "") { if (ok) NMET++; else NMISS++ }
  T[NT] = "| " NT " | " desc " | " measured " | " req " | " st " | " note " |"
}
# target on a ratio: at least (ge = 1) or at most (ge = 0) thr
# (lbl: the bar's name in speedup.png, for "at least" targets)
function tratio(desc, x, thr, ge, note, lbl, ok) {
  ok = x == "" ? "" : ge ? (x >= thr) : (x <= thr)
  target(desc, rcell(x), (ge ? "≥ " : "≤ ") fx(thr), ok, note)
  if (lbl != "" && x != "") printf "%d \"%s\" %.4f %s\n", NT, lbl, x, thr > (OUT "/speedup.dat")
}

{
  s = $1; c = $2; v = $3; r = $4; m = $5; x = $6
  if (!((s, c) in SEEN)) { SEEN[s, c] = 1; NC[s]++; CELLS[s, NC[s]] = c }
  if (m == "INVALID") {
    INV[s, c, v] = 1
    NINV++
    INVL[NINV] = "- " s " / " c " / " v " / rep " r ": " x
    next
  }
  k = key(s, c, v, m)
  if (s == "regimes" && m !~ /^(srv_us|cli_us|idle_upg|short_upg_pct|long_upg)$/ && !((c, m) in RMSEEN)) {
    RMSEEN[c, m] = 1; RMN[c]++; RM[c, RMN[c]] = m
  }
  N[k]++
  V[k, N[k]] = x
  BYREP[k, "r", r] = x
  if (r + 0 > MAXREP) MAXREP = r + 0
}

function vname(v) {
  return v == "plain-tcp" ? "plain TCP" : v == "plain-unix" ? "plain unix" : v == "shim-tcp" ? "shim TCP" : \
    v == "shim-unix" ? "shim unix" : v == "ring" ? "ring (spin+sleep)" : v == "ring-spin" ? "ring (pure spin)" : \
    v == "shimnolog-tcp" ? "shim TCP, no log" : v == "shimnolog-unix" ? "shim unix, no log" : \
    v == "lowlat-unix" ? "shim unix, low-latency" : v
}
# Prints a table head: the first column, one per variant, then the extra columns
# ("|"-separated).
function thead(first, vs, extras, n, a, i, l, u, ne, e) {
  n = split(vs, a, " ")
  l = "| " first " |"; u = "|---|"
  for (i = 1; i <= n; i++) { l = l " " vname(a[i]) " |"; u = u "---:|" }
  ne = split(extras, e, "|")
  for (i = 1; i <= ne; i++) { l = l " " e[i] " |"; u = u "---:|" }
  print l
  print u
}

function sec_pp(m, title, i, c, j, vs, a, nv, line, n) {
  vs = "plain-tcp plain-unix shim-tcp shim-unix ring ring-spin"
  nv = split(vs, a, " ")
  print "### 1. Ping-pong round trip, " title " (µs; lower is better)\n"
  pinned()
  print "One message of SIZE bytes each way, blocking sockets, TCP_NODELAY; ring: bench/ring_bench's raw ring between two processes (spin+sleep: the shim's wait discipline with the same " SPIN " µs spin; pure spin: both sides busy-poll, the ceiling).\n"
  thead("size", vs, "plain unix ÷ shim unix|plain unix ÷ shim TCP|shim unix ÷ ring (pure spin)")
  for (i = 1; i <= NC["pp"]; i++) {
    c = CELLS["pp", i]
    line = "| " sizelabel(c) " |"
    for (j = 1; j <= nv; j++) line = line " " cell("pp", c, a[j], m) " |"
    line = line " " rcell(ratio("pp", c, "plain-unix", "shim-unix", m)) " | " rcell(ratio("pp", c, "plain-unix", "shim-tcp", m)) " | " rcell(ratio("pp", c, "shim-unix", "ring-spin", m)) " |"
    print line
    if (m == "med_us") {
      printf "%d", bytes(c) > (OUT "/pp.dat")
      for (j = 1; j <= nv; j++) {
        if (has("pp", c, a[j], m)) { n = sortk(key("pp", c, a[j], m)); printf " %s %s %s", mid(n), S[1], S[n] > (OUT "/pp.dat") }
        else printf " NaN NaN NaN" > (OUT "/pp.dat")
      }
      printf "\n" > (OUT "/pp.dat")
    }
  }
  print ""
}

function sec_nagle() {
  print "Diagnostic: TCP without TCP_NODELAY (as redis-benchmark's and many programs' connections), 64 B round trip, µs. The shim's wake-up kicks are 1-byte writes on the real socket: with Nagle on, a kick waits for the ACK of the previous one, and a peer that sends no data ACKs only after the delayed-ACK timer (40 ms).\n"
  print "| | median | p99 | mean | max |"
  print "|---|---:|---:|---:|---:|"
  print "| plain TCP | " cell("pp-nagle", 64, "plain-tcp", "med_us") " | " cell("pp-nagle", 64, "plain-tcp", "p99_us") " | " cell("pp-nagle", 64, "plain-tcp", "mean_us") " | " cell("pp-nagle", 64, "plain-tcp", "max_us") " |"
  print "| shim TCP | " cell("pp-nagle", 64, "shim-tcp", "med_us") " | " cell("pp-nagle", 64, "shim-tcp", "p99_us") " | " cell("pp-nagle", 64, "shim-tcp", "mean_us") " | " cell("pp-nagle", 64, "shim-tcp", "max_us") " |"
  print ""
}

function sec_stream(i, c, j, vs, a, nv, line, n) {
  vs = "plain-tcp plain-unix shim-tcp shim-unix ring ring-spin"
  nv = split(vs, a, " ")
  print "### 2. One-way streaming throughput (MB/s = 10^6 B/s; higher is better)\n"
  pinned()
  print "The client writes W-byte writes for the cell time; the server reads 256 KiB at a time (ring: 1 MiB) and checks the bytes.\n"
  thead("write size", vs, "shim unix ÷ plain unix|shim TCP ÷ plain TCP")
  for (i = 1; i <= NC["stream"]; i++) {
    c = CELLS["stream", i]
    line = "| " sizelabel(c) " |"
    for (j = 1; j <= nv; j++) line = line " " cell("stream", c, a[j], "mbps") " |"
    line = line " " rcell(ratio("stream", c, "shim-unix", "plain-unix", "mbps")) " | " rcell(ratio("stream", c, "shim-tcp", "plain-tcp", "mbps")) " |"
    print line
    printf "%d", bytes(c) > (OUT "/stream.dat")
    for (j = 1; j <= nv; j++) {
      if (has("stream", c, a[j], "mbps")) { n = sortk(key("stream", c, a[j], "mbps")); printf " %s %s %s", mid(n), S[1], S[n] > (OUT "/stream.dat") }
      else printf " NaN NaN NaN" > (OUT "/stream.dat")
    }
    printf "\n" > (OUT "/stream.dat")
  }
  print ""
}

function sec_conn(f, F) {
  print "### 3. Connection set-up rate (connect + 64 B request/response + close, one at a time; connections/s, higher is better)\n"
  pinned()
  print "\"shim\": preloaded, every connection upgraded (`SHMSHIM_SHORT_MS=0`) and logging (the log proves it at both ends): what the negotiation costs. \"shim, no log\": default settings, without the log (the target): after 16 short-lived connections the server offers only one new connection in 16 and the client stops setting up its endpoint, so most stay plain (tests/preload/short.sh checks that, and that long-lived connections are upgraded again afterwards).\n"
  print "| family | plain | shim | shim, no log | shim, no log ÷ plain | µs per connection: plain | shim, no log |"
  print "|---|---:|---:|---:|---:|---:|---:|"
  split("tcp unix", F, " ")
  for (f = 1; f <= 2; f++)
    print "| " (F[f] == "tcp" ? "TCP" : "AF_UNIX") " | " cell("conn", 64, "plain-" F[f], "cps") " | " cell("conn", 64, "shim-" F[f], "cps") " | " \
      cell("conn", 64, "shimnolog-" F[f], "cps") " | " rcell(ratio("conn", 64, "shimnolog-" F[f], "plain-" F[f], "cps")) " | " \
      cell("conn", 64, "plain-" F[f], "med_us") " | " cell("conn", 64, "shimnolog-" F[f], "med_us") " |"
  print ""
}

function sec_redis(i, c) {
  print "### 4a. redis-benchmark (unmodified; -t set,get; requests/s, higher is better)\n"
  unpinned()
  print "redis-server and redis-benchmark both plain or both preloaded; -n adapts to about the same duration for every variant.\n"
  print "| test | plain TCP | plain unix | shim TCP | shim unix | shim unix ÷ plain unix | shim TCP ÷ plain TCP | p99 ms: plain unix | shim unix |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= NC["redis"]; i++) {
    c = CELLS["redis", i]
    print "| " c " | " cell("redis", c, "plain-tcp", "rps") " | " cell("redis", c, "plain-unix", "rps") " | " cell("redis", c, "shim-tcp", "rps") " | " \
      cell("redis", c, "shim-unix", "rps") " | " rcell(ratio("redis", c, "shim-unix", "plain-unix", "rps")) " | " \
      rcell(ratio("redis", c, "shim-tcp", "plain-tcp", "rps")) " | " cell("redis", c, "plain-unix", "p99_ms") " | " cell("redis", c, "shim-unix", "p99_ms") " |"
  }
  print ""
}

function sec_latency(M, L, i, j, vs, a, nv, line) {
  vs = "plain-tcp plain-unix shim-tcp shim-unix lowlat-unix"
  nv = split(vs, a, " ")
  print "### 4b. redis PING every 10 ms, peers asleep in between (the redis-cli --latency pattern; lower is better)\n"
  unpinned()
  print "bench/loadgen lat times each PING to the ns; then unmodified `redis-cli --latency` runs as long (it reports ms with 2 decimals). Low-latency variant: `" LOWLAT "` in server and client. CPU: % of one CPU during the loadgen run.\n"
  thead("", vs, "")
  split("p50_us p99_us avg_us cli_avg_us srv_pct cli_pct", M, " ")
  split("p50 µs|p99 µs|mean µs|redis-cli --latency avg µs|server CPU %|client CPU %", L, "|")
  for (i = 1; i <= 6; i++) {
    line = "| " L[i] " |"
    for (j = 1; j <= nv; j++) line = line " " cell("latency", "redis-ping", a[j], M[i]) " |"
    print line
  }
  print ""
}

function sec_nginx(i, c) {
  print "### 4c. nginx + wrk (keep-alive, " "wrk -t2 -c32; requests/s, higher is better)\n"
  unpinned()
  print "| file | plain TCP | shim TCP | shim ÷ plain | p99 ms: plain | shim |"
  print "|---|---:|---:|---:|---:|---:|"
  for (i = 1; i <= NC["nginx"]; i++) {
    c = CELLS["nginx", i]
    print "| " c "B | " cell("nginx", c, "plain-tcp", "rps") " | " cell("nginx", c, "shim-tcp", "rps") " | " rcell(ratio("nginx", c, "shim-tcp", "plain-tcp", "rps")) " | " \
      cell("nginx", c, "plain-tcp", "p99_ms") " | " cell("nginx", c, "shim-tcp", "p99_ms") " |"
  }
  print ""
}

function sec_mc(c) {
  c = MC "c"
  print "### 4d. memcached, " MC " connections (bench/loadgen mc: one request outstanding per connection, 90% get / 10% set, 100-byte values, every answer checked; ops/s, higher is better)\n"
  unpinned()
  print "| | plain TCP | plain unix | shim TCP | shim unix | shim unix ÷ plain unix | shim TCP ÷ plain TCP |"
  print "|---|---:|---:|---:|---:|---:|---:|"
  print "| ops/s | " cell("memcached", c, "plain-tcp", "ops") " | " cell("memcached", c, "plain-unix", "ops") " | " cell("memcached", c, "shim-tcp", "ops") " | " \
    cell("memcached", c, "shim-unix", "ops") " | " rcell(ratio("memcached", c, "shim-unix", "plain-unix", "ops")) " | " rcell(ratio("memcached", c, "shim-tcp", "plain-tcp", "ops")) " |"
  print "| p99 µs | " cell("memcached", c, "plain-tcp", "p99_us") " | " cell("memcached", c, "plain-unix", "p99_us") " | " cell("memcached", c, "shim-tcp", "p99_us") " | " \
    cell("memcached", c, "shim-unix", "p99_us") " | | |"
  print ""
}

function sec_preload(i, c, x, a, b) {
  print "### 5. Preloaded where nothing is accelerated (bench/io_loop; ns per operation, lower is better)\n"
  unpinned()
  print "One operation: a 64-byte write and a 64-byte read of the same bytes through a pipe, a file (write, lseek, read, lseek), or a socket to an unshimmed echo peer (the preloaded client's connection stays plain, checked in its log). Ratio: median of the per-repetition ratios (p10–p90 in brackets: min–max with few repetitions). Instructions: callgrind, inside the loop (libc and the shim, no kernel).\n"
  print "| operation | plain ns | preloaded ns | preloaded ÷ plain | instructions/op: plain | preloaded | extra |"
  print "|---|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= NC["preload"]; i++) {
    c = CELLS["preload", i]
    if (c == "all") continue
    x = ratio("preload", c, "preloaded", "plain", "ns_op")
    a = med("preload-ir", c, "plain", "ir_op"); b = med("preload-ir", c, "preloaded", "ir_op")
    print "| " c " | " cell("preload", c, "plain", "ns_op") " | " cell("preload", c, "preloaded", "ns_op") " | " preload_ratio(c) " | " \
      cell("preload-ir", c, "plain", "ir_op") " | " cell("preload-ir", c, "preloaded", "ir_op") " | " (a != "" && b != "" ? sprintf("%+.0f", b - a) : "–") " |"
  }
  print ""
}
# the paired ratio for section 5: median and p10-p90 of the per-repetition ratios
function preload_ratio(c, x, n) {
  x = ratio("preload", c, "preloaded", "plain", "ns_op")
  if (x == "" || RMED == "") return "–"
  PR[c] = RMED
  n = N["_q"]
  return sprintf("%.3f (%.3f–%.3f)", RMED, qs(n, 0.1), qs(n, 0.9))
}

function sec_cpu(i, c, vs, a, nv, j, line) {
  vs = "plain-tcp plain-unix shim-tcp shim-unix"
  nv = split(vs, a, " ")
  print "### 6. CPU cost: CPU seconds per million requests, server / client (lower is better)\n"
  unpinned()
  print "Measured during the section 4 runs: server from schedstat (all threads), client from getrusage.\n"
  thead("workload", vs, "")
  for (i = 1; i <= NC["cpu"]; i++) {
    c = CELLS["cpu", i]
    line = "| " c " |"
    for (j = 1; j <= nv; j++)
      line = line " " (isinv("cpu", c, a[j]) || !has("cpu", c, a[j], "srv") ? "–" : fmt(med("cpu", c, a[j], "srv")) " / " fmt(med("cpu", c, a[j], "cli"))) " |"
    print line
  }
  print ""
  c = "redis-" IC "c"
  print "Idle: redis-server with " IC " open connections that each carried traffic, and the client (bench/loadgen hold) asleep in poll() on all of them; % of one CPU over the idle window.\n"
  print "| | plain unix | shim unix | shim TCP |"
  print "|---|---:|---:|---:|"
  print "| server CPU % | " cell("idle", c, "plain-unix", "srv_pct") " | " cell("idle", c, "shim-unix", "srv_pct") " | " cell("idle", c, "shim-tcp", "srv_pct") " |"
  print "| client CPU % | " cell("idle", c, "plain-unix", "cli_pct") " | " cell("idle", c, "shim-unix", "cli_pct") " | " cell("idle", c, "shim-tcp", "cli_pct") " |"
  print ""
}

function sec_mem(c, M, L, i) {
  c = "redis-" IC "c"
  print "### 7. Memory per connection (KiB; redis-server + bench/loadgen hold, " IC " connections, each SET and GET a value twice the ring size)\n"
  unpinned()
  print "Ring: the shared memory resident in both processes (Pss_Shmem of server + client: a page both map counts once) per connection. Busy: right after the traffic; idle: after the idle window of section 6. Server/client: whole-process Rss growth per connection (the server's includes the stored values).\n"
  print "| KiB per connection | plain unix | shim unix | shim TCP |"
  print "|---|---:|---:|---:|"
  split("ring_busy_kb ring_idle_kb srv_busy_kb srv_idle_kb cli_busy_kb cli_idle_kb", M, " ")
  split("ring, busy|ring, idle|server Rss, busy|server Rss, idle|client Rss, busy|client Rss, idle", L, "|")
  for (i = 1; i <= 6; i++)
    print "| " L[i] " | " cell("mem", c, "plain-unix", M[i]) " | " cell("mem", c, "shim-unix", M[i]) " | " cell("mem", c, "shim-tcp", M[i]) " |"
  print ""
}

function sec_contention(i, c, m, p, pv, sv, u) {
  print "### 8. Contention: one busy-looping process per CPU beside the benchmark\n"
  where("ping-pong as in section 1 (" PIN "); redis and nginx not pinned")
  print "| workload | plain | shim | shim ÷ plain | p99: plain | shim | shim ÷ plain |"
  print "|---|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= NC["contention"]; i++) {
    c = CELLS["contention", i]
    if (c == "all") continue
    if (c == "pp64") { m = "tput"; p = "p99_us"; pv = "plain-unix"; sv = "shim-unix"; u = "ping-pong 64 B unix (round trips/s; p99 µs)" }
    else if (c == "1K") { m = "rps"; p = "p99_ms"; pv = "plain-tcp"; sv = "shim-tcp"; u = "nginx+wrk 1 KiB (req/s; p99 ms)" }
    else { m = "rps"; p = "p99_ms"; pv = "plain-unix"; sv = "shim-unix"; u = "redis-benchmark " c " unix (req/s; p99 ms)" }
    CM[c] = m; CP[c] = p; CPV[c] = pv; CSV[c] = sv; CU[c] = u
    print "| " u " | " cell("contention", c, pv, m) " | " cell("contention", c, sv, m) " | " rcell(ratio("contention", c, sv, pv, m)) " | " \
      cell("contention", c, pv, p) " | " cell("contention", c, sv, p) " | " rcell(ratio("contention", c, sv, pv, p)) " |"
  }
  print ""
}

# Section 9: one row per regimes cell and metric; the speed ratio is shim ÷ plain
# for rates and plain ÷ shim for times, so that > 1 always means the shim is better.
function rglabel(c, a, n) {
  n = split(c, a, "-")
  if (c ~ /^setup/) return "set-up of " substr(a[1], 6) " idle members (connect, SET, GET; one after the other), " fam(c)
  if (c ~ /^idle/) {
    match(a[1], /[0-9]+/)
    return substr(a[1], RSTART, RLENGTH) " idle members (" fam(substr(a[1], RSTART + RLENGTH)) "), redis-benchmark -t get -c " substr(a[2], 2) ", unix"
  }
  if (c ~ /^sparse/) return "a PING every " (a[2] ~ /us$/ ? substr(a[2], 1, length(a[2]) - 2) " µs" : substr(a[2], 1, length(a[2]) - 2) " ms") ", " fam(c)
  if (c ~ /^churn/) return "connect + PING + close, then one long connection, " fam(c)
  if (c ~ /^memcached/) return "memcached -t 4, " substr(a[3], 2) " connections, " fam(c)
  if (c ~ /^rsync/) return "rsync " a[2] " of 100 MB (daemon), TCP"
  if (c ~ /^haproxy/) return "wrk -c " HAC " → haproxy → nginx, 1 MiB, TCP"
  return c
}
function fam(c) { return c ~ /unix/ ? "unix" : "TCP" }
function rgmlabel(m) {
  return m == "rps" ? "req/s" : m == "ops" ? "ops/s" : m == "cps" ? "connections/s" : m == "mbps" ? "MB/s" : \
    m == "p50_us" ? "p50 µs" : m == "p99_us" ? "p99 µs" : m == "p99_ms" ? "p99 ms" : m == "setup_ms" ? "ms" : \
    m == "long_p50_us" ? "long connection: p50 µs" : m == "long_p99_us" ? "long connection: p99 µs" : m
}
function sec_regimes(f, i, j, c, m, pv, sv, x, st, line, up, cpu, u, nmet, nmiss, hb) {
  f = OUT "/regimes.md"
  print "### 9. Regimes: shim vs plain, side by side, with CPU per request (goal: every cell ≥ 1.0× plain, 5% noise margin)\n" > f
  print "*Machine: " MACH "; not pinned. Median (per-repetition min–max) over the repetitions; plain and shim alternated, order rotated.*\n" > f
  print "Speed: shim ÷ plain for rates, plain ÷ shim for times (> 1: the shim is better); status: ≥ 0.95×. CPU: µs per request (PING, GET, memcached op, HTTP response; per 100 MB transfer for rsync) of the server (schedstat of all its threads; rsync: the daemon and its reaped children) and of the client (getrusage). Shim connections: every measured connection of a shim run was upgraded at both ends (the shim's logs; a run where not is **invalid**), plus the idle members and, for churn, what the short-connection heuristic decided.\n" > f
  print "| regime | metric | plain | shim | speed | status | CPU µs/req server: plain | shim | client: plain | shim | shim connections |" > f
  print "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|" > f
  for (i = 1; i <= NC["regimes"]; i++) {
    c = CELLS["regimes", i]
    if (c == "idle" || c == "churn" || c == "all" || !(c in RMN)) {
      if (c != "" && !(c in RMN)) print "| " rglabel(c) " | | **invalid** | | | | | | | | |" > f
      continue
    }
    pv = c ~ /unix/ ? "plain-unix" : "plain-tcp"; sv = c ~ /unix/ ? "shim-unix" : "shim-tcp"
    for (j = 1; j <= RMN[c]; j++) {
      m = RM[c, j]
      hb = m ~ /^(rps|ops|cps|mbps)$/
      x = hb ? ratio("regimes", c, sv, pv, m) : ratio("regimes", c, pv, sv, m)
      if (x == "") st = "no data"
      else if (x >= 0.95) { st = "met"; nmet++ }
      else { st = "**NOT met**"; nmiss++ }
      if (j == 1) {
        cpu = cpucell(c, pv, "srv_us") " | " cpucell(c, sv, "srv_us") " | " cpucell(c, pv, "cli_us") " | " cpucell(c, sv, "cli_us")
        if (isinv("regimes", c, sv)) up = "**invalid**"
        else if (!has("regimes", c, sv, m)) up = "–"
        else {
          up = "upgraded"
          if (has("regimes", c, sv, "idle_upg")) up = up "; idle members upgraded: " fmt(med("regimes", c, sv, "idle_upg"))
          if (has("regimes", c, sv, "short_upg_pct")) {
            u = sortk(key("regimes", c, sv, "long_upg"))
            x2 = 0; for (k = 1; k <= u; k++) x2 += S[k]
            up = "short: " fmt(med("regimes", c, sv, "short_upg_pct")) "% upgraded; long: upgraded in " x2 " of " u " runs"
          }
        }
      } else { cpu = " |  |  | "; up = "" }
      print "| " (j == 1 ? rglabel(c) : "") " | " rgmlabel(m) " | " cell("regimes", c, pv, m) " | " cell("regimes", c, sv, m) " | " rcell(x) " | " st " | " cpu " | " up " |" > f
    }
  }
  print "\n" nmet + 0 " met, " nmiss + 0 " not met." > f
  close(f)
  while ((getline l < f) > 0) print l
  print ""
}
function cpucell(c, v, m) { return isinv("regimes", c, v) || !has("regimes", c, v, m) ? "–" : fmt(med("regimes", c, v, m)) }

function targets(c, x, y, f, F, i, t, cfgs, thr, z, w) {
  NT = 0
  tratio("64 B round trip: shim unix vs plain AF_UNIX (plain ÷ shim)", ratio("pp", 64, "plain-unix", "shim-unix", "med_us"), 20, 1, "", "RT 64B unix")
  tratio("64 B round trip: shim TCP vs plain AF_UNIX (plain ÷ shim)", ratio("pp", 64, "plain-unix", "shim-tcp", "med_us"), 20, 1, "", "RT 64B TCP")
  y = ratio("pp", 64, "shim-unix", "ring", "med_us")
  tratio("64 B round trip: shim unix ÷ raw ring (pure spin)", ratio("pp", 64, "shim-unix", "ring-spin", "med_us"), 2, 0, y == "" ? "" : "(÷ ring spin+sleep: " fx(y) ")")
  tratio("1 MiB round trip: plain AF_UNIX ÷ shim unix", ratio("pp", "1M", "plain-unix", "shim-unix", "med_us"), 2, 1, "", "RT 1MiB")
  tratio("streaming 64 B writes: shim unix ÷ plain AF_UNIX", ratio("stream", 64, "shim-unix", "plain-unix", "mbps"), 50, 1, "", "stream 64B")
  tratio("streaming 64 KiB writes: shim unix ÷ plain AF_UNIX", ratio("stream", "64K", "shim-unix", "plain-unix", "mbps"), 4, 1, "", "stream 64KiB")
  split("c1P1 5 c50P1 2.5 c50P16 1.3", cfgs, " ")
  for (i = 1; i <= 5; i += 2)
    for (t = 1; t <= 2; t++) {
      c = cfgs[i] "-" (t == 1 ? "SET" : "GET")
      tratio("redis-benchmark " c ": shim unix ÷ plain unix", ratio("redis", c, "shim-unix", "plain-unix", "rps"), cfgs[i + 1], 1, "", "redis " c)
    }
  tratio("nginx+wrk 1 KiB keep-alive: shim ÷ plain TCP", ratio("nginx", "1K", "shim-tcp", "plain-tcp", "rps"), 2, 1, "", "nginx 1KiB")
  tratio("memcached " MC " connections: shim unix ÷ plain unix", ratio("memcached", MC "c", "shim-unix", "plain-unix", "ops"), 1.5, 1, "", "memcached")
  tratio("connection set-up rate, TCP: shim ÷ plain", ratio("conn", 64, "shimnolog-tcp", "plain-tcp", "cps"), 0.6, 1, "", "conn/s TCP")
  tratio("connection set-up rate, AF_UNIX: shim ÷ plain", ratio("conn", 64, "shimnolog-unix", "plain-unix", "cps"), 0.6, 1, "", "conn/s unix")
  split("pipe file tcp4 unix", F, " ")
  for (f = 1; f <= 4; f++) {
    x = ratio("preload", F[f], "preloaded", "plain", "ns_op")
    x = RMED
    z = med("preload-ir", F[f], "plain", "ir_op"); w = med("preload-ir", F[f], "preloaded", "ir_op")
    target("preloaded, not accelerated, " F[f] ": time ÷ without (median of paired ratios)", x == "" ? "–" : sprintf("%.3f", x), "≤ 1.020", \
      x == "" ? "" : x <= 1.02, z != "" && w != "" ? sprintf("(callgrind: %+.0f instructions per op, %+.1f%% of the user-space loop)", w - z, 100 * (w - z) / z) : "")
  }
  c = "redis-" IC "c"
  x = med("idle", c, "shim-unix", "srv_pct"); y = med("idle", c, "plain-unix", "srv_pct")
  target("idle shimmed redis-server, " IC " connections: CPU % (plain server: " fmt(y) "%)", fmt(x) "%", "≤ plain + 0.1", \
    x == "" || y == "" ? "" : x <= y + 0.1)
  x = med("idle", c, "shim-unix", "cli_pct"); y = med("idle", c, "plain-unix", "cli_pct")
  target("idle shimmed client asleep in poll() on " IC " connections: CPU %", fmt(x) "%", "≤ plain + 0.1", x == "" || y == "" ? "" : x <= y + 0.1)
  tratio("redis PING every 10 ms, default settings: shim unix p50 ÷ plain AF_UNIX p50", ratio("latency", "redis-ping", "shim-unix", "plain-unix", "p50_us"), 1.05, 0, "(no worse; 5% noise margin)")
  x = med("latency", "redis-ping", "lowlat-unix", "p50_us")
  target("redis PING every 10 ms, low-latency mode (`" LOWLAT "`): p50 µs", fmt(x) " µs (CPU: server " fmt(med("latency", "redis-ping", "lowlat-unix", "srv_pct")) "%, client " fmt(med("latency", "redis-ping", "lowlat-unix", "cli_pct")) "%)", "≤ 15 µs", x == "" ? "" : x <= 15)
  split("shim-unix shim-tcp", F, " ")
  for (f = 1; f <= 2; f++) {
    x = med("mem", c, F[f], "ring_idle_kb")
    target("idle upgraded connection (" vname(F[f]) "): resident ring KiB (busy: " fmt(med("mem", c, F[f], "ring_busy_kb")) ")", fmt(x), "≤ 64", x == "" ? "" : x <= 64)
  }
  for (i = 1; i <= NC["contention"]; i++) {
    c = CELLS["contention", i]
    if (c == "all") continue
    tratio("contention, " CU[c] ": throughput shim ÷ plain", ratio("contention", c, CSV[c], CPV[c], CM[c]), 0.95, 1, "(no worse; 5% noise margin)")
    tratio("contention, " CU[c] ": p99 shim ÷ plain", ratio("contention", c, CSV[c], CPV[c], CP[c]), 1.05, 0, "(no worse; 5% noise margin)")
  }
  f = OUT "/targets.md"
  print "### Targets (ratios measured side by side in this run; median (per-repetition min–max))\n" > f
  print "| # | target | measured | required | status | note |" > f
  print "|---:|---|---:|---:|---|---|" > f
  for (i = 1; i <= NT; i++) print T[i] > f
  print "\n" NMET + 0 " met, " NMISS + 0 " not met, " NT - NMET - NMISS " without data." > f
  close(f)
  close(OUT "/speedup.dat")
}

END {
  if ("pp" in NC) { sec_pp("med_us", "median"); sec_pp("p99_us", "p99") }
  if ("pp-nagle" in NC) sec_nagle()
  if ("stream" in NC) sec_stream()
  if ("conn" in NC) sec_conn()
  if ("redis" in NC) sec_redis()
  if ("latency" in NC) sec_latency()
  if ("nginx" in NC) sec_nginx()
  if ("memcached" in NC) sec_mc()
  if ("preload" in NC) sec_preload()
  if ("cpu" in NC || "idle" in NC) sec_cpu()
  if ("mem" in NC) sec_mem()
  if ("contention" in NC) sec_contention()
  if ("regimes" in NC) sec_regimes()
  targets()
  while ((getline l < (OUT "/targets.md")) > 0) print l
  if (NINV) {
    print "\n### Invalid runs (not shown as numbers above)\n"
    for (i = 1; i <= NINV; i++) print INVL[i]
  }
}

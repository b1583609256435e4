# Shared by tests/integration/*.sh (sourced, bash). Real servers and their own
# clients, unmodified, with and without the library on either end.
#
# What a test script does with it:
#   it_init NAME                 temp dir ($T), log dir ($T/log, writable by the
#                                servers' own users), cleanup trap
#   it_need CMD...               fail (not skip) when a program is missing
#   port=$(it_port)              a free private loopback port
#   it_start VAR SHIM LOG CMD..  start a server in the background (SHIM 1: with the
#                                library, logging to LOG); its PID goes into VAR and
#                                is stopped by the cleanup if still alive
#   it_stop PID [SIG] [SECS]     graceful stop (default TERM), KILL after SECS;
#                                returns the exit status
#   it_run SHIM LOG CMD...       run a client, shimmed or not
#   it_wait SECS CMD...          poll CMD until it succeeds (bounded)
#   it_sha FILE / it_sha_stdin   sha256 of a file / of stdin
#   it_check DESC OK             count one check ("OK" is 0 or 1; DESC names it)
#   it_cell_begin / it_cell_end  log offsets around one cell of the matrix
#   it_cell_verdict ...          the upgrade assertions for one cell (see below)
#   it_finish                    prints the summary and exits with the result
set -u
export LC_ALL=C

IT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IT_BUILD=${BUILD:-build}
case $IT_BUILD in /*) ;; *) IT_BUILD=$IT_ROOT/$IT_BUILD ;; esac
IT_LIB=${SHM_PRELOAD:-$IT_BUILD/libshmshim.so}
IT_PASS=0
IT_FAIL=0
IT_PIDS=()
IT_NAME=""
T=""

it_log() { echo "[$IT_NAME] $*"; }

it_cleanup() {
  local i pid
  for ((i = ${#IT_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${IT_PIDS[$i]}
    kill -0 "$pid" 2>/dev/null && it_stop "$pid" TERM 10 >/dev/null 2>&1
  done
  if [ -n "$T" ] && [ -d "$T" ]; then
    if [ "${IT_KEEP:-0}" = 1 ]; then echo "[$IT_NAME] kept $T"; else rm -rf "$T"; fi
  fi
}

it_init() {
  IT_NAME=$1
  [ -f "${IT_LIB##* }" ] || { echo "[$IT_NAME] FAIL: ${IT_LIB##* } missing (make lib)"; exit 1; }
  T=$(mktemp -d "/tmp/shmshim-it-$1.XXXXXX") || exit 1
  # Servers drop privileges (nginx and memcached workers run as nobody, postgres
  # as its own user): they must reach their files and write the shim's log.
  chmod 755 "$T"
  mkdir -m 1777 "$T/log"
  trap it_cleanup EXIT
  trap 'echo "[$IT_NAME] interrupted"; exit 130' INT TERM
}

it_need() {
  local c missing=""
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
  if [ -n "$missing" ]; then
    echo "[$IT_NAME] FAIL: missing programs:$missing (make deps)"
    exit 1
  fi
}

# A port nobody uses, below the ephemeral range so that no client's local port can
# take it meanwhile; random so that concurrent runs do not collide.
it_port() {
  local p i
  for i in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if ! awk 'FNR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null |
      grep -qx "$(printf %04X "$p")"; then
      echo "$p"
      return 0
    fi
  done
  echo "[$IT_NAME] no free port" >&2
  return 1
}

# it_listening_unix PATH: a unix socket listens at PATH (not only bound: the
# socket's file exists from bind() on, and a client that connects before the
# listen() is refused; socat's nofork cell, 1 in a full run).
it_listening_unix() { ss -Hlx "src = $1" | grep -q .; }

# The environment of a shimmed or plain process, as the array IT_ENV. The plain one
# also gets the log variables: without the library they do nothing, so a stray log
# line from a plain process would show that the library was loaded after all.
# IT_DEFAULT_SETTINGS=1: shimmed processes run with the library's default settings
# (SHMSHIM_SHORT_MS unset), logging at $IT_DEFAULT_LOG (default info). A script
# whose default cells make connections in bursts sets it to debug: the
# connections the short-lived policy leaves plain without a look are logged only
# there, and it_verdict must count every connection.
it_env() {
  if [ "$1" = 1 ] && [ "${IT_DEFAULT_SETTINGS:-0}" = 1 ]; then
    # The library's defaults, whatever the caller's environment says (the
    # Makefile exports SHMSHIM_SHORT_MS=0 for the suites).
    IT_ENV=(env -u SHMSHIM_SHORT_MS "LD_PRELOAD=$IT_LIB" "SHMSHIM_LOG=${IT_DEFAULT_LOG:-info}" "SHMSHIM_LOG_FILE=$2")
  elif [ "$1" = 1 ]; then
    IT_ENV=(env "LD_PRELOAD=$IT_LIB" SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$2")
  else
    IT_ENV=(env -u LD_PRELOAD SHMSHIM_LOG=info "SHMSHIM_LOG_FILE=$2")
  fi
}

it_start() {
  local var=$1
  it_env "$2" "$3"
  shift 3
  # exec'd through env: $! is the server's own PID.
  "${IT_ENV[@]}" "$@" &
  local pid=$!
  IT_PIDS+=("$pid")
  printf -v "$var" '%s' "$pid"
}

it_run() {
  it_env "$1" "$2"
  shift 2
  "${IT_ENV[@]}" "$@"
}

it_stop() {
  local pid=$1 sig=${2:-TERM} secs=${3:-20} i rc
  kill -"$sig" "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return $?; }
  for ((i = 0; i < secs * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "[$IT_NAME] PID $pid did not stop on SIG$sig within ${secs}s: killed" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  rc=$?
  return $rc
}

it_wait() {
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then
      [ $i -ge 20 ] && it_log "note: waited $((i / 10)).$((i % 10)) s for: $*"
      return 0
    fi
    sleep 0.1
  done
  it_log "note: gave up after $secs s waiting for: $*"
  return 1
}

it_sha() { sha256sum <"$1" | cut -c1-64; }
it_sha_stdin() { sha256sum | cut -c1-64; }

# it_check DESC OK [DETAIL]: one assertion.
it_check() {
  if [ "$2" = 1 ]; then
    IT_PASS=$((IT_PASS + 1))
  else
    IT_FAIL=$((IT_FAIL + 1))
    echo "[$IT_NAME] FAIL: $1${3:+: $3}"
  fi
}

# it_eq DESC GOT WANT: equality assertion that shows both values on failure.
it_eq() {
  if [ "$2" = "$3" ]; then it_check "$1" 1; else it_check "$1" 0 "got '$2', want '$3'"; fi
}

# Byte offset of a log file (0 when absent).
it_size() { if [ -f "$1" ]; then stat -c %s "$1"; else echo 0; fi; }

# Lines of FILE written after byte OFFSET.
it_since() { [ -f "$1" ] && tail -c +"$(($2 + 1))" "$1"; return 0; }

# Cells. A cell is one combination of the matrix (client shimmed or not, server
# shimmed or not, one transport). Its client processes log into a fresh file
# ($IT_CLOG); for the server logs named in it_cell_begin, the offsets at its start
# and end delimit what the server logged for it.
IT_CELL=0
it_cell_begin() {
  IT_CELL=$((IT_CELL + 1))
  IT_CLOG=$T/log/cell$IT_CELL.client.log
  IT_CELL_FILES=("$@")
  IT_CELL_START=()
  local f
  for f in "$@"; do IT_CELL_START+=("$(it_size "$f")"); done
}

# it_run_features LABEL FEATURE...: runs feat_FEATURE for each, in order, and logs
# how long each took.
it_run_features() {
  local label=$1 f t0 times=""
  shift
  for f in "$@"; do
    t0=$(date +%s%N)
    feat_$f
    times="$times $f=$((($(date +%s%N) - t0) / 1000000))ms"
  done
  it_log "time $label:$times"
}

# Snapshot of the server logs for this cell, into $T/log/cellN.server.log.
it_cell_end() {
  IT_SLOG=$T/log/cell$IT_CELL.server.log
  : >"$IT_SLOG"
  local i
  for ((i = 0; i < ${#IT_CELL_FILES[@]}; i++)); do
    it_since "${IT_CELL_FILES[$i]}" "${IT_CELL_START[$i]}" >>"$IT_SLOG"
  done
}

# it_count PATTERN FILE: lines matching the extended regex (0 if no file).
it_count() { if [ -f "$2" ]; then grep -cE -- "$1" "$2"; else echo 0; fi; }

# Warnings that are not about this test's connections: offers from processes that
# do not own the peer socket (another user's program on a shared machine probing
# endpoint names). The shim ignores them by design (tests/preload/forge.sh); they
# are shown, not counted as failures.
IT_STRANGER='offer from uid -?[0-9]+, the peer socket.s owner is -?[0-9]+: ignored|endpoint owned by uid [0-9]+, peer socket by uid [0-9]+: plain'

# it_cell_verdict LABEL CS SS FAMILY NCONN [SLACK]
# The upgrade assertions for the cell just ended (its server and client logs),
# from the shim's own log lines:
#   NCONN  connections the server itself counted for the cell (its own statistics)
#   SLACK  client connections that may end before they read anything (a client
#          killed on purpose, connections wrk opens and closes unused): they never
#          learn whether they were upgraded, and if closed before the server
#          accepted them, the server finds no endpoint (it logs "peer closed
#          before accept")
# both shimmed: every connection the server accepted was upgraded (server log:
#   NCONN "upgraded ... role=server family=FAMILY" lines, no "plain" line), and the
#   clients took every offer (as many role=client lines, minus at most SLACK);
# one side shimmed: no upgrade anywhere, and the shimmed side says why for every
#   connection ("plain fd=N role=...") — nothing fell back silently;
# neither: nothing logged at all (the plain processes really ran without the library).
# In every case: no warning other than stranger offers (see IT_STRANGER).
it_cell_verdict() { it_verdict "$1" "$2" "$3" "$4" "$5" "${6:-0}" "$IT_SLOG" "$IT_CLOG"; }

# it_verdict LABEL CS SS FAMILY NCONN SLACK SERVER_LOG CLIENT_LOG: the same for
# any pair of log excerpts (a proxy is the client of its upstream).
it_verdict() {
  local label=$1 cs=$2 ss=$3 fam=$4 n=$5 slack=$6 sl=$7 cl=$8
  local ups upc pls plc dead warn strangers
  ups=$(it_count " upgraded fd=[0-9]+ role=server family=$fam " "$sl")
  upc=$(it_count " upgraded fd=[0-9]+ role=client family=$fam " "$cl")
  pls=$(it_count " plain fd=[0-9]+ role=server:" "$sl")
  # A client that closes a connection before the server accepts it takes its
  # endpoint with it: the server finds none and says so. Such a connection never
  # carried anything; it can only be one of the SLACK ones.
  dead=$(it_count " plain fd=[0-9]+ role=server: (peer closed (before accept|its end)|peer socket not found)" "$sl")
  plc=$(it_count " plain fd=[0-9]+ role=client:" "$cl")
  # A connection is upgraded only once both ends used it after the offer: a
  # client that did not look again before the server had answered and closed
  # finds the offer withdrawn, and both ends say so (plain at both, never one).
  local wds wdc
  wds=$(it_count " plain fd=[0-9]+ role=server: the client never took the offer" "$sl")
  wdc=$(it_count " plain fd=[0-9]+ role=client: (the server withdrew its offer|an offer came, but its sender no longer holds)" "$cl")
  # With the defaults (IT_DEFAULT_SETTINGS=1, IT_DEFAULT_LOG=debug), the short-lived
  # policy's choices on either side: the server offers none (its clients then see
  # bytes or the end without an offer), or a client sets up no endpoint (its
  # server then finds none). They count as withdrawn offers do: plain at both ends.
  if [ "${IT_DEFAULT_SETTINGS:-0}" = 1 ]; then
    wds=$((wds + $(it_count " plain fd=[0-9]+ role=server: (short-lived connections here lately|peer not shimmed)" "$sl")))
    wdc=$((wdc + $(it_count " plain fd=[0-9]+ role=client: (no offer on the last connections to this address|data came without an offer|peer closed or failed)" "$cl")))
  fi
  strangers=$(cat "$sl" "$cl" 2>/dev/null | grep ' warn ' | grep -cE "$IT_STRANGER")
  warn=$(cat "$sl" "$cl" 2>/dev/null | grep ' warn ' | grep -vcE "$IT_STRANGER")
  [ "$strangers" != 0 ] && it_log "note: $label: $strangers offer(s) from strangers ignored (another program on this machine)"
  local why=""
  [ "$n" -ge 1 ] || why="$why; the server counted no connection"
  case $cs$ss in
    11)
      [ "$ups" = $((n - dead - wds)) ] || why="$why; server upgraded $ups of $n connections ($dead closed before accept, $wds offers withdrawn)"
      [ "$pls" = $((dead + wds)) ] || why="$why; server left $((pls - dead - wds)) connection(s) plain"
      [ "$dead" -le "$slack" ] || why="$why; $dead connections closed before accept, more than the $slack unused ones"
      [ "$plc" = "$wdc" ] || why="$why; clients left $((plc - wdc)) connection(s) plain"
      [ "$wdc" -le "$wds" ] || why="$why; clients found $wdc offers withdrawn, the server withdrew $wds"
      # With the defaults, how many the policy leaves plain depends on timing: at
      # least one connection upgraded (a cell with one or two connections, all).
      if [ "${IT_DEFAULT_SETTINGS:-0}" = 1 ]; then
        [ "$ups" -ge 1 ] || why="$why; no connection upgraded with the defaults"
      else
        [ $((ups * 2)) -ge "$n" ] || why="$why; only $ups of $n connections upgraded"
      fi
      if [ "$upc" -gt "$ups" ] || [ "$upc" -lt $((ups - slack)) ]; then
        why="$why; clients upgraded $upc connections, server $ups (slack $slack)"
      fi
      ;;
    10)
      [ "$upc" = 0 ] || why="$why; $upc client connection(s) upgraded without a shimmed server"
      if [ "$plc" -gt "$n" ] || [ "$plc" -lt $((n - slack)) ]; then
        why="$why; clients logged $plc plain connections of $n (slack $slack)"
      fi
      [ -s "$sl" ] && why="$why; the plain server logged something"
      ;;
    01)
      [ "$ups" = 0 ] || why="$why; server upgraded $ups connection(s) of plain clients"
      [ "$pls" = "$n" ] || why="$why; server logged $pls plain connections of $n"
      [ -s "$cl" ] && why="$why; the plain clients logged something"
      ;;
    00)
      [ -s "$sl" ] && why="$why; the plain server logged something"
      [ -s "$cl" ] && why="$why; the plain clients logged something"
      ;;
  esac
  [ "$warn" = 0 ] || why="$why; $warn warning(s) in the shim's log"
  if [ -z "$why" ]; then
    it_check "$label: upgrades" 1
    local reasons
    reasons=$(it_reasons "$sl" "$cl")
    it_log "ok   $label: $n connections; upgraded server/client $ups/$upc, plain server/client $pls/$plc$([ "$dead" != 0 ] && echo " (closed before accept: $dead)")${reasons:+; plain because: $reasons}"
  else
    it_check "$label: upgrades" 0 "${why#; }"
    { cat "$sl" "$cl" 2>/dev/null | grep -E ' warn | plain fd=' | head -5; } | sed 's/^/    log: /'
  fi
}

# it_stats_check LABEL LOG: the exit statistics of the processes that logged into
# LOG (one "stats ..." line each, written by the library's destructor at a clean
# exit) must add up to the per-connection lines in LOG: the counters and the log
# tell the same story. Only for servers whose processes do not inherit counts
# from a parent that had connections (a forked postgres backend starts with the
# postmaster's counts).
it_stats_check() {
  local label=$1 log=$2 k want got bad=""
  for k in upgraded_server upgraded_client plain_server plain_client; do
    case $k in
      upgraded_*) want=$(it_count " upgraded fd=[0-9]+ role=${k#*_} " "$log") ;;
      plain_*) want=$(it_count " plain fd=[0-9]+ role=${k#*_}:" "$log") ;;
    esac
    got=$(sed -n "s/.* stats .*$k=\([0-9]*\).*/\1/p" "$log" | awk '{ s += $1 } END { print s + 0 }')
    [ "$got" = "$want" ] || bad="$bad $k: counters $got, log lines $want;"
  done
  [ "$(it_count ' stats upgraded_client=' "$log")" -ge 1 ] || bad="$bad no exit statistics (not a clean exit?);"
  it_check "$label: exit counters match the log" "$([ -z "$bad" ] && echo 1 || echo 0)" "$bad"
}

it_finish() {
  echo "[$IT_NAME] $IT_PASS checks passed, $IT_FAIL failed"
  [ "$IT_FAIL" = 0 ]
  exit $?
}

# --- Byte-checked transfers and expected upgrade outcomes (the scripts written
# for programs with no statistics of their own: socat.sh, inetd.sh, ...). ---

# it_data SIZE...: random files $T/data/SIZE (made once) and their sha256 in
# IT_DATA_SHA[SIZE].
declare -A IT_DATA_SHA
it_data() {
  local s
  mkdir -p "$T/data"
  chmod 755 "$T/data"
  for s in "$@"; do
    [ -f "$T/data/$s" ] && continue
    head -c "$s" /dev/urandom >"$T/data/$s"
    chmod 644 "$T/data/$s"
    IT_DATA_SHA[$s]=$(it_sha "$T/data/$s")
  done
}

# it_xfer DESC RC SIZE GOTFILE [SECS [ERRFILE]]: one transfer of $T/data/SIZE
# whose result is GOTFILE, made by a command that exited with RC under `timeout
# SECS`. A hang (RC 124 or 137, the timeout's) is a failure that says so, as is an
# error exit or a single byte more, less or different. On failure, the last lines
# of ERRFILE (the client's standard error) are shown.
it_xfer() {
  local desc=$1 rc=$2 size=$3 got=$4 secs=${5:-?} err=${6:-} gs gsha
  gs=$(it_size "$got")
  gsha=$( [ -f "$got" ] && it_sha "$got")
  [ -n "$err" ] && [ -s "$err" ] && { [ "$rc" != 0 ] || [ "$gsha" != "${IT_DATA_SHA[$size]}" ]; } &&
    tail -n 2 "$err" | tr -d '\r' | sed "s/^/    [$IT_NAME] client: /"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    it_check "$desc" 0 "HANG: no end after ${secs}s (timeout), $gs of $size bytes received"
  elif [ "$rc" != 0 ]; then
    it_check "$desc" 0 "exit status $rc, $gs of $size bytes received$([ "$gsha" = "${IT_DATA_SHA[$size]}" ] && echo ', intact')"
  elif [ "$gsha" != "${IT_DATA_SHA[$size]}" ]; then
    it_check "$desc" 0 "WRONG BYTES: $gs bytes received for $size sent (sha256 differs)"
  else
    it_check "$desc" 1
  fi
}

# Distinct reasons the shim gave for plain connections in a log excerpt, counted:
# "2x role=client: peer spoke first without an offer; ...".
it_reasons() {
  cat "$@" 2>/dev/null | sed -n 's/.* plain fd=[0-9]* \(role=[a-z]*: .*\)/\1/p' | sed 's/ ([^)]*)$//' |
    sort | uniq -c | awk '{ c = $1; $1 = ""; printf "%s%dx%s", (NR > 1 ? "; " : ""), c, $0 }'
}

# it_cell_expect LABEL CS SS FAMILY NCONN SLACK EXPECT: it_cell_verdict with the
# outcome the design wants for both ends shimmed stated: EXPECT "up" (every
# connection upgraded: it_cell_verdict's rules) or "plain" (the server hands the
# connection to a new image by exec, or uses it only through io_uring: no
# connection upgraded at either end, and every client connection says why it
# stayed plain; no warning). With one end shimmed or none, EXPECT does not
# matter: always plain (it_cell_verdict's rules).
it_cell_expect() {
  local label=$1 cs=$2 ss=$3 fam=$4 n=$5 slack=$6 expect=$7
  if [ "$cs$ss" != 11 ] || [ "$expect" = up ]; then
    it_verdict "$label (expected: $([ "$cs$ss" = 11 ] && echo upgraded || echo plain))" "$cs" "$ss" "$fam" "$n" "$slack" "$IT_SLOG" "$IT_CLOG"
    return
  fi
  local sl=$IT_SLOG cl=$IT_CLOG ups upc pls plc warn why=""
  ups=$(it_count " upgraded fd=[0-9]+ role=server " "$sl")
  upc=$(it_count " upgraded fd=[0-9]+ role=client " "$cl")
  pls=$(it_count " plain fd=[0-9]+ role=server:" "$sl")
  plc=$(it_count " plain fd=[0-9]+ role=client:" "$cl")
  warn=$(cat "$sl" "$cl" 2>/dev/null | grep ' warn ' | grep -vcE "$IT_STRANGER")
  [ "$n" -ge 1 ] || why="$why; the server counted no connection"
  [ "$ups" = 0 ] || why="$why; server side upgraded $ups connection(s), expected plain"
  [ "$upc" = 0 ] || why="$why; clients upgraded $upc connection(s), expected plain"
  if [ "$plc" -gt "$n" ] || [ "$plc" -lt $((n - slack)) ]; then
    why="$why; clients logged $plc plain connections of $n (slack $slack)"
  fi
  [ "$warn" = 0 ] || why="$why; $warn warning(s) in the shim's log"
  if [ -z "$why" ]; then
    it_check "$label (expected: plain): upgrades" 1
    it_log "ok   $label (expected: plain): $n connections plain; why: $(it_reasons "$sl" "$cl")"
  else
    it_check "$label (expected: plain): upgrades" 0 "${why#; }"
    { cat "$sl" "$cl" 2>/dev/null | grep -E ' warn | upgraded fd=| plain fd=' | head -6; } | sed 's/^/    log: /'
  fi
}

# it_echo LABEL SECS CMD...: for each size in IT_SIZES, CMD (the client, shimmed
# if $cs is 1, logging to $IT_CLOG) gets $T/data/SIZE on its standard input and
# must write exactly those bytes back on its standard output (an echo server at
# the other end), within SECS (then TERM, and KILL 5 s later). IT_ECHO_BEFORE, if
# set, names a function run before each transfer (a server that takes one
# connection per run). Once a transfer hangs, the cell's others fail unrun.
# IT_ECHO_RUN: how many transfers ran (connections the client opened).
it_echo() {
  local label=$1 secs=$2 s rc hung=""
  shift 2
  IT_ECHO_RUN=0
  for s in $IT_SIZES; do
    # After a hang, the cell's other sizes are failures, not more waiting.
    if [ -n "$hung" ]; then
      it_check "$label: $s bytes echoed" 0 "not run: the $hung-byte transfer hung"
      continue
    fi
    [ -n "${IT_ECHO_BEFORE:-}" ] && "$IT_ECHO_BEFORE"
    rm -f "$T/got"
    IT_ECHO_RUN=$((IT_ECHO_RUN + 1))
    it_run "$cs" "$IT_CLOG" timeout -k 5 "$secs" "$@" <"$T/data/$s" >"$T/got" 2>"$T/xfer.err"
    rc=$?
    it_xfer "$label: $s bytes echoed" "$rc" "$s" "$T/got" "$secs" "$T/xfer.err"
    cat "$T/xfer.err" >>"$T/client.err"
    { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && hung=$s
  done
}

# it_echo_matrix EXPECT TRANSPORT...: the whole matrix for an echo server that
# keeps running (server shimmed or not, then client shimmed or not, for each
# transport "tcp" or "unix"), then one both-shimmed cell over the first transport
# with the library's default settings. The script defines:
#   echo_server_start  start the server for $tr, shimmed if $ss, logging to $slog
#                      (it_start spid ...); address in $port (a free one
#                      unless set before) / $sock; non-zero if
#                      it did not come up
#   echo_accepted      connections the server has accepted so far (its own count)
#   ECHO_CLIENT_tcp / ECHO_CLIENT_unix   arrays: the client command (stdin to the
#                      server, its answer to stdout), built once $port/$sock are set
#                      (functions echo_client_tcp / echo_client_unix fill them)
# and IT_SIZES, XFER_SECS. EXPECT: "up" or "plain" (it_cell_expect).
# ECHO_FAMILY_tcp: the family the log names for TCP (default tcp4; a regex).
# ECHO_EXTRA: a function run in each cell after the echoes, for more transfers
# (it adds the connections it opens to IT_ECHO_RUN).
it_echo_matrix() {
  local expect=$1 n0 n fam t0 first=$2
  shift
  [ -n "${port:-}" ] || port=$(it_port) || exit 1
  sock=$T/echo.sock
  for tr in "$@"; do
    [ "$tr" = tcp ] && fam=${ECHO_FAMILY_tcp:-tcp4} || fam=unix
    for ss in 0 1; do
      slog=$T/log/server.$tr.$ss.log
      if ! echo_server_start; then
        it_check "server_shim=$ss $tr: server started" 0 "$(tail -n 3 "$T/server.out" 2>/dev/null)"
        it_stop "$spid" TERM 5
        continue
      fi
      "echo_client_$tr"
      for cs in 0 1; do
        label="client_shim=$cs server_shim=$ss $tr"
        it_echo_cell "$expect" "$fam"
      done
      it_stop "$spid" TERM 10
    done
  done
  tr=$first ss=1 cs=1 slog=$T/log/server.default.log label="both shimmed $first, default settings"
  [ "$tr" = tcp ] && fam=${ECHO_FAMILY_tcp:-tcp4} || fam=unix
  IT_DEFAULT_SETTINGS=1
  if echo_server_start; then
    "echo_client_$tr"
    it_echo_cell "$expect" "$fam"
    it_stop "$spid" TERM 10
  else
    it_check "$label: server started" 0 "$(tail -n 3 "$T/server.out" 2>/dev/null)"
    it_stop "$spid" TERM 5
  fi
  IT_DEFAULT_SETTINGS=0
}
it_echo_cell() { # EXPECT FAMILY
  local n0 n t0 cmd
  t0=$(date +%s%N)
  n0=$(echo_accepted)
  it_cell_begin "$slog"
  eval "cmd=(\"\${ECHO_CLIENT_$tr[@]}\")"
  it_echo "$label" "$XFER_SECS" "${cmd[@]}"
  [ -n "${ECHO_EXTRA:-}" ] && "$ECHO_EXTRA"
  it_cell_end
  n=$(($(echo_accepted) - n0))
  it_eq "$label: connections the server accepted" "$n" "$IT_ECHO_RUN"
  it_cell_expect "$label" "$cs" "$ss" "$2" "$n" 0 "$1"
  it_log "time $label: $((($(date +%s%N) - t0) / 1000000))ms"
}

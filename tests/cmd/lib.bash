# Shared by tests/cmd/*.sh (sourced, not run): paths, a scratch directory, result
# counting, bounded waits, and a shimmed redis-server started with `shmshim run`.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
S=${SHMSHIM:-$ROOT/$BUILD/tools/shmshim}
LIB=$(readlink -f "$ROOT/$BUILD/libshmshim.so")
for dep in redis-server redis-cli redis-benchmark jq; do
  command -v $dep >/dev/null || { echo "$(basename "$0"): $dep missing (make deps)"; exit 1; }
done
TMP=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
pids=()
pass=0
fail=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
ok() { echo "ok $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
check() { # check DESCRIPTION COMMAND...: ok if the command succeeds
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
  echo "$(basename "$0" .sh): $pass passed, $fail failed"
  [ "$fail" = 0 ]
}
# until_true SECONDS COMMAND...: polls every 50 ms; 0 as soon as it succeeds.
until_true() {
  local n=$(($1 * 20)); shift
  for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.05; done
  return 1
}
# A shimmed redis-server on $port and $TMP/redis.sock; $spid is redis-server itself
# (shmshim run execs it).
start_redis() {
  "$S" run "$@" -- redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$TMP/redis.sock" \
    --save '' --appendonly no --dir "$TMP" --daemonize no >"$TMP/redis.out" 2>&1 &
  spid=$!
  pids+=("$spid")
  until_true 10 redis-cli -p "$port" ping >/dev/null 2>&1 || { echo "redis-server did not start"; cat "$TMP/redis.out"; exit 1; }
}
# stat_json PID...: one snapshot
stat_json() { "$S" stat --json "$@"; }
# conn_of JSON PID [jq filter on a connection]: the first matching connection
conn_of() { jq -c --argjson p "$2" "[.processes[] | select(.pid == \$p) | .connections[] | select(${3:-true})][0]" <<<"$1"; }
# echo_pair NAME SCRIPT SECONDS: an echo server (tests/reliability/forkpend.py) on a
# new $port and `bash SCRIPT $port` against it, both plain, then both under
# `shmshim run` (log: $TMP/shim.log); outputs in $TMP/plain.out and $TMP/shim.out,
# each ending with the script's exit status.
echo_pair() {
  local name=$1 script=$2 secs=$3 v pre
  for v in plain shim; do
    pre=()
    [ "$v" = shim ] && pre=("$S" run --log info --log-file "$TMP/shim.log" --)
    port=$((port + 1))
    rm -f "$TMP/srv.out"
    SHMSHIM_SHORT_MS=0 "${pre[@]}" python3 "$ROOT/tests/reliability/forkpend.py" server "$port" 1 >"$TMP/srv.out" 2>&1 &
    pids+=("$!")
    until_true 10 grep -q ready "$TMP/srv.out" || { echo "$name: the echo server did not start"; exit 1; }
    SHMSHIM_SHORT_MS=0 timeout "$secs" "${pre[@]}" bash "$script" "$port" >"$TMP/$v.out" 2>&1
    echo "exit $?" >>"$TMP/$v.out"
  done
  wait
}
# shim_log_checks NAME: $TMP/shim.log says the connection was upgraded at both ends,
# and warns of nothing
shim_log_checks() {
  check "$1: upgraded at both ends" test "$(grep -c ' upgraded fd=' "$TMP/shim.log" 2>/dev/null)" = 2
  check "$1: nothing reset or written around the library" bash -c "! grep -q ' warn ' '$TMP/shim.log'"
}

#!/bin/bash
# Runs the integration tests of the servers named on the command line (default:
# all), one after the other, and prints one summary line per server.
#   BUILD=build tests/integration/run.sh [NAME...]
# NAME: a script's name (redis nginx memcached postgres socat inetd uring node
# python java sshd git php haproxy pysuite evsuite gevent mariadb mosquitto), or a group: "servers" (the first four),
# "programs" (the others), "all".
# A server whose script is missing, or that fails, fails the run.
set -u
DIR=$(cd "$(dirname "$0")" && pwd)
SERVERS=(redis nginx memcached postgres)
PROGRAMS=(socat inetd uring node python java sshd git php haproxy pysuite evsuite gevent mariadb mosquitto)
servers=()
for a in "$@"; do
  case $a in
    servers) servers+=("${SERVERS[@]}") ;;
    programs) servers+=("${PROGRAMS[@]}") ;;
    all) servers+=("${SERVERS[@]}" "${PROGRAMS[@]}") ;;
    *) servers+=("$a") ;;
  esac
done
[ ${#servers[@]} = 0 ] && servers=("${SERVERS[@]}" "${PROGRAMS[@]}")
summary=()
failed=0
# Each program's output is kept to repeat its failures after the table: a log
# that shows only its end (CI's) must still say what failed.
OUTS=$(mktemp -d)
trap 'rm -rf "$OUTS"' EXIT
for s in "${servers[@]}"; do
  t0=$(date +%s)
  if [ -f "$DIR/$s.sh" ]; then
    bash "$DIR/$s.sh" 2>&1 | tee "$OUTS/$s"
    rc=${PIPESTATUS[0]}
  else
    echo "[$s] FAIL: no test script $DIR/$s.sh"
    rc=1
  fi
  secs=$(($(date +%s) - t0))
  if [ $rc = 0 ]; then summary+=("  $s: passed (${secs}s)"); else summary+=("  $s: FAILED (${secs}s)"); failed=$((failed + 1)); fi
done
echo "integration tests:"
printf '%s\n' "${summary[@]}"
for s in "${servers[@]}"; do
  [ -s "$OUTS/$s" ] && grep -q "^\[$s\] FAIL" "$OUTS/$s" || continue
  echo "what failed in $s (first 40 lines):"
  grep -E "^\[$s\] FAIL|^ +(\[$s\] lost |\| |log: )" "$OUTS/$s" | head -40
done
[ $failed = 0 ]

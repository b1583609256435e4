#!/bin/bash
# mosquitto (an MQTT broker: one epoll loop; it drops its privileges to the
# mosquitto user when started as root) with Debian's mosquitto_pub and
# mosquitto_sub, unmodified, with and without the library on either end, over
# loopback TCP and a unix socket, then once more both shimmed with the library's
# default settings. In every cell:
#   - 200 lines of 300 random bytes (base64) published with QoS 1, received by
#     a subscriber connected before, compared byte for byte;
#   - one 5 MB binary message, received whole by a subscriber, compared by sha256;
#   - the upgrade assertions: 4 connections per cell (two subscribers, two
#     publishers), which the clients' and the broker's logs must account for.
source "$(dirname "$0")/lib.sh"
it_init mosquitto
it_need mosquitto mosquitto_pub mosquitto_sub sha256sum base64 timeout ss

mkdir -m 1777 "$T/sock" # the broker creates its socket after dropping privileges
head -c 5000000 /dev/urandom >"$T/big.bin"
for i in $(seq 200); do echo "msg $i $(head -c 300 /dev/urandom | base64 -w0)"; done >"$T/lines.txt"
CONNS=4

broker_start() { # SS TR
  local conf=$T/mq.$1.$2.conf
  if [ "$2" = tcp ]; then
    port=$(it_port) || return 1
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$conf"
    WHERE=(-h 127.0.0.1 -p "$port")
  else
    rm -f "$T/sock/mq.sock"
    printf 'listener 0 %s\nallow_anonymous true\n' "$T/sock/mq.sock" >"$conf"
    WHERE=(--unix "$T/sock/mq.sock")
  fi
  it_start bpid "$1" "$slog" mosquitto -c "$conf" >>"$T/broker.out" 2>&1
  it_wait 10 broker_listening
}
broker_listening() {
  kill -0 "$bpid" 2>/dev/null || return 1
  if [ "$tr" = tcp ]; then ss -Hltn "sport = :$port" | grep -q .; else it_listening_unix "$T/sock/mq.sock"; fi
}
# The subscriber is connected (the broker has logged its CONNECT) before anything
# is published: mosquitto keeps no message for a subscriber that comes later.
subscribed() { [ "$(it_count 'New client connected' "$T/broker.out")" -gt "$seen" ]; }
sub_start() { # OUT ARGS...
  local out=$1
  shift
  seen=$(it_count 'New client connected' "$T/broker.out")
  it_run "$cs" "$IT_CLOG" timeout 30 mosquitto_sub "${WHERE[@]}" "$@" >"$out" 2>>"$T/client.err" &
  subpid=$!
  it_wait 10 subscribed
}

feat_lines() {
  sub_start "$T/got.txt" -t t/lines -q 1 -C 200
  it_run "$cs" "$IT_CLOG" timeout 30 mosquitto_pub "${WHERE[@]}" -t t/lines -q 1 -l <"$T/lines.txt"
  local prc=$?
  wait "$subpid"
  local src=$?
  local same=0
  cmp -s "$T/lines.txt" "$T/got.txt" && same=1
  it_check "$label: 200 QoS 1 messages received byte-identical" "$([ $prc = 0 ] && [ $src = 0 ] && [ $same = 1 ] && echo 1 || echo 0)" \
    "publisher exit $prc, subscriber exit $src, $(wc -l <"$T/got.txt") lines received"
}

feat_big() {
  sub_start "$T/got.bin" -t t/big -C 1 -N
  it_run "$cs" "$IT_CLOG" timeout 30 mosquitto_pub "${WHERE[@]}" -t t/big -f "$T/big.bin"
  local prc=$?
  wait "$subpid"
  local src=$?
  it_check "$label: a 5 MB message received whole (sha256)" \
    "$([ $prc = 0 ] && [ $src = 0 ] && [ "$(it_sha "$T/got.bin")" = "$(it_sha "$T/big.bin")" ] && echo 1 || echo 0)" \
    "publisher exit $prc, subscriber exit $src, $(it_size "$T/got.bin") bytes received"
}

run_cells() { # SS TR CS...
  local s=$1 c
  tr=$2
  shift 2
  slog=$T/log/broker.$s.$tr.${IT_DEFAULT_SETTINGS:-0}.log
  if ! broker_start "$s" "$tr"; then
    it_check "server_shim=$s $tr: mosquitto started" 0 "$(tail -3 "$T/broker.out")"
    return
  fi
  for c in "$@"; do
    cs=$c
    label="client_shim=$cs server_shim=$s $tr$SUFFIX"
    it_cell_begin "$slog"
    it_run_features "$label" lines big
    it_cell_end
    it_cell_verdict "$label" "$cs" "$s" "$([ "$tr" = tcp ] && echo tcp4 || echo unix)" "$CONNS"
  done
  it_stop "$bpid" TERM 20
  it_eq "server_shim=$s $tr$SUFFIX: mosquitto exit status" "$?" 0
}

SUFFIX=""
for ss in 0 1; do
  for t in tcp unix; do run_cells "$ss" "$t" 0 1; done
done
# Once with the library's default settings (SHMSHIM_SHORT_MS unset).
IT_DEFAULT_SETTINGS=1 SUFFIX=", default settings"
for t in tcp unix; do run_cells 1 "$t" 1; done
IT_DEFAULT_SETTINGS=0
it_finish

#!/bin/bash
# git daemon serving a bare repository on a private loopback port, and git clone
# / git ls-remote over git://; with and without the library on either end, over
# loopback TCP (git daemon has no unix socket listener). The repository holds
# files of 1 B to 4 MiB of random bytes (incompressible: the pack is as large).
# In every cell: a clone, every file of its checkout compared by sha256 with the
# original, and ls-remote's HEAD compared with the repository's; the upgrade
# outcome of every connection git daemon logged ("Connection from") against
# EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init git
it_need git sha256sum timeout ss

# Both ends shimmed: git daemon hands every connection to a new image (git
# daemon --serve, then git upload-pack) by exec: it stays plain. (One end:
# always plain.)
EXPECT=plain
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=60
it_data $IT_SIZES

# The repository, made by a plain git.
export GIT_CONFIG_NOSYSTEM=1 HOME=$T GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
mkdir -p "$T/work" "$T/repos"
for s in $IT_SIZES; do cp "$T/data/$s" "$T/work/f.$s"; done
(cd "$T/work" && git init -q -b main && git add . && git commit -q -m data) &&
  git clone -q --bare "$T/work" "$T/repos/r.git" ||
  { it_check "test repository made" 0; it_finish; }
HEAD_SHA=$(git -C "$T/repos/r.git" rev-parse HEAD)

port=$(it_port) || exit 1
URL=git://127.0.0.1:$port/r.git
listening() {
  kill -0 "$spid" 2>/dev/null || return 1
  ss -Hltn "sport = :$port" | grep -q .
}
accepted() { it_count 'Connection from 127\.0\.0\.1' "$T/server.out"; }

run_cell() {
  local n0 n t0 s rc conns=0
  t0=$(date +%s%N)
  n0=$(accepted)
  it_cell_begin "$slog"
  rm -rf "$T/clone"
  conns=$((conns + 1))
  it_run "$cs" "$IT_CLOG" timeout -k 5 "$XFER_SECS" git clone -q "$URL" "$T/clone" 2>"$T/xfer.err"
  rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    it_check "$label: git clone" 0 "HANG: no end after ${XFER_SECS}s (timeout)"
  else
    it_eq "$label: git clone exit status" "$rc" 0
    [ $rc = 0 ] || tail -n 2 "$T/xfer.err" | sed "s/^/    [$IT_NAME] client: /"
    for s in $IT_SIZES; do it_xfer "$label: cloned file of $s bytes" "$rc" "$s" "$T/clone/f.$s" "$XFER_SECS"; done
    conns=$((conns + 1))
    got=$(it_run "$cs" "$IT_CLOG" timeout -k 5 "$XFER_SECS" git ls-remote "$URL" HEAD 2>"$T/xfer.err")
    rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then
      it_check "$label: git ls-remote" 0 "HANG: no end after ${XFER_SECS}s (timeout)"
    else
      it_eq "$label: git ls-remote HEAD (exit $rc)" "${got%%[[:space:]]*}" "$HEAD_SHA"
    fi
  fi
  cat "$T/xfer.err" >>"$T/client.err"
  it_cell_end
  n=$(($(accepted) - n0))
  it_eq "$label: connections git daemon accepted" "$n" "$conns"
  it_cell_expect "$label" "$cs" "$ss" tcp4 "$n" 0 "$EXPECT"
  it_log "time $label: $((($(date +%s%N) - t0) / 1000000))ms"
}

start_daemon() {
  it_start spid "$ss" "$slog" git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$T/repos" \
    --export-all --verbose "$T/repos" 2>>"$T/server.out"
  it_wait 20 listening || { it_check "$label: git daemon started" 0 "$(tail -n 3 "$T/server.out")"; it_stop "$spid" TERM 5; return 1; }
}

for ss in 0 1; do
  slog=$T/log/server.$ss.log label="server_shim=$ss"
  start_daemon || continue
  for cs in 0 1; do
    label="client_shim=$cs server_shim=$ss tcp"
    run_cell
  done
  it_stop "$spid" TERM 10
done
# Once with the library's default settings (SHMSHIM_SHORT_MS unset).
IT_DEFAULT_SETTINGS=1 ss=1 cs=1 slog=$T/log/server.default.log label="both shimmed tcp, default settings"
start_daemon && { run_cell; it_stop "$spid" TERM 10; }
IT_DEFAULT_SETTINGS=0
it_finish

#!/bin/bash
# OpenSSH: sshd on a private loopback port with a host key, client key and
# configuration made here (no PAM, keys only, in the foreground), and ssh
# running `cat` on the server; with and without the library on either end, over
# loopback TCP (sshd has no unix socket listener). In every cell: 1 B to 4 MiB
# through ssh's standard input to the remote cat and back, compared by sha256;
# the upgrade outcome of every connection sshd logged ("Connection from")
# against EXPECT below.
source "$(dirname "$0")/lib.sh"
it_init sshd
it_need sshd ssh ssh-keygen sha256sum timeout ss

# Both ends shimmed: sshd forks and re-executes itself (sshd -R) for every
# connection, handing it to the new image: it stays plain. (One end: always
# plain.)
EXPECT=plain
IT_SIZES="1 65536 1048577 4194304"
XFER_SECS=30
it_data $IT_SIZES

SSHD=$(command -v sshd)
USER_NAME=$(id -un)
ssh-keygen -q -t ed25519 -N '' -f "$T/host_key" </dev/null || { it_check "host key" 0; it_finish; }
ssh-keygen -q -t ed25519 -N '' -f "$T/id" </dev/null || { it_check "client key" 0; it_finish; }
cp "$T/id.pub" "$T/authorized_keys"
chmod 600 "$T/authorized_keys"
port=$(it_port) || exit 1
cat >"$T/sshd_config" <<EOF2
Port $port
ListenAddress 127.0.0.1
HostKey $T/host_key
PidFile $T/sshd.pid
AuthorizedKeysFile $T/authorized_keys
AllowUsers $USER_NAME
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
LogLevel VERBOSE
MaxStartups 100
PerSourceMaxStartups none
EOF2
echo "[127.0.0.1]:$port $(cat "$T/host_key.pub")" >"$T/known_hosts"
# sshd wants its privilege separation directory (made by its service unit
# otherwise); as root, make it if it is missing.
if [ "$(id -u)" = 0 ]; then
  d=$(timeout 20 "$SSHD" -t -f "$T/sshd_config" 2>&1 | tr -d '\r' | sed -n 's/^Missing privilege separation directory: //p')
  [ -n "$d" ] && mkdir -p -m 755 "$d"
fi
check=$(timeout 20 "$SSHD" -t -f "$T/sshd_config" 2>&1) || { it_check "sshd -t" 0 "$check"; it_finish; }

echo_server_start() {
  # -D: foreground, -e: log to stderr. Absolute path: sshd re-executes itself.
  it_start spid "$ss" "$slog" "$SSHD" -D -e -f "$T/sshd_config" 2>>"$T/server.out"
  it_wait 20 listening
}
listening() {
  kill -0 "$spid" 2>/dev/null || return 1
  ss -Hltn "sport = :$port" | grep -q .
}
echo_accepted() { it_count 'Connection from 127\.0\.0\.1 port' "$T/server.out"; }
echo_client_tcp() {
  ECHO_CLIENT_tcp=(ssh -F /dev/null -i "$T/id" -o IdentitiesOnly=yes -o BatchMode=yes
    -o UserKnownHostsFile="$T/known_hosts" -o StrictHostKeyChecking=yes -o LogLevel=ERROR
    -o ConnectTimeout=10 -p "$port" "$USER_NAME@127.0.0.1" cat)
}

it_echo_matrix "$EXPECT" tcp
grep -iE 'error|fatal' "$T/server.out" "$T/client.err" 2>/dev/null | sed 's/\[[0-9]*\]//; s/port [0-9]*/port P/g' | sort | uniq -c | head -5 | sed 's/^/    /'
it_finish

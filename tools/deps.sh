#!/bin/sh
# Installs, from Debian's packages, whatever the build and the tests need and the
# machine lacks. Runs apt-get only when something is missing.
set -e
need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# `tools/deps.sh demo`: only what make demo needs (the library and redis), so that
# the demo does not wait for the test suites' servers on a fresh machine.
# Otherwise everything, with the integration tests' servers and clients
# (tests/integration/) and procps (ps) for them.
pkgs="gcc make libc6-dev redis-server redis-tools"
[ "${1:-}" = demo ] || pkgs="$pkgs uthash-dev libcmocka-dev pkg-config valgrind nginx curl wrk memcached
  libmemcached-tools postgresql-15 procps"
for p in $pkgs; do
  have "$p" || need="$need $p"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages:$need (run as root, or install them)" >&2
  exit 1
fi
echo "deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $need >/dev/null

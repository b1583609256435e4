#!/bin/sh
# Installs, from Debian's packages, whatever the build and the tests need and the
# machine lacks. Runs apt-get only when something is missing.
set -e
need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in gcc make libc6-dev uthash-dev libcmocka-dev pkg-config valgrind redis-server redis-tools jq \
         clang libclang-rt-14-dev util-linux iproute2; do
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

#!/bin/sh
# Installs, from Debian's packages, whatever the build and the tests need and the
# machine lacks. Runs apt-get only when something is missing.
#   tools/deps.sh          the build and the tests
#   tools/deps.sh demo     only make demo's needs
#   tools/deps.sh bench    also what `make bench` runs: nginx, wrk, memcached, curl,
#                          gnuplot (and a font for its PNG plots)
set -e
need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# `tools/deps.sh demo`: only what make demo needs (the library and redis), so that
# the demo does not wait for the test suites' servers on a fresh machine.
# Otherwise everything: the integration tests' servers and clients
# (tests/integration/ and tests/preload/libuv.sh, among them socat, node, sshd, git daemon, php-fpm, haproxy,
# a JVM, python3 and its regression test package (pysuite.sh), tornado,
# twisted and trio with their own tests (evsuite.sh; pytest and trustme for trio's), gevent
# (gevent.sh), MariaDB (mariadb.sh), mosquitto and its clients (mosquitto.sh), and liburing for
# the io_uring server), procps (ps) for them, jq
# for the command's tests, clang and its runtime for the fuzz targets, iproute2
# for the squatter test's network namespace and ss, strace for the stat reader's
# test (statsafe.sh); `deps.sh bench` adds what the
# benchmarks use (gnuplot for the plots, rsync for the regimes section).
pkgs="gcc make libc6-dev redis-server redis-tools"
[ "${1:-}" = demo ] || pkgs="$pkgs uthash-dev libcmocka-dev pkg-config valgrind jq \
  nginx curl wrk memcached libmemcached-tools postgresql-15 procps clang libclang-rt-14-dev util-linux iproute2 \
  socat nodejs openssh-server openssh-client git php-fpm haproxy default-jdk-headless liburing-dev python3 libpython3.11-testsuite python3-tornado python3-twisted python3-trio python3-pytest python3-trustme python3-gevent strace \
  mariadb-server mariadb-client mosquitto mosquitto-clients"
[ "${1:-}" = bench ] && pkgs="$pkgs gnuplot-nox fonts-dejavu-core rsync"
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

#!/bin/sh
# Entry point of the README's two commands, for a fresh Debian 12 machine:
#   sh tools/run.sh demo    the side-by-side demo
#   sh tools/run.sh test    every test suite (make test)
# Installs the compiler, make and the project's dependencies when missing.
set -e
cd "$(dirname "$0")/.."
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "run.sh: need make and a C compiler (run as root to install them)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends make gcc libc6-dev >/dev/null
fi
exec make "${1:-test}"

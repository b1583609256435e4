#!/bin/sh
# update_readme.sh [RESULTS_DIR]: puts the headline of the last bench run
# (bench/results/headline.md: machine, placement and the targets table) into
# README.md, between the "bench:headline" markers. Run it after `make bench` on
# the machine whose numbers the README should show.
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
H=${1:-$ROOT/bench/results}/headline.md
R=$ROOT/README.md
[ -s "$H" ] || { echo "update_readme.sh: $H missing: run make bench first" >&2; exit 1; }
grep -q '^<!-- bench:headline -->$' "$R" && grep -q '^<!-- /bench:headline -->$' "$R" ||
  { echo "update_readme.sh: README.md has no bench:headline markers" >&2; exit 1; }
awk -v h="$H" '
  /^<!-- bench:headline -->$/ { print; while ((getline l < h) > 0) print l; skip = 1; next }
  /^<!-- \/bench:headline -->$/ { skip = 0 }
  !skip' "$R" >"$R.tmp"
mv "$R.tmp" "$R"
echo "README.md: headline updated from $H"

#!/bin/sh
# update_readme.sh [RESULTS_DIR]: puts the headline of the last bench run
# (bench/results/headline.md: machine, placement and the targets table) into
# README.md, between the "bench:headline" markers, and the regimes table
# (regimes.md, section 9, when the directory has one) between the "bench:regimes"
# markers. Run it after `make bench` (or `make bench-regimes` for the regimes
# alone) on the machine whose numbers the README should show.
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${1:-$ROOT/bench/results}
R=$ROOT/README.md
# put NAME FILE: replaces the lines between <!-- bench:NAME --> and <!-- /bench:NAME -->
put() {
  grep -q "^<!-- bench:$1 -->\$" "$R" && grep -q "^<!-- /bench:$1 -->\$" "$R" ||
    { echo "update_readme.sh: README.md has no bench:$1 markers" >&2; exit 1; }
  awk -v h="$2" -v b="<!-- bench:$1 -->" -v e="<!-- /bench:$1 -->" '
    $0 == b { print; while ((getline l < h) > 0) print l; skip = 1; next }
    $0 == e { skip = 0 }
    !skip' "$R" >"$R.tmp"
  mv "$R.tmp" "$R"
  echo "README.md: $1 updated from $2"
}
[ -s "$D/headline.md" ] || [ -s "$D/regimes.md" ] || { echo "update_readme.sh: no headline.md or regimes.md in $D: run make bench first" >&2; exit 1; }
[ -s "$D/headline.md" ] && put headline "$D/headline.md"
[ -s "$D/regimes.md" ] && put regimes "$D/regimes.md"
exit 0

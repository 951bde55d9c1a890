#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 3s), one
# worker each (-parallel 1): `make fuzz-smoke` in CI, or a long run with
# FUZZTIME=10m. Targets are found, not listed, so a new one is never missed.
# A failure leaves the crashing input under the package's testdata/fuzz/,
# where it becomes a regression test once committed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-3s}
go=${GO:-go}
found=0
while IFS= read -r file; do
	pkg=./$(dirname "$file")
	for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing\.F).*/\1/p' "$file"); do
		found=$((found + 1))
		echo "fuzz: $pkg $fn for $fuzztime"
		"$go" test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" -parallel 1 "$pkg"
	done
done < <(grep -rl --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' . | sed 's|^\./||' | sort)
if [ "$found" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: $found targets passed"

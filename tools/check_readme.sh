#!/bin/sh
# The README's configuration table must be exactly what config_table prints from
# core/config.h, so that the documentation cannot drift from the code.
set -e
table=$("$1")
printf '%s\n' "$table" | while IFS= read -r line; do
  grep -qxF -- "$line" README.md || { echo "README.md lacks config row: $line"; exit 1; }
done
echo "README configuration table: 1 passed, 0 failed"

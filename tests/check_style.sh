#!/usr/bin/env bash
# Mechanical style checks on the C sources: no line over 79 columns, no
# tabs, no trailing spaces. Prints each offence; exits 1 if there is any.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
files=$(git ls-files '*.c' '*.h' 2>/dev/null)
[ -n "$files" ] || files=$(find common server client bench tests \
    -name '*.c' -o -name '*.h')
bad=0
# shellcheck disable=SC2086
out=$(awk 'length > 79 { printf "%s:%d: line over 79 columns\n", FILENAME, FNR }
           /\t/ { printf "%s:%d: tab\n", FILENAME, FNR }
           / +$/ { printf "%s:%d: trailing space\n", FILENAME, FNR }' $files)
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    bad=1
fi
n=$(printf '%s\n' $files | wc -l)
echo "style: $n files checked, $(printf '%s' "$out" | grep -c . ) problems"
exit $bad

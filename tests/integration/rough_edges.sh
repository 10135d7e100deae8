#!/usr/bin/env bash
# What a new user hits first (issue 14): a config used from another folder finds its rules
# (relative paths resolve against the config file's folder); a missing or directory input
# is refused before anything is created; a full disk is named as such with the path.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
cleanup() {
    mountpoint -q "$tmp/tiny" 2>/dev/null && umount "$tmp/tiny"
    rm -rf "$tmp"
}
trap cleanup EXIT

"$CONFIDE" gen --seed 2 --count 3000 --out "$tmp/tx.csv" --quiet
mkdir -p "$tmp/conf" "$tmp/elsewhere"
cp "$SRC/examples/rules.yaml" "$tmp/conf/"
printf 'rules:\n  file: rules.yaml\noutput:\n  dir: out\n' >"$tmp/conf/c.yaml"

# 1. Relative paths in a config file are relative to it, wherever confide runs from.
(cd "$tmp/elsewhere" && expect 0 "$CONFIDE" run --config "$tmp/conf/c.yaml" --input "$tmp/tx.csv" --no-status)
[ -s "$tmp/conf/out/alerts.ndjson" ] || fail "the rules next to the config were not used"
[ ! -e "$tmp/elsewhere/out" ] || fail "output.dir resolved against the working directory"
# ... and on the command line, relative to the working directory.
(cd "$tmp/elsewhere" && expect 0 "$CONFIDE" run --input ../tx.csv --out here --no-status)
[ -d "$tmp/elsewhere/here/audit" ] || fail "--out is relative to the working directory"

# 2. A missing or directory input: exit 2, named, and nothing created.
expect 2 "$CONFIDE" run --input "$tmp/nope.csv" --out "$tmp/o1" --no-status
grep -q "input.path: cannot open $tmp/nope.csv: No such file" "$tmp/err" || fail "$(cat "$tmp/err")"
[ ! -e "$tmp/o1" ] || fail "a missing input created $tmp/o1"
expect 2 "$CONFIDE" run --input "$tmp/conf" --out "$tmp/o2" --no-status
grep -q "is a directory" "$tmp/err" || fail "$(cat "$tmp/err")"
[ ! -e "$tmp/o2" ] || fail "a directory input created $tmp/o2"

# 3. A full disk says so, with the file (needs root to mount a small tmpfs).
mkdir -p "$tmp/tiny"
if mount -t tmpfs -o size=256k tmpfs "$tmp/tiny" 2>/dev/null; then
    "$CONFIDE" gen --seed 3 --count 20000 --out "$tmp/big.csv" --quiet
    expect 3 "$CONFIDE" run --input "$tmp/big.csv" --out "$tmp/tiny/o" --no-status
    grep -q "No space left on device ($tmp/tiny/o/audit/" "$tmp/err" || fail "ENOSPC: $(cat "$tmp/err")"
    umount "$tmp/tiny"
else
    echo "note: cannot mount a tmpfs here (not root): the full-disk case is not checked"
fi
echo "ok: relative config paths, inputs checked first, full disk named"

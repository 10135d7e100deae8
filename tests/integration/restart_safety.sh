#!/usr/bin/env bash
# Restarts that know what they resume (issue 10). Re-running into an existing --out with a
# different input used to skip its first N records silently (exit 0, "resumed":N), and a
# changed config silently recomputed from the old log. Now:
#  - the same input resumes (nothing skipped that is not in the log)
#  - a different or edited input is refused (exit 2) naming the first differing record,
#    before anything is touched; so is a stream (stdin), which cannot be checked
#  - a changed results configuration is refused (exit 2)
#  - --resume continues anyway; --fresh keeps the old output aside and starts a new log
set -euo pipefail
B=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.bash"
"$B" gen --seed 31 --days 1 --customers 1500 --terminals 3000 --out "$tmp/a.csv" --quiet
"$B" gen --seed 32 --days 1 --customers 1500 --terminals 3000 --out "$tmp/b.csv" --quiet
O=$tmp/out_dir
expect 0 "$B" run --input "$tmp/a.csv" --out "$O" --json
n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' "$tmp/out")
cp "$O/results.ndjson" "$tmp/results.before"
# the same input again: it resumes (everything is already in the log)
expect 0 "$B" run --input "$tmp/a.csv" --out "$O" --json
grep -q "\"resumed\":$n" "$tmp/out" || fail "same input did not resume: $(cat "$tmp/out")"
# a different input: refused before anything is touched
expect 2 "$B" run --input "$tmp/b.csv" --out "$O" --json
grep -q "not the one the audit log holds: accepted record 0" "$tmp/err" || fail "$(cat "$tmp/err")"
cmp -s "$O/results.ndjson" "$tmp/results.before" || fail "a refused restart changed the outputs"
# the same file with one record edited in the middle
python3 - "$tmp/a.csv" "$tmp/a_edit.csv" <<'PY'
import sys
L = open(sys.argv[1]).read().splitlines(True)
i = len(L) // 2
f = L[i].split(",")
f[4] = "%.2f" % (float(f[4]) + 1)   # the amount
L[i] = ",".join(f)
open(sys.argv[2], "w").write("".join(L))
PY
expect 2 "$B" run --input "$tmp/a_edit.csv" --out "$O" --json
grep -q "differs from the event logged at index" "$tmp/err" || fail "edit not found: $(cat "$tmp/err")"
# a stream cannot be checked
set +e
"$B" run --input - --out "$O" --json <"$tmp/a.csv" >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "stdin restart: exit $rc (want 2)"
grep -q "stream (stdin)" "$tmp/err" || fail "$(cat "$tmp/err")"
# a changed results configuration
expect 2 "$B" run --input "$tmp/a.csv" --out "$O" --window-ms 120000 --json
grep -q "configuration changed" "$tmp/err" || fail "$(cat "$tmp/err")"
# --resume: as before, the user says the skipped records are the logged ones
expect 0 "$B" run --input - --out "$O" --resume --json <"$tmp/a.csv"
# --fresh: the old output is kept aside, a new log starts
expect 0 "$B" run --input "$tmp/b.csv" --out "$O" --fresh --json
grep -q '"resumed":0' "$tmp/out" || fail "--fresh resumed"
ls -d "$O".prev-* >/dev/null || fail "--fresh did not keep the old output"
expect 0 "$B" audit verify "$O"/audit --keys "$O"/keys
expect 2 "$B" run --input "$tmp/b.csv" --out "$O" --fresh --resume
echo "restart_safety: all checks passed"

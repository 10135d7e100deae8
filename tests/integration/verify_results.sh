#!/usr/bin/env bash
# Results an auditor can check (issue 9): `confide audit verify-results` passes on a clean
# run, after a kill -9 and resume, and fails naming the problem when a released row is
# changed, dropped or duplicated, when a signature line is edited or removed, and when the
# rows do not match a recomputation from the audit log. Before results.sig.ndjson existed,
# every one of these changes went unnoticed.
set -euo pipefail
B=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.bash"
"$B" gen --seed 21 --days 1 --customers 3000 --terminals 6000 --out "$tmp/day.csv" --quiet
run() { "$B" run --input "$tmp/day.csv" --out "$1" --group-by country --window-ms 600000 \
    --set min_count=3 --set audit.checkpoint_events=1000 --json "${@:2}"; }
run "$tmp/o" >/dev/null
K=$tmp/o/keys
expect 0 "$B" audit verify-results "$tmp/o" --keys "$K" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and d["released_rows"] > 10 and d["withheld_groups"] > 0, d' "$tmp/out" ||
    fail "counts: $(cat "$tmp/out")"
[ "$(wc -l <"$tmp/o/results.sig.ndjson")" -gt 2 ] || fail "expected a signature per checkpoint"

tamper() { # tamper NAME python-expression-on-lines FILE
    rm -rf "$tmp/t" && cp -r "$tmp/o" "$tmp/t"
    python3 - "$tmp/t/$2" "$3" <<'PY'
import sys
path, how = sys.argv[1], sys.argv[2]
L = open(path).read().splitlines(keepends=True)
if how == "sum":
    i = next(i for i, l in enumerate(L) if '"sum_minor":' in l)
    a = L[i].index('"sum_minor":') + len('"sum_minor":')
    L[i] = L[i][:a] + str(int(L[i][a]) ^ 1 if L[i][a].isdigit() else 7) + L[i][a + 1:]
elif how == "drop":
    del L[len(L) // 2]
elif how == "dup":
    L.insert(3, L[2])
elif how == "edit":
    L[0] = L[0].replace('"min_count":3', '"min_count":1')
elif how == "cut":
    L = L[:-1]
open(path, "w").write("".join(L))
PY
}
for how in sum drop dup; do
    tamper "$how" results.ndjson "$how"
    expect 4 "$B" audit verify-results "$tmp/t" --keys "$K"
    grep -q "INTEGRITY ALERT" "$tmp/err" || fail "$how: no alert"
done
tamper edit results.sig.ndjson edit
expect 4 "$B" audit verify-results "$tmp/t" --keys "$K"
grep -q "does not verify" "$tmp/err" || fail "edited signature line not named"
tamper cut results.sig.ndjson cut
expect 4 "$B" audit verify-results "$tmp/t" --keys "$K"
grep -q "the last signature covers" "$tmp/err" || fail "unsigned tail not named: $(cat "$tmp/err")"
# Rows that do not follow from the log: the same outputs checked against another run's log.
"$B" gen --seed 22 --days 1 --customers 3000 --terminals 6000 --out "$tmp/other.csv" --quiet
"$B" run --input "$tmp/other.csv" --out "$tmp/o3" --keys "$K" --group-by country \
    --window-ms 600000 --set min_count=3 --json >/dev/null
expect 4 "$B" audit verify-results "$tmp/o" --keys "$K" --audit "$tmp/o3/audit"
grep -q "differ from the recomputation\|the results cover" "$tmp/err" || fail "recomputation: $(cat "$tmp/err")"
# kill -9 in the middle of a paced run, resume: the signatures survive recovery.
set +e
"$B" run --input "$tmp/day.csv" --out "$tmp/k" --group-by country --window-ms 600000 \
    --set min_count=3 --set audit.checkpoint_events=500 --rate 4000 --no-status >/dev/null 2>&1 &
pid=$!
sleep 0.6
kill -9 "$pid"
wait "$pid" 2>/dev/null
set -e
run "$tmp/k" >/dev/null
expect 0 "$B" audit verify-results "$tmp/k" --keys "$tmp/k/keys"
echo "verify_results: all checks passed"

#!/usr/bin/env bash
# The embedded autoscaler acts for real: autoscale.policy drives the party workers through the
# rescale API while confide run processes a stream, and the results stay identical to a run
# with one worker. static sets autoscale.max_workers; ds2 started at 4 workers with a 100%
# target must scale down; a predictive policy without a model is a config error.
set -euo pipefail
CONFIDE=$1
SRC=$2
. "$SRC/tests/integration/lib.bash"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$CONFIDE" gen --seed 4 --days 12 --customers 5000 --terminals 10000 --out "$tmp/in.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties 2 >/dev/null
common=(--input "$tmp/in.csv" --keys "$tmp/keys" --group-by merchant --window-ms 60000
        --set min_count=1 --set audit.fsync=none --set pipeline.batch_max=256)
"$CONFIDE" run "${common[@]}" --out "$tmp/one" --json >"$tmp/one.json" 2>/dev/null || fail "1 worker run"
[ "$(jget '["rescales"]' <"$tmp/one.json")" -eq 0 ] || fail "a run without autoscale rescaled"

check() { # check NAME SUMMARY
    for f in results late alerts; do
        cmp -s <(sort "$tmp/one/$f.ndjson") <(sort "$tmp/$1/$f.ndjson") || fail "$1: $f.ndjson differs"
    done
}

"$CONFIDE" run "${common[@]}" --out "$tmp/static" --autoscale=static \
    --set autoscale.max_workers=3 --set autoscale.interval_ms=50 --json >"$tmp/static.json" 2>/dev/null ||
    fail "static autoscale run"
[ "$(jget '["workers"]' <"$tmp/static.json")" -eq 3 ] || fail "static: $(cat "$tmp/static.json")"
[ "$(jget '["rescales"]' <"$tmp/static.json")" -eq 1 ] || fail "static: $(cat "$tmp/static.json")"
check static

# ds2 from 4 workers with a 100% utilization target: the workers are never fully busy (the
# gateway, not they, bounds this run, more so on a loaded machine), so it must scale down.
"$CONFIDE" run "${common[@]}" --out "$tmp/ds2" --workers 4 --autoscale ds2 \
    --set autoscale.target_util=100 --set autoscale.max_workers=4 --set autoscale.interval_ms=50 \
    --set autoscale.cooldown_ms=100 --json >"$tmp/ds2.json" 2>/dev/null || fail "ds2 autoscale run"
[ "$(jget '["rescales"]' <"$tmp/ds2.json")" -ge 1 ] || fail "ds2 never rescaled: $(cat "$tmp/ds2.json")"
[ "$(jget '["workers"]' <"$tmp/ds2.json")" -lt 4 ] || fail "ds2 did not scale down: $(cat "$tmp/ds2.json")"
check ds2

# Advice only: the policy runs (confide_desired_workers) but nothing is resized.
"$CONFIDE" run "${common[@]}" --out "$tmp/advise" --set autoscale.policy=static \
    --set autoscale.max_workers=3 --set autoscale.interval_ms=50 --set autoscale.act=false \
    --json >"$tmp/advise.json" 2>/dev/null || fail "advise-only run"
[ "$(jget '["rescales"]' <"$tmp/advise.json")" -eq 0 ] || fail "autoscale.act=false rescaled"
check advise

set +e
"$CONFIDE" run "${common[@]}" --out "$tmp/pred" --set autoscale.policy=predictive 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "predictive without a model: exit $rc"
grep -q "autoscale.model" "$tmp/err" || fail "the error does not name autoscale.model: $(cat "$tmp/err")"
echo "ok: autoscale_live (static to 3, ds2 $(jget '["rescales"]' <"$tmp/ds2.json") rescales to $(jget '["workers"]' <"$tmp/ds2.json"): identical results)"

#!/usr/bin/env bash
# The run summary's worker_s and slo_violation_s (docs/autoscaling.md, "Live comparison"):
# they exist and are consistent with the run (min_workers x wall <= worker_s <= max_workers x
# wall, 0 <= slo_violation_s <= wall; a fixed pool's worker_s is workers x wall; an SLO no
# event can meet is violated, one every event meets is not). Then rapid rescales while the
# workers lag behind the gateway (debug.worker_delay_us): before the fix in cf__worker_lanes
# re-adding the lane of a retired worker that had not yet reached its retire marker reset its
# worker count, so the handover merged missing snapshots (a crash or a hang); results must
# equal a one-worker run's. No wall-clock limits: only relations between the summary's fields.
set -euo pipefail
CONFIDE=$1
SRC=$2
. "$SRC/tests/integration/lib.bash"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$CONFIDE" gen --seed 7 --days 2 --customers 2000 --terminals 4000 --out "$tmp/all.csv" --quiet
head -n 3001 "$tmp/all.csv" >"$tmp/in.csv"
"$CONFIDE" keygen --dir "$tmp/keys" --parties 2 >/dev/null
common=(--input "$tmp/in.csv" --keys "$tmp/keys" --group-by merchant --window-ms 60000
        --set min_count=1 --set audit.fsync=none --set batch.mode=fixed:64
        --set batch.linger_ms=10)

# check SUMMARY MIN MAX: the fields exist and hold together
check() {
    python3 - "$1" "$2" "$3" <<'PY' || fail "$1: $(cat "$1")"
import json, sys
d = json.load(open(sys.argv[1]))
lo, hi = int(sys.argv[2]), int(sys.argv[3])
wall, ws, slo = d["elapsed_s"], d["worker_s"], d["slo_violation_s"]
assert isinstance(ws, float) or isinstance(ws, int), "worker_s missing"
assert ws >= lo * wall * (1 - 1e-6) - 1e-3, f"worker_s {ws} < {lo} x wall {wall}"
assert ws <= hi * wall * (1 + 1e-6) + 1e-3, f"worker_s {ws} > {hi} x wall {wall}"
assert 0 <= slo <= wall + 1e-3, f"slo_violation_s {slo} outside [0, wall {wall}]"
assert d["accepted"] == 3000, d["accepted"]
PY
}
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# A fixed pool of 3 (no autoscaler): worker_s is 3 x wall.
"$CONFIDE" run "${common[@]}" --out "$tmp/fixed" --workers 3 --json >"$tmp/fixed.json" 2>/dev/null ||
    fail "fixed run"
check "$tmp/fixed.json" 3 3

# Paced at 1000/s, each worker holding every event 1 ms: no event can meet a 1 ms SLO, so
# every second of the run violates it (the last partial one only in part).
"$CONFIDE" run "${common[@]}" --out "$tmp/tight" --workers 4 --set input.rate=1000 \
    --set debug.worker_delay_us=1000 --set slo.p99_ms=1 --json >"$tmp/tight.json" 2>/dev/null ||
    fail "tight-SLO run"
check "$tmp/tight.json" 4 4
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["slo_violation_s"] >= min(1.0, d["elapsed_s"] - 1) and d["slo_violation_s"] >= d["elapsed_s"] - 2 else 1)' \
    "$tmp/tight.json" || fail "a 1 ms SLO was not violated every second: $(cat "$tmp/tight.json")"

# The same under an hour-long SLO: never violated.
"$CONFIDE" run "${common[@]}" --out "$tmp/loose" --workers 4 --set input.rate=1000 \
    --set debug.worker_delay_us=1000 --set slo.p99_ms=3600000 --json >"$tmp/loose.json" \
    2>/dev/null || fail "loose-SLO run"
check "$tmp/loose.json" 4 4
[ "$(jget "$tmp/loose.json" slo_violation_s)" = "0.0" ] || fail "loose SLO violated: $(cat "$tmp/loose.json")"

# The autoscaler between 2 and 6 workers: worker_s between 2 x wall and 6 x wall.
"$CONFIDE" run "${common[@]}" --out "$tmp/react" --workers 2 --autoscale reactive \
    --set autoscale.min_workers=2 --set autoscale.max_workers=6 --set autoscale.interval_ms=50 \
    --set autoscale.cooldown_ms=50 --set input.rate=3000 --set debug.worker_delay_us=1000 \
    --json >"$tmp/react.json" 2>/dev/null || fail "reactive run"
check "$tmp/react.json" 2 6

# Rapid rescales with lagging workers: down to 2 and at the next batch back to 4, three
# times, while the retired workers are still far from their markers (each holds every event
# 300 us). Without the fix about half of such runs crashed; three runs. Results equal a
# one-worker run's.
"$CONFIDE" run "${common[@]}" --out "$tmp/one" --json >"$tmp/one.json" 2>/dev/null || fail "one worker"
for r in 1 2 3; do
    rm -rf "$tmp/rapid"
    "$CONFIDE" run "${common[@]}" --out "$tmp/rapid" --set debug.worker_delay_us=300 \
        --set debug.rescale_at=300:4,600:2,664:4,1000:2,1064:4,1400:2,1464:4,2000:3 \
        --json >"$tmp/rapid.json" 2>/dev/null || fail "rapid rescales, run $r: exit $?"
    [ "$(jget "$tmp/rapid.json" rescales)" -eq 8 ] || fail "rapid: $(cat "$tmp/rapid.json")"
    check "$tmp/rapid.json" 1 4
    for f in results late alerts; do
        cmp -s <(sort "$tmp/one/$f.ndjson") <(sort "$tmp/rapid/$f.ndjson") ||
            fail "rapid, run $r: $f.ndjson differs"
    done
done
echo "ok: autoscale_summary (fixed $(jget "$tmp/fixed.json" worker_s) worker-s, tight SLO $(jget "$tmp/tight.json" slo_violation_s) of $(jget "$tmp/tight.json" elapsed_s) s, reactive $(jget "$tmp/react.json" worker_s) worker-s)"

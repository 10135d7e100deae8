#!/usr/bin/env bash
# confide bench autoscale --live, shortened: every policy (predictive with a model fitted on
# the trace's first part) drives a real in-process confide run paced along a generated burst
# trace; the JSON has one row per policy with the summary's fields, consistent with the run
# (static never rescales, worker-seconds within 1..16 workers over the replayed time). A smoke
# test: no claim about which policy wins (that is bench/results/autoscale-live-*.md).
set -euo pipefail
CONFIDE=$1
SRC=$2
. "$SRC/tests/integration/lib.bash"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$CONFIDE" forecast trace --shape burst --rate 2000 --duration-s 40 --interval-s 1 \
    --out "$tmp/burst.csv" >/dev/null 2>&1 || fail "forecast trace"
# 10 intervals of 0.1 s each per policy
"$CONFIDE" bench autoscale --live --trace "$tmp/burst.csv" --train-points 30 --speedup 10 \
    --keep-dir "$tmp/keep" --json >"$tmp/out.json" 2>"$tmp/err" ||
    fail "bench autoscale --live: $(cat "$tmp/err")"
[ -s "$tmp/keep/model" ] || fail "no model file"
[ "$(tail -n +2 "$tmp/keep/replay.csv" | wc -l)" -eq 10 ] || fail "replay.csv has not 10 rows"
python3 - "$tmp/out.json" <<'PY' || fail "bad JSON: $(cat "$tmp/out.json")"
import json, sys
rows = json.load(open(sys.argv[1]))
assert [r["policy"] for r in rows] == ["static", "reactive", "ds2", "predictive"], rows
for r in rows:
    assert set(r) == {"policy", "slo_violation_s", "p99_ms", "worker_s", "rescales"}, r
    assert r["slo_violation_s"] >= 0 and r["p99_ms"] > 0, r
    assert r["worker_s"] >= 1 * 0.9 and r["worker_s"] <= 16 * 60, r
static = rows[0]
assert static["rescales"] == 0, static
PY
echo "ok: bench_autoscale_live_smoke $(cat "$tmp/out.json")"

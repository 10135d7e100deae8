#!/usr/bin/env bash
# `confide bench distributed --quick` runs nats-server, both parties, the combiner and the
# gateway end to end and prints one valid row per run (a smoke test of the benchmark: no
# assertion on speed). Both groupings: the coarse default and merchant, where nearly every
# group is below min_count and travels as a bare record (frame version 3).
set -euo pipefail
B=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$SRC/tests/integration/nats_lib.bash"
nats_require
for g in country,channel merchant; do
    "$B" bench distributed --quick --nodes 1 --rate 0 --group-by "$g" --json >"$tmp/out.json"
    python3 - "$tmp/out.json" "$g" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 1, rows
r = rows[0]
assert r["group_by"] == sys.argv[2] and r["nodes"] == 1 and r["ok"] is True, r
# every event exactly once in the gateway's audit log, verified as an auditor would
assert r["completeness"] == 1.0, r
assert r["events_per_s"] > 0 and r["cpu_us_per_event"] > 0 and r["raw_events_per_s"] > 0, r
# the raw rate re-sends what the run wrote: at least one message per party's shares stream
assert r["raw_msgs"] >= 2, r
assert 0 <= r["ready_s"] < 60, r  # the receivers were reading before the clock started
assert all(r["cpu_s"][k] > 0 for k in ("gateway", "parties", "combiner", "nats_server")), r
PY
done
# A --group-by that is no list of field names is refused before anything starts.
if "$B" bench distributed --group-by 'merchant: x' >"$tmp/bad.out" 2>&1; then
    echo "FAIL: a bad --group-by was accepted" >&2
    exit 1
fi
grep -q -- "--group-by" "$tmp/bad.out" || { echo "FAIL: error does not name --group-by" >&2; exit 1; }
echo "ok: bench_distributed_smoke"

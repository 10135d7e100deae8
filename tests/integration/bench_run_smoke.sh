#!/usr/bin/env bash
# `confide bench run --quick --json` runs every configuration end to end and prints one valid
# row each (a smoke test of the benchmark itself: no assertion on speed).
set -euo pipefail
B=$1
out=$("$B" bench run --quick --json --no-sweep)
python3 - "$out" <<'PY'
import json, sys
rows = json.loads(sys.argv[1])
names = [r["name"] for r in rows]
assert names == ["decode_only", "full", "full_paced", "fsync_none", "plain", "none_no_rules"], names
for r in rows:
    assert set(r) == {"name", "events", "events_per_s", "cpu_us_per_event", "p50_us", "p99_us",
                      "p999_us", "batch_mean"}, r
    assert r["events"] > 0 and r["events_per_s"] > 0 and r["p99_us"] >= r["p50_us"], r
print("bench run smoke:", len(rows), "configurations")
PY

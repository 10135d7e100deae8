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
assert names == ["decode_only", "full", "full_paced", "fsync_none", "plain", "none_no_rules",
                 "paced_fixed_16", "paced_fixed_64", "paced_fixed_256", "paced_fixed_1024",
                 "paced_adaptive", "batch_check", "fsync_floor"], names
floor = rows.pop()
assert set(floor) == {"name", "syncs", "p50_us", "p99_us", "p999_us"}, floor
assert floor["syncs"] == 2000 and 0 < floor["p50_us"] <= floor["p99_us"] <= floor["p999_us"], floor
check = rows.pop()
assert set(check) == {"name", "best_fixed", "best_fixed_p99_us", "adaptive_p99_us", "ratio"}, check
fixed = {r["name"]: r["p99_us"] for r in rows if r["name"].startswith("paced_fixed_")}
best = min(fixed, key=fixed.get)
assert check["best_fixed"] == int(best.rsplit("_", 1)[1]), (check, fixed)
assert check["best_fixed_p99_us"] == fixed[best], (check, fixed)
adaptive = [r for r in rows if r["name"] == "paced_adaptive"][0]
assert check["adaptive_p99_us"] == adaptive["p99_us"], (check, adaptive)
assert abs(check["ratio"] - adaptive["p99_us"] / fixed[best]) < 0.01, check
for r in rows:
    if r["name"].startswith("paced_fixed_"):
        # a fixed size is exact, except the last batch (and batch.bytes_max)
        n = int(r["name"].rsplit("_", 1)[1])
        assert r["batch_mean"] <= n, r
    assert set(r) == {"name", "events", "events_per_s", "cpu_us_per_event", "p50_us", "p99_us",
                      "p999_us", "batch_mean"}, r
    assert r["events"] > 0 and r["events_per_s"] > 0 and r["p99_us"] >= r["p50_us"], r
print("bench run smoke:", len(rows), "configurations, adaptive p99 / best fixed:", check["ratio"])
PY

#!/usr/bin/env bash
# `confide bench paper --quick` runs every configuration of the paper's evaluation end to end
# (a smoke test of the benchmark itself: no assertion on speed). It checks the structure of
# results.json and results.csv, that every configuration is present once with finite numbers,
# that every run's audit log verifies with completeness 1.0 (and every event reached the sink
# where there is no log), that the report's ratios are the ones computed from the numbers in
# results.json, and that the report and (with gnuplot) the plots exist.
set -euo pipefail
B=$1
out=$(mktemp -d /tmp/confide-bench-paper-smoke-XXXXXX)
trap 'rm -rf "$out"' EXIT
"$B" bench paper --help | grep -q -- '--quick'
for bad in "--bogus" "--set nope=1" "--set novalue" "--format xml" "--rate -5"; do
    rc=0
    # shellcheck disable=SC2086
    "$B" bench paper $bad --out "$out/bad" >/dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 2 ]; then
        echo "bench paper $bad: exit $rc, want 2 (usage)" >&2
        exit 1
    fi
done
test ! -e "$out/bad" || { echo "a refused command line must not write outputs" >&2; exit 1; }
"$B" bench paper --quick --out "$out/r" --json >"$out/stdout.json"
python3 - "$out/r" "$out/stdout.json" <<'PY'
import csv, json, math, os, re, sys
d, stdout = sys.argv[1], sys.argv[2]
res = json.load(open(os.path.join(d, "results.json")))
assert json.load(open(stdout)) == res, "--json must print results.json"
names = [c["name"] for c in res["configs"]]
want = ["confide", "plain", "he", "tee-model", "no-batching", "no-autoscale", "no-lsa", "no-audit"]
assert names == want, names
keys = {"name", "max_events_per_s", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_event",
        "completeness", "slo_violation_s"}
by = {}
for c in res["configs"]:
    assert keys <= set(c), c
    for k in keys - {"name"}:
        assert isinstance(c[k], (int, float)) and math.isfinite(c[k]) and c[k] >= 0, (k, c)
    assert c["max_events_per_s"] > 0 and c["cpu_us_per_event"] > 0, c
    assert c["p50_ms"] <= c["p99_ms"] <= c["p999_ms"], c
    assert c["completeness"] == 1.0, c
    assert c["cpu_us_per_event_paced"] > 0 and c["paced_events_per_s"] > 0, c
    by[c["name"]] = c
assert [s["name"] for s in res["skipped"]] == ["distributed"] and res["skipped"][0]["reason"]
for k in ("cpu", "cores", "date", "kernel"):
    assert k in res["machine"], res["machine"]
# no-autoscale is confide's runs with another policy
for k in ("max_events_per_s", "p99_ms", "cpu_us_per_event"):
    assert by["no-autoscale"][k] == by["confide"][k], k
assert by["tee-model"]["model"] is True and by["confide"]["model"] is False
# the configurations that keep an audit log are verified on it
for n in ("confide", "no-batching", "no-lsa"):
    assert by[n]["completeness_source"] == "audit_log", by[n]
for n in ("plain", "he", "tee-model", "no-audit"):
    assert by[n]["completeness_source"] == "sink_count", by[n]
# ratios consistent with the rows
r = res["ratios"]
def close(a, b):
    return abs(a - b) <= 0.01 * max(abs(a), abs(b)) + 0.06
cf, he, pl = by["confide"], by["he"], by["plain"]
assert close(r["confide_over_he_throughput"], cf["max_events_per_s"] / he["max_events_per_s"]), r
assert close(r["he_over_confide_cpu"], he["cpu_us_per_event"] / cf["cpu_us_per_event"]), r
assert close(r["confide_over_plain_cpu"], cf["cpu_us_per_event"] / pl["cpu_us_per_event"]), r
# results.csv: the same rows
rows = list(csv.DictReader(open(os.path.join(d, "results.csv"))))
assert [x["name"] for x in rows] == want, rows
for x in rows:
    c = by[x["name"]]
    assert close(float(x["max_events_per_s"]), c["max_events_per_s"]), (x, c)
    assert close(float(x["p99_ms"]), c["p99_ms"]) and float(x["completeness"]) == 1.0, (x, c)
# the report: every configuration, the paper's figures, the targets, and the same ratios
rep = open(os.path.join(d, "report.md")).read()
for n in want:
    assert "| %s |" % n in rep, n
for s in ("178", "312", "192", "distributed", "**model**", "HotCalls", "## Issue 15's targets"):
    assert s in rep, s
m = re.search(r"\| >= 1000x he's throughput \| (\d+)x \|", rep)
assert m and close(float(m.group(1)), r["confide_over_he_throughput"]), m
m = re.search(r"\| within 1.5x of plain's CPU per event \| ([0-9.]+)x \|", rep)
assert m and close(float(m.group(1)), r["confide_over_plain_cpu"]), m
cdf = list(csv.DictReader(open(os.path.join(d, "latency_cdf.csv"))))
assert {x["name"] for x in cdf} == set(want)
for n in want:
    lat = [float(x["latency_ms"]) for x in cdf if x["name"] == n]
    assert lat == sorted(lat), (n, lat)
print("bench paper smoke:", len(names), "configurations")
PY
if command -v gnuplot >/dev/null 2>&1; then
    for p in latency_cdf throughput_p99 autoscale_timeline; do
        test -s "$out/r/$p.png" || { echo "missing $p.png" >&2; exit 1; }
        head -c 8 "$out/r/$p.png" | od -An -c | grep -q 'P   N   G' || { echo "$p.png is not a PNG" >&2; exit 1; }
    done
else
    echo "gnuplot not installed: plots not checked"
fi

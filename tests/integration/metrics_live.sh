#!/usr/bin/env bash
# Live metrics, as an operator sees them: `confide run --metrics 127.0.0.1:0` on a paced
# input serves /healthz and /metrics while it runs; the counters move between two scrapes;
# the scrape passes `promtool check metrics`; the final --stats-json line (printed after
# every stage has finished) reconciles exactly with the --json summary.
# promtool missing: skipped (exit 77), or a failure under CI=true.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v python3 >/dev/null || { echo "skip: python3 not installed"; exit 77; }
[ -f "$SRC/docs/metrics.md" ] || fail "run as: bash metrics_live.sh <confide> <srcdir>"

"$CONFIDE" gen --seed 11 --days 1 --customers 1000 --terminals 2000 --out "$tmp/day.csv" --quiet
events=$(($(wc -l <"$tmp/day.csv") - 1))
[ "$events" -gt 1000 ] || fail "gen produced only $events events"
# Paced to last about 5 s, so there is time to scrape twice; --metrics-hold keeps the server
# up after the run (until SIGTERM), so a slow start of the scraper on a loaded machine cannot
# find it gone.
rate=$((events / 5))

"$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/o" --rate "$rate" \
    --metrics 127.0.0.1:0 --metrics-hold --stats-json --set status.interval_ms=500 --json \
    >"$tmp/summary.json" 2>"$tmp/err" &
pid=$!

python3 - "$tmp" <<'EOF' || fail "live scrape (see above)"
import json, re, sys, time, urllib.request
tmp = sys.argv[1]
addr = None
for _ in range(200):  # the address line comes once the server is bound
    m = re.search(r"metrics at (http://[^ ]+)/metrics", open(tmp + "/err").read())
    if m:
        addr = m.group(1)
        break
    time.sleep(0.05)
if addr is None:
    sys.exit("no 'metrics at' line on stderr: " + open(tmp + "/err").read())

def get(path):
    with urllib.request.urlopen(addr + path, timeout=5) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()

def value(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    sys.exit("series missing from the scrape: " + series)

st, ct, body = get("/healthz")
h = json.loads(body)
if st != 200 or h.get("status") != "ok":
    sys.exit("healthz: %d %s" % (st, body))
time.sleep(0.5)
st, ct, first = get("/metrics")
if st != 200 or not ct.startswith("text/plain"):
    sys.exit("metrics: %d %s" % (st, ct))
time.sleep(1.0)
st, ct, second = get("/metrics")
open(tmp + "/scrape.txt", "w").write(second)
acc = 'confide_events_total{stage="decode",outcome="accepted"}'
com = 'confide_events_total{stage="gateway",outcome="committed"}'
lat = "confide_event_latency_seconds_count"
for s in (acc, com, lat):
    a, b = value(first, s), value(second, s)
    if not b > a:
        sys.exit("%s did not move while running: %s -> %s" % (s, a, b))
for s in ('confide_queue_depth{queue="decode_to_gateway"}', "confide_parallelism",
          'confide_batch_target{stage="gateway"}', 'confide_batch_size_count{stage="gateway"}',
          "confide_watermark_lag_seconds"):
    value(second, s)
if value(second, com) > value(second, acc):
    sys.exit("more committed than accepted")
print("ok: scraped %s twice while running" % addr)
EOF

until grep -q "still serving" "$tmp/err"; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || fail "confide run failed: $(cat "$tmp/err")"
pid=""

# The final stats line is written after every stage finished: it equals the summary.
python3 - "$tmp" <<'EOF' || fail "final stats do not reconcile with the summary"
import json, sys
tmp = sys.argv[1]
summary = json.load(open(tmp + "/summary.json"))
lines = [l for l in open(tmp + "/err") if l.startswith("{")]
if len(lines) < 2:
    sys.exit("expected several --stats-json lines, got %d" % len(lines))
stats = json.loads(lines[-1])
assert stats["schema"] == "confide.stats" and stats["version"] == 1, stats.keys()
m = stats["metrics"]

def counter(name, **labels):
    for s in m[name]["series"]:
        if s["labels"] == labels:
            return s["value"]
    sys.exit("no %s %s" % (name, labels))

checks = [
    (counter("confide_events_total", stage="decode", outcome="accepted"), summary["accepted"]),
    (counter("confide_events_total", stage="decode", outcome="dead_lettered"),
     summary["dead_lettered"]),
    (counter("confide_events_total", stage="gateway", outcome="committed"), summary["audited"]),
    (counter("confide_events_total", stage="sink", outcome="delivered"), summary["accepted"]),
    (m["confide_event_latency_seconds"]["series"][0]["count"], summary["accepted"]),
    (m["confide_batch_size"]["series"][0]["count"], summary["batches"]),
    (counter("confide_events_total", stage="window", outcome="late"), summary["late"]),
    (counter("confide_integrity_alerts_total"), summary["integrity_alerts"]),
]
for got, want in checks:
    if got != want:
        sys.exit("stats %s != summary %s" % (got, want))
print("ok: final stats reconcile (%d events, %d batches)" % (summary["accepted"],
                                                             summary["batches"]))
EOF

# Names and format as Prometheus lints them, on the live scrape.
if ! command -v promtool >/dev/null; then
    [ "${CI:-}" = true ] && fail "promtool is not installed (Debian package prometheus)"
    echo "skip: promtool not installed; everything else passed"
    exit 77
fi
promtool check metrics <"$tmp/scrape.txt" || fail "promtool check metrics"
echo "ok: metrics_live ($events events at $rate/s)"

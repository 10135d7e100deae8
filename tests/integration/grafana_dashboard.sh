#!/usr/bin/env bash
# examples/grafana/confide.json against what confide really exports: a real run (lsa, rules,
# audit log, a few dead letters) is scraped at /metrics, and every metric name any panel or
# template variable queries, and every name examples/prometheus/alerts.yml uses, must be in
# that scrape (no panel queries a series that does not exist). Every query is valid PromQL
# (promtool check rules on them, with Grafana's variables filled in); the panels cover
# throughput, the latency heatmap, SLO burn, batching, queues and alerts; the layout is sane.
# The checker is shown to fail on a dashboard with a misspelt metric.
# promtool or python3 missing: skipped (exit 77), or a failure under CI=true.
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
source "$SRC/tests/integration/lib.bash"
for tool in promtool python3; do
    if ! command -v $tool >/dev/null; then
        [ "${CI:-}" = true ] && fail "$tool is not installed (scripts/setup.sh)"
        echo "skip: $tool not installed"
        exit 77
    fi
done

"$CONFIDE" gen --seed 9 --days 1 --customers 500 --terminals 800 --out "$tmp/day.csv" --quiet
echo "900001,not-a-time,C1,T1,12.00,EUR,PAYMENT,BE,POS,0,0" >>"$tmp/day.csv"
"$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/o" --rules "$SRC/examples/rules.yaml" \
    --metrics 127.0.0.1:0 --metrics-hold --json >"$tmp/summary.json" 2>"$tmp/err" &
pid=$!
until grep -q "still serving" "$tmp/err"; do
    kill -0 "$pid" 2>/dev/null || fail "confide run exited early: $(cat "$tmp/err")"
    sleep 0.1
done
port=$(sed -n 's|.*metrics at http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/err")
curl -sS -o "$tmp/scrape.txt" "http://127.0.0.1:$port/metrics"
kill -TERM "$pid"
wait "$pid" || fail "confide run failed"
pid=""
promtool check metrics <"$tmp/scrape.txt" || fail "promtool check metrics"

python3 - "$tmp" "$SRC" <<'EOF' || fail "dashboard or alert rules query metrics confide does not export"
import json, re, subprocess, sys
tmp, src = sys.argv[1], sys.argv[2]

exported = set()
for line in open(tmp + "/scrape.txt"):
    if line.strip() and not line.startswith("#"):
        exported.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))

FUNCS = {"abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil",
         "changes", "clamp", "clamp_max", "clamp_min", "count", "count_over_time",
         "count_values", "delta", "deriv", "exp", "floor", "group", "histogram_quantile",
         "holt_winters", "idelta", "increase", "irate", "label_join", "label_replace",
         "label_values", "last_over_time", "ln", "log10", "log2", "max", "max_over_time", "min",
         "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate", "resets",
         "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum",
         "sum_over_time", "time", "timestamp", "topk", "vector"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}

def metric_names(expr):
    """Metric names in a PromQL expression (Grafana variables allowed)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", expr)
    if m:                                                   # Grafana: label_values(q, label)
        expr = m.group(1)
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "", e)                         # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                        # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    e = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "", e)    # $job, ${datasource}, $__range
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        w = m.group(0)
        rest = e[m.end():].lstrip()
        if w in FUNCS and (rest.startswith("(") or re.match(r"(by|without)\b", rest)):
            continue
        if w in KEYWORDS or re.fullmatch(r"[0-9.e]+", w):
            continue
        names.add(w)
    return names

def promql(expr):
    e = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
    e = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", e)
    return e

def check_dashboard(path, strict=True):
    """Returns a list of problems; empty when the dashboard is fine."""
    d = json.load(open(path))
    problems = []
    queries = []  # (where, expr)
    ids = set()
    cells = {}
    for p in d["panels"]:
        if p["id"] in ids:
            problems.append("duplicate panel id %s" % p["id"])
        ids.add(p["id"])
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24 or g["h"] < 1:
            problems.append("panel %r outside the 24-column grid" % p["title"])
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append("panels %r and %r overlap" % (cells[(x, y)], p["title"]))
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        if not p.get("targets"):
            problems.append("panel %r has no query" % p["title"])
        refs = [t["refId"] for t in p.get("targets", [])]
        if len(refs) != len(set(refs)):
            problems.append("panel %r repeats a refId" % p["title"])
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append("panel %r does not use the datasource variable" % p["title"])
        for t in p.get("targets", []):
            queries.append(("panel %r" % p["title"], t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            queries.append(("variable %s" % v["name"], q))
    for where, expr in queries:
        for n in metric_names(expr):
            if n not in exported:
                problems.append("%s queries %s, which confide does not export" % (where, n))
    return problems, d, queries

problems, dash, queries = check_dashboard(src + "/examples/grafana/confide.json")
if problems:
    sys.exit("\n".join(problems))

# The checker can fail: a misspelt metric in a copy of the dashboard is caught.
bad = json.load(open(src + "/examples/grafana/confide.json"))
bad["panels"][-1]["targets"][0]["expr"] = "sum(rate(confide_event_total[5m]))"
json.dump(bad, open(tmp + "/bad.json", "w"))
p2, _, _ = check_dashboard(tmp + "/bad.json")
if not any("confide_event_total" in p for p in p2):
    sys.exit("the checker missed a misspelt metric")

# Every panel query is valid PromQL: promtool parses them as recording rules.
with open(tmp + "/panel_rules.yml", "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (where, expr) in enumerate(queries):
        if expr.startswith("label_values("):
            m = re.fullmatch(r"label_values\((.*),\s*[a-z_]+\)", expr)
            expr = m.group(1)
        f.write("      - record: dashboard:q%d\n        expr: %s\n" % (i, json.dumps(promql(expr))))
r = subprocess.run(["promtool", "check", "rules", tmp + "/panel_rules.yml"],
                   capture_output=True, text=True)
if r.returncode != 0:
    sys.exit("a dashboard query is not valid PromQL:\n" + r.stdout + r.stderr)

# What the dashboard must show.
allq = " ".join(e for _, e in queries)
types = {p["type"] for p in dash["panels"]}
need = {
    "throughput": "confide_events_total" in allq,
    "latency heatmap": any(p["type"] == "heatmap" and "confide_event_latency_seconds_bucket"
                           in p["targets"][0]["expr"] for p in dash["panels"]),
    "SLO burn": any("burn" in p["title"].lower() for p in dash["panels"]),
    "batching": "confide_batch_size" in allq and "confide_batch_target" in allq,
    "queues": "confide_queue_depth" in allq,
    "compliance alerts": "confide_alerts_total" in allq,
    "integrity alerts": "confide_integrity_alerts_total" in allq,
    "dead letters": "confide_dead_letters_total" in allq,
    "results": "confide_results_total" in allq,
    "late by reason": "confide_late_events_total" in allq,
    "audit head": "confide_audit_signed_head_age_seconds" in allq,
}
missing = [k for k, ok in need.items() if not ok]
if missing:
    sys.exit("the dashboard does not show: " + ", ".join(missing))

# The alert rules use exported names too (or the recording rules they define).
rules = open(src + "/examples/prometheus/alerts.yml").read()
recorded = set(re.findall(r"record:\s*(\S+)", rules))
exprs = re.findall(r"expr:\s*\|\n((?:\s{10}.*\n)+)|expr:\s*(.+)\n", rules)
used = set()
for block, line in exprs:
    used |= metric_names(block or line)
unknown = sorted(n for n in used if n not in exported and n not in recorded)
if unknown:
    sys.exit("alerts.yml uses series confide does not export: %s" % unknown)
if len(used) < 6:
    sys.exit("could not read the alert expressions (%d names)" % len(used))
print("ok: %d dashboard queries and %d alert-rule names are all exported (%d series names in "
      "the scrape)" % (len(queries), len(used), len(exported)))
EOF
echo "ok: grafana_dashboard"

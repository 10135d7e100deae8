#!/usr/bin/env bash
# The live console in a real browser. `confide run --metrics 127.0.0.1:0 --metrics-hold` on
# generated payments (with a few malformed records, compliance rules, lsa, the audit log)
# serves the console at /; Debian's headless Chromium loads it (--dump-dom after a virtual
# time budget, so the page's own JavaScript has polled /api/status and drawn everything) and
# every number on the page (each carries its raw value in data-v and its /api/status path in
# data-k) must equal /api/status, which must reconcile with the run's --json summary and
# with a /metrics scrape (the new series: results, late by reason, audit tree and head).
# The page loads nothing from elsewhere, shows no account/merchant ids, and a second run
# with a dishonest party (debug.tamper_party) turns the integrity alert red.
# Screenshots: BUILD/console/console.png and console-integrity.png.
# chromium missing: skipped (exit 77), or a failure under CI=true.
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
skip() {
    [ "${CI:-}" = true ] && fail "$1"
    echo "skip: $1"
    exit 77
}
command -v python3 >/dev/null || skip "python3 not installed"
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || skip "chromium not installed (Debian package chromium; scripts/setup.sh)"
shots="$(cd "$(dirname "$CONFIDE")" && pwd)/console"
mkdir -p "$shots"

# Headless Chromium as root in a container: no sandbox, no GPU, nothing fetched from Google.
browser() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-default-apps --disable-extensions --hide-scrollbars \
        --user-data-dir="$tmp/profile-$RANDOM" "$@" 2>>"$tmp/chromium.log"
}

"$CONFIDE" gen --seed 7 --days 1 --customers 2000 --terminals 3000 --out "$tmp/day.csv" --quiet
# Dead letters of three kinds, at the end of the file.
cat >>"$tmp/day.csv" <<'EOF'
900001,not-a-time,C1,T1,12.00,EUR,PAYMENT,BE,POS,0,0
900002,2018-04-01T23:59:00Z,C1,T1,12.00,XXX,PAYMENT,BE,POS,0,0
900003,2018-04-01T23:59:01Z,C1,T1,twelve,EUR,PAYMENT,BE,POS,0,0
EOF
events=$(($(wc -l <"$tmp/day.csv") - 1))

# start_run NAME ARGS...: runs confide in the background until it reports that it finished
# and holds; sets $pid and $port.
start_run() {
    local name=$1
    shift
    "$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/$name" --rules "$SRC/examples/rules.yaml" \
        --set window.size_ms=600000 --set window.group_by=country,channel \
        --metrics 127.0.0.1:0 --metrics-hold --json "$@" >"$tmp/$name.json" 2>"$tmp/$name.err" &
    pid=$!
    until grep -q "still serving" "$tmp/$name.err"; do
        kill -0 "$pid" 2>/dev/null || fail "confide run exited early: $(cat "$tmp/$name.err")"
        sleep 0.1
    done
    port=$(sed -n 's|.*console at http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$tmp/$name.err")
    [ -n "$port" ] || fail "no 'console at' line: $(cat "$tmp/$name.err")"
}
stop_run() {
    local want=$1
    kill -TERM "$pid"
    set +e
    wait "$pid"
    local rc=$?
    set -e
    pid=""
    [ "$rc" = "$want" ] || fail "confide run exited $rc after SIGTERM (want $want)"
}

# ---- 1. a normal run, paced to last about 3 s so the charts have a few points ----
start_run run --rate $((events / 3))
base="http://127.0.0.1:$port"
curl -sS -D "$tmp/page.headers" -o "$tmp/page.html" "$base/"
curl -sS -o "$tmp/status.json" "$base/api/status"
curl -sS -o "$tmp/scrape.txt" "$base/metrics"
browser --virtual-time-budget=4000 --dump-dom "$base/" >"$tmp/dom.html"
browser --virtual-time-budget=4000 --window-size=1400,2000 --screenshot="$shots/console.png" \
    "$base/" >/dev/null
[ -s "$shots/console.png" ] || fail "no screenshot (see $tmp/chromium.log)"
stop_run 0

python3 - "$tmp" "$SRC" <<'EOF' || fail "the page, /api/status, /metrics and the summary disagree"
import json, re, sys
from html.parser import HTMLParser
tmp, src = sys.argv[1], sys.argv[2]
status = json.load(open(tmp + "/status.json"))
summary = json.load(open(tmp + "/run.json"))
page = open(tmp + "/page.html").read()
headers = open(tmp + "/page.headers").read().lower()
dom = open(tmp + "/dom.html").read()

# -- the page itself: embedded, self-contained, locked down --
assert "content-security-policy: default-src 'none'" in headers, headers
assert "text/html" in headers, headers
for m in re.finditer(r'(?:src|href)\s*=\s*["\']([^"\']*)', page):
    sys.exit("the page references another resource: " + m.group(1))
if re.search(r"https?://|//cdn|@import|url\(", page):
    sys.exit("the page names an external address")

# -- the DOM after the page's JavaScript ran --
class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.k = []          # (data-k, data-v)
        self.attrs = {}      # id -> attrs
        self.body = {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if "id" in a:
            self.attrs[a["id"]] = a
        if "data-k" in a:
            self.k.append((a["data-k"], a.get("data-v")))
d = Dom()
d.feed(dom)
if d.body.get("data-ready") != "1":
    sys.exit("the page never rendered /api/status (data-ready=%r)" % d.body.get("data-ready"))
if d.body.get("data-state") != "finished":
    sys.exit("page state %r, want finished" % d.body.get("data-state"))

def last(a):
    a = [x for x in a if x is not None]
    return a[-1] if a else None

def lookup(path):
    parts = path.split(".")
    fam = {"alerts": "rule", "dead_letters": "reason", "late": "reason", "queues": "queue"}
    if parts[0] in fam and len(parts) == 2:
        val = "depth" if parts[0] == "queues" else "count"
        for it in status[parts[0]]:
            if it[fam[parts[0]]] == parts[1]:
                return it[val]
        sys.exit("the page shows %s, /api/status has no such row" % path)
    if path == "progress.fraction_pct":
        return round(status["progress"]["fraction"] * 1000) / 10
    o = status
    for p in parts:
        if p == "last" and isinstance(o, list):
            o = last(o)
        elif isinstance(o, dict) and p in o:
            o = o[p]
        else:
            sys.exit("the page shows %s, which /api/status does not have" % path)
    return o

def same(v_text, want):
    if want is None:
        return v_text == "null"
    if isinstance(want, bool):
        return v_text == ("true" if want else "false")
    if isinstance(want, (int, float)):
        return v_text not in (None, "null") and float(v_text) == float(want)
    return v_text == str(want)

time_dependent = {"audit.head.age_s", "batch.live_p99_ms"}
checked = 0
for k, v in d.k:
    if v is None:
        sys.exit("element data-k=%s was never filled in" % k)
    if k in time_dependent:
        continue
    want = lookup(k)
    if not same(v, want):
        sys.exit("page %s = %r, /api/status says %r" % (k, v, want))
    if k.startswith("summary."):
        o = summary
        for p in k.split(".")[1:]:
            o = o[p]
        if not same(v, o):
            sys.exit("page %s = %r, the --json summary says %r" % (k, v, o))
    checked += 1
keys = {k for k, _ in d.k}
for fam, lab in (("alerts", "rule"), ("late", "reason"), ("queues", "queue")):
    for it in status[fam]:
        if "%s.%s" % (fam, it[lab]) not in keys:
            sys.exit("row %s.%s of /api/status is not on the page" % (fam, it[lab]))
for it in status["dead_letters"]:
    if it["count"] > 0 and "dead_letters." + it["reason"] not in keys:
        sys.exit("dead-letter reason %s is not on the page" % it["reason"])
for must in ("totals.integrity_alerts", "audit.tree_size", "audit.head.root",
             "progress.fraction_pct", "history.p99_ms.last", "batch.target", "run.slo_p99_ms",
             "watermark.lag_s", "summary.latency_us.p999"):
    if must not in keys:
        sys.exit("the page does not show " + must)
if "on" in d.attrs["integrity-banner"].get("class", ""):
    sys.exit("integrity banner shown without integrity alerts")

# -- /api/status against the summary --
t = status["totals"]
checks = [
    ("accepted", t["accepted"], summary["accepted"]),
    ("committed", t["committed"], summary["audited"]),
    ("delivered", t["delivered"], summary["accepted"]),
    ("dead_lettered", t["dead_lettered"], summary["dead_lettered"]),
    ("dead letters by reason", sum(x["count"] for x in status["dead_letters"]),
     summary["dead_lettered"]),
    ("alerts", t["alerts"], summary["alerts"]),
    ("alerts by rule", sum(x["count"] for x in status["alerts"]), summary["alerts"]),
    ("results_released", t["results_released"], summary["results"]),
    ("results_withheld", t["results_withheld"], summary["suppressed"]),
    ("late", t["late"], summary["late"]),
    ("integrity_alerts", t["integrity_alerts"], summary["integrity_alerts"]),
    ("batches", t["batches"], summary["batches"]),
    # leaves: every event and every dead letter (docs/audit.md 2.5)
    ("audit tree size", status["audit"]["tree_size"], summary["audited"] + summary["dead_lettered"]),
    ("audit head size", status["audit"]["head"]["tree_size"],
     summary["audited"] + summary["dead_lettered"]),
    ("progress", status["progress"]["fraction"], 1),
    ("summary", status["summary"], summary),
]
for name, got, want in checks:
    if got != want:
        sys.exit("/api/status %s = %r, summary %r" % (name, got, want))
if summary["dead_lettered"] != 3 or summary["alerts"] == 0 or summary["results"] == 0:
    sys.exit("the run did not exercise the page: %r" % summary)
if len(status["history"]["ts_us"]) < 2:
    sys.exit("history has %d samples" % len(status["history"]["ts_us"]))
if not re.fullmatch(r"[0-9a-f]{64}", status["audit"]["head"]["root"]):
    sys.exit("bad root " + status["audit"]["head"]["root"])
with open(tmp + "/run/tree_heads.ndjson") as f:
    heads = [json.loads(l) for l in f]
if heads[-1]["root"] != status["audit"]["head"]["root"] or \
   heads[-1]["tree_size"] != status["audit"]["head"]["tree_size"]:
    sys.exit("the page's last head is not the last head in tree_heads.ndjson")

# -- /metrics: the series the console and the dashboards use --
def series(name, **labels):
    want = name + ("{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "}" if labels else "")
    for line in open(tmp + "/scrape.txt"):
        if line.startswith(want + " "):
            return float(line.split()[-1])
    sys.exit("scrape has no " + want)
mchecks = [
    (series("confide_results_total", outcome="released"), summary["results"]),
    (series("confide_results_total", outcome="withheld"), summary["suppressed"]),
    (sum(series("confide_late_events_total", reason=r) for r in
         ("state_limit", "beyond_lateness", "beyond_lateness_some_windows")), summary["late"]),
    (series("confide_audit_tree_size"), summary["audited"] + summary["dead_lettered"]),
    (series("confide_audit_signed_head_timestamp_seconds"),
     status["audit"]["head"]["timestamp_us"] / 1e6),
]
for got, want in mchecks:
    if abs(got - want) > 1e-6 * max(1, abs(want)):
        sys.exit("/metrics %r != %r" % (got, want))
if not series("confide_audit_signed_head_age_seconds") >= 0:
    sys.exit("head age negative")
for x in status["alerts"]:
    if series("confide_alerts_total", rule=x["rule"]) != x["count"]:
        sys.exit("confide_alerts_total{rule=%s} disagrees" % x["rule"])

# -- privacy: no ids, no amounts --
ids = set()
for line in open(tmp + "/day.csv").readlines()[1:]:
    f = line.split(",")
    ids.update((f[2], f[3]))
for name, text in (("/api/status", json.dumps(status)), ("the page", dom)):
    found = {w for w in re.findall(r"\b[CT][0-9]+\b", text)} & ids
    if found:
        sys.exit("%s shows account/merchant ids: %s" % (name, sorted(found)[:5]))
def keys_of(o, acc):
    if isinstance(o, dict):
        for k, v in o.items():
            acc.add(k)
            keys_of(v, acc)
    elif isinstance(o, list):
        for v in o:
            keys_of(v, acc)
    return acc
bad = {k for k in keys_of(status, set()) if re.search(r"amount|sum_minor|account|merchant", k)}
if bad:
    sys.exit("/api/status has fields %s" % bad)
print("ok: %d numbers on the page match /api/status and the summary (%d events, %d alerts, "
      "%d results, %d dead letters)" % (checked, summary["accepted"], summary["alerts"],
                                        summary["results"], summary["dead_lettered"]))
EOF

# ---- 2. the auditor's report on that run's log, in the browser too ----
"$CONFIDE" audit verify "$tmp/run/audit" --keys "$tmp/run/keys" --json >"$tmp/verify.json" \
    2>/dev/null || fail "audit verify failed"
expect 0 "$CONFIDE" audit report "$tmp/run/audit" --keys "$tmp/run/keys" --out "$tmp/report.html"
expect 0 "$CONFIDE" audit report "$tmp/run/audit" --keys "$tmp/run/keys" --out "$tmp/report.md"
browser --dump-dom "file://$tmp/report.html" >"$tmp/report_dom.html"
browser --window-size=1100,2600 --screenshot="$shots/report.png" "file://$tmp/report.html" \
    >/dev/null
python3 - "$tmp" <<'EOF' || fail "the audit report disagrees with the log, the run or the console"
import json, re, sys
from html.parser import HTMLParser
tmp = sys.argv[1]
summary = json.load(open(tmp + "/run.json"))
status = json.load(open(tmp + "/status.json"))
verify = json.load(open(tmp + "/verify.json"))
html = open(tmp + "/report.html").read()
md = open(tmp + "/report.md").read()

class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.k, self.bars, self.body = {}, [], {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if "data-k" in a:
            self.k[a["data-k"]] = a.get("data-v")
        if tag == "rect" and "data-v" in a:
            self.bars.append(int(a["data-v"]))
d = Dom()
d.feed(open(tmp + "/report_dom.html").read())
k = d.k
def num(key):
    if key not in k:
        sys.exit("the report does not show " + key)
    return float(k[key])
if d.body.get("data-verdict") != "verified" or k.get("verdict") != "VERIFIED":
    sys.exit("verdict %r / %r" % (d.body.get("data-verdict"), k.get("verdict")))
checks = [
    ("leaves", num("leaves"), verify["leaves"]),
    ("leaves/summary", num("leaves"), summary["audited"] + summary["dead_lettered"]),
    ("dead letters in the log", num("log_dead_letters"), summary["dead_lettered"]),
    ("events", num("events"), verify["events"]),
    ("sth_valid", num("sth_valid"), verify["sth_valid"]),
    ("sth_invalid", num("sth_invalid"), 0),
    ("gaps", num("gaps"), verify["gaps"]),
    ("duplicates", num("duplicates"), verify["duplicates"]),
    ("completeness", num("completeness"), verify["completeness"]),
    ("segments", num("segments"), verify["segments"]),
    ("last head", num("last_head.tree_size"), summary["audited"] + summary["dead_lettered"]),
    ("verdict hits", sum(float(v) for x, v in k.items() if x.startswith("rules.")),
     summary["alerts"]),
    ("alerts.ndjson", num("alerts"), summary["alerts"]),
    ("dead letters", num("dead_letters"), summary["dead_lettered"]),
    ("dead by reason", sum(float(v) for x, v in k.items() if x.startswith("dead.")), 3),
    ("late", num("late"), summary["late"]),
    ("results", num("results"), summary["results"]),
    ("integrity", num("integrity"), 0),
    ("chart total", num("chart.total"), summary["audited"]),
    ("chart bars", sum(d.bars), summary["audited"]),
    ("pass + flagged", num("verdicts.pass") + num("verdicts.flagged"), summary["audited"]),
]
for name, got, want in checks:
    if got != want:
        sys.exit("report %s = %r, want %r" % (name, got, want))
if k.get("verify.ok") != "true" or k.get("trusted_head") != "true":
    sys.exit("verification or trusted head not ok: %r %r" % (k.get("verify.ok"),
                                                             k.get("trusted_head")))
for a in status["alerts"]:
    if a["count"] > 0 and (num("rules." + a["rule"]) != a["count"] or
                           num("alert_rules." + a["rule"]) != a["count"]):
        sys.exit("rule %s: the report disagrees with the console (%d)" % (a["rule"], a["count"]))
heads = [json.loads(l) for l in open(tmp + "/run/tree_heads.ndjson")]
if k.get("last_head.root") != heads[-1]["root"]:
    sys.exit("last head root differs from tree_heads.ndjson")
if len(d.bars) < 2:
    sys.exit("events per hour: %d bars" % len(d.bars))
if re.search(r"<script|https?://|\bsrc=|\bhref=", html):
    sys.exit("the report is not self-contained")
ids = set()
for line in open(tmp + "/day.csv").readlines()[1:]:
    f = line.split(",")
    ids.update((f[2], f[3]))
for name, text in (("report.html", html), ("report.md", md)):
    found = set(re.findall(r"\b[CT][0-9]+\b", text)) & ids
    if found:
        sys.exit("%s shows ids %s" % (name, sorted(found)[:5]))
    if re.search(r"sum_minor|amount_minor|\"amount\"", text):
        sys.exit("%s mentions amounts" % name)
for must in ("**Verdict: VERIFIED**", "confide audit verify", "## Events per hour",
             "| %d |" % summary["audited"]):
    if must not in md:
        sys.exit("report.md lacks %r" % must)
print("ok: the audit report (%d leaves, %d heads) matches verify --json, the summary and the "
      "console" % (verify["leaves"], verify["sth_valid"]))
EOF

# ---- 3. a dishonest party: the integrity alert is red on the page and in the report ----
start_run tamper --set debug.tamper_party=1
base="http://127.0.0.1:$port"
curl -sS -o "$tmp/status2.json" "$base/api/status"
browser --virtual-time-budget=3000 --dump-dom "$base/" >"$tmp/dom2.html"
browser --virtual-time-budget=3000 --window-size=1400,2000 \
    --screenshot="$shots/console-integrity.png" "$base/" >/dev/null
stop_run 4
expect 4 "$CONFIDE" audit report "$tmp/tamper/audit" --keys "$tmp/tamper/keys" \
    --out "$tmp/report2.html"
browser --dump-dom "file://$tmp/report2.html" >"$tmp/report2_dom.html"
grep -q 'data-verdict="integrity_alert"' "$tmp/report2_dom.html" ||
    fail "the report's verdict is not an integrity alert"
grep -q 'class="alert">INTEGRITY ALERTS: <span data-k="integrity_alerts" data-v="1"' \
    "$tmp/report2_dom.html" || fail "the report does not show the integrity alert in red"
python3 - "$tmp" <<'EOF' || fail "integrity alert not shown"
import json, re, sys
tmp = sys.argv[1]
status = json.load(open(tmp + "/status2.json"))
summary = json.load(open(tmp + "/tamper.json"))
dom = open(tmp + "/dom2.html").read()
n = summary["integrity_alerts"]
if n < 1 or status["totals"]["integrity_alerts"] != n:
    sys.exit("integrity alerts: summary %r, /api/status %r" % (n, status["totals"]))
if not re.search(r'id="integrity-banner"[^>]*class="on"|class="on"[^>]*id="integrity-banner"', dom):
    sys.exit("the red integrity banner is not on")
if not re.search(r'class="kpi alarm" id="kpi-integrity"|id="kpi-integrity" class="kpi alarm"', dom):
    sys.exit("the integrity card is not red")
m = re.search(r'id="integrity-banner-n"[^>]*data-v="([0-9]+)"|data-v="([0-9]+)"[^>]*id="integrity-banner-n"', dom)
if not m or int(m.group(1) or m.group(2)) != n:
    sys.exit("the banner does not say %d" % n)
print("ok: %d integrity alert(s) shown in red" % n)
EOF
echo "ok: console_browser (screenshots in $shots)"

#!/usr/bin/env bash
# The full embedded pipeline as users run it: rules -> audit -> LSA shares -> k parties with
# event-time windows -> MAC-checked combiner. Checks, against a reference computed here from
# the input with exact integer arithmetic:
#  - every released aggregate (count, sum) is exactly right and verified; plain gives the same
#  - bounded out-of-order input gives the same results as sorted input
#  - the audit log verifies with completeness 1.0 and holds every accepted event
#  - a party that alters its partial sum is caught and named: exit 4, integrity alert, value withheld
#  - min_count withholds small groups; bad key permissions are refused with a clear error
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$CONFIDE" gen --seed 11 --days 1 --customers 3000 --terminals 6000 --out "$tmp/day.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties 3 >/dev/null

run() { # run OUTDIR [options...]
    local out=$1
    shift
    "$CONFIDE" run --input "$tmp/day.csv" --keys "$tmp/keys" --out "$out" --group-by country \
        --window-ms 600000 --rules "$SRC/examples/rules.yaml" --parties 3 --set min_count=1 \
        --json "$@"
}

s=$(run "$tmp/lsa")
[ "$(echo "$s" | jget '["integrity_alerts"]')" -eq 0 ] || fail "integrity alerts: $s"
[ "$(echo "$s" | jget '["late"]')" -eq 0 ] || fail "late events in sorted input: $s"
acc=$(echo "$s" | jget '["accepted"]')

python3 - "$tmp/day.csv" "$tmp/lsa/results.ndjson" <<'PY' || fail "results differ from the reference"
import csv, json, sys
from decimal import Decimal
from datetime import datetime, timezone
EXP = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}
ref = {}
for r in csv.DictReader(open(sys.argv[1])):
    ts = datetime.strptime(r["ts"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    start = int(ts.timestamp()) // 600 * 600
    minor = int(Decimal(r["amount"]).scaleb(EXP.get(r["currency"], 2)))
    c, s = ref.get((start, r["country"], r["currency"]), (0, 0))
    ref[(start, r["country"], r["currency"])] = (c + 1, s + minor)
got = {}
for line in open(sys.argv[2]):
    o = json.loads(line)
    assert o["verified"] is True, o
    assert o["key_epoch"] == 1, o  # keygen's default epoch: results name their keys
    start = int(datetime.strptime(o["window_start"], "%Y-%m-%dT%H:%M:%SZ")
                .replace(tzinfo=timezone.utc).timestamp())
    # the group is a JSON object; currency is always part of it, and named in every row
    assert set(o["group"]) == {"country", "currency"} and o["currency"] == o["group"]["currency"], o
    got[(start, o["group"]["country"], o["currency"])] = (o["count"], o["sum_minor"])
if got != ref:
    missing = set(ref) - set(got); extra = set(got) - set(ref)
    bad = [k for k in ref if k in got and ref[k] != got[k]]
    print("missing", len(missing), "extra", len(extra), "wrong", len(bad), bad[:3], file=sys.stderr)
    sys.exit(1)
print("results: %d groups match the reference exactly" % len(ref))
PY

# The same with the plain baseline: identical numbers, marked unverified.
run "$tmp/plain" --protect plain >/dev/null
python3 - "$tmp/lsa/results.ndjson" "$tmp/plain/results.ndjson" <<'PY' || fail "plain != lsa"
import json, sys
strip = lambda o: {k: v for k, v in o.items() if k not in ("verified", "key_epoch")}
a = sorted(json.dumps(strip(json.loads(l)), sort_keys=True) for l in open(sys.argv[1]))
b = sorted(json.dumps(strip(json.loads(l)), sort_keys=True) for l in open(sys.argv[2]))
sys.exit(0 if a == b else 1)
PY

# CSV results: a header and the same aggregates.
run "$tmp/csv" --set output.results_format=csv >/dev/null
python3 - "$tmp/lsa/results.ndjson" "$tmp/csv/results.csv" <<'PY' || fail "results.csv != results.ndjson"
import csv, json, sys
a = sorted((o["window_start"], o["group"]["country"], o["group"]["currency"], o["count"],
            o["sum_minor"]) for o in map(json.loads, open(sys.argv[1])))
b = sorted((r["window_start"], r["country"], r["currency"], int(r["count"]), int(r["sum_minor"]))
           for r in csv.DictReader(open(sys.argv[2])))
sys.exit(0 if a == b else 1)
PY

# Bounded out-of-order input (each event moved by at most 30 s of event time) gives the
# same aggregates as sorted input (max_delay 5 s is not enough: use 60 s).
python3 - "$tmp/day.csv" "$tmp/shuffled.csv" <<'PY'
import random, sys
lines = open(sys.argv[1]).read().splitlines(True)
head, rows = lines[0], lines[1:]
rnd = random.Random(5)
key = [(i, r[r.index(",") + 1:].split(",")[0]) for i, r in enumerate(rows)]
from datetime import datetime
def t(s): return datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").timestamp()
order = sorted(range(len(rows)), key=lambda i: t(key[i][1]) + rnd.uniform(0, 30))
open(sys.argv[2], "w").write(head + "".join(rows[i] for i in order))
PY
"$CONFIDE" run --input "$tmp/shuffled.csv" --keys "$tmp/keys" --out "$tmp/shuf" --group-by country \
    --window-ms 600000 --parties 3 --set window.max_delay_ms=60000 --set min_count=1 --json >/dev/null
python3 - "$tmp/lsa/results.ndjson" "$tmp/shuf/results.ndjson" <<'PY' || fail "shuffled input changed the results"
import json, sys
key = lambda o: (o["window_start"], json.dumps(o["group"]), o["count"], o["sum_minor"])
a = sorted(key(json.loads(l)) for l in open(sys.argv[1]))
b = sorted(key(json.loads(l)) for l in open(sys.argv[2]))
sys.exit(0 if a == b else 1)
PY

# Audit: every accepted event is in the log, with a verdict, and the log verifies.
v=$("$CONFIDE" audit verify "$tmp/lsa/audit" --keys "$tmp/keys" --json)
[ "$(echo "$v" | jget '["events"]')" -eq "$acc" ] || fail "audit holds != $acc events: $v"
[ "$(echo "$v" | jget '["completeness"]')" = "1.0" ] || fail "completeness: $v"
[ "$(echo "$v" | jget '["sth_invalid"]')" -eq 0 ] || fail "invalid tree heads: $v"
# The signed tree heads handed to the sinks match the log: the last one covers every event,
# and its root is the root an inclusion proof from the log gives at that size.
last=$(tail -1 "$tmp/lsa/tree_heads.ndjson")
[ "$(echo "$last" | jget '["tree_size"]')" -eq "$acc" ] || fail "last tree head: $last"
proof=$("$CONFIDE" audit prove "$tmp/lsa/audit" --index 0 --size "$acc" --json)
[ "$(echo "$proof" | jget '["root"]')" = "$(echo "$last" | jget '["root"]')" ] ||
    fail "tree head root differs from the log's root"
# Every alert names a rule of the file and an event that exists.
[ -s "$tmp/lsa/alerts.ndjson" ] || fail "no alerts from examples/rules.yaml"
grep -q '"rule_id":"big"' "$tmp/lsa/alerts.ndjson" || fail "no large_amount alert"
if grep -q '"amount' "$tmp/lsa/alerts.ndjson"; then fail "alerts carry amounts"; fi

# A dishonest party: caught, exit code 4, its group withheld.
rc=0
run "$tmp/tamper" --set debug.tamper_party=2 >"$tmp/t.json" 2>"$tmp/t.err" || rc=$?
[ "$rc" -eq 4 ] || fail "tampering: exit $rc, want 4"
grep -q '"kind":"integrity"' "$tmp/tamper/alerts.ndjson" || fail "no integrity alert"
grep -q '"kind":"compliance"' "$tmp/tamper/alerts.ndjson" || fail "compliance alerts have no kind"
# The audit log tells which events the group holds: the alert names the dishonest party.
grep -q '"party":2,' "$tmp/tamper/alerts.ndjson" || fail "alert does not name party 2: $(cat "$tmp/tamper/alerts.ndjson")"
[ "$(wc -l <"$tmp/tamper/results.ndjson")" -eq $(($(wc -l <"$tmp/lsa/results.ndjson") - 1)) ] ||
    fail "the tampered group was not withheld (or others were lost)"

# A dishonest party that calls a large group small (it sends no shares for it): the other
# parties' records disagree, an integrity alert is raised and nothing else is lost.
rc=0
run "$tmp/hide" --set debug.hide_party=1 >"$tmp/h.json" 2>"$tmp/h.err" || rc=$?
[ "$rc" -eq 4 ] || fail "hiding a group: exit $rc, want 4"
grep -q '"details":"parties disagree' "$tmp/hide/alerts.ndjson" ||
    fail "no disagreement alert: $(grep integrity "$tmp/hide/alerts.ndjson")"
[ "$(wc -l <"$tmp/hide/results.ndjson")" -eq $(($(wc -l <"$tmp/lsa/results.ndjson") - 1)) ] ||
    fail "the hidden group was released (or others were lost)"

# min_count: groups below it are withheld and counted.
s=$(run "$tmp/minc" --set min_count=5)
[ "$(echo "$s" | jget '["suppressed"]')" -gt 0 ] || fail "nothing withheld at min_count 5"
python3 -c 'import json,sys; sys.exit(any(json.loads(l)["count"] < 5 for l in open(sys.argv[1])))' \
    "$tmp/minc/results.ndjson" || fail "a group below min_count was released"

# Key files readable by others are refused, naming the file.
chmod 644 "$tmp/keys/gateway.key"
if run "$tmp/perm" 2>"$tmp/perm.err" >/dev/null; then fail "world-readable key accepted"; fi
grep -q "gateway.key" "$tmp/perm.err" || fail "permission error does not name the file: $(cat "$tmp/perm.err")"
echo "ok: secure_e2e"

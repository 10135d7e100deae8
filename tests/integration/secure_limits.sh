#!/usr/bin/env bash
# The guarantees at their edges, through the confide binary:
#  - the largest payments (1,000,000,000.00 IDR, int64 extremes) are screened, audited and
#    summed exactly under lsa -- they used to be dead-lettered before rules and audit saw them
# (Masks bound to log and run ids: tests/unit/secagg.c masks_never_repeat and
# tests/unit/runtime.c masks_bound_to_log_and_run.)
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$CONFIDE" keygen --dir "$tmp/keys" --parties 2 >/dev/null
cat >"$tmp/rules.yaml" <<'Y'
rules:
  - id: ctr_single
    type: large_amount
Y
# one merchant, one minute: two huge payments and a refund at the int64 extremes
cat >"$tmp/big.ndjson" <<'J'
{"event_id":1,"ts":"2026-01-05T10:00:01Z","account":"A1","merchant":"M1","amount":"1000000000.00","currency":"IDR","type":"PAYMENT","country":"ID","channel":"POS"}
{"event_id":2,"ts":"2026-01-05T10:00:02Z","account":"A2","merchant":"M1","amount":"1000000000.00","currency":"IDR","type":"PAYMENT","country":"ID","channel":"POS"}
{"event_id":3,"ts":"2026-01-05T10:00:03Z","account":"A3","merchant":"M1","amount_minor":9223372036854775807,"currency":"IDR","type":"PAYMENT","country":"ID","channel":"POS"}
{"event_id":4,"ts":"2026-01-05T10:00:04Z","account":"A4","merchant":"M1","amount_minor":-9223372036854775808,"currency":"IDR","type":"REFUND","country":"ID","channel":"POS"}
{"event_id":5,"ts":"2026-01-05T10:00:05Z","account":"A5","merchant":"M1","amount_minor":1,"currency":"IDR","type":"PAYMENT","country":"ID","channel":"POS"}
J
s=$("$CONFIDE" run --input "$tmp/big.ndjson" --format ndjson --keys "$tmp/keys" --out "$tmp/big" \
    --rules "$tmp/rules.yaml" --group-by merchant --window-ms 60000 --set min_count=1 --json)
[ "$(echo "$s" | jget '["accepted"]')" -eq 5 ] || fail "not every payment accepted: $s"
[ "$(echo "$s" | jget '["dead_lettered"]')" -eq 0 ] || fail "a large payment was dead-lettered: $s"
[ "$(echo "$s" | jget '["audited"]')" -eq 5 ] || fail "not every payment audited: $s"
[ "$(echo "$s" | jget '["integrity_alerts"]')" -eq 0 ] || fail "integrity alert: $s"
python3 - "$tmp/big" <<'PY' || fail "large payments not screened or not summed exactly"
import json, sys
out = sys.argv[1]
alerts = [json.loads(l) for l in open(out + "/alerts.ndjson")]
ids = sorted(a["event_id"] for a in alerts if a.get("rule_id") == "ctr_single")
assert ids == [1, 2, 3], ids   # 10,000.00 IDR threshold: the three large payments
rows = [json.loads(l) for l in open(out + "/results.ndjson")]
assert len(rows) == 1, rows
r = rows[0]
# 2 * 100000000000 + (2^63 - 1) - 2^63 + 1 = 200000000000 exactly
assert r["count"] == 5 and r["sum_minor"] == 200000000000 and r["verified"] is True, r
print("large payments: 3 alerts, sum exact:", r["sum_minor"])
PY
"$CONFIDE" audit verify "$tmp/big/audit" --keys "$tmp/keys" >/dev/null || fail "audit verify"

# Currencies are never added together, and group labels cannot collide.
cat >"$tmp/fx.ndjson" <<'J'
{"event_id":11,"ts":"2026-01-05T11:00:01Z","account":"C","merchant":"A|B","amount":"150.00","currency":"EUR","type":"PAYMENT","country":"DE","channel":"POS"}
{"event_id":12,"ts":"2026-01-05T11:00:02Z","account":"B|C","merchant":"A","amount":"150.00","currency":"USD","type":"PAYMENT","country":"DE","channel":"POS"}
{"event_id":13,"ts":"2026-01-05T11:00:03Z","account":"C","merchant":"A|B","amount":"15000","currency":"JPY","type":"PAYMENT","country":"DE","channel":"POS"}
{"event_id":14,"ts":"2026-01-05T11:00:04Z","account":"C","merchant":"A|B","amount":"0.50","currency":"EUR","type":"PAYMENT","country":"DE","channel":"POS"}
J
"$CONFIDE" run --input "$tmp/fx.ndjson" --format ndjson --keys "$tmp/keys" --out "$tmp/fx" \
    --group-by merchant,account --window-ms 60000 --set min_count=1 --json >/dev/null
python3 - "$tmp/fx/results.ndjson" <<'PY' || fail "currencies mixed or group labels collide"
import json, sys
rows = sorted((json.dumps(o["group"], sort_keys=True), o["currency"], o["count"], o["sum_minor"])
              for o in map(json.loads, open(sys.argv[1])))
want = sorted([
    (json.dumps({"merchant": "A|B", "account": "C", "currency": "EUR"}, sort_keys=True), "EUR", 2, 15050),
    (json.dumps({"merchant": "A", "account": "B|C", "currency": "USD"}, sort_keys=True), "USD", 1, 15000),
    (json.dumps({"merchant": "A|B", "account": "C", "currency": "JPY"}, sort_keys=True), "JPY", 1, 15000),
])
assert rows == want, rows
print("per currency, distinct groups:", len(rows), "rows")
PY
"$CONFIDE" run --input "$tmp/fx.ndjson" --format ndjson --keys "$tmp/keys" --out "$tmp/fxcsv" \
    --group-by merchant,account --window-ms 60000 --set min_count=1 \
    --set output.results_format=csv --json >/dev/null
head -1 "$tmp/fxcsv/results.csv" | grep -q "^window_start,window_end,merchant,account,currency,count," ||
    fail "CSV header has no column per group field: $(head -1 "$tmp/fxcsv/results.csv")"
grep -q '"A|B","C","EUR",2,15050' "$tmp/fxcsv/results.csv" || fail "CSV group columns"

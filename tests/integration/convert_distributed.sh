#!/usr/bin/env bash
# Conversion to one reporting currency in a distributed run (gateway, 2 parties, combiner as
# separate processes over NATS JetStream with TLS): payments in EUR, USD, JPY, KWD and GBP
# (GBP has no rate: dead-lettered in the gateway's audit log), converted into EUR. The
# combiner's results equal the embedded run's on the same input and config (the gateway
# converts before sharing, the combiner groups on the reporting currency), every row is in
# EUR, and the gateway's log holds every dead letter.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
nats_start "$tmp/ns" $K 1
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K

# 4000 generated payments, every fifth in another currency (amounts at its minor unit).
"$CONFIDE" gen --seed 12 --count 4000 --out "$tmp/eur.csv" --quiet
python3 - "$tmp/eur.csv" "$tmp/tx.csv" <<'PY'
import sys
rows = open(sys.argv[1]).read().splitlines(True)
head, rows = rows[0], rows[1:]
cols = head.rstrip("\n").split(",")
ia, ic = cols.index("amount"), cols.index("currency")
out = [head]
for i, r in enumerate(rows):
    f = r.rstrip("\n").split(",")
    cents = int(f[ia].replace(".", "").replace("-", "")) * (-1 if f[ia].startswith("-") else 1)
    k = i % 5
    if k == 1:
        f[ic] = "USD"
    elif k == 2:
        f[ic], f[ia] = "JPY", str(cents)          # whole yen
    elif k == 3:
        f[ic] = "KWD"
        f[ia] = "%s%d.%03d" % ("-" if cents < 0 else "", abs(cents) // 1000, abs(cents) % 1000)
    elif k == 4 and i % 50 == 4:
        f[ic] = "GBP"                             # no rate: a dead letter
    out.append(",".join(f) + "\n")
open(sys.argv[2], "w").write("".join(out))
PY
cat >"$tmp/rates.csv" <<'CSV'
from_currency,to_currency,rate,valid_from,valid_to
USD,EUR,0.8123,2000-01-01T00:00:00Z,2018-04-01T12:00:00Z
USD,EUR,0.8167,2018-04-01T12:00:00Z,
JPY,EUR,0.00761,2000-01-01T00:00:00Z,
KWD,EUR,2.6931,2000-01-01T00:00:00Z,
CSV
cat >"$tmp/p.yaml" <<EOF2
parties: $K
min_count: 1
window: {size_ms: 600000, group_by: country}
audit: {checkpoint_events: 1024}
convert: {to: EUR, rates_file: "$tmp/rates.csv"}
nats: {servers: "$NATS_URL", ca_file: "$NATS_CA"}
EOF2

"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }

o=$tmp/run && mkdir -p "$o"
roles=()
for i in $(seq 0 $((K - 1))); do
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$i" --out "$o/p$i" --keys "$tmp/k/party$i" \
        --user "party$i" --password-file "$NATS_PW/party$i" >>"$o/p$i.log" 2>&1 &
    roles+=($!)
done
"$CONFIDE" combine --config "$tmp/p.yaml" --out "$o/c" --keys "$tmp/k/combiner" \
    --user combiner --password-file "$NATS_PW/combiner" >>"$o/c.log" 2>&1 &
roles+=($!)
pids+=("${roles[@]}")
"$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$o/g" --keys "$tmp/k/gateway" \
    --no-status --set nats.user=gateway --set nats.password_file="$NATS_PW/gateway" >>"$o/g.log" 2>&1 &
g=$!
pids+=("$g")
wait "$g" || { cat "$o/g.log" >&2; fail "gateway"; }
for p in "${roles[@]}"; do
    wait "$p" || { cat "$o"/*.log >&2; fail "a role failed"; }
done
cmp "$tmp/emb/results.ndjson" "$o/c/results.ndjson" || fail "results differ from the embedded run"
[ "$(wc -l <"$o/c/results.ndjson")" -gt 20 ] || fail "too few results"
! grep -v '"currency":"EUR"' "$o/c/results.ndjson" | grep -q . || fail "a row not in EUR"
grep -q '"reason":"no rate for GBP at ' "$o/g/dead_letter.ndjson" || fail "GBP not dead-lettered"
"$CONFIDE" audit verify "$o/g/audit" --keys "$tmp/k/gateway" --json >"$tmp/v.json" || fail verify
python3 - "$tmp/v.json" "$o/g/dead_letter.ndjson" <<'PY' || fail "audit log: $(cat "$tmp/v.json")"
import json, sys
d = json.load(open(sys.argv[1]))
dead = sum(1 for _ in open(sys.argv[2]))
assert d["completeness"] == 1.0 and d["dead_letters"] == dead > 0, d
assert d["events"] + d["dead_letters"] == 4000, d
PY
# The embedded run's rows (equal to the distributed ones) recomputed from its log alone: every
# batch recorded the rates its events were converted with (a combiner process signs no
# results file: verify-results needs the embedded layout).
expect 0 "$CONFIDE" audit verify-results "$tmp/emb" --keys "$tmp/keys"
echo "ok: distributed conversion to EUR equals the embedded run; verify-results recomputes it"

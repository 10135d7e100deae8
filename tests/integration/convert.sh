#!/usr/bin/env bash
# Conversion to one reporting currency (convert.to, convert.rates_file; docs/schema.md,
# Conversion): payments in EUR, USD, JPY and KWD at one merchant, converted into EUR with a
# rates file whose USD rate changes at midnight. The sums below are computed by hand, in
# integers, with the documented rule (amount x rate at the target's minor unit, half to
# even). Events without a rate (GBP; KWD after its period) are dead-lettered with reason
# "no rate for XXX at TIME". `confide audit verify-results` recomputes every row from the
# audit log alone (the rates each batch used are recorded there), a restart with another
# rates file is refused, and config and rates-file errors name their key or file and line.
# Fails on a build without conversion (rows stay per currency).
set -euo pipefail
B=$1
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.bash"

cat >"$tmp/rates.csv" <<'CSV'
from_currency,to_currency,rate,valid_from,valid_to
USD,EUR,0.85,2018-04-01T00:00:00Z,2018-04-02T00:00:00Z
USD,EUR,0.9,2018-04-02T00:00:00Z,
JPY,EUR,0.0075,2018-04-01T00:00:00Z,
KWD,EUR,2.7,2018-04-01T00:00:00Z,2018-04-02T00:00:00Z
USD,GBP,0.7,2018-04-01T00:00:00Z,
CSV
# minor units: EUR 2, USD 2, JPY 0, KWD 3 (ISO 4217)
cat >"$tmp/in.csv" <<'CSV'
event_id,ts,account,merchant,amount,currency,type,country,channel
1,2018-04-01T01:00:00Z,A1,M1,150.00,EUR,PAYMENT,DE,POS
2,2018-04-01T02:00:00Z,A2,M1,150.00,USD,PAYMENT,DE,POS
3,2018-04-01T03:00:00Z,A3,M1,15000,JPY,PAYMENT,DE,POS
4,2018-04-01T04:00:00Z,A4,M1,1.005,KWD,PAYMENT,DE,POS
5,2018-04-01T05:00:00Z,A5,M1,0.10,USD,PAYMENT,DE,POS
6,2018-04-01T06:00:00Z,A6,M1,0.30,USD,PAYMENT,DE,POS
7,2018-04-01T07:00:00Z,A7,M1,2,JPY,PAYMENT,DE,POS
8,2018-04-01T08:00:00Z,A8,M1,6,JPY,PAYMENT,DE,POS
9,2018-04-01T09:00:00Z,A9,M2,-150.00,USD,REFUND,DE,POS
10,2018-04-01T10:00:00Z,A9,M2,100.00,EUR,PAYMENT,DE,POS
11,2018-04-01T11:00:00Z,A1,M1,10.00,GBP,PAYMENT,DE,POS
12,2018-04-01T23:59:59.999999Z,A2,M1,10.00,USD,PAYMENT,DE,POS
13,2018-04-02T00:00:00Z,A3,M1,10.00,USD,PAYMENT,DE,POS
14,2018-04-02T01:00:00Z,A4,M1,5.000,KWD,PAYMENT,DE,POS
15,2018-04-02T02:00:00Z,A5,M1,200,JPY,PAYMENT,DE,POS
CSV
# By hand, in EUR cents:
#  1  150.00 EUR                      = 15000
#  2  150.00 USD x 0.85 = 127.50       = 12750
#  3  15000 JPY x 0.0075 = 112.50      = 11250
#  4  1.005 KWD x 2.7 = 2.7135         =   271   (271.35 cents)
#  5  0.10 USD x 0.85 = 8.5 cents      =     8   (a half: to even)
#  6  0.30 USD x 0.85 = 25.5 cents     =    26   (a half: to even)
#  7  2 JPY x 0.0075 = 1.5 cents       =     2   (a half: to even)
#  8  6 JPY x 0.0075 = 4.5 cents       =     4   (a half: to even)
# 12  10.00 USD x 0.85 (last us of the first USD period) = 850
#     -> 2018-04-01, M1: 9 events, 15000+12750+11250+271+8+26+2+4+850 = 40161
#  9  -150.00 USD x 0.85               = -12750
# 10  100.00 EUR                       =  10000
#     -> 2018-04-01, M2: 2 events, -2750
# 13  10.00 USD x 0.9 (valid_from is inclusive) = 900
# 15  200 JPY x 0.0075 = 1.50          =   150
#     -> 2018-04-02, M1: 2 events, 1050
# 11  GBP: no rate to EUR (the USD,GBP row is for another target) -> dead letter
# 14  KWD after its period               -> dead letter
want='2018-04-01T00:00:00Z M1 EUR 9 40161
2018-04-01T00:00:00Z M2 EUR 2 -2750
2018-04-02T00:00:00Z M1 EUR 2 1050'
args=(--input "$tmp/in.csv" --group-by merchant --window-ms 86400000 --set min_count=1
      --set convert.to=EUR --set convert.rates_file="$tmp/rates.csv")
rows() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    assert d["group"]["currency"] == d["currency"], d
    print(d["window_start"], d["group"]["merchant"], d["currency"], d["count"], d["sum_minor"])' "$1" | sort; }

expect 0 "$B" run "${args[@]}" --out "$tmp/o" --json
s=$(cat "$tmp/out")
[ "$(rows "$tmp/o/results.ndjson")" = "$want" ] ||
    fail "converted sums: $(rows "$tmp/o/results.ndjson") (want $want)"
python3 - "$s" <<'PY' || fail "summary: $s"
import json, sys
d = json.loads(sys.argv[1])
assert d["read"] == 15 and d["accepted"] == 13 and d["dead_lettered"] == 2, d
PY
grep -q '"line":12,.*"reason":"no rate for GBP at 2018-04-01T11:00:00.000000Z"' "$tmp/o/dead_letter.ndjson" ||
    fail "GBP: $(cat "$tmp/o/dead_letter.ndjson")"
grep -q '"line":15,.*"reason":"no rate for KWD at 2018-04-02T01:00:00.000000Z"' "$tmp/o/dead_letter.ndjson" ||
    fail "KWD: $(cat "$tmp/o/dead_letter.ndjson")"
# The log keeps what the input said (original amounts and currencies) and the rate of every
# converted event: verify-results recomputes the rows without the rates file.
mv "$tmp/rates.csv" "$tmp/rates.kept"
expect 0 "$B" audit verify-results "$tmp/o" --keys "$tmp/o/keys"
mv "$tmp/rates.kept" "$tmp/rates.csv"
expect 0 "$B" audit verify "$tmp/o/audit" --keys "$tmp/o/keys" --json
[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dead_letters"])' "$tmp/out")" = 2 ] ||
    fail "the log does not hold the two dead letters: $(cat "$tmp/out")"
grep -q '"convert_to":"EUR","rates_sha256":"' "$tmp/o/results.sig.ndjson" ||
    fail "the signed parameters do not name the conversion"

# Without conversion the same input stays per currency (nothing is added across them).
expect 0 "$B" run --input "$tmp/in.csv" --group-by merchant --window-ms 86400000 \
    --set min_count=1 --out "$tmp/plain" --json
for c in EUR USD JPY KWD GBP; do
    grep -q "\"currency\":\"$c\"" "$tmp/plain/results.ndjson" || fail "no $c row without conversion"
done

# Resuming with another rates file would mix two conversions: refused.
sed 's/USD,EUR,0.85/USD,EUR,0.86/' "$tmp/rates.csv" >"$tmp/rates2.csv"
expect 2 "$B" run "${args[@]}" --out "$tmp/o" --set convert.rates_file="$tmp/rates2.csv"
grep -q "configuration changed" "$tmp/err" || fail "changed rates not refused: $(cat "$tmp/err")"

# Errors name the key, or the file and its line.
expect 2 "$B" run "${args[@]}" --set convert.to=EURO
grep -q "convert.to: 'EURO' is not an ISO 4217 currency code" "$tmp/err" || fail "$(cat "$tmp/err")"
printf 'convert:\n  to: EUR\n  rates_file: %s\n\n  bogus: 1\n' "$tmp/rates.csv" >"$tmp/c.yaml"
expect 2 "$B" run --config "$tmp/c.yaml" --input "$tmp/in.csv"
grep -q "c.yaml:5: unknown key 'convert.bogus'" "$tmp/err" || fail "unknown key: $(cat "$tmp/err")"
printf 'from_currency,to_currency,rate,valid_from,valid_to\nUSD,EUR,0.8,2018-04-01T00:00:00Z,\nUSD,EUR,0.9,2018-04-03T00:00:00Z,\n' >"$tmp/overlap.csv"
expect 2 "$B" run "${args[@]}" --set convert.rates_file="$tmp/overlap.csv"
grep -q "overlap.csv line 3: the period of this USD rate overlaps line 2's" "$tmp/err" ||
    fail "overlap: $(cat "$tmp/err")"
expect 2 "$B" run --input "$tmp/in.csv" --set convert.to=EUR
grep -q "convert.rates_file: required" "$tmp/err" || fail "$(cat "$tmp/err")"
echo "convert: EUR, USD, JPY and KWD into EUR as computed by hand; 2 events without a rate dead-lettered"

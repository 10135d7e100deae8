#!/usr/bin/env bash
# `confide forecast` and `confide bench autoscale` end to end on small traces: trace making
# (shape and arrivals), eval JSON shape and walk-forward predictions file, train -> model file
# -> predict, a tampered model refused, bad traces refused naming the line, and the autoscale
# bench's JSON (the predictive policy ahead of reactive on a periodic burst).
set -euo pipefail
B=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$SRC/tests/integration/lib.bash"

# A periodic trace from the generator's burst schedule: 10 rows of 0.1 s per second, the
# last one 10x: season 100 rows at 100 ms.
expect 0 "$B" forecast trace --shape burst --rate 20000 --duration-s 60 --interval-s 0.1 \
    --out "$tmp/burst.csv"
[ "$(wc -l <"$tmp/burst.csv")" = 601 ] || fail "burst trace rows: $(wc -l <"$tmp/burst.csv")"

# eval: every model, JSON with exactly the documented keys, a predictions file
expect 0 "$B" forecast eval --trace "$tmp/burst.csv" --test-points 50 --epochs 3 --json \
    --predictions "$tmp/pred.csv"
python3 - "$tmp/out" "$tmp/pred.csv" <<'PY'
import csv, json, sys
rows = json.load(open(sys.argv[1]))
assert [r["model"] for r in rows] == ["last", "seasonal", "ma", "hw", "lstm"], rows
for r in rows:
    assert set(r) == {"model", "smape", "mae", "rmse", "train_s"}, r
    assert 0 <= r["smape"] <= 200 and r["rmse"] >= r["mae"] >= 0, r
by = {r["model"]: r for r in rows}
# the schedule is periodic with Poisson noise: one season back beats the last value
assert by["seasonal"]["smape"] < by["last"]["smape"], by
p = list(csv.DictReader(open(sys.argv[2])))
assert len(p) == 5 * 50 and set(p[0]) == {"model", "ts", "forecast", "actual"}, p[0]
print("eval ok:", {m: round(r["smape"], 2) for m, r in by.items()})
PY

# train -> model -> predict; a flipped byte is refused
expect 0 "$B" forecast train --trace "$tmp/burst.csv" --model hw --out "$tmp/hw.model"
expect 0 "$B" forecast predict --load "$tmp/hw.model" --trace "$tmp/burst.csv" --steps 3
[ "$(wc -l <"$tmp/out")" = 4 ] || fail "predict printed $(cat "$tmp/out")"
python3 - "$tmp/hw.model" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[20] ^= 1
open(sys.argv[1], "wb").write(bytes(b))
PY
expect 2 "$B" forecast predict --load "$tmp/hw.model" --trace "$tmp/burst.csv"
grep -q "checksum mismatch" "$tmp/err" || fail "tampered model: $(cat "$tmp/err")"

# bad traces: the error names the file and line
printf 'ts,count\n2026-01-01 00:00:00,5\n2026-01-01 00:00:01,x\n' >"$tmp/bad.csv"
expect 2 "$B" forecast eval --trace "$tmp/bad.csv"
grep -q "bad.csv:3: bad count" "$tmp/err" || fail "bad count: $(cat "$tmp/err")"
printf 'ts,count\n100,5\n102,5\n105,1\n' >"$tmp/irr.csv"
expect 2 "$B" forecast eval --trace "$tmp/irr.csv"
grep -q "irr.csv:4: .*not a multiple" "$tmp/err" || fail "irregular: $(cat "$tmp/err")"
expect 2 "$B" forecast eval --trace "$tmp/burst.csv" --model arima
expect 2 "$B" forecast frobnicate

# arrivals -> trace
printf 'Time,Amount\n0,1\n0,2\n3,1\n7,9\n' >"$tmp/arr.csv"
expect 0 "$B" forecast trace --arrivals "$tmp/arr.csv" --interval-s 2 --out "$tmp/arr_rate.csv"
[ "$(tail -n +2 "$tmp/arr_rate.csv" | cut -d, -f2 | tr '\n' ' ')" = "2 1 0 1 " ] ||
    fail "arrivals: $(cat "$tmp/arr_rate.csv")"

# bench autoscale: JSON keys, the four policies, predictive ahead of reactive on the burst
expect 0 "$B" bench autoscale --trace "$tmp/burst.csv" --compress 0.01 --train-points 300 \
    --json --plot-dir none
python3 - "$tmp/out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
assert [r["policy"] for r in rows] == ["static", "reactive", "ds2", "predictive"], rows
for r in rows:
    assert set(r) == {"policy", "slo_violation_s", "p99_ms", "worker_s", "rescales"}, r
by = {r["policy"]: r for r in rows}
assert by["static"]["rescales"] <= 1, by
assert by["predictive"]["slo_violation_s"] < by["reactive"]["slo_violation_s"], by
print("autoscale ok:", by)
PY
echo "forecast cli ok"

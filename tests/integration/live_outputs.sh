#!/usr/bin/env bash
# Live outputs (issue 10): results, alerts and late records are readable while a run goes
# on (they used to sit in hidden .tmp files until the run ended, so on a 24/7 stream they
# never appeared), and at every checkpoint they are durable up to the recorded length.
set -euo pipefail
B=$1
SRC=$2
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
pid=
fail() { echo "FAIL: $*" >&2; exit 1; }
"$B" gen --seed 41 --days 1 --customers 4000 --terminals 8000 --out "$tmp/day.csv" --quiet
"$B" run --input "$tmp/day.csv" --out "$tmp/o" --rules "$SRC/examples/rules.yaml" \
    --window-ms 60000 --set min_count=1 --set audit.checkpoint_events=300 --rate 3000 \
    --no-status --json >"$tmp/summary" 2>"$tmp/err" &
pid=$!
seen=0
for _ in $(seq 1 100); do
    sleep 0.1
    if [ -s "$tmp/o/results.ndjson" ] && [ -s "$tmp/o/alerts.ndjson" ]; then
        seen=1
        break
    fi
done
kill -0 "$pid" 2>/dev/null || fail "the run ended before the check (make it longer)"
[ "$seen" = 1 ] || fail "no results or alerts visible while the run goes on"
[ ! -e "$tmp/o/.results.ndjson.tmp" ] || fail "results still written to a hidden file"
# every line visible so far is whole JSON up to the last newline
python3 - "$tmp/o/results.ndjson" <<'PY'
import json, sys
data = open(sys.argv[1]).read()
for line in data[:data.rfind("\n") + 1].splitlines():
    json.loads(line)
PY
wait "$pid"
pid=
grep -q '"accepted"' "$tmp/summary" || fail "run failed: $(cat "$tmp/err")"
echo "live_outputs: rows were visible during the run"

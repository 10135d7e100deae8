#!/usr/bin/env bash
# End to end, as a user runs it: confide gen -> confide run (file and stdin), the JSON
# summary reconciles, malformed records land in dead_letter.ndjson with their line numbers,
# and bad command lines or configs fail with a clear message.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$CONFIDE" gen --seed 3 --days 1 --customers 2000 --terminals 4000 --out "$tmp/day.csv" --quiet
events=$(($(wc -l <"$tmp/day.csv") - 1))
[ "$events" -gt 1000 ] || fail "gen produced only $events events"

# 1. Clean input: everything accepted.
out=$("$CONFIDE" run --input "$tmp/day.csv" --format csv --out "$tmp/o1" --json)
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "--json must print exactly one line: $out"
[ "$(echo "$out" | jget '["read"]')" -eq "$events" ] || fail "read != $events: $out"
[ "$(echo "$out" | jget '["accepted"]')" -eq "$events" ] || fail "accepted != $events: $out"
[ "$(echo "$out" | jget '["dead_lettered"]')" -eq 0 ] || fail "dead letters on clean input"
echo "$out" | jget '["latency_us"]["p99"]' >/dev/null || fail "no latency_us.p99"

# 2. Corrupt three records: they are dead-lettered with position and reason, nothing is lost.
awk 'NR==5{$0="garbage,,,"} NR==10{sub(/,EUR,/,",ZZZ,")} NR==20{$0=$0",extra\"quote"} {print}' \
    "$tmp/day.csv" >"$tmp/bad.csv"
out=$("$CONFIDE" run --input - --format csv --out "$tmp/o2" --json <"$tmp/bad.csv")
read_=$(echo "$out" | jget '["read"]')
acc=$(echo "$out" | jget '["accepted"]')
dl=$(echo "$out" | jget '["dead_lettered"]')
[ "$read_" -eq "$events" ] || fail "read $read_ != $events"
[ $((acc + dl)) -eq "$read_" ] || fail "counts do not reconcile: $out"
[ "$dl" -ge 2 ] || fail "expected at least 2 dead letters, got $dl"
[ "$(wc -l <"$tmp/o2/dead_letter.ndjson")" -eq "$dl" ] || fail "dead_letter.ndjson lines != $dl"
grep -q '"line":5' "$tmp/o2/dead_letter.ndjson" || fail "dead letter for line 5 missing"
grep -q '"line":10,.*"reason":"unknown currency' "$tmp/o2/dead_letter.ndjson" ||
    fail "dead letter for line 10 does not say unknown currency"
[ "$(stat -c %a "$tmp/o2/dead_letter.ndjson")" = 600 ] || fail "dead_letter.ndjson is not 0600"

# 3. Errors name what is wrong.
if "$CONFIDE" run --input "$tmp/day.csv" --format xml 2>"$tmp/err"; then fail "bad format accepted"; fi
grep -q "input.format" "$tmp/err" || fail "format error does not name input.format"
printf 'input:\n  format: csv\n  speed: 3\n' >"$tmp/bad.yaml"
if "$CONFIDE" run --config "$tmp/bad.yaml" --input "$tmp/day.csv" 2>"$tmp/err"; then
    fail "unknown config key accepted"
fi
grep -q "bad.yaml:3: unknown key 'input.speed'" "$tmp/err" || fail "config error: $(cat "$tmp/err")"
if "$CONFIDE" run --input "$tmp/missing.csv" 2>"$tmp/err"; then fail "missing input accepted"; fi
grep -q "missing.csv" "$tmp/err" || fail "missing input not named"
"$CONFIDE" run --help | grep -q "usage: confide run" || fail "run --help"
"$CONFIDE" --help | grep -q "run" || fail "--help lists no run"
# docs/CONFIG.md is generated from the key table: it must match the code.
"$CONFIDE" run --config-doc | diff - "$SRC/docs/CONFIG.md" >/dev/null ||
    fail "docs/CONFIG.md is stale: regenerate with confide run --config-doc > docs/CONFIG.md"
echo "ok: run_e2e ($events events)"

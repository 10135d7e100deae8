#!/usr/bin/env bash
# examples/prometheus/alerts.yml: `promtool check rules` and `promtool test rules` (with
# alerts_test.yml) pass, and the tests can fail: the same tests against a copy of the rules
# whose fast-burn threshold is broken must fail.
# promtool missing: skipped (exit 77), or a failure under CI=true.
set -euo pipefail
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$SRC/tests/integration/lib.bash"
if ! command -v promtool >/dev/null; then
    [ "${CI:-}" = true ] && fail "promtool is not installed (Debian package prometheus)"
    echo "skip: promtool not installed"
    exit 77
fi
dir="$SRC/examples/prometheus"
promtool check rules "$dir/alerts.yml" || fail "promtool check rules"
promtool test rules "$dir/alerts_test.yml" || fail "promtool test rules"

# Mutations the tests must catch.
cp "$dir/alerts_test.yml" "$tmp/"
sed 's/> (14.4 \* 0.01)/> (40 * 0.01)/' "$dir/alerts.yml" >"$tmp/alerts.yml"
cmp -s "$dir/alerts.yml" "$tmp/alerts.yml" && fail "mutation did not apply"
if promtool test rules "$tmp/alerts_test.yml" >"$tmp/out" 2>&1; then
    fail "promtool test rules passes with a broken fast-burn threshold"
fi
sed 's/confide_integrity_alerts_total > 0/confide_integrity_alerts_total > 1/' "$dir/alerts.yml" \
    >"$tmp/alerts.yml"
if promtool test rules "$tmp/alerts_test.yml" >"$tmp/out" 2>&1; then
    fail "promtool test rules passes with a broken integrity alert"
fi
echo "ok: prometheus_rules (check, test, and two mutations caught)"

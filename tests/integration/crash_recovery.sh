#!/usr/bin/env bash
# Crash recovery for real: kill -9 a running `confide run` at random points, restart it with
# the same command, and compare with an uninterrupted run. Every trial must give identical
# results, alerts and late outputs (exactly once: nothing lost, nothing twice) and an audit
# log that verifies with completeness 1.0 and holds every event once.
# Half the trials use tumbling windows, half sliding windows with lateness.
# TRIALS (default 20) and SEED can be set; scripts/soak-crash.sh runs many more.
set -euo pipefail
CONFIDE=$1
SRC=$2
TRIALS=${TRIALS:-20}
SEED=${SEED:-$$}
tmp=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAIL (seed $SEED, trial ${trial:-0}): $*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$CONFIDE" gen --seed 5 --days 1 --customers 3000 --terminals 6000 --out "$tmp/day.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties 2 >/dev/null
total=$(($(wc -l <"$tmp/day.csv") - 1))

common=(--input "$tmp/day.csv" --keys "$tmp/keys" --rules "$SRC/examples/rules.yaml"
        --group-by country --set audit.checkpoint_events=700 --set pipeline.batch_max=128)
# Odd trials use tumbling windows, even ones sliding windows with lateness (their state is
# restored from the checkpoint differently).
tumbling=(--window-ms 300000)
sliding=(--window-ms 1800000 --set window.slide_ms=300000 --set window.lateness_ms=60000)

"$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$tmp/ref1" --json >/dev/null 2>&1
"$CONFIDE" run "${common[@]}" "${sliding[@]}" --out "$tmp/ref0" --json >/dev/null 2>&1
sorted() { sort "$1"; }

RANDOM=$SEED
for trial in $(seq 1 "$TRIALS"); do
    out="$tmp/t$trial"
    ref="$tmp/ref$((trial % 2))"
    if [ $((trial % 2)) -eq 1 ]; then
        args=("${common[@]}" "${tumbling[@]}")
    else
        args=("${common[@]}" "${sliding[@]}")
    fi
    # Paced so the run lasts ~0.3 s; kill it once or twice at random moments.
    kills=$((1 + RANDOM % 2))
    for k in $(seq 1 $kills); do
        "$CONFIDE" run "${args[@]}" --out "$out" --rate 20000 >/dev/null 2>&1 &
        pid=$!
        sleep "0.$(printf '%03d' $((RANDOM % 300)))"
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    s=$("$CONFIDE" run "${args[@]}" --out "$out" --json 2>"$tmp/err") || fail "restart failed: $(cat "$tmp/err")"
    for f in results alerts late; do
        cmp -s <(sorted "$ref/$f.ndjson") <(sorted "$out/$f.ndjson") ||
            fail "$f.ndjson differs from the uninterrupted run (resumed $(echo "$s" | jget '["resumed"]'))"
    done
    v=$("$CONFIDE" audit verify "$out/audit" --keys "$tmp/keys" --json) || fail "audit verify: $v"
    [ "$(echo "$v" | jget '["events"]')" -eq "$total" ] || fail "log holds != $total events: $v"
    [ "$(echo "$v" | jget '["duplicates"]')" -eq 0 ] || fail "duplicates: $v"
    [ "$(echo "$v" | jget '["completeness"]')" = "1.0" ] || fail "completeness: $v"
    echo "trial $trial: $kills kill(s), resumed at $(echo "$s" | jget '["resumed"]') of $total: identical"
done
echo "ok: crash_recovery ($TRIALS trials, seed $SEED)"

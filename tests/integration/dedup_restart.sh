#!/usr/bin/env bash
# Duplicate event ids across a crash: kill -9 a paced `confide run` mid-input, run the same
# command again (recovery), and a repeat of an event accepted before the crash must still be
# rejected. The restarted run rebuilds the duplicate state from the input prefix it skips (the
# events the audit log holds, checked against it), so every output equals an uninterrupted
# run's: results, alerts, late and dead_letter.ndjson, with the repeats there once each.
# Without the rebuild the repeats after the crash point are accepted and counted twice.
# TRIALS (default 3) and SEED can be set.
set -euo pipefail
B=$1
SRC=$2
TRIALS=${TRIALS:-3}
SEED=${SEED:-$$}
tmp=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
source "$SRC/tests/integration/lib.bash" # kill_at_tree_size (fail is redefined below)
fail() { echo "FAIL (seed $SEED, trial ${trial:-0}): $*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$B" gen --seed 21 --days 1 --customers 3000 --terminals 6000 --out "$tmp/clean.csv" --quiet
"$B" keygen --dir "$tmp/keys" --parties 2 >/dev/null
# Repeats: events of the first fifth sent again in the last fifth (accepted long before the
# crash point, repeated long after it); a few repeats right after their original (in the
# prefix a restart skips: the restart's check of that prefix must skip them as the run did);
# and repeats within the last fifth.
python3 - "$tmp/clean.csv" "$tmp/dup.csv" "$tmp/meta" <<'PY'
import sys, random
rows = open(sys.argv[1]).read().splitlines(True)
head, rows = rows[0], rows[1:]
n = len(rows)
random.seed(3)
late = {}
for i in range(0, n // 5, 9):
    late.setdefault(random.randint(4 * n // 5, n - 1), []).append(rows[i])
for i in range(4 * n // 5, n - 20, 23):
    late.setdefault(i + random.randint(1, 15), []).append(rows[i])
out, reps = [head], 0
for i, r in enumerate(rows):
    out.append(r)
    if i < n // 5 and i % 50 == 3:
        out.append(r)
        reps += 1
    for d in late.get(i, []):
        out.append(d)
        reps += 1
open(sys.argv[2], "w").write("".join(out))
open(sys.argv[3], "w").write("%d %d %d\n" % (n, reps, n // 5))
PY
read -r total reps fifth <"$tmp/meta"
args=(--input "$tmp/dup.csv" --keys "$tmp/keys" --rules "$SRC/examples/rules.yaml"
      --group-by country --window-ms 600000 --set min_count=1
      --set audit.checkpoint_events=400 --set pipeline.batch_max=128)

s=$("$B" run "${args[@]}" --out "$tmp/ref" --json 2>"$tmp/err") || fail "reference run: $(cat "$tmp/err")"
[ "$(echo "$s" | jget '["duplicates"]')" = "$reps" ] || fail "reference: $s"
[ "$(echo "$s" | jget '["accepted"]')" = "$total" ] || fail "reference: $s"

RANDOM=$SEED
for trial in $(seq 1 "$TRIALS"); do
    out="$tmp/t$trial"
    # Kill -9 once the log holds more than the first fifth (the originals) at a random point
    # before the last fifth (their repeats), judged by the tree size of the last signed head;
    # again if the kill landed too late.
    for attempt in $(seq 1 12); do
        rm -rf "$out"
        "$B" run "${args[@]}" --out "$out" --rate 4000 >/dev/null 2>&1 &
        pid=$!
        at=$((fifth + 100 + RANDOM % (2 * total / 5)))
        kill_at_tree_size "$out/tree_heads.ndjson" "$pid" "$at" || true # ended first: again
        wait "$pid" 2>/dev/null || true
        logged=$("$B" audit verify "$out/audit" --keys "$tmp/keys" --json 2>/dev/null | jget '["events"]' 2>/dev/null || echo 0)
        if [ "$logged" -gt "$fifth" ] && [ "$logged" -lt $((4 * total / 5 - 200)) ]; then
            break
        fi
        logged=0
    done
    [ "$logged" -gt 0 ] || fail "no kill landed mid-input in 12 attempts"
    s=$("$B" run "${args[@]}" --out "$out" --json 2>"$tmp/err") || fail "restart failed: $(cat "$tmp/err")"
    resumed=$(echo "$s" | jget '["resumed"]')
    [ "$resumed" -gt "$fifth" ] || fail "resumed only $resumed (log held $logged)"
    [ "$(echo "$s" | jget '["duplicates"]')" = "$reps" ] || fail "duplicates after restart: $s"
    [ "$(echo "$s" | jget '["accepted"]')" = "$total" ] || fail "accepted after restart: $s"
    [ "$(echo "$s" | jget '["read"]')" = $(($(echo "$s" | jget '["accepted"]') + $(echo "$s" | jget '["dead_lettered"]'))) ] ||
        fail "counts do not reconcile: $s"
    for f in results alerts late; do
        cmp -s <(sort "$tmp/ref/$f.ndjson") <(sort "$out/$f.ndjson") ||
            fail "$f.ndjson differs from the uninterrupted run (resumed $resumed)"
    done
    cmp -s "$tmp/ref/dead_letter.ndjson" "$out/dead_letter.ndjson" ||
        fail "dead_letter.ndjson differs from the uninterrupted run (resumed $resumed)"
    v=$("$B" audit verify "$out/audit" --keys "$tmp/keys" --json) || fail "audit verify: $v"
    [ "$(echo "$v" | jget '["events"]')" -eq "$total" ] || fail "log holds != $total events: $v"
    [ "$(echo "$v" | jget '["completeness"]')" = "1.0" ] || fail "completeness: $v"
    echo "trial $trial: killed with $logged events logged, resumed at $resumed of $total: identical, $reps repeats rejected"
done
echo "ok: dedup_restart ($TRIALS trials, seed $SEED)"

#!/usr/bin/env bash
# Duplicate event ids (upstream retries): an event whose event_id was already accepted within
# input.dedup_horizon_ms goes to dead_letter.ndjson with reason "duplicate event_id" and its
# position, and is never counted twice. Before this, a repeated event_id was accepted and
# aggregated twice (the first check below fails on that code: results differ).
#  - input with repeats (exact retries and a same-id record with another amount) -> results,
#    alerts and the audit log equal those of the input without them; dead_letter.ndjson holds
#    exactly the repeats with their line; read = accepted + dead_lettered
#  - the horizon: a repeat older than it is accepted, one within it is not
#  - the memory cap: full state is said once on stderr, the run goes on (oldest forgotten)
#  - input.dedup_horizon_ms=0 turns it off (the repeats are counted again)
set -euo pipefail
B=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.bash"
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval("d"+sys.argv[2]))' "$tmp/out" "$1"; }

"$B" gen --seed 11 --days 1 --customers 2000 --terminals 4000 --out "$tmp/clean.csv" --quiet
"$B" keygen --dir "$tmp/keys" --parties 2 >/dev/null
# Repeats: every 37th record is sent again 1..300 records later (an exact retry); every
# 101st once more with another amount (same event_id, other content: still a duplicate).
python3 - "$tmp/clean.csv" "$tmp/dup.csv" "$tmp/dup_lines" <<'PY'
import sys, random
rows = open(sys.argv[1]).read().splitlines(True)
head, rows = rows[0], rows[1:]
random.seed(7)
pending = {}
for i, r in enumerate(rows):
    if i % 37 == 5:
        pending.setdefault(min(len(rows) - 1, i + random.randint(1, 300)), []).append(r)
    if i % 101 == 9:
        f = r.split(",")
        f[4] = "%.2f" % (float(f[4]) + 3)
        pending.setdefault(min(len(rows) - 1, i + random.randint(0, 50)), []).append(",".join(f))
out, dup_lines = [head], []
for i, r in enumerate(rows):
    out.append(r)
    for d in pending.get(i, []):
        out.append(d)
        dup_lines.append(len(out))   # 1-based line number of the repeat
open(sys.argv[2], "w").write("".join(out))
open(sys.argv[3], "w").write("\n".join(map(str, dup_lines)) + "\n")
PY
reps=$(wc -l <"$tmp/dup_lines")
total=$(($(wc -l <"$tmp/clean.csv") - 1))
[ "$reps" -gt 50 ] || fail "only $reps repeats"
common=(--keys "$tmp/keys" --rules "$SRC/examples/rules.yaml" --group-by country,channel
        --window-ms 600000 --set min_count=1)

expect 0 "$B" run "${common[@]}" --input "$tmp/clean.csv" --out "$tmp/ref" --json
[ "$(jget '["accepted"]')" = "$total" ] || fail "clean run: $(cat "$tmp/out")"
[ "$(jget '["duplicates"]')" = 0 ] || fail "clean run found duplicates: $(cat "$tmp/out")"
expect 0 "$B" run "${common[@]}" --input "$tmp/dup.csv" --out "$tmp/dup" --json
cp "$tmp/out" "$tmp/dup.json"
[ "$(jget '["read"]')" = $((total + reps)) ] || fail "read: $(cat "$tmp/out")"
[ "$(jget '["accepted"]')" = "$total" ] || fail "accepted: $(cat "$tmp/out")"
[ "$(jget '["dead_lettered"]')" = "$reps" ] || fail "dead_lettered: $(cat "$tmp/out")"
[ "$(jget '["duplicates"]')" = "$reps" ] || fail "duplicates: $(cat "$tmp/out")"
[ "$(jget '["read"]')" = "$(($(jget '["accepted"]') + $(jget '["dead_lettered"]')))" ] ||
    fail "counts do not reconcile: $(cat "$tmp/out")"
# Log indexes aside: every rejected record takes a log index too (docs/audit.md 2.5), so
# first_index/last_index count the repeats before them.
noidx() { python3 -c 'import json,sys
for l in sys.stdin:
    d = json.loads(l)
    for k in ("first_index", "last_index", "index", "seq"):
        d.pop(k, None)
    print(json.dumps(d))' <"$1"; }
for f in results alerts late; do
    cmp -s <(noidx "$tmp/ref/$f.ndjson") <(noidx "$tmp/dup/$f.ndjson") ||
        fail "$f.ndjson differs from the run without repeats: $(diff "$tmp/ref/$f.ndjson" "$tmp/dup/$f.ndjson" | head -5)"
done
[ -s "$tmp/ref/results.ndjson" ] || fail "no results to compare"
# dead_letter.ndjson: exactly the repeats, by line, with the reason and no raw record
python3 - "$tmp/dup/dead_letter.ndjson" "$tmp/dup_lines" <<'PY' || fail "dead letters"
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [int(x) for x in open(sys.argv[2]).read().split()]
assert [g["line"] for g in got] == want, (len(got), len(want))
assert all(g["reason"] == "duplicate event_id" for g in got)
assert all("offset" in g and "raw" not in g for g in got)
PY
v=$("$B" audit verify "$tmp/dup/audit" --keys "$tmp/keys" --json) || fail "audit verify: $v"
echo "$v" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["events"]=='"$total"' and d["duplicates"]==0 and d["completeness"]==1.0 and d["dead_letters"]=='"$reps"', d' ||
    fail "audit log: $v"

# The horizon (event time): the clean day spans 24 h; with a 1 h horizon, a repeat of the
# first event at the end is accepted, a repeat of the last one is not.
python3 - "$tmp/clean.csv" "$tmp/late.csv" <<'PY'
import sys
L = open(sys.argv[1]).read().splitlines(True)
open(sys.argv[2], "w").write("".join(L + [L[1], L[-1]]))
PY
expect 0 "$B" run --protect none --input "$tmp/late.csv" --out "$tmp/hz" --set input.dedup_horizon_ms=3600000 --json
[ "$(jget '["accepted"]')" = $((total + 1)) ] && [ "$(jget '["duplicates"]')" = 1 ] ||
    fail "1 h horizon: $(cat "$tmp/out")"
grep -q "\"line\":$((total + 3)),.*duplicate event_id" "$tmp/hz/dead_letter.ndjson" ||
    fail "the repeat of the last event was not the one rejected: $(cat "$tmp/hz/dead_letter.ndjson")"
# the repeat beyond the horizon was accepted and audited: the audit log shows it
expect 1 "$B" audit verify "$tmp/hz/audit" --keys "$tmp/hz/keys"
grep -q "duplicate event_id" "$tmp/err" || fail "verify did not name the duplicate: $(cat "$tmp/err")"
expect 0 "$B" run --protect none --input "$tmp/late.csv" --out "$tmp/hz24" --json
[ "$(jget '["accepted"]')" = "$total" ] && [ "$(jget '["duplicates"]')" = 2 ] ||
    fail "24 h horizon: $(cat "$tmp/out")"

# Off: the repeats are counted again, as before
expect 0 "$B" run --protect none --input "$tmp/dup.csv" --out "$tmp/off" --set input.dedup_horizon_ms=0 --json
[ "$(jget '["accepted"]')" = $((total + reps)) ] && [ "$(jget '["duplicates"]')" = 0 ] ||
    fail "off: $(cat "$tmp/out")"

# The memory cap: 1 MiB holds 24576 ids; ~39000 events fill it. A repeat of the first event
# at the end is then accepted (forgotten), one of a recent event is still caught; the full
# state is said once on stderr.
"$B" gen --seed 12 --days 1 --customers 20000 --terminals 20000 --out "$tmp/big.csv" --quiet
python3 - "$tmp/big.csv" "$tmp/bigdup.csv" <<'PY'
import sys
L = open(sys.argv[1]).read().splitlines(True)
assert len(L) > 30000, len(L)
open(sys.argv[2], "w").write("".join(L + [L[1], L[-2]]))
PY
big=$(($(wc -l <"$tmp/big.csv") - 1))
expect 0 "$B" run --protect none --input "$tmp/bigdup.csv" --out "$tmp/cap" --set input.dedup_memory_mb=1 --json
[ "$(jget '["accepted"]')" = $((big + 1)) ] && [ "$(jget '["duplicates"]')" = 1 ] ||
    fail "cap: $(cat "$tmp/out")"
[ "$(grep -c "duplicate event_id state is full" "$tmp/err")" = 1 ] ||
    fail "the full state was not said exactly once: $(cat "$tmp/err")"
# the same command again resumes (the log holds everything): the replay rebuilds the full
# state, rejects the same repeat, and says so once (not again for the input check)
expect 0 "$B" run --protect none --input "$tmp/bigdup.csv" --out "$tmp/cap" --set input.dedup_memory_mb=1 --json
[ "$(jget '["resumed"]')" = $((big + 1)) ] && [ "$(jget '["duplicates"]')" = 1 ] ||
    fail "cap, resumed: $(cat "$tmp/out")"
[ "$(grep -c "duplicate event_id state is full" "$tmp/err")" = 1 ] ||
    fail "resumed: the full state was not said exactly once: $(cat "$tmp/err")"
expect 0 "$B" run --protect none --input "$tmp/bigdup.csv" --out "$tmp/nocap" --json
[ "$(jget '["accepted"]')" = "$big" ] && [ "$(jget '["duplicates"]')" = 2 ] ||
    fail "64 MiB: $(cat "$tmp/out")"
! grep -q "state is full" "$tmp/err" || fail "full at 64 MiB: $(cat "$tmp/err")"
echo "dedup: all checks passed ($reps repeats of $total events)"

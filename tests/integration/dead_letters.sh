#!/usr/bin/env bash
# Dead letters kept in the audit log (docs/audit.md 2.5): malformed lines, repeated event ids,
# amounts beyond int64 and an over-long record go to dead_letter.ndjson with their position
# and reason only (no account, merchant or amount in clear), and to the audit log as
# dead-letter records (raw bytes encrypted). `confide audit verify` counts them
# (read = accepted + dead-lettered, provable from the log), `confide audit dead-letters`
# lists them with the raw records for whoever holds data.key and without them for whoever
# does not, a kill -9 mid-run and a restart keep every dead letter exactly once, and a
# dead-letter record changed by a forger (CRCs recomputed) is an INTEGRITY ALERT.
# Fails on a build that keeps dead letters only in the plaintext file (the log then holds
# no dead letters) or that appends them again on a restart (counts no longer reconcile).
# TRIALS (default 3) and SEED can be set.
set -euo pipefail
B=$1
SRC=$2
TRIALS=${TRIALS:-3}
SEED=${SEED:-$$}
tmp=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
source "$SRC/tests/integration/lib.bash" # expect, kill_at_tree_size
fail() { echo "FAIL (seed $SEED, trial ${trial:-0}): $*" >&2; exit 1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

"$B" gen --seed 8 --days 1 --customers 2000 --terminals 4000 --out "$tmp/clean.csv" --quiet
"$B" keygen --dir "$tmp/keys" --parties 2 >/dev/null
# Rejects spread over the whole input: a malformed line carrying an id that must never be
# seen in clear (SECRET-ACCT-n), a repeat of the previous event (duplicate event_id), an
# amount beyond int64 (amount overflow), a bad timestamp, and one record over
# input.record_max (record too long).
python3 - "$tmp/clean.csv" "$tmp/in.csv" "$tmp/meta" <<'PY'
import sys
rows = open(sys.argv[1]).read().splitlines(True)
head, rows = rows[0], rows[1:]
out, rejects = [head], 0
for i, r in enumerate(rows):
    out.append(r)
    f = r.rstrip("\n").split(",")
    if i % 97 == 5:
        out.append("%d,2018-04-01T00:00:00Z,SECRET-ACCT-%d,M1\n" % (10**9 + i, i))
        rejects += 1
    if i % 131 == 9:
        out.append(r)
        rejects += 1
    if i % 173 == 20:
        g = list(f); g[0] = str(10**9 + 500000 + i); g[4] = "92233720368547758.08"
        out.append(",".join(g) + "\n")
        rejects += 1
    if i % 211 == 30:
        g = list(f); g[0] = str(10**9 + 900000 + i); g[1] = "2018-04-01 00:00:00"
        out.append(",".join(g) + "\n")
        rejects += 1
    if i == len(rows) // 2:
        out.append("%d,SECRET-ACCT-LONG,%s\n" % (10**9 + 999999, "x" * 5000))
        rejects += 1
open(sys.argv[2], "w").write("".join(out))
open(sys.argv[3], "w").write("%d %d\n" % (len(rows), rejects))
PY
read -r total rejects <"$tmp/meta"
args=(--input "$tmp/in.csv" --keys "$tmp/keys" --rules "$SRC/examples/rules.yaml"
      --group-by country --window-ms 600000 --set min_count=1
      --set audit.checkpoint_events=300 --set pipeline.batch_max=64)

# ---- an uninterrupted run ----
s=$("$B" run "${args[@]}" --out "$tmp/ref" --json 2>"$tmp/err") || fail "run: $(cat "$tmp/err")"
read_n=$(echo "$s" | jget '["read"]')
acc=$(echo "$s" | jget '["accepted"]')
dead=$(echo "$s" | jget '["dead_lettered"]')
[ "$acc" = "$total" ] && [ "$dead" = "$rejects" ] && [ "$read_n" = $((total + rejects)) ] ||
    fail "summary $s (want accepted $total, dead_lettered $rejects)"
# The plaintext file: position and reason only.
[ "$(wc -l <"$tmp/ref/dead_letter.ndjson")" = "$rejects" ] || fail "dead_letter.ndjson lines"
! grep -q '"raw"' "$tmp/ref/dead_letter.ndjson" || fail "dead_letter.ndjson carries raw records"
! grep -q 'SECRET-ACCT' "$tmp/ref/dead_letter.ndjson" || fail "an id in clear in dead_letter.ndjson"
for reason in "too few fields" "duplicate event_id" "amount overflow" "bad timestamp" \
    "record too long"; do
    grep -q "\"reason\":\"$reason\"" "$tmp/ref/dead_letter.ndjson" || fail "no '$reason' reject"
done
# Nothing of the raw records in clear in the log either.
! grep -aq 'SECRET-ACCT' "$tmp/ref/audit/"*.seg || fail "a raw record in clear in the audit log"

# The log proves the counts: events = accepted, dead letters = dead-lettered, leaves = read.
v=$("$B" audit verify "$tmp/ref/audit" --keys "$tmp/keys" --json 2>"$tmp/err") ||
    fail "verify: $v $(cat "$tmp/err")"
[ "$(echo "$v" | jget '["events"]')" = "$acc" ] || fail "verify events: $v"
[ "$(echo "$v" | jget '["dead_letters"]')" = "$dead" ] || fail "verify dead_letters: $v"
[ "$(echo "$v" | jget '["leaves"]')" = "$read_n" ] || fail "verify leaves: $v"
[ "$(echo "$v" | jget '["completeness"]')" = "1.0" ] || fail "verify completeness: $v"
# Without the data key too (positions and reasons are bound to the leaves).
v=$("$B" audit verify "$tmp/ref/audit" --pubkey "$tmp/keys/signing.pub" --json 2>/dev/null) ||
    fail "verify without data.key: $v"
[ "$(echo "$v" | jget '["dead_letters"]')" = "$dead" ] || fail "verify (no data key): $v"
expect 0 "$B" audit verify-results "$tmp/ref" --keys "$tmp/keys"
expect 0 "$B" audit show "$tmp/ref/audit" --json
[ "$(jget '["dead_letters"]' <"$tmp/out")" = "$dead" ] || fail "show: $(cat "$tmp/out")"

# The listing: with the key the raw records, in input order, at the positions of the file.
expect 0 "$B" audit dead-letters "$tmp/ref/audit" --keys "$tmp/keys"
cp "$tmp/out" "$tmp/ref.list"
python3 - "$tmp/ref.list" "$tmp/ref/dead_letter.ndjson" "$tmp/in.csv" <<'PY' || fail "listing"
import json, sys
listed = [json.loads(l) for l in open(sys.argv[1])]
plain = [json.loads(l) for l in open(sys.argv[2])]
data = open(sys.argv[3], "rb").read()
assert len(listed) == len(plain), (len(listed), len(plain))
for a, b in zip(listed, plain):
    for k in ("source", "line", "offset", "reason"):
        assert a[k] == b[k], (k, a, b)
    raw = a["raw"].encode()
    assert data[b["offset"]:b["offset"] + len(raw)] == raw, a
    assert a["raw_truncated"] == (b["reason"] == "record too long"), a
idx = [a["index"] for a in listed]
assert idx == sorted(idx) and len(set(idx)) == len(idx), "indexes"
assert any("SECRET-ACCT" in a["raw"] for a in listed), "raw records missing"
PY
# Without the key: positions and reasons, no raw bytes.
expect 0 "$B" audit dead-letters "$tmp/ref/audit"
[ "$(wc -l <"$tmp/out")" = "$dead" ] || fail "listing without the key"
! grep -q 'SECRET-ACCT' "$tmp/out" || fail "raw records without the data key"
grep -q '"raw":null' "$tmp/out" || fail "raw not null without the key"
expect 0 "$B" audit dead-letters --help

# ---- kill -9 mid-run, restart: every dead letter once, counts reconciled ----
RANDOM=$SEED
for trial in $(seq 1 "$TRIALS"); do
    out="$tmp/t$trial"
    for attempt in $(seq 1 12); do
        rm -rf "$out"
        # ~2.6 s of input: the run must outlast the start of the python poller below, which
        # takes over a second on a loaded 2-core box (at 3000/s the run could finish first)
        "$B" run "${args[@]}" --out "$out" --rate 1500 >/dev/null 2>&1 &
        pid=$!
        at=$((200 + RANDOM % (total - 400)))
        kill_at_tree_size "$out/tree_heads.ndjson" "$pid" "$at" || true
        wait "$pid" 2>/dev/null || true
        logged=$("$B" audit verify "$out/audit" --keys "$tmp/keys" --json 2>/dev/null |
            jget '["events"]' 2>/dev/null || echo 0)
        [ "$logged" -gt 0 ] && [ "$logged" -lt "$acc" ] && break
        logged=0
    done
    [ "$logged" -gt 0 ] || fail "no kill landed mid-input in 12 attempts"
    s=$("$B" run "${args[@]}" --out "$out" --json 2>"$tmp/err") || fail "restart: $(cat "$tmp/err")"
    [ "$(echo "$s" | jget '["read"]')" = "$read_n" ] || fail "restart read: $s"
    [ "$(echo "$s" | jget '["accepted"]')" = "$acc" ] || fail "restart accepted: $s"
    [ "$(echo "$s" | jget '["dead_lettered"]')" = "$dead" ] || fail "restart dead_lettered: $s"
    v=$("$B" audit verify "$out/audit" --keys "$tmp/keys" --json 2>/dev/null) || fail "verify: $v"
    [ "$(echo "$v" | jget '["events"]')" = "$acc" ] || fail "after restart, events: $v"
    [ "$(echo "$v" | jget '["dead_letters"]')" = "$dead" ] || fail "after restart, dead letters: $v"
    [ "$(echo "$v" | jget '["leaves"]')" = "$read_n" ] || fail "after restart, leaves: $v"
    cmp -s "$tmp/ref/dead_letter.ndjson" "$out/dead_letter.ndjson" || fail "dead_letter.ndjson differs"
    expect 0 "$B" audit dead-letters "$out/audit" --keys "$tmp/keys"
    # The same dead letters as the uninterrupted run (their log indexes may differ).
    python3 - "$tmp/ref.list" "$tmp/out" <<'PY' || fail "dead letters differ after the restart"
import json, sys
strip = lambda f: [{k: v for k, v in json.loads(l).items() if k != "index"} for l in open(f)]
a, b = strip(sys.argv[1]), strip(sys.argv[2])
assert a == b, (len(a), len(b))
PY
    cmp -s <(sort "$tmp/ref/results.ndjson" | cut -d, -f1-6) <(sort "$out/results.ndjson" | cut -d, -f1-6) ||
        fail "results differ after the restart"
    expect 0 "$B" audit verify-results "$out" --keys "$tmp/keys"
done

# ---- a forged dead-letter record: INTEGRITY ALERT ----
# Change one byte of a reason in the first dead-letter record (type 5) and recompute both
# CRCs, as someone who can write the log but holds no key would.
cp -r "$tmp/ref" "$tmp/forged"
seg=$(ls "$tmp/forged/audit/"*.seg | head -1)
python3 - "$seg" <<'PY' || fail "no dead-letter record to forge"
import struct, sys
def crc32c(crc, data):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF
d = bytearray(open(sys.argv[1], "rb").read())
off = 0
while off + 32 <= len(d):
    plen = struct.unpack_from("<I", d, off + 20)[0]
    if d[off + 5] == 5:
        p = off + 32
        ct_len = struct.unpack_from("<I", d, p + 48)[0]
        info = p + 48 + 4 + ct_len + 4
        d[info + 18] ^= 0x01  # the first letter of the first reason
        struct.pack_into("<I", d, off + 24, crc32c(0, d[off:off + 24]))
        struct.pack_into("<I", d, off + 28, crc32c(crc32c(0, d[off:off + 28]), d[p:p + plen]))
        open(sys.argv[1], "wb").write(d)
        sys.exit(0)
    off += 32 + plen
sys.exit(1)
PY
expect 4 "$B" audit verify "$tmp/forged/audit" --keys "$tmp/keys"
grep -q "INTEGRITY ALERT" "$tmp/out" "$tmp/err" || fail "no INTEGRITY ALERT: $(cat "$tmp/out" "$tmp/err")"
grep -q "dead.letter" "$tmp/out" "$tmp/err" || fail "the alert does not name the dead letter"
expect 4 "$B" audit verify "$tmp/forged/audit" --pubkey "$tmp/keys/signing.pub"
grep -q "INTEGRITY ALERT.*dead-letter leaf" "$tmp/out" "$tmp/err" ||
    fail "without the data key: $(cat "$tmp/out" "$tmp/err")"
echo "dead letters: $dead of $read_n records in the log, $TRIALS crash trials, forgery caught"

#!/usr/bin/env bash
# The audit log against the attackers it is for (issue 9): each check below reproduces an
# attack that verified before log ids, C2SP heads, trusted heads, witnesses and verdict
# commitments existed.
#  1. cut after its third signed head, a log still verifies on its own; against a head kept
#     elsewhere (tree_heads.ndjson) it is a truncation, named
#  2. a log rewritten after the cut (same key, same log id, other events) is a fork
#  3. a witness cosigns consistent heads and refuses the truncated and the forked log
#  4. a head of another log is refused
#  5. a changed verdict fails without the data key
#  6. without a pinned key the result says it is unauthenticated (--strict fails)
#  7. heads published to audit.witness_dir are cosigned with a proof file; a forged proof, a
#     proof of other sizes and another log's leaves are refused; verify --witness-pub requires
#     the newest head to be witnessed
set -euo pipefail
B=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.bash"

"$B" gen --seed 9 --days 4 --customers 2000 --terminals 4000 --out "$tmp/d.csv" --quiet
head -3001 "$tmp/d.csv" >"$tmp/a.csv"
"$B" run --input "$tmp/a.csv" --out "$tmp/o" --set batch.mode=fixed:500 \
    --set batch.linger_ms=2000 --json >/dev/null
L=$tmp/o/audit K=$tmp/o/keys
[ "$(wc -l <"$tmp/o/tree_heads.ndjson")" -ge 4 ] || fail "expected at least 4 heads"
size_at() { sed -n "${1}p" "$tmp/o/tree_heads.ndjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_size"])'; }
cut_size=$(size_at 3)
full_size=$(tail -1 "$tmp/o/tree_heads.ndjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_size"])')
cp "$tmp/o/tree_heads.ndjson" "$tmp/heads_kept_elsewhere.ndjson"
expect 0 "$B" audit verify "$L" --keys "$K" --trusted-head "$tmp/heads_kept_elsewhere.ndjson"

# Cut a copy of the log right after its third signed head (record type 2 in the segment).
cp -r "$L" "$tmp/cut"
python3 - "$tmp/cut/00000000000000000000.seg" 3 <<'PY'
import struct, sys
path, want = sys.argv[1], int(sys.argv[2])
b = open(path, "rb").read()
off = heads = 0
while off < len(b):
    magic, ver, typ, flags, index, count, plen = struct.unpack_from("<IBBHQII", b, off)
    off += 32 + plen
    heads += typ == 2
    if heads == want:
        break
open(path, "r+b").truncate(off)
PY
# 1. On its own the cut log verifies (that is the attack) ...
expect 0 "$B" audit verify "$tmp/cut" --keys "$K"
# ... against the kept head it is named a truncation.
expect 4 "$B" audit verify "$tmp/cut" --keys "$K" --trusted-head "$tmp/heads_kept_elsewhere.ndjson"
grep -q "truncated: the trusted head covers $full_size events, the log holds $cut_size" "$tmp/err" ||
    fail "truncation not named: $(cat "$tmp/err")"

# 3. A witness: cosigns the full log's newest head, then refuses the cut log.
W=$tmp/witness
expect 0 "$B" audit witness --keygen --state "$W"
[ "$(stat -c %a "$W/witness.key")" = 600 ] || fail "witness.key is not 0600"
expect 0 "$B" audit witness --state "$W" --log-pub "$K/signing.pub" --head "$tmp/heads_kept_elsewhere.ndjson"
LID=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["log_id"])' "$tmp/o/tree_heads.ndjson")
COSIGNED=$W/$LID.checkpoint
grep -q "^— confide-witness " "$COSIGNED" || fail "no cosignature line"
expect 0 "$B" audit verify "$L" --keys "$K" --trusted-head "$COSIGNED" --witness-pub "$W/witness.pub"
expect 4 "$B" audit witness --state "$W" --log-pub "$K/signing.pub" --log "$tmp/cut"
grep -q "truncation" "$tmp/err" || fail "witness: truncation not named"
# a cosignature by another witness does not count
expect 0 "$B" audit witness --keygen --state "$tmp/w2"
expect 4 "$B" audit verify "$L" --keys "$K" --trusted-head "$COSIGNED" --witness-pub "$tmp/w2/witness.pub"

# 2. The key holder rewrites history after the cut: other events appended under the same
#    key and log id, until the log is longer than the kept head. Each head verifies on its
#    own; the kept head, the witness and the consistency proof expose the fork.
sed -n '1p;3002,7001p' "$tmp/d.csv" >"$tmp/other.csv"
expect 0 "$B" audit append "$tmp/cut" --keys "$K" --input "$tmp/other.csv"
expect 0 "$B" audit verify "$tmp/cut" --keys "$K"
expect 4 "$B" audit verify "$tmp/cut" --keys "$K" --trusted-head "$tmp/heads_kept_elsewhere.ndjson"
grep -q "fork" "$tmp/err" || fail "fork not named: $(cat "$tmp/err")"
expect 4 "$B" audit witness --state "$W" --log-pub "$K/signing.pub" --log "$tmp/cut"
grep -q "fork" "$tmp/err" || fail "witness: fork not named"
# the witness's state did not move: the honest log still verifies against it
expect 0 "$B" audit verify "$L" --keys "$K" --trusted-head "$COSIGNED" --witness-pub "$W/witness.pub"

# 4. A head of another log (another run, other keys) is refused.
"$B" run --input "$tmp/a.csv" --out "$tmp/o2" --keys "$K" --json >/dev/null
expect 4 "$B" audit verify "$tmp/o2/audit" --keys "$K" --trusted-head "$tmp/heads_kept_elsewhere.ndjson"
grep -q "names the log" "$tmp/err" || fail "another log's head not refused: $(cat "$tmp/err")"

# 5. A verdict changed in place (CRCs fixed) fails without the data key.
python3 - "$tmp/o2/audit/00000000000000000000.seg" <<'PY'
import struct, sys
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
path = sys.argv[1]
b = bytearray(open(path, "rb").read())
off = 0
while off < len(b):
    magic, ver, typ, flags, index, count, plen = struct.unpack_from("<IBBHQII", b, off)
    p = off + 32
    if typ == 1:
        ct_len = struct.unpack_from("<I", b, p + 48)[0]
        v = p + 48 + 4 + ct_len + 4          # the verdict region: count x (u32 len, bytes)
        for i in range(count):
            l = struct.unpack_from("<I", b, v)[0]
            if l > 0:
                b[v + 4] ^= 1                    # one byte of the first non-empty verdict
                break
            v += 4
        else:
            off += 32 + plen
            continue
        c = crc32c(bytes(b[off:off + 28]))
        c = crc32c(bytes(b[p:p + plen]), c)
        struct.pack_into("<I", b, off + 28, c)
        open(path, "wb").write(b)
        print("changed a verdict of the batch at index", index)
        sys.exit(0)
    off += 32 + plen
sys.exit("no verdict to change")
PY
mkdir -p "$tmp/pub" && cp "$K/signing.pub" "$tmp/pub/"
expect 4 "$B" audit verify "$tmp/o2/audit" --pubkey "$tmp/pub/signing.pub"
grep -q "commitment and verdict" "$tmp/err" || fail "changed verdict not named: $(cat "$tmp/err")"

# 7. The gateway publishes its newest head to audit.witness_dir; a witness with its key kept
#    elsewhere (--key) cosigns it with a proof file instead of the log (--proof), and verify
#    requires that the witnessed head is the log's newest.
WD=$tmp/witness_inbox W3=$tmp/w3
mkdir -p "$WD" "$tmp/wkeys"
"$B" run --input "$tmp/a.csv" --out "$tmp/o3" --set audit.witness_dir="$WD" \
    --set batch.mode=fixed:1000 --json >/dev/null
LID3=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["log_id"])' "$tmp/o3/tree_heads.ndjson")
[ -f "$WD/$LID3.checkpoint" ] || fail "no head published to audit.witness_dir"
cmp -s <(tail -1 "$tmp/o3/tree_heads.ndjson" | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["checkpoint"])') \
    "$WD/$LID3.checkpoint" || fail "published head is not the newest signed note"
expect 0 "$B" audit witness --keygen --state "$W3" --key "$tmp/wkeys/w3.key"
[ -f "$tmp/wkeys/w3.pub" ] && [ "$(stat -c %a "$tmp/wkeys/w3.key")" = 600 ] || fail "--keygen --key"
expect 3 "$B" audit witness --keygen --state "$W3" --key "$tmp/wkeys/w3.key"
grep -q "not overwritten" "$tmp/err" || fail "witness keygen overwrote a key"
# first head of a log: accepted on its signature (trust on first use)
head -1 "$tmp/o3/tree_heads.ndjson" >"$tmp/first_head.ndjson"
expect 0 "$B" audit witness --state "$W3" --key "$tmp/wkeys/w3.key" --log-pub "$tmp/o3/keys/signing.pub" \
    --head "$tmp/first_head.ndjson"
first_size=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["tree_size"])' "$tmp/first_head.ndjson")
# the witnessed head is not the newest: verify says the newer heads are not witnessed (exit 1)
expect 1 "$B" audit verify "$tmp/o3/audit" --keys "$tmp/o3/keys" --trusted-head "$W3/$LID3.checkpoint" \
    --witness-pub "$tmp/wkeys/w3.pub"
grep -q "not witnessed" "$tmp/err" || fail "unwitnessed newer heads not named"
# a newer head without a proof: usage error; with a proof of the wrong sizes: refused
expect 2 "$B" audit witness --state "$W3" --key "$tmp/wkeys/w3.key" --log-pub "$tmp/o3/keys/signing.pub" \
    --head "$WD/$LID3.checkpoint"
size3=$(tail -1 "$tmp/o3/tree_heads.ndjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tree_size"])')
"$B" audit consistency "$tmp/o3/audit" --from 1 --to "$size3" --json >"$tmp/bad_proof.json"
expect 2 "$B" audit witness --state "$W3" --key "$tmp/wkeys/w3.key" --log-pub "$tmp/o3/keys/signing.pub" \
    --head "$WD/$LID3.checkpoint" --proof "$tmp/bad_proof.json"
# a proof with one hash changed: refused, state unchanged
"$B" audit consistency "$tmp/o3/audit" --from "$first_size" --to "$size3" --json >"$tmp/proof.json"
python3 - "$tmp/proof.json" "$tmp/forged_proof.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
h = p["path"][0]
p["path"][0] = h[:-1] + ("0" if h[-1] != "0" else "1")
json.dump(p, open(sys.argv[2], "w"))
PY
expect 4 "$B" audit witness --state "$W3" --key "$tmp/wkeys/w3.key" --log-pub "$tmp/o3/keys/signing.pub" \
    --head "$WD/$LID3.checkpoint" --proof "$tmp/forged_proof.json"
grep -q "no consistency proof" "$tmp/err" || fail "forged proof not refused"
expect 0 "$B" audit witness --state "$W3" --key "$tmp/wkeys/w3.key" --log-pub "$tmp/o3/keys/signing.pub" \
    --head "$WD/$LID3.checkpoint" --proof "$tmp/proof.json"
expect 0 "$B" audit verify "$tmp/o3/audit" --keys "$tmp/o3/keys" --trusted-head "$W3/$LID3.checkpoint" \
    --witness-pub "$tmp/wkeys/w3.pub" --json
grep -q '"witnessed":true' "$tmp/out" || fail "witnessed newest head not reported"
# a head of one log with another log's leaves: refused
expect 4 "$B" audit witness --state "$W3" --key "$tmp/wkeys/w3.key" --log-pub "$tmp/o3/keys/signing.pub" \
    --head "$WD/$LID3.checkpoint" --log "$L"
grep -q "names the log" "$tmp/err" || fail "witness: another log's leaves accepted"

# 6. No pinned key: unauthenticated, and --strict makes that a failure.
expect 0 "$B" audit verify "$L"
grep -q "UNAUTHENTICATED" "$tmp/err" || fail "no unauthenticated warning"
expect 1 "$B" audit verify "$L" --strict
expect 0 "$B" audit verify "$L" --pubkey "$K/signing.pub" --strict
echo "audit_attacks: all checks passed"

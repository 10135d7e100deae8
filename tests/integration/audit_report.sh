#!/usr/bin/env bash
# confide audit report against the logs an auditor may be handed (the browser test checks
# the numbers of a good report; this one checks the verdicts):
#  1. a good log: VERIFIED, exit 0, Markdown on stdout by default, the outputs found beside
#     the log and the run's tree_heads.ndjson used as the trusted head
#  2. a flipped byte in a segment: INTEGRITY ALERT (exit 4) naming the first bad record
#  3. a log cut after its third signed head: verifies on its own, but the report checks it
#     against the heads kept elsewhere and says INCONSISTENT (exit 4)
#  4. only signing.pub (no data.key): contents "not checked", no events-per-hour chart, still
#     verified (roots and signatures)
#  5. usage errors: DIR or --keys missing, an --out that is neither .html nor .md
set -euo pipefail
B=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.bash"

"$B" gen --seed 5 --days 1 --customers 500 --terminals 900 --out "$tmp/d.csv" --quiet
echo "900001,not-a-time,C1,T1,12.00,EUR,PAYMENT,BE,POS,0,0" >>"$tmp/d.csv"
"$B" run --input "$tmp/d.csv" --out "$tmp/o" --set batch.mode=fixed:200 \
    --set batch.linger_ms=2000 --json >"$tmp/summary.json" 2>/dev/null
L=$tmp/o/audit K=$tmp/o/keys
audited=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["audited"])' "$tmp/summary.json")
leaves=$((audited + 1)) # the events and the one dead letter (docs/audit.md 2.5)

# 1. good
expect 0 "$B" audit report "$L" --keys "$K"
grep -q '^\*\*Verdict: VERIFIED\*\*' "$tmp/out" || fail "no VERIFIED verdict"
grep -q "^| leaves (events and dead letters) | $leaves |" "$tmp/out" || fail "leaves not $leaves"
grep -q "^| events decrypted and re-hashed | $audited |" "$tmp/out" || fail "events not $audited"
grep -q "^| dead letters in the log | 1 |" "$tmp/out" || fail "the dead letter is not in the log"
grep -q "^| dead-lettered records | 1 |" "$tmp/out" || fail "dead letters not found beside the log"
grep -q "consistent: the log extends the head of size $leaves" "$tmp/out" ||
    fail "tree_heads.ndjson not used as the trusted head"
expect 0 "$B" audit report "$L" --keys "$K" --out "$tmp/r.html"
[ "$(stat -c %a "$tmp/r.html")" = 600 ] || fail "report.html is not 0600"
grep -q 'data-verdict="verified"' "$tmp/r.html" || fail "html verdict"
expect 0 "$B" audit report "$L" --keys "$K" --format md --out "$tmp/r.txt"
grep -q "^# Audit report" "$tmp/r.txt" || fail "--format md"

# 2. one flipped byte in the middle of the segment
cp -r "$tmp/o" "$tmp/flip"
python3 - "$tmp/flip/audit/00000000000000000000.seg" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x40
open(p, "wb").write(b)
PY
expect 4 "$B" audit report "$tmp/flip/audit" --keys "$tmp/flip/keys"
grep -q '^\*\*Verdict: INTEGRITY ALERT\*\*' "$tmp/out" || fail "flipped byte: no INTEGRITY ALERT"
grep -q "^| first bad record | segment 00000000000000000000.seg offset " "$tmp/out" ||
    fail "flipped byte: first bad record not named"

# 3. cut after the third signed head (record type 2), heads kept beside it
cp -r "$tmp/o" "$tmp/cut"
python3 - "$tmp/cut/audit/00000000000000000000.seg" 3 <<'PY'
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
expect 0 "$B" audit verify "$tmp/cut/audit" --keys "$K"
expect 4 "$B" audit report "$tmp/cut/audit" --keys "$tmp/cut/keys"
grep -q "INCONSISTENT: the log does not extend the head of size $leaves" "$tmp/out" ||
    fail "truncation not reported"
# ... and with a head given explicitly
expect 4 "$B" audit report "$tmp/cut/audit" --keys "$K" --outputs "$tmp/o" \
    --trusted-head "$tmp/o/tree_heads.ndjson"

# 4. an auditor with the public key only
mkdir -m 700 "$tmp/pub"
cp "$K/signing.pub" "$tmp/pub/"
expect 0 "$B" audit report "$L" --keys "$tmp/pub" --outputs "$tmp/o"
grep -q "^| events decrypted and re-hashed | not checked (no data.key in KEYDIR) |" "$tmp/out" ||
    fail "contents claimed checked without data.key"
grep -q "^not available: the events were not decrypted" "$tmp/out" || fail "chart without data"

# 5. usage
expect 2 "$B" audit report "$L"
expect 2 "$B" audit report --keys "$K"
expect 2 "$B" audit report "$L" --keys "$K" --out "$tmp/r.pdf"
expect 3 "$B" audit report "$tmp/nope" --keys "$K"
expect 0 "$B" audit report --help
grep -q "usage: confide audit report DIR --keys KEYDIR" "$tmp/out" || fail "--help"
echo "ok: audit_report"

#!/usr/bin/env bash
# confide audit end to end: keygen, archive the FDH sample into a log, verify it, prove and
# check inclusion and consistency proofs offline, recover a torn tail, and detect a flipped
# byte (exit 4 naming the record). Run by ctest as: bash audit_cli.sh <confide> <source-dir>
set -u
B="$1"
SRC="$2"
DATA="$SRC/../shared/data/fdh/fdh_sample_1day_2018-04-01.csv"

if [ ! -r "$DATA" ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "FAIL: $DATA is missing and CI=true"
        exit 1
    fi
    echo "SKIP: $DATA not found (../shared is absent in this checkout)"
    exit 77
fi
if ! "$B" keygen --help >/dev/null 2>&1; then
    echo "SKIP: this build has no 'confide keygen' command (keys module not linked)"
    exit 77
fi

T=$(mktemp -d /tmp/cf_audit_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
# expect CODE CMD...: runs CMD, checks its exit code
expect() {
    local want="$1"
    shift
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        fail "exit $got (want $want): $*"
        sed 's/^/  | /' "$T/out" "$T/err" | head -20
        return 1
    fi
    return 0
}
json_field() { # json_field FILE NAME -> value of a top-level number/bool field
    sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1" | head -1
}

K="$T/keys"
L="$T/log"
expect 0 "$B" keygen --dir "$K" --parties 2 || exit 1

# --help everywhere, usage errors exit 2
for sub in verify prove consistency verify-proof show append; do
    expect 0 "$B" audit "$sub" --help
    grep -q "usage: confide audit $sub" "$T/out" || fail "$sub --help has no usage line"
done
expect 0 "$B" audit --help
expect 2 "$B" audit
expect 2 "$B" audit frobnicate
expect 2 "$B" audit prove "$L"
expect 2 "$B" audit append "$L" --keys "$K"
expect 2 "$B" audit append "$L" --keys "$K" --input "$DATA" --batch 0
expect 2 "$B" audit append "$L" --keys "$K" --input "$DATA" --fsync sometimes
grep -q "fsync" "$T/err" || fail "bad --fsync error does not name the option"

# Archive the sample in batches of 1000 (10 batch records, 10 signed heads).
expect 0 "$B" audit append "$L" --keys "$K" --input "$DATA" --format fdh --batch 1000
grep -q "appended 9488 events \[0, 9488)" "$T/out" || fail "append summary: $(cat "$T/out")"
expect 0 "$B" audit verify "$L" --keys "$K" --json
cp "$T/out" "$T/verify.json"
[ "$(json_field "$T/verify.json" events)" = 9488 ] || fail "events != 9488: $(cat "$T/verify.json")"
[ "$(json_field "$T/verify.json" leaves)" = 9488 ] || fail "leaves != 9488"
[ "$(json_field "$T/verify.json" verdicts)" = 9488 ] || fail "verdicts != 9488"
[ "$(json_field "$T/verify.json" gaps)" = 0 ] || fail "gaps != 0"
[ "$(json_field "$T/verify.json" duplicates)" = 0 ] || fail "duplicates != 0"
[ "$(json_field "$T/verify.json" sth_valid)" = 10 ] || fail "sth_valid != 10"
[ "$(json_field "$T/verify.json" sth_invalid)" = 0 ] || fail "sth_invalid != 0"
[ "$(json_field "$T/verify.json" completeness)" = 1.0 ] || fail "completeness != 1.0"

# Without the data key: hashes and verdicts only, still verified, events null (not checked).
mkdir -p "$T/pub" && cp "$K/signing.pub" "$T/pub/"
expect 0 "$B" audit verify "$L" --keys "$T/pub" --json
[ "$(json_field "$T/out" events)" = null ] || fail "hashes-only verify decrypted events"
[ "$(json_field "$T/out" decrypted)" = false ] || fail "hashes-only verify says decrypted"
expect 0 "$B" audit verify "$L" --keys "$T/pub"
grep -q "contents not checked (no data.key)" "$T/out" || fail "no line saying contents are not checked"
grep -q " 0 events" "$T/out" && fail "hashes-only verify reports 0 events"
# The log id: in verify --json, show and show --json, the same, from the log-header record.
expect 0 "$B" audit verify "$L" --keys "$K" --json
LID=$(json_field "$T/out" log_id | tr -d '"')
[ "${#LID}" = 32 ] || fail "verify --json log_id: '$LID'"
[ "$(json_field "$T/out" header)" = true ] || fail "no log-header record"
expect 0 "$B" audit show "$L" --json
[ "$(json_field "$T/out" log_id | tr -d '"')" = "$LID" ] || fail "show --json log_id differs"
expect 0 "$B" audit show "$L"
grep -q "^log id $LID" "$T/out" || fail "show prints no log id"

expect 0 "$B" audit show "$L"
grep -q "00000000000000000000.seg" "$T/out" || fail "show lists no segment"
grep -q "last signed head: size 9488" "$T/out" || fail "show: last head"

# Inclusion proofs: verify offline, with the signed head, and a tampered one fails.
for i in 0 1 999 1000 4242 9487; do
    expect 0 "$B" audit prove "$L" --index "$i" --json || continue
    cp "$T/out" "$T/p$i.json"
    grep -q "\"leaf_index\":$i,\"tree_size\":9488" "$T/p$i.json" || fail "prove $i header"
    expect 0 "$B" audit verify-proof "$T/p$i.json"
    expect 0 "$B" audit verify-proof "$T/p$i.json" --keys "$K"
    grep -q "root signed" "$T/out" || fail "verify-proof $i: root not checked against the head"
done
expect 0 "$B" audit prove "$L" --index 17 --size 3000 --json
cp "$T/out" "$T/p17.json"
expect 0 "$B" audit verify-proof "$T/p17.json" --keys "$K" --log "$L"
# A proof at a size with no signed head verifies, but cannot be anchored.
expect 0 "$B" audit prove "$L" --index 17 --size 2999 --json
cp "$T/out" "$T/p17b.json"
expect 0 "$B" audit verify-proof "$T/p17b.json"
expect 1 "$B" audit verify-proof "$T/p17b.json" --keys "$K" --log "$L"
expect 2 "$B" audit prove "$L" --index 9488
# Flip one hex digit of the first path element.
sed 's/"path":\["\(.\)/"path":["X\1/; s/"path":\["X0/"path":["1/; s/"path":\["X[^"]/"path":["0/' \
    "$T/p4242.json" >"$T/bad.json"
cmp -s "$T/p4242.json" "$T/bad.json" && fail "test bug: proof not modified"
expect 4 "$B" audit verify-proof "$T/bad.json"
grep -q INVALID "$T/out" || fail "tampered proof not reported INVALID"
expect 2 "$B" audit verify-proof "$T/verify.json"

# Consistency proofs.
expect 0 "$B" audit consistency "$L" --from 1000 --to 9488 --json
cp "$T/out" "$T/c.json"
grep -q '"from":1000,"to":9488' "$T/c.json" || fail "consistency header"
expect 0 "$B" audit verify-proof "$T/c.json" --keys "$K"
grep -q "both roots signed" "$T/out" || fail "consistency roots not checked against heads"
expect 0 "$B" audit consistency "$L" --from 3 --to 8191 --json
cp "$T/out" "$T/c2.json"
expect 0 "$B" audit verify-proof "$T/c2.json"
# A different root_to (last hex digit changed) must fail.
sed 's/\("root_to":"[0-9a-f]*\)\([0-9a-f]\)"/\1\2X"/; s/0X"/1"/; s/[1-9a-f]X"/0"/' "$T/c2.json" >"$T/c2bad.json"
cmp -s "$T/c2.json" "$T/c2bad.json" && fail "test bug: consistency proof not modified"
expect 4 "$B" audit verify-proof "$T/c2bad.json"
expect 2 "$B" audit consistency "$L" --from 0 --to 5

# Append more (same file again: duplicates are a check failure, exit 1, not tampering).
cp -r "$L" "$T/log2"
expect 0 "$B" audit append "$T/log2" --keys "$K" --input "$DATA" --format fdh --batch 4096
grep -q "\[9488, 18976)" "$T/out" || fail "second append range: $(cat "$T/out")"
expect 0 "$B" audit consistency "$T/log2" --from 9488 --json
cp "$T/out" "$T/c3.json"
expect 0 "$B" audit verify-proof "$T/c3.json" --keys "$K"
expect 1 "$B" audit verify "$T/log2" --keys "$K" --json
[ "$(json_field "$T/out" duplicates)" = 9488 ] || fail "duplicates != 9488"
grep -q "duplicate event_id" "$T/err" || fail "duplicate not named"

# Key rotation: more events under new keys; old records name the old key ids.
K2="$T/keys2"
expect 0 "$B" keygen --dir "$K2" --parties 2 --epoch 2
cp -r "$L" "$T/log4"
head -1001 "$DATA" >"$T/part.csv"
expect 0 "$B" audit append "$T/log4" --keys "$K2" --input "$T/part.csv" --format fdh
expect 3 "$B" audit verify "$T/log4" --keys "$K2"
# the log header (the first record) names the old signing key: both ids are named
grep -Eq "signed under signing key [0-9a-f]{16}, not [0-9a-f]{16} \(wrong signing key\)" "$T/err" ||
    fail "rotation: old records not attributed to another key: $(cat "$T/err")"
grep -q "wrong key" "$T/err" || fail "a wrong key is not reported as such"
expect 1 "$B" audit verify "$T/log4" --keys "$K2" --old-keys "$K" --json
[ "$(json_field "$T/out" sth_invalid)" = 0 ] || fail "rotation: heads invalid with --old-keys"
[ "$(json_field "$T/out" events)" = 10488 ] || fail "rotation: events != 10488"
[ "$(json_field "$T/out" duplicates)" = 1000 ] || fail "rotation: duplicates != 1000"

# A torn tail (crash in the middle of writing the last batch) is cut on the next open: the
# log then holds the first 9000 events (9 batches), re-appending the file adds 9488 more whose
# first 9000 ids repeat (a check failure, exit 1), and nothing else is wrong.
SEG="$L/00000000000000000000.seg"
SIZE=$(stat -c %s "$SEG")
cp -r "$L" "$T/log3"
truncate -s $((SIZE - 500)) "$T/log3/00000000000000000000.seg"
expect 1 "$B" audit verify "$T/log3" --keys "$K"
grep -q "check failed: .*torn tail" "$T/err" || fail "torn tail before recovery: $(cat "$T/err")"
expect 0 "$B" audit append "$T/log3" --keys "$K" --input "$DATA" --format fdh
grep -q "torn tail" "$T/err" || fail "torn tail not reported: $(cat "$T/err")"
grep -q "\[9000, 18488)" "$T/out" || fail "after recovery: $(cat "$T/out")"
expect 1 "$B" audit verify "$T/log3" --keys "$K" --json
[ "$(json_field "$T/out" leaves)" = 18488 ] || fail "recovered log leaves"
[ "$(json_field "$T/out" duplicates)" = 9000 ] || fail "recovered log duplicates"
[ "$(json_field "$T/out" gaps)" = 0 ] || fail "recovered log gaps"
[ "$(json_field "$T/out" sth_invalid)" = 0 ] || fail "recovered log sth_invalid"

# Flip one byte in the middle of the segment: verify exits 4 and names the record.
OFF=$((SIZE / 2))
orig=$(od -An -tu1 -j "$OFF" -N1 "$SEG" | tr -d ' ')
printf "\\$(printf %o $((orig ^ 1)))" | dd of="$SEG" bs=1 seek="$OFF" conv=notrunc status=none
expect 4 "$B" audit verify "$L" --keys "$K" --json
grep -q "INTEGRITY ALERT" "$T/err" || fail "no integrity alert"
grep -q "segment 00000000000000000000.seg offset [0-9]* index [0-9]*" "$T/err" ||
    fail "bad record not named: $(cat "$T/err")"
[ "$(json_field "$T/out" ok)" = false ] || fail "json ok not false"
grep -q '"first_bad":{"segment":"00000000000000000000.seg"' "$T/out" || fail "json first_bad"
expect 4 "$B" audit verify "$L" --keys "$T/pub"
# The damaged log is refused for appending (not silently cut).
expect 4 "$B" audit append "$L" --keys "$K" --input "$DATA" --format fdh
# Restore the byte: verified again.
printf "\\$(printf %o "$orig")" | dd of="$SEG" bs=1 seek="$OFF" conv=notrunc status=none
expect 0 "$B" audit verify "$L" --keys "$K"

# A tree head flipped (in the last record): detected.
LAST=$((SIZE - 40))
orig=$(od -An -tu1 -j "$LAST" -N1 "$SEG" | tr -d ' ')
printf "\\$(printf %o $((orig ^ 128)))" | dd of="$SEG" bs=1 seek="$LAST" conv=notrunc status=none
expect 4 "$B" audit verify "$L" --keys "$K"

if [ "$fails" -ne 0 ]; then
    echo "audit_cli: $fails failure(s)"
    exit 1
fi
echo "audit_cli: all checks passed"
exit 0

#!/usr/bin/env bash
# One command-line parser for every command (cli/opts.c), checked through the binary:
#  1. --opt=value means --opt value (gen, run, keygen, audit prove, forecast trace);
#  2. an option given twice is refused naming it, exit 2 (unless declared repeatable:
#     --set, --config, --old-keys);
#  3. declared conflicts are refused naming both options, exit 2;
#  4. an unknown option, or an abbreviated one (--js for --json), is refused naming it and
#     the command, exit 2;
#  5. --help on every command and subcommand (the lists are read from the top-level, audit
#     and bench help, so a new command is covered without editing this test) exits 0 and
#     prints a usage line and the -h, --help line of the generated option table;
#  6. issue 10's private defaults: min_count is 10 unless set (a lower value is warned
#     about), and audit verify with another deployment's key directory exits 3 naming both
#     key ids; alerts carry "kind", the summary counts integrity alerts, docs/schema.md
#     documents the output lines.
# Run by ctest as: bash cli_options.sh <confide> <source-dir>
set -euo pipefail
B=$1
SRC=$2
tmp=$(mktemp -d /tmp/confide-cli-options-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
. "$SRC/tests/integration/lib.bash"

# names the option (and for unknown options the command) on stderr
err_has() { grep -qF -- "$1" "$tmp/err" || fail "stderr lacks '$1': $(cat "$tmp/err")"; }

# ---- 1. --opt=value == --opt value ----------------------------------------------------------
"$B" gen --count 2000 --seed 7 --customers 300 --terminals 600 --out "$tmp/a.csv" --quiet
"$B" gen --count=2000 --seed=7 --customers=300 --terminals=600 --out="$tmp/b.csv" -q
cmp -s "$tmp/a.csv" "$tmp/b.csv" || fail "gen: --opt=value differs from --opt value"
"$B" gen --count 10 --seed 8 -q | cmp -s - <("$B" gen --count 10 --seed 7 -q) &&
    fail "gen: --seed had no effect (the comparison above proves nothing)"

run_plain() { # OUT then the options' spelling
    local out=$1
    shift
    expect 0 "$B" run "$@" --protect plain --group-by merchant --window-ms 60000 \
        --batch fixed:1024 --json
    cp "$tmp/out" "$out.json"
}
run_plain "$tmp/r1" --input "$tmp/a.csv" --out "$tmp/r1" --set min_count=1
run_plain "$tmp/r2" --input="$tmp/a.csv" --out="$tmp/r2" --set=min_count=1
# rows of one window come out in pseudonym order, which differs between output directories
cmp -s <(sort "$tmp/r1/results.ndjson") <(sort "$tmp/r2/results.ndjson") ||
    fail "run: results differ between --opt value and --opt=value"
[ -s "$tmp/r1/results.ndjson" ] || fail "run: no results to compare"

expect 0 "$B" keygen --dir="$tmp/k3" --parties=3 --epoch=5
[ -e "$tmp/k3/party-2.key" ] || fail "keygen --parties=3 wrote no party-2.key"
grep -q "epoch 5" "$tmp/out" || fail "keygen --epoch=5 not applied"

expect 0 "$B" audit prove "$tmp/r1/audit" --index 3 --json
cp "$tmp/out" "$tmp/p1"
expect 0 "$B" audit prove "$tmp/r1/audit" --index=3 --json
cmp -s "$tmp/p1" "$tmp/out" || fail "audit prove: --index=3 differs from --index 3"

expect 0 "$B" forecast trace --shape burst --rate 200 --duration-s 20 --interval-s 1 \
    --seed 3 --out "$tmp/t1.csv"
expect 0 "$B" forecast trace --shape=burst --rate=200 --duration-s=20 --interval-s=1 \
    --seed=3 --out="$tmp/t2.csv"
cmp -s "$tmp/t1.csv" "$tmp/t2.csv" || fail "forecast trace: --opt=value differs"

# ---- 2. given twice -------------------------------------------------------------------------
twice() { # FLAG then the command line
    local flag=$1
    shift
    expect 2 "$B" "$@"
    err_has "$flag given twice"
}
twice --out run --input "$tmp/a.csv" --out "$tmp/x" --out="$tmp/y"
twice --json run --json --input "$tmp/a.csv" --json
twice --seed gen --seed 1 --seed=1
twice --dir keygen --dir "$tmp/k4" --parties 2 --dir "$tmp/k5"
twice --keys audit verify "$tmp/r1/audit" --keys "$tmp/r1/keys" --keys "$tmp/r1/keys"
twice --index audit prove "$tmp/r1/audit" --index 1 --index 2
twice --id party --id 0 --id 1
twice --out combine --out a --out b
twice --nats gateway --nats a --nats=b
twice --events bench run --events 10 --events=20
twice --trace forecast eval --trace a --trace b
twice --trace bench autoscale --trace a --trace b
twice --out bench paper --out a --out b
[ ! -e "$tmp/x" ] && [ ! -e "$tmp/y" ] || fail "a refused command line wrote outputs"
# declared repeatable: accepted
expect 0 "$B" run --set min_count=12 --set window.size_ms=1000 --config-doc
printf 'min_count: 11\n' >"$tmp/c1.yaml"
printf 'parties: 3\n' >"$tmp/c2.yaml"
expect 0 "$B" run --config "$tmp/c1.yaml" --config="$tmp/c2.yaml" --config-doc
expect 3 "$B" audit verify "$tmp/r1/audit" --old-keys "$tmp/none1" --old-keys "$tmp/none2"
err_has "--old-keys"

# ---- 3. conflicts ---------------------------------------------------------------------------
expect 2 "$B" run --input "$tmp/a.csv" --out "$tmp/r1" --fresh --resume
err_has "--fresh and --resume conflict"
expect 2 "$B" gen --nats confide.in --out "$tmp/x.csv"
err_has "--nats and --out conflict"
expect 2 "$B" audit witness --keygen --state "$tmp/w" --head "$tmp/r1/tree_heads.ndjson"
err_has "--keygen and --head conflict"
[ ! -e "$tmp/w" ] || fail "a refused witness command line wrote its state"

# ---- 4. unknown and abbreviated options ------------------------------------------------------
unknown() { # NAME COMMAND-PREFIX then the command line
    local name=$1 cmd=$2
    shift 2
    expect 2 "$B" "$@"
    err_has "unknown option '$name'"
    err_has "$cmd"
}
unknown --bogus "confide run" run --bogus
unknown --bogus "confide run" run --bogus=1 --input "$tmp/a.csv"
unknown --js "confide run" run --input "$tmp/a.csv" --js
unknown --bogus "confide gateway" gateway --bogus
unknown --bogus "confide party" party --id 0 --bogus
unknown --bogus "confide gen" gen --bogus=3
unknown --cou "confide gen" gen --cou 5
unknown --bogus "confide keygen" keygen --bogus
unknown --bogus "confide audit show" audit show "$tmp/r1/audit" --bogus
unknown --bogus "confide audit verify-results" audit verify-results "$tmp/r1" --bogus
unknown --bogus "confide bench audit" bench audit --bogus
unknown --bogus "confide bench distributed" bench distributed --bogus
unknown --bogus "confide forecast" forecast train --bogus
expect 2 "$B" gen --count
err_has "--count needs a value"
expect 2 "$B" run --json=yes
err_has "--json takes no value"
expect 2 "$B" gen --count 0
err_has "--count"
expect 2 "$B" audit show "$tmp/r1/audit" "$tmp/r2/audit"
err_has "unexpected argument"
expect 2 "$B" gen --count 3 --out=
err_has "--out needs a non-empty value"
# "-" is a positional argument (stdin), "--" ends the options, values may start with "-"
"$B" audit prove "$tmp/r1/audit" --index 5 --json >"$tmp/proof.json"
expect 0 "$B" audit verify-proof - <"$tmp/proof.json"
grep -q "inclusion proof of leaf 5 .*: valid" "$tmp/out" || fail "verify-proof - read no proof"
expect 0 "$B" audit show --json -- "$tmp/r1/audit"
expect 2 "$B" bench paper --rate -5
err_has "--rate '-5'"

# ---- 5. --help everywhere -------------------------------------------------------------------
help_ok() {
    expect 0 "$B" "$@" --help
    grep -qi "usage" "$tmp/out" || fail "$* --help prints no usage"
    [ -s "$tmp/err" ] && fail "$* --help wrote to stderr: $(cat "$tmp/err")"
    return 0
}
expect 0 "$B" --help
cmds=$(awk '/^commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}' "$tmp/out")
for want in run gateway party combine gen keygen audit bench forecast; do
    echo "$cmds" | grep -qx "$want" || fail "confide --help does not list $want"
done
n=0
for c in $cmds; do
    help_ok "$c"
    case $c in
    audit | bench) ;;
    *) grep -q -- "-h, --help" "$tmp/out" || fail "$c --help has no generated option table" ;;
    esac
    n=$((n + 1))
done
# every subcommand listed under HEADING in `confide CMD --help` (at least MIN of them)
help_subs() { # CMD HEADING MIN
    expect 0 "$B" "$1" --help
    local subs
    subs=$(awk -v h="$2:" '$0 == h {on=1; next} on && /^  [a-z]/{print $1} on && /^$/{on=0}' \
        "$tmp/out")
    [ "$(echo "$subs" | wc -w)" -ge "$3" ] || fail "$1 --help lists too few: $subs"
    for s in $subs; do
        help_ok "$1" "$s"
        grep -q -- "-h, --help" "$tmp/out" || fail "$1 $s --help has no generated option table"
        grep -q "confide $1 $s" "$tmp/out" || fail "$1 $s --help names another command"
        n=$((n + 1))
    done
}
help_subs audit subcommands 9
help_subs bench benchmarks 9
for s in train eval predict trace; do
    help_ok forecast "$s"
    n=$((n + 1))
done
# --help wins over other errors on the same line, and its table shows every option once
help_ok run --bogus --out a --out b
grep -q -- "--metrics-hold" "$tmp/out" || fail "run --help lacks --metrics-hold"
[ "$(grep -c -- '^  --out ' "$tmp/out")" = 1 ] || fail "run --help lists --out twice"
echo "help checked on $n commands and subcommands"

# ---- 6. issue 10: private and unsurprising defaults -----------------------------------------
# min_count defaults to 10: no released row counts fewer payments; below 10 is warned about.
expect 0 "$B" run --input "$tmp/a.csv" --out "$tmp/m10" --group-by merchant --window-ms 3600000 \
    --json
grep -q "min_count" "$tmp/err" && fail "the default min_count is warned about: $(cat "$tmp/err")"
python3 - "$tmp/m10/results.ndjson" "$tmp/out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = json.load(open(sys.argv[2]))
assert s["suppressed"] > 0, s  # small groups exist in this input and were withheld
assert all(r["count"] >= 10 for r in rows), [r["count"] for r in rows if r["count"] < 10]
assert "integrity_alerts" in s and "alerts" in s, s  # both counted in the summary
PY
expect 0 "$B" run --input "$tmp/a.csv" --out "$tmp/m3" --group-by merchant --window-ms 3600000 \
    --set min_count=3
grep -q "warning: config: min_count is 3" "$tmp/err" || fail "min_count 3 not warned about"

# the wrong key directory: exit 3, "wrong key", both key ids named (not an integrity alert)
expect 0 "$B" keygen --dir "$tmp/other" --parties 2
expect 3 "$B" audit verify "$tmp/r1/audit" --keys "$tmp/other"
err_has "wrong key"
grep -Eq "[0-9a-f]{16}, not [0-9a-f]{16} \(wrong (data|signing) key\)" "$tmp/err" ||
    fail "audit verify with another deployment's keys does not name both key ids: $(cat "$tmp/err")"
grep -q "INTEGRITY ALERT" "$tmp/err" && fail "a wrong key reported as an integrity alert"
# the right signing key but another deployment's data key: the same, naming the data keys
cp -r "$tmp/r1/keys" "$tmp/mixed"
cp "$tmp/other/data.key" "$tmp/mixed/data.key"
expect 3 "$B" audit verify "$tmp/r1/audit" --keys "$tmp/mixed"
grep -Eq "data key [0-9a-f]{16}, not [0-9a-f]{16} \(wrong data key\)" "$tmp/err" ||
    fail "a wrong data key is not named with both ids: $(cat "$tmp/err")"

# one schema: compliance alerts say "kind" (integrity alerts are checked in secure_e2e.sh)
cat >"$tmp/rules.yaml" <<'EOF'
rules:
  - {id: big, type: large_amount, threshold: "100.00"}
EOF
expect 0 "$B" run --input "$tmp/a.csv" --out "$tmp/al" --rules "$tmp/rules.yaml" --json
python3 - "$tmp/al/alerts.ndjson" <<'PY'
import json, sys
alerts = [json.loads(l) for l in open(sys.argv[1])]
assert alerts, "no alert raised"
assert all(a.get("kind") == "compliance" and "event_id" in a for a in alerts), alerts[0]
PY
for f in '"kind"' 'integrity_alerts' 'late.ndjson'; do
    grep -q -- "$f" "$SRC/docs/schema.md" || fail "docs/schema.md does not document $f"
done
echo "cli options ok"

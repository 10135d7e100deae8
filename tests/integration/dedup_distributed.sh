#!/usr/bin/env bash
# Duplicate event ids in distributed mode (issue 12: "in both modes"): the gateway process
# decodes with the same pipeline as `confide run`, so a repeated event_id is dead-lettered
# there, before anything is audited or published. On a real nats-server with the parties and
# the combiner as separate processes:
#  1. input with repeats -> results, late records and alerts equal the embedded run's on the
#     input without them; the gateway's dead_letter.ndjson holds exactly the repeats;
#  2. the gateway killed with SIGKILL mid-input and restarted: repeats of events it accepted
#     before the crash are still rejected, and the results are still identical.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
nats_start "$tmp/ns" $K 1

"$CONFIDE" gen --seed 8 --count 12000 --out "$tmp/clean.csv" --quiet
# Events of the first quarter repeated in the last quarter, and a few right after themselves.
python3 - "$tmp/clean.csv" "$tmp/dup.csv" "$tmp/reps" <<'PY'
import sys, random
rows = open(sys.argv[1]).read().splitlines(True)
head, rows = rows[0], rows[1:]
n = len(rows)
random.seed(4)
late = {}
for i in range(0, n // 4, 11):
    late.setdefault(random.randint(3 * n // 4, n - 1), []).append(rows[i])
out, lines = [head], []
for i, r in enumerate(rows):
    out.append(r)
    extra = ([r] if i % 97 == 5 else []) + late.get(i, [])
    for d in extra:
        out.append(d)
        lines.append(len(out))
open(sys.argv[2], "w").write("".join(out))
open(sys.argv[3], "w").write("\n".join(map(str, lines)) + "\n")
PY
reps=$(wc -l <"$tmp/reps")
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K
# The 12000 events span two days: a horizon of a week catches every repeat.
cat >"$tmp/p.yaml" <<YAML
input:
  dedup_horizon_ms: 604800000
protect: lsa
parties: $K
min_count: 1
rules:
  file: $SRC/examples/rules.yaml
window:
  size_ms: 600000
  group_by: country,channel
audit:
  checkpoint_events: 1024
nats:
  servers: $NATS_URL
  ca_file: $NATS_CA
YAML

"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/clean.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }
[ "$(wc -l <"$tmp/emb/results.ndjson")" -gt 20 ] || fail "too few results to compare"

party() { # ID OUT
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$1" --out "$2/p$1" --keys "$tmp/k/party$1" \
        --user "party$1" --password-file "$NATS_PW/party$1" >>"$2/p$1.log" 2>&1 &
    last=$!
    pids+=("$last")
}
combine() { # OUT
    "$CONFIDE" combine --config "$tmp/p.yaml" --out "$1/c" --keys "$tmp/k/combiner" \
        --user combiner --password-file "$NATS_PW/combiner" >>"$1/c.log" 2>&1 &
    last=$!
    pids+=("$last")
}
gateway() { # OUT [run options...]
    local out=$1
    shift
    "$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/dup.csv" --out "$out/g" \
        --keys "$tmp/k/gateway" --no-status --set nats.user=gateway \
        --set nats.password_file="$NATS_PW/gateway" "$@" >>"$out/g.log" 2>&1 &
    last=$!
    pids+=("$last")
}
# Log indexes aside: the rejected repeats take log indexes too (docs/audit.md 2.5), so the
# first_index/last_index of rows after them count them.
noidx() { python3 -c 'import json,sys
for l in sys.stdin:
    d = json.loads(l)
    for k in ("first_index", "last_index", "index", "seq"):
        d.pop(k, None)
    print(json.dumps(d))' <"$1"; }
same() { # OUT
    cmp <(noidx "$tmp/emb/results.ndjson") <(noidx "$1/c/results.ndjson") || fail "$1: results differ"
    cmp <(noidx "$tmp/emb/late.ndjson") <(noidx "$1/c/late.ndjson") || fail "$1: late records differ"
    cmp "$tmp/emb/alerts.ndjson" "$1/g/alerts.ndjson" || fail "$1: compliance alerts differ"
    python3 - "$1/g/dead_letter.ndjson" "$tmp/reps" <<'PY' || fail "$1: dead letters"
import json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
want = [int(x) for x in open(sys.argv[2]).read().split()]
assert [g["line"] for g in got] == want, (len(got), len(want))
assert all(g["reason"] == "duplicate event_id" for g in got)
PY
    "$CONFIDE" audit verify "$1/g/audit" --keys "$tmp/k/gateway" --json >"$tmp/verify.json" ||
        fail "$1: audit verify"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and d["completeness"]==1.0 and d["events"]==12000 and d["duplicates"]==0, d' \
        "$tmp/verify.json" || fail "$1: audit log"
}
run_roles() { # OUT [gateway options...]: parties, combiner, gateway; pids in p0.. c g
    local o=$1
    shift
    mkdir -p "$o"
    for i in $(seq 0 $((K - 1))); do party "$i" "$o"; eval "p$i=$last"; done
    combine "$o"; c=$last
    gateway "$o" "$@"; g=$last
}
finish() { # OUT
    for i in $(seq 0 $((K - 1))); do eval "wait_ok \$p$i $1/p$i.log party$i"; done
    wait_ok "$c" "$1/c.log" combiner
}

# 1. Repeats rejected by the gateway process.
run_roles "$tmp/run1"
wait_ok "$g" "$tmp/run1/g.log" gateway
finish "$tmp/run1"
same "$tmp/run1"
echo "ok: distributed, $reps repeats dead-lettered by the gateway, results equal the embedded run's"

# 2. The gateway killed mid-input (fresh streams) and restarted.
nats_stop
rm -rf "$tmp/ns/store1"
nats_start_node "$tmp/ns" 1
o=$tmp/run2
run_roles "$o" --rate 3000
# SIGKILL once the gateway has logged 4000 events (the tree size of its last signed head)
kill_at_tree_size "$o/g/tree_heads.ndjson" "$g" 4000 || fail "the gateway did not reach 4000 events"
wait "$g" 2>/dev/null || true
logged=$("$CONFIDE" audit verify "$o/g/audit" --keys "$tmp/k/gateway" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])' || echo 0)
[ "$logged" -gt 3000 ] && [ "$logged" -lt 9000 ] ||
    fail "the kill did not land mid-input ($logged events logged)"
gateway "$o"
g=$last
wait_ok "$g" "$o/g.log" "restarted gateway"
finish "$o"
grep -q "resuming:" "$o/g.log" || fail "the gateway did not resume"
same "$o"
echo "ok: gateway killed with $logged events logged and restarted: repeats still rejected, results identical"

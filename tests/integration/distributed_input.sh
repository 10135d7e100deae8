#!/usr/bin/env bash
# A gateway whose input is a JetStream subject (input.nats_subject), fed by
# `confide gen --nats` as a least-privilege producer, over TLS: the distributed results equal
# the embedded run's on the same generated events, also when the gateway is killed with -9
# mid-stream and restarted (it re-reads the stream, checks what its audit log holds and
# skips it); the log verifies with completeness 1.0; events published later are appended.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
nats_start "$tmp/ns" $K 1
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K
cat >"$tmp/p.yaml" <<EOF2
parties: $K
window: {size_ms: 600000, group_by: country}
audit: {checkpoint_events: 1024}
nats: {servers: "$NATS_URL", ca_file: "$NATS_CA"}
EOF2
P="--nats-servers $NATS_URL --nats-ca $NATS_CA --nats-user producer --nats-password-file $NATS_PW/producer"

# The same 6000 events into a file and, as one message each, into confide.in.
"$CONFIDE" gen --seed 11 --count 6000 --out "$tmp/tx.csv" --quiet
# shellcheck disable=SC2086
"$CONFIDE" gen --seed 11 --count 6000 --nats confide.in $P --quiet
"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }

o=$tmp/run && mkdir -p "$o"
roles=()
for i in $(seq 0 $((K - 1))); do
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$i" --out "$o/p$i" --keys "$tmp/k/party$i" \
        --user "party$i" --password-file "$NATS_PW/party$i" >>"$o/p$i.log" 2>&1 &
    roles+=($!)
done
"$CONFIDE" combine --config "$tmp/p.yaml" --out "$o/c" --keys "$tmp/k/combiner" \
    --user combiner --password-file "$NATS_PW/combiner" >>"$o/c.log" 2>&1 &
roles+=($!)
pids+=("${roles[@]}")
gateway() { # [options]: reads confide.in until 1.5 s without a message
    "$CONFIDE" gateway --config "$tmp/p.yaml" --out "$o/g" --keys "$tmp/k/gateway" --no-status \
        --set input.nats_subject=confide.in --set input.nats_idle_end_ms=1500 \
        --set nats.user=gateway --set nats.password_file="$NATS_PW/gateway" "$@" \
        >>"$o/g.log" 2>&1 &
    g=$!
    pids+=("$g")
}
gateway --rate 3000
kill_at_tree_size "$o/g/tree_heads.ndjson" "$g" 1500 || fail "the gateway did not reach 1500 events"
wait "$g" 2>/dev/null || true
gateway
wait "$g" || { cat "$o/g.log" >&2; fail "restarted gateway"; }
for p in "${roles[@]}"; do
    wait "$p" || { cat "$o"/*.log >&2; fail "a role failed"; }
done
grep -q "resuming:" "$o/g.log" || fail "the gateway did not resume: $(cat "$o/g.log")"
cmp "$tmp/emb/results.ndjson" "$o/c/results.ndjson" || fail "results differ from the embedded run"
cmp "$tmp/emb/alerts.ndjson" "$o/g/alerts.ndjson" || fail "alerts differ"
"$CONFIDE" audit verify "$o/g/audit" --keys "$tmp/k/gateway" --json >"$tmp/v.json" || fail verify
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["completeness"]==1.0 and d["events"]==6000, d' \
    "$tmp/v.json" || fail "audit log incomplete: $(cat "$tmp/v.json")"

# A producer without rights elsewhere: it may not publish the parties' shares.
expect 3 "$CONFIDE" gen --seed 1 --count 5 --nats confide.shares.0 --nats-stream CONFIDE_SHARES_0 $P
echo "ok: JetStream input, gateway kill -9 and restart on it, results equal the embedded run"

#!/usr/bin/env bash
# A 3-node JetStream cluster with every stream replicated 3 times (R3): one node is stopped
# while the distributed pipeline runs and started again later. Processing goes on (clients
# reconnect to the other nodes, streams elect new leaders, receivers whose consumer was on
# the lost node resubscribe from the last sequence they committed) and the results equal
# the embedded run's byte for byte: nothing lost, nothing counted twice.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
nats_start "$tmp/ns" $K 3

"$CONFIDE" gen --seed 9 --count 16000 --out "$tmp/tx.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K
cat >"$tmp/p.yaml" <<EOF2
protect: lsa
parties: $K
window:
  size_ms: 600000
  group_by: country
audit:
  checkpoint_events: 2048
nats:
  servers: $NATS_URL
  ca_file: $NATS_CA
  replicas: 3
EOF2
"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }

o=$tmp/run && mkdir -p "$o"
for i in $(seq 0 $((K - 1))); do
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$i" --out "$o/p$i" --keys "$tmp/k/party$i" \
        --user "party$i" --password-file "$NATS_PW/party$i" >"$o/p$i.log" 2>&1 &
    pids+=($!)
done
"$CONFIDE" combine --config "$tmp/p.yaml" --out "$o/c" --keys "$tmp/k/combiner" \
    --user combiner --password-file "$NATS_PW/combiner" >"$o/c.log" 2>&1 &
pids+=($!)
"$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$o/g" \
    --keys "$tmp/k/gateway" --no-status --rate 3000 --set nats.user=gateway \
    --set nats.password_file="$NATS_PW/gateway" >"$o/g.log" 2>&1 &
g=$!
pids+=($g)
sleep 1.5
kill "${NATS_PID[1]}"
wait "${NATS_PID[1]}" 2>/dev/null || true
echo "stopped node 1"
sleep 2
nats_start_node "$tmp/ns" 1
echo "node 1 back"
wait "$g" || { cat "$o/g.log" >&2; fail "gateway"; }
for p in "${pids[@]}"; do
    wait "$p" || { cat "$o"/*.log >&2; fail "a role failed"; }
done
cmp "$tmp/emb/results.ndjson" "$o/c/results.ndjson" || { cat "$o"/*.log >&2; fail "results differ"; }
cmp "$tmp/emb/late.ndjson" "$o/c/late.ndjson" || fail "late records differ"
"$CONFIDE" audit verify "$o/g/audit" --keys "$tmp/k/gateway" --json >"$tmp/v.json" || fail "verify"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["completeness"]==1.0, d' \
    "$tmp/v.json" || fail "audit log incomplete"
echo "ok: a node of the R3 cluster stopped and restarted mid-run: results identical"

#!/usr/bin/env bash
# Key-partitioned party workers as separate processes (party.workers: 2 per party here): the
# gateway splits each party's shares by key group into one JetStream stream per worker,
# every worker process (confide party --worker W) holds the windows of its key
# groups only, and the combiner reads the k x W partial streams, aligned at checkpoints:
#  1. the results, late records and alerts equal the embedded run's (one worker), after
#     sorting (workers release in their own order);
#  2. kill -9 of one worker process mid-run, restarted: still identical, log complete;
#  3. a worker cannot read another party's worker stream with its own credentials.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
W=2
NATS_WORKERS=$W nats_start "$tmp/ns" $K 1

"$CONFIDE" gen --seed 8 --count 20000 --out "$tmp/tx.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K
cat >"$tmp/p.yaml" <<EOF
protect: lsa
parties: $K
min_count: 1
rules:
  file: $SRC/examples/rules.yaml
window:
  size_ms: 600000
  group_by: merchant
  max_delay_ms: 60000
  lateness_ms: 300000
audit:
  checkpoint_events: 2048
pipeline:
  batch_max: 256
nats:
  servers: $NATS_URL
  ca_file: $NATS_CA
EOF
shuffle_near "$tmp/tx.csv" 3

"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }
[ "$(wc -l <"$tmp/emb/results.ndjson")" -gt 200 ] || fail "too few results to compare"
[ "$(wc -l <"$tmp/emb/late.ndjson")" -gt 0 ] || fail "no late records to compare"

worker() { # ID W OUT: party ID's worker W in the background; its pid in $last
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$1" --out "$3/p$1w$2" --keys "$tmp/k/party$1" \
        --user "party$1" --password-file "$NATS_PW/party$1" --workers $W \
        --worker "$2" >>"$3/p$1w$2.log" 2>&1 &
    last=$!
    pids+=("$last")
}
combine() { # OUT
    "$CONFIDE" combine --config "$tmp/p.yaml" --out "$1/c" --keys "$tmp/k/combiner" \
        --user combiner --password-file "$NATS_PW/combiner" --workers $W \
        >>"$1/c.log" 2>&1 &
    last=$!
    pids+=("$last")
}
gateway() { # OUT [run options...]
    local out=$1
    shift
    "$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$out/g" \
        --keys "$tmp/k/gateway" --no-status --set nats.user=gateway --set party.workers=$W \
        --set nats.password_file="$NATS_PW/gateway" "$@" >>"$out/g.log" 2>&1 &
    last=$!
    pids+=("$last")
}
same() { # OUT
    same_as_embedded "$tmp/emb" "$1" "$tmp/k/gateway"
}
start_all() { # OUT [gateway options...]
    local o=$1
    shift
    for i in $(seq 0 $((K - 1))); do
        for w in $(seq 0 $((W - 1))); do worker "$i" "$w" "$o"; eval "p${i}w$w=$last"; done
    done
    combine "$o"; c=$last
    gateway "$o" "$@"; g=$last
}
wait_all() { # OUT
    wait_ok "$g" "$1/g.log" gateway
    for i in $(seq 0 $((K - 1))); do
        for w in $(seq 0 $((W - 1))); do eval "wait_ok \$p${i}w$w $1/p${i}w$w.log party$i.$w"; done
    done
    wait_ok "$c" "$1/c.log" combiner
}

# 1. Clean run.
o=$tmp/run1 && mkdir -p "$o"
start_all "$o"
wait_all "$o"
same "$o"
[ -e "$o/p1w1/party-1-1.state" ] || fail "worker 1 of party 1 kept no state file"
echo "ok: $K parties x $W worker processes equal the embedded run"

# 2. kill -9 one worker process mid-run.
nats_stop
rm -rf "$tmp/ns/store1"
nats_start_node "$tmp/ns" 1
o=$tmp/run2 && mkdir -p "$o"
start_all "$o" --rate 4000
wait_for "$o/p1w0/party-1.state" 20
kill -9 "$p1w0"; wait "$p1w0" 2>/dev/null || true
worker 1 0 "$o"; p1w0=$last
wait_all "$o"
grep -q "resuming from the checkpoint" "$o/p1w0.log" || fail "worker 1.0 did not resume"
same "$o"
echo "ok: kill -9 of a worker process: results identical, log complete"

# 3. Party 1's credentials do not read party 0's worker streams.
expect 2 "$CONFIDE" party --config "$tmp/p.yaml" --id 0 --out "$tmp/x" --keys "$tmp/k/party0" \
    --user party1 --password-file "$NATS_PW/party1" --workers $W --worker 1
grep -q "Permissions Violation" "$tmp/err" || fail "party1 read party 0's worker stream: $(cat "$tmp/err")"
echo "ok: distributed_workers"

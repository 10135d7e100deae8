#!/usr/bin/env bash
# Live rescale of party worker processes (docs/distributed.md, "Rescaling worker processes"):
# the gateway starts with one worker per party and debug.rescale_at moves every party to 3,
# then 2, then 3 workers again while events flow. Processes for workers 1 and 2 are started
# up front and wait on their streams until a rescale marker activates them; worker 2
# retires at the second rescale (its process ends) and a new process for its slot, started
# from the retired one's directory, is activated by the third.
#  1. the results, late records and alerts equal the embedded run's (one worker), after
#     sorting; the audit log is complete; verify-results recomputes the combiner's output;
#  2. the same with worker 0 of party 1 killed (kill -9) after the second rescale and
#     restarted without a state file: it replays both handovers (its own states again,
#     de-duplicated) and the results are still identical;
#  3. the same with the gateway killed (kill -9) after its second rescale and restarted.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
W=3
NATS_WORKERS=$W nats_start "$tmp/ns" $K 1

"$CONFIDE" gen --seed 9 --count 12000 --out "$tmp/tx.csv" --quiet
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
  checkpoint_events: 1024
pipeline:
  batch_max: 256
nats:
  servers: $NATS_URL
  ca_file: $NATS_CA
EOF
shuffle_near "$tmp/tx.csv" 5

"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }
[ "$(wc -l <"$tmp/emb/results.ndjson")" -gt 200 ] || fail "too few results to compare"
[ "$(wc -l <"$tmp/emb/late.ndjson")" -gt 0 ] || fail "no late records to compare"

worker() { # ID W OUT: party ID's worker W in the background; its pid in $last
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$1" --out "$3/p$1w$2" --keys "$tmp/k/party$1" \
        --user "party$1" --password-file "$NATS_PW/party$1" --worker "$2" \
        >>"$3/p$1w$2.log" 2>&1 &
    last=$!
    pids+=("$last")
}
start_all() { # OUT [gateway options...]
    local o=$1
    shift
    for i in $(seq 0 $((K - 1))); do
        for w in $(seq 0 $((W - 1))); do worker "$i" "$w" "$o"; eval "p${i}w$w=$last"; done
    done
    "$CONFIDE" combine --config "$tmp/p.yaml" --out "$o/c" --keys "$tmp/k/combiner" \
        --user combiner --password-file "$NATS_PW/combiner" >>"$o/c.log" 2>&1 &
    c=$!
    pids+=("$c")
    "$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$o/g" \
        --keys "$tmp/k/gateway" --no-status --set nats.user=gateway \
        --set nats.password_file="$NATS_PW/gateway" \
        --set debug.rescale_at=2500:3,5500:2,8500:3 "$@" >>"$o/g.log" 2>&1 &
    g=$!
    pids+=("$g")
}
reactivate_worker2() { # OUT: worker 2 retired near 5500; a new process takes its slot again
    local o=$1 i
    for i in $(seq 0 $((K - 1))); do
        eval "wait_ok \$p${i}w2 $o/p${i}w2.log party$i.2"
        grep -q "retired at index [0-9]* (3 -> 2 workers)" "$o/p${i}w2.log" || fail "worker $i.2 did not retire"
        worker "$i" 2 "$o"; eval "p${i}w2=$last"
    done
}
wait_all() { # OUT
    wait_ok "$g" "$1/g.log" gateway
    for i in $(seq 0 $((K - 1))); do
        for w in $(seq 0 $((W - 1))); do eval "wait_ok \$p${i}w$w $1/p${i}w$w.log party$i.$w"; done
    done
    wait_ok "$c" "$1/c.log" combiner
}
same() { # OUT
    same_as_embedded "$tmp/emb" "$1" "$tmp/k/gateway" "$tmp/keys"
    for i in $(seq 0 $((K - 1))); do
        grep -q "activated at index [0-9]* (1 -> 3 workers)" "$1/p${i}w1.log" ||
            fail "$1: worker $i.1 was not activated"
        grep -q "activated at index [0-9]* (2 -> 3 workers)" "$1/p${i}w2.log" ||
            fail "$1: worker $i.2 was not activated again"
    done
}

# 1. 1 -> 3 -> 2 -> 3 workers per party while the events flow.
o=$tmp/run1 && mkdir -p "$o"
start_all "$o" --rate 3000
reactivate_worker2 "$o"
wait_all "$o"
same "$o"
echo "ok: 1 -> 3 -> 2 -> 3 worker processes per party equal the embedded run"

# 2. The same, with a worker that took part in the handover killed and restarted.
nats_stop
rm -rf "$tmp/ns/store1"
nats_start_node "$tmp/ns" 1
o=$tmp/run2 && mkdir -p "$o"
# No checkpoints but the rescales' (which a party never records): the restarted worker has
# no state file and replays both handovers from its stream's start.
start_all "$o" --rate 2000 --set audit.checkpoint_events=10000000
wait_for_line() { # FILE PATTERN SECONDS
    for _ in $(seq 1 $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    fail "$1: no '$2' within $3 s"
}
wait_for_line "$o/p1w0.log" "rescaled at index [0-9]* (3 -> 2" 60
kill -9 "$p1w0"; wait "$p1w0" 2>/dev/null || true
[ ! -e "$o/p1w0/party-1.state" ] || fail "worker 1.0 kept a state file at a rescale"
worker 1 0 "$o"; p1w0=$last
reactivate_worker2 "$o"
wait_all "$o"
same "$o"
[ "$(grep -c "rescaled at index [0-9]* (1 -> 3 workers)" "$o/p1w0.log")" -eq 2 ] ||
    fail "the restarted worker did not replay the first handover"
echo "ok: kill -9 of a worker after two rescales: handovers replayed, results identical"

# 3. The gateway killed (kill -9) after its second rescale and restarted: it makes the
#    recorded rescales again at the same indexes while it replays its log (the streams
#    already hold those markers, so nothing is sent twice) and the third one live.
nats_stop
rm -rf "$tmp/ns/store1"
nats_start_node "$tmp/ns" 1
o=$tmp/run3 && mkdir -p "$o"
start_all "$o" --rate 2000
for _ in $(seq 1 600); do
    [ -e "$o/g/rescales.log" ] && [ "$(wc -l <"$o/g/rescales.log")" -ge 2 ] && break
    sleep 0.1
done
[ "$(wc -l <"$o/g/rescales.log")" -ge 2 ] || { tail -n 20 "$o/g.log" >&2; fail "the gateway did not record two rescales"; }
kill -9 "$g"; wait "$g" 2>/dev/null || true
"$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$o/g" \
    --keys "$tmp/k/gateway" --no-status --set nats.user=gateway \
    --set nats.password_file="$NATS_PW/gateway" \
    --set debug.rescale_at=2500:3,5500:2,8500:3 --rate 2000 >>"$o/g.log" 2>&1 &
g=$!
pids+=("$g")
reactivate_worker2 "$o"
wait_all "$o"
same "$o"
[ "$(wc -l <"$o/g/rescales.log")" -eq 3 ] || fail "rescales.log: $(cat "$o/g/rescales.log")"
echo "ok: kill -9 of the gateway after two rescales: results identical, log complete"
echo "ok: distributed_rescale"

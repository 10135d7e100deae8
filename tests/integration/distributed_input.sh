#!/usr/bin/env bash
# A gateway whose input is a JetStream subject (input.nats_subject), fed by
# `confide gen --nats` as a least-privilege producer, over TLS: the distributed results equal
# the embedded run's on the same generated events, also when the gateway is killed with -9
# mid-stream and restarted; the log verifies with completeness 1.0; events published later
# are appended. The restart resumes after OUT/input.pos (the last message whose records were
# durable, never ahead of the log) and does not read the messages before it again.
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
# 2000 more published while the gateway is down (gen sends no second header into a stream
# that has one). Their event_ids 0..1999 repeat the first ones: duplicates of events before
# the resume point, which the restart does not read again, so only a duplicate state rebuilt
# from the audit log rejects them.
"$CONFIDE" gen --seed 12 --start 2018-04-05 --count 2000 --out "$tmp/tx2.csv" --quiet
{ cat "$tmp/tx.csv"; tail -n +2 "$tmp/tx2.csv"; } >"$tmp/all.csv"
"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/all.csv" --out "$tmp/emb" --keys "$tmp/keys" \
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
# Acked only once durable: the position input.pos holds is never ahead of the audit log.
[ -f "$o/g/input.pos" ] || fail "no input.pos after the kill"
read -r q0 a0 < <(awk '/^seq /{q=$2} /^events /{a=$2} END{print q, a}' "$o/g/input.pos")
# (written at most every 200 ms: how far it got before the kill depends on the machine's
# speed, so only that it names a durable position, one message per event after the header)
if [ "$a0" -lt 1 ] || [ "$q0" -ne $((a0 + 1)) ]; then fail "input.pos: seq $q0 events $a0"; fi
# shellcheck disable=SC2086
"$CONFIDE" gen --seed 12 --start 2018-04-05 --count 2000 --nats confide.in $P --quiet
gateway
wait "$g" || { cat "$o/g.log" >&2; fail "restarted gateway"; }
logged=$(sed -n 's/.*resuming: \([0-9]*\) events.*/\1/p' "$o/g.log")
if [ -z "$logged" ] || [ "$a0" -gt "$logged" ]; then
    fail "input.pos ($a0) ahead of the log ($logged)"
fi
grep -q "resuming input stream CONFIDE_IN at sequence $((q0 + 1)) (position $a0)" "$o/g.log" ||
    fail "the gateway did not resume the stream after input.pos: $(cat "$o/g.log")"
# it read only what follows: 6000 + 2000 events less the a0 before; the 2000 are duplicates
grep -q "read $((8000 - a0)) records: $((6000 - a0)) accepted, 2000 dead-lettered" "$o/g.log" ||
    fail "the restarted gateway re-read messages before the resume point: $(grep read "$o/g.log")"
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

#!/usr/bin/env bash
# `confide autoscale` drives a distributed run (docs/autoscaling.md): the parties start with
# one worker process each; the autoscaler (policy static, 3 workers) reads the roles' live
# statistics on NATS, starts the processes for workers 1 and 2 of every party itself
# (--party-cmd), asks the gateway to rescale, and ends after the run with its processes.
#  1. the results, late records and alerts equal the embedded run's, the audit log is
#     complete and verify-results passes;
#  2. the added workers were activated by the rescale, and /metrics carried
#     confide_desired_replicas 3 while it ran;
#  3. a party's user asking the gateway to rescale is refused by the server;
#  4. ds2 with the workers mostly idle scales 3 processes per party down: the
#     retired ones end by themselves, results identical.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=2
NATS_WORKERS=3 nats_start "$tmp/ns" $K 1

"$CONFIDE" gen --seed 10 --count 12000 --out "$tmp/tx.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K
cat >"$tmp/p.yaml" <<EOF
protect: lsa
parties: $K
min_count: 1
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
autoscale:
  interval_ms: 300
  max_workers: 3
EOF
"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }

o=$tmp/run && mkdir -p "$o"
pcmd="'$CONFIDE' party --config '$tmp/p.yaml' --id {party} --worker {worker} --out '$o/p{party}w{worker}' --keys '$tmp/k/party{party}' --user party{party} --password-file '$NATS_PW/party{party}' >>'$o/p{party}w{worker}.log' 2>&1"
for i in $(seq 0 $((K - 1))); do
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$i" --worker 0 --out "$o/p${i}w0" \
        --keys "$tmp/k/party$i" --user "party$i" --password-file "$NATS_PW/party$i" \
        >>"$o/p${i}w0.log" 2>&1 &
    eval "p$i=$!"
    pids+=("$!")
done
"$CONFIDE" combine --config "$tmp/p.yaml" --out "$o/c" --keys "$tmp/k/combiner" \
    --user combiner --password-file "$NATS_PW/combiner" >>"$o/c.log" 2>&1 &
c=$!
pids+=("$c")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CONFIDE" autoscale --config "$tmp/p.yaml" --policy static --party-cmd "$pcmd" \
    --user autoscale --password-file "$NATS_PW/autoscale" --until-idle 3 \
    --set metrics.listen=127.0.0.1:$port >>"$o/a.log" 2>&1 &
a=$!
pids+=("$a")
sleep 1 # it subscribes before the gateway reports
"$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$o/g" \
    --keys "$tmp/k/gateway" --no-status --set nats.user=gateway \
    --set nats.password_file="$NATS_PW/gateway" --rate 2000 >>"$o/g.log" 2>&1 &
g=$!
pids+=("$g")

# 2. (while it runs) the decision on /metrics
for _ in $(seq 1 100); do grep -q "> 3 workers per party wanted" "$o/a.log" 2>/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/metrics" >"$tmp/m.txt" || fail "no /metrics from confide autoscale"
grep -q '^confide_desired_replicas 3$' "$tmp/m.txt" || fail "desired replicas: $(grep desired "$tmp/m.txt")"

# 3. Once the gateway took the autoscaler's request (so it listens, and the run goes on for
#    seconds more), party0's credentials ask for 2 workers: the server refuses, and the
#    gateway's rescales.log never gets a 2 (checked below). Only the autoscale user may.
wait_for "$o/g/rescales.log" 30
expect 3 "$CONFIDE" autoscale --config "$tmp/p.yaml" --request 2 --user party0 \
    --password-file "$NATS_PW/party0"
grep -q "Permissions Violation" "$tmp/err" || fail "party0's rescale request: $(cat "$tmp/err")"

wait_ok "$g" "$o/g.log" gateway
wait_ok "$a" "$o/a.log" autoscale
for i in $(seq 0 $((K - 1))); do eval "wait_ok \$p$i $o/p${i}w0.log party$i.0"; done
wait_ok "$c" "$o/c.log" combiner

# 1.
same_as_embedded "$tmp/emb" "$o" "$tmp/k/gateway" "$tmp/keys"
for i in $(seq 0 $((K - 1))); do
    for w in 1 2; do
        grep -q "started party $i worker $w" "$o/a.log" || fail "autoscale did not start $i.$w"
        grep -q "activated at index [0-9]* (1 -> 3 workers)" "$o/p${i}w$w.log" ||
            fail "worker $i.$w was not activated"
    done
done
grep -q "party 1 worker 2 ended (ok)" "$o/a.log" || fail "autoscale did not wait for its workers"
! awk '$2 == 2' "$o/g/rescales.log" | grep -q . || fail "the gateway took party0's request"
[ "$(awk '$2 == 3' "$o/g/rescales.log" | wc -l)" -eq 1 ] || fail "rescales: $(cat "$o/g/rescales.log")"
echo "ok: confide autoscale scaled a distributed run 1 -> 3 workers per party; results identical"
echo "ok: party0's credentials cannot request a rescale"

# 4. ds2 scales down: 3 workers per party at a rate one handles; the retired processes end
#    by themselves and the results stay identical.
nats_stop
rm -rf "$tmp/ns/store1"
nats_start_node "$tmp/ns" 1
o=$tmp/down && mkdir -p "$o"
for i in $(seq 0 $((K - 1))); do
    for w in 0 1 2; do
        "$CONFIDE" party --config "$tmp/p.yaml" --id "$i" --worker "$w" --out "$o/p${i}w$w" \
            --keys "$tmp/k/party$i" --user "party$i" --password-file "$NATS_PW/party$i" \
            >>"$o/p${i}w$w.log" 2>&1 &
        eval "p${i}w$w=$!"
        pids+=("$!")
    done
done
"$CONFIDE" combine --config "$tmp/p.yaml" --out "$o/c" --keys "$tmp/k/combiner" --workers 3 \
    --user combiner --password-file "$NATS_PW/combiner" >>"$o/c.log" 2>&1 &
c=$!
pids+=("$c")
"$CONFIDE" autoscale --config "$tmp/p.yaml" --policy ds2 --party-cmd "$pcmd" \
    --user autoscale --password-file "$NATS_PW/autoscale" --until-idle 3 \
    --set autoscale.target_util=100 --set autoscale.cooldown_ms=600 >>"$o/a.log" 2>&1 &
a=$!
pids+=("$a")
sleep 1
"$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$o/g" \
    --keys "$tmp/k/gateway" --no-status --set nats.user=gateway --set party.workers=3 \
    --set nats.password_file="$NATS_PW/gateway" --rate 2500 >>"$o/g.log" 2>&1 &
g=$!
pids+=("$g")
wait_ok "$g" "$o/g.log" gateway
wait_ok "$a" "$o/a.log" autoscale
for i in $(seq 0 $((K - 1))); do
    for w in 0 1 2; do eval "wait_ok \$p${i}w$w $o/p${i}w$w.log party$i.$w"; done
done
wait_ok "$c" "$o/c.log" combiner
same_as_embedded "$tmp/emb" "$o" "$tmp/k/gateway" "$tmp/keys"
grep -q "retired at index" "$o/p0w2.log" || { cat "$o/a.log" >&2; fail "ds2 did not scale down"; }
echo "ok: ds2 scaled 3 worker processes per party down; retired ones ended; results identical"

# 5. --request with no gateway listening: a clear error, exit 3.
expect 3 "$CONFIDE" autoscale --config "$tmp/p.yaml" --request 2 --user autoscale \
    --password-file "$NATS_PW/autoscale"
grep -q "no answer on confide.control.rescale" "$tmp/err" || fail "request error: $(cat "$tmp/err")"
echo "ok: autoscale_distributed"

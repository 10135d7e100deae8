#!/usr/bin/env bash
# usage: bench/scripts/nats-resume.sh BINARY TAG: a JetStream input stream, 990,000 events
# processed by a first run, 10,000 more published, the restart timed (/usr/bin/time -v);
# outputs under /tmp/nrbench/TAG (bench/results/nats-resume-2026-12-04.md)
set -euo pipefail
B=$1; T=$2; D=/tmp/nrbench/$T; PORT=${PORT:-14555}
rm -rf "$D"; mkdir -p "$D"
nats-server -js -sd "$D/js" -a 127.0.0.1 -p "$PORT" >"$D/ns.log" 2>&1 & NS=$!
trap 'kill "$NS"' EXIT
sleep 2
U=nats://127.0.0.1:$PORT
"$B" keygen --dir "$D/keys" --parties 2 >/dev/null
printf 'parties: 2\nwindow: {size_ms: 600000, group_by: country}\nnats: {servers: "%s"}\n' "$U" >"$D/p.yaml"
# 50k per gen call, seeds 1..20 (gen --nats failed past ~100k async publishes in one call
# before libnats' StallWait was raised to the request timeout, src/transport/jetstream.c)
# (990,000 = 19 x 50,000 + 40,000); ids repeat across seeds: dedup off for the bench
for k in $(seq 1 20); do
    n=50000; [ "$k" -eq 20 ] && n=40000
    "$B" gen --seed "$k" --count "$n" --nats bench.in --nats-servers "$U" --quiet
done
S=(--set input.nats_subject=bench.in --set input.nats_idle_end_ms=1000 --set nats.max_ack_pending=4096 --set input.dedup_horizon_ms=0)
/usr/bin/time -v "$B" run --config "$D/p.yaml" --out "$D/o" --keys "$D/keys" --no-status "${S[@]}" >"$D/first.out" 2>&1
"$B" gen --seed 21 --count 10000 --nats bench.in --nats-servers "$U" --quiet
/usr/bin/time -v "$B" run --config "$D/p.yaml" --out "$D/o" --keys "$D/keys" --no-status "${S[@]}" >"$D/restart.out" 2>&1
grep -E "read |Elapsed|Maximum resident|resuming" "$D/first.out" "$D/restart.out"

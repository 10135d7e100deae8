#!/usr/bin/env bash
# Distributed mode on a real nats-server (JetStream, TLS, one user per role with
# least-privilege permissions), each role a separate process holding only its own keys:
#  1. the results, late records and alerts equal the embedded run's, byte for byte;
#  2. kill -9 of a party, of the combiner and of the gateway mid-run, each restarted: the
#     results are still byte-identical (nothing lost, nothing counted twice) and the audit
#     log verifies with completeness 1.0;
#  3. wrong credentials, another party's subjects and a missing CA are refused.
# The gateway and the combiner also publish their output lines (output.nats_subject) with
# the permissions scripts/nats-setup.sh gives them (tests/unit/transport.c checks content).
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/nats_lib.bash"
nats_test_init
K=3
nats_start "$tmp/ns" $K 1

"$CONFIDE" gen --seed 5 --count 20000 --out "$tmp/tx.csv" --quiet
"$CONFIDE" keygen --dir "$tmp/keys" --parties $K >/dev/null
split_keys "$tmp/keys" "$tmp/k" $K
cat >"$tmp/p.yaml" <<EOF
protect: lsa
parties: $K
rules:
  file: $SRC/examples/rules.yaml
window:
  size_ms: 600000
  group_by: country,channel
audit:
  checkpoint_events: 2048
nats:
  servers: $NATS_URL
  ca_file: $NATS_CA
EOF

"$CONFIDE" run --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$tmp/emb" --keys "$tmp/keys" \
    --no-status >/dev/null 2>"$tmp/emb.err" || { cat "$tmp/emb.err" >&2; fail "embedded run"; }
[ "$(wc -l <"$tmp/emb/results.ndjson")" -gt 20 ] || fail "too few results to compare"

party() { # ID OUT: starts party ID in the background; its pid in $last
    "$CONFIDE" party --config "$tmp/p.yaml" --id "$1" --out "$2/p$1" --keys "$tmp/k/party$1" \
        --user "party$1" --password-file "$NATS_PW/party$1" >>"$2/p$1.log" 2>&1 &
    last=$!
    pids+=("$last")
}
combine() { # OUT
    "$CONFIDE" combine --config "$tmp/p.yaml" --out "$1/c" --keys "$tmp/k/combiner" \
        --user combiner --password-file "$NATS_PW/combiner" \
        --set output.nats_subject=confide.out >>"$1/c.log" 2>&1 &
    last=$!
    pids+=("$last")
}
gateway() { # OUT [run options...]
    local out=$1
    shift
    "$CONFIDE" gateway --config "$tmp/p.yaml" --input "$tmp/tx.csv" --out "$out/g" \
        --keys "$tmp/k/gateway" --no-status --set nats.user=gateway \
        --set output.nats_subject=confide.out \
        --set nats.password_file="$NATS_PW/gateway" "$@" >>"$out/g.log" 2>&1 &
    last=$!
    pids+=("$last")
}
same() { # OUT
    cmp "$tmp/emb/results.ndjson" "$1/c/results.ndjson" || fail "$1: results differ"
    cmp "$tmp/emb/late.ndjson" "$1/c/late.ndjson" || fail "$1: late records differ"
    cmp "$tmp/emb/alerts.ndjson" "$1/g/alerts.ndjson" || fail "$1: compliance alerts differ"
    "$CONFIDE" audit verify "$1/g/audit" --keys "$tmp/k/gateway" --json >"$tmp/verify.json" ||
        fail "$1: audit verify"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and d["completeness"]==1.0 and d["events"]==20000, d' \
        "$tmp/verify.json" || fail "$1: audit log incomplete"
    # The combiner signed what it released; an auditor recomputes it from the gateway's log.
    "$CONFIDE" audit verify-results "$1/c" --audit "$1/g/audit" --keys "$tmp/keys" \
        --json >"$tmp/vr.json" || fail "$1: verify-results: $(cat "$tmp/vr.json")"
}

# 1. A clean distributed run equals the embedded run.
o=$tmp/run1 && mkdir -p "$o"
for i in $(seq 0 $((K - 1))); do party "$i" "$o"; eval "p$i=$last"; done
combine "$o"; c=$last
gateway "$o" --stats-json; g=$last # the live stats render the gateway's own queues only
wait_ok "$g" "$o/g.log" gateway
for i in $(seq 0 $((K - 1))); do eval "wait_ok \$p$i $o/p$i.log party$i"; done
wait_ok "$c" "$o/c.log" combiner
same "$o"
[ ! -e "$o/p0/alerts.ndjson" ] && [ ! -e "$o/p0/results.ndjson" ] || fail "a party wrote outputs"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and d["released_rows"] > 20 and d["differences"] == 0, d' \
    "$tmp/vr.json" || fail "verify-results checked nothing: $(cat "$tmp/vr.json")"
# A changed released row no longer matches the combiner's signature.
cp -a "$o/c" "$tmp/forged"
sed -i '1s/"count":\([0-9]*\)/"count":9\1/' "$tmp/forged/results.ndjson"
cmp -s "$o/c/results.ndjson" "$tmp/forged/results.ndjson" && fail "the forgery changed nothing"
expect 4 "$CONFIDE" audit verify-results "$tmp/forged" --audit "$o/g/audit" --keys "$tmp/keys"
echo "ok: distributed run equals the embedded run; its signed results verify, a forged row does not"

# 2. Faults: one pipeline per stream set, so start from empty streams.
nats_stop
rm -rf "$tmp/ns/store1"
nats_start_node "$tmp/ns" 1
o=$tmp/run2 && mkdir -p "$o"
for i in $(seq 0 $((K - 1))); do party "$i" "$o"; eval "p$i=$last"; done
combine "$o"; c=$last
gateway "$o" --rate 4000; g=$last
wait_for "$o/p1/party-1.state" 20
kill -9 "$p1"; wait "$p1" 2>/dev/null || true
party 1 "$o"; p1=$last
wait_for "$o/c/combiner.state" 20
kill -9 "$c"; wait "$c" 2>/dev/null || true
combine "$o"; c=$last
sleep 1
kill -9 "$g"; wait "$g" 2>/dev/null || true
gateway "$o"; g=$last
wait_ok "$g" "$o/g.log" "restarted gateway"
for i in $(seq 0 $((K - 1))); do eval "wait_ok \$p$i $o/p$i.log party$i"; done
wait_ok "$c" "$o/c.log" "restarted combiner"
grep -q "resuming from the checkpoint" "$o/p1.log" || fail "party 1 did not resume"
grep -q "resuming from the checkpoint" "$o/c.log" || fail "the combiner did not resume"
grep -q "resuming:" "$o/g.log" || fail "the gateway did not resume"
same "$o"
echo "ok: kill -9 of a party, the combiner and the gateway: results identical, log complete"

# 3. Least privilege.
echo wrong >"$tmp/bad.pw" && chmod 600 "$tmp/bad.pw"
expect 2 "$CONFIDE" party --config "$tmp/p.yaml" --id 1 --out "$tmp/x1" --keys "$tmp/k/party1" \
    --user party1 --password-file "$tmp/bad.pw"
grep -q "Authorization Violation" "$tmp/err" || fail "wrong password: $(cat "$tmp/err")"
expect 2 "$CONFIDE" party --config "$tmp/p.yaml" --id 0 --out "$tmp/x2" --keys "$tmp/k/party0" \
    --user party1 --password-file "$NATS_PW/party1"
grep -q "Permissions Violation" "$tmp/err" || fail "party1 read party 0's shares: $(cat "$tmp/err")"
expect 2 "$CONFIDE" combine --config "$tmp/p.yaml" --out "$tmp/x3" --keys "$tmp/k/combiner" \
    --user party1 --password-file "$NATS_PW/party1"
grep -q "Permissions Violation" "$tmp/err" || fail "party1 read the partials: $(cat "$tmp/err")"
expect 3 "$CONFIDE" party --config "$tmp/p.yaml" --id 1 --out "$tmp/x4" --keys "$tmp/k/party1" \
    --user party1 --password-file "$NATS_PW/party1" --set nats.ca_file=
grep -q "SSL" "$tmp/err" || fail "no CA: $(cat "$tmp/err")"
expect 3 "$CONFIDE" party --config "$tmp/p.yaml" --id 1 --out "$tmp/x5" --keys "$tmp/k/party2" \
    --user party1 --password-file "$NATS_PW/party1"
grep -q "party-1.key" "$tmp/err" || fail "party 1 without its key: $(cat "$tmp/err")"
chmod 644 "$tmp/bad.pw"
expect 2 "$CONFIDE" party --config "$tmp/p.yaml" --id 1 --out "$tmp/x6" --keys "$tmp/k/party1" \
    --user party1 --password-file "$tmp/bad.pw"
# The attack the per-role permissions and inbox prefixes are for: with party 1's password,
# speak NATS directly (no confide code) and subscribe to party 0's shares subject, to party
# 0's deliveries and replies, and to every inbox. Each must be refused; party 1's own inbox
# must not be (so the check can tell the two apart).
python3 - "${NATS_URL%%,*}" "$NATS_CA" "$(cat "$NATS_PW/party1")" <<'PY' || fail "party 1 could listen to another role"
import json, socket, ssl, sys
url, ca, pw = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = url.split("//")[1].split(":")
raw = socket.create_connection((host, int(port)), 5)
f = raw.makefile("rb")
assert f.readline().startswith(b"INFO ")
ctx = ssl.create_default_context(cafile=ca)
tls = ctx.wrap_socket(raw, server_hostname=host)
r = tls.makefile("rb")
def send(line):
    tls.sendall(line.encode() + b"\r\n")
def until_pong():
    got = []
    while True:
        l = r.readline().decode().strip()
        if l == "PONG":
            return got
        if l != "PING":
            got.append(l)
send("CONNECT " + json.dumps({"user": "party1", "pass": pw, "verbose": False,
                              "pedantic": False, "tls_required": True}))
send("PING")
assert until_pong() == [], "party 1 could not even connect"
def refused(subject, sid):
    send(f"SUB {subject} {sid}")
    send("PING")
    return any("Permissions Violation" in l for l in until_pong())
for i, subj in enumerate(["confide.shares.0", "_INBOX.confide-party-0.>", "_INBOX.>",
                          "confide.partials.0", "confide.groups", "confide.handover.0.>",
                          "confide.handover.0.1"], 1):
    assert refused(subj, i), "party 1 may subscribe to " + subj
assert not refused("_INBOX.confide-party-1.x", 99), "party 1's own inbox refused"
# Party 0's window state moves over its handover stream at a rescale: party 1 may neither
# read it (above) nor write into it, nor into anything party 0 reads.
def pub_refused(subject):
    send(f"PUB {subject} 2")
    send("hi")
    send("PING")
    return any("Permissions Violation for Publish" in l for l in until_pong())
for subj in ["confide.handover.0.1", "confide.shares.0", "confide.partials.0",
             "confide.control.rescale"]:
    assert pub_refused(subj), "party 1 may publish to " + subj
assert not pub_refused("confide.handover.1.1"), "party 1's own handover refused"
PY
echo "ok: wrong credentials, another party's subjects, no CA, wrong keys refused"

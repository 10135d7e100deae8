# NATS JetStream servers for the distributed tests (sourced; not a test). Needs $tmp and $SRC.
# nats_test_init: the common start of such a test -- the NATS_PID map, the pids of the roles
# it starts (append to pids), and a trap that kills them, stops the servers and removes $tmp
# (KEEP=1 keeps it); skips when nats-server is missing.
# nats_start DIR PARTIES NODES: writes TLS certificates, per-role passwords and configs with
# scripts/nats-setup.sh on free ports, starts the nodes, and sets NATS_URL (every node),
# NATS_CA, NATS_PW (password dir) and NATS_PIDS. Skips (77) when nats-server is missing,
# unless CI=true, where that is a failure.
nats_require() {
    if ! command -v nats-server >/dev/null; then
        [ "${CI:-}" = true ] && { echo "FAIL: nats-server missing (scripts/setup.sh)" >&2; exit 1; }
        echo "SKIP: nats-server not installed (bash scripts/setup.sh installs it)"
        exit 77
    fi
}

nats_free_base() { # a base port with base..base+2 and base+100..base+102 free
    python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    b = random.randrange(20000, 40000)
    if all(free(b + d) for d in (0, 1, 2, 100, 101, 102)):
        print(b); break
PY
}

nats_start_node() { # DIR N: (re)starts node N, waits until it accepts connections
    local dir=$1 n=$2 port
    port=$(sed -n 's/^listen: 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/node$n.conf")
    nats-server -c "$dir/node$n.conf" >>"$dir/node$n.log" 2>&1 &
    NATS_PID[$n]=$!
    for _ in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    cat "$dir/node$n.log" >&2
    echo "FAIL: nats-server node $n did not start" >&2
    exit 1
}

nats_start() {
    local dir=$1 parties=$2 nodes=$3 base
    base=$(nats_free_base)
    bash "$SRC/scripts/nats-setup.sh" "$dir" --parties "$parties" --port "$base" --nodes "$nodes" \
        --workers "${NATS_WORKERS:-1}"
    NATS_URL=""
    for ((n = 1; n <= nodes; n++)); do
        nats_start_node "$dir" "$n"
        NATS_URL+="tls://127.0.0.1:$((base + n - 1)),"
    done
    NATS_URL=${NATS_URL%,}
    NATS_CA=$dir/tls/ca.pem
    NATS_PW=$dir/pw
    NATS_DIR=$dir
    NATS_NODES=$nodes
}

nats_stop() {
    local n
    for n in "${!NATS_PID[@]}"; do
        kill "${NATS_PID[$n]}" 2>/dev/null || true
        wait "${NATS_PID[$n]}" 2>/dev/null || true
    done
}

# Per-role key directories holding only what each role loads (least privilege).
split_keys() { # KEYDIR OUTDIR PARTIES
    local k=$1 o=$2 parties=$3 i
    mkdir -p -m 700 "$o/gateway" "$o/combiner"
    cp -p "$k"/{gateway,pseudonym,data,signing}.key "$k/signing.pub" "$o/gateway/"
    cp -p "$k/combiner.key" "$k/results.key" "$o/combiner/"
    for ((i = 0; i < parties; i++)); do
        mkdir -p -m 700 "$o/party$i"
        [ "$i" -eq 0 ] || cp -p "$k/party-$i.key" "$o/party$i/"
    done
}

# wait_ok PID LOG WHAT: waits for a role; its log and a failure when it did not exit 0.
wait_ok() { # PID LOG WHAT
    wait "$1" || { cat "$2" >&2; fail "$3 exited with $?"; }
}

# wait_for FILE SECONDS: until FILE exists (a role's state file: it reached a checkpoint).
wait_for() { # FILE SECONDS
    for _ in $(seq $(($2 * 10))); do [ -e "$1" ] && return 0; sleep 0.1; done
    fail "$1 did not appear"
}

nats_test_init() {
    declare -gA NATS_PID=()
    pids=()
    trap nats_test_cleanup EXIT
    nats_require
}

nats_test_cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    nats_stop
    if [ -n "${KEEP:-}" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}

# shuffle_near CSV SEED: swaps rows with rows 20..280 further on (header kept), so that
# events arrive out of order and lateness and late records are exercised.
shuffle_near() {
    python3 - "$1" "$2" <<'PY'
import random, sys
p = sys.argv[1]
lines = open(p).read().splitlines(True)
head, rows = lines[0], lines[1:]
random.seed(int(sys.argv[2]))
for i in range(7, len(rows) - 300, 25):
    j = i + random.randint(20, 280)
    rows[i], rows[j] = rows[j], rows[i]
open(p, "w").write(head + "".join(rows))
PY
}

# same_as_embedded EMB OUT GWKEYS [KEYS]: the distributed run under OUT (combiner in OUT/c,
# gateway in OUT/g) released what the embedded run in EMB did: results and late records
# (sorted: workers release in their own order), alerts, a complete audit log; with KEYS
# (the full key directory) verify-results recomputes the combiner's signed output too.
same_as_embedded() {
    local emb=$1 out=$2
    cmp <(sort "$emb/results.ndjson") <(sort "$out/c/results.ndjson") || fail "$out: results differ"
    cmp <(sort "$emb/late.ndjson") <(sort "$out/c/late.ndjson") || fail "$out: late records differ"
    cmp "$emb/alerts.ndjson" "$out/g/alerts.ndjson" || fail "$out: compliance alerts differ"
    "$CONFIDE" audit verify "$out/g/audit" --keys "$3" --json >"$tmp/verify.json" ||
        fail "$out: audit verify"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and d["completeness"]==1.0, d' \
        "$tmp/verify.json" || fail "$out: audit log incomplete"
    if [ -n "${4:-}" ]; then
        "$CONFIDE" audit verify-results "$out/c" --audit "$out/g/audit" --keys "$4" \
            >"$tmp/vr.out" 2>&1 || { cat "$tmp/vr.out" >&2; fail "$out: verify-results"; }
    fi
}

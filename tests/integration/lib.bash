# Helpers sourced by the integration scripts (*.sh are the tests; this is not one).
# Needs $tmp set by the caller.
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect CODE cmd...: runs cmd with stdout/stderr into $tmp/out and $tmp/err, fails unless it
# exits with CODE (printing both on failure).
expect() {
    local want=$1
    shift
    set +e
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    set -e
    [ "$got" = "$want" ] || { sed 's/^/  | /' "$tmp/out" "$tmp/err" >&2; fail "exit $got (want $want): $*"; }
}
# kill_at_tree_size HEADS PID SIZE: SIGKILL process PID once the last signed head in HEADS
# (a tree_heads.ndjson) covers more than SIZE events: a crash at a known point of the input,
# not after a sleep a loaded machine can stretch. Exit 0 when it killed, 1 when PID ended
# first or the size was not reached within a minute.
kill_at_tree_size() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, os, signal, sys, time
heads, pid, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(6000):
    try:
        lines = open(heads).read().splitlines()
    except OSError:
        lines = []
    size = 0  # of the last complete line (stdio writes the file in 4 KiB pieces)
    for l in reversed(lines[-2:]):
        try:
            size = json.loads(l)["tree_size"]
            break
        except (ValueError, KeyError):
            pass
    if size > at:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            sys.exit(1)  # it finished first
        sys.exit(0)
    time.sleep(0.01)
sys.exit(1)
PY
}

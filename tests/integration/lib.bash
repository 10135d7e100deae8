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

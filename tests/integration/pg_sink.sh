#!/usr/bin/env bash
# The PostgreSQL sink (output.postgres.*, docs/runtime.md "PostgreSQL sink"), against a
# throwaway server (initdb + pg_ctl in a temporary directory, a free loopback port, password
# login over TCP):
#  - an uninterrupted run: every line of results/alerts/late.ndjson is one row, at its byte
#    offset, typed columns filled, the offsets row at the files' ends;
#  - kill -9 at random points (TRIALS, default 6, once or twice each), then the same command:
#    the tables hold exactly the files' lines (nothing lost, nothing twice) and the same
#    multiset as the uninterrupted run;
#  - a rerun of a finished run (the tables are then ahead of the last checkpoint): still equal;
#  - the database stopped mid-run: exit 3 naming output.postgres; restarted, the same command
#    catches the tables up from the files;
#  - a wrong password, a database that is down, a password in the conninfo, a password file
#    readable by others: refused with a clear error, the password never printed;
#  - an integrity alert (a tampering party) lands typed in the alerts table.
# Skips with a reason when the server binaries are missing or, as root, there is no postgres
# user to run the server (initdb refuses root); fails instead when CI=true.
set -euo pipefail
CONFIDE=$1
SRC=$2
TRIALS=${TRIALS:-6}
SEED=${SEED:-$$}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
skip() {
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $* (CI=true: required)" >&2
        exit 1
    fi
    echo "SKIP: $*"
    exit 77
}
[ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pg_ctl" ] ||
    skip "no PostgreSQL server in $PGBIN (scripts/setup.sh installs postgresql)"
command -v psql >/dev/null || skip "no psql (postgresql-client)"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 ||
        skip "running as root and there is no postgres user to run the server (initdb refuses root)"
    as_pg=(runuser -u postgres --)
fi
tmp=$(mktemp -d)
cleanup() {
    kill -9 $(jobs -p) 2>/dev/null || true
    if [ -f "$tmp/pg/data/postmaster.pid" ]; then
        "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$tmp/pg/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM # ctest timeouts too: the server is stopped
. "$SRC/tests/integration/lib.bash"
fail() { echo "FAIL (seed $SEED, trial ${trial:-0}): $*" >&2; exit 1; }

# ---- the throwaway server ----
chmod 711 "$tmp" # the server's user reaches its directories below
mkdir "$tmp/pg" "$tmp/sock"
pw="pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$pw" >"$tmp/pg/pwfile"
[ ${#as_pg[@]} -eq 0 ] || chown -R postgres "$tmp/pg" "$tmp/sock"
"${as_pg[@]}" "$PGBIN/initdb" -D "$tmp/pg/data" -U confide --pwfile="$tmp/pg/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; fail "initdb failed"; }
rm -f "$tmp/pg/pwfile"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_db() {
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp/sock -c fsync=off" start >/dev/null ||
        { cat "$tmp/pg/log" >&2; fail "the server did not start"; }
}
stop_db() { "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$tmp/pg/data" -m immediate -w stop >/dev/null; }
start_db
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$tmp/sock" -p "$port" -U confide -d postgres "$@"; }
printf '%s\n' "$pw" >"$tmp/pw"
chmod 600 "$tmp/pw"
conninfo="host=127.0.0.1 port=$port user=confide dbname=postgres"
PG=(--set "output.postgres.conninfo=$conninfo" --set "output.postgres.password_file=$tmp/pw")

# ---- input: a day, with a few events moved to the end (late records) ----
"$CONFIDE" gen --seed 5 --days 1 --customers 3000 --terminals 6000 --out "$tmp/gen.csv" --quiet
python3 - "$tmp/gen.csv" "$tmp/day.csv" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines(True)
head, rows = lines[0], lines[1:]
late = rows[200:206]  # hours behind the watermark at the end: late.ndjson
open(sys.argv[2], "w").write(head + "".join(rows[:200] + rows[206:] + late))
PY
"$CONFIDE" keygen --dir "$tmp/keys" --parties 2 >/dev/null
total=$(($(wc -l <"$tmp/day.csv") - 1))
common=(--input "$tmp/day.csv" --keys "$tmp/keys" --rules "$SRC/examples/rules.yaml"
        --group-by country --set audit.checkpoint_events=700 --set pipeline.batch_max=128 "${PG[@]}")
tumbling=(--window-ms 300000)
sliding=(--window-ms 1800000 --set window.slide_ms=300000 --set window.lateness_ms=60000)

stream_of() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["log_id"])' "$1/tree_heads.ndjson"; }

# check_db OUT: the tables hold exactly OUT's lines (each at its byte offset), the typed
# columns agree with the lines, and the offsets row is at the files' ends. Writes the sorted
# canonical lines of each table to OUT.KIND.rows for multiset comparisons.
check_db() {
    local out=$1 s
    s=$(stream_of "$out")
    for kind in results alerts late; do
        sql -c "SELECT pos, line::text FROM confide_$kind WHERE stream = '$s' ORDER BY pos" \
            >"$out.$kind.db"
        python3 - "$out/$kind.ndjson" "$out.$kind.db" "$out.$kind.rows" <<'PY' || fail "$kind table != $out/$kind.ndjson"
import json, sys
canon = lambda t: json.dumps(json.loads(t), sort_keys=True, separators=(",", ":"))
want, pos = [], 0
for line in open(sys.argv[1], "rb").read().splitlines(True):
    want.append((pos, canon(line)))
    pos += len(line)
got = []
for row in open(sys.argv[2]).read().splitlines():
    p, _, text = row.partition("|")
    got.append((int(p), canon(text)))
if got != want:
    print(f"{sys.argv[1]}: file {len(want)} lines, table {len(got)} rows; first difference:",
          next(((a, b) for a, b in zip(want, got) if a != b), "(length)"), file=sys.stderr)
    sys.exit(1)
open(sys.argv[3], "w").write("".join(sorted(t + "\n" for _, t in got)))
PY
    done
    local sizes want_sizes
    sizes=$(sql -c "SELECT alerts_pos, results_pos, late_pos, events_through FROM confide_offsets WHERE stream = '$s'")
    want_sizes="$(stat -c %s "$out/alerts.ndjson")|$(stat -c %s "$out/results.ndjson")|$(stat -c %s "$out/late.ndjson")|$total"
    [ "$sizes" = "$want_sizes" ] || fail "offsets row $sizes, files and events $want_sizes"
    # typed columns against the lines as Python reads them
    local typed want_typed
    typed=$(sql -c "SELECT count(*), coalesce(sum(count), 0), coalesce(sum(sum_minor), 0),
                           coalesce(sum(extract(epoch FROM window_start))::bigint, 0),
                           coalesce(string_agg(DISTINCT currency, ','), ''),
                           count(*) FILTER (WHERE group_key ? 'country' AND verified)
                    FROM confide_results WHERE stream = '$s'")
    typed="$typed/$(sql -c "SELECT count(*), coalesce(sum(event_id), 0), count(ts)
                            FROM confide_alerts WHERE stream = '$s' AND kind = 'compliance'")"
    typed="$typed/$(sql -c "SELECT count(*), coalesce(sum(event_index), 0), count(watermark),
                                   coalesce(string_agg(DISTINCT reason, ','), '')
                            FROM confide_late WHERE stream = '$s'")"
    want_typed=$(python3 - "$out" <<'PY'
import calendar, json, sys, time
rd = lambda k: [json.loads(l) for l in open(f"{sys.argv[1]}/{k}.ndjson")]
r = rd("results")
ep = lambda t: calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))
print(f"{len(r)}|{sum(x['count'] for x in r)}|{sum(x['sum_minor'] for x in r)}|"
      f"{sum(ep(x['window_start']) for x in r)}|{','.join(sorted({x['currency'] for x in r}))}|"
      f"{sum(1 for x in r if 'country' in x['group'] and x['verified'])}", end="/")
a = [x for x in rd("alerts") if x["kind"] == "compliance"]
print(f"{len(a)}|{sum(x['event_id'] for x in a)}|{len(a)}", end="/")
l = rd("late")
print(f"{len(l)}|{sum(x['index'] for x in l)}|{len(l)}|{','.join(sorted({x['reason'] for x in l}))}")
PY
)
    [ "$typed" = "$want_typed" ] || fail "typed columns $typed, lines say $want_typed"
}
same_rows() { # OUT REF: the same multiset of rows in every table
    for kind in results alerts late; do
        cmp -s "$1.$kind.rows" "$2.$kind.rows" || fail "$kind table of $1 differs from $2's"
    done
}

# ---- uninterrupted references ----
"$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$tmp/ref1" --json >/dev/null 2>"$tmp/err" ||
    fail "reference run: $(cat "$tmp/err")"
"$CONFIDE" run "${common[@]}" "${sliding[@]}" --out "$tmp/ref0" --json >/dev/null 2>"$tmp/err" ||
    fail "reference run: $(cat "$tmp/err")"
check_db "$tmp/ref1"
check_db "$tmp/ref0"
[ "$(wc -l <"$tmp/ref1/late.ndjson")" -gt 0 ] || fail "no late records: the late table is untested"
[ "$(wc -l <"$tmp/ref1/alerts.ndjson")" -gt 0 ] || fail "no alerts"
echo "reference runs: $(wc -l <"$tmp/ref1/results.ndjson") results, $(wc -l <"$tmp/ref1/alerts.ndjson") alerts, $(wc -l <"$tmp/ref1/late.ndjson") late rows; tables equal the files"

# ---- the sink's metrics (docs/metrics.md): a fresh run, scraped once it ended ----
"$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$tmp/m" --metrics 127.0.0.1:0 --metrics-hold \
    --json >"$tmp/m.json" 2>"$tmp/m.err" &
mpid=$!
python3 - "$tmp" "$total" <<'PY' || fail "metrics of the sink (see above)"
import re, sys, time, urllib.request
tmp, total = sys.argv[1], int(sys.argv[2])
for _ in range(6000):  # --metrics-hold: the final state is served once the summary is out
    m = re.search(r"metrics at (http://[^ ]+)/metrics", open(tmp + "/m.err").read())
    if m and open(tmp + "/m.json").read().strip():
        break
    time.sleep(0.02)
else:
    sys.exit("the run did not finish: " + open(tmp + "/m.err").read())
body = urllib.request.urlopen(m.group(1) + "/metrics", timeout=10).read().decode()
def value(series):
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    sys.exit("series missing from the scrape: " + series)
for kind in ("results", "alerts", "late"):
    lines = sum(1 for _ in open(f"{tmp}/m/{kind}.ndjson"))
    got = value('confide_pg_rows_total{table="%s"}' % kind)
    if got != lines:
        sys.exit(f"confide_pg_rows_total{{table={kind}}} = {got}, the file has {lines} lines")
if value("confide_pg_events_through") != total or value("confide_pg_failed") != 0:
    sys.exit("confide_pg_events_through / confide_pg_failed wrong")
if value("confide_pg_transactions_total") < 2:
    sys.exit("fewer transactions than checkpoints")
PY
kill -TERM "$mpid"
{ wait "$mpid"; } 2>/dev/null || true
check_db "$tmp/m"
echo "metrics: confide_pg_rows_total by table = the files' lines, events_through = $total"

# ---- a finished run again: the tables are past the last checkpoint, recovery cuts them ----
for kind in results alerts late; do cp "$tmp/ref1.$kind.rows" "$tmp/first.$kind.rows"; done
"$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$tmp/ref1" --json >/dev/null 2>"$tmp/err" ||
    fail "rerun: $(cat "$tmp/err")"
grep -q "output.postgres: .*ahead of the audit log's last checkpoint" "$tmp/err" ||
    fail "the rerun did not find the tables ahead of the checkpoint: $(cat "$tmp/err")"
check_db "$tmp/ref1"
same_rows "$tmp/ref1" "$tmp/first"
echo "rerun of a finished run: rows past the checkpoint replaced, tables unchanged"

# ---- kill -9 at random points ----
RANDOM=$SEED
for trial in $(seq 1 "$TRIALS"); do
    out="$tmp/t$trial"
    if [ $((trial % 2)) -eq 1 ]; then args=("${common[@]}" "${tumbling[@]}"); else args=("${common[@]}" "${sliding[@]}"); fi
    kills=$((1 + RANDOM % 2))
    for k in $(seq 1 $kills); do
        # paced (~1 s) so that the kill lands mid-stream: at a random audit-log size
        "$CONFIDE" run "${args[@]}" --out "$out" --rate 4000 >/dev/null 2>&1 &
        pid=$!
        kill_at_tree_size "$out/tree_heads.ndjson" "$pid" $((100 + RANDOM % (total - 400))) 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    s=$("$CONFIDE" run "${args[@]}" --out "$out" --json 2>"$tmp/err") || fail "restart failed: $(cat "$tmp/err")"
    check_db "$out"
    same_rows "$out" "$tmp/ref$((trial % 2))"
    echo "trial $trial: $kills kill(s), resumed at $(echo "$s" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resumed"])') of $total: tables identical"
done

# ---- the database goes away mid-run, comes back ----
out="$tmp/down"
"$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$out" --rate 2000 >/dev/null 2>"$tmp/down.err" &
pid=$!
python3 - "$out/tree_heads.ndjson" <<'PY' || fail "the run did not get going"
import json, sys, time
for _ in range(6000):
    try:
        if json.loads(open(sys.argv[1]).read().splitlines()[-2])["tree_size"] > 1500:
            sys.exit(0)
    except (OSError, IndexError, ValueError):
        pass
    time.sleep(0.01)
sys.exit(1)
PY
stop_db
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" = 3 ] || fail "database stopped mid-run: exit $rc (want 3): $(cat "$tmp/down.err")"
grep -q "output.postgres" "$tmp/down.err" || fail "the error does not name the sink: $(cat "$tmp/down.err")"
! grep -qF "$pw" "$tmp/down.err" || fail "the password is in the error output"
start_db
"$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$out" --json >/dev/null 2>"$tmp/err" ||
    fail "run after the database came back: $(cat "$tmp/err")"
check_db "$out"
same_rows "$out" "$tmp/ref1"
echo "database stopped mid-run: exit 3 ($(grep -o 'output.postgres.*' "$tmp/down.err" | head -1 | cut -c1-100)...); caught up after"

# ---- refusals ----
printf 'wrong-%s\n' "$pw" >"$tmp/badpw"
chmod 600 "$tmp/badpw"
expect 2 "$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/x1" --keys "$tmp/keys" \
    --set "output.postgres.conninfo=$conninfo" --set "output.postgres.password_file=$tmp/badpw"
grep -q "output.postgres: the database refused the login: .*password authentication failed" "$tmp/err" ||
    fail "wrong password: $(cat "$tmp/err")"
! grep -qF "$pw" "$tmp/err" "$tmp/out" || fail "the password is in the output"
expect 2 "$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/x2" --keys "$tmp/keys" \
    --set "output.postgres.conninfo=host=127.0.0.1 port=1 user=confide dbname=postgres connect_timeout=5" \
    --set "output.postgres.password_file=$tmp/pw"
grep -q "output.postgres: cannot connect to the database" "$tmp/err" || fail "database down: $(cat "$tmp/err")"
expect 2 "$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/x3" --keys "$tmp/keys" \
    --set "output.postgres.conninfo=$conninfo password=$pw"
grep -q "output.postgres.conninfo holds a password" "$tmp/err" || fail "password in conninfo: $(cat "$tmp/err")"
! grep -qF "$pw" "$tmp/err" || fail "the password is in the output"
[ ! -e "$tmp/x3" ] || fail "a refused config still created the output directory"
chmod 644 "$tmp/badpw"
expect 2 "$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/x4" --keys "$tmp/keys" \
    --set "output.postgres.conninfo=$conninfo" --set "output.postgres.password_file=$tmp/badpw"
grep -q "output.postgres.password_file: .* is readable by others" "$tmp/err" || fail "0644 password file: $(cat "$tmp/err")"
expect 2 "$CONFIDE" run --input "$tmp/day.csv" --out "$tmp/x5" --keys "$tmp/keys" "${PG[@]}" \
    --set output.results_format=csv
grep -q "output.results_format: ndjson" "$tmp/err" || fail "csv results: $(cat "$tmp/err")"
echo "refused: wrong password, database down, password in the conninfo, password file 0644, csv results"

# ---- an integrity alert, typed ----
expect 4 "$CONFIDE" run "${common[@]}" "${tumbling[@]}" --out "$tmp/tamper" --set debug.tamper_party=1 --json
check_db "$tmp/tamper"
s=$(stream_of "$tmp/tamper")
got=$(sql -c "SELECT count(*) FROM confide_alerts WHERE stream = '$s' AND kind = 'integrity'
              AND party = 1 AND window_start < window_end AND rule_id = 'integrity'")
[ "$got" = 1 ] || fail "integrity alert rows: $got"
echo "integrity alert typed in the alerts table"
echo "ok: pg_sink ($TRIALS trials, seed $SEED)"

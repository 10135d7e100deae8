#!/usr/bin/env bash
# Writes everything a local NATS JetStream deployment for confide needs into DIR:
#   DIR/tls/ca.pem, server.pem, server.key   a private CA and a server certificate for
#                                             127.0.0.1/localhost (OpenSSL CLI, EC P-256)
#   DIR/pw/<user>                             one random password per role (mode 0600)
#   DIR/node<N>.conf                          nats-server configs: TLS, JetStream, users
#                                             with least-privilege subject permissions
# Roles and what they may do (docs/distributed.md):
#   gateway   publish PREFIX.shares.* and PREFIX.groups; create those streams
#   partyI    read PREFIX.shares.I only; publish PREFIX.partials.I only (with --workers W,
#             worker w >= 1 reads PREFIX.shares.I.w and publishes PREFIX.partials.I.w);
#             publish and read PREFIX.handover.I.> (window state moved by a rescale)
#   combiner  read PREFIX.partials.* and PREFIX.groups; publish nothing
#   autoscale read PREFIX.stats.> (the roles' live statistics); request
#             PREFIX.control.rescale (the gateway answers); `confide autoscale`
#   admin     everything (operators, `nats` CLI); not used by confide
#   producer  publish PREFIX.in (the gateway's input.nats_subject, `confide gen --nats`)
#             into CONFIDE_IN; the gateway may read it
#   (with output.nats_subject OUT: the gateway may publish OUT.alerts, the combiner
#   OUT.results, OUT.late and OUT.alerts; --out-subject, default PREFIX.out)
# Usage: scripts/nats-setup.sh DIR [--parties K] [--port P] [--nodes N] [--prefix confide]
#                              [--out-subject SUBJECT] [--workers W (most per party)]
#        then: nats-server -c DIR/node1.conf   (and node2, node3 for --nodes 3)
set -euo pipefail

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

dir=""
parties=2
port=4222
nodes=1
prefix=confide
out=""
workers=1
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --parties) parties="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --out-subject) out="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    -*) echo "nats-setup: unknown option $1" >&2; exit 2 ;;
    *) dir="$1"; shift ;;
    esac
done
[ -n "$dir" ] || { usage >&2; exit 2; }
case "$parties" in [2-8]) ;; *) echo "nats-setup: --parties is 2..8" >&2; exit 2 ;; esac
case "$nodes" in 1 | 3) ;; *) echo "nats-setup: --nodes is 1 or 3" >&2; exit 2 ;; esac
case "$workers" in [1-9] | 1[0-6]) ;; *) echo "nats-setup: --workers is 1..16" >&2; exit 2 ;; esac
up=$(echo "$prefix" | tr 'a-z.' 'A-Z_')
out=${out:-$prefix.out}

umask 077
mkdir -p "$dir/tls" "$dir/pw"

# ---- TLS: a CA and one server certificate valid for 127.0.0.1 and localhost ----
if [ ! -f "$dir/tls/server.pem" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/tls/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$dir/tls/ca.key" -days 3650 -subj "/CN=confide test CA" \
        -out "$dir/tls/ca.pem" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/tls/server.key" 2>/dev/null
    openssl req -new -key "$dir/tls/server.key" -subj "/CN=localhost" \
        -out "$dir/tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
        >"$dir/tls/ext.cnf"
    openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$dir/tls/ext.cnf" -out "$dir/tls/server.pem" \
        2>/dev/null
    chmod 644 "$dir/tls/ca.pem" "$dir/tls/server.pem"
fi

# ---- one password per role ----
users=(gateway combiner admin producer autoscale)
for ((i = 0; i < parties; i++)); do users+=("party$i"); done
for u in "${users[@]}"; do
    [ -f "$dir/pw/$u" ] || openssl rand -hex 24 >"$dir/pw/$u"
done
pw() { cat "$dir/pw/$1"; }

# JetStream API subjects a role needs for its own streams only.
api_stream() { # stream name -> info and create
    printf '"$JS.API.STREAM.INFO.%s", "$JS.API.STREAM.CREATE.%s", ' "$1" "$1"
}
api_last() { # stream -> read its last message (a restarted sender skips what it published)
    printf '"$JS.API.STREAM.MSG.GET.%s", ' "$1"
}
api_consume() { # stream -> create/delete/info its ephemeral consumers, ack its messages
    printf '"$JS.API.CONSUMER.CREATE.%s", "$JS.API.CONSUMER.CREATE.%s.>", ' "$1" "$1"
    printf '"$JS.API.CONSUMER.DELETE.%s.*", "$JS.API.CONSUMER.INFO.%s.*", ' "$1" "$1"
    printf '"$JS.ACK.%s.>", ' "$1"
}

# The shares/partials streams of party I's workers: worker 0's is ..._I, worker W's ..._I_W;
# --workers is the most a party may have (a rescale activates idle ones).
slot_streams() { # KIND I
    local w
    echo "${up}_$1_$2"
    for ((w = 1; w < workers; w++)); do echo "${up}_$1_$2_$w"; done
}

users_block() {
    local gw_pub="" party="" comb_pub="" i st
    for ((i = 0; i < parties; i++)); do
        for st in $(slot_streams SHARES "$i"); do
            gw_pub+=$(api_stream "$st")$(api_last "$st")
        done
    done
    gw_pub+=$(api_stream "${up}_GROUPS")$(api_last "${up}_GROUPS")$(api_stream "${up}_OUT")
    gw_pub+=$(api_stream "${up}_IN")$(api_consume "${up}_IN")
    echo "    { user: gateway, password: \"$(pw gateway)\", permissions: {"
    echo "        publish: { allow: [\"$prefix.shares.*\", \"$prefix.shares.*.*\", \"$prefix.groups\", \"$out.alerts\", \"$prefix.stats.gateway\", \"_INBOX.confide-autoscale.>\", \"\$JS.API.INFO\", ${gw_pub%, }] }"
    echo "        subscribe: { allow: [\"_INBOX.confide-gateway.>\", \"$prefix.control.rescale\"] } } }"
    for ((i = 0; i < parties; i++)); do
        party=""
        for st in $(slot_streams SHARES "$i"); do party+=$(api_stream "$st")$(api_consume "$st"); done
        for st in $(slot_streams PARTIALS "$i"); do party+=$(api_stream "$st")$(api_last "$st"); done
        party+=$(api_stream "${up}_HANDOVER_$i")$(api_consume "${up}_HANDOVER_$i")
        echo "    { user: party$i, password: \"$(pw party$i)\", permissions: {"
        echo "        publish: { allow: [\"$prefix.partials.$i\", \"$prefix.partials.$i.*\", \"$prefix.handover.$i.>\", \"$prefix.stats.$i.>\", \"\$JS.API.INFO\", ${party%, }] }"
        echo "        subscribe: { allow: [\"_INBOX.confide-party-$i.>\"] } } }"
    done
    for ((i = 0; i < parties; i++)); do
        for st in $(slot_streams PARTIALS "$i"); do
            comb_pub+=$(api_stream "$st")$(api_consume "$st")
        done
    done
    comb_pub+=$(api_stream "${up}_GROUPS")$(api_consume "${up}_GROUPS")$(api_stream "${up}_OUT")
    echo "    { user: combiner, password: \"$(pw combiner)\", permissions: {"
    echo "        publish: { allow: [\"$out.results\", \"$out.late\", \"$out.alerts\", \"\$JS.API.INFO\", ${comb_pub%, }] }"
    echo "        subscribe: { allow: [\"_INBOX.confide-combiner.>\"] } } }"
    echo "    { user: producer, password: \"$(pw producer)\", permissions: {"
    echo "        publish: { allow: [\"$prefix.in\", \"\$JS.API.INFO\", $(api_stream "${up}_IN")\"\$JS.API.STREAM.INFO.${up}_IN\"] }"
    echo "        subscribe: { allow: [\"_INBOX.confide-gen.>\"] } } }"
    echo "    { user: autoscale, password: \"$(pw autoscale)\", permissions: {"
    echo "        publish: { allow: [\"$prefix.control.rescale\"] }"
    echo "        subscribe: { allow: [\"$prefix.stats.>\", \"_INBOX.confide-autoscale.>\"] } } }"
    echo "    { user: admin, password: \"$(pw admin)\" }"
}

for ((n = 1; n <= nodes; n++)); do
    client=$((port + n - 1))
    conf="$dir/node$n.conf"
    {
        echo "# confide: generated by scripts/nats-setup.sh (node $n of $nodes)"
        echo "server_name: confide-n$n"
        echo "listen: 127.0.0.1:$client"
        echo "jetstream { store_dir: \"$dir/store$n\" }"
        echo "tls { cert_file: \"$dir/tls/server.pem\", key_file: \"$dir/tls/server.key\", timeout: 5 }"
        echo "authorization { users = ["
        users_block
        echo "] }"
        if [ "$nodes" -gt 1 ]; then
            routes=""
            for ((m = 1; m <= nodes; m++)); do
                [ "$m" -eq "$n" ] || routes+="nats-route://127.0.0.1:$((port + 100 + m - 1)), "
            done
            echo "cluster { name: confide, listen: 127.0.0.1:$((port + 100 + n - 1)), routes: [${routes%, }] }"
        fi
    } >"$conf"
done

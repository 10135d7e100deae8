#!/usr/bin/env bash
# Installs, with apt-get, only the Debian 12 packages confide needs that are missing.
# Idempotent: a second run installs nothing. Every package the project needs is listed here.
set -euo pipefail

PACKAGES=(
    build-essential     # gcc, make
    cmake               # build system (>= 3.20)
    pkg-config
    clang               # libFuzzer targets and sanitizer builds
    libclang-rt-14-dev  # clang's sanitizer and fuzzer runtimes
    libsodium-dev       # ChaCha20, BLAKE2b, XChaCha20-Poly1305, Ed25519, secure memory
    libssl-dev          # SHA-256 (EVP), bignum
    libgmp-dev          # Paillier baseline
    libyaml-dev         # configuration files
    libmicrohttpd-dev   # /metrics and /healthz
    libnats-dev         # NATS JetStream client (distributed mode)
    nats-server         # JetStream server: distributed tests, demo and benchmarks
    openssl             # TLS certificates for the NATS servers (scripts/nats-certs.sh)
    prometheus          # promtool, to check the live /metrics scrape
    gnuplot-nox         # benchmark plots
    python3             # small test helpers
    tzdata              # IANA time zones for business days (rules: time_zone)
    chromium            # headless browser: the console and audit report tests
    chromium-driver     # WebDriver for chromium (optional browser automation)
    fonts-dejavu-core   # a font for headless chromium's screenshots
    libpq-dev           # PostgreSQL client library: the output.postgres sink
    postgresql          # PostgreSQL server: the sink's tests and benchmark (throwaway clusters)
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

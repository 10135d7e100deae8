#!/usr/bin/env bash
# Crash-recovery soak: many more kill -9 trials than ctest runs, with fresh seeds.
# usage: scripts/soak-crash.sh [ROUNDS] [TRIALS_PER_ROUND]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
trials=${2:-50}
for r in $(seq 1 "$rounds"); do
    SEED=$((RANDOM * 32768 + RANDOM)) TRIALS=$trials \
        bash tests/integration/crash_recovery.sh build/confide "$PWD" | tail -1
done

#!/usr/bin/env bash
# The wake/sleep sweep of BENCHMARKS.md §1: one epoch of 784-500-500 per run, every sleep method
# at cycle lengths 16, 100, 1 000 and 10 000, beside interleaved. Appends one JSON line per run
# (ffd train's summary, plus the run's arguments) to OUT.
#
#   bench/sleep_sweep.sh MNIST_DIR OUT [SEEDS] [METHODS] [CYCLES]
#
# SEEDS defaults to "1", METHODS to "negatives symmetric pairs consolidate", CYCLES to
# "16 100 1000 10000"; INTERLEAVED=0 skips the interleaved reference. The replay buffer holds a whole cycle (at least 1 024 samples), so every
# method replays the samples of the wake it follows. Uses target/release/ffd (cargo build --release).
set -euo pipefail
data=${1:?MNIST directory}
out=${2:?output file}
seeds=${3:-1}
methods=${4:-negatives symmetric pairs consolidate}
cycles=${5:-16 100 1000 10000}
ffd=${FFD:-target/release/ffd}

run() {
    local label=$1
    shift
    local summary
    summary=$(nice -n 10 "$ffd" train --mnist "$data" --hidden 500,500 --epochs 1 "$@" 2>/dev/null | tail -n 1)
    printf '{"run":"%s","args":"%s","summary":%s}\n' "$label" "$*" "$summary" >>"$out"
    printf '%s %s: %s\n' "$label" "$*" "$(printf '%s' "$summary" | grep -o '"test_error":[0-9.e-]*')"
}

for seed in $seeds; do
    if [ "${INTERLEAVED:-1}" != 0 ]; then
        run interleaved --seed "$seed"
    fi
    for method in $methods; do
        for n in $cycles; do
            cap=$((n > 1024 ? n : 1024))
            run "$method" --seed "$seed" --schedule sleep --sleep-method "$method" \
                --sleep-every-samples "$n" --replay-capacity "$cap"
        done
    done
done

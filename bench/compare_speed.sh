#!/usr/bin/env bash
# Per-sample FF learning speed, ffd's engine against PyTorch, in one run on this machine:
# `cargo bench --bench engine` (criterion, one thread) then bench/torch/ff_per_sample.py
# (autograd and hand-written loops; see bench/torch/README.md to install PyTorch).
#
# Usage: bench/compare_speed.sh [TORCH_THREADS]   (default 1: the engine runs on one core too)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1}
py=bench/.venv/bin/python
[ -x "$py" ] || { echo "install PyTorch first: see bench/torch/README.md" >&2; exit 1; }
cargo bench --bench engine -- --warm-up-time 2 --measurement-time 6 2>/dev/null \
    | grep -E '^(learn_per_sample|classify_one)/|thrpt:|time:' | grep -v -E 'change|%\]'
$py bench/torch/ff_per_sample.py --threads "$threads" --mnist tests/data/mnist-small --repeats 3 \
    --variants autograd,manual,autograd+hard,manual+hard | grep -v '^{'

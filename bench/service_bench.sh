#!/usr/bin/env bash
# Service benchmarks for `ffd serve`, all in one run on this machine (each server on a fresh data
# directory of its own, so no run resumes an earlier one):
#   1. nothing lost over HTTP: `ffd replay` of one epoch into a default server vs `ffd train`
#      with the same config and schedule (the service's defaults, below);
#   2. ingest rate over HTTP (batches of 100) vs the engine's in-process rate for the same work
#      (`ffd train --prequential`: test-then-train, like the service);
#   3. /classify latency and rate (wrk, one sample per request) while the learner runs flat out.
#
# Usage: bench/service_bench.sh MNIST_DIR [PORT]
# MNIST_DIR holds the four standard IDX files (gzipped or raw); see README.md for where to get them.
set -euo pipefail
mnist=${1:?usage: bench/service_bench.sh MNIST_DIR [PORT]}
port=${2:-18080}
cd "$(dirname "$0")/.."
cargo build --release --quiet
ffd=target/release/ffd
url=http://127.0.0.1:$port
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

# Everything this run writes (server logs, results, request bodies, data directories) lives in
# one temporary directory, removed on exit.
work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Each start gets a data directory of its own: a server started on an earlier run's directory
# would resume that run's checkpoint and WAL instead of starting from scratch.
runs=0
start_server() {
    runs=$((runs + 1))
    local data=$work/data-$runs
    mkdir "$data"
    $ffd serve --listen 127.0.0.1:$port --data-dir "$data" >"$work/server-$runs.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do $ffd healthcheck --url $url >/dev/null 2>&1 && return; sleep 0.1; done
    echo "server did not start; its log:" >&2; cat "$work/server-$runs.log" >&2; exit 1
}
stop_server() { kill -TERM "$server"; wait "$server" || true; server=; }

# The server's defaults (config/default.toml): a consolidating sleep every 1 000 samples with the
# ramp, the rate 1e-4 with its start boost and no end-of-run decay, the softmax read-out on every
# layer with label strength 5, one learner thread, /classify served from the weight average
# (decay 0.98 every 100 samples). `ffd train` with the same settings (the server also sleeps
# every 5 s, which `ffd train` has no clock for):
same_as_server="--schedule sleep --sleep-method consolidate --sleep-every-samples 1000 --wake-lr-scale 0 --sleep-ramp 0.05
  --lr 1e-4 --lr-boost 3 --lr-boost-samples 10000 --lr-decay-start 1
  --score-from-layer 0 --classifier softmax --train-head --label-strength 5 --threads 1
  --average-decay 0.98 --average-every-samples 100"
$ffd train --mnist "$mnist" --epochs 1 $same_as_server --prequential 2>/dev/null | tail -1 | tee "$work/train.json"
for conc in 1 2; do
    echo "== replay one epoch over HTTP (batch 100, $conc in flight) into a default server"
    start_server
    $ffd replay --mnist "$mnist" --url $url --epochs 1 --batch 100 --concurrency $conc 2>/dev/null | tail -1 \
        | tee "$work/replay-$conc.json"
    stop_server
done
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
t = json.load(open(os.path.join(work, "train.json")))
for conc in (1, 2):
    r = json.load(open(os.path.join(work, f"replay-{conc}.json")))
    print(f"[{conc} in flight] test error: replay {100*r['test_error']:.2f}%  train {100*t['test_error']:.2f}%  "
          f"difference {100*(r['test_error']-t['test_error']):+.2f} pp")
    print(f"[{conc} in flight] samples/s: HTTP ingest {r['ingest_samples_per_second']:.0f}  "
          f"engine (same work, in process) {t['samples_per_second']:.0f}  "
          f"ratio {r['ingest_samples_per_second']/t['samples_per_second']:.2f}")
    print(f"[{conc} in flight] prequential accuracy: replay {r['prequential_accuracy']:.4f}  train {t['prequential_accuracy']:.4f}")
PY

echo "== 3: /classify under load (learner flat out on a 5-epoch replay)"
python3 - "$mnist" >"$work/body.json" <<'PY'
import gzip, json, os, struct, sys
d = sys.argv[1]
p = os.path.join(d, "t10k-images-idx3-ubyte.gz")
raw = gzip.open(p).read() if os.path.exists(p) else open(p[:-3], "rb").read()
n, rows, cols = struct.unpack(">III", raw[4:16])
px = raw[16:16 + rows * cols]
print(json.dumps({"features": [b / 255 for b in px]}))
PY
start_server
$ffd replay --mnist "$mnist" --url $url --epochs 5 --test-limit 0 --timeout 600 >/dev/null 2>&1 &
replay=$!
sleep 3
FFD_CLASSIFY_BODY="$work/body.json" wrk -t1 -c4 -d15s --latency -s bench/classify.lua $url/classify | tail -3
curl -s $url/v1/model | python3 -c 'import json,sys; d=json.load(sys.stdin); print("learner queue depth during the run:", d["queue_depth"], " samples learned:", d["samples_learned"])'
kill $replay 2>/dev/null || true
stop_server

#!/usr/bin/env bash
# Slowloris against a release `ffd serve` with the default configuration: 2 x max_connections
# connections that send a request head one byte at a time (and reconnect when closed), held for
# DURATION seconds, from 16 loopback addresses (127.0.0.2-17: the per-peer cap alone cannot stop
# them, so the slot logic is what is measured). Meanwhile a normal client measures /classify
# (one sample per request) on a keep-alive connection and on a fresh connection per request, and
# a probe asks /healthz on a fresh connection every second, as an orchestrator does.
# Target: /classify p99 <= 50 ms, every /healthz answered.
#
# Usage: bench/slowloris.sh [DURATION_SECONDS] [PORT]
# Environment: BENCH_FFD_BIN (default target/release/ffd, built if missing), BYTE_EVERY (seconds
# between header bytes, default 1), RECONNECT_AFTER (seconds before a closed attack connection
# is replaced, default 1). Linux (other loopback addresses).
set -euo pipefail
duration=${1:-60}
port=${2:-18090}
cd "$(dirname "$0")/.."
ffd=$(realpath -m "${BENCH_FFD_BIN:-target/release/ffd}")
[ -x "$ffd" ] || cargo build --release --quiet
url=http://127.0.0.1:$port
ulimit -n "$(ulimit -Hn)"

max_connections=$($ffd serve --print-config | sed -n 's/^max_connections = //p')
attackers=$((2 * max_connections))
data=$(mktemp -d)
$ffd serve --listen 127.0.0.1:$port --data-dir "$data" >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; kill ${attack:-} 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do $ffd healthcheck --url $url >/dev/null 2>&1 && break; sleep 0.1; done

echo "== baseline: /classify for 10 s without an attack"
python3 bench/slowloris_client.py measure $port 10
echo "== attack: $attackers slowloris connections (max_connections = $max_connections) for $duration s"
python3 bench/slowloris_client.py attack $port $((duration + 15)) "$attackers" \
    "${BYTE_EVERY:-1}" "${RECONNECT_AFTER:-1}" >"$data/attack.log" &
attack=$!
# Let the attack take every slot before measuring.
sleep 10
python3 bench/slowloris_client.py measure $port "$duration"
wait $attack
cat "$data/attack.log"
echo "== server counters"
curl -s $url/metrics | grep -E '^ffd_http_connections'

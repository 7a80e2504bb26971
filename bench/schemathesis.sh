#!/usr/bin/env bash
# Schemathesis (PyPI, 4.32.5: one version, so that a CI run with a fixed seed repeats) against a
# live release `ffd serve`, with every check
# (`--checks all`): answers must have a documented status, content type, headers and schema;
# requests valid against /openapi.json must be taken and invalid ones refused; routes that
# declare a token must enforce it; undocumented methods must get 405. The server runs with small
# sizes (6 features, 4 classes, batches of at most 3), which /openapi.json states, so generated
# bodies are small. /learn's NDJSON streams are sent as one-line streams (a serializer in
# bench/schemathesis_hooks.py: Schemathesis has none for NDJSON). bench/schemathesis.toml counts
# 413 (a batch over its limit) as a refusal of invalid data.
#
# Usage: bench/schemathesis.sh [MAX_EXAMPLES]     (default 30 test cases per operation and phase)
# Environment: BENCH_FFD_BIN (default target/release/ffd, built if missing), SCHEMATHESIS_VENV (a
# virtualenv to create or reuse; default target/schemathesis-venv), SCHEMATHESIS_SEED (default 1).
set -euo pipefail
max_examples=${1:-30}
cd "$(dirname "$0")/.."
ffd=$(realpath -m "${BENCH_FFD_BIN:-target/release/ffd}")
[ -x "$ffd" ] || cargo build --release --quiet
venv=$(realpath -m "${SCHEMATHESIS_VENV:-target/schemathesis-venv}")
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.32\.5$'; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi

# The server gets exactly the settings below: ffd refuses FFD_* variables it does not know (such
# as FFD_TEST_REQUIRE_TOOLS, which .ci/run exports for the tests).
for var in $(compgen -e); do
    [[ "$var" == FFD_* ]] && unset "$var"
done

work=$(mktemp -d)
# Made before the server starts: the wait below reads it, perhaps before the server's shell has.
: >"$work/server.log"
learn_token=schemathesis-learn-token
read_token=schemathesis-read-token
FFD_LEARN_TOKEN=$learn_token FFD_READ_TOKEN=$read_token \
FFD_NETWORK__INPUTS=6 FFD_NETWORK__CLASSES=4 FFD_NETWORK__HIDDEN='[16]' \
FFD_HTTP__MAX_BATCH_SAMPLES=3 \
    "$ffd" serve --listen 127.0.0.1:0 --data-dir "$work/data" --log-format json \
    >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
url=
for _ in $(seq 200); do
    url=$(sed -n 's/.*"message":"listening".*"addr":"\([^"]*\)".*/http:\/\/\1/p' "$work/server.log" | head -1)
    [ -n "$url" ] && "$ffd" healthcheck --url "$url" >/dev/null 2>&1 && break
    sleep 0.1
done
[ -n "$url" ] || { cat "$work/server.log"; echo "the server did not start" >&2; exit 1; }

# The learn token grants every route. `--exclude-checks` is not used: every check runs.
# Run from the temporary directory: Schemathesis keeps a cache in the working directory.
repo=$PWD
cd "$work"
SCHEMATHESIS_HOOKS="$repo/bench/schemathesis_hooks.py" "$venv/bin/schemathesis" \
    --config-file "$repo/bench/schemathesis.toml" run "$url/openapi.json" \
    --checks all \
    --max-examples "$max_examples" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --header "Authorization: Bearer $learn_token" \
    --request-timeout 30 \
    --generation-database none \
    --no-color 2>&1 | tee "$work/schemathesis.log"
status=${PIPESTATUS[0]}
if grep -q '"level":"ERROR"' "$work/server.log"; then
    echo "server errors:"; grep '"level":"ERROR"' "$work/server.log" | head -20
fi
exit "$status"

#!/usr/bin/env bash
# Server benchmark: start dadc-server on a temporary data dir and an
# ephemeral loopback port, run dadc-loadgen against it, stop the server.
#
#   bash bench/run_server_bench.sh [loadgen options]
#
# BUILD_DIR      build tree holding bin/dadc-server and bin/dadc-loadgen
#                (default ./build; built here if missing)
# DADC_MNIST_DIR the MNIST files (default ./dadc-data/mnist)
# BENCH_MODEL    a .safetensors model to start from (default: the server
#                trains a one-epoch base model first, a few seconds)
# SERVER_ARGS    extra dadc-server options, e.g. "--round-epochs 1"
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}
mnist=${DADC_MNIST_DIR:-$top/dadc-data/mnist}
say() { printf 'run_server_bench: %s\n' "$*" >&2; }

if [ ! -x "$build/bin/dadc-server" ] || [ ! -x "$build/bin/dadc-loadgen" ]
then
    say "building dadc-server and dadc-loadgen in $build"
    cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j "$(nproc)" --target dadc-server dadc-loadgen
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dadc-bench.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

model_args=(--base-epochs 1)
if [ -n "${BENCH_MODEL:-}" ]; then
    model_args=(--init-model "$BENCH_MODEL")
fi

# shellcheck disable=SC2086
"$build/bin/dadc-server" --data-dir "$tmp/data" --listen 127.0.0.1:0 \
    --port-file "$tmp/port" --mnist "$mnist" "${model_args[@]}" \
    ${SERVER_ARGS:-} >"$tmp/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 3000); do
    [ -s "$tmp/port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        say "dadc-server exited; its log:"
        cat "$tmp/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ ! -s "$tmp/port" ]; then
    say "dadc-server did not become ready in 300 s"
    exit 1
fi
port=$(cat "$tmp/port")
say "server ready on 127.0.0.1:$port (data in $tmp/data)"

"$build/bin/dadc-loadgen" --server "127.0.0.1:$port" --mnist "$mnist" "$@"

kill "$server_pid"
wait "$server_pid" || true
server_pid=
say "server log (rounds):"
grep -E 'round|promoted' "$tmp/server.log" >&2 || true

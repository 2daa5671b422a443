#!/usr/bin/env bash
# Runs Fleetlog locally: installs what is missing, builds, and starts
# `fleetd all`, which manages its own nats-server (JetStream, data under
# ./data) unless FLEETLOG_NATS_URL points at one. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/setup.sh
. ./ops/env.sh
# The same build as ops/test.sh (all targets: dev-dependencies change the
# features of shared dependencies), so whichever runs second compiles nothing.
cargo build --workspace --all-targets --locked
echo "Fleetlog: gRPC on ${FLEETLOG_LISTEN:-127.0.0.1:7400}, HTTP on ${FLEETLOG_HTTP_LISTEN:-127.0.0.1:7401}; try: FLEETLOG_KEY=<the bootstrap admin key fleetd prints on its first start> $CARGO_TARGET_DIR/debug/fleetctl devices list projects/demo/regions/local" >&2
exec "$CARGO_TARGET_DIR/debug/fleetd" all "$@"

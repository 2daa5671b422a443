#!/usr/bin/env bash
# Runs fleetlog-bench (docs/benchmarks.md): builds fleetd and the benchmark,
# then passes every argument on, e.g. `ops/bench.sh --preset smoke`.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/setup.sh
. ./ops/env.sh
# The same build as ops/test.sh and ops/run.sh, so none of them recompiles
# what another built.
cargo build --workspace --all-targets --locked
exec "$CARGO_TARGET_DIR/debug/fleetlog-bench" "$@"

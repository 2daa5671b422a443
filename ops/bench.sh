#!/usr/bin/env bash
# Runs fleetlog-bench (docs/benchmarks.md): builds fleetd and the benchmark,
# then passes every argument on, e.g. `ops/bench.sh --preset smoke`.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/setup.sh
. ./ops/env.sh
cargo build --locked -p fleetlog-services --bin fleetd -p fleetlog-bench --bin fleetlog-bench
exec "$CARGO_TARGET_DIR/debug/fleetlog-bench" "$@"

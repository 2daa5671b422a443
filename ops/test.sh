#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing, builds,
# runs every test against real nats-server processes and real RocksDB.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/setup.sh
. ./ops/env.sh
start=$(date +%s)
cargo build --workspace --all-targets --locked
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "ops/test.sh: finished in $(( $(date +%s) - start )) s"

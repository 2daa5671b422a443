# Sourced by the ops scripts: where the build goes and where tools live.
# The cargo target dir stays outside the clone so a fresh clone reuses the
# compiled RocksDB (about 40 minutes of C++ on 2 cores) from earlier runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetlog/target}"
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
if [ -n "$scripts_dir" ] && [ -x "$scripts_dir/nats-server" ]; then
  export PATH="$scripts_dir:$PATH"
fi

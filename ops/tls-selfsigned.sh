#!/usr/bin/env bash
# Makes a self-signed TLS certificate and key for running fleetd locally:
#
#   ops/tls-selfsigned.sh [--force] [DIR] [HOSTNAME|IP ...]
#
# writes DIR/fleetd.crt and DIR/fleetd.key (DIR defaults to ./data/tls):
# ECDSA P-256, valid 365 days, an end-entity certificate (CA:FALSE,
# serverAuth) for localhost, 127.0.0.1, ::1 and the names or addresses
# given. A client trusts it by taking the certificate itself as its root
# (e.g. curl --cacert DIR/fleetd.crt https://localhost:7401/...).
#
# An existing pair is kept unless --force is given. Prints the two
# FLEETLOG_TLS_* settings to use on stdout. For local use only: production
# certificates come from your CA.
set -euo pipefail

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-0}"
}

force=0
args=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) usage 0 ;;
    -*) echo "tls-selfsigned: unknown option $arg" >&2; usage 2 ;;
    *) args+=("$arg") ;;
  esac
done
dir="${args[0]:-./data/tls}"
names=("${args[@]:1}")

command -v openssl >/dev/null 2>&1 || {
  echo "tls-selfsigned: openssl is not installed (apt-get install openssl)" >&2
  exit 1
}

# subjectAltName entries: the local names first, then the ones given.
dns=(localhost)
ips=(127.0.0.1 ::1)
for name in "${names[@]}"; do
  if [[ "$name" =~ ^[0-9]+(\.[0-9]+){3}$ || "$name" =~ ^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*$ ]]; then
    ips+=("$name")
  elif [[ "$name" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]; then
    dns+=("$name")
  else
    echo "tls-selfsigned: $name is neither a host name nor an IP address" >&2
    exit 2
  fi
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cert="$dir/fleetd.crt"
key="$dir/fleetd.key"

print_settings() {
  echo "FLEETLOG_TLS_CERT=$cert"
  echo "FLEETLOG_TLS_KEY=$key"
}

if [ "$force" -eq 0 ] && { [ -e "$cert" ] || [ -e "$key" ]; }; then
  if [ -e "$cert" ] && [ -e "$key" ]; then
    echo "tls-selfsigned: keeping the existing $cert and $key (--force makes a new pair)" >&2
    print_settings
    exit 0
  fi
  echo "tls-selfsigned: only one of $cert and $key exists; remove it or pass --force" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo "[req]"
  echo "prompt = no"
  echo "distinguished_name = dn"
  echo "x509_extensions = leaf"
  echo "[dn]"
  echo "CN = fleetd"
  echo "O = Fleetlog local self-signed"
  echo "[leaf]"
  echo "basicConstraints = critical, CA:FALSE"
  echo "keyUsage = critical, digitalSignature"
  echo "extendedKeyUsage = serverAuth"
  echo "subjectKeyIdentifier = hash"
  echo "subjectAltName = @alt"
  echo "[alt]"
  i=0
  for name in "${dns[@]}"; do i=$((i + 1)); echo "DNS.$i = $name"; done
  i=0
  for ip in "${ips[@]}"; do i=$((i + 1)); echo "IP.$i = $ip"; done
} >"$work/openssl.cnf"

(
  umask 077
  openssl req -x509 -new -config "$work/openssl.cnf" \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout "$work/fleetd.key" -out "$work/fleetd.crt" -days 365 -sha256 2>"$work/openssl.log" || {
    cat "$work/openssl.log" >&2
    echo "tls-selfsigned: openssl failed" >&2
    exit 1
  }
)
chmod 600 "$work/fleetd.key"
chmod 644 "$work/fleetd.crt"
mv -f "$work/fleetd.key" "$key"
mv -f "$work/fleetd.crt" "$cert"

echo "tls-selfsigned: wrote $cert and $key for ${dns[*]} ${ips[*]} (365 days)" >&2
print_settings

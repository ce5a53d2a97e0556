#!/usr/bin/env bash
# Makes everything a secure tpcoord deployment needs, with openssl, into DIR:
#   DIR/ca.crt, DIR/ca.key               a private certificate authority (keep ca.key offline in production)
#   DIR/server/{tls.crt,tls.key,ca.crt}  the coordinator's certificate, for the names given (default:
#                                        coordinator, localhost, 127.0.0.1), in cert-manager's Secret layout
#   DIR/client/{tls.crt,tls.key,ca.crt}  a client certificate (CN tpcoord-client) for workers and tpctl
#   DIR/token                            a job token (64 hex characters), unless TPCOORD_TOKEN is set
#
#   deploy/make-secrets.sh DIR [NAME|IP ...]
#
# Keys and the token are readable by their owner only: run it as the user the services run as.
# Idempotent: what already exists in DIR is kept, so a restarted compose `certs` service changes nothing.
# Certificates are ECDSA P-256, valid for 825 days.
set -euo pipefail
dir=${1:?usage: make-secrets.sh DIR [NAME|IP ...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(coordinator localhost 127.0.0.1)
mkdir -p "$dir/server" "$dir/client"
umask 077

san=""
for name in "${names[@]}"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san=${san%,}

if [ ! -s "$dir/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 -subj "/CN=tpcoord CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi

# issue SUBDIR CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
issue() {
  local out=$dir/$1
  [ -s "$out/tls.crt" ] && return 0
  local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$3"
  [ -n "${4:-}" ] && ext+=$'\n'"subjectAltName=$4"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
    -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
  openssl x509 -req -in "$out/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 825 \
    -extfile <(echo "$ext") -out "$out/tls.crt" 2>/dev/null
  rm -f "$out/tls.csr"
  cp "$dir/ca.crt" "$out/ca.crt"
}
issue server "${names[0]}" serverAuth "$san"
issue client tpcoord-client clientAuth

if [ -n "${TPCOORD_TOKEN:-}" ]; then
  printf '%s\n' "$TPCOORD_TOKEN" >"$dir/token"
elif [ ! -s "$dir/token" ]; then
  openssl rand -hex 32 >"$dir/token"
fi
# Certificates are public; keys, the token and the CA key stay readable by their owner only (umask 077).
chmod 0755 "$dir" "$dir/server" "$dir/client"
chmod 0644 "$dir/ca.crt" "$dir"/server/*.crt "$dir"/client/*.crt

#!/bin/sh
# The compose NATS server's TLS certificate, made by the one-shot `nats-certs` container on the
# first `docker compose up` (never committed, never on the host):
#   /tls/server.crt, /tls/server.key  volume nats-tls, mounted by the NATS container only
#   /ca/ca.crt                        volume nats-ca, mounted read-only by every agriportal
#                                     container (AGRIPORTAL_NATS_TLS_CA)
# A CA of its own signs a certificate for the name `nats` (and localhost); the CA's key is
# thrown away once it has signed, so nothing can sign another certificate the services would
# trust. When the files exist they are kept, so a restart keeps the same CA. To renew: stop the
# stack and remove both volumes (`docker compose -f deploy/compose.yaml down` then
# `docker volume rm agriportal_nats-tls agriportal_nats-ca`).
set -eu

TLS="${NATS_TLS_DIR:-/tls}"
CA="${NATS_CA_DIR:-/ca}"

if [ -s "$TLS/server.crt" ] && [ -s "$TLS/server.key" ] && [ -s "$CA/ca.crt" ]; then
  echo "nats-certs: the NATS certificate exists; kept"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=agriportal compose NATS CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=nats" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
cat > "$work/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:nats,DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -days 825 -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null

mkdir -p "$TLS" "$CA"
# The server's key: its owner only (the NATS image runs as root); certificates: anyone.
install -m 0600 "$work/server.key" "$TLS/server.key"
install -m 0644 "$work/server.crt" "$TLS/server.crt"
install -m 0644 "$work/ca.crt" "$CA/ca.crt"
echo "nats-certs: made a CA and the NATS server certificate for nats, localhost, 127.0.0.1"

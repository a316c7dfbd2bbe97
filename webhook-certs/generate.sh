#!/usr/bin/env bash
# Development certificates for the admission webhook, in the layout of cert-manager's Secret:
# ca.crt, tls.crt, tls.key (plus ca.key, kept so the serving certificate can be re-issued
# under the same CA). Idempotent: existing files are kept while they verify against the CA,
# match each other and stay valid for 30 more days. `make certs` runs this; the outputs are
# git-ignored.
set -euo pipefail
cd "$(dirname "$0")"

SANS="DNS:localhost,IP:127.0.0.1,DNS:pgpilot-webhook.pgpilot-system.svc,DNS:pgpilot-webhook.pgpilot-system.svc.cluster.local"
MONTH=$((30 * 24 * 3600))

usable() {
  [[ -s ca.crt && -s ca.key && -s tls.crt && -s tls.key ]] || return 1
  openssl verify -CAfile ca.crt tls.crt >/dev/null 2>&1 || return 1
  openssl x509 -in tls.crt -noout -checkend "$MONTH" >/dev/null || return 1
  # The key belongs to the certificate: their public keys are the same.
  [[ "$(openssl x509 -in tls.crt -noout -pubkey)" == "$(openssl pkey -in tls.key -pubout)" ]]
}

if usable; then
  echo "webhook-certs: existing certificates are valid, kept"
  exit 0
fi

umask 077
if ! [[ -s ca.crt && -s ca.key ]] || ! openssl x509 -in ca.crt -noout -checkend "$MONTH" >/dev/null; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=pgpilot development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout tls.key -out tls.csr -subj "/CN=pgpilot-webhook.pgpilot-system.svc" 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -out tls.crt \
  -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$SANS") 2>/dev/null
rm -f tls.csr
chmod 644 ca.crt tls.crt
echo "webhook-certs: wrote ca.crt, tls.crt and tls.key (SANs ${SANS})"

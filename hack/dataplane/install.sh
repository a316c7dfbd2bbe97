#!/usr/bin/env bash
# Installs what the data-plane suite (tests/dataplane.rs) runs, idempotently, only what is
# missing: PostgreSQL 15, pgBackRest, pgBouncer and socat from Debian, Patroni (with its
# Kubernetes support) from PyPI into /opt/pgpilot-patroni, a virtualenv on Debian's own
# python3 that the postgres user can run (a pyenv Python under /root cannot be), and moto's
# S3 server from PyPI into /opt/pgpilot-s3 (the object store restores are proven against;
# socat serves it over TLS).
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "hack/dataplane/install.sh: needs root (apt-get)" >&2; exit 1; }

packages=(postgresql postgresql-contrib pgbackrest pgbouncer python3-venv socat)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start nothing here (no systemd), but make sure no packaged cluster or
  # pgbouncer holds port 5432 on the host.
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi

venv=/opt/pgpilot-patroni
if ! "$venv/bin/patroni" --version >/dev/null 2>&1; then
  echo "installing Patroni into $venv" >&2
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'patroni[kubernetes]' psycopg2-binary
fi
"$venv/bin/patroni" --version >&2

s3=/opt/pgpilot-s3
if ! [[ -x $s3/bin/moto_server ]]; then
  echo "installing moto's S3 server into $s3" >&2
  /usr/bin/python3 -m venv "$s3"
  "$s3/bin/pip" install -q 'moto[server]'
fi

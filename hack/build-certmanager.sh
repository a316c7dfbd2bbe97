#!/usr/bin/env bash
# Build (once) and cache cert-manager's controller and CA injector from the vendored source
# (cert-manager v1.21.1 without its Venafi issuer; see the README beside the tarball), for the
# install suite (tests/e2e_install.rs).
#
# Usage:  DIR=$(hack/build-certmanager.sh)
#   The last (only) stdout line is a directory with bin/cert-manager-controller,
#   bin/cert-manager-cainjector and crds/ (cert-manager's CRDs). A cache hit returns at once.
#   Without the source, it prints nothing on stdout, says so in one line on stderr and exits
#   3, so that callers can skip what needs it.
#
# Source: $PGPILOT_CERT_MANAGER_SRC, else cert-manager-v1.21.1-src.tar.gz in ../shared/vendor
#   beside the repository or in /work/shared/vendor.
# Cache: ${PGPILOT_CACHE:-$HOME/.cache/pgpilot}/cert-manager-v1.21.1-<key>, key = the first 12
#   hex of sha256 over the tarball, the build flags and the Go version. Built in a temp dir
#   beside it and renamed into place: an interrupted build leaves no partial entry.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$hack_dir")
version=v1.21.1
tarball_name=cert-manager-$version-src.tar.gz

log() { printf 'build-certmanager: %s\n' "$*" >&2; }

src=${PGPILOT_CERT_MANAGER_SRC:-}
if [[ -z $src ]]; then
  for candidate in "$repo/../shared/vendor/$tarball_name" "/work/shared/vendor/$tarball_name"; do
    if [[ -f $candidate ]]; then
      src=$candidate
      break
    fi
  done
fi
if [[ -z $src || ! -f $src ]]; then
  log "no cert-manager source ($tarball_name): set PGPILOT_CERT_MANAGER_SRC to its path to build cert-manager $version"
  exit 3
fi

export GOTOOLCHAIN=local
export GOWORK=off
# The commands' go.mod files point at the repository root (replace => ../../): -mod=mod lets
# go resolve the module graph from that replacement and go.sum.
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
unset GOOS GOARCH GOEXPERIMENT GODEBUG 2>/dev/null || true
flags=(-p 2 -trimpath "-ldflags=-s -w")

key=$(
  {
    sha256sum < "$src"
    printf '%s\n' "${flags[@]}" "$GOFLAGS" "$(go env GOVERSION GOOS GOARCH | tr '\n' ' ')"
  } | sha256sum | cut -c1-12
)
cache_root=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
entry="$cache_root/cert-manager-$version-$key"

complete() {
  [[ -x $entry/bin/cert-manager-controller && -x $entry/bin/cert-manager-cainjector && -d $entry/crds ]]
}
if complete; then
  printf '%s\n' "$entry"
  exit 0
fi

mkdir -p "$cache_root"
if command -v flock >/dev/null; then
  exec 9>"$cache_root/.cert-manager.lock"
  flock 9
  if complete; then
    printf '%s\n' "$entry"
    exit 0
  fi
  rm -rf "$cache_root"/.tmp-cert-manager-*
fi

tmp=$(mktemp -d "$cache_root/.tmp-cert-manager-$version-$key.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
mkdir -p "$tmp/src" "$tmp/bin"
tar -xzf "$src" -C "$tmp/src"

log "building cert-manager $version from $src -> $entry (cold: a few minutes on 2 cores)"
for cmd in controller cainjector; do
  start=$SECONDS
  (cd "$tmp/src/cmd/$cmd" && go build "${flags[@]}" -o "$tmp/bin/cert-manager-$cmd" .) >&2
  log "built cert-manager-$cmd in $((SECONDS - start))s"
done
mv "$tmp/src/deploy/crds" "$tmp/crds"
rm -f "$tmp/crds/README.md"
rm -rf "$tmp/src"
trap - EXIT
mv "$tmp" "$entry"
printf '%s\n' "$entry"

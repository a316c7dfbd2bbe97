#!/usr/bin/env bash
# Build (once) and cache a real Kubernetes control plane from the Go module
# proxy: kube-apiserver, kube-controller-manager, kubectl (hack/controlplane)
# and etcd (hack/etcd).
#
# Usage:  BIN=$(hack/build-controlplane.sh)
#   The last (only) stdout line is the bin dir holding the four binaries; all
#   build chatter goes to stderr. A cache hit returns at once.
#
# Cache: ${PGPILOT_CACHE:-$HOME/.cache/pgpilot}/controlplane-<k8s version>-<key>/bin
#   <key> = first 12 hex of sha256 over both wrappers' go.mod + go.sum, the
#   build flags below and the Go toolchain version. A build goes to a temp dir
#   beside it and is renamed into place, so an interrupted build never leaves a
#   partial cache entry.
#
# Env: PGPILOT_CACHE (cache root), GOPROXY/GOMODCACHE/GOCACHE as usual,
#   PGPILOT_BUILD_TIME=1 to report wall time and peak memory per binary.
# Needs: go (1.26+, used as is: GOTOOLCHAIN=local), network to the module proxy
# on a cold build (~4-10 min on 2 cores, more if they are busy; <2 GB RAM).
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cp_mod="$hack_dir/controlplane"
etcd_mod="$hack_dir/etcd"

log() { printf 'build-controlplane: %s\n' "$*" >&2; }

# The Go environment is pinned here, not inherited: a caller's GOFLAGS
# (-mod=vendor, ...) or a go.work up the tree must not change the build.
export GOTOOLCHAIN=local
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
unset GOOS GOARCH GOEXPERIMENT GODEBUG 2>/dev/null || true

modver() { # modver <go.mod> <module path>: the version it requires
  awk -v m="$2" '{ sub(/\/\/.*/, "") } /=>/ { next }
    $1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
k8s_version=$(modver "$cp_mod/go.mod" k8s.io/kubernetes)
etcd_version=$(modver "$etcd_mod/go.mod" go.etcd.io/etcd/server/v3)
[[ $k8s_version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || { log "cannot parse k8s.io/kubernetes version '$k8s_version'"; exit 1; }
k8s_major=${BASH_REMATCH[1]} k8s_minor=${BASH_REMATCH[2]}
[[ -n $etcd_version ]] || { log "cannot parse etcd version"; exit 1; }

# Fixed build date = the release tag's commit time on the module proxy
# (k8s.io/kubernetes@v1.34.4 .info "Time"), so builds are reproducible.
build_date=2026-02-10T12:53:36Z
# The proxy does not record the release commit; leave gitCommit empty rather
# than invent one (upstream also omits it when unknown).
git_commit=""

k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X '$pkg.gitVersion=$k8s_version'"
  k8s_ldflags+=" -X '$pkg.gitMajor=$k8s_major'"
  k8s_ldflags+=" -X '$pkg.gitMinor=$k8s_minor'"
  k8s_ldflags+=" -X '$pkg.gitTreeState=clean'"
  k8s_ldflags+=" -X '$pkg.gitCommit=$git_commit'"
  k8s_ldflags+=" -X '$pkg.buildDate=$build_date'"
done
k8s_flags=(-p 2 -trimpath -tags selinux,notest,grpcnotrace "-ldflags=$k8s_ldflags")
etcd_flags=(-p 2 -trimpath "-ldflags=-s -w")

go_env=$(go env GOVERSION GOOS GOARCH | tr '\n' ' ')
key=$(
  {
    for f in "$cp_mod/go.mod" "$cp_mod/go.sum" "$etcd_mod/go.mod" "$etcd_mod/go.sum"; do
      printf '== %s\n' "${f#"$hack_dir"/}"
      cat "$f"
    done
    printf '== flags\nGOFLAGS=%s CGO_ENABLED=%s go=%s\n' "$GOFLAGS" "$CGO_ENABLED" "$go_env"
    printf '%s\n' "${k8s_flags[@]}" "${etcd_flags[@]}"
  } | sha256sum | cut -c1-12
)

cache_root=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
entry="$cache_root/controlplane-$k8s_version-$key"
bins=(kube-apiserver kube-controller-manager kubectl etcd)

complete() {
  local b
  for b in "${bins[@]}"; do [[ -x "$entry/bin/$b" ]] || return 1; done
}

if complete; then
  printf '%s\n' "$entry/bin"
  exit 0
fi

mkdir -p "$cache_root"
# One builder at a time per cache root; a waiter then finds the entry ready.
if command -v flock >/dev/null; then
  exec 9>"$cache_root/.controlplane.lock"
  flock 9
  if complete; then
    printf '%s\n' "$entry/bin"
    exit 0
  fi
  # Holding the lock, any temp dir left is from a killed build.
  rm -rf "$cache_root"/.tmp-controlplane-*
fi

tmp=$(mktemp -d "$cache_root/.tmp-controlplane-$k8s_version-$key.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
mkdir "$tmp/bin"

log "building Kubernetes $k8s_version + etcd $etcd_version with $go_env-> $entry"
log "(cold build: ~4-10 min on 2 cores; quiet while compiling)"

build() { # build <wrapper dir> <output name> <package> <flags...>
  local dir=$1 out=$2 pkg=$3 start
  shift 3
  start=$SECONDS
  log "go build $out ($pkg)"
  local -a timer=()
  if [[ ${PGPILOT_BUILD_TIME:-} == 1 && -x /usr/bin/time ]]; then
    timer=(/usr/bin/time -f "build-controlplane: $out: %e s wall, %U s user, %M KiB max RSS")
  fi
  (cd "$dir" && "${timer[@]}" go build "$@" -o "$tmp/bin/$out" "$pkg") >&2
  log "built $out in $((SECONDS - start))s ($(du -h "$tmp/bin/$out" | cut -f1))"
}

# Download first so a network problem shows up early and clearly.
(cd "$cp_mod" && go mod download) >&2
(cd "$etcd_mod" && go mod download) >&2

build "$cp_mod" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${k8s_flags[@]}"
build "$cp_mod" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "${k8s_flags[@]}"
build "$cp_mod" kubectl k8s.io/kubernetes/cmd/kubectl "${k8s_flags[@]}"
build "$etcd_mod" etcd go.etcd.io/etcd/server/v3 "${etcd_flags[@]}"

{
  printf 'kubernetes %s\netcd %s\ngo %s\nbuildDate %s\n' "$k8s_version" "$etcd_version" "$go_env" "$build_date"
  printf 'k8s flags:'; printf ' %q' "${k8s_flags[@]}"; printf '\n'
  printf 'etcd flags:'; printf ' %q' "${etcd_flags[@]}"; printf '\n'
  (cd "$tmp/bin" && sha256sum "${bins[@]}")
} > "$tmp/BUILDINFO"

# Publish atomically: rename(2) of the whole entry directory. A leftover entry
# with missing binaries (someone deleted one) is replaced.
if [[ -e $entry ]]; then
  rm -rf "$entry"
fi
mv -T "$tmp" "$entry"
trap - EXIT
log "done: $entry/bin"
printf '%s\n' "$entry/bin"

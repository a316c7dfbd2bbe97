#!/usr/bin/env bash
# Start etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 (free
# ports, throwaway certs), run smoke checks, tear down.
#   hack/run-controlplane-example.sh          # checks, then stop
#   hack/run-controlplane-example.sh --keep   # checks, then stay up until ^C
# The kubeconfig path is printed; BIN defaults to $(hack/build-controlplane.sh).
set -euo pipefail
hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${BIN:-$("$hack_dir/build-controlplane.sh")}
keep=${1:-}

work=$(mktemp -d /tmp/pgpilot-cp.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a port nobody listens on (racy, good enough for tests)
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [[ -z $(ss -Htln "( sport = :$p )") ]] && { echo "$p"; return; }
  done
}
etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port) kcm_port=$(free_port)

# --- certificates: CA, apiserver serving cert, SA key pair, client certs ---
cd "$work"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=pgpilot-test-ca
sign() { # sign <name> <subject> <extensions>
  ossl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$1.ext" -out "$1.crt"
}
sign serving /CN=kube-apiserver "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
sign kcm /CN=system:kube-controller-manager "extendedKeyUsage=clientAuth"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
ossl pkey -in sa.key -pubout -out sa.pub

kubeconfig() { # kubeconfig <file> <cert basename>
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$work/ca.crt"}
users:
- name: u
  user: {client-certificate: "$work/$2.crt", client-key: "$work/$2.key"}
contexts:
- name: local
  context: {cluster: local, user: u}
current-context: local
EOF
}
kubeconfig admin.kubeconfig admin
kubeconfig kcm.kubeconfig kcm
export KUBECONFIG=$work/admin.kubeconfig
kubectl() { "$BIN/kubectl" "$@"; }

# --- etcd ---
"$BIN/etcd" --name=default --data-dir="$work/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="default=http://127.0.0.1:$peer_port" --unsafe-no-fsync \
  > etcd.log 2>&1 &
pids+=($!)
wait_ok() { # wait_ok <what> <pid> <log> <curl args...>: poll until 200, max 60s
  local what=$1 pid=$2 log=$3 t0
  shift 3
  t0=$(date +%s.%N)
  for _ in $(seq 600); do
    if curl -sf "$@" >/dev/null; then
      echo "$what ok after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2
      return
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$what: timed out" >&2; tail -20 "$log" >&2; exit 1
}
wait_ok "etcd /health" "${pids[0]}" etcd.log "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver ---
# --endpoint-reconciler-type=none: with a loopback advertise address the
# default reconciler fails every 10s ("may not be in the loopback range").
"$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --tls-cert-file=serving.crt --tls-private-key-file=serving.key --client-ca-file=ca.crt \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer="https://127.0.0.1:$api_port" \
  --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
  --authorization-mode=RBAC --allow-privileged=true --endpoint-reconciler-type=none \
  > apiserver.log 2>&1 &
pids+=($!)
wait_ok "kube-apiserver /readyz" "${pids[1]}" apiserver.log --cacert ca.crt "https://127.0.0.1:$api_port/readyz"

# --- kube-controller-manager ---
"$BIN/kube-controller-manager" --kubeconfig=kcm.kubeconfig \
  --authentication-kubeconfig=kcm.kubeconfig --authorization-kubeconfig=kcm.kubeconfig \
  --authentication-skip-lookup=true \
  --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false \
  --service-account-private-key-file=sa.key --root-ca-file=ca.crt --use-service-account-credentials=true \
  --cluster-signing-cert-file=ca.crt --cluster-signing-key-file=ca.key \
  --controllers='*' \
  > kcm.log 2>&1 &
pids+=($!)
wait_ok "kube-controller-manager /healthz" "${pids[2]}" kcm.log -k "https://127.0.0.1:$kcm_port/healthz"

# --- checks ---
kubectl version >&2
kubectl get ns >&2
t1=$(date +%s)
for _ in $(seq 120); do kubectl -n default get sa default >/dev/null 2>&1 && break; sleep 0.5; done
kubectl -n default get sa default >&2
echo "default ServiceAccount in 'default' after $(($(date +%s) - t1))s of kcm /healthz" >&2
kubectl create ns smoke >&2
for _ in $(seq 60); do kubectl -n smoke get sa default >/dev/null 2>&1 && break; sleep 0.5; done
kubectl -n smoke get sa default >&2
t2=$(date +%s)
kubectl delete ns smoke --timeout=60s >&2
echo "namespace deletion finished in $(($(date +%s) - t2))s" >&2
# No scheduler/kubelet: pods stay Pending; the garbage collector removes them.
kubectl create deployment web --image=example.invalid/none --replicas=2 >&2
for _ in $(seq 40); do [[ $(kubectl get pods -l app=web -o name | wc -l) == 2 ]] && break; sleep 0.5; done
kubectl get pods -l app=web >&2
kubectl delete deployment web >&2
for _ in $(seq 60); do [[ -z $(kubectl get rs,pods -l app=web -o name) ]] && break; sleep 0.5; done
[[ -z $(kubectl get rs,pods -l app=web -o name) ]] || { echo "garbage collection did not remove web's rs/pods" >&2; exit 1; }
echo "kubeconfig: $KUBECONFIG  (logs in $work)" >&2
echo "SMOKE OK" >&2
if [[ $keep == --keep ]]; then
  echo "control plane up; ^C to stop" >&2
  wait
fi

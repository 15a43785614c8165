#!/usr/bin/env bash
# The main job. With no kubeconfig: starts a host cluster on this machine
# (the test bed: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, and a real node with containerd, kubelet, kube-proxy and
# CoreDNS; needs root), installs Nestor with Helm from the locally built
# image, creates the sample virtual cluster and its node pool, waits until
# both are Ready and prints a kubectl line that works against it. With a
# kubeconfig (first argument or $KUBECONFIG), installs into that cluster
# instead.
# `e2e/down.sh` stops what this started.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${NESTOR_STATE_DIR:-${TMPDIR:-/tmp}/nestor}
kubeconfig=${1:-${KUBECONFIG:-}}
start=$SECONDS
say() { echo "up: [$((SECONDS - start))s] $*"; }
tools=$(bash e2e/testbed/install-tools.sh)
kubectl() { "$tools/kubectl" --kubeconfig "$kubeconfig" "$@"; }
# The operator serves the namespace of the sample cluster.
helm_args=(--set "rbac.namespaces={default}")

if [ -z "$kubeconfig" ]; then
  say "preparing the local host cluster (the first run builds Kubernetes from source)"
  bash e2e/testbed/install-node-packages.sh
  bash e2e/testbed/build-binaries.sh kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd coredns pause crane kube-router >/dev/null
  cargo build --quiet --locked --bins -p nestor-e2e
  bash e2e/testbed/build-images.sh >/dev/null
  if [ ! -f "$state/testbed/pids" ]; then
    mkdir -p "$state"
    ./target/debug/nestor-testbed up --node "$state/testbed" >/dev/null
  fi
  kubeconfig=$state/testbed/admin.kubeconfig
  # shellcheck source=testbed/node.env
  source e2e/testbed/node.env
  mirror="http://$HOST_IP:$REGISTRY_PORT"
  helm_args+=(--set image.pullPolicy=Never
    --set-json "nodeRegistryMirrors={\"registry.k8s.io\":[\"$mirror\"],\"images.nestor.test\":[\"$mirror\"]}"
    --set-json "network.allowedEgress=[{\"cidr\":\"$HOST_IP/32\",\"ports\":[$REGISTRY_PORT]}]")
fi
say "host cluster: $kubeconfig"

"$tools/helm" upgrade --install nestor charts/nestor --kubeconfig "$kubeconfig" \
  --namespace nestor-system --create-namespace --wait --timeout 180s "${helm_args[@]}" >/dev/null
say "Nestor installed with Helm (release nestor in nestor-system); operator: $(kubectl -n nestor-system get pods -l app.kubernetes.io/name=nestor -o jsonpath='{.items[0].metadata.name}')"

applied=$SECONDS
kubectl apply -f samples/virtualcluster.yaml >/dev/null
say "VirtualCluster default/demo applied; waiting for Ready"
deadline=$((SECONDS + ${NESTOR_UP_TIMEOUT:-300}))
last=""
while :; do
  ready=$(kubectl get vc demo -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  message=$(kubectl get vc demo -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' 2>/dev/null || true)
  [ "$message" != "$last" ] && say "Ready=${ready:-Unknown}: ${message:-no status yet}"
  last=$message
  [ "$ready" = "True" ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "up: demo is not Ready after ${NESTOR_UP_TIMEOUT:-300}s" >&2
    kubectl get pods -l nestor.dev/cluster=demo >&2 || true
    exit 1
  fi
  sleep 0.5
done
say "demo is Ready, $((SECONDS - applied))s after apply; waiting for its node pool"
last=""
while :; do
  ready=$(kubectl get np demo-workers -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  message=$(kubectl get np demo-workers -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' 2>/dev/null || true)
  [ "$message" != "$last" ] && say "demo-workers Ready=${ready:-Unknown}: ${message:-no status yet}"
  last=$message
  [ "$ready" = "True" ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "up: demo-workers is not Ready after ${NESTOR_UP_TIMEOUT:-300}s" >&2
    kubectl get pods -l nestor.dev/node-pool=demo-workers >&2 || true
    exit 1
  fi
  sleep 0.5
done
say "node pool demo-workers is Ready, $((SECONDS - applied))s after apply"
mkdir -p "$state"
kubectl get secret demo-admin-kubeconfig -o jsonpath='{.data.kubeconfig}' | base64 -d > "$state/demo.kubeconfig"
echo
"$tools/kubectl" --kubeconfig "$state/demo.kubeconfig" get nodes -o wide
echo
echo "The virtual cluster's admin kubeconfig: $state/demo.kubeconfig"
echo "  $tools/kubectl --kubeconfig $state/demo.kubeconfig get nodes"
echo "The host cluster:"
echo "  $tools/kubectl --kubeconfig $kubeconfig get vc,pods"
echo "Stop everything: bash e2e/down.sh"

#!/usr/bin/env bash
# The main job. With no kubeconfig: starts a host cluster on this machine
# (the test bed), installs Nestor with Helm, creates the sample virtual
# cluster and shows it coming up. With a kubeconfig (argument or
# $KUBECONFIG): installs Nestor there instead and waits for the sample to be
# Ready. `e2e/down.sh` stops what this started.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${NESTOR_STATE_DIR:-${TMPDIR:-/tmp}/nestor}
kubeconfig=${1:-${KUBECONFIG:-}}
tools=$(bash e2e/testbed/install-tools.sh)
kubectl() { "$tools/kubectl" --kubeconfig "$kubeconfig" "$@"; }

if [ -z "$kubeconfig" ]; then
  bash e2e/testbed/build-binaries.sh >/dev/null
  cargo build --quiet --bins -p nestor-e2e -p nestor-operator
  if [ ! -f "$state/testbed/pids" ]; then
    mkdir -p "$state"
    ./target/debug/nestor-testbed up "$state/testbed" >/dev/null
  fi
  kubeconfig=$state/testbed/admin.kubeconfig
  local_bed=1
fi
echo "up: host cluster: $kubeconfig"

"$tools/helm" upgrade --install nestor charts/nestor --kubeconfig "$kubeconfig" \
  --namespace nestor-system --create-namespace --wait=false >/dev/null
echo "up: Nestor installed with Helm (release nestor, namespace nestor-system)"

if [ -n "${local_bed:-}" ]; then
  # The local host cluster has no node yet, so the chart's operator pod
  # cannot run; the same binary runs here under the chart's ServiceAccount.
  if [ ! -f "$state/operator.pid" ] || ! kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
    token=$(kubectl -n nestor-system create token nestor --duration=24h)
    server=$(sed -n 's/^ *server: //p' "$kubeconfig" | head -n1)
    ca=$(sed -n 's/^ *certificate-authority-data: //p' "$kubeconfig" | head -n1)
    cat > "$state/operator.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: host, cluster: {server: $server, certificate-authority-data: $ca}}]
users: [{name: nestor, user: {token: $token}}]
contexts: [{name: nestor, context: {cluster: host, user: nestor}}]
current-context: nestor
KUBECONFIG
    KUBECONFIG=$state/operator.kubeconfig POD_NAMESPACE=nestor-system setsid \
      ./target/debug/nestor-operator --nested-route=published --metrics-addr=127.0.0.1:0 \
      >"$state/operator.log" 2>&1 < /dev/null &
    echo $! > "$state/operator.pid"
    echo "up: operator running as PID $(cat "$state/operator.pid") (log: $state/operator.log)"
  fi
fi

kubectl apply -f samples/virtualcluster.yaml >/dev/null
echo "up: VirtualCluster default/demo applied; waiting for it (Ctrl-C stops waiting, not the cluster)"
deadline=$((SECONDS + ${NESTOR_UP_TIMEOUT:-300}))
while :; do
  ready=$(kubectl get vc demo -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  message=$(kubectl get vc demo -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' 2>/dev/null || true)
  echo "up: $(date +%T) Ready=${ready:-Unknown} ${message}"
  [ "$ready" = "True" ] && break
  if [ $SECONDS -ge $deadline ]; then
    if [ -n "${local_bed:-}" ]; then
      echo "up: the local host cluster has no kubelet node yet, so the control-plane pods stay Pending;"
      echo "up: every object is created and the status above says what it waits for."
      break
    fi
    echo "up: demo is not Ready after ${NESTOR_UP_TIMEOUT:-300}s" >&2
    exit 1
  fi
  sleep 5
done
kubectl get vc,statefulsets,deployments,services,secrets -l nestor.dev/cluster=demo 2>/dev/null || kubectl get vc demo
echo
echo "Admin kubeconfig of the virtual cluster:"
echo "  $tools/kubectl --kubeconfig $kubeconfig get secret demo-admin-kubeconfig -o jsonpath='{.data.kubeconfig}' | base64 -d > demo.kubeconfig"
echo "Host cluster:  $tools/kubectl --kubeconfig $kubeconfig get vc"

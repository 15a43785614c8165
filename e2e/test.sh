#!/usr/bin/env bash
# Runs every test: unit tests, the CRD/chart drift checks, clippy, helm lint,
# the integration tests against a real control plane started on this
# machine, and the end-to-end tests on a real node (as root). On a fresh
# machine it first installs containerd, runc, the CNI plugins and busybox (Debian),
# builds the pinned Kubernetes, etcd, CoreDNS and crane binaries and the images
# (cached by version), and fetches kubectl and helm.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash e2e/testbed/install-node-packages.sh
bash e2e/testbed/build-binaries.sh kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd etcdctl etcdutl coredns pause crane kube-router versitygw >/dev/null
bash e2e/testbed/install-tools.sh >/dev/null
echo "test: prerequisites ready in $((SECONDS - start))s" >&2
cargo fmt --all --check
cargo build --workspace --bins --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
bash e2e/testbed/build-images.sh >/dev/null
"$(bash e2e/testbed/install-tools.sh)/helm" lint charts/nestor
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } } END { print p + 0, f + 0 }' "$log")
echo "test: all done in $((SECONDS - start))s" >&2
echo "tests: $passed passed, $failed failed"
exit "$status"


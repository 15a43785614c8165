#!/usr/bin/env bash
# Runs every test: unit tests, the CRD/chart drift checks, clippy, and the
# integration tests against a real control plane started on this machine.
# On a fresh machine it first builds the pinned Kubernetes and etcd
# binaries (cached by version) and fetches kubectl and helm.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash e2e/testbed/build-binaries.sh >/dev/null
bash e2e/testbed/install-tools.sh >/dev/null
echo "test: prerequisites ready in $((SECONDS - start))s" >&2
cargo build --workspace --bins --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
"$(bash e2e/testbed/install-tools.sh)/helm" lint charts/nestor
cargo test --workspace --locked
echo "test: all done in $((SECONDS - start))s" >&2

#!/usr/bin/env bash
# Builds every image the test bed's node runs, as docker archives, from the
# binaries built here: the sandbox (pause), etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, CoreDNS and the Nestor operator.
# Each archive is rebuilt only when its binary is newer. The references are
# exactly those the pod specs use. Prints the directory of the archives.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${NESTOR_CACHE:-$HOME/.cache/nestor}
out=$cache/images
mkdir -p "$out"
bash "$here/build-binaries.sh" kube-apiserver kube-controller-manager kube-scheduler etcd coredns pause >/dev/null
k8s_bin=$cache/kubernetes/$K8S_VERSION/bin

image() { # image REF BINARY [build-image.py args...]
  local ref=$1 binary=$2; shift 2
  local file
  file=$out/$(echo "$ref" | tr '/:' '__').tar
  if [ ! -f "$file" ] || [ "$binary" -nt "$file" ]; then
    echo "nestor-testbed: building image $ref" >&2
    python3 "$here/build-image.py" --ref "$ref" --out "$file" "$@" >/dev/null
  fi
}

registry=registry.k8s.io
image "$registry/pause:$PAUSE_TAG" "$cache/pause/$PAUSE_TAG/bin/pause" \
  --file "$cache/pause/$PAUSE_TAG/bin/pause:/pause" --entrypoint '["/pause"]' --user 65535:65535
image "$registry/etcd:$ETCD_VERSION-0" "$cache/etcd/$ETCD_VERSION/bin/etcd" \
  --file "$cache/etcd/$ETCD_VERSION/bin/etcd:/usr/local/bin/etcd" --dir /var/lib/etcd:0700 --dir /tmp:1777
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  image "$registry/$c:v$K8S_VERSION" "$k8s_bin/$c" --file "$k8s_bin/$c:/usr/local/bin/$c" --dir /tmp:1777
done
image "$registry/coredns/coredns:v$COREDNS_VERSION" "$cache/coredns/$COREDNS_VERSION/bin/coredns" \
  --file "$cache/coredns/$COREDNS_VERSION/bin/coredns:/coredns" --entrypoint '["/coredns"]' --user 65532:65532

# The operator: a static binary, as operator/Dockerfile builds it.
operator_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$root/charts/nestor/Chart.yaml")
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --locked --profile image \
  --target x86_64-unknown-linux-gnu -p nestor-operator)
operator=$root/target/x86_64-unknown-linux-gnu/image/nestor-operator
image "ghcr.io/nestor-dev/nestor-operator:$operator_version" "$operator" \
  --file "$operator:/nestor-operator" --entrypoint '["/nestor-operator"]' --user 65532:65532
echo "$out"

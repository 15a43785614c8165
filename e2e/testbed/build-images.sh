#!/usr/bin/env bash
# Builds every image the test bed's node runs, as docker archives, from the
# binaries built here: the sandbox (pause), etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, CoreDNS, Konnectivity's proxy-server,
# the Nestor operator, the Nestor node image (kubelet, kube-proxy, Konnectivity's
# proxy-agent, flanneld, kube-router, containerd, runc, CNI plugins), a busybox image that the
# end-to-end tests run as nested workloads, metrics-server, and the images
# upstream's Conformance suite runs (see docs/conformance.md).
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
bash "$here/build-binaries.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy \
  etcd etcdctl etcdutl coredns pause konnectivity flannel kube-router agnhost metrics-server conformance >/dev/null
# The previous minor's components, for the upgrade tests.
BUILD_K8S_VERSION=$K8S_PREVIOUS_VERSION bash "$here/build-binaries.sh" kube-apiserver \
  kube-controller-manager kube-scheduler kubelet kube-proxy >/dev/null
k8s_bin=$cache/kubernetes/$K8S_VERSION/bin
knp_bin=$cache/konnectivity/$KONNECTIVITY_VERSION/bin
flanneld=$cache/flannel/$FLANNEL_VERSION/bin/flanneld
kube_router=$cache/kube-router/$KUBE_ROUTER_VERSION/bin/kube-router

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
# etcd and etcdctl, as upstream's image carries them (Nestor's snapshots
# run etcdctl).
etcd_bin=$cache/etcd/$ETCD_VERSION/bin
image "$registry/etcd:$ETCD_VERSION-0" "$etcd_bin/etcdctl" \
  --file "$etcd_bin/etcd:/usr/local/bin/etcd" --file "$etcd_bin/etcdctl:/usr/local/bin/etcdctl" \
  --dir /var/lib/etcd:0700 --dir /tmp:1777
for version in "$K8S_VERSION" "$K8S_PREVIOUS_VERSION"; do
  bin=$cache/kubernetes/$version/bin
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    image "$registry/$c:v$version" "$bin/$c" --file "$bin/$c:/usr/local/bin/$c" --dir /tmp:1777
  done
done
image "$registry/coredns/coredns:v$COREDNS_VERSION" "$cache/coredns/$COREDNS_VERSION/bin/coredns" \
  --file "$cache/coredns/$COREDNS_VERSION/bin/coredns:/coredns" --entrypoint '["/coredns"]' --user 65532:65532
image "$registry/kas-network-proxy/proxy-server:v$KONNECTIVITY_VERSION" "$knp_bin/proxy-server" \
  --file "$knp_bin/proxy-server:/proxy-server" --entrypoint '["/proxy-server"]' --user 65532:65532

# The operator and the node agent: static binaries, as operator/Dockerfile
# and node/Dockerfile build them. The operator's image also carries the
# backup tool and upstream etcdutl, which backup and restore run.
operator_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$root/charts/nestor/Chart.yaml")
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --locked --profile image \
  --target x86_64-unknown-linux-gnu -p nestor-operator -p nestor-backup -p nestor-node)
operator=$root/target/x86_64-unknown-linux-gnu/image/nestor-operator
backup_tool=$root/target/x86_64-unknown-linux-gnu/image/nestor-backup
newest=$(ls -t "$operator" "$backup_tool" "$etcd_bin/etcdutl" | head -n 1)
image "ghcr.io/nestor-dev/nestor-operator:$operator_version" "$newest" \
  --file "$operator:/nestor-operator" --file "$backup_tool:/nestor-backup" \
  --file "$etcd_bin/etcdutl:/etcdutl" --entrypoint '["/nestor-operator"]' --user 65532:65532

# The node image (node/Dockerfile's equivalent, from this machine's packages).
# One per Kubernetes version the test bed builds.
node_agent=$root/target/x86_64-unknown-linux-gnu/image/nestor-node
for version in "$K8S_VERSION" "$K8S_PREVIOUS_VERSION"; do
  bin=$cache/kubernetes/$version/bin
  node_ref="ghcr.io/nestor-dev/nestor-node:v$version"
  node_file=$out/$(echo "$node_ref" | tr '/:' '__').tar
  if [ ! -f "$node_file" ] || [ "$node_agent" -nt "$node_file" ] || [ "$bin/kubelet" -nt "$node_file" ] \
    || [ "$knp_bin/proxy-agent" -nt "$node_file" ] || [ "$flanneld" -nt "$node_file" ] \
    || [ "$kube_router" -nt "$node_file" ]; then
    rootfs=$(mktemp -d)
    bash "$here/node-rootfs.sh" "$rootfs/root" "$bin" "$node_agent" "$knp_bin/proxy-agent" \
      "$flanneld" "$kube_router"
    image "$node_ref" "$node_agent" --tree "$rootfs/root" --entrypoint '["/usr/local/bin/nestor-node"]'
    rm -rf "$rootfs"
  fi
done

# Nested workloads for the end-to-end tests: Debian's static busybox.
busybox=/bin/busybox
if [ -x "$busybox" ]; then
  bb_ref="$TEST_IMAGE_REGISTRY/busybox:$BUSYBOX_TAG"
  bb_file=$out/$(echo "$bb_ref" | tr '/:' '__').tar
  if [ ! -f "$bb_file" ]; then
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/root/bin" "$rootfs/root/usr/bin" "$rootfs/root/tmp"
    cp "$busybox" "$rootfs/root/usr/bin/busybox"
    # Links to /usr/bin/busybox for every applet (sh, httpd, wget, nslookup...).
    "$busybox" --install -s "$rootfs/root/bin"
    image "$bb_ref" "$busybox" --tree "$rootfs/root" --cmd '["sh"]'
    rm -rf "$rootfs"
  fi
fi

# An aggregated API (metrics-server) and upstream's test image (agnhost),
# which the end-to-end tests run inside nested clusters.
ms_bin=$cache/metrics-server/$METRICS_SERVER_VERSION/bin
image "$registry/metrics-server/metrics-server:v$METRICS_SERVER_VERSION" "$ms_bin/metrics-server" \
  --file "$ms_bin/metrics-server:/metrics-server" --entrypoint '["/metrics-server"]' --user 65534:65534 \
  --dir /tmp:1777

# Upstream's Conformance images, under the references test/utils/image/
# manifest.go of this Kubernetes version gives them. No registry is
# reachable, so each is built here from what upstream's does: agnhost and
# sample-apiserver from the Kubernetes module, nnp (nonewprivs) too, etcd
# from its module, and a stand-in base (tools-rootfs.sh: busybox applets,
# bash as /bin/sh, dig, getent, curl, nc, ip) where upstream starts from
# Alpine or Debian, busybox included (Debian's busybox 1.35 would drop the
# environment variables upstream's tests name with dashes). nginx is stood
# in for by busybox's httpd on port 80.
e2e=$registry/e2e-test-images
agnhost_tag=$(cat "$k8s_bin/agnhost.version")
conformance_files=("$k8s_bin/agnhost" "$k8s_bin/sample-apiserver" "$k8s_bin/nnp" "$here/tools-rootfs.sh" "$here/build-images.sh")
stale=0
for f in "${conformance_files[@]}"; do
  [ "$f" -nt "$out/$(echo "$e2e/agnhost:$agnhost_tag" | tr '/:' '__').tar" ] && stale=1
done
if [ "$stale" = 1 ] || [ ! -f "$out/$(echo "$e2e/nonroot:1.4" | tr '/:' '__').tar" ]; then
  rm -f "$out"/registry.k8s.io_e2e-test-images_*.tar
  stage=$(mktemp -d)
  tools=$stage/tools
  bash "$here/tools-rootfs.sh" "$tools"
  images=$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/test/images
  # agnhost: its binary, agnhost-2, the porter's certificate, a user 1000
  # in a group 50000 (tools-rootfs.sh), pause by default.
  cp -a "$tools" "$stage/agnhost"
  cp "$k8s_bin/agnhost" "$stage/agnhost/agnhost"
  ln -s agnhost "$stage/agnhost/agnhost-2"
  cp "$images/agnhost/porter/localhost.crt" "$images/agnhost/porter/localhost.key" "$stage/agnhost/"
  mkdir -p "$stage/agnhost/uploads"
  for tag in "$agnhost_tag" 2.55; do
    image "$e2e/agnhost:$tag" "$k8s_bin/agnhost" --tree "$stage/agnhost" \
      --entrypoint '["/agnhost"]' --cmd '["pause"]'
  done
  for pet in kitten nautilus; do
    cp -a "$stage/agnhost" "$stage/$pet"
    cp "$images/$pet/html/"* "$stage/$pet/"
    image "$e2e/$pet:1.7" "$k8s_bin/agnhost" --tree "$stage/$pet" \
      --entrypoint '["/agnhost"]' --cmd '["test-webserver"]'
  done
  image "$e2e/busybox:1.37.0-1" /bin/busybox --tree "$tools" --cmd '["sh"]'
  image "$e2e/jessie-dnsutils:1.7" /bin/busybox --tree "$tools" --cmd '["sh"]'
  image "$e2e/nonroot:1.4" /bin/busybox --tree "$tools" --cmd '["sh"]' --user 1234
  cp -a "$tools" "$stage/nonewprivs"
  install -D -m 4755 "$k8s_bin/nnp" "$stage/nonewprivs/usr/local/bin/nnp"
  image "$e2e/nonewprivs:1.3" "$k8s_bin/nnp" --tree "$stage/nonewprivs" --cmd '["nnp"]'
  mkdir -p "$stage/nginx/usr/share/nginx/html"
  cp -a "$tools/." "$stage/nginx/"
  echo '<html><body>nginx stand-in</body></html>' > "$stage/nginx/usr/share/nginx/html/index.html"
  for tag in 1.14-4 1.15-4; do
    image "$e2e/nginx:$tag" /bin/busybox --tree "$stage/nginx" \
      --entrypoint '["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"]'
  done
  image "$e2e/sample-apiserver:1.29.2" "$k8s_bin/sample-apiserver" \
    --file "$k8s_bin/sample-apiserver:/sample-apiserver" --entrypoint '["/sample-apiserver"]' --dir /tmp:1777
  rm -rf "$stage"
fi
image "$registry/pause:3.10.1" "$cache/pause/$PAUSE_TAG/bin/pause" \
  --file "$cache/pause/$PAUSE_TAG/bin/pause:/pause" --entrypoint '["/pause"]' --user 65535:65535
image "$registry/etcd:$E2E_ETCD_VERSION-0" "$cache/etcd/$E2E_ETCD_VERSION/bin/etcd" \
  --file "$cache/etcd/$E2E_ETCD_VERSION/bin/etcd:/usr/local/bin/etcd" --dir /var/lib/etcd:0700 --dir /tmp:1777
echo "$out"

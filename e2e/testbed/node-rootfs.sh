#!/usr/bin/env bash
# Stages the root file system of the Nestor node image in DIR from this
# machine's Debian packages (containerd, runc, CNI plugins, iptables, ipset,
# iproute2, mount, conntrack) plus the kubelet, kube-proxy, Konnectivity's
# proxy-agent, flanneld, kube-router and nestor-node binaries built here. node/Dockerfile installs the same packages on a
# Debian base for real registries; this is its equivalent without a
# container engine or a registry.
# Usage: node-rootfs.sh DIR KUBE_BIN_DIR NESTOR_NODE_BINARY PROXY_AGENT_BINARY
#                       FLANNELD_BINARY KUBE_ROUTER_BINARY
set -euo pipefail
dir=$1 kube_bin=$2 nestor_node=$3 proxy_agent=$4 flanneld=$5 kube_router=$6
rm -rf "$dir"
mkdir -p "$dir"

# shellcheck source=rootfs-lib.sh
source "$(dirname "$0")/rootfs-lib.sh"

binaries=(
  /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/bin/ctr /usr/sbin/runc
  /usr/sbin/xtables-nft-multi /usr/sbin/ipset /usr/sbin/ip /usr/sbin/bridge /usr/sbin/conntrack
  /usr/bin/mount /usr/bin/umount
)
plugins=(bridge host-local loopback portmap)
for b in "${binaries[@]}"; do copy "$b"; done
for p in "${plugins[@]}"; do copy "/usr/lib/cni/$p" "/opt/cni/bin/$p"; done
xt=/usr/lib/x86_64-linux-gnu/xtables
for f in "$xt"/*.so; do copy "$f"; done
for f in "${binaries[@]}" "${plugins[@]/#//usr/lib/cni/}" "$xt"/*.so; do
  for l in $(libs "$f"); do [ -e "$dir$l" ] || copy "$l"; done
done
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -s xtables-nft-multi "$dir/usr/sbin/$t"
done
copy "$kube_bin/kubelet" /usr/local/bin/kubelet
copy "$kube_bin/kube-proxy" /usr/local/bin/kube-proxy
copy "$nestor_node" /usr/local/bin/nestor-node
copy "$proxy_agent" /usr/local/bin/proxy-agent
copy "$flanneld" /usr/local/bin/flanneld
copy "$kube_router" /usr/local/bin/kube-router
# Debian's layout: /bin, /sbin and /lib are /usr's.
for l in bin sbin lib lib64; do
  if [ -d "$dir/$l" ] && [ ! -L "$dir/$l" ]; then
    mkdir -p "$dir/usr/$l"; cp -a "$dir/$l/." "$dir/usr/$l/"; rm -rf "${dir:?}/$l"
  fi
  ln -s "usr/$l" "$dir/$l"
done
mkdir -p "$dir/etc/cni/net.d" "$dir/var/lib" "$dir/var/log" "$dir/run" "$dir/tmp"
chmod 1777 "$dir/tmp"
ln -s /proc/self/mounts "$dir/etc/mtab"
echo 'root:x:0:0:root:/root:/usr/sbin/nologin' > "$dir/etc/passwd"
echo 'root:x:0:' > "$dir/etc/group"

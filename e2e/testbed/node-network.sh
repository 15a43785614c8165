#!/usr/bin/env bash
# The host side of the test bed's node.
#   node-network.sh up DIR    saves the sysctls the node changes, creates the
#                             node's network namespace (nestor-node, 10.77.0.2,
#                             linked to the machine's 10.77.0.1) and the
#                             metadata stand-in's (169.254.169.254)
#   node-network.sh down DIR  removes everything the node made: containers
#                             and shims, mounts, pod network namespaces,
#                             links, iptables rules, conntrack entries,
#                             cgroups, sysctls, files. Idempotent, and safe
#                             after a crash. Processes it kills are found by
#                             PID (the kubelet's cgroups, shims of DIR's socket).
set -uo pipefail
action=${1:?up|down}; dir=${2:?node directory}
source "$(dirname "$0")/node.env"

case "$action" in
up)
  set -e
  mkdir -p "$dir"
  # The machine's own values, saved once (a crashed run must not record
  # the values it changed as the originals).
  [ -f "$SYSCTL_ORIG" ] || sysctl vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward > "$SYSCTL_ORIG"
  # Pods may reach each other, Services, the node, the control plane and
  # the metadata stand-in, nothing beyond.
  iptables -I FORWARD -s "$POD_CIDR" ! -d "$POD_CIDR" -m comment --comment NESTOR-TESTBED -j DROP
  iptables -I FORWARD -s "$POD_CIDR" -d "$METADATA_IP" -m comment --comment NESTOR-TESTBED -j ACCEPT
  sysctl -qw net.ipv4.ip_forward=1
  # The node's namespace and its link to the machine.
  ip netns add "$NODE_NETNS"
  ip link add "$NODE_LINK" type veth peer name "$NODE_PEER" netns "$NODE_NETNS"
  ip addr add "$HOST_IP/$NODE_PREFIX" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  ip route add "$POD_CIDR" via "$NODE_IP"
  ip route add "$SERVICE_CIDR" via "$NODE_IP"
  node() { ip netns exec "$NODE_NETNS" "$@"; }
  node ip link set lo up
  node ip addr add "$NODE_IP/$NODE_PREFIX" dev "$NODE_PEER"
  node ip link set "$NODE_PEER" up
  node ip route add default via "$HOST_IP"
  node sysctl -qw net.ipv4.ip_forward=1
  # The metadata stand-in's namespace: its address on loopback, a /30 link.
  ip netns add "$METADATA_NETNS"
  ip link add "$METADATA_LINK" type veth peer name eth0 netns "$METADATA_NETNS"
  ip addr add "$METADATA_LINK_HOST/30" dev "$METADATA_LINK"
  ip link set "$METADATA_LINK" up
  ip route add "$METADATA_IP/32" via "$METADATA_LINK_PEER"
  md() { ip netns exec "$METADATA_NETNS" "$@"; }
  md ip link set lo up
  md ip addr add "$METADATA_IP/32" dev lo
  md ip addr add "$METADATA_LINK_PEER/30" dev eth0
  md ip link set eth0 up
  md ip route add default via "$METADATA_LINK_HOST"
  ;;
down)
  sock=$dir/containerd/containerd.sock
  if [ -S "$sock" ]; then
    ctr="ctr -a $sock -n k8s.io"
    for t in $($ctr tasks ls -q 2>/dev/null); do $ctr tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1; done
    for t in $($ctr tasks ls -q 2>/dev/null); do $ctr tasks rm -f "$t" >/dev/null 2>&1; done
    for c in $($ctr containers ls -q 2>/dev/null); do $ctr containers rm "$c" >/dev/null 2>&1; done
  fi
  # Stragglers, by PID: processes in the kubelet's cgroups, shims of our socket.
  for f in $(find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods -name cgroup.procs 2>/dev/null); do
    for p in $(cat "$f"); do kill -KILL "$p" 2>/dev/null; done
  done
  for d in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null < "$d/cmdline" | grep -q "containerd-shim-runc-v2 .*-address $sock"; then
      kill -KILL "${d#/proc/}" 2>/dev/null
    fi
  done
  for _ in 1 2 3; do
    findmnt -rn -o TARGET | grep "^$dir" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  done
  for n in /run/netns/cni-*; do [ -e "$n" ] && { umount "$n" 2>/dev/null; rm -f "$n"; }; done
  # The node's and the metadata stand-in's namespaces take their links,
  # bridges, routes, iptables rules and conntrack entries with them.
  for n in "$NODE_NETNS" "$METADATA_NETNS"; do ip netns del "$n" 2>/dev/null; done
  rmdir /run/netns 2>/dev/null
  ip link del "$NODE_LINK" 2>/dev/null
  ip link del "$METADATA_LINK" 2>/dev/null
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    "$cmd-save" | grep -vE 'KUBE-|CNI-|NESTOR-TESTBED' | "$cmd-restore"
  done
  # iptables-nft leaves empty base tables behind; drop those with no rule.
  if command -v nft >/dev/null; then
    for fam in ip ip6; do
      cmd=iptables; [ $fam = ip6 ] && cmd=ip6tables
      for t in raw mangle nat filter security; do
        nft list table $fam $t >/dev/null 2>&1 || continue
        [ "$($cmd -t $t -S | grep -vc '^-P .* ACCEPT$')" = 0 ] && nft delete table $fam $t
      done
    done
  fi
  if command -v conntrack >/dev/null; then
    conntrack -D -s "$POD_CIDR" >/dev/null 2>&1; conntrack -D -d "$POD_CIDR" >/dev/null 2>&1
    conntrack -D -d "$SERVICE_CIDR" >/dev/null 2>&1
  fi
  for c in /sys/fs/cgroup/*/kubepods; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  if [ -f "$SYSCTL_ORIG" ]; then
    while read -r k _ v; do sysctl -qw "$k=$v"; done < "$SYSCTL_ORIG"
    rm -f "$SYSCTL_ORIG"
  fi
  # Paths the kubelet and containerd hard-code.
  rm -rf /var/lib/kubelet/device-plugins; rmdir /var/lib/kubelet 2>/dev/null
  rm -rf /var/log/containers /var/lib/cni /run/containerd
  rm -rf "$dir"
  true
  ;;
esac

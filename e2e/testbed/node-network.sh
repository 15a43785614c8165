#!/usr/bin/env bash
# The host side of the test bed's node.
#   node-network.sh up DIR    saves the sysctls the node changes and creates
#                             the node-address bridge (nestor-host0, 10.77.0.1)
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
  # Pods may reach each other, Services and the node, nothing beyond.
  iptables -I FORWARD -s "$POD_CIDR" ! -d "$POD_CIDR" -m comment --comment NESTOR-TESTBED -j DROP
  # The node's address: a bridge without ports holding a /32 (this kernel
  # has no dummy links; the kubelet refuses a loopback node address).
  ip link add "$NODE_LINK" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
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
  rmdir /run/netns 2>/dev/null
  for v in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F'[:@ ]+' '{print $2}'); do ip link del "$v" 2>/dev/null; done
  ip link del "$POD_BRIDGE" 2>/dev/null
  ip link del "$NODE_LINK" 2>/dev/null
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

#!/usr/bin/env bash
# Installs what the test bed's node needs from Debian: containerd, runc, the
# CNI plugins, iptables, conntrack, iproute2 and mount (all also go into the
# node image), ipset (for kube-router, the host's NetworkPolicy enforcer),
# nftables (the host's kube-proxy runs in nftables mode),
# busybox-static (the nested workloads' image), and dash,
# bash, dig, curl, OpenBSD netcat, hping3 and iperf3 (the stand-ins for
# upstream's test images, tools-rootfs.sh; the network attacks' spoofed
# packets; the throughput figure). Does nothing when they are there.
set -euo pipefail
missing=()
for p in containerd runc containernetworking-plugins iptables conntrack iproute2 mount ipset nftables busybox-static \
  dash bash bind9-dnsutils curl netcat-openbsd hping3 iperf3; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "nestor-testbed: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

#!/usr/bin/env bash
# Stages in DIR the root file system that stands in for the base of
# upstream's test images (Alpine with bind-tools, curl, netcat, iproute2
# and bash, or Debian with dnsutils): busybox's applets for the everyday
# commands, and from this machine's Debian packages bash, dig, getent,
# curl, nc and ip with their libraries, hping3 (the network attacks send
# spoofed packets with it) and iperf3 (the throughput figure). /bin/sh is bash, not busybox:
# Debian's busybox shell runs its own applets inside `sh -c`, which would
# shadow nc, ip and dig with busybox's smaller ones, and it drops
# environment variables whose names are not shell identifiers, which
# upstream's tests pass to `sh -c env` (dash drops them too).
# Usage: tools-rootfs.sh DIR
set -euo pipefail
dir=$1
rm -rf "$dir"
mkdir -p "$dir/usr/bin" "$dir/usr/sbin" "$dir/tmp" "$dir/etc" "$dir/root"
chmod 1777 "$dir/tmp"

# shellcheck source=rootfs-lib.sh
source "$(dirname "$0")/rootfs-lib.sh"

cp /bin/busybox "$dir/usr/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$dir/usr/bin/$applet" ] || ln -s busybox "$dir/usr/bin/$applet"
done
real=(/usr/bin/bash /usr/bin/dig /usr/bin/getent /usr/bin/curl /usr/bin/nc.openbsd /usr/sbin/ip /usr/sbin/hping3 /usr/bin/iperf3)
for b in "${real[@]}"; do
  rm -f "$dir/usr/bin/$(basename "$b")"
  copy "$b" "/usr/bin/$(basename "$b")"
  for l in $(libs "$b"); do [ -e "$dir$l" ] || copy "$l"; done
done
ln -sf bash "$dir/usr/bin/sh"
ln -sf nc.openbsd "$dir/usr/bin/nc"
# getent and the resolver read these.
for f in /usr/lib/x86_64-linux-gnu/libnss_dns.so.2 /usr/lib/x86_64-linux-gnu/libnss_files.so.2; do
  [ -e "$f" ] && copy "$f"
done
# curl verifies TLS against these.
[ -d /etc/ssl/certs ] && mkdir -p "$dir/etc/ssl" && cp -rL /etc/ssl/certs "$dir/etc/ssl/certs"
# Debian's layout: /bin, /sbin and /lib are /usr's.
for l in bin sbin lib lib64; do
  if [ -d "$dir/$l" ] && [ ! -L "$dir/$l" ]; then
    mkdir -p "$dir/usr/$l"; cp -a "$dir/$l/." "$dir/usr/$l/"; rm -rf "${dir:?}/$l"
  fi
  [ -e "$dir/usr/$l" ] || mkdir -p "$dir/usr/$l"
  ln -s "usr/$l" "$dir/$l"
done
echo 'hosts: files dns' > "$dir/etc/nsswitch.conf"
cat > "$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
P
cat > "$dir/etc/group" <<'G'
root:x:0:
user-defined-in-image:x:1000:
group-defined-in-image:x:50000:user-defined-in-image
nogroup:x:65534:
G

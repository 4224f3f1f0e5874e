#!/usr/bin/env bash
# Builds (or reuses) what the lab's world VM boots: a Debian trixie root file
# system with the simulated world's real programs, trixie's kernel as a raw
# vmlinux (booted directly: no bootloader, no decompression), and a small
# initramfs that loads the world's kernel modules, mounts that root file
# system (shared read-only from the host over virtio-9p, with a tmpfs on
# top) and starts qemu-tests/lab/world/init from the checkout (also shared).
#
#   qemu-tests/lab/world-build.sh     prints three lines: ROOT VMLINUX INITRAMFS
#
# Cached under ${ROUTERD_CACHE:-/var/cache/routerd}: world-root/ (keyed by
# its package list, see image/trixie-root.sh) and world/ (the vmlinux and
# the initramfs, rebuilt when the kernel, the module list or the
# initramfs's init change). Needs root.
set -euo pipefail
lab=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$lab/../.." && pwd)
cache=${ROUTERD_CACHE:-/var/cache/routerd}
die() { echo "qemu-tests/lab/world-build.sh: $*" >&2; exit 1; }

# The world's programs: the provider's registrar (kamailio), SIP user agents
# with RTP (sipp), NTP (chrony), DNS and DHCP (dnsmasq), the ISP's scanner
# (nmap), captures (tcpdump), the phones' web UI and small peers (python3),
# line emulation and QoS (iproute2), load and voice probes (iperf3, irtt),
# the phones' DHCP client, ping and nc (busybox-static).
packages=(bash busybox-static kamailio sip-tester chrony dnsmasq-base nmap tcpdump python3
  iproute2 iperf3 irtt procps kmod mount)

# The world's kernel modules (with their dependencies): the virtio NIC, the
# 9p and overlay file systems of its root, VLANs and macvlan for the office
# LAN, veth between its namespaces, the qdiscs of the line emulation, and fq
# for the benchmark's paced sender.
modules=(virtio_net 9p 9pnet_virtio overlay 8021q macvlan veth sch_netem sch_tbf sch_htb
  sch_cake sch_fq_codel sch_fq sch_ingress ifb act_mirred cls_u32)

"$repo/image/trixie-root.sh" "$cache/world-root" "${packages[@]}" >&2
kdir=$("$repo/image/kernel.sh")
kver=$(ls "$kdir/root/lib/modules")
out=$cache/world
mkdir -p "$out"

# The raw kernel: the bzImage's payload is a zstd stream; trixie's kernel has
# a PVH entry point, so QEMU boots the ELF directly (saves ~6 s under TCG).
vmlinux=$out/vmlinux-$kver
if [ ! -s "$vmlinux" ]; then
  bz=$kdir/root/boot/vmlinuz-$kver
  command -v zstd > /dev/null || die "needs zstd"
  offset=$(LC_ALL=C grep -abo -m1 $'\x28\xb5\x2f\xfd' "$bz" | head -1 | cut -d: -f1)
  [ -n "$offset" ] || die "no zstd payload in $bz"
  tail -c +$((offset + 1)) "$bz" | zstd -dcq > "$vmlinux.new" 2> /dev/null || true
  [ "$(head -c 4 "$vmlinux.new" | od -An -c | tr -d ' ')" = '177ELF' ] || die "$bz: the payload is not an ELF kernel"
  mv "$vmlinux.new" "$vmlinux"
fi

# The initramfs, keyed by what goes into it.
key=$( (echo "$kver ${modules[*]}"; cat "$lab/world/initramfs-init") | sha256sum | cut -c1-16)
initramfs=$out/initramfs-$key.cpio
if [ ! -s "$initramfs" ]; then
  work=$(mktemp -d /tmp/world-initramfs.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/bin" "$work/lib/modules"
  cp "$cache/world-root/usr/bin/busybox" "$work/bin/busybox"
  cp "$lab/world/initramfs-init" "$work/init"
  chmod 0755 "$work/init"
  : > "$work/modules"
  for m in "${modules[@]}"; do
    deps=$(modprobe -d "$kdir/root" -S "$kver" --show-depends "$m") || die "kernel $kver has no module $m"
    while read -r kind path _; do
      [ "$kind" = insmod ] || continue
      base=$(basename "$path" .ko.xz)
      grep -qx "$base" "$work/modules" && continue
      xz -dc "$path" > "$work/lib/modules/$base.ko"
      echo "$base" >> "$work/modules"
    done <<< "$deps"
  done
  (cd "$work" && find . | sort | "$work/bin/busybox" cpio -o -H newc 2> /dev/null) > "$initramfs.new"
  mv "$initramfs.new" "$initramfs"
fi
echo "$cache/world-root $vmlinux $initramfs"

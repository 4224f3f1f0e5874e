# shellcheck shell=bash
# shellcheck disable=SC2154 # repo is set by the script that sources this file
# shellcheck disable=SC2034,SC2054 # the QEMU command arrays are for the caller; commas are QEMU's
# What the QEMU scripts share: the default image path, the host packages
# they need, and the simulated world the router's two ports plug into.
# Sourced by qemu-tests/boot/run.sh and qemu-tests/run-router.sh, which set
# `repo` (the repository root) first.
#
# The world is one private network namespace (nothing on the host's own):
#   wan0  tap, the router's eth0 (52:54:00:00:01:01): the ISP at
#         198.51.100.1/24, dnsmasq handing out 198.51.100.10-20 by DHCP
#         (documentation addresses)
#   lan0  tap, the router's eth1 (52:54:00:00:02:01), untagged

# The image built from this checkout: target/image/router-<version>-x86_64.img.
world_default_image() {
  local version
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
  echo "$repo/target/image/router-$version-x86_64.img"
}

# Installs QEMU, qemu-img, dnsmasq, iproute2, zstd and python3 if missing.
world_install() {
  local need=()
  command -v qemu-system-x86_64 > /dev/null || need+=(qemu-system-x86)
  command -v qemu-img > /dev/null || need+=(qemu-utils)
  command -v dnsmasq > /dev/null || need+=(dnsmasq-base)
  command -v ip > /dev/null || need+=(iproute2)
  command -v zstd > /dev/null || need+=(zstd)
  [ -x /usr/bin/python3 ] || need+=(python3)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
  fi
}

# world_start NS WORKDIR: makes namespace NS with the taps wan0 and lan0 and
# the ISP's DHCP server (its leases, pid and log in WORKDIR). Sets
# world_dnsmasq_pid; world_stop NS undoes it all.
world_dnsmasq_pid=
world_start() {
  local ns=$1 work=$2 tap
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  for tap in wan0 lan0; do
    ip -n "$ns" tuntap add dev "$tap" mode tap
    ip -n "$ns" link set "$tap" up
  done
  ip -n "$ns" addr add 198.51.100.1/24 dev wan0
  ip netns exec "$ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
    --interface=wan0 --bind-interfaces --dhcp-range=198.51.100.10,198.51.100.20,255.255.255.0,1h \
    --dhcp-option=option:router,198.51.100.1 --dhcp-option=option:dns-server,198.51.100.1 \
    --dhcp-leasefile="$work/isp.leases" --pid-file="$work/isp.pid" --log-facility="$work/isp.log" \
    --log-dhcp &
  world_dnsmasq_pid=$!
}

world_stop() {
  if [ -n "$world_dnsmasq_pid" ]; then kill "$world_dnsmasq_pid" 2> /dev/null || true; fi
  ip netns del "$1" 2> /dev/null || true
}

# --- the lab: the router VM between two bridges, the world VM on the other side ---
#
# lab_net_start NS: namespace NS (nothing on the host's own networking) with
# two bridges: brwan joins the router's WAN port (tap rwan0) to the world's
# eth0 (tap wwan0), brlan the router's LAN port (rlan0) to the world's eth1
# (wlan0). Tagged frames (the phone VLANs) pass a plain bridge.
lab_net_start() {
  local ns=$1 br tap
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  for br in brwan brlan; do
    ip -n "$ns" link add "$br" type bridge
    ip -n "$ns" link set "$br" up
  done
  for tap in rwan0:brwan wwan0:brwan rlan0:brlan wlan0:brlan; do
    ip -n "$ns" tuntap add dev "${tap%:*}" mode tap
    ip -n "$ns" link set "${tap%:*}" master "${tap#*:}" up
  done
}

# router_qemu DISK SERIAL: the router VM's QEMU command in the array
# What a port receives: frames no larger than the wire carries. QEMU would
# otherwise hand a guest the other VM's TCP as 64 KB segments (virtio guest
# offloads), which no real port receives and which would bypass the router's
# own GRO limits (spec B2: the shaper must see packets, not aggregates).
wire_nic=guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off

# router_qemu; its serial port is SERIAL (a QEMU -serial argument). The
# same machine as the boot test's: eth0 = WAN, eth1 = LAN, TCG.
router_qemu=()
router_qemu() {
  router_qemu=(qemu-system-x86_64 -accel tcg -m 256 -smp 1 -nodefaults -display none
    -drive "file=$1,format=qcow2,if=virtio"
    -netdev tap,id=wan,ifname=rwan0,script=no,downscript=no
    -device "virtio-net-pci,netdev=wan,mac=52:54:00:00:01:01,addr=0x3,$wire_nic"
    -netdev tap,id=lan,ifname=rlan0,script=no,downscript=no
    -device "virtio-net-pci,netdev=lan,mac=52:54:00:00:02:01,addr=0x4,$wire_nic"
    -serial "$2")
}

# world_qemu SERIAL: the world VM's QEMU command in the array world_qemu
# (qemu-tests/lab/world-build.sh makes what it boots; the lab's scripts are
# shared from this checkout). eth0 faces the router's WAN, eth1 its LAN.
world_qemu=()
world_qemu() {
  local built root vmlinux initramfs
  built=$("$repo/qemu-tests/lab/world-build.sh")
  read -r root vmlinux initramfs <<< "$built"
  world_qemu=(qemu-system-x86_64 -accel tcg -m 768 -smp 1 -nodefaults -display none
    -kernel "$vmlinux" -initrd "$initramfs"
    -append "console=ttyS0 quiet panic=-1 net.ifnames=0"
    -fsdev "local,id=world,path=$root,security_model=none,readonly=on"
    -device virtio-9p-pci,fsdev=world,mount_tag=world,addr=0x5
    -fsdev "local,id=lab,path=$repo/qemu-tests/lab,security_model=none,readonly=on"
    -device virtio-9p-pci,fsdev=lab,mount_tag=lab,addr=0x6
    -netdev tap,id=wan,ifname=wwan0,script=no,downscript=no
    -device "virtio-net-pci,netdev=wan,mac=52:54:00:00:11:01,addr=0x3,$wire_nic"
    -netdev tap,id=lan,ifname=wlan0,script=no,downscript=no
    -device "virtio-net-pci,netdev=lan,mac=52:54:00:00:12:01,addr=0x4,$wire_nic"
    -serial "$1")
}

#!/usr/bin/env bash
# Boots the router's disk image in QEMU for a person to use: builds the image
# first if there is none, puts its WAN on a simulated ISP (a DHCP server) and
# its LAN port on a simulated PC, and gives you the router's serial console in
# this terminal. Nothing touches the host's own networking: the ISP and the PC
# are one private network namespace.
#
#   sudo qemu-tests/run-router.sh [--build] [IMAGE]
#
#   IMAGE    default: target/image/router-<version>-x86_64.img
#   --build  build the image even if one exists (image/build.sh)
#
# The console is a root shell on the router's serial port; try
# e.g. `routerctl status`, `logread | grep routerd`, `nft list ruleset`.
# Quit QEMU with Ctrl-A then X. The image file is never written: the router
# runs on a throwaway overlay, so every start is a factory-fresh box.
#
# The simulated world (namespace rtrlab-<pid>):
#   wan0  the router's eth0: the ISP at 198.51.100.1/24 hands out
#         198.51.100.10-20 by DHCP (documentation addresses)
#   lan0  the router's eth1, untagged: a PC at 192.168.1.100/24; from
#         another terminal: sudo ip netns exec rtrlab-<pid> ping 192.168.1.1
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=false
image=
while [ $# -gt 0 ]; do
  case $1 in
  --build) build=true; shift ;;
  -*) echo "usage: qemu-tests/run-router.sh [--build] [IMAGE]" >&2; exit 2 ;;
  *) image=$1; shift ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "qemu-tests/run-router.sh: needs root (network namespace, tap devices, image build); run it with sudo" >&2; exit 2; }

# shellcheck source=qemu-tests/world.sh
. "$repo/qemu-tests/world.sh"
image=${image:-$(world_default_image)}
if $build || [ ! -f "$image" ]; then
  if ! command -v cargo > /dev/null && [ -n "${SUDO_USER:-}" ]; then
    # sudo dropped the user's PATH: build routerd as the user, with their toolchain.
    echo "== cargo build --release -p routerd -p routerctl (as $SUDO_USER)"
    sudo -u "$SUDO_USER" -H bash -lc "cd '$repo' && cargo build --release --locked -p routerd -p routerctl"
    "$repo/image/build.sh" --out "$(dirname "$image")" --bin-dir "$repo/target/release"
  else
    "$repo/image/build.sh" --out "$(dirname "$image")"
  fi
fi
[ -f "$image" ] || { echo "qemu-tests/run-router.sh: no image $image" >&2; exit 2; }
image=$(realpath "$image")

world_install

work=$(mktemp -d /tmp/router-lab.XXXXXX)
ns=rtrlab-$$
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  world_stop "$ns"
  rm -rf "$work"
}
trap cleanup EXIT
world_start "$ns" "$work"
# The PC on the LAN port.
ip -n "$ns" addr add 192.168.1.100/24 dev lan0
qemu-img create -q -f qcow2 -F raw -b "$image" "$work/disk.qcow2"

cat << EOF
== router image $image
== serial console below (a root shell once it has booted); quit QEMU with Ctrl-A then X
== the ISP (198.51.100.1) and a PC (192.168.1.100) from another terminal:
==   sudo ip netns exec $ns bash
EOF
# The same machine the boot test uses: eth0 = WAN, eth1 = LAN, TCG.
ip netns exec "$ns" qemu-system-x86_64 -accel tcg -m 256 -smp 1 \
  -nodefaults -nographic \
  -drive "file=$work/disk.qcow2,format=qcow2,if=virtio" \
  -netdev tap,id=wan,ifname=wan0,script=no,downscript=no \
  -device virtio-net-pci,netdev=wan,mac=52:54:00:00:01:01,addr=0x3 \
  -netdev tap,id=lan,ifname=lan0,script=no,downscript=no \
  -device virtio-net-pci,netdev=lan,mac=52:54:00:00:02:01,addr=0x4 \
  -serial mon:stdio

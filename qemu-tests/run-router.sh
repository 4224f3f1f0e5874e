#!/usr/bin/env bash
# Boots the router's disk image in the lab for a person to use: builds the
# image first if there is none, starts the simulated world (a second VM: the
# ISP, the provider's servers, phones on VLAN 20, a PC, a Wi-Fi-calling
# device; qemu-tests/lab/world/init has the map) and gives you the router's
# serial console in this terminal. Nothing touches the host's own
# networking: the two VMs meet on bridges in a private network namespace.
#
#   sudo qemu-tests/run-router.sh [--build] [IMAGE]
#
#   IMAGE    default: target/image/router-<version>-x86_64.img
#   --build  build the image even if one exists (image/build.sh)
#
# The console is a root shell on the router's serial port; try
# `routerctl status`, `logread | grep routerd`, `nft list ruleset`,
# `conntrack -L`, `tc -s class show dev eth0`. Quit QEMU with Ctrl-A then X.
# The image file is never written: the router runs on a throwaway overlay,
# so every start is a factory-fresh box. The world's console (a root shell:
# `ip netns exec phone1 bash`, `cat /tmp/world/kamailio.log`, ...) is printed
# at the start.
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
command -v socat > /dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends socat > /dev/null
}
echo "== the world VM (its root file system is built once, ~30 s)"
work=$(mktemp -d /tmp/router-lab.XXXXXX)
ns=rtrlab-$$
world_pid=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  [ -z "$world_pid" ] || kill "$world_pid" 2> /dev/null || true
  wait 2> /dev/null || true
  ip netns del "$ns" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # the EXIT trap cleans up on a signal too
world_qemu "unix:$work/world.sock,server=on,wait=off"
lab_net_start "$ns"
ip netns exec "$ns" "${world_qemu[@]}" > "$work/qemu-world.log" 2>&1 &
world_pid=$!
qemu-img create -q -f qcow2 -F raw -b "$image" "$work/disk.qcow2"
router_qemu "$work/disk.qcow2" mon:stdio

cat << EOF
== router image $image
== the router's serial console is below (a root shell once it has booted);
== quit QEMU with Ctrl-A then X
== the simulated world (ISP, provider, phones, PC) from another terminal:
==   sudo socat -,raw,echo=0,escape=0x1d UNIX-CONNECT:$work/world.sock
==   (press Enter for its shell; Ctrl-] leaves). phone1 registers by itself:
==   /tmp/world/first-register.log there; the registrar: /tmp/world/kamailio.log
EOF
ip netns exec "$ns" "${router_qemu[@]}" -nographic

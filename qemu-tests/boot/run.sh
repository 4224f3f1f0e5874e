#!/usr/bin/env bash
# Boot test of the router's disk image: boots it unmodified in QEMU (TCG;
# the image is the read-only backing file of a throwaway overlay, never
# written), with its WAN port on a
# private network namespace where a DHCP server plays the ISP, and checks
# from the serial console that GRUB picks slot A, the kernel boots, routerd
# applies its plan, the WAN gets an address, the slot is marked good,
# nothing listens on the WAN, and that a changed config survives a reboot
# into slot B. See boot_test.py for the checks.
#
#   qemu-tests/boot/run.sh [--build] [IMAGE]
#
#   IMAGE    default: target/image/router-<version>-x86_64.img
#   --build  build the image first (image/build.sh)
#
# Needs root (network namespace, tap devices). Installs qemu-system-x86 if
# missing. Leaves the serial log with timestamps, QEMU's output and the
# timings in $ROUTERD_BOOT_LOGS (default: target/boot-test). Ends with
# "boot: N passed, N failed"; exit status 1 if a check failed.
#
# Network (inside the namespace rtrboot-<pid>, nothing on the host's own):
#   wan0  tap, the router's eth0 (52:54:00:00:01:01); 198.51.100.1/24 and
#         dnsmasq handing out 198.51.100.10-20 (documentation addresses)
#   lan0  tap, the router's eth1 (52:54:00:00:02:01); up, no address
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=false
image=
while [ $# -gt 0 ]; do
  case $1 in
  --build) build=true; shift ;;
  -*) echo "usage: qemu-tests/boot/run.sh [--build] [IMAGE]" >&2; exit 2 ;;
  *) image=$1; shift ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "qemu-tests/boot/run.sh: needs root (network namespace, tap devices)" >&2; exit 2; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
if $build; then
  out=$(dirname "${image:-$repo/target/image/x}")
  "$repo/image/build.sh" --out "$out"
fi
image=${image:-$repo/target/image/router-$version-x86_64.img}
[ -f "$image" ] || { echo "qemu-tests/boot/run.sh: no image $image (build it with image/build.sh, or pass --build)" >&2; exit 2; }
image=$(realpath "$image")

need=()
command -v qemu-system-x86_64 > /dev/null || need+=(qemu-system-x86)
command -v qemu-img > /dev/null || need+=(qemu-utils)
command -v dnsmasq > /dev/null || need+=(dnsmasq-base)
command -v ip > /dev/null || need+=(iproute2)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

logs=${ROUTERD_BOOT_LOGS:-$repo/target/boot-test}
mkdir -p "$logs"
work=$(mktemp -d /tmp/router-boot.XXXXXX)
ns=rtrboot-$$
dnsmasq_pid=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  if [ -n "$dnsmasq_pid" ]; then kill "$dnsmasq_pid" 2> /dev/null || true; fi
  ip netns del "$ns" 2> /dev/null || true
  cp "$work"/*.log "$work"/*.txt "$logs/" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

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
dnsmasq_pid=$!

echo "== booting $image (TCG); serial logs: $logs/serial1.log (boot 1), serial2.log (boot 2)"
started=$(date +%s)
rc=0
/usr/bin/python3 "$repo/qemu-tests/boot/boot_test.py" --image "$image" --workdir "$work" \
  --netns "$ns" --timeout "${ROUTERD_BOOT_TIMEOUT:-120}" || rc=$?
echo "== boot test took $(($(date +%s) - started)) s"
exit $rc

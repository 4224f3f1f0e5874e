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
# Network: the world of qemu-tests/world.sh, in the namespace rtrboot-<pid>.
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

# shellcheck source=qemu-tests/world.sh
. "$repo/qemu-tests/world.sh"
if $build; then
  out=$(dirname "${image:-$(world_default_image)}")
  "$repo/image/build.sh" --out "$out"
fi
image=${image:-$(world_default_image)}
[ -f "$image" ] || { echo "qemu-tests/boot/run.sh: no image $image (build it with image/build.sh, or pass --build)" >&2; exit 2; }
image=$(realpath "$image")
world_install

logs=${ROUTERD_BOOT_LOGS:-$repo/target/boot-test}
mkdir -p "$logs"
work=$(mktemp -d /tmp/router-boot.XXXXXX)
ns=rtrboot-$$
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  world_stop "$ns"
  cp "$work"/*.log "$work"/*.txt "$logs/" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # the EXIT trap cleans up on a signal too
world_start "$ns" "$work"

echo "== booting $image (TCG); serial logs: $logs/serial1.log (boot 1), serial2.log (boot 2)"
started=$(date +%s)
rc=0
/usr/bin/python3 "$repo/qemu-tests/boot/boot_test.py" --image "$image" --workdir "$work" \
  --netns "$ns" --timeout "${ROUTERD_BOOT_TIMEOUT:-120}" || rc=$?
echo "== boot test took $(($(date +%s) - started)) s"
exit $rc

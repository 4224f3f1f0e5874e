#!/usr/bin/env bash
# The lab: boots the router's disk image unmodified (TCG, on a throwaway
# overlay) between a simulated ISP and a simulated office, both in a second
# VM, the world (qemu-tests/lab/world/init has its map), and proves the
# provider's network specification from outside, on the wire. See
# lab_test.py for the checks.
#
#   qemu-tests/lab/run.sh [--build] [--quick] [--serve|--bench] [IMAGE]
#
#   IMAGE    default: target/image/router-<version>-x86_64.img
#   --build  build the image first (image/build.sh)
#   --quick  leave out the slow check (a provider packet after 290 s idle)
#   --serve  no checks: boot the lab and keep it running; run commands on
#            its VMs with qemu-tests/lab/ctl.py (the socket is printed)
#   --bench  no checks: the voice-under-load benchmark (bench_voice.py)
#
# Needs root (network namespace, tap devices, the world's root file
# system). The two VMs meet on two bridges in a private network namespace
# (rtrlab-<pid>); nothing touches the host's own networking. Logs: the
# consoles with timestamps, QEMU's output and the timings in
# $ROUTERD_LAB_LOGS (default: target/lab-test). Ends with
# "lab: N passed, N failed"; exit status 1 if a check failed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=false
quick=false
serve=false
bench=false
image=
while [ $# -gt 0 ]; do
  case $1 in
  --build) build=true; shift ;;
  --quick) quick=true; shift ;;
  --serve) serve=true; shift ;;
  --bench) bench=true; shift ;;
  -*) echo "usage: qemu-tests/lab/run.sh [--build] [--quick] [--serve|--bench] [IMAGE]" >&2; exit 2 ;;
  *) image=$1; shift ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "qemu-tests/lab/run.sh: needs root (network namespace, tap devices)" >&2; exit 2; }

# shellcheck source=qemu-tests/world.sh
. "$repo/qemu-tests/world.sh"
if $build; then
  "$repo/image/build.sh" --out "$(dirname "${image:-$(world_default_image)}")"
fi
image=${image:-$(world_default_image)}
[ -f "$image" ] || { echo "qemu-tests/lab/run.sh: no image $image (build it with image/build.sh, or pass --build)" >&2; exit 2; }
image=$(realpath "$image")
world_install

logs=${ROUTERD_LAB_LOGS:-$repo/target/lab-test}
mkdir -p "$logs"
work=$(mktemp -d /tmp/router-lab.XXXXXX)
ns=rtrlab-$$
pids=()
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  ip netns del "$ns" 2> /dev/null || true
  cp "$work"/*.log "$work"/*.txt "$logs/" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # the EXIT trap cleans up on a signal too

echo "== the world VM: $(cd "$repo" && qemu-tests/lab/world-build.sh)"
world_qemu "unix:$work/world.sock,server=on,wait=on"
lab_net_start "$ns"
qemu-img create -q -f qcow2 -F raw -b "$image" "$work/disk.qcow2"
router_qemu "$work/disk.qcow2" "unix:$work/router.sock,server=on,wait=on"
# Each VM waits for its console to be connected: lab_test.py powers both on.
ip netns exec "$ns" "${world_qemu[@]}" > "$work/qemu-world.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" "${router_qemu[@]}" > "$work/qemu-router.log" 2>&1 &
pids+=($!)

echo "== booting $image and the world (TCG); consoles: $logs/router.log, $logs/world.log"
started=$(date +%s)
rc=0
args=(--workdir "$work" --timeout "${ROUTERD_LAB_TIMEOUT:-150}")
$quick && args+=(--quick)
$serve && args+=(--serve "$work/ctl.sock")
program=lab_test.py
$bench && program=bench_voice.py
/usr/bin/python3 "$repo/qemu-tests/lab/$program" "${args[@]}" || rc=$?
echo "== lab test took $(($(date +%s) - started)) s"
exit $rc

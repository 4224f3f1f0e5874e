#!/usr/bin/env bash
# Runs every test of the router firmware. Installs what it needs first
# (Debian packages, Rust components), so it works on a fresh Debian machine.
# Needs root for apt-get (it uses sudo when not root).
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Real components the tests run: nft (golden rulesets are loaded with nft -c),
# dnsmasq (the generated config is checked with dnsmasq --test), unshare and ip
# (kernel tests run in throwaway namespaces with veth ports).
need=()
command -v nft >/dev/null || need+=(nftables)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
# Network-namespace tests: conntrack reads the router's flow table, sipp is
# the phone's SIP user agent, tcpdump captures what crosses the wire.
command -v conntrack >/dev/null || need+=(conntrack)
command -v sipp >/dev/null || need+=(sip-tester)
command -v tcpdump >/dev/null || need+=(tcpdump)
# The lab's small peers (tests/lab/*.py) and signals to routerd and udhcpc.
[ -x /usr/bin/python3 ] || need+=(python3)
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)
# The Buildroot tree's consistency check lints its scripts.
command -v shellcheck >/dev/null || need+=(shellcheck)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# The router ships Debian trixie's userland (nft 1.1.3, dnsmasq 2.91); the host
# may have older ones. Tests that set ROUTERD_TRIXIE_ROOT also run them there;
# busybox provides the WAN DHCP client (udhcpc), chrony the phones' time server.
export ROUTERD_TRIXIE_ROOT=${ROUTERD_TRIXIE_ROOT:-/var/cache/routerd/trixie-test-root}
echo "== trixie root filesystem for tests: $ROUTERD_TRIXIE_ROOT"
as_root mkdir -p "$(dirname "$ROUTERD_TRIXIE_ROOT")"
as_root image/trixie-root.sh "$ROUTERD_TRIXIE_ROOT" nftables dnsmasq-base busybox chrony

echo "== shellcheck (image and QEMU scripts)"
shellcheck -x image/*.sh qemu-tests/*.sh qemu-tests/*/*.sh qemu-tests/lab/world/init \
  qemu-tests/lab/world/initramfs-init qemu-tests/lab/world/isp-dhcp \
  qemu-tests/lab/world/first-register qemu-tests/lab/world/dhcp-event
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

# The firmware: the Buildroot external tree is consistent with the image
# build, the disk image builds, and it boots under QEMU (slot A, routerd
# applies its plan, the WAN gets a lease, a config change survives a reboot
# into slot B), and the lab proves the specification from outside.
# image/build.sh and the QEMU tests install what they need.
echo "== Buildroot external tree"
buildroot-overlay/check.sh --ci
echo "== firmware image"
cargo build --release --locked -p routerd -p routerctl
as_root image/build.sh --bin-dir "${CARGO_TARGET_DIR:-$PWD/target}/release"
echo "== boot the image under QEMU"
as_root qemu-tests/boot/run.sh
# The lab: the image between a simulated ISP and office (a second VM) with
# real SIP peers; every line of the provider's specification on the wire.
echo "== the lab"
as_root qemu-tests/lab/run.sh

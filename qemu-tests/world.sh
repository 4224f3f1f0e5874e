# shellcheck shell=bash
# shellcheck disable=SC2154 # repo is set by the script that sources this file
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

# Installs QEMU, qemu-img, dnsmasq, iproute2 and python3 if missing.
world_install() {
  local need=()
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

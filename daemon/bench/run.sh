#!/usr/bin/env bash
# The routerd benchmark: three ratios, each measured side by side in one run.
#
#   (a) apply time: `routerd --once` (check, compile, links, settings,
#       `nft -f`, read-back, forwarding) against a bare `nft -f` of the same
#       ruleset, each in a fresh network namespace;
#   (b) forwarding throughput through a router namespace with the full
#       ruleset against the same namespace with no nftables table at all;
#   (c) that throughput, and the apply time, with a provider policy of 10
#       against 10,000 provider addresses.
#
# Run it from the repository root, as root: daemon/bench/run.sh
# It builds the release binaries, installs iperf3, jq and ethtool if missing
# and the trixie root filesystem (the nft that ships), and prints markdown
# tables. It takes about two minutes after the build.
# docs/benchmarks.md explains the method and holds the figures of one run.
#
# Traffic goes only to addresses inside the namespaces made here; every
# namespace, process and file is removed on exit, also on an error or Ctrl-C.
#
# Knobs (environment): BENCH_APPLY_REPS (20), BENCH_SECONDS (5 per iperf3
# run), BENCH_ROUNDS (3 interleaved rounds of every throughput case),
# BENCH_OFFLOADS (off: veth segmentation offloads off, see below),
# ROUTERD_TRIXIE_ROOT, CARGO_TARGET_DIR.
set -euo pipefail
export LC_ALL=C

# Progress on stderr, with the seconds since the start.
say() { echo "== [${SECONDS}s] $*" >&2; }

cd "$(dirname "$0")/../.."
repo=$PWD

apply_reps=${BENCH_APPLY_REPS:-20}
seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
offloads=${BENCH_OFFLOADS:-off}
root=${ROUTERD_TRIXIE_ROOT:-/var/cache/routerd/trixie-test-root}
target=${CARGO_TARGET_DIR:-$repo/target}
nft_cmd=(chroot "$root" nft)

if [ "$(id -u)" != 0 ]; then
  echo "run.sh: needs root (network namespaces, chroot)" >&2
  exit 1
fi

# ---------------------------------------------------------------- setup
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v jq >/dev/null || need+=(jq)
if [ "$offloads" = off ]; then command -v ethtool >/dev/null || need+=(ethtool); fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
say "trixie root filesystem: $root"
mkdir -p "$(dirname "$root")"
image/trixie-root.sh "$root" nftables dnsmasq-base busybox
say "cargo build --release -p routerd -p routerctl"
cargo build --release --quiet -p routerd -p routerctl
routerd=$target/release/routerd
routerctl=$target/release/routerctl

# Everything made here carries this prefix, so cleanup removes exactly that.
prefix="rbench$$"
work=$(mktemp -d "/tmp/$prefix.XXXXXX")
pids=()

cleanup() {
  local pid ns
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for ns in $(ip netns list | awk '{print $1}'); do
    case $ns in "$prefix"-*) ip netns del "$ns" 2>/dev/null || true ;; esac
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- inputs
# The static-WAN config (as daemon/plan/tests/golden/wan-static): the WAN on
# eth0, the data LAN on eth1, the phones untagged on eth2. The line is set far
# above what veths carry, so any shaping the router does stays out of the way.
cat >"$work/router.toml" <<'EOF'
provider = "ipnordic"

[wan]
interface = "eth0"
mode = "static"
address = "203.0.113.10/24"
gateway = "203.0.113.1"
dns = ["203.0.113.53"]

[line]
down = "10G"
up = "10G"
framing = "ethernet"
calls = 100

[lan]
interface = "eth1"
address = "192.168.1.1/24"
dhcp = { start = "192.168.1.100", end = "192.168.1.250" }

[phones]
interface = "eth2"
address = "10.20.0.1/24"
dhcp = { start = "10.20.0.100", end = "10.20.0.250" }
provisioning_url = "http://config.ipnordic.dk/"
EOF

# nf_conntrack_max is read-only outside the machine's own namespace.
cat >"$work/facts.toml" <<EOF
interfaces = ["eth0", "eth1", "eth2"]
vlan = false
conntrack_sizing = false
# The host kernel has no fq_codel: the shaper uses FIFO leaves.
fq_codel = false
state_dir = "$work/state"
run_dir = "$work/run"
EOF

# The factory policy with its provider ranges replaced by N /32 addresses:
# 185.72.208.10 (the address the phone sends to) and N-1 others from the
# benchmarking range 198.18.0.0/15, every second address so no two are adjacent.
provider_policy() {
  local n=$1 out=$2
  awk -v n="$n" '
    /^provider_ranges = / {
      line = "provider_ranges = [\"185.72.208.10/32\""
      for (k = 0; k < n - 1; k++) {
        a = 2 * k
        line = line sprintf(", \"198.%d.%d.%d/32\"", 18 + int(a / 65536), int(a / 256) % 256, a % 256)
      }
      print line "]"
      next
    }
    /^version = / { print "version = \"bench-" n "\""; next }
    { print }
  ' daemon/config/provider/ipnordic.toml >"$out"
}
cp daemon/config/provider/ipnordic.toml "$work/policy-factory.toml"
provider_policy 10 "$work/policy-10.toml"
provider_policy 10000 "$work/policy-10000.toml"

cases=(factory 10 10000)
for c in "${cases[@]}"; do
  "$routerctl" print "$work/router.toml" --policy "$work/policy-$c.toml" \
    --facts "$work/facts.toml" --part nft >"$work/ruleset-$c.nft"
done

# ---------------------------------------------------------------- helpers
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# A namespace with the router's three ports (veth pairs, both ends inside).
fresh_router_ns() {
  local ns=$1 port
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  for port in eth0 eth1 eth2; do
    ip -n "$ns" link add "$port" type veth peer name "${port}p"
  done
}

apply_routerd() { # NS POLICY
  ip netns exec "$1" "$routerd" --once --config "$work/router.toml" --policy "$2" \
    --facts "$work/facts.toml" --nft "${nft_cmd[*]}" >"$work/routerd.log" 2>&1 \
    || { cat "$work/routerd.log" >&2; return 1; }
}

apply_nft() { # NS RULESET
  ip netns exec "$1" "${nft_cmd[@]}" -f - <"$2"
}

# ---------------------------------------------------------------- (a) apply
say "apply time: $apply_reps fresh namespaces per figure"
declare -A apply_ms
n=0
for rep in $(seq "$apply_reps"); do
  for c in "${cases[@]}"; do
    # Interleaved, so drift on a shared machine hits both sides alike.
    for how in routerd nft; do
      n=$((n + 1))
      ns="$prefix-apply$n"
      fresh_router_ns "$ns"
      t0=$(now_us)
      if [ "$how" = routerd ]; then
        apply_routerd "$ns" "$work/policy-$c.toml"
        [ -f "$work/routerd-fresh.log" ] || cp "$work/routerd.log" "$work/routerd-fresh.log"
      else
        apply_nft "$ns" "$work/ruleset-$c.nft"
      fi
      t1=$(now_us)
      ip netns del "$ns"
      echo $((t1 - t0)) >>"$work/apply-$how-$c"
    done
  done
  if [ $((rep % 5)) = 0 ]; then say "apply $rep/$apply_reps"; fi
done
for c in "${cases[@]}"; do
  for how in routerd nft; do
    apply_ms[$how-$c]=$(median <"$work/apply-$how-$c" | awk '{ printf "%.1f", $1 / 1000 }')
  done
done

# ---------------------------------------------------------------- (b), (c) throughput
# phone (10.20.0.100) -- eth2 [router] eth0 -- isp (203.0.113.1, 185.72.208.10)
# The ISP namespace has no route back to 10.20.0.0/24: with the ruleset, only
# masqueraded traffic returns. The no-ruleset case adds that route for itself.
say "throughput: phone -> router -> provider, $rounds rounds x ${seconds} s per case"
router="$prefix-router"
phone="$prefix-phone"
isp="$prefix-isp"
for ns in "$router" "$phone" "$isp"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$router" link add eth0 type veth peer name wan netns "$isp"
ip -n "$router" link add eth2 type veth peer name eth0 netns "$phone"
ip -n "$router" link add eth1 type veth peer name eth1p
ip -n "$router" link set eth1p up
# The plan's links part, set here so the states without routerd have it too
# (routerd --once then finds it in place).
ip -n "$router" addr add 203.0.113.10/24 dev eth0
ip -n "$router" addr add 192.168.1.1/24 dev eth1
ip -n "$router" addr add 10.20.0.1/24 dev eth2
for port in eth0 eth1 eth2; do ip -n "$router" link set "$port" up; done
ip -n "$router" route add default via 203.0.113.1 dev eth0
ip -n "$isp" addr add 203.0.113.1/24 dev wan
ip -n "$isp" addr add 185.72.208.10/32 dev lo
ip -n "$isp" link set wan up
ip -n "$phone" addr add 10.20.0.100/24 dev eth0
ip -n "$phone" link set eth0 up
ip -n "$phone" route add default via 10.20.0.1
# Segmentation offloads off: every 1500-byte packet walks the netfilter hooks,
# as on a router's real ports, instead of one 64 KiB super-packet per walk.
if [ "$offloads" = off ]; then
  for pair in "$router eth0" "$router eth2" "$isp wan" "$phone eth0"; do
    read -r ns dev <<<"$pair"
    ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null
  done
fi

ip netns exec "$isp" iperf3 -s -p 5201 >"$work/iperf3-server.log" 2>&1 &
pids+=($!)
listening() { ip netns exec "$isp" ss -Hltn 'sport = :5201' | grep -q .; }
for _ in $(seq 50); do
  if listening; then break; fi
  sleep 0.1
done
listening || { echo "run.sh: iperf3 server did not start in the ISP namespace" >&2; exit 1; }

# Puts the router namespace into one state: none (no nftables table, the ISP
# routes back), masq (one bare masquerade rule) or a routerd apply of a policy.
set_state() {
  local state=$1
  ip netns exec "$router" "${nft_cmd[@]}" flush ruleset
  ip -n "$isp" route del 10.20.0.0/24 2>/dev/null || true
  case $state in
    none)
      ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
      ip -n "$isp" route add 10.20.0.0/24 via 203.0.113.10
      ;;
    masq)
      ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
      ip netns exec "$router" "${nft_cmd[@]}" -f - <<'EOF'
table ip bench_masq {
	chain srcnat {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" masquerade
	}
}
EOF
      ;;
    *) apply_routerd "$router" "$work/policy-$state.toml" ;;
  esac
}

throughput_mbit() {
  ip netns exec "$phone" iperf3 -c 185.72.208.10 -p 5201 -t "$seconds" -O 1 -J \
    | jq -r '.end.sum_received.bits_per_second / 1e6 | floor'
}

# The ruleset is live: the phone reaches the provider, and nothing else
# (busybox ping from the trixie root: the host may have no ping).
ping_from_phone() { ip netns exec "$phone" chroot "$root" busybox ping -c 1 -W 1 "$1" >/dev/null 2>&1; }
set_state factory
if ping_from_phone 203.0.113.1; then
  echo "run.sh: the phone pings a non-provider address through the full ruleset" >&2
  exit 1
fi
ping_from_phone 185.72.208.10 || {
  echo "run.sh: the phone cannot ping the provider address 185.72.208.10 through the router" >&2
  exit 1
}

states=(none masq factory 10 10000)
declare -A mbit runs
for round in $(seq "$rounds"); do
  for s in "${states[@]}"; do
    set_state "$s"
    throughput_mbit >>"$work/tput-$s"
  done
  say "throughput round $round/$rounds"
done
for s in "${states[@]}"; do
  mbit[$s]=$(median <"$work/tput-$s")
  runs[$s]=$(sort -n "$work/tput-$s" | paste -sd' ' -)
done

# ---------------------------------------------------------------- report
nft_version=$(chroot "$root" nft --version)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

echo
echo "Machine: $(nproc) cores ($cpu), kernel $(uname -r), $nft_version (trixie root), $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
# What routerd --once did (from its log; a line it does not print counts 0).
log=$work/routerd-fresh.log
lines() { grep -c "$1" "$log" || true; }
summary=$(grep -v '^routerd: \(link\|address\|route\|net/\)' "$log" | tail -1 || true)
echo "routerd --once in a fresh namespace (factory policy): $(lines '^routerd: \(link\|address\|route\) ') link, address and route changes; $(lines '^routerd: net/') kernel settings; last line: $summary"
echo
echo "Apply time, median of $apply_reps, each in a fresh network namespace (ms):"
echo
echo "| provider policy | routerd --once | nft -f | routerd / nft |"
echo "|---|---:|---:|---:|"
for c in "${cases[@]}"; do
  case $c in
    factory) label="factory (1 range)" ;;
    10) label="10 addresses" ;;
    10000) label="10,000 addresses" ;;
  esac
  echo "| $label | ${apply_ms[routerd-$c]} | ${apply_ms[nft-$c]} | $(ratio "${apply_ms[routerd-$c]}" "${apply_ms[nft-$c]}") |"
done
echo
echo "Throughput phone -> router -> 185.72.208.10, iperf3 TCP ${seconds} s, veth offloads $offloads, median of $rounds interleaved rounds (Mbit/s):"
echo
echo "| router state | median | runs | vs no table |"
echo "|---|---:|---|---:|"
for s in "${states[@]}"; do
  case $s in
    none) label="no nftables table (ISP routes back)" ;;
    masq) label="one bare masquerade rule" ;;
    factory) label="full ruleset, factory policy" ;;
    10) label="full ruleset, 10 provider addresses" ;;
    10000) label="full ruleset, 10,000 provider addresses" ;;
  esac
  echo "| $label | ${mbit[$s]} | ${runs[$s]} | $(ratio "${mbit[$s]}" "${mbit[none]}") |"
done
echo
echo "(a) apply, routerd --once / nft -f (factory policy):        $(ratio "${apply_ms[routerd-factory]}" "${apply_ms[nft-factory]}")"
echo "(b) throughput, full ruleset / no table:                    $(ratio "${mbit[factory]}" "${mbit[none]}")"
echo "(c) throughput, 10,000 / 10 provider addresses:             $(ratio "${mbit[10000]}" "${mbit[10]}")"
echo "    apply (routerd --once), 10,000 / 10 provider addresses: $(ratio "${apply_ms[routerd-10000]}" "${apply_ms[routerd-10]}")"

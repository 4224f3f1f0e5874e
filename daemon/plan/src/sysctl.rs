//! Kernel settings under /proc/sys: forwarding, reverse-path filtering,
//! conntrack sizing, IPv6 per network. Forwarding is written last, after the
//! firewall and NAT are live, so no packet ever leaves un-NATed.
//!
//! Per-interface settings name VLAN devices, so apply must create the links
//! (see [`crate::links`]) before writing them. The `net/netfilter` settings
//! need nf_conntrack loaded (built in, or loaded by apply) before the firewall.

use router_config::{Checked, HostFacts};
use serde::Serialize;

use crate::links::interface_origin;
use crate::net::Network;

/// When a setting is written relative to loading the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the nft ruleset is loaded.
    BeforeFirewall,
    /// After the ruleset is live (forwarding).
    AfterFirewall,
}

/// One setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    /// Path under /proc/sys with `/` separators, e.g. `net/ipv4/ip_forward`
    /// (interface names keep their dots: `net/ipv6/conf/eth1.20/disable_ipv6`).
    pub path: String,
    /// The value to write.
    pub value: String,
    /// The config path or spec line it implements.
    pub reason: String,
    /// When it is written.
    pub phase: Phase,
}

/// Conntrack entries per MiB of memory. An entry with its hash slot costs
/// about 350 bytes, so 64 per MiB spends ~2% of memory on the table: enough
/// for an office (a call is 2-4 flows) without starving a small router.
const CONNTRACK_PER_MIB: u64 = 64;
/// The kernel's default `nf_conntrack_udp_timeout_stream`, in seconds.
const KERNEL_UDP_STREAM_TIMEOUT: u64 = 120;
/// Never below the kernel's own small-machine default.
const CONNTRACK_MIN: u64 = 4096;
/// Beyond this a small office router only gives a flood more room.
const CONNTRACK_MAX: u64 = 262_144;

/// The settings for this config, sorted by (phase, path).
///
/// Only the forwarding switches are [`Phase::AfterFirewall`], so sorting by
/// (phase, path) leaves forwarding last.
pub fn sysctls(checked: &Checked, nets: &[Network], facts: &HostFacts) -> Vec<Sysctl> {
    let mut out = Vec::new();
    out.extend(forwarding(nets));
    out.extend(hardening());
    out.extend(reverse_path(checked, nets));
    out.extend(conntrack(checked, facts));
    out.extend(ipv6_per_interface(checked, nets));
    out.sort_by(|a, b| (a.phase, &a.path).cmp(&(b.phase, &b.path)));
    // Two networks on one interface are a validation error; keep the first anyway.
    out.dedup_by(|b, a| a.path == b.path);
    out
}

fn set(
    path: impl Into<String>,
    value: impl ToString,
    reason: impl Into<String>,
    phase: Phase,
) -> Sysctl {
    Sysctl {
        path: path.into(),
        value: value.to_string(),
        reason: reason.into(),
        phase,
    }
}

/// Routing on. Written after the firewall so nothing is forwarded un-NATed
/// (spec F1). Turning IPv4 forwarding on also resets `all/accept_redirects`
/// to 0, which is what [`hardening`] asks for anyway.
fn forwarding(nets: &[Network]) -> Vec<Sysctl> {
    let v6: Vec<String> = nets
        .iter()
        .filter(|n| n.ipv6)
        .map(|n| format!("{}.ipv6", n.role.path()))
        .collect();
    let (v6_value, v6_reason) = if v6.is_empty() {
        (
            0,
            "no LAN-side network routes IPv6 (spec O1: safe by default)".to_string(),
        )
    } else {
        (1, v6.join(", "))
    };
    vec![
        set(
            "net/ipv4/ip_forward",
            1,
            "route the LAN-side networks to the WAN behind NAT (spec F1)",
            Phase::AfterFirewall,
        ),
        set(
            "net/ipv6/conf/all/forwarding",
            v6_value,
            v6_reason,
            Phase::AfterFirewall,
        ),
    ]
}

/// No ICMP redirects either way (a router that obeys them can be steered
/// around its firewall), and SYN cookies against SYN floods from the WAN.
fn hardening() -> Vec<Sysctl> {
    let why = "no ICMP redirects: they could steer traffic around the firewall (spec O1)";
    let mut out = Vec::new();
    for scope in ["all", "default"] {
        out.push(set(
            format!("net/ipv4/conf/{scope}/accept_redirects"),
            0,
            why,
            Phase::BeforeFirewall,
        ));
        out.push(set(
            format!("net/ipv4/conf/{scope}/send_redirects"),
            0,
            why,
            Phase::BeforeFirewall,
        ));
        out.push(set(
            format!("net/ipv6/conf/{scope}/accept_redirects"),
            0,
            why,
            Phase::BeforeFirewall,
        ));
    }
    out.push(set(
        "net/ipv4/tcp_syncookies",
        1,
        "survive SYN floods from the WAN",
        Phase::BeforeFirewall,
    ));
    out
}

/// Strict reverse-path filtering: a packet whose source would not be routed
/// back out of the interface it came in on is spoofed and dropped. The kernel
/// uses the larger of `all` and the interface's value, so both are set.
fn reverse_path(checked: &Checked, nets: &[Network]) -> Vec<Sysctl> {
    let why = "anti-spoofing: strict reverse-path filter";
    let mut out = vec![
        set("net/ipv4/conf/all/rp_filter", 1, why, Phase::BeforeFirewall),
        set(
            "net/ipv4/conf/default/rp_filter",
            1,
            why,
            Phase::BeforeFirewall,
        ),
    ];
    for (ifname, origin) in router_interfaces(checked, nets) {
        out.push(set(
            format!("net/ipv4/conf/{ifname}/rp_filter"),
            1,
            format!("{origin}: {why}"),
            Phase::BeforeFirewall,
        ));
    }
    out
}

/// The WAN and every LAN-side interface, with the config path naming it.
fn router_interfaces(checked: &Checked, nets: &[Network]) -> Vec<(String, String)> {
    let wan = (
        checked.config.wan.interface.clone(),
        "wan.interface".to_string(),
    );
    std::iter::once(wan)
        .chain(nets.iter().map(|n| (n.ifname.clone(), interface_origin(n))))
        .collect()
}

/// Connection tracking: a table sized to the memory and per-flow counters for
/// `routerctl status`. Written before the firewall so flows it creates are
/// counted from their first packet.
///
/// `nf_conntrack_tcp_loose` stays at its default 1 and is not written: with 0
/// conntrack would not adopt TCP flows it did not see start, so established
/// connections would break across a routerd restart (spec F7).
/// `nf_conntrack_helper` no longer exists on kernel 6.x; helpers (and so the
/// SIP ALG, spec F2) are only attached by explicit firewall rules.
///
/// The phones' flows get their timeout from the ruleset's ct timeout policies
/// (spec F3). Replacing the table (a reload) destroys those objects, and the
/// kernel then strips the policy from the flows that were using it: they
/// fall back to `nf_conntrack_udp_timeout_stream` (120 s by default). So that
/// sysctl is raised to the longest UDP timeout the config asks for.
fn conntrack(checked: &Checked, facts: &HostFacts) -> Vec<Sysctl> {
    let stream = checked
        .phone_udp_timeout
        .max(checked.epdg_udp_timeout)
        .max(KERNEL_UDP_STREAM_TIMEOUT);
    let mut out = vec![
        set(
            "net/netfilter/nf_conntrack_acct",
            1,
            "per-flow byte and packet counters for routerctl status",
            Phase::BeforeFirewall,
        ),
        set(
            "net/netfilter/nf_conntrack_udp_timeout_stream",
            stream,
            "conntrack.phone_udp_timeout (spec F3): flows whose ct timeout policy went with a replaced table keep this long",
            Phase::BeforeFirewall,
        ),
    ];
    if facts.conntrack_sizing {
        out.push(set(
            "net/netfilter/nf_conntrack_max",
            conntrack_max(facts.memory_mib),
            format!(
                "facts.memory_mib = {}: {CONNTRACK_PER_MIB} flows per MiB, within [{CONNTRACK_MIN}, {CONNTRACK_MAX}]",
                facts.memory_mib
            ),
            Phase::BeforeFirewall,
        ));
    }
    out
}

/// The conntrack table size for `memory_mib` of memory.
fn conntrack_max(memory_mib: u32) -> u64 {
    (u64::from(memory_mib) * CONNTRACK_PER_MIB).clamp(CONNTRACK_MIN, CONNTRACK_MAX)
}

/// IPv6 off on every interface whose network does not route it (spec O1: no
/// stray link-local or SLAAC addresses), and RAs accepted on the WAN while
/// forwarding (`accept_ra = 2`; with forwarding on, 1 would ignore them).
fn ipv6_per_interface(checked: &Checked, nets: &[Network]) -> Vec<Sysctl> {
    let wan = &checked.config.wan;
    let mut out = vec![disable_ipv6(&wan.interface, wan.ipv6, "wan.ipv6")];
    if wan.ipv6 {
        out.push(set(
            format!("net/ipv6/conf/{}/accept_ra", wan.interface),
            2,
            "wan.ipv6: take the ISP's router advertisements while forwarding",
            Phase::BeforeFirewall,
        ));
    }
    for n in nets {
        out.push(disable_ipv6(
            &n.ifname,
            n.ipv6,
            &format!("{}.ipv6", n.role.path()),
        ));
    }
    out
}

fn disable_ipv6(ifname: &str, ipv6: bool, origin: &str) -> Sysctl {
    let value = if ipv6 { 0 } else { 1 };
    let reason = if ipv6 {
        format!("{origin} = true")
    } else {
        format!("{origin} = false (spec O1)")
    };
    set(
        format!("net/ipv6/conf/{ifname}/disable_ipv6"),
        value,
        reason,
        Phase::BeforeFirewall,
    )
}

/// One line per setting: `net/ipv4/ip_forward = 1  # reason`, phase headers.
pub fn render(sysctls: &[Sysctl]) -> String {
    let mut out = String::new();
    let mut current = None;
    for s in sysctls {
        if current != Some(s.phase) {
            current = Some(s.phase);
            out.push_str(match s.phase {
                Phase::BeforeFirewall => "# before the firewall\n",
                Phase::AfterFirewall => "# after the firewall (forwarding last)\n",
            });
        }
        out.push_str(&format!("{} = {}  # {}\n", s.path, s.value, s.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::networks;
    use crate::testutil::{checked, example};
    use router_config::Config;

    fn plan(cfg: Config) -> Vec<Sysctl> {
        let checked = checked(cfg);
        let nets = networks(&checked);
        let facts = HostFacts::assumed(["eth0".into(), "eth1".into()]);
        sysctls(&checked, &nets, &facts)
    }

    fn value<'a>(s: &'a [Sysctl], path: &str) -> Option<&'a str> {
        s.iter().find(|x| x.path == path).map(|x| x.value.as_str())
    }

    #[test]
    fn forwarding_is_written_last_and_only_after_the_firewall() {
        let s = plan(example());
        let after: Vec<&str> = s
            .iter()
            .filter(|x| x.phase == Phase::AfterFirewall)
            .map(|x| x.path.as_str())
            .collect();
        assert_eq!(
            after,
            ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"]
        );
        assert!(s
            .iter()
            .rev()
            .take(2)
            .all(|x| x.phase == Phase::AfterFirewall));
        assert_eq!(value(&s, "net/ipv4/ip_forward"), Some("1"));
        assert_eq!(value(&s, "net/ipv6/conf/all/forwarding"), Some("0"));
    }

    #[test]
    fn sorted_by_phase_then_path_without_duplicates() {
        let s = plan(example());
        let keys: Vec<_> = s.iter().map(|x| (x.phase, x.path.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn strict_rp_filter_on_every_router_interface() {
        let s = plan(example());
        for scope in ["all", "default", "eth0", "eth1", "eth1.20", "eth1.30"] {
            let path = format!("net/ipv4/conf/{scope}/rp_filter");
            assert_eq!(value(&s, &path), Some("1"), "{path}");
        }
        let phones = s
            .iter()
            .find(|x| x.path == "net/ipv4/conf/eth1.20/rp_filter");
        assert!(phones.is_some_and(|x| x.reason.starts_with("phones.vlan")));
    }

    #[test]
    fn redirects_off_and_syncookies_on() {
        let s = plan(example());
        for scope in ["all", "default"] {
            assert_eq!(
                value(&s, &format!("net/ipv4/conf/{scope}/accept_redirects")),
                Some("0")
            );
            assert_eq!(
                value(&s, &format!("net/ipv4/conf/{scope}/send_redirects")),
                Some("0")
            );
        }
        assert_eq!(value(&s, "net/ipv4/tcp_syncookies"), Some("1"));
    }

    #[test]
    fn conntrack_sized_from_memory_and_clamped() {
        assert_eq!(conntrack_max(512), 32_768);
        assert_eq!(conntrack_max(16), CONNTRACK_MIN);
        assert_eq!(conntrack_max(u32::MAX), CONNTRACK_MAX);
        let s = plan(example());
        assert_eq!(value(&s, "net/netfilter/nf_conntrack_max"), Some("32768"));
        assert_eq!(value(&s, "net/netfilter/nf_conntrack_acct"), Some("1"));
        // Loose pickup keeps established flows across a restart; the helper
        // switch is gone from 6.x kernels.
        assert_eq!(value(&s, "net/netfilter/nf_conntrack_tcp_loose"), None);
        assert_eq!(value(&s, "net/netfilter/nf_conntrack_helper"), None);
    }

    #[test]
    fn ipv6_off_everywhere_by_default() {
        let s = plan(example());
        for ifname in ["eth0", "eth1", "eth1.20", "eth1.30"] {
            let path = format!("net/ipv6/conf/{ifname}/disable_ipv6");
            assert_eq!(value(&s, &path), Some("1"), "{path}");
        }
        assert_eq!(value(&s, "net/ipv6/conf/eth0/accept_ra"), None);
    }

    #[test]
    fn ipv6_on_enables_forwarding_and_wan_router_advertisements() {
        let mut cfg = example();
        cfg.wan.ipv6 = true;
        cfg.lan.ipv6 = true;
        let s = plan(cfg);
        assert_eq!(value(&s, "net/ipv6/conf/all/forwarding"), Some("1"));
        assert_eq!(value(&s, "net/ipv6/conf/eth0/disable_ipv6"), Some("0"));
        assert_eq!(value(&s, "net/ipv6/conf/eth0/accept_ra"), Some("2"));
        assert_eq!(value(&s, "net/ipv6/conf/eth1/disable_ipv6"), Some("0"));
        assert_eq!(value(&s, "net/ipv6/conf/eth1.20/disable_ipv6"), Some("1"));
    }

    #[test]
    fn render_has_phase_headers_and_reasons() {
        let text = render(&plan(example()));
        let first = text.lines().next();
        assert_eq!(first, Some("# before the firewall"));
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        assert_eq!(tail[2], "# after the firewall (forwarding last)");
        assert!(tail[1].starts_with("net/ipv4/ip_forward = 1  # "));
        assert!(text.contains("net/ipv6/conf/eth1.20/disable_ipv6 = 1  # phones.ipv6 = false"));
    }
}

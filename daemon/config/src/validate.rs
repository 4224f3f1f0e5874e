//! Validation: every problem in a config at once, each with its config path.
//!
//! `check` resolves the values the plan needs (rates, timeouts, lease times,
//! call count) and refuses the config if any error was found.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::diag::{has_errors, Diagnostic};
use crate::line::{capacity, Capacity};
use crate::model::{Attachment, Config, DhcpPool, Phones, Protocol, Wan, WanMode};
use crate::policy::ProviderPolicy;
use crate::units::{parse_duration, parse_rate};

/// A config that passed validation, with every value the plan needs resolved.
/// Only [`check`] makes one, so the plan never sees an invalid config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The config as written.
    pub config: Config,
    /// The provider policy it was checked against.
    pub policy: ProviderPolicy,
    /// `line.down` in bit/s.
    pub down_bps: u64,
    /// `line.up` in bit/s.
    pub up_bps: u64,
    /// What the line carries.
    pub capacity: Capacity,
    /// Calls to reserve bandwidth for (`line.calls`, or what the line carries with real framing).
    pub calls: u64,
    /// Wi-Fi call bandwidth per call from the policy (spec B4), bit/s.
    pub wifi_per_call_bps: u64,
    /// `conntrack.phone_udp_timeout` in seconds.
    pub phone_udp_timeout: u64,
    /// `conntrack.epdg_udp_timeout` in seconds.
    pub epdg_udp_timeout: u64,
    /// Lease times in seconds: data LAN (if it has DHCP), phones, Wi-Fi calling.
    pub lan_lease: Option<u64>,
    /// Phone network lease time in seconds.
    pub phones_lease: u64,
    /// Wi-Fi-calling network lease time in seconds.
    pub wifi_lease: Option<u64>,
    /// Warnings found on the way (the config is still used).
    pub warnings: Vec<Diagnostic>,
}

/// Validates `config` against `policy`. On success the warnings are in
/// [`Checked::warnings`]; on failure every diagnostic (errors and warnings) is returned.
pub fn check(config: Config, policy: ProviderPolicy) -> Result<Checked, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut resolve = |path: &str, r: Result<u64, String>| match r {
        Ok(v) => Some(v),
        Err(msg) => {
            diags.push(Diagnostic::error(path, msg));
            None
        }
    };
    let down = resolve("line.down", parse_rate(&config.line.down));
    let up = resolve("line.up", parse_rate(&config.line.up));
    let per_call = resolve("policy.per_call", parse_rate(&policy.per_call));
    let wifi_per_call = resolve(
        "policy.wifi_calling.per_call",
        parse_rate(&policy.wifi_calling.per_call),
    );
    let phone_udp = resolve(
        "conntrack.phone_udp_timeout",
        parse_duration(&config.conntrack.phone_udp_timeout),
    );
    let epdg_udp = resolve(
        "conntrack.epdg_udp_timeout",
        parse_duration(&config.conntrack.epdg_udp_timeout),
    );
    let lan_lease = config
        .lan
        .dhcp
        .as_ref()
        .map(|d| resolve("lan.dhcp.lease", parse_duration(&d.lease)));
    let phones_lease = resolve(
        "phones.dhcp.lease",
        parse_duration(&config.phones.dhcp.lease),
    );
    let wifi_lease = config
        .wifi_calling
        .as_ref()
        .map(|w| resolve("wifi_calling.dhcp.lease", parse_duration(&w.dhcp.lease)));

    rules(&config, &policy, &mut diags);

    let cap = match (down, up, per_call) {
        (Some(d), Some(u), Some(p)) => Some(capacity(d, u, config.line.framing, p)),
        _ => None,
    };
    if let Some(cap) = cap {
        if let Some(calls) = config.line.calls {
            if u64::from(calls) > cap.wire_calls {
                diags.push(Diagnostic::warning(
                    "line.calls",
                    format!(
                        "{calls} calls need {} kbit/s on this {} line but the slower direction has {} kbit/s: it carries {} calls ({} kbit/s per call on the wire); calls beyond that will sound bad",
                        u64::from(calls) * cap.wire_per_call_bps / 1000,
                        config.line.framing.as_str(),
                        cap.limiting_bps / 1000,
                        cap.wire_calls,
                        cap.wire_per_call_bps as f64 / 1000.0,
                    ),
                ));
            }
        }
    }
    if let Some(t) = phone_udp {
        if t < 300 {
            diags.push(Diagnostic::warning(
                "conntrack.phone_udp_timeout",
                format!("{t} s is below the 300 s the provider requires (spec F3): phones behind NAT may stop receiving calls"),
            ));
        }
    }
    if let Some(t) = epdg_udp {
        if t < 300 {
            diags.push(Diagnostic::warning(
                "conntrack.epdg_udp_timeout",
                format!(
                    "{t} s is below 300 s: Wi-Fi calls may drop when the IKE/NAT-T mapping expires"
                ),
            ));
        }
    }

    diags.sort_by(|a, b| (a.severity, &a.path).cmp(&(b.severity, &b.path)));
    diags.dedup();
    if has_errors(&diags) {
        return Err(diags);
    }
    match (
        down,
        up,
        cap,
        wifi_per_call,
        phone_udp,
        epdg_udp,
        phones_lease,
    ) {
        (Some(down_bps), Some(up_bps), Some(capacity), Some(wifi), Some(p), Some(e), Some(pl)) => {
            let calls = config
                .line
                .calls
                .map(u64::from)
                .unwrap_or(capacity.wire_calls);
            Ok(Checked {
                down_bps,
                up_bps,
                capacity,
                calls,
                wifi_per_call_bps: wifi,
                phone_udp_timeout: p,
                epdg_udp_timeout: e,
                lan_lease: lan_lease.flatten(),
                phones_lease: pl,
                wifi_lease: wifi_lease.flatten(),
                warnings: diags,
                config,
                policy,
            })
        }
        // Every None above pushed an error, so this is unreachable in practice;
        // still, refuse rather than guess.
        _ => Err(diags),
    }
}

/// The structural rules: addresses, subnets, interfaces, VLANs, forwards, policy.
fn rules(config: &Config, policy: &ProviderPolicy, out: &mut Vec<Diagnostic>) {
    provider_matches(config, policy, out);
    line_calls(config, out);
    interfaces(config, out);
    let nets = lan_side(config);
    for net in &nets {
        lan_side_address(net, out);
        if let Some(pool) = net.dhcp {
            dhcp_pool(net, pool, out);
        }
        ipv6(config, net, out);
    }
    wan(&config.wan, out);
    overlaps(config, &nets, out);
    port_forwards(config, out);
    provisioning_url(&config.phones, out);
    dhcp_options(&config.phones, out);
    policy_rules(policy, out);
}

/// Linux's limit on interface names (IFNAMSIZ minus the terminating NUL).
const MAX_IFNAME: usize = 15;

/// A network on the LAN side of the router: the data LAN, phones, Wi-Fi calling.
struct Network<'a> {
    /// Its table in the config, e.g. `phones`.
    key: &'static str,
    /// What an IT person calls it, e.g. `phone network`.
    name: &'static str,
    address: Ipv4Net,
    dhcp: Option<&'a DhcpPool>,
    ipv6: bool,
}

fn lan_side(config: &Config) -> Vec<Network<'_>> {
    let mut nets = vec![
        Network {
            key: "lan",
            name: "data LAN",
            address: config.lan.address,
            dhcp: config.lan.dhcp.as_ref(),
            ipv6: config.lan.ipv6,
        },
        Network {
            key: "phones",
            name: "phone network",
            address: config.phones.address,
            dhcp: Some(&config.phones.dhcp),
            ipv6: config.phones.ipv6,
        },
    ];
    if let Some(w) = &config.wifi_calling {
        nets.push(Network {
            key: "wifi_calling",
            name: "Wi-Fi-calling network",
            address: w.address,
            dhcp: Some(&w.dhcp),
            ipv6: w.ipv6,
        });
    }
    nets
}

/// A network that names its own port or VLAN: phones, Wi-Fi calling.
struct Attached<'a> {
    key: &'static str,
    name: &'static str,
    att: Attachment<'a>,
}

fn attached(config: &Config) -> Vec<Attached<'_>> {
    let mut list = vec![Attached {
        key: "phones",
        name: "phone network",
        att: config.phones.attachment(),
    }];
    if let Some(w) = &config.wifi_calling {
        list.push(Attached {
            key: "wifi_calling",
            name: "Wi-Fi-calling network",
            att: w.attachment(),
        });
    }
    list
}

fn provider_matches(config: &Config, policy: &ProviderPolicy, out: &mut Vec<Diagnostic>) {
    if config.provider != policy.provider {
        out.push(Diagnostic::error(
            "provider",
            format!(
                "\"{}\" does not match the installed provider policy, which is for \"{}\"; set provider = \"{}\" or install {}'s policy",
                config.provider, policy.provider, policy.provider, config.provider
            ),
        ));
    }
}

fn line_calls(config: &Config, out: &mut Vec<Diagnostic>) {
    if config.line.calls == Some(0) {
        out.push(Diagnostic::error(
            "line.calls",
            "0 calls would reserve no bandwidth for the phones; give at least 1, or leave it out to use what the line carries",
        ));
    }
}

// ---- interfaces and VLANs -------------------------------------------------

fn interfaces(config: &Config, out: &mut Vec<Diagnostic>) {
    let attached = attached(config);
    let mut names = vec![
        ("wan.interface".to_string(), config.wan.interface.as_str()),
        ("lan.interface".to_string(), config.lan.interface.as_str()),
    ];
    for a in &attached {
        if let Some(i) = a.att.interface {
            names.push((format!("{}.interface", a.key), i));
        }
        if let Some(p) = a.att.parent {
            names.push((format!("{}.parent", a.key), p));
        }
    }
    for (path, name) in &names {
        if let Some(problem) = interface_name_problem(name) {
            out.push(Diagnostic::error(path, problem));
        }
    }
    for a in &attached {
        attachment_shape(a, out);
        vlan_id(a, out);
        vlan_device_name(a, out);
        parent_port(config, a, &attached, out);
    }
    vlan_clash(&attached, out);
    distinct_interfaces(config, &attached, out);
}

/// What is wrong with an interface name, if anything.
fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the interface name is empty; give the port's name, e.g. eth1".to_string());
    }
    if name.len() > MAX_IFNAME {
        return Some(format!(
            "`{name}` is {} characters long; Linux interface names have at most {MAX_IFNAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not a valid interface name"));
    }
    name.chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
        .map(|c| {
            format!("`{name}` contains {c:?}; interface names must not contain '/', ':' or spaces")
        })
}

/// A network gives either `interface`, or `parent` and `vlan`.
fn attachment_shape(a: &Attached, out: &mut Vec<Diagnostic>) {
    let k = a.key;
    let both =
        "use either interface (a dedicated port) or parent and vlan (a VLAN on a port), not both";
    match (a.att.interface, a.att.parent, a.att.vlan) {
        (Some(i), parent, vlan) => {
            if let Some(p) = parent {
                out.push(Diagnostic::error(
                    format!("{k}.parent"),
                    format!("`{p}` is given together with {k}.interface = `{i}`; {both}"),
                ));
            }
            if let Some(v) = vlan {
                out.push(Diagnostic::error(
                    format!("{k}.vlan"),
                    format!("{v} is given together with {k}.interface = `{i}`; {both}"),
                ));
            }
        }
        (None, None, None) => out.push(Diagnostic::error(
            format!("{k}.interface"),
            format!(
                "the {} needs a port: give interface (a dedicated port, e.g. \"eth2\") or parent and vlan (a VLAN on a port, e.g. parent = \"eth1\" and vlan = 20)",
                a.name
            ),
        )),
        (None, Some(p), None) => out.push(Diagnostic::error(
            format!("{k}.vlan"),
            format!("parent = `{p}` needs a VLAN id too (1-4094), e.g. vlan = 20"),
        )),
        (None, None, Some(v)) => out.push(Diagnostic::error(
            format!("{k}.parent"),
            format!("vlan = {v} needs the port that carries the VLAN, e.g. parent = \"eth1\""),
        )),
        (None, Some(_), Some(_)) => {}
    }
}

fn valid_vlan(vlan: u16) -> bool {
    (1..=4094).contains(&vlan)
}

fn vlan_id(a: &Attached, out: &mut Vec<Diagnostic>) {
    if let Some(v) = a.att.vlan.filter(|v| !valid_vlan(*v)) {
        out.push(Diagnostic::error(
            format!("{}.vlan", a.key),
            format!("{v} is not a valid VLAN id (1-4094)"),
        ));
    }
}

/// The kernel names the VLAN device `parent.vlan`; it must fit the name limit.
fn vlan_device_name(a: &Attached, out: &mut Vec<Diagnostic>) {
    let (Some(parent), Some(vlan)) = (a.att.parent, a.att.vlan) else {
        return;
    };
    if interface_name_problem(parent).is_some() || !valid_vlan(vlan) {
        return; // reported already
    }
    if let Some(dev) = a.att.interface_name().filter(|d| d.len() > MAX_IFNAME) {
        out.push(Diagnostic::error(
            format!("{}.parent", a.key),
            format!(
                "the VLAN interface `{dev}` would be {} characters long; Linux allows at most {MAX_IFNAME}, so the parent port needs a shorter name",
                dev.len()
            ),
        ));
    }
}

/// The port part of an interface name: `eth0` for `eth0.101`.
fn port_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// A VLAN parent is the LAN port or an unused port: never the WAN wire, never
/// another network's dedicated port.
fn parent_port(config: &Config, a: &Attached, all: &[Attached], out: &mut Vec<Diagnostic>) {
    let Some(p) = a.att.parent.filter(|p| !p.is_empty()) else {
        return;
    };
    let path = format!("{}.parent", a.key);
    let wan = config.wan.interface.as_str();
    let lan = config.lan.interface.as_str();
    if p == wan || p == port_of(wan) {
        out.push(Diagnostic::error(
            &path,
            format!(
                "`{p}` is the WAN port (wan.interface = `{wan}`); the {} must never be on the internet wire: use the LAN port (`{lan}`) or an unused port",
                a.name
            ),
        ));
    }
    for other in all.iter().filter(|o| o.key != a.key) {
        if other.att.interface == Some(p) {
            out.push(Diagnostic::error(
                &path,
                format!(
                    "`{p}` is the {}'s dedicated port ({}.interface); use the LAN port (`{lan}`) or an unused port as parent",
                    other.name, other.key
                ),
            ));
        }
    }
}

fn vlan_clash(attached: &[Attached], out: &mut Vec<Diagnostic>) {
    let [phones, wifi] = attached else {
        return;
    };
    let tags = (
        phones.att.parent.zip(phones.att.vlan),
        wifi.att.parent.zip(wifi.att.vlan),
    );
    if let (Some((pp, pv)), Some((wp, wv))) = tags {
        if pp == wp && pv == wv {
            out.push(Diagnostic::error(
                "wifi_calling.vlan",
                format!(
                    "VLAN {wv} on `{wp}` is already the phone network's (phones.vlan); give the Wi-Fi-calling network its own VLAN id"
                ),
            ));
        }
    }
}

/// Every network on its own kernel interface: a port used untagged by one
/// network cannot be another's, nor can a VLAN device be named like a port in use.
fn distinct_interfaces(config: &Config, attached: &[Attached], out: &mut Vec<Diagnostic>) {
    // (path, kernel name, is a derived VLAN device)
    let mut used = vec![
        (
            "wan.interface".to_string(),
            config.wan.interface.clone(),
            false,
        ),
        (
            "lan.interface".to_string(),
            config.lan.interface.clone(),
            false,
        ),
    ];
    for a in attached {
        match (a.att.interface, a.att.interface_name()) {
            (Some(i), _) => used.push((format!("{}.interface", a.key), i.to_string(), false)),
            (None, Some(dev)) => used.push((format!("{}.vlan", a.key), dev, true)),
            (None, None) => {}
        }
    }
    for (i, (path, name, vlan)) in used.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        // Two VLAN devices with one name are a VLAN clash, reported by `vlan_clash`.
        let clash = used[..i]
            .iter()
            .find(|(_, n, v)| n == name && !(*v && *vlan));
        if let Some((other, _, _)) = clash {
            out.push(Diagnostic::error(
                path,
                format!(
                    "`{name}` is already used by {other}; every network needs its own port, or its own VLAN on a shared port (parent and vlan)"
                ),
            ));
        }
    }
}

// ---- addresses and subnets ------------------------------------------------

/// `"network"` or `"broadcast"` when `ip` is that address of `net` (prefixes
/// below /31 only; /31 and /32 have no such addresses).
fn reserved_address(ip: Ipv4Addr, net: Ipv4Net) -> Option<&'static str> {
    let net = net.trunc();
    if net.prefix_len() >= 31 {
        None
    } else if ip == net.network() {
        Some("network")
    } else if ip == net.broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

/// The router's own address on a network must be a usable host address.
fn router_address(path: &str, address: Ipv4Net, out: &mut Vec<Diagnostic>) {
    if let Some(kind) = reserved_address(address.addr(), address) {
        let first = Ipv4Addr::from(u32::from(address.network()).saturating_add(1));
        out.push(Diagnostic::error(
            path,
            format!(
                "{} is the {kind} address of {}, not a usable host address; give the router a host address, e.g. {first}/{}",
                address.addr(),
                address.trunc(),
                address.prefix_len()
            ),
        ));
    }
}

fn lan_side_address(net: &Network, out: &mut Vec<Diagnostic>) {
    let path = format!("{}.address", net.key);
    let len = net.address.prefix_len();
    if !(8..=30).contains(&len) {
        out.push(Diagnostic::error(
            &path,
            format!(
                "{}: a /{len} prefix does not fit the {}; use a prefix length between /8 and /30, e.g. {}/24",
                net.address,
                net.name,
                net.address.addr()
            ),
        ));
    }
    router_address(&path, net.address, out);
}

fn dhcp_pool(net: &Network, pool: &DhcpPool, out: &mut Vec<Diagnostic>) {
    let subnet = net.address.trunc();
    for (which, ip) in [("start", pool.start), ("end", pool.end)] {
        let path = format!("{}.dhcp.{which}", net.key);
        if !subnet.contains(&ip) {
            out.push(Diagnostic::error(
                path,
                format!("{ip} is outside the {} {subnet}", net.name),
            ));
        } else if let Some(kind) = reserved_address(ip, subnet) {
            out.push(Diagnostic::error(
                path,
                format!(
                    "{ip} is the {kind} address of the {} {subnet}; no device can use it",
                    net.name
                ),
            ));
        }
    }
    if !(subnet.contains(&pool.start) && subnet.contains(&pool.end)) {
        return; // the order of addresses in another subnet says nothing more
    }
    let router = net.address.addr();
    if pool.start > pool.end {
        out.push(Diagnostic::error(
            format!("{}.dhcp.start", net.key),
            format!(
                "{} comes after the pool's end {}; start must not be above end",
                pool.start, pool.end
            ),
        ));
    } else if (pool.start..=pool.end).contains(&router) {
        out.push(Diagnostic::error(
            format!("{}.dhcp", net.key),
            format!(
                "the pool {}-{} contains the router's own address {router} ({}.address); start the pool above it or end it below it",
                pool.start, pool.end, net.key
            ),
        ));
    }
}

fn wan(wan: &Wan, out: &mut Vec<Diagnostic>) {
    match wan.mode {
        WanMode::Static => static_wan(wan, out),
        WanMode::Dhcp => dhcp_wan(wan, out),
    }
}

fn static_wan(wan: &Wan, out: &mut Vec<Diagnostic>) {
    match wan.address {
        Some(a) => router_address("wan.address", a, out),
        None => out.push(Diagnostic::error(
            "wan.address",
            "mode = \"static\" needs the router's WAN address with prefix length, e.g. address = \"203.0.113.10/24\"",
        )),
    }
    match (wan.gateway, wan.address) {
        (Some(g), Some(a)) => gateway(g, a, out),
        (Some(_), None) => {}
        (None, _) => out.push(Diagnostic::error(
            "wan.gateway",
            "mode = \"static\" needs the ISP's gateway address, e.g. gateway = \"203.0.113.1\"",
        )),
    }
    if wan.dns.is_empty() {
        out.push(Diagnostic::error(
            "wan.dns",
            "mode = \"static\" needs at least one DNS server, e.g. dns = [\"203.0.113.53\"]; the phones need working DNS (spec F4)",
        ));
    }
}

fn gateway(gw: Ipv4Addr, address: Ipv4Net, out: &mut Vec<Diagnostic>) {
    let subnet = address.trunc();
    let problem = if !subnet.contains(&gw) {
        Some(format!("{gw} is outside the WAN subnet {subnet}"))
    } else if gw == address.addr() {
        Some(format!(
            "{gw} is the router's own WAN address (wan.address); the gateway is the ISP's router on the same subnet"
        ))
    } else {
        reserved_address(gw, subnet).map(|kind| {
            format!("{gw} is the {kind} address of the WAN subnet {subnet}, not a gateway")
        })
    };
    if let Some(message) = problem {
        out.push(Diagnostic::error("wan.gateway", message));
    }
}

fn dhcp_wan(wan: &Wan, out: &mut Vec<Diagnostic>) {
    let ignored =
        "is set but wan.mode is dhcp, so it would be ignored; remove it, or set mode = \"static\"";
    if let Some(a) = wan.address {
        out.push(Diagnostic::error("wan.address", format!("{a} {ignored}")));
    }
    if let Some(g) = wan.gateway {
        out.push(Diagnostic::error("wan.gateway", format!("{g} {ignored}")));
    }
}

/// No two networks (LAN side and a static WAN) may share addresses.
fn overlaps(config: &Config, nets: &[Network], out: &mut Vec<Diagnostic>) {
    let mut subnets: Vec<(String, &str, Ipv4Net)> = nets
        .iter()
        .map(|n| (format!("{}.address", n.key), n.name, n.address.trunc()))
        .collect();
    if let (WanMode::Static, Some(a)) = (config.wan.mode, config.wan.address) {
        subnets.push(("wan.address".to_string(), "WAN subnet", a.trunc()));
    }
    for (i, (path, _, net)) in subnets.iter().enumerate() {
        for (other, name, other_net) in &subnets[..i] {
            if net.contains(other_net) || other_net.contains(net) {
                out.push(Diagnostic::error(
                    path,
                    format!(
                        "{net} overlaps the {name} {other_net} ({other}); every network needs its own subnet"
                    ),
                ));
            }
        }
    }
}

// ---- port forwards --------------------------------------------------------

fn port_forwards(config: &Config, out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(Protocol, u16), usize> = HashMap::new();
    for (i, fwd) in config.port_forwards.iter().enumerate() {
        let base = format!("port_forwards[{i}]");
        if fwd.port == 0 {
            out.push(Diagnostic::error(
                format!("{base}.port"),
                "0 is not a port (1-65535)",
            ));
        } else if let Some(first) = seen.get(&(fwd.protocol, fwd.port)) {
            out.push(Diagnostic::error(
                format!("{base}.port"),
                format!(
                    "{}/{} is already forwarded by port_forwards[{first}]; a WAN port can go to one host only",
                    fwd.port, fwd.protocol
                ),
            ));
        } else {
            seen.insert((fwd.protocol, fwd.port), i);
        }
        if fwd.to_port == Some(0) {
            out.push(Diagnostic::error(
                format!("{base}.to_port"),
                "0 is not a port (1-65535)",
            ));
        }
        if let Some(message) = forward_target_problem(config, fwd.to) {
            out.push(Diagnostic::error(format!("{base}.to"), message));
        }
    }
}

/// Port forwards go to hosts on the data LAN only; never to phones (spec F1).
fn forward_target_problem(config: &Config, to: Ipv4Addr) -> Option<String> {
    let lan = config.lan.address;
    let phones = config.phones.address.trunc();
    let wifi = config.wifi_calling.as_ref().map(|w| w.address.trunc());
    if phones.contains(&to) {
        Some(format!(
            "{to} is in the phone network {phones}; the provider forbids port forwards to phones (spec F1): they work behind NAT and need none"
        ))
    } else if let Some(wifi) = wifi.filter(|w| w.contains(&to)) {
        Some(format!(
            "{to} is in the Wi-Fi-calling network {wifi}; port forwards go to the data LAN only, never to phones or mobiles (spec F1)"
        ))
    } else if !lan.contains(&to) {
        Some(format!(
            "{to} is outside the data LAN {}; port forwards may only go to hosts on the data LAN",
            lan.trunc()
        ))
    } else if to == lan.addr() {
        Some(format!(
            "{to} is the router's own LAN address (lan.address); forward to the host that runs the service"
        ))
    } else {
        reserved_address(to, lan).map(|kind| {
            format!(
                "{to} is the {kind} address of the data LAN {}, not a host",
                lan.trunc()
            )
        })
    }
}

// ---- phone DHCP: provisioning URL and raw options -------------------------

const URL_SCHEMES: [&str; 4] = ["http", "https", "tftp", "ftp"];

fn provisioning_url(phones: &Phones, out: &mut Vec<Diagnostic>) {
    if let Some(message) = phones.provisioning_url.as_deref().and_then(url_problem) {
        out.push(Diagnostic::error("phones.provisioning_url", message));
    }
}

fn url_problem(url: &str) -> Option<String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "{url:?} contains spaces or line breaks; give the URL on one line without spaces"
        ));
    }
    let rest = url
        .split_once("://")
        .filter(|(scheme, _)| URL_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
        .map(|(_, rest)| rest);
    let Some(rest) = rest else {
        return Some(format!(
            "`{url}` must start with http://, https://, tftp:// or ftp://, e.g. http://config.ipnordic.dk/"
        ));
    };
    if url_host(rest).is_empty() {
        return Some(format!(
            "`{url}` has no server name or address after the ://"
        ));
    }
    None
}

/// The host part of what follows `scheme://`: without path, user info and port.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    match host.rsplit_once(':') {
        Some((h, port)) if !h.starts_with('[') || h.ends_with(']') => {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }
        _ => host,
    }
}

/// DHCP options the router sets itself on the phone network, and why.
fn router_set_option(code: u8, phones: &Phones) -> Option<&'static str> {
    match code {
        1 => Some("the subnet mask, from phones.address"),
        3 => Some("the default router, from phones.address"),
        6 => Some("the DNS server (the router itself)"),
        42 => Some("the NTP server (the router itself)"),
        51 => Some("the lease time, from phones.dhcp.lease"),
        53 => Some("the DHCP message type, part of DHCP itself"),
        54 => Some("the DHCP server identifier, part of DHCP itself"),
        66 if phones.provisioning_url.is_some() => {
            Some("the provisioning server, from phones.provisioning_url")
        }
        _ => None,
    }
}

fn dhcp_options(phones: &Phones, out: &mut Vec<Diagnostic>) {
    for (i, opt) in phones.dhcp_options.iter().enumerate() {
        let base = format!("phones.dhcp_options[{i}]");
        let code = opt.code;
        let first = phones.dhcp_options[..i].iter().position(|o| o.code == code);
        let problem = if code == 0 || code == 255 {
            Some(format!(
                "option {code} is reserved by DHCP (pad/end); use a code between 1 and 254"
            ))
        } else if let Some(what) = router_set_option(code, phones) {
            Some(format!(
                "the router sets option {code} itself ({what}); remove it here"
            ))
        } else {
            first.map(|j| {
                format!("option {code} is given twice (also phones.dhcp_options[{j}]); give each option once")
            })
        };
        if let Some(message) = problem {
            out.push(Diagnostic::error(format!("{base}.code"), message));
        }
        if opt.value.chars().any(char::is_control) {
            out.push(Diagnostic::error(
                format!("{base}.value"),
                format!(
                    "the value of option {code} contains a line break or control character; give it on one line"
                ),
            ));
        }
    }
}

// ---- IPv6 -----------------------------------------------------------------

fn ipv6(config: &Config, net: &Network, out: &mut Vec<Diagnostic>) {
    if !net.ipv6 {
        return;
    }
    let path = format!("{}.ipv6", net.key);
    if net.key == "phones" {
        out.push(Diagnostic::warning(
            &path,
            "IPv6 is on for the phones, but the provider publishes no IPv6 addresses (spec O1); phones that prefer IPv6 may fail to register or provision. Leave it off unless ipnordic told you otherwise",
        ));
    }
    if !config.wan.ipv6 {
        out.push(Diagnostic::warning(
            &path,
            format!(
                "IPv6 is on for the {} but wan.ipv6 is off, so it would have no IPv6 upstream; turn on wan.ipv6 or turn this off",
                net.name
            ),
        ));
    }
}

// ---- the provider policy --------------------------------------------------

fn policy_rules(policy: &ProviderPolicy, out: &mut Vec<Diagnostic>) {
    let mut empty = |path: &str, is_empty: bool, what: &str| {
        if is_empty {
            out.push(Diagnostic::error(path, format!("is empty: {what}")));
        }
    };
    empty(
        "policy.provider_ranges",
        policy.provider_ranges.is_empty(),
        "the router needs the provider's address ranges to keep them open for the phones (spec F5)",
    );
    empty(
        "policy.phone_ports",
        policy.phone_ports.is_empty(),
        "the phones would reach no port at the provider",
    );
    empty(
        "policy.vendor_provisioning.tcp_ports",
        policy.vendor_provisioning.tcp_ports.is_empty(),
        "the phones could not reach their vendors' provisioning servers",
    );
    empty(
        "policy.wifi_calling.epdg",
        policy.wifi_calling.epdg.is_empty(),
        "Wi-Fi calling needs the ePDG addresses (spec W1)",
    );
    for (i, port) in policy.vendor_provisioning.tcp_ports.iter().enumerate() {
        if *port == 0 {
            out.push(Diagnostic::error(
                format!("policy.vendor_provisioning.tcp_ports[{i}]"),
                "0 is not a port (1-65535)",
            ));
        }
    }
    for (path, name) in policy_domains(policy) {
        if let Some(problem) = dns_name_problem(name) {
            out.push(Diagnostic::error(path, problem));
        }
    }
}

/// Every domain the policy names, with its path.
fn policy_domains(policy: &ProviderPolicy) -> Vec<(String, &str)> {
    let mut list = Vec::new();
    for (i, p) in policy.phone_ports.iter().enumerate() {
        if let Some(d) = &p.domain {
            list.push((format!("policy.phone_ports[{i}].domain"), d.as_str()));
        }
    }
    for (i, v) in policy.vendor_provisioning.vendors.iter().enumerate() {
        for (j, d) in v.domains.iter().enumerate() {
            let path = format!("policy.vendor_provisioning.vendors[{i}].domains[{j}]");
            list.push((path, d.as_str()));
        }
    }
    if let Some(d) = &policy.wifi_calling.domain {
        list.push(("policy.wifi_calling.domain".to_string(), d.as_str()));
    }
    for (i, s) in policy.software.iter().enumerate() {
        for (j, h) in s.hosts.iter().enumerate() {
            list.push((format!("policy.software[{i}].hosts[{j}]"), h.as_str()));
        }
    }
    list
}

/// What is wrong with a DNS name, if anything: labels of `a-z`, `0-9` and `-`
/// (1-63 characters, not starting or ending with `-`), 253 characters at most.
fn dns_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the domain name is empty".to_string());
    }
    if name.len() > 253 {
        return Some(format!(
            "`{name}` is {} characters long; a domain name has at most 253",
            name.len()
        ));
    }
    let bad_label = name.split('.').find(|label| {
        label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    bad_label.map(|label| {
        format!(
            "`{name}` is not a valid domain name: the part `{label}` must be 1-63 lower-case letters, digits or '-', not starting or ending with '-'"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Severity;
    use crate::model::{DhcpOption, LanEgress, PortForward};

    const EXAMPLE: &str = include_str!("../../../docs/examples/router.toml");

    fn from_toml(text: &str) -> Config {
        let (config, diags) = crate::parse_config(text);
        assert!(diags.is_empty(), "{diags:?}");
        config.expect("the config parses")
    }

    fn example() -> Config {
        from_toml(EXAMPLE)
    }

    fn factory() -> ProviderPolicy {
        crate::parse_policy(crate::FACTORY_POLICY).expect("the factory policy parses")
    }

    fn diagnostics_with(config: Config, policy: ProviderPolicy) -> Vec<Diagnostic> {
        match check(config, policy) {
            Ok(checked) => checked.warnings,
            Err(diags) => diags,
        }
    }

    /// Diagnostics for the example config after `change`.
    fn with(change: impl FnOnce(&mut Config)) -> Vec<Diagnostic> {
        let mut config = example();
        change(&mut config);
        diagnostics_with(config, factory())
    }

    /// Diagnostics for the example config checked against the factory policy after `change`.
    fn with_policy(change: impl FnOnce(&mut ProviderPolicy)) -> Vec<Diagnostic> {
        let mut policy = factory();
        change(&mut policy);
        diagnostics_with(example(), policy)
    }

    fn render(diags: &[Diagnostic]) -> String {
        diags.iter().map(|d| format!("  {d}\n")).collect()
    }

    fn errors(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
        diags.iter().filter(|d| d.is_error()).collect()
    }

    #[track_caller]
    fn assert_has(diags: &[Diagnostic], severity: Severity, path: &str, fragment: &str) {
        assert!(
            diags
                .iter()
                .any(|d| d.severity == severity && d.path == path && d.message.contains(fragment)),
            "expected {severity:?} at `{path}` containing {fragment:?}, got:\n{}",
            render(diags)
        );
    }

    #[track_caller]
    fn assert_error(diags: &[Diagnostic], path: &str, fragment: &str) {
        assert_has(diags, Severity::Error, path, fragment);
    }

    /// Exactly one error, at `path`, containing `fragment`.
    #[track_caller]
    fn assert_sole_error(diags: &[Diagnostic], path: &str, fragment: &str) {
        assert_eq!(errors(diags).len(), 1, "got:\n{}", render(diags));
        assert_error(diags, path, fragment);
    }

    #[track_caller]
    fn assert_no_errors(diags: &[Diagnostic]) {
        assert!(errors(diags).is_empty(), "got:\n{}", render(diags));
    }

    fn forward(protocol: Protocol, port: u16, to: &str) -> PortForward {
        PortForward {
            protocol,
            port,
            to: to.parse().expect("an address"),
            to_port: None,
        }
    }

    fn option(code: u8, value: &str) -> DhcpOption {
        DhcpOption {
            code,
            value: value.to_string(),
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("a network")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("an address")
    }

    fn wifi(config: &mut Config) -> &mut crate::model::WifiCalling {
        config
            .wifi_calling
            .as_mut()
            .expect("the example has wifi_calling")
    }

    // ---- the good cases -------------------------------------------------

    #[test]
    fn example_config_passes_without_diagnostics() {
        let checked = check(example(), factory()).expect("the example is valid");
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    }

    #[test]
    fn dedicated_ports_and_static_wan_pass() {
        let config = from_toml(
            r#"
provider = "ipnordic"
[wan]
interface = "eth0"
mode = "static"
address = "203.0.113.10/24"
gateway = "203.0.113.1"
dns = ["203.0.113.53"]
[line]
down = "100M"
up = "100M"
[lan]
interface = "eth1"
address = "192.168.1.1/24"
[phones]
interface = "eth2"
address = "10.20.0.1/24"
dhcp = { start = "10.20.0.10", end = "10.20.0.200" }
provisioning_url = "tftp://10.20.0.1"
dhcp_options = [{ code = 66, value = "\"10.20.0.5\"" }, { code = 43, value = "01:02" }]
[wifi_calling]
parent = "eth3"
vlan = 30
address = "10.30.0.1/24"
dhcp = { start = "10.30.0.2", end = "10.30.0.254" }
"#,
        );
        // option 66 alongside provisioning_url is refused; everything else is fine.
        let diags = diagnostics_with(config.clone(), factory());
        assert_sole_error(
            &diags,
            "phones.dhcp_options[0].code",
            "router sets option 66",
        );
        let mut config = config;
        config.phones.dhcp_options.remove(0);
        assert_no_errors(&diagnostics_with(config, factory()));
    }

    #[test]
    fn factory_policy_is_sane() {
        let mut out = Vec::new();
        policy_rules(&factory(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    // ---- VLANs and attachment -------------------------------------------

    #[test]
    fn vlan_id_out_of_range() {
        let diags = with(|c| c.phones.vlan = Some(4095));
        assert_sole_error(
            &diags,
            "phones.vlan",
            "4095 is not a valid VLAN id (1-4094)",
        );
        let msg = &errors(&diags)[0].message;
        assert_eq!(msg, "4095 is not a valid VLAN id (1-4094)");

        let diags = with(|c| wifi(c).vlan = Some(0));
        assert_sole_error(
            &diags,
            "wifi_calling.vlan",
            "0 is not a valid VLAN id (1-4094)",
        );
    }

    #[test]
    fn vlan_ids_at_the_limits_are_fine() {
        assert_no_errors(&with(|c| c.phones.vlan = Some(1)));
        assert_no_errors(&with(|c| c.phones.vlan = Some(4094)));
    }

    #[test]
    fn attachment_needs_interface_or_parent_and_vlan() {
        let diags = with(|c| {
            c.phones.parent = None;
            c.phones.vlan = None;
        });
        assert_sole_error(&diags, "phones.interface", "give interface");
    }

    #[test]
    fn attachment_not_both() {
        let diags = with(|c| c.phones.interface = Some("eth2".into()));
        assert_error(&diags, "phones.parent", "not both");
        assert_error(&diags, "phones.vlan", "not both");
        assert_eq!(errors(&diags).len(), 2, "{}", render(&diags));
    }

    #[test]
    fn vlan_without_parent_and_parent_without_vlan() {
        let diags = with(|c| c.phones.parent = None);
        assert_sole_error(&diags, "phones.parent", "vlan = 20 needs the port");
        let diags = with(|c| wifi(c).vlan = None);
        assert_sole_error(
            &diags,
            "wifi_calling.vlan",
            "parent = `eth1` needs a VLAN id",
        );
    }

    #[test]
    fn vlan_clash_on_the_same_parent() {
        let diags = with(|c| wifi(c).vlan = Some(20));
        assert_sole_error(
            &diags,
            "wifi_calling.vlan",
            "VLAN 20 on `eth1` is already the phone network's",
        );
    }

    #[test]
    fn same_vlan_id_on_different_parents_is_fine() {
        assert_no_errors(&with(|c| {
            wifi(c).parent = Some("eth2".into());
            wifi(c).vlan = Some(20);
        }));
    }

    // ---- interfaces -----------------------------------------------------

    #[test]
    fn the_same_interface_twice() {
        let diags = with(|c| c.lan.interface = "eth0".into());
        assert_error(
            &diags,
            "lan.interface",
            "`eth0` is already used by wan.interface",
        );

        let diags = with(|c| {
            c.phones.parent = None;
            c.phones.vlan = None;
            c.phones.interface = Some("eth1".into());
        });
        assert_error(
            &diags,
            "phones.interface",
            "`eth1` is already used by lan.interface",
        );

        let diags = with(|c| {
            c.phones.parent = None;
            c.phones.vlan = None;
            c.phones.interface = Some("eth2".into());
            let w = wifi(c);
            w.parent = None;
            w.vlan = None;
            w.interface = Some("eth2".into());
        });
        assert_sole_error(
            &diags,
            "wifi_calling.interface",
            "already used by phones.interface",
        );
    }

    #[test]
    fn a_vlan_device_named_like_a_port_in_use() {
        let diags = with(|c| c.lan.interface = "eth1.20".into());
        assert_sole_error(
            &diags,
            "phones.vlan",
            "`eth1.20` is already used by lan.interface",
        );
    }

    #[test]
    fn vlan_parent_is_never_the_wan_port() {
        let diags = with(|c| c.phones.parent = Some("eth0".into()));
        assert_sole_error(&diags, "phones.parent", "`eth0` is the WAN port");

        // A tagged WAN (eth0.101) still runs on the eth0 wire.
        let diags = with(|c| {
            c.wan.interface = "eth0.101".into();
            wifi(c).parent = Some("eth0".into());
        });
        assert_sole_error(&diags, "wifi_calling.parent", "is the WAN port");
    }

    #[test]
    fn pool_outside_the_subnet_is_not_also_reported_as_backwards() {
        let diags = with(|c| c.phones.dhcp.start = ip("10.30.0.5"));
        assert_sole_error(&diags, "phones.dhcp.start", "outside the phone network");
    }

    #[test]
    fn vlan_parent_is_not_another_networks_dedicated_port() {
        let diags = with(|c| {
            c.phones.parent = None;
            c.phones.vlan = None;
            c.phones.interface = Some("eth2".into());
            wifi(c).parent = Some("eth2".into());
        });
        assert_sole_error(
            &diags,
            "wifi_calling.parent",
            "phone network's dedicated port",
        );
    }

    #[test]
    fn vlan_on_a_dedicated_unused_port_is_fine() {
        assert_no_errors(&with(|c| {
            c.phones.parent = Some("eth2".into());
            wifi(c).parent = Some("eth2".into());
        }));
    }

    #[test]
    fn vlan_device_name_must_fit_15_characters() {
        // 13 + ".20" = 16 characters.
        let diags = with(|c| c.phones.parent = Some("enp0s31f6abcd".into()));
        assert_sole_error(
            &diags,
            "phones.parent",
            "`enp0s31f6abcd.20` would be 16 characters",
        );
        // 12 + ".20" = 15: fine.
        assert_no_errors(&with(|c| c.phones.parent = Some("enp0s31f6abc".into())));
    }

    #[test]
    fn interface_names_are_checked() {
        let diags = with(|c| {
            c.wan.interface = String::new();
            c.lan.interface = "a-very-long-port-name".into();
            c.phones.parent = Some("eth/1".into());
            wifi(c).parent = Some("eth 1".into());
        });
        assert_error(&diags, "wan.interface", "empty");
        assert_error(&diags, "lan.interface", "21 characters long");
        assert_error(&diags, "phones.parent", "contains '/'");
        assert_error(&diags, "wifi_calling.parent", "contains ' '");

        let diags = with(|c| c.lan.interface = "eth1:0".into());
        assert_error(&diags, "lan.interface", "contains ':'");
    }

    // ---- addresses and subnets ------------------------------------------

    #[test]
    fn overlapping_subnets_reported_at_the_later_one() {
        let diags = with(|c| c.phones.address = net("192.168.1.2/16"));
        assert_error(
            &diags,
            "phones.address",
            "192.168.0.0/16 overlaps the data LAN 192.168.1.0/24 (lan.address)",
        );
        assert!(
            !diags.iter().any(|d| d.path == "lan.address"),
            "{}",
            render(&diags)
        );

        let diags = with(|c| wifi(c).address = net("10.20.0.1/24"));
        assert_error(&diags, "wifi_calling.address", "(phones.address)");
    }

    #[test]
    fn static_wan_must_not_overlap_the_lan() {
        let diags = with(|c| {
            c.wan.mode = WanMode::Static;
            c.wan.address = Some(net("192.168.1.200/24"));
            c.wan.gateway = Some(ip("192.168.1.254"));
            c.wan.dns = vec!["1.1.1.1".parse().expect("an address")];
        });
        assert_sole_error(
            &diags,
            "wan.address",
            "overlaps the data LAN 192.168.1.0/24 (lan.address)",
        );
    }

    #[test]
    fn router_address_must_be_a_host_address() {
        let diags = with(|c| c.lan.address = net("192.168.1.0/24"));
        assert_error(
            &diags,
            "lan.address",
            "192.168.1.0 is the network address of 192.168.1.0/24",
        );
        assert_error(&diags, "lan.address", "e.g. 192.168.1.1/24");

        let diags = with(|c| c.phones.address = net("10.20.0.255/24"));
        assert_sole_error(
            &diags,
            "phones.address",
            "broadcast address of 10.20.0.0/24",
        );
    }

    #[test]
    fn lan_side_prefix_between_8_and_30() {
        let diags = with(|c| c.lan.address = net("192.168.1.1/31"));
        assert_error(
            &diags,
            "lan.address",
            "/31 prefix does not fit the data LAN",
        );
        let diags = with(|c| wifi(c).address = net("10.30.0.1/7"));
        assert_error(&diags, "wifi_calling.address", "between /8 and /30");
        let diags = with(|c| c.phones.address = net("10.20.0.1/30"));
        assert!(
            !diags.iter().any(|d| d.path == "phones.address"),
            "{}",
            render(&diags)
        );
    }

    // ---- DHCP pools -----------------------------------------------------

    #[test]
    fn pool_outside_the_subnet() {
        let diags = with(|c| c.phones.dhcp.start = ip("10.30.0.5"));
        assert_error(
            &diags,
            "phones.dhcp.start",
            "10.30.0.5 is outside the phone network 10.20.0.0/24",
        );
        let diags = with(|c| c.lan.dhcp.as_mut().expect("lan dhcp").end = ip("192.168.2.10"));
        assert_error(
            &diags,
            "lan.dhcp.end",
            "192.168.2.10 is outside the data LAN 192.168.1.0/24",
        );
    }

    #[test]
    fn pool_start_after_end() {
        let diags = with(|c| {
            c.phones.dhcp.start = ip("10.20.0.200");
            c.phones.dhcp.end = ip("10.20.0.100");
        });
        assert_sole_error(
            &diags,
            "phones.dhcp.start",
            "10.20.0.200 comes after the pool's end 10.20.0.100",
        );
    }

    #[test]
    fn pool_contains_the_router() {
        let diags = with(|c| wifi(c).dhcp.start = ip("10.30.0.1"));
        assert_sole_error(
            &diags,
            "wifi_calling.dhcp",
            "contains the router's own address 10.30.0.1",
        );
    }

    #[test]
    fn pool_network_or_broadcast_address() {
        let diags = with(|c| c.lan.dhcp.as_mut().expect("lan dhcp").end = ip("192.168.1.255"));
        assert_sole_error(
            &diags,
            "lan.dhcp.end",
            "192.168.1.255 is the broadcast address of the data LAN",
        );
        let diags = with(|c| {
            c.phones.address = net("10.20.0.254/24");
            c.phones.dhcp.start = ip("10.20.0.0");
        });
        assert_sole_error(&diags, "phones.dhcp.start", "network address");
    }

    #[test]
    fn no_lan_dhcp_is_fine() {
        assert_no_errors(&with(|c| c.lan.dhcp = None));
    }

    // ---- WAN ------------------------------------------------------------

    fn static_wan(c: &mut Config) {
        c.wan.mode = WanMode::Static;
        c.wan.address = Some(net("203.0.113.10/24"));
        c.wan.gateway = Some(ip("203.0.113.1"));
        c.wan.dns = vec!["203.0.113.53".parse().expect("an address")];
    }

    #[test]
    fn static_wan_passes() {
        assert_no_errors(&with(static_wan));
    }

    #[test]
    fn static_wan_needs_address_gateway_and_dns() {
        let diags = with(|c| c.wan.mode = WanMode::Static);
        assert_error(&diags, "wan.address", "needs the router's WAN address");
        assert_error(&diags, "wan.gateway", "needs the ISP's gateway");
        assert_error(&diags, "wan.dns", "at least one DNS server");
        assert_eq!(errors(&diags).len(), 3, "{}", render(&diags));
    }

    #[test]
    fn static_wan_gateway_outside_the_subnet() {
        let diags = with(|c| {
            static_wan(c);
            c.wan.gateway = Some(ip("198.51.100.1"));
        });
        assert_sole_error(
            &diags,
            "wan.gateway",
            "198.51.100.1 is outside the WAN subnet 203.0.113.0/24",
        );
    }

    #[test]
    fn static_wan_gateway_is_not_the_router() {
        let diags = with(|c| {
            static_wan(c);
            c.wan.gateway = Some(ip("203.0.113.10"));
        });
        assert_sole_error(&diags, "wan.gateway", "router's own WAN address");
        let diags = with(|c| {
            static_wan(c);
            c.wan.gateway = Some(ip("203.0.113.255"));
        });
        assert_sole_error(&diags, "wan.gateway", "broadcast address of the WAN subnet");
    }

    #[test]
    fn static_wan_address_is_a_host_address() {
        let diags = with(|c| {
            static_wan(c);
            c.wan.address = Some(net("203.0.113.0/24"));
        });
        assert_sole_error(&diags, "wan.address", "network address of 203.0.113.0/24");
    }

    #[test]
    fn dhcp_wan_with_address_or_gateway() {
        let diags = with(|c| {
            c.wan.address = Some(net("203.0.113.10/24"));
            c.wan.gateway = Some(ip("203.0.113.1"));
        });
        assert_error(
            &diags,
            "wan.address",
            "203.0.113.10/24 is set but wan.mode is dhcp",
        );
        assert_error(
            &diags,
            "wan.gateway",
            "203.0.113.1 is set but wan.mode is dhcp",
        );
        assert_eq!(errors(&diags).len(), 2, "{}", render(&diags));
    }

    #[test]
    fn dhcp_wan_with_dns_override_is_fine() {
        assert_no_errors(&with(|c| {
            c.wan.dns = vec!["1.1.1.1".parse().expect("an address")]
        }));
    }

    // ---- port forwards --------------------------------------------------

    #[test]
    fn no_port_forwards_to_phones() {
        let diags = with(|c| c.port_forwards[0].to = ip("10.20.0.50"));
        assert_sole_error(&diags, "port_forwards[0].to", "spec F1");
        assert_error(
            &diags,
            "port_forwards[0].to",
            "10.20.0.50 is in the phone network 10.20.0.0/24",
        );
    }

    #[test]
    fn no_port_forwards_to_wifi_calling() {
        let diags = with(|c| c.port_forwards[0].to = ip("10.30.0.50"));
        assert_sole_error(
            &diags,
            "port_forwards[0].to",
            "Wi-Fi-calling network 10.30.0.0/24",
        );
        assert_error(&diags, "port_forwards[0].to", "spec F1");
    }

    #[test]
    fn port_forward_outside_the_lan() {
        let diags = with(|c| c.port_forwards[0].to = ip("172.16.0.5"));
        assert_sole_error(
            &diags,
            "port_forwards[0].to",
            "172.16.0.5 is outside the data LAN 192.168.1.0/24",
        );
    }

    #[test]
    fn port_forward_to_the_router_itself() {
        let diags = with(|c| c.port_forwards[0].to = ip("192.168.1.1"));
        assert_sole_error(&diags, "port_forwards[0].to", "router's own LAN address");
        let diags = with(|c| c.port_forwards[0].to = ip("192.168.1.255"));
        assert_sole_error(&diags, "port_forwards[0].to", "broadcast address");
    }

    #[test]
    fn duplicate_port_forwards() {
        let diags = with(|c| {
            c.port_forwards
                .push(forward(Protocol::Udp, 8443, "192.168.1.11"));
            c.port_forwards
                .push(forward(Protocol::Tcp, 8443, "192.168.1.12"));
        });
        assert_sole_error(
            &diags,
            "port_forwards[2].port",
            "8443/tcp is already forwarded by port_forwards[0]",
        );
    }

    #[test]
    fn port_zero_is_refused() {
        let diags = with(|c| {
            c.port_forwards[0].port = 0;
            c.port_forwards[0].to_port = Some(0);
        });
        assert_error(&diags, "port_forwards[0].port", "0 is not a port");
        assert_error(&diags, "port_forwards[0].to_port", "0 is not a port");
        assert_eq!(errors(&diags).len(), 2, "{}", render(&diags));
    }

    // ---- phone DHCP -----------------------------------------------------

    #[test]
    fn provisioning_url_scheme_and_host() {
        let diags = with(|c| c.phones.provisioning_url = Some("config.ipnordic.dk".into()));
        assert_sole_error(
            &diags,
            "phones.provisioning_url",
            "must start with http://, https://, tftp:// or ftp://",
        );
        let diags = with(|c| c.phones.provisioning_url = Some("gopher://x.dk/".into()));
        assert_sole_error(&diags, "phones.provisioning_url", "must start with");
        let diags = with(|c| c.phones.provisioning_url = Some("http:///cfg".into()));
        assert_sole_error(&diags, "phones.provisioning_url", "no server name");
        let diags = with(|c| c.phones.provisioning_url = Some("http://host/\nx".into()));
        assert_sole_error(&diags, "phones.provisioning_url", "line breaks");
    }

    #[test]
    fn good_provisioning_urls() {
        for url in [
            "http://config.ipnordic.dk/",
            "HTTPS://prov.ipnordic.dk/snom?mac={mac}",
            "tftp://10.20.0.5",
            "ftp://user:pw@ftp.example.com:2121/cfg",
        ] {
            assert_no_errors(&with(|c| c.phones.provisioning_url = Some(url.into())));
        }
    }

    #[test]
    fn url_host_strips_user_port_and_path() {
        assert_eq!(url_host("user:pw@host.dk:8080/a/b"), "host.dk");
        assert_eq!(url_host("host.dk?x"), "host.dk");
        assert_eq!(url_host("[2001:db8::1]:69/x"), "[2001:db8::1]");
        assert_eq!(url_host(":80/x"), "");
        assert_eq!(url_host(""), "");
    }

    #[test]
    fn reserved_dhcp_option_codes() {
        let diags = with(|c| c.phones.dhcp_options = vec![option(0, "1"), option(255, "1")]);
        assert_error(
            &diags,
            "phones.dhcp_options[0].code",
            "option 0 is reserved",
        );
        assert_error(
            &diags,
            "phones.dhcp_options[1].code",
            "option 255 is reserved",
        );
        assert_eq!(errors(&diags).len(), 2, "{}", render(&diags));
    }

    #[test]
    fn dhcp_options_the_router_sets() {
        let codes = [1, 3, 6, 42, 51, 53, 54, 66];
        let diags =
            with(|c| c.phones.dhcp_options = codes.iter().map(|&n| option(n, "x")).collect());
        for (i, code) in codes.iter().enumerate() {
            let path = format!("phones.dhcp_options[{i}].code");
            assert_error(
                &diags,
                &path,
                &format!("the router sets option {code} itself"),
            );
        }
        assert_eq!(errors(&diags).len(), codes.len(), "{}", render(&diags));
    }

    #[test]
    fn option_66_is_free_without_a_provisioning_url() {
        assert_no_errors(&with(|c| {
            c.phones.provisioning_url = None;
            c.phones.dhcp_options = vec![option(66, "\"10.20.0.5\"")];
        }));
    }

    #[test]
    fn duplicate_dhcp_options() {
        let diags = with(|c| {
            c.phones.dhcp_options = vec![option(43, "01:02"), option(120, "x"), option(43, "03")];
        });
        assert_sole_error(
            &diags,
            "phones.dhcp_options[2].code",
            "option 43 is given twice (also phones.dhcp_options[0])",
        );
    }

    #[test]
    fn dhcp_option_values_stay_on_one_line() {
        let diags = with(|c| {
            c.phones.dhcp_options = vec![option(160, "\"http://x/\"\ndhcp-range=0.0.0.0")]
        });
        assert_sole_error(&diags, "phones.dhcp_options[0].value", "line break");
        let diags = with(|c| c.phones.dhcp_options = vec![option(160, "a\rb")]);
        assert_sole_error(&diags, "phones.dhcp_options[0].value", "line break");
    }

    // ---- provider and line ----------------------------------------------

    #[test]
    fn provider_must_match_the_policy() {
        let diags = with(|c| c.provider = "acme".into());
        assert_sole_error(
            &diags,
            "provider",
            "\"acme\" does not match the installed provider policy, which is for \"ipnordic\"",
        );
    }

    #[test]
    fn zero_calls_is_an_error() {
        let diags = with(|c| c.line.calls = Some(0));
        assert_sole_error(&diags, "line.calls", "0 calls");
        assert_no_errors(&with(|c| c.line.calls = Some(1)));
    }

    // ---- the policy -----------------------------------------------------

    #[test]
    fn policy_lists_must_not_be_empty() {
        let diags = with_policy(|p| {
            p.provider_ranges.clear();
            p.phone_ports.clear();
            p.vendor_provisioning.tcp_ports.clear();
            p.wifi_calling.epdg.clear();
        });
        for path in [
            "policy.provider_ranges",
            "policy.phone_ports",
            "policy.vendor_provisioning.tcp_ports",
            "policy.wifi_calling.epdg",
        ] {
            assert_error(&diags, path, "is empty");
        }
        assert_eq!(errors(&diags).len(), 4, "{}", render(&diags));
    }

    #[test]
    fn policy_vendor_port_zero() {
        let diags = with_policy(|p| p.vendor_provisioning.tcp_ports = vec![80, 0]);
        assert_sole_error(
            &diags,
            "policy.vendor_provisioning.tcp_ports[1]",
            "0 is not a port",
        );
    }

    #[test]
    fn policy_domains_must_be_dns_names() {
        let diags = with_policy(|p| {
            p.vendor_provisioning.vendors[1].domains[2] = "prov..gigaset.net".into();
            p.phone_ports[0].domain = Some("-config.ipnordic.dk".into());
            p.wifi_calling.domain = Some("epdg_epc.example".into());
            p.software[1].hosts[0] = "Win9.ipnordic.dk".into();
        });
        assert_error(
            &diags,
            "policy.vendor_provisioning.vendors[1].domains[2]",
            "not a valid domain name",
        );
        assert_error(&diags, "policy.phone_ports[0].domain", "`-config`");
        assert_error(&diags, "policy.wifi_calling.domain", "`epdg_epc`");
        assert_error(&diags, "policy.software[1].hosts[0]", "`Win9`");
        assert_eq!(errors(&diags).len(), 4, "{}", render(&diags));
    }

    #[test]
    fn dns_names() {
        assert_eq!(dns_name_problem("sip.ipnordic.dk"), None);
        assert_eq!(dns_name_problem("a-b.c0"), None);
        assert_eq!(
            dns_name_problem("a.".repeat(126).trim_end_matches('.')),
            None
        );
        assert!(dns_name_problem("").is_some());
        assert!(dns_name_problem("a-.dk").is_some());
        assert!(dns_name_problem("dk.").is_some());
        assert!(dns_name_problem(&"a".repeat(64)).is_some());
        assert!(dns_name_problem(&"a.".repeat(127)).is_some());
        assert!(dns_name_problem("sip ipnordic.dk").is_some());
    }

    // ---- warnings -------------------------------------------------------

    #[test]
    fn ipv6_on_the_phones_is_a_warning() {
        let mut config = example();
        config.wan.ipv6 = true;
        config.phones.ipv6 = true;
        let checked = check(config, factory()).expect("still accepted");
        assert_eq!(checked.warnings.len(), 1, "{}", render(&checked.warnings));
        assert_has(
            &checked.warnings,
            Severity::Warning,
            "phones.ipv6",
            "spec O1",
        );
    }

    #[test]
    fn ipv6_without_an_ipv6_upstream_is_a_warning() {
        let mut config = example();
        config.lan.ipv6 = true;
        config.phones.ipv6 = true;
        let checked = check(config, factory()).expect("still accepted");
        assert_has(
            &checked.warnings,
            Severity::Warning,
            "lan.ipv6",
            "wan.ipv6 is off",
        );
        assert_has(
            &checked.warnings,
            Severity::Warning,
            "phones.ipv6",
            "wan.ipv6 is off",
        );
        assert_has(
            &checked.warnings,
            Severity::Warning,
            "phones.ipv6",
            "spec O1",
        );
        assert_eq!(checked.warnings.len(), 3, "{}", render(&checked.warnings));
    }

    #[test]
    fn ipv6_with_an_ipv6_upstream_is_fine_off_the_phone_network() {
        let mut config = example();
        config.wan.ipv6 = true;
        config.lan.ipv6 = true;
        wifi(&mut config).ipv6 = true;
        config.lan.egress = LanEgress::Restricted;
        let checked = check(config, factory()).expect("accepted");
        assert!(checked.warnings.is_empty(), "{}", render(&checked.warnings));
    }

    // ---- everything at once ---------------------------------------------

    #[test]
    fn five_mistakes_five_errors() {
        let diags = with(|c| {
            c.phones.vlan = Some(4095);
            c.phones.dhcp.start = ip("10.30.0.5");
            c.wan.mode = WanMode::Static;
            c.wan.address = Some(net("203.0.113.10/24"));
            c.wan.gateway = Some(ip("198.51.100.1"));
            c.wan.dns = vec!["203.0.113.53".parse().expect("an address")];
            c.port_forwards[0].to = ip("10.20.0.50");
            c.provider = "acme".into();
        });
        assert_error(
            &diags,
            "phones.vlan",
            "4095 is not a valid VLAN id (1-4094)",
        );
        assert_error(
            &diags,
            "phones.dhcp.start",
            "10.30.0.5 is outside the phone network 10.20.0.0/24",
        );
        assert_error(
            &diags,
            "wan.gateway",
            "198.51.100.1 is outside the WAN subnet 203.0.113.0/24",
        );
        assert_error(&diags, "port_forwards[0].to", "spec F1");
        assert_error(&diags, "provider", "\"acme\"");
        assert_eq!(errors(&diags).len(), 5, "{}", render(&diags));
    }
}

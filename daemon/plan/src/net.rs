//! The router's networks as the plan sees them: one entry per LAN-side network
//! with its role, kernel interface, subnet and the config path it came from.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use router_config::{Checked, Diagnostic, HostFacts};

/// What a LAN-side network is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The office data network (PCs).
    Lan,
    /// The phone network.
    Phones,
    /// The Wi-Fi-calling network.
    WifiCalling,
}

impl Role {
    /// The config section, used in rule comments and diagnostics.
    pub fn path(self) -> &'static str {
        match self {
            Role::Lan => "lan",
            Role::Phones => "phones",
            Role::WifiCalling => "wifi_calling",
        }
    }

    /// A short name for chain names and DHCP tags.
    pub fn short(self) -> &'static str {
        match self {
            Role::Lan => "lan",
            Role::Phones => "phones",
            Role::WifiCalling => "wifi",
        }
    }
}

/// One LAN-side network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// What it is for.
    pub role: Role,
    /// Kernel interface name (`eth1`, `eth1.20`).
    pub ifname: String,
    /// A VLAN on a parent: (parent, id).
    pub vlan: Option<(String, u16)>,
    /// The router's address with the prefix, e.g. `10.20.0.1/24`.
    pub address: Ipv4Net,
    /// IPv6 routed for this network.
    pub ipv6: bool,
    /// DHCP pool (start, end, lease seconds).
    pub dhcp: Option<(Ipv4Addr, Ipv4Addr, u64)>,
}

impl Network {
    /// The network's subnet, e.g. `10.20.0.0/24`.
    pub fn subnet(&self) -> Ipv4Net {
        self.address.trunc()
    }
}

/// The LAN-side networks of a checked config, in a fixed order: lan, phones, wifi_calling.
pub fn networks(checked: &Checked) -> Vec<Network> {
    let c = &checked.config;
    let mut nets = vec![Network {
        role: Role::Lan,
        ifname: c.lan.interface.clone(),
        vlan: None,
        address: c.lan.address,
        ipv6: c.lan.ipv6,
        dhcp: c
            .lan
            .dhcp
            .as_ref()
            .zip(checked.lan_lease)
            .map(|(d, l)| (d.start, d.end, l)),
    }];
    let phones = c.phones.attachment();
    nets.push(Network {
        role: Role::Phones,
        ifname: phones.interface_name().unwrap_or_default(),
        vlan: phones
            .parent
            .zip(phones.vlan)
            .map(|(p, v)| (p.to_string(), v)),
        address: c.phones.address,
        ipv6: c.phones.ipv6,
        dhcp: Some((c.phones.dhcp.start, c.phones.dhcp.end, checked.phones_lease)),
    });
    if let Some(w) = &c.wifi_calling {
        let a = w.attachment();
        nets.push(Network {
            role: Role::WifiCalling,
            ifname: a.interface_name().unwrap_or_default(),
            vlan: a.parent.zip(a.vlan).map(|(p, v)| (p.to_string(), v)),
            address: w.address,
            ipv6: w.ipv6,
            dhcp: checked.wifi_lease.map(|l| (w.dhcp.start, w.dhcp.end, l)),
        });
    }
    nets
}

/// What the host must have for this config: every port it names, and 8021q for VLANs.
pub fn check_host(checked: &Checked, nets: &[Network], facts: &HostFacts) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let has = |name: &str| facts.interfaces.iter().any(|i| i == name);
    let wan = &checked.config.wan.interface;
    if !has(wan) {
        out.push(missing("wan.interface", wan, facts));
    }
    for n in nets {
        let role = n.role.path();
        match &n.vlan {
            Some((parent, _)) => {
                if !has(parent) {
                    out.push(missing(&format!("{role}.parent"), parent, facts));
                }
                if !facts.vlan {
                    out.push(Diagnostic::error(
                        format!("{role}.vlan"),
                        "this router's kernel has no 802.1Q VLAN support (8021q); use a dedicated port (`interface`) instead",
                    ));
                }
            }
            None => {
                if !has(&n.ifname) {
                    out.push(missing(&format!("{role}.interface"), &n.ifname, facts));
                }
            }
        }
    }
    out
}

fn missing(path: &str, name: &str, facts: &HostFacts) -> Diagnostic {
    Diagnostic::error(
        path,
        format!(
            "interface `{name}` does not exist on this router (it has: {})",
            facts.interfaces.join(", ")
        ),
    )
}

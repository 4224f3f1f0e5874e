//! Links, 802.1Q VLANs, addresses and routes the router needs.
//!
//! Connected routes (one per network's subnet) are the kernel's, made when an
//! address is added, and are not listed. The route between the PCs and the
//! phones (spec S4) is exactly that pair of connected routes; the firewall
//! decides what may use it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use router_config::model::WanMode;
use router_config::Checked;
use serde::Serialize;

use crate::net::Network;

/// The link layer and addressing of the router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinksPlan {
    /// VLAN devices to create, sorted by name.
    pub vlans: Vec<Vlan>,
    /// Interfaces to bring up, sorted (ports before the VLANs on them).
    pub up: Vec<String>,
    /// Addresses to own, sorted by (interface, address).
    pub addresses: Vec<Address>,
    /// Routes beyond the connected ones, sorted.
    pub routes: Vec<Route>,
    /// How the WAN is addressed.
    pub wan: Option<WanAddressing>,
}

/// An 802.1Q VLAN device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Vlan {
    /// Device name, `parent.id`.
    pub name: String,
    /// The port it rides on.
    pub parent: String,
    /// The VLAN id.
    pub id: u16,
    /// Config path it implements.
    pub reason: String,
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Address {
    /// Interface.
    pub ifname: String,
    /// Address with prefix length.
    pub address: Ipv4Net,
    /// Config path it implements.
    pub reason: String,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route {
    /// Destination, `0.0.0.0/0` for the default route.
    pub destination: Ipv4Net,
    /// Next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Outgoing interface.
    pub ifname: String,
    /// Config path it implements.
    pub reason: String,
}

/// How the WAN gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum WanAddressing {
    /// A DHCP client (supervised by routerd) owns the address and default route.
    Dhcp {
        /// The WAN interface.
        ifname: String,
    },
    /// Set by hand: the address and default route are in `addresses`/`routes`.
    Static {
        /// The WAN interface.
        ifname: String,
    },
}

/// The config path that names a network's interface: `phones.vlan` for a
/// VLAN, `phones.interface` for a dedicated port.
pub(crate) fn interface_origin(n: &Network) -> String {
    let field = if n.vlan.is_some() {
        "vlan"
    } else {
        "interface"
    };
    format!("{}.{field}", n.role.path())
}

/// The links plan for this config.
pub fn links(checked: &Checked, nets: &[Network]) -> LinksPlan {
    let vlans = vlans(nets);
    LinksPlan {
        up: up(checked, nets, &vlans),
        vlans,
        addresses: addresses(checked, nets),
        routes: routes(checked),
        wan: Some(wan_addressing(checked)),
    }
}

fn vlans(nets: &[Network]) -> Vec<Vlan> {
    let mut out: Vec<Vlan> = nets
        .iter()
        .filter_map(|n| {
            let (parent, id) = n.vlan.as_ref()?;
            Some(Vlan {
                name: format!("{parent}.{id}"),
                parent: parent.clone(),
                id: *id,
                reason: format!("{}.vlan", n.role.path()),
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|b, a| a.name == b.name);
    out
}

/// The WAN first, then the other ports sorted, then the VLAN devices sorted:
/// a VLAN device cannot come up before its parent.
fn up(checked: &Checked, nets: &[Network], vlans: &[Vlan]) -> Vec<String> {
    let wan = checked.config.wan.interface.clone();
    let ports: BTreeSet<String> = nets
        .iter()
        .map(|n| match &n.vlan {
            Some((parent, _)) => parent.clone(),
            None => n.ifname.clone(),
        })
        .filter(|p| *p != wan)
        .collect();
    let mut out = vec![wan];
    out.extend(ports);
    for v in vlans {
        if !out.contains(&v.name) {
            out.push(v.name.clone());
        }
    }
    out
}

fn addresses(checked: &Checked, nets: &[Network]) -> Vec<Address> {
    let mut out: Vec<Address> = nets
        .iter()
        .map(|n| Address {
            ifname: n.ifname.clone(),
            address: n.address,
            reason: format!("{}.address", n.role.path()),
        })
        .collect();
    let wan = &checked.config.wan;
    if let (WanMode::Static, Some(address)) = (wan.mode, wan.address) {
        out.push(Address {
            ifname: wan.interface.clone(),
            address,
            reason: "wan.address".into(),
        });
    }
    out.sort();
    out
}

/// Only the static WAN's default route; in DHCP mode the client installs it.
fn routes(checked: &Checked) -> Vec<Route> {
    let wan = &checked.config.wan;
    match (wan.mode, wan.gateway) {
        (WanMode::Static, Some(gateway)) => vec![Route {
            destination: Ipv4Net::default(),
            gateway: Some(gateway),
            ifname: wan.interface.clone(),
            reason: "wan.gateway".into(),
        }],
        _ => Vec::new(),
    }
}

fn wan_addressing(checked: &Checked) -> WanAddressing {
    let ifname = checked.config.wan.interface.clone();
    match checked.config.wan.mode {
        WanMode::Dhcp => WanAddressing::Dhcp { ifname },
        WanMode::Static => WanAddressing::Static { ifname },
    }
}

impl LinksPlan {
    /// Readable text, one line per object with its reason.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for v in &self.vlans {
            out.push_str(&format!(
                "vlan {} parent {} id {}  # {}\n",
                v.name, v.parent, v.id, v.reason
            ));
        }
        for i in &self.up {
            out.push_str(&format!("up {i}\n"));
        }
        for a in &self.addresses {
            out.push_str(&format!(
                "address {} dev {}  # {}\n",
                a.address, a.ifname, a.reason
            ));
        }
        for r in &self.routes {
            out.push_str(&render_route(r));
        }
        match &self.wan {
            Some(WanAddressing::Dhcp { ifname }) => {
                out.push_str(&format!("wan {ifname}: dhcp client\n"))
            }
            Some(WanAddressing::Static { ifname }) => {
                out.push_str(&format!("wan {ifname}: static\n"))
            }
            None => {}
        }
        out
    }
}

fn render_route(r: &Route) -> String {
    let destination = if r.destination.prefix_len() == 0 {
        "default".to_string()
    } else {
        r.destination.to_string()
    };
    let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    format!(
        "route {destination}{via} dev {}  # {}\n",
        r.ifname, r.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::networks;
    use crate::testutil::{checked, example};
    use router_config::Config;

    fn plan(cfg: Config) -> LinksPlan {
        let checked = checked(cfg);
        links(&checked, &networks(&checked))
    }

    fn static_wan(mut cfg: Config) -> Config {
        cfg.wan.mode = WanMode::Static;
        cfg.wan.address = Some("203.0.113.10/24".parse().expect("net"));
        cfg.wan.gateway = Some(Ipv4Addr::new(203, 0, 113, 1));
        cfg.wan.dns = vec!["203.0.113.53".parse().expect("ip")];
        cfg
    }

    #[test]
    fn example_renders_vlans_ports_addresses_and_dhcp_wan() {
        let expected = "\
vlan eth1.20 parent eth1 id 20  # phones.vlan
vlan eth1.30 parent eth1 id 30  # wifi_calling.vlan
up eth0
up eth1
up eth1.20
up eth1.30
address 192.168.1.1/24 dev eth1  # lan.address
address 10.20.0.1/24 dev eth1.20  # phones.address
address 10.30.0.1/24 dev eth1.30  # wifi_calling.address
wan eth0: dhcp client
";
        assert_eq!(plan(example()).render(), expected);
    }

    #[test]
    fn dhcp_wan_has_no_address_or_route() {
        let p = plan(example());
        assert!(p.routes.is_empty());
        assert!(p.addresses.iter().all(|a| a.ifname != "eth0"));
        assert_eq!(
            p.wan,
            Some(WanAddressing::Dhcp {
                ifname: "eth0".into()
            })
        );
    }

    #[test]
    fn static_wan_gets_address_and_default_route() {
        let p = plan(static_wan(example()));
        let text = p.render();
        assert!(text.contains("address 203.0.113.10/24 dev eth0  # wan.address\n"));
        assert!(text.contains("route default via 203.0.113.1 dev eth0  # wan.gateway\n"));
        assert!(text.ends_with("wan eth0: static\n"));
        assert_eq!(p.routes.len(), 1, "connected routes are the kernel's");
    }

    #[test]
    fn dedicated_phone_port_is_a_port_not_a_vlan() {
        let mut cfg = example();
        cfg.phones.parent = None;
        cfg.phones.vlan = None;
        cfg.phones.interface = Some("eth2".into());
        let p = plan(cfg);
        let names: Vec<&str> = p.vlans.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["eth1.30"]);
        assert_eq!(p.up, ["eth0", "eth1", "eth2", "eth1.30"]);
        assert!(p
            .render()
            .contains("address 10.20.0.1/24 dev eth2  # phones.address\n"));
    }

    #[test]
    fn interface_origin_names_the_config_field() {
        let policy = router_config::parse_policy(router_config::FACTORY_POLICY).expect("policy");
        let checked = router_config::check(example(), policy).expect("config checks");
        let origins: Vec<String> = networks(&checked).iter().map(interface_origin).collect();
        assert_eq!(
            origins,
            ["lan.interface", "phones.vlan", "wifi_calling.vlan"]
        );
    }
}

//! Links, VLANs, IPv4 addresses and routes over rtnetlink: applies a
//! [`LinksPlan`], reads it back, and owns the WAN's DHCP address and default
//! route. Every call reads the kernel's state first and changes only what
//! differs, so a second call with the same inputs changes nothing.
//!
//! What the router owns: the plan's VLAN devices, the `up` state of the
//! plan's links, every IPv4 address on the interfaces the plan addresses
//! (foreign ones there are removed), and the plan's routes. In DHCP mode the
//! WAN's addresses and default route belong to the lease
//! ([`Netlink::set_wan_lease`]); [`Netlink::apply`] never touches them.
//!
//! Two kernel rules shape the order of changes here:
//! - deleting an IPv4 address deletes the routes through it, so routes are
//!   (re)added after every address change;
//! - deleting a primary address deletes the secondaries of its subnet too
//!   (unless `promote_secondaries` is set), so the wanted addresses are read
//!   back after removals and added again if the kernel dropped them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use router_plan::links::{LinksPlan, WanAddressing};
use rtnetlink::{Handle, LinkUnspec, LinkVlan, RouteMessageBuilder};

use crate::lease::WanLease;

/// A failed netlink operation. The message names the operation and the
/// interface, address or route; the kernel's answer is the source.
#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    /// Netlink needs a running tokio runtime to drive its socket.
    #[error("cannot open netlink: not called inside a tokio runtime")]
    NoRuntime,
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket")]
    Open(#[source] std::io::Error),
    /// Reading links, addresses or routes failed.
    #[error("cannot read the kernel's {what}")]
    Read {
        /// What was being read (`links`, `IPv4 addresses`, `IPv4 routes`).
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// An interface the operation needs does not exist.
    #[error("interface {ifname} does not exist")]
    NoSuchLink {
        /// The missing interface.
        ifname: String,
    },
    /// A VLAN's parent port does not exist, so the VLAN cannot be created.
    #[error("cannot create VLAN {vlan}: its parent interface {parent} does not exist")]
    MissingParent {
        /// The VLAN device.
        vlan: String,
        /// The missing port.
        parent: String,
    },
    /// The kernel refused to create a VLAN device (no 802.1Q support, a
    /// name or id clash).
    #[error("cannot create VLAN {vlan} (id {id} on {parent}){hint}")]
    CreateVlan {
        /// The VLAN device.
        vlan: String,
        /// Its parent port.
        parent: String,
        /// The VLAN id.
        id: u16,
        /// What the kernel's answer most likely means, if anything.
        hint: &'static str,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The kernel refused to bring a link up.
    #[error("cannot set link {ifname} up")]
    SetUp {
        /// The interface.
        ifname: String,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The kernel refused to add an address.
    #[error("cannot add address {address} to {ifname}")]
    AddAddress {
        /// The interface.
        ifname: String,
        /// The address.
        address: Ipv4Net,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The kernel refused to remove an address.
    #[error("cannot remove address {address} from {ifname}")]
    RemoveAddress {
        /// The interface.
        ifname: String,
        /// The address.
        address: Ipv4Net,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The kernel refused to add (or replace) a route.
    #[error("cannot add {route}")]
    AddRoute {
        /// The route.
        route: RouteEntry,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The kernel refused to remove a route.
    #[error("cannot remove {route}")]
    RemoveRoute {
        /// The route.
        route: RouteEntry,
        /// The kernel's answer.
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

/// The state of one link as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Kernel interface index.
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The lower layer has carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
}

/// An IPv4 route in the main table, as read or written here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteEntry {
    /// Destination, `0.0.0.0/0` for the default route.
    pub destination: Ipv4Net,
    /// Next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Outgoing interface, if the route names one (and it still exists).
    pub ifname: Option<String>,
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.destination.prefix_len() == 0 {
            write!(f, "route default")?;
        } else {
            write!(f, "route {}", self.destination)?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(ifname) = &self.ifname {
            write!(f, " dev {ifname}")?;
        }
        Ok(())
    }
}

/// One change made to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// A VLAN device was created.
    VlanCreated {
        /// The device.
        name: String,
        /// Its parent port.
        parent: String,
        /// The VLAN id.
        id: u16,
    },
    /// A link was set up.
    LinkUp {
        /// The interface.
        ifname: String,
    },
    /// An address was added.
    AddressAdded {
        /// The interface.
        ifname: String,
        /// The address.
        address: Ipv4Net,
    },
    /// An address the router does not own was removed.
    AddressRemoved {
        /// The interface.
        ifname: String,
        /// The address.
        address: Ipv4Net,
    },
    /// A missing route was added.
    RouteAdded(RouteEntry),
    /// A route to the same destination was replaced.
    RouteReplaced {
        /// The route now in place.
        route: RouteEntry,
        /// The route it replaced.
        old: RouteEntry,
    },
    /// A route was removed.
    RouteRemoved(RouteEntry),
}

impl fmt::Display for LinkChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VlanCreated { name, parent, id } => {
                write!(f, "vlan {name} (id {id} on {parent}) created")
            }
            Self::LinkUp { ifname } => write!(f, "link {ifname} set up"),
            Self::AddressAdded { ifname, address } => {
                write!(f, "address {address} added to {ifname}")
            }
            Self::AddressRemoved { ifname, address } => {
                write!(f, "address {address} removed from {ifname}")
            }
            Self::RouteAdded(route) => write!(f, "{route} added"),
            Self::RouteReplaced { route, old } => write!(f, "{route} replaced {old}"),
            Self::RouteRemoved(route) => write!(f, "{route} removed"),
        }
    }
}

/// An IPv4 address as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelAddress {
    index: u32,
    address: Ipv4Net,
}

/// A main-table IPv4 unicast route as the kernel lists it.
#[derive(Debug, Clone)]
struct KernelRoute {
    destination: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
    message: RouteMessage,
}

/// A route the router wants, resolved to an interface.
#[derive(Debug, Clone)]
struct WantedRoute {
    destination: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    ifname: String,
}

impl WantedRoute {
    fn entry(&self) -> RouteEntry {
        RouteEntry {
            destination: self.destination,
            gateway: self.gateway,
            ifname: Some(self.ifname.clone()),
        }
    }
}

/// The kernel's links by name.
type Links = BTreeMap<String, LinkState>;

/// An rtnetlink connection. [`Netlink::open`] spawns the socket's task on the
/// current tokio runtime; the task ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens an rtnetlink socket in the caller's network namespace. Must be
    /// called inside a tokio runtime (it spawns the socket's task there).
    pub fn open() -> Result<Self, LinksError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LinksError::NoRuntime)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(LinksError::Open)?;
        runtime.spawn(connection);
        Ok(Self { handle })
    }

    /// The rtnetlink handle, for the other netlink users of this crate (tc).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Makes the kernel match `plan`: creates missing VLANs, sets the `up`
    /// links up in order, adds missing addresses, removes foreign IPv4
    /// addresses on the interfaces the plan addresses (never the WAN's in
    /// DHCP mode), and adds missing routes. Returns what changed; empty when
    /// the kernel already matched.
    pub async fn apply(&self, plan: &LinksPlan) -> Result<Vec<LinkChange>, LinksError> {
        let mut changes = Vec::new();
        let mut links = self.links().await?;
        for vlan in &plan.vlans {
            if links.contains_key(&vlan.name) {
                continue;
            }
            let Some(parent) = links.get(&vlan.parent) else {
                return Err(LinksError::MissingParent {
                    vlan: vlan.name.clone(),
                    parent: vlan.parent.clone(),
                });
            };
            let message = LinkVlan::new(&vlan.name, parent.index, vlan.id).build();
            self.handle
                .link()
                .add(message)
                .execute()
                .await
                .map_err(Box::new)
                .map_err(|source| LinksError::CreateVlan {
                    vlan: vlan.name.clone(),
                    parent: vlan.parent.clone(),
                    id: vlan.id,
                    hint: vlan_hint(&source),
                    source,
                })?;
            changes.push(LinkChange::VlanCreated {
                name: vlan.name.clone(),
                parent: vlan.parent.clone(),
                id: vlan.id,
            });
            links = self.links().await?;
        }
        for ifname in &plan.up {
            let link = find(&links, ifname)?;
            if !link.up {
                self.set_up(ifname, link.index).await?;
                changes.push(LinkChange::LinkUp {
                    ifname: ifname.clone(),
                });
            }
        }
        let wanted: Vec<(String, Ipv4Net)> = plan
            .addresses
            .iter()
            .map(|a| (a.ifname.clone(), a.address))
            .collect();
        let dhcp_wan = match &plan.wan {
            Some(WanAddressing::Dhcp { ifname }) => Some(ifname.as_str()),
            _ => None,
        };
        let owned: BTreeSet<&str> = plan
            .addresses
            .iter()
            .map(|a| a.ifname.as_str())
            .filter(|i| Some(*i) != dhcp_wan)
            .collect();
        changes.extend(self.converge_addresses(&links, &wanted, &owned).await?);
        changes.extend(self.ensure_routes(plan, None).await?);
        Ok(changes)
    }

    /// Reads the kernel's state back and returns one line per difference
    /// from `plan`: a missing link or VLAN, a link that is down, a missing
    /// address, an address on an owned interface the plan does not list, a
    /// missing route. Empty when the kernel matches.
    pub async fn verify(&self, plan: &LinksPlan) -> Result<Vec<String>, LinksError> {
        let links = self.links().await?;
        let addresses = self.kernel_addresses().await?;
        let routes = self.kernel_routes().await?;
        let mut out = Vec::new();
        let mut missing = BTreeSet::new();
        for vlan in &plan.vlans {
            if !links.contains_key(&vlan.name) {
                out.push(format!(
                    "vlan {} (id {} on {}) is missing",
                    vlan.name, vlan.id, vlan.parent
                ));
                missing.insert(vlan.name.as_str());
            }
        }
        for ifname in &plan.up {
            match links.get(ifname) {
                None if missing.contains(ifname.as_str()) => {}
                None => {
                    out.push(format!("link {ifname} is missing"));
                    missing.insert(ifname.as_str());
                }
                Some(link) if !link.up => out.push(format!("link {ifname} is down")),
                Some(_) => {}
            }
        }
        let dhcp_wan = match &plan.wan {
            Some(WanAddressing::Dhcp { ifname }) => Some(ifname.as_str()),
            _ => None,
        };
        let mut owned = BTreeSet::new();
        for a in &plan.addresses {
            let Some(link) = links.get(&a.ifname) else {
                if missing.insert(a.ifname.as_str()) {
                    out.push(format!("link {} is missing", a.ifname));
                }
                continue;
            };
            if Some(a.ifname.as_str()) != dhcp_wan {
                owned.insert((a.ifname.as_str(), link.index));
            }
            let present = addresses
                .iter()
                .any(|k| k.index == link.index && k.address == a.address);
            if !present {
                out.push(format!("address {} is missing on {}", a.address, a.ifname));
            }
        }
        for (ifname, index) in owned {
            for k in addresses.iter().filter(|k| k.index == index) {
                let listed = plan
                    .addresses
                    .iter()
                    .any(|a| a.ifname == ifname && a.address == k.address);
                if !listed {
                    out.push(format!(
                        "address {} on {ifname} is not in the plan",
                        k.address
                    ));
                }
            }
        }
        for r in &plan.routes {
            let wanted = WantedRoute {
                destination: r.destination,
                gateway: r.gateway,
                ifname: r.ifname.clone(),
            };
            let present = links
                .get(&r.ifname)
                .is_some_and(|link| routes.iter().any(|k| route_matches(k, &wanted, link.index)));
            if !present {
                out.push(format!("{} is missing", wanted.entry()));
            }
        }
        Ok(out)
    }

    /// The IPv4 addresses on `ifname`, in the kernel's order.
    pub async fn ipv4_addresses(&self, ifname: &str) -> Result<Vec<Ipv4Net>, LinksError> {
        let links = self.links().await?;
        let index = find(&links, ifname)?.index;
        Ok(self
            .kernel_addresses()
            .await?
            .into_iter()
            .filter(|k| k.index == index)
            .map(|k| k.address)
            .collect())
    }

    /// The state of `ifname`, `None` when it does not exist.
    pub async fn link_state(&self, ifname: &str) -> Result<Option<LinkState>, LinksError> {
        Ok(self.links().await?.get(ifname).copied())
    }

    /// The IPv4 unicast routes of the main table, in the kernel's order.
    pub async fn ipv4_routes(&self) -> Result<Vec<RouteEntry>, LinksError> {
        let links = self.links().await?;
        Ok(self
            .kernel_routes()
            .await?
            .iter()
            .map(|k| kernel_entry(k, &links))
            .collect())
    }

    /// Makes the WAN's addressing match a DHCP lease. `Some`: the lease's
    /// address becomes the interface's only IPv4 address (the new one is
    /// added before the old ones are removed) and the default route goes via
    /// the lease's gateway on `ifname` (a lease without a gateway leaves no
    /// default route on `ifname`). `None`: the interface's IPv4 addresses
    /// and its default route are removed. Returns what changed.
    pub async fn set_wan_lease(
        &self,
        ifname: &str,
        lease: Option<&WanLease>,
    ) -> Result<Vec<LinkChange>, LinksError> {
        let links = self.links().await?;
        let index = find(&links, ifname)?.index;
        let mut changes = Vec::new();
        let Some(lease) = lease else {
            // Routes first: removing the addresses would take most of them
            // away anyway, but not an on-link default route.
            changes.extend(self.remove_default_routes(&links, index).await?);
            let owned = BTreeSet::from([ifname]);
            changes.extend(self.converge_addresses(&links, &[], &owned).await?);
            return Ok(changes);
        };
        let wanted = [(ifname.to_string(), lease.address)];
        let owned = BTreeSet::from([ifname]);
        changes.extend(self.converge_addresses(&links, &wanted, &owned).await?);
        match lease.gateway {
            Some(gateway) => {
                let route = WantedRoute {
                    destination: Ipv4Net::default(),
                    gateway: Some(gateway),
                    ifname: ifname.to_string(),
                };
                let links = self.links().await?;
                let routes = self.kernel_routes().await?;
                if let Some(change) = self
                    .ensure_route(&links, &routes, &route, Some(lease.address))
                    .await?
                {
                    changes.push(change);
                }
            }
            None => {
                changes.extend(self.remove_default_routes(&links, index).await?);
            }
        }
        Ok(changes)
    }

    /// Adds the routes the kernel lacks: the plan's routes and, with a DHCP
    /// WAN and a lease with a gateway, the default route via that gateway.
    /// The kernel drops routes through an address when the address goes;
    /// this puts them back. Returns what changed.
    pub async fn ensure_routes(
        &self,
        plan: &LinksPlan,
        wan_lease: Option<&WanLease>,
    ) -> Result<Vec<LinkChange>, LinksError> {
        let mut wanted: Vec<(WantedRoute, Option<Ipv4Net>)> = plan
            .routes
            .iter()
            .map(|r| {
                let source = plan
                    .addresses
                    .iter()
                    .find(|a| a.ifname == r.ifname)
                    .map(|a| a.address);
                let route = WantedRoute {
                    destination: r.destination,
                    gateway: r.gateway,
                    ifname: r.ifname.clone(),
                };
                (route, source)
            })
            .collect();
        if let (Some(WanAddressing::Dhcp { ifname }), Some(lease)) = (&plan.wan, wan_lease) {
            if let Some(gateway) = lease.gateway {
                let route = WantedRoute {
                    destination: Ipv4Net::default(),
                    gateway: Some(gateway),
                    ifname: ifname.clone(),
                };
                wanted.push((route, Some(lease.address)));
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let links = self.links().await?;
        let mut changes = Vec::new();
        for (route, source) in &wanted {
            let routes = self.kernel_routes().await?;
            if let Some(change) = self.ensure_route(&links, &routes, route, *source).await? {
                changes.push(change);
            }
        }
        Ok(changes)
    }

    /// Adds `wanted` addresses that are missing and removes every other IPv4
    /// address on the `owned` interfaces, then adds back any wanted address
    /// the removals took with them (a deleted primary takes its subnet's
    /// secondaries along).
    async fn converge_addresses(
        &self,
        links: &Links,
        wanted: &[(String, Ipv4Net)],
        owned: &BTreeSet<&str>,
    ) -> Result<Vec<LinkChange>, LinksError> {
        let mut changes = Vec::new();
        let current = self.kernel_addresses().await?;
        for (ifname, address) in wanted {
            let index = find(links, ifname)?.index;
            if !current
                .iter()
                .any(|k| k.index == index && k.address == *address)
            {
                self.add_address(ifname, index, *address).await?;
                changes.push(LinkChange::AddressAdded {
                    ifname: ifname.clone(),
                    address: *address,
                });
            }
        }
        let mut removed = false;
        for ifname in owned {
            let index = find(links, ifname)?.index;
            for k in current.iter().filter(|k| k.index == index) {
                if wanted
                    .iter()
                    .any(|(i, a)| i.as_str() == *ifname && *a == k.address)
                {
                    continue;
                }
                self.remove_address(ifname, k).await?;
                removed = true;
                changes.push(LinkChange::AddressRemoved {
                    ifname: ifname.to_string(),
                    address: k.address,
                });
            }
        }
        if removed {
            let after = self.kernel_addresses().await?;
            for (ifname, address) in wanted {
                let index = find(links, ifname)?.index;
                if !after
                    .iter()
                    .any(|k| k.index == index && k.address == *address)
                {
                    self.add_address(ifname, index, *address).await?;
                }
            }
        }
        Ok(changes)
    }

    async fn ensure_route(
        &self,
        links: &Links,
        routes: &[KernelRoute],
        wanted: &WantedRoute,
        source: Option<Ipv4Net>,
    ) -> Result<Option<LinkChange>, LinksError> {
        let index = find(links, &wanted.ifname)?.index;
        if routes.iter().any(|k| route_matches(k, wanted, index)) {
            return Ok(None);
        }
        let old = routes
            .iter()
            .find(|k| k.destination == wanted.destination)
            .map(|k| kernel_entry(k, links));
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(
                wanted.destination.network(),
                wanted.destination.prefix_len(),
            )
            .output_interface(index);
        match wanted.gateway {
            Some(gateway) => {
                builder = builder.gateway(gateway);
                // A gateway outside the interface's subnet (a /32 lease) is
                // reachable only when declared on-link.
                if source.is_some_and(|net| !net.contains(&gateway)) {
                    builder = builder.onlink();
                }
            }
            None => builder = builder.scope(RouteScope::Link),
        }
        let mut request = self.handle.route().add(builder.build());
        if old.is_some() {
            request = request.replace();
        }
        request
            .execute()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::AddRoute {
                route: wanted.entry(),
                source,
            })?;
        Ok(Some(match old {
            Some(old) => LinkChange::RouteReplaced {
                route: wanted.entry(),
                old,
            },
            None => LinkChange::RouteAdded(wanted.entry()),
        }))
    }

    /// Removes the default routes out of interface `index`.
    async fn remove_default_routes(
        &self,
        links: &Links,
        index: u32,
    ) -> Result<Vec<LinkChange>, LinksError> {
        let mut changes = Vec::new();
        for k in self.kernel_routes().await? {
            if k.destination.prefix_len() != 0 || k.oif != Some(index) {
                continue;
            }
            let entry = kernel_entry(&k, links);
            let mut message = RouteMessage::default();
            message.header = k.message.header;
            message.attributes = k
                .message
                .attributes
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        RouteAttribute::Table(_)
                            | RouteAttribute::Destination(_)
                            | RouteAttribute::Gateway(_)
                            | RouteAttribute::Oif(_)
                            | RouteAttribute::Priority(_)
                    )
                })
                .cloned()
                .collect();
            self.handle
                .route()
                .del(message)
                .execute()
                .await
                .map_err(Box::new)
                .map_err(|source| LinksError::RemoveRoute {
                    route: entry.clone(),
                    source,
                })?;
            changes.push(LinkChange::RouteRemoved(entry));
        }
        Ok(changes)
    }

    async fn set_up(&self, ifname: &str, index: u32) -> Result<(), LinksError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::SetUp {
                ifname: ifname.to_string(),
                source,
            })
    }

    async fn add_address(
        &self,
        ifname: &str,
        index: u32,
        address: Ipv4Net,
    ) -> Result<(), LinksError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::AddAddress {
                ifname: ifname.to_string(),
                address,
                source,
            })
    }

    async fn remove_address(&self, ifname: &str, k: &KernelAddress) -> Result<(), LinksError> {
        let message = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(k.index)
            .address(k.address.addr(), k.address.prefix_len())
            .build();
        self.handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::RemoveAddress {
                ifname: ifname.to_string(),
                address: k.address,
                source,
            })
    }

    async fn links(&self) -> Result<Links, LinksError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::Read {
                what: "links",
                source,
            })?;
        Ok(messages
            .iter()
            .filter_map(|m| Some((link_name(m)?, link_state_of(m))))
            .collect())
    }

    async fn kernel_addresses(&self) -> Result<Vec<KernelAddress>, LinksError> {
        let mut request = self.handle.address().get();
        request.message_mut().header.family = AddressFamily::Inet;
        let messages: Vec<AddressMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::Read {
                what: "IPv4 addresses",
                source,
            })?;
        Ok(messages.iter().filter_map(kernel_address).collect())
    }

    async fn kernel_routes(&self) -> Result<Vec<KernelRoute>, LinksError> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(Box::new)
            .map_err(|source| LinksError::Read {
                what: "IPv4 routes",
                source,
            })?;
        Ok(messages.into_iter().filter_map(kernel_route).collect())
    }
}

/// The likely meaning of the kernel refusing a VLAN device.
fn vlan_hint(e: &rtnetlink::Error) -> &'static str {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() == -nix::libc::EOPNOTSUPP => {
            ": this kernel has no 802.1Q VLAN support (module 8021q)"
        }
        _ => "",
    }
}

fn find<'a>(links: &'a Links, ifname: &str) -> Result<&'a LinkState, LinksError> {
    links.get(ifname).ok_or_else(|| LinksError::NoSuchLink {
        ifname: ifname.to_string(),
    })
}

/// The interface name of a link message.
pub(crate) fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The state a link message reports.
pub(crate) fn link_state_of(m: &LinkMessage) -> LinkState {
    LinkState {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
    }
}

/// The interface index and IPv4 address of an address message.
pub(crate) fn address_of(m: &AddressMessage) -> Option<(u32, Ipv4Net)> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let address = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })?;
    let net = Ipv4Net::new(address, m.header.prefix_len).ok()?;
    Some((m.header.index, net))
}

fn kernel_address(m: &AddressMessage) -> Option<KernelAddress> {
    let (index, address) = address_of(m)?;
    Some(KernelAddress { index, address })
}

/// The destination, gateway and outgoing interface index of a main-table
/// IPv4 unicast route message; `None` for any other route.
pub(crate) fn route_of(m: &RouteMessage) -> Option<(Ipv4Net, Option<Ipv4Addr>, Option<u32>)> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut destination = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let destination = Ipv4Net::new(destination, m.header.destination_prefix_length).ok()?;
    Some((destination, gateway, oif))
}

fn kernel_route(m: RouteMessage) -> Option<KernelRoute> {
    let (destination, gateway, oif) = route_of(&m)?;
    Some(KernelRoute {
        destination,
        gateway,
        oif,
        message: m,
    })
}

fn kernel_entry(k: &KernelRoute, links: &Links) -> RouteEntry {
    let ifname = k.oif.and_then(|index| {
        links
            .iter()
            .find(|(_, l)| l.index == index)
            .map(|(name, _)| name.clone())
    });
    RouteEntry {
        destination: k.destination,
        gateway: k.gateway,
        ifname,
    }
}

fn route_matches(k: &KernelRoute, wanted: &WantedRoute, index: u32) -> bool {
    k.destination == wanted.destination && k.gateway == wanted.gateway && k.oif == Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_one_line_each() {
        let net: Ipv4Net = "10.20.0.1/24".parse().expect("net");
        let default = RouteEntry {
            destination: Ipv4Net::default(),
            gateway: Some(Ipv4Addr::new(203, 0, 113, 1)),
            ifname: Some("eth0".into()),
        };
        let old = RouteEntry {
            gateway: Some(Ipv4Addr::new(203, 0, 113, 254)),
            ..default.clone()
        };
        let lines: Vec<String> = [
            LinkChange::VlanCreated {
                name: "eth1.20".into(),
                parent: "eth1".into(),
                id: 20,
            },
            LinkChange::LinkUp {
                ifname: "eth1".into(),
            },
            LinkChange::AddressAdded {
                ifname: "eth2".into(),
                address: net,
            },
            LinkChange::AddressRemoved {
                ifname: "eth2".into(),
                address: net,
            },
            LinkChange::RouteAdded(default.clone()),
            LinkChange::RouteReplaced {
                route: default.clone(),
                old,
            },
            LinkChange::RouteRemoved(RouteEntry {
                destination: "10.9.0.0/16".parse().expect("net"),
                gateway: None,
                ifname: None,
            }),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            lines,
            [
                "vlan eth1.20 (id 20 on eth1) created",
                "link eth1 set up",
                "address 10.20.0.1/24 added to eth2",
                "address 10.20.0.1/24 removed from eth2",
                "route default via 203.0.113.1 dev eth0 added",
                "route default via 203.0.113.1 dev eth0 replaced route default via 203.0.113.254 dev eth0",
                "route 10.9.0.0/16 removed",
            ]
        );
    }

    #[test]
    fn only_main_table_ipv4_unicast_routes_are_read() {
        let mut m = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 9, 0, 0), 16)
            .gateway(Ipv4Addr::new(10, 20, 0, 254))
            .output_interface(7)
            .build();
        assert_eq!(
            route_of(&m),
            Some((
                "10.9.0.0/16".parse().expect("net"),
                Some(Ipv4Addr::new(10, 20, 0, 254)),
                Some(7)
            ))
        );
        m.header.table = 255;
        assert_eq!(route_of(&m), None, "the local table is the kernel's");
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Local;
        assert_eq!(route_of(&m), None);
    }

    #[test]
    fn an_address_message_gives_the_local_address_with_its_prefix() {
        let m = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(3)
            .address(Ipv4Addr::new(10, 20, 0, 1), 24)
            .build();
        assert_eq!(
            address_of(&m),
            Some((3, "10.20.0.1/24".parse().expect("net")))
        );
    }
}

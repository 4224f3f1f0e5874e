//! Network events from the kernel: link state, IPv4 addresses and removed
//! IPv4 routes, read from the rtnetlink multicast groups of the caller's
//! network namespace.
//!
//! [`subscribe`] joins the groups, reads the current links (so that interface
//! names and the state events compare against are known from the start) and
//! then spawns a task on the current tokio runtime that turns kernel messages
//! into [`NetEvent`]s on a channel. The task ends when the receiver is
//! dropped. Anything that happens after `subscribe` returns is delivered.
//!
//! The kernel does not report every route it removes: deleting an address
//! reports the address and its connected route, but not the routes through
//! it that the kernel flushes along (a DHCP WAN's default route). Whoever
//! owns such routes re-checks them on [`NetEvent::AddressRemoved`] and on a
//! link going down ([`crate::links::Netlink::ensure_routes`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;

use crate::links::{address_of, link_name, link_state_of, route_of, LinkState};

/// How many events may wait for the receiver before the reader waits too.
const QUEUE: usize = 256;

/// One change in the kernel's networking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A link appeared, or its administrative state or carrier changed.
    /// Messages that change neither are not reported.
    LinkChanged {
        /// The interface.
        ifname: String,
        /// Administratively up.
        up: bool,
        /// Has carrier.
        carrier: bool,
    },
    /// A link was deleted.
    LinkRemoved {
        /// The interface.
        ifname: String,
    },
    /// An IPv4 address was added.
    AddressAdded {
        /// The interface.
        ifname: String,
        /// The address with its prefix length.
        address: Ipv4Net,
    },
    /// An IPv4 address was removed.
    AddressRemoved {
        /// The interface.
        ifname: String,
        /// The address with its prefix length.
        address: Ipv4Net,
    },
    /// An IPv4 unicast route of the main table was removed (see the module
    /// documentation for the removals the kernel does not report).
    RouteRemoved {
        /// Destination, `0.0.0.0/0` for the default route.
        destination: Ipv4Net,
        /// Next hop, if any.
        gateway: Option<Ipv4Addr>,
        /// Outgoing interface, when the route named one the reader knows.
        ifname: Option<String>,
    },
}

/// Subscribing to network events failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Events need a running tokio runtime to drive the socket.
    #[error("cannot subscribe to network events: not called inside a tokio runtime")]
    NoRuntime,
    /// The multicast socket could not be opened or bound.
    #[error("cannot open an rtnetlink socket for link, address and route events")]
    Open(#[source] std::io::Error),
    /// The initial list of links could not be read.
    #[error("cannot read the kernel's links")]
    ReadLinks(#[source] rtnetlink::Error),
}

/// Subscribes to link, IPv4 address and IPv4 route events of the caller's
/// network namespace. Must be awaited inside a tokio runtime: it spawns the
/// socket's task and the reader task there. Returns once the current links
/// are known; every later change arrives on the receiver.
pub async fn subscribe() -> Result<mpsc::Receiver<NetEvent>, EventsError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| EventsError::NoRuntime)?;
    let (connection, handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv4Route,
    ])
    .map_err(EventsError::Open)?;
    runtime.spawn(connection);
    let current: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(EventsError::ReadLinks)?;
    let mut reader = Reader::default();
    for m in &current {
        reader.learn(m);
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    runtime.spawn(async move {
        // The handle keeps the socket's task alive as long as this one runs.
        let _handle = handle;
        while let Some((message, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(message) = message.payload else {
                continue;
            };
            let Some(event) = reader.event(message) else {
                continue;
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Turns kernel messages into events. Keeps the name and last state of every
/// link index it has seen; names stay known after a link is deleted, so the
/// routes removed with it still name it (the kernel does not reuse indexes
/// until they wrap).
#[derive(Debug, Default)]
struct Reader {
    links: HashMap<u32, (String, Option<LinkState>)>,
}

impl Reader {
    /// Records a link; returns its state when it differs from the last one.
    fn learn(&mut self, m: &LinkMessage) -> Option<(String, LinkState)> {
        let state = link_state_of(m);
        let name = link_name(m).or_else(|| self.links.get(&state.index).map(|(n, _)| n.clone()))?;
        let last = self
            .links
            .insert(state.index, (name.clone(), Some(state)))
            .and_then(|(_, s)| s);
        let changed = match last {
            Some(l) => (l.up, l.carrier) != (state.up, state.carrier),
            None => true,
        };
        changed.then_some((name, state))
    }

    fn name(&self, index: u32) -> Option<String> {
        self.links.get(&index).map(|(n, _)| n.clone())
    }

    fn address_event(&self, m: &AddressMessage) -> Option<(String, Ipv4Net)> {
        let (index, address) = address_of(m)?;
        let ifname = self.name(index).or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Label(l) => Some(l.clone()),
                _ => None,
            })
        })?;
        Some((ifname, address))
    }

    fn event(&mut self, message: RouteNetlinkMessage) -> Option<NetEvent> {
        match message {
            RouteNetlinkMessage::NewLink(m) => {
                let (ifname, state) = self.learn(&m)?;
                Some(NetEvent::LinkChanged {
                    ifname,
                    up: state.up,
                    carrier: state.carrier,
                })
            }
            RouteNetlinkMessage::DelLink(m) => {
                let index = m.header.index;
                let ifname = link_name(&m).or_else(|| self.name(index))?;
                // Keep the name for the routes removed with it; forget the
                // state so a new link with this index is reported.
                self.links.insert(index, (ifname.clone(), None));
                Some(NetEvent::LinkRemoved { ifname })
            }
            RouteNetlinkMessage::NewAddress(m) => {
                let (ifname, address) = self.address_event(&m)?;
                Some(NetEvent::AddressAdded { ifname, address })
            }
            RouteNetlinkMessage::DelAddress(m) => {
                let (ifname, address) = self.address_event(&m)?;
                Some(NetEvent::AddressRemoved { ifname, address })
            }
            RouteNetlinkMessage::DelRoute(m) => {
                let (destination, gateway, oif) = route_of(&m)?;
                Some(NetEvent::RouteRemoved {
                    destination,
                    gateway,
                    ifname: oif.and_then(|i| self.name(i)),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkFlags};
    use rtnetlink::{AddressMessageBuilder, RouteMessageBuilder};

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m
    }

    #[test]
    fn link_messages_are_reported_only_when_up_or_carrier_change() {
        let mut r = Reader::default();
        r.learn(&link(3, "eth1", LinkFlags::Up | LinkFlags::LowerUp));
        let same = link(3, "eth1", LinkFlags::Up | LinkFlags::LowerUp);
        assert_eq!(r.event(RouteNetlinkMessage::NewLink(same)), None);
        let down = link(3, "eth1", LinkFlags::LowerUp);
        assert_eq!(
            r.event(RouteNetlinkMessage::NewLink(down)),
            Some(NetEvent::LinkChanged {
                ifname: "eth1".into(),
                up: false,
                carrier: true
            })
        );
    }

    #[test]
    fn removed_routes_and_addresses_name_their_interface() {
        let mut r = Reader::default();
        r.learn(&link(4, "eth0", LinkFlags::Up));
        let address = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(4)
            .address(Ipv4Addr::new(203, 0, 113, 10), 24)
            .build();
        assert_eq!(
            r.event(RouteNetlinkMessage::DelAddress(address)),
            Some(NetEvent::AddressRemoved {
                ifname: "eth0".into(),
                address: "203.0.113.10/24".parse().expect("net"),
            })
        );
        assert_eq!(
            r.event(RouteNetlinkMessage::DelLink(link(
                4,
                "eth0",
                LinkFlags::empty()
            ))),
            Some(NetEvent::LinkRemoved {
                ifname: "eth0".into()
            })
        );
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(Ipv4Addr::new(203, 0, 113, 1))
            .output_interface(4)
            .build();
        assert_eq!(
            r.event(RouteNetlinkMessage::DelRoute(route)),
            Some(NetEvent::RouteRemoved {
                destination: Ipv4Net::default(),
                gateway: Some(Ipv4Addr::new(203, 0, 113, 1)),
                ifname: Some("eth0".into()),
            })
        );
    }
}

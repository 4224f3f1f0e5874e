//! `Netlink` (links, addresses, routes, the WAN lease) and `events` against
//! the real kernel, without touching the host: each test re-executes this
//! binary in a fresh user + network namespace (`unshare -rn`) and builds its
//! ports there as veth pairs named like the router's (`eth0` WAN, `eth1` LAN,
//! `eth2` phones), created over netlink. Addresses come from the
//! documentation ranges and no traffic is sent.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use router_plan::links::{Address, LinksPlan, Route, Vlan, WanAddressing};
use router_sys::events::{subscribe, NetEvent};
use router_sys::lease::WanLease;
use router_sys::links::{LinkChange, LinksError, Netlink, RouteEntry};
use router_sys::netns::in_netns;
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::sync::mpsc::Receiver;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A second, independent rtnetlink connection: what the test changes behind
/// the router's back goes through here.
fn raw() -> Handle {
    let (connection, handle, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(connection);
    handle
}

async fn index(h: &Handle, ifname: &str) -> u32 {
    let link = h
        .link()
        .get()
        .match_name(ifname)
        .execute()
        .try_next()
        .await
        .unwrap()
        .unwrap();
    link.header.index
}

/// The router's ports `eth0`..`eth2` as veths whose peers are up, so each
/// port gets carrier when it is set up.
async fn ports(h: &Handle) {
    for (port, peer) in [("eth0", "isp0"), ("eth1", "sw1"), ("eth2", "ph2")] {
        h.link()
            .add(LinkVeth::new(port, peer).build())
            .execute()
            .await
            .unwrap();
        h.link()
            .set(LinkUnspec::new_with_name(peer).up().build())
            .execute()
            .await
            .unwrap();
    }
}

async fn add_address(h: &Handle, ifname: &str, address: &str) {
    let a = net(address);
    h.address()
        .add(index(h, ifname).await, IpAddr::V4(a.addr()), a.prefix_len())
        .execute()
        .await
        .unwrap();
}

async fn del_address(h: &Handle, ifname: &str, address: &str) {
    let a = net(address);
    let message = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index(h, ifname).await)
        .address(a.addr(), a.prefix_len())
        .build();
    h.address().del(message).execute().await.unwrap();
}

async fn set_down(h: &Handle, ifname: &str) {
    h.link()
        .set(LinkUnspec::new_with_name(ifname).down().build())
        .execute()
        .await
        .unwrap();
}

fn address(ifname: &str, address: &str) -> Address {
    Address {
        ifname: ifname.into(),
        address: net(address),
        reason: "netns test".into(),
    }
}

/// The example's shape without VLANs: a DHCP WAN on eth0, the LAN on eth1
/// and the phones on their own port eth2.
fn dhcp_plan() -> LinksPlan {
    LinksPlan {
        vlans: Vec::new(),
        up: vec!["eth0".into(), "eth1".into(), "eth2".into()],
        addresses: vec![
            address("eth1", "192.168.1.1/24"),
            address("eth2", "10.20.0.1/24"),
        ],
        routes: Vec::new(),
        wan: Some(WanAddressing::Dhcp {
            ifname: "eth0".into(),
        }),
    }
}

fn default_via(gateway: [u8; 4], ifname: &str) -> RouteEntry {
    RouteEntry {
        destination: Ipv4Net::default(),
        gateway: Some(Ipv4Addr::from(gateway)),
        ifname: Some(ifname.into()),
    }
}

async fn default_routes(nl: &Netlink) -> Vec<RouteEntry> {
    nl.ipv4_routes()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.destination.prefix_len() == 0)
        .collect()
}

fn lines(changes: &[LinkChange]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

#[test]
fn apply_brings_ports_up_owns_lan_addresses_and_is_idempotent() {
    in_netns(
        "apply_brings_ports_up_owns_lan_addresses_and_is_idempotent",
        || {
            block_on(async {
                let h = raw();
                ports(&h).await;
                // Left over from before: a primary address in the phones'
                // subnet (deleting it would take the router's secondary
                // along), and an address on the WAN, which DHCP owns.
                add_address(&h, "eth2", "10.20.0.99/24").await;
                add_address(&h, "eth0", "198.51.100.20/24").await;
                let nl = Netlink::open().unwrap();
                let plan = dhcp_plan();

                let changes = nl.apply(&plan).await.unwrap();
                assert_eq!(
                    lines(&changes),
                    [
                        "link eth0 set up",
                        "link eth1 set up",
                        "link eth2 set up",
                        "address 192.168.1.1/24 added to eth1",
                        "address 10.20.0.1/24 added to eth2",
                        "address 10.20.0.99/24 removed from eth2",
                    ]
                );
                assert_eq!(
                    nl.ipv4_addresses("eth1").await.unwrap(),
                    [net("192.168.1.1/24")]
                );
                assert_eq!(
                    nl.ipv4_addresses("eth2").await.unwrap(),
                    [net("10.20.0.1/24")],
                    "the router's address survives removing the old primary"
                );
                assert_eq!(
                    nl.ipv4_addresses("eth0").await.unwrap(),
                    [net("198.51.100.20/24")],
                    "a DHCP WAN's addresses are the lease's, not apply's"
                );
                for port in ["eth0", "eth1", "eth2"] {
                    let state = nl.link_state(port).await.unwrap().unwrap();
                    assert!(state.up && state.carrier, "{port}: {state:?}");
                }
                assert_eq!(nl.link_state("eth9").await.unwrap(), None);
                assert_eq!(nl.verify(&plan).await.unwrap(), Vec::<String>::new());
                assert_eq!(nl.apply(&plan).await.unwrap(), []);

                // A foreign address on a LAN interface goes; the WAN's stays.
                add_address(&h, "eth1", "192.168.1.77/24").await;
                assert_eq!(
                    nl.verify(&plan).await.unwrap(),
                    ["address 192.168.1.77/24 on eth1 is not in the plan"]
                );
                assert_eq!(
                    lines(&nl.apply(&plan).await.unwrap()),
                    ["address 192.168.1.77/24 removed from eth1"]
                );

                // verify sees what someone else undid; apply puts it back.
                del_address(&h, "eth1", "192.168.1.1/24").await;
                set_down(&h, "eth2").await;
                assert_eq!(
                    nl.verify(&plan).await.unwrap(),
                    [
                        "link eth2 is down",
                        "address 192.168.1.1/24 is missing on eth1",
                    ]
                );
                assert_eq!(
                    lines(&nl.apply(&plan).await.unwrap()),
                    ["link eth2 set up", "address 192.168.1.1/24 added to eth1"]
                );
                assert_eq!(nl.verify(&plan).await.unwrap(), Vec::<String>::new());

                // A port that does not exist is named.
                let mut missing = plan.clone();
                missing.up.push("eth7".into());
                let err = nl.apply(&missing).await.unwrap_err();
                assert!(matches!(err, LinksError::NoSuchLink { .. }), "{err}");
                assert_eq!(err.to_string(), "interface eth7 does not exist");
                assert_eq!(nl.verify(&missing).await.unwrap(), ["link eth7 is missing"]);
            });
        },
    );
}

#[test]
fn static_wan_owns_its_address_and_default_route() {
    in_netns("static_wan_owns_its_address_and_default_route", || {
        block_on(async {
            let h = raw();
            ports(&h).await;
            add_address(&h, "eth0", "198.51.100.20/24").await;
            let nl = Netlink::open().unwrap();
            let mut plan = dhcp_plan();
            plan.addresses.push(address("eth0", "203.0.113.10/24"));
            plan.routes.push(Route {
                destination: Ipv4Net::default(),
                gateway: Some(Ipv4Addr::new(203, 0, 113, 1)),
                ifname: "eth0".into(),
                reason: "netns test".into(),
            });
            plan.wan = Some(WanAddressing::Static {
                ifname: "eth0".into(),
            });

            let changes = lines(&nl.apply(&plan).await.unwrap());
            assert!(
                changes.contains(&"address 198.51.100.20/24 removed from eth0".to_string()),
                "{changes:?}"
            );
            assert_eq!(
                changes.last().unwrap(),
                "route default via 203.0.113.1 dev eth0 added"
            );
            assert_eq!(
                nl.ipv4_addresses("eth0").await.unwrap(),
                [net("203.0.113.10/24")]
            );
            assert_eq!(
                default_routes(&nl).await,
                [default_via([203, 0, 113, 1], "eth0")]
            );
            assert_eq!(nl.apply(&plan).await.unwrap(), []);

            // Deleting the address takes the default route with it.
            del_address(&h, "eth0", "203.0.113.10/24").await;
            assert_eq!(
                nl.verify(&plan).await.unwrap(),
                [
                    "address 203.0.113.10/24 is missing on eth0",
                    "route default via 203.0.113.1 dev eth0 is missing",
                ]
            );
            assert_eq!(
                lines(&nl.apply(&plan).await.unwrap()),
                [
                    "address 203.0.113.10/24 added to eth0",
                    "route default via 203.0.113.1 dev eth0 added",
                ]
            );
            assert_eq!(nl.verify(&plan).await.unwrap(), Vec::<String>::new());
        });
    });
}

fn lease(address: &str, gateway: [u8; 4]) -> WanLease {
    WanLease {
        address: net(address),
        gateway: Some(Ipv4Addr::from(gateway)),
        dns: vec![Ipv4Addr::new(198, 51, 100, 53)],
        lease_secs: Some(3600),
        server: Some(Ipv4Addr::from(gateway)),
    }
}

#[test]
fn a_wan_lease_replaces_the_address_and_default_route() {
    in_netns("a_wan_lease_replaces_the_address_and_default_route", || {
        block_on(async {
            let h = raw();
            ports(&h).await;
            let nl = Netlink::open().unwrap();
            let plan = dhcp_plan();
            nl.apply(&plan).await.unwrap();

            let first = lease("198.51.100.20/24", [198, 51, 100, 1]);
            assert_eq!(
                lines(&nl.set_wan_lease("eth0", Some(&first)).await.unwrap()),
                [
                    "address 198.51.100.20/24 added to eth0",
                    "route default via 198.51.100.1 dev eth0 added",
                ]
            );
            assert_eq!(nl.set_wan_lease("eth0", Some(&first)).await.unwrap(), []);

            // A renewal in the same subnet: the new address is added as a
            // secondary, the old primary's removal takes it along, and it
            // must still end up as the only address, with the route back.
            // (With promote_secondaries set, the kernel keeps both the new
            // address and the route, and only the route line is absent.)
            let renewed = lease("198.51.100.30/24", [198, 51, 100, 1]);
            let changes = lines(&nl.set_wan_lease("eth0", Some(&renewed)).await.unwrap());
            assert_eq!(
                changes[..2],
                [
                    "address 198.51.100.30/24 added to eth0",
                    "address 198.51.100.20/24 removed from eth0",
                ]
            );
            assert!(
                changes[2..] == [] as [&str; 0]
                    || changes[2..] == ["route default via 198.51.100.1 dev eth0 added"],
                "{changes:?}"
            );
            assert_eq!(
                nl.ipv4_addresses("eth0").await.unwrap(),
                [net("198.51.100.30/24")]
            );
            assert_eq!(
                default_routes(&nl).await,
                [default_via([198, 51, 100, 1], "eth0")]
            );

            // A lease in another subnet.
            let moved = lease("203.0.113.50/24", [203, 0, 113, 1]);
            nl.set_wan_lease("eth0", Some(&moved)).await.unwrap();
            assert_eq!(
                nl.ipv4_addresses("eth0").await.unwrap(),
                [net("203.0.113.50/24")]
            );
            assert_eq!(
                default_routes(&nl).await,
                [default_via([203, 0, 113, 1], "eth0")]
            );
            // The LAN side is untouched by the WAN's lease.
            assert_eq!(nl.verify(&plan).await.unwrap(), Vec::<String>::new());

            // A route the kernel lost is put back by ensure_routes.
            let mut gone = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                .gateway(Ipv4Addr::new(203, 0, 113, 1))
                .build();
            gone.header.protocol = Default::default();
            h.route().del(gone).execute().await.unwrap();
            assert_eq!(default_routes(&nl).await, []);
            assert_eq!(
                lines(&nl.ensure_routes(&plan, Some(&moved)).await.unwrap()),
                ["route default via 203.0.113.1 dev eth0 added"]
            );
            assert_eq!(nl.ensure_routes(&plan, Some(&moved)).await.unwrap(), []);

            // A /32 lease with its gateway outside: the route is on-link.
            let point = lease("100.64.0.7/32", [100, 64, 0, 1]);
            nl.set_wan_lease("eth0", Some(&point)).await.unwrap();
            assert_eq!(
                default_routes(&nl).await,
                [default_via([100, 64, 0, 1], "eth0")]
            );

            // Losing the lease removes the address and the default route.
            let changes = lines(&nl.set_wan_lease("eth0", None).await.unwrap());
            assert_eq!(
                changes,
                [
                    "route default via 100.64.0.1 dev eth0 removed",
                    "address 100.64.0.7/32 removed from eth0",
                ]
            );
            assert_eq!(nl.ipv4_addresses("eth0").await.unwrap(), []);
            assert_eq!(default_routes(&nl).await, []);
            assert_eq!(nl.set_wan_lease("eth0", None).await.unwrap(), []);

            let err = nl.set_wan_lease("eth5", Some(&first)).await.unwrap_err();
            assert_eq!(err.to_string(), "interface eth5 does not exist");
        });
    });
}

#[test]
fn vlans_are_created_or_refused_by_name() {
    in_netns("vlans_are_created_or_refused_by_name", || {
        block_on(async {
            let h = raw();
            ports(&h).await;
            let nl = Netlink::open().unwrap();
            let mut plan = dhcp_plan();
            plan.vlans.push(Vlan {
                name: "eth1.20".into(),
                parent: "eth1".into(),
                id: 20,
                reason: "netns test".into(),
            });
            plan.up.push("eth1.20".into());
            plan.addresses = vec![
                address("eth1", "192.168.1.1/24"),
                address("eth1.20", "10.20.0.1/24"),
            ];
            match nl.apply(&plan).await {
                Ok(changes) => {
                    // The kernel has 802.1Q: the VLAN exists, is up and
                    // addressed.
                    assert_eq!(lines(&changes)[0], "vlan eth1.20 (id 20 on eth1) created");
                    let state = nl.link_state("eth1.20").await.unwrap().unwrap();
                    assert!(state.up);
                    assert_eq!(
                        nl.ipv4_addresses("eth1.20").await.unwrap(),
                        [net("10.20.0.1/24")]
                    );
                    assert_eq!(nl.apply(&plan).await.unwrap(), []);
                    println!("this kernel creates VLAN devices");
                }
                Err(err) => {
                    let LinksError::CreateVlan {
                        vlan, parent, id, ..
                    } = &err
                    else {
                        panic!("expected the kernel to refuse the VLAN, got {err}");
                    };
                    assert_eq!(
                        (vlan.as_str(), parent.as_str(), *id),
                        ("eth1.20", "eth1", 20)
                    );
                    let text = err.to_string();
                    assert!(text.contains("VLAN eth1.20 (id 20 on eth1)"), "{text}");
                    assert_eq!(nl.link_state("eth1.20").await.unwrap(), None);
                    let verify = nl.verify(&plan).await.unwrap();
                    assert_eq!(verify[0], "vlan eth1.20 (id 20 on eth1) is missing");
                    println!(
                        "this kernel has no 802.1Q: {text}: {}",
                        std::error::Error::source(&err).unwrap()
                    );
                }
            }

            // A VLAN on a port that does not exist names both.
            let mut orphan = dhcp_plan();
            orphan.vlans.push(Vlan {
                name: "eth9.30".into(),
                parent: "eth9".into(),
                id: 30,
                reason: "netns test".into(),
            });
            let err = nl.apply(&orphan).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                "cannot create VLAN eth9.30: its parent interface eth9 does not exist"
            );
        });
    });
}

/// The next event `want` accepts, skipping others; fails after 5 s.
async fn expect(rx: &mut Receiver<NetEvent>, what: &str, want: impl Fn(&NetEvent) -> bool) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = rx.recv().await {
            if want(&event) {
                return true;
            }
            seen.push(event);
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no event for {what}; saw {seen:?}");
}

#[test]
fn events_report_addresses_routes_and_link_state() {
    in_netns("events_report_addresses_routes_and_link_state", || {
        block_on(async {
            let h = raw();
            ports(&h).await;
            let nl = Netlink::open().unwrap();
            nl.apply(&LinksPlan {
                addresses: Vec::new(),
                ..dhcp_plan()
            })
            .await
            .unwrap();
            let mut rx = subscribe().await.unwrap();

            add_address(&h, "eth2", "10.20.0.1/24").await;
            expect(&mut rx, "the added address", |e| {
                *e == NetEvent::AddressAdded {
                    ifname: "eth2".into(),
                    address: net("10.20.0.1/24"),
                }
            })
            .await;

            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::new(10, 99, 0, 0), 16)
                .gateway(Ipv4Addr::new(10, 20, 0, 254))
                .build();
            h.route().add(route.clone()).execute().await.unwrap();
            h.route().del(route).execute().await.unwrap();
            expect(&mut rx, "the removed route", |e| {
                *e == NetEvent::RouteRemoved {
                    destination: net("10.99.0.0/16"),
                    gateway: Some(Ipv4Addr::new(10, 20, 0, 254)),
                    ifname: Some("eth2".into()),
                }
            })
            .await;

            del_address(&h, "eth2", "10.20.0.1/24").await;
            expect(&mut rx, "the removed address", |e| {
                *e == NetEvent::AddressRemoved {
                    ifname: "eth2".into(),
                    address: net("10.20.0.1/24"),
                }
            })
            .await;
            // The address's connected route is reported with it (the routes
            // through it that the kernel flushes along are not).
            expect(
                &mut rx,
                "the connected route removed with the address",
                |e| {
                    *e == NetEvent::RouteRemoved {
                        destination: net("10.20.0.0/24"),
                        gateway: None,
                        ifname: Some("eth2".into()),
                    }
                },
            )
            .await;

            set_down(&h, "eth1").await;
            expect(&mut rx, "eth1 going down", |e| {
                matches!(e, NetEvent::LinkChanged { ifname, up: false, .. } if ifname == "eth1")
            })
            .await;
            // The peer going down takes eth2's carrier away.
            set_down(&h, "ph2").await;
            expect(&mut rx, "eth2 losing carrier", |e| {
                *e == NetEvent::LinkChanged {
                    ifname: "eth2".into(),
                    up: true,
                    carrier: false,
                }
            })
            .await;
        });
    });
}

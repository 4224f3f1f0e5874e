//! `conntrack` against the real kernel's connection tracking: a router
//! namespace between a phone, a PC and an ISP namespace (`ip netns add`,
//! veth pairs, an nft masquerade rule on the router's WAN), real UDP flows
//! sent from inside the namespaces, then `list` and `flush_stale` run inside
//! the router namespace and are checked against the `conntrack` tool as an
//! independent reader. Traffic goes only to addresses of these namespaces;
//! a guard deletes them, also when the test fails. Needs root (as every
//! machine of this project is).
#![allow(clippy::unwrap_used)]

mod common;

use common::{inside, run, Namespaces};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use router_sys::conntrack::{self, Flow};

const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ISP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const PHONE: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
const PC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

/// A veth from `router` (as `router_if`, with `router_addr`) to `host` (as
/// `eth0`, with `host_addr` and a default route via the router).
fn link(router: &str, router_if: &str, router_addr: &str, host: &str, host_addr: &str) {
    run(&[
        "ip", "link", "add", router_if, "netns", router, "type", "veth", "peer", "name", "eth0",
        "netns", host,
    ]);
    run(&[
        "ip",
        "-n",
        router,
        "addr",
        "add",
        router_addr,
        "dev",
        router_if,
    ]);
    run(&["ip", "-n", router, "link", "set", router_if, "up"]);
    run(&["ip", "-n", host, "addr", "add", host_addr, "dev", "eth0"]);
    run(&["ip", "-n", host, "link", "set", "eth0", "up"]);
    let gateway = router_addr.split('/').next().unwrap();
    run(&["ip", "-n", host, "route", "add", "default", "via", gateway]);
}

/// Sends a few datagrams from `from` to `to` inside namespace `ns`.
fn send(ns: &str, from: SocketAddr, to: SocketAddr) {
    inside(ns, || {
        let socket = UdpSocket::bind(from).unwrap();
        for _ in 0..3 {
            socket.send_to(b"REGISTER", to).unwrap();
        }
    });
}

/// `conntrack -L` in the router namespace: one line per UDP flow.
fn conntrack_tool(router: &str) -> Vec<String> {
    run(&[
        "ip",
        "netns",
        "exec",
        router,
        "conntrack",
        "-L",
        "-p",
        "udp",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn find(flows: &[Flow], src: Ipv4Addr, sport: u16) -> Option<&Flow> {
    flows
        .iter()
        .find(|f| f.proto == 17 && f.orig_src == src && f.orig_sport == sport)
}

#[test]
fn flush_stale_deletes_phone_flows_and_nat_to_a_lost_wan_address() {
    let mut ns = Namespaces::new("rd-ct");
    let router = ns.add("router");
    let phone = ns.add("phone");
    let pc = ns.add("pc");
    let isp = ns.add("isp");
    link(&router, "ph0", "10.20.0.1/24", &phone, "10.20.0.2/24");
    link(&router, "lan0", "192.168.1.1/24", &pc, "192.168.1.2/24");
    link(&router, "wan0", "203.0.113.1/24", &isp, "203.0.113.2/24");
    run(&[
        "ip",
        "netns",
        "exec",
        &router,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &router, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(
            b"table ip conntrack_test {\n\
              \tchain postrouting {\n\
              \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
              \t\toifname \"wan0\" masquerade\n\
              \t}\n\
              }\n",
        )
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft refused the NAT table");

    // Listeners, so that no port-unreachable errors come back.
    let _sip = inside(&isp, || UdpSocket::bind((ISP, 5060)).unwrap());
    let _router_service = inside(&router, || UdpSocket::bind((ROUTER_LAN, 7000)).unwrap());

    let provider = SocketAddr::from((ISP, 5060));
    send(&phone, (PHONE, 5060).into(), provider);
    send(&pc, (PC, 40000).into(), provider);
    send(&pc, (PC, 40001).into(), (ROUTER_LAN, 7000).into());

    // The three flows, as the router's conntrack lists them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let flows = loop {
        let flows = inside(&router, conntrack::list).unwrap();
        let complete = [(PHONE, 5060), (PC, 40000), (PC, 40001)]
            .iter()
            .all(|(src, sport)| find(&flows, *src, *sport).is_some());
        if complete {
            break flows;
        }
        assert!(Instant::now() < deadline, "flows missing: {flows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let phone_flow = find(&flows, PHONE, 5060).unwrap().clone();
    let pc_flow = find(&flows, PC, 40000).unwrap().clone();
    let local_flow = find(&flows, PC, 40001).unwrap().clone();
    assert_eq!(
        (phone_flow.orig_dst, phone_flow.orig_dport),
        (ISP, 5060),
        "{phone_flow}"
    );
    assert_eq!(phone_flow.reply_src, ISP, "{phone_flow}");
    assert_eq!(
        phone_flow.reply_dst, ROUTER_WAN,
        "masqueraded: {phone_flow}"
    );
    assert!(phone_flow.is_nated());
    assert!(phone_flow.timeout_secs.is_some_and(|t| t > 0 && t <= 30));
    assert_eq!(pc_flow.reply_dst, ROUTER_WAN, "{pc_flow}");
    assert_eq!(local_flow.reply_dst, PC, "not translated: {local_flow}");
    assert!(!local_flow.is_nated());

    // The conntrack tool sees the same translation.
    let tool = conntrack_tool(&router);
    let phone_line = tool
        .iter()
        .find(|l| l.contains("src=10.20.0.2 dst=203.0.113.2 sport=5060"))
        .unwrap_or_else(|| panic!("conntrack -L has no phone flow: {tool:#?}"));
    assert!(
        phone_line.contains("src=203.0.113.2 dst=203.0.113.1 sport=5060 dport=5060"),
        "{phone_line}"
    );

    // The WAN address is unchanged: only the phone's flow is stale.
    let phones: Vec<Ipv4Net> = vec!["10.20.0.0/24".parse().unwrap()];
    let deleted = inside(&router, || {
        conntrack::flush_stale(&phones, Some(ROUTER_WAN))
    })
    .unwrap();
    assert_eq!(deleted, 1);
    let flows = inside(&router, conntrack::list).unwrap();
    assert!(find(&flows, PHONE, 5060).is_none(), "{flows:#?}");
    assert!(find(&flows, PC, 40000).is_some(), "{flows:#?}");
    assert!(find(&flows, PC, 40001).is_some(), "{flows:#?}");
    let tool = conntrack_tool(&router);
    assert!(
        !tool.iter().any(|l| l.contains("src=10.20.0.2 ")),
        "conntrack -L still has the phone flow: {tool:#?}"
    );
    assert!(
        tool.iter()
            .any(|l| l.contains("src=192.168.1.2 dst=203.0.113.2 sport=40000")),
        "{tool:#?}"
    );

    // The WAN moved to another address: the PC's NAT binding is stale, its
    // flow to the router itself is not.
    let moved = Some(Ipv4Addr::new(203, 0, 113, 77));
    let deleted = inside(&router, || conntrack::flush_stale(&phones, moved)).unwrap();
    assert_eq!(deleted, 1);
    let tool = conntrack_tool(&router);
    assert!(
        !tool.iter().any(|l| l.contains("sport=40000")),
        "conntrack -L still has the PC's NAT flow: {tool:#?}"
    );
    assert!(
        tool.iter()
            .any(|l| l.contains("src=192.168.1.2 dst=192.168.1.1 sport=40001 dport=7000")),
        "the flow to the router itself must stay: {tool:#?}"
    );

    // Nothing NATed is left, so losing the WAN deletes nothing more; a flow
    // that is already gone is reported as such.
    assert_eq!(
        inside(&router, || conntrack::flush_stale(&[], None)).unwrap(),
        0
    );
    assert!(!inside(&router, || conntrack::delete(&pc_flow)).unwrap());
    assert!(inside(&router, || conntrack::delete(&local_flow)).unwrap());
    let flows = inside(&router, conntrack::list).unwrap();
    assert!(find(&flows, PC, 40001).is_none(), "{flows:#?}");
}

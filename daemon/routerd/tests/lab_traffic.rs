//! The spec proved by traffic through a real `routerd`: each test builds the
//! namespace lab (tests/lab/mod.rs), runs `routerd --once` chrooted into the
//! trixie root (the nft the router ships), and asserts on what crosses the
//! wire between real sockets, sipp, tcpdump and the router's conntrack table.
//! Spec lines: /work/shared/requirements.md (cited as "spec F1" etc.).
//!
//! Every refusal is checked next to a twin that passes in the same lab, so a
//! broken lab cannot make a refusal test pass. Without the trixie root, or
//! without root privileges, the tests say "skipped" and stop.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures by design

mod lab;

use std::time::Duration;

use lab::pcap::{self, Packet};
use lab::{
    Lab, Ns, Outcome, HOST_IF, INTERNET_HOST, PC_ADDR, PHONE_ADDR, PROVIDER_EDGE, PROVIDER_IF,
    PROVIDER_SIP, ROUTER_STRICT_TOML, ROUTER_TOML, WAN_ADDR, WAN_IF,
};

/// The spec's port table for the phone network, as the factory policy has
/// it (daemon/config/provider/ipnordic.toml): 80, 443, 5060 and 5061 on TCP;
/// 5060, 123 and RTP 10000-65000 on UDP (both ends of the RTP range).
const TABLE_PORTS: [&str; 9] = [
    "tcp:80",
    "tcp:443",
    "tcp:5060",
    "tcp:5061",
    "udp:5060",
    "udp:123",
    "udp:10000",
    "udp:16384",
    "udp:65000",
];

/// Ports on the provider's addresses that are not in the table.
const OFF_TABLE_PORTS: [&str; 2] = ["tcp:8080", "udp:9999"];

fn ports(targets: &[&str], proto: &str) -> Vec<u16> {
    targets
        .iter()
        .filter_map(|t| t.strip_prefix(proto)?.strip_prefix(':')?.parse().ok())
        .collect()
}

/// A listener in the provider namespace on every table and off-table port.
fn provider_listener(lab: &Lab) -> lab::Peer {
    let all: Vec<&str> = TABLE_PORTS
        .iter()
        .chain(&OFF_TABLE_PORTS)
        .copied()
        .collect();
    lab.listen(Ns::Provider, &ports(&all, "tcp"), &ports(&all, "udp"))
}

fn assert_all(outcomes: &[Outcome], targets: &[&str], what: &str, ok: impl Fn(&Outcome) -> bool) {
    let bad: Vec<String> = targets
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| !ok(o))
        .map(|(t, o)| format!("{t}: {o:?}"))
        .collect();
    assert!(bad.is_empty(), "{what}: {}", bad.join(", "));
}

/// Spec F5 and the port table, spec F1: a phone reaches every port of the
/// table, on TCP and UDP as the table lists them, on both ends of the
/// provider range 185.72.208.0/22; the reply comes back although the ISP
/// has no route to the phone network, and the provider sees the connection
/// come from the router's WAN address (NAT). The twin refusal: a host
/// outside the provider range is refused to the phone but reached by a PC
/// (spec S1 and lan.egress = open), so the lab routes there.
#[test]
fn phone_reaches_every_table_port_of_the_provider_range_from_the_wan_address() {
    let Some(lab) = Lab::start(ROUTER_TOML) else {
        return;
    };
    let _listener = provider_listener(&lab);
    for to in [PROVIDER_SIP, PROVIDER_EDGE] {
        let outcomes = lab.probe(Ns::Phone, to, &TABLE_PORTS);
        assert_all(
            &outcomes,
            &TABLE_PORTS,
            &format!("phone -> {to} must be answered, seen from {WAN_ADDR}"),
            |o| o.seen() == Some(WAN_ADDR),
        );
    }

    // The provider's listener also answers on INTERNET_HOST (all addresses).
    let phone = lab.probe(Ns::Phone, INTERNET_HOST, &["tcp:80"]);
    let pc = lab.probe(Ns::Pc, INTERNET_HOST, &["tcp:80"]);
    assert_eq!(
        pc[0].seen(),
        Some(WAN_ADDR),
        "twin: a PC reaches {INTERNET_HOST}"
    );
    assert!(
        !phone[0].answered(),
        "phones.egress = provider: a phone must not reach {INTERNET_HOST}: {:?}",
        phone[0]
    );
}

/// sipp as the phone's user agent or the provider's registrar: one call over
/// UDP from `local`:5060, failing when its 10 s run out.
fn sipp(scenario: &str, local: &str, remote: Option<&str>) -> Vec<String> {
    let mut argv: Vec<String> = [
        "sipp",
        "-sf",
        &lab::lab_file(&format!("sip/{scenario}")).to_string_lossy(),
        "-i",
        local,
        "-p",
        "5060",
        "-t",
        "u1",
        "-m",
        "1",
        "-nostdin",
        "-skip_rlimit",
        "-timeout",
        "10",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(remote.map(str::to_string));
    argv
}

fn payloads<'a>(packets: impl Iterator<Item = &'a Packet>) -> Vec<String> {
    // Lossless for SIP's text; a byte that is not UTF-8 would show as U+FFFD
    // on both sides, so the raw bytes are compared as well below.
    packets
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// Spec F2 (no SIP ALG): a REGISTER from the phone, carrying its private
/// address in Via and Contact, reaches the provider byte for byte as the
/// phone sent it, and so does the registrar's 200 OK on its way back. The IP
/// header is rewritten (the provider sees the WAN address: NAT is on the
/// path); the SIP payload is not. Captured with tcpdump on the phone's port
/// and on the provider's.
#[test]
fn sip_register_crosses_the_router_byte_for_byte() {
    let Some(lab) = Lab::start(ROUTER_TOML) else {
        return;
    };
    let at_phone = lab.capture(Ns::Phone, HOST_IF, "udp port 5060");
    let at_provider = lab.capture(Ns::Provider, PROVIDER_IF, "udp port 5060");
    let registrar = lab.spawn(Ns::Provider, &sipp("register_uas.xml", PROVIDER_SIP, None));
    lab.wait_bound(Ns::Provider, "udp", 5060, Duration::from_secs(10));
    let remote = format!("{PROVIDER_SIP}:5060");
    let phone = lab.spawn(
        Ns::Phone,
        &sipp("register_uac.xml", PHONE_ADDR, Some(&remote)),
    );
    let (status, out) = phone.finish(Duration::from_secs(15));
    assert!(
        status.success(),
        "the phone's REGISTER was not answered with 200 OK ({status}):\n{out}"
    );
    let (status, out) = registrar.finish(Duration::from_secs(5));
    assert!(status.success(), "the registrar failed ({status}):\n{out}");
    let at_phone = at_phone.finish();
    let at_provider = at_provider.finish();

    let phone: std::net::Ipv4Addr = PHONE_ADDR.parse().unwrap();
    let sip: std::net::Ipv4Addr = PROVIDER_SIP.parse().unwrap();
    let wan: std::net::Ipv4Addr = WAN_ADDR.parse().unwrap();
    let sent: Vec<&Packet> = at_phone
        .iter()
        .filter(|p| p.src == phone && p.dst == sip)
        .collect();
    let arrived: Vec<&Packet> = at_provider.iter().filter(|p| p.dst == sip).collect();
    assert!(
        !sent.is_empty() && sent[0].payload.starts_with(b"REGISTER sip:"),
        "the phone sent no REGISTER: {at_phone:?}"
    );
    assert_eq!(
        payloads(sent.iter().copied()),
        payloads(arrived.iter().copied()),
        "the SIP payload changed between the phone and the provider"
    );
    for (s, a) in sent.iter().zip(&arrived) {
        assert_eq!(s.payload, a.payload, "payload bytes differ");
        assert_eq!(a.proto, pcap::UDP);
        assert_eq!(a.src, wan, "the provider must see the WAN address (NAT)");
    }
    let register = String::from_utf8_lossy(&arrived[0].payload);
    for header in [
        format!("Via: SIP/2.0/UDP {PHONE_ADDR}:5060;"),
        format!("Contact: <sip:4512345678@{PHONE_ADDR}:5060;"),
    ] {
        assert!(
            register.contains(&header),
            "the provider's copy lacks {header:?}:\n{register}"
        );
    }

    let answered: Vec<&Packet> = at_provider.iter().filter(|p| p.src == sip).collect();
    let received: Vec<&Packet> = at_phone
        .iter()
        .filter(|p| p.dst == phone && p.src == sip)
        .collect();
    assert!(
        !answered.is_empty() && answered[0].payload.starts_with(b"SIP/2.0 200 OK"),
        "the registrar sent no 200 OK: {at_provider:?}"
    );
    assert_eq!(
        payloads(answered.iter().copied()),
        payloads(received.iter().copied()),
        "the SIP payload of the answer changed on its way to the phone"
    );
    for (a, r) in answered.iter().zip(&received) {
        assert_eq!(a.payload, r.payload, "payload bytes differ");
    }
}

/// Spec F3: the router keeps a phone's UDP flows to the provider (SIP and
/// RTP) for at least 300 s: the conntrack entries of a flow that was just
/// answered have at least 300 s left. (Without the router's ct timeout
/// policy such a flow gets the kernel's 30 s.)
#[test]
fn phone_udp_flows_to_the_provider_live_at_least_300_s() {
    let Some(lab) = Lab::start(ROUTER_TOML) else {
        return;
    };
    let _listener = lab.listen(Ns::Provider, &[], &[5060, 16384]);
    let targets = ["udp:5060", "udp:16384"];
    let outcomes = lab.probe(Ns::Phone, PROVIDER_SIP, &targets);
    assert_all(&outcomes, &targets, "phone -> provider over UDP", |o| {
        o.seen() == Some(WAN_ADDR)
    });
    let flows = lab.flows(&[
        "-p",
        "udp",
        "--orig-src",
        PHONE_ADDR,
        "--orig-dst",
        PROVIDER_SIP,
    ]);
    for port in ["5060", "16384"] {
        let flow = flows
            .iter()
            .find(|f| f.get("dport") == Some(port))
            .unwrap_or_else(|| panic!("no conntrack entry for udp {port}: {flows:?}"));
        assert!(
            flow.line.contains(&format!("dst={WAN_ADDR}")),
            "the flow is not NATed to the WAN address: {}",
            flow.line
        );
        assert!(
            flow.timeout >= 300,
            "spec F3: udp {port} flow expires in {} s: {}",
            flow.timeout,
            flow.line
        );
    }
}

/// Spec F1 (never a port forward to a phone), spec O1 (no unsolicited
/// inbound) and spec F6 (ICMP from the WAN): even with the ISP routing the
/// private ranges to the router, new TCP and UDP connections from the WAN to
/// the phone, to the PC and to the router's WAN address go nowhere: they
/// reach the router's WAN port (captured there) and never leave it, and the
/// WAN gets no answer (silently dropped, docs/architecture.md). Twins in the
/// same lab: the same listeners answer the PC, the router itself, and the
/// router's WAN address from inside; a ping from the ISP to the WAN address
/// is answered; a phone's own connection to the provider gets its answer
/// back through the WAN (spec F7).
#[test]
fn nothing_from_the_wan_opens_a_connection_to_the_phone_the_pc_or_the_router() {
    let Some(lab) = Lab::start(ROUTER_TOML) else {
        return;
    };
    let _phone = lab.listen(Ns::Phone, &[80], &[5060]);
    let _pc = lab.listen(Ns::Pc, &[80], &[5060]);
    let _router = lab.listen(Ns::Router, &[2222], &[2222]);
    let _provider = lab.listen(Ns::Provider, &[5060], &[]);
    // What a careless or hostile ISP could do: route the private ranges to us.
    lab.sh(
        Ns::Isp,
        &format!(
            "ip route add 10.20.0.0/24 via {WAN_ADDR}
             ip route add 192.168.1.0/24 via {WAN_ADDR}"
        ),
    );
    let from_isp = format!("src host {} and (tcp or udp)", lab::ISP_ADDR);
    let at_wan = lab.capture(Ns::Router, WAN_IF, &from_isp);
    let at_phone = lab.capture(Ns::Phone, HOST_IF, &from_isp);
    let at_pc = lab.capture(Ns::Pc, HOST_IF, &from_isp);

    let targets = ["tcp:80", "udp:5060"];
    for to in [PHONE_ADDR, PC_ADDR] {
        let outcomes = lab.probe(Ns::Isp, to, &targets);
        assert_all(&outcomes, &targets, &format!("WAN -> {to}"), |o| {
            *o == Outcome::Timeout
        });
    }
    let router_ports = ["tcp:2222", "udp:2222"];
    let outcomes = lab.probe(Ns::Isp, WAN_ADDR, &router_ports);
    assert_all(&outcomes, &router_ports, "WAN -> the router", |o| {
        *o == Outcome::Timeout
    });

    // Twins: the listeners are up and the paths work.
    assert_eq!(
        lab.ping(Ns::Isp, WAN_ADDR).seen(),
        Some(WAN_ADDR),
        "spec F6: no answer to a ping from the WAN"
    );
    let pc_to_phone = lab.probe(Ns::Pc, PHONE_ADDR, &["tcp:80"]);
    assert_eq!(pc_to_phone[0].seen(), Some(PC_ADDR), "twin: PC -> phone");
    let router_to_pc = lab.probe(Ns::Router, PC_ADDR, &targets);
    assert_all(
        &router_to_pc,
        &targets,
        "twin: router -> PC",
        Outcome::answered,
    );
    let inside = lab.probe(Ns::Router, WAN_ADDR, &router_ports);
    assert_all(
        &inside,
        &router_ports,
        "twin: router -> its WAN address",
        Outcome::answered,
    );
    let out = lab.probe(Ns::Phone, PROVIDER_SIP, &["tcp:5060"]);
    assert_eq!(
        out[0].seen(),
        Some(WAN_ADDR),
        "spec F7: the answer must come back"
    );

    let at_wan = at_wan.finish();
    for to in [PHONE_ADDR, PC_ADDR] {
        let to: std::net::Ipv4Addr = to.parse().unwrap();
        assert!(
            at_wan
                .iter()
                .any(|p| p.dst == to && p.is_syn() && p.dport == 80)
                && at_wan
                    .iter()
                    .any(|p| p.dst == to && p.proto == pcap::UDP && p.dport == 5060),
            "the WAN's probes to {to} did not reach the router's WAN port: {at_wan:?}"
        );
    }
    for (name, packets) in [("phone", at_phone.finish()), ("PC", at_pc.finish())] {
        assert!(
            packets.is_empty(),
            "packets from the WAN reached the {name}: {packets:?}"
        );
    }
}

/// Spec S4: PCs reach the phones' web interface (HTTP 80) and ping them,
/// and nothing else; phones open nothing towards the data LAN. Refusals
/// inside are rejects (admin-prohibited), so a device fails at once. Twins:
/// the phone's port 22 and the PC's port 80 answer the router itself.
#[test]
fn pcs_reach_phones_on_http_and_ping_only_and_phones_reach_no_pc() {
    let Some(lab) = Lab::start(ROUTER_TOML) else {
        return;
    };
    let _phone = lab.listen(Ns::Phone, &[80, 22], &[]);
    let _pc = lab.listen(Ns::Pc, &[80], &[]);

    let pc_to_phone = lab.probe(Ns::Pc, PHONE_ADDR, &["tcp:80", "tcp:22"]);
    assert_eq!(
        pc_to_phone[0].seen(),
        Some(PC_ADDR),
        "spec S4: PC -> phone HTTP, routed without NAT"
    );
    assert_eq!(
        lab.ping(Ns::Pc, PHONE_ADDR).seen(),
        Some(PHONE_ADDR),
        "spec S4: PC -> phone ping"
    );
    assert_eq!(
        pc_to_phone[1],
        Outcome::Unreachable,
        "spec S4: PC -> phone port 22 must be refused"
    );
    let phone_to_pc = lab.probe(Ns::Phone, PC_ADDR, &["tcp:80"]);
    assert_eq!(
        phone_to_pc[0],
        Outcome::Unreachable,
        "spec S4: phone -> PC must be refused"
    );

    // Twins: both listeners answer over the wire.
    let router_to_phone = lab.probe(Ns::Router, PHONE_ADDR, &["tcp:22"]);
    assert!(
        router_to_phone[0].answered(),
        "twin: router -> phone port 22"
    );
    let router_to_pc = lab.probe(Ns::Router, PC_ADDR, &["tcp:80"]);
    assert!(router_to_pc[0].answered(), "twin: router -> PC port 80");
}

/// The port table under `phones.egress = "strict"`: the phone reaches the
/// provider range on the table's ports only; a port off the table (TCP 8080,
/// UDP 9999) is refused. Twins: in the same lab a PC reaches TCP 8080 there
/// (spec S1); with `phones.egress = "provider"` (spec F5: the provider range
/// is never blocked) the phone reaches both.
#[test]
fn strict_egress_allows_the_port_table_only() {
    let Some(lab) = Lab::start(ROUTER_STRICT_TOML) else {
        return;
    };
    let _listener = provider_listener(&lab);
    let table = lab.probe(Ns::Phone, PROVIDER_SIP, &TABLE_PORTS);
    assert_all(&table, &TABLE_PORTS, "strict: the table's ports", |o| {
        o.seen() == Some(WAN_ADDR)
    });
    let off = lab.probe(Ns::Phone, PROVIDER_SIP, &OFF_TABLE_PORTS);
    assert_all(&off, &OFF_TABLE_PORTS, "strict: off the table", |o| {
        *o == Outcome::Unreachable
    });
    let pc = lab.probe(Ns::Pc, PROVIDER_SIP, &["tcp:8080"]);
    assert_eq!(
        pc[0].seen(),
        Some(WAN_ADDR),
        "twin: spec S1, PC -> provider TCP 8080"
    );
    drop(lab);

    let Some(lab) = Lab::start(ROUTER_TOML) else {
        return;
    };
    let _listener = provider_listener(&lab);
    let off = lab.probe(Ns::Phone, PROVIDER_SIP, &OFF_TABLE_PORTS);
    assert_all(&off, &OFF_TABLE_PORTS, "provider: the whole range", |o| {
        o.seen() == Some(WAN_ADDR)
    });
}

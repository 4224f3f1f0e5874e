//! `tc` (the WAN shaper) against the real kernel, over netlink.
//!
//! - In a throwaway user + network namespace (`unshare -rn`), on a veth WAN:
//!   apply, read back (also with the `tc` program as an independent
//!   reader), apply again (no change), a changed plan (changed in place),
//!   drift made by hand (found by `verify`, repaired by `apply`), a foreign
//!   root (replaced), `remove`.
//! - With real packets, in named namespaces (`ip netns add`, needs root):
//!   a router between a phone, a PC and an ISP namespace holding the
//!   provider's, an ePDG's and an internet address, with the plan's own
//!   ruleset loaded. Voice and bulk packets are sent both ways and the class
//!   counters (bytes on the line, ATM cells) are read back over netlink and
//!   with `tc -s`; the ISP counts the DSCP marks it receives. Traffic goes
//!   only to addresses of these namespaces; a guard deletes them, also when
//!   the test fails.
//!
//! The host kernel has no fq_codel, so these plans use the host fact
//! `fq_codel = false` (FIFO leaves); fq_codel leaves are tested in QEMU.
#![allow(clippy::unwrap_used)]

mod common;

use common::{inside, run, Namespaces};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use router_config::model::Framing;
use router_config::{Checked, HostFacts};
use router_plan::qos::{qos_for, QosPlan, SizeTable, ACK_CLASS, BULK_CLASS, VOICE_CLASS};
use router_sys::links::Netlink;
use router_sys::netns::in_netns;
use router_sys::tc::{self, ChangeKind, ClassStats, TcChange, TcError};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn checked(text: &str, edit: impl FnOnce(&mut router_config::Config)) -> Checked {
    let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
    checked_with(text, edit, policy)
}

fn checked_with(
    text: &str,
    edit: impl FnOnce(&mut router_config::Config),
    policy: router_config::policy::ProviderPolicy,
) -> Checked {
    let (cfg, diags) = router_config::parse_config(text);
    assert!(diags.is_empty(), "{diags:?}");
    let mut cfg = cfg.unwrap();
    edit(&mut cfg);
    router_config::check(cfg, policy).unwrap()
}

/// The example's shaper with the provider's ranges replaced by `n` single
/// addresses, every second one from 198.18.0.0.
fn plan_with_addresses(n: u32) -> QosPlan {
    let mut policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
    policy.provider_ranges = (0..n)
        .map(|i| {
            format!("{}/32", Ipv4Addr::from(0xc612_0000 + 2 * i))
                .parse()
                .unwrap()
        })
        .collect();
    qos_for(&checked_with(EXAMPLE, |_| {}, policy), &host_facts())
}

/// Facts of this host: no fq_codel.
fn host_facts() -> HostFacts {
    HostFacts {
        fq_codel: false,
        ..HostFacts::assumed(["eth0", "eth1", "eth2"].map(String::from))
    }
}

const EXAMPLE: &str = include_str!("../../../docs/examples/router.toml");

/// The example's shaper (5/2 ADSL) with `calls` and `framing` changed.
fn example_plan(calls: Option<u32>, framing: Framing) -> QosPlan {
    let c = checked(EXAMPLE, |c| {
        c.line.calls = calls;
        c.line.framing = framing;
    });
    qos_for(&c, &host_facts())
}

fn lines(changes: &[TcChange]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

async fn veth(h: &Handle, port: &str, peer: &str) {
    h.link()
        .add(LinkVeth::new(port, peer).build())
        .execute()
        .await
        .unwrap();
    for name in [port, peer] {
        h.link()
            .set(LinkUnspec::new_with_name(name).up().build())
            .execute()
            .await
            .unwrap();
    }
}

#[test]
fn apply_reads_back_changes_in_place_repairs_drift_and_removes() {
    in_netns(
        "apply_reads_back_changes_in_place_repairs_drift_and_removes",
        apply_reads_back_body,
    );
}

fn apply_reads_back_body() {
    block_on(async {
        let nl = Netlink::open().unwrap();
        let h = nl.handle();
        veth(h, "eth0", "isp0").await;
        veth(h, "eth1", "pc0").await;
        let plan = example_plan(None, Framing::AdslPppoa);

        // First apply: everything is created.
        let changes = tc::apply(h, &plan).await.unwrap();
        let text = lines(&changes);
        for expected in [
            "created link on ifb-eth0",
            "created root qdisc htb 1: on ifb-eth0",
            "created root qdisc htb 1: on eth0",
            "created class 1:10 on eth0",
            "created qdisc bfifo 20: on eth0",
            "created download classifier pref 10 (8 nodes, 0 hash tables) on ifb-eth0",
            "created qdisc ingress on eth0",
            "created filter pref 1 (redirect to ifb-eth0) on eth0",
            "changed gro_max_size 1500 on eth0",
            "changed gro_max_size 1500 on eth1",
        ] {
            assert!(
                text.contains(&expected.to_string()),
                "{expected}: {text:#?}"
            );
        }
        assert!(
            changes
                .iter()
                .all(|c| c.action == ChangeKind::Created || c.object.starts_with("gro_max_size")),
            "{text:#?}"
        );
        assert_eq!(tc::verify(h, &plan).await.unwrap(), Vec::<String>::new());

        // The tc program reads the same tree back.
        let qdiscs = run(&["tc", "-d", "qdisc", "show", "dev", "eth0"]);
        assert!(qdiscs.contains("qdisc htb 1: root"), "{qdiscs}");
        assert!(qdiscs.contains("default 0x20"), "{qdiscs}");
        assert!(
            qdiscs.contains("linklayer atm overhead -4 mtu 2048 tsize 2048"),
            "{qdiscs}"
        );
        assert!(
            qdiscs.contains("qdisc pfifo 10: parent 1:10 limit 32p"),
            "{qdiscs}"
        );
        assert!(
            qdiscs.contains("qdisc bfifo 20: parent 1:20 limit 23750b"),
            "{qdiscs}"
        );
        assert!(
            qdiscs.contains("qdisc ingress ffff: parent ffff:fff1"),
            "{qdiscs}"
        );
        let classes = run(&["tc", "class", "show", "dev", "eth0"]);
        for expected in [
            "class htb 1:1 root rate 1900Kbit ceil 1900Kbit",
            "class htb 1:10 parent 1:1 leaf 10: prio 0 rate 1780Kbit ceil 1900Kbit",
            "class htb 1:15 parent 1:1 leaf 15: prio 1 rate 87Kbit ceil 1900Kbit",
            "class htb 1:20 parent 1:1 leaf 20: prio 2 rate 8Kbit ceil 1900Kbit",
        ] {
            assert!(classes.contains(expected), "{expected}:\n{classes}");
        }
        let classes = run(&["tc", "class", "show", "dev", "ifb-eth0"]);
        assert!(
            classes.contains("class htb 1:10 parent 1:1 leaf 10: prio 0 rate 2003Kbit ceil 4Mbit"),
            "{classes}"
        );
        let filters = run(&["tc", "filter", "show", "dev", "ifb-eth0"]);
        assert_eq!(filters.matches("flowid 1:10").count(), 8, "{filters}");
        assert!(
            filters.contains("match b948d000/fffffc00 at 12"),
            "{filters}"
        );
        let redirect = run(&["tc", "filter", "show", "dev", "eth0", "ingress"]);
        assert!(
            redirect.contains("Egress Redirect to device ifb-eth0"),
            "{redirect}"
        );
        // The ports feeding the shapers merge received packets only up to
        // one full-size packet (ip reads it back); the peers keep the default.
        for port in ["eth0", "eth1"] {
            let link = run(&["ip", "-d", "link", "show", port]);
            assert!(link.contains("gro_max_size 1500 "), "{link}");
            // An older ip (bookworm's 6.1) does not print the IPv4 limit;
            // verify above read it back from the kernel.
            if link.contains("gro_ipv4_max_size") {
                assert!(link.contains("gro_ipv4_max_size 1500 "), "{link}");
            }
        }
        let peer = run(&["ip", "-d", "link", "show", "pc0"]);
        assert!(peer.contains("gro_max_size 65536 "), "{peer}");

        // Applying the same plan again changes nothing.
        assert_eq!(
            lines(&tc::apply(h, &plan).await.unwrap()),
            Vec::<String>::new()
        );

        // Fewer calls: the voice classes and queues change, in place (the
        // acknowledgements and bulk keep their 5%).
        let fewer = example_plan(Some(10), Framing::AdslPppoa);
        let drift = tc::verify(h, &fewer).await.unwrap();
        assert_eq!(drift.len(), 4, "{drift:#?}");
        assert!(
            drift.contains(
                &"eth0: queue of class 1:10 is pfifo 10: limit 32, planned pfifo 10: limit 20"
                    .to_string()
            ),
            "{drift:#?}"
        );
        assert!(
            drift[0].starts_with("ifb-eth0: class 1:10 has rate 2003400bit"),
            "{drift:#?}"
        );
        let changes = lines(&tc::apply(h, &fewer).await.unwrap());
        assert_eq!(
            changes,
            [
                "changed class 1:10 on ifb-eth0",
                "changed qdisc pfifo 10: on ifb-eth0",
                "changed class 1:10 on eth0",
                "changed qdisc pfifo 10: on eth0",
            ]
        );
        assert_eq!(tc::verify(h, &fewer).await.unwrap(), Vec::<String>::new());
        let classes = run(&["tc", "class", "show", "dev", "eth0"]);
        assert!(
            classes.contains("1:10 parent 1:1 leaf 10: prio 0 rate 1113Kbit"),
            "{classes}"
        );

        // Another framing: the size table is swapped in place, the classes follow.
        let fibre = example_plan(Some(10), Framing::Ethernet);
        let changes = tc::apply(h, &fibre).await.unwrap();
        assert!(
            changes.iter().all(|c| c.action == ChangeKind::Changed),
            "{:#?}",
            lines(&changes)
        );
        assert!(lines(&changes).contains(&"changed size table on eth0".to_string()));
        let qdiscs = run(&["tc", "-d", "qdisc", "show", "dev", "eth0"]);
        assert!(qdiscs.contains("overhead 4"), "{qdiscs}");
        assert!(!qdiscs.contains("linklayer atm"), "{qdiscs}");
        assert_eq!(tc::verify(h, &fibre).await.unwrap(), Vec::<String>::new());

        // Drift made by hand is found, then repaired.
        run(&[
            "tc", "class", "change", "dev", "eth0", "parent", "1:1", "classid", "1:10", "htb",
            "rate", "100kbit", "ceil", "200kbit",
        ]);
        run(&["tc", "qdisc", "del", "dev", "eth0", "parent", "1:20"]);
        run(&[
            "tc", "qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "pfifo",
            "limit", "5",
        ]);
        run(&[
            "tc", "class", "add", "dev", "eth0", "parent", "1:1", "classid", "1:30", "htb", "rate",
            "10kbit",
        ]);
        run(&[
            "tc",
            "filter",
            "add",
            "dev",
            "ifb-eth0",
            "parent",
            "1:",
            "pref",
            "99",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "dst",
            "192.0.2.1/32",
            "flowid",
            "1:10",
        ]);
        let drift = tc::verify(h, &fibre).await.unwrap();
        let joined = drift.join("\n");
        for expected in [
            "ifb-eth0: filter pref 99 is not in the plan",
            "eth0: class 1:10 has rate 100kbit ceil 200kbit",
            "eth0: queue of class 1:20 is pfifo 20:",
            "eth0: class 1:30 is not in the plan",
        ] {
            assert!(joined.contains(expected), "{expected}:\n{joined}");
        }
        let changes = lines(&tc::apply(h, &fibre).await.unwrap());
        assert_eq!(
            changes,
            [
                "removed filter pref 99 on ifb-eth0",
                "changed class 1:10 on eth0",
                "replaced qdisc bfifo 20: on eth0",
                "removed class 1:30 on eth0",
            ]
        );
        assert_eq!(tc::verify(h, &fibre).await.unwrap(), Vec::<String>::new());

        // A GRO limit changed by hand is found and set back.
        run(&["ip", "link", "set", "dev", "eth1", "gro_max_size", "65536"]);
        let drift = tc::verify(h, &fibre).await.unwrap();
        // (The kernel sets the IPv4 limit along with it.)
        assert_eq!(
            drift,
            [
                "eth1: gro_max_size is 65536, the plan has 1500",
                "eth1: gro_ipv4_max_size is 65536, the plan has 1500"
            ]
        );
        let changes = lines(&tc::apply(h, &fibre).await.unwrap());
        assert_eq!(changes, ["changed gro_max_size 1500 on eth1"]);
        assert_eq!(tc::verify(h, &fibre).await.unwrap(), Vec::<String>::new());

        // A foreign root is replaced whole; a lost redirect is put back.
        run(&[
            "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst",
            "10kb", "latency", "50ms",
        ]);
        run(&["tc", "filter", "del", "dev", "eth0", "ingress"]);
        let drift = tc::verify(h, &fibre).await.unwrap();
        assert!(
            drift.contains(
                &"eth0: root qdisc is tbf 8001:, planned htb 1: (default class 1:20)".to_string()
            ) || drift
                .iter()
                .any(|d| d.starts_with("eth0: root qdisc is tbf")),
            "{drift:#?}"
        );
        assert!(
            drift.contains(&"eth0: the redirect of the download to its IFB is missing".to_string()),
            "{drift:#?}"
        );
        let changes = lines(&tc::apply(h, &fibre).await.unwrap());
        assert!(
            changes.contains(&"replaced root qdisc htb 1: on eth0".to_string()),
            "{changes:#?}"
        );
        assert!(
            changes.contains(&"created filter pref 1 (redirect to ifb-eth0) on eth0".to_string()),
            "{changes:#?}"
        );
        assert_eq!(tc::verify(h, &fibre).await.unwrap(), Vec::<String>::new());

        // A classifier changed by hand is replaced.
        run(&[
            "tc", "filter", "del", "dev", "ifb-eth0", "parent", "1:", "pref", "10",
        ]);
        run(&[
            "tc",
            "filter",
            "add",
            "dev",
            "ifb-eth0",
            "parent",
            "1:",
            "pref",
            "10",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "src",
            "192.0.2.0/24",
            "flowid",
            "1:20",
        ]);
        let drift = tc::verify(h, &fibre).await.unwrap();
        assert_eq!(
            drift,
            ["ifb-eth0: download classifier pref 10 (ip) differs from the plan: 8 of 8 nodes missing and 0 different (first: ::1 ip src 185.72.208.0/22 and udp); 1 node and 0 hash tables not in the plan"]
        );
        let changes = lines(&tc::apply(h, &fibre).await.unwrap());
        assert_eq!(
            changes,
            ["changed download classifier pref 10 (8 nodes added, 0 replaced, 1 removed; 0 hash tables added, 0 removed) on ifb-eth0"]
        );
        assert_eq!(tc::verify(h, &fibre).await.unwrap(), Vec::<String>::new());

        // A lost IFB is made again, and the redirect follows its new index.
        run(&["ip", "link", "del", "ifb-eth0"]);
        let drift = tc::verify(h, &fibre).await.unwrap();
        assert_eq!(drift, ["link ifb-eth0 is missing"]);
        let changes = lines(&tc::apply(h, &fibre).await.unwrap());
        for expected in [
            "created link on ifb-eth0",
            "created root qdisc htb 1: on ifb-eth0",
            "created download classifier pref 10 (8 nodes, 0 hash tables) on ifb-eth0",
            "replaced filter pref 1 (redirect to ifb-eth0) on eth0",
        ] {
            assert!(
                changes.contains(&expected.to_string()),
                "{expected}: {changes:#?}"
            );
        }
        assert_eq!(tc::verify(h, &fibre).await.unwrap(), Vec::<String>::new());

        // Remove takes away what the shaper owns, and only that.
        let changes = lines(&tc::remove(h, "eth0", "ifb-eth0").await.unwrap());
        assert_eq!(
            changes,
            [
                "removed qdisc htb 1: on eth0",
                "removed qdisc ingress ffff: on eth0",
                "removed link on ifb-eth0",
            ]
        );
        let qdiscs = run(&["tc", "qdisc", "show", "dev", "eth0"]);
        assert!(
            !qdiscs.contains("htb") && !qdiscs.contains("ingress"),
            "{qdiscs}"
        );
        let drift = tc::verify(h, &fibre).await.unwrap();
        assert!(
            drift.contains(&"link ifb-eth0 is missing".to_string()),
            "{drift:#?}"
        );
        assert!(tc::remove(h, "eth0", "ifb-eth0").await.unwrap().is_empty());
    });
}

#[test]
fn errors_name_the_interface() {
    in_netns("errors_name_the_interface", errors_body);
}

fn errors_body() {
    block_on(async {
        let nl = Netlink::open().unwrap();
        let h = nl.handle();
        let plan = example_plan(None, Framing::AdslPppoa);
        let err = tc::apply(h, &plan).await.unwrap_err();
        assert!(matches!(err, TcError::NoSuchLink { .. }), "{err:?}");
        assert_eq!(err.to_string(), "interface eth0 does not exist");
        // The IFB's name taken by a veth: refused, named.
        veth(h, "eth0", "isp0").await;
        veth(h, "ifb-eth0", "other0").await;
        let err = tc::apply(h, &plan).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ifb-eth0 exists but is not an IFB device"),
            "{err}"
        );
    });
}

#[test]
fn the_fq_codel_probe_matches_the_kernel_config() {
    in_netns(
        "the_fq_codel_probe_matches_the_kernel_config",
        fq_codel_probe_body,
    );
}

fn fq_codel_probe_body() {
    block_on(async {
        let nl = Netlink::open().unwrap();
        let h = nl.handle();
        let available = tc::fq_codel_available(h).await.unwrap();
        // The kernel's own config says what the answer must be, when it says.
        let config = Command::new("sh")
            .args([
                "-c",
                "zcat /proc/config.gz 2>/dev/null | grep NET_SCH_FQ_CODEL",
            ])
            .output()
            .unwrap();
        let config = String::from_utf8_lossy(&config.stdout);
        if config.contains("# CONFIG_NET_SCH_FQ_CODEL is not set") {
            assert!(!available, "this kernel has no fq_codel");
        } else if config.contains("CONFIG_NET_SCH_FQ_CODEL=y") {
            assert!(available, "this kernel has fq_codel built in");
        }
        // The probe leaves nothing behind, and can run again.
        let links = run(&["ip", "-o", "link", "show"]);
        assert!(!links.contains("rd-probe-fqc"), "{links}");
        assert_eq!(tc::fq_codel_available(h).await.unwrap(), available);
    });
}

// ------------------------------------------------- real packets, both ways

const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ISP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const PROVIDER: Ipv4Addr = Ipv4Addr::new(185, 72, 208, 10);
const EPDG: Ipv4Addr = Ipv4Addr::new(195, 41, 220, 240);
const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const PHONE: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
const PC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

/// A small office: phones on their own port, a 5/2 ADSL line, a static WAN.
const OFFICE: &str = r#"
provider = "ipnordic"

[wan]
interface = "eth0"
mode = "static"
address = "203.0.113.1/24"
gateway = "203.0.113.2"
dns = ["203.0.113.2"]

[line]
down = "5M"
up = "2M"
framing = "adsl-pppoa"

[lan]
interface = "eth1"
address = "192.168.1.1/24"

[phones]
interface = "eth2"
address = "10.20.0.1/24"
dhcp = { start = "10.20.0.100", end = "10.20.0.250" }
"#;

/// Runs an async netlink job inside `ns` with its own rtnetlink connection.
fn netlink_in<T: Send, F: Future<Output = T>>(ns: &str, job: impl FnOnce(Handle) -> F + Send) -> T {
    inside(ns, || {
        block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            job(handle).await
        })
    })
}

/// A veth from `router` (as `router_if`, with `router_addr`) to `host` (as
/// `eth0`, with `host_addr`, and a default route via the router unless `isp`).
fn link(router: &str, router_if: &str, router_addr: &str, host: &str, host_addr: &str, isp: bool) {
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
    run(&["ip", "-n", host, "link", "set", "lo", "up"]);
    if !isp {
        let gateway = router_addr.split('/').next().unwrap();
        run(&["ip", "-n", host, "route", "add", "default", "via", gateway]);
    }
}

fn nft_load(ns: &str, script: &str) {
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = nft.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft refused the ruleset in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `count` UDP datagrams of `payload` bytes from `from` to `to` inside `ns`.
fn udp(ns: &str, from: SocketAddr, to: SocketAddr, payload: usize, count: usize) {
    inside(ns, || {
        let socket = UdpSocket::bind(from).unwrap();
        for _ in 0..count {
            socket.send_to(&vec![0x55; payload], to).unwrap();
        }
    });
}

/// Opens a TCP connection from `ns` to `to`; nothing listens there, so one
/// SYN goes out and a reset comes back.
fn tcp_refused(ns: &str, to: SocketAddr) {
    inside(ns, || {
        let err = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{to}");
    });
}

/// The counters of the classes `ids` on `ifname` in the router namespace,
/// from one dump.
fn class_counters<const N: usize>(
    router: &str,
    ifname: &str,
    ids: [router_plan::qos::Handle; N],
) -> [ClassStats; N] {
    let name = ifname.to_string();
    let stats = netlink_in(router, |h| async move {
        tc::class_stats(&h, &name).await.unwrap()
    });
    ids.map(|id| *stats.iter().find(|s| s.classid == id).unwrap())
}

/// (voice, bulk) counters of `ifname` in the router namespace.
fn counters(router: &str, ifname: &str) -> (ClassStats, ClassStats) {
    let [voice, bulk] = class_counters(router, ifname, [VOICE_CLASS, BULK_CLASS]);
    (voice, bulk)
}

/// A download of `bytes` from `server` in `server_ns` to `client_ns`: the
/// client sends nothing but its handshake, acknowledgements and FIN.
fn download(server_ns: &str, server: SocketAddr, client_ns: &str, bytes: usize) {
    let listener = inside(server_ns, || TcpListener::bind(server).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(&vec![0x5a; bytes]).unwrap();
        });
        let got = inside(client_ns, || {
            let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).unwrap();
            buf.len()
        });
        assert_eq!(got, bytes, "the download arrived whole");
    });
}

/// Packets and bytes between two readings.
fn delta(before: ClassStats, after: ClassStats) -> (u64, u64) {
    (after.packets - before.packets, after.bytes - before.bytes)
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// What the ISP counted per DSCP for packets to the provider address.
fn dscp_counts(isp: &str) -> (u64, u64) {
    let listing = run(&[
        "ip", "netns", "exec", isp, "nft", "list", "chain", "inet", "dscp", "input",
    ]);
    let count = |tag: &str| -> u64 {
        let line = listing
            .lines()
            .find(|l| l.contains(&format!("comment \"{tag}\"")))
            .unwrap_or_else(|| panic!("no {tag} counter:\n{listing}"));
        let after = line.split("packets ").nth(1).unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    };
    (count("ef"), count("cs3"))
}

#[test]
fn voice_and_bulk_packets_land_in_their_classes_both_ways() {
    let mut ns = Namespaces::new("rd-tc");
    let router = ns.add("router");
    let phone = ns.add("phone");
    let pc = ns.add("pc");
    let isp = ns.add("isp");
    link(
        &router,
        "eth0",
        "203.0.113.1/24",
        &isp,
        "203.0.113.2/24",
        true,
    );
    link(
        &router,
        "eth1",
        "192.168.1.1/24",
        &pc,
        "192.168.1.2/24",
        false,
    );
    link(
        &router,
        "eth2",
        "10.20.0.1/24",
        &phone,
        "10.20.0.2/24",
        false,
    );
    for addr in ["185.72.208.10/32", "195.41.220.240/32", "198.51.100.10/32"] {
        run(&["ip", "-n", &isp, "addr", "add", addr, "dev", "lo"]);
    }
    run(&["ip", "-n", &router, "link", "set", "lo", "up"]);
    run(&[
        "ip",
        "-n",
        &router,
        "route",
        "add",
        "default",
        "via",
        &ISP.to_string(),
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &router,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);

    // The plan's own ruleset (it sets the voice priority and the DSCP marks)
    // and shaper.
    let office = checked(OFFICE, |_| {});
    let facts = host_facts();
    let plan = router_plan::compile(&office, &facts).unwrap();
    nft_load(&router, &plan.nft.render());
    let qos = qos_for(&office, &facts);
    let changes = netlink_in(&router, |h| {
        let qos = qos.clone();
        async move { tc::apply(&h, &qos).await.unwrap() }
    });
    assert!(!changes.is_empty());
    let drift = netlink_in(&router, |h| {
        let qos = qos.clone();
        async move { tc::verify(&h, &qos).await.unwrap() }
    });
    assert_eq!(drift, Vec::<String>::new());
    // The ISP counts the DSCP of what reaches the provider address, and
    // the internet address sends everything marked EF (which the router
    // must not believe).
    nft_load(
        &isp,
        "table inet dscp {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tip daddr 185.72.208.10 ip dscp ef counter comment \"ef\"\n\
         \t\tip daddr 185.72.208.10 ip dscp cs3 counter comment \"cs3\"\n\
         \t}\n\
         \tchain output {\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tip saddr 198.51.100.10 ip dscp set ef\n\
         \t}\n\
         }\n",
    );

    // What one packet costs on this ADSL line, as the shaper counts it.
    let atm = SizeTable::for_framing(Framing::AdslPppoa);
    let rtp = 172; // G.711 20 ms + RTP header: 200 bytes of IP, 5 cells.
    let sip = 400; // 428 bytes of IP, 10 cells.
    let cost = |payload: u64| atm.charged(payload + 28 + 14);
    assert_eq!(cost(172), 265);
    assert_eq!(cost(400), 530);

    // Upload: the phone's RTP and SIP to the provider are voice; the PC's
    // traffic, also to the provider's address, is bulk.
    let (v0, b0) = counters(&router, "eth0");
    let (iv0, _) = counters(&router, "ifb-eth0");
    udp(&phone, (PHONE, 0).into(), (PROVIDER, 20000).into(), rtp, 5);
    udp(&phone, (PHONE, 0).into(), (PROVIDER, 5060).into(), sip, 3);
    udp(&pc, (PC, 0).into(), (PROVIDER, 20000).into(), rtp, 4);
    udp(&pc, (PC, 0).into(), (INTERNET, 9).into(), rtp, 4);
    settle();
    let (v1, b1) = counters(&router, "eth0");
    let (iv1, ib1) = counters(&router, "ifb-eth0");
    assert_eq!(
        delta(v0, v1),
        (8, 5 * cost(172) + 3 * cost(400)),
        "upload voice class: exactly the phone's packets, in ATM cells"
    );
    assert!(delta(b0, b1).0 >= 8, "upload bulk: {:?}", delta(b0, b1));
    // Port-unreachable errors came back from the provider: ICMP is not voice.
    assert_eq!(
        delta(iv0, iv1).0,
        0,
        "download voice during the upload test"
    );
    let (ef, cs3) = dscp_counts(&isp);
    assert_eq!(
        (ef, cs3),
        (5, 3),
        "DSCP EF on the phone's RTP, CS3 on its SIP"
    );

    // Download: from the provider's range (UDP) and the ePDG it is voice;
    // from the internet it is bulk. DSCP from the internet is not looked at.
    udp(
        &isp,
        (PROVIDER, 40000).into(),
        (ROUTER_WAN, 40000).into(),
        rtp,
        6,
    );
    udp(&isp, (EPDG, 4500).into(), (ROUTER_WAN, 4500).into(), rtp, 2);
    udp(
        &isp,
        (INTERNET, 40000).into(),
        (ROUTER_WAN, 40000).into(),
        rtp,
        4,
    );
    settle();
    let (iv2, ib2) = counters(&router, "ifb-eth0");
    assert_eq!(
        delta(iv1, iv2),
        (8, 8 * cost(172)),
        "download voice class: the provider's and the ePDG's packets"
    );
    assert!(
        delta(ib1, ib2).0 >= 4,
        "download bulk: {:?}",
        delta(ib1, ib2)
    );

    // SIP over TLS: the phone's SYN is voice, the provider's reset too.
    let (v2, _) = counters(&router, "eth0");
    tcp_refused(&phone, (PROVIDER, 5061).into());
    settle();
    let (v3, b3) = counters(&router, "eth0");
    let (iv3, ib3) = counters(&router, "ifb-eth0");
    assert_eq!(delta(v2, v3).0, 1, "the SIP-over-TLS SYN");
    assert_eq!(delta(iv2, iv3).0, 1, "the reset from port 5061");
    // Provisioning over HTTPS to the same provider address is bulk both ways.
    tcp_refused(&phone, (PROVIDER, 443).into());
    settle();
    let (v4, b4) = counters(&router, "eth0");
    let (iv4, ib4) = counters(&router, "ifb-eth0");
    assert_eq!(delta(v3, v4).0, 0, "HTTPS SYN must not be voice");
    assert_eq!(delta(iv3, iv4).0, 0, "HTTPS reset must not be voice");
    assert!(delta(b3, b4).0 >= 1 && delta(ib3, ib4).0 >= 1);
    assert_eq!(dscp_counts(&isp), (5, 4), "the SYN to 5061 is marked CS3");

    // A PC downloads 256 KB from the internet: its acknowledgements take
    // the acknowledgement class, 52 bytes of IP each (2 ATM cells); its SYN
    // and FIN are bulk.
    let ack = |s: &ClassStats| (s.packets, s.bytes);
    let [a4, v4b, b4b] = class_counters(&router, "eth0", [ACK_CLASS, VOICE_CLASS, BULK_CLASS]);
    download(&isp, (INTERNET, 8080).into(), &pc, 256 * 1024);
    settle();
    let [a5, v5b, b5b] = class_counters(&router, "eth0", [ACK_CLASS, VOICE_CLASS, BULK_CLASS]);
    let (acks, ack_bytes) = (ack(&a5).0 - ack(&a4).0, ack(&a5).1 - ack(&a4).1);
    // The namespaces' veths pass the sender's 64 KB aggregates whole, so
    // the PC acknowledges fewer, larger packets than on a line.
    assert!(acks >= 4, "{acks} acknowledgements");
    assert_eq!(
        ack_bytes,
        acks * cost(52 - 28),
        "each acknowledgement is 2 cells"
    );
    assert_eq!(delta(v4b, v5b).0, 0, "no acknowledgement is voice");
    let bulk = delta(b4b, b5b).0;
    // (Packets the router itself sends, such as IPv6 neighbour discovery,
    // are bulk too.)
    assert!(
        bulk >= 2 && bulk < acks,
        "SYN and FIN are bulk, the acknowledgements not: {bulk} bulk, {acks} acknowledgements"
    );
    let v4 = v5b;

    // The tc program, an independent reader, sees the same voice counters.
    let shown = run(&[
        "ip", "netns", "exec", &router, "tc", "-s", "class", "show", "dev", "eth0",
    ]);
    let voice_block = shown
        .split("class htb ")
        .find(|b| b.starts_with("1:10 "))
        .unwrap();
    assert!(
        voice_block.contains(&format!("Sent {} bytes {} pkt", v4.bytes, v4.packets)),
        "{shown}"
    );

    // A changed plan is applied in place: the classes keep their counters.
    let fewer = qos_for(&checked(OFFICE, |c| c.line.calls = Some(10)), &facts);
    let changes = netlink_in(&router, |h| {
        let fewer = fewer.clone();
        async move { tc::apply(&h, &fewer).await.unwrap() }
    });
    assert!(
        changes.iter().all(|c| c.action == ChangeKind::Changed),
        "{:#?}",
        lines(&changes)
    );
    let (v5, _) = counters(&router, "eth0");
    assert!(v5.packets >= v4.packets, "the voice class was recreated");
    udp(&phone, (PHONE, 0).into(), (PROVIDER, 20000).into(), rtp, 2);
    settle();
    let (v6, _) = counters(&router, "eth0");
    assert_eq!(
        delta(v5, v6).0,
        2,
        "voice still classified after the change"
    );
}

#[test]
fn thousands_of_provider_addresses_are_hashed_and_changed_without_leftovers() {
    let mut ns = Namespaces::new("rd-tch");
    let router = ns.add("router");
    let isp = ns.add("isp");
    link(
        &router,
        "eth0",
        "203.0.113.1/24",
        &isp,
        "203.0.113.2/24",
        true,
    );
    // A provider address deep in the set, its neighbour (not in the set)
    // and an address of the internet, all on the ISP's side.
    let member = Ipv4Addr::from(0xc612_0000 + 2 * 2345);
    let neighbour = Ipv4Addr::from(0xc612_0000 + 2 * 2345 + 1);
    for addr in [member, neighbour, INTERNET] {
        run(&[
            "ip",
            "-n",
            &isp,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ]);
    }
    run(&["ip", "-n", &router, "link", "set", "lo", "up"]);
    // The LAN port, whose GRO limit the plan sets too.
    run(&[
        "ip", "-n", &router, "link", "add", "eth1", "type", "veth", "peer", "name", "pc0",
    ]);

    let big = plan_with_addresses(3000);
    let [c] = big.ingress.classifiers.as_slice() else {
        panic!("one classifier")
    };
    assert!(c.tables.len() > 1, "{}", c.tables.len());
    let started = std::time::Instant::now();
    let changes = netlink_in(&router, |h| {
        let big = big.clone();
        async move { lines(&tc::apply(&h, &big).await.unwrap()) }
    });
    eprintln!(
        "{} nodes and {} tables applied in {:?}",
        c.nodes.len(),
        c.tables.len(),
        started.elapsed()
    );
    let created = format!(
        "created download classifier pref 10 ({} nodes, {} hash tables) on ifb-eth0",
        c.nodes.len(),
        c.tables.len()
    );
    assert!(changes.contains(&created), "{changes:#?}");
    let verify = |plan: &QosPlan| {
        let plan = plan.clone();
        netlink_in(
            &router,
            |h| async move { tc::verify(&h, &plan).await.unwrap() },
        )
    };
    assert_eq!(verify(&big), Vec::<String>::new());
    let apply = |plan: &QosPlan| {
        let plan = plan.clone();
        netlink_in(&router, |h| async move {
            lines(&tc::apply(&h, &plan).await.unwrap())
        })
    };
    assert_eq!(
        apply(&big),
        Vec::<String>::new(),
        "a second apply changes nothing"
    );
    let shown = run(&[
        "ip", "netns", "exec", &router, "tc", "filter", "show", "dev", "ifb-eth0",
    ]);
    assert_eq!(
        shown.matches("ht divisor 256").count(),
        c.tables.len(),
        "the kernel holds the plan's tables"
    );

    // The kernel sorts the packets: the member's UDP is voice, its
    // neighbour's and the internet's are bulk (bulk also sees the ISP's ARP).
    let send = |from: Ipv4Addr, count: u64| {
        let (v0, b0) = counters(&router, "ifb-eth0");
        udp(
            &isp,
            (from, 5004).into(),
            (ROUTER_WAN, 5004).into(),
            172,
            count as usize,
        );
        settle();
        let (v1, b1) = counters(&router, "ifb-eth0");
        let (voice, bulk) = (delta(v0, v1).0, delta(b0, b1).0);
        assert!(voice + bulk >= count, "{from}: {voice} + {bulk} of {count}");
        voice
    };
    assert_eq!(send(member, 5), 5, "from a provider address");
    assert_eq!(send(neighbour, 4), 0, "from the address next to it");
    assert_eq!(send(INTERNET, 3), 0, "from the internet");

    // Ten addresses: one table is left, the rest and their nodes go, and
    // nothing of them stays behind in the kernel.
    let small = plan_with_addresses(10);
    let changes = apply(&small);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert!(
        changes[0].starts_with("changed download classifier pref 10 ("),
        "{changes:#?}"
    );
    assert_eq!(verify(&small), Vec::<String>::new());
    let shown = run(&[
        "ip", "netns", "exec", &router, "tc", "filter", "show", "dev", "ifb-eth0",
    ]);
    assert_eq!(shown.matches("ht divisor 256").count(), 1, "{shown}");
    assert_eq!(send(member, 2), 0, "no longer a provider address");
    // Back to thousands: every table can be made again (none was left
    // hidden in the kernel), and the member is voice again.
    let changes = apply(&big);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(verify(&big), Vec::<String>::new());
    assert_eq!(send(member, 2), 2);

    // A preference made by hand with a table of its own is taken apart
    // from the top, so the same table can be made again afterwards.
    let tc = |args: &[&str]| {
        let mut all = vec![
            "ip", "netns", "exec", &router, "tc", "filter", "add", "dev", "ifb-eth0", "parent",
            "1:", "pref", "99", "protocol", "ip",
        ];
        all.extend_from_slice(args);
        run(&all);
    };
    let by_hand = |tc: &dyn Fn(&[&str])| {
        tc(&["handle", "7fe:", "u32", "divisor", "16"]);
        tc(&[
            "u32",
            "ht",
            "7fe:3:",
            "match",
            "ip",
            "src",
            "192.0.2.3/32",
            "flowid",
            "1:20",
        ]);
        tc(&[
            "u32",
            "match",
            "u32",
            "0",
            "0",
            "link",
            "7fe:",
            "hashkey",
            "mask",
            "0x0000000f",
            "at",
            "12",
        ]);
    };
    by_hand(&tc);
    let drift = verify(&big);
    assert_eq!(drift, ["ifb-eth0: filter pref 99 is not in the plan"]);
    assert_eq!(apply(&big), ["removed filter pref 99 on ifb-eth0"]);
    by_hand(&tc);
    assert_eq!(apply(&big), ["removed filter pref 99 on ifb-eth0"]);
    assert_eq!(verify(&big), Vec::<String>::new());
}

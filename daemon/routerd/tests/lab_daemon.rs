//! The running routerd in the namespace lab (tests/lab/mod.rs): it sets up
//! the links itself (the lab gives the router's ports no addresses), runs
//! the real dnsmasq and the WAN's DHCP client (busybox udhcpc) from the
//! trixie root, follows the WAN, answers `routerctl` on its control socket,
//! reloads on SIGHUP, refuses a bad config without touching anything, and
//! survives `kill -9` without dropping a flow. Spec lines:
//! /work/shared/requirements.md.
//!
//! Without the trixie root, or without root privileges, the tests say
//! "skipped" and stop.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures by design

mod lab;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use lab::{
    Lab, Ns, Peer, INTERNET_HOST, ISP_ADDR, ISP_ROUTER_IF, PHONE_ADDR, PROVIDER_SIP,
    ROUTER_STRICT_TOML, ROUTER_TOML, WAN_ADDR,
};
use serde_json::Value;

/// The routerctl built next to the routerd under test.
fn routerctl_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_routerd")).with_file_name("routerctl");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p routerctl; ./test.sh does)",
        path.display()
    );
    path
}

/// Starts the long-running routerd in the router namespace and waits until
/// it listens on its control socket.
fn start_routerd(lab: &Lab) -> Peer {
    routerctl_binary();
    let argv = lab.router_argv(&[
        "--config",
        "/etc/routerd/router.toml",
        "--routerctl",
        "/opt/routerd/routerctl",
        // The namespaces share the machine's clock: chronyd must not steer it.
        "--chronyd",
        "chronyd -x",
    ]);
    let mut routerd = lab.spawn(Ns::Router, &argv);
    routerd.wait_for("routerd is running", Duration::from_secs(20));
    routerd
}

/// routerctl on the host, talking to the lab's routerd over its socket.
fn routerctl(lab: &Lab, args: &[&str]) -> Output {
    let socket = lab.run_dir().join("control.sock");
    std::process::Command::new(routerctl_binary())
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status(lab: &Lab) -> Value {
    let out = routerctl(lab, &["status", "--json"]);
    assert!(out.status.success(), "routerctl status: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `routerctl status` until `ok` holds; panics with the last status.
fn wait_status(lab: &Lab, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(lab);
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; status:\n{s:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wan_addresses(s: &Value) -> Vec<String> {
    s["wan"]["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The whole ruleset as the nft the router ships lists it.
fn ruleset(lab: &Lab) -> String {
    let root = lab::trixie_root().unwrap();
    let out = lab.exec(
        Ns::Router,
        &["chroot", &root.to_string_lossy(), "nft", "list", "ruleset"],
    );
    assert!(out.status.success(), "nft list ruleset: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ISP's DHCP server (dnsmasq) on its port to the router, handing out
/// exactly `address` with the ISP as gateway and DNS server.
fn isp_dhcp(lab: &Lab, address: &str) -> Peer {
    let leases = lab
        .run_dir()
        .with_file_name(format!("isp-{address}.leases"));
    let mut dnsmasq = lab.spawn(
        Ns::Isp,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            &format!("--interface={ISP_ROUTER_IF}"),
            "--bind-interfaces",
            "--dhcp-authoritative",
            &format!("--dhcp-range={address},{address},255.255.255.0,10m"),
            &format!("--dhcp-option=3,{ISP_ADDR}"),
            &format!("--dhcp-option=6,{ISP_ADDR}"),
            &format!("--dhcp-leasefile={}", leases.display()),
            "--pid-file=",
        ],
    );
    dnsmasq.wait_for("DHCP, IP range", Duration::from_secs(10));
    dnsmasq
}

fn dhcp_config() -> String {
    let dhcp = ROUTER_TOML.replace(
        "mode = \"static\"\naddress = \"203.0.113.10/24\"\ngateway = \"203.0.113.1\"\ndns = [\"203.0.113.53\"]",
        "mode = \"dhcp\"",
    );
    assert_ne!(dhcp, ROUTER_TOML, "the lab config's [wan] section changed");
    dhcp
}

fn stream_py() -> String {
    lab::lab_file("stream.py").to_string_lossy().into_owned()
}

fn sink(lab: &Lab, port: u16) -> Peer {
    let mut sink = lab.spawn(
        Ns::Provider,
        &[
            "/usr/bin/python3",
            &stream_py(),
            "sink",
            "--addr",
            PROVIDER_SIP,
            "--port",
            &port.to_string(),
            "--lifetime",
            "120",
        ],
    );
    sink.wait_for("ready", Duration::from_secs(10));
    sink
}

fn sender(lab: &Lab, port: u16, rate: u32, seconds: u32) -> Peer {
    lab.spawn(
        Ns::Phone,
        &[
            "/usr/bin/python3",
            &stream_py(),
            "send",
            "--to",
            PROVIDER_SIP,
            "--port",
            &port.to_string(),
            "--sport",
            &port.to_string(),
            "--rate",
            &rate.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    )
}

/// The WAN by DHCP, and a WAN address change (spec F1, F3): routerd starts
/// the real udhcpc, applies the lease itself and reports it in `routerctl
/// status`. A phone's UDP 5060 flow, established before the ISP hands out
/// another address, works again right after the change, from the new
/// address, and no flow is left tied to the old one.
#[test]
fn wan_by_dhcp_and_an_address_change_leaves_no_stale_phone_flow() {
    let Some(lab) = Lab::build(&dhcp_config()) else {
        return;
    };
    let first = isp_dhcp(&lab, WAN_ADDR);
    let routerd = start_routerd(&lab);
    let s = wait_status(&lab, "WAN lease", Duration::from_secs(40), |s| {
        wan_addresses(s) == [format!("{WAN_ADDR}/24")]
    });
    assert_eq!(s["wan"]["mode"], "dhcp");
    assert_eq!(s["wan"]["ready"], true);
    assert_eq!(s["wan"]["lease"]["gateway"], ISP_ADDR, "{s:#}");
    let children: Vec<(&str, bool)> = s["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["running"] == true))
        .collect();
    assert_eq!(
        children,
        [("dnsmasq", true), ("chronyd", true), ("udhcpc", true)],
        "{s:#}"
    );

    let _sink = sink(&lab, 5060);
    let mut phone = sender(&lab, 5060, 10, 60);
    phone.wait_for("reply ", Duration::from_secs(10));
    let line = phone.wait_for(WAN_ADDR, Duration::from_secs(5));
    assert!(line.contains(WAN_ADDR), "{line}");

    // The ISP's address plan changes; the client renews and is refused.
    drop(first);
    let _second = isp_dhcp(&lab, "203.0.113.20");
    let pid = std::fs::read_to_string(lab.run_dir().join("udhcpc.pid")).unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-USR1", pid.trim()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_status(&lab, "new WAN address", Duration::from_secs(60), |s| {
        wan_addresses(s) == ["203.0.113.20/24"]
    });
    let changed = Instant::now();
    phone.wait_for("203.0.113.20", Duration::from_secs(5));
    println!(
        "the phone's flow answered from the new address {:?} after routerd reported it",
        changed.elapsed()
    );
    let stale: Vec<String> = lab
        .flows(&["-p", "udp"])
        .into_iter()
        .filter(|f| f.line.contains(WAN_ADDR) && f.get("src") != Some(WAN_ADDR))
        .map(|f| f.line)
        .collect();
    assert!(
        stale.is_empty(),
        "flows still tied to the old address: {stale:?}"
    );
    let flows = lab.flows(&["-p", "udp", "--orig-src", PHONE_ADDR]);
    assert!(
        flows.iter().any(|f| f.line.contains("203.0.113.20")),
        "{flows:?}"
    );

    // routerd killed: the new one adopts the lease (the client asks for the
    // address the WAN has), replaces the old client, and nothing changes.
    let kill = std::process::Command::new("kill")
        .args(["-9", &routerd.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    drop(routerd);
    let mut again = start_routerd(&lab);
    let applied = again.wait_for("applied and verified", Duration::from_secs(5));
    assert!(applied.contains("changes=0"), "{applied}");
    wait_status(
        &lab,
        "the lease after the restart",
        Duration::from_secs(30),
        |s| !s["wan"]["lease"].is_null(),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(clients(&lab), 1, "{}", again.output());
    let s = status(&lab);
    assert_eq!(wan_addresses(&s), ["203.0.113.20/24"], "{s:#}");
    assert!(
        s["wan"]["last_change_unix"].is_null(),
        "the WAN changed: {s:#}"
    );
}

/// How many DHCP clients run in the router namespace.
fn clients(lab: &Lab) -> usize {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &lab.name(Ns::Router)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("udhcpc"))
                .unwrap_or(false)
        })
        .count()
}

/// `routerctl apply` with a bad config: refused with the problem and its
/// path, the ruleset byte-identical and the config file untouched. A good
/// config applies atomically (the phones' egress turns strict, seen on the
/// wire) and is saved; SIGHUP reloads the file. A flow that lives across
/// the table replacement keeps a timeout of at least 300 s (spec F3).
#[test]
fn routerctl_apply_refuses_a_bad_config_untouched_and_applies_a_good_one() {
    let Some(lab) = Lab::build(ROUTER_TOML) else {
        return;
    };
    let routerd = start_routerd(&lab);
    let s = status(&lab);
    assert_eq!(
        wan_addresses(&s),
        [format!("{WAN_ADDR}/24")],
        "routerd set the WAN address itself: {s:#}"
    );
    assert!(s["last_error"].is_null(), "{s:#}");
    let _listener = lab.listen(Ns::Provider, &[8080], &[5060]);
    assert!(lab.probe(Ns::Phone, PROVIDER_SIP, &["tcp:8080"])[0].answered());

    let before = ruleset(&lab);
    let bad = lab.run_dir().with_file_name("bad.toml");
    std::fs::write(
        &bad,
        ROUTER_TOML.replace("[phones]\n", "[phones]\negres = \"strict\"\n"),
    )
    .unwrap();
    let out = routerctl(&lab, &["apply", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("phones.egres"), "{}", text(&out));
    assert_eq!(
        ruleset(&lab),
        before,
        "a refused config changed the ruleset"
    );
    assert_eq!(
        std::fs::read_to_string(lab.etc_dir().join("router.toml")).unwrap(),
        ROUTER_TOML
    );
    assert_eq!(status(&lab)["plan_hash"], s["plan_hash"]);

    // A two-way phone flow that lives across the next apply.
    let _sink = sink(&lab, 10000);
    let mut flow = sender(&lab, 10000, 5, 30);
    flow.wait_for("reply", Duration::from_secs(10));
    // Old enough to be an established (assured) UDP stream, like a phone's.
    std::thread::sleep(Duration::from_secs(3));

    let good = lab.run_dir().with_file_name("good.toml");
    std::fs::write(&good, ROUTER_STRICT_TOML).unwrap();
    let out = routerctl(&lab, &["apply", &good.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ruleset loaded"), "{}", text(&out));
    assert_ne!(ruleset(&lab), before);
    assert_eq!(
        std::fs::read_to_string(lab.etc_dir().join("router.toml")).unwrap(),
        ROUTER_STRICT_TOML
    );
    assert!(!lab.probe(Ns::Phone, PROVIDER_SIP, &["tcp:8080"])[0].answered());
    std::thread::sleep(Duration::from_millis(500));
    let kept = lab.flows(&["-p", "udp", "--orig-src", PHONE_ADDR, "--dport", "10000"]);
    assert!(
        !kept.is_empty() && kept.iter().all(|f| f.timeout >= 300),
        "the flow lost its timeout with the replaced table: {kept:?}"
    );

    // SIGHUP: the file is the provider-mode config again.
    lab.write_etc("router.toml", ROUTER_TOML);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &routerd.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_status(&lab, "reload", Duration::from_secs(20), |now| {
        now["plan_hash"] == s["plan_hash"]
    });
    assert!(lab.probe(Ns::Phone, PROVIDER_SIP, &["tcp:8080"])[0].answered());
}

/// Restart safety: routerd killed with SIGKILL in the middle of a voice-like
/// UDP stream (50 packets a second) and started again. It adopts what the
/// kernel holds (nothing changes, the ruleset is not reloaded), and the
/// stream loses no packet.
#[test]
fn kill_9_and_restart_during_a_udp_stream_loses_no_packet() {
    let Some(lab) = Lab::build(ROUTER_TOML) else {
        return;
    };
    let mut first = start_routerd(&lab);
    let sink = sink(&lab, 10000);
    // The path is warm (neighbours resolved) before the stream starts.
    // The first datagram after the start gets through (nothing is flushed
    // behind it), and the path is warm before the stream starts.
    let warm = lab.probe(Ns::Phone, PROVIDER_SIP, &["udp:10000"]);
    assert!(warm[0].answered(), "{warm:?}\n{}", first.output());
    let stream = sender(&lab, 10000, 50, 8);
    std::thread::sleep(Duration::from_secs(2));
    let pid = first.pid();
    let kill = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    drop(first);
    let mut second = start_routerd(&lab);
    let applied = second.wait_for("applied and verified", Duration::from_secs(5));
    assert!(
        applied.contains("changes=0"),
        "the restarted routerd changed something: {applied}\n{}",
        second.output()
    );
    let (code, sent) = stream.finish(Duration::from_secs(20));
    assert!(code.success(), "{sent}");
    assert!(sent.contains("sent 400"), "{sent}");
    std::thread::sleep(Duration::from_millis(300));
    let summary = sink.stop();
    assert!(
        summary.contains("received 400 max 399 missing -"),
        "packets lost across the restart: {summary}"
    );
    let s = status(&lab);
    let dnsmasq = s["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dnsmasq")
        .cloned()
        .unwrap();
    assert_eq!(dnsmasq["running"], true, "{s:#}");
}

/// Vendor provisioning (policy vendor_provisioning, spec port table): a
/// phone may reach a vendor's provisioning server only once the router's
/// DNS (dnsmasq, which fills the firewall's set) has resolved one of the
/// vendor domains to it, and only on the vendor ports. The learned address
/// survives a config apply that replaces the ruleset.
#[test]
fn vendor_provisioning_opens_once_the_router_resolves_the_domain() {
    let upstream = "192.0.2.53";
    let config = ROUTER_TOML.replace(
        "dns = [\"203.0.113.53\"]",
        &format!("dns = [\"{upstream}\"]"),
    );
    assert_ne!(config, ROUTER_TOML);
    let Some(lab) = Lab::build(&config) else {
        return;
    };
    lab.sh(Ns::Provider, &format!("ip addr add {upstream}/32 dev lo"));
    let mut dns = lab.spawn(
        Ns::Provider,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            &format!("--listen-address={upstream}"),
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            &format!("--address=/provisioning.snom.com/{INTERNET_HOST}"),
            "--pid-file=",
        ],
    );
    dns.wait_for("started", Duration::from_secs(10));
    let _routerd = start_routerd(&lab);
    let _listener = lab.listen(Ns::Provider, &[443, 8080], &[]);
    let before = lab.probe(Ns::Phone, INTERNET_HOST, &["tcp:443"]);
    assert!(
        !before[0].answered(),
        "reached before any lookup: {before:?}"
    );

    let out = lab.exec(
        Ns::Phone,
        &[
            "/usr/bin/python3",
            &lab::lab_file("dns.py").to_string_lossy(),
            "--server",
            lab::PHONES_ROUTER,
            "--name",
            "provisioning.snom.com",
        ],
    );
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        answer.contains(&format!("answer {INTERNET_HOST}")),
        "the router's DNS did not resolve the vendor domain: {answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = lab::trixie_root().unwrap();
    let set = lab.exec(
        Ns::Router,
        &[
            "chroot",
            &root.to_string_lossy(),
            "nft",
            "list",
            "set",
            "inet",
            "routerd_dns",
            "vendor_v4",
        ],
    );
    let set = String::from_utf8_lossy(&set.stdout).into_owned();
    assert!(
        set.contains(&format!("{INTERNET_HOST} expires")),
        "dnsmasq did not fill the vendor set: {set}"
    );
    let after = lab.probe(Ns::Phone, INTERNET_HOST, &["tcp:443", "tcp:8080"]);
    assert_eq!(after[0].seen(), Some(WAN_ADDR), "{after:?}");
    assert!(!after[1].answered(), "a non-vendor port opened: {after:?}");

    // A config apply that replaces the ruleset keeps what DNS taught it.
    let strict = ROUTER_STRICT_TOML.replace(
        "dns = [\"203.0.113.53\"]",
        &format!("dns = [\"{upstream}\"]"),
    );
    let file = lab.run_dir().with_file_name("strict.toml");
    std::fs::write(&file, strict).unwrap();
    let out = routerctl(&lab, &["apply", &file.to_string_lossy()]);
    assert!(text(&out).contains("ruleset loaded"), "{}", text(&out));
    let kept = lab.probe(Ns::Phone, INTERNET_HOST, &["tcp:443"]);
    assert!(kept[0].answered(), "{kept:?}");
}

/// What the kernel loses, routerd puts back: a deleted default route and a
/// deleted address of the phone network return within seconds (rtnetlink
/// events), and `routerctl status` shows no error.
#[test]
fn a_deleted_route_and_address_come_back() {
    let Some(lab) = Lab::build(ROUTER_TOML) else {
        return;
    };
    let _routerd = start_routerd(&lab);
    lab.sh(
        Ns::Router,
        &format!(
            "ip route del default
             ip addr del {}/24 dev {}",
            lab::PHONES_ROUTER,
            lab::PHONES_IF
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let routes = lab.sh(Ns::Router, "ip -4 route show; ip -4 addr show");
        if routes.contains(&format!("default via {ISP_ADDR}"))
            && routes.contains(&format!("inet {}/24", lab::PHONES_ROUTER))
        {
            break;
        }
        assert!(Instant::now() < deadline, "not put back:\n{routes}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(status(&lab)["last_error"].is_null());
    assert!(lab.probe(Ns::Phone, PROVIDER_SIP, &["udp:5060"]).len() == 1);
}

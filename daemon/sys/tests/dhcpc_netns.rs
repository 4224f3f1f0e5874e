//! The WAN DHCP client (busybox udhcpc, with the command line
//! `dhcpc::argv` builds) under the supervisor, against a real DHCP server
//! (dnsmasq) in an "ISP" network namespace; both namespaces are made for the
//! test (`ip netns add`; needs root, which ./test.sh and CI have). Its event
//! script records each event's argument and environment, and
//! `dhcpc::parse_event` must turn them into the lease the server handed
//! out: the address asked for with `-r`, the gateway, the DNS servers, the
//! lease time. SIGUSR1 must produce a renew; a stopped client must not
//! release its lease. With `ROUTERD_TRIXIE_ROOT` set (./test.sh does) both
//! programs are the ones the router ships, chrooted; otherwise the host's
//! dnsmasq, and the host's busybox if it has one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use router_sys::dhcpc::{argv, parse_event};
use router_sys::dnsmasq::{Dnsmasq, DnsmasqOpts};
use router_sys::lease::{DhcpEvent, WanLease};
use router_sys::supervise::{SuperviseOpts, Supervisor};

/// Runs a command that must succeed.
fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace made for the test, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Where dnsmasq and udhcpc come from: the shipped root, or the host.
struct Userland {
    root: PathBuf,
    chroot: bool,
}

impl Userland {
    fn find() -> Option<Self> {
        if let Some(root) = std::env::var_os("ROUTERD_TRIXIE_ROOT") {
            return Some(Self {
                root: root.into(),
                chroot: true,
            });
        }
        if Command::new("busybox").arg("true").output().is_err() {
            eprintln!(
                "skipped: no udhcpc: ROUTERD_TRIXIE_ROOT is not set (./test.sh sets it) \
                 and the host has no busybox"
            );
            return None;
        }
        Some(Self {
            root: "/".into(),
            chroot: false,
        })
    }

    /// The command running `program` in `ns`.
    fn command(&self, ns: &Netns, program: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = ["ip", "netns", "exec", &ns.0]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.chroot {
            argv.extend(["chroot".to_string(), self.root.display().to_string()]);
        }
        argv.extend(program.iter().map(|s| s.to_string()));
        argv
    }

    /// Where the test reaches a path as the programs see it.
    fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// The test's directory, as the programs see it; removed on drop.
struct Dir {
    path: String,
    host: PathBuf,
}

impl Dir {
    fn new(userland: &Userland, test: &str) -> Self {
        let path = format!("/tmp/routerd-{test}-{}", std::process::id());
        let host = userland.host_path(&path);
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host).unwrap();
        Self { path, host }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host);
    }
}

const ISP: &str = "198.51.100.1";
const POOL_START: &str = "198.51.100.50";
const POOL_END: &str = "198.51.100.250";
const DNS: [&str; 2] = ["198.51.100.53", "198.51.100.54"];

/// The ISP's DHCP server: its address, a pool, a router and two DNS servers.
fn isp_conf(dir: &str) -> String {
    format!(
        "port=0\n\
         interface=isp0\n\
         bind-interfaces\n\
         dhcp-authoritative\n\
         no-ping\n\
         dhcp-range={POOL_START},{POOL_END},255.255.255.0,120s\n\
         dhcp-option=option:router,{ISP}\n\
         dhcp-option=option:dns-server,{},{}\n\
         dhcp-leasefile={dir}/isp.leases\n",
        DNS[0], DNS[1]
    )
}

/// The events the record script wrote: each one's argument and
/// environment, complete ones only.
fn recorded(path: &Path) -> Vec<(String, BTreeMap<String, String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut blocks: Vec<&str> = text.split("--end--\n").collect();
    blocks.pop();
    blocks
        .into_iter()
        .map(|block| {
            let mut lines = block.lines();
            let event = lines
                .next()
                .and_then(|l| l.strip_prefix("event="))
                .unwrap_or_default()
                .to_string();
            let env = lines
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (event, env)
        })
        .collect()
}

async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn udhcpc_gets_the_isp_lease_renews_on_sigusr1_and_keeps_it_on_stop() {
    let Some(userland) = Userland::find() else {
        return;
    };
    let id = std::process::id();
    let isp = Netns::new(format!("rd-dhcpc-isp-{id}"));
    let router = Netns::new(format!("rd-dhcpc-rt-{id}"));
    run(&[
        "ip", "-n", &isp.0, "link", "add", "isp0", "type", "veth", "peer", "name", "eth0", "netns",
        &router.0,
    ]);
    run(&[
        "ip",
        "-n",
        &isp.0,
        "addr",
        "add",
        &format!("{ISP}/24"),
        "dev",
        "isp0",
    ]);
    run(&["ip", "-n", &isp.0, "link", "set", "isp0", "up"]);
    run(&["ip", "-n", &router.0, "link", "set", "eth0", "up"]);
    let dir = Dir::new(&userland, "dhcpc");

    let server = Dnsmasq::start(
        DnsmasqOpts {
            command: userland.command(&isp, &["dnsmasq"]),
            root: userland.root.clone(),
            conf_path: format!("{}/isp.conf", dir.path),
            pidfile: format!("{}/isp.pid", dir.path),
        },
        &isp_conf(&dir.path),
    )
    .unwrap();
    until(5, "the ISP's server", || server.status().running).await;

    // The event script: records each event's argument and environment.
    let script = format!("{}/record.sh", dir.path);
    std::fs::write(
        dir.host.join("record.sh"),
        format!(
            "#!/bin/sh\n{{ echo \"event=$1\"; env; echo --end--; }} >> {}/events\n",
            dir.path
        ),
    )
    .unwrap();
    run(&["chmod", "755", dir.host.join("record.sh").to_str().unwrap()]);
    let events_file = dir.host.join("events");
    let events = || recorded(&events_file);
    let find = |event: &str| {
        events()
            .into_iter()
            .find(|(e, _)| e == event)
            .map(|(_, env)| env)
    };

    // As after a restart of routerd: ask for the address held before.
    let wanted: Ipv4Addr = "198.51.100.123".parse().unwrap();
    let pidfile = format!("{}/udhcpc.pid", dir.path);
    let client = Supervisor::spawn(
        "udhcpc",
        argv(
            &userland.command(&router, &["busybox", "udhcpc"]),
            "eth0",
            &script,
            &pidfile,
            Some(wanted),
        ),
        SuperviseOpts {
            pidfile: Some(userland.host_path(&pidfile)),
            pidfile_by_child: true,
            ..SuperviseOpts::default()
        },
    );

    until(10, "a bound event", || find("bound").is_some()).await;
    let recorded = events();
    assert_eq!(recorded[0].0, "deconfig", "the first event");
    assert_eq!(
        parse_event(&recorded[0].0, &recorded[0].1),
        Ok(DhcpEvent::Deconfig)
    );
    let bound = find("bound").unwrap();
    assert_eq!(bound.get("interface").map(String::as_str), Some("eth0"));
    let expected = WanLease {
        address: format!("{wanted}/24").parse().unwrap(),
        gateway: Some(ISP.parse().unwrap()),
        dns: DNS.iter().map(|a| a.parse().unwrap()).collect(),
        lease_secs: Some(120),
        server: Some(ISP.parse().unwrap()),
    };
    assert_eq!(
        parse_event("bound", &bound),
        Ok(DhcpEvent::Bound(expected.clone()))
    );
    let status = client.status();
    assert!(status.running);
    assert_eq!(status.restarts, 0, "the client exited: {status:?}");
    let pid = status.pid.unwrap();
    assert_eq!(
        std::fs::read_to_string(userland.host_path(&pidfile))
            .unwrap()
            .trim(),
        pid.to_string(),
        "udhcpc's pid file"
    );

    // routerd applies the lease itself; then a renew goes to the server.
    run(&[
        "ip",
        "-n",
        &router.0,
        "addr",
        "add",
        &expected.address.to_string(),
        "dev",
        "eth0",
    ]);
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGUSR1).unwrap();
    until(8, "a renew event", || find("renew").is_some()).await;
    assert_eq!(
        parse_event("renew", &find("renew").unwrap()),
        Ok(DhcpEvent::Renew(expected.clone()))
    );

    // Stopped (as at shutdown or a restart of routerd), the client does not
    // release the lease: the server still holds it for this client.
    client.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leases = std::fs::read_to_string(dir.host.join("isp.leases")).unwrap();
    assert!(
        leases.contains(&format!(" {wanted} ")),
        "the lease was released: {leases:?}"
    );
    let names: Vec<String> = events().into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        names.iter().filter(|e| *e == "deconfig").count(),
        1,
        "the client dropped its lease on stop: {names:?}"
    );
    server.stop().await;
}

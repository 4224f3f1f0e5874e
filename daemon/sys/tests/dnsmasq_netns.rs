//! The real dnsmasq under the supervisor, with the file the plan compiles
//! from the example config, serving DHCP on a veth between two network
//! namespaces made for the test (`ip netns add`; needs root, which ./test.sh
//! and CI have). A real DHCP client (busybox udhcpc) in the other namespace
//! must get an address from the pool and the router as gateway and DNS
//! server; a changed config restarts dnsmasq and takes effect, an unchanged
//! one does not; a killed dnsmasq is restarted; an instance left running by
//! a killed routerd is replaced. With `ROUTERD_TRIXIE_ROOT` set (./test.sh
//! does) dnsmasq and udhcpc are the ones the router ships, chrooted;
//! otherwise the host's dnsmasq, and the host's busybox if it has one.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use router_sys::dhcpc::parse_event;
use router_sys::dnsmasq::{argv, Dnsmasq, DnsmasqOpts};
use router_sys::lease::{DhcpEvent, WanLease};

use common::{recorded, run, until, Dir, Netns, Userland};

/// A router namespace with the LAN port `eth1` (192.168.1.1/24, the
/// example's LAN) wired to a client namespace's `eth0`.
struct Lab {
    userland: Userland,
    router: Netns,
    client: Netns,
    dir: Dir,
}

impl Lab {
    fn new(test: &str) -> Option<Self> {
        let userland = Userland::find("DHCP client")?;
        let id = std::process::id();
        let router = Netns::new(format!("rd-{test}-r-{id}"));
        let client = Netns::new(format!("rd-{test}-c-{id}"));
        run(&[
            "ip", "-n", &router.0, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
            "netns", &client.0,
        ]);
        run(&[
            "ip",
            "-n",
            &router.0,
            "addr",
            "add",
            "192.168.1.1/24",
            "dev",
            "eth1",
        ]);
        run(&["ip", "-n", &router.0, "link", "set", "eth1", "up"]);
        run(&["ip", "-n", &client.0, "link", "set", "eth0", "up"]);
        let dir = Dir::new(&userland, test);
        std::fs::create_dir_all(dir.host.join("state")).unwrap();
        std::fs::create_dir_all(dir.host.join("run")).unwrap();
        // The client's event script: records each event and its environment.
        std::fs::write(
            dir.host.join("record.sh"),
            format!(
                "#!/bin/sh\n{{ echo \"event=$1\"; env; echo --end--; }} >> {}/events\n",
                dir.path
            ),
        )
        .unwrap();
        run(&["chmod", "755", dir.host.join("record.sh").to_str().unwrap()]);
        Some(Self {
            userland,
            router,
            client,
            dir,
        })
    }

    /// dnsmasq run in the router namespace, its files in the test's dir.
    fn opts(&self) -> DnsmasqOpts {
        DnsmasqOpts {
            command: self.userland.command(&self.router, &["dnsmasq"]),
            root: self.userland.root.clone(),
            conf_path: format!("{}/run/dnsmasq.conf", self.dir.path),
            pidfile: format!("{}/run/dnsmasq.pid", self.dir.path),
        }
    }

    /// The plan's dnsmasq file for the example config (with `lan_dhcp`
    /// extra keys in `[lan]`'s dhcp table), its state and run dirs in the
    /// test's dir.
    fn conf(&self, lan_dhcp: &str) -> String {
        let dir = format!(
            "{}/../plan/tests/golden/example",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(format!("{dir}/router.toml")).unwrap();
        let from = "end = \"192.168.1.250\" }";
        assert!(text.contains(from));
        let text = text.replace(from, &format!("end = \"192.168.1.250\"{lan_dhcp} }}"));
        let (cfg, diags) = router_config::parse_config(&text);
        assert!(diags.is_empty(), "{diags:?}");
        let policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
        let checked = router_config::check(cfg.unwrap(), policy).unwrap();
        let mut facts =
            router_config::HostFacts::assumed(["eth0".into(), "eth1".into(), "eth2".into()]);
        facts.state_dir = format!("{}/state", self.dir.path);
        facts.run_dir = format!("{}/run", self.dir.path);
        router_plan::compile(&checked, &facts)
            .unwrap()
            .dhcp
            .dnsmasq_conf
    }

    /// Runs udhcpc once in the client namespace (`-q -n`: exit with a lease
    /// or without one) and returns the lease its `bound` event carried.
    async fn lease(&self) -> WanLease {
        let _ = std::fs::remove_file(self.dir.host.join("events"));
        let script = format!("{}/record.sh", self.dir.path);
        let argv = self.userland.command(
            &self.client,
            &[
                "busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "8", "-T", "1", "-s",
                &script,
            ],
        );
        let out = tokio::time::timeout(
            Duration::from_secs(12),
            tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the DHCP client took longer than 12 s")
        .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "no lease: {}\n{log}", out.status);
        let events = recorded(&self.dir.host.join("events"));
        let (event, env) = events
            .iter()
            .find(|(event, _)| event == "bound")
            .unwrap_or_else(|| panic!("no bound event in {events:?}\n{log}"));
        assert_eq!(env.get("interface").map(String::as_str), Some("eth0"));
        match parse_event(event, env).unwrap() {
            DhcpEvent::Bound(lease) => lease,
            other => panic!("{other:?}"),
        }
    }
}

/// What the example's LAN pool hands out, given its lease time.
fn assert_lan_lease(lease: &WanLease, secs: u32) {
    let router: Ipv4Addr = "192.168.1.1".parse().unwrap();
    let pool: std::ops::RangeInclusive<Ipv4Addr> =
        "192.168.1.100".parse().unwrap()..="192.168.1.250".parse().unwrap();
    assert!(pool.contains(&lease.address.addr()), "{lease:?}");
    assert_eq!(lease.address.prefix_len(), 24, "{lease:?}");
    assert_eq!(lease.gateway, Some(router), "{lease:?}");
    assert_eq!(lease.dns, [router], "the DNS server option: {lease:?}");
    assert_eq!(lease.server, Some(router), "{lease:?}");
    assert_eq!(lease.lease_secs, Some(secs), "{lease:?}");
}

async fn running_pid(dnsmasq: &Dnsmasq) -> u32 {
    until(5, "dnsmasq to run", || dnsmasq.status().running).await;
    dnsmasq.status().pid.unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn serves_the_plan_and_restarts_only_when_the_config_changed() {
    let Some(lab) = Lab::new("dnsmasq-upd") else {
        return;
    };
    let conf = lab.conf("");
    let dnsmasq = Dnsmasq::start(lab.opts(), &conf).unwrap();
    let first = running_pid(&dnsmasq).await;
    assert_lan_lease(&lab.lease().await, 43200);
    assert_eq!(
        std::fs::read_to_string(lab.dir.host.join("run/dnsmasq.conf")).unwrap(),
        conf
    );

    assert!(!dnsmasq.update(&conf).await.unwrap());
    assert_eq!(dnsmasq.status().pid, Some(first), "restarted for nothing");
    assert_eq!(dnsmasq.status().restarts, 0);

    let changed = lab.conf(", lease = \"1h\"");
    assert_ne!(changed, conf);
    assert!(dnsmasq.update(&changed).await.unwrap());
    let second = running_pid(&dnsmasq).await;
    assert_ne!(second, first, "not restarted for a changed config");
    assert!(!alive(first));
    assert_eq!(dnsmasq.status().restarts, 1);
    // The new config is the one serving.
    assert_lan_lease(&lab.lease().await, 3600);

    dnsmasq.stop().await;
    assert!(!alive(second));
}

#[tokio::test]
async fn a_killed_dnsmasq_is_restarted() {
    let Some(lab) = Lab::new("dnsmasq-kill") else {
        return;
    };
    let dnsmasq = Dnsmasq::start(lab.opts(), &lab.conf("")).unwrap();
    let first = running_pid(&dnsmasq).await;
    kill(
        Pid::from_raw(i32::try_from(first).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    until(5, "a new dnsmasq", || {
        dnsmasq.status().pid.is_some_and(|pid| pid != first)
    })
    .await;
    let status = dnsmasq.status();
    assert!(status.running);
    assert_eq!(status.restarts, 1);
    assert_eq!(status.last_exit.as_deref(), Some("signal: 9 (SIGKILL)"));
    assert_lan_lease(&lab.lease().await, 43200);
    dnsmasq.stop().await;
}

#[tokio::test]
async fn a_dnsmasq_left_running_from_before_is_replaced() {
    let Some(lab) = Lab::new("dnsmasq-left") else {
        return;
    };
    let opts = lab.opts();
    let conf = lab.conf("");
    // What a routerd killed with -9 leaves behind: dnsmasq still running,
    // its pid in its pid file.
    router_sys::dnsmasq::write_conf(&opts.host_path(&opts.conf_path), &conf).unwrap();
    let command = argv(&opts.command, &opts.conf_path, &opts.pidfile);
    let mut leftover = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let old = leftover.id().unwrap();
    let pidfile = opts.host_path(&opts.pidfile);
    until(5, "the leftover's pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| p.trim() == old.to_string())
    })
    .await;

    let dnsmasq = Dnsmasq::start(opts, &conf).unwrap();
    let new = running_pid(&dnsmasq).await;
    assert_ne!(new, old);
    let status = tokio::time::timeout(Duration::from_secs(1), leftover.wait())
        .await
        .expect("the leftover dnsmasq still runs")
        .unwrap();
    println!("the leftover dnsmasq: {status}");
    // The new one serves (the old one held the DHCP port until it left).
    assert_lan_lease(&lab.lease().await, 43200);
    dnsmasq.stop().await;
}

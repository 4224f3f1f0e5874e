//! The real chronyd under the supervisor, with the file the plan compiles,
//! in three network namespaces made for the test (`ip netns add`; needs
//! root, which ./test.sh and CI have):
//!
//! - "provider" runs a chronyd serving its own clock at stratum 8, the
//!   provider's time server;
//! - "router" runs the plan's chronyd (`router_sys::chrony`): NTP client of
//!   the provider across its WAN port, NTP server on its phone port;
//! - "phone" asks the router the way a phone does (an SNTP request).
//!
//! The phone must get time at stratum 9 (the router synchronised to the
//! provider) from the router's phone address, and no answer from its WAN
//! address; the provider gets no answer from the phone address; nothing
//! listens on a wildcard address. The test network has no DNS, so the
//! policy's NTP entry names the provider's address instead of a host name:
//! the plan takes the server from the policy data either way.
//!
//! Both chronyds run with `-x` (never steer the clock): every namespace
//! shares the machine's one system clock, which a test must leave alone.
//! With `ROUTERD_TRIXIE_ROOT` set (./test.sh does) chronyd is the one the
//! router ships, chrooted; otherwise the host's.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use router_sys::chrony::{self, Chrony, ChronyOpts};
use router_sys::supervise::{SuperviseOpts, Supervisor};

use common::{inside, run, until, Dir, Netns, Userland};

const PROVIDER: &str = "203.0.113.1";
const ROUTER_WAN: &str = "203.0.113.2";
const ROUTER_PHONES: &str = "10.20.0.1";
const PHONE: &str = "10.20.0.100";
/// The stratum the provider's server claims.
const PROVIDER_STRATUM: u8 = 8;

/// Seconds between 1900 (NTP's epoch) and 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// [`sntp`] from inside namespace `ns`, off the runtime's thread.
async fn ask(ns: &str, server: &'static str, wait: Duration) -> Option<Answer> {
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || inside(&ns, || sntp(server, wait)))
        .await
        .unwrap()
}

/// What an NTP server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    /// Leap indicator: 3 means "not synchronised".
    leap: u8,
    stratum: u8,
}

/// One SNTP request (RFC 4330: 48 bytes, LI 0, version 4, mode 3 client)
/// to `server`; the answer, or `None` when none came within `wait`.
fn sntp(server: &str, wait: Duration) -> Option<Answer> {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    let server: SocketAddr = format!("{server}:123").parse().unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23;
    // The transmit timestamp: the server echoes it as the origin timestamp.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let seconds = u32::try_from((now.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff).unwrap();
    request[40..44].copy_from_slice(&seconds.to_be_bytes());
    request[44..48].copy_from_slice(&now.subsec_nanos().to_be_bytes());
    socket.send_to(&request, server).unwrap();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == server && n >= 48 => {
                assert_eq!(buf[0] & 0x07, 4, "not a server answer: {:02x?}", &buf[..n]);
                assert_eq!(buf[24..32], request[40..48], "answers another request");
                return Some(Answer {
                    leap: buf[0] >> 6,
                    stratum: buf[1],
                });
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The three namespaces, wired: provider `wan0` to router `eth0` (the
/// WAN), router `eth2` (the phone port) to phone `eth0`.
struct Lab {
    userland: Userland,
    provider: Netns,
    router: Netns,
    phone: Netns,
    dir: Dir,
    /// The provider's time server.
    server: Option<Supervisor>,
}

impl Lab {
    fn new(test: &str) -> Option<Self> {
        let userland = Userland::find("chronyd")?;
        let id = std::process::id();
        let provider = Netns::new(format!("rd-{test}-p-{id}"));
        let router = Netns::new(format!("rd-{test}-r-{id}"));
        let phone = Netns::new(format!("rd-{test}-c-{id}"));
        let link = |a: &Netns, a_if: &str, b: &Netns, b_if: &str| {
            run(&[
                "ip", "-n", &a.0, "link", "add", a_if, "type", "veth", "peer", "name", b_if,
                "netns", &b.0,
            ]);
        };
        link(&provider, "wan0", &router, "eth0");
        link(&router, "eth2", &phone, "eth0");
        for (ns, ifname, address) in [
            (&provider, "wan0", format!("{PROVIDER}/24")),
            (&router, "eth0", format!("{ROUTER_WAN}/24")),
            (&router, "eth2", format!("{ROUTER_PHONES}/24")),
            (&phone, "eth0", format!("{PHONE}/24")),
        ] {
            run(&["ip", "-n", &ns.0, "addr", "add", &address, "dev", ifname]);
            run(&["ip", "-n", &ns.0, "link", "set", ifname, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &phone.0,
            "route",
            "add",
            "default",
            "via",
            ROUTER_PHONES,
        ]);
        // The provider can address the phone network (the router's
        // firewall would stop it; chronyd must refuse it too).
        run(&[
            "ip",
            "-n",
            &provider.0,
            "route",
            "add",
            "10.20.0.0/24",
            "via",
            ROUTER_WAN,
        ]);
        let dir = Dir::new(&userland, test);
        for sub in ["state", "run", "provider"] {
            std::fs::create_dir_all(dir.host.join(sub)).unwrap();
        }
        let mut lab = Self {
            userland,
            provider,
            router,
            phone,
            dir,
            server: None,
        };
        lab.start_provider();
        Some(lab)
    }

    /// The provider's time server: its own clock at stratum 8, to anyone.
    fn start_provider(&mut self) {
        let conf_path = format!("{}/provider/chrony.conf", self.dir.path);
        std::fs::write(
            self.userland.host_path(&conf_path),
            format!(
                "local stratum {PROVIDER_STRATUM}\n\
                 allow all\n\
                 bindaddress {PROVIDER}\n\
                 cmdport 0\n\
                 bindcmdaddress /\n\
                 pidfile {}/provider/chronyd.pid\n",
                self.dir.path
            ),
        )
        .unwrap();
        let argv = chrony::argv(
            &self.userland.command(&self.provider, &["chronyd", "-x"]),
            &conf_path,
        );
        self.server = Some(Supervisor::spawn(
            "provider chronyd",
            argv,
            SuperviseOpts::default(),
        ));
    }

    /// The router's chronyd: in the router namespace, not steering the clock.
    fn opts(&self) -> ChronyOpts {
        ChronyOpts {
            command: self.userland.command(&self.router, &["chronyd", "-x"]),
            root: self.userland.root.clone(),
            conf_path: format!("{}/run/chrony.conf", self.dir.path),
        }
    }

    /// The plan's chrony file for a router with its phones on their own
    /// port (`eth2`, 10.20.0.1/24), the provider policy's NTP entry naming
    /// the provider's server, the state and run dirs in the test's dir.
    fn conf(&self) -> String {
        let dir = format!(
            "{}/../plan/tests/golden/phones-dedicated-port",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(format!("{dir}/router.toml")).unwrap();
        let (cfg, diags) = router_config::parse_config(&text);
        assert!(diags.is_empty(), "{diags:?}");
        let mut policy = router_config::parse_policy(router_config::FACTORY_POLICY).unwrap();
        let mut named = 0;
        for port in &mut policy.phone_ports {
            if port.ports.first == 123 {
                port.domain = Some(PROVIDER.to_string());
                named += 1;
            }
        }
        assert_eq!(named, 1, "the factory policy has one NTP entry");
        let checked = router_config::check(cfg.unwrap(), policy).unwrap();
        let mut facts =
            router_config::HostFacts::assumed(["eth0".into(), "eth1".into(), "eth2".into()]);
        facts.state_dir = format!("{}/state", self.dir.path);
        facts.run_dir = format!("{}/run", self.dir.path);
        let conf = router_plan::compile(&checked, &facts)
            .unwrap()
            .ntp
            .chrony_conf
            .unwrap();
        assert!(
            conf.contains(&format!("\nserver {PROVIDER} iburst\n")),
            "{conf}"
        );
        conf
    }

    /// Asks from the phone namespace until the answer is at `stratum`;
    /// returns how long that took.
    async fn phone_waits_for(&self, stratum: u8, secs: u64) -> Duration {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < Duration::from_secs(secs) {
            last = ask(&self.phone.0, ROUTER_PHONES, Duration::from_millis(500)).await;
            if last.is_some_and(|a| a.stratum == stratum && a.leap != 3) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "no time at stratum {stratum} from the router within {secs} s; last answer {last:?}"
        );
    }

    /// The router namespace's UDP sockets, as `ss` lists them: local and
    /// peer address of each.
    fn router_udp_sockets(&self) -> Vec<(String, String)> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.router.0,
            "ss",
            "-H",
            "-u",
            "-a",
            "-n",
        ])
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 5).then(|| (cols[3].to_string(), cols[4].to_string()))
        })
        .collect()
    }
}

async fn running_pid(chrony: &Chrony) -> u32 {
    until(5, "chronyd to run", || chrony.status().running).await;
    chrony.status().pid.unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn the_phones_get_the_providers_time_and_nobody_else_gets_any() {
    let Some(lab) = Lab::new("chrony-serve") else {
        return;
    };
    let conf = lab.conf();
    let started = Instant::now();
    let chrony = Chrony::start(lab.opts(), &conf).unwrap();
    let pid = running_pid(&chrony).await;
    lab.phone_waits_for(PROVIDER_STRATUM + 1, 30).await;
    println!(
        "the phone got time at stratum {} {:.1} s after chronyd started",
        PROVIDER_STRATUM + 1,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        std::fs::read_to_string(lab.dir.host.join("run/chrony.conf")).unwrap(),
        conf
    );
    // The pid file the plan names holds the running chronyd.
    let pidfile = lab.dir.host.join("run/chronyd.pid");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid.to_string()
    );

    // Nothing on the WAN address; the provider is not served either.
    let wan = ask(&lab.phone.0, ROUTER_WAN, Duration::from_secs(2)).await;
    let provider = ask(&lab.provider.0, ROUTER_PHONES, Duration::from_secs(2)).await;
    assert_eq!(wan, None, "the router answers NTP on its WAN address");
    assert_eq!(provider, None, "the router serves time beyond the phones");
    // No socket on a wildcard address: the server is on the phone address,
    // a request to the provider (if one is in flight) on a connected socket.
    let sockets = lab.router_udp_sockets();
    assert!(
        sockets.contains(&(format!("{ROUTER_PHONES}:123"), "0.0.0.0:*".to_string())),
        "{sockets:?}"
    );
    for (local, peer) in &sockets {
        let wildcard = ["0.0.0.0:", "*:", "[::]:"]
            .iter()
            .any(|w| local.starts_with(w));
        assert!(!wildcard, "a socket on a wildcard address: {local} {peer}");
        assert!(
            local == &format!("{ROUTER_PHONES}:123") || peer == &format!("{PROVIDER}:123"),
            "an unexpected socket: {local} {peer}"
        );
    }

    // The drift file goes in a directory chronyd made for itself.
    assert!(lab.dir.host.join("state/chrony").is_dir());

    // The same text leaves it running; a changed one restarts it.
    assert!(!chrony.update(&conf).await.unwrap());
    assert_eq!(chrony.status().pid, Some(pid), "restarted for nothing");
    assert_eq!(chrony.status().restarts, 0);
    let changed = conf.replace("makestep 1 -1", "makestep 1 3");
    assert!(chrony.update(&changed).await.unwrap());
    let second = running_pid(&chrony).await;
    assert_ne!(second, pid, "not restarted for a changed config");
    assert!(!alive(pid));
    let took = lab.phone_waits_for(PROVIDER_STRATUM + 1, 30).await;
    println!(
        "after a restart the phone had time again within {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(chrony.status().restarts, 1);

    chrony.stop().await;
    assert!(!alive(second));
    assert!(!pidfile.exists(), "the pid file outlived chronyd");
}

#[tokio::test]
async fn a_chronyd_left_running_from_before_is_replaced_and_restarts() {
    let Some(lab) = Lab::new("chrony-left") else {
        return;
    };
    let opts = lab.opts();
    let conf = lab.conf();
    // What a routerd killed with -9 leaves behind: chronyd still running,
    // its pid in its pid file. Its parent (here the test) reaps it.
    router_sys::dnsmasq::write_conf(&opts.host_path(&opts.conf_path), &conf).unwrap();
    let command = chrony::argv(&opts.command, &opts.conf_path);
    let mut leftover = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let old = leftover.id().unwrap();
    let pidfile = lab.dir.host.join("run/chronyd.pid");
    until(5, "the leftover's pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| p.trim() == old.to_string())
    })
    .await;
    let reaped = tokio::spawn(async move { leftover.wait().await });

    let chrony = Chrony::start(opts, &conf).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), reaped)
        .await
        .expect("the leftover chronyd still runs")
        .unwrap()
        .unwrap();
    println!("the leftover chronyd: {status}");
    let new = running_pid(&chrony).await;
    assert_ne!(new, old);
    // The new one serves (the old one held the server socket until it left).
    lab.phone_waits_for(PROVIDER_STRATUM + 1, 30).await;
    let s = chrony.status();
    assert!(s.running, "{s:?}");
    assert_eq!(s.pid, Some(new), "{s:?}");
    // Restarted (the WAN came up), it starts although the pid file it
    // could not remove still names the instance that just exited.
    chrony.restart().await;
    let again = running_pid(&chrony).await;
    assert_ne!(again, new);
    lab.phone_waits_for(PROVIDER_STRATUM + 1, 30).await;
    let s = chrony.status();
    assert_eq!((s.pid, s.restarts), (Some(again), 1), "{s:?}");
    chrony.stop().await;
}

#[tokio::test]
async fn a_stale_pid_file_naming_another_process_does_not_stop_chronyd() {
    let Some(lab) = Lab::new("chrony-stale") else {
        return;
    };
    // The pid file of a chronyd that is gone names a process that reused
    // its pid; chronyd alone would refuse to start.
    let mut other = tokio::process::Command::new("sleep")
        .arg("60")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let other_pid = other.id().unwrap();
    std::fs::write(
        lab.dir.host.join("run/chronyd.pid"),
        format!("{other_pid}\n"),
    )
    .unwrap();
    let chrony = Chrony::start(lab.opts(), &lab.conf()).unwrap();
    let pid = running_pid(&chrony).await;
    lab.phone_waits_for(PROVIDER_STRATUM + 1, 30).await;
    let s = chrony.status();
    assert_eq!((s.pid, s.restarts), (Some(pid), 0), "{s:?}");
    assert!(
        alive(other_pid),
        "the process the stale file named was stopped"
    );
    chrony.stop().await;
    other.kill().await.unwrap();
}

//! The router lab: five network namespaces wired like a customer site, with
//! the real `routerd` binary in the router's, so tests prove the spec by what
//! crosses the wire.
//!
//! ```text
//!  phone: eth0 10.20.0.100 ──── phone0 10.20.0.1  ┐
//!                                                 rt: wan0 203.0.113.10 ──── rt0 203.0.113.1 :isp
//!  pc:  eth0 192.168.1.100 ──── lan0 192.168.1.1  ┘
//!  isp: prov0 198.51.100.1 ──── isp0 198.51.100.2 :prov (lo: 185.72.208.10, 185.72.211.250, 192.0.2.80)
//! ```
//!
//! - `rt` runs routerd chrooted into the trixie root (`ROUTERD_TRIXIE_ROOT`,
//!   default `/var/cache/routerd/trixie-test-root`), so it uses the nft the
//!   router ships. Its /etc/routerd, /run/routerd and /var/lib/routerd are
//!   per-lab directories ([`Lab::etc_dir`], [`Lab::run_dir`],
//!   [`Lab::state_dir`]); the host facts are read from the namespace's own
//!   /sys and /proc.
//! - `isp` routes between the router's WAN subnet and the provider, and has
//!   NO route to private ranges: a reply reaches a phone or a PC only through
//!   the router's NAT. Its port `rt0` is where a WAN DHCP server can run.
//! - `prov` holds the provider's addresses ([`PROVIDER_SIP`],
//!   [`PROVIDER_EDGE`], both in the policy's 185.72.208.0/22) and one
//!   internet host outside that range ([`INTERNET_HOST`]) on its loopback.
//! - `phone` sits on the router's dedicated phone port (the host kernel has no
//!   8021q); `pc` on the data LAN.
//!
//! The API:
//! - [`Lab::start`]: [`Lab::build`] + [`Lab::run_router_once`] (routerd
//!   addresses its own ports), or `None` (after printing "skipped") when the
//!   trixie root or root privileges are missing.
//! - [`Lab::build`] makes the topology and writes the config, without starting
//!   anything in `rt`; [`Lab::router_argv`] wraps any routerd arguments in the
//!   chroot, so a daemon mode is `lab.spawn(Ns::Router, &lab.router_argv(..))`.
//! - [`Lab::exec`], [`Lab::sh`] run a command in a namespace; [`Lab::spawn`]
//!   starts one as a [`Peer`] (killed when dropped).
//! - [`Lab::listen`], [`Lab::probe`], [`Lab::ping`]: TCP/UDP listeners that
//!   answer with the source address they saw, and probes that report
//!   [`Outcome`]s (tests/lab/peer.py). [`Lab::capture`]: tcpdump to a pcap
//!   file, read back as [`pcap::Packet`]s. [`Lab::flows`]: the router's
//!   conntrack table.
//!
//! Dropping the lab kills every process in its namespaces, deletes them and
//! removes its directory, also when a test panics (with `ROUTERD_LAB_KEEP`
//! set, a failed test's directory stays, captures included). Names carry the
//! process id and a counter, so labs of parallel tests never meet.

#![allow(dead_code)] // each test binary that includes the lab uses a part of it

pub mod pcap;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The router's WAN address (static, `wan.address` of the lab configs).
pub const WAN_ADDR: &str = "203.0.113.10";
/// The ISP's address on the router's WAN subnet: the router's gateway.
pub const ISP_ADDR: &str = "203.0.113.1";
/// The ISP's address on its link to the provider.
pub const ISP_PROVIDER_SIDE: &str = "198.51.100.1";
/// The provider's address on its link to the ISP.
pub const PROVIDER_LINK: &str = "198.51.100.2";
/// The provider's SIP server, inside 185.72.208.0/22 (spec F5).
pub const PROVIDER_SIP: &str = "185.72.208.10";
/// A provider address near the far end of 185.72.208.0/22.
pub const PROVIDER_EDGE: &str = "185.72.211.250";
/// An internet host outside the provider's range, behind the ISP.
pub const INTERNET_HOST: &str = "192.0.2.80";
/// The router on the data LAN (`lan.address`).
pub const LAN_ROUTER: &str = "192.168.1.1";
/// The PC on the data LAN.
pub const PC_ADDR: &str = "192.168.1.100";
/// The router on the phone network (`phones.address`).
pub const PHONES_ROUTER: &str = "10.20.0.1";
/// The phone.
pub const PHONE_ADDR: &str = "10.20.0.100";

/// The router's WAN port (`wan.interface`).
pub const WAN_IF: &str = "wan0";
/// The router's data LAN port (`lan.interface`).
pub const LAN_IF: &str = "lan0";
/// The router's dedicated phone port (`phones.interface`).
pub const PHONES_IF: &str = "phone0";
/// The ISP's port towards the router (a WAN DHCP server listens here).
pub const ISP_ROUTER_IF: &str = "rt0";
/// The ISP's port towards the provider.
pub const ISP_PROVIDER_IF: &str = "prov0";
/// The provider's port towards the ISP.
pub const PROVIDER_IF: &str = "isp0";
/// The port of the phone and of the PC.
pub const HOST_IF: &str = "eth0";

/// The default lab config: static WAN, phones on `phone0`, `phones.egress`
/// left at "provider".
pub const ROUTER_TOML: &str = include_str!("router.toml");
/// The same with `phones.egress = "strict"`.
pub const ROUTER_STRICT_TOML: &str = include_str!("router-strict.toml");

/// Where the trixie root is when `ROUTERD_TRIXIE_ROOT` is not set.
const DEFAULT_TRIXIE_ROOT: &str = "/var/cache/routerd/trixie-test-root";
/// Where routerd's binaries are mounted inside the root.
const ROOT_BIN: &str = "/opt/routerd";

/// One namespace of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// The router, running routerd.
    Router,
    /// The ISP: the router's WAN side.
    Isp,
    /// The provider, behind the ISP.
    Provider,
    /// A phone on the router's phone port.
    Phone,
    /// A PC on the router's data LAN.
    Pc,
}

impl Ns {
    /// Every namespace, in creation order.
    pub const ALL: [Ns; 5] = [Ns::Router, Ns::Isp, Ns::Provider, Ns::Phone, Ns::Pc];

    /// Short name, part of the namespace's name.
    pub fn role(self) -> &'static str {
        match self {
            Ns::Router => "rt",
            Ns::Isp => "isp",
            Ns::Provider => "prov",
            Ns::Phone => "phone",
            Ns::Pc => "pc",
        }
    }
}

/// The outcome of one probe by tests/lab/peer.py.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The listener answered; it saw the connection come from this address.
    Reply {
        /// The source address the listener saw.
        seen: String,
    },
    /// Nothing came back: a silent drop.
    Timeout,
    /// TCP reset or ICMP port unreachable: nothing listens there.
    Refused,
    /// ICMP host, network or admin-prohibited unreachable: a firewall reject.
    Unreachable,
    /// Anything else, with the probe's words.
    Error(String),
}

impl Outcome {
    /// The source address the listener saw, if it answered.
    pub fn seen(&self) -> Option<&str> {
        match self {
            Outcome::Reply { seen } => Some(seen),
            _ => None,
        }
    }

    /// The listener answered.
    pub fn answered(&self) -> bool {
        matches!(self, Outcome::Reply { .. })
    }

    fn parse(text: &str) -> Outcome {
        let mut words = text.split_whitespace();
        match words.next() {
            Some("reply") => match (words.next(), words.next()) {
                (Some("seen"), Some(addr)) => Outcome::Reply {
                    seen: addr.to_string(),
                },
                _ => Outcome::Error(format!("unexpected answer: {text}")),
            },
            Some("timeout") => Outcome::Timeout,
            Some("refused") => Outcome::Refused,
            Some("unreachable") => Outcome::Unreachable,
            _ => Outcome::Error(text.to_string()),
        }
    }
}

/// One conntrack entry of the router, as `conntrack -L` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// `tcp`, `udp`, `icmp`, ...
    pub proto: String,
    /// Seconds left before the entry expires.
    pub timeout: u64,
    /// The whole line.
    pub line: String,
}

impl Flow {
    /// The value of `key=` in the original direction (the first occurrence),
    /// e.g. `flow.get("dport")`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(prefix.as_str()))
    }
}

/// A lab: namespaces, links, addresses, and a per-lab directory.
#[derive(Debug)]
pub struct Lab {
    /// The lab's id: `rl<pid>-<counter>`.
    id: String,
    /// The per-lab directory: etc/, run/, state/ of the router and captures.
    dir: PathBuf,
    /// The trixie root routerd runs in.
    root: PathBuf,
}

/// The trixie root, or `None` (after saying "skipped") when the variable is
/// unset and the default root is missing. A root named by the variable that
/// has no nft is an error.
pub fn trixie_root() -> Option<PathBuf> {
    match std::env::var_os("ROUTERD_TRIXIE_ROOT") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.join("usr/sbin/nft").exists(),
                "ROUTERD_TRIXIE_ROOT={} has no usr/sbin/nft: build it with image/trixie-root.sh",
                p.display()
            );
            Some(p)
        }
        None if Path::new(DEFAULT_TRIXIE_ROOT).join("usr/sbin/nft").exists() => {
            Some(PathBuf::from(DEFAULT_TRIXIE_ROOT))
        }
        None => {
            eprintln!(
                "skipped: ROUTERD_TRIXIE_ROOT is not set and {DEFAULT_TRIXIE_ROOT} is missing (./test.sh builds it)"
            );
            None
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The programs the lab runs on the host, with the Debian package of each.
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("tcpdump", "tcpdump"),
    ("conntrack", "conntrack"),
    ("sipp", "sip-tester"),
    ("/usr/bin/python3", "python3"),
];

fn missing_tools() -> Vec<String> {
    TOOLS
        .iter()
        .filter(|(tool, _)| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .map(|(tool, pkg)| format!("{tool} (Debian package {pkg})"))
        .collect()
}

/// Quotes `s` for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Path of a file under tests/lab/.
pub fn lab_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/lab")
        .join(name)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Lab {
    /// Builds the lab and runs `routerd --once` with `config_toml` (routerd
    /// brings up and addresses the router's ports itself); panics with routerd's output if it
    /// fails. `None` (after printing "skipped") when the lab cannot run here.
    pub fn start(config_toml: &str) -> Option<Lab> {
        let lab = Lab::build(config_toml)?;
        // routerd sets up its own ports (links, addresses, the default route).
        let out = lab.run_router_once();
        assert!(
            out.status.success(),
            "routerd --once failed ({}):\n{}",
            out.status,
            text(&out)
        );
        println!("{}: {}", lab.name(Ns::Router), text(&out));
        Some(lab)
    }

    /// Makes the namespaces, links and every address and route outside the
    /// router, and writes `config_toml` as the router's
    /// /etc/routerd/router.toml. Starts nothing in the router. `None` (after
    /// printing "skipped") without the trixie root or without root
    /// privileges; a missing host tool is an error naming its package.
    pub fn build(config_toml: &str) -> Option<Lab> {
        let root = trixie_root()?;
        if !is_root() {
            eprintln!("skipped: the router lab needs root (ip netns add)");
            return None;
        }
        let missing = missing_tools();
        assert!(
            missing.is_empty(),
            "the router lab needs {} (./test.sh installs them)",
            missing.join(", ")
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "rl{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("routerd-{id}"));
        // From here on, Drop cleans up whatever was made, also on a panic.
        let lab = Lab { id, dir, root };
        for sub in ["etc", "run", "state", "captures"] {
            std::fs::create_dir_all(lab.dir.join(sub))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", lab.dir.display()));
        }
        lab.write_etc("router.toml", config_toml);
        {
            // The first `ip netns add` on a machine sets up /run/netns; two at
            // once can trip over each other there.
            static CREATING: Mutex<()> = Mutex::new(());
            let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
            for ns in Ns::ALL {
                host(&["ip", "netns", "add", &lab.name(ns)]);
            }
        }
        // Each veth is made with both ends already in their namespaces, so
        // the names never exist in the host's namespace.
        let links = [
            (Ns::Router, WAN_IF, Ns::Isp, ISP_ROUTER_IF),
            (Ns::Isp, ISP_PROVIDER_IF, Ns::Provider, PROVIDER_IF),
            (Ns::Router, PHONES_IF, Ns::Phone, HOST_IF),
            (Ns::Router, LAN_IF, Ns::Pc, HOST_IF),
        ];
        for (a, a_if, b, b_if) in links {
            host(&[
                "ip",
                "link",
                "add",
                a_if,
                "netns",
                &lab.name(a),
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                &lab.name(b),
            ]);
        }
        let no_v6 =
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1";
        lab.sh(
            Ns::Isp,
            &format!(
                "{no_v6}
                 sysctl -qw net.ipv4.ip_forward=1
                 ip link set lo up
                 ip addr add {ISP_ADDR}/24 dev {ISP_ROUTER_IF}
                 ip addr add {ISP_PROVIDER_SIDE}/24 dev {ISP_PROVIDER_IF}
                 ip link set {ISP_ROUTER_IF} up
                 ip link set {ISP_PROVIDER_IF} up
                 ip route add 185.72.208.0/22 via {PROVIDER_LINK}
                 ip route add 192.0.2.0/24 via {PROVIDER_LINK}"
            ),
        );
        lab.sh(
            Ns::Provider,
            &format!(
                "{no_v6}
                 ip link set lo up
                 ip addr add {PROVIDER_SIP}/32 dev lo
                 ip addr add {PROVIDER_EDGE}/32 dev lo
                 ip addr add {INTERNET_HOST}/32 dev lo
                 ip addr add {PROVIDER_LINK}/24 dev {PROVIDER_IF}
                 ip link set {PROVIDER_IF} up
                 ip route add default via {ISP_PROVIDER_SIDE}"
            ),
        );
        for (ns, addr, gw) in [
            (Ns::Phone, PHONE_ADDR, PHONES_ROUTER),
            (Ns::Pc, PC_ADDR, LAN_ROUTER),
        ] {
            lab.sh(
                ns,
                &format!(
                    "{no_v6}
                     ip link set lo up
                     ip addr add {addr}/24 dev {HOST_IF}
                     ip link set {HOST_IF} up
                     ip route add default via {gw}"
                ),
            );
        }
        lab.sh(Ns::Router, "ip link set lo up");
        Some(lab)
    }

    /// The argv that runs routerd with `args` in the router's namespace,
    /// chrooted into the trixie root: proc and sysfs of the namespace, the
    /// directory of the test's routerd binary at /opt/routerd, and the lab's
    /// etc, run and state directories at /etc/routerd, /run/routerd and
    /// /var/lib/routerd. The mounts live in the private mount namespace
    /// `ip netns exec` gives the process and vanish with it.
    pub fn router_argv(&self, args: &[&str]) -> Vec<String> {
        let binary = Path::new(env!("CARGO_BIN_EXE_routerd"));
        let bin_dir = binary.parent().unwrap_or(Path::new("/"));
        let name = binary
            .file_name()
            .map_or("routerd".into(), |n| n.to_string_lossy().into_owned());
        let root = self.root.to_string_lossy();
        let r = |p: &str| sh_quote(&format!("{root}{p}"));
        let q = |p: &Path| sh_quote(&p.to_string_lossy());
        let mounts = [
            (q(bin_dir), ROOT_BIN),
            (q(&self.etc_dir()), "/etc/routerd"),
            (q(&self.run_dir()), "/run/routerd"),
            (q(&self.state_dir()), "/var/lib/routerd"),
        ];
        let mut script = format!(
            "mount -t proc proc {}\nmount -t sysfs sysfs {}\n",
            r("/proc"),
            r("/sys")
        );
        for (from, to) in &mounts {
            script.push_str(&format!(
                "mkdir -p {to_in_root}\nmount --bind {from} {to_in_root}\n",
                to_in_root = r(to)
            ));
        }
        script.push_str(&format!(
            "exec chroot {} {}",
            sh_quote(&root),
            sh_quote(&format!("{ROOT_BIN}/{name}"))
        ));
        for a in args {
            script.push(' ');
            script.push_str(&sh_quote(a));
        }
        vec!["sh".into(), "-ec".into(), script]
    }

    /// Runs `routerd --once` (check, compile, apply, verify, exit) with the
    /// lab's config and the nft of the trixie root.
    pub fn run_router_once(&self) -> Output {
        let argv = self.router_argv(&[
            "--once",
            "--config",
            "/etc/routerd/router.toml",
            "--nft",
            "nft",
        ]);
        self.exec(Ns::Router, &argv)
    }

    /// The name of a namespace of this lab.
    pub fn name(&self, ns: Ns) -> String {
        format!("{}-{}", self.id, ns.role())
    }

    /// The router's /etc/routerd (host side).
    pub fn etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// The router's /run/routerd (host side).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The router's /var/lib/routerd (host side).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Writes a file of the router's /etc/routerd (a policy, host facts).
    pub fn write_etc(&self, name: &str, text: &str) {
        let path = self.etc_dir().join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Runs `argv` in a namespace and returns its output, whatever its status.
    pub fn exec<S: AsRef<str>>(&self, ns: Ns, argv: &[S]) -> Output {
        self.command(ns, argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec {}: {e}", self.name(ns)))
    }

    /// Runs an sh script (`sh -ec`) in a namespace; panics with its output
    /// unless it succeeds; returns its stdout.
    pub fn sh(&self, ns: Ns, script: &str) -> String {
        let out = self.exec(ns, &["sh", "-ec", script]);
        assert!(
            out.status.success(),
            "in {}: {script}\n{}",
            self.name(ns),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` in a namespace. Its stdout and stderr lines are
    /// collected by the returned [`Peer`], which kills it when dropped.
    pub fn spawn<S: AsRef<str>>(&self, ns: Ns, argv: &[S]) -> Peer {
        let what = format!(
            "{} in {}",
            argv.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" "),
            self.name(ns)
        );
        let mut child = self
            .command(ns, argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let readers = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for reader in readers.into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Peer {
            child,
            what,
            lines,
            log: Vec::new(),
        }
    }

    fn command<S: AsRef<str>>(&self, ns: Ns, argv: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name(ns)]);
        cmd.args(argv.iter().map(AsRef::as_ref));
        cmd
    }

    /// Starts tests/lab/peer.py listening on these TCP and UDP ports (all
    /// addresses) in a namespace; returns once every port is bound. Each
    /// connection or datagram is answered with the source address seen.
    pub fn listen(&self, ns: Ns, tcp: &[u16], udp: &[u16]) -> Peer {
        let join = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let script = lab_file("peer.py");
        let mut peer = self.spawn(
            ns,
            &[
                "/usr/bin/python3",
                &script.to_string_lossy(),
                "listen",
                "--tcp",
                &join(tcp),
                "--udp",
                &join(udp),
            ],
        );
        peer.wait_for("ready", Duration::from_secs(10));
        peer
    }

    /// Probes `targets` (`"tcp:80"`, `"udp:5060"`) on `to` from a namespace,
    /// all at once, each waiting at most 1.5 s; returns the outcomes in order.
    pub fn probe(&self, from: Ns, to: &str, targets: &[&str]) -> Vec<Outcome> {
        let script = lab_file("peer.py");
        let mut argv = vec![
            "/usr/bin/python3".to_string(),
            script.to_string_lossy().into_owned(),
            "probe".into(),
            "--to".into(),
            to.into(),
        ];
        argv.extend(targets.iter().map(|t| t.to_string()));
        let out = self.exec(from, &argv);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "probe from {} to {to} failed:\n{}",
            self.name(from),
            text(&out)
        );
        targets
            .iter()
            .map(|t| {
                let line = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{t} ")))
                    .unwrap_or_else(|| panic!("probe printed nothing for {t}:\n{stdout}"));
                Outcome::parse(line)
            })
            .collect()
    }

    /// Waits until something in a namespace listens on `proto` ("tcp" or
    /// "udp") port `port` (for programs that print no "ready" line, like
    /// sipp); panics after `timeout`.
    pub fn wait_bound(&self, ns: Ns, proto: &str, port: u16, timeout: Duration) {
        let flag = if proto == "tcp" { "-Hnlt" } else { "-Hnlu" };
        let filter = format!("sport = :{port}");
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec(ns, &["ss", flag, &filter]);
            if out.status.success() && !out.stdout.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {proto} port {port} in {} after {timeout:?}",
                self.name(ns)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One ping (ICMP echo, by tests/lab/peer.py) from a namespace, waiting
    /// at most 1.5 s: [`Outcome::Reply`] when the echo reply came,
    /// [`Outcome::Unreachable`] when an ICMP error came back, else
    /// [`Outcome::Timeout`].
    pub fn ping(&self, from: Ns, to: &str) -> Outcome {
        let script = lab_file("peer.py");
        let out = self.exec(
            from,
            &[
                "/usr/bin/python3",
                &script.to_string_lossy(),
                "ping",
                "--to",
                to,
            ],
        );
        assert!(
            out.status.success(),
            "ping from {} to {to} failed:\n{}",
            self.name(from),
            text(&out)
        );
        Outcome::parse(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Starts tcpdump on `iface` in a namespace with a capture `filter`;
    /// returns once it listens. [`Capture::finish`] stops it and reads the
    /// packets.
    pub fn capture(&self, ns: Ns, iface: &str, filter: &str) -> Capture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let file = self.dir.join("captures").join(format!(
            "{}-{iface}-{}.pcap",
            ns.role(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut argv = vec![
            "tcpdump".to_string(),
            "-i".into(),
            iface.into(),
            "-n".into(),
            "-U".into(),
            // Without it, packets wait in the capture ring and a stop loses them.
            "--immediate-mode".into(),
            // As root tcpdump drops to its own user, which cannot write here.
            "-Z".into(),
            "root".into(),
            "-w".into(),
            file.to_string_lossy().into_owned(),
        ];
        argv.extend(filter.split_whitespace().map(str::to_string));
        let mut peer = self.spawn(ns, &argv);
        peer.wait_for("listening on", Duration::from_secs(10));
        Capture { peer, file }
    }

    /// The router's conntrack entries matching `filter` (conntrack options,
    /// e.g. `["-p", "udp", "--orig-src", PHONE_ADDR]`).
    pub fn flows(&self, filter: &[&str]) -> Vec<Flow> {
        let mut argv = vec!["conntrack", "-L"];
        argv.extend(filter);
        let out = self.exec(Ns::Router, &argv);
        assert!(
            out.status.success(),
            "conntrack -L {filter:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut w = line.split_whitespace();
                let proto = w.next()?.to_string();
                let _number = w.next()?;
                let timeout = w.next()?.parse().ok()?;
                Some(Flow {
                    proto,
                    timeout,
                    line: line.to_string(),
                })
            })
            .collect()
    }
}

fn host(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv[0]));
    assert!(out.status.success(), "{}: {}", argv.join(" "), text(&out));
}

impl Drop for Lab {
    /// Kills every process in the lab's namespaces, deletes them and removes
    /// the lab's directory. Keeps going past errors and reports them all.
    fn drop(&mut self) {
        let mut errors = Vec::new();
        for ns in Ns::ALL {
            let name = self.name(ns);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
                let pids = String::from_utf8_lossy(&out.stdout).into_owned();
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
        }
        for ns in Ns::ALL {
            let name = self.name(ns);
            if !Path::new("/run/netns").join(&name).exists() {
                continue;
            }
            match Command::new("ip").args(["netns", "del", &name]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => errors.push(format!("ip netns del {name}: {}", text(&o))),
                Err(e) => errors.push(format!("ip netns del {name}: {e}")),
            }
        }
        if std::thread::panicking() && std::env::var_os("ROUTERD_LAB_KEEP").is_some() {
            eprintln!(
                "lab {}: kept {} (config, captures) for inspection",
                self.id,
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        if !errors.is_empty() {
            eprintln!("lab {} teardown: {}", self.id, errors.join("; "));
        }
    }
}

/// A process started in a namespace of the lab. Its output lines are kept;
/// dropping it kills it.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    what: String,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Peer {
    /// The process id (for `ip netns exec` + `exec` chains: the program's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line containing `needle` is printed and returns it;
    /// panics with everything printed so far if it does not come in time or
    /// the process ends first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.log.push(line.clone());
                    if hit {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line with {needle:?} within {timeout:?}; printed:\n{}",
                    self.what,
                    self.log.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: ended ({:?}) without printing {needle:?}; printed:\n{}",
                    self.what,
                    self.child.wait().ok(),
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to end by itself (at most `timeout`, then it is
    /// killed and this panics); returns its status and everything it printed.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return (status, self.drain()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let printed = self.drain();
                    panic!(
                        "{} did not end within {timeout:?}; printed:\n{printed}",
                        self.what
                    );
                }
                Err(e) => panic!("{}: {e}", self.what),
            }
        }
    }

    /// Stops the process with SIGINT (tcpdump then writes out what it has)
    /// and returns everything it printed.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.drain()
    }

    /// Everything printed so far (stdout and stderr lines, interleaved).
    pub fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    /// All output, once the process has ended and its pipes are closed (at
    /// most 2 s).
    fn drain(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => break,
            }
        }
        self.log.join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running tcpdump writing a pcap file.
#[derive(Debug)]
pub struct Capture {
    peer: Peer,
    file: PathBuf,
}

impl Capture {
    /// Stops tcpdump and returns the IPv4 packets it captured.
    pub fn finish(self) -> Vec<pcap::Packet> {
        let file = self.file.clone();
        let log = self.peer.stop();
        let bytes = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}\ntcpdump:\n{log}", file.display()));
        pcap::ipv4_packets(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}\ntcpdump:\n{log}", file.display()))
    }
}

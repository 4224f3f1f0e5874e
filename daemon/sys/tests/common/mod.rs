//! What the kernel tests of router-sys share: commands that must succeed,
//! network namespaces and a directory removed on drop, running code inside a
//! namespace, where the shipped programs come from, and reading the events a
//! DHCP client's record script wrote.

#![allow(dead_code)] // each test file uses a part of it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a command that must succeed; returns its standard output.
pub fn run(argv: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named network namespaces of one test, `<prefix>-<role>-<pid>`, deleted
/// on drop.
pub struct Namespaces {
    prefix: &'static str,
    names: Vec<String>,
}

impl Namespaces {
    /// None yet; names will start with `prefix`.
    pub fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            names: Vec::new(),
        }
    }

    /// Makes the namespace for `role` and returns its name.
    pub fn add(&mut self, role: &str) -> String {
        let name = format!("{}-{role}-{}", self.prefix, std::process::id());
        run(&["ip", "netns", "add", &name]);
        self.names.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `f` on a thread that has entered namespace `ns`: sockets it opens
/// (UDP, TCP and netlink alike) belong to that namespace.
pub fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// A network namespace made for the test, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Self {
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
pub struct Userland {
    pub root: PathBuf,
    pub chroot: bool,
}

impl Userland {
    /// `what` names the program the test needs, for the "skipped" line.
    pub fn find(what: &str) -> Option<Self> {
        if let Some(root) = std::env::var_os("ROUTERD_TRIXIE_ROOT") {
            return Some(Self {
                root: root.into(),
                chroot: true,
            });
        }
        if Command::new("busybox").arg("true").output().is_err() {
            eprintln!(
                "skipped: no {what}: ROUTERD_TRIXIE_ROOT is not set (./test.sh sets it) \
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
    pub fn command(&self, ns: &Netns, program: &[&str]) -> Vec<String> {
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
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// The test's directory, as the programs see it; removed on drop.
pub struct Dir {
    pub path: String,
    pub host: PathBuf,
}

impl Dir {
    pub fn new(userland: &Userland, test: &str) -> Self {
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

/// The events the record script wrote: each one's argument and
/// environment, complete ones only.
pub fn recorded(path: &Path) -> Vec<(String, BTreeMap<String, String>)> {
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

pub async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Host facts read from the running kernel: the network ports, whether VLAN
//! devices can be made, and the memory. The roots are parameters so tests can
//! point them at fake trees; on a router they are `/sys` and `/proc`.

use std::io;
use std::path::{Path, PathBuf};

use router_config::HostFacts;

/// What went wrong reading the host facts.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The interface list could not be read.
    #[error("cannot list network interfaces in {dir}")]
    Interfaces {
        /// The directory listed (`<sys>/class/net`).
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The memory information could not be read.
    #[error("cannot read {path}")]
    Meminfo {
        /// The file (`<proc>/meminfo`).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The memory information has no usable `MemTotal: <n> kB` line.
    #[error("cannot read the memory size from {path}: {why}")]
    MemTotal {
        /// The file (`<proc>/meminfo`).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Reads the facts the plan needs from the kernel under `sys_root` (`/sys`)
/// and `proc_root` (`/proc`); `state_dir` and `run_dir` are passed through.
///
/// - `interfaces`: the entries of `<sys>/class/net` that are interfaces
///   (directories, so `bonding_masters` is not one), sorted, without `lo` and
///   without VLAN devices: routerd makes the VLANs itself, so a leftover one
///   is not a port the config may name. A VLAN device is one listed in
///   `<proc>/net/vlan/` or with a `.` in its name (the `eth1.20` convention
///   routerd uses). Bridges, bonds and other virtual links are kept.
/// - `vlan`: `<proc>/net/vlan` exists (8021q is loaded in this namespace) or
///   `<sys>/module/8021q` exists (loaded or built in). A module that is on
///   disk but not loaded is not detected: load 8021q before reading facts.
/// - `memory_mib`: `MemTotal` of `<proc>/meminfo`, kB to MiB, rounded down.
/// - `conntrack_sizing`: `<proc>/sys/net/netfilter/nf_conntrack_max` is
///   writable by its mode; the kernel makes it 0444 outside the machine's own
///   network namespace.
/// - `wan_up`: true; routerd, which knows the WAN and its lease, sets it.
pub fn read_host_facts(
    sys_root: &Path,
    proc_root: &Path,
    state_dir: &str,
    run_dir: &str,
) -> Result<HostFacts, FactsError> {
    Ok(HostFacts {
        interfaces: interfaces(sys_root, proc_root)?,
        vlan: proc_root.join("net/vlan").exists() || sys_root.join("module/8021q").exists(),
        memory_mib: memory_mib(proc_root)?,
        conntrack_sizing: conntrack_max_writable(proc_root),
        wan_up: true,
        fq_codel: true, // the router's kernel ships fq_codel; routerd may probe it
        state_dir: state_dir.to_string(),
        run_dir: run_dir.to_string(),
    })
}

fn conntrack_max_writable(proc_root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(proc_root.join("sys/net/netfilter/nf_conntrack_max"))
        .is_ok_and(|m| m.permissions().mode() & 0o200 != 0)
}

fn interfaces(sys_root: &Path, proc_root: &Path) -> Result<Vec<String>, FactsError> {
    let dir = sys_root.join("class/net");
    let error = |source| FactsError::Interfaces {
        dir: dir.clone(),
        source,
    };
    let vlan_dir = proc_root.join("net/vlan");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(error)? {
        let entry = entry.map_err(error)?;
        // Interface names that are not UTF-8 cannot be named in the config.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // Interfaces are symlinks to device directories; follow them.
        let is_interface = entry.path().is_dir();
        let is_vlan = name.contains('.') || vlan_dir.join(&name).exists();
        if is_interface && name != "lo" && !is_vlan {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn memory_mib(proc_root: &Path) -> Result<u32, FactsError> {
    let path = proc_root.join("meminfo");
    let text = std::fs::read_to_string(&path).map_err(|source| FactsError::Meminfo {
        path: path.clone(),
        source,
    })?;
    let bad = |why: String| FactsError::MemTotal {
        path: path.clone(),
        why,
    };
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .ok_or_else(|| bad("no MemTotal line".into()))?;
    let kib = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [n, "kB"] => n
            .parse::<u64>()
            .map_err(|e| bad(format!("MemTotal {:?}: {e}", line.trim())))?,
        _ => return Err(bad(format!("MemTotal {:?} is not `<n> kB`", line.trim()))),
    };
    // Saturate: more than 4 PiB only ever means "a lot".
    Ok(u32::try_from(kib / 1024).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::fs;

    const MEMINFO: &str = "MemTotal:         524288 kB\nMemFree:          100000 kB\n";

    /// A fake /sys with real-looking symlinked interfaces and a fake /proc.
    fn host(ifaces: &[&str]) -> (TempDir, TempDir) {
        let sys = TempDir::new();
        let proc = TempDir::new();
        sys.dir("class/net").dir("devices/virtual/net");
        for name in ifaces {
            sys.dir(&format!("devices/virtual/net/{name}"));
            std::os::unix::fs::symlink(
                format!("../../devices/virtual/net/{name}"),
                sys.0.join("class/net").join(name),
            )
            .unwrap();
        }
        proc.file("meminfo", MEMINFO);
        (sys, proc)
    }

    fn read(sys: &TempDir, proc: &TempDir) -> Result<HostFacts, FactsError> {
        read_host_facts(&sys.0, &proc.0, "/var/lib/routerd", "/run/routerd")
    }

    #[test]
    fn ports_sorted_without_lo_and_vlans() {
        let (sys, proc) = host(&["eth1", "lo", "eth0", "eth1.20", "br-lan", "bond0", "phone"]);
        // A VLAN named without a dot is known from /proc/net/vlan.
        proc.file("net/vlan/config", "").file("net/vlan/phone", "");
        // Present when the bonding module is loaded; not an interface.
        sys.file("class/net/bonding_masters", "bond0\n");
        let facts = read(&sys, &proc).unwrap();
        assert_eq!(facts.interfaces, ["bond0", "br-lan", "eth0", "eth1"]);
        assert!(facts.vlan);
        assert_eq!(facts.memory_mib, 512);
        assert_eq!(facts.state_dir, "/var/lib/routerd");
        assert_eq!(facts.run_dir, "/run/routerd");
    }

    #[test]
    fn vlan_support_from_proc_or_from_the_module() {
        let (sys, proc) = host(&["eth0"]);
        assert!(!read(&sys, &proc).unwrap().vlan);
        sys.dir("module/8021q");
        assert!(read(&sys, &proc).unwrap().vlan);
        let (sys, proc) = host(&["eth0"]);
        proc.dir("net/vlan");
        assert!(read(&sys, &proc).unwrap().vlan);
    }

    #[test]
    fn memory_rounds_down_to_mib() {
        let (sys, proc) = host(&[]);
        proc.file("meminfo", "MemFree: 1 kB\nMemTotal:  2047 kB\n");
        assert_eq!(read(&sys, &proc).unwrap().memory_mib, 1);
    }

    #[test]
    fn unusable_meminfo_is_an_error_naming_the_file() {
        for text in [
            "MemFree: 1 kB\n",
            "MemTotal: lots kB\n",
            "MemTotal: 1024 MB\n",
        ] {
            let (sys, proc) = host(&["eth0"]);
            proc.file("meminfo", text);
            let err = read(&sys, &proc).unwrap_err();
            assert!(matches!(err, FactsError::MemTotal { .. }), "{text}: {err}");
            assert!(err.to_string().contains("meminfo"), "{err}");
        }
        let (sys, proc) = host(&["eth0"]);
        fs::remove_file(proc.0.join("meminfo")).unwrap();
        assert!(matches!(
            read(&sys, &proc).unwrap_err(),
            FactsError::Meminfo { .. }
        ));
    }

    #[test]
    fn no_class_net_is_an_error_naming_it() {
        let sys = TempDir::new();
        let proc = TempDir::new();
        proc.file("meminfo", MEMINFO);
        let err = read(&sys, &proc).unwrap_err();
        assert!(err.to_string().contains("class/net"), "{err}");
    }

    #[test]
    fn reads_this_host() {
        let facts = read_host_facts(Path::new("/sys"), Path::new("/proc"), "/s", "/r").unwrap();
        assert!(!facts.interfaces.iter().any(|i| i == "lo"), "{facts:?}");
        assert!(facts.memory_mib > 0, "{facts:?}");
        let mut sorted = facts.interfaces.clone();
        sorted.sort();
        assert_eq!(facts.interfaces, sorted);
    }
}

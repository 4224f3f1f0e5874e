//! Writing kernel settings under /proc/sys, and reading them back.
//!
//! Apply is all-or-nothing as far as a file system allows: every path is
//! validated and every current value read before the first write, so a bad
//! path or a missing module (the likely failures) writes nothing; a write the
//! kernel refuses midway undoes the writes before it. Only differing values
//! are written, so applying the same plan twice changes nothing.

use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use router_plan::sysctl::{Phase, Sysctl};

/// What went wrong reading or writing a kernel setting.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The path could escape the sysctl tree or is malformed; nothing of the
    /// call was read or written.
    #[error("refusing sysctl path {path:?}: {why}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The value cannot be written as one line; nothing of the call was written.
    #[error("refusing value {value:?} for sysctl {path}: it must be one line")]
    BadValue {
        /// The setting.
        path: String,
        /// The value as given.
        value: String,
    },
    /// The setting does not exist on this kernel; nothing of the call was written.
    #[error("cannot read sysctl {path}: it does not exist under {root} ({hint})")]
    Missing {
        /// The setting.
        path: String,
        /// The sysctl root it was looked up in.
        root: PathBuf,
        /// What is likely missing (a module, an interface).
        hint: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The setting exists but could not be read.
    #[error("cannot read sysctl {path}")]
    Read {
        /// The setting.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a write; the writes before it in the same call were
    /// undone as far as `restore` says.
    #[error("cannot write {value:?} to sysctl {path} ({restore})")]
    Write {
        /// The setting.
        path: String,
        /// The value that was refused.
        value: String,
        /// What undoing the earlier writes of this call achieved.
        restore: Restore,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The outcome of undoing a failed call's earlier writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// Settings put back to their old value, in the order they were restored.
    pub restored: Vec<String>,
    /// Settings that could not be put back, with why: these are left changed.
    pub failed: Vec<(String, String)>,
}

impl fmt::Display for Restore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.restored.is_empty() && self.failed.is_empty() {
            return f.write_str("nothing had been written before it");
        }
        write!(f, "restored {} earlier write(s)", self.restored.len())?;
        for (path, why) in &self.failed {
            write!(f, "; could NOT restore {path}: {why}")?;
        }
        Ok(())
    }
}

/// One setting that apply changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting, relative to the sysctl root.
    pub path: String,
    /// The value before (trimmed).
    pub old: String,
    /// The value written.
    pub new: String,
}

/// One setting whose read-back value differs from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The setting, relative to the sysctl root.
    pub path: String,
    /// The planned value.
    pub wanted: String,
    /// The value read back, or why it could not be read.
    pub actual: String,
}

/// The kernel's settings under one root directory: `/proc/sys` on a router,
/// a temporary directory in unit tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctls {
    root: PathBuf,
}

impl Default for Sysctls {
    fn default() -> Self {
        Self::new("/proc/sys")
    }
}

impl Sysctls {
    /// Settings under `root` (paths like `net/ipv4/ip_forward` are joined to it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current value of one setting, trimmed.
    pub fn read(&self, path: &str) -> Result<String, SysctlError> {
        validate_path(path)?;
        self.read_valid(path)
    }

    /// Writes the settings of `phase`, in the given order, that differ from
    /// the running kernel, and returns what changed.
    ///
    /// Every path of `wanted` (all phases, so a typo in a later phase stops
    /// the earlier one too) is validated, then every setting of `phase` is
    /// read, before anything is written. A write refused midway undoes the
    /// earlier writes of this call in reverse order, best effort; the error
    /// says how that went.
    pub fn apply(&self, wanted: &[Sysctl], phase: Phase) -> Result<Vec<Change>, SysctlError> {
        for s in wanted {
            validate_path(&s.path)?;
            validate_value(s)?;
        }
        // The value each path will hold once the earlier entries are written,
        // so a path listed twice is compared with what this call left, not
        // with what it found.
        let mut current: HashMap<&str, String> = HashMap::new();
        let mut writes = Vec::new();
        for s in wanted.iter().filter(|s| s.phase == phase) {
            let now = match current.get(s.path.as_str()) {
                Some(v) => v.clone(),
                None => self.read_valid(&s.path)?,
            };
            if !same_value(&now, &s.value) {
                writes.push(Change {
                    path: s.path.clone(),
                    old: now,
                    new: s.value.clone(),
                });
            }
            current.insert(&s.path, s.value.clone());
        }
        for (done, change) in writes.iter().enumerate() {
            if let Err(source) = self.write_valid(&change.path, &change.new) {
                return Err(SysctlError::Write {
                    path: change.path.clone(),
                    value: change.new.clone(),
                    restore: self.restore(&writes[..done]),
                    source,
                });
            }
        }
        Ok(writes)
    }

    /// Reads every setting back (all phases) and lists those that differ.
    /// Unreadable settings are listed too, with the error as `actual`.
    pub fn verify(&self, wanted: &[Sysctl]) -> Vec<Mismatch> {
        wanted
            .iter()
            .filter_map(|s| {
                let actual = match self.read(&s.path) {
                    Ok(v) if same_value(&v, &s.value) => return None,
                    Ok(v) => v,
                    Err(e) => format!("unreadable: {}", error_chain(&e)),
                };
                Some(Mismatch {
                    path: s.path.clone(),
                    wanted: s.value.clone(),
                    actual,
                })
            })
            .collect()
    }

    /// Puts back the old values of `written`, newest first, and keeps going
    /// past failures so as much as possible is undone.
    fn restore(&self, written: &[Change]) -> Restore {
        let mut outcome = Restore {
            restored: Vec::new(),
            failed: Vec::new(),
        };
        for change in written.iter().rev() {
            match self.write_valid(&change.path, &change.old) {
                Ok(()) => outcome.restored.push(change.path.clone()),
                Err(e) => outcome.failed.push((change.path.clone(), e.to_string())),
            }
        }
        outcome
    }

    fn read_valid(&self, path: &str) -> Result<String, SysctlError> {
        match std::fs::read_to_string(self.root.join(path)) {
            Ok(text) => Ok(text.trim().to_string()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Err(SysctlError::Missing {
                path: path.to_string(),
                root: self.root.clone(),
                hint: missing_hint(path),
                source,
            }),
            Err(source) => Err(SysctlError::Read {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Never creates the file: a setting the kernel does not offer is an
    /// error, not a new file under the root.
    fn write_valid(&self, path: &str, value: &str) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.root.join(path))?;
        // One write call: /proc/sys parses each write on its own.
        file.write_all(format!("{value}\n").as_bytes())
    }
}

/// The kernel prints multi-number settings with tabs
/// (`net/ipv4/ip_local_port_range` is `32768\t60999`), so values are compared
/// word by word.
fn same_value(actual: &str, wanted: &str) -> bool {
    actual.split_whitespace().eq(wanted.split_whitespace())
}

/// A path stays inside the root: relative, no `.` or `..`, no empty segment,
/// and only the characters sysctl names and interface names use here.
fn validate_path(path: &str) -> Result<(), SysctlError> {
    let bad = |why| {
        Err(SysctlError::BadPath {
            path: path.to_string(),
            why,
        })
    };
    if path.starts_with('/') {
        return bad("it must be relative to the sysctl root");
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return bad("it has an empty segment");
        }
        if segment == "." || segment == ".." {
            return bad("it has a `.` or `..` segment");
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !segment.chars().all(allowed) {
            return bad("segments may only use A-Z a-z 0-9 . _ -");
        }
    }
    Ok(())
}

/// The kernel stops parsing a write at a newline, so a multi-line value would
/// be half-written.
fn validate_value(s: &Sysctl) -> Result<(), SysctlError> {
    if s.value.contains(['\n', '\r', '\0']) {
        return Err(SysctlError::BadValue {
            path: s.path.clone(),
            value: s.value.clone(),
        });
    }
    Ok(())
}

/// Why a setting is likely absent: settings appear with the module or the
/// interface they belong to.
fn missing_hint(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["net", "netfilter", ..] => {
            "nf_conntrack is not loaded: the net/netfilter settings appear with it".into()
        }
        ["net", "bridge", ..] => {
            "br_netfilter is not loaded: the net/bridge settings appear with it".into()
        }
        ["net", family @ ("ipv4" | "ipv6"), "conf", ifname, ..]
            if *ifname != "all" && *ifname != "default" =>
        {
            format!("interface {ifname} does not exist (yet): net/{family}/conf/{ifname} appears with the link")
        }
        ["net", "ipv6", ..] => {
            "IPv6 is not available (module not loaded or disabled at boot)".into()
        }
        _ => "the kernel lacks this setting: a module is not loaded or the option is not built in"
            .into(),
    }
}

/// An error and its causes on one line, for places that keep text only.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::fs;

    /// A fake sysctl tree with the given files and values.
    fn tree(files: &[(&str, &str)]) -> (TempDir, Sysctls) {
        let dir = TempDir::new();
        for (path, value) in files {
            dir.file(path, &format!("{value}\n"));
        }
        let sysctls = Sysctls::new(&dir.0);
        (dir, sysctls)
    }

    fn set(path: &str, value: &str, phase: Phase) -> Sysctl {
        Sysctl {
            path: path.into(),
            value: value.into(),
            reason: "test".into(),
            phase,
        }
    }

    fn change(path: &str, old: &str, new: &str) -> Change {
        Change {
            path: path.into(),
            old: old.into(),
            new: new.into(),
        }
    }

    fn raw(dir: &TempDir, path: &str) -> String {
        fs::read_to_string(dir.0.join(path)).unwrap()
    }

    const FORWARD: &str = "net/ipv4/ip_forward";
    const RP: &str = "net/ipv4/conf/all/rp_filter";
    const SYN: &str = "net/ipv4/tcp_syncookies";

    #[test]
    fn default_root_is_proc_sys() {
        assert_eq!(Sysctls::default().root(), Path::new("/proc/sys"));
    }

    #[test]
    fn read_trims() {
        let (_dir, s) = tree(&[(RP, "  2 ")]);
        assert_eq!(s.read(RP).unwrap(), "2");
    }

    #[test]
    fn writes_only_differing_values_and_reports_them() {
        let (dir, s) = tree(&[(RP, "0"), (SYN, "1")]);
        let mtime = |p: &str| fs::metadata(dir.0.join(p)).unwrap().modified().unwrap();
        // An unchanged mtime proves the equal value was not rewritten.
        let syn_before = mtime(SYN);
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(SYN, "1", Phase::BeforeFirewall),
        ];
        let changes = s.apply(&wanted, Phase::BeforeFirewall).unwrap();
        assert_eq!(changes, [change(RP, "0", "1")]);
        assert_eq!(raw(&dir, RP), "1\n");
        assert_eq!(raw(&dir, SYN), "1\n");
        assert_eq!(mtime(SYN), syn_before);
    }

    #[test]
    fn second_apply_changes_nothing() {
        let (_dir, s) = tree(&[(RP, "0"), (SYN, "0")]);
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(SYN, "1", Phase::BeforeFirewall),
        ];
        assert_eq!(s.apply(&wanted, Phase::BeforeFirewall).unwrap().len(), 2);
        assert_eq!(s.apply(&wanted, Phase::BeforeFirewall).unwrap(), []);
        assert_eq!(s.verify(&wanted), []);
    }

    #[test]
    fn multi_word_values_compare_word_by_word() {
        let range = "net/ipv4/ip_local_port_range";
        let (dir, s) = tree(&[(range, "32768\t60999")]);
        let wanted = [set(range, "32768 60999", Phase::BeforeFirewall)];
        assert_eq!(s.apply(&wanted, Phase::BeforeFirewall).unwrap(), []);
        assert_eq!(raw(&dir, range), "32768\t60999\n");
    }

    #[test]
    fn only_the_requested_phase_is_written() {
        let (dir, s) = tree(&[(RP, "0"), (FORWARD, "0")]);
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(FORWARD, "1", Phase::AfterFirewall),
        ];
        let before = s.apply(&wanted, Phase::BeforeFirewall).unwrap();
        assert_eq!(before, [change(RP, "0", "1")]);
        assert_eq!(raw(&dir, FORWARD), "0\n");
        // Forwarding is still off, and verify says so.
        let pending = s.verify(&wanted);
        assert_eq!(
            pending,
            [Mismatch {
                path: FORWARD.into(),
                wanted: "1".into(),
                actual: "0".into()
            }]
        );
        let after = s.apply(&wanted, Phase::AfterFirewall).unwrap();
        assert_eq!(after, [change(FORWARD, "0", "1")]);
        assert_eq!(s.verify(&wanted), []);
    }

    #[test]
    fn a_path_listed_twice_ends_at_its_last_value() {
        let (dir, s) = tree(&[(RP, "0")]);
        let wanted = [
            set(RP, "2", Phase::BeforeFirewall),
            set(RP, "0", Phase::BeforeFirewall),
        ];
        let changes = s.apply(&wanted, Phase::BeforeFirewall).unwrap();
        assert_eq!(changes, [change(RP, "0", "2"), change(RP, "2", "0")]);
        assert_eq!(raw(&dir, RP), "0\n");
    }

    #[test]
    fn bad_paths_are_refused_before_anything_is_written() {
        for bad in [
            "/net/ipv4/ip_forward",
            "net/../../etc/passwd",
            "net/./ipv4/ip_forward",
            "net//ipv4/ip_forward",
            "net/ipv4/",
            "",
            "net/ipv4/conf/eth 0/rp_filter",
            "net/ipv4/conf/eth0:1/rp_filter",
        ] {
            let (dir, s) = tree(&[(RP, "0"), (FORWARD, "0")]);
            // The bad path is in the other phase and comes last: still nothing
            // is written.
            let wanted = [
                set(RP, "1", Phase::BeforeFirewall),
                set(bad, "1", Phase::AfterFirewall),
            ];
            let err = s.apply(&wanted, Phase::BeforeFirewall).unwrap_err();
            assert!(matches!(err, SysctlError::BadPath { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            assert_eq!(raw(&dir, RP), "0\n", "{bad}");
            assert!(s.read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dotted_interface_names_are_fine() {
        let path = "net/ipv6/conf/eth1.20/disable_ipv6";
        let (_dir, s) = tree(&[(path, "0")]);
        let wanted = [set(path, "1", Phase::BeforeFirewall)];
        assert_eq!(s.apply(&wanted, Phase::BeforeFirewall).unwrap().len(), 1);
    }

    #[test]
    fn multi_line_values_are_refused() {
        let (dir, s) = tree(&[(RP, "0"), (SYN, "0")]);
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(SYN, "1\n0", Phase::BeforeFirewall),
        ];
        let err = s.apply(&wanted, Phase::BeforeFirewall).unwrap_err();
        assert!(matches!(err, SysctlError::BadValue { .. }), "{err}");
        assert_eq!(raw(&dir, RP), "0\n");
    }

    #[test]
    fn a_missing_setting_names_the_path_and_the_likely_module() {
        let ct = "net/netfilter/nf_conntrack_max";
        let (dir, s) = tree(&[(RP, "0")]);
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(ct, "32768", Phase::BeforeFirewall),
        ];
        let err = s.apply(&wanted, Phase::BeforeFirewall).unwrap_err();
        assert!(matches!(err, SysctlError::Missing { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(ct) && text.contains("nf_conntrack"), "{text}");
        // Read before any write: the earlier setting is untouched, and no
        // file was created.
        assert_eq!(raw(&dir, RP), "0\n");
        assert!(!dir.0.join("net/netfilter").exists());
    }

    #[test]
    fn a_missing_interface_is_named() {
        let (_dir, s) = tree(&[(RP, "0")]);
        let err = s.read("net/ipv4/conf/eth1.20/rp_filter").unwrap_err();
        assert!(err.to_string().contains("interface eth1.20"), "{err}");
    }

    #[test]
    fn a_refused_write_undoes_the_earlier_writes() {
        let (dir, s) = tree(&[(RP, "0"), (SYN, "0")]);
        // Readable but not writable, even for root: a file with no write
        // handler, as a read-only sysctl is.
        let stuck = "kernel/stuck";
        fs::create_dir_all(dir.0.join("kernel")).unwrap();
        std::os::unix::fs::symlink("/proc/self/stat", dir.0.join(stuck)).unwrap();
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(SYN, "1", Phase::BeforeFirewall),
            set(stuck, "1", Phase::BeforeFirewall),
        ];
        let err = s.apply(&wanted, Phase::BeforeFirewall).unwrap_err();
        let SysctlError::Write { path, restore, .. } = &err else {
            panic!("expected a write error, got {err}");
        };
        assert_eq!(path, stuck);
        assert_eq!(restore.restored, [SYN, RP]);
        assert_eq!(restore.failed, []);
        assert!(
            err.to_string().contains("restored 2 earlier write(s)"),
            "{err}"
        );
        assert_eq!(raw(&dir, RP), "0\n");
        assert_eq!(raw(&dir, SYN), "0\n");
    }

    #[test]
    fn a_failed_restore_is_reported() {
        let (dir, s) = tree(&[(RP, "0")]);
        let written = [
            change(RP, "0", "1"),
            change("net/ipv4/conf/gone/rp_filter", "0", "1"),
        ];
        fs::write(dir.0.join(RP), "1\n").unwrap();
        let restore = s.restore(&written);
        assert_eq!(restore.restored, [RP]);
        assert_eq!(restore.failed.len(), 1);
        assert_eq!(restore.failed[0].0, "net/ipv4/conf/gone/rp_filter");
        assert!(
            restore.to_string().contains("could NOT restore"),
            "{restore}"
        );
        assert_eq!(raw(&dir, RP), "0\n");
    }

    #[test]
    fn a_directory_in_place_of_a_setting_fails_before_any_write() {
        let (dir, s) = tree(&[(RP, "0")]);
        fs::create_dir_all(dir.0.join(SYN)).unwrap();
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(SYN, "1", Phase::BeforeFirewall),
        ];
        let err = s.apply(&wanted, Phase::BeforeFirewall).unwrap_err();
        assert!(matches!(err, SysctlError::Read { .. }), "{err}");
        assert!(err.to_string().contains(SYN), "{err}");
        assert_eq!(raw(&dir, RP), "0\n");
    }

    #[test]
    fn verify_lists_differences_and_unreadable_settings() {
        let (_dir, s) = tree(&[(RP, "1"), (SYN, "0")]);
        let ct = "net/netfilter/nf_conntrack_acct";
        let wanted = [
            set(RP, "1", Phase::BeforeFirewall),
            set(SYN, "1", Phase::BeforeFirewall),
            set(ct, "1", Phase::BeforeFirewall),
        ];
        let found = s.verify(&wanted);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].path.as_str(), found[0].actual.as_str()),
            (SYN, "0")
        );
        assert_eq!(found[1].path, ct);
        assert!(found[1].actual.starts_with("unreadable: "), "{found:?}");
        assert!(found[1].actual.contains("nf_conntrack"), "{found:?}");
    }
}

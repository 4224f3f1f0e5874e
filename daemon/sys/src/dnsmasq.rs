//! The router's DHCP and DNS server: the real dnsmasq, run in the foreground
//! under a [`Supervisor`] with the file the plan compiles
//! (`DhcpPlan::dnsmasq_conf`). A changed file restarts it (dnsmasq rereads
//! only its hosts and resolv files on SIGHUP, not its config); an unchanged
//! one leaves it running.

use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use router_config::HostFacts;

use crate::supervise::{ChildStatus, SuperviseOpts, Supervisor};

/// The command that runs dnsmasq on the router.
pub const DEFAULT_COMMAND: &str = "dnsmasq";

/// Writes `text` to `path` atomically (a temp file in the same directory,
/// fsynced, renamed over it; the directory is made if missing). Returns
/// whether the content changed; an identical file is not rewritten.
pub fn write_conf(path: &Path, text: &str) -> io::Result<bool> {
    write_atomic(path, text, 0o644)
}

/// [`write_conf`] for a file with the permission bits `mode`: an identical
/// file whose mode differs only gets its mode set (and counts as changed).
pub(crate) fn write_atomic(path: &Path, text: &str, mode: u32) -> io::Result<bool> {
    let named = |e: io::Error, what: &str, p: &Path| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    match std::fs::read(path) {
        Ok(old) if old == text.as_bytes() => {
            let meta = std::fs::metadata(path).map_err(|e| named(e, "read", path))?;
            if meta.permissions().mode() & 0o7777 == mode {
                return Ok(false);
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| named(e, "set the mode of", path))?;
            return Ok(true);
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e, "read", path)),
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| named(e, "create the directory", dir))?;
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open is reduced by the umask; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(e, "write", &tmp));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(e, "replace", path));
    }
    // The rename is durable once the directory is synced too.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// dnsmasq's command line: in the foreground (so it can be supervised),
/// logging to stderr (which the supervisor logs), reading only `conf_path`,
/// recording its pid in `pidfile`. `prefix` is the command that runs
/// dnsmasq, program included (`["dnsmasq"]`, or `["chroot", ROOT,
/// "dnsmasq"]`); empty means [`DEFAULT_COMMAND`].
pub fn argv(prefix: &[String], conf_path: &str, pidfile: &str) -> Vec<String> {
    let mut argv = if prefix.is_empty() {
        vec![DEFAULT_COMMAND.to_string()]
    } else {
        prefix.to_vec()
    };
    argv.extend([
        "--keep-in-foreground".to_string(),
        format!("--conf-file={conf_path}"),
        "--log-facility=-".to_string(),
        format!("--pid-file={pidfile}"),
    ]);
    argv
}

/// Where and how dnsmasq runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqOpts {
    /// The command that runs dnsmasq, program included.
    pub command: Vec<String>,
    /// The directory `command` makes dnsmasq's root: `/` unless it
    /// chroots. `conf_path` and `pidfile` are dnsmasq's paths; routerd
    /// reaches them under `root`.
    pub root: PathBuf,
    /// The config file, as dnsmasq opens it.
    pub conf_path: String,
    /// dnsmasq's pid file, as dnsmasq writes it. Read at start to stop an
    /// instance left running by a routerd that was killed.
    pub pidfile: String,
}

impl DnsmasqOpts {
    /// The router's own: `dnsmasq` with its file and pid file in
    /// `facts.run_dir`.
    pub fn new(facts: &HostFacts) -> Self {
        let run_dir = facts.run_dir.trim_end_matches('/');
        Self {
            command: vec![DEFAULT_COMMAND.to_string()],
            root: PathBuf::from("/"),
            conf_path: format!("{run_dir}/dnsmasq.conf"),
            pidfile: format!("{run_dir}/dnsmasq.pid"),
        }
    }

    /// Where routerd reaches one of dnsmasq's paths.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// The running dnsmasq.
#[derive(Debug)]
pub struct Dnsmasq {
    opts: DnsmasqOpts,
    supervisor: Supervisor,
}

impl Dnsmasq {
    /// Writes `conf` and starts dnsmasq under supervision (after stopping an
    /// instance left from before, recorded in the pid file). Must be called
    /// inside a tokio runtime.
    pub fn start(opts: DnsmasqOpts, conf: &str) -> io::Result<Self> {
        write_conf(&opts.host_path(&opts.conf_path), conf)?;
        let pidfile = opts.host_path(&opts.pidfile);
        if let Some(dir) = pidfile.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create the directory {}: {e}", dir.display()),
                )
            })?;
        }
        let supervisor = Supervisor::spawn(
            "dnsmasq",
            argv(&opts.command, &opts.conf_path, &opts.pidfile),
            SuperviseOpts {
                pidfile: Some(pidfile),
                pidfile_by_child: true,
                ..SuperviseOpts::default()
            },
        );
        Ok(Self { opts, supervisor })
    }

    /// Rewrites the config; restarts dnsmasq only if the text changed.
    /// Returns whether it did.
    pub async fn update(&self, conf: &str) -> io::Result<bool> {
        let changed = write_conf(&self.opts.host_path(&self.opts.conf_path), conf)?;
        if changed {
            tracing::info!(child = "dnsmasq", "config changed; restarting");
            self.supervisor.restart().await;
        }
        Ok(changed)
    }

    /// dnsmasq's status now.
    pub fn status(&self) -> ChildStatus {
        self.supervisor.status()
    }

    /// How it runs.
    pub fn opts(&self) -> &DnsmasqOpts {
        &self.opts
    }

    /// Stops dnsmasq for good.
    pub async fn stop(self) {
        self.supervisor.stop().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn write_conf_reports_change_and_leaves_an_identical_file_alone() {
        let dir = TempDir::new();
        let path = dir.0.join("run/dnsmasq.conf");
        assert!(write_conf(&path, "port=53\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "port=53\n");
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!write_conf(&path, "port=53\n").unwrap());
        let after = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(before, after, "an identical file was rewritten");
        assert!(write_conf(&path, "port=5353\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "port=5353\n");
        let names: Vec<_> = std::fs::read_dir(dir.0.join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dnsmasq.conf"], "a temp file was left behind");
    }

    #[test]
    fn write_conf_names_the_file_it_cannot_write() {
        let dir = TempDir::new();
        dir.file("blocker", "a file, not a directory");
        let path = dir.0.join("blocker/dnsmasq.conf");
        let err = write_conf(&path, "port=53\n").unwrap_err().to_string();
        assert!(err.contains("blocker"), "{err}");
    }

    #[test]
    fn argv_runs_dnsmasq_in_the_foreground_logging_to_stderr() {
        assert_eq!(
            argv(&[], "/run/routerd/dnsmasq.conf", "/run/routerd/dnsmasq.pid"),
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/run/routerd/dnsmasq.conf",
                "--log-facility=-",
                "--pid-file=/run/routerd/dnsmasq.pid",
            ]
        );
        let prefix = [
            "chroot".to_string(),
            "/r".to_string(),
            "dnsmasq".to_string(),
        ];
        let a = argv(&prefix, "/c", "/p");
        assert_eq!(&a[..3], &prefix);
        assert_eq!(a.len(), 7);
    }

    #[test]
    fn opts_put_the_files_in_the_run_dir() {
        let mut facts = HostFacts::assumed(["eth0".to_string()]);
        facts.run_dir = "/run/x/".into();
        let opts = DnsmasqOpts::new(&facts);
        assert_eq!(opts.conf_path, "/run/x/dnsmasq.conf");
        assert_eq!(opts.pidfile, "/run/x/dnsmasq.pid");
        assert_eq!(
            opts.host_path(&opts.conf_path),
            Path::new("/run/x/dnsmasq.conf")
        );
        let chrooted = DnsmasqOpts {
            root: "/srv/root".into(),
            ..opts
        };
        assert_eq!(
            chrooted.host_path("/run/x/dnsmasq.pid"),
            Path::new("/srv/root/run/x/dnsmasq.pid")
        );
    }
}

//! The router's time service: the real chronyd, run in the foreground under
//! a [`Supervisor`] with the file the plan compiles (`NtpPlan::chrony_conf`).
//! A changed file restarts it (chronyd does not reread its config); an
//! unchanged one leaves it running.
//!
//! chronyd runs as it ships: started as root, it drops root for its own user
//! (Debian's `_chrony`, made by the package) once its sockets are open. Two
//! things follow. It cannot remove its pid file at exit (the run directory
//! is root's), so routerd does when it stops it. And it refuses to start
//! while its pid file names any live process, so a stale file naming some
//! other process (its pid reused) is removed before the first start.

use std::io;
use std::path::{Path, PathBuf};

use router_config::HostFacts;

use crate::dnsmasq::write_conf;
use crate::supervise::{cmdline, exited, same_command, ChildStatus, SuperviseOpts, Supervisor};

/// The command that runs chronyd on the router.
pub const DEFAULT_COMMAND: &str = "chronyd";

/// chronyd's command line: in the foreground, logging to stderr (`-d`; the
/// supervisor logs it), reading only `conf_path`. `prefix` is the command
/// that runs chronyd, program included (`["chronyd"]`, or `["chroot",
/// ROOT, "chronyd", "-x"]`); empty means [`DEFAULT_COMMAND`].
pub fn argv(prefix: &[String], conf_path: &str) -> Vec<String> {
    let mut argv = if prefix.is_empty() {
        vec![DEFAULT_COMMAND.to_string()]
    } else {
        prefix.to_vec()
    };
    argv.extend(["-d".to_string(), "-f".to_string(), conf_path.to_string()]);
    argv
}

/// The pid file a chrony config names (`pidfile PATH`), as chronyd sees it.
pub fn pidfile(conf: &str) -> Option<&str> {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("pidfile"))
        .filter(|rest| rest.starts_with([' ', '\t']))
        .filter_map(|rest| rest.split_whitespace().next())
        .next_back()
}

/// Where and how chronyd runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChronyOpts {
    /// The command that runs chronyd, program included.
    pub command: Vec<String>,
    /// The directory `command` makes chronyd's root: `/` unless it chroots.
    /// `conf_path` and the paths in the config are chronyd's; routerd
    /// reaches them under `root`.
    pub root: PathBuf,
    /// The config file, as chronyd opens it.
    pub conf_path: String,
}

impl ChronyOpts {
    /// The router's own: `chronyd` with its file in `facts.run_dir`.
    pub fn new(facts: &HostFacts) -> Self {
        Self {
            command: vec![DEFAULT_COMMAND.to_string()],
            root: PathBuf::from("/"),
            conf_path: format!("{}/chrony.conf", facts.run_dir.trim_end_matches('/')),
        }
    }

    /// Where routerd reaches one of chronyd's paths.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// The running chronyd.
#[derive(Debug)]
pub struct Chrony {
    opts: ChronyOpts,
    /// Its pid file, where routerd reaches it.
    pidfile: Option<PathBuf>,
    supervisor: Supervisor,
}

impl Chrony {
    /// Writes `conf` and starts chronyd under supervision (after stopping an
    /// instance left from before, recorded in the pid file the config
    /// names). Must be called inside a tokio runtime.
    pub fn start(opts: ChronyOpts, conf: &str) -> io::Result<Self> {
        write_conf(&opts.host_path(&opts.conf_path), conf)?;
        let argv = argv(&opts.command, &opts.conf_path);
        let pidfile = pidfile(conf).map(|p| opts.host_path(p));
        if let Some(path) = &pidfile {
            clear_stale_pidfile(path, &argv)?;
        }
        let supervisor = Supervisor::spawn(
            "chronyd",
            argv,
            SuperviseOpts {
                pidfile: pidfile.clone(),
                pidfile_by_child: true,
                ..SuperviseOpts::default()
            },
        );
        Ok(Self {
            opts,
            pidfile,
            supervisor,
        })
    }

    /// Rewrites the config; restarts chronyd only if the text changed.
    /// Returns whether it did.
    pub async fn update(&self, conf: &str) -> io::Result<bool> {
        let changed = write_conf(&self.opts.host_path(&self.opts.conf_path), conf)?;
        if changed {
            tracing::info!(child = "chronyd", "config changed; restarting");
            self.supervisor.restart().await;
        }
        Ok(changed)
    }

    /// Stops chronyd and starts it again at once, with the same file.
    pub async fn restart(&self) {
        self.supervisor.restart().await;
    }

    /// chronyd's status now.
    pub fn status(&self) -> ChildStatus {
        self.supervisor.status()
    }

    /// How it runs.
    pub fn opts(&self) -> &ChronyOpts {
        &self.opts
    }

    /// Stops chronyd for good and removes the pid file it could not.
    pub async fn stop(self) {
        self.supervisor.stop().await;
        if let Some(path) = &self.pidfile {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes `path` unless it names a live chronyd running `argv` (one left
/// by a routerd that was killed, which the supervisor stops first). Any
/// other pid in it would make chronyd refuse to start ("Another chronyd may
/// already be running").
fn clear_stale_pidfile(path: &Path, argv: &[String]) -> io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    let ours = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| !exited(*pid))
        .and_then(cmdline)
        .is_some_and(|cmd| same_command(&cmd, argv));
    if ours {
        return Ok(());
    }
    tracing::info!(
        child = "chronyd",
        pidfile = %path.display(),
        recorded = %text.trim(),
        "removing a stale pid file"
    );
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
            e.kind(),
            format!("cannot remove the stale pid file {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn argv_runs_chronyd_in_the_foreground_with_the_file() {
        assert_eq!(
            argv(&[], "/run/routerd/chrony.conf"),
            ["chronyd", "-d", "-f", "/run/routerd/chrony.conf"]
        );
        let prefix = [
            "chroot".to_string(),
            "/r".to_string(),
            "chronyd".to_string(),
        ];
        let a = argv(&prefix, "/c");
        assert_eq!(&a[..3], &prefix);
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn pidfile_is_read_from_the_config() {
        let conf = "# pidfile /not/this\npidfiles /nor/this\nallow 10.20.0.0/24\npidfile /run/x/chronyd.pid\n";
        assert_eq!(pidfile(conf), Some("/run/x/chronyd.pid"));
        assert_eq!(pidfile("allow 10.20.0.0/24\n"), None);
    }

    #[test]
    fn opts_put_the_file_in_the_run_dir() {
        let mut facts = HostFacts::assumed(["eth0".to_string()]);
        facts.run_dir = "/run/x/".into();
        let opts = ChronyOpts::new(&facts);
        assert_eq!(opts.conf_path, "/run/x/chrony.conf");
        let chrooted = ChronyOpts {
            root: "/srv/root".into(),
            ..opts
        };
        assert_eq!(
            chrooted.host_path("/run/x/chronyd.pid"),
            Path::new("/srv/root/run/x/chronyd.pid")
        );
    }

    #[test]
    fn a_pid_file_naming_another_process_or_none_is_removed() {
        let dir = TempDir::new();
        let path = dir.0.join("chronyd.pid");
        let argv = argv(&[], "/run/routerd/chrony.conf");
        // This test's own process runs, but is not chronyd.
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        clear_stale_pidfile(&path, &argv).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, "not a pid\n").unwrap();
        clear_stale_pidfile(&path, &argv).unwrap();
        assert!(!path.exists());
        // No file is fine.
        clear_stale_pidfile(&path, &argv).unwrap();
    }

    #[test]
    fn a_pid_file_naming_our_running_command_is_kept() {
        let dir = TempDir::new();
        let path = dir.0.join("chronyd.pid");
        // The test's own command line stands in for a leftover chronyd.
        let me = cmdline(i32::try_from(std::process::id()).unwrap()).unwrap();
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        clear_stale_pidfile(&path, &me).unwrap();
        assert!(path.exists());
    }
}

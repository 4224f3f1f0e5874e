//! Supervision of one long-running child process (dnsmasq, the WAN DHCP
//! client): started with its output logged line by line, restarted with
//! exponential backoff when it exits, restarted at once on request (its
//! config changed), stopped gracefully. A leftover instance from before a
//! restart of routerd is found through its pid file and stopped first.
//!
//! Needs a tokio runtime with IO and time enabled (`Supervisor::spawn` spawns
//! the task that owns the child).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What the supervisor knows about its child, at any moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    /// The running child's process id.
    pub pid: Option<u32>,
    /// How often the child was started again after its first start (after an
    /// exit, a failed start, or on request).
    pub restarts: u32,
    /// How the last child ended, e.g. `exit status: 1` or
    /// `signal: 9 (SIGKILL)`, or why it could not be started.
    pub last_exit: Option<String>,
    /// Whether a child is running now.
    pub running: bool,
}

/// How a child is supervised.
#[derive(Debug, Clone)]
pub struct SuperviseOpts {
    /// A file holding the child's pid. At spawn, a process recorded there
    /// that runs the same command (left running when routerd was killed) is
    /// stopped before the new child starts; any other process is left alone.
    pub pidfile: Option<PathBuf>,
    /// The child writes `pidfile` itself (dnsmasq's `--pid-file`, udhcpc's
    /// `-p`). Otherwise the supervisor writes it after every start. Never
    /// both: two writers of one file race (dnsmasq deletes and recreates
    /// its pid file at start).
    pub pidfile_by_child: bool,
    /// The wait before the first restart after an exit.
    pub backoff_initial: Duration,
    /// The longest wait between restarts; the wait doubles up to it.
    pub backoff_max: Duration,
    /// A child that ran at least this long before exiting counts as having
    /// worked: the wait starts again from `backoff_initial`.
    pub backoff_reset_after: Duration,
    /// How long a child has to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
    /// Whether a leftover process's command line (first argument) shows the
    /// same program as `argv` (second): [`same_command`] unless a program's
    /// arguments legitimately change between starts (udhcpc's `-r`).
    pub same_program: fn(&[String], &[String]) -> bool,
}

impl Default for SuperviseOpts {
    fn default() -> Self {
        Self {
            pidfile: None,
            pidfile_by_child: false,
            same_program: same_command,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// One supervised child process. Dropping it stops the child too (SIGTERM,
/// then SIGKILL) as long as the runtime runs; [`Supervisor::stop`] waits for
/// that.
pub struct Supervisor {
    name: String,
    state: Arc<Mutex<ChildStatus>>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("status", &self.status())
            .finish()
    }
}

enum Control {
    Restart(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

impl Supervisor {
    /// Starts supervising `argv` (program first, taken as given: it may be a
    /// prefix such as `chroot ROOT dnsmasq`) under the name `name`, which
    /// every log line carries as `child`. Returns at once; the child starts
    /// in the background, after a leftover instance named by
    /// `opts.pidfile` is stopped. The child runs with SIGPIPE ignored (see
    /// [`IGNORE_SIGPIPE`]); a program that cannot be found exits 127 with
    /// the shell's message in the log, and is retried like any exit. Must be
    /// called inside a tokio runtime.
    pub fn spawn(name: &str, argv: Vec<String>, opts: SuperviseOpts) -> Supervisor {
        let state = Arc::new(Mutex::new(ChildStatus::default()));
        let (control, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(name.to_string(), argv, opts, state.clone(), rx));
        Supervisor {
            name: name.to_string(),
            state,
            control,
            task,
        }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's status now.
    pub fn status(&self) -> ChildStatus {
        lock(&self.state).clone()
    }

    /// Stops the child gracefully and starts it again at once (its config
    /// changed); returns when the new child has been started.
    pub async fn restart(&self) {
        let (ack, done) = oneshot::channel();
        if self.control.send(Control::Restart(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Stops the child (SIGTERM, SIGKILL after `stop_timeout`) for good and
    /// returns when it has exited.
    pub async fn stop(self) {
        let (ack, done) = oneshot::channel();
        if self.control.send(Control::Stop(ack)).is_ok() {
            let _ = done.await;
        }
        let _ = self.task.await;
    }
}

/// The status lock; a panic elsewhere does not make the status unreadable.
fn lock(state: &Mutex<ChildStatus>) -> MutexGuard<'_, ChildStatus> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What ended a wait: time to start the child (acknowledging a restart
/// request once it runs), or to stop for good.
enum Next {
    Start(Option<oneshot::Sender<()>>),
    Stop(Option<oneshot::Sender<()>>),
}

/// The task that owns the child.
async fn run(
    name: String,
    argv: Vec<String>,
    opts: SuperviseOpts,
    state: Arc<Mutex<ChildStatus>>,
    control: mpsc::UnboundedReceiver<Control>,
) {
    if let Some(pidfile) = &opts.pidfile {
        stop_leftover(&name, &argv, pidfile, opts.stop_timeout, opts.same_program).await;
    }
    let mut task = Task {
        delay: opts.backoff_initial,
        name,
        argv,
        opts,
        state,
        control,
    };
    // A restart request, acknowledged once the next child runs.
    let mut restart_ack: Option<oneshot::Sender<()>> = None;
    let mut first = true;
    loop {
        if !first {
            lock(&task.state).restarts += 1;
        }
        first = false;
        let next = match start(&task.name, &task.argv) {
            Ok(child) => {
                task.started(&child);
                if let Some(ack) = restart_ack.take() {
                    let _ = ack.send(());
                }
                task.watch(child).await
            }
            Err(e) => {
                let why = format!("cannot start {:?}: {e}", task.argv.first());
                tracing::error!(child = %task.name, restart_in_ms = millis(task.delay), "{why}");
                ended(&task.state, why);
                if let Some(ack) = restart_ack.take() {
                    let _ = ack.send(());
                }
                task.backoff().await
            }
        };
        match next {
            Next::Start(ack) => restart_ack = ack,
            Next::Stop(ack) => {
                if let (Some(pidfile), false) = (&task.opts.pidfile, task.opts.pidfile_by_child) {
                    let _ = std::fs::remove_file(pidfile);
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }
}

/// The supervising task's state.
struct Task {
    name: String,
    argv: Vec<String>,
    opts: SuperviseOpts,
    state: Arc<Mutex<ChildStatus>>,
    control: mpsc::UnboundedReceiver<Control>,
    /// The wait before the next restart after an exit.
    delay: Duration,
}

impl Task {
    /// Records a started child.
    fn started(&self, child: &Child) {
        let pid = child.id();
        {
            let mut s = lock(&self.state);
            s.pid = pid;
            s.running = true;
        }
        tracing::info!(child = %self.name, pid, argv = ?self.argv, "started");
        if let (Some(pidfile), false, Some(pid)) =
            (&self.opts.pidfile, self.opts.pidfile_by_child, pid)
        {
            if let Err(e) = write_pidfile(pidfile, pid) {
                tracing::warn!(
                    child = %self.name,
                    pid,
                    pidfile = %pidfile.display(),
                    "cannot record the pid: {e}"
                );
            }
        }
    }

    /// Waits for the child to exit (then for the backoff delay) or for a
    /// request to restart or stop it.
    async fn watch(&mut self, mut child: Child) -> Next {
        let pid = child.id();
        let started = Instant::now();
        let request = tokio::select! {
            status = child.wait() => {
                let ran = started.elapsed();
                if ran >= self.opts.backoff_reset_after {
                    self.delay = self.opts.backoff_initial;
                }
                let exit = describe(status);
                tracing::warn!(
                    child = %self.name,
                    pid,
                    exit = %exit,
                    ran_ms = millis(ran),
                    restart_in_ms = millis(self.delay),
                    "exited; restarting"
                );
                ended(&self.state, exit);
                return self.backoff().await;
            }
            request = self.control.recv() => request,
        };
        let exit = terminate(&self.name, &mut child, self.opts.stop_timeout).await;
        let (what, next) = match request {
            Some(Control::Restart(ack)) => {
                self.delay = self.opts.backoff_initial;
                ("stopped to restart", Next::Start(Some(ack)))
            }
            Some(Control::Stop(ack)) => ("stopped", Next::Stop(Some(ack))),
            None => ("stopped: supervisor dropped", Next::Stop(None)),
        };
        tracing::info!(child = %self.name, pid, exit = %exit, "{what}");
        ended(&self.state, exit);
        next
    }

    /// Waits out the backoff delay (unless told to restart or stop earlier)
    /// and doubles it for the next time.
    async fn backoff(&mut self) -> Next {
        let next = tokio::select! {
            () = tokio::time::sleep(self.delay) => Next::Start(None),
            request = self.control.recv() => match request {
                Some(Control::Restart(ack)) => Next::Start(Some(ack)),
                Some(Control::Stop(ack)) => Next::Stop(Some(ack)),
                None => Next::Stop(None),
            },
        };
        self.delay = (self.delay * 2).min(self.opts.backoff_max);
        next
    }
}

/// Records that the child is gone.
fn ended(state: &Mutex<ChildStatus>, exit: String) {
    let mut s = lock(state);
    s.pid = None;
    s.running = false;
    s.last_exit = Some(exit);
}

/// The `sh -c` script every child is started through: it runs the command
/// with SIGPIPE ignored. A child's output goes through
/// pipes to routerd; if routerd is killed, a child left with the default
/// SIGPIPE (udhcpc) dies at its next log line, while the design is that it
/// keeps running until the next routerd stops it through its pid file.
/// Rust resets SIGPIPE to the default in every child it spawns, and only
/// unsafe code could change that before exec; a shell that ignores the
/// signal and then execs the program needs none (ignored signals survive
/// exec).
pub const IGNORE_SIGPIPE: &str = "trap '' PIPE; exec \"$@\"";

/// Starts the child and the tasks that log its output.
fn start(name: &str, argv: &[String]) -> io::Result<Child> {
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(IGNORE_SIGPIPE)
        .arg(name)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Last resort when the runtime goes away without a stop: no child
        // outlives it unsupervised.
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(name.to_string(), pid, "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(name.to_string(), pid, "stderr", err));
    }
    Ok(child)
}

/// Logs every line the child writes, until it closes the stream.
async fn log_lines(
    name: String,
    pid: Option<u32>,
    stream: &'static str,
    out: impl AsyncRead + Unpin,
) {
    let mut reader = BufReader::new(out);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                tracing::info!(child = %name, pid, stream, "{text}");
            }
            Err(e) => {
                tracing::warn!(child = %name, pid, stream, "cannot read the output: {e}");
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL if the child has not exited within `timeout`.
/// Returns how it ended.
async fn terminate(name: &str, child: &mut Child, timeout: Duration) -> String {
    let Some(pid) = child.id() else {
        // Already reaped.
        return describe(child.wait().await);
    };
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => describe(status),
        Err(_) => {
            tracing::warn!(
                child = %name,
                pid,
                "did not exit within {} ms of SIGTERM; sending SIGKILL",
                millis(timeout)
            );
            if let Err(e) = child.kill().await {
                return format!("cannot kill: {e}");
            }
            describe(child.wait().await)
        }
    }
}

fn describe(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn write_pidfile(path: &Path, pid: u32) -> io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

/// A process's command line from /proc, or None when there is no such
/// process. A zombie's is empty.
/// Whether `pid` has finished exiting: gone, or a zombie (`Z`/`X` in
/// /proc/PID/stat) waiting for its parent.
/// Whether `pid` is gone or has exited (a zombie has).
pub(crate) fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => !matches!(
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()),
            Some(state) if state != 'Z' && state != 'X'
        ),
    }
}

/// A process's command line from /proc.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Whether a process's command line shows it runs `argv`. Prefix commands
/// such as `chroot ROOT` and `ip netns exec NS` replace themselves with the
/// program they run, so the process shows a tail of `argv` that starts
/// with a program (not an option).
pub fn same_command(cmdline: &[String], argv: &[String]) -> bool {
    match cmdline.first() {
        Some(program) => !program.starts_with('-') && argv.ends_with(cmdline),
        None => false,
    }
}

/// Stops a process left from before a restart of routerd: the pid in
/// `pidfile`, but only if it still runs the same command.
async fn stop_leftover(
    name: &str,
    argv: &[String],
    pidfile: &Path,
    timeout: Duration,
    same_command: fn(&[String], &[String]) -> bool,
) {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(child = %name, pidfile = %pidfile.display(), "cannot read the pid file: {e}");
            return;
        }
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        tracing::warn!(child = %name, pidfile = %pidfile.display(), "the pid file holds no pid: {:?}", text.trim());
        return;
    };
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    if pid <= 1 || pid == own {
        return;
    }
    // Once it is known to be ours, it runs until it is a zombie or gone: an
    // exiting process shows an empty command line before it has closed its
    // files (its sockets).
    let running = |pid| !exited(pid);
    match cmdline(pid) {
        None => return,
        Some(cmd) if !same_command(&cmd, argv) => {
            tracing::info!(
                child = %name,
                pid,
                pidfile = %pidfile.display(),
                "the recorded pid runs another program ({cmd:?}); left alone"
            );
            return;
        }
        Some(_) => {}
    }
    tracing::info!(child = %name, pid, "stopping the instance left running from before");
    let target = Pid::from_raw(pid);
    let _ = kill(target, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while running(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if running(pid) {
        tracing::warn!(child = %name, pid, "the old instance ignored SIGTERM; sending SIGKILL");
        let _ = kill(target, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while running(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if running(pid) {
        tracing::error!(child = %name, pid, "the old instance is still running");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_command_matches_the_program_behind_a_prefix() {
        let argv = v(&["chroot", "/r", "dnsmasq", "-k", "--conf-file=/x"]);
        assert!(same_command(&argv, &argv));
        assert!(same_command(
            &v(&["dnsmasq", "-k", "--conf-file=/x"]),
            &argv
        ));
        assert!(!same_command(
            &v(&["dnsmasq", "-k", "--conf-file=/y"]),
            &argv
        ));
        assert!(!same_command(&v(&["-k", "--conf-file=/x"]), &argv));
        assert!(!same_command(&v(&["dnsmasq", "-k"]), &argv));
        assert!(!same_command(&[], &argv));
        assert!(!same_command(&v(&["sleep", "5"]), &argv));
    }
}

//! The supervisor with real child processes (sh, sleep): restarts with
//! growing delays, restart on request, graceful and forced stop, output
//! lines in the log, and the stop of a leftover instance found through the
//! pid file (only when it runs the same command). Every log event is
//! captured by a test subscriber and checked by its fields.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use router_sys::supervise::{SuperviseOpts, Supervisor};
use tracing::field::{Field, Visit};
use tracing::span;
use tracing::{Event, Metadata, Subscriber};

/// One captured log event.
#[derive(Debug, Clone)]
struct Captured {
    at: Instant,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn get(&self, field: &str) -> &str {
        self.fields.get(field).map(String::as_str).unwrap_or("")
    }
}

static LOG: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

/// A subscriber that keeps every event with its fields (and prints it, for
/// a failing test's output).
struct Capture;

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        println!("{} {:?}", event.metadata().level(), fields.0);
        LOG.lock().unwrap().push(Captured {
            at: Instant::now(),
            fields: fields.0,
        });
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

fn capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| tracing::subscriber::set_global_default(Capture).unwrap());
}

/// The events of one child, by its name.
fn events(child: &str) -> Vec<Captured> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|e| e.get("child") == child)
        .cloned()
        .collect()
}

fn with_message(child: &str, message: &str) -> Vec<Captured> {
    events(child)
        .into_iter()
        .filter(|e| e.get("message") == message)
        .collect()
}

/// A unique name for this test's child.
fn unique(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `sleep` for 30 s; the second argument (0.0PID plus a number) makes its
/// command line unique, so no other test's process can match it.
fn sleeper(n: u32) -> Vec<String> {
    strings(&["sleep", "30", &format!("0.0{}{n}", std::process::id())])
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `cond` holds, up to `secs`.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn running_pid(sup: &Supervisor) -> u32 {
    until(5, "the child to run", || sup.status().running).await;
    sup.status().pid.unwrap()
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("router-sys-{}", unique(what)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process started by the test itself; killed on drop.
struct Stray(std::process::Child);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_child_that_exits_at_once_is_restarted_with_growing_delays() {
    capture();
    let name = unique("quitter");
    let sup = Supervisor::spawn(
        &name,
        strings(&["sh", "-c", "echo going; exit 3"]),
        SuperviseOpts::default(),
    );
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let status = sup.status();
    sup.stop().await;

    let exits = with_message(&name, "exited; restarting");
    let delays: Vec<&str> = exits.iter().map(|e| e.get("restart_in_ms")).collect();
    assert!(
        delays.len() >= 4 && delays[..4] == ["200", "400", "800", "1600"],
        "{delays:?}"
    );
    assert!(exits.iter().all(|e| e.get("exit") == "exit status: 3"));
    // The starts really are that far apart (the upper bound leaves room for
    // a loaded machine).
    let starts: Vec<Instant> = with_message(&name, "started")
        .iter()
        .map(|e| e.at)
        .collect();
    assert!(starts.len() >= 4, "{} starts", starts.len());
    for (i, want) in [200u64, 400, 800].iter().enumerate() {
        let gap = starts[i + 1] - starts[i];
        assert!(
            gap >= Duration::from_millis(*want) && gap < Duration::from_millis(want + 500),
            "start {i} to {}: {gap:?}, want about {want} ms",
            i + 1
        );
    }
    assert!(
        (3..=5).contains(&status.restarts),
        "restarts {}",
        status.restarts
    );
    assert_eq!(status.last_exit.as_deref(), Some("exit status: 3"));
    // Every run's output reached the log.
    let said = with_message(&name, "going");
    assert_eq!(said.len(), starts.len());
    assert!(said.iter().all(|e| e.get("stream") == "stdout"));
}

#[tokio::test]
async fn the_delay_stops_growing_at_its_maximum() {
    capture();
    let name = unique("capped");
    let sup = Supervisor::spawn(
        &name,
        strings(&["sh", "-c", "exit 1"]),
        SuperviseOpts {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(120),
            ..SuperviseOpts::default()
        },
    );
    until(5, "five exits", || {
        with_message(&name, "exited; restarting").len() >= 5
    })
    .await;
    sup.stop().await;
    let delays: Vec<String> = with_message(&name, "exited; restarting")
        .iter()
        .map(|e| e.get("restart_in_ms").to_string())
        .collect();
    assert_eq!(delays[..5], ["50", "100", "120", "120", "120"]);
}

#[tokio::test]
async fn a_child_that_ran_long_enough_is_restarted_after_the_first_delay_again() {
    capture();
    let name = unique("steady");
    let sup = Supervisor::spawn(
        &name,
        strings(&["sh", "-c", "sleep 0.3; exit 1"]),
        SuperviseOpts {
            backoff_initial: Duration::from_millis(100),
            backoff_reset_after: Duration::from_millis(250),
            ..SuperviseOpts::default()
        },
    );
    until(5, "three exits", || {
        with_message(&name, "exited; restarting").len() >= 3
    })
    .await;
    sup.stop().await;
    let delays: Vec<String> = with_message(&name, "exited; restarting")
        .iter()
        .map(|e| e.get("restart_in_ms").to_string())
        .collect();
    assert_eq!(delays[..3], ["100", "100", "100"]);
}

#[tokio::test]
async fn dropping_the_supervisor_stops_the_child() {
    capture();
    let name = unique("dropped");
    let sup = Supervisor::spawn(&name, sleeper(5), SuperviseOpts::default());
    let pid = running_pid(&sup).await;
    drop(sup);
    until(5, "the child to stop", || !alive(pid)).await;
    assert_eq!(with_message(&name, "stopped: supervisor dropped").len(), 1);
}

#[tokio::test]
async fn the_child_outlives_a_closed_output_pipe() {
    capture();
    let name = unique("pipe");
    let sup = Supervisor::spawn(&name, sleeper(6), SuperviseOpts::default());
    let pid = running_pid(&sup).await;
    // The shell the child starts through has exec'd the program itself.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"sleep\x0030\x00"), "{cmdline:?}");
    // SIGPIPE (13) is ignored, so losing routerd's end of its output pipes
    // does not kill it.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap()
        .trim();
    let mask = u64::from_str_radix(ignored, 16).unwrap();
    assert_ne!(mask & (1 << (13 - 1)), 0, "SigIgn {ignored}");
    sup.stop().await;
}

#[tokio::test]
async fn a_missing_program_is_logged_and_retried() {
    capture();
    let name = unique("missing");
    let sup = Supervisor::spawn(
        &name,
        strings(&["/nonexistent/routerd-test-program", "-x"]),
        SuperviseOpts::default(),
    );
    until(5, "two tries", || {
        with_message(&name, "exited; restarting").len() >= 2
    })
    .await;
    let status = sup.status();
    sup.stop().await;
    assert_eq!(status.last_exit.as_deref(), Some("exit status: 127"));
    let said: Vec<_> = events(&name)
        .into_iter()
        .filter(|e| e.get("stream") == "stderr")
        .collect();
    assert!(
        said.iter().any(|e| e
            .get("message")
            .contains("/nonexistent/routerd-test-program")),
        "{said:?}"
    );
}

#[tokio::test]
async fn output_lines_reach_the_log_with_their_stream_and_pid() {
    capture();
    let name = unique("talker");
    let sup = Supervisor::spawn(
        &name,
        strings(&[
            "sh",
            "-c",
            "echo first line; echo second line; echo to stderr >&2; printf 'no newline'; exec sleep 30",
        ]),
        SuperviseOpts::default(),
    );
    let pid = running_pid(&sup).await.to_string();
    until(5, "the output", || {
        with_message(&name, "to stderr").len() == 1
    })
    .await;
    // A last line without a newline is logged when the stream closes.
    assert!(with_message(&name, "no newline").is_empty());
    sup.stop().await;
    until(5, "the last line", || {
        with_message(&name, "no newline").len() == 1
    })
    .await;
    for (message, stream) in [
        ("first line", "stdout"),
        ("second line", "stdout"),
        ("to stderr", "stderr"),
        ("no newline", "stdout"),
    ] {
        let lines = with_message(&name, message);
        assert_eq!(lines.len(), 1, "{message}: {lines:?}");
        assert_eq!(lines[0].get("stream"), stream, "{message}");
        assert_eq!(lines[0].get("pid"), pid, "{message}");
    }
}

#[tokio::test]
async fn restart_gives_a_new_pid_and_stop_ends_it_for_good() {
    capture();
    let name = unique("sleeper");
    let argv = sleeper(1);
    let sup = Supervisor::spawn(&name, argv.clone(), SuperviseOpts::default());
    let first = running_pid(&sup).await;

    sup.restart().await;
    let status = sup.status();
    let second = status.pid.unwrap();
    assert!(status.running);
    assert_ne!(first, second);
    assert!(!alive(first), "the old child {first} still runs");
    assert!(alive(second));
    assert_eq!(status.restarts, 1);
    assert_eq!(status.last_exit.as_deref(), Some("signal: 15 (SIGTERM)"));

    sup.stop().await;
    assert!(!alive(second), "the child {second} still runs after stop");
    let starts = with_message(&name, "started").len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        with_message(&name, "started").len(),
        starts,
        "started again after stop"
    );
    let stopped = with_message(&name, "stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].get("exit"), "signal: 15 (SIGTERM)");
}

#[tokio::test]
async fn a_child_that_ignores_sigterm_is_killed() {
    capture();
    let name = unique("stubborn");
    let sup = Supervisor::spawn(
        &name,
        strings(&[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ]),
        SuperviseOpts {
            stop_timeout: Duration::from_millis(500),
            ..SuperviseOpts::default()
        },
    );
    let pid = running_pid(&sup).await;
    until(5, "the trap", || with_message(&name, "ready").len() == 1).await;
    let t = Instant::now();
    sup.stop().await;
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(!alive(pid));
    let stopped = with_message(&name, "stopped");
    assert_eq!(stopped[0].get("exit"), "signal: 9 (SIGKILL)");
}

#[tokio::test]
async fn a_leftover_instance_of_the_same_command_is_stopped_first() {
    capture();
    let dir = TempDir::new("adopt");
    let pidfile = dir.0.join("child.pid");
    let argv = sleeper(2);
    // What a routerd killed with -9 leaves behind: its child still running,
    // its pid in the pid file.
    let mut leftover = Stray(
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .spawn()
            .unwrap(),
    );
    let old = leftover.0.id();
    // A real leftover has long been running its program; this one must have
    // got past exec before the supervisor reads its command line.
    let cmdline = format!("/proc/{old}/cmdline");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read(&cmdline)
        .unwrap_or_default()
        .starts_with(argv[0].as_bytes())
    {
        assert!(Instant::now() < deadline, "{cmdline}: never exec'd");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::write(&pidfile, format!("{old}\n")).unwrap();

    let name = unique("adopter");
    let sup = Supervisor::spawn(
        &name,
        argv,
        SuperviseOpts {
            pidfile: Some(pidfile.clone()),
            ..SuperviseOpts::default()
        },
    );
    let new = running_pid(&sup).await;
    assert_ne!(new, old);
    let status = leftover.0.try_wait().unwrap();
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(15),
        "the leftover was not stopped with SIGTERM: {status:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        new.to_string()
    );
    assert_eq!(
        with_message(&name, "stopping the instance left running from before").len(),
        1
    );
    sup.stop().await;
    assert!(!pidfile.exists(), "the pid file outlived the stop");
}

#[tokio::test]
async fn another_program_behind_the_recorded_pid_is_left_alone() {
    capture();
    let dir = TempDir::new("unrelated");
    let pidfile = dir.0.join("child.pid");
    // The pid was reused by an unrelated process: same program, other
    // arguments.
    let mut unrelated = Stray(
        std::process::Command::new("sleep")
            .args(&sleeper(3)[1..])
            .spawn()
            .unwrap(),
    );
    let other = unrelated.0.id();
    std::fs::write(&pidfile, format!("{other}\n")).unwrap();

    let name = unique("careful");
    let sup = Supervisor::spawn(
        &name,
        sleeper(4),
        SuperviseOpts {
            pidfile: Some(pidfile.clone()),
            ..SuperviseOpts::default()
        },
    );
    let new = running_pid(&sup).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        unrelated.0.try_wait().unwrap().is_none(),
        "an unrelated process was stopped"
    );
    assert_ne!(new, other);
    let left_alone: Vec<_> = events(&name)
        .into_iter()
        .filter(|e| e.get("message").contains("left alone"))
        .collect();
    assert_eq!(left_alone.len(), 1);
    assert_eq!(left_alone[0].get("pid"), other.to_string());
    sup.stop().await;
    assert!(unrelated.0.try_wait().unwrap().is_none());
}

//! The verbs that talk to a running routerd over its control socket.
//! Exit status: 0 done, 1 refused or failed, 2 routerd unreachable or bad input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use router_sys::control::{self, Request, Response, Status};

use crate::{emit, Fatal};

/// Applying a config may restart dnsmasq; give it time.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, Fatal> {
    control::call(socket, request, timeout).map_err(|e| {
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let _ = write!(msg, ": {c}");
            cause = c.source();
        }
        Fatal(msg)
    })
}

/// Prints the outcome of a change; 0 applied/done, 1 refused/failed.
fn outcome(answer: Response) -> Result<ExitCode, Fatal> {
    match answer {
        Response::Applied {
            plan_hash,
            warnings,
            changes,
        } => {
            let mut out = format!("applied and verified: plan {plan_hash}\n");
            for w in &warnings {
                let _ = writeln!(out, "  {w}");
            }
            if changes.is_empty() {
                out.push_str("  nothing needed changing\n");
            }
            for c in &changes {
                let _ = writeln!(out, "  changed: {c}");
            }
            emit(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Done => Ok(ExitCode::SUCCESS),
        Response::Refused { diagnostics } => {
            eprintln!("routerctl: the config was refused; the router keeps running as it was:");
            for d in &diagnostics {
                eprintln!("  {d}");
            }
            Ok(ExitCode::from(1))
        }
        Response::Failed { error } => {
            eprintln!("routerctl: {error}");
            Ok(ExitCode::from(1))
        }
        Response::Status(_) => Err(Fatal("routerd answered with its status instead".into())),
    }
}

/// `routerctl apply FILE`.
pub fn apply(socket: &Path, config: &Path) -> Result<ExitCode, Fatal> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| Fatal(format!("cannot read config {}: {e}", config.display())))?;
    outcome(call(
        socket,
        &Request::Apply { config: text },
        APPLY_TIMEOUT,
    )?)
}

/// `routerctl reload`.
pub fn reload(socket: &Path) -> Result<ExitCode, Fatal> {
    outcome(call(socket, &Request::Reload, APPLY_TIMEOUT)?)
}

/// `routerctl dhcp-event EVENT`, run by udhcpc's script with the lease in
/// the environment.
pub fn dhcp_event(socket: &Path, event: &str) -> Result<ExitCode, Fatal> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let parsed = router_sys::dhcpc::parse_event(event, &env)
        .map_err(|e| Fatal(format!("DHCP client event `{event}`: {e}")))?;
    let ifname = env
        .get("interface")
        .cloned()
        .ok_or_else(|| Fatal("DHCP client event without `interface` in the environment".into()))?;
    outcome(call(
        socket,
        &Request::DhcpEvent {
            ifname,
            event: parsed,
        },
        APPLY_TIMEOUT,
    )?)
}

/// `routerctl status [--json]`.
pub fn status(socket: &Path, json: bool) -> Result<ExitCode, Fatal> {
    let status = match call(socket, &Request::Status, STATUS_TIMEOUT)? {
        Response::Status(s) => s,
        Response::Failed { error } => return Err(Fatal(error)),
        other => return Err(Fatal(format!("unexpected answer from routerd: {other:?}"))),
    };
    if json {
        let text = serde_json::to_string_pretty(&status)
            .map_err(|e| Fatal(format!("cannot print the status: {e}")))?;
        emit(&format!("{text}\n"))?;
    } else {
        emit(&render(&status, unix_now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ago(then: Option<u64>, now: u64) -> String {
    match then {
        None => "never".into(),
        Some(t) => format!("{} s ago", now.saturating_sub(t)),
    }
}

/// The status as text for a person.
fn render(s: &Status, now: u64) -> String {
    let mut out = String::new();
    let w = &s.wan;
    let _ = writeln!(
        out,
        "WAN {} ({}): {}{}, {}",
        w.ifname,
        w.mode,
        if w.up { "up" } else { "down" },
        if w.carrier { "" } else { ", no carrier" },
        if w.ready {
            "phones may use it"
        } else {
            "NO ADDRESS: phone traffic held back"
        }
    );
    let addrs = if w.addresses.is_empty() {
        "none".to_string()
    } else {
        w.addresses.join(", ")
    };
    let _ = writeln!(
        out,
        "  address {addrs} (changed {})",
        ago(w.last_change_unix, now)
    );
    if let Some(l) = &w.lease {
        let gw = l.gateway.map(|g| g.to_string()).unwrap_or("none".into());
        let dns: Vec<String> = l.dns.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  lease {} gateway {gw} dns {} ({} s)",
            l.address,
            if dns.is_empty() {
                "none".into()
            } else {
                dns.join(" ")
            },
            l.lease_secs.map(|x| x.to_string()).unwrap_or("?".into())
        );
    }
    let _ = writeln!(out, "Networks:");
    for a in &s.addresses {
        let _ = writeln!(out, "  {a}");
    }
    let _ = writeln!(
        out,
        "Plan {} (provider policy {}), applied {}",
        s.plan_hash,
        s.policy,
        ago(s.last_apply_unix, now)
    );
    for w in &s.warnings {
        let _ = writeln!(out, "  {w}");
    }
    match &s.last_error {
        Some(e) => {
            let _ = writeln!(out, "Last error: {e}");
        }
        None => out.push_str("Last error: none\n"),
    }
    for c in &s.children {
        let state = if c.running {
            format!(
                "running, pid {}",
                c.pid.map(|p| p.to_string()).unwrap_or("?".into())
            )
        } else {
            "NOT RUNNING".into()
        };
        let _ = writeln!(
            out,
            "{}: {state}, {} restarts{}",
            c.name,
            c.restarts,
            c.last_exit
                .as_ref()
                .map(|e| format!(", last exit: {e}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "routerd {} ({}), up {} s",
        s.version,
        s.config_path,
        now.saturating_sub(s.started_unix)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_sys::control::{ChildState, WanStatus};

    #[test]
    fn status_text_shows_a_wan_without_address_and_each_child() {
        let s = Status {
            version: "0.1.0".into(),
            config_path: "/etc/routerd/router.toml".into(),
            policy: "ipnordic 2026.11.1".into(),
            plan_hash: "0123456789abcdef".into(),
            last_apply_unix: Some(990),
            last_error: Some("cannot start dnsmasq".into()),
            warnings: vec![],
            wan: WanStatus {
                ifname: "eth0".into(),
                mode: "dhcp".into(),
                up: true,
                carrier: true,
                addresses: vec![],
                lease: None,
                ready: false,
                last_change_unix: Some(995),
            },
            addresses: vec!["eth1 192.168.1.1/24".into()],
            children: vec![
                ChildState {
                    name: "dnsmasq".into(),
                    pid: None,
                    running: false,
                    restarts: 3,
                    last_exit: Some("exit status: 2".into()),
                },
                ChildState {
                    name: "chronyd".into(),
                    pid: Some(4242),
                    running: true,
                    restarts: 1,
                    last_exit: Some("exit status: 1".into()),
                },
            ],
            started_unix: 900,
        };
        let text = render(&s, 1000);
        assert!(text.contains("WAN eth0 (dhcp): up, NO ADDRESS"), "{text}");
        assert!(text.contains("address none (changed 5 s ago)"), "{text}");
        assert!(
            text.contains(
                "Plan 0123456789abcdef (provider policy ipnordic 2026.11.1), applied 10 s ago"
            ),
            "{text}"
        );
        assert!(
            text.contains("dnsmasq: NOT RUNNING, 3 restarts, last exit: exit status: 2"),
            "{text}"
        );
        assert!(
            text.contains("chronyd: running, pid 4242, 1 restarts, last exit: exit status: 1"),
            "{text}"
        );
        assert!(text.contains("Last error: cannot start dnsmasq"), "{text}");
    }
}

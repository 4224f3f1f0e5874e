//! The control socket between `routerctl` and a running `routerd`: a Unix
//! stream socket in routerd's run directory, readable by root only. One
//! request per connection: the client writes one JSON line, routerd answers
//! with one JSON line and closes. (The D-Bus API comes later; this socket
//! stays the local, dependency-free way in.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lease::{DhcpEvent, WanLease};

/// The socket's file name inside the run directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The socket path for a run directory.
pub fn socket_path(run_dir: &str) -> PathBuf {
    Path::new(run_dir).join(SOCKET_NAME)
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "request")]
pub enum Request {
    /// The router's state.
    Status,
    /// Check, plan and apply this config text; on success it replaces the
    /// config file routerd was started with.
    Apply {
        /// The whole config (TOML).
        config: String,
    },
    /// Re-read the config file and apply it (what SIGHUP does).
    Reload,
    /// An event of the WAN DHCP client.
    DhcpEvent {
        /// The interface the client runs on.
        ifname: String,
        /// The event.
        event: DhcpEvent,
    },
}

/// What routerd answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "response")]
pub enum Response {
    /// The state.
    Status(Box<Status>),
    /// The config was applied and verified.
    Applied {
        /// The new plan's hash.
        plan_hash: String,
        /// Warnings about the config (it was applied anyway).
        warnings: Vec<String>,
        /// What changed, one line each.
        changes: Vec<String>,
    },
    /// The config was refused; nothing changed.
    Refused {
        /// Every problem, with its config path.
        diagnostics: Vec<String>,
    },
    /// The request was understood and done.
    Done,
    /// The request failed; the message says why.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// A running routerd's state, as `routerctl status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// routerd's version.
    pub version: String,
    /// The config file.
    pub config_path: String,
    /// The provider policy in force (`provider version`).
    pub policy: String,
    /// The applied plan's hash (the first 16 hex digits of its SHA-256).
    pub plan_hash: String,
    /// When the plan was last applied, seconds since the Unix epoch.
    pub last_apply_unix: Option<u64>,
    /// The last error (apply, verify, a child process), if any since the last good apply.
    pub last_error: Option<String>,
    /// Warnings about the config in force.
    pub warnings: Vec<String>,
    /// The WAN.
    pub wan: WanStatus,
    /// The LAN-side networks' addresses, `ifname address`.
    pub addresses: Vec<String>,
    /// Supervised helper processes.
    pub children: Vec<ChildState>,
    /// When routerd started, seconds since the Unix epoch.
    pub started_unix: u64,
}

/// The WAN's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WanStatus {
    /// The WAN interface.
    pub ifname: String,
    /// `dhcp` or `static`.
    pub mode: String,
    /// Administratively up.
    pub up: bool,
    /// The cable is in (carrier).
    pub carrier: bool,
    /// Its IPv4 addresses, as the kernel has them.
    pub addresses: Vec<String>,
    /// The DHCP lease, in DHCP mode, once there is one.
    pub lease: Option<WanLease>,
    /// Phone traffic to the WAN flows (false while the WAN has no address).
    pub ready: bool,
    /// When the WAN address last changed, seconds since the Unix epoch.
    pub last_change_unix: Option<u64>,
}

/// A supervised helper process (dnsmasq, chronyd, the DHCP client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildState {
    /// What it is.
    pub name: String,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// Whether it runs now.
    pub running: bool,
    /// How often it was restarted.
    pub restarts: u32,
    /// How it last ended, if it did.
    pub last_exit: Option<String>,
}

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No routerd is listening there.
    #[error("cannot reach routerd at {path} (is it running?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("talking to routerd at {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// routerd answered something that is not a response.
    #[error("routerd at {path} sent an unreadable answer: {why}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Sends one request and waits (up to `timeout`) for the answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = encode(request);
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    decode(&answer).map_err(|why| ControlError::Protocol {
        path: socket.to_path_buf(),
        why,
    })
}

/// One value as a JSON line (without the newline).
pub fn encode<T: Serialize>(value: &T) -> String {
    // Serializing these plain types cannot fail; an error would be a bug.
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Parses one JSON line.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, String> {
    let line = line.trim_end();
    if line.is_empty() {
        return Err("empty answer".into());
    }
    serde_json::from_str(line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let lease = WanLease {
            address: "203.0.113.7/24".parse().unwrap(),
            gateway: Some("203.0.113.1".parse().unwrap()),
            dns: vec!["203.0.113.53".parse().unwrap()],
            lease_secs: Some(600),
            server: None,
        };
        for r in [
            Request::Status,
            Request::Reload,
            Request::Apply {
                config: "[wan]\ninterface = \"eth0\"\n".into(),
            },
            Request::DhcpEvent {
                ifname: "eth0".into(),
                event: DhcpEvent::Bound(lease),
            },
            Request::DhcpEvent {
                ifname: "eth0".into(),
                event: DhcpEvent::Deconfig,
            },
        ] {
            let line = encode(&r);
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(decode::<Request>(&line).unwrap(), r);
        }
        assert!(decode::<Request>("").is_err());
        assert!(decode::<Request>("{\"request\":\"explode\"}").is_err());
    }
}

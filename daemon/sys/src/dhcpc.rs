//! The WAN's DHCP client: busybox udhcpc, run in the foreground under a
//! [`Supervisor`](crate::supervise::Supervisor). udhcpc only talks DHCP; at
//! each event it runs a tiny script that hands the event to routerd over its
//! control socket (`routerctl dhcp-event`), and routerd applies the address,
//! route and DNS servers itself. [`parse_event`] turns what udhcpc hands the
//! script (its first argument and environment) into a [`DhcpEvent`].

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use crate::lease::{DhcpEvent, WanLease};

/// The command that runs the client on the router (Debian's busybox installs
/// no `udhcpc` link).
pub const DEFAULT_COMMAND: [&str; 2] = ["busybox", "udhcpc"];

/// Discover packets per round; udhcpc then runs `leasefail` (routerd learns
/// that no server answers) and starts a new round after [`RETRY_PAUSE_SECS`].
/// (`-t 0` would also retry forever, but busybox 1.37 then never reports
/// `leasefail`.)
pub const DISCOVER_TRIES: u32 = 4;
/// Seconds between discover packets in a round.
pub const DISCOVER_INTERVAL_SECS: u32 = 3;
/// Seconds between rounds. Without `-n` udhcpc never gives up, so the WAN
/// gets its lease within seconds of the ISP's server coming back.
pub const RETRY_PAUSE_SECS: u32 = 5;

/// udhcpc's command line: in the foreground (`-f`, so it can be supervised)
/// on `ifname`, running `script` at each event, recording its pid in
/// `pidfile`, retrying forever (no `-n`, no `-q`), asking for `request`
/// (the address it held before routerd restarted) with `-r`. No `-R`: the
/// lease is not released when the client stops, so a restart of routerd
/// keeps the WAN address. `prefix` is the command that runs the client,
/// program included; empty means [`DEFAULT_COMMAND`].
pub fn argv(
    prefix: &[String],
    ifname: &str,
    script: &str,
    pidfile: &str,
    request: Option<Ipv4Addr>,
) -> Vec<String> {
    let mut argv: Vec<String> = if prefix.is_empty() {
        DEFAULT_COMMAND.iter().map(|s| s.to_string()).collect()
    } else {
        prefix.to_vec()
    };
    argv.extend([
        "-f".to_string(),
        "-i".to_string(),
        ifname.to_string(),
        "-s".to_string(),
        script.to_string(),
        "-p".to_string(),
        pidfile.to_string(),
        "-t".to_string(),
        DISCOVER_TRIES.to_string(),
        "-T".to_string(),
        DISCOVER_INTERVAL_SECS.to_string(),
        "-A".to_string(),
        RETRY_PAUSE_SECS.to_string(),
    ]);
    if let Some(addr) = request {
        argv.extend(["-r".to_string(), addr.to_string()]);
    }
    argv
}

/// Whether a leftover process runs the client `argv` starts: the same
/// command apart from the address it asks for (`-r`), which changes with the
/// lease. Used to stop the client a killed routerd left running.
pub fn same_client(cmdline: &[String], argv: &[String]) -> bool {
    fn without_request(argv: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut skip = false;
        for a in argv {
            if skip {
                skip = false;
            } else if a == "-r" {
                skip = true;
            } else {
                out.push(a.clone());
            }
        }
        out
    }
    crate::supervise::same_command(&without_request(cmdline), &without_request(argv))
}

/// The script udhcpc runs at each event: it hands the event (`$1`) to
/// routerd; `routerctl dhcp-event` reads the lease from its environment.
pub fn script(routerctl_path: &str, socket: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by routerd: hands each event of the WAN DHCP client to routerd,\n\
         # which applies the lease itself. Rewritten at every start.\n\
         exec {} --socket {} dhcp-event \"$1\"\n",
        shell_quote(routerctl_path),
        shell_quote(socket)
    )
}

/// Writes the event script to `path` (atomically, executable). Returns
/// whether it changed.
pub fn write_script(path: &Path, routerctl_path: &str, socket: &str) -> io::Result<bool> {
    crate::dnsmasq::write_atomic(path, &script(routerctl_path, socket), 0o755)
}

/// `s` as one word for /bin/sh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What is wrong with an event udhcpc handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The event name is none udhcpc sends.
    #[error("unknown DHCP client event {0:?} (expected deconfig, bound, renew, leasefail or nak)")]
    UnknownEvent(String),
    /// A variable the event needs is not in the environment.
    #[error("DHCP {event} event: the variable `{var}` is missing")]
    Missing {
        /// The event.
        event: String,
        /// The variable.
        var: &'static str,
    },
    /// A variable does not hold what it should.
    #[error("DHCP {event} event: the variable `{var}` = {value:?} is not {expected}")]
    Bad {
        /// The event.
        event: String,
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// Turns udhcpc's script argument (`deconfig`, `bound`, `renew`,
/// `leasefail`, `nak`) and environment into an event. `bound` and `renew`
/// need `ip` and `mask` (the prefix length) or `subnet` (the netmask);
/// `router` (its first address), `dns`, `lease` and `serverid` are taken when
/// present. Other variables (udhcpc's `interface`, `opt53`, ...) are ignored.
pub fn parse_event(event: &str, env: &BTreeMap<String, String>) -> Result<DhcpEvent, LeaseError> {
    match event {
        "deconfig" => Ok(DhcpEvent::Deconfig),
        "leasefail" => Ok(DhcpEvent::Leasefail),
        "nak" => Ok(DhcpEvent::Nak),
        "bound" => Ok(DhcpEvent::Bound(lease(event, env)?)),
        "renew" => Ok(DhcpEvent::Renew(lease(event, env)?)),
        other => Err(LeaseError::UnknownEvent(other.to_string())),
    }
}

fn lease(event: &str, env: &BTreeMap<String, String>) -> Result<WanLease, LeaseError> {
    let get = |var: &'static str| env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty());
    let bad = |var: &'static str, value: &str, expected: &'static str| LeaseError::Bad {
        event: event.to_string(),
        var,
        value: value.to_string(),
        expected,
    };
    let addr = |var: &'static str, value: &str| {
        value
            .parse::<Ipv4Addr>()
            .map_err(|_| bad(var, value, "an IPv4 address"))
    };
    let ip = get("ip").ok_or_else(|| LeaseError::Missing {
        event: event.to_string(),
        var: "ip",
    })?;
    let ip = addr("ip", ip)?;
    let prefix = match (get("mask"), get("subnet")) {
        (Some(mask), _) => mask
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("mask", mask, "a prefix length (0-32)"))?,
        (None, Some(subnet)) => {
            let netmask = addr("subnet", subnet)?;
            ipnet::ipv4_mask_to_prefix(netmask)
                .map_err(|_| bad("subnet", subnet, "a netmask (contiguous ones)"))?
        }
        (None, None) => {
            return Err(LeaseError::Missing {
                event: event.to_string(),
                var: "subnet",
            })
        }
    };
    let address = Ipv4Net::new(ip, prefix)
        .map_err(|_| bad("mask", &prefix.to_string(), "a prefix length (0-32)"))?;
    let gateway = match get("router") {
        Some(list) => match list.split_whitespace().next() {
            Some(first) => Some(addr("router", first)?),
            None => None,
        },
        None => None,
    };
    let dns = match get("dns") {
        Some(list) => list
            .split_whitespace()
            .map(|a| addr("dns", a))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let lease_secs = match get("lease") {
        Some(secs) => Some(
            secs.parse::<u32>()
                .map_err(|_| bad("lease", secs, "a number of seconds"))?,
        ),
        None => None,
    };
    let server = match get("serverid") {
        Some(s) => Some(addr("serverid", s)?),
        None => None,
    };
    Ok(WanLease {
        address,
        gateway,
        dns,
        lease_secs,
        server,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_leftover_client_asking_for_another_address_is_still_ours() {
        let before = argv(&[], "eth0", "/run/s", "/run/p", None);
        let after = argv(
            &[],
            "eth0",
            "/run/s",
            "/run/p",
            Some("203.0.113.20".parse().unwrap()),
        );
        assert!(same_client(&before, &after));
        assert!(same_client(&after, &before));
        let other_if = argv(&[], "eth1", "/run/s", "/run/p", None);
        assert!(!same_client(&other_if, &after));
        assert!(!crate::supervise::same_command(&before, &after));
    }

    /// What busybox 1.37 udhcpc hands the script at `bound`.
    fn bound_env() -> BTreeMap<String, String> {
        env(&[
            ("interface", "eth0"),
            ("ip", "198.51.100.57"),
            ("siaddr", "198.51.100.1"),
            ("subnet", "255.255.255.0"),
            ("mask", "24"),
            ("broadcast", "198.51.100.255"),
            ("router", "198.51.100.1 198.51.100.2"),
            ("dns", "198.51.100.53 198.51.100.54"),
            ("lease", "120"),
            ("serverid", "198.51.100.1"),
            ("opt53", "05"),
        ])
    }

    fn expected() -> WanLease {
        WanLease {
            address: "198.51.100.57/24".parse().unwrap(),
            gateway: Some("198.51.100.1".parse().unwrap()),
            dns: vec![
                "198.51.100.53".parse().unwrap(),
                "198.51.100.54".parse().unwrap(),
            ],
            lease_secs: Some(120),
            server: Some("198.51.100.1".parse().unwrap()),
        }
    }

    #[test]
    fn bound_and_renew_carry_the_lease() {
        assert_eq!(
            parse_event("bound", &bound_env()),
            Ok(DhcpEvent::Bound(expected()))
        );
        assert_eq!(
            parse_event("renew", &bound_env()),
            Ok(DhcpEvent::Renew(expected()))
        );
    }

    #[test]
    fn events_without_a_lease() {
        let none = BTreeMap::new();
        assert_eq!(parse_event("deconfig", &none), Ok(DhcpEvent::Deconfig));
        assert_eq!(parse_event("leasefail", &none), Ok(DhcpEvent::Leasefail));
        assert_eq!(parse_event("nak", &none), Ok(DhcpEvent::Nak));
    }

    #[test]
    fn the_netmask_serves_when_the_prefix_length_is_missing() {
        let mut e = bound_env();
        e.remove("mask");
        e.insert("subnet".into(), "255.255.240.0".into());
        let DhcpEvent::Bound(lease) = parse_event("bound", &e).unwrap() else {
            panic!("not bound")
        };
        assert_eq!(
            lease.address,
            "198.51.100.57/20".parse::<Ipv4Net>().unwrap()
        );
    }

    #[test]
    fn only_ip_and_netmask_are_required() {
        let e = env(&[("ip", "10.0.0.2"), ("mask", "8")]);
        assert_eq!(
            parse_event("bound", &e),
            Ok(DhcpEvent::Bound(WanLease {
                address: "10.0.0.2/8".parse().unwrap(),
                gateway: None,
                dns: vec![],
                lease_secs: None,
                server: None,
            }))
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("ip", None, "`ip` is missing"),
            (
                "ip",
                Some("198.51.100.300"),
                "`ip` = \"198.51.100.300\" is not an IPv4 address",
            ),
            ("mask", Some("33"), "`mask` = \"33\" is not a prefix length"),
            ("router", Some("gw"), "`router` = \"gw\""),
            ("dns", Some("198.51.100.53 x"), "`dns` = \"x\""),
            (
                "lease",
                Some("-1"),
                "`lease` = \"-1\" is not a number of seconds",
            ),
            ("serverid", Some(""), ""),
            ("serverid", Some("1.2.3"), "`serverid`"),
        ];
        for (var, value, message) in cases {
            let mut e = bound_env();
            match value {
                Some(v) => e.insert(var.to_string(), v.to_string()),
                None => e.remove(*var),
            };
            let got = parse_event("renew", &e);
            if message.is_empty() {
                assert!(got.is_ok(), "{var}={value:?}: {got:?}");
                continue;
            }
            let err = got.unwrap_err().to_string();
            assert!(err.starts_with("DHCP renew event: "), "{err}");
            assert!(err.contains(message), "{var}={value:?}: {err}");
        }
        let mut e = bound_env();
        e.remove("mask");
        e.insert("subnet".into(), "255.0.255.0".into());
        let err = parse_event("bound", &e).unwrap_err().to_string();
        assert!(
            err.contains("`subnet` = \"255.0.255.0\" is not a netmask"),
            "{err}"
        );
        e.remove("subnet");
        let err = parse_event("bound", &e).unwrap_err().to_string();
        assert!(err.contains("`subnet` is missing"), "{err}");
        let err = parse_event("release", &e).unwrap_err().to_string();
        assert!(
            err.contains("unknown DHCP client event \"release\""),
            "{err}"
        );
    }

    #[test]
    fn argv_retries_forever_and_keeps_the_lease() {
        let a = argv(
            &[],
            "eth0",
            "/run/routerd/dhcp-event",
            "/run/routerd/udhcpc.pid",
            None,
        );
        assert_eq!(
            a,
            [
                "busybox",
                "udhcpc",
                "-f",
                "-i",
                "eth0",
                "-s",
                "/run/routerd/dhcp-event",
                "-p",
                "/run/routerd/udhcpc.pid",
                "-t",
                "4",
                "-T",
                "3",
                "-A",
                "5",
            ]
        );
        for flag in ["-n", "-q", "-R", "-b"] {
            assert!(!a.iter().any(|x| x == flag), "{flag} in {a:?}");
        }
        let prefix = [
            "chroot".to_string(),
            "/r".to_string(),
            "busybox".to_string(),
            "udhcpc".to_string(),
        ];
        let a = argv(
            &prefix,
            "wan",
            "/s",
            "/p",
            Some(Ipv4Addr::new(198, 51, 100, 57)),
        );
        assert_eq!(&a[..4], &prefix);
        assert_eq!(&a[a.len() - 2..], ["-r", "198.51.100.57"]);
    }

    #[test]
    fn script_execs_routerctl_with_quoted_paths() {
        let s = script("/usr/bin/routerctl", "/run/routerd/control.sock");
        assert!(s.starts_with("#!/bin/sh\n"), "{s}");
        assert!(
            s.ends_with(
                "exec '/usr/bin/routerctl' --socket '/run/routerd/control.sock' dhcp-event \"$1\"\n"
            ),
            "{s}"
        );
        assert!(script("/opt/it's/routerctl", "/s").contains(r"'/opt/it'\''s/routerctl'"));
    }

    #[test]
    fn the_script_runs_under_sh() {
        // The script execs the given program with the event: /bin/echo
        // stands in for routerctl.
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("event.sh");
        assert!(write_script(&path, "/bin/echo", "/run/x y.sock").unwrap());
        assert!(!write_script(&path, "/bin/echo", "/run/x y.sock").unwrap());
        let out = std::process::Command::new(&path)
            .arg("bound")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "--socket /run/x y.sock dhcp-event bound\n"
        );
    }
}

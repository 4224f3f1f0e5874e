//! The router's time service: the real chronyd (chrony 4.x; Debian trixie
//! ships 4.6), configured here, run by routerd. It is an NTP client of the
//! provider's time server and an NTP server for the phone network only: the
//! phones get the router's address as their NTP server (DHCP option 42, see
//! `dhcp.rs`) and the firewall accepts UDP 123 from them. The data LAN and
//! the Wi-Fi-calling network are given no NTP server and are not served.
//!
//! Every group of lines carries a comment naming the config path, provider
//! policy entry or spec line it implements, as in the dnsmasq file.

use std::fmt::Write as _;

use router_config::model::Protocol;
use router_config::{Checked, Diagnostic, HostFacts};
use serde::Serialize;

use crate::dhcp::{generated_header, join};
use crate::net::{Network, Role};

/// The NTP port (RFC 5905).
pub const NTP_PORT: u16 = 123;

/// Time on the router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NtpPlan {
    /// The complete chrony configuration file, deterministic; `None` when
    /// there is no phone network to serve (then chronyd does not run).
    pub chrony_conf: Option<String>,
    /// What the time service cannot do as the policy stands.
    pub warnings: Vec<Diagnostic>,
}

/// The provider's NTP servers: the host names of the policy's port-table
/// entries for NTP (UDP 123, the protocol's own port, whatever the entry's
/// `function` says), in policy order, each once.
pub fn provider_servers(checked: &Checked) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for p in &checked.policy.phone_ports {
        let ntp =
            p.protocol == Protocol::Udp && p.ports.first == NTP_PORT && p.ports.last == NTP_PORT;
        if let (true, Some(domain)) = (ntp, p.domain.as_deref()) {
            if !out.contains(&domain) {
                out.push(domain);
            }
        }
    }
    out
}

/// The time-service plan for this config.
pub fn ntp(checked: &Checked, nets: &[Network], facts: &HostFacts) -> NtpPlan {
    let Some(phones) = nets.iter().find(|n| n.role == Role::Phones) else {
        return NtpPlan::default();
    };
    let servers = provider_servers(checked);
    let mut warnings = Vec::new();
    if servers.is_empty() {
        warnings.push(Diagnostic::warning(
            "policy.phone_ports",
            "the provider policy names no NTP server (no UDP 123 entry with a domain): the router has no time source and answers the phones' time requests as unsynchronised, which phones ignore",
        ));
    }
    let sections = [
        generated_header("chrony", checked),
        sources(&servers),
        serve(phones),
        no_control(),
        files(facts),
        clock(),
    ];
    let chrony_conf = sections
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    NtpPlan {
        chrony_conf: Some(chrony_conf),
        warnings,
    }
}

/// The provider's servers are the only time sources; no `local` line: a
/// router that has no time from upstream must not serve its own clock as
/// if it had. `iburst` sends the first four requests 2 s apart, so the
/// phones get time seconds after boot instead of minutes.
fn sources(servers: &[&str]) -> String {
    if servers.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "# policy.phone_ports (NTP, UDP 123): the provider's time server is the only source;\n\
         # iburst: four quick requests at start, so the phones have time seconds after boot\n",
    );
    for server in servers {
        let _ = writeln!(s, "server {server} iburst");
    }
    s
}

/// Served to the phone network only, on the router's phone address only,
/// and only as time synchronised to the provider (see [`sources`]).
/// `bindaddress` binds the server socket (chrony 4: only the server socket;
/// requests to the provider go out from a separate client socket, connected
/// to the server, on a random port), so nothing listens on the WAN or on the
/// wildcard address.
fn serve(phones: &Network) -> String {
    format!(
        "# phones: the phones' NTP server (DHCP option 42); nobody else is answered, and no\n\
         # `local` line: time the router has not got from upstream is never served\n\
         allow {}\n\
         # phones.address: the server socket is on the phone address only, never the WAN\n\
         bindaddress {}\n\
         port {NTP_PORT}\n",
        phones.subnet(),
        phones.address.addr()
    )
}

/// Nothing on the router drives chronyd at run time: no command port (UDP
/// 323) and no Unix command socket.
fn no_control() -> String {
    "# the router: no command socket (neither UDP 323 nor the Unix socket)\n\
     cmdport 0\n\
     bindcmdaddress /\n"
        .to_string()
}

/// The pid file in the run directory; the drift file survives a reboot in
/// the state directory. chronyd writes the drift file after it has dropped
/// root for its own user, so it lives in a directory chronyd makes for that
/// user at start: its `logdir` (no `log` line, so nothing is logged there).
fn files(facts: &HostFacts) -> String {
    let dir = join(&facts.state_dir, "chrony");
    format!(
        "# facts.run_dir: chronyd's pid file, which routerd reads to stop a chronyd left from before\n\
         pidfile {}\n\
         # facts.state_dir: the clock's frequency error survives a reboot, so time is right sooner;\n\
         # in a directory chronyd makes, owned by the user it drops root to (nothing is logged)\n\
         logdir {dir}\n\
         driftfile {}\n",
        join(&facts.run_dir, "chronyd.pid"),
        join(&dir, "chrony.drift")
    )
}

/// A router boots with a wrong clock (no RTC, a flat RTC battery, a long
/// power cut): step it whenever it is off by more than a second, not only
/// in the first updates; smaller errors are slewed. A hardware clock, if
/// there is one, follows the system clock, so the next boot starts closer.
fn clock() -> String {
    "# the router: step the clock whenever it is off by more than 1 s (it boots with a wrong one)\n\
     makestep 1 -1\n\
     # the router: the kernel copies the time to the hardware clock every 11 minutes\n\
     rtcsync\n"
        .to_string()
}

impl NtpPlan {
    /// Readable text: the chrony file, or why there is none.
    pub fn render(&self) -> String {
        match &self.chrony_conf {
            Some(conf) => conf.clone(),
            None => "# no phone network: no time service\n".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::networks;
    use crate::testutil::{checked, example};
    use router_config::policy::PhonePort;

    fn facts() -> HostFacts {
        HostFacts::assumed(["eth0".into(), "eth1".into()])
    }

    fn plan(checked: &Checked) -> NtpPlan {
        ntp(checked, &networks(checked), &facts())
    }

    fn lines(p: &NtpPlan) -> Vec<&str> {
        p.chrony_conf
            .as_deref()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    }

    #[test]
    fn example_config_serves_the_phones_from_the_provider() {
        let p = plan(&checked(example()));
        assert_eq!(
            lines(&p),
            [
                "server sip.ipnordic.dk iburst",
                "allow 10.20.0.0/24",
                "bindaddress 10.20.0.1",
                "port 123",
                "cmdport 0",
                "bindcmdaddress /",
                "pidfile /run/routerd/chronyd.pid",
                "logdir /var/lib/routerd/chrony",
                "driftfile /var/lib/routerd/chrony/chrony.drift",
                "makestep 1 -1",
                "rtcsync",
            ]
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let conf = p.chrony_conf.unwrap();
        assert!(conf.starts_with("# chrony configuration generated by routerd; do not edit"));
        assert!(conf.contains("# provider policy: ipnordic "));
    }

    #[test]
    fn every_group_has_a_comment() {
        let conf = plan(&checked(example())).chrony_conf.unwrap();
        for group in conf.split("\n\n") {
            assert!(group.starts_with("# "), "uncommented group:\n{group}");
        }
    }

    #[test]
    fn never_serves_its_own_clock_nor_the_other_networks() {
        let conf = plan(&checked(example())).chrony_conf.unwrap();
        let directives: Vec<&str> = conf
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(!directives.contains(&"local"), "{conf}");
        assert_eq!(directives.iter().filter(|d| **d == "allow").count(), 1);
        assert!(!conf.contains("192.168.1."), "serves the data LAN:\n{conf}");
        assert!(!conf.contains("10.30.0."), "serves Wi-Fi calling:\n{conf}");
    }

    #[test]
    fn the_server_comes_from_the_policy_data() {
        let mut c = checked(example());
        for p in &mut c.policy.phone_ports {
            if p.ports.first == NTP_PORT {
                p.domain = Some("time.provider.example".into());
            }
        }
        // A second entry for the same server, and one for another.
        c.policy.phone_ports.push(PhonePort {
            function: "time".into(),
            protocol: Protocol::Udp,
            ports: router_config::policy::PortRange::single(NTP_PORT),
            domain: Some("time2.provider.example".into()),
        });
        c.policy.phone_ports.push(PhonePort {
            function: "NTP again".into(),
            protocol: Protocol::Udp,
            ports: router_config::policy::PortRange::single(NTP_PORT),
            domain: Some("time.provider.example".into()),
        });
        let p = plan(&c);
        let l = lines(&p)
            .into_iter()
            .filter(|l| l.starts_with("server "))
            .collect::<Vec<_>>();
        assert_eq!(
            l,
            [
                "server time.provider.example iburst",
                "server time2.provider.example iburst"
            ]
        );
    }

    #[test]
    fn only_udp_123_itself_names_a_time_server() {
        let mut c = checked(example());
        c.policy
            .phone_ports
            .retain(|p| !(p.protocol == Protocol::Udp && p.ports.first == NTP_PORT));
        // A TCP 123 entry and a UDP range covering 123 are not NTP entries.
        c.policy.phone_ports.push(PhonePort {
            function: "NTP".into(),
            protocol: Protocol::Tcp,
            ports: router_config::policy::PortRange::single(NTP_PORT),
            domain: Some("tcp.provider.example".into()),
        });
        c.policy.phone_ports.push(PhonePort {
            function: "low ports".into(),
            protocol: Protocol::Udp,
            ports: "100-200".parse().unwrap(),
            domain: Some("range.provider.example".into()),
        });
        assert!(provider_servers(&c).is_empty());
    }

    #[test]
    fn a_policy_without_ntp_gives_no_server_and_a_warning() {
        let mut c = checked(example());
        c.policy.phone_ports.retain(|p| p.ports.first != NTP_PORT);
        let p = plan(&c);
        let conf = p.chrony_conf.as_deref().unwrap();
        assert!(!conf.contains("\nserver "), "{conf}");
        assert!(conf.contains("allow 10.20.0.0/24"), "{conf}");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert_eq!(p.warnings[0].path, "policy.phone_ports");
        assert!(!p.warnings[0].is_error());
    }

    #[test]
    fn an_ntp_entry_without_a_domain_names_no_server() {
        let mut c = checked(example());
        for p in &mut c.policy.phone_ports {
            if p.ports.first == NTP_PORT {
                p.domain = None;
            }
        }
        let p = plan(&c);
        assert!(provider_servers(&c).is_empty());
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn no_phone_network_no_time_service() {
        let c = checked(example());
        let nets: Vec<Network> = networks(&c)
            .into_iter()
            .filter(|n| n.role != Role::Phones)
            .collect();
        let p = ntp(&c, &nets, &facts());
        assert_eq!(p, NtpPlan::default());
        assert_eq!(p.render(), "# no phone network: no time service\n");
    }

    #[test]
    fn files_follow_the_facts_dirs() {
        let c = checked(example());
        let mut f = facts();
        f.run_dir = "/run/x/".into();
        f.state_dir = "/data/state".into();
        let p = ntp(&c, &networks(&c), &f);
        let l = lines(&p);
        assert!(l.contains(&"pidfile /run/x/chronyd.pid"), "{l:?}");
        assert!(l.contains(&"logdir /data/state/chrony"), "{l:?}");
        assert!(
            l.contains(&"driftfile /data/state/chrony/chrony.drift"),
            "{l:?}"
        );
    }

    #[test]
    fn deterministic() {
        let c = checked(example());
        assert_eq!(plan(&c), plan(&c));
    }
}

//! The plan room: a pure, deterministic function from a checked config, the
//! provider policy inside it and the host facts to the router's desired state.
//! No I/O, no clock, no randomness: the same inputs give the same bytes.
//!
//! `apply` (routerd) is the only code that makes this state real; tests compare
//! plans as text (golden files under `tests/golden/`).

pub mod classifier;
pub mod dhcp;
pub mod firewall;
pub mod links;
pub mod net;
pub mod nft;
pub mod ntp;
pub mod qos;
pub mod sysctl;

#[cfg(test)]
mod testutil;

use router_config::{Checked, Diagnostic, HostFacts};
use serde::Serialize;

pub use net::{Network, Role};

/// Everything the router should be, as one printable, comparable value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The provider policy version the plan was built from.
    pub policy: String,
    /// The nftables ruleset: one owned table replaced whole, plus the persistent
    /// DNS-filled sets table.
    pub nft: nft::Ruleset,
    /// Kernel settings, in the order they must be written (forwarding last).
    pub sysctls: Vec<sysctl::Sysctl>,
    /// Links, VLANs, addresses and routes.
    pub links: links::LinksPlan,
    /// The DHCP/DNS server (dnsmasq) and the WAN's DHCP client.
    pub dhcp: dhcp::DhcpPlan,
    /// The time service (chronyd) for the phones.
    pub ntp: ntp::NtpPlan,
    /// Shaping rates and the voice reservation.
    pub qos: qos::QosPlan,
    /// Warnings from validation and planning, sorted.
    pub warnings: Vec<Diagnostic>,
}

/// A part of the plan, for `routerctl print --part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The nft script, exactly as `nft -f` takes it.
    Nft,
    /// Traffic shaping.
    Tc,
    /// Kernel settings.
    Sysctl,
    /// Links, addresses, routes.
    Links,
    /// dnsmasq config and the WAN DHCP client.
    Dhcp,
    /// The chrony config.
    Ntp,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "nft" => Part::Nft,
            "tc" => Part::Tc,
            "sysctl" => Part::Sysctl,
            "links" => Part::Links,
            "dhcp" => Part::Dhcp,
            "ntp" => Part::Ntp,
            _ => {
                return Err(format!(
                    "unknown part `{s}` (nft, tc, sysctl, links, dhcp, ntp)"
                ))
            }
        })
    }
}

/// Compiles the desired state. Fails with diagnostics when the host cannot
/// carry the config (a missing interface, no VLAN support).
pub fn compile(checked: &Checked, facts: &HostFacts) -> Result<Plan, Vec<Diagnostic>> {
    let nets = net::networks(checked);
    let mut diags = net::check_host(checked, &nets, facts);
    if diags.iter().any(Diagnostic::is_error) {
        diags.sort();
        return Err(diags);
    }
    diags.extend(checked.warnings.iter().cloned());
    let qos = qos::qos_for(checked, facts);
    diags.extend(qos.warnings.iter().cloned());
    let ntp = ntp::ntp(checked, &nets, facts);
    diags.extend(ntp.warnings.iter().cloned());
    diags.sort_by(|a, b| (a.severity, &a.path, &a.message).cmp(&(b.severity, &b.path, &b.message)));
    diags.dedup();
    Ok(Plan {
        policy: format!("{} {}", checked.policy.provider, checked.policy.version),
        nft: firewall::ruleset(checked, &nets, facts),
        sysctls: sysctl::sysctls(checked, &nets, facts),
        links: links::links(checked, &nets),
        dhcp: dhcp::dhcp(checked, &nets, facts),
        ntp,
        qos,
        warnings: diags,
    })
}

impl Plan {
    /// One part as text. `Part::Nft` is exactly the script for `nft -f`.
    pub fn render(&self, part: Part) -> String {
        match part {
            Part::Nft => self.nft.render(),
            Part::Tc => self.qos.render(),
            Part::Sysctl => sysctl::render(&self.sysctls),
            Part::Links => self.links.render(),
            Part::Dhcp => self.dhcp.render(),
            Part::Ntp => self.ntp.render(),
        }
    }

    /// The whole plan as readable text, part by part.
    pub fn render_all(&self) -> String {
        let mut out = format!("# plan (provider policy {})\n", self.policy);
        for w in &self.warnings {
            out.push_str(&format!("# {w}\n"));
        }
        for (name, part) in [
            ("links", Part::Links),
            ("sysctl", Part::Sysctl),
            ("dhcp", Part::Dhcp),
            ("ntp", Part::Ntp),
            ("tc", Part::Tc),
            ("nft", Part::Nft),
        ] {
            out.push_str(&format!("\n### {name}\n"));
            out.push_str(&self.render(part));
        }
        out
    }
}

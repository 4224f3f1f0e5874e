//! Validation: every problem in a config at once, each with its config path.
//!
//! `check` resolves the values the plan needs (rates, timeouts, lease times,
//! call count) and refuses the config if any error was found.

use crate::diag::{has_errors, Diagnostic};
use crate::line::{capacity, Capacity};
use crate::model::Config;
use crate::policy::ProviderPolicy;
use crate::units::{parse_duration, parse_rate};

/// A config that passed validation, with every value the plan needs resolved.
/// Only [`check`] makes one, so the plan never sees an invalid config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The config as written.
    pub config: Config,
    /// The provider policy it was checked against.
    pub policy: ProviderPolicy,
    /// `line.down` in bit/s.
    pub down_bps: u64,
    /// `line.up` in bit/s.
    pub up_bps: u64,
    /// What the line carries.
    pub capacity: Capacity,
    /// Calls to reserve bandwidth for (`line.calls`, or what the line carries with real framing).
    pub calls: u64,
    /// Wi-Fi call bandwidth per call from the policy (spec B4), bit/s.
    pub wifi_per_call_bps: u64,
    /// `conntrack.phone_udp_timeout` in seconds.
    pub phone_udp_timeout: u64,
    /// `conntrack.epdg_udp_timeout` in seconds.
    pub epdg_udp_timeout: u64,
    /// Lease times in seconds: data LAN (if it has DHCP), phones, Wi-Fi calling.
    pub lan_lease: Option<u64>,
    /// Phone network lease time in seconds.
    pub phones_lease: u64,
    /// Wi-Fi-calling network lease time in seconds.
    pub wifi_lease: Option<u64>,
    /// Warnings found on the way (the config is still used).
    pub warnings: Vec<Diagnostic>,
}

/// Validates `config` against `policy`. On success the warnings are in
/// [`Checked::warnings`]; on failure every diagnostic (errors and warnings) is returned.
pub fn check(config: Config, policy: ProviderPolicy) -> Result<Checked, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut resolve = |path: &str, r: Result<u64, String>| match r {
        Ok(v) => Some(v),
        Err(msg) => {
            diags.push(Diagnostic::error(path, msg));
            None
        }
    };
    let down = resolve("line.down", parse_rate(&config.line.down));
    let up = resolve("line.up", parse_rate(&config.line.up));
    let per_call = resolve("policy.per_call", parse_rate(&policy.per_call));
    let wifi_per_call = resolve(
        "policy.wifi_calling.per_call",
        parse_rate(&policy.wifi_calling.per_call),
    );
    let phone_udp = resolve(
        "conntrack.phone_udp_timeout",
        parse_duration(&config.conntrack.phone_udp_timeout),
    );
    let epdg_udp = resolve(
        "conntrack.epdg_udp_timeout",
        parse_duration(&config.conntrack.epdg_udp_timeout),
    );
    let lan_lease = config
        .lan
        .dhcp
        .as_ref()
        .map(|d| resolve("lan.dhcp.lease", parse_duration(&d.lease)));
    let phones_lease = resolve(
        "phones.dhcp.lease",
        parse_duration(&config.phones.dhcp.lease),
    );
    let wifi_lease = config
        .wifi_calling
        .as_ref()
        .map(|w| resolve("wifi_calling.dhcp.lease", parse_duration(&w.dhcp.lease)));

    rules(&config, &policy, &mut diags);

    let cap = match (down, up, per_call) {
        (Some(d), Some(u), Some(p)) => Some(capacity(d, u, config.line.framing, p)),
        _ => None,
    };
    if let Some(cap) = cap {
        if let Some(calls) = config.line.calls {
            if u64::from(calls) > cap.wire_calls {
                diags.push(Diagnostic::warning(
                    "line.calls",
                    format!(
                        "{calls} calls need {} kbit/s on this {} line but the slower direction has {} kbit/s: it carries {} calls ({} kbit/s per call on the wire); calls beyond that will sound bad",
                        u64::from(calls) * cap.wire_per_call_bps / 1000,
                        config.line.framing.as_str(),
                        cap.limiting_bps / 1000,
                        cap.wire_calls,
                        cap.wire_per_call_bps as f64 / 1000.0,
                    ),
                ));
            }
        }
    }
    if let Some(t) = phone_udp {
        if t < 300 {
            diags.push(Diagnostic::warning(
                "conntrack.phone_udp_timeout",
                format!("{t} s is below the 300 s the provider requires (spec F3): phones behind NAT may stop receiving calls"),
            ));
        }
    }
    if let Some(t) = epdg_udp {
        if t < 300 {
            diags.push(Diagnostic::warning(
                "conntrack.epdg_udp_timeout",
                format!(
                    "{t} s is below 300 s: Wi-Fi calls may drop when the IKE/NAT-T mapping expires"
                ),
            ));
        }
    }

    diags.sort_by(|a, b| (a.severity, &a.path).cmp(&(b.severity, &b.path)));
    diags.dedup();
    if has_errors(&diags) {
        return Err(diags);
    }
    match (
        down,
        up,
        cap,
        wifi_per_call,
        phone_udp,
        epdg_udp,
        phones_lease,
    ) {
        (Some(down_bps), Some(up_bps), Some(capacity), Some(wifi), Some(p), Some(e), Some(pl)) => {
            let calls = config
                .line
                .calls
                .map(u64::from)
                .unwrap_or(capacity.wire_calls);
            Ok(Checked {
                down_bps,
                up_bps,
                capacity,
                calls,
                wifi_per_call_bps: wifi,
                phone_udp_timeout: p,
                epdg_udp_timeout: e,
                lan_lease: lan_lease.flatten(),
                phones_lease: pl,
                wifi_lease: wifi_lease.flatten(),
                warnings: diags,
                config,
                policy,
            })
        }
        // Every None above pushed an error, so this is unreachable in practice;
        // still, refuse rather than guess.
        _ => Err(diags),
    }
}

/// The structural rules: addresses, subnets, interfaces, VLANs, forwards, policy.
fn rules(_config: &Config, _policy: &ProviderPolicy, _out: &mut Vec<Diagnostic>) {}

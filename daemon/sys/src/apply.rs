//! The apply pipeline, in the order that keeps the router safe at every step:
//! kernel settings that do not forward anything, then the ruleset (one nft
//! transaction) and its read-back, and only then forwarding, so no packet is
//! ever routed before NAT and the firewall are live.
//!
//! A ruleset that the kernel already holds (the owned table carries the
//! plan's fingerprint and reads back as the plan) is adopted, not loaded
//! again: replacing the table would destroy its ct timeout objects, and the
//! kernel strips a destroyed policy from the flows using it (the phones'
//! flows would fall back to the sysctl timeouts). So a restart of routerd
//! leaves every flow as it was.

use router_plan::sysctl::Phase;
use router_plan::Plan;

use crate::nft::{Drift, Nft, NftError};
use crate::sysctl::{Change, SysctlError, Sysctls};

/// Why an apply stopped. The message names the step; the cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Writing the settings that precede the firewall failed (none of that step stayed written).
    #[error("applying kernel settings before the firewall")]
    BeforeFirewall(#[source] SysctlError),
    /// nft refused or could not run; the running ruleset is unchanged.
    #[error("loading the nftables ruleset")]
    Ruleset(#[source] NftError),
    /// The ruleset loaded, but reading it back shows something else.
    #[error("verifying the loaded ruleset")]
    Verify(#[source] Drift),
    /// Reading the ruleset back failed.
    #[error("reading the loaded ruleset back")]
    ReadBack(#[source] NftError),
    /// Writing forwarding failed (the firewall is live; forwarding is unchanged).
    #[error("enabling forwarding after the firewall")]
    AfterFirewall(#[source] SysctlError),
}

/// What an apply changed.
#[derive(Debug, Default)]
pub struct Report {
    /// Settings written, in order.
    pub sysctl_changes: Vec<Change>,
    /// The ruleset was loaded (false: the running one already matched).
    pub ruleset_loaded: bool,
}

/// Applies the firewall and kernel-settings parts of a plan, then verifies them.
pub fn apply(plan: &Plan, nft: &Nft, sysctls: &Sysctls) -> Result<Report, ApplyError> {
    let mut report = Report::default();
    report.sysctl_changes.extend(
        sysctls
            .apply(&plan.sysctls, Phase::BeforeFirewall)
            .map_err(ApplyError::BeforeFirewall)?,
    );
    let same = nft
        .running_fingerprint(&plan.nft.table.name)
        .map_err(ApplyError::ReadBack)?
        == Some(plan.nft.fingerprint());
    if !same
        || nft
            .verify(&plan.nft)
            .map_err(ApplyError::ReadBack)?
            .is_err()
    {
        nft.apply(&plan.nft.render()).map_err(ApplyError::Ruleset)?;
        report.ruleset_loaded = true;
    }
    nft.verify(&plan.nft)
        .map_err(ApplyError::ReadBack)?
        .map_err(ApplyError::Verify)?;
    report.sysctl_changes.extend(
        sysctls
            .apply(&plan.sysctls, Phase::AfterFirewall)
            .map_err(ApplyError::AfterFirewall)?,
    );
    Ok(report)
}

//! Reading the inputs: the provider policy, the router config, the host
//! facts. Nothing here touches the kernel; a config that does not check is
//! refused with every problem and its path.

use std::path::{Path, PathBuf};

use router_config::{Checked, Diagnostic, HostFacts, ProviderPolicy};

/// Where a provider policy replaced at run time lives.
pub const INSTALLED_POLICY: &str = "/etc/routerd/provider-policy.toml";

/// Where routerd finds its inputs and keeps its files.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The router config.
    pub config: PathBuf,
    /// The provider policy; `None`: the installed one, else the factory copy.
    pub policy: Option<PathBuf>,
    /// Host facts from a file instead of the kernel.
    pub facts: Option<PathBuf>,
    /// State that survives reboots.
    pub state_dir: String,
    /// Run-time files and the control socket.
    pub run_dir: String,
}

/// Reads a file, with an error that names it.
pub fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The provider policy in force.
pub fn policy(inputs: &Inputs) -> Result<ProviderPolicy, String> {
    let text = match &inputs.policy {
        Some(p) => read(p, "provider policy")?,
        None if Path::new(INSTALLED_POLICY).exists() => {
            read(Path::new(INSTALLED_POLICY), "provider policy")?
        }
        None => router_config::FACTORY_POLICY.to_string(),
    };
    router_config::parse_policy(&text).map_err(|d| refused("the provider policy is invalid;", &d))
}

/// Parses and checks a config text. Unknown keys are errors here: routerd
/// never applies a config it does not fully understand.
pub fn check(text: &str, policy: ProviderPolicy) -> Result<Checked, Vec<Diagnostic>> {
    let (config, mut diags) = router_config::parse_config(text);
    match config.map(|c| router_config::check(c, policy)) {
        Some(Ok(c)) if diags.is_empty() => Ok(c),
        Some(Ok(c)) => {
            diags.extend(c.warnings);
            Err(diags)
        }
        Some(Err(more)) => {
            diags.extend(more);
            Err(diags)
        }
        None => Err(diags),
    }
}

/// The host facts: from the file if one was given, else from the kernel.
pub fn facts(inputs: &Inputs) -> Result<HostFacts, String> {
    match &inputs.facts {
        Some(p) => router_config::parse_facts(&read(p, "host facts")?)
            .map_err(|d| refused("the host facts are invalid;", &d)),
        None => router_sys::facts::read_host_facts(
            Path::new("/sys"),
            Path::new("/proc"),
            &inputs.state_dir,
            &inputs.run_dir,
        )
        .map_err(|e| chain(&e)),
    }
}

/// The host facts routerd plans for: [`facts`], and from the kernel also
/// whether it has fq_codel (the shaper's leaves depend on it), probed once.
pub async fn host_facts(
    inputs: &Inputs,
    netlink: &router_sys::links::Netlink,
) -> Result<HostFacts, String> {
    let mut facts = facts(inputs)?;
    if inputs.facts.is_none() {
        facts.fq_codel = router_sys::tc::fq_codel_available(netlink.handle())
            .await
            .map_err(|e| chain(&e))?;
    }
    Ok(facts)
}

/// A refusal: the heading, then every problem on its own line.
pub fn refused(what: &str, diags: &[Diagnostic]) -> String {
    let lines: Vec<String> = diags.iter().map(|d| format!("  {d}")).collect();
    format!("{what} refused, nothing changed:\n{}", lines.join("\n"))
}

/// Every error in a chain, outermost first.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

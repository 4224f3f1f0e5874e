//! `routerd`: owns the router's networking. It checks the config, compiles the
//! plan and applies it through router-sys, the only code that touches the
//! kernel. A config that does not check is refused before anything is touched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use router_config::{Diagnostic, HostFacts};
use router_sys::nft::Nft;
use router_sys::sysctl::Sysctls;

/// Where a provider policy replaced at run time lives.
const INSTALLED_POLICY: &str = "/etc/routerd/provider-policy.toml";

#[derive(Debug, Parser)]
#[command(name = "routerd", version, about = "The router daemon")]
struct Args {
    /// The router config.
    #[arg(long, default_value = "/etc/routerd/router.toml")]
    config: PathBuf,
    /// The provider policy (default: /etc/routerd/provider-policy.toml, else the factory copy).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Host facts file instead of reading them from the kernel.
    #[arg(long)]
    facts: Option<PathBuf>,
    /// Apply the plan once, verify it, and exit.
    #[arg(long)]
    once: bool,
    /// Where kernel settings live (default /proc/sys).
    #[arg(long, default_value = "/proc/sys")]
    sysctl_root: PathBuf,
    /// The nft command, e.g. `chroot /root nft` (split on spaces).
    #[arg(long, default_value = "nft")]
    nft: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.once {
        eprintln!("routerd: only --once (apply, verify, exit) is available in this version");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("routerd: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn refused(what: &str, diags: &[Diagnostic]) -> String {
    let lines: Vec<String> = diags.iter().map(|d| format!("  {d}")).collect();
    format!("{what} refused, nothing changed:\n{}", lines.join("\n"))
}

/// Every error chain printed once, outermost first.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

fn run(args: &Args) -> Result<(), String> {
    let policy_text = match &args.policy {
        Some(p) => read(p, "provider policy")?,
        None if Path::new(INSTALLED_POLICY).exists() => {
            read(Path::new(INSTALLED_POLICY), "provider policy")?
        }
        None => router_config::FACTORY_POLICY.to_string(),
    };
    let policy = router_config::parse_policy(&policy_text)
        .map_err(|d| refused("the provider policy is invalid;", &d))?;
    let (config, mut diags) = router_config::parse_config(&read(&args.config, "config")?);
    let checked = match config.map(|c| router_config::check(c, policy)) {
        Some(Ok(c)) if diags.is_empty() => c,
        Some(Ok(c)) => {
            diags.extend(c.warnings);
            return Err(refused(&format!("{}", args.config.display()), &diags));
        }
        Some(Err(more)) => {
            diags.extend(more);
            return Err(refused(&format!("{}", args.config.display()), &diags));
        }
        None => return Err(refused(&format!("{}", args.config.display()), &diags)),
    };
    for w in &checked.warnings {
        eprintln!("routerd: {w}");
    }
    let facts: HostFacts = match &args.facts {
        Some(p) => router_config::parse_facts(&read(p, "host facts")?)
            .map_err(|d| refused("the host facts are invalid;", &d))?,
        None => router_sys::facts::read_host_facts(
            Path::new("/sys"),
            Path::new("/proc"),
            "/var/lib/routerd",
            "/run/routerd",
        )
        .map_err(|e| chain(&e))?,
    };
    let plan = router_plan::compile(&checked, &facts)
        .map_err(|d| refused(&format!("{} on this host", args.config.display()), &d))?;
    let nft = Nft::new(args.nft.split_whitespace().map(str::to_string).collect());
    let sysctls = Sysctls::new(args.sysctl_root.clone());
    let report = router_sys::apply::apply(&plan, &nft, &sysctls).map_err(|e| chain(&e))?;
    for c in &report.sysctl_changes {
        eprintln!("routerd: {} {} -> {}", c.path, c.old, c.new);
    }
    println!(
        "routerd: applied and verified (provider policy {}, {} settings changed)",
        plan.policy,
        report.sysctl_changes.len()
    );
    Ok(())
}

//! `routerd`: owns the router's networking. It checks the config, compiles the
//! plan and applies it through router-sys, the only code that touches the
//! kernel. A config that does not check is refused before anything is touched.
//!
//! Without `--once` it stays running: it supervises dnsmasq, chronyd and the
//! WAN DHCP client, follows the WAN, answers `routerctl` on its control
//! socket and reloads on SIGHUP (see `daemon.rs`).

mod daemon;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use router_sys::nft::Nft;
use router_sys::sysctl::Sysctls;
use tracing_subscriber::EnvFilter;

use crate::load::{chain, Inputs};

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
    /// Apply the plan once, verify it, and exit (no helpers are started).
    #[arg(long)]
    once: bool,
    /// Where kernel settings live.
    #[arg(long, default_value = "/proc/sys")]
    sysctl_root: PathBuf,
    /// The nft command, e.g. `chroot /root nft` (split on spaces).
    #[arg(long, default_value = "nft")]
    nft: String,
    /// The dnsmasq command (split on spaces).
    #[arg(long, default_value = "dnsmasq")]
    dnsmasq: String,
    /// The chronyd command, the phones' time server (split on spaces).
    #[arg(long, default_value = "chronyd")]
    chronyd: String,
    /// The WAN DHCP client command (split on spaces).
    #[arg(long, default_value = "busybox udhcpc")]
    dhcp_client: String,
    /// routerctl, run by the DHCP client's event script (default: next to routerd).
    #[arg(long)]
    routerctl: Option<String>,
    /// Run-time files and the control socket.
    #[arg(long, default_value = "/run/routerd")]
    run_dir: String,
    /// State that survives reboots (DHCP leases, the clock's drift).
    #[arg(long, default_value = "/var/lib/routerd")]
    state_dir: String,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ROUTERD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let inputs = Inputs {
        config: args.config.clone(),
        policy: args.policy.clone(),
        facts: args.facts.clone(),
        state_dir: args.state_dir.clone(),
        run_dir: args.run_dir.clone(),
    };
    let result = if args.once {
        once(&args, &inputs)
    } else {
        let routerctl = args.routerctl.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("routerctl")))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "routerctl".into())
        });
        let programs = daemon::Programs {
            nft: words(&args.nft),
            dnsmasq: words(&args.dnsmasq),
            chronyd: words(&args.chronyd),
            dhcp_client: words(&args.dhcp_client),
            routerctl,
            sysctl_root: args.sysctl_root.clone(),
        };
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(daemon::run(inputs, programs)),
            Err(e) => Err(format!("cannot start the runtime: {e}")),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("routerd: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `--once`: check, plan, apply, verify, exit.
fn once(args: &Args, inputs: &Inputs) -> Result<(), String> {
    let policy = load::policy(inputs)?;
    let text = load::read(&args.config, "config")?;
    let checked = load::check(&text, policy)
        .map_err(|d| load::refused(&format!("{}", args.config.display()), &d))?;
    for w in &checked.warnings {
        eprintln!("routerd: {w}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let netlink = runtime
        .block_on(async { router_sys::links::Netlink::open() })
        .map_err(|e| chain(&e))?;
    let facts = runtime.block_on(load::host_facts(inputs, &netlink))?;
    let plan = router_plan::compile(&checked, &facts)
        .map_err(|d| load::refused(&format!("{} on this host", args.config.display()), &d))?;
    let links = runtime.block_on(async {
        let changes = netlink.apply(&plan.links).await.map_err(|e| chain(&e))?;
        let drift = netlink.verify(&plan.links).await.map_err(|e| chain(&e))?;
        if drift.is_empty() {
            Ok::<_, String>(changes)
        } else {
            Err(format!("links do not match the plan: {}", drift.join("; ")))
        }
    })?;
    for c in &links {
        eprintln!("routerd: {c}");
    }
    let nft = Nft::new(words(&args.nft));
    let sysctls = Sysctls::new(args.sysctl_root.clone());
    let report = router_sys::apply::apply(&plan, &nft, &sysctls).map_err(|e| chain(&e))?;
    let tc = runtime.block_on(async {
        let changes = router_sys::tc::apply(netlink.handle(), &plan.qos)
            .await
            .map_err(|e| chain(&e))?;
        let drift = router_sys::tc::verify(netlink.handle(), &plan.qos)
            .await
            .map_err(|e| chain(&e))?;
        if drift.is_empty() {
            Ok::<_, String>(changes)
        } else {
            Err(format!(
                "the shaper does not match the plan: {}",
                drift.join("; ")
            ))
        }
    })?;
    for c in &tc {
        eprintln!("routerd: {c}");
    }
    for c in &report.sysctl_changes {
        eprintln!("routerd: {} {} -> {}", c.path, c.old, c.new);
    }
    println!(
        "routerd: applied and verified (provider policy {}, {} settings changed, ruleset {})",
        plan.policy,
        report.sysctl_changes.len(),
        if report.ruleset_loaded {
            "loaded"
        } else {
            "already in place"
        }
    );
    Ok(())
}

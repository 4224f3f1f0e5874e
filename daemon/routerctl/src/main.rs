//! `routerctl`: the router's command line. The offline verbs (check, print,
//! capacity, schema) need no root and touch nothing: they read files and print.
//! The online verbs (status, apply, reload, dhcp-event) talk to a running
//! routerd over its control socket (see `online.rs`).

mod online;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use router_config::line::{capacity, voice_wire_bps};
use router_config::model::Framing;
use router_config::units::parse_rate;
use router_config::{Checked, Diagnostic, HostFacts, ProviderPolicy};
use router_plan::qos::{
    ack_room, per_call_with_headroom, voice_room, Direction, VOICE_HEADROOM_PERCENT,
};
use router_plan::Part;

/// Where a provider policy replaced at run time lives; the firmware's factory
/// copy is used when there is none.
const INSTALLED_POLICY: &str = "/etc/routerd/provider-policy.toml";

#[derive(Debug, Parser)]
#[command(
    name = "routerctl",
    version,
    about = "Check, print and size the router's configuration"
)]
struct Cli {
    /// routerd's control socket (online verbs).
    #[arg(long, global = true, default_value = "/run/routerd/control.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Args)]
struct Inputs {
    /// The router config (TOML).
    config: PathBuf,
    /// The provider policy (default: /etc/routerd/provider-policy.toml, else the factory copy).
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Validate a config: every problem with its path; exit 1 if any is an error.
    Check {
        #[command(flatten)]
        inputs: Inputs,
        /// Host facts (TOML); also checks the config against the host.
        #[arg(long)]
        facts: Option<PathBuf>,
    },
    /// Print the plan the router would apply for a config.
    Print {
        #[command(flatten)]
        inputs: Inputs,
        /// Host facts (TOML); default: every interface the config names exists.
        #[arg(long)]
        facts: Option<PathBuf>,
        /// Print one part only: nft (the exact `nft -f` script), tc, sysctl, links, dhcp, ntp.
        #[arg(long)]
        part: Option<Part>,
    },
    /// How many concurrent calls a line carries (spec B1, B2, B4).
    Capacity {
        /// Download rate, e.g. 5M.
        #[arg(long)]
        down: String,
        /// Upload rate, e.g. 2M.
        #[arg(long)]
        up: String,
        /// ethernet (fibre), vdsl-ptm, adsl-pppoa, adsl-pppoe.
        #[arg(long, default_value = "ethernet")]
        framing: Framing,
        /// The provider policy (for the per-call figures).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// The running router: WAN, addresses, plan, last apply and errors.
    Status {
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Apply a new config to the running router: checked, planned and applied
    /// atomically, then saved; refused with every problem if it does not check.
    Apply {
        /// The new router config (TOML).
        config: PathBuf,
    },
    /// Make the running router re-read its config file (like SIGHUP).
    Reload,
    /// Hand an event of the WAN DHCP client (udhcpc) to routerd; the lease
    /// is read from the environment udhcpc sets. Run by the client's script.
    #[command(hide = true)]
    DhcpEvent {
        /// deconfig, bound, renew, leasefail or nak.
        event: String,
    },
    /// Print the JSON Schema of the router config, or of the provider policy.
    Schema {
        /// `config` or `policy`.
        #[arg(default_value = "config")]
        of: String,
    },
}

/// A failure that stops the command; printed once, exit status 2.
#[derive(Debug)]
pub(crate) struct Fatal(pub(crate) String);

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(Fatal(msg)) => {
            eprintln!("routerctl: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Fatal> {
    match cli.verb {
        Verb::Status { json } => online::status(&cli.socket, json),
        Verb::Apply { config } => online::apply(&cli.socket, &config),
        Verb::Reload => online::reload(&cli.socket),
        Verb::DhcpEvent { event } => online::dhcp_event(&cli.socket, &event),
        Verb::Check { inputs, facts } => check(&inputs, facts.as_deref()),
        Verb::Print {
            inputs,
            facts,
            part,
        } => print(&inputs, facts.as_deref(), part),
        Verb::Capacity {
            down,
            up,
            framing,
            policy,
        } => capacity_cmd(&down, &up, framing, policy.as_deref()),
        Verb::Schema { of } => match of.as_str() {
            "config" => {
                emit(&router_config::config_schema())?;
                Ok(ExitCode::SUCCESS)
            }
            "policy" => {
                emit(&router_config::policy_schema())?;
                Ok(ExitCode::SUCCESS)
            }
            other => Err(Fatal(format!("no schema for `{other}` (config or policy)"))),
        },
    }
}

fn read(path: &Path, what: &str) -> Result<String, Fatal> {
    std::fs::read_to_string(path)
        .map_err(|e| Fatal(format!("cannot read {what} {}: {e}", path.display())))
}

fn load_policy(path: Option<&Path>) -> Result<ProviderPolicy, Fatal> {
    let installed = Path::new(INSTALLED_POLICY);
    let (text, name) = match path {
        Some(p) => (read(p, "provider policy")?, p.display().to_string()),
        None if installed.exists() => {
            (read(installed, "provider policy")?, INSTALLED_POLICY.into())
        }
        None => (
            router_config::FACTORY_POLICY.to_string(),
            "factory policy".into(),
        ),
    };
    router_config::parse_policy(&text).map_err(|diags| {
        Fatal(format!(
            "the provider policy ({name}) is invalid:\n{}",
            lines(&diags)
        ))
    })
}

fn load_facts(path: Option<&Path>, checked: &Checked) -> Result<HostFacts, Fatal> {
    match path {
        Some(p) => router_config::parse_facts(&read(p, "host facts")?).map_err(|d| {
            Fatal(format!(
                "host facts {} are invalid:\n{}",
                p.display(),
                lines(&d)
            ))
        }),
        None => Ok(HostFacts::assumed(named_interfaces(checked))),
    }
}

/// Every port the config names (VLAN parents, not the VLAN devices).
fn named_interfaces(checked: &Checked) -> Vec<String> {
    let c = &checked.config;
    let mut names = vec![c.wan.interface.clone(), c.lan.interface.clone()];
    let mut attach = vec![c.phones.attachment()];
    attach.extend(c.wifi_calling.as_ref().map(|w| w.attachment()));
    for a in attach {
        names.extend(a.interface.or(a.parent).map(str::to_string));
    }
    names
}

fn lines(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses and validates; on failure prints every diagnostic to stderr.
fn load_checked(inputs: &Inputs) -> Result<Result<Checked, Vec<Diagnostic>>, Fatal> {
    let text = read(&inputs.config, "config")?;
    let policy = load_policy(inputs.policy.as_deref())?;
    let (config, mut diags) = router_config::parse_config(&text);
    let Some(config) = config else {
        return Ok(Err(diags));
    };
    match router_config::check(config, policy) {
        Ok(checked) if diags.is_empty() => Ok(Ok(checked)),
        Ok(checked) => {
            diags.extend(checked.warnings);
            diags.sort();
            Ok(Err(diags))
        }
        Err(more) => {
            diags.extend(more);
            diags.sort();
            Ok(Err(diags))
        }
    }
}

fn refuse(config: &Path, diags: &[Diagnostic]) -> ExitCode {
    for d in diags {
        eprintln!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    eprintln!(
        "{}: refused: {errors} error{}",
        config.display(),
        if errors == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

fn check(inputs: &Inputs, facts: Option<&Path>) -> Result<ExitCode, Fatal> {
    let checked = match load_checked(inputs)? {
        Ok(c) => c,
        Err(diags) => return Ok(refuse(&inputs.config, &diags)),
    };
    if let Some(path) = facts {
        let facts = load_facts(Some(path), &checked)?;
        if let Err(diags) = router_plan::compile(&checked, &facts) {
            return Ok(refuse(&inputs.config, &diags));
        }
    }
    for w in &checked.warnings {
        eprintln!("{w}");
    }
    emit(&format!(
        "{}: ok ({} warning{})\n",
        inputs.config.display(),
        checked.warnings.len(),
        if checked.warnings.len() == 1 { "" } else { "s" }
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn print(inputs: &Inputs, facts: Option<&Path>, part: Option<Part>) -> Result<ExitCode, Fatal> {
    let checked = match load_checked(inputs)? {
        Ok(c) => c,
        Err(diags) => return Ok(refuse(&inputs.config, &diags)),
    };
    let facts = load_facts(facts, &checked)?;
    let plan = match router_plan::compile(&checked, &facts) {
        Ok(p) => p,
        Err(diags) => return Ok(refuse(&inputs.config, &diags)),
    };
    match part {
        Some(part) => {
            for w in &plan.warnings {
                eprintln!("{w}");
            }
            emit(&plan.render(part))?;
        }
        None => emit(&plan.render_all())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A rate as people read it: `2 Mbit/s`, `1.805 Mbit/s`, `87.2 kbit/s`.
fn kbit(bps: u64) -> String {
    if bps >= 1_000_000 && bps % 1_000 == 0 {
        format!("{} Mbit/s", bps as f64 / 1e6)
    } else {
        format!("{:.1} kbit/s", bps as f64 / 1000.0)
    }
}

/// Writes to stdout; a closed pipe (`routerctl print | head`) is not an error.
fn emit(text: &str) -> Result<(), Fatal> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fatal(format!("cannot write output: {e}")))
        }
        _ => Ok(()),
    }
}

fn capacity_cmd(
    down: &str,
    up: &str,
    framing: Framing,
    policy: Option<&Path>,
) -> Result<ExitCode, Fatal> {
    let rate =
        |name: &str, text: &str| parse_rate(text).map_err(|e| Fatal(format!("--{name}: {e}")));
    let (down_bps, up_bps) = (rate("down", down)?, rate("up", up)?);
    let policy = load_policy(policy)?;
    let per_call = parse_rate(&policy.per_call)
        .map_err(|e| Fatal(format!("provider policy per_call: {e}")))?;
    let wifi_per_call = parse_rate(&policy.wifi_calling.per_call)
        .map_err(|e| Fatal(format!("provider policy wifi_calling.per_call: {e}")))?;
    let cap = capacity(down_bps, up_bps, framing, per_call);
    let slower = if up_bps <= down_bps { "up" } else { "down" };
    let mut out = String::new();
    let mut println = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    println(format!(
        "line: {} down, {} up, {} framing; the slower direction ({slower}) decides (spec B2)",
        kbit(down_bps),
        kbit(up_bps),
        framing.as_str()
    ));
    println(format!(
        "{} calls at the provider's {} per call (spec B1, B2)",
        cap.spec_calls,
        kbit(per_call)
    ));
    println(format!(
        "{} calls with real G.711 framing: 20 ms packets on {} take {} per call (80.0 kbit/s at the IP layer)",
        cap.wire_calls,
        framing.as_str(),
        kbit(cap.wire_per_call_bps)
    ));
    // What the router's own shaper protects: the smaller voice class of the
    // two trees (routerctl print --part tc).
    let room_of = |d| voice_room(d, down_bps, up_bps, framing);
    let up = room_of(Direction::Egress);
    let (direction, room) = [
        (Direction::Egress, up),
        (Direction::Ingress, room_of(Direction::Ingress)),
    ]
    .into_iter()
    .min_by_key(|(_, room)| room.calls)
    .expect("two directions");
    let line_bps = direction.of(down_bps, up_bps);
    println(format!(
        "{} calls protected from bulk traffic by the shaper: it shapes the {} at {}% ({}) and keeps {} for other traffic, {} for voice, {} per call with {}% headroom",
        room.calls,
        direction.word(),
        direction.shape_percent(line_bps),
        kbit(room.shape_bps),
        kbit(room.bulk_bps),
        kbit(room.voice_bps),
        kbit(per_call_with_headroom(cap.wire_per_call_bps)),
        VOICE_HEADROOM_PERCENT
    ));
    println(format!(
        "{} of the upload's {} for other traffic guaranteed to the download's TCP acknowledgements while those {} calls are in progress (spec B3)",
        kbit(ack_room(framing, down_bps, up.shape_bps, room.calls).rate_bps),
        kbit(up.bulk_bps),
        room.calls
    ));
    println(format!(
        "{} Wi-Fi calls at {} per call (spec B4)",
        cap.limiting_bps / wifi_per_call.max(1),
        kbit(wifi_per_call)
    ));
    let per_framing: Vec<String> = Framing::ALL
        .iter()
        .map(|f| format!("{} {}", f.as_str(), kbit(voice_wire_bps(*f, false))))
        .collect();
    println(format!("per call by framing: {}", per_framing.join(", ")));
    println(format!(
        "per call with IPv6 over PPPoE on ADSL: {}",
        kbit(voice_wire_bps(Framing::AdslPppoe, true))
    ));
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
